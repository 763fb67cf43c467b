"""The Student-t tail kernel (``shrinkpert.stats._t_kernels``) behind ``t_sf``.

Twins: ``scipy.special.stdtr(df, -t)`` (the function ``t_sf`` replaced) and 40-digit reference
values. ``stdtr`` is not exact itself: in the far tail it loses about :math:`|\\log P|` units in
the last place (2e-13 relative at :math:`P = 10^{-289}`, against 40-digit values), and for
``df = 1`` and small ``t`` it is off by up to 3e-9 (``df = 1`` is checked against the Cauchy
distribution instead). The kernel's own error is checked against the 40-digit values.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from shrinkpert._numba import thread_limit
from shrinkpert.stats._t_kernels import _erfcx, _gamma_ratio, t_tail, t_tail_array
from shrinkpert.stats.testing import t_sf

EPS = 2.0**-52

#: (df, t, P(T_df > t)) with P the double nearest to the value of the hypergeometric series of
#: I_x(df/2, 1/2) (or of 1 - I_y(1/2, df/2)) summed in 40 to 330-digit arithmetic (mpmath),
#: a method independent of the kernel's; checked against the closed forms for df = 1, 2, 3.
REFERENCE = [
    (0.5, 1e-08, 0.499999997303237),
    (0.5, 1.0, 0.3011216108413221),
    (0.5, 10000.0, 0.0032070097517369715),
    (1.0, 1e-08, 0.49999999681690116),
    (1.0, 2.671989315632063e-08, 0.49999999149479385),
    (1.0, 0.3, 0.40722642092225764),
    (1.0, 10000.0, 3.183098851227577e-05),
    (1.5, 0.77, 0.27198039216007575),
    (2.5, 5.0, 0.011725594985430923),
    (3.0, 10000.0, 1.102657751147905e-12),
    (3.7, 2.2, 0.049075197195261114),
    (7.3, 1.9, 0.0487425343760266),
    (7.3, 60.0, 2.0998074451438044e-11),
    (15.99, 1.5, 0.07654983078572364),
    (16.0, 1.46, 0.08182322119719489),
    (19.523730928333027, 1.616944989754418, 0.060966878430124515),
    (20.0, 3.5, 0.0011275615765285838),
    (39.9, 4.0, 0.00013334103513615804),
    (40.0, 5.09, 4.441988582326395e-06),
    (57.3, 2.1, 0.0200712779356919),
    (100.5, 0.01, 0.49602055562110764),
    (100.5, 2.0, 0.02409931380219397),
    (100.5, 9.0, 7.3982099900242e-15),
    (100.5, 60.0, 8.097790579772772e-81),
    (213.9, 4.4, 8.537993087591441e-06),
    (1000.0, 37.0, 8.650394404956531e-190),
    (12345.6, 20.9, 1.1876582059882367e-95),
    (2709.071755267888, 37.201751725047295, 2.24886283155151e-245),
    (100000.0, 0.5, 0.308538088827209),
    (100000.0, 37.5, 6.215283903968835e-306),
    (10000000.0, 1e-08, 0.4999999960105773),
    (10000000.0, 3.0, 0.0013499013555185806),
    (10000000.0, 37.0, 6.00060616131917e-300),
    (150.0, 946.774, 1.890698655577029e-285),
    (3000.0, 40.7242, 2.5385248523080086e-289),
    (40.0, 12573.9, 7.237083940032568e-134),
    (np.inf, 0.5, 0.3085375387259869),  # the normal tail, erfc(t / sqrt 2) / 2
    (np.inf, 3.0, 0.0013498980316300946),
    (np.inf, 10.0, 7.619853024160525e-24),
    (np.inf, 20.0, 2.7536241186062337e-89),
    (np.inf, 37.0, 5.725571222524577e-300),
]


def test_matches_forty_digit_references():
    """Relative error at most 2e-15 (largest observed 8e-16) from P ~ 0.5 to P ~ 1e-306; the
    far-tail entries are where ``stdtr`` itself is off by up to 2e-13."""
    df, t, ref = np.array(REFERENCE).T
    rel = np.abs(t_sf(t, df) - ref) / ref
    assert rel.max() <= 2e-15, (df[rel.argmax()], t[rel.argmax()], rel.max())


def _draws() -> tuple[np.ndarray, np.ndarray]:
    """A grid of df in [0.5, 1e7] and t in [0, 1e4] plus random draws: df log-uniform (a third
    rounded to integers), Welch-like df uniform on [1, 300] and log-uniform on [1, 1e5], t
    log-uniform on [1e-8, 1e4], half-normal, and t placing the tail at 10^-U(250, 320)."""
    grid_df = np.array([0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.5, 7.0, 10.0, 15.5, 16.0, 19.99, 20.0, 30.0,
                        39.5, 40.0, 100.0, 333.3, 1e3, 1e4, 12345.5, 1e5, 1e6, 1e7])
    grid_t = np.array([0.0, 1e-8, 1e-6, 1e-3, 0.1, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 38.0,
                       60.0, 100.0, 300.0, 1e3, 3e3, 1e4])
    gd, gt = (a.ravel() for a in np.meshgrid(grid_df, grid_t))
    rng = np.random.default_rng(20240607)
    n = 20_000
    df = np.concatenate([10 ** rng.uniform(np.log10(0.5), 7, n), rng.uniform(1, 300, n),
                         10 ** rng.uniform(0, 5, n)])
    df[: n // 3] = np.round(df[: n // 3])
    t = np.concatenate([10 ** rng.uniform(-8, 4, n), np.abs(rng.standard_normal(n)) * 3, np.zeros(n)])
    far = slice(2 * n, 3 * n)  # t with log P ~ -U(575, 740), where t <= 1e4
    a = df[far] / 2
    with np.errstate(over="ignore"):
        t[far] = np.sqrt(df[far] * np.expm1(rng.uniform(575, 740, n) / (a - 0.25)))
    t[far] = np.where(t[far] <= 1e4, t[far], 10 ** rng.uniform(0, 4, n))
    return np.concatenate([gd, df]), np.concatenate([gt, t])


def test_matches_scipy_stdtr_over_grid_and_random_draws():
    """Against ``stdtr`` the tolerance is ``stdtr``'s own error: 1e-14 plus 8 units in the last
    place per unit of :math:`|\\log P|` (largest observed ratio to it: 0.4, at P ~ 1e-265 where
    ``stdtr`` is 4e-13 off and the kernel 1e-16); tails below 1e-290, where the last digits are
    subnormal, agree to 1e-300 absolutely. df = 1 is left to :func:`test_cauchy_is_exact`."""
    df, t = _draws()
    df, t = df[df != 1.0], t[df != 1.0]
    got = t_sf(t, df)
    want = special.stdtr(df, -t)
    assert np.isfinite(got).all() and (got >= 0).all() and (got <= 0.5).all()
    normal = want >= 1e-290
    assert normal.mean() > 0.8 and (want[normal] < 1e-250).sum() > 1000
    rel = np.abs(got[normal] - want[normal]) / want[normal]
    allowed = 1e-14 + 8 * EPS * np.abs(np.log(want[normal]))
    worst = np.argmax(rel / allowed)
    assert (rel <= allowed).all(), (df[normal][worst], t[normal][worst], rel[worst])
    assert np.abs(got[~normal] - want[~normal]).max() <= 1e-300
    assert (got[want == 0] <= 1e-300).all() and (got[~normal] < 1e-289).all()


def test_cauchy_is_exact():
    """df = 1: P = arctan(1/t)/pi, the NumPy twin (``stdtr`` loses digits for small t here: 3e-9
    relative at t = 1e-8, 2e-14 at t = 2e-3)."""
    t = np.concatenate([10.0 ** np.arange(-12, 5, 0.25), [0.3, 1.0, 2.0]])
    want = np.arctan(1.0 / t) / np.pi
    np.testing.assert_allclose(t_sf(t, 1.0), want, rtol=4 * EPS, atol=0)


def test_special_values():
    t = np.array([0.0, -0.0, np.inf, -np.inf, 1e-300, -1e-300, 2.0, -2.0])
    got = t_sf(t, 7.5)
    np.testing.assert_array_equal(got[:6], [0.5, 0.5, 0.0, 1.0, 0.5, 0.5])
    np.testing.assert_allclose(got[6:], special.stdtr(7.5, -t[6:]), rtol=4 * EPS)
    assert got[6] + got[7] == 1.0
    # df = inf: the normal tail, as stdtr (which, like erfc(z / sqrt 2), loses ~z^2/2 units in the
    # last place: 1e-13 at z = 37; the 40-digit references check the kernel to 5e-15)
    z = np.concatenate([np.linspace(0.0, 37.5, 301), [1e-8, 38.5, 40.5, -2.0]])
    want = special.stdtr(np.inf, -z)
    allowed = 1e-14 + 8 * EPS * np.abs(np.log(np.maximum(want, 1e-320)))
    assert (np.abs(t_sf(z, np.inf) - want) <= allowed * want + 1e-300).all()
    np.testing.assert_array_equal(t_sf([0.0, 40.5], np.inf), [0.5, 0.0])
    # df <= 0 and NaN inputs give NaN (stdtr does the same)
    bad_df = np.array([0.0, -0.0, -1.0, -np.inf, np.nan])
    assert np.isnan(t_sf(1.0, bad_df)).all() and np.isnan(special.stdtr(bad_df, -1.0)).all()
    assert np.isnan(t_sf([np.nan, np.nan, np.nan], [3.0, np.inf, np.nan])).all()
    assert np.isnan(t_tail(np.nan, 2.0)) and np.isnan(t_tail(0.0, -1.0))


def test_negative_t_is_the_complement():
    df, t = _draws()
    keep = (t > 0) & (df != 1.0)
    df, t = df[keep][::7], t[keep][::7]
    np.testing.assert_allclose(t_sf(-t, df), special.stdtr(df, t), rtol=1e-15, atol=0)
    np.testing.assert_array_equal(t_sf(-t, df), 1.0 - t_sf(t, df))


def test_extreme_arguments_stay_finite_and_monotone():
    """Far outside the tested ranges (t up to 1e300, df from 1e-300 to 1e308): values in [0, 1/2],
    non-increasing in t, the heavy tails of tiny df kept (P -> 1/2 as df -> 0)."""
    t = 10.0 ** np.arange(-10, 301, 10.0)
    for df in (1e-300, 1e-8, 0.1, 0.5, 3.0, 1e3, 1e12, 1e300, 1.7e308):
        p = t_sf(t, df)
        assert np.isfinite(p).all() and (p >= 0).all() and (p <= 0.5).all(), df
        assert (np.diff(p) <= 0).all(), df
    assert t_sf(1e300, 1e-8) > 0.49
    # t > 1e150 runs on logarithms (relative error up to |log P| units in the last place); stdtr
    # returns 0 there (t^2 overflows) although the tail of a small df is far from 0
    np.testing.assert_allclose(t_sf(1e200, 0.5), 3.207009754142229e-101, rtol=1e-13)  # 40 digits
    np.testing.assert_allclose(t_sf([1e160, 1e300], 1.0), np.arctan(1 / np.array([1e160, 1e300])) / np.pi,
                               rtol=1e-13)
    np.testing.assert_allclose(t_sf(3.0, 1e300), 0.0013498980316300946, rtol=4 * EPS)  # normal, 40 digits


def test_t_sf_broadcasts_and_ignores_the_thread_count():
    df, t = _draws()
    with thread_limit(1):
        one = t_sf(t, df)
    many = t_sf(t, df)
    np.testing.assert_array_equal(one, many)
    out = np.empty(t.size)
    t_tail_array(t, df, out)
    np.testing.assert_array_equal(out, many)
    grid = t_sf(np.array([[0.5], [2.0]]), np.array([3.0, 30.0, np.inf]))
    assert grid.shape == (2, 3)
    np.testing.assert_array_equal(grid[1], t_sf(2.0, np.array([3.0, 30.0, np.inf])))
    assert t_sf(2.0, 3.0).shape == () and t_sf([], []).shape == (0,)


@pytest.mark.parametrize("lo, hi", [(0.0, 3.0), (3.0, 40.0)])
def test_erfcx_piece(lo, hi):
    """The rational approximations of erfcx on both pieces (scipy's erfcx as the twin)."""
    s = np.linspace(lo, hi, 2001)
    got = np.array([_erfcx(v) for v in s])
    np.testing.assert_allclose(got, special.erfcx(s), rtol=2e-15, atol=0)


def test_gamma_ratio():
    """Gamma(a + 1/2) / Gamma(a) below the shift (a < 20) and by the asymptotic series above."""
    a = np.concatenate([np.linspace(0.25, 19.99, 400), [20.0, 25.5, 1e3, 1e7]])
    got = np.array([_gamma_ratio(v) for v in a])
    want = np.exp(special.gammaln(a + 0.5) - special.gammaln(a))
    np.testing.assert_allclose(got[a < 20], want[a < 20], rtol=5e-14)  # (gammaln differences: ~1e-14)
    np.testing.assert_allclose(got[a >= 20], np.sqrt(a[a >= 20]) * np.exp(-1 / (8 * a[a >= 20])), rtol=1e-5)
    mid = np.array([_gamma_ratio(v) for v in (0.5, 1.0, 1.5, 2.0)])
    root_pi = np.sqrt(np.pi)
    np.testing.assert_allclose(mid, [1 / root_pi, root_pi / 2, 2 / root_pi, 3 * root_pi / 4], rtol=4e-15)
