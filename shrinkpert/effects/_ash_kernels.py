"""Numba kernels for adaptive shrinkage (:mod:`shrinkpert.effects.ash`).

Everything here takes arrays and scalars and writes into preallocated outputs; the public
wrapper validates the inputs, builds the prior grid and calls these kernels. The mixture
weights come from the package's one solver, ``_mixture_kernels`` (mix-SQP and EM).

Layout and conventions
----------------------
* A mixture prior is described by a kind code (``NORMAL``, ``UNIFORM``, ``TRUNCNORM``) shared
  by all its components and four parameter vectors of length K: ``loc`` (normal mean), ``sd``
  (normal standard deviation), ``a`` and ``b`` (support; uniform end points or truncation
  points, infinite when absent). A point mass is a normal with ``sd = 0`` or a uniform with
  ``a = b``.
* The error model is normal (``df = inf``) or a scaled Student t with ``df`` degrees of freedom.
* The likelihood matrix ``L`` is n × K (row-major), scaled so that each row's maximum is 1;
  ``rowmax[j]`` holds the log of the scale that was divided out, so that
  ``log p(x_j | k) = log L[j, k] + rowmax[j]``; scaled values below 1e-200 are stored as 0.
* Rows are processed in fixed-size chunks; per-chunk partial sums are reduced in chunk order,
  so results do not depend on the number of threads.

Special functions (log of the normal CDF, normal CDF differences, moments of truncated normal
and t distributions, the regularised incomplete beta function) are written out here so that
they can be called inside compiled loops; each is accurate in the far tails, where the naive
forms underflow.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel
from ._mixture_kernels import OPT_EM, loglik_rows, mixem, mixsqp

NORMAL, UNIFORM, TRUNCNORM = 0, 1, 2

_SQRT2 = math.sqrt(2.0)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_SQRT_PI = math.sqrt(math.pi)
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_HALF = math.log(0.5)
_INF = np.inf
# Scaled likelihoods below this are set to 0: they cannot change any sum that also holds the
# row maximum 1, and subnormal numbers would slow every pass over the matrix.
_TINY = 1e-200
_LOG_TINY = math.log(_TINY)
# 16-point Gauss-Legendre rule for short intervals (exact to rounding for the smooth densities here)
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_NARROW = 0.1  # intervals shorter than this (in standard units) use the quadrature rule


# --------------------------------------------------------------------------- normal distribution


@kernel
def erfcx(x):
    """Scaled complementary error function ``exp(x**2) * erfc(x)``."""
    if x < 0.0:
        return 2.0 * math.exp(x * x) - erfcx(-x)
    if x < 25.0:
        return math.exp(x * x) * math.erfc(x)
    # asymptotic series; at x >= 25 the 11th term is below 1e-20
    inv = 0.5 / (x * x)
    term = 1.0
    total = 1.0
    for k in range(1, 12):
        term *= -(2.0 * k - 1.0) * inv
        total += term
    return total / (x * _SQRT_PI)


@kernel
def norm_cdf(t):
    """Standard normal CDF."""
    return 0.5 * math.erfc(-t * _INV_SQRT2)


@kernel
def norm_logcdf(t):
    """log Φ(t), accurate for all t (no underflow as t → -∞)."""
    if t == -_INF:
        return -_INF
    if t > 0.0:
        return math.log1p(-0.5 * math.erfc(t * _INV_SQRT2))
    if t > -1.0:
        return math.log(0.5 * math.erfc(-t * _INV_SQRT2))
    return math.log(0.5 * erfcx(-t * _INV_SQRT2)) - 0.5 * t * t


@kernel
def norm_logpdf(t):
    """log φ(t)."""
    return -0.5 * t * t - _LOG_SQRT_2PI


@kernel
def _mills(t):
    """Φ(t) / φ(t) for t <= 0 (0 at t = -inf)."""
    if t == -_INF:
        return 0.0
    return _SQRT_HALF_PI * erfcx(-t * _INV_SQRT2)


@kernel
def norm_logdiff(lo, hi):
    """log(Φ(hi) - Φ(lo)) for lo <= hi, stable in both tails and for straddling intervals."""
    if not lo < hi:
        return -_INF
    if _is_narrow_normal(lo, hi):
        return _narrow(lo, hi, _INF)[0]
    if lo >= 0.0:  # mirror into the lower tail, where Φ keeps relative precision
        lo, hi = -hi, -lo
    if hi <= 0.0:
        la = norm_logcdf(lo)
        lb = norm_logcdf(hi)
        return lb + math.log(-math.expm1(la - lb))
    # lo < 0 < hi: a sum of two positive terms, no cancellation
    return math.log(0.5 * (math.erf(hi * _INV_SQRT2) + math.erf(-lo * _INV_SQRT2)))


@kernel
def _narrow(lo, hi, df):
    """(log ∫_lo^hi f, mean, variance) of the standard normal (df = inf) or t_df density f
    restricted to a short interval, by Gauss–Legendre quadrature relative to the midpoint.

    On short intervals the closed forms subtract nearly equal numbers (the variance is ~w²/12
    but is computed as 1 - ...); the quadrature has no such cancellation.
    """
    c = 0.5 * (lo + hi)
    h = 0.5 * (hi - lo)
    lfc = norm_logpdf(c) if df == _INF else t_logpdf(c, df)
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    for i in range(_GL_X.shape[0]):
        u = h * _GL_X[i]
        if df == _INF:
            r = math.exp(-c * u - 0.5 * u * u)
        else:
            tt = c + u
            r = math.exp(-0.5 * (df + 1.0) * (math.log1p(tt * tt / df) - math.log1p(c * c / df)))
        w = _GL_W[i] * r
        s0 += w
        s1 += w * u
        s2 += w * u * u
    mu = s1 / s0
    v = s2 / s0 - mu * mu
    return lfc + math.log(h * s0), c + mu, v if v > 0.0 else 0.0


@kernel
def _is_narrow_normal(lo, hi):
    """Short interval on which the normal density varies by less than a factor e^5."""
    w = hi - lo
    return w < _NARROW and abs(0.5 * (lo + hi)) * w < 5.0


@kernel
def _t_phi(t):
    """t φ(t), with the limit 0 at t = ±inf."""
    if t == _INF or t == -_INF:
        return 0.0
    return t * math.exp(norm_logpdf(t))


@kernel
def truncnorm_moments(lo, hi):
    """Mean and variance of a standard normal truncated to [lo, hi].

    Short intervals use Gauss–Legendre quadrature (:func:`_narrow`). Otherwise the interval is
    mirrored so that it lies mostly below 0; one-sided (tail) intervals use the Mills ratio
    Φ(t)/φ(t) = sqrt(π/2) erfcx(-t/√2), which keeps full precision when both limits are far
    out (e.g. t = -40, where Φ underflows).
    """
    if not lo < hi:
        return lo, 0.0
    if _is_narrow_normal(lo, hi):
        _, m, v = _narrow(lo, hi, _INF)
        return m, v
    sign = 1.0
    if lo + hi > 0.0:
        lo, hi = -hi, -lo
        sign = -1.0
    if hi <= 0.0:
        # D = (Φ(hi) - Φ(lo)) / φ(hi);  e = φ(lo) / φ(hi)
        if lo == -_INF:
            e = 0.0
            d = _mills(hi)
            m = -1.0 / d
            ez2 = 1.0 - hi / d
        else:
            delta = 0.5 * (lo - hi) * (lo + hi)
            e = math.exp(-delta)
            d = _mills(hi) - _mills(lo) * e
            m = math.expm1(-delta) / d
            ez2 = 1.0 + (lo * e - hi) / d
    else:
        z = 0.5 * (math.erf(hi * _INV_SQRT2) + math.erf(-lo * _INV_SQRT2))
        m = (math.exp(norm_logpdf(lo)) - math.exp(norm_logpdf(hi))) / z
        ez2 = 1.0 + (_t_phi(lo) - _t_phi(hi)) / z
    v = ez2 - m * m
    if not v > 0.0:  # rounding in far tails of very narrow intervals
        w = hi - lo
        v = w * w / 12.0 if w < _INF else 0.0
    return sign * m, v


# --------------------------------------------------------------------------- Student t distribution


@kernel
def _betacf(a, b, x):
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab = a + b
    qap = a + 1.0
    qam = a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    if abs(d) < tiny:
        d = tiny
    d = 1.0 / d
    h = d
    for m in range(1, 400):
        m2 = 2.0 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        if abs(d) < tiny:
            d = tiny
        c = 1.0 + aa / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        if abs(d) < tiny:
            d = tiny
        c = 1.0 + aa / c
        if abs(c) < tiny:
            c = tiny
        d = 1.0 / d
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-16:
            break
    return h


@kernel
def log_betainc(a, b, x, y):
    """log of the regularised incomplete beta I_x(a, b); ``y`` must be 1 - x (given separately
    so that neither is computed by cancellation)."""
    if x <= 0.0:
        return -_INF
    if y <= 0.0:
        return 0.0
    lfront = (a * math.log(x) + b * math.log(y)
              - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))
    if x < (a + 1.0) / (a + b + 2.0):
        return lfront - math.log(a) + math.log(_betacf(a, b, x))
    return math.log1p(-math.exp(lfront - math.log(b) + math.log(_betacf(b, a, y))))


@kernel
def _t_split(t, df):
    """(ν/(ν+t²), t²/(ν+t²)) computed without cancellation."""
    if t == _INF or t == -_INF:
        return 0.0, 1.0
    tt = t * t
    if tt == 0.0:
        return 1.0, 0.0
    return 1.0 / (1.0 + tt / df), 1.0 / (1.0 + df / tt)


@kernel
def t_logcdf(t, df):
    """log F_ν(t) for the Student t distribution."""
    if t == -_INF:
        return -_INF
    if t == _INF:
        return 0.0
    x, y = _t_split(t, df)
    li = log_betainc(0.5 * df, 0.5, x, y)  # log P(|T| > |t|)
    if t < 0.0:
        return _LOG_HALF + li
    return math.log1p(-0.5 * math.exp(li))


@kernel
def t_logpdf(t, df):
    """log f_ν(t)."""
    return (math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df) - 0.5 * math.log(df * math.pi)
            - 0.5 * (df + 1.0) * math.log1p(t * t / df))


@kernel
def _t_central(t, df):
    """F_ν(|t|) - 1/2 = P(0 < T < |t|)."""
    if t == _INF or t == -_INF:
        return 0.5
    x, y = _t_split(t, df)
    return 0.5 * math.exp(log_betainc(0.5, 0.5 * df, y, x))


@kernel
def t_logdiff(lo, hi, df):
    """log(F_ν(hi) - F_ν(lo)) for lo <= hi, stable in the tails and across 0."""
    if not lo < hi:
        return -_INF
    if hi - lo < _NARROW:
        return _narrow(lo, hi, df)[0]
    if lo >= 0.0:
        lo, hi = -hi, -lo
    if hi <= 0.0:
        la = t_logcdf(lo, df)
        lb = t_logcdf(hi, df)
        return lb + math.log(-math.expm1(la - lb))
    return math.log(_t_central(hi, df) + _t_central(lo, df))


@kernel
def _t_logG(t, df):
    """log((ν + t²) f_ν(t)), the antiderivative scale of t f_ν(t)."""
    if t == _INF or t == -_INF:
        return -_INF
    return (math.log(df) + math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df)
            - 0.5 * math.log(df * math.pi) - 0.5 * (df - 1.0) * math.log1p(t * t / df))


@kernel
def trunct_moments(lo, hi, df):
    """Mean and variance of a Student t (ν = df > 2) truncated to [lo, hi].

    Uses d/dt[-(ν + t²) f_ν(t) / (ν - 1)] = t f_ν(t) for the mean and
    (ν + t²) f_ν(t) = ν c_ν / (c_{ν-2} k) f_{ν-2}(k t), k = sqrt((ν - 2)/ν), for E[T²].
    """
    if not lo < hi:
        return lo, 0.0
    if hi - lo < _NARROW:
        _, m, v = _narrow(lo, hi, df)
        return m, v
    sign = 1.0
    if lo + hi > 0.0:
        lo, hi = -hi, -lo
        sign = -1.0
    lz = t_logdiff(lo, hi, df)
    m = (math.exp(_t_logG(lo, df) - lz) - math.exp(_t_logG(hi, df) - lz)) / (df - 1.0)
    k = math.sqrt((df - 2.0) / df)
    lconst = (math.log(df) + math.lgamma(0.5 * (df + 1.0)) - math.lgamma(0.5 * df)
              - 0.5 * math.log(df) - math.lgamma(0.5 * (df - 1.0)) + math.lgamma(0.5 * (df - 2.0))
              + 0.5 * math.log(df - 2.0) - math.log(k))
    ez2 = math.exp(lconst + t_logdiff(k * lo, k * hi, df - 2.0) - lz) - df
    v = ez2 - m * m
    if not v > 0.0:
        w = hi - lo
        v = w * w / 12.0 if w < _INF else 0.0
    return sign * m, v


# --------------------------------------------------------------------------- one component


@kernel
def log_comp_dens(x, s, kind, loc, sd, a, b, df):
    """log p(x | component), the component convolved with the error N(0, s²) or s·t_df.

    normal N(μ, σ²):      N(x; μ, s² + σ²)
    uniform U[a, b]:      [F((x - a)/s) - F((x - b)/s)] / (b - a)   (a = b: f((x - a)/s)/s)
    trunc. normal on [a, b] of N(μ, σ²):
                          N(x; μ, s² + σ²) · P_post([a, b]) / P_prior([a, b])
    """
    if kind == UNIFORM:
        if a == b:
            if df == _INF:
                return norm_logpdf((x - a) / s) - math.log(s)
            return t_logpdf((x - a) / s, df) - math.log(s)
        if df == _INF:
            return norm_logdiff((x - b) / s, (x - a) / s) - math.log(b - a)
        return t_logdiff((x - b) / s, (x - a) / s, df) - math.log(b - a)
    v = s * s + sd * sd
    ll = norm_logpdf((x - loc) / math.sqrt(v)) - 0.5 * math.log(v)
    if kind == TRUNCNORM and sd > 0.0:
        m1 = (s * s * loc + x * sd * sd) / v
        r = s * sd / math.sqrt(v)
        ll += norm_logdiff((a - m1) / r, (b - m1) / r) - norm_logdiff((a - loc) / sd, (b - loc) / sd)
    return ll


@kernel
def truncnorm_below(lo, hi, c):
    """Mean and variance of :math:`Z \\sim N(0, 1)` truncated to ``[lo, hi]``, and :math:`P(Z \\le c)` under it."""
    mz, vz = truncnorm_moments(lo, hi)
    if c <= lo:
        return mz, vz, 0.0
    if c >= hi:
        return mz, vz, 1.0
    return mz, vz, math.exp(norm_logdiff(lo, c) - norm_logdiff(lo, hi))


@kernel
def comp_posterior(x, s, kind, loc, sd, a, b, df):
    """Posterior (mean, variance, P(β <= 0)) of β given x under one prior component."""
    if kind == UNIFORM:
        if a == b:
            return a, 0.0, 1.0 if a <= 0.0 else 0.0
        if df == _INF:
            lo = (a - x) / s
            hi = (b - x) / s
            mz, vz, p = truncnorm_below(lo, hi, -x / s)
            return x + s * mz, s * s * vz, p
        # β = x - s T with T ~ t_df truncated to [(x - b)/s, (x - a)/s]
        lo = (x - b) / s
        hi = (x - a) / s
        mt, vt = trunct_moments(lo, hi, df)
        c = x / s
        if c <= lo:
            p = 1.0
        elif c >= hi:
            p = 0.0
        else:
            p = math.exp(t_logdiff(c, hi, df) - t_logdiff(lo, hi, df))
        return x - s * mt, s * s * vt, p
    if sd == 0.0:
        return loc, 0.0, 1.0 if loc <= 0.0 else 0.0
    v = s * s + sd * sd
    m1 = (s * s * loc + x * sd * sd) / v
    v1 = s * s * sd * sd / v
    r = math.sqrt(v1)
    if kind == NORMAL:
        return m1, v1, norm_cdf(-m1 / r)
    lo = (a - m1) / r
    hi = (b - m1) / r
    mz, vz, p = truncnorm_below(lo, hi, -m1 / r)
    return m1 + r * mz, v1 * vz, p


@kernel
def comp_prior_moments(kind, loc, sd, a, b):
    """Prior (mean, variance, P(β <= 0)) of one component."""
    if kind == UNIFORM:
        if a == b:
            return a, 0.0, 1.0 if a <= 0.0 else 0.0
        w = b - a
        p = min(1.0, max(0.0, -a / w))
        return 0.5 * (a + b), w * w / 12.0, p
    if sd == 0.0:
        return loc, 0.0, 1.0 if loc <= 0.0 else 0.0
    if kind == NORMAL:
        return loc, sd * sd, norm_cdf(-loc / sd)
    lo = (a - loc) / sd
    hi = (b - loc) / sd
    mz, vz, p = truncnorm_below(lo, hi, -loc / sd)
    return loc + sd * mz, sd * sd * vz, p


# --------------------------------------------------------------------------- likelihood matrix


@kernel
def _lik_rows(x, s, kind, loc, sd, a, b, df, r0, r1, L, rowmax):
    """Rows r0..r1 of the row-max-scaled likelihood matrix (see module docstring)."""
    K = loc.shape[0]
    fast = kind == NORMAL and df == _INF
    for j in range(r0, r1):
        xj = x[j]
        sj = s[j]
        mx = 0.0
        if fast:  # direct densities (without 1/sqrt(2π)); log space only if they underflow
            s2 = sj * sj
            for k in range(K):
                v = s2 + sd[k] * sd[k]
                z = xj - loc[k]
                e = -0.5 * z * z / v
                d = math.exp(e) / math.sqrt(v) if e > -600.0 else 0.0
                L[j, k] = d
                if d > mx:
                    mx = d
            if mx > 1e-200 and mx < _INF:
                inv = 1.0 / mx
                for k in range(K):
                    d = L[j, k] * inv
                    L[j, k] = d if d > _TINY else 0.0
                rowmax[j] = math.log(mx) - _LOG_SQRT_2PI
                continue
        lmx = -_INF
        for k in range(K):
            ll = log_comp_dens(xj, sj, kind, loc[k], sd[k], a[k], b[k], df)
            L[j, k] = ll
            if ll > lmx:
                lmx = ll
        rowmax[j] = lmx
        for k in range(K):
            d = L[j, k] - lmx
            L[j, k] = math.exp(d) if d > _LOG_TINY else 0.0


@kernel(parallel=True)
def lik_matrix_par(x, s, kind, loc, sd, a, b, df, chunk, L, rowmax):
    """Likelihood matrix, chunks of rows in parallel."""
    n = x.shape[0]
    nchunks = (n + chunk - 1) // chunk
    for c in prange(nchunks):
        _lik_rows(x, s, kind, loc, sd, a, b, df, c * chunk, min(n, (c + 1) * chunk), L, rowmax)


@kernel
def log_lik_matrix(x, s, kind, loc, sd, a, b, df, out):
    """Unscaled n × K matrix of log p(x_j | component k) (for inspection and tests)."""
    for j in range(x.shape[0]):
        for k in range(loc.shape[0]):
            out[j, k] = log_comp_dens(x[j], s[j], kind, loc[k], sd[k], a[k], b[k], df)


# --------------------------------------------------------------------------- posterior


@kernel
def _posterior_rows(x, s, L, keep, pi, kind, loc, sd, a, b, zero, df, r0, r1,
                    pm, psd, lfdr, negp, lfsr, pos, lw):
    """Posterior summaries for rows r0..r1 under the (pruned) mixture on columns ``keep``.

    Responsibilities w_jk ∝ π_k L_jk (recomputed in log space if the scaled row underflows);
    PM = Σ w m, PSD = sqrt(max(0, Σ w (v + m²) - PM²)), lfdr = Σ w over point masses at 0,
    negp = Σ w P(β <= 0 | k) - lfdr (ashr's NegativeProb), lfsr (:func:`lfsr_from`) and
    pos = max(0, 1 - negp - lfdr) (PositiveProb).
    """
    nk = keep.shape[0]
    for j in range(r0, r1):
        xj = x[j]
        sj = s[j]
        tot = 0.0
        for i in range(nk):
            w = pi[i] * L[j, keep[i]]
            lw[i] = w
            tot += w
        if not (tot > 1e-290 and tot < _INF):
            mx = -_INF
            for i in range(nk):
                k = keep[i]
                v = math.log(pi[i]) + log_comp_dens(xj, sj, kind, loc[k], sd[k], a[k], b[k], df)
                lw[i] = v
                if v > mx:
                    mx = v
            tot = 0.0
            for i in range(nk):
                lw[i] = math.exp(lw[i] - mx)
                tot += lw[i]
        m1 = 0.0
        m2 = 0.0
        z = 0.0
        ng = 0.0
        for i in range(nk):
            w = lw[i] / tot
            if w == 0.0:
                continue
            k = keep[i]
            mk, vk, pk = comp_posterior(xj, sj, kind, loc[k], sd[k], a[k], b[k], df)
            m1 += w * mk
            m2 += w * (vk + mk * mk)
            ng += w * pk
            if zero[k]:
                z += w
        if m2 < 0.0:
            m2 = 0.0
        var = m2 - m1 * m1
        pm[j] = m1
        psd[j] = math.sqrt(var) if var > 0.0 else 0.0
        lfdr[j] = z
        negp[j] = ng - z
        lfsr[j] = lfsr_from(ng - z, z)
        pv = 1.0 - (ng - z) - z
        pos[j] = pv if pv > 0.0 else 0.0


@kernel
def posterior_ser(x, s, L, keep, pi, kind, loc, sd, a, b, zero, df, pm, psd, lfdr, negp, lfsr, pos):
    """Posterior summaries of all rows, serially (see :func:`_posterior_rows`)."""
    lw = np.empty(keep.shape[0])
    _posterior_rows(x, s, L, keep, pi, kind, loc, sd, a, b, zero, df, 0, x.shape[0],
                    pm, psd, lfdr, negp, lfsr, pos, lw)


@kernel
def lik_matrix_ser(x, s, kind, loc, sd, a, b, df, L, rowmax):
    """Likelihood matrix, serially (see :func:`_lik_rows`)."""
    _lik_rows(x, s, kind, loc, sd, a, b, df, 0, x.shape[0], L, rowmax)


@kernel(parallel=True)
def posterior_par(x, s, L, keep, pi, kind, loc, sd, a, b, zero, df, chunk, pm, psd, lfdr, negp, lfsr, pos):
    """Posterior summaries, chunks of rows in parallel (see :func:`_posterior_rows`)."""
    n = x.shape[0]
    nchunks = (n + chunk - 1) // chunk
    for c in prange(nchunks):
        lw = np.empty(keep.shape[0])
        _posterior_rows(x, s, L, keep, pi, kind, loc, sd, a, b, zero, df,
                        c * chunk, min(n, (c + 1) * chunk), pm, psd, lfdr, negp, lfsr, pos, lw)


@kernel
def prior_summary(pi, kind, loc, sd, a, b, zero):
    """(mean, sd, P(β < 0), P(β = 0)) of the mixture."""
    m1 = 0.0
    m2 = 0.0
    ple = 0.0
    z = 0.0
    for k in range(pi.shape[0]):
        mk, vk, pk = comp_prior_moments(kind, loc[k], sd[k], a[k], b[k])
        m1 += pi[k] * mk
        m2 += pi[k] * (vk + mk * mk)
        ple += pi[k] * pk
        if zero[k]:
            z += pi[k]
    var = m2 - m1 * m1
    return m1, math.sqrt(var) if var > 0.0 else 0.0, ple - z, z


@kernel
def lfsr_from(negp, lfdr):
    """ashr's local false sign rate from NegativeProb and lfdr (clamped at 0)."""
    if negp > 0.5 * (1.0 - lfdr):
        v = 1.0 - negp
    else:
        v = negp + lfdr
    return v if v > 0.0 else 0.0


@kernel
def _radix_argsort(v, order):
    """Stable argsort of finite v >= 0: LSD radix sort with 8-bit digits on the IEEE bit patterns
    (which order like the values for non-negative doubles), carrying the keys along."""
    n = v.shape[0]
    keys = np.empty(n, dtype=np.uint64)
    for i in range(n):
        keys[i] = np.float64(v[i] + 0.0).view(np.uint64)  # + 0.0 maps -0.0 to +0.0
        order[i] = i
    buf = np.empty(n, dtype=np.int64)
    kbuf = np.empty(n, dtype=np.uint64)
    cnt = np.empty(257, dtype=np.int64)
    in_order = True  # which of (order, buf) holds the current permutation
    for shift in range(0, 64, 8):
        src = order if in_order else buf
        dst = buf if in_order else order
        cnt[:] = 0
        sh = np.uint64(shift)
        for i in range(n):
            cnt[((keys[i] >> sh) & np.uint64(0xFF)) + 1] += 1
        if cnt.max() == n:  # every key has this digit: nothing to do
            continue
        for d in range(1, 257):
            cnt[d] += cnt[d - 1]
        for i in range(n):
            d = (keys[i] >> sh) & np.uint64(0xFF)
            dst[cnt[d]] = src[i]
            kbuf[cnt[d]] = keys[i]
            cnt[d] += 1
        keys, kbuf = kbuf, keys
        in_order = not in_order
    if not in_order:
        for i in range(n):
            order[i] = buf[i]


@kernel
def running_mean_sorted(v, out):
    """out[i] = mean of the i+1 smallest values of v, assigned in ascending (stable) order —
    q-values from lfdr and s-values from lfsr."""
    n = v.shape[0]
    radix = n >= 50000
    for i in range(n):
        if not (v[i] >= 0.0 and v[i] < _INF):
            radix = False
            break
    if radix:
        order = np.empty(n, dtype=np.int64)
        _radix_argsort(v, order)
    else:
        order = np.argsort(v, kind="mergesort")
    acc = 0.0
    for i in range(order.shape[0]):
        acc += v[order[i]]
        out[order[i]] = acc / (i + 1)


@kernel(parallel=True)
def running_means_pair(v1, v2, out1, out2):
    """:func:`running_mean_sorted` of two vectors at once (q-values and s-values)."""
    for i in prange(2):
        if i == 0:
            running_mean_sorted(v1, out1)
        else:
            running_mean_sorted(v2, out2)


# --------------------------------------------------------------------------- many problems at once


@kernel(parallel=True)
def ash_batch(X, S, kind, loc, sd, a, b, ncomp, pen, zero, fixed_pi, use_fixed, dfs, optimizer,
              eps, tol, max_iter, n_em, pi_thresh, chunk, want_extra,
              pm, psd, lfsr, lfdr, negp, qval, sval, pi_out, loglik, penloglik, n_iter, conv,
              n_used):
    """Fit and summarise P independent problems (rows of X, S); ``prange`` over problems.

    Row p uses components ``[:ncomp[p]]`` of ``loc[p], sd[p], a[p], b[p]`` (padded to K_max),
    the error model ``dfs[p]`` (inf: normal),
    Dirichlet penalty ``pen[p]`` (λ - 1) and, if ``use_fixed``, the fixed weights
    ``fixed_pi[p]``. Entries with non-finite x or s, or s <= 0 or s = inf, are excluded from the
    fit and receive the prior as posterior. ``negp``, ``qval`` and ``sval`` are written only
    if ``want_extra`` (otherwise they may be empty arrays).
    """
    P, G = X.shape
    for p in prange(P):
        K = ncomp[p]
        incl = np.empty(G, dtype=np.int64)
        ni = 0
        for j in range(G):
            xv = X[p, j]
            sv = S[p, j]
            if np.isfinite(xv) and np.isfinite(sv) and sv > 0.0:
                incl[ni] = j
                ni += 1
        n_used[p] = ni
        if ni == 0:
            for j in range(G):
                pm[p, j] = np.nan
                psd[p, j] = np.nan
                lfsr[p, j] = np.nan
                lfdr[p, j] = np.nan
                if want_extra:
                    negp[p, j] = np.nan
                    qval[p, j] = np.nan
                    sval[p, j] = np.nan
            loglik[p] = np.nan
            penloglik[p] = np.nan
            n_iter[p] = 0
            conv[p] = False
            continue
        xi = np.empty(ni)
        si = np.empty(ni)
        for t in range(ni):
            xi[t] = X[p, incl[t]]
            si[t] = S[p, incl[t]]
        lc = loc[p, :K].copy()
        sdc = sd[p, :K].copy()
        ac = a[p, :K].copy()
        bc = b[p, :K].copy()
        pc = pen[p, :K].copy()
        L = np.empty((ni, K))
        rmax = np.empty(ni)
        df = dfs[p]
        _lik_rows(xi, si, kind, lc, sdc, ac, bc, df, 0, ni, L, rmax)
        w = np.empty(K)
        if use_fixed:
            for k in range(K):
                w[k] = fixed_pi[p, k]
            n_iter[p] = 0
            conv[p] = True
        else:
            for k in range(K):
                w[k] = 1.0 / K
            if optimizer == OPT_EM:
                it, ok = mixem(L, pc, w, tol, max_iter, False, chunk)
            else:
                it, ok = mixsqp(L, pc, w, eps, tol, max_iter, n_em, False, chunk)
            n_iter[p] = it
            conv[p] = ok
        for k in range(K):
            pi_out[p, k] = w[k]
        ll = loglik_rows(L, rmax, w)
        loglik[p] = ll
        pl = ll
        for k in range(K):
            if pc[k] != 0.0:
                pl += pc[k] * math.log(w[k])
        penloglik[p] = pl
        nk = 0
        for k in range(K):
            if w[k] > pi_thresh:
                nk += 1
        keep = np.empty(nk, dtype=np.int64)
        pk = np.empty(nk)
        t = 0
        tot = 0.0
        for k in range(K):
            if w[k] > pi_thresh:
                keep[t] = k
                pk[t] = w[k]
                tot += w[k]
                t += 1
        for i in range(nk):
            pk[i] /= tot
        zc = zero[p, :K].copy()
        opm = np.empty(ni)
        opsd = np.empty(ni)
        olfdr = np.empty(ni)
        onp = np.empty(ni)
        olfsr = np.empty(ni)
        opos = np.empty(ni)
        lw = np.empty(nk)
        _posterior_rows(xi, si, L, keep, pk, kind, lc, sdc, ac, bc, zc, df, 0, ni,
                        opm, opsd, olfdr, onp, olfsr, opos, lw)
        # prior as posterior for excluded entries
        lk = np.empty(nk)
        sdk = np.empty(nk)
        ak = np.empty(nk)
        bk = np.empty(nk)
        zk = np.empty(nk, dtype=np.bool_)
        for i in range(nk):
            lk[i] = lc[keep[i]]
            sdk[i] = sdc[keep[i]]
            ak[i] = ac[keep[i]]
            bk[i] = bc[keep[i]]
            zk[i] = zc[keep[i]]
        gm, gsd, gneg, gz = prior_summary(pk, kind, lk, sdk, ak, bk, zk)
        gl = lfsr_from(gneg, gz)
        for j in range(G):
            pm[p, j] = gm
            psd[p, j] = gsd
            lfdr[p, j] = gz
            lfsr[p, j] = gl
            if want_extra:
                negp[p, j] = gneg
        for t in range(ni):
            j = incl[t]
            pm[p, j] = opm[t]
            psd[p, j] = opsd[t]
            lfdr[p, j] = olfdr[t]
            lfsr[p, j] = olfsr[t]
            if want_extra:
                negp[p, j] = onp[t]
        if want_extra:
            running_mean_sorted(lfdr[p], qval[p])
            running_mean_sorted(lfsr[p], sval[p])
