"""Energy distance and MMD against scipy and brute-force double loops; seeding and subsampling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats
from scipy.spatial.distance import cdist, pdist

from shrinkpert.errors import GeneMismatchError, InputError
from shrinkpert.metrics import energy_distance, mmd


def _brute_energy(x, y, unbiased):
    dxy, dxx, dyy = cdist(x, y), cdist(x, x), cdist(y, y)
    if unbiased:
        wx = dxx.sum() / (len(x) * (len(x) - 1))
        wy = dyy.sum() / (len(y) * (len(y) - 1))
    else:
        wx, wy = dxx.mean(), dyy.mean()
    return 2 * dxy.mean() - wx - wy


def _brute_mmd(x, y, sigma, unbiased):
    k = lambda a, b: np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    if unbiased:
        sx = (kxx.sum() - len(x)) / (len(x) * (len(x) - 1))
        sy = (kyy.sum() - len(y)) / (len(y) * (len(y) - 1))
    else:
        sx, sy = kxx.mean(), kyy.mean()
    return sx + sy - 2 * k(x, y).mean()


@pytest.fixture
def samples(rng):
    x = rng.normal(0, 1, size=(40, 6))
    y = rng.normal(0.5, 1.5, size=(55, 6))
    return x, y


def test_square_root_matches_scipy_in_one_dimension(rng):
    a, b = rng.normal(size=(70, 1)), rng.normal(1, 2, size=(30, 1))
    np.testing.assert_allclose(np.sqrt(energy_distance(a, b)), stats.energy_distance(a[:, 0], b[:, 0]), rtol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_energy_distance_matches_double_loop(samples, unbiased):
    x, y = samples
    # |a|^2 + |b|^2 - 2ab vs direct differences: 1e-10 relative
    np.testing.assert_allclose(energy_distance(x, y, unbiased=unbiased), _brute_energy(x, y, unbiased), rtol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_double_loop_with_median_heuristic(samples, unbiased):
    x, y = samples
    sigma = np.median(pdist(np.vstack([x, y])))
    np.testing.assert_allclose(mmd(x, y, unbiased=unbiased), _brute_mmd(x, y, sigma, unbiased), rtol=1e-10)
    np.testing.assert_allclose(mmd(x, y, bandwidth=2.0, unbiased=unbiased), _brute_mmd(x, y, 2.0, unbiased),
                               rtol=1e-10)


def test_identical_samples_give_exactly_zero_and_distance_grows_with_shift(samples):
    x, _ = samples
    assert energy_distance(x, x) == 0.0 and mmd(x, x) == 0.0
    e = [energy_distance(x + s, x) for s in (0.1, 0.5, 2.0)]
    m = [mmd(x + s, x) for s in (0.1, 0.5, 2.0)]
    assert e[0] < e[1] < e[2] and m[0] < m[1] < m[2]
    assert energy_distance(x, x, unbiased=True) < 0  # the U-statistic is unbiased, not non-negative


def test_degenerate_all_identical_cells_are_defined():
    flat = np.ones((5, 3))
    assert mmd(flat, flat) == 0.0 and energy_distance(flat, flat) == 0.0
    assert mmd(flat, flat + 1.0) > 0.0  # median of positive distances as bandwidth


def test_subsampling_is_seeded(rng):
    x = rng.normal(size=(300, 4))
    y = rng.normal(0.2, 1, size=(250, 4))
    a = energy_distance(x, y, max_cells=50, seed=1)
    assert a == energy_distance(x, y, max_cells=50, seed=1)
    assert a != energy_distance(x, y, max_cells=50, seed=2)
    assert a == energy_distance(x, y, max_cells=50, seed=np.random.default_rng(1))
    assert mmd(x, y, max_cells=50, seed=3) == mmd(x, y, max_cells=50, seed=3)
    # no side above max_cells: no randomness at all
    assert energy_distance(x, y, max_cells=None) == energy_distance(x, y, max_cells=400, seed=9)


def test_sparse_input_equals_dense(samples):
    x, y = samples
    x = np.where(np.abs(x) < 0.5, 0.0, x)
    assert energy_distance(sp.csr_matrix(x), y) == energy_distance(x, y)
    assert mmd(sp.csc_matrix(x), sp.csr_matrix(y)) == mmd(x, y)


def test_errors(samples):
    x, y = samples
    with pytest.raises(GeneMismatchError, match="pred_cells has 6 genes but true_cells has 5"):
        energy_distance(x, y[:, :5])
    with pytest.raises(InputError, match="at least 2 cells"):
        mmd(x[:1], y)
    with pytest.raises(InputError, match="expected \\(n_cells, n_genes\\)"):
        mmd(x[0], y)
    with pytest.raises(InputError, match="max_cells must be an integer >= 2"):
        energy_distance(x, y, max_cells=1)
    with pytest.raises(InputError, match="bandwidth must be a positive number"):
        mmd(x, y, bandwidth=0.0)
    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="pred_cells has 1 non-finite value"):
        energy_distance(bad, y)
    with pytest.raises(InputError, match="must be a numeric"):
        mmd([["a", "b"], ["c", "d"]], y[:, :2])
