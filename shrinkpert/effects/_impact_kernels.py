"""Numba kernel for TRADE's transcriptome impact (:mod:`shrinkpert.effects.impact`).

Many independent uniform-mixture fits (the whole-transcriptome fit and the significant /
non-significant refits of every perturbation) in one parallel call: likelihood matrix,
mixture weights and log likelihood per fit, and nothing else (impact needs no posterior).
Each fit runs exactly the computations of :func:`shrinkpert.effects.ash.ash` on the same
input (same likelihood rows, same mix-SQP, same chunked log-likelihood sum), so the weights
are identical to ash's.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel
from ._ash_kernels import _NARROW, UNIFORM, _lik_rows
from ._mixture_kernels import loglik_chunked, mixsqp

_SQRT12 = math.sqrt(12.0)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TINY = 1e-200  # as in the ash kernels: scaled likelihoods below this are stored as 0
_SMALLEST_MAX = 1e-250  # rows whose largest density is below this take the log-space route


@kernel
def _tail(t):
    """min(Φ(t), 1 - Φ(t)) with full relative precision (until it underflows, beyond |t| ≈ 38)."""
    return 0.5 * math.erfc(abs(t) * _INV_SQRT2)


@kernel
def narrow_mass(c, h):
    """(Φ(c + h) - Φ(c - h)) / (2h φ(c)) by its Hermite series, for 2h < 0.1 and |c| h < 2.5.

    With φ(c + u)/φ(c) = exp(-cu - u²/2) = Σ_n He_n(c) (-u)^n / n!, integrating over [-h, h]
    keeps the even terms: Σ_m He_{2m}(c) h^{2m} / (2m + 1)!. The terms q_n = He_n(c) h^n / n!
    follow q_{n+1} = (c h q_n - h² q_{n-1}) / (n + 1); the sum stops once two successive terms
    are below 1e-17 of it (at most 60 terms; about 30 at |c| h = 2.5).
    """
    ch = c * h
    h2 = h * h
    q_prev = 1.0  # q_0
    q = ch  # q_1
    total = 1.0
    for n in range(1, 60):
        q_next = (ch * q - h2 * q_prev) / (n + 1)
        q_prev = q
        q = q_next  # q_{n+1}
        if (n + 1) % 2 == 0:
            total += q / (n + 2)
        if abs(q) < 1e-17 * abs(total) and abs(q_prev) < 1e-17 * abs(total):
            break
    return total


@kernel
def uniform_lik_rows(x, s, a, b, L, rowmax):
    """Row-max-scaled likelihood of U[a_k, b_k] components under normal errors, in linear space.

    L_jk ∝ [Φ((x_j - a_k)/s_j) - Φ((x_j - b_k)/s_j)] / (b_k - a_k) (a point mass a = b:
    φ((x_j - a)/s_j)/s_j), with the difference taken between upper or lower tail
    probabilities (one ``erfc`` each, the value at 0 shared by the half-uniform components) so
    that it keeps its relative precision; short intervals (same rule as the ash kernels) use
    :func:`narrow_mass`. Rows whose largest value would underflow take the log-space route of
    the ash kernels. Same layout as the ash likelihood (``rowmax`` holds the log of the scale,
    scaled values below 1e-200 stored as 0).
    """
    n = x.shape[0]
    K = a.shape[0]
    for j in range(n):
        xj = x[j]
        sj = s[j]
        inv_s = 1.0 / sj
        t0 = xj * inv_s
        tail0 = _tail(t0)
        mx = 0.0
        for k in range(K):
            ak = a[k]
            bk = b[k]
            hi = (xj - ak) * inv_s if ak != 0.0 else t0
            if ak == bk:
                d = math.exp(-0.5 * hi * hi) * _INV_SQRT_2PI * inv_s
            else:
                lo = (xj - bk) * inv_s if bk != 0.0 else t0
                w = hi - lo
                c = 0.5 * (lo + hi)
                if w < _NARROW and abs(c) * w < 5.0:
                    d = math.exp(-0.5 * c * c) * _INV_SQRT_2PI * narrow_mass(c, 0.5 * w) * inv_s
                else:
                    t_lo = tail0 if bk == 0.0 else _tail(lo)
                    t_hi = tail0 if ak == 0.0 else _tail(hi)
                    if hi <= 0.0:
                        mass = t_hi - t_lo
                    elif lo >= 0.0:
                        mass = t_lo - t_hi
                    else:
                        mass = 1.0 - t_lo - t_hi
                    d = mass / (bk - ak)
            L[j, k] = d
            if d > mx:
                mx = d
        if mx > _SMALLEST_MAX and mx < np.inf:
            inv = 1.0 / mx
            for k in range(K):
                v = L[j, k] * inv
                L[j, k] = v if v > _TINY else 0.0
            rowmax[j] = math.log(mx)
        else:
            _log_space_row(x, s, a, b, j, L, rowmax)


@kernel
def _log_space_row(x, s, a, b, j, L, rowmax):
    """Row j by the ash kernels' log-space route."""
    K = a.shape[0]
    loc = np.empty(K)
    sd = np.empty(K)
    for k in range(K):
        loc[k] = 0.5 * (a[k] + b[k])
        sd[k] = (b[k] - a[k]) / _SQRT12
    _lik_rows(x, s, UNIFORM, loc, sd, a, b, np.inf, j, j + 1, L, rowmax)


@kernel
def fit_uniform_one(x, s, a, b, tol, max_iter, n_em, eps, chunk, pi):
    """Fit the weights ``pi`` (length K, overwritten) of the uniform mixture U[a_k, b_k] to
    ``x`` with standard errors ``s``, starting from uniform weights. Returns
    (loglik, n_iter, converged)."""
    n = x.shape[0]
    K = a.shape[0]
    L = np.empty((n, K))
    rowmax = np.empty(n)
    uniform_lik_rows(x, s, a, b, L, rowmax)
    pen = np.zeros(K)
    for k in range(K):
        pi[k] = 1.0 / K
    it, ok = mixsqp(L, pen, pi, eps, tol, max_iter, n_em, False, chunk)
    return loglik_chunked(L, rowmax, pi, chunk), it, ok


@kernel(parallel=True)
def fit_uniform_many(x, s, offsets, a, b, ncomp, order, n_workers, tol, max_iter, n_em, eps, chunk,
                     pi_out, loglik, n_iter, conv):
    """:func:`fit_uniform_one` for Q problems: problem q is ``x[offsets[q]:offsets[q + 1]]``
    with components ``a[q, :ncomp[q]]``, ``b[q, :ncomp[q]]``. Worker t takes the problems
    ``order[t], order[t + n_workers], ...`` (``order`` by decreasing size balances the load)."""
    Q = offsets.shape[0] - 1
    for t in prange(n_workers):
        for i in range(t, Q, n_workers):
            q = order[i]
            K = ncomp[q]
            lo = offsets[q]
            hi = offsets[q + 1]
            w = np.empty(K)
            ll, it, ok = fit_uniform_one(x[lo:hi], s[lo:hi], a[q, :K].copy(), b[q, :K].copy(), tol,
                                         max_iter, n_em, eps, chunk, w)
            for k in range(K):
                pi_out[q, k] = w[k]
            loglik[q] = ll
            n_iter[q] = it
            conv[q] = ok
