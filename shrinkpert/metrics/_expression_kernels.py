"""Numba kernel for the row-wise correlations of the expression metrics (:mod:`shrinkpert.metrics.expression`).

One call per matrix instead of about ten NumPy passes over it: each row is read twice (weighted
means, then centred sums), its constancy checked on the way.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel
from ._distance_kernels import _varies

__all__ = ["pearson_rows"]


@kernel(parallel=True)
def pearson_rows(x: np.ndarray, y: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    r"""``out[i]``: the weighted Pearson correlation of rows ``x[i]`` and ``y[i]``.

    With weights :math:`w_g` (``w`` has one row, shared, or one row per row of ``x``),
    :math:`\bar x = \sum_g w_g x_g / \sum_g w_g` and likewise :math:`\bar y`,

    .. math:: r = \frac{\sum_g w_g (x_g - \bar x)(y_g - \bar y)}
              {\sqrt{\sum_g w_g (x_g - \bar x)^2 \, \sum_g w_g (y_g - \bar y)^2}},

    each sum divided by :math:`\sum_g w_g` as a weighted mean, clipped to [-1, 1]; NaN where
    either row takes a single value on the genes of positive weight (or there are none).
    """
    n, n_genes = x.shape
    shared = w.shape[0] == 1
    for i in prange(n):
        wi = w[0] if shared else w[i]
        xi = x[i]
        yi = y[i]
        if not (_varies(xi, wi) and _varies(yi, wi)):
            out[i] = np.nan
            continue
        sw = 0.0
        sx = 0.0
        sy = 0.0
        for g in range(n_genes):
            sw += wi[g]
            sx += wi[g] * xi[g]
            sy += wi[g] * yi[g]
        mx = sx / sw
        my = sy / sw
        cxy = 0.0
        cxx = 0.0
        cyy = 0.0
        for g in range(n_genes):
            a = xi[g] - mx
            b = yi[g] - my
            cxy += wi[g] * (a * b)
            cxx += wi[g] * (a * a)
            cyy += wi[g] * (b * b)
        r = (cxy / sw) / math.sqrt((cxx / sw) * (cyy / sw))
        if r > 1.0:
            r = 1.0
        elif r < -1.0:
            r = -1.0
        out[i] = r
