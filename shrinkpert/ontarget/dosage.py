r"""Dose-response: knockdown strength against downstream effect size, per guide or per bin.

:func:`dose_response` takes either

* an AnnData of counts: the dose of each guide is its shrunken knockdown depth
  :math:`1 - 2^{\tilde\beta_{kt}}` (:func:`~shrinkpert.ontarget.knockdown`) and its response the
  Euclidean norm of its shrunken effects on every gene but the target; or cells of each
  perturbation binned by their own (empirical-Bayes) knockdown instead of by guide; or
* a table with one row per guide (or bin) and dose / response columns measured elsewhere.

Per perturbation it fits a monotone (isotonic) curve and a weighted straight line, and reports
Spearman's correlation; the pooled fit shares one slope across perturbations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY, TARGET_SUM
from ..errors import InputError, MissingKeyError
from .knockdown import _frozen

__all__ = ["DoseResponse", "dose_response", "isotonic_fit"]

_LN2 = math.log(2.0)


# =========================================================================== fits


def isotonic_fit(x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None, *, increasing: bool = True) -> np.ndarray:
    r"""Weighted isotonic regression (pool-adjacent-violators) of ``y`` on ``x``.

    Returns the fitted values :math:`\hat y` in the input order: the monotone sequence
    minimising :math:`\sum_i w_i (y_i - \hat y_i)^2`. Ties in ``x`` are pooled first.

    Parameters
    ----------
    x, y : array-like of shape (n,)
        Finite values.
    weights : array-like of shape (n,), optional
        Positive weights (default 1).
    increasing : bool, default True
        Fit a non-decreasing (else non-increasing) curve.

    Raises
    ------
    InputError
        Lengths differ, values are not finite or weights are not positive.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    if not (x.shape == y.shape == w.shape) or x.ndim != 1:
        raise InputError("isotonic_fit: x, y and weights must be 1-D arrays of the same length.")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.isfinite(w))) or (w <= 0).any():
        raise InputError("isotonic_fit: x and y must be finite and weights positive.")
    if x.size == 0:
        return np.zeros(0)
    sign = 1.0 if increasing else -1.0
    order = np.argsort(x, kind="stable")
    xs, ys, ws = x[order], sign * y[order], w[order]
    # pool ties in x
    keys, start = np.unique(xs, return_index=True)
    counts = np.diff(np.append(start, len(xs)))
    wsum = np.add.reduceat(ws, start)
    ymean = np.add.reduceat(ws * ys, start) / wsum
    vals, wts, sizes = [], [], []
    for v, wt, c in zip(ymean, wsum, counts):
        vals.append(v)
        wts.append(wt)
        sizes.append(c)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            v2, w2, c2 = vals.pop(), wts.pop(), sizes.pop()
            v1, w1, c1 = vals.pop(), wts.pop(), sizes.pop()
            vals.append((w1 * v1 + w2 * v2) / (w1 + w2))
            wts.append(w1 + w2)
            sizes.append(c1 + c2)
    fitted_sorted = np.repeat(vals, sizes)
    out = np.empty_like(fitted_sorted)
    out[order] = sign * fitted_sorted
    return out


def _wls_slope(x: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray | None = None) -> tuple[float, float]:
    """Weighted least-squares slope (per-group intercepts when ``groups`` is given) and its SE."""
    if groups is None:
        groups = np.zeros(len(x), dtype=np.int64)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    wsum = np.bincount(groups, weights=w, minlength=n_groups)
    xc = x - (np.bincount(groups, weights=w * x, minlength=n_groups) / wsum)[groups]
    yc = y - (np.bincount(groups, weights=w * y, minlength=n_groups) / wsum)[groups]
    sxx = float(np.sum(w * xc**2))
    if not sxx > 0:
        return np.nan, np.nan
    slope = float(np.sum(w * xc * yc) / sxx)
    dof = len(x) - n_groups - 1
    if dof > 0:
        s2 = float(np.sum(w * (yc - slope * xc) ** 2) / dof)
        return slope, math.sqrt(s2 / sxx)
    return slope, math.sqrt(1.0 / sxx)  # weights are inverse variances: known-variance SE


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 3 or np.all(x == x[0]) or np.all(y == y[0]):
        return np.nan
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


