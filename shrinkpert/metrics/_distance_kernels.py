"""Numba kernel for the perturbation × perturbation distance matrices of the rank metrics.

Distances are computed from the differences themselves (no ``|a|² + |b|² - 2ab`` shortcut), so
identical rows give bit-identical distances (ties stay ties) and a perfect prediction is at
distance exactly 0. The cost is ``n_queries × n_candidates × n_genes``; rows of the output are
independent, so ``prange`` runs over queries.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["L1", "L2", "COSINE", "PEARSON", "pairwise_distances"]

L1, L2, COSINE, PEARSON = 0, 1, 2, 3


@kernel
def _varies(x: np.ndarray, w: np.ndarray) -> bool:
    """True if ``x`` takes at least two values on genes with positive weight."""
    first = 0.0
    seen = False
    for g in range(x.shape[0]):
        if w[g] > 0.0:
            if not seen:
                first = x[g]
                seen = True
            elif x[g] != first:
                return True
    return False


@kernel(parallel=True)
def pairwise_distances(q: np.ndarray, c: np.ndarray, w: np.ndarray, kind: int, out: np.ndarray) -> None:
    """``out[i, j]`` = weighted distance between query row ``q[i]`` and candidate row ``c[j]``.

    ``w`` has one row (shared) or one row per query (the query's own gene weights). ``kind``:
    ``L1`` = sum w|q-c|; ``L2`` = sqrt(sum w (q-c)^2); ``COSINE`` = 1 - weighted cosine;
    ``PEARSON`` = 1 - weighted Pearson correlation (NaN if either row is constant). Undefined
    values (zero vectors) are NaN.
    """
    n_q, n_g = q.shape
    n_c = c.shape[0]
    shared = w.shape[0] == 1
    for i in prange(n_q):
        wi = w[0] if shared else w[i]
        qi = q[i]
        if kind == 0:
            for j in range(n_c):
                cj = c[j]
                s = 0.0
                for g in range(n_g):
                    s += wi[g] * abs(qi[g] - cj[g])
                out[i, j] = s
        elif kind == 1:
            for j in range(n_c):
                cj = c[j]
                s = 0.0
                for g in range(n_g):
                    d = qi[g] - cj[g]
                    s += wi[g] * d * d
                out[i, j] = np.sqrt(s)
        elif kind == 2:
            sqq = 0.0
            for g in range(n_g):
                sqq += wi[g] * qi[g] * qi[g]
            for j in range(n_c):
                cj = c[j]
                sqc = 0.0
                scc = 0.0
                for g in range(n_g):
                    sqc += wi[g] * qi[g] * cj[g]
                    scc += wi[g] * cj[g] * cj[g]
                cos = sqc / np.sqrt(sqq * scc)
                if cos > 1.0:
                    cos = 1.0
                elif cos < -1.0:
                    cos = -1.0
                out[i, j] = 1.0 - cos
        else:
            sw = 0.0
            mq = 0.0
            for g in range(n_g):
                sw += wi[g]
                mq += wi[g] * qi[g]
            mq /= sw
            sqq = 0.0
            for g in range(n_g):
                d = qi[g] - mq
                sqq += wi[g] * d * d
            q_varies = _varies(qi, wi)
            for j in range(n_c):
                cj = c[j]
                if not (q_varies and _varies(cj, wi)):
                    out[i, j] = np.nan
                    continue
                mc = 0.0
                for g in range(n_g):
                    mc += wi[g] * cj[g]
                mc /= sw
                sqc = 0.0
                scc = 0.0
                for g in range(n_g):
                    dc = cj[g] - mc
                    sqc += wi[g] * (qi[g] - mq) * dc
                    scc += wi[g] * dc * dc
                r = sqc / np.sqrt(sqq * scc)
                if r > 1.0:
                    r = 1.0
                elif r < -1.0:
                    r = -1.0
                out[i, j] = 1.0 - r
