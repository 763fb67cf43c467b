r"""Numba kernels of the Welch standard error and degrees of freedom (:func:`~shrinkpert.stats.testing.welch`)
and of its p-values (:func:`~shrinkpert.stats.testing.welch_pvalue`).

One pass over every (row, gene) entry of broadcast inputs, each entry computed with the same
operations in the same order as the array expressions of the NumPy twin in the tests
(``tests/stats/test_welch_kernel.py``), so the values are identical:

.. math::

    \nu_a = \max(n_a - 1, 1),\quad \nu_b = \max(n_b - 1, 1),\quad
    v_a' = v_b\,(n_b / n_a) \text{ and } \nu_a' = \nu_b \text{ where } v_a < v_b\,(n_b / n_a)
    \text{ (with the floor)},

    \mathrm{SE} = \sqrt{v_a' + v_b},\qquad
    \nu = \frac{(v_a' + v_b)^2}{v_a'^2/\nu_a' + v_b^2/\nu_b} \text{ where both sums are positive, else } 1 .

NaN inputs propagate as in NumPy (a NaN comparison is false: no floor; ``max`` keeps a NaN).
"""

from __future__ import annotations

import math

from numba import prange

from .._numba import kernel
from ._t_kernels import t_tail


@kernel
def _at_least_one(x):
    """``np.maximum(x, 1)`` of one value (NaN stays NaN)."""
    return x if (x >= 1.0 or x != x) else 1.0


@kernel
def _steps(a):
    """(row step, column step) of a 2-D argument: 1 along an axis it has in full, 0 along a size-1 axis."""
    return (1 if a.shape[0] > 1 else 0), (1 if a.shape[1] > 1 else 0)


@kernel(parallel=True)
def welch_terms(v_a, n_a, v_b, n_b, floor_at_b, std_error, df, floored):
    """Fill ``std_error``, ``df`` and ``floored`` (rows × genes) from four 2-D inputs, each with one
    or all rows and one or all columns (broadcast by index: a size-1 axis is read at 0)."""
    n_rows, n_cols = std_error.shape
    # 1 where an argument has every row (column), 0 where it has one: index = i * step
    rva, cva = _steps(v_a)
    rna, cna = _steps(n_a)
    rvb, cvb = _steps(v_b)
    rnb, cnb = _steps(n_b)
    for i in prange(n_rows):
        for j in range(n_cols):
            va = v_a[i * rva, j * cva]
            na = n_a[i * rna, j * cna]
            vb = v_b[i * rvb, j * cvb]
            nb = n_b[i * rnb, j * cnb]
            df_a = _at_least_one(na - 1.0)
            df_b = _at_least_one(nb - 1.0)
            low = False
            if floor_at_b:
                floor = vb * (nb / na)
                if va < floor:
                    va = floor
                    df_a = df_b
                    low = True
            se2 = va + vb
            denom = va * va / df_a + vb * vb / df_b
            df[i, j] = se2 * se2 / denom if (se2 > 0.0 and denom > 0.0) else 1.0
            std_error[i, j] = math.sqrt(se2)
            floored[i, j] = low


@kernel(parallel=True)
def welch_p(diff, std_error, df, out):
    r"""Two-sided Welch p-values of 1-D arrays: :math:`2P(T_\nu > |d|/\mathrm{SE})`
    (:func:`~shrinkpert.stats._t_kernels.t_tail`), 1 where the SE is not positive, and 1 without
    the tail where :math:`d = 0` and :math:`\nu > 0` (there the tail is exactly 1/2)."""
    for i in prange(out.shape[0]):
        se = std_error[i]
        if se > 0.0:
            t = abs(diff[i] / se)
            out[i] = 1.0 if (t == 0.0 and df[i] > 0.0) else 2.0 * t_tail(t, df[i])
        else:
            out[i] = 1.0
