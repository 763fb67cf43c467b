"""Numba kernels of the Wilcoxon engine: Mann–Whitney U of every group against one control
group, per gene, and the two moves of stored values it needs.

The test's input is one block of genes in compressed-column form holding only the positive
values (zeros are implicit). Zeros form one tie group at the bottom of every ranking, so a gene
costs a sort of its positive values per group plus a binary search of each perturbed value
among the control's sorted positive values; nothing proportional to the number of cells is
touched. :func:`scatter_rows` transposes row blocks into a preallocated compressed-column copy
(no second copy of the matrix); :func:`gather_columns` turns a range of those columns into the
test's input (group code and normalised value of each stored entry).
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["mwu_block", "grid_sort", "scatter_rows", "gather_columns"]


@kernel
def grid_sort(a, tmp, heads):  # pragma: no cover - compiled
    """Sort ``a`` in place: a counting sort on a uniform grid of its range, finished by insertion.

    ``tmp`` (at least ``len(a)``) and ``heads`` (at least ``len(a) + 1``) are scratch space. Values
    spread over their range sort in linear time; when one grid cell holds more than 64 values
    (values crowded next to far outliers) the quicksort of NumPy is used instead.
    """
    n = a.shape[0]
    if n < 2:
        return
    lo = a[0]
    hi = a[0]
    for i in range(1, n):
        x = a[i]
        if x < lo:
            lo = x
        elif x > hi:
            hi = x
    if hi == lo:
        return
    scale = n / (hi - lo)
    for b in range(n + 1):
        heads[b] = 0
    for i in range(n):
        b = min(int((a[i] - lo) * scale), n - 1)
        heads[b + 1] += 1
    crowded = 0
    for b in range(n):
        crowded = max(crowded, heads[b + 1])
        heads[b + 1] += heads[b]
    if crowded > 64:
        a.sort()
        return
    for i in range(n):
        x = a[i]
        b = min(int((x - lo) * scale), n - 1)
        tmp[heads[b]] = x
        heads[b] += 1
    a[0] = tmp[0]
    for i in range(1, n):  # cells are in order: only the order within a cell is left
        x = tmp[i]
        k = i - 1
        while k >= 0 and a[k] > x:
            a[k + 1] = a[k]
            k -= 1
        a[k + 1] = x


@kernel(parallel=True)
def mwu_block(indptr, codes, values, group_sizes, control, u_out, p_out):  # pragma: no cover - compiled
    r"""Rank-sum statistic and two-sided p-value of each group vs group ``control``, per gene.

    Parameters
    ----------
    indptr : int64[G_b + 1]
        Column pointers into ``codes``/``values`` (one column per gene of the block).
    codes : int32[nnz]
        Group of each stored value, in ``[0, n_groups)``; ``-1`` entries are ignored.
    values : float64[nnz]
        The stored values, all strictly positive (zeros are implicit).
    group_sizes : int64[n_groups]
        Cells per group (zeros included).
    control : int
        Code of the control group.
    u_out, p_out : float64[n_groups, G_b]
        Filled for every group except ``control`` (its row is left untouched).

    Notes
    -----
    For group :math:`A` (:math:`n_1` cells) and the control (:math:`n_2`), :math:`n = n_1 + n_2`,
    :math:`z_0` zeros in total and mid-ranks :math:`r`:

    .. math::
        U_1 = \sum_{i \in A} r_i - \tfrac{n_1(n_1+1)}{2},\quad
        \sigma^2 = \tfrac{n_1 n_2}{12}\Big(n + 1 - \tfrac{\sum_t (t^3 - t)}{n(n-1)}\Big),\quad
        p = \operatorname{erfc}\Big(\tfrac{\max(U_1, n_1 n_2 - U_1) - n_1 n_2/2 - 1/2}{\sigma\sqrt2}\Big)

    clipped to [0, 1]; the sum runs over tie groups (the zero block is one). A gene with no
    positive value, or :math:`\sigma^2 \le 0`, gets :math:`U_1 = n_1 n_2 / 2` or its value and
    :math:`p = 1`.

    Per gene, each group's positive values are sorted (:func:`grid_sort`) and each distinct
    value is located among the control's sorted values through a table of where every cell of
    a uniform grid over the control's range starts (a short scan, or a binary search in a
    crowded cell). Every rank sum and tie sum is a sum of half-integers, exact in float64, so
    the order of the work does not change the result.
    """
    n_genes = indptr.shape[0] - 1
    n_groups = group_sizes.shape[0]
    n2 = float(group_sizes[control])
    sqrt2 = math.sqrt(2.0)
    for j in prange(n_genes):
        lo = indptr[j]
        hi = indptr[j + 1]
        count = np.zeros(n_groups + 1, dtype=np.int64)
        for k in range(lo, hi):
            c = codes[k]
            if c >= 0:
                count[c + 1] += 1
        for g in range(n_groups):
            count[g + 1] += count[g]
        fill = count[:n_groups].copy()
        buf = np.empty(count[n_groups], dtype=np.float64)
        for k in range(lo, hi):
            c = codes[k]
            if c >= 0:
                buf[fill[c]] = values[k]
                fill[c] += 1
        widest = 0
        for g in range(n_groups):
            widest = max(widest, count[g + 1] - count[g])
        tmp = np.empty(widest, dtype=np.float64)
        heads = np.empty(widest + 1, dtype=np.int64)
        ctrl = buf[count[control] : count[control + 1]]
        grid_sort(ctrl, tmp, heads)
        k2 = ctrl.shape[0]
        # start[b]: first control value in grid cell b of [ctrl[0], ctrl[-1]]
        n_cells = 2 * k2 + 1
        start = np.zeros(n_cells + 1, dtype=np.int64)
        c_lo = ctrl[0] if k2 > 0 else 0.0
        c_hi = ctrl[k2 - 1] if k2 > 0 else 0.0
        c_scale = n_cells / (c_hi - c_lo) if c_hi > c_lo else 0.0
        for i in range(k2):
            start[min(int((ctrl[i] - c_lo) * c_scale), n_cells - 1) + 1] += 1
        for b in range(n_cells):
            start[b + 1] += start[b]
        tie_ctrl = 0.0
        s = 0
        while s < k2:
            e = s + 1
            while e < k2 and ctrl[e] == ctrl[s]:
                e += 1
            t = float(e - s)
            tie_ctrl += t * t * t - t
            s = e
        for g in range(n_groups):
            if g == control:
                continue
            n1 = float(group_sizes[g])
            a = buf[count[g] : count[g + 1]]
            k1 = a.shape[0]
            n = n1 + n2
            if k1 + k2 == 0 or n1 == 0.0 or n2 == 0.0:
                u_out[g, j] = n1 * n2 / 2.0
                p_out[g, j] = 1.0 if n1 > 0.0 and n2 > 0.0 else np.nan
                continue
            grid_sort(a, tmp, heads)
            zeros = (n1 - k1) + (n2 - k2)
            rank_sum = (n1 - k1) * (zeros + 1.0) / 2.0
            tie = zeros * zeros * zeros - zeros + tie_ctrl
            s = 0
            while s < k1:
                x = a[s]
                e = s + 1
                while e < k1 and a[e] == x:
                    e += 1
                run = float(e - s)
                if k2 == 0 or x < c_lo:
                    below = 0
                elif x > c_hi:
                    below = k2
                else:
                    b = min(int((x - c_lo) * c_scale), n_cells - 1)
                    i0 = start[b]
                    i1 = start[b + 1]
                    if i1 - i0 > 16:
                        below = i0 + np.searchsorted(ctrl[i0:i1], x, side="left")
                    else:
                        while i0 < i1 and ctrl[i0] < x:
                            i0 += 1
                        below = i0
                equal_c = 0.0
                if below < k2 and ctrl[below] == x:
                    e2 = below + 1
                    while e2 < k2 and ctrl[e2] == x:
                        e2 += 1
                    equal_c = float(e2 - below)
                rank_sum += run * (zeros + s + below + (run + equal_c + 1.0) / 2.0)
                t = run + equal_c
                tie += (t * t * t - t) - (equal_c * equal_c * equal_c - equal_c)
                s = e
            u1 = rank_sum - n1 * (n1 + 1.0) / 2.0
            u_out[g, j] = u1
            var = n1 * n2 / 12.0 * ((n + 1.0) - tie / (n * (n - 1.0)))
            if var <= 0.0:
                p_out[g, j] = 1.0
                continue
            u = max(u1, n1 * n2 - u1)
            z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(var)
            p = math.erfc(z / sqrt2)
            p_out[g, j] = min(max(p, 0.0), 1.0)


@kernel
def scatter_rows(indptr, indices, data, row0, keep, fill, out_rows, out_values):  # pragma: no cover - compiled
    """Append the kept rows of one CSR row block to a compressed-column copy.

    Row ``i`` of the block is row ``row0 + i`` of the matrix; it is copied when ``keep[row0 + i]``.
    Entry ``(r, j, v)`` goes to position ``fill[j]`` of ``out_rows``/``out_values`` (``r``, ``v``)
    and ``fill[j]`` advances, so blocks scattered in row order leave every column sorted by row.
    ``fill`` starts as the copy's column pointers (without the last).
    """
    n_rows = indptr.shape[0] - 1
    for i in range(n_rows):
        r = row0 + i
        if not keep[r]:
            continue
        for k in range(indptr[i], indptr[i + 1]):
            j = indices[k]
            pos = fill[j]
            out_rows[pos] = r
            out_values[pos] = data[k]
            fill[j] = pos + 1


@kernel(parallel=True)
def gather_columns(indptr, rows, values, divisor, row_codes, g0, start, out_codes, out_values, sums):  # pragma: no cover - compiled
    r"""Group code and normalised value of every stored entry of columns ``g0 .. g0 + len(start)``.

    For column ``g0 + j``, its entries ``k`` (row :math:`r_k`, value :math:`c_k`) go, in order, to
    positions ``start[j], start[j] + 1, ...`` of ``out_codes``/``out_values``: the code
    ``row_codes[r]`` and :math:`c_k / d_{r}` (``divisor``), or code ``-1`` when the row has no group
    or the value is 0. ``sums[code, g0 + j]`` accumulates the normalised values in entry order.
    """
    for j in prange(start.shape[0]):
        g = g0 + j
        pos = start[j]
        for k in range(indptr[g], indptr[g + 1]):
            r = rows[k]
            c = row_codes[r]
            v = float(values[k])
            if c >= 0 and v != 0.0:
                x = v / divisor[r]
                out_codes[pos] = c
                out_values[pos] = x
                sums[c, g] += x
            else:
                out_codes[pos] = -1
                out_values[pos] = 0.0
            pos += 1
