r"""``recommend_metrics(table)``: which metrics of a ``MetricTable`` to trust on this dataset, and why.

Following the structure of Metrics Reloaded (check properties of the data and of each metric,
then pick), every (metric, weighting, reference) of ``table.summary()`` passes or fails six
checks, each computed only from ``table.summary()``, ``table.to_frame()`` and ``table.params``:

1. **calibrated** — the positive control (technical duplicate) beats the negative control on at
   least ``min_bds`` of perturbations (BDS), the mean dynamic-range fraction is at least
   ``min_drf``, and the lower end of its percentile bootstrap interval over perturbations (seed,
   replicates and level of the table) is above 0;
2. **not gamed** — no adversarial baseline (``params["baselines"]`` of kind ``"adversarial"``)
   is better than the negative control beyond noise: for each one flagged
   ``adversarial_beats_negative`` / ``adversarial_wins`` in ``summary()`` (a comparison of means
   without a test), the paired per-perturbation difference (adversarial minus negative, oriented so
   that positive is better) must have a percentile bootstrap interval above 0 to fail the check. A
   flag whose interval includes 0 is reported in ``reason`` but does not fail it
   (``adversarial="test"``, the default); with ``adversarial="flag"`` any such flag fails. An
   ``adversarial_wins`` flag (better than the positive control) always fails;
3. **split-independent** — neither the reference (``perturbed_centroid``) nor the weighting
   (``deg_rest``) is learned from other perturbations (:data:`shrinkpert.weights.leakage.SPLIT_DEPENDENT`);
4. **enough perturbations** — at least ``min_perturbations`` finite values;
5. **few ties** — the positive and negative controls tie exactly on at most ``max_ties`` of
   perturbations (a coarse metric, such as a 0/1 score, cannot rank them);
6. **not saturated** — the positive control reaches the metric's best value (per-perturbation
   DRF >= 0.999; DRF's +1e-6 keeps an exact hit just below 1) on at most ``max_saturated`` of
   perturbations (no room above the duplicate).

A metric is ``recommended`` when it passes all six. Recommended metrics are ranked by the lower
bound of the DRF interval, then BDS; the rest follow in the same order. ``reason`` states every
failed check with its numbers (or, for a recommended metric, the numbers that passed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["recommend_metrics", "decision_record", "CHECKS"]

#: Names of the checks, in the order of the module docstring (columns of the result).
CHECKS = ("calibrated", "not_gamed", "split_independent", "enough_perturbations", "few_ties", "not_saturated")
_SPLIT_DEPENDENT_WEIGHTINGS = ("deg_rest",)
_KEYS = ["metric", "weighting", "reference"]
#: A per-perturbation DRF at least this means the positive control is at the best value (DRF's
#: denominator carries +1e-6, so an exact hit gives 1 - 1e-6/(best - n), not 1).
_SATURATED_DRF = 0.999


def _split_dependent() -> frozenset:
    from ..weights.leakage import SPLIT_DEPENDENT

    return SPLIT_DEPENDENT


def _drf_interval(frame: pd.DataFrame, n_boot: int, level: float, seed: int) -> pd.DataFrame:
    """Mean per-perturbation DRF and its percentile bootstrap interval per (metric, weighting, reference)."""
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    rows = {}
    for key, group in frame.groupby(_KEYS, sort=True):
        drf = group["drf"].to_numpy(dtype=np.float64) if "drf" in group else np.array([])
        drf = drf[np.isfinite(drf)]
        if drf.size == 0:
            rows[key] = (np.nan, np.nan, np.nan)
            continue
        boot = drf[rng.integers(0, drf.size, size=(n_boot, drf.size))].mean(axis=1)
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        rows[key] = (float(drf.mean()), float(lo), float(hi))
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["drf_mean", "drf_ci_low", "drf_ci_high"])
    out.index = pd.MultiIndex.from_tuples(out.index, names=_KEYS)
    return out


def _gaming(frame: pd.DataFrame, summary: pd.DataFrame, adversarial: list[str], n_boot: int, level: float,
            seed: int) -> dict:
    """Per row: [(name, mean paired advantage over the negative control, ci_low, ci_high)] of the
    adversarial baselines its flags name."""
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    out = {}
    for key, group in frame.groupby(_KEYS, sort=True):
        if key not in summary.index:
            continue
        flags = summary.loc[key, "flags"]
        flags = flags if isinstance(flags, str) else ""
        named = {n for f in flags.split(";") if f.startswith(("adversarial_beats_negative", "adversarial_wins"))
                 for n in f.split(":", 1)[1].split(",")}
        neg = f"baseline_{summary.loc[key, 'negative']}"
        sign = 1.0 if bool(summary.loc[key, "greater_is_better"]) else -1.0
        rows = []
        for name in sorted(named & set(adversarial)):
            col = f"baseline_{name}"
            if col not in group or neg not in group:
                continue
            diff = sign * (group[col].to_numpy(dtype=np.float64) - group[neg].to_numpy(dtype=np.float64))
            diff = diff[np.isfinite(diff)]
            if diff.size == 0:
                continue
            boot = diff[rng.integers(0, diff.size, size=(n_boot, diff.size))].mean(axis=1)
            lo, hi = np.quantile(boot, [alpha, 1 - alpha])
            rows.append((name, float(diff.mean()), float(lo), float(hi)))
        out[key] = rows
    return out


def _controls(frame: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Share of perturbations where positive and negative tie, and where DRF = 1 (positive at best)."""
    rows = {}
    for key, group in frame.groupby(_KEYS, sort=True):
        if key not in summary.index:
            continue
        neg, pos = summary.loc[key, "negative"], summary.loc[key, "positive"]
        n_col, p_col = f"baseline_{neg}", f"baseline_{pos}"
        tie = sat = np.nan
        if n_col in group and p_col in group:
            n, q = group[n_col].to_numpy(dtype=np.float64), group[p_col].to_numpy(dtype=np.float64)
            ok = np.isfinite(n) & np.isfinite(q)
            tie = float((n[ok] == q[ok]).mean()) if ok.any() else np.nan
        if "drf" in group:
            drf = group["drf"].to_numpy(dtype=np.float64)
            drf = drf[np.isfinite(drf)]
            sat = float((drf >= _SATURATED_DRF).mean()) if drf.size else np.nan
        rows[key] = (tie, sat)
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["tie_share", "saturated_share"])
    if len(out):
        out.index = pd.MultiIndex.from_tuples(out.index, names=_KEYS)
    return out