# =========================================================================== result


@dataclass(frozen=True)
class DoseResponse:
    r"""Result of :func:`dose_response`.

    Attributes
    ----------
    units : pandas.Index
        Guides (or bins, ``"<perturbation>|bin<j>"``), one per row.
    perturbation : pandas.Index
        Perturbation of each unit.
    dose, dose_se, response, response_se : ndarray of float64
        Knockdown strength and downstream effect size per unit (NaN: unknown).
    fitted : ndarray of float64
        Isotonic (non-decreasing) fit of the response on the dose within each perturbation.
    perturbations : pandas.Index
    n_units : ndarray of int64
        Units with a finite dose and response per perturbation.
    spearman, slope, slope_se, isotonic_r2 : ndarray of float64
        Per perturbation: Spearman's :math:`\rho` (NaN below 3 units), weighted least-squares
        slope of response on dose and its SE, and the share of the response variance the
        monotone fit explains.
    pooled : mapping
        ``spearman`` over all units, ``slope``/``slope_se`` with one intercept per
        perturbation, ``within_spearman_mean`` (mean of the per-perturbation values),
        ``n_units``, ``n_perturbations``.
    params : mapping
    """

    units: pd.Index
    perturbation: pd.Index
    dose: np.ndarray
    dose_se: np.ndarray
    response: np.ndarray
    response_se: np.ndarray
    fitted: np.ndarray
    perturbations: pd.Index
    n_units: np.ndarray
    spearman: np.ndarray
    slope: np.ndarray
    slope_se: np.ndarray
    isotonic_r2: np.ndarray
    pooled: Mapping[str, float]
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        for name in ("dose", "dose_se", "response", "response_se", "fitted", "spearman", "slope",
                     "slope_se", "isotonic_r2"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "n_units", _frozen(self.n_units, np.int64))
        object.__setattr__(self, "pooled", MappingProxyType(dict(self.pooled)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row per unit: perturbation, dose, response (with SEs) and the monotone fit."""
        return pd.DataFrame(
            {
                "perturbation": self.perturbation.to_numpy(dtype=str),
                "dose": self.dose,
                "dose_se": self.dose_se,
                "response": self.response,
                "response_se": self.response_se,
                "fitted": self.fitted,
            },
            index=pd.Index(self.units.to_numpy(dtype=str), name=self.params.get("unit", "unit")),
        )

    @property
    def by_perturbation(self) -> pd.DataFrame:
        """One row per perturbation: ``n_units, spearman, slope, slope_se, isotonic_r2``."""
        return pd.DataFrame(
            {"n_units": self.n_units, "spearman": self.spearman, "slope": self.slope,
             "slope_se": self.slope_se, "isotonic_r2": self.isotonic_r2},
            index=pd.Index(self.perturbations.to_numpy(dtype=str), name="perturbation"),
        )

    def summary(self) -> pd.DataFrame:
        """The pooled fit, one row."""
        return pd.DataFrame({k: [v] for k, v in self.pooled.items()})


def _fit(units, owner, dose, dose_se, response, response_se, perturbations, params) -> DoseResponse:
    n_p = len(perturbations)
    ok = np.isfinite(dose) & np.isfinite(response)
    se_ok = np.isfinite(response_se) & (response_se > 0)
    weights = np.where(se_ok, 1.0 / np.where(se_ok, response_se, 1.0) ** 2, np.nan)
    use_w = bool(np.all(se_ok[ok])) and ok.any()
    w = np.where(use_w, weights, 1.0)
    fitted = np.full(len(dose), np.nan)
    n_units = np.zeros(n_p, dtype=np.int64)
    rho, slope, slope_se, r2 = (np.full(n_p, np.nan) for _ in range(4))
    for k in range(n_p):
        rows = np.flatnonzero((owner == k) & ok)
        n_units[k] = len(rows)
        if len(rows) == 0:
            continue
        x, y, wk = dose[rows], response[rows], w[rows]
        fitted[rows] = isotonic_fit(x, y, wk)
        if len(rows) < 2:
            continue
        rho[k] = _spearman(x, y)
        slope[k], slope_se[k] = _wls_slope(x, y, wk)
        ybar = np.sum(wk * y) / np.sum(wk)
        ss = np.sum(wk * (y - ybar) ** 2)
        r2[k] = 1 - np.sum(wk * (y - fitted[rows]) ** 2) / ss if ss > 0 else np.nan
    rows = np.flatnonzero(ok & (owner >= 0))
    pooled_slope, pooled_se = (_wls_slope(dose[rows], response[rows], w[rows], owner[rows])
                               if len(rows) >= 2 else (np.nan, np.nan))
    pooled = {
        "spearman": _spearman(dose[rows], response[rows]),
        "within_spearman_mean": float(np.nanmean(rho)) if np.isfinite(rho).any() else np.nan,
        "slope": pooled_slope,
        "slope_se": pooled_se,
        "n_units": int(len(rows)),
        "n_perturbations": int((n_units > 0).sum()),
        "weighted": use_w,
    }
    return DoseResponse(pd.Index(units, name=params.get("unit", "unit")), pd.Index(perturbations[owner], name="perturbation"),
                        dose, dose_se, response, response_se, fitted, pd.Index(perturbations, name="perturbation"),
                        n_units, rho, slope, slope_se, r2, pooled, params)


# =========================================================================== entry point


def _from_frame(frame: pd.DataFrame, perturbation_key: str, dose: str, response: str,
                guide_key: str | None, dose_se: str | None, response_se: str | None) -> DoseResponse:
    for key, what in ((perturbation_key, "perturbation_key"), (dose, "dose"), (response, "response"),
                      (guide_key, "guide_key"), (dose_se, "dose_se"), (response_se, "response_se")):
        if key is not None and key not in frame.columns:
            raise MissingKeyError(
                f"{what}={key!r} is not a column of the table; columns present: {list(frame.columns)[:20]!r}."
            )
    owner, perts = pd.factorize(frame[perturbation_key].astype(str), sort=True)
    units = (frame[guide_key].astype(str).to_numpy() if guide_key is not None
             else frame.index.astype(str).to_numpy())
    values = {}
    for name, key in (("dose", dose), ("response", response), ("dose_se", dose_se), ("response_se", response_se)):
        if key is None:
            values[name] = np.full(len(frame), np.nan)
            continue
        try:
            values[name] = pd.to_numeric(frame[key], errors="raise").to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"Column {key!r} ({name}) must be numeric: {exc}") from exc
    params = {"source": "table", "perturbation_key": perturbation_key, "dose": dose, "response": response,
              "unit": guide_key or "unit"}
    return _fit(units, owner.astype(np.int64), values["dose"], values["dose_se"], values["response"],
                values["response_se"], pd.Index(perts.astype(str)), params)


def dose_response(
    data: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    guide_key: str | None = None,
    bins: int | None = None,
    dose: str | None = None,
    response: str | None = None,
    dose_se: str | None = None,
    response_se: str | None = None,
    layer: str | None = None,
    library_size: str | np.ndarray | None = None,
    target_key: str | None = None,
    targets: Mapping[str, str] | None = None,
    perturbations: Sequence[str] | None = None,
    target_sum: float = TARGET_SUM,
    min_cells: int = MIN_CELLS,
    chunk_size: int | None = None,
) -> DoseResponse:
    r"""Relation between knockdown strength and downstream effect size, with a monotone fit.

    Parameters
    ----------
    data
        Either an AnnData / ``.h5ad`` path of raw counts, or a :class:`pandas.DataFrame` with
        one row per guide (or bin) and the columns named by ``perturbation_key``, ``dose`` and
        ``response``.
    perturbation_key
        ``obs`` column (AnnData) or table column (DataFrame) grouping the units.
    control
        Control label (AnnData only).
    guide_key
        AnnData: ``obs`` column of guides, the units (unless ``bins``). DataFrame: optional
        column of unit labels.
    bins
        AnnData only: instead of guides, split each perturbation's cells into this many
        quantile bins of their own knockdown (:class:`~shrinkpert.ontarget.CellKnockdown`
        posterior mean).
    dose, response, dose_se, response_se
        DataFrame only: column names (standard errors optional; with them the fits are
        weighted by :math:`1/\mathrm{SE}^2`).
    layer, library_size, target_key, targets, perturbations, target_sum, min_cells, chunk_size
        AnnData only: as in :func:`~shrinkpert.ontarget.knockdown`.

    Returns
    -------
    DoseResponse

    Raises
    ------
    MissingKeyError
        A named column is absent.
    InputError
        AnnData without ``guide_key`` or ``bins``, a DataFrame without ``dose``/``response``,
        or non-numeric values.

    Notes
    -----
    AnnData input. Dose of unit :math:`k` with target :math:`t`:
    :math:`D_k = 1 - 2^{\tilde\beta_{kt}}` from the shrunken target log2 fold change
    (:func:`~shrinkpert.ontarget.knockdown`; bins use the mean per-cell posterior relative
    expression, :math:`D_k = 1 - \overline{\mathrm{E}[\rho_i]}`). Response:
    :math:`Y_k = \lVert \tilde\beta_{k,-t} \rVert_2`, the norm of the unit's shrunken effects
    (log1p scale, ash per unit) on every gene but the target, with delta-method SE
    :math:`\sqrt{\sum_g \tilde\beta_{kg}^2 s_{kg}^2}/Y_k` (posterior sds :math:`s`). Units of
    unmeasured targets have no dose and are left out of the fits.

    Fits, per perturbation over units with finite dose and response: isotonic regression
    (pool-adjacent-violators, non-decreasing), weighted least squares
    :math:`Y = a + bD` (SE from the residuals when more than two units, else from the weights),
    Spearman's :math:`\rho`. Pooled: Spearman over all units and the common slope with one
    intercept per perturbation.

    Examples
    --------
    >>> import pandas as pd
    >>> from shrinkpert.ontarget import dose_response
    >>> table = pd.DataFrame({"target": ["A"] * 4 + ["B"] * 4,
    ...                       "activity": [0.1, 0.4, 0.7, 1.0] * 2,
    ...                       "effect": [0.0, 0.3, 0.5, 0.9, 0.1, 0.2, 0.2, 0.6]})
    >>> fit = dose_response(table, perturbation_key="target", dose="activity", response="effect")
    >>> fit.by_perturbation["spearman"].round(2).tolist()
    [1.0, 0.95]
    """
    if isinstance(data, pd.DataFrame):
        if dose is None or response is None:
            raise InputError("With a table, name its columns: dose_response(table, dose='<col>', response='<col>').")
        return _from_frame(data, perturbation_key, dose, response, guide_key, dose_se, response_se)
    if dose is not None or response is not None:
        raise InputError("dose= and response= name table columns; with an AnnData they are computed. Drop them.")
    if guide_key is None and bins is None:
        raise InputError("Pass guide_key=<obs column> (one unit per guide) or bins=<int> (bins of per-cell knockdown).")
    if bins is not None and int(bins) < 2:
        raise InputError(f"bins must be an integer >= 2, got {bins!r}.")
    return _from_cells(data, perturbation_key=perturbation_key, control=control, guide_key=guide_key,
                       bins=bins, layer=layer, library_size=library_size, target_key=target_key,
                       targets=targets, perturbations=perturbations, target_sum=target_sum,
                       min_cells=min_cells, chunk_size=chunk_size)


def _from_cells(adata, *, perturbation_key, control, guide_key, bins, layer, library_size, target_key, targets,
                perturbations, target_sum, min_cells, chunk_size) -> DoseResponse:
    from ..effects.estimate import estimate_effects
    from ..stats.group import group_statistics
    from .escape import _shrink_rows
    from .knockdown import _resolve, knockdown

    kd = knockdown(adata, perturbation_key=perturbation_key, control=control,
                   guide_key=guide_key if bins is None else None, layer=layer, library_size=library_size,
                   target_key=target_key, targets=targets, perturbations=perturbations, target_sum=target_sum,
                   min_cells=min_cells, chunk_size=chunk_size)
    design, obs = _resolve(adata, perturbation_key=perturbation_key, control=control,
                           guide_key=guide_key if bins is None else None, target_key=target_key,
                           targets=targets, perturbations=perturbations, layer=layer)
    n_p = len(design.perturbations)
    codes = design.codes
    labels = np.full(len(codes), None, dtype=object)
    labels[codes == n_p] = control
    if bins is None:
        table = kd.by_guide
        units = design.guides.to_numpy(dtype=str)
        owner = design.guide_perturbation
        has = design.guide_codes >= 0
        labels[has] = units[design.guide_codes[has]]
        ok = table.flag == "ok"
        pm, psd = np.asarray(table.posterior_mean), np.asarray(table.posterior_sd)
        dose_v = np.where(ok, 1 - np.exp2(pm), np.nan)
        dose_s = np.where(ok, np.exp2(pm) * _LN2 * psd, np.nan)
    else:
        rho = np.asarray(kd.by_cell.posterior_mean)
        units_l, owner_l, dose_l = [], [], []
        for k in range(n_p):
            cells = np.flatnonzero((codes == k) & np.isfinite(rho))
            if len(cells) < int(bins) * int(min_cells):
                continue
            edges = np.quantile(rho[cells], np.linspace(0, 1, int(bins) + 1))
            which = np.clip(np.searchsorted(edges[1:-1], rho[cells], side="right"), 0, int(bins) - 1)
            for j in range(int(bins)):
                members = cells[which == j]
                if len(members) == 0:
                    continue
                name = f"{design.perturbations[k]}|bin{j + 1}"
                labels[members] = name
                units_l.append(name)
                owner_l.append(k)
                dose_l.append(1 - float(np.mean(rho[members])))
        units = np.array(units_l, dtype=str)
        owner = np.array(owner_l, dtype=np.int64)
        dose_v = np.array(dose_l, dtype=np.float64)
        dose_s = np.full(len(units), np.nan)
    series = pd.Series(labels, index=obs.index, name="unit", dtype=object)
    stats = group_statistics(adata, series, layer=layer, normalize="log1p", target_sum=target_sum,
                             library_size=library_size, chunk_size=chunk_size)
    present = [u for u in units if u in set(stats.groups)]
    effects = estimate_effects(stats, control=control, scale="log1p", perturbations=present,
                               min_cells=min_cells)
    row = pd.Index(effects.perturbations).get_indexer(units)
    exclude = np.zeros(effects.effect.shape, dtype=bool)
    tgt = design.target_index[owner]
    for u, (r, t) in enumerate(zip(row, tgt)):
        if r >= 0 and t >= 0:
            exclude[r, t] = True
    pm, psd, _ = _shrink_rows(np.asarray(effects.effect), np.asarray(effects.std_error), exclude)
    pm = np.where(exclude, 0.0, pm)
    norm = np.sqrt(np.sum(pm**2, axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        norm_se = np.sqrt(np.nansum(pm**2 * np.nan_to_num(psd) ** 2, axis=1)) / norm
    resp = np.where(row >= 0, norm[np.maximum(row, 0)], np.nan)
    resp_se = np.where(row >= 0, norm_se[np.maximum(row, 0)], np.nan)
    params = {"source": "cells", "perturbation_key": perturbation_key, "control": control,
              "guide_key": guide_key, "bins": bins, "unit": "bin" if bins is not None else "guide",
              "response": "norm of shrunken log1p effects excluding the target",
              "dose": "1 - shrunken target ratio" if bins is None else "1 - mean per-cell posterior ratio"}
    return _fit(units, owner, dose_v, dose_s, resp, resp_se, design.perturbations.to_numpy(dtype=str), params)
