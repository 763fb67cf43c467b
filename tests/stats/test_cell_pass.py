"""The one streaming pass with gathered entries (used by the target-gene analyses).

References: NumPy on the dense matrix (row totals, the wanted entries, raw group sums and
squares); integer counts make every sum exact, so equality is bit-for-bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert._validate import validate
from shrinkpert.errors import CountsError, InputError
from shrinkpert.stats import cell_pass
from shrinkpert.stats._kernels import gather_block
from tests.conftest import as_layout, make_counts


def gather_block_twin(X, row_offset, col_offset, row_codes, mask):
    """NumPy twin of ``gather_block`` on a dense block: (row, col, value) of wanted non-zeros."""
    out = []
    for i, j in zip(*np.nonzero(X)):
        q = row_codes[row_offset + i]
        if q >= 0 and mask[q, col_offset + j] and np.isfinite(X[i, j]):
            out.append((row_offset + i, col_offset + j, X[i, j]))
    return sorted(out)


def test_gather_kernel_matches_twin(rng):
    X = rng.poisson(0.8, (9, 6)).astype(np.float64)
    X[2, 1] = np.nan
    row_codes = rng.integers(-1, 3, 20)
    mask = rng.random((3, 10)) < 0.4
    csr = sp.csr_matrix(X)
    wanted = sp.csr_matrix(mask)
    r, c, v = np.empty(csr.nnz, np.int64), np.empty(csr.nnz, np.int64), np.empty(csr.nnz)
    n = gather_block(csr.data, csr.indices, csr.indptr, 4, 3, row_codes, wanted.indptr.astype(np.int64),
                     wanted.indices.astype(np.int64), r, c, v)
    assert sorted(zip(r[:n], c[:n], v[:n])) == gather_block_twin(X, 4, 3, row_codes, mask)


@pytest.fixture
def problem(rng):
    adata = make_counts(rng, n_cells=120, n_genes=30, n_groups=4)
    row_codes = rng.integers(-1, 3, adata.n_obs)
    mask = rng.random((3, 30)) < 0.2
    group_codes = rng.integers(-1, 4, adata.n_obs)
    return adata, row_codes, mask, group_codes


@pytest.mark.parametrize("layout", ["dense", "csr", "csc", "backed_csr", "backed_csc"])
@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_one_pass_matches_numpy(problem, layout, dtype, tmp_path):
    adata, row_codes, mask, group_codes = problem
    X = np.asarray(adata.X, dtype=np.float64)
    data = validate(as_layout(adata, layout, dtype, tmp_path), perturbation_key=None)
    for chunk in (7, None):
        got = cell_pass(data, group_codes, pd.RangeIndex(4), check_counts=True,
                        wanted=(row_codes, sp.csr_matrix(mask)), chunk_size=chunk)
        np.testing.assert_array_equal(got.totals, X.sum(1))
        want = np.where((row_codes[:, None] >= 0) & mask[np.maximum(row_codes, 0)], X, 0.0)
        np.testing.assert_array_equal(got.entries.toarray(), want)
        stats = got.statistics
        for g in range(4):
            np.testing.assert_array_equal(stats.sum[g], X[group_codes == g].sum(0))
            squares = stats.m2[g] + stats.sum[g] ** 2 / max(stats.n_cells[g], 1)
            np.testing.assert_allclose(squares, (X[group_codes == g] ** 2).sum(0), rtol=1e-13)
        assert stats.library_size.tolist() == [X[group_codes == g].sum() for g in range(4)]


def test_shard_gathers_only_its_cells(problem):
    adata, row_codes, mask, _ = problem
    data = validate(adata, perturbation_key=None)
    none = np.full(adata.n_obs, -1)
    parts = [cell_pass(data, none, pd.RangeIndex(0), wanted=(row_codes, sp.csr_matrix(mask)), shard=(i, 3))
             for i in range(3)]
    whole = cell_pass(data, none, pd.RangeIndex(0), wanted=(row_codes, sp.csr_matrix(mask)))
    np.testing.assert_array_equal(sum(p.entries for p in parts).toarray(), whole.entries.toarray())
    np.testing.assert_array_equal(sum(p.totals for p in parts), whole.totals)


def test_non_counts_and_bad_masks_are_refused(rng):
    import anndata as ad

    data = validate(ad.AnnData(X=sp.csr_matrix(np.array([[0.5, 1.0], [1.0, 2.0]]))), perturbation_key=None)
    none = np.full(2, -1)
    with pytest.raises(CountsError, match="non-integer values, but this analysis needs raw counts"):
        cell_pass(data, none, pd.RangeIndex(0), check_counts=True)
    with pytest.raises(InputError, match="do not fit 2 cells × 2 genes"):
        cell_pass(data, none, pd.RangeIndex(0), wanted=(np.zeros(3, dtype=int), sp.csr_matrix((1, 2))))
