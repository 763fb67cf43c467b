"""Numba kernels for row-wise weighted mid-ranks (Spearman correlations of deltas and LFCs)."""

from __future__ import annotations

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["weighted_midranks", "midranks_from_order"]


@kernel
def _rank_row(x: np.ndarray, order: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """Mid-ranks of one row given an ascending ``order`` (ties found by value; NaN last, each its own group)."""
    n_genes = x.shape[0]
    below = 0.0
    start = 0
    while start < n_genes:
        value = x[order[start]]
        end = start
        tie = 0.0
        while end < n_genes and x[order[end]] == value:
            tie += w[order[end]]
            end += 1
        if end == start:  # NaN: a group of one
            tie = w[order[start]]
            end = start + 1
        rank = below + tie / 2.0
        for k in range(start, end):
            out[order[k]] = rank
        below += tie
        start = end


@kernel(parallel=True)
def midranks_from_order(x: np.ndarray, order: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    r"""``out[i, g]`` = weight of row ``i``'s genes strictly below ``x[i, g]`` + half its tie group's.

    .. math:: r_{ig} = \sum_{h: x_{ih} < x_{ig}} w_h + \tfrac12 \sum_{h: x_{ih} = x_{ig}} w_h

    ``order[i]`` sorts row ``i`` ascending, NaN last (any sort: ties are found by value, so the
    order within a tie group does not matter; NaN equals nothing, so each NaN is its own group).
    ``w`` has one row (shared) or one row per row of ``x``. With unit weights this is the average
    rank minus 1/2. The sort does not depend on the weights: one ``order`` serves every weighting.
    Rows run in parallel.
    """
    shared = w.shape[0] == 1
    for i in prange(x.shape[0]):
        _rank_row(x[i], order[i], w[0] if shared else w[i], out[i])


@kernel
def weighted_midranks(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """The mid-ranks of :func:`midranks_from_order`, each row sorted here by Numba's quicksort.

    The reference for the tests: the package sorts with NumPy (faster) and shares the sort
    between weightings.
    """
    shared = w.shape[0] == 1
    for i in range(x.shape[0]):
        _rank_row(x[i], np.argsort(x[i]), w[0] if shared else w[i], out[i])
