"""Wilcoxon rank-sum DE: kernel vs a NumPy twin, engine vs scipy.stats.mannwhitneyu and cell-eval2.

Tolerances: U is a sum of half-integers, compared to 1e-9 absolute. p-values use the same
closed form as scipy's asymptotic method evaluated in a different order (erfc in the kernel,
scipy's ``norm.sf``), so they agree to rounding: 1e-12 relative wherever p > 1e-300.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

from shrinkpert.errors import GeneMismatchError, InputError, MissingKeyError
from shrinkpert.stats._wilcoxon_kernels import gather_columns, grid_sort, mwu_block, scatter_rows
from shrinkpert.stats.wilcoxon import wilcoxon_de, wilcoxon_de_pair

CONTROL = "non-targeting"


def _twin(dense: np.ndarray, codes: np.ndarray, control: int, n_groups: int):
    """NumPy twin of ``mwu_block``: explicit mid-ranks of the pooled sample for each pair."""
    u = np.full((n_groups, dense.shape[1]), np.nan)
    p = np.full((n_groups, dense.shape[1]), np.nan)
    y = dense[codes == control]
    for g in range(n_groups):
        if g == control:
            continue
        x = dense[codes == g]
        n1, n2 = len(x), len(y)
        for j in range(dense.shape[1]):
            pooled = np.concatenate([x[:, j], y[:, j]])
            ranks = stats.rankdata(pooled)
            u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
            _, t = np.unique(pooled, return_counts=True)
            n = n1 + n2
            var = n1 * n2 / 12 * ((n + 1) - (t**3 - t).sum() / (n * (n - 1)))
            u[g, j] = u1
            if var <= 0:
                p[g, j] = 1.0
                continue
            z = (max(u1, n1 * n2 - u1) - n1 * n2 / 2 - 0.5) / np.sqrt(var)
            p[g, j] = min(2 * stats.norm.sf(z), 1.0)
    return u, p


def _counts(rng, n_cells, n_genes):
    X = rng.poisson(rng.gamma(0.6, 2.0, size=(n_cells, n_genes))).astype(np.float32)
    X[:, 0] = 0  # an all-zero gene
    X[:, 1] = 3  # a constant gene: one tie group
    return X


def _adata(X, labels, fmt="csr"):
    matrix = {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense": np.asarray}[fmt](X)
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(matrix, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]))


def test_kernel_matches_numpy_twin():
    rng = np.random.default_rng(1)
    X = _counts(rng, 60, 9).astype(np.float64)
    codes = rng.integers(0, 4, size=60).astype(np.int32)
    codes[:5] = 3
    csc = sp.csc_matrix(X)
    csc.eliminate_zeros()
    u = np.full((4, 9), np.nan)
    p = np.full((4, 9), np.nan)
    sizes = np.bincount(codes, minlength=4).astype(np.int64)
    mwu_block(csc.indptr.astype(np.int64), codes[csc.indices], csc.data, sizes, 3, u, p)
    tu, tp = _twin(X, codes, 3, 4)
    np.testing.assert_allclose(u[:3], tu[:3], rtol=0, atol=1e-9)
    np.testing.assert_allclose(p[:3], tp[:3], rtol=1e-12, atol=0)


@pytest.mark.parametrize("normalize", [False, True])
def test_matches_scipy_mannwhitneyu(normalize):
    rng = np.random.default_rng(2)
    X = _counts(rng, 130, 12)
    labels = np.array([CONTROL] * 50 + ["A"] * 60 + ["B"] * 17 + ["C"] * 2 + ["D"])
    res = wilcoxon_de(_adata(X, labels), normalize=normalize)
    Y = X.astype(np.float64)
    if normalize:
        Y = np.log1p(Y / (Y.sum(axis=1, keepdims=True) / 1e6))
    for k, name in enumerate(res.perturbations):
        for j in range(X.shape[1]):
            ref = stats.mannwhitneyu(Y[labels == name, j], Y[labels == CONTROL, j], method="asymptotic")
            assert res.u[k, j] == pytest.approx(ref.statistic, abs=1e-9)
            assert res.p[k, j] == pytest.approx(ref.pvalue, rel=1e-12, abs=0)
    assert (res.p[:, 0] == 1.0).all()
    if not normalize:
        assert (res.p[:, 1] == 1.0).all()


def test_strong_effect_p_to_1e12_relative():
    rng = np.random.default_rng(3)
    X = rng.poisson(5.0, size=(400, 3)).astype(np.float32)
    labels = np.array([CONTROL] * 200 + ["A"] * 200)
    X[200:, 2] += 6
    res = wilcoxon_de(_adata(X, labels), normalize=False)
    ref = stats.mannwhitneyu(X[200:, 2].astype(float), X[:200, 2].astype(float), method="asymptotic")
    assert 0 < ref.pvalue < 1e-40
    assert res.p[0, 2] == pytest.approx(ref.pvalue, rel=1e-12)


def test_storage_chunking_reference_and_bh(tmp_path):
    rng = np.random.default_rng(4)
    X = _counts(rng, 90, 11)
    labels = np.array([CONTROL] * 30 + ["A"] * 30 + ["B"] * 30)
    base = wilcoxon_de(_adata(X, labels))
    path = tmp_path / "x.h5ad"
    _adata(X, labels, "csc").write_h5ad(path)
    for other in (
        wilcoxon_de(_adata(X, labels, "dense"), chunk_size=4),
        wilcoxon_de(path, chunk_size=3),
        wilcoxon_de(ad.read_h5ad(path, backed="r")),
    ):
        np.testing.assert_array_equal(other.p, base.p)
        np.testing.assert_array_equal(other.u, base.u)
        np.testing.assert_allclose(other.lfc, base.lfc, rtol=1e-12)
    # the controls of another dataset: same numbers as when they sit in the data
    pred = _adata(X[30:], labels[30:])
    ref = _adata(X[:30], labels[:30])
    split = wilcoxon_de(pred, reference=ref)
    np.testing.assert_array_equal(split.p, base.p)
    # one pass for a truth and a prediction: the same numbers as two separate calls
    guess = _adata(X[::-1].copy(), labels[::-1].copy())
    both = wilcoxon_de_pair(guess, _adata(X, labels), chunk_size=5)
    alone = wilcoxon_de(guess, reference=_adata(X, labels))
    np.testing.assert_array_equal(both[0].p, base.p)
    np.testing.assert_array_equal(both[1].p, alone.p)
    np.testing.assert_allclose(both[1].lfc, alone.lfc, rtol=1e-12)
    # BH per perturbation (scipy's false_discovery_control), over the gated genes only
    gated = wilcoxon_de(_adata(X, labels), min_control_cpm=20_000.0)
    assert 0 < gated.tested.sum() < X.shape[1]
    for k in range(2):
        expect = stats.false_discovery_control(gated.p[k, gated.tested], method="bh")
        np.testing.assert_allclose(gated.q[k, gated.tested], expect, rtol=1e-14)
    assert np.isnan(gated.q[:, ~gated.tested]).all()
    cpm = X / X.sum(axis=1, keepdims=True) * 1e6
    np.testing.assert_array_equal(gated.tested, cpm[:30].mean(axis=0) > 20_000.0)
    frame = base.to_frame()
    assert list(frame.columns) == ["perturbation", "gene", "u", "p", "q", "lfc", "tested"]
    assert len(frame) == 2 * 11


def test_errors():
    """Each input is validated once at the boundary; the messages name the side and the rule."""
    X = np.ones((5, 2), dtype=np.float32)
    labels = np.array([CONTROL, CONTROL, CONTROL, "A", "A"])
    with pytest.raises(MissingKeyError, match="data: obs has no column 'guide' \\(perturbation_key\\)"):
        wilcoxon_de(_adata(X, labels), perturbation_key="guide")
    with pytest.raises(MissingKeyError, match="data: Control label 'ctrl' is not in"):
        wilcoxon_de(_adata(X, labels), control="ctrl")
    with pytest.raises(InputError, match="data: the control 'non-targeting' has 2 cells; at least 3"):
        wilcoxon_de(_adata(X[1:], labels[1:]))
    with pytest.raises(InputError, match="data: the matrix contains negative values"):
        wilcoxon_de(_adata(-X, labels))
    with pytest.warns(UserWarning, match="not unique"):
        dup = ad.AnnData(sp.csr_matrix(X), obs=pd.DataFrame({"perturbation": labels}, index=["c"] * 5))
    with pytest.raises(InputError, match="data: Cell names are duplicated"):
        wilcoxon_de(dup)
    other = _adata(X, labels)
    other.var_names = ["x", "y"]
    with pytest.raises(GeneMismatchError, match="reference has different genes"):
        wilcoxon_de(_adata(X, labels), reference=other)
    with pytest.raises(InputError, match="pred has no cells for perturbations \\['A'\\]"):
        wilcoxon_de_pair(_adata(X[:3], labels[:3]), _adata(X, labels))


def test_unlabelled_cells_belong_to_no_group():
    """A cell without a label (or an excluded one) is left out, as the boundary decides."""
    rng = np.random.default_rng(6)
    X = _counts(rng, 40, 5)
    labels = np.array([CONTROL] * 15 + ["A"] * 15 + [None] * 10, dtype=object)
    res = wilcoxon_de(_adata(X, labels))
    kept = _adata(X[:30], labels[:30])
    np.testing.assert_array_equal(res.p, wilcoxon_de(kept).p)
    assert list(res.perturbations) == ["A"]


@pytest.mark.parametrize("kind", ["spread", "ties", "crowded", "one", "equal"])
def test_grid_sort_matches_numpy_sort(kind):
    """Twin: numpy.sort. Spread values, many ties, a crowd next to an outlier (the fallback)."""
    rng = np.random.default_rng(10)
    values = {
        "spread": rng.gamma(2.0, 1.0, size=301),
        "ties": rng.integers(1, 6, size=200).astype(np.float64),
        "crowded": np.concatenate([5.0 + rng.random(150) * 1e-6, [100.0]]),
        "one": np.array([3.0]),
        "equal": np.full(7, 2.5),
    }[kind]
    a = rng.permutation(values)
    grid_sort(a, np.empty(a.size), np.empty(a.size + 1, dtype=np.int64))
    np.testing.assert_array_equal(a, np.sort(values))


def _scatter_twin(csr: sp.csr_matrix, keep: np.ndarray):
    """NumPy twin of ``scatter_rows`` over a whole matrix: scipy's CSC of the kept rows."""
    kept = sp.csr_matrix(csr.multiply(keep[:, None].astype(csr.dtype)))
    kept.eliminate_zeros()
    csc = kept.tocsc()
    csc.sort_indices()
    return csc.indptr, csc.indices, csc.data


