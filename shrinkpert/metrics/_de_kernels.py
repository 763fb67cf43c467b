"""Numba kernel that checks a given sorting order of DE calls (:class:`~shrinkpert.metrics.de.DECalls`).

One pass per row instead of a gather, a comparison matrix and a scatter of flags; the NumPy twin
is in ``tests/metrics/test_de_kernels.py``.
"""

from __future__ import annotations

import numpy as np

from .._numba import kernel

__all__ = ["sorts_rows"]


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
