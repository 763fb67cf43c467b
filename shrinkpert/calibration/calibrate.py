r"""Calibration of a metric between a negative and a positive control.

For one metric and perturbation :math:`p`, let :math:`s_p` be the model's value,
:math:`n_p` the negative control's (mean or control baseline) and :math:`q_p` the positive
control's (technical or interpolated duplicate); ``best`` is the value of a perfect prediction.

* **Dynamic range fraction** (Mejia/Miller et al.), per perturbation, clipped to [−1, 1]:

  .. math::
     \mathrm{DRF}_p = \frac{q_p - n_p}{\mathrm{best} - n_p + \epsilon}\ \text{(higher is better)},\qquad
     \mathrm{DRF}_p = \frac{n_p - q_p}{n_p - \mathrm{best} + \epsilon}\ \text{(lower is better)},

  :math:`\epsilon = 10^{-6}`: the share of the room between the negative control and a perfect
  score that the positive control covers. Summarised by its mean (and median).
* **Bound discrimination score** (Vollenweider et al. 2026, scPertEval): the share of
  perturbations (with both values finite) where the positive control is strictly better than
  the negative one. 0.5 ≈ the metric cannot tell them apart.
* **Calibrated score**: per perturbation :math:`c_p = (s_p - n_p)/(q_p - n_p)`; summary
  :math:`c = (\bar s - \bar n)/(\bar q - \bar n)` over perturbations with all three values finite
  (a ratio of means, stable where single :math:`q_p - n_p` are near 0). :math:`c = 0` at the
  negative control and :math:`c = 1` at the positive control, exactly; :math:`c > 1` beats the
  positive control.

Every summary carries a seeded percentile bootstrap interval over perturbations
(:func:`~shrinkpert.calibration.bootstrap_ci`); all statistics of one call share the same draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .bootstrap import bootstrap_ci, resample_indices

__all__ = [
    "dynamic_range_fraction",
    "bound_discrimination_score",
    "calibrated_score",
    "Calibration",
    "calibrate",
]

EPS = 1e-6


def _vec(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one value per perturbation (1-D), got shape {arr.shape}.")
    return arr


def _check(*pairs: tuple[Any, str]) -> list[np.ndarray]:
    out = [_vec(x, n) for x, n in pairs]
    if len({a.shape for a in out}) != 1:
        raise InputError(f"{', '.join(n for _, n in pairs)} must have the same length; got "
                         f"{[a.shape[0] for a in out]}.")
    return out


def dynamic_range_fraction(negative: Any, positive: Any, *, greater_is_better: bool, best: float,
                           eps: float = EPS) -> np.ndarray:
    """Per-perturbation DRF of the positive over the negative control, clipped to [-1, 1] (module formula)."""
    n, q = _check((negative, "negative"), (positive, "positive"))
    with np.errstate(divide="ignore", invalid="ignore"):
        if greater_is_better:
            drf = (q - n) / (best - n + eps)
        else:
            drf = (n - q) / (n - best + eps)
    return np.clip(drf, -1.0, 1.0)


def _bds(n: np.ndarray, q: np.ndarray, greater_is_better: bool) -> float | np.ndarray:
    """BDS along the last axis (a float for 1-D input, one value per row for bootstrap stacks)."""
    ok = np.isfinite(n) & np.isfinite(q)
    with np.errstate(invalid="ignore"):
        better = (q > n) if greater_is_better else (q < n)
    return _masked_mean(better.astype(np.float64), ok)


def bound_discrimination_score(negative: Any, positive: Any, *, greater_is_better: bool) -> float:
    """Share of perturbations where the positive control is strictly better than the negative one."""
    n, q = _check((negative, "negative"), (positive, "positive"))
    return _bds(n, q, greater_is_better)


def calibrated_score(value: Any, negative: Any, positive: Any) -> np.ndarray:
    r"""Per-perturbation :math:`(s_p - n_p)/(q_p - n_p)`; NaN where :math:`q_p = n_p`."""
    s, n, q = _check((value, "value"), (negative, "negative"), (positive, "positive"))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(q != n, (s - n) / (q - n), np.nan)


def _masked_mean(x: np.ndarray, ok: np.ndarray) -> float | np.ndarray:
    """Mean of ``x`` where ``ok`` along the last axis; NaN where nothing is ok."""
    count = ok.sum(axis=-1)
    total = np.where(ok, x, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return float(out) if out.ndim == 0 else out


def _ratio_of_means(s: np.ndarray, n: np.ndarray, q: np.ndarray) -> float | np.ndarray:
    """:math:`(\bar s - \bar n)/(\bar q - \bar n)` over perturbations where all three are finite."""
    ok = np.isfinite(s) & np.isfinite(n) & np.isfinite(q)
    num = np.asarray(_masked_mean(s, ok) - _masked_mean(n, ok))
    den = np.asarray(_masked_mean(q, ok) - _masked_mean(n, ok))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den != 0, num / np.where(den != 0, den, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def _finite_mean(x: np.ndarray) -> float | np.ndarray:
    return _masked_mean(x, np.isfinite(x))


@dataclass(frozen=True)
class Calibration:
    """Calibration of one metric's values against a negative and a positive control.

    Attributes
    ----------
    perturbations : pandas.Index
    value, negative, positive : ndarray, shape (n_perturbations,)
        The model's and the controls' per-perturbation values.
    calibrated_per_perturbation, drf_per_perturbation : ndarray, shape (n_perturbations,)
    calibrated, ci_low, ci_high : float
        Summary calibrated score (ratio of means) and its bootstrap interval.
    drf, drf_median, drf_ci_low, drf_ci_high : float
        Mean and median DRF, interval of the mean.
    bds, bds_ci_low, bds_ci_high : float
    n_valid : int
        Perturbations with all three values finite.
    params : mapping
        ``greater_is_better``, ``best``, ``n_boot``, ``level``, ``seed``, ``negative_name``, ``positive_name``.
    """

    perturbations: pd.Index
    value: np.ndarray
    negative: np.ndarray
    positive: np.ndarray
    calibrated_per_perturbation: np.ndarray
    drf_per_perturbation: np.ndarray
    calibrated: float
    ci_low: float
    ci_high: float
    drf: float
    drf_median: float
    drf_ci_low: float
    drf_ci_high: float
    bds: float
    bds_ci_low: float
    bds_ci_high: float
    n_valid: int
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("value", "negative", "positive", "calibrated_per_perturbation", "drf_per_perturbation"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row per perturbation: value, negative, positive, calibrated, drf."""
        return pd.DataFrame({
            "perturbation": self.perturbations,
            "value": self.value,
            "negative": self.negative,
            "positive": self.positive,
            "calibrated": self.calibrated_per_perturbation,
            "drf": self.drf_per_perturbation,
        })

    def summary(self) -> pd.Series:
        """The summary statistics as one Series."""
        keys = ("calibrated", "ci_low", "ci_high", "drf", "drf_median", "drf_ci_low", "drf_ci_high", "bds",
                "bds_ci_low", "bds_ci_high", "n_valid")
        return pd.Series({k: getattr(self, k) for k in keys})


