"""Merging statistics of disjoint cell sets equals computing them at once (associative, commutative)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from shrinkpert import ShrinkpertWarning, group_statistics


def _stats(X, labels):
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"g": labels}, index=[f"c{i}" for i in range(len(labels))]),
                       var=pd.DataFrame(index=[f"v{j}" for j in range(X.shape[1])]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShrinkpertWarning)  # a part may hold a single-cell group
        return group_statistics(adata, "g")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut1=st.integers(2, 20), cut2=st.integers(21, 40))
def test_merge_is_associative_and_matches_whole(seed, cut1, cut2):
    rng = np.random.default_rng(seed)
    X = rng.poisson(2.0, size=(60, 6)).astype(float) * rng.lognormal(size=(60, 1))
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, size=60)]
    labels[:3] = ["a", "b", "c"]
    labels[cut1:cut1 + 3] = ["a", "b", "c"]
    labels[cut2:cut2 + 3] = ["a", "b", "c"]
    labels[-3:] = ["a", "b", "c"]
    parts = [_stats(X[s], labels[s]) for s in (slice(0, cut1 + 3), slice(cut1 + 3, cut2 + 3), slice(cut2 + 3, None))]
    whole = _stats(X, labels)
    left = parts[0].merge(parts[1]).merge(parts[2])
    right = parts[0].merge(parts[1].merge(parts[2]))
    swapped = parts[2].merge(parts[0]).merge(parts[1])
    for merged in (left, right, swapped):
        np.testing.assert_array_equal(merged.n_cells, whole.n_cells)
        np.testing.assert_array_equal(merged.n_nonzero, whole.n_nonzero)
        # Chan's update reorders floating-point operations: 1e-12 relative
        np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12)
        np.testing.assert_allclose(merged.var, whole.var, rtol=1e-10)
        np.testing.assert_allclose(merged.sum, whole.sum, rtol=1e-12)
