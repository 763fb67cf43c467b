"""group_statistics(weights=...) against NumPy's weighted mean and covariance, and Kish's variance by simulation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert.errors import InputError
from shrinkpert.stats import group_statistics


def _counts(rng, n_cells=90, n_genes=8):
    x = rng.poisson(rng.gamma(1.5, 1.5, size=(n_cells, n_genes))).astype(np.float64)
    x[:, 2] = 0  # a gene never detected
    labels = np.array(["a", "b", "c"])[rng.integers(0, 3, size=n_cells)]
    obs = pd.DataFrame({"group": labels}, index=[f"c{i}" for i in range(n_cells)])
    return x, obs


@pytest.mark.parametrize("storage", [np.asarray, sp.csr_matrix, sp.csc_matrix])
@pytest.mark.parametrize("normalize", [None, "log1p"])
def test_weighted_mean_variance_and_kish_count_equal_numpy(storage, normalize):
    rng = np.random.default_rng(3)
    x, obs = _counts(rng)
    weights = rng.uniform(0, 1, size=len(obs))
    weights[:7] = 0.0  # cells of weight 0 are in no group
    adata = ad.AnnData(storage(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(x.shape[1])]))
    got = group_statistics(adata, "group", weights=weights, normalize=normalize, chunk_size=7)
    y = np.log1p(x * 1e4 / x.sum(axis=1, keepdims=True)) if normalize == "log1p" else x
    labels = obs["group"].to_numpy()
    for k, group in enumerate(got.groups):
        cells = (labels == group) & (weights > 0)
        w = weights[cells]
        # numpy.cov(aweights=w, ddof=1) is the reliability-weighted unbiased variance
        expected_var = np.array([np.cov(y[cells, j], aweights=w, ddof=1) for j in range(y.shape[1])])
        np.testing.assert_allclose(got.mean[k], np.average(y[cells], axis=0, weights=w), rtol=1e-12, atol=1e-14)
        # M2 = sum(w y^2) - (sum w y)^2 / W in float64 on values below 10: 1e-10 relative
        np.testing.assert_allclose(got.var[k], expected_var, rtol=1e-10, atol=1e-14)
        assert got.n_eff[k] == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-14)
        assert got.n_cells[k] == cells.sum()
        np.testing.assert_array_equal(got.n_nonzero[k], (y[cells] != 0).sum(axis=0))


def test_unit_weights_give_the_unweighted_statistics_and_collapse_pools_exactly():
    rng = np.random.default_rng(4)
    x, obs = _counts(rng)
    adata = ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(x.shape[1])]))
    plain = group_statistics(adata, "group", normalize="log1p")
    ones = group_statistics(adata, "group", weights=np.ones(len(obs)), normalize="log1p")
    np.testing.assert_allclose(ones.mean, plain.mean, rtol=1e-12)
    np.testing.assert_allclose(ones.var, plain.var, rtol=1e-10)
    np.testing.assert_array_equal(ones.n_eff, plain.n_cells)
    # split every group in two, weight, pool: the same as weighting the groups directly
    halves = pd.Series(np.where(rng.uniform(size=len(obs)) < 0.5, "A", "B"), index=obs.index, name="half")
    weights = rng.uniform(0.05, 1, size=len(obs))
    direct = group_statistics(adata, "group", weights=weights, normalize="log1p")
    pooled = group_statistics(adata, ["group", halves], weights=weights, normalize="log1p").collapse("group")
    np.testing.assert_allclose(pooled.mean, direct.mean, rtol=1e-12)
    np.testing.assert_allclose(pooled.var, direct.var, rtol=1e-10)
    np.testing.assert_allclose(pooled.n_eff, direct.n_eff, rtol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_collapse_in_blocks_of_genes_equals_one_block(monkeypatch, weighted):
    """collapse pools a block of genes at a time; every block size gives the same bits."""
    import shrinkpert.stats.group as group_module

    rng = np.random.default_rng(8)
    x, obs = _counts(rng, n_genes=11)
    adata = ad.AnnData(sp.csr_matrix(x), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(x.shape[1])]))
    halves = pd.Series(np.where(rng.uniform(size=len(obs)) < 0.5, "A", "B"), index=obs.index, name="half")
    weights = rng.uniform(0.05, 1, size=len(obs)) if weighted else None
    stats = group_statistics(adata, ["group", halves], weights=weights, normalize="log1p")
    whole = stats.collapse("group")
    monkeypatch.setattr(group_module, "_COLLAPSE_ENTRIES", 2 * len(stats.groups))  # blocks of 2 genes, one of 1
    blocked = stats.collapse("group")
    for name in ("n_cells", "sum", "mean", "var", "n_nonzero", "weight_sum", "weight_sq"):
        np.testing.assert_array_equal(getattr(blocked, name), getattr(whole, name), err_msg=name)


def test_kish_standard_error_matches_the_spread_of_weighted_means():
    """var / n_eff estimates Var(weighted mean): 2,000 groups of 12 cells, 10 genes, known mean 0.

    The weights (three cells of 1, nine of 0.2) give n / n_eff = 1.51, so a standard error from the
    cell count would be 23% too small. The ratio of the empirical variance of the 20,000 weighted
    means to the mean of var / n_eff has a Monte Carlo SE of about 1%; tolerance 5%.
    """
    rng = np.random.default_rng(5)
    n_groups, size, n_genes = 2000, 12, 10
    weights_one = np.r_[np.ones(3), np.full(size - 3, 0.2)]
    x = rng.normal(0.0, 1.0, size=(n_groups * size, n_genes)) * rng.uniform(0.5, 2.0, size=n_genes)
    obs = pd.DataFrame({"group": np.repeat([f"g{k:04d}" for k in range(n_groups)], size)},
                       index=[f"c{i}" for i in range(n_groups * size)])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]))
    got = group_statistics(adata, "group", weights=np.tile(weights_one, n_groups))
    n_eff = weights_one.sum() ** 2 / (weights_one**2).sum()
    np.testing.assert_allclose(got.n_eff, n_eff, rtol=1e-12)
    empirical = (got.mean**2).mean(axis=0)  # the true mean is 0: Var = E[mean^2], per gene
    ratio = empirical.sum() / (got.var / got.n_eff[:, None]).mean(axis=0).sum()
    assert abs(ratio - 1) < 0.05, ratio
    assert empirical.sum() / (got.var / size).mean(axis=0).sum() > 1.3  # the cell count would fail


def test_bad_weights_are_refused():
    rng = np.random.default_rng(6)
    x, obs = _counts(rng, n_cells=20)
    adata = ad.AnnData(x, obs=obs)
    with pytest.raises(InputError, match="one entry per cell"):
        group_statistics(adata, "group", weights=np.ones(5))
    with pytest.raises(InputError, match="finite and non-negative"):
        group_statistics(adata, "group", weights=np.r_[-1.0, np.ones(19)])


def _sequential(values, starts):
    """Each segment's rows summed left to right, starting from the first row."""
    out = []
    for lo, hi in zip(starts, np.r_[starts[1:], len(values)]):
        total = values[lo].copy()
        for row in values[lo + 1:hi]:
            total = total + row
        out.append(total)
    return np.array(out)


