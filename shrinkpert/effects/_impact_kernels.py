"""Numba kernel for TRADE's transcriptome impact (:mod:`shrinkpert.effects.impact`).

Many independent uniform-mixture fits (the whole-transcriptome fit and the significant /
non-significant refits of every perturbation) in one parallel call: likelihood matrix,
mixture weights and log likelihood per fit, and nothing else (impact needs no posterior).
Each fit solves the problem of :func:`shrinkpert.effects.ash.ash` on the same input (same
components, same mix-SQP, same chunked log-likelihood sum); the likelihood rows are computed
in linear space (:func:`uniform_lik_rows`) and agree with ash's log-space kernel to rounding.
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
_SERIES_TERMS = 18  # terms of the anchored series: at w < 0.1 and |t| w < 0.5 the next is < 1e-19
_ANCHORED_TW = 0.5  # anchored intervals with |t| w below this use the series (beyond, erfc loses < 2.2 bits)
_SKIP_SQUARES = 76.0  # exp(-76/2) < 2^-54: a further tail on the same side is below half an ulp
_SKIP_ACROSS = 8.5  # Q(8.5) < 2^-55: a tail across 0 is below half an ulp of 1 - Q(...)


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
def anchored_coefficients(t, e):
    """``e[m] = He_m(t) / (m + 1)!`` for m < len(e): the series of an interval with one end at t.

    From φ(t - v) = φ(t) Σ_m He_m(t) v^m / m! (the Hermite generating function),
    Φ(t) - Φ(t - w) = φ(t) w Σ_m e_m w^m and Φ(t + w) - Φ(t) = φ(t) w Σ_m e_m (-w)^m.
    ``h_m = He_m(t)/m!`` follows h_m = (t h_{m-1} - h_{m-2}) / m.
    """
    h_prev = 1.0
    h = t
    e[0] = 1.0
    if e.shape[0] > 1:
        e[1] = 0.5 * t
    for m in range(2, e.shape[0]):
        h_new = (t * h - h_prev) / m
        h_prev = h
        h = h_new
        e[m] = h / (m + 1)


@kernel
def anchored_series(e, v):
    """Σ_m e_m v^m by Horner's rule (``e`` from :func:`anchored_coefficients`)."""
    total = 0.0
    for m in range(e.shape[0] - 1, -1, -1):
        total = total * v + e[m]
    return total


@kernel
def _tail_pair_mass(lo, hi, t_lo, t_hi):
    """Φ(hi) - Φ(lo) from the two tails min(Φ, 1 - Φ) at lo and hi."""
    if hi <= 0.0:
        return t_hi - t_lo
    if lo >= 0.0:
        return t_lo - t_hi
    return 1.0 - t_lo - t_hi


@kernel
def _anchored_far_tail(t0, far):
    """The tail at the far end ``far`` of an interval whose other end t0 has tail Q(|t0|), or 0
    where it cannot change Φ(hi) - Φ(lo) as computed by :func:`_tail_pair_mass`.

    Skipped (exactly, not approximately): on the same side of 0 and further out,
    Q(|far|) <= exp(-(far² - t0²)/2) Q(|t0|) < 2^-54 Q(|t0|) once far² - t0² > 76, so
    Q(|t0|) - Q(|far|) rounds to Q(|t0|); across 0, Q(|far|) <= Q(8.5) < 2^-55, so
    1 - ... - Q(|far|) rounds as if it were 0.
    """
    if far * t0 >= 0.0:
        if far * far - t0 * t0 > _SKIP_SQUARES:
            return 0.0
    elif abs(far) > _SKIP_ACROSS:
        return 0.0
    return _tail(far)


@kernel
def uniform_lik_rows(x, s, a, b, L, rowmax):
    """Row-max-scaled likelihood of U[a_k, b_k] components under normal errors, in linear space.

    L_jk ∝ [Φ((x_j - a_k)/s_j) - Φ((x_j - b_k)/s_j)] / (b_k - a_k) (a point mass a = b:
    φ((x_j - a)/s_j)/s_j). The difference is taken between upper or lower tail probabilities
    (one ``erfc`` each, the one at 0 shared by the half-uniform components) so that it keeps
    its relative precision. Components with an end at 0 (every half-uniform component) that
    are short, w = (b - a)/s < 0.1 and |x/s| w < 0.5, use the series of
    :func:`anchored_coefficients` (coefficients once per row, one Horner sum per component, no
    ``erfc``); other short intervals use :func:`narrow_mass`; far tails that cannot change
    the result are not evaluated (:func:`_anchored_far_tail`). Rows whose largest value would
    underflow take the log-space route of the ash kernels. Same layout as the ash likelihood
    (``rowmax`` holds the log of the scale, scaled values below 1e-200 stored as 0).
    """
    none = np.full(a.shape[0], -1, dtype=np.int64)
    uniform_lik_rows_from(x, s, a, b, none, L, none, L, L, rowmax)


