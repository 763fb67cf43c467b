r"""Numba kernel for L1 distances in single precision, with a bound on their distance to the exact ones.

The rank metrics only need the sign of :math:`d_{pj} - d_{pp}` for every pair, the distances being
those of the exact kernel (:mod:`~shrinkpert.metrics._distance_kernels`, double precision, genes
in order). :func:`l1_single` computes every pair in single precision, twice as many pairs per
vector instruction: sums over segments of ``_SEGMENT`` genes in single precision, the segments'
sums added in double precision. :mod:`~shrinkpert.metrics._pairwise` decides a pair from it when
its gap to the own distance exceeds the rounding bound below, and computes the others exactly.

**Bound.** Write :math:`u = 2^{-24}`, :math:`\gamma_k = ku/(1 - ku)`, :math:`D = \sum_g
w_g|q_g - c_g|` (exact) and :math:`A = \sum_g w_g|q_g|` over the query's weighted genes. Rounding
:math:`q, c, w` to single precision, the subtraction and the product gives each term within
:math:`w_g[(1 + \gamma_3)u(|q_g| + |c_g|) + \gamma_3|q_g - c_g|]` of :math:`w_g|q_g - c_g|`, and
:math:`\sum_g w_g|c_g| \le D + A`. A segment's sum of at most 64 non-negative terms is within
:math:`\gamma_{63}` of their sum, and the double-precision sum of the segments is within
:math:`\gamma_n(2^{-53})`. Collecting terms (with margin), :math:`|\tilde d - D| \le 4uA + 72uD`
when no value underflows. A weight below the normal range is rounded within :math:`2^{-150}`,
which moves its term by at most :math:`2^{-149}(|q_g| + |c_g|)`, and an underflowing product
by at most :math:`2^{-150}`: less than :math:`\eta = n2^{-140}(1 + \max|q| + \max|c|)` in all
(the inputs' own non-zero magnitudes are at least :math:`10^{-30}`, :func:`fits`). :func:`bound`
turns this into a bound on :math:`|\tilde d - d|` for the exact kernel's :math:`d` (itself within
:math:`\gamma_{n+2}(2^{-53})D` of :math:`D`), using :math:`D \le (\tilde d + 4uA + \eta)/(1 - 72u)`,
and doubles it.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._numba import kernel
from ._distance_kernels import n_tasks, task_span

__all__ = ["single_blocks", "l1_single", "bound", "fits"]

_LANES = 64  # candidates summed side by side (as single-precision vector lanes)
_SEGMENT = 64  # genes summed in single precision before their sum joins the double-precision total
_U = 2.0**-24


def fits(q_range: tuple[float, float], c_range: tuple[float, float], w_range: tuple[float, float]) -> bool:
    r"""Whether queries, candidates and weights with these magnitude ranges (smallest non-zero,
    largest; :func:`~shrinkpert.metrics._standing_kernels.magnitude_range`) suit single precision:
    non-zero magnitudes of :math:`q, c` in :math:`[10^{-30}, 10^{30}]`, weights at most
    :math:`10^{30}` (smaller ones may underflow: covered by the bound) and
    :math:`(\max|q| + \max|c|)\max w \le 10^{36}`, so no term or segment sum overflows."""
    (q_lo, q_hi), (c_lo, c_hi), (_, w_hi) = q_range, c_range, w_range
    return min(q_lo, c_lo) >= 1e-30 and max(q_hi, c_hi, w_hi) <= 1e30 and (q_hi + c_hi) * w_hi <= 1e36


def single_blocks(c: np.ndarray) -> np.ndarray:
    """The candidate rows ``c`` (n, G) in single precision as gene-major blocks of ``_LANES``, zero-padded."""
    n, n_g = c.shape
    n_b = (n + _LANES - 1) // _LANES
    out = np.zeros((n_b, n_g, _LANES), dtype=np.float32)
    for b in range(n_b):
        part = c[b * _LANES:(b + 1) * _LANES]
        out[b, :, :part.shape[0]] = part.T
    return out


@kernel(parallel=True)
def l1_single(q: np.ndarray, cb: np.ndarray, w: np.ndarray, target: np.ndarray, rows: np.ndarray,
              rows_per_task: int, out: np.ndarray) -> None:
    r"""``out[k, j]`` :math:`\approx \sum_g v_g|q_{ig} - c_{jg}|` for query ``i = rows[k]`` and every candidate ``j``.

    ``q`` (queries), ``cb`` (candidates as :func:`single_blocks`) and ``w`` (gene weights, one
    shared row or one per query) are single precision; ``v`` is the query's weight row with its
    ``target`` gene (-1: none) at 0. Each pair sums ``_SEGMENT`` genes at a time in single
    precision and adds the segments' sums in double precision. Tasks (a block of
    ``rows_per_task`` queries × a block of candidates) run in parallel.
    """
    n_g = q.shape[1]
    n_c = out.shape[1]
    n_cb = cb.shape[0]
    n_rows = rows.shape[0]
    shared = w.shape[0] == 1
    zero = np.float32(0.0)
    for task in prange(n_tasks(n_rows, rows_per_task, n_cb)):
        b, lo, n_r = task_span(task, n_rows, rows_per_task, n_cb)
        total = np.zeros((n_r, _LANES))
        part = np.empty(_LANES, dtype=np.float32)
        block = cb[b]
        for g0 in range(0, n_g, _SEGMENT):
            g1 = min(n_g, g0 + _SEGMENT)
            for r in range(n_r):
                i = rows[lo + r]
                wi = w[0] if shared else w[i]
                t = target[i]
                for k in range(_LANES):
                    part[k] = zero
                for g in range(g0, g1):
                    wg = zero if g == t else wi[g]
                    xg = q[i, g]
                    cg = block[g]
                    for k in range(_LANES):
                        part[k] += wg * abs(xg - cg[k])
                acc = total[r]
                for k in range(_LANES):
                    acc[k] += part[k]
        j0 = b * _LANES
        for r in range(n_r):
            for k in range(min(_LANES, n_c - j0)):
                out[lo + r, j0 + k] = total[r, k]


def bound(d: np.ndarray, a: np.ndarray, n_genes: int, reach: float) -> np.ndarray:
    r"""A bound on :math:`|\tilde d - d|` (module docstring) for approximations ``d``, query sums
    ``a`` (:math:`A`, one per row) and ``reach`` :math:`\ge \max|q| + \max|c|`."""
    u64 = 2.0**-53
    eta = n_genes * 2.0**-140 * (1.0 + reach)
    g64 = (n_genes + 2) * u64 / (1.0 - (n_genes + 2) * u64)
    lead = 4.0 * _U * a[:, None] + eta
    exact = (d + lead) / (1.0 - 72.0 * _U)  # >= D
    return 2.0 * (lead + 72.0 * _U * exact + g64 * exact)
