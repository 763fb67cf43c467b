r"""Numba kernels that decide, block of rows by block of rows, where each own candidate stands.

:mod:`~shrinkpert.metrics._pairwise` approximates every pair's distance and bounds the error
(:func:`product_distances` for cosine, Pearson and Euclidean distances from matrix products), then
:func:`tally` counts, per row, the candidates certainly closer, certainly farther and exactly tied
with the own candidate, and marks the undecided pairs for the exact kernel. Each replaces about
fifteen NumPy passes over a rows × candidates block (and their temporaries) with one; the values
are those of the NumPy expressions they replace, operation for operation (tests compare them with
NumPy twins, bit for bit).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._arrays import kernel_input
from .._numba import kernel, thread_limit
from ._distance_kernels import COSINE, L2, PEARSON, _varies_except

__all__ = ["product_distances", "tally", "magnitude_range", "undefined_queries", "weighted_row_sums", "row_sums",
           "row_hashes"]

_U = 2.0**-53
_TINY = 1e-280
_ONE_THREAD = 2_500_000  # entries below which row_sums runs in one thread


@kernel(parallel=True)
def product_distances(kind: int, s: np.ndarray, t: np.ndarray, u: np.ndarray, at: np.ndarray,
                      q2: np.ndarray, q1: np.ndarray, sw: np.ndarray, aq2: np.ndarray, asw: np.ndarray,
                      f: float, target: np.ndarray, qt: np.ndarray, wt: np.ndarray, c: np.ndarray,
                      d: np.ndarray, err: np.ndarray) -> None:
    r"""Approximate distances ``d`` (squared for L2) of a block of query rows and a bound ``err``
    on their difference to the exact kernel's (``inf`` where the products cannot be trusted).

    ``s``, ``t``, ``u`` (block × candidates, or one row shared by the block for ``t``, ``u``,
    ``at``) are :math:`S, T, U` and the candidates' magnitudes :math:`A_T`; ``q2, q1, sw, aq2,
    asw`` the block's query sums :math:`Q_2, Q_1, W, A_{Q2}, A_W`; ``f`` the rounding factor
    :math:`F`. A row :math:`i` with a ``target`` gene :math:`t_i \ge 0` (shared weights) first
    has its term taken out of the full sums, with :math:`c_j` = ``c[j, t_i]``:
    :math:`S - c_j a_i`, :math:`T - (c_j w_i)c_j`, :math:`U - c_j w_i` (``qt`` = :math:`a_i
    = w_{t_i}q_{it_i}`, ``wt`` = :math:`w_i = w_{t_i}`). With :math:`m = 1` (cosine) or
    :math:`1 + 4A_W/W` (Pearson):

    * L2: :math:`d = \max(Q_2 - 2S + T, 0)`, :math:`e = F(\sqrt{A_{Q2}} + \sqrt{A_T})^2`;
    * cosine (:math:`N = S, A = Q_2, C = T`) and Pearson (:math:`N = S - Q_1U/W`,
      :math:`A = Q_2 - Q_1^2/W`, :math:`C = T - U^2/W`): with :math:`e_N = Fm\sqrt{A_{Q2}A_T}`,
      :math:`e_A = FmA_{Q2}`, :math:`e_C = FmA_T`, :math:`r = N/\sqrt{AC}`,
      :math:`e_r = e_N/\sqrt{(A - e_A)(C - e_C)} + |r|(e_A/(A - e_A) + e_C/(C - e_C)) + 8u`;
      where the lower bounds :math:`A - e_A, C - e_C` are positive, their product above
      :math:`10^{-280}` and :math:`e_r < 1/4`: :math:`d = 1 - \mathrm{clip}(r, -1, 1)`,
      :math:`e = e_r + 8u`; elsewhere :math:`d = 1`, :math:`e = \infty`.
    """
    n_rows, n = d.shape
    t_step, u_step, at_step = min(t.shape[0] - 1, 1), min(u.shape[0] - 1, 1), min(at.shape[0] - 1, 1)
    for i in prange(n_rows):
        ti, ui, ai = i * t_step, i * u_step, i * at_step  # row i, or the shared row 0
        g = target[i]
        if kind == L2:
            for j in range(n):
                s_ij, t_ij = s[i, j], t[ti, j]
                if g >= 0:
                    cj = c[j, g]
                    s_ij -= cj * qt[i]
                    t_ij -= (cj * wt[i]) * cj
                v = q2[i] - 2.0 * s_ij + t_ij
                d[i, j] = v if (v >= 0.0 or v != v) else 0.0
                root = np.sqrt(aq2[i]) + np.sqrt(at[ai, j])
                err[i, j] = f * (root * root)
            continue
        fm = f * (1.0 if kind == COSINE else 1.0 + 4.0 * asw[i] / sw[i])
        for j in range(n):
            s_ij, t_ij, u_ij = s[i, j], t[ti, j], u[ui, j]
            if g >= 0:
                cj = c[j, g]
                s_ij -= cj * qt[i]
                t_ij -= (cj * wt[i]) * cj
                u_ij -= cj * wt[i]
            if kind == COSINE:
                num, qq, cc = s_ij, q2[i], t_ij
            else:
                num = s_ij - q1[i] * u_ij / sw[i]
                qq = q2[i] - q1[i] * q1[i] / sw[i]
                cc = t_ij - u_ij * u_ij / sw[i]
            e_num = fm * np.sqrt(aq2[i] * at[ai, j])
            e_qq = fm * aq2[i]
            e_cc = fm * at[ai, j]
            q_lo, c_lo = qq - e_qq, cc - e_cc
            r = num / np.sqrt(qq * cc)
            e_r = e_num / np.sqrt(q_lo * c_lo) + np.abs(r) * (e_qq / q_lo + e_cc / c_lo) + 8.0 * _U
            if q_lo > 0.0 and c_lo > 0.0 and q_lo * c_lo > _TINY and e_r < 0.25:
                d[i, j] = 1.0 - min(max(r, -1.0), 1.0)
                err[i, j] = e_r + 8.0 * _U
            else:
                d[i, j] = 1.0
                err[i, j] = np.inf


@kernel(parallel=True)
def tally(d: np.ndarray, err: np.ndarray, own_lo: np.ndarray, own_hi: np.ndarray, groups: np.ndarray,
          undefined: np.ndarray, row0: int, less: np.ndarray, equal: np.ndarray, greater: np.ndarray,
          unsure: np.ndarray) -> None:
    r"""Count, for rows ``row0 + i`` of a block, the candidates decided by ``d ± err``.

    Candidate :math:`j` of row :math:`p` ties when ``groups[j] == groups[p]`` (byte-identical
    rows), else is certainly closer when :math:`d + e` < ``own_lo[p]`` and certainly farther when
    :math:`d - e` > ``own_hi[p]``; any other pair is ``unsure`` (left to the exact kernel) unless
    the row is ``undefined``. The own candidate counts nowhere. ``less``, ``equal``, ``greater``
    (length P) receive the block's counts; ``unsure`` is block × candidates.
    """
    n_rows, n = d.shape
    for i in prange(n_rows):
        p = row0 + i
        lo, hi, gp, dead = own_lo[p], own_hi[p], groups[p], undefined[p]
        n_less = n_equal = n_greater = 0
        for j in range(n):
            if j == p:
                unsure[i, j] = False
                continue
            tie = groups[j] == gp
            below = not tie and d[i, j] + err[i, j] < lo
            above = not tie and d[i, j] - err[i, j] > hi
            n_less += below
            n_greater += above
            n_equal += tie
            unsure[i, j] = not (below or above or tie or dead)
        less[p], equal[p], greater[p] = n_less, n_equal, n_greater


@kernel
def magnitude_range(a: np.ndarray) -> tuple[float, float]:
    """The smallest non-zero and the largest magnitude of the values of ``a`` (2-D; ``inf, 0`` when all are 0)."""
    lo, hi = np.inf, 0.0
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            m = abs(a[i, j])
            if m > hi:
                hi = m
            if 0.0 < m < lo:
                lo = m
    return lo, hi


@kernel(parallel=True)
def undefined_queries(kind: int, q: np.ndarray, base: np.ndarray, target: np.ndarray, out: np.ndarray) -> None:
    """Query rows whose every distance is undefined under the exact kernel's rules (``out``, bool).

    On the genes of positive weight (``base``: one shared row or one per query) other than the
    row's ``target``: cosine, a query that is 0 on all of them; Pearson, a query that is constant
    on them (or has none). Other kinds: none.
    """
    shared = base.shape[0] == 1
    for i in prange(q.shape[0]):
        bi = base[0] if shared else base[i]
        t = target[i]
        if kind == COSINE:
            dead = True
            for g in range(q.shape[1]):
                if g != t and bi[g] > 0.0 and q[i, g] != 0.0:
                    dead = False
                    break
            out[i] = dead
        elif kind == PEARSON:
            out[i] = not _varies_except(q[i], bi, t)
        else:
            out[i] = False


@kernel(parallel=True)
def weighted_row_sums(a: np.ndarray, base: np.ndarray, squares: np.ndarray, sums: np.ndarray,
                      weights: np.ndarray) -> None:
    r"""Per row :math:`i` of ``a``: :math:`\sum_g w_{ig}a_{ig}^2`, :math:`\sum_g w_{ig}a_{ig}` and
    :math:`\sum_g w_{ig}`, summed in gene order (``base``: one shared weight row or one per row)."""
    shared = base.shape[0] == 1
    for i in prange(a.shape[0]):
        w = base[0] if shared else base[i]
        s2 = 0.0
        s1 = 0.0
        s0 = 0.0
        for g in range(a.shape[1]):
            wa = w[g] * a[i, g]
            s2 += wa * a[i, g]
            s1 += wa
            s0 += w[g]
        squares[i] = s2
        sums[i] = s1
        weights[i] = s0


def row_sums(a: np.ndarray, base: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`weighted_row_sums` of ``a`` under ``base`` as new arrays (squares, sums, weights); in
    one thread below ``_ONE_THREAD`` entries (waking the pool costs more)."""
    out = tuple(np.empty(a.shape[0]) for _ in range(3))
    with thread_limit(None if a.size > _ONE_THREAD else 1):
        weighted_row_sums(kernel_input(a), kernel_input(base), *out)
    return out


@kernel(parallel=True)
def row_hashes(words: np.ndarray, out: np.ndarray) -> None:
    """A 64-bit FNV-1a hash of each row of ``words`` (uint64, e.g. float64 bits): equal rows, equal hashes."""
    prime = np.uint64(1099511628211)
    for i in prange(words.shape[0]):
        h = np.uint64(14695981039346656037)
        for g in range(words.shape[1]):
            h = (h ^ words[i, g]) * prime
        out[i] = h
