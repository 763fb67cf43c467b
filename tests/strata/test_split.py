"""difficulty_split on a hand-made similarity matrix: sizes, determinism, harder than random."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.errors import InputError
from shrinkpert.strata import difficulty_split


@pytest.fixture()
def similarity():
    # two tight clusters of 5 perturbations (within 0.9, between 0.0)
    names = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(5)]
    block = np.kron(np.eye(2), np.full((5, 5), 0.9))
    np.fill_diagonal(block, 1.0)
    return pd.DataFrame(block, index=names, columns=names)


def test_cluster_split_holds_out_a_whole_cluster(similarity):
    splits = list(difficulty_split(similarity, test_size=0.5, n_splits=4, seed=3))
    assert len(splits) == 4
    for s in splits:
        assert len(s.test) == 5 and len(s.train) == 5 and not set(s.test) & set(s.train)
        assert len({t[0] for t in s.test}) == 1  # one cluster
        assert s.template_similarity == 0.0  # no template left in training
    random = list(difficulty_split(similarity, test_size=0.5, n_splits=20, method="random", seed=3))
    assert np.mean([s.template_similarity for s in random]) > 0.5


def test_seeded(similarity):
    a = [s.test for s in difficulty_split(similarity, n_splits=5, seed=1, method="random")]
    b = [s.test for s in difficulty_split(similarity, n_splits=5, seed=1, method="random")]
    assert a == b


def test_errors(similarity):
    with pytest.raises(InputError, match="method"):
        next(difficulty_split(similarity, method="hardest"))
    with pytest.raises(InputError, match="test_size"):
        next(difficulty_split(similarity, test_size=1.0))
    with pytest.raises(InputError, match="square"):
        next(difficulty_split(similarity.iloc[:3]))