def recommend_metrics(
    table: Any,
    *,
    min_bds: float = 0.7,
    min_drf: float = 0.2,
    min_perturbations: int = 10,
    max_ties: float = 0.2,
    max_saturated: float = 0.5,
    adversarial: str = "test",
) -> pd.DataFrame:
    """Recommended metrics, ranked, with the reason for each decision in words and numbers.

    Parameters
    ----------
    table
        A :class:`~shrinkpert.MetricTable` computed with baselines and ``calibrate=True``
        (only ``summary()``, ``to_frame()`` and ``params`` are read).
    min_bds, min_drf, min_perturbations, max_ties, max_saturated
        Thresholds of the checks (module docstring).
    adversarial
        ``"test"`` (an adversarial baseline fails the check when it beats the negative control
        beyond its bootstrap interval) or ``"flag"`` (whenever ``summary()`` flags it).

    Returns
    -------
    pandas.DataFrame
        Indexed by (metric, weighting, reference) in ranked order; columns ``rank``,
        ``recommended`` (bool), ``reason`` (str), one bool column per check in :data:`CHECKS`,
        ``bds``, ``drf``, ``drf_ci_low``, ``drf_ci_high``, ``n_valid``, ``tie_share``,
        ``saturated_share``, ``flags`` (as in ``summary()``). ``attrs["params"]`` holds the thresholds.

    Raises
    ------
    InputError
        The table is not calibrated (no BDS/DRF: evaluated without baselines or with
        ``calibrate=False``), or a threshold is out of range.
    """
    for name, value in (("min_bds", min_bds), ("max_ties", max_ties), ("max_saturated", max_saturated)):
        if not 0 <= value <= 1:
            raise InputError(f"{name} must lie in [0, 1], got {value!r}.")
    if adversarial not in ("test", "flag"):
        raise InputError(f"adversarial must be 'test' or 'flag', got {adversarial!r}.")
    if not -1 <= min_drf <= 1:
        raise InputError(f"min_drf must lie in [-1, 1], got {min_drf!r}.")
    summary = table.summary()
    params = dict(table.params)
    if not params.get("calibrate", True) or "bds" not in summary or not np.isfinite(summary["bds"]).any():
        raise InputError("the table has no calibration (BDS/DRF); run evaluate(..., calibrate=True) with baselines.")
    frame = table.to_frame()
    n_boot, level, seed = int(params.get("n_boot", 1000)), float(params.get("level", 0.95)), params.get("seed", 0)
    out = summary[["bds", "drf", "n_valid", "flags"]].copy()
    out = out.join(_drf_interval(frame, n_boot, level, seed)).join(_controls(frame, summary))
    kinds = params.get("baselines", {}) or {}
    gaming = _gaming(frame, summary, [n for n, k in kinds.items() if k == "adversarial"], n_boot, level, seed)
    split_dep = _split_dependent()
    reasons, checks = [], {c: [] for c in CHECKS}
    for (metric, weighting, reference), row in out.iterrows():
        flags = str(row["flags"]) if isinstance(row["flags"], str) else ""
        bad, good = [], []
        bds, drf, lo, hi = row["bds"], row["drf"], row["drf_ci_low"], row["drf_ci_high"]
        ok = bool(np.isfinite(bds) and bds >= min_bds and np.isfinite(drf) and drf >= min_drf
                  and np.isfinite(lo) and lo > 0)
        text = f"BDS {bds:.2f}, DRF {drf:.2f} [{lo:.2f}, {hi:.2f}]"
        if ok:
            good.append(text)
        else:
            why = []
            if not (np.isfinite(bds) and bds >= min_bds):
                why.append(f"the technical duplicate beats the negative control on only {bds:.0%} of perturbations "
                           f"(BDS {bds:.2f} < {min_bds:.2f})")
            if not (np.isfinite(drf) and drf >= min_drf):
                why.append(f"small dynamic range (DRF {drf:.2f} < {min_drf:.2f})")
            elif not (np.isfinite(lo) and lo > 0):
                why.append(f"DRF interval [{lo:.2f}, {hi:.2f}] includes 0")
            bad.append("not calibrated: " + "; ".join(why))
        checks["calibrated"].append(ok)
        tested = gaming.get((metric, weighting, reference), [])
        gamed = [t for t in tested if t[2] > 0 or adversarial == "flag"]
        if "adversarial_wins" in flags and not gamed:
            gamed = tested or [("an adversarial baseline (adversarial_wins)", np.nan, np.nan, np.nan)]
        checks["not_gamed"].append(not gamed)
        if gamed:
            bad.append("gamed: " + ", ".join(f"{n} beats the negative control by {m:.3g} [{a:.3g}, {b:.3g}]"
                                             for n, m, a, b in gamed) + " without any information")
        elif tested:
            good.append("adversarial edge over the negative control within noise ("
                        + ", ".join(f"{n} {m:.3g} [{a:.3g}, {b:.3g}]" for n, m, a, b in tested) + ")")
        else:
            good.append("no adversarial baseline beats the negative control")
        dependent = [x for x, kind in ((reference, "reference"), (weighting, "weighting"))
                     if x in split_dep or (kind == "weighting" and x in _SPLIT_DEPENDENT_WEIGHTINGS)]
        checks["split_independent"].append(not dependent)
        if dependent:
            bad.append(f"split-dependent: {', '.join(dependent)} is learned from the other perturbations")
        n_valid = int(row["n_valid"])
        enough = n_valid >= min_perturbations and "few_perturbations" not in flags
        checks["enough_perturbations"].append(enough)
        (good if enough else bad).append(f"{n_valid} perturbations" + ("" if enough else f" (< {min_perturbations})"))
        tie, sat = row["tie_share"], row["saturated_share"]
        few_ties = not (np.isfinite(tie) and tie > max_ties)
        checks["few_ties"].append(few_ties)
        if not few_ties:
            bad.append(f"ties: the positive and negative controls score the same on {tie:.0%} of perturbations")
        not_sat = not (np.isfinite(sat) and sat > max_saturated)
        checks["not_saturated"].append(not_sat)
        if not not_sat:
            bad.append(f"saturated: the technical duplicate already scores the best value on {sat:.0%} of "
                       "perturbations")
        if not bad:
            good.append(f"ties {tie:.0%}, saturated {sat:.0%}")
        reasons.append(("recommended: " + "; ".join(good)) if not bad else ("avoid: " + "; ".join(bad)))
    for c in CHECKS:
        out[c] = np.array(checks[c], dtype=bool)
    out["recommended"] = out[list(CHECKS)].all(axis=1)
    out["reason"] = reasons
    order = out.assign(_r=~out["recommended"], _lo=-out["drf_ci_low"].fillna(-np.inf),
                       _b=-out["bds"].fillna(-np.inf)).sort_values(["_r", "_lo", "_b"], kind="stable").index
    out = out.loc[order]
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    cols = ["rank", "recommended", "reason", *CHECKS, "bds", "drf", "drf_ci_low", "drf_ci_high", "n_valid",
            "tie_share", "saturated_share", "flags"]
    out = out[cols].drop(columns=[]).copy()
    out.attrs["params"] = {"min_bds": min_bds, "min_drf": min_drf, "min_perturbations": min_perturbations,
                           "max_ties": max_ties, "max_saturated": max_saturated, "adversarial": adversarial,
                           "n_boot": n_boot, "level": level,
                           "seed": seed}
    return out


