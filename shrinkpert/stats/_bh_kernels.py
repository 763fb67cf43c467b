r"""Numba kernel of the Benjamini–Hochberg step once each row's sorting order is known (:func:`~shrinkpert.stats.testing.bh_adjust`).

For a row of :math:`m` p-values and a permutation :math:`o` that sorts it ascending,

.. math::

    q_{o_k} = \min\Big(1,\ \min_{j \ge k} \frac{m\,p_{o_j}}{j + 1}\Big), \qquad k = 0, \dots, m - 1,

computed as one backward running minimum per row, with the operations of the NumPy twin in the
tests (``tests/stats/test_bh_kernel.py``): :math:`(p\,m)/(k + 1)`, then a minimum that propagates
NaN as ``np.minimum`` does (a NaN p-value, sorted last, makes its whole row NaN).
"""

from __future__ import annotations

from numba import prange

from .._numba import kernel


@kernel
def _nan_min(a, b):
    """``np.minimum(a, b)`` of two values: NaN if either is NaN."""
    if a != a or b != b:
        return a + b
    return a if a < b else b


@kernel(parallel=True)
def bh_from_order(p, order, out):
    """Fill ``out`` (rows × m) with the BH values of ``p`` given ``order``, a sorting permutation of each row."""
    n_rows, m = p.shape
    for i in prange(n_rows):
        running = 0.0
        for k in range(m - 1, -1, -1):
            j = order[i, k]
            value = p[i, j] * m / (k + 1)
            running = value if k == m - 1 else _nan_min(value, running)
            out[i, j] = _nan_min(running, 1.0)
