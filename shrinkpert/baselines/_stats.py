"""Welch t-tests from group summaries and Benjamini-Hochberg adjustment (private)."""

from __future__ import annotations

import numpy as np

__all__ = ["welch_p", "bh_rows"]


def welch_p(mean_a, var_a, n_a, mean_b, var_b, n_b) -> np.ndarray:
    r"""Two-sided Welch t-test p-values from means, ddof=1 variances and counts (broadcasting).

    :math:`t = (\bar a - \bar b)/\sqrt{s_a^2/n_a + s_b^2/n_b}` with Welch–Satterthwaite degrees of
    freedom; a gene with zero standard error gets p = 1 (no evidence either way). Undefined
    variances (groups of one cell) count as 0.
    """
    from scipy import stats

    n_a = np.asarray(n_a, dtype=np.float64)
    n_b = np.asarray(n_b, dtype=np.float64)
    se2_a = np.nan_to_num(np.asarray(var_a, dtype=np.float64), nan=0.0) / n_a
    se2_b = np.nan_to_num(np.asarray(var_b, dtype=np.float64), nan=0.0) / n_b
    se2 = se2_a + se2_b
    diff = np.asarray(mean_a, dtype=np.float64) - np.asarray(mean_b, dtype=np.float64)
    positive = se2 > 0
    safe = np.where(positive, se2, 1.0)
    t = np.where(positive, diff / np.sqrt(safe), 0.0)
    denom = se2_a**2 / np.maximum(n_a - 1, 1) + se2_b**2 / np.maximum(n_b - 1, 1)
    df = np.where(positive & (denom > 0), safe**2 / np.where(denom > 0, denom, 1.0), 1.0)
    return np.where(positive, 2.0 * stats.t.sf(np.abs(t), df), 1.0)


def bh_rows(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values within each row of a 2-D array."""
    p = np.asarray(p, dtype=np.float64)
    G = p.shape[1]
    order = np.argsort(p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1) * G / np.arange(1, G + 1)[None, :]
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.minimum(ranked, 1.0), axis=1)
    return out