@kernel
def uniform_lik_rows_from(x, s, a, b, src, D_src, rows, D, L, rowmax):
    """:func:`uniform_lik_rows` into ``L`` and ``rowmax``, taking the columns with
    ``src[k] >= 0`` from the unscaled densities of another fit: D[i, k] = D_src[rows[i], src[k]].

    That fit must have had the same observation x[i], s[i] in its row rows[i] and the same
    component U[a_k, b_k] in its column src[k]: a density depends only on these, so the copy
    is bit-for-bit the value this kernel would compute. ``D`` receives the unscaled densities
    (row j is complete once it is scaled; ``D`` may be ``L``, then it holds the scaled values).
    """
    n = x.shape[0]
    K = a.shape[0]
    e = np.empty(_SERIES_TERMS)
    for j in range(n):
        xj = x[j]
        inv_s = 1.0 / s[j]
        t0 = xj * inv_s
        tail0 = _tail(t0)
        phi0 = math.exp(-0.5 * t0 * t0) * _INV_SQRT_2PI * inv_s
        have_e = False
        mx = 0.0
        for k in range(K):
            ak = a[k]
            bk = b[k]
            hi = (xj - ak) * inv_s if ak != 0.0 else t0
            if src[k] >= 0:
                d = D_src[rows[j], src[k]]
            elif ak == bk:
                d = phi0 if ak == 0.0 else math.exp(-0.5 * hi * hi) * _INV_SQRT_2PI * inv_s
            else:
                lo = (xj - bk) * inv_s if bk != 0.0 else t0
                w = hi - lo
                if (ak == 0.0 or bk == 0.0) and w < _NARROW and abs(t0) * w < _ANCHORED_TW:
                    if not have_e:
                        anchored_coefficients(t0, e)
                        have_e = True
                    v = (bk - ak) * inv_s
                    d = phi0 * anchored_series(e, v if ak == 0.0 else -v)
                elif ak == 0.0:
                    d = _tail_pair_mass(lo, hi, _anchored_far_tail(t0, lo), tail0) / bk
                elif bk == 0.0:
                    d = _tail_pair_mass(lo, hi, tail0, _anchored_far_tail(t0, hi)) / (-ak)
                else:
                    c = 0.5 * (lo + hi)
                    if w < _NARROW and abs(c) * w < 5.0:
                        d = math.exp(-0.5 * c * c) * _INV_SQRT_2PI * narrow_mass(c, 0.5 * w) * inv_s
                    else:
                        d = _tail_pair_mass(lo, hi, _tail(lo), _tail(hi)) / (bk - ak)
            D[j, k] = d
            if d > mx:
                mx = d
        if mx > _SMALLEST_MAX and mx < np.inf:
            inv = 1.0 / mx
            for k in range(K):
                v = D[j, k] * inv
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
def _fit_weights(L, rowmax, tol, max_iter, n_em, eps, chunk, want_loglik, pi):
    """mix-SQP from uniform weights on the scaled likelihood ``L``; ``pi`` (length K) receives
    the weights. Returns (loglik, n_iter, converged); loglik is NaN unless ``want_loglik``."""
    K = L.shape[1]
    pen = np.zeros(K)
    for k in range(K):
        pi[k] = 1.0 / K
    it, ok = mixsqp(L, pen, pi, eps, tol, max_iter, n_em, False, chunk)
    ll = loglik_chunked(L, rowmax, pi, chunk) if want_loglik else np.nan
    return ll, it, ok


@kernel(parallel=True)
def fit_uniform_groups(x, s, offsets, a, b, ncomp, group_off, src, rows, row_off, want_loglik, order,
                       n_workers, tol, max_iter, n_em, eps, chunk, pi_out, loglik, n_iter, conv):
    """Fit the weights of the uniform mixtures U[a_k, b_k] of Q problems, by groups.

    Problem q is ``x[offsets[q]:offsets[q + 1]]`` with components ``a[q, :ncomp[q]]``,
    ``b[q, :ncomp[q]]``. Group g is the problems ``group_off[g] .. group_off[g + 1] - 1``; the
    first is the group's parent, and each other member q takes the columns with
    ``src[q, k] >= 0`` of its likelihood from the parent's densities (rows
    ``rows[row_off[q]:row_off[q + 1]]`` of the parent, see :func:`uniform_lik_rows_from`).
    Worker t takes the groups ``order[t], order[t + n_workers], ...`` (``order`` by decreasing
    size balances the load) and fits a group's problems one after another, so the parent's
    densities are computed once. Each fit is mix-SQP from uniform weights; the log likelihood
    at the solution only where ``want_loglik[q]`` (NaN elsewhere).
    """
    G = group_off.shape[0] - 1
    for t in prange(n_workers):
        for i in range(t, G, n_workers):
            g = order[i]
            q0 = group_off[g]
            n0 = offsets[q0 + 1] - offsets[q0]
            K0 = ncomp[q0]
            has_children = group_off[g + 1] - q0 > 1
            D0 = np.empty((n0 if has_children else 0, K0))  # the parent's unscaled densities
            for q in range(q0, group_off[g + 1]):
                K = ncomp[q]
                lo = offsets[q]
                hi = offsets[q + 1]
                L = np.empty((hi - lo, K))
                rowmax = np.empty(hi - lo)
                aq = a[q, :K].copy()
                bq = b[q, :K].copy()
                if q > q0:
                    uniform_lik_rows_from(x[lo:hi], s[lo:hi], aq, bq, src[q, :K], D0,
                                          rows[row_off[q]:row_off[q + 1]], L, L, rowmax)
                elif has_children:
                    uniform_lik_rows_from(x[lo:hi], s[lo:hi], aq, bq, src[q, :K], D0, rows[:0], D0, L, rowmax)
                else:
                    uniform_lik_rows_from(x[lo:hi], s[lo:hi], aq, bq, src[q, :K], D0, rows[:0], L, L, rowmax)
                w = np.empty(K)
                ll, it, ok = _fit_weights(L, rowmax, tol, max_iter, n_em, eps, chunk, want_loglik[q], w)
                for k in range(K):
                    pi_out[q, k] = w[k]
                loglik[q] = ll
                n_iter[q] = it
                conv[q] = ok
