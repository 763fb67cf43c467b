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

__all__ = ["mwu_block", "scatter_rows", "gather_columns"]


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
        for g in range(n_groups):
            if count[g + 1] - count[g] > 1:
                buf[count[g] : count[g + 1]].sort()
        ctrl = buf[count[control] : count[control + 1]]
        k2 = ctrl.shape[0]
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
            zeros = (n1 - k1) + (n2 - k2)
            rank_sum = (n1 - k1) * (zeros + 1.0) / 2.0
            tie = zeros * zeros * zeros - zeros + tie_ctrl
            s = 0
            while s < k1:
                e = s + 1
                while e < k1 and a[e] == a[s]:
                    e += 1
                run = float(e - s)
                below_c = np.searchsorted(ctrl, a[s], side="left")
                equal_c = 0.0
                if below_c < k2 and ctrl[below_c] == a[s]:
                    equal_c = float(np.searchsorted(ctrl, a[s], side="right") - below_c)
                rank_sum += run * (zeros + s + below_c + (run + equal_c + 1.0) / 2.0)
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
