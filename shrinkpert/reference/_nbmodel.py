"""Negative-binomial moments for per-gene tables (private; used by ``PopulationReference.from_table``)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def nb_log1p_moments(mu: np.ndarray, phi: np.ndarray, c: float, *, budget: int = 1 << 22) -> tuple[np.ndarray, np.ndarray]:
    """Exact E and Var of ``log1p(c y)`` for y ~ NB(mean mu, dispersion phi) (Poisson when phi = 0).

    The pmf is summed from 0 to its upper ``1e-18`` tail quantile (renormalised), genes batched so
    that a batch's grid holds at most ``budget`` values.
    """
    from scipy import stats

    mean, var = np.full(mu.shape, np.nan), np.full(mu.shape, np.nan)
    ok = np.isfinite(mu) & np.isfinite(phi) & (mu >= 0) & (phi >= 0)
    zero = ok & (mu == 0)
    mean[zero], var[zero] = 0.0, 0.0
    todo = np.flatnonzero(ok & (mu > 0))
    if not len(todo):
        return mean, var
    m, f = mu[todo], phi[todo]
    size = np.where(f > 0, 1.0 / np.where(f > 0, f, 1.0), np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        prob = size / (size + m)
        top = np.where(f > 0, stats.nbinom.isf(1e-18, np.where(f > 0, size, 1.0), prob),
                       stats.poisson.isf(1e-16, m) + 10.0 * np.sqrt(m) + 20.0)  # Poisson isf fails below 1e-16
    fallback = m + 50.0 * np.sqrt(m + f * m * m) + 100.0
    top = np.minimum(np.where(np.isfinite(top), top, fallback), 1e7).astype(np.int64) + 1
    order = np.argsort(top, kind="stable")
    start = 0
    while start < len(order):
        stop = start + 1
        while stop < len(order) and (stop + 1 - start) * top[order[stop]] <= budget:
            stop += 1
        idx = order[start:stop]
        y = np.arange(top[idx].max(), dtype=np.float64)[None, :]
        mm, ff, ss = m[idx][:, None], f[idx][:, None], size[idx][:, None]
        # log pmf by its exact recursion, p(y+1)/p(y) = (y+s)/(y+1) * mu/(s+mu) (Poisson: mu/(y+1)),
        # summed in log space: no gammaln cancellation for small s, no underflow of p(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            step = np.where(ff > 0, np.log1p((ss - 1.0) / (y + 1.0)) - np.log1p(ss / mm), np.log(mm) - np.log(y + 1.0))
            log_p0 = np.where(ff > 0, -ss * np.log1p(mm / ss), -mm)
        logp = log_p0 + np.concatenate([np.zeros((len(idx), 1)), np.cumsum(step[:, :-1], axis=1)], axis=1)
        logp = np.where(y < top[idx][:, None], logp, -np.inf)
        p = np.exp(logp - logp.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        x = np.log1p(c * y)
        e = (p * x).sum(axis=1)
        mean[todo[idx]] = e
        var[todo[idx]] = (p * (x - e[:, None]) ** 2).sum(axis=1)
        start = stop
    return mean, var


def derive_from_nb(stats: dict, umi_per_cell: float, target_sum: float, scale: str | None) -> list[str]:
    """Fill missing statistics from relative expression and dispersion under a NB model."""
    r, phi = stats["relative_expression"], stats["dispersion"]
    if not (np.isfinite(r).any() and np.isfinite(phi).any()):
        raise InputError("umi_per_cell needs the table to give relative_expression and a dispersion (or size).")
    mu = r * umi_per_cell
    derived = []
    model = {
        "mean": mu,
        "var": mu + phi * mu**2,
        "detection": -np.expm1(np.where(phi > 0, -np.log1p(phi * mu) / np.where(phi > 0, phi, 1.0), -mu)),
    }
    if scale is not None:
        c = target_sum / umi_per_cell
        if scale == "log1p":
            model["expression_mean"], model["expression_var"] = nb_log1p_moments(mu, phi, c)
        else:
            model["expression_mean"], model["expression_var"] = c * mu, c * c * (mu + phi * mu**2)
    for field, values in model.items():
        if not np.isfinite(stats[field]).any():
            stats[field] = values
            derived.append(field)
    return derived
