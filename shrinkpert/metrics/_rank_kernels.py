"""Numba kernel for row-wise weighted mid-ranks (Spearman correlations of deltas and LFCs)."""

from __future__ import annotations

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["weighted_midranks"]


@kernel(parallel=True)
def weighted_midranks(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    r"""``out[i, g]`` = weight of row ``i``'s genes strictly below ``x[i, g]`` + half its tie group's.

    .. math:: r_{ig} = \sum_{h: x_{ih} < x_{ig}} w_h + \tfrac12 \sum_{h: x_{ih} = x_{ig}} w_h

    ``w`` has one row (shared) or one row per row of ``x``. With unit weights this is the
    average rank minus 1/2. Ties are found by value, so the (unstable) sort order does not
    matter; NaN is never equal to anything, so each NaN is its own group. Rows run in parallel.
    """
    n_rows, n_genes = x.shape
    shared = w.shape[0] == 1
    for i in prange(n_rows):
        wi = w[0] if shared else w[i]
        order = np.argsort(x[i])
        below = 0.0
        start = 0
        while start < n_genes:
            value = x[i, order[start]]
            end = start
            tie = 0.0
            while end < n_genes and x[i, order[end]] == value:
                tie += wi[order[end]]
                end += 1
            if end == start:  # NaN: a group of one
                tie = wi[order[start]]
                end = start + 1
            rank = below + tie / 2.0
            for k in range(start, end):
                out[i, order[k]] = rank
            below += tie
            start = end
