r"""Numba kernels of the Student-t upper tail :math:`P(T_\nu > t)`, at full double precision.

:func:`t_tail` is ``scipy.special.stdtr(df, -t)`` at about a quarter of its cost (``stdtr``
evaluates Boost's general incomplete beta function; these kernels use what is special about
:math:`b = 1/2`). :func:`t_tail_array` evaluates it elementwise over Numba's threads.

Notation
--------
For :math:`t \ge 0` and :math:`\nu > 0`, with :math:`a = \nu/2`, :math:`u = t^2/\nu`,
:math:`x = 1/(1 + u)`, :math:`y = 1 - x` and :math:`\rho(a) = \Gamma(a + \tfrac12)/\Gamma(a)`,

.. math::

    P(T_\nu > t) = \tfrac12 I_x(a, \tfrac12), \qquad P(T_\nu > -t) = 1 - P(T_\nu > t),

where :math:`I` is the regularised incomplete beta function. Special values follow ``stdtr``:
:math:`t = 0` gives :math:`1/2`, :math:`t = \infty` gives 0, :math:`\nu = \infty` gives the
normal tail :math:`\tfrac12 \operatorname{erfc}(t/\sqrt2)` (to a few units in the last place, where
``stdtr`` loses :math:`t^2/2` of them), and a NaN or :math:`\nu \le 0` gives NaN.

Large :math:`\nu`: an expansion in incomplete gamma functions
---------------------------------------------------------------
Where :math:`a \ge 8` and :math:`\lambda = \log(1 + u) \le 1/2` (almost every Welch test of
single-cell groups), substituting :math:`s = e^{-w}` in the beta integral and writing
:math:`1 - e^{-w} = e^{-w/2}\, 2\sinh(w/2)` gives, with :math:`a' = a - \tfrac14`,

.. math::

    I_x(a, \tfrac12) = \frac{\rho(a)}{\sqrt\pi} \int_\lambda^\infty e^{-a' w} w^{-1/2}
    \psi(w)\, dw, \qquad
    \psi(w) = \Big(\frac{w/2}{\sinh(w/2)}\Big)^{1/2} = \sum_{j \ge 0} d_j w^{2j}

(:math:`d_0 = 1`, :math:`d_1 = -1/48`, :math:`d_2 = 1/2560`, ...; radius of convergence
:math:`2\pi`). Integrating term by term, with :math:`z = a'\lambda` and
:math:`\operatorname{erfcx}(s) = e^{s^2}\operatorname{erfc}(s)`,

.. math::

    P(T_\nu > t) = \tfrac12 e^{-z} \Big[\operatorname{erfcx}(\sqrt z)
    + \varphi(a) \sqrt{z/\pi} \sum_{j \ge 1} d_j h_{2j}\Big], \qquad
    h_0 = 0,\ h_{k+1} = \frac{\lambda^k + (k + \tfrac12) h_k}{a'},

where :math:`\varphi(a) = \rho(a)/\sqrt{a'}` (the terms of :math:`\operatorname{erfcx}` in each
:math:`\int_\lambda^\infty e^{-a'w} w^{2j-1/2} dw` add up to exactly :math:`1/\varphi(a)`, the
case :math:`t = 0`). The sum is at most 0.6 % of the bracket; 8 terms (11 for :math:`a < 20`,
14 for :math:`a < 10`) reach :math:`2 \cdot 10^{-17}` of it (the series is asymptotic in
:math:`a`, its smallest term near :math:`e^{-2\pi a'}`). :math:`e^{-z} = x^{a'}` carries the
whole dependence on :math:`t` in the far tail, so :math:`\lambda = 2\operatorname{artanh}(u/(2 + u))`
and :math:`z` are computed in double-double arithmetic: the relative error does not grow
with :math:`z` (a plain ``exp(-a * log1p(u))`` loses :math:`z` units in the last place).

Otherwise: the continued fraction of the incomplete beta function
------------------------------------------------------------------
.. math::

    I_x(p, q) = \frac{x^p (1 - x)^q}{B(p, q)\, K}, \qquad
    K = p + \cfrac{\alpha_1}{\beta_1 + \cfrac{\alpha_2}{\beta_2 + \cdots}}, \qquad
    \beta_n = p + n,\ \alpha_{2m+1} = -(p + m)(p + q + m)\,x,\ \alpha_{2m} = m(q - m)\,x

(the classical fraction with its partial denominators cleared), evaluated forward by the
three-term recurrence of its numerators and denominators until two successive convergents
agree to :math:`10^{-16}`. It is used as :math:`I_x(a, \tfrac12)` where
:math:`x < (a + 1)/(a + \tfrac52)` and as :math:`1 - I_y(\tfrac12, a)` elsewhere (there
:math:`a < 8` and :math:`P > 0.04`: the subtraction multiplies the relative error by at most 12).
:math:`x^a` is ``pow`` of the rounded :math:`x` times :math:`1 + a\delta`, where
:math:`x(1 + \delta)` is :math:`\nu/(\nu + t^2)` in double-double arithmetic.

Gamma ratio
-----------
:math:`\log\rho(a) = \tfrac12\log a + \sum_{k\ \mathrm{odd}} (2^{-k} - 2) B_{k+1} /
(k(k + 1) a^k)` (Stirling's series; :math:`B_n` Bernoulli numbers), hence the asymptotic
series :math:`\varphi(a) = 1 + \tfrac{1}{64} a^{-2} + \tfrac{1}{128} a^{-3} + \dots`, used to
degree 10 for :math:`a \ge 20` (error below :math:`2 \cdot 10^{-19}`), and
:math:`\rho(a) = \rho(a + 20) \prod_{j < 20} (a + j)/(a + j + \tfrac12)` below. No difference
of two large ``lgamma`` values is formed.

Scaled complementary error function
-----------------------------------
:math:`\operatorname{erfcx}(s)` is a ratio of polynomials of degree 9 in :math:`s/3` on
:math:`[0, 3)` and :math:`\operatorname{erfcx}(s) = R(9/s^2)/(s\sqrt\pi)`, :math:`R` of degree
7/7, beyond (weighted least-squares fits of the relative error to 50-digit values; fit
error below :math:`3 \cdot 10^{-20}`, evaluation error a few units in the last place).

Accuracy
--------
Against 40-digit references (``tests/stats/test_t_kernels.py``), for :math:`\nu \in [0.5, 10^7]`,
:math:`t \in [0, 10^4]` and tails down to :math:`10^{-300}`: relative error below
:math:`10^{-15}` where the first expansion applies, below :math:`10^{-14}` elsewhere (largest
seen :math:`6 \cdot 10^{-15}`, in :math:`1 - I_y` at :math:`P \approx 0.1`). For
:math:`t > 10^{150}` (where :math:`t^2` overflows) or a :math:`\nu` so small that
:math:`\nu/(\nu + t^2)` underflows, the computation runs on logarithms and the relative error
grows to about :math:`|\log P| \cdot 2^{-52}`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from numba import prange
from numba.core import types
from numba.extending import intrinsic

from .._numba import kernel

__all__ = ["t_tail", "t_tail_array"]


@intrinsic
def _fma(typingctx, a, b, c):  # pragma: no cover - compiled
    """``a * b + c`` with one rounding (LLVM's ``fma``; exact products for double-double)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)
_THIRD = 1.0 / 3.0
_THIRD_LO = float(Fraction(1, 3) - Fraction(_THIRD))  # 1/3 = _THIRD + _THIRD_LO to about 1e-33

#: d_1 ... d_14 of psi(w) = sqrt((w/2) / sinh(w/2)) = sum_j d_j w^(2j) (d_0 = 1 is not used).
_PSI = np.array([
    1.0, -0.020833333333333332, 0.000390625, -7.879670965608466e-06, 1.6967665791721782e-07,
    -3.805064191721906e-09, 8.748377596315407e-11, -2.044523359411974e-12, 4.833351797967704e-14,
    -1.152434101767386e-15, 2.76605204359937e-17, -6.67428195089166e-19, 1.61745507718158e-20,
    -3.93397792009138e-22, 9.597634062586047e-24,
])


#: Coefficients of a^-10 ... a^-2 in phi(a) = 1 + a^-2 / 64 + ... (exact binary fractions).
_PHI_LARGE = np.array([
    88375.0 / 8589934592.0, -111645.0 / 67108864.0, -1277.0 / 134217728.0, 1229.0 / 1048576.0,
    31.0 / 524288.0, -11.0 / 8192.0, 5.0 / 8192.0, 1.0 / 128.0, 1.0 / 64.0,
])


@kernel
def _phi_large(a):  # pragma: no cover - compiled
    r""":math:`\varphi(a) = \Gamma(a + 1/2) / (\Gamma(a) \sqrt{a - 1/4})` for :math:`a \ge 20`
    (asymptotic series to degree 10)."""
    v = 1.0 / a
    return _fma(_horner(_PHI_LARGE, v) * v, v, 1.0)


@kernel
def _gamma_ratio(a):  # pragma: no cover - compiled
    r""":math:`\rho(a) = \Gamma(a + 1/2) / \Gamma(a)` for :math:`a > 0`."""
    if a >= 20.0:
        return _phi_large(a) * math.sqrt(a - 0.25)
    # rho(a) = rho(a + 20) prod_{j<20} (a + j) / (a + j + 1/2), in four interleaved products
    n0 = a
    n1 = a + 1.0
    n2 = a + 2.0
    n3 = a + 3.0
    d0 = a + 0.5
    d1 = a + 1.5
    d2 = a + 2.5
    d3 = a + 3.5
    for j in range(4, 20, 4):
        n0 *= a + j
        n1 *= a + (j + 1)
        n2 *= a + (j + 2)
        n3 *= a + (j + 3)
        d0 *= a + (j + 0.5)
        d1 *= a + (j + 1.5)
        d2 *= a + (j + 2.5)
        d3 *= a + (j + 3.5)
    b = a + 20.0
    return _phi_large(b) * math.sqrt(b - 0.25) * (((n0 * n1) * (n2 * n3)) / ((d0 * d1) * (d2 * d3)))


#: erfcx(s) on [0, 3): P(s/3) / Q(s/3); beyond: P(9/s^2) / (s sqrt(pi) Q(9/s^2)) (highest degree first).
_ERFCX_NEAR_P = np.array([
    -8.946958555474104e-08, 0.41742372352046264, 2.8827428885891524, 9.335681684931444,
    18.4532805630967, 24.345685788382173, 22.01977051879285, 13.450595957112348,
    5.154100573759252, 1.0,
])
_ERFCX_NEAR_Q = np.array([
    2.2195853956536125, 15.328643816923897, 49.764213386210805, 98.97544493931665,
    132.19575296443048, 122.45137425649516, 78.39579252010351, 33.35709099736372,
    8.539238075045791, 1.0,
])
_ERFCX_FAR_P = np.array([
    4.940928198643773e-05, 0.007404717108496827, 0.16141864165491746, 1.1914421615416744,
    3.8164900740770817, 5.759109744958799, 3.976547275436636, 1.0,
])
_ERFCX_FAR_Q = np.array([
    0.00019483631222282983, 0.012747945883571032, 0.21149677944624176, 1.374032901397374,
    4.113608704984212, 5.973856198532442, 4.032102830992192, 1.0,
])


@kernel
def _horner(c, x):  # pragma: no cover - compiled
    r""":math:`c_0 x^n + \dots + c_n` by Horner's rule, one ``fma`` per step."""
    p = c[0]
    for k in range(1, c.shape[0]):
        p = _fma(p, x, c[k])
    return p


@kernel
def _erfcx(s):  # pragma: no cover - compiled
    r""":math:`e^{s^2} \operatorname{erfc}(s)` for :math:`s \ge 0` (rational approximations)."""
    if s < 3.0:
        x = s * (1.0 / 3.0)
        return _horner(_ERFCX_NEAR_P, x) / _horner(_ERFCX_NEAR_Q, x)
    w = 9.0 / (s * s)
    return _horner(_ERFCX_FAR_P, w) / (_horner(_ERFCX_FAR_Q, w) * s) * _INV_SQRT_PI


@kernel
def _log1p_dd(uh, ul):  # pragma: no cover - compiled
    r""":math:`\log(1 + u)` as a double-double ``(hi, lo)`` for :math:`u = u_h + u_l \in [0, 0.65]`:
    :math:`2\operatorname{artanh} r = 2r + \tfrac23 r^3 + 2r^5 \sum_k r^{2k}/(2k + 5)`,
    :math:`r = u/(2 + u)`, the first two terms in double-double (relative error below
    :math:`10^{-19}`, so that :math:`e^{-a'\lambda}` stays exact for :math:`a'\lambda` up to 700)."""
    wh = 2.0 + uh
    wl = ((2.0 - wh) + uh) + ul
    rh = uh / wh
    rl = (_fma(-rh, wh, uh) + ul - rh * wl) / wh
    w = rh * rh  # r^2 <= 0.06: the series below to r^27 (truncation below 3e-19 of the sum)
    we = _fma(rh, rh, -w)
    cube = rh * w  # r^3 = cube + cube_lo
    cube_lo = _fma(rh, w, -cube) + rh * we + 3.0 * w * rl
    third = cube * _THIRD  # r^3 / 3 = third + third_lo
    third_lo = _fma(cube, _THIRD, -third) + cube * _THIRD_LO + cube_lo * _THIRD
    w2 = w * w
    w4 = w2 * w2
    s01 = _fma(w, 1.0 / 7.0, 1.0 / 5.0)
    s23 = _fma(w, 1.0 / 11.0, 1.0 / 9.0)
    s45 = _fma(w, 1.0 / 15.0, 1.0 / 13.0)
    s67 = _fma(w, 1.0 / 19.0, 1.0 / 17.0)
    s89 = _fma(w, 1.0 / 23.0, 1.0 / 21.0)
    s1011 = _fma(w, 1.0 / 27.0, 1.0 / 25.0)
    series = _fma(w4, _fma(w2, s67, s45), _fma(w2, s23, s01))
    series = _fma(w4 * w4, _fma(w2, s1011, s89), series)
    hi = 2.0 * rh + 2.0 * third  # two-sum of the leading terms
    bv = hi - 2.0 * rh
    lo = ((2.0 * rh - (hi - bv)) + (2.0 * third - bv)) + (2.0 * rl + 2.0 * third_lo + 2.0 * cube * w * series)
    head = hi + lo
    return head, lo - (head - hi)


@kernel
def _tail_gamma_expansion(a, uh, ul, phi, n_terms):  # pragma: no cover - compiled
    r""":math:`P(T_\nu > t)` by the incomplete gamma expansion (module docstring), from
    :math:`u = t^2/\nu = u_h + u_l \le 0.6487`, :math:`a \ge 8` and :math:`\varphi(a)`."""
    lh, ll = _log1p_dd(uh, ul)
    a1 = a - 0.25
    zh = a1 * lh
    if zh > 746.0:  # P < e^{-z} underflows
        return 0.0
    zl = _fma(a1, lh, -zh) + a1 * ll
    s = math.sqrt(zh)
    v = 1.0 / a1
    v2 = v * v
    lam2 = lh * lh
    power = v  # lambda^k / a'
    h = 0.0
    k = 0.5  # k + 1/2 for the even index k
    total = 0.0
    for j in range(1, n_terms + 1):  # h_{k+2} from h_k, k = 2j - 2
        h = _fma(k * (k + 1.0) * v2, h, power * _fma(k + 1.0, v, lh))
        power *= lam2
        k += 2.0
        total = _fma(_PSI[j], h, total)
    scale = math.exp(-zh) * (1.0 - zl)
    return 0.5 * scale * _fma(phi * (s * _INV_SQRT_PI), total, _erfcx(s))


@kernel
def _beta_fraction(p, q, x):  # pragma: no cover - compiled
    """:math:`K` of :math:`I_x(p, q) = x^p (1 - x)^q / (B(p, q) K)` (module docstring)."""
    num_prev = 1.0
    num = p
    den_prev = 0.0
    den = 1.0
    pq = p + q
    m = 0.0
    for _ in range(2000):
        alpha = -((p + m) * (pq + m)) * x  # step 2m + 1
        beta = p + (2.0 * m + 1.0)
        num_odd = _fma(beta, num, alpha * num_prev)
        den_odd = _fma(beta, den, alpha * den_prev)
        m += 1.0
        alpha = (m * (q - m)) * x  # step 2m
        beta = p + 2.0 * m
        num_old = num
        den_old = den
        num = _fma(beta, num_odd, alpha * num)
        den = _fma(beta, den_odd, alpha * den)
        num_prev = num_odd
        den_prev = den_odd
        if abs(num * den_old - num_old * den) <= 1e-16 * abs(num * den_old):
            break
        if abs(den) > 1e150:  # keep the recurrence in range (exact: a power of two)
            num *= 2.0**-500
            den *= 2.0**-500
            num_prev *= 2.0**-500
            den_prev *= 2.0**-500
    return num / den


@kernel
def _tail_fraction(t, nu, a, t2, t2e):  # pragma: no cover - compiled
    r""":math:`P(T_\nu > t)` by the continued fraction, :math:`t^2 = t_2 + t_{2e}` exactly."""
    sh = nu + t2  # nu + t^2 and nu / (nu + t^2), t^2 / (nu + t^2) in double-double
    bb = sh - nu
    sl = ((nu - (sh - bb)) + (t2 - bb)) + t2e
    xh = nu / sh
    if xh == 0.0:  # nu / (nu + t^2) underflows (tiny nu) or nu + t^2 overflows (nu near 1e308)
        return _tail_far(t, nu, a)
    dx = (_fma(-xh, sh, nu) - xh * sl) / nu
    yh = t2 / sh
    dy = (_fma(-yh, sh, t2) + t2e - yh * sl) / t2
    front = math.pow(xh, a)
    if front == 0.0:  # x^a < 1e-308 and P < x^a: the tail underflows
        return 0.0
    c = a * dx  # x^a = pow(xh, a) (1 + dx)^a, |c| < 709 * 2^-52 here
    front *= _fma(c, _fma(0.5, c, 1.0), 1.0)
    front *= math.sqrt(yh) * _fma(0.5, dy, 1.0) * (_gamma_ratio(a) * _INV_SQRT_PI)
    if front == 0.0:
        return 0.0
    if xh < (a + 1.0) / (a + 2.5):
        return 0.5 * front / _beta_fraction(a, 0.5, xh)
    return 0.5 - 0.5 * front / _beta_fraction(0.5, a, yh)


@kernel
def _tail_far(t, nu, a):  # pragma: no cover - compiled
    r""":math:`P(T_\nu > t)` on logarithms, where :math:`t^2` or :math:`\nu/(\nu + t^2)` is out of
    range (:math:`t > 10^{150}`, or a tiny :math:`\nu`)."""
    inv_u = (nu / t) / t
    log1p_u = (2.0 * math.log(t) - math.log(nu)) + math.log1p(inv_u)
    log_x = -log1p_u
    x = math.exp(log_x)
    if not x < (a + 1.0) / (a + 2.5):  # nu > 1e299: the tail underflows
        return 0.0
    front = math.exp(a * log_x - 0.5 * math.log1p(inv_u)) * (_gamma_ratio(a) * _INV_SQRT_PI)
    if front == 0.0:
        return 0.0
    return 0.5 * front / _beta_fraction(a, 0.5, x)


@kernel
def _normal_tail(t):  # pragma: no cover - compiled
    r""":math:`\tfrac12 \operatorname{erfc}(t/\sqrt2) = \tfrac12 e^{-t^2/2} \operatorname{erfcx}(t/\sqrt2)`
    for :math:`t > 0`, with :math:`t^2/2` in double-double (the limit :math:`\nu \to \infty` of the
    incomplete gamma expansion; ``erfc(t * sqrt(0.5))`` would lose :math:`t^2/2` units in the last place)."""
    if t > 40.0:  # below 1e-349
        return 0.0
    t2 = t * t
    zh = 0.5 * t2
    zl = 0.5 * _fma(t, t, -t2)
    return 0.5 * (math.exp(-zh) * (1.0 - zl)) * _erfcx(math.sqrt(zh))


@kernel
def t_tail(t, nu):  # pragma: no cover - compiled
    r""":math:`P(T_\nu > t)` (``scipy.special.stdtr(nu, -t)``) for any float ``t`` and ``nu``."""
    if math.isnan(t) or math.isnan(nu) or not nu > 0.0:
        return math.nan
    negative = t < 0.0
    t = abs(t)
    a = 0.5 * nu
    if t < 1e-150:  # P = 1/2 - O(t): rounds to 1/2
        p = 0.5
    elif math.isinf(t):
        p = 0.0
    elif math.isinf(nu):
        p = _normal_tail(t)
    elif t > 1e150:
        p = _tail_far(t, nu, a)
    else:
        t2 = t * t
        t2e = _fma(t, t, -t2)
        uh = t2 / nu
        if a >= 8.0 and uh <= 0.6487:  # lambda = log1p(u) <= 1/2
            ul = (_fma(-uh, nu, t2) + t2e) / nu
            if a >= 20.0:
                p = _tail_gamma_expansion(a, uh, ul, _phi_large(a), 8)
            else:
                n_terms = 11 if a >= 10.0 else 14
                p = _tail_gamma_expansion(a, uh, ul, _gamma_ratio(a) / math.sqrt(a - 0.25), n_terms)
        else:
            p = _tail_fraction(t, nu, a, t2, t2e)
    if p > 0.5:  # rounding above the exact bound P <= 1/2 (nu -> 0)
        p = 0.5
    return 1.0 - p if negative else p


@kernel(parallel=True)
def t_tail_array(t, nu, out):  # pragma: no cover - compiled
    """``out[i] = t_tail(t[i], nu[i])`` over Numba's threads (1-D arrays of one length)."""
    for i in prange(t.shape[0]):
        out[i] = t_tail(t[i], nu[i])
