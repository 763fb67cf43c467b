"""The shared expression helpers: Pearson rows (a Numba kernel) against their NumPy twin and scipy,
the weighted constant-row check,
and ``checked_once`` (value checks once per array, never skipped for anything else)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shrinkpert.errors import InputError
from shrinkpert.metrics import mae, mse, pearson_delta
from shrinkpert.metrics.expression import _is_constant, _pearson_rows, _wmean, checked_once


def _pearson_twin(x, y, w):
    xc = x - _wmean(x, w)[:, None]
    yc = y - _wmean(y, w)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        r = _wmean(xc * yc, w) / np.sqrt(_wmean(xc * xc, w) * _wmean(yc * yc, w))
    r = np.clip(r, -1.0, 1.0)
    r[_is_constant(x, w) | _is_constant(y, w)] = np.nan
    return r


def _rows(seed, n=8, g=50):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, g))
    y = x * rng.normal(size=(n, 1)) + rng.normal(scale=0.3, size=(n, g))
    x[0] = 2.5  # constant
    y[1] = x[1] * 3 + 1e-9  # perfectly correlated
    x[2] = np.round(x[2])  # ties
    x[3] = 1e-300 * rng.normal(size=g)  # tiny scale
    w = rng.gamma(1.0, size=(n, g)) * (rng.random((n, g)) < 0.6)
    w[4] = 0.0  # all weights 0
    w[5, 2:] = 0.0  # two genes weighted
    return x, y, w


@pytest.mark.parametrize("seed", range(4))
def test_pearson_rows_kernel_matches_its_numpy_twin_and_scipy(seed):
    """The kernel sums over genes in order, NumPy in its own (pairwise, vector) order: the values
    agree to rounding (1e-12 relative, 1e-14 absolute for correlations near 0), the NaN rows
    (constant, no weighted gene) and the clipped ones exactly."""
    x, y, w = _rows(seed)
    for weights in (None, w, w[:1]):
        got, want = _pearson_rows(x, y, weights), _pearson_twin(x, y, weights)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    expected = [stats.pearsonr(a, b).statistic for a, b in zip(x[4:], y[4:])]
    np.testing.assert_allclose(_pearson_rows(x[4:], y[4:], None), expected, rtol=1e-12)


def test_checked_once_gives_the_same_values_and_still_checks_everything_else():
    x, y, w = _rows(9)
    a, b, wt = (x.copy(), y.copy(), np.abs(w))
    for arr in (a, b, wt):
        arr.setflags(write=False)
    cache: dict = {}
    with checked_once(cache, a, b, weights=wt):
        inside = [mse(a[:], b[:], weights=wt[:]), mae(a, b), pearson_delta(a, b, weights=wt)]
        bad = np.array(b)
        bad[0, 0] = np.nan  # a different (writeable) array: checked
        with pytest.raises(InputError, match="non-finite"):
            mse(a, bad)
        with pytest.raises(InputError, match="weights contains negative"):
            mse(a, b, weights=-wt)
    outside = [mse(a, b, weights=wt), mae(a, b), pearson_delta(a, b, weights=wt)]
    for i, o in zip(inside, outside):
        np.testing.assert_array_equal(i, o)
    assert len(cache) == 3


def test_checked_once_refuses_bad_arrays_once_registered():
    x, y, w = _rows(10)
    x[1, 1] = np.inf
    x.setflags(write=False)
    with pytest.raises(InputError, match="non-finite"):
        with checked_once({}, x, y):
            pass
    neg = -np.abs(w)
    neg.setflags(write=False)
    with pytest.raises(InputError, match="negative"):
        with checked_once({}, y, weights=neg):
            pass
    # an array checked as values is checked again before it serves as weights
    y2 = y.copy()
    y2.setflags(write=False)
    cache: dict = {}
    with checked_once(cache, y2):
        pass
    with pytest.raises(InputError, match="negative"):
        with checked_once(cache, weights=y2):
            pass


def _is_constant_twin(x, w):
    used = w > 0
    return ~(np.where(used, x, -np.inf).max(axis=1) > np.where(used, x, np.inf).min(axis=1))


def test_is_constant_weighted_equals_its_previous_form():
    x, _, w = _rows(4)
    x[6, :] = 3.0
    x[6, 0] = 7.0  # constant except on one gene ...
    w[6, 0] = 0.0  # ... that has no weight
    x[7, w[7] > 0] = -0.0
    x[7, np.flatnonzero(w[7] > 0)[:2]] = 0.0  # -0.0 == 0.0
    np.testing.assert_array_equal(_is_constant(x, w), _is_constant_twin(x, w))
    assert _is_constant(x, w)[[0, 4, 6, 7]].all() and not _is_constant(x, w)[[1, 2, 3]].any()


def test_checked_once_blocks_nest():
    """An inner block sees the outer block's arrays as checked; an unchecked array still raises,
    and leaving the inner block restores the outer view."""
    from shrinkpert.metrics.expression import _known

    truth = np.ones((3, 4))
    truth.flags.writeable = False
    pred = np.zeros((3, 4))
    pred.flags.writeable = False
    bad = np.full((3, 4), np.nan)
    bad.flags.writeable = False
    lasting, mine = {}, {}
    with checked_once(lasting, truth):
        with checked_once(mine, pred):
            assert _known(truth) and _known(pred)
            with pytest.raises(InputError, match="non-finite"):
                mse(bad, truth)
        assert _known(truth) and not _known(pred)
    assert not _known(truth)
    assert list(lasting) and list(mine)


def test_weighted_mean_of_broadcast_weights_is_bit_identical(rng):
    """Shared weights broadcast to every row: their sum is taken once, equal to NumPy's row sums."""
    x = rng.normal(size=(9, 8000))
    w0 = rng.uniform(0, 1, 8000) * 10.0 ** rng.integers(-8, 8, 8000)
    np.testing.assert_array_equal(_wmean(x, np.broadcast_to(w0, x.shape)), _wmean(x, np.tile(w0, (9, 1))))


def test_support_midranks_equal_the_full_ranks_on_the_weighted_genes(rng):
    """0/1 masks (as the DE Spearman uses), ties and NaN included: the weighted genes' ranks are
    the full rows' bit for bit, the others 0; and a weighted Pearson of them is unchanged."""
    from shrinkpert.metrics.expression import _support_midranks, _weighted_midranks

    x = np.round(rng.normal(size=(7, 60)), 1)
    x[2, 5] = np.nan
    mask = (rng.random((7, 60)) < 0.2).astype(float)
    mask[2, 5] = 1.0
    mask[4] = 0.0  # a row with no weighted gene
    got = _support_midranks(x, mask)
    full = _weighted_midranks(x, mask)
    np.testing.assert_array_equal(got[mask > 0], full[mask > 0])
    assert (got[mask == 0] == 0).all()
    y = rng.normal(size=(7, 60))
    np.testing.assert_array_equal(_pearson_rows(got, y, mask), _pearson_rows(full, y, mask))
    dense = (rng.random((7, 60)) < 0.9).astype(float)  # most genes weighted: the whole-row path
    np.testing.assert_array_equal(_support_midranks(x, dense)[dense > 0], _weighted_midranks(x, dense)[dense > 0])
