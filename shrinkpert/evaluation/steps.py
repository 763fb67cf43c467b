r"""The steps of :func:`~shrinkpert.evaluate`, each a function with its own result.

``read_inputs → summarise → make_sides → score → tabulate``:

1. :func:`read_inputs` validates and encodes both inputs at the boundary
   (:func:`shrinkpert._validate.validate`) and checks that they pair: same genes (any order),
   same perturbations (the control and ``exclude`` labels left out), same scale.
2. :func:`summarise` streams each file once: the truth's full and split-half pseudobulks
   (:func:`~shrinkpert.baselines.summarize_truth`, escapers left out when asked) and the
   prediction's pseudobulk (:func:`~shrinkpert.group_statistics`), aligned to the truth.
3. :func:`make_sides` adds the baselines (:mod:`shrinkpert.baselines`) beside the model: every
   *side* is a pseudobulk prediction with the variance and cell count its DE test uses.
4. :func:`score` computes every (metric, reference, weighting) for every side.
5. :func:`tabulate` calibrates each metric between its negative and positive control and builds
   the :class:`~shrinkpert.MetricTable`.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import freeze
from .._validate import CellData, check_excluded, validate
from ..errors import GeneMismatchError, InputError, MissingKeyError
from ..metrics import METRICS, DECalls, MetricSpec
from ..metrics.shared import SharedIntermediates
from .cells import distribution_values, sample_plan
from .config import EvaluationConfig
from .table import MetricTable

__all__ = ["EvaluationInputs", "Summaries", "Side", "Scores", "read_inputs", "summarise", "make_sides", "score",
           "tabulate", "REFERENCES", "DEFAULT_REFERENCES", "MODEL"]

#: Delta references a metric can be computed under.
REFERENCES = ("control", "perturbed_centroid")
#: References of delta metrics computed by default.
DEFAULT_REFERENCES: tuple[str, ...] = ("control", "perturbed_centroid")
#: Name of the scored prediction among the sides.
MODEL = "model"
_DE_DESCRIPTION = {"test": "Welch t-test vs observed control (control variance floor), BH per perturbation",
                   "lfsr": "ash local false sign rate of the same effects and standard errors"}


# =========================================================================== 1. read


@dataclass(frozen=True)
class EvaluationInputs:
    """Both inputs, validated and paired (the result of :func:`read_inputs`).

    Attributes
    ----------
    pred, truth : CellData
        The encoded inputs.
    perturbations, genes : pandas.Index
        Scored perturbations (sorted) and genes (the truth's order).
    scale : {"counts", "log1p"}
        The common scale.
    target_index : ndarray of int64
        Column of each perturbation's target gene, -1 when not measured (read-only).
    """

    pred: CellData
    truth: CellData
    perturbations: pd.Index
    genes: pd.Index
    scale: str
    target_index: np.ndarray


def read_inputs(pred: Any, truth: Any, *, perturbation_key: str, control: str, exclude: Sequence[str] | None,
                config: EvaluationConfig) -> EvaluationInputs:
    """Step 1: validate both inputs once and check that they pair (see the module docstring).

    Raises
    ------
    GeneMismatchError
        The gene sets differ (both differences are listed).
    InputError
        The perturbations or scales differ (the message says which side lacks what and how to fix it).
    MissingKeyError
        A column, the control (in the truth) or an ``exclude`` label is absent.
    """
    scale = config.scale
    t = validate(truth, side="truth", perturbation_key=perturbation_key, control=control, layer=config.layer,
                 exclude=exclude, scale=scale)
    p = validate(pred, side="pred", perturbation_key=perturbation_key, control=control, layer=config.layer,
                 exclude=exclude, scale=scale, require_control=False)
    check_excluded(exclude, t, p)
    if not p.genes.equals(t.genes):
        missing, extra = t.genes.difference(p.genes), p.genes.difference(t.genes)
        if len(missing) or len(extra):
            raise GeneMismatchError(
                f"pred and truth have different genes: {len(missing)} truth genes missing from pred "
                f"(e.g. {missing[:10].tolist()}), {len(extra)} pred genes not in truth (e.g. {extra[:10].tolist()}). "
                "Subset both to the same genes (order may differ)."
            )
    if not p.perturbations.equals(t.perturbations):
        lacking, unknown = t.perturbations.difference(p.perturbations), p.perturbations.difference(t.perturbations)
        raise InputError(
            f"pred and truth have different perturbations: missing from pred {lacking[:10].tolist()}, not in truth "
            f"{unknown[:10].tolist()}. Predict every true perturbation, or leave labels out of both sides with "
            f"exclude=[...] (the control label is {control!r})."
        )
    if p.scale != t.scale:
        raise InputError(
            f"pred looks like {p.scale} but truth like {t.scale}; put both on one scale (counts, or natural log1p "
            "of counts per target_sum) or pass scale= explicitly."
        )
    targets = dict(config.targets) if config.targets is not None else {}
    names = [targets.get(q, q) for q in t.perturbations]
    tindex = freeze(np.array([t.genes.get_loc(g) if g in t.genes else -1 for g in names], dtype=np.int64))
    return EvaluationInputs(p, t, t.perturbations, t.genes, t.scale, tindex)


# =========================================================================== 2. summarise


@dataclass(frozen=True)
class Summaries:
    """Pseudobulks of both sides (the result of :func:`summarise`).

    Attributes
    ----------
    truth : TruthSummary
        Full and split-half pseudobulks of the true cells and the observed control.
    pred_mean, pred_var : ndarray, shape (n_perturbations, n_genes)
        The prediction's means and ddof=1 variances, aligned to the truth.
    pred_n : ndarray of int64
        Predicted cells per perturbation.
    truth_cells_excluded : int
        True cells left out as escapers (``truth_cells="perturbed"``).
    """

    truth: Any
    pred_mean: np.ndarray
    pred_var: np.ndarray
    pred_n: np.ndarray
    truth_cells_excluded: int


def summarise(inputs: EvaluationInputs, *, config: EvaluationConfig, seed: int, escape: Any = None) -> Summaries:
    """Step 2: one streaming pass over each input (see the module docstring)."""
    from ..baselines import summarize_truth
    from ..stats.group import group_statistics

    exclude = _escape_exclusions(inputs.truth, escape, config.truth_cells, config.escape_threshold)
    stream = dict(target_sum=config.target_sum, chunk_size=config.chunk_size, n_threads=config.n_threads,
                  progress=config.progress)
    truth = summarize_truth(inputs.truth, perturbation_key=inputs.truth.perturbation_key,
                            control=inputs.truth.control, scale=inputs.scale, seed=seed, exclude=exclude, **stream)
    pstats = group_statistics(inputs.pred, inputs.pred.labels(), normalize=None if inputs.scale == "log1p" else "log1p",
                              **stream)
    prow = pd.Index(pstats.groups.astype(str)).get_indexer(inputs.perturbations)
    pcol = pd.Index(pstats.genes.astype(str)).get_indexer(inputs.genes)
    return Summaries(truth=truth, pred_mean=freeze(np.asarray(pstats.mean)[np.ix_(prow, pcol)]),
                     pred_var=freeze(np.asarray(pstats.var)[np.ix_(prow, pcol)]),
                     pred_n=freeze(np.asarray(pstats.n_cells)[prow]),
                     truth_cells_excluded=int(exclude.sum()) if exclude is not None else 0)


def _escape_exclusions(truth: CellData, escape: Any, truth_cells: str, threshold: float) -> np.ndarray | None:
    """Cells left out of the truth: escapers when ``truth_cells="perturbed"``."""
    from ..ontarget import EscapeResult

    if truth_cells == "weighted":
        raise NotImplementedError("truth_cells='weighted' is not implemented in evaluate(); use 'perturbed', or "
                                  "shrinkpert.ontarget.escape_aware_effects(weighting='soft') for effect sizes.")
    if escape is not None and not isinstance(escape, EscapeResult):
        raise InputError(f"escape must be the EscapeResult of classify_escape(truth), got {type(escape).__name__}.")
    if truth_cells == "all":
        return None
    if escape is None:
        raise InputError("truth_cells='perturbed' needs escape=classify_escape(<true cells, raw counts>).")
    if not pd.Index(truth.obs.index).astype(str).equals(escape.obs_names):
        raise InputError("escape was computed on other cells than truth (names or order differ); run "
                         "classify_escape on the same data.")
    table = escape.penetrance
    judged = table.index[table["evidence"] != "none"].astype(str)
    p = escape.p_perturbed
    out = np.isin(escape.perturbation, judged) & np.isfinite(p) & (p < threshold)
    for pert in judged:  # never empty a perturbation: keep all its cells if fewer than 2 would remain
        cells = escape.perturbation == pert
        if (cells & ~out).sum() < 2:
            out[cells] = False
    return out


# =========================================================================== 3. sides


@dataclass(frozen=True)
class Side:
    """One scored prediction: the model or a baseline.

    Attributes
    ----------
    mean : ndarray, shape (n_perturbations, n_genes)
        Predicted pseudobulk means (read-only).
    var, n : ndarray
        Variance and cell counts its DE test uses (a baseline has no cells: the truth's).
    truth : {"full", "half_a"}
        Which truth it is scored against (duplicates: the unseen half A).
    kind : str
        ``"model"`` or the baseline's role (``"negative"``, ``"positive"``, ``"adversarial"``, ...).
    """

    mean: np.ndarray
    var: np.ndarray
    n: np.ndarray
    truth: str
    kind: str


def make_sides(summaries: Summaries, *, baselines: Any, config: EvaluationConfig, seed: int) -> dict[str, Side]:
    """Step 3: the model and every baseline as :class:`Side` objects, the model first."""
    from ..baselines import make_baselines

    s = summaries.truth
    sides = {MODEL: Side(summaries.pred_mean, summaries.pred_var, summaries.pred_n, "full", "model")}
    none = baselines is None or (not isinstance(baselines, str) and len(baselines) == 0)
    base = {} if none else make_baselines(s, baselines, seed=seed, targets=config.targets)
    for name, b in base.items():
        if name == MODEL:
            raise InputError(f"A baseline cannot be named {MODEL!r}; that name is the scored prediction.")
        half = b.truth == "half_a"
        sides[name] = Side(freeze(np.array(b.mean)), s.half_b_var if half else s.var,
                           s.half_b_n if half else s.n_cells, "half_a" if half else "full",
                           str(b.params.get("kind")))
    if config.calibrate and base:
        roles = {config.positive} | ({"mean", "mean_all", "control"} if config.negative == "auto"
                                     else {config.negative})
        absent = sorted(r for r in roles if r not in base)
        if absent:
            raise MissingKeyError(f"calibration needs the baselines {absent}; add them to baselines= or pass "
                                  "calibrate=False.")
    return sides


# =========================================================================== 4. score


@dataclass(frozen=True)
class Scores:
    """Per (metric, reference, weighting) and side, one value per perturbation (from :func:`score`).

    Attributes
    ----------
    jobs : tuple of (MetricSpec, str, str)
        (metric, reference, weighting) in output order.
    values : mapping
        ``values[(metric name, reference, weighting)][side] = ndarray (n_perturbations,)``.
    sides : tuple of str
        Side names, the model first.
    perturbations : pandas.Index
    params : mapping
        What the scoring used (weightings, references, metrics, DE test).
    """

    jobs: tuple
    values: Mapping[tuple[str, str, str], Mapping[str, np.ndarray]]
    sides: tuple[str, ...]
    perturbations: pd.Index
    params: Mapping[str, Any]


def resolve_metrics(metrics: Any, *, targets_measured: bool, penetrance: bool, dose: bool) -> list[MetricSpec]:
    """The specs to compute; ``"default"`` is every metric the given inputs allow (see evaluate)."""
    if isinstance(metrics, str) and metrics == "default":
        return [s for s in METRICS.values()
                if (s.needs in ("means", "deltas", "de") and (s.kind != "target" or targets_measured))
                or (s.needs == "penetrance" and penetrance) or (s.needs == "dose" and dose)]
    names = [metrics] if isinstance(metrics, str) else list(metrics)
    specs = []
    for name in names:
        if name not in METRICS:
            raise MissingKeyError(f"metrics: unknown metric {name!r}; choose from {list(METRICS)} or 'default'.")
        spec = METRICS[name]
        if spec.needs == "penetrance" and not penetrance:
            raise InputError(f"metrics: {spec.name!r} needs the penetrance of both sides; pass escape= (classify_escape "
                             "of the true cells) and pred_escape= (of the predicted cells with the real controls).")
        if spec.needs == "dose" and not dose:
            raise InputError(f"metrics: {spec.name!r} compares guides; pass guide_key= (an obs column of both pred and "
                             "truth).")
        specs.append(spec)
    if not specs:
        raise InputError("metrics is empty; pass 'default' or a list of metric names.")
    return specs


def _weightings(weights: Any, perturbations: pd.Index, genes: pd.Index) -> dict[str, np.ndarray | None]:
    from ..weights.core import GeneWeights

    out: dict[str, np.ndarray | None] = {"uniform": None}
    if weights is None:
        return out
    items = weights.items() if isinstance(weights, Mapping) else [(getattr(weights, "method", "weights"), weights)]
    for name, w in items:
        if name == "uniform":
            raise InputError("weights: the name 'uniform' is reserved for unweighted metrics; rename that weighting.")
        if isinstance(w, GeneWeights):
            rows = w.perturbations.astype(str).get_indexer(perturbations)
            cols = w.genes.astype(str).get_indexer(genes)
            if (rows < 0).any():
                raise MissingKeyError(f"weights {name!r} lack perturbations {perturbations[rows < 0][:10].tolist()}.")
            if (cols < 0).any():
                raise GeneMismatchError(f"weights {name!r} lack genes {genes[cols < 0][:10].tolist()}.")
            out[str(name)] = freeze(np.asarray(w.values)[np.ix_(rows, cols)])
        else:
            arr = np.asarray(w, dtype=np.float64)
            if arr.shape not in ((len(genes),), (len(perturbations), len(genes))):
                raise InputError(f"weights {name!r} have shape {arr.shape}; expected ({len(genes)},) or "
                                 f"({len(perturbations)}, {len(genes)}) in the truth's perturbation and gene order.")
            if not np.all(np.isfinite(arr)) or (arr < 0).any():
                raise InputError(f"weights {name!r} must be finite and non-negative.")
            out[str(name)] = freeze(np.broadcast_to(arr, (len(perturbations), len(genes))).copy())
    return out


def _spec_references(spec: MetricSpec, refs: list[str]) -> list[str]:
    """References a metric is computed under: ``"none"`` unless it takes deltas."""
    if spec.needs != "deltas":
        return ["none"]
    return [r for r in refs if spec.references is None or r in spec.references]


def de_calls(mean: np.ndarray, var: np.ndarray, n: np.ndarray, truth: Any, perturbations: pd.Index,
             genes: pd.Index, method: str = "test") -> DECalls:
    r"""DE calls of one side against the observed control (``de_calls`` of :func:`~shrinkpert.evaluate`).

    The one Welch test of the package (:func:`~shrinkpert.stats.testing.welch`, control variance
    floor) on the variance terms :math:`s^2/n`, an undefined variance (one cell) counting as 0; then
    BH within each perturbation (``"test"``), or ash on the same effects and standard errors
    (``"lfsr"``: ``lfc`` = posterior mean, ``q`` = local false sign rate).
    """
    from ..effects import ash_batch
    from ..stats.testing import bh_adjust, welch, welch_pvalue

    n = np.asarray(n, dtype=np.float64)[:, None]
    test = welch(np.nan_to_num(var, nan=0.0) / n, n,
                 np.nan_to_num(truth.control_var, nan=0.0)[None, :] / truth.control_n, truth.control_n)
    lfc = mean - truth.control_mean[None, :]
    if method == "test":
        return DECalls(lfc=lfc, q=bh_adjust(welch_pvalue(lfc, test)), perturbations=perturbations, genes=genes)
    fit = ash_batch(lfc, test.std_error, tol=1e-5, max_iter=200)
    return DECalls(lfc=np.nan_to_num(fit.posterior_mean), q=np.clip(np.nan_to_num(fit.lfsr, nan=1.0), 0.0, 1.0),
                   perturbations=perturbations, genes=genes)


def score(inputs: EvaluationInputs, summaries: Summaries, sides: Mapping[str, Side], *, metrics: Any,
          weights: Any, references: Sequence[str], config: EvaluationConfig, seed: int, escape: Any = None,
          pred_escape: Any = None) -> Scores:
    """Step 4: every (metric, reference, weighting) for every side.

    Side by side (the model, then each baseline), so that a side's intermediates (deltas, DE
    calls, ranks, distance matrices) are shared by its metrics through
    :class:`~shrinkpert.metrics.shared.SharedIntermediates` and dropped before the next side; the
    truth's are shared by all sides.
    """
    refs = [references] if isinstance(references, str) else list(references)
    bad = [r for r in refs if r not in REFERENCES]
    if bad or not refs:
        raise InputError(f"references must be a non-empty list from {REFERENCES}, got {references!r}.")
    tindex = inputs.target_index
    specs = resolve_metrics(metrics, targets_measured=bool((tindex >= 0).any()),
                            penetrance=escape is not None and pred_escape is not None,
                            dose=config.guide_key is not None)
    weightings = _weightings(weights, inputs.perturbations, inputs.genes)
    jobs = tuple((spec, ref, wname) for spec in specs for ref in _spec_references(spec, refs)
                 for wname in (weightings if spec.weighted else ("uniform",)))
    values: dict[tuple[str, str, str], dict[str, np.ndarray]] = {(s.name, r, w): {} for s, r, w in jobs}
    _score_pseudobulks(jobs, values, inputs, summaries, sides, weightings, refs, config)
    _score_cells_and_guides(jobs, values, inputs, summaries, sides, config, seed, escape, pred_escape)
    params = {"metrics": [s.name for s in specs], "weightings": list(weightings), "references": refs,
              "de_test": _DE_DESCRIPTION[config.de_calls], "targets_measured": int((tindex >= 0).sum())}
    return Scores(jobs, values, tuple(sides), inputs.perturbations, params)


def _score_pseudobulks(jobs, values, inputs: EvaluationInputs, summaries: Summaries, sides: Mapping[str, Side],
                       weightings: Mapping[str, np.ndarray | None], refs: list[str],
                       config: EvaluationConfig) -> None:
    """Fill the metrics of means, deltas and DE calls; the others get NaN here (filled later)."""
    truth = summaries.truth
    perts, genes, tindex = inputs.perturbations, inputs.genes, inputs.target_index
    truths = {"full": (truth.mean, truth.var, truth.n_cells),
              "half_a": (truth.half_a_mean, truth.half_a_var, truth.half_a_n)}
    used = {side.truth for side in sides.values()}
    vectors = {"control": truth.control_mean, "perturbed_centroid": truth.mean.mean(axis=0)}
    truth_de = ({which: de_calls(*truths[which], truth, perts, genes, config.de_calls) for which in used}
                if any(spec.needs == "de" for spec, _, _ in jobs) else {})
    truth_deltas = {(which, ref): freeze(truths[which][0] - vectors[ref][None, :]) for which in used for ref in refs}
    # the truth's intermediates, per (truth, input, weighting); each side gets fresh prediction caches
    truth_scopes: dict[tuple[str, str, str], dict] = {}
    for name, side in sides.items():
        pred_deltas = {ref: freeze(side.mean - vectors[ref][None, :]) for ref in refs}
        pred_de = None
        pred_scopes: dict[tuple[str, str], dict] = {}
        for spec, ref, wname in jobs:
            out = values[(spec.name, ref, wname)]
            if spec.needs in ("penetrance", "dose", "cells"):
                out[name] = np.full(len(perts), np.nan)
                continue
            if spec.reference_free and ref not in ("none", refs[0]):
                out[name] = values[(spec.name, refs[0], wname)][name]
                continue
            on_means = spec.needs == "means" or spec.reference_free
            data_ref = "none" if on_means or spec.needs == "de" else ref
            kwargs: dict[str, Any] = {}
            if weightings[wname] is not None:
                kwargs["weights"] = weightings[wname]
            parameters = _parameters(spec)
            if "target_index" in parameters:
                kwargs["target_index"] = tindex
            if "shared" in parameters:
                kwargs["shared"] = SharedIntermediates(
                    pred=pred_scopes.setdefault((data_ref, wname), {}),
                    truth=truth_scopes.setdefault((side.truth, data_ref, wname), {}))
            if on_means:
                a, b = side.mean, truths[side.truth][0]
            elif spec.needs == "deltas":
                a, b = pred_deltas[ref], truth_deltas[(side.truth, ref)]
            else:  # de
                if pred_de is None:
                    pred_de = de_calls(side.mean, side.var, side.n, truth, perts, genes, config.de_calls)
                a, b = pred_de, truth_de[side.truth]
                kwargs["alpha"] = config.alpha
            out[name] = np.asarray(spec(a, b, **kwargs), dtype=np.float64).reshape(len(perts))


def _parameters(spec: MetricSpec) -> frozenset[str]:
    return frozenset(inspect.signature(spec.func).parameters)


def _penetrances(result: Any, perturbations: pd.Index, name: str) -> np.ndarray:
    from ..ontarget import EscapeResult

    if not isinstance(result, EscapeResult):
        raise InputError(f"{name} must be the EscapeResult of shrinkpert.ontarget.classify_escape, got "
                         f"{type(result).__name__}.")
    return result.penetrance["penetrance"].reindex(perturbations).to_numpy(dtype=np.float64)


def _guide_responses(data: CellData, inputs: EvaluationInputs, control_mean: np.ndarray,
                     config: EvaluationConfig) -> pd.Series:
    """Root-mean-square change from the observed control per (perturbation, guide), target left out."""
    from ..stats.group import group_statistics

    guides = data.column(config.guide_key, "guide_key, needed in both pred and truth")
    stats = group_statistics(data, [data.labels(), guides], normalize=None if inputs.scale == "log1p" else "log1p",
                             target_sum=config.target_sum, chunk_size=config.chunk_size, n_threads=config.n_threads)
    perts = pd.Index(stats.groups.get_level_values(0).astype(str))
    rows = np.flatnonzero(perts.isin(inputs.perturbations))
    cols = pd.Index(stats.genes.astype(str)).get_indexer(inputs.genes)
    delta = np.asarray(stats.mean)[np.ix_(rows, cols)] - control_mean[None, :]
    target = inputs.target_index[inputs.perturbations.get_indexer(perts[rows])]
    keep = np.ones(delta.shape, dtype=bool)
    keep[np.flatnonzero(target >= 0), target[target >= 0]] = False
    response = np.sqrt(np.where(keep, delta**2, 0.0).sum(axis=1) / keep.sum(axis=1))
    index = pd.MultiIndex.from_arrays([perts[rows], stats.groups.get_level_values(1)[rows].astype(str)])
    return pd.Series(response, index=index)


def _score_cells_and_guides(jobs, values, inputs: EvaluationInputs, summaries: Summaries,
                            sides: Mapping[str, Side], config: EvaluationConfig, seed: int, escape: Any,
                            pred_escape: Any) -> None:
    """Fill the metrics of cells (model, control and technical duplicate), penetrance and guides (model)."""
    specs = {spec.name: spec for spec, _, _ in jobs}
    perts = inputs.perturbations
    cell_specs = [spec for spec in specs.values() if spec.needs == "cells"]
    if cell_specs:
        plan = sample_plan(inputs.truth, inputs.pred, perts, config.cells_per_perturbation, seed)
        cell_values = distribution_values(cell_specs, inputs.pred, inputs.truth, plan,
                                          counts=inputs.scale == "counts", target_sum=config.target_sum,
                                          chunk_size=config.chunk_size)
        for spec in cell_specs:
            for side, side_values in cell_values[spec.name].items():
                if side in sides:
                    values[(spec.name, "none", "uniform")][side] = side_values
    for spec in specs.values():
        if spec.needs == "penetrance":
            p = _penetrances(pred_escape, perts, "pred_escape")
            t = _penetrances(escape, perts, "escape")
            ok = np.isfinite(p) & np.isfinite(t)
            result = np.where(ok, spec(np.where(ok, p, 0), np.where(ok, t, 0)), np.nan)
        elif spec.needs == "dose":
            responses = [_guide_responses(data, inputs, summaries.truth.control_mean, config)
                         for data in (inputs.pred, inputs.truth)]
            both = responses[0].index.intersection(responses[1].index)
            by_pert = spec(responses[0][both].to_numpy(), responses[1][both].to_numpy(),
                           groups=both.get_level_values(0))
            result = by_pert.reindex(perts).to_numpy(dtype=np.float64)
        else:
            continue
        values[(spec.name, "none", "uniform")][MODEL] = result


# =========================================================================== 5. tabulate


def negative_for(spec: MetricSpec, reference: str) -> str:
    """The default negative control of a metric under a reference (``negative="auto"``)."""
    if spec.needs == "cells":
        return "control"
    if reference == "perturbed_centroid":
        return "control"
    return "mean_all" if spec.kind == "rank" else "mean"


def _finite_mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def tabulate(scores: Scores, *, config: EvaluationConfig, seed: int, params: Mapping[str, Any]) -> MetricTable:
    """Step 5: calibrate every (metric, reference, weighting) and build the :class:`MetricTable`."""
    base = [s for s in scores.sides if s != MODEL]
    records, rows = [], []
    for spec, ref, wname in scores.jobs:
        negative = negative_for(spec, ref) if config.negative == "auto" else config.negative
        bootstrap = dict(n_boot=config.n_boot, level=config.level, seed=seed) if config.calibrate else None
        frame, row = _tabulate_one(spec, ref, wname, scores.values[(spec.name, ref, wname)], scores.perturbations,
                                   base, negative, config.positive, bootstrap)
        records.append(frame)
        rows.append(row)
    values = pd.concat(records, ignore_index=True)
    summary = pd.DataFrame(rows).set_index(["metric", "weighting", "reference"]).sort_index()
    return MetricTable(values, summary, scores.perturbations, params["genes"], params["record"])


def _tabulate_one(spec: MetricSpec, ref: str, wname: str, vals: Mapping[str, np.ndarray], perturbations: pd.Index,
                  base: list[str], neg_name: str, positive: str,
                  bootstrap: Mapping[str, Any] | None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Long-table rows and the summary row of one (metric, reference, weighting)."""
    from ..baselines import ADVERSARIAL
    from ..calibration import calibrate as calibrate_metric

    model = vals[MODEL]
    frame = pd.DataFrame({"perturbation": perturbations.astype(str), "metric": spec.name, "weighting": wname,
                          "reference": ref, "value": model})
    for name in base:
        frame[f"baseline_{name}"] = vals[name]
    row: dict[str, Any] = {"metric": spec.name, "weighting": wname, "reference": ref, "mean": _finite_mean(model),
                           "median": float(np.nanmedian(model)) if np.isfinite(model).any() else float("nan")}
    flags: list[str] = []
    if bootstrap is not None and base:
        cal = calibrate_metric(model, vals[neg_name], vals[positive], greater_is_better=spec.greater_is_better,
                               best=spec.best, perturbations=perturbations, negative_name=neg_name,
                               positive_name=positive, **bootstrap)
        frame["calibrated"] = cal.calibrated_per_perturbation
        frame["drf"] = cal.drf_per_perturbation
        row.update(calibrated=cal.calibrated, ci_low=cal.ci_low, ci_high=cal.ci_high, drf=cal.drf, bds=cal.bds)
        means = {n: _finite_mean(v) for n, v in vals.items()}
        adv = [a for a in ADVERSARIAL if a in base]
        beats_neg = [a for a in adv if spec.is_better(means[a], means[neg_name])]
        wins = [a for a in adv if spec.is_better(means[a], means[positive])]
        if beats_neg:
            flags.append("adversarial_beats_negative:" + ",".join(beats_neg))
        if wins:
            flags.append("adversarial_wins:" + ",".join(wins))
        if np.isfinite(cal.bds) and cal.bds < 0.5:
            flags.append("positive_not_better")
        if cal.n_valid < 10:
            flags.append("few_perturbations")
    else:
        row.update(calibrated=np.nan, ci_low=np.nan, ci_high=np.nan, drf=np.nan, bds=np.nan)
    row["flags"] = ";".join(flags)
    row.update(greater_is_better=spec.greater_is_better, negative=neg_name if base else "",
               positive=positive if base else "", n_valid=int(np.isfinite(model).sum()))
    for name in base:
        row[f"baseline_{name}"] = _finite_mean(vals[name])
    return frame, row