def test_scatter_kernel_matches_numpy_twin():
    rng = np.random.default_rng(8)
    X = _counts(rng, 37, 6)
    X[X == 0] = 0
    csr = sp.csr_matrix(X)
    keep = rng.random(37) < 0.7
    indptr, rows, values = _scatter_twin(csr, keep)
    fill = indptr[:-1].astype(np.int64).copy()
    out_rows = np.full(indptr[-1], -1, dtype=np.int32)
    out_values = np.zeros(indptr[-1], dtype=np.float32)
    for r0 in range(0, 37, 10):  # in row blocks, as the reader hands them out
        block = csr[r0 : r0 + 10]
        scatter_rows(block.indptr, block.indices, block.data, r0, keep, fill, out_rows, out_values)
    np.testing.assert_array_equal(fill, indptr[1:])
    np.testing.assert_array_equal(out_rows, rows)
    np.testing.assert_array_equal(out_values, values)


def test_gather_kernel_matches_numpy_twin():
    rng = np.random.default_rng(9)
    X = _counts(rng, 30, 7)
    csc = sp.csc_matrix(X)
    codes = rng.integers(-1, 3, size=30)
    divisor = rng.uniform(0.5, 2.0, size=30)
    g0, g1 = 2, 6
    n = csc.indptr[g1] - csc.indptr[g0]
    start = csc.indptr[g0:g1].astype(np.int64) - csc.indptr[g0] + 5  # an offset: another side's entries first
    out_codes = np.full(n + 5, 99, dtype=np.int32)
    out_values = np.full(n + 5, np.nan)
    sums = np.zeros((3, 7))
    gather_columns(csc.indptr.astype(np.int64), csc.indices, csc.data, divisor, codes, g0, start, out_codes,
                   out_values, sums)
    rows = csc.indices[csc.indptr[g0] : csc.indptr[g1]]
    vals = csc.data[csc.indptr[g0] : csc.indptr[g1]].astype(np.float64)
    ok = (codes[rows] >= 0) & (vals != 0)
    np.testing.assert_array_equal(out_codes[5:], np.where(ok, codes[rows], -1))
    np.testing.assert_array_equal(out_values[5:], np.where(ok, vals / divisor[rows], 0.0))
    assert (out_codes[:5] == 99).all()
    dense = X.astype(np.float64) / divisor[:, None]
    expect = np.stack([dense[codes == c].sum(axis=0) for c in range(3)])
    expect[:, [0, 1, 6]] = 0.0
    np.testing.assert_allclose(sums, expect, rtol=1e-12)


