"""Numba kernel of the target gene's standing among a row's changes (:func:`~shrinkpert.metrics.target_rank_score`).

One pass over each row instead of four NumPy passes and their rows × genes temporaries; the same
keys, comparisons and arithmetic as the array expressions (the NumPy twin in
``tests/metrics/test_target_gene.py``), so the values are identical.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["target_rank_rows"]


@kernel(parallel=True)
def target_rank_rows(p: np.ndarray, t: np.ndarray, idx: np.ndarray, out: np.ndarray) -> None:
    r"""``out[i]`` :math:`= 1 - (r_i - 1)/(G - 1)` for rows with a target (``idx[i] >= 0``; others untouched).

    With :math:`s = \mathrm{sign}(t_{i,k})` at the target :math:`k`, the key of gene :math:`g` is
    :math:`-s\,p_{ig}` (or :math:`-|p_{ig}|` when :math:`s = 0`) and :math:`r_i` = the genes with a
    key below the target's + (those with an equal key, the target included, + 1)/2: its mean rank.
    A NaN sign gives NaN keys, which compare false: :math:`r_i = 1/2`.
    """
    n_genes = p.shape[1]
    for i in prange(p.shape[0]):
        k = idx[i]
        if k < 0:
            continue
        s = np.sign(t[i, k])
        own = -abs(p[i, k]) if s == 0 else -s * p[i, k]
        below = 0
        tied = 0
        for g in range(n_genes):
            key = -abs(p[i, g]) if s == 0 else -s * p[i, g]
            below += key < own
            tied += key == own
        rank = below + (tied + 1) / 2.0
        out[i] = 1 - (rank - 1) / (n_genes - 1)