def decision_record(recommendation: pd.DataFrame, *, n: int = 5) -> str:
    """A short plain-text decision record of :func:`recommend_metrics` (for reports).

    Lists the thresholds, the top ``n`` recommended metrics and up to ``n`` metrics to avoid, each
    with its reason.
    """
    if "recommended" not in recommendation or "reason" not in recommendation:
        raise InputError("pass the DataFrame returned by recommend_metrics().")
    p = recommendation.attrs.get("params", {})
    rec = recommendation[recommendation["recommended"]]
    avoid = recommendation[~recommendation["recommended"]]

    def name(key) -> str:
        metric, weighting, reference = key
        extra = [x for x in (weighting if weighting != "uniform" else "", reference if reference != "none" else "")
                 if x]
        return metric + (f" ({', '.join(extra)})" if extra else "")

    lines = [f"Metric decision record: {len(rec)} of {len(recommendation)} metric rows recommended."]
    if p:
        lines.append(f"Checks: BDS >= {p['min_bds']}, DRF >= {p['min_drf']} with its {p['level']:.0%} interval above 0, "
                     f"no adversarial baseline better than the negative control beyond noise, split-independent, >= "
                     f"{p['min_perturbations']} perturbations, ties <= {p['max_ties']:.0%}, saturation <= "
                     f"{p['max_saturated']:.0%}.")
    lines.append("Use:" if len(rec) else "Use: none passes every check on this dataset.")
    lines += [f"  {i}. {name(k)}: {r}" for i, (k, r) in enumerate(rec["reason"].head(n).items(), 1)]
    if len(avoid):
        lines.append(f"Avoid ({len(avoid)}; first {min(n, len(avoid))}):")
        lines += [f"  - {name(k)}: {r}" for k, r in avoid["reason"].head(n).items()]
    return "\n".join(lines)
