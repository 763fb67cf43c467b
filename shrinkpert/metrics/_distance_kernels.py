"""Numba kernel for the perturbation × perturbation distance matrices of the rank metrics.

Distances are computed from the differences themselves (no ``|a|² + |b|² - 2ab`` shortcut), so
identical rows give bit-identical distances (ties stay ties) and a perfect prediction is at
distance exactly 0. The cost is ``n_queries × n_candidates × n_genes``.

Speed without ``fastmath``: each pair's sum runs over genes in order (one dependency chain), so
four candidates are summed side by side (four independent chains, each in the same order as a
single-pair loop, so the result does not depend on the blocking), and a block of queries shares
each group of candidate rows while it is in cache. Blocks of queries run in parallel.

:func:`pair_distances` computes chosen (query, candidate) pairs with the very same operations in
the same order, so each of its values is bit-identical to the matrix entry; the rank metrics use
it for the diagonal and for the few pairs that a matrix product cannot order with certainty.

:func:`rows_blocked` gives whole rows of that matrix, bit for bit, several times faster: the
candidates are stored gene-major in blocks of 32 (:func:`candidate_blocks`), so the 32 chains of
one query sit side by side in memory and the compiler runs them as vector lanes (each lane still
one pair's sum over genes in order), and the queries of a task share each block's genes, 64 at a
time, while they are in cache.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["L1", "L2", "COSINE", "PEARSON", "pairwise_distances", "pair_distances", "rows_blocked", "candidate_blocks",
           "l1_pivot_corrections", "pivot_deviations", "kept_genes", "l1_gene_subset", "heavy_genes", "ORDERS"]

L1, L2, COSINE, PEARSON = 0, 1, 2, 3
_QUERY_BLOCK = 16


@kernel
def _varies(x: np.ndarray, w: np.ndarray) -> bool:
    """True if ``x`` takes at least two values on genes with positive weight."""
    first = 0.0
    seen = False
    for g in range(x.shape[0]):
        if w[g] > 0.0:
            if not seen:
                first = x[g]
                seen = True
            elif x[g] != first:
                return True
    return False


@kernel
def _from_sums(kind: int, s: float, qq: float, t: float, u: float, sw: float, sx: float) -> float:
    """Distance of one pair from its sums over genes.

    ``s`` = Σw|d| (``L1``), Σw d² (``L2``), Σw q c (``COSINE``) or Σw x c with the query centred,
    x = q - m_q (``PEARSON``); ``qq`` = Σw q² (Σw x² for ``PEARSON``); ``t`` = Σw c², ``u`` = Σw c;
    ``sw`` = Σw and ``sx`` = Σw x (zero up to rounding) of the query.
    """
    if kind == 0:
        return s
    if kind == 1:
        return np.sqrt(s)
    if kind == 2:
        cc = t
    else:  # centre the candidate: Σw x (c - m_c) and Σw (c - m_c)² with m_c = u / sw
        mc = u / sw
        s = s - mc * sx
        cc = t - mc * u
    r = s / np.sqrt(qq * cc)
    if r > 1.0:
        r = 1.0
    elif r < -1.0:
        r = -1.0
    return 1.0 - r


@kernel
def _four(kind: int, x: np.ndarray, wi: np.ndarray, c: np.ndarray, j: int, qq: float, sw: float, sx: float,
          out: np.ndarray) -> None:
    """Distances from query ``x`` (centred for ``PEARSON``) to candidates ``j..j+3``.

    Four independent chains, each summed over genes in order, as a one-candidate loop would.
    """
    c0, c1, c2, c3 = c[j], c[j + 1], c[j + 2], c[j + 3]
    s0 = s1 = s2 = s3 = 0.0
    t0 = t1 = t2 = t3 = 0.0
    u0 = u1 = u2 = u3 = 0.0
    for g in range(x.shape[0]):
        xg = x[g]
        wg = wi[g]
        if kind == 0:
            s0 += wg * abs(xg - c0[g])
            s1 += wg * abs(xg - c1[g])
            s2 += wg * abs(xg - c2[g])
            s3 += wg * abs(xg - c3[g])
        elif kind == 1:
            d0, d1, d2, d3 = xg - c0[g], xg - c1[g], xg - c2[g], xg - c3[g]
            s0 += wg * d0 * d0
            s1 += wg * d1 * d1
            s2 += wg * d2 * d2
            s3 += wg * d3 * d3
        else:
            y0, y1, y2, y3 = wg * c0[g], wg * c1[g], wg * c2[g], wg * c3[g]
            s0 += xg * y0
            s1 += xg * y1
            s2 += xg * y2
            s3 += xg * y3
            t0 += y0 * c0[g]
            t1 += y1 * c1[g]
            t2 += y2 * c2[g]
            t3 += y3 * c3[g]
            if kind == 3:
                u0 += y0
                u1 += y1
                u2 += y2
                u3 += y3
    out[j] = _from_sums(kind, s0, qq, t0, u0, sw, sx)
    out[j + 1] = _from_sums(kind, s1, qq, t1, u1, sw, sx)
    out[j + 2] = _from_sums(kind, s2, qq, t2, u2, sw, sx)
    out[j + 3] = _from_sums(kind, s3, qq, t3, u3, sw, sx)


@kernel(parallel=True)
def pairwise_distances(q: np.ndarray, c: np.ndarray, w: np.ndarray, kind: int, out: np.ndarray) -> None:
    r"""``out[i, j]`` = weighted distance between query row ``q[i]`` and candidate row ``c[j]``.

    ``w`` has one row (shared) or one row per query (the query's own gene weights). ``kind``:
    ``L1`` = sum w|q-c|; ``L2`` = sqrt(sum w (q-c)^2); ``COSINE`` = 1 - weighted cosine;
    ``PEARSON`` = 1 - weighted Pearson correlation (NaN if either row is constant on the genes
    of positive weight). Undefined values (zero vectors) are NaN.

    ``PEARSON`` centres the query exactly and the candidate through its sums,
    :math:`\sum w x(c-m_c) = \sum w x c - m_c\sum w x` and
    :math:`\sum w (c-m_c)^2 = \sum w c^2 - m_c \sum w c`, so each pair takes one pass.
    """
    n_q, n_g = q.shape
    n_c = c.shape[0]
    shared = w.shape[0] == 1
    n_blocks = (n_q + _QUERY_BLOCK - 1) // _QUERY_BLOCK
    for b in prange(n_blocks):
        lo = b * _QUERY_BLOCK
        hi = min(n_q, lo + _QUERY_BLOCK)
        x = np.empty((hi - lo, n_g))  # the block's queries, centred for PEARSON
        sw = np.zeros(hi - lo)
        sx = np.zeros(hi - lo)
        qq = np.zeros(hi - lo)
        ok = np.ones(hi - lo, dtype=np.bool_)
        for i in range(lo, hi):
            wi = w[0] if shared else w[i]
            k = i - lo
            mq = 0.0
            if kind == 3:
                for g in range(n_g):
                    sw[k] += wi[g]
                    mq += wi[g] * q[i, g]
                mq /= sw[k]
                ok[k] = _varies(q[i], wi)
            for g in range(n_g):
                x[k, g] = q[i, g] - mq
                qq[k] += wi[g] * x[k, g] * x[k, g]
                sx[k] += wi[g] * x[k, g]
        for j in range(0, n_c - n_c % 4, 4):
            for i in range(lo, hi):
                _four(kind, x[i - lo], w[0] if shared else w[i], c, j, qq[i - lo], sw[i - lo], sx[i - lo], out[i])
        for j in range(n_c - n_c % 4, n_c):  # the last 0-3 candidates, one chain each
            for i in range(lo, hi):
                wi = w[0] if shared else w[i]
                k = i - lo
                s = t = u = 0.0
                for g in range(n_g):
                    if kind == 0:
                        s += wi[g] * abs(x[k, g] - c[j, g])
                    elif kind == 1:
                        d = x[k, g] - c[j, g]
                        s += wi[g] * d * d
                    else:
                        y = wi[g] * c[j, g]
                        s += x[k, g] * y
                        t += y * c[j, g]
                        u += y
                out[i, j] = _from_sums(kind, s, qq[k], t, u, sw[k], sx[k])
        if kind == 3:
            for i in range(lo, hi):
                wi = w[0] if shared else w[i]
                for j in range(n_c):
                    if not (ok[i - lo] and _varies(c[j], wi)):
                        out[i, j] = np.nan


@kernel(parallel=True)
def pair_distances(q: np.ndarray, c: np.ndarray, w: np.ndarray, target: np.ndarray, kind: int, rows: np.ndarray,
                   ptr: np.ndarray, cols: np.ndarray, out: np.ndarray) -> None:
    r"""``out[m]`` = the distance of :func:`pairwise_distances` between ``q[rows[k]]`` and ``c[cols[m]]``.

    The pairs of query ``rows[k]`` are ``cols[ptr[k]:ptr[k + 1]]``. ``w`` has one row (shared) or
    one row per query; ``target[i] >= 0`` gives query ``i`` weight 0 on that gene (as a weight
    matrix with that entry 0 would). Each value is bit-identical to the entry of the full matrix
    (same operations in the same order: query sums first, then one chain over genes per pair).
    Query rows run in parallel.
    """
    n_g = q.shape[1]
    shared = w.shape[0] == 1
    for k in prange(rows.shape[0]):
        i = rows[k]
        wi = np.empty(n_g)
        for g in range(n_g):
            wi[g] = w[0, g] if shared else w[i, g]
        if target[i] >= 0:
            wi[target[i]] = 0.0
        x = np.empty(n_g)
        sw = 0.0
        sx = 0.0
        qq = 0.0
        mq = 0.0
        ok = True
        if kind == 3:
            for g in range(n_g):
                sw += wi[g]
                mq += wi[g] * q[i, g]
            mq /= sw
            ok = _varies(q[i], wi)
        for g in range(n_g):
            x[g] = q[i, g] - mq
            qq += wi[g] * x[g] * x[g]
            sx += wi[g] * x[g]
        for m in range(ptr[k], ptr[k + 1]):
            j = cols[m]
            s = t = u = 0.0
            for g in range(n_g):
                if kind == 0:
                    s += wi[g] * abs(x[g] - c[j, g])
                elif kind == 1:
                    d = x[g] - c[j, g]
                    s += wi[g] * d * d
                else:
                    y = wi[g] * c[j, g]
                    s += x[g] * y
                    t += y * c[j, g]
                    u += y
            out[m] = _from_sums(kind, s, qq, t, u, sw, sx)
            if kind == 3 and not (ok and _varies(c[j], wi)):
                out[m] = np.nan


_LANES = 32  # candidates summed side by side (independent chains: vector lanes)
_SEGMENT = 64  # genes of one candidate block summed for every query of a task before the next genes (cache)


@kernel
def _varies_except(x: np.ndarray, w: np.ndarray, skip: int) -> bool:
    """:func:`_varies` with the weight of gene ``skip`` taken as 0 (``skip`` < 0: none)."""
    first = 0.0
    seen = False
    for g in range(x.shape[0]):
        if w[g] > 0.0 and g != skip:
            if not seen:
                first = x[g]
                seen = True
            elif x[g] != first:
                return True
    return False


@kernel
def n_tasks(n_rows: int, rows_per_task: int, n_blocks: int) -> int:
    """Tasks of a grid of (``rows_per_task`` queries) × (one candidate block)."""
    return (n_rows + rows_per_task - 1) // rows_per_task * n_blocks


@kernel
def task_span(task: int, n_rows: int, rows_per_task: int, n_blocks: int) -> tuple[int, int, int]:
    """Task ``task`` of :func:`n_tasks`' grid: its candidate block, first query and number of queries."""
    first = task // n_blocks * rows_per_task
    return task % n_blocks, first, min(n_rows, first + rows_per_task) - first


@kernel(parallel=True)
def rows_blocked(q: np.ndarray, c: np.ndarray, cb: np.ndarray, base: np.ndarray, target: np.ndarray, kind: int,
                 rows: np.ndarray, rows_per_task: int, out: np.ndarray) -> None:
    r"""``out[k, j]`` = the distance of :func:`pair_distances` between ``q[rows[k]]`` and ``c[j]``, for every ``j``.

    Whole rows of the matrix, each value bit-identical to :func:`pairwise_distances` with the
    query's weights (``base``, one shared row or one per query, with the query's ``target`` gene
    at 0): the same operations in the same order, query sums first, then one chain over genes in
    order per pair (no FMA: Numba does not contract without ``fastmath``). Faster because the
    candidates are read as gene-major blocks of ``_LANES`` (``cb`` from :func:`candidate_blocks`,
    ``c`` itself only for the Pearson NaN rule): the chains of one block sit side by side and run
    as vector lanes, and a block's genes are taken ``_SEGMENT`` at a time for the
    ``rows_per_task`` queries of a task while they are in cache. Tasks (a block of queries × a
    block of candidates) run in parallel.
    """
    n_g = q.shape[1]
    n_c = out.shape[1]
    n_cb = cb.shape[0]
    lanes = _LANES  # a compile-time lane count (cb.shape[2]): the compiler keeps the chains in vector registers
    shared = base.shape[0] == 1
    n_rows = rows.shape[0]
    # each query's sums, as pair_distances makes them (the weighted mean first for PEARSON)
    mq = np.zeros(n_rows)
    sw = np.zeros(n_rows)
    sx = np.zeros(n_rows)
    qq = np.zeros(n_rows)
    ok = np.ones(n_rows, dtype=np.bool_)
    for r in prange(n_rows if kind >= 2 else 0):  # L1 and L2 use none
        i = rows[r]
        bi = base[0] if shared else base[i]
        t = target[i]
        if kind == 3:
            for g in range(n_g):
                wg = 0.0 if g == t else bi[g]
                sw[r] += wg
                mq[r] += wg * q[i, g]
            mq[r] /= sw[r]
            ok[r] = _varies_except(q[i], bi, t)
        for g in range(n_g):
            wg = 0.0 if g == t else bi[g]
            xg = q[i, g] - mq[r]
            qq[r] += wg * xg * xg
            sx[r] += wg * xg
    for task in prange(n_tasks(n_rows, rows_per_task, n_cb)):
        b, lo, n_r = task_span(task, n_rows, rows_per_task, n_cb)
        acc_s = np.zeros((n_r, lanes))
        acc_t = np.zeros((n_r, lanes))
        acc_u = np.zeros((n_r, lanes))
        block = cb[b]
        for g0 in range(0, n_g, _SEGMENT):
            g1 = min(n_g, g0 + _SEGMENT)
            for r in range(n_r):
                i = rows[lo + r]
                bi = base[0] if shared else base[i]
                t = target[i]
                m = mq[lo + r]
                s_ = acc_s[r]
                t_ = acc_t[r]
                u_ = acc_u[r]
                if kind == 0:
                    for g in range(g0, g1):
                        wg = 0.0 if g == t else bi[g]
                        xg = q[i, g] - m
                        cg = block[g]
                        for k in range(_LANES):
                            s_[k] += wg * abs(xg - cg[k])
                elif kind == 1:
                    for g in range(g0, g1):
                        wg = 0.0 if g == t else bi[g]
                        xg = q[i, g] - m
                        cg = block[g]
                        for k in range(_LANES):
                            d = xg - cg[k]
                            s_[k] += wg * d * d
                elif kind == 2:
                    for g in range(g0, g1):
                        wg = 0.0 if g == t else bi[g]
                        xg = q[i, g] - m
                        cg = block[g]
                        for k in range(_LANES):
                            y = wg * cg[k]
                            s_[k] += xg * y
                            t_[k] += y * cg[k]
                else:
                    for g in range(g0, g1):
                        wg = 0.0 if g == t else bi[g]
                        xg = q[i, g] - m
                        cg = block[g]
                        for k in range(_LANES):
                            y = wg * cg[k]
                            s_[k] += xg * y
                            t_[k] += y * cg[k]
                            u_[k] += y
        j0 = b * lanes
        for r in range(n_r):
            i = rows[lo + r]
            for k in range(min(lanes, n_c - j0)):
                v = _from_sums(kind, acc_s[r, k], qq[lo + r], acc_t[r, k], acc_u[r, k], sw[lo + r], sx[lo + r])
                if kind == 3 and not (ok[lo + r] and _varies_except(c[j0 + k], base[0] if shared else base[i], target[i])):
                    v = np.nan
                out[lo + r, j0 + k] = v


def candidate_blocks(c: np.ndarray) -> np.ndarray:
    """The candidate rows ``c`` (n, G) as the gene-major blocks that :func:`rows_blocked` reads."""
    n, n_g = c.shape
    n_b = (n + _LANES - 1) // _LANES
    padded = np.zeros((n_b * _LANES, n_g))
    padded[:n] = c
    return np.ascontiguousarray(padded.reshape(n_b, _LANES, n_g).transpose(0, 2, 1))


@kernel(parallel=True)
def l1_pivot_corrections(q: np.ndarray, y: np.ndarray, c: np.ndarray, base: np.ndarray, target: np.ndarray,
                         rows: np.ndarray, ptr: np.ndarray, genes: np.ndarray, corr: np.ndarray,
                         mag: np.ndarray) -> None:
    r"""What turns a pivot's L1 distances into the queries': ``corr[k, j]`` and its magnitude ``mag[k, j]``.

    Query ``i = rows[k]`` equals the pivot ``y`` except on ``genes[ptr[k]:ptr[k + 1]]`` (its own
    target gene, if any, among them). With base weights ``b`` (one row, or one per query) and the
    query's weights ``v`` (``b`` with the target set to 0),

    .. math:: \mathrm{corr}_{kj} = \sum_{g} v_{ig}|q_{ig} - c_{jg}| - b_{ig}|y_g - c_{jg}|, \qquad
              \mathrm{mag}_{kj} = \sum_{g} v_{ig}|q_{ig} - c_{jg}| + b_{ig}|y_g - c_{jg}| ,

    so :math:`d_{v_i}(q_i, c_j) = \sum_g b_{ig}|y_g - c_{jg}| + \mathrm{corr}_{kj}` exactly (rounding
    aside). Queries run in parallel.
    """
    shared = base.shape[0] == 1
    for k in prange(rows.shape[0]):
        i = rows[k]
        bi = base[0] if shared else base[i]
        for j in range(c.shape[0]):
            s = 0.0
            m = 0.0
            for e in range(ptr[k], ptr[k + 1]):
                g = genes[e]
                new = 0.0 if g == target[i] else bi[g] * abs(q[i, g] - c[j, g])
                old = bi[g] * abs(y[g] - c[j, g])
                s += new - old
                m += new + old
            corr[k, j] = s
            mag[k, j] = m


@kernel(parallel=True)
def pivot_deviations(q: np.ndarray, y: np.ndarray, base: np.ndarray, target: np.ndarray, max_kept: int,
                     sparse: np.ndarray, counts: np.ndarray, residual: np.ndarray) -> None:
    r"""How each query row departs from the pivot profile ``y``: genes kept and the residual.

    Row :math:`i` is ``sparse`` when it differs from :math:`y` on at most ``max_kept`` genes; it
    keeps its ``target`` gene and, when sparse, every gene where it differs (``counts[i]`` genes
    kept, listed by :func:`kept_genes`); ``residual[i]`` = :math:`\sum_g b_{ig}|q_{ig} - y_g|`
    over the other genes, in gene order (``base``: one shared weight row or one per query). Rows
    run in parallel.
    """
    shared = base.shape[0] == 1
    for i in prange(q.shape[0]):
        b = base[0] if shared else base[i]
        t = target[i]
        n_diff = 0
        for g in range(q.shape[1]):
            if q[i, g] != y[g]:
                n_diff += 1
        sparse[i] = n_diff <= max_kept
        kept = 0
        r = 0.0
        for g in range(q.shape[1]):
            if _kept(q[i, g], y[g], g, t, sparse[i]):
                kept += 1
            else:
                r += b[g] * abs(q[i, g] - y[g])
        counts[i] = kept
        residual[i] = r


@kernel
def _kept(x: float, pivot: float, g: int, t: int, sparse: bool) -> bool:
    """Whether a row keeps gene ``g``: its target, or a gene where a sparse row differs from the pivot."""
    return g == t or (sparse and x != pivot)


@kernel
def kept_genes(q: np.ndarray, y: np.ndarray, target: np.ndarray, sparse: np.ndarray, ptr: np.ndarray,
               genes: np.ndarray) -> None:
    """The genes :func:`pivot_deviations` keeps, row after row (``genes[ptr[i]:ptr[i + 1]]``, ascending)."""
    for i in range(q.shape[0]):
        e = ptr[i]
        for g in range(q.shape[1]):
            if _kept(q[i, g], y[g], g, target[i], sparse[i]):
                genes[e] = g
                e += 1


@kernel(parallel=True)
def l1_gene_subset(q: np.ndarray, ct: np.ndarray, base: np.ndarray, target: np.ndarray, ptr: np.ndarray,
                   genes: np.ndarray, out: np.ndarray) -> None:
    r"""``out[i, j]`` = :math:`\sum_{g} v_{ig}|q_{ig} - c_{jg}|` over the genes ``genes[ptr[i]:ptr[i + 1]]`` of query ``i``.

    ``ct`` holds the candidates gene-major (``ct[g, j]`` = :math:`c_{jg}`, so the candidates of one
    gene are contiguous); ``v`` is the base weight row (one shared row, or one per query) with the
    query's ``target`` gene set to 0. Each entry is one sum over its genes in the given order.
    Queries run in parallel.
    """
    shared = base.shape[0] == 1
    n_c = ct.shape[1]
    for i in prange(q.shape[0]):
        bi = base[0] if shared else base[i]
        acc = out[i]
        for j in range(n_c):
            acc[j] = 0.0
        for e in range(ptr[i], ptr[i + 1]):
            g = genes[e]
            if g == target[i]:
                continue
            w = bi[g]
            x = q[i, g]
            cg = ct[g]
            for j in range(n_c):
                acc[j] += w * abs(x - cg[j])


ORDERS = 1100  # binary exponents of the gene bounds of heavy_genes, clipped to +-ORDERS (float64: -1074..1024)


@kernel(parallel=True)
def heavy_genes(q: np.ndarray, base: np.ndarray, target: np.ndarray, reach: np.ndarray, rows: np.ndarray,
                allowance: np.ndarray, heavy: np.ndarray, rest: np.ndarray) -> None:
    r"""Split the genes of each query ``i = rows[k]`` into heavy and light by their bound on any L1 term.

    The bound of gene :math:`g` is :math:`b_{g} = v_{ig}(|q_{ig}| + \mathrm{reach}_g)` (``v`` the
    base weight row with the target at 0; ``reach`` = :math:`\max_j |c_{jg}|` makes it bound the
    term of every candidate). Genes are binned by the binary exponent of :math:`b_g` (0 in a bin
    below all others); the lowest bins whose bounds, summed in gene order within a bin and then
    bin by bin, stay at most ``allowance[k]`` are light, the others heavy (``heavy[k, g]``);
    ``rest[k]`` is that sum. Queries run in parallel.
    """
    shared = base.shape[0] == 1
    n_g = q.shape[1]
    n_bins = 2 * ORDERS + 2
    for k in prange(rows.shape[0]):
        i = rows[k]
        bi = base[0] if shared else base[i]
        mass = np.zeros(n_bins)
        bins = np.empty(n_g, dtype=np.int64)
        for g in range(n_g):
            b = 0.0 if g == target[i] else (abs(q[i, g]) + reach[g]) * bi[g]
            e = 0
            if b > 0.0:
                e = min(max(math.frexp(b)[1], -ORDERS), ORDERS) + ORDERS + 1
            bins[g] = e
            mass[e] += b
        total = 0.0
        last = -1
        for e in range(n_bins):
            more = total + mass[e]
            if not more <= allowance[k]:
                break
            total = more
            last = e
        rest[k] = total
        for g in range(n_g):
            heavy[k, g] = bins[g] > last
