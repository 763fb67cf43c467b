"""GroupStatistics rebuilt from means and variances (the container weights and deltas share)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert import estimate_effects, group_statistics
from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.stats import GroupStatistics, merge_statistics
from tests.conftest import make_counts


def test_moments_equal_the_cells_and_unknowns_are_refused(rng):
    adata = make_counts(rng, n_cells=200, n_genes=12, n_groups=4)
    adata.X[5, 0] = 1  # no all-zero cell: no warning about empty libraries
    whole = group_statistics(adata, "perturbation", normalize="log1p")
    rebuilt = GroupStatistics.from_moments(whole.groups, whole.genes, whole.mean, whole.var, whole.n_cells,
                                           dict(whole.params))
    np.testing.assert_allclose(rebuilt.sum, whole.sum, rtol=1e-12)  # n · mean vs the streamed sum
    np.testing.assert_array_equal(rebuilt.m2, whole.m2)
    assert rebuilt.n_nonzero is None and rebuilt.library_size is None
    assert "n_nonzero" not in rebuilt.to_frame().columns
    assert list(rebuilt.summary().columns) == ["n_cells", "median_var"]
    with pytest.raises(InputError, match="detection is unknown"):
        rebuilt.detection
    with pytest.raises(InputError, match="rebuilt from means and variances"):
        merge_statistics([rebuilt, rebuilt], check=False)
    want = [whole.groups.get_loc("G2"), whole.groups.get_loc("non-targeting")]
    assert rebuilt.rows(["G2", "non-targeting"], "labels").tolist() == want
    with pytest.raises(MissingKeyError, match=r"labels \['nope'\] are not among the groups"):
        rebuilt.rows(["nope"], "labels")


def test_weights_from_effect_sizes_equal_weights_from_cells(rng):
    from shrinkpert import gene_weights

    adata = make_counts(rng, n_cells=200, n_genes=12, n_groups=4)
    adata.X[5, 0] = 1
    effects = estimate_effects(adata, perturbation_key="perturbation", control="non-targeting", scale="log1p")
    a = gene_weights(adata, method="limma_t", perturbation_key="perturbation", control="non-targeting")
    b = gene_weights(effects, method="limma_t", perturbation_key="perturbation", control="non-targeting")
    pd.testing.assert_index_equal(a.perturbations, b.perturbations)
    np.testing.assert_allclose(b.values, a.values, rtol=1e-10, atol=1e-12)  # sums rebuilt as n · mean
