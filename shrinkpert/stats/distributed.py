"""Group statistics over a Dask array: the row-block kernel mapped over chunks, then a tree sum.

Each row chunk of the matrix becomes one task that runs the same Numba kernel as the in-process
pass (:func:`shrinkpert.stats._kernels.accumulate_csr`, one thread) and returns its partial
sums ``acc[g, j] = (S1, S2, count)`` plus the summed library size of each group. Partials are
added in a tree (``split_every`` at a time) and computed by whatever Dask scheduler is active:
a ``distributed.Client`` when one exists, otherwise Dask's default. Only the group × gene
accumulators travel between workers, never cells.

The partial sums are the same quantities the in-process pass accumulates per thread, so the
results are equal to it: exactly for integer counts (sums of integers in float64), and to
floating-point summation order otherwise.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ..data.lazy import require
from . import _kernels as K

__all__ = ["dask_row_pass"]

SPLIT_EVERY = 4


def _partial(values, codes, lib, shift, mode, target_sum, check_counts, n_groups):
    """Kernel on one row chunk: ``(acc (G × P × 3), library per group, flags (4,))``."""
    if not sp.issparse(values):
        values = sp.csr_matrix(np.asarray(values))
    elif values.format != "csr":
        values = values.tocsr()
    n_rows, n_genes = values.shape
    acc = np.zeros((n_groups, n_genes, 3))
    flags = np.zeros((1, 4), dtype=np.int64)
    totals = np.zeros(n_rows)
    use_lib = lib is not None
    order = np.argsort(codes, kind="stable")
    K.accumulate_csr(values.data, values.indices, values.indptr, codes, order, np.array([0, n_rows], dtype=np.int64),
                     lib if use_lib else np.zeros(0), use_lib, shift, mode, target_sum,
                     check_counts, acc, totals, flags)
    keep = codes >= 0
    library = np.bincount(codes[keep], weights=totals[keep], minlength=n_groups)
    return acc, library, flags[0]


def _combine(*parts):
    """Element-wise sum of partials (a new array; inputs are left untouched)."""
    acc = parts[0][0].copy()
    library = parts[0][1].copy()
    flags = parts[0][2].copy()
    for a, b, f in parts[1:]:
        acc += a
        library += b
        flags += f
    return acc, library, flags


def dask_row_pass(matrix, codes, n_groups, lib, shift, mode, target_sum, check_counts,
                  rows: slice | None = None, chunk_size: int | None = None, split_every: int = SPLIT_EVERY):
    """Accumulate a cells × genes Dask array by row chunk and tree-reduce.

    Parameters
    ----------
    matrix
        Dask array (dense or sparse chunks), cells × genes.
    codes
        Group code of every cell (``-1``: no group).
    lib
        Per-cell library sizes or ``None`` (row totals).
    shift
        Per-gene shift :math:`K_j` of the accumulation (see :func:`~shrinkpert.group_statistics`).
    rows
        Contiguous range of cells to read (a shard); default all.
    chunk_size
        Rows per task; default the array's own row chunks.

    Returns
    -------
    acc : ndarray, shape (n_groups, n_genes, 3)
        :math:`(S_1, S_2, \\mathrm{count})` over the non-zero values.
    library : ndarray, shape (n_groups,)
    flags : ndarray of int64, shape (4,)
    """
    dask = require("dask")
    rows = slice(0, matrix.shape[0]) if rows is None else rows
    matrix, codes = matrix[rows], np.asarray(codes[rows], dtype=np.int64)
    lib = None if lib is None else np.asarray(lib[rows], dtype=np.float64)
    if len(matrix.chunks[1]) > 1 or chunk_size is not None:
        matrix = matrix.rechunk((matrix.chunks[0] if chunk_size is None else int(chunk_size), -1))
    n_genes = matrix.shape[1]
    if matrix.shape[0] == 0:
        return np.zeros((n_groups, n_genes, 3)), np.zeros(n_groups), np.zeros(4, dtype=np.int64)
    bounds = np.cumsum((0,) + tuple(matrix.chunks[0]))
    shift_key = dask.delayed(np.asarray(shift, dtype=np.float64), pure=True)
    task = dask.delayed(_partial, pure=True)
    level = [
        task(block, codes[lo:hi], None if lib is None else lib[lo:hi], shift_key, mode, float(target_sum),
             bool(check_counts), n_groups)
        for block, lo, hi in zip(matrix.to_delayed()[:, 0], bounds[:-1], bounds[1:])
    ]
    combine = dask.delayed(_combine, pure=True)
    while len(level) > 1:
        level = [combine(*level[k : k + split_every]) for k in range(0, len(level), split_every)]
    (acc, library, flags), = dask.compute(level[0])
    return acc, library, flags
