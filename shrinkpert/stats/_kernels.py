"""Numba kernels for per-group sufficient statistics (one pass over the stored values).

Row-block kernels (dense, CSR) accumulate, per thread ``t``, group ``g`` and gene ``j``, over
the *non-zero* values ``v`` of the (optionally normalised) matrix:

    s1[t, g, j] += v - K_j,   s2[t, g, j] += (v - K_j)**2,   nnz[t, g, j] += 1

with a per-gene shift ``K_j`` (0 for raw integer counts, so sums stay exact; otherwise a pilot
mean, which keeps ``s2 - s1**2 / n`` free of cancellation). Zeros are added back when the
statistics are finalised. Threads own disjoint row ranges and write only their own slice.

The column-block kernel (CSC) sees every cell of a gene at once and uses an exact two-pass
mean / sum of squared deviations per group; ``prange`` runs over genes.

Value transform ``mode``: 0 = as stored; 1 = ``x * target_sum / total``; 2 = ``log1p`` of that.
``flags`` counts, per thread: [non-finite, negative, non-integer (when checked), zero-total rows].
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._numba import kernel

NONFINITE, NEGATIVE, NONINTEGER, ZERO_TOTAL = 0, 1, 2, 3


@kernel
def _check_value(x, check_counts, flags_row):
    if not np.isfinite(x):
        flags_row[NONFINITE] += 1
        return False
    if x < 0:
        flags_row[NEGATIVE] += 1
    if check_counts and x != np.floor(x):
        flags_row[NONINTEGER] += 1
    return True


@kernel
def _row_scale(total, mode, target_sum):
    if mode == 0:
        return 1.0
    if total > 0:
        return target_sum / total
    return 0.0


@kernel
def _transform(x, scale, mode):
    v = x * scale if mode != 0 else x * 1.0
    if mode == 2:
        v = np.log1p(v)
    return v


@kernel(parallel=True)
def accumulate_csr(data, indices, indptr, codes, lib, use_lib, shift, mode, target_sum,
                   check_counts, s1, s2, nnz, totals, flags):
    """Accumulate one CSR row block into per-thread partials ``s1, s2, nnz`` (T × G × P)."""
    n_rows = indptr.shape[0] - 1
    n_threads = s1.shape[0]
    step = (n_rows + n_threads - 1) // n_threads
    for t in prange(n_threads):
        lo = t * step
        hi = min(n_rows, lo + step)
        for i in range(lo, hi):
            total = 0.0
            if use_lib:
                total = lib[i]
            else:
                for k in range(indptr[i], indptr[i + 1]):
                    x = data[k]
                    if np.isfinite(x):
                        total += x
            totals[i] = total
            if total == 0.0:
                flags[t, ZERO_TOTAL] += 1
            g = codes[i]
            scale = _row_scale(total, mode, target_sum)
            for k in range(indptr[i], indptr[i + 1]):
                x = data[k]
                if not _check_value(x, check_counts, flags[t]):
                    continue
                if g < 0 or x == 0:
                    continue
                j = indices[k]
                d = _transform(x, scale, mode) - shift[j]
                s1[t, g, j] += d
                s2[t, g, j] += d * d
                nnz[t, g, j] += 1


@kernel(parallel=True)
def accumulate_dense(values, codes, lib, use_lib, shift, mode, target_sum, check_counts,
                     s1, s2, nnz, totals, flags):
    """Accumulate one dense row block (C order) into per-thread partials."""
    n_rows, n_genes = values.shape
    n_threads = s1.shape[0]
    step = (n_rows + n_threads - 1) // n_threads
    for t in prange(n_threads):
        lo = t * step
        hi = min(n_rows, lo + step)
        for i in range(lo, hi):
            total = 0.0
            if use_lib:
                total = lib[i]
            else:
                for j in range(n_genes):
                    x = values[i, j]
                    if np.isfinite(x):
                        total += x
            totals[i] = total
            if total == 0.0:
                flags[t, ZERO_TOTAL] += 1
            g = codes[i]
            scale = _row_scale(total, mode, target_sum)
            for j in range(n_genes):
                x = values[i, j]
                if not _check_value(x, check_counts, flags[t]):
                    continue
                if g < 0 or x == 0:
                    continue
                d = _transform(x, scale, mode) - shift[j]
                s1[t, g, j] += d
                s2[t, g, j] += d * d
                nnz[t, g, j] += 1


@kernel(parallel=True)
def accumulate_csc(data, indices, indptr, codes, scale, mode, check_counts, n_cells,
                   sums, m2, nnz, flags):
    """Exact two-pass statistics for a CSC gene block; writes columns of ``sums, m2, nnz``.

    ``scale[i]`` is cell ``i``'s normalisation factor; ``n_cells[g]`` the size of group ``g``.
    For group ``g`` with mean ``m``: ``m2 = sum_nz (v - m)**2 + (n_g - nnz_g) * m**2``.
    """
    n_cols = indptr.shape[0] - 1
    n_groups = n_cells.shape[0]
    for j in prange(n_cols):
        col_flags = np.zeros(4, dtype=np.int64)
        acc = np.zeros(n_groups, dtype=np.float64)
        cnt = np.zeros(n_groups, dtype=np.int64)
        for k in range(indptr[j], indptr[j + 1]):
            x = data[k]
            if not _check_value(x, check_counts, col_flags):
                continue
            g = codes[indices[k]]
            if g < 0 or x == 0:
                continue
            acc[g] += _transform(x, scale[indices[k]], mode)
            cnt[g] += 1
        dev = np.zeros(n_groups, dtype=np.float64)
        for k in range(indptr[j], indptr[j + 1]):
            x = data[k]
            if not np.isfinite(x):
                continue
            g = codes[indices[k]]
            if g < 0 or x == 0:
                continue
            d = _transform(x, scale[indices[k]], mode) - acc[g] / n_cells[g]
            dev[g] += d * d
        for g in range(n_groups):
            sums[g, j] = acc[g]
            nnz[g, j] = cnt[g]
            if n_cells[g] > 0:
                mean = acc[g] / n_cells[g]
                m2[g, j] = dev[g] + (n_cells[g] - cnt[g]) * mean * mean
        for f in range(4):
            flags[j, f] = col_flags[f]
