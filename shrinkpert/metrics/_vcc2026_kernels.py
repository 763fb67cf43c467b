"""Numba kernel: delete-one jackknife sums of group-sum log-normalised pseudobulks."""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["jackknife_block"]


@kernel(parallel=True)
def jackknife_block(indptr, indices, data, codes, lib, sums, totals, bulk, target_sum, n_parts, s1, s2):  # pragma: no cover - compiled
    r"""Accumulate the leave-one-out pseudobulk deviations of the cells of one CSR row block.

    For cell :math:`i` of group :math:`p` (gene counts :math:`y_{ig}`, total :math:`\ell_i`),
    group sums :math:`P_{pg}`, group total :math:`S_p`, :math:`r_i = S_p - \ell_i` and the
    full-group pseudobulk :math:`b_{pg} = \log(1 + T P_{pg}/S_p)`:

    .. math::
        v_{ig} = \log\Big(1 + T\,\frac{P_{pg} - y_{ig}}{r_i}\Big) - b_{pg}
        \quad(v_{ig} = -b_{pg}\ \text{when}\ r_i = 0),

    and ``s1[p, g] += v``, ``s2[p, g] += v**2``. Cells with code ``-1`` are skipped. The genes
    are split into ``n_parts`` ranges processed in parallel (every thread walks all rows).
    """
    n_rows = indptr.shape[0] - 1
    n_genes = sums.shape[1]
    step = (n_genes + n_parts - 1) // n_parts
    for part in prange(n_parts):
        g0 = part * step
        g1 = min(g0 + step, n_genes)
        if g0 >= g1:
            continue
        y = np.zeros(g1 - g0)
        for i in range(n_rows):
            p = codes[i]
            if p < 0 or totals[p] <= 0.0:
                continue
            for k in range(indptr[i], indptr[i + 1]):
                g = indices[k]
                if g0 <= g < g1:
                    y[g - g0] += data[k]
            r = totals[p] - lib[i]
            safe = r if r > 0.0 else 1.0
            for g in range(g0, g1):
                if r > 0.0:
                    v = math.log1p(target_sum * (sums[p, g] - y[g - g0]) / safe) - bulk[p, g]
                else:
                    v = -bulk[p, g]
                s1[p, g] += v
                s2[p, g] += v * v
            for k in range(indptr[i], indptr[i + 1]):
                g = indices[k]
                if g0 <= g < g1:
                    y[g - g0] = 0.0
