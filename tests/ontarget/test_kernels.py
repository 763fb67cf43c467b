"""The scan kernel against its NumPy twin, over layouts, dtypes, chunk sizes and lookup modes."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import importlib
from shrinkpert.errors import CountsError, InputError
from shrinkpert.ontarget._escape_kernels import scan_block
from tests.conftest import as_layout, make_counts

# the module, not the function of the same name that shrinkpert.ontarget exports
kd = importlib.import_module("shrinkpert.ontarget._counts")


def scan_block_reference(X, row_codes, pairs, n_genes, group_codes, n_groups):
    """NumPy twin of ``_scan``/``scan_block`` on a dense matrix."""
    X = np.asarray(X, dtype=np.float64)
    totals = X.sum(1)
    sums = np.zeros((n_groups, n_genes))
    squares = np.zeros((n_groups, n_genes))
    for g in range(n_groups):
        sums[g] = X[group_codes == g].sum(0)
        squares[g] = (X[group_codes == g] ** 2).sum(0)
    wanted = set(int(p) for p in pairs)
    rows, cols = np.nonzero(X)
    keep = np.array([row_codes[r] >= 0 and int(row_codes[r]) * n_genes + c in wanted for r, c in zip(rows, cols)],
                    dtype=bool)
    entries = sorted(zip(rows[keep], cols[keep], X[rows[keep], cols[keep]]))
    return totals, sums, squares, entries


@pytest.fixture
def problem(rng):
    adata = make_counts(rng, n_cells=120, n_genes=30, n_groups=4)
    n = adata.n_obs
    row_codes = rng.integers(-1, 3, n)
    pairs = np.unique(rng.integers(0, 3, 40) * 30 + rng.integers(0, 30, 40)).astype(np.int64)
    group_codes = rng.integers(-1, 4, n)
    return adata, row_codes, pairs, group_codes


@pytest.mark.parametrize("layout", ["dense", "csr", "csc", "backed_csr", "backed_csc"])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_scan_matches_reference(problem, layout, dtype, chunk, tmp_path):
    adata, row_codes, pairs, group_codes = problem
    want = scan_block_reference(np.asarray(adata.X), row_codes, pairs, 30, group_codes, 4)
    source = as_layout(adata, layout, dtype, tmp_path)
    got = kd._scan(source, None, row_codes=row_codes, pairs=pairs, n_genes=30, group_codes=group_codes,
                   n_groups=4, chunk_size=chunk)
    # integer counts: sums are exact in float64 whatever the order
    np.testing.assert_array_equal(got.totals, want[0])
    np.testing.assert_array_equal(got.group_sums, want[1])
    np.testing.assert_array_equal(got.group_sq, want[2])
    assert sorted(zip(got.rows, got.cols, got.values)) == want[3]


def test_binary_search_path_equals_dense_map(problem, monkeypatch):
    adata, row_codes, pairs, group_codes = problem
    a = kd._scan(adata, None, row_codes=row_codes, pairs=pairs, n_genes=30)
    monkeypatch.setattr(kd, "_DENSE_MAP_LIMIT", 0)
    b = kd._scan(adata, None, row_codes=row_codes, pairs=pairs, n_genes=30)
    assert sorted(zip(a.rows, a.cols, a.values)) == sorted(zip(b.rows, b.cols, b.values))
    assert a.group_sums is None and b.group_sums is None


def test_kernel_flags_non_counts_and_non_finite():
    data = np.array([1.0, 0.5, np.nan])
    indices = np.array([0, 1, 2], dtype=np.int32)
    indptr = np.array([0, 3], dtype=np.int32)
    flags = np.zeros(2, dtype=np.int64)
    empty = np.zeros((0, 0), dtype=np.bool_)
    out_i = np.empty(3, dtype=np.int64)
    n = scan_block(data, indices, indptr, 0, 0, np.array([-1]), np.array([-1]), False, empty,
                   np.zeros(0, dtype=np.int64), 3, np.zeros(1), np.zeros((0, 3)), np.zeros((0, 3)),
                   out_i, out_i.copy(), np.empty(3), flags)
    assert n == 0 and flags.tolist() == [1, 1]
    with pytest.raises(CountsError, match="raw counts"):
        kd._scan(_adata([[0.5, 1.0]]), None,
                 row_codes=np.array([-1]), pairs=np.zeros(0, dtype=np.int64), n_genes=2)
    with pytest.raises(InputError, match="NaN"):
        kd._scan(_adata([[np.nan, 1.0]]), None, row_codes=np.array([-1]), pairs=np.zeros(0, dtype=np.int64),
                 n_genes=2)


def _adata(rows):
    import anndata as ad

    return ad.AnnData(X=sp.csr_matrix(np.array(rows, dtype=np.float64)))
