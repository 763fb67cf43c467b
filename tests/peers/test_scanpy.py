"""Peer check: group means and variances equal scanpy.get.aggregate on the bundled real data."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert import group_statistics

sc = pytest.importorskip("scanpy", reason="scanpy is a test extra: pip install 'shrinkpert[test]'")

pytestmark = pytest.mark.peer


@pytest.mark.parametrize("normalize", [None, "log1p"])
def test_group_mean_var_match_scanpy_aggregate(papalexi, normalize):
    adata = papalexi.copy()
    if normalize == "log1p":
        adata.X = adata.X.astype(np.float64)
        sc.pp.normalize_total(adata, target_sum=1e4)
        sc.pp.log1p(adata)
    peer = sc.get.aggregate(adata, by="perturbation", func=["mean", "var", "count_nonzero", "sum"])
    ours = group_statistics(papalexi, "perturbation", normalize=normalize)
    order = peer.obs_names.get_indexer(ours.groups.astype(str))
    # scanpy accumulates in a different order (and float32-normalised input when counts are int):
    # 1e-10 relative on means/variances, exact integer non-zero counts
    np.testing.assert_allclose(ours.mean, peer.layers["mean"][order], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.var, peer.layers["var"][order], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours.n_nonzero, peer.layers["count_nonzero"][order])
