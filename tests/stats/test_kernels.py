"""Group-statistics kernels against their NumPy twin over layouts, dtypes, chunks and threads."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from shrinkpert import ShrinkpertWarning, group_statistics
from tests.conftest import as_layout, make_counts
from tests.twins import group_stats, transform

LAYOUTS = ["dense", "csr", "csc", "backed_csr", "backed_csc"]
DTYPES = [np.int32, np.int64, np.float32, np.float64]


def _run(source, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShrinkpertWarning)  # the zero-count cell is warned about elsewhere
        return group_statistics(source, "perturbation", **kw)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("normalize", [None, "log1p"])
def test_matches_numpy_twin(counts, layout, dtype, normalize, tmp_path):
    source = as_layout(counts, layout, dtype, tmp_path)
    codes = counts.obs["perturbation"].cat.codes.to_numpy()
    ref = group_stats(transform(counts.X, normalize), codes, len(counts.obs["perturbation"].cat.categories))
    for chunk_size in (1, 7, None):
        for n_threads in (1, 2):
            got = _run(source, normalize=normalize, chunk_size=chunk_size, n_threads=n_threads)
            np.testing.assert_array_equal(got.n_cells, ref["n_cells"])
            np.testing.assert_array_equal(got.n_nonzero, ref["n_nonzero"])
            if normalize is None:
                # integer counts: sums of integers in float64 are exact, whatever the order
                np.testing.assert_array_equal(got.sum, ref["sum"])
                np.testing.assert_array_equal(got.mean, ref["mean"])
            # floats: summation order differs from NumPy's pairwise sum, so 1e-12 relative
            np.testing.assert_allclose(got.sum, ref["sum"], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got.mean, ref["mean"], rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(got.var, ref["var"], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("layout", ["csr", "dense", "backed_csr", "csc"])
def test_integer_results_bit_identical_across_chunks_and_threads(counts, layout, tmp_path):
    source = as_layout(counts, layout, np.int32, tmp_path)
    base = _run(source, chunk_size=1, n_threads=1)
    for chunk_size, n_threads in [(7, 2), (None, 2), (13, 1)]:
        other = _run(source, chunk_size=chunk_size, n_threads=n_threads)
        for name in ("sum", "mean", "var", "n_nonzero"):
            np.testing.assert_array_equal(getattr(other, name), getattr(base, name))


def test_float_results_stable_across_chunks_and_threads(counts):
    base = _run(counts, normalize="log1p", chunk_size=1, n_threads=1)
    other = _run(counts, normalize="log1p", chunk_size=64, n_threads=2)
    np.testing.assert_allclose(other.var, base.var, rtol=1e-12)
    np.testing.assert_allclose(other.mean, base.mean, rtol=1e-12)


def test_near_constant_values_keep_their_variance(rng):
    """Large mean, tiny spread: the textbook formula would lose all digits; the shift keeps them."""
    adata = make_counts(rng, n_cells=200, n_genes=5)
    X = 1e6 + rng.normal(0, 1e-3, size=(200, 5))
    adata.X = X
    got = group_statistics(adata, "perturbation")
    codes = adata.obs["perturbation"].cat.codes.to_numpy()
    ref = group_stats(X, codes, 4)
    # np.var is a two-pass algorithm; 1e-9 relative is far below the 1e-6 noise the naive formula gives
    np.testing.assert_allclose(got.var, ref["var"], rtol=1e-9)


def test_single_cell_group_gives_nan_variance_and_warning(counts):
    adata = counts.copy()
    adata.obs["perturbation"] = adata.obs["perturbation"].cat.add_categories("lonely")
    adata.obs.iloc[10, 0] = "lonely"
    with pytest.warns(ShrinkpertWarning, match="lonely.*single cell"):
        got = group_statistics(adata, "perturbation")
    row = list(got.groups).index("lonely")
    assert np.isnan(got.var[row]).all()
    assert got.n_cells[row] == 1


def test_zero_count_cell_warns_when_normalising(counts):
    with pytest.warns(ShrinkpertWarning, match="1 cells .* library size of 0"):
        got = group_statistics(counts, "perturbation", normalize="log1p")
    assert np.all(got.var[:, 3] == 0) and np.all(got.mean[:, 3] == 0)  # the all-zero gene


def test_library_size_column_is_used(counts):
    adata = counts.copy()
    lib = np.asarray(adata.X.sum(axis=1), dtype=float) + 50.0
    adata.obs["lib"] = lib
    got = group_statistics(adata, "perturbation", normalize="log1p", library_size="lib")
    ref = group_stats(transform(adata.X, "log1p", lib=lib), adata.obs["perturbation"].cat.codes.to_numpy(), 4)
    np.testing.assert_allclose(got.mean, ref["mean"], rtol=1e-12)


@pytest.mark.parametrize("n_parts", [1, 2, 3, 8])
def test_group_bounds_cut_between_groups(rng, n_parts):
    from shrinkpert.stats._kernels import group_bounds

    for codes in (np.sort(rng.integers(-1, 6, 57)), np.zeros(10, dtype=np.int64), np.arange(5), np.zeros(0, int)):
        bounds = group_bounds(codes, n_parts)
        assert len(bounds) == n_parts + 1 and bounds[0] == 0 and bounds[-1] == len(codes)
        assert np.all(np.diff(bounds) >= 0)
        for b in bounds[1:-1]:  # never inside a group
            assert b in (0, len(codes)) or codes[b - 1] != codes[b]


def test_float_results_bit_identical_across_threads(counts):
    """Threads own whole groups of a block, so each group's values are added in one order."""
    one = _run(counts, normalize="log1p", chunk_size=64, n_threads=1)
    two = _run(counts, normalize="log1p", chunk_size=64, n_threads=2)
    for name in ("sum", "mean", "var", "n_nonzero"):
        np.testing.assert_array_equal(getattr(two, name), getattr(one, name))
