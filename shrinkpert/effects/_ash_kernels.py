"""Numba kernels for adaptive shrinkage (:mod:`shrinkpert.effects.ash`).

Everything here takes arrays and scalars and writes into preallocated outputs; the public
wrapper validates the inputs, builds the prior grid and calls these kernels.

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

NORMAL, UNIFORM, TRUNCNORM = 0, 1, 2
OPT_MIXSQP, OPT_EM = 0, 1

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
_HESS_EXACT_M = 8  # Hessian blocks up to this size use every observation ...
_HESS_ROWS = 2048  # ... larger ones about this many (see objective_pass)
_ZERO_WEIGHT = 1e-10  # mix-SQP sets smaller weights to exactly 0


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
def comp_posterior(x, s, kind, loc, sd, a, b, df):
    """Posterior (mean, variance, P(β <= 0)) of β given x under one prior component."""
    if kind == UNIFORM:
        if a == b:
            return a, 0.0, 1.0 if a <= 0.0 else 0.0
        if df == _INF:
            lo = (a - x) / s
            hi = (b - x) / s
            mz, vz = truncnorm_moments(lo, hi)
            c = -x / s
            if c <= lo:
                p = 0.0
            elif c >= hi:
                p = 1.0
            else:
                p = math.exp(norm_logdiff(lo, c) - norm_logdiff(lo, hi))
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
    mz, vz = truncnorm_moments(lo, hi)
    c = -m1 / r
    if c <= lo:
        p = 0.0
    elif c >= hi:
        p = 1.0
    else:
        p = math.exp(norm_logdiff(lo, c) - norm_logdiff(lo, hi))
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
    mz, vz = truncnorm_moments(lo, hi)
    c = -loc / sd
    if c <= lo:
        p = 0.0
    elif c >= hi:
        p = 1.0
    else:
        p = math.exp(norm_logdiff(lo, c) - norm_logdiff(lo, hi))
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


# --------------------------------------------------------------------------- optimisation passes


@kernel
def _grad_rows(L, x, eps, idx, m, want_hess, hstride, r0, r1, g, H, buf):
    """Accumulate, over rows r0..r1, g_k -= L_jk / u_j and (optionally, on rows j divisible by
    ``hstride``) the Hessian block H[a, b] += L_j,idx[a] L_j,idx[b] / u_j² (lower triangle);
    return -Σ log u_j, with u_j = Σ_k L_jk x_k + eps."""
    K = L.shape[1]
    obj = 0.0
    for j in range(r0, r1):
        u = eps
        for k in range(K):
            u += L[j, k] * x[k]
        obj -= math.log(u)
        q = 1.0 / u
        for k in range(K):
            g[k] -= q * L[j, k]
        if want_hess and j % hstride == 0:
            q2 = q * q if u > 1e-150 else 1e300  # no overflow for absurdly small densities
            for i in range(m):
                buf[i] = L[j, idx[i]]
            for i in range(m):
                li = buf[i] * q2
                for l in range(i + 1):
                    H[i, l] += li * buf[l]
    return obj


@kernel(parallel=True)
def _grad_pass_par(L, x, eps, idx, m, want_hess, hstride, chunk, gp, Hp, op):
    n = L.shape[0]
    nchunks = gp.shape[0]
    for c in prange(nchunks):
        gp[c, :] = 0.0
        if want_hess:
            Hp[c, :m, :m] = 0.0
        buf = np.empty(m)
        op[c] = _grad_rows(L, x, eps, idx, m, want_hess, hstride, c * chunk, min(n, (c + 1) * chunk),
                           gp[c], Hp[c], buf)


@kernel
def _grad_pass_ser(L, x, eps, idx, m, want_hess, hstride, chunk, gp, Hp, op):
    n = L.shape[0]
    nchunks = gp.shape[0]
    buf = np.empty(m)
    for c in range(nchunks):
        gp[c, :] = 0.0
        if want_hess:
            Hp[c, :m, :m] = 0.0
        op[c] = _grad_rows(L, x, eps, idx, m, want_hess, hstride, c * chunk, min(n, (c + 1) * chunk),
                           gp[c], Hp[c], buf)


@kernel
def objective_pass(L, pen, x, eps, idx, m, want_hess, approx_hess, parallel, chunk, gp, Hp, op, g, H):
    """Normalised penalised objective f(x) = -(Σ_j log u_j + Σ_k c_k log(x_k + eps)) / W,
    its gradient ``g`` (length K) and, if ``want_hess``, the Hessian block on ``idx[:m]``
    (``H[:m, :m]``, symmetric). W = n + Σ_k c_k. Returns f(x).

    With ``approx_hess``, a large block (m > 8) is estimated from every s-th observation
    (s = n // 2048, scaled by s): it only shapes the search direction.
    """
    n, K = L.shape
    hstride = 1
    if approx_hess and m > _HESS_EXACT_M:
        hstride = max(1, n // _HESS_ROWS)
    if parallel:
        _grad_pass_par(L, x, eps, idx, m, want_hess, hstride, chunk, gp, Hp, op)
    else:
        _grad_pass_ser(L, x, eps, idx, m, want_hess, hstride, chunk, gp, Hp, op)
    W = n * 1.0
    for k in range(K):
        W += pen[k]
    obj = 0.0
    for k in range(K):
        g[k] = 0.0
    if want_hess:
        for i in range(m):
            for l in range(i + 1):
                H[i, l] = 0.0
    for c in range(gp.shape[0]):  # reduce in chunk order: independent of thread count
        obj += op[c]
        for k in range(K):
            g[k] += gp[c, k]
        if want_hess:
            for i in range(m):
                for l in range(i + 1):
                    H[i, l] += Hp[c, i, l]
    for k in range(K):
        if pen[k] != 0.0:
            obj -= pen[k] * math.log(x[k] + eps)
            g[k] -= pen[k] / (x[k] + eps)
    for k in range(K):
        g[k] /= W
    if want_hess:
        if hstride > 1:
            for i in range(m):
                for l in range(i + 1):
                    H[i, l] *= hstride
        for i in range(m):
            k = idx[i]
            if pen[k] != 0.0:
                H[i, i] += pen[k] / ((x[k] + eps) * (x[k] + eps))
        for i in range(m):
            for l in range(i + 1):
                H[i, l] /= W
                H[l, i] = H[i, l]
    return obj / W


@kernel
def _fw_gap(g, x):
    """Frank–Wolfe gap of the normalised problem at x / Σx: -(1 + Σx · min_k g_k) clipped at 0.
    (For x on the simplex Σ_k x_k g_k = -1, so this bounds f(x) - min f.)"""
    sx = 0.0
    for k in range(x.shape[0]):
        sx += x[k]
    gmin = _INF
    for k in range(g.shape[0]):
        if np.isnan(g[k]):  # an observation without density: as far from optimal as it gets
            return _INF
        if g[k] < gmin:
            gmin = g[k]
    return -(1.0 + sx * gmin)


# --------------------------------------------------------------------------- QP (active set)


@kernel
def _chol_solve(A, free, m, rhs, out, work):
    """Solve A[F, F] z = rhs[F] for the free set F (ridge-stabilised Cholesky); out[~F] = 0."""
    nf = 0
    for i in range(m):
        if free[i]:
            nf += 1
    pos = np.empty(nf, dtype=np.int64)
    t = 0
    for i in range(m):
        if free[i]:
            pos[t] = i
            t += 1
    dmax = 0.0
    for i in range(nf):
        dmax = max(dmax, A[pos[i], pos[i]])
    ridge = 1e-12 * max(dmax, 1e-300)
    Lc = work[:nf, :nf]
    for i in range(nf):
        for l in range(i + 1):
            sm = A[pos[i], pos[l]]
            for q in range(l):
                sm -= Lc[i, q] * Lc[l, q]
            if i == l:
                sm += ridge
                Lc[i, i] = math.sqrt(sm) if sm > 0.0 else math.sqrt(ridge)
            else:
                Lc[i, l] = sm / Lc[l, l]
    z = np.empty(nf)
    for i in range(nf):
        sm = rhs[pos[i]]
        for q in range(i):
            sm -= Lc[i, q] * z[q]
        z[i] = sm / Lc[i, i]
    for i in range(nf - 1, -1, -1):
        sm = z[i]
        for q in range(i + 1, nf):
            sm -= Lc[q, i] * z[q]
        z[i] = sm / Lc[i, i]
    for i in range(m):
        out[i] = 0.0
    for i in range(nf):
        out[pos[i]] = z[i]


@kernel
def qp_active_set(H, c, y, m, tol, max_iter):
    """Minimise ½ yᵀHy + cᵀy subject to y >= 0 (primal active-set method), starting from the
    feasible ``y`` (overwritten with the solution). Only ``H[:m, :m]``, ``c[:m]``, ``y[:m]`` are
    used. Returns the number of iterations."""
    free = np.empty(m, dtype=np.bool_)
    for i in range(m):
        free[i] = y[i] > 0.0
    grad = np.empty(m)
    rhs = np.empty(m)
    p = np.empty(m)
    work = np.empty((m, m))
    it = 0
    for it in range(max_iter):
        for i in range(m):
            sm = c[i]
            for l in range(m):
                sm += H[i, l] * y[l]
            grad[i] = sm
            rhs[i] = -sm
        nfree = 0
        for i in range(m):
            if free[i]:
                nfree += 1
        pmax = 0.0
        if nfree > 0:
            _chol_solve(H, free, m, rhs, p, work)
            for i in range(m):
                pmax = max(pmax, abs(p[i]))
        ymax = 0.0
        for i in range(m):
            ymax = max(ymax, y[i])
        if pmax <= 1e-14 * max(1.0, ymax):
            # stationary on the free set: release the most negative multiplier, if any
            worst = -1
            wval = -tol
            for i in range(m):
                if not free[i] and grad[i] < wval:
                    wval = grad[i]
                    worst = i
            if worst < 0:
                break
            free[worst] = True
            continue
        step = 1.0
        block = -1
        for i in range(m):
            if free[i] and p[i] < 0.0:
                tt = -y[i] / p[i]
                if tt < step:
                    step = tt
                    block = i
        for i in range(m):
            if free[i]:
                y[i] += step * p[i]
        if block >= 0:
            y[block] = 0.0
            free[block] = False
        for i in range(m):
            if y[i] < 0.0:
                y[i] = 0.0
    return it + 1


# --------------------------------------------------------------------------- mix-SQP and EM


@kernel
def _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, xnew):
    """One EM step x_k <- (x_k Σ_j L_jk/u_j + c_k) / W. Returns (f(x), FW gap at x)."""
    n, K = L.shape
    obj = objective_pass(L, pen, x, 0.0, idx, 0, False, False, parallel, chunk, gp, Hp, op, g, H)
    gap = _fw_gap(g, x)
    # g_k = -(Σ_j L_jk/u_j + c_k/x_k)/W  =>  x_k (-g_k) = (x_k Σ_j L_jk/u_j + c_k)/W
    tot = 0.0
    for k in range(K):
        v = -x[k] * g[k]
        if not v > 0.0:
            v = 0.0
        xnew[k] = v
        tot += v
    for k in range(K):
        xnew[k] /= tot
    return obj, gap


@kernel
def mixem(L, pen, x, tol, max_iter, parallel, chunk):
    """Penalised EM for the mixture weights, accelerated by SQUAREM (Varadhan & Roland 2008,
    scheme S3, step bound 1, 4, 16, ...), with a fall-back to the plain double EM step whenever
    the extrapolated point raises the negative penalised log likelihood by more than 1
    (SQUAREM's ``objfn.inc``). ``x`` (length K, positive) is the start and receives the solution.
    Stops when the Frank–Wolfe gap is <= tol. Returns (n_em_steps, converged)."""
    n, K = L.shape
    nchunks = max(1, (n + chunk - 1) // chunk)
    gp = np.empty((nchunks, K))
    Hp = np.empty((nchunks, 1, 1))
    op = np.empty(nchunks)
    g = np.empty(K)
    H = np.empty((1, 1))
    idx = np.zeros(1, dtype=np.int64)
    x1 = np.empty(K)
    x2 = np.empty(K)
    x3 = np.empty(K)
    xs = np.empty(K)
    tot = 0.0
    for k in range(K):
        x[k] = max(x[k], 0.0)
        tot += x[k]
    for k in range(K):
        x[k] /= tot
    W = n * 1.0
    for k in range(K):
        W += pen[k]
    step_max = 1.0
    n_steps = 0
    converged = False
    obj0, gap = _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, x1)
    n_steps += 1
    while n_steps < max_iter:
        if gap <= tol:
            converged = True
            break
        obj1, gap1 = _em_step(L, pen, x1, parallel, chunk, gp, Hp, op, g, H, idx, x2)
        n_steps += 1
        sr = 0.0
        sv = 0.0
        for k in range(K):
            r = x1[k] - x[k]
            v = x2[k] - 2.0 * x1[k] + x[k]
            sr += r * r
            sv += v * v
        alpha = math.sqrt(sr / sv) if sv > 0.0 else 1.0
        alpha = max(1.0, min(step_max, alpha))
        tot = 0.0
        for k in range(K):
            r = x1[k] - x[k]
            v = x2[k] - 2.0 * x1[k] + x[k]
            xs[k] = max(0.0, x[k] + 2.0 * alpha * r + alpha * alpha * v)
            tot += xs[k]
        for k in range(K):
            xs[k] /= tot
        objs, gaps = _em_step(L, pen, xs, parallel, chunk, gp, Hp, op, g, H, idx, x3)
        n_steps += 1
        # accept unless the objective rises by more than 1 on the log-likelihood scale
        # (SQUAREM's objfn.inc = 1); the plain double EM step is the fall-back
        if objs <= obj0 + 1.0 / W and np.isfinite(objs):
            for k in range(K):
                x[k] = xs[k]
            obj0 = objs
            gap = gaps
            for k in range(K):
                x1[k] = x3[k]
            if alpha == step_max:
                step_max *= 4.0
        else:
            # extrapolation failed: keep the monotone EM double step
            for k in range(K):
                x[k] = x2[k]
            obj0, gap = _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, x1)
            n_steps += 1
            step_max = max(1.0, step_max / 4.0)
    for k in range(K):
        x[k] = max(x[k], 0.0)
    tot = 0.0
    for k in range(K):
        tot += x[k]
    for k in range(K):
        x[k] /= tot
    return n_steps, converged


@kernel
def mixsqp(L, pen, x, eps, tol, max_iter, n_em, parallel, chunk):
    """Sequential quadratic programming for the mixture weights (after Kim, Carbonetto, Stephens
    & Anitescu 2020, "mix-SQP").

    Minimises f(x) + Σ_k x_k over x >= 0, whose solution lies on the simplex, where f is the
    normalised penalised negative log likelihood of :func:`objective_pass`. After ``n_em`` EM
    steps (a sparse start, e.g. the solution for a subsample, is used as is unless it leaves
    observations without support), each iteration

    1. forms the gradient g and the Hessian H on the working set: the support of x plus the
       coordinates whose gradient asks to enter (H from every s-th observation while the set
       has more than 8 members and no step has needed backtracking yet);
    2. solves the QP min_y ½ (y - x)ᵀH(y - x) + (g + 1)ᵀ(y - x), y >= 0 over the working set
       (other coordinates fixed) by an active-set method;
    3. backtracks along y - x (Armijo constant 0.01, factor 0.75, rounding noise of f
       tolerated); a step is also refused if it multiplies the Frank–Wolfe gap by more than
       10, which keeps every observation's mixture density away from 0;
    4. sets weights below 1e-10 to 0 (unless that strands an observation).

    Stops when the Frank–Wolfe gap -(1 + Σx min_k g_k) <= tol. ``x`` is the start (length K)
    and receives the solution, clipped at 0 and normalised. Returns (n_iterations, converged).
    """
    n, K = L.shape
    nchunks = max(1, (n + chunk - 1) // chunk)
    gp = np.empty((nchunks, K))
    Hp = np.empty((nchunks, K, K))
    op = np.empty(nchunks)
    g = np.empty(K)
    H = np.zeros((K, K))
    gt = np.empty(K)
    Ht = np.zeros((K, K))
    idx = np.arange(K)
    idxt = np.empty(K, dtype=np.int64)
    xt = np.empty(K)
    xs = np.empty(K)
    gz = np.empty(K)
    p = np.zeros(K)
    Hs = np.empty((K, K))
    cs = np.empty(K)
    ys = np.empty(K)
    tot = 0.0
    for k in range(K):
        x[k] = max(x[k], 0.0)
        tot += x[k]
    for k in range(K):
        x[k] /= tot
    for it in range(n_em):
        _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, xt)
        for k in range(K):
            x[k] = xt[k]
    approx = True  # subsampled Hessian blocks until the first step that needs backtracking
    m = 0
    for k in range(K):
        if x[k] > 0.0:
            idx[m] = k
            m += 1
    obj = objective_pass(L, pen, x, eps, idx, m, True, approx, parallel, chunk, gp, Hp, op, g, H)
    if m < K and _fw_gap(g, x) > 1.0:
        # a sparse start that leaves some observations without support: restart from the
        # start mixed with the uniform weights, after two EM steps
        for k in range(K):
            x[k] = 0.5 * x[k] + 0.5 / K
        for it in range(2):
            _em_step(L, pen, x, parallel, chunk, gp, Hp, op, g, H, idx, xt)
            for k in range(K):
                x[k] = xt[k]
        m = K
        for k in range(K):
            idx[k] = k
        obj = objective_pass(L, pen, x, eps, idx, m, True, approx, parallel, chunk, gp, Hp, op, g, H)
    have_hess = True
    converged = False
    it = 0
    for it in range(max_iter):
        if _fw_gap(g, x) <= tol:
            converged = True
            break
        # working set: support of x and every coordinate whose gradient says it should enter
        sx = 0.0
        for k in range(K):
            sx += x[k]
        for k in range(K):
            if x[k] > 0.0 or 1.0 + sx * g[k] < 0.0:
                covered = False
                if have_hess:
                    for i in range(m):
                        if idx[i] == k:
                            covered = True
                            break
                if not covered:
                    have_hess = False
        if not have_hess:
            m = 0
            for k in range(K):
                if x[k] > 0.0 or 1.0 + sx * g[k] < 0.0:
                    idx[m] = k
                    m += 1
            obj = objective_pass(L, pen, x, eps, idx, m, True, approx, parallel, chunk, gp, Hp, op, g, H)
            have_hess = True
        # QP in the step y = x + p over the working set
        for i in range(m):
            sm = g[idx[i]] + 1.0
            for l in range(m):
                sm -= H[i, l] * x[idx[l]]
                Hs[i, l] = H[i, l]
            cs[i] = sm
            ys[i] = x[idx[i]]
        qp_active_set(Hs, cs, ys, m, 1e-14, 50 * (m + 1))
        for k in range(K):
            p[k] = 0.0
        for i in range(m):
            p[idx[i]] = ys[i] - x[idx[i]]
        dd = 0.0
        for k in range(K):
            dd += (g[k] + 1.0) * p[k]
        if not dd < 0.0:
            break  # no descent direction left at machine precision
        phi = obj + sx
        gap = _fw_gap(g, x)
        alpha = 1.0
        accepted = False
        while True:
            sxt = 0.0
            for k in range(K):
                v = x[k] + alpha * p[k]
                xt[k] = v if v > 0.0 else 0.0
                sxt += xt[k]
            want = alpha == 1.0
            mt = 0
            if want:  # guess the next working set so that the accepted pass brings its Hessian
                for k in range(K):
                    if xt[k] > 0.0 or 1.0 + sx * g[k] < 0.0:
                        idxt[mt] = k
                        mt += 1
            objt = objective_pass(L, pen, xt, eps, idxt, mt, want, approx, parallel, chunk,
                                  gp, Hp, op, gt, Ht)
            # Armijo, and no collapse of the gradient: a full step can zero every component
            # that supports some observation, after which the quadratic model of -log only
            # doubles that observation's density per iteration
            # (the Armijo test allows rounding noise of f: near the optimum a Newton step can gain
            # less than one ulp of f while still reducing the gradient residual)
            if (objt + sxt <= phi + 0.01 * alpha * dd + 4e-16 * abs(phi)
                    and _fw_gap(gt, xt) <= max(10.0 * gap, 1.0)):
                accepted = True
                break
            alpha *= 0.75
            approx = False
            if alpha < 1e-10:
                break
        if not accepted:
            break
        for k in range(K):
            x[k] = xt[k]
            g[k] = gt[k]
        obj = objt
        # drop weights that are numerically zero (mixsqp's zero threshold): otherwise steps
        # shorter than 1 leave every coordinate positive and the working set never shrinks
        zeroed = False
        for k in range(K):
            xs[k] = x[k]
            if x[k] < _ZERO_WEIGHT and pen[k] == 0.0 and x[k] > 0.0:
                x[k] = 0.0
                zeroed = True
        if zeroed:  # g and H refer to the point before zeroing
            objz = objective_pass(L, pen, x, eps, idx, 0, False, approx, parallel, chunk, gp, Hp, op, gz, H)
            if np.isfinite(objz) and _fw_gap(gz, x) <= max(10.0 * _fw_gap(g, xs), 1e-6):
                obj = objz
                for k in range(K):
                    g[k] = gz[k]
                want = False
            else:  # some observation relied on a dropped weight: keep them
                for k in range(K):
                    x[k] = xs[k]
        if want:
            m = mt
            for i in range(m):
                idx[i] = idxt[i]
                for l in range(m):
                    H[i, l] = Ht[i, l]
            have_hess = True
        else:
            have_hess = False
    for k in range(K):
        x[k] = max(x[k], 0.0)
    tot = 0.0
    for k in range(K):
        tot += x[k]
    for k in range(K):
        x[k] /= tot
    if not converged:
        converged = _fw_gap(g, x) <= tol
    return it, converged


# --------------------------------------------------------------------------- fit summaries


@kernel
def _loglik_rows(L, rowmax, pi, r0, r1):
    tot = 0.0
    for j in range(r0, r1):
        u = 0.0
        for k in range(L.shape[1]):
            u += pi[k] * L[j, k]
        tot += math.log(u) + rowmax[j]
    return tot


@kernel
def loglik_rows(L, rowmax, pi):
    """Σ_j log(Σ_k π_k L_jk) + rowmax_j (the unpenalised log likelihood), serially."""
    return _loglik_rows(L, rowmax, pi, 0, L.shape[0])


@kernel(parallel=True)
def loglik_par(L, rowmax, pi, chunk):
    """:func:`loglik_rows` by chunks of rows in parallel, reduced in chunk order."""
    n = L.shape[0]
    nchunks = max(1, (n + chunk - 1) // chunk)
    parts = np.empty(nchunks)
    for c in prange(nchunks):
        parts[c] = _loglik_rows(L, rowmax, pi, c * chunk, min(n, (c + 1) * chunk))
    tot = 0.0
    for c in range(nchunks):
        tot += parts[c]
    return tot


@kernel
def loglik_chunked(L, rowmax, pi, chunk):
    """:func:`loglik_par` serially (same chunks, same result)."""
    n = L.shape[0]
    nchunks = max(1, (n + chunk - 1) // chunk)
    tot = 0.0
    for c in range(nchunks):
        tot += _loglik_rows(L, rowmax, pi, c * chunk, min(n, (c + 1) * chunk))
    return tot


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
