"""Numba kernels of the DE calls and their ranking metrics (:mod:`shrinkpert.metrics.de`).

* :func:`sorts_rows` checks a given sorting order of :class:`~shrinkpert.metrics.de.DECalls`;
* :func:`auc_group_counts` and :func:`auc_groups` find the tie groups that :func:`~shrinkpert.metrics.de.pr_auc`
  and :func:`~shrinkpert.metrics.de.roc_auc` sum over.

Each is one pass per row instead of several gathers, cumulative sums and scatters of NumPy
temporaries; everything they return is an integer or a flag, so their NumPy twins in
``tests/metrics/test_de_kernels.py`` (the code they replaced) give the same values exactly.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["sorts_rows", "auc_group_counts", "auc_groups"]


@kernel
def sorts_rows(q: np.ndarray, order: np.ndarray) -> bool:
    """Whether each row of ``order`` (int64, shape of ``q``) is a permutation of the columns that
    sorts that row of ``q`` ascending: every position in ``[0, m)`` once, and no value smaller than
    the one before it (a NaN compares as not smaller, as in NumPy)."""
    n_rows, m = q.shape
    seen = np.zeros(m, dtype=np.bool_)
    for i in range(n_rows):
        seen[:] = False
        for k in range(m):
            j = order[i, k]
            if j < 0 or j >= m or seen[j]:
                return False
            seen[j] = True
            if k > 0 and q[i, j] < q[i, order[i, k - 1]]:
                return False
    return True


@kernel
def _floored(q, i, j, floor):
    """``max(q[i, j], floor)`` (no NaN: DE calls are finite)."""
    v = q[i, j]
    return v if v > floor else floor


@kernel(parallel=True)
def auc_group_counts(q: np.ndarray, order: np.ndarray, floor: float, counts: np.ndarray) -> None:
    """``counts[i]``: the number of distinct values of ``max(q[i], floor)`` (its tie groups)."""
    n_rows, m = q.shape
    for i in prange(n_rows):
        c = 1
        prev = _floored(q, i, order[i, 0], floor)
        for k in range(1, m):
            s = _floored(q, i, order[i, k], floor)
            if s != prev:
                c += 1
            prev = s
        counts[i] = c


@kernel(parallel=True)
def auc_groups(q: np.ndarray, order: np.ndarray, labels: np.ndarray, floor: float, offsets: np.ndarray,
               rows: np.ndarray, last: np.ndarray, start: np.ndarray, tp_end: np.ndarray, gained: np.ndarray,
               n_pos: np.ndarray) -> None:
    """The tie groups of ``max(q, floor)`` in each row's ascending ``order``, written from ``offsets[i]``
    on (:func:`auc_group_counts` per row before): the row, the sorted position of the group's last
    and first gene, the labelled genes up to its end and within it; ``n_pos[i]``, the row's labelled genes."""
    n_rows, m = q.shape
    for i in prange(n_rows):
        o = offsets[i]
        tp = 0
        before = 0
        first = 0
        s = _floored(q, i, order[i, 0], floor)
        for k in range(m):
            if labels[i, order[i, k]]:
                tp += 1
            following = _floored(q, i, order[i, k + 1], floor) if k + 1 < m else s
            if k + 1 == m or following != s:
                rows[o] = i
                last[o] = k
                start[o] = first
                tp_end[o] = tp
                gained[o] = tp - before
                before = tp
                first = k + 1
                o += 1
            s = following
        n_pos[i] = tp