def _twin_pool(mean, var, n_r, scale, valid, codes, order, starts):
    """The NumPy expressions pool_moments replaced (GroupStatistics.collapse before the kernel),
    with each pooled sum taken left to right."""
    def add(values):
        return _sequential(values[order], starts)

    n_r = n_r[:, None]
    n = add(n_r[:, 0])[:, None]
    filled = np.where(n_r > 0, mean, 0.0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        pooled = add(n_r * filled) / n
        spread = n_r * (filled - np.nan_to_num(pooled)[codes]) ** 2
        own = np.where(np.isfinite(var) if valid is None else valid[:, None], var * scale[:, None], 0.0)
    return pooled, add(own) + add(spread)


@pytest.mark.parametrize("per_entry", [False, True])
def test_pool_moments_equals_its_numpy_twin(per_entry):
    """Sub-groups in any order, of one to four rows, empty ones, NaN and infinite values: the same bits."""
    from shrinkpert.stats import _kernels as K

    rng = np.random.default_rng(11)
    n_sub, n_genes = 23, 9
    codes = rng.permutation(np.r_[np.arange(8), rng.integers(0, 8, n_sub - 8)])
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(8))
    lengths = np.diff(np.r_[starts, n_sub])
    mean, var = rng.normal(size=(n_sub, n_genes)), rng.uniform(0, 2, size=(n_sub, n_genes))
    n_r = rng.uniform(0.5, 30, n_sub)
    n_r[order[starts[3]:starts[4]]] = 0.0  # a pooled group without cells: NaN mean
    mean[order[starts[3]:starts[4]]] = np.nan
    var[2, 1], var[5, 3] = np.nan, np.inf
    mean[order[starts[5]], 2] = np.inf  # an infinite pooled mean is centred at the largest float (nan_to_num)
    scale = rng.uniform(0.5, 20, n_sub)
    valid = None if per_entry else rng.uniform(size=n_sub) < 0.7
    n = _sequential(n_r[order], starts)
    got_mean, got_m2 = np.empty((8, n_genes)), np.empty((8, n_genes))
    K.pool_moments(mean, var, n_r, scale, np.ones(n_sub, bool) if valid is None else valid, per_entry,
                   order.astype(np.int64), starts.astype(np.int64), lengths.astype(np.int64), n, got_mean, got_m2)
    want_mean, want_m2 = _twin_pool(mean, var, n_r, scale, valid, codes, order, starts)
    np.testing.assert_array_equal(got_mean, want_mean)
    np.testing.assert_array_equal(got_m2, want_m2)
    assert np.isnan(got_mean[3]).all() and np.isinf(got_mean[5, 2])


def test_sum_segments_adds_each_segment_left_to_right():
    from shrinkpert.stats.group import _sum_segments

    rng = np.random.default_rng(12)
    values = rng.normal(size=(17, 5)) * 10.0 ** rng.integers(-8, 8, size=(17, 5))
    starts = np.array([0, 1, 4, 5, 11])
    lengths = np.diff(np.r_[starts, 17])
    np.testing.assert_array_equal(_sum_segments(values, starts, lengths), _sequential(values, starts))
    ints = rng.integers(0, 100, size=(17, 5))
    np.testing.assert_array_equal(_sum_segments(ints, starts, lengths), np.add.reduceat(ints, starts, axis=0))
    pairs = np.arange(0, 17, 2)  # segments of one or two rows (a truth's halves): reduceat's own bits
    np.testing.assert_array_equal(_sum_segments(values, pairs, np.diff(np.r_[pairs, 17])),
                                  np.add.reduceat(values, pairs, axis=0))
