"""Published evaluators' fixed settings, selected with ``evaluate(..., preset=...)``.

* ``"vcc2026"`` — cell-eval2's Virtual Cell Challenge 2026 preset: raw counts, Wilcoxon DE
  against the truth's controls, the six members (:mod:`shrinkpert.metrics.vcc2026`), each
  calibrated between the mean-response baseline :math:`b` and the replicate anchor :math:`r` as
  cell-eval2 does (:math:`(u - b)/(r - b)`, clamped as published), plus shrinkpert's percentile
  bootstrap intervals over perturbations and the anchor's seed spread. The table's
  :meth:`~shrinkpert.MetricTable.to_cell_eval2` writes cell-eval2's ``results.csv`` and
  ``agg_results.csv``.
* ``"cell-eval-v1"`` — the 2025 challenge's three members under cell-eval v1's definitions
  (already matched to ≤ 6.3e-8): ``metrics`` = :data:`~shrinkpert.metrics.VCC_METRICS`, the
  control reference, no gene weights.

A preset fixes what it fixes; passing a conflicting option (other metrics, references or weights)
raises instead of silently changing the published definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .config import EvaluationConfig
from .table import MetricTable

__all__ = ["PRESETS", "preset_options", "evaluate_vcc2026", "merge_vcc2026", "assemble_vcc2026"]

#: Presets :func:`~shrinkpert.evaluate` knows.
PRESETS = ("vcc2026", "cell-eval-v1")


def preset_options(preset: str, *, metrics: Any, weights: Any, references: Any) -> dict[str, Any]:
    """The ``metrics``/``weights``/``references`` of ``"cell-eval-v1"`` (refusing conflicting ones)."""
    from ..metrics import VCC_METRICS

    if preset not in PRESETS:
        raise InputError(f"preset must be one of {PRESETS}, got {preset!r}.")
    fixed = {"metrics": list(VCC_METRICS), "weights": None, "references": ["control"]}
    given = {"metrics": metrics, "weights": weights, "references": references}
    defaults = {"metrics": "default", "weights": "auto", "references": "auto"}
    clash = [k for k in fixed if not _same(given[k], defaults[k]) and not _same(given[k], fixed[k])]
    if clash:
        raise InputError(f"preset={preset!r} fixes {clash}; leave them at their defaults or drop the preset.")
    return fixed


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, str) or isinstance(b, str) or a is None or b is None:
        return a == b
    return isinstance(a, Sequence) and isinstance(b, Sequence) and list(a) == list(b)


def evaluate_vcc2026(pred: Any, truth: Any, *, perturbation_key: str, control: str, seed: int,
                     config: EvaluationConfig, baselines: Any = None) -> MetricTable:
    """The ``"vcc2026"`` preset as a :class:`~shrinkpert.MetricTable`.

    ``to_frame()``: one row per (perturbation, member) with ``value`` and the mean-response
    baseline's value (``baseline_mean_response``); ``summary()``: one row per member and for
    ``avg_score`` with ``mean`` (the member's aggregate :math:`u`), ``calibrated``
    (cell-eval2's score :math:`s`), ``ci_low``/``ci_high`` (bootstrap over perturbations),
    ``baseline_mean_response`` (:math:`b`), ``baseline_replicate_anchor`` (:math:`r`) and
    ``anchor_sd`` (its spread over the seeded half-splits). ``baselines`` names exploit arms
    (:mod:`shrinkpert.evaluation.exploits`; ``"default"``: all): each adds ``baseline_<arm>``
    (raw), ``calibrated_<arm>``, ``advantage_<arm>`` and ``advantage_low_<arm>`` columns (the
    arm's signed advantage over the mean-response baseline and its paired bootstrap lower bound,
    on the bootstrap draws of ``ci_low``/``ci_high``), and ``exploitable``/``exploit_arms`` mark
    the members where that bound is above 0.
    """
    from .exploits import arm_results_vcc2026, resolve_arms

    from ..metrics.vcc2026 import score_vcc2026
    from ..metrics.vcc2026_calibration import baseline_vcc2026, replicate_anchor_vcc2026

    common = dict(perturbation_key=perturbation_key, control=control, n_threads=config.n_threads)
    rows = None
    if config.shard is not None:
        from .partition import shard_rows

        n_p = len(score_perturbations(truth, perturbation_key, control))
        rows = shard_rows(n_p, config.shard)
    result = score_vcc2026(pred, truth, layer=config.layer, chunk_size=config.chunk_size, rows=rows, **common)
    baseline = baseline_vcc2026(truth, seed=seed, rows=rows, **common)
    anchor = replicate_anchor_vcc2026(truth, base_seed=seed, rows=rows, **common)
    arms, refused = arm_results_vcc2026(truth, resolve_arms(baselines), seed=seed, rows=rows, **common)
    params = {"preset": "vcc2026", "perturbation_key": perturbation_key, "control": control, "seed": seed,
              "n_boot": config.n_boot, "level": config.level}
    if rows is not None:
        return _shard_table(result, baseline, anchor, arms, refused, rows, params)
    return assemble_vcc2026(result, baseline, anchor, arms, refused, params)


def score_perturbations(truth: Any, perturbation_key: str, control: str) -> pd.Index:
    """The perturbations the preset scores (the truth's, sorted): what ``shard=`` splits."""
    from .._validate import validate

    return validate(truth, side="truth", perturbation_key=perturbation_key, control=control).perturbations


#: Per-perturbation values a shard carries (the members and the expression member's components).
_SHARD_VALUES = ("pds_cosine", "de_wilcoxon_direction_fidelity_yield_raw", "de_wilcoxon_direction_reach_raw",
                 "de_wilcoxon_sig_jaccard", "de_wilcoxon_lfc_nmae", "expr_mse_unbiased_capped",
                 "expr_distance_unbiased", "expr_mse_unbiased", "expr_real_mass_ratio")


def _shard_table(result, baseline, anchor, arms, refused, rows, params) -> MetricTable:
    """A shard's partial table: per-perturbation values of the submission, the mean-response
    baseline, the arms (``baseline_<arm>``) and the anchor's splits (``anchor_split_<i>``) for
    the shard's perturbations; its summary is empty (every pooled number needs all shards)."""
    perts = pd.Index(result.perturbations[rows].astype(str), name="perturbation")
    per = anchor.per_perturbation
    splits = sorted(per["split"].unique())
    frames = []
    for name in _SHARD_VALUES:
        frame = pd.DataFrame({"perturbation": perts, "metric": name, "weighting": "uniform", "reference": "control",
                              "value": np.asarray(result.values[name])[rows],
                              "baseline_mean_response": np.asarray(baseline.values[name])[rows],
                              **{f"baseline_{a}": np.asarray(r.values[name])[rows] for a, r in arms.items()}})
        for i in splits:
            frame[f"anchor_split_{i}"] = per.loc[per["split"] == i, name].to_numpy(dtype=np.float64)
        frames.append(frame)
    values = pd.concat(frames, ignore_index=True)
    summary = pd.DataFrame({"metric": ["avg_score"], "weighting": ["uniform"], "reference": ["control"],
                            "mean": [np.nan], "calibrated": [np.nan], "flags": ["partial"]})
    seeds = per.groupby("split")["seed"].first()
    params = {**params, "exploit_arms": list(arms), "exploit_arms_refused": dict(refused),
              "anchor_seeds": [int(seeds[i]) for i in splits]}
    return MetricTable(values, summary.set_index(["metric", "weighting", "reference"]), perts,
                       pd.Index([], name="gene"), params)


def merge_vcc2026(tables: Sequence[MetricTable], config: EvaluationConfig) -> MetricTable:
    """The whole preset run from its shards' partial tables (in shard order, checked by the caller).

    Concatenates every per-perturbation value, recomputes every aggregate
    (:func:`~shrinkpert.metrics.vcc2026.aggregate_vcc2026`), the anchor
    (:func:`~shrinkpert.metrics.vcc2026_calibration.anchor_from_values`), the calibration, the
    bootstrap (the same draws: same seed, same number of perturbations) and the exploit bounds
    — the same functions on the same numbers as an unsharded run.
    """
    from ..metrics.vcc2026 import VCC2026Result, aggregate_vcc2026
    from ..metrics.vcc2026_calibration import anchor_from_values

    frame = pd.concat([t.to_frame() for t in tables], ignore_index=True)
    perts = pd.Index([str(p) for t in tables for p in t.perturbations], name="perturbation")
    params = {k: v for k, v in tables[0].params.items() if k not in ("manifest", "exploit_arms", "anchor_seeds",
                                                                      "exploit_arms_refused")}
    arms = list(tables[0].params["exploit_arms"])

    def result(column: str) -> VCC2026Result:
        values = {name: frame.loc[frame["metric"] == name, column].to_numpy(dtype=np.float64)
                  for name in _SHARD_VALUES}
        return VCC2026Result(perturbations=perts, values=values, aggregate=aggregate_vcc2026(values), de_truth=None,
                             de_pred=None, params=params)

    seeds = tables[0].params["anchor_seeds"]
    per = pd.concat([pd.DataFrame({"split": i, "seed": seed, "perturbation": perts.astype(str),
                                   **{name: frame.loc[frame["metric"] == name, f"anchor_split_{i}"]
                                      .to_numpy(dtype=np.float64) for name in _SHARD_VALUES}})
                     for i, seed in enumerate(seeds)], ignore_index=True)
    return assemble_vcc2026(result("value"), result("baseline_mean_response"), anchor_from_values(per),
                            {a: result(f"baseline_{a}") for a in arms},
                            dict(tables[0].params["exploit_arms_refused"]),
                            {**params, "n_boot": config.n_boot, "level": config.level})


def assemble_vcc2026(result, baseline, anchor, arm_results, refused, params) -> MetricTable:
    """The preset's table from the scored pieces (module docstring; :func:`evaluate_vcc2026`)."""
    from .exploits import arm_scores_vcc2026

    from ..calibration.bootstrap import resample_indices
    from ..metrics.vcc2026 import MEMBERS
    from ..metrics.vcc2026_calibration import bootstrap_vcc2026

    seed, level = params["seed"], params["level"]
    draws = resample_indices(len(result.perturbations), max(int(params["n_boot"]), 1), seed)
    calibrated = bootstrap_vcc2026(result, baseline, anchor, level=level, indices=draws)
    arms = arm_scores_vcc2026(arm_results, refused, baseline=baseline, anchor=anchor, indices=draws, level=level)
    perts = pd.Index(result.perturbations, name="perturbation")
    rows = []
    for name in MEMBERS:
        if name not in result.values:
            continue  # aggregate-only member
        rows.append(pd.DataFrame({"perturbation": perts.astype(str), "metric": name, "weighting": "uniform",
                                  "reference": "control", "value": np.asarray(result.values[name], dtype=float),
                                  "baseline_mean_response": np.asarray(baseline.values[name], dtype=float),
                                  **{f"baseline_{a}": arms.values[a][name] for a in arms.values}}))
    values = pd.concat(rows, ignore_index=True)
    ci = calibrated.ci.set_index("metric") if calibrated.ci is not None else None
    summary = []
    for name in (*MEMBERS, "avg_score"):
        member = name != "avg_score"
        summary.append({
            "metric": name, "weighting": "uniform", "reference": "control",
            "mean": result.aggregate[name] if member else np.nan, "median": np.nan,
            "calibrated": calibrated.scores[name] if member else calibrated.avg_score,
            "ci_low": ci.loc[name, "ci_low"] if ci is not None else np.nan,
            "ci_high": ci.loc[name, "ci_high"] if ci is not None else np.nan,
            "drf": np.nan, "bds": np.nan, "flags": "",
            "negative": "mean_response", "positive": "replicate_anchor",
            "n_valid": int(np.isfinite(np.asarray(result.values.get(name, [np.nan]), dtype=float)).sum()),
            "baseline_mean_response": calibrated.baseline[name] if member else np.nan,
            "baseline_replicate_anchor": calibrated.anchor[name] if member else np.nan,
            "anchor_sd": anchor.sd[name] if member else np.nan,
            **{f"baseline_{a}": arms.raw[a][name] if member else np.nan for a in arms.raw},
            **{f"calibrated_{a}": arms.scores[a][name] if member else np.nan for a in arms.scores},
            **{f"advantage_{a}": arms.advantage[a][name] if member else np.nan for a in arms.scores},
            **{f"advantage_low_{a}": arms.advantage_low[a][name] if member else np.nan for a in arms.scores},
            "exploitable": member and any(arms.beats_baseline(a, name) for a in arms.scores),
            "exploit_arms": ",".join(a for a in arms.scores if member and arms.beats_baseline(a, name)),
        })
    table = pd.DataFrame(summary).set_index(["metric", "weighting", "reference"])
    params = {**params, "anchor_splits": len(anchor.splits),
              "avg_score": calibrated.avg_score, "exploit_arms": list(arms.scores),
              "exploit_arms_refused": dict(arms.refused)}
    return MetricTable(values, table, perts, pd.Index([], name="gene"), params,
                       extras={"vcc2026": result, "vcc2026_calibrated": calibrated, "vcc2026_arms": arms})
