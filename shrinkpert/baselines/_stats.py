"""Welch t-tests from group summaries and Benjamini-Hochberg adjustment (private)."""

from __future__ import annotations

import numpy as np

from ..effects.estimate import _floor_at_control

__all__ = ["welch_p", "welch_se_df", "bh_rows"]


def welch_se_df(var_a, n_a, var_b, n_b, *, floor_at_b: bool = False) -> tuple[np.ndarray, np.ndarray]:
    r"""Welch standard error :math:`\sqrt{s_a^2/n_a + s_b^2/n_b}` and Welch–Satterthwaite df.

    Undefined variances (groups of one cell) count as 0; df is 1 where the SE is 0. ``floor_at_b``:
    :math:`s_a^2` is never taken below :math:`s_b^2` (then with :math:`n_b - 1` degrees of freedom),
    the control variance floor of :func:`~shrinkpert.estimate_effects` that keeps small-group tests
    calibrated.
    """
    n_a = np.asarray(n_a, dtype=np.float64)
    n_b = np.asarray(n_b, dtype=np.float64)
    var_a = np.nan_to_num(np.asarray(var_a, dtype=np.float64), nan=0.0)
    var_b = np.nan_to_num(np.asarray(var_b, dtype=np.float64), nan=0.0)
    se2_a = var_a / n_a
    se2_b = var_b / n_b
    df_a = np.maximum(n_a - 1, 1)
    if floor_at_b:
        se2_a, below = _floor_at_control(se2_a, se2_b, n_a, n_b)
        df_a = np.where(below, np.maximum(n_b - 1, 1), df_a)
    se2 = se2_a + se2_b
    denom = se2_a**2 / df_a + se2_b**2 / np.maximum(n_b - 1, 1)
    df = np.where((se2 > 0) & (denom > 0), se2**2 / np.where(denom > 0, denom, 1.0), 1.0)
    return np.sqrt(se2), df


def welch_p(mean_a, var_a, n_a, mean_b, var_b, n_b, *, floor_at_b: bool = False) -> np.ndarray:
    r"""Two-sided Welch t-test p-values from means, ddof=1 variances and counts (broadcasting).

    :math:`t = (\bar a - \bar b)/\mathrm{SE}` with SE and df from :func:`welch_se_df`; a gene with
    zero standard error gets p = 1 (no evidence either way).
    """
    se, df = welch_se_df(var_a, n_a, var_b, n_b, floor_at_b=floor_at_b)
    diff = np.asarray(mean_a, dtype=np.float64) - np.asarray(mean_b, dtype=np.float64)
    positive = se > 0
    t = np.where(positive, diff / np.where(positive, se, 1.0), 0.0)
    return np.where(positive, 2.0 * _t_sf(np.abs(t), df), 1.0)


def _t_sf(t: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Student-t upper tail :math:`P(T_{df} > t)` (``scipy.special.stdtr``), in Numba's thread count.

    The incomplete beta function costs ~0.2 µs per value and releases the GIL, so equal slices of
    the values run in threads.
    """
    import numba
    from scipy import special

    t, df = np.broadcast_arrays(np.asarray(t, dtype=np.float64), np.asarray(df, dtype=np.float64))
    flat_t, flat_df = t.ravel(), df.ravel()
    n_threads = max(1, min(numba.get_num_threads(), flat_t.size // 100_000))
    if n_threads == 1:
        return special.stdtr(flat_df, -flat_t).reshape(t.shape)
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, flat_t.size, n_threads + 1).astype(np.int64)
    out = np.empty(flat_t.size)

    def part(k: int) -> None:
        lo, hi = bounds[k], bounds[k + 1]
        out[lo:hi] = special.stdtr(flat_df[lo:hi], -flat_t[lo:hi])

    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(part, range(n_threads)))
    return out.reshape(t.shape)


def bh_rows(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values within each row of a 2-D array."""
    p = np.asarray(p, dtype=np.float64)
    G = p.shape[1]
    order = np.argsort(p, axis=1)  # tied p-values get the same adjusted value in any order
    ranked = np.take_along_axis(p, order, axis=1) * G / np.arange(1, G + 1)[None, :]
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    out = np.empty_like(p)
    np.put_along_axis(out, order, np.minimum(ranked, 1.0), axis=1)
    return out