def calibrate(
    value: Any,
    negative: Any,
    positive: Any,
    *,
    greater_is_better: bool,
    best: float,
    perturbations: Any = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
    eps: float = EPS,
    negative_name: str = "negative",
    positive_name: str = "positive",
    indices: np.ndarray | None = None,
) -> Calibration:
    """Calibrated score, DRF and BDS of one metric, with seeded bootstrap intervals.

    Parameters
    ----------
    value, negative, positive : array-like of shape (n_perturbations,)
        Per-perturbation metric values of the model and the two controls (NaN = undefined).
    greater_is_better, best
        Direction and perfect value of the metric (``MetricSpec.greater_is_better``/``best``).
    perturbations
        Labels (default ``0..P-1``).
    n_boot, level, seed
        Bootstrap replicates, interval coverage, seed (the same seed gives the same intervals).
    eps
        :math:`\\epsilon` of the DRF.
    negative_name, positive_name
        Recorded in ``params``.
    indices : ndarray of shape (n_boot, n_perturbations), optional
        Precomputed ``resample_indices(n_perturbations, n_boot, seed)``, drawn once for several
        metrics; ``n_boot`` and ``seed`` must be the ones they were drawn with.

    Returns
    -------
    Calibration
    """
    s, n, q = _check((value, "value"), (negative, "negative"), (positive, "positive"))
    labels = pd.Index(range(len(s)) if perturbations is None else list(perturbations), name="perturbation")
    if len(labels) != len(s):
        raise InputError(f"perturbations has {len(labels)} labels for {len(s)} values.")
    drf = dynamic_range_fraction(n, q, greater_is_better=greater_is_better, best=best, eps=eps)
    per = calibrated_score(s, n, q)
    ok = np.isfinite(s) & np.isfinite(n) & np.isfinite(q)
    idx = resample_indices(len(s), n_boot, seed) if indices is None else np.asarray(indices)
    if idx.shape != (int(n_boot), len(s)):
        raise InputError(f"indices has shape {idx.shape}; expected ({int(n_boot)}, {len(s)}), i.e. "
                         "(n_boot, perturbations).")
    ci = bootstrap_ci(_ratio_of_means, [s, n, q], level=level, indices=idx, vectorized=True)
    drf_ci = bootstrap_ci(_finite_mean, [drf], level=level, indices=idx, vectorized=True)
    bds_ci = bootstrap_ci(lambda a, b: _bds(a, b, greater_is_better), [n, q], level=level, indices=idx,
                          vectorized=True)
    finite_drf = drf[np.isfinite(drf)]
    return Calibration(
        perturbations=labels, value=s, negative=n, positive=q,
        calibrated_per_perturbation=per, drf_per_perturbation=drf,
        calibrated=_ratio_of_means(s, n, q), ci_low=ci[0], ci_high=ci[1],
        drf=_finite_mean(drf), drf_median=float(np.median(finite_drf)) if finite_drf.size else float("nan"),
        drf_ci_low=drf_ci[0], drf_ci_high=drf_ci[1],
        bds=_bds(n, q, greater_is_better), bds_ci_low=bds_ci[0], bds_ci_high=bds_ci[1],
        n_valid=int(ok.sum()),
        params={"greater_is_better": greater_is_better, "best": float(best), "n_boot": int(n_boot),
                "level": level, "seed": seed if isinstance(seed, int) else "Generator", "eps": eps,
                "negative_name": negative_name, "positive_name": positive_name},
    )
