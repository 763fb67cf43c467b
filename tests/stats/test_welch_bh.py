"""welch_bh and the faster welch_pvalue / bh_adjust against their previous implementations and scipy.

The twins below are the implementations these functions replaced (kept verbatim in spirit: the
full t tail everywhere — ``t_sf`` — one argsort per row); the new code must agree bit for bit (full mode) or
on every call ``q < alpha`` (pruned mode), on inputs built to hit the edge cases: tied p-values,
p-values and BH values exactly at ``alpha``, |t| at the pruning cut, tiny df, zero SEs, NaN rows.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special, stats

from shrinkpert.stats.testing import WelchTest, _bh_below, bh_adjust, t_sf, welch, welch_bh, welch_pvalue


def _pvalue_twin(difference, test):
    """Every gene's two-sided tail, none skipped. The tail is ``t_sf`` itself (checked against
    ``scipy.special.stdtr`` and 40-digit values in ``test_t_kernels.py``): these tests are about
    which tails are evaluated and how BH combines them, so the same tail must give the same bits."""
    diff = np.asarray(difference, dtype=np.float64)
    positive = test.std_error > 0
    t = np.where(positive, diff / np.where(positive, test.std_error, 1.0), 0.0)
    return np.where(positive, 2.0 * t_sf(np.abs(t), test.df), 1.0)


def _bh_twin(p):
    p = np.asarray(p, dtype=np.float64)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[..., ::-1], axis=-1)[..., ::-1]
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.minimum(ranked, 1.0), axis=-1)
    return out


def _adversarial(seed: int, n_rows: int = 12, m: int = 60):
    """Differences and a Welch test with ties, zeros, tiny df and |t| right at the 5% normal cut."""
    rng = np.random.default_rng(seed)
    diff = rng.normal(scale=rng.choice([0.05, 0.5, 3.0], size=(n_rows, 1)), size=(n_rows, m))
    diff[:, :6] = diff[:, :1]  # ties within a row
    diff[:, 6:10] = 0.0  # no change
    diff[1] = diff[0]  # a row tied with another
    v_a = rng.gamma(1.0, 0.02, size=(n_rows, m))
    v_a[:, 10:13] = 0.0
    n_a = rng.choice([1, 2, 3, 50, 10**6], size=(n_rows, 1)).astype(float)
    v_b = rng.gamma(1.0, 0.01, size=(1, m))
    v_b[0, 11:13] = 0.0  # both variances 0: SE 0, p = 1
    test = welch(v_a, n_a, v_b, 200.0)
    z = special.ndtri(1 - 0.025)
    diff[2, 20:30] = test.std_error[2, 20:30] * z * (1 + np.linspace(-1e-6, 1e-6, 10))  # |t| at the cut
    # rows whose largest p-value sits at alpha (there q = p: called exactly when p < alpha)
    near = [(a * f, df) for a in (0.05, 1e-3) for f in (1 - 1e-3, 1 - 1e-12, 1.0, 1 + 1e-12, 1 + 1e-6)
            for df in (1e15, 3.0, 0.7)]
    t_near = np.full((len(near), m), 12.0)
    df_near = np.ones((len(near), m)) * 4.0
    for k, (p, df) in enumerate(near):
        t_near[k, k % m] = -special.stdtrit(df, p / 2)
        df_near[k, k % m] = df
    diff = np.vstack([diff, t_near])
    test = WelchTest(np.vstack([test.std_error, np.ones_like(t_near)]), np.vstack([test.df, df_near]),
                     np.vstack([test.floored, np.zeros(t_near.shape, dtype=bool)]))
    return diff, test


@pytest.mark.parametrize("seed", range(6))
def test_welch_pvalue_equals_full_t_tail(seed):
    diff, test = _adversarial(seed)
    np.testing.assert_array_equal(welch_pvalue(diff, test), _pvalue_twin(diff, test))


def test_welch_pvalue_zero_difference_and_odd_df():
    df = np.array([0.3, 1.0, 2.0, 1e9, np.inf, np.nan, 0.0, -1.0])
    test = WelchTest(np.ones_like(df), df, np.zeros(df.shape, dtype=bool))
    for d in (0.0, -0.0, 1.5):
        np.testing.assert_array_equal(welch_pvalue(np.full(df.shape, d), test), _pvalue_twin(np.full(df.shape, d), test))


def test_bh_adjust_matches_scipy_and_twin_with_ties():
    rng = np.random.default_rng(3)
    p = rng.choice([0.001, 0.01, 0.02, 0.05, 0.3, 1.0], size=(5, 40))
    p[0] = rng.random(40)
    np.testing.assert_array_equal(bh_adjust(p), _bh_twin(p))
    np.testing.assert_allclose(bh_adjust(p), stats.false_discovery_control(p, axis=-1), rtol=1e-12)
    np.testing.assert_array_equal(bh_adjust(p.T, axis=0), _bh_twin(p).T)
    mostly_one = np.where(rng.random(p.shape) < 0.8, 1.0, p)  # sorted without the ones
    mostly_one[3] = 1.0
    np.testing.assert_array_equal(bh_adjust(mostly_one), _bh_twin(mostly_one))
    above = mostly_one.copy()
    above[1, 0] = 1.5  # a value above 1 is sorted as any other
    np.testing.assert_array_equal(bh_adjust(above), _bh_twin(above))


@pytest.mark.parametrize("seed", range(3))
def test_welch_bh_full_on_control_like_rows(seed):
    """Differences mostly exactly 0 (the control baselines): p = 1 there, the rest sorted alone."""
    diff, test = _adversarial(seed)
    diff = np.where(np.random.default_rng(seed).random(diff.shape) < 0.9, 0.0, diff)
    q, order = welch_bh(diff, test)
    np.testing.assert_array_equal(q, _bh_twin(_pvalue_twin(diff, test)))
    assert (np.diff(np.take_along_axis(q, order, axis=1), axis=1) >= 0).all()
    np.testing.assert_array_equal(np.sort(order, axis=1), np.broadcast_to(np.arange(q.shape[1]), q.shape))


@pytest.mark.parametrize("seed", range(6))
def test_welch_bh_full_equals_twins_and_order_sorts_q(seed):
    diff, test = _adversarial(seed)
    q, order = welch_bh(diff, test)
    np.testing.assert_array_equal(q, _bh_twin(_pvalue_twin(diff, test)))
    assert (np.diff(np.take_along_axis(q, order, axis=1), axis=1) >= 0).all()
    np.testing.assert_array_equal(np.sort(order, axis=1), np.broadcast_to(np.arange(q.shape[1]), q.shape))


@pytest.mark.parametrize("alpha", [0.05, 0.1, 1e-3, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_welch_bh_pruned_keeps_every_call_exactly(seed, alpha):
    assert_pruned_keeps_every_call(*_adversarial(seed), alpha)


def assert_pruned_keeps_every_call(diff, test, alpha):
    """Pruned ``welch_bh``: every call ``q < alpha`` of the full twin, bit for bit, and 1 elsewhere."""
    full = _bh_twin(_pvalue_twin(diff, test))
    q, order = welch_bh(diff, test, alpha=alpha)
    assert order is None
    called = full < alpha
    np.testing.assert_array_equal(q < alpha, called)
    np.testing.assert_array_equal(q[called], full[called])
    assert (q[~called] == 1.0).all()


def test_welch_bh_pruned_nan_row_as_unpruned():
    diff, test = _adversarial(9)
    diff[4, 3] = np.nan
    q, _ = welch_bh(diff, test, alpha=0.05)
    full = _bh_twin(_pvalue_twin(diff, test))
    assert np.isnan(q[4]).all() and np.isnan(full[4]).all()
    ok = np.arange(len(q)) != 4
    np.testing.assert_array_equal(q[ok] < 0.05, full[ok] < 0.05)


def test_bh_below_at_exact_thresholds():
    """p-values exactly at alpha and BH values m p / j exactly at alpha: the same calls and values."""
    m, alpha = 20, 0.05
    rows = []
    rows.append(alpha * np.arange(1, m + 1) / m)  # m p_(j) / j == alpha for every j
    rows.append(np.r_[np.full(5, alpha), np.full(m - 5, 0.9)])  # p == alpha
    rows.append(np.r_[np.full(7, 0.004), np.linspace(0.01, 1.0, m - 7)])  # ties below alpha
    rows.append(np.r_[np.nextafter(alpha, 0) * np.ones(3), np.ones(m - 3)])
    p = np.array(rows)
    full = _bh_twin(p)
    r, c = np.nonzero(p < alpha * (1 + 2.0**-30))
    q = _bh_below(np.ones(p.shape), r, c, p[r, c], alpha)
    called = full < alpha
    np.testing.assert_array_equal(q < alpha, called)
    np.testing.assert_array_equal(q[called], full[called])


def test_welch_bh_refuses_bad_arguments():
    diff, test = _adversarial(0)
    with pytest.raises(ValueError, match="alpha must be in"):
        welch_bh(diff, test, alpha=0.0)
    with pytest.raises(ValueError, match="rows of a matrix"):
        welch_bh(diff[0], WelchTest(test.std_error[0], test.df[0], test.floored[0]))


def test_t_sf_is_scipy_stdtr():
    t = np.array([0.0, 0.5, 2.0, 40.0])
    df = np.array([1.0, 2.5, 30.0, 3.0])
    np.testing.assert_allclose(t_sf(t, df), stats.t.sf(t, df), rtol=1e-13)
