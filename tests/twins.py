"""Plain NumPy twins of the Numba kernels (slow, obviously correct, used only in tests)."""

from __future__ import annotations

import numpy as np


def transform(X: np.ndarray, mode: str | None, target_sum: float = 1e4, lib: np.ndarray | None = None) -> np.ndarray:
    """Dense normalised matrix: as stored, x*s/L, or log1p(x*s/L); zero-total rows stay zero."""
    X = np.asarray(X, dtype=np.float64)
    if mode is None:
        return X.copy()
    total = X.sum(axis=1) if lib is None else np.asarray(lib, dtype=np.float64)
    scale = np.divide(target_sum, total, out=np.zeros_like(total), where=total > 0)
    Y = X * scale[:, None]
    return np.log1p(Y) if mode == "log1p" else Y


def group_stats(Y: np.ndarray, codes: np.ndarray, n_groups: int) -> dict[str, np.ndarray]:
    """Per-group n, sum, mean, var (ddof=1, NaN for one cell) and non-zero counts of a dense matrix."""
    n_genes = Y.shape[1]
    out = {k: np.zeros((n_groups, n_genes)) for k in ("sum", "mean", "var")}
    out["n_nonzero"] = np.zeros((n_groups, n_genes), dtype=np.int64)
    out["n_cells"] = np.zeros(n_groups, dtype=np.int64)
    for g in range(n_groups):
        rows = Y[codes == g]
        out["n_cells"][g] = rows.shape[0]
        out["sum"][g] = rows.sum(axis=0)
        out["mean"][g] = rows.mean(axis=0)
        out["var"][g] = rows.var(axis=0, ddof=1) if rows.shape[0] > 1 else np.nan
        out["n_nonzero"][g] = (rows != 0).sum(axis=0)
    return out


def welch(mean_p, var_p, n_p, mean_c, var_c, n_c):
    """Welch effect, standard error and Welch–Satterthwaite df for the log1p scale."""
    a, b = var_p / n_p, var_c / n_c
    return mean_p - mean_c, np.sqrt(a + b), (a + b) ** 2 / (a**2 / (n_p - 1) + b**2 / (n_c - 1))


def weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Row by row: weight strictly below each value plus half the weight of its tie group."""
    x = np.asarray(x, dtype=np.float64)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), x.shape)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for g in range(x.shape[1]):
            below = w[i][x[i] < x[i, g]].sum()
            tie = w[i][x[i] == x[i, g]].sum() if x[i, g] == x[i, g] else w[i, g]
            out[i, g] = below + tie / 2.0
    return out