@pytest.mark.peer
def test_matches_cell_eval2_cpu_engine():
    """cell-eval2's CPU DE (pdex Mann–Whitney on log1p CPM, CPM gate 5, BH per perturbation)."""
    de_compute = pytest.importorskip("cell_eval2.de_compute")
    pytest.importorskip("pdex")
    rng = np.random.default_rng(5)
    X = _counts(rng, 150, 30)
    X[100:, 5] += 4
    labels = np.array([CONTROL] * 50 + ["A"] * 50 + ["B"] * 48 + ["C"] * 2)
    adata = _adata(X, labels)
    peer = de_compute.compute_de(
        adata, backend="pdex", groupby="perturbation", reference=CONTROL, mean_calc="arithmetic",
        epsilon=1e-9, input_type="counts", target_sum=1e6, filter_gene_min_cpm_cell=5.0, threads=1,
    ).to_pandas()
    ours = wilcoxon_de(adata, min_control_cpm=5.0).to_frame()
    ours = ours[ours.tested]
    both = peer.merge(ours, left_on=["target", "feature"], right_on=["perturbation", "gene"])
    assert len(both) == len(peer) == len(ours)
    np.testing.assert_allclose(both.p, both.p_value, rtol=1e-12, atol=0)
    np.testing.assert_allclose(both.q, both.p_adj, rtol=1e-12, atol=0)
    np.testing.assert_allclose(both.lfc, both.log2_fold_change, rtol=1e-9, atol=1e-12)
