"""Cell-weighted energy distance and MMD: the metrics of weighted empirical distributions.

External anchors: ``scipy.stats.energy_distance`` with ``u_weights``/``v_weights`` (one
dimension); integer weights equal repeating cells; weights 0 equal deleting cells; equal weights
equal the unweighted metric exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import cdist

from shrinkpert.errors import InputError
from shrinkpert.metrics import energy_distance, mmd


@pytest.fixture
def cells():
    rng = np.random.default_rng(21)
    x = rng.normal(0, 1, size=(30, 5))
    y = rng.normal(0.4, 1.3, size=(36, 5))
    return x, y, rng


def test_weighted_energy_matches_scipy_in_one_dimension(cells):
    _, _, rng = cells
    a, b = rng.normal(size=(40, 1)), rng.normal(1, 2, size=(25, 1))
    wa, wb = rng.uniform(0.1, 3, 40), rng.uniform(0, 1, 25)
    ours = energy_distance(a, b, pred_cell_weights=wa, true_cell_weights=wb, max_cells=None)
    # scipy returns sqrt(2 * int (F - G)^2) = sqrt of the weighted V-statistic; Gram-trick distances: 1e-10
    want = stats.energy_distance(a[:, 0], b[:, 0], u_weights=wa, v_weights=wb)
    np.testing.assert_allclose(np.sqrt(ours), want, rtol=1e-10)


@pytest.mark.parametrize("metric", ["energy", "mmd"])
def test_integer_weights_equal_repeated_cells(cells, metric):
    x, y, rng = cells
    wx, wy = rng.integers(1, 4, len(x)), rng.integers(1, 4, len(y))
    if metric == "energy":
        f = lambda *a, **k: energy_distance(*a, max_cells=None, **k)  # noqa: E731
    else:
        f = lambda *a, **k: mmd(*a, bandwidth=1.7, max_cells=None, **k)  # noqa: E731
    weighted = f(x, y, pred_cell_weights=wx, true_cell_weights=wy)
    repeated = f(np.repeat(x, wx, axis=0), np.repeat(y, wy, axis=0))
    np.testing.assert_allclose(weighted, repeated, rtol=1e-10)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("metric", [energy_distance, mmd])
def test_zero_weights_equal_deleting_the_cells(cells, metric, unbiased):
    x, y, rng = cells
    wy = np.where(rng.uniform(size=len(y)) < 0.3, 0.0, 1.0)
    wx = np.where(rng.uniform(size=len(x)) < 0.2, 0.0, 1.0)
    weighted = metric(x, y, pred_cell_weights=wx, true_cell_weights=wy, max_cells=None, unbiased=unbiased)
    deleted = metric(x[wx > 0], y[wy > 0], max_cells=None, unbiased=unbiased)
    # the distances' rounding depends on the centre (all cells vs the kept ones): 1e-10
    np.testing.assert_allclose(weighted, deleted, rtol=1e-10)


@pytest.mark.parametrize("metric", [energy_distance, mmd])
def test_equal_weights_are_the_unweighted_metric_exactly(cells, metric):
    x, y, _ = cells
    for unbiased in (False, True):
        plain = metric(x, y, unbiased=unbiased)
        assert metric(x, y, unbiased=unbiased, true_cell_weights=np.full(len(y), 2.5),
                      pred_cell_weights=np.ones(len(x))) == plain


def test_weighted_u_statistic_is_the_self_pair_free_weighted_mean(cells):
    x, y, rng = cells
    wx, wy = rng.uniform(0.2, 2, len(x)), rng.uniform(0.2, 2, len(y))
    ax, ay = wx / wx.sum(), wy / wy.sum()

    def within(d, a):
        off = ~np.eye(len(a), dtype=bool)
        return (np.outer(a, a) * d)[off].sum() / (np.outer(a, a))[off].sum()

    dxx, dyy, dxy = cdist(x, x), cdist(y, y), cdist(x, y)
    want = 2 * ax @ dxy @ ay - within(dxx, ax) - within(dyy, ay)
    got = energy_distance(x, y, pred_cell_weights=wx, true_cell_weights=wy, unbiased=True, max_cells=None)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_subsampling_keeps_each_cell_with_its_weight(cells):
    x, y, rng = cells
    wy = rng.uniform(0, 1, len(y))
    got = energy_distance(x, y, true_cell_weights=wy, max_cells=20, seed=4)
    draw = np.random.default_rng(4)
    ix = np.sort(draw.choice(len(x), 20, replace=False))
    iy = np.sort(draw.choice(len(y), 20, replace=False))
    assert got == energy_distance(x[ix], y[iy], true_cell_weights=wy[iy], max_cells=None)


def test_bad_cell_weights_are_refused(cells):
    x, y, _ = cells
    with pytest.raises(InputError, match=r"true_cell_weights has shape \(3,\)"):
        energy_distance(x, y, true_cell_weights=np.ones(3))
    with pytest.raises(InputError, match="pred_cell_weights must be finite and >= 0"):
        mmd(x, y, pred_cell_weights=-np.ones(len(x)))
    with pytest.raises(InputError, match="true_cell_weights has 0 positive weight"):
        energy_distance(x, y, true_cell_weights=np.zeros(len(y)))
    one = np.zeros(len(y))
    one[0] = 1.0
    with pytest.raises(InputError, match="at least 2 are needed"):
        mmd(x, y, true_cell_weights=one, unbiased=True)
