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
from ._ash_kernels import UNIFORM, _lik_rows
from ._mixture_kernels import loglik_chunked, mixsqp

_SQRT12 = math.sqrt(12.0)


@kernel
def fit_uniform_one(x, s, a, b, tol, max_iter, n_em, eps, chunk, pi):
    """Fit the weights ``pi`` (length K, overwritten) of the uniform mixture U[a_k, b_k] to
    ``x`` with standard errors ``s``, starting from uniform weights. Returns
    (loglik, n_iter, converged)."""
    n = x.shape[0]
    K = a.shape[0]
    loc = np.empty(K)
    sd = np.empty(K)
    for k in range(K):
        loc[k] = 0.5 * (a[k] + b[k])
        sd[k] = (b[k] - a[k]) / _SQRT12
    L = np.empty((n, K))
    rowmax = np.empty(n)
    _lik_rows(x, s, UNIFORM, loc, sd, a, b, np.inf, 0, n, L, rowmax)
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
