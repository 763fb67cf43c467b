r"""``evaluate(pred, truth)``: every metric × weighting × reference, with baselines and calibration.

Pipeline (two streaming passes, one over each file; cells × genes are never densified):

1. **Validation.** Same genes (a :class:`~shrinkpert.errors.GeneMismatchError` lists the genes
   missing on either side; a different order is fine and is aligned), same perturbations
   (control excluded), same scale: with ``scale="auto"`` both sides go through
   :func:`~shrinkpert.baselines.detect_scale`, which raises when the scale is ambiguous, and the
   two must agree.
2. **Pseudobulks.** Truth: :func:`~shrinkpert.baselines.summarize_truth` (all cells and two
   seeded disjoint halves). Prediction: :func:`~shrinkpert.group_statistics` by perturbation.
   Counts are log1p-normalised per ``target_sum`` while reading; log1p values are used as stored.
3. **The control is the observed control.** Deltas of *both* sides subtract the true control
   mean :math:`\bar x_c` (or the true perturbed centroid); control cells in ``pred`` are ignored,
   so a submission cannot move its scores by editing its controls (cell-eval #183/#196).
4. **Metrics** from :data:`~shrinkpert.metrics.METRICS`: ``needs="means"`` metrics get the means
   (reference ``"none"``), ``needs="deltas"`` metrics get :math:`\bar x_p - r` for each
   reference :math:`r`, ``needs="de"`` metrics get :class:`DECalls` from a Welch t-test of each
   side's perturbation against the observed control, with the perturbation's variance floored at
   the control's as in :func:`~shrinkpert.estimate_effects` (BH within perturbation; ``lfc`` =
   difference of log1p means). A pseudobulk baseline has no cells, so its DE test uses the true perturbation's
   variance and cell count. Rank metrics exclude each perturbation's target gene when the label (or
   ``targets``) names a measured gene. Target-gene metrics use deltas from the control only.
   Distribution metrics (``needs="cells"``, only when named) compare equal-sized seeded samples of
   cells per perturbation (see ``cells_per_perturbation``).
5. **Baselines** (:mod:`shrinkpert.baselines`) are scored the same way; duplicates against half A.
6. **Calibration** (:mod:`shrinkpert.calibration`): per metric, the model's values between the
   negative control and the positive control (``"technical_duplicate"``), with seeded bootstrap
   intervals over perturbations. Default negative (``negative="auto"``): the ``"control"``
   baseline for deltas against the perturbed centroid (as Mejia et al.: the leave-one-out mean
   is exactly anti-correlated with the truth there), ``"mean_all"`` (one profile for every
   perturbation: exact chance level) for rank metrics, where the leave-one-out mean falls below
   chance, ``"control"`` cells for distribution metrics, and the leave-one-out ``"mean"``
   otherwise.

Flags in :meth:`MetricTable.summary` (semicolon-separated):

* ``adversarial_beats_negative:<names>`` — an adversarial baseline (scaled mean, noise-inflated
  mean, shuffled labels) has a better mean than the negative control: the metric rewards a
  distortion that carries no information;
* ``adversarial_wins:<names>`` — it is even better than the positive control;
* ``positive_not_better`` — BDS < 0.5: the positive control does not beat the negative one on most
  perturbations (the metric cannot separate signal from no signal here);
* ``few_perturbations`` — fewer than 10 perturbations with finite values (Mejia et al. drop these).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._vocab import CONTROL, PERTURBATION_KEY, TARGET_SUM
from ..errors import GeneMismatchError, InputError, MissingKeyError
from ._memo import release, shared_intermediates
from .de import DECalls
from .registry import METRICS, MetricSpec

__all__ = ["evaluate", "MetricTable", "DEFAULT_REFERENCES"]

#: References of delta metrics computed by default.
DEFAULT_REFERENCES: tuple[str, ...] = ("control", "perturbed_centroid")
_REFERENCES = ("control", "perturbed_centroid")
MODEL = "model"


@dataclass(frozen=True)
class MetricTable:
    """Result of :func:`evaluate`: per-perturbation values and summaries.

    Attributes
    ----------
    values : pandas.DataFrame
        Long table (see :meth:`to_frame`); read it through :meth:`to_frame`, which returns a copy.
    summary_table : pandas.DataFrame
        One row per (metric, weighting, reference) (see :meth:`summary`).
    perturbations, genes : pandas.Index
    params : mapping
        Every option of the call, the detected scale, what was ignored (``pred`` control cells)
        and the baselines' roles.
    """

    values: pd.DataFrame
    summary_table: pd.DataFrame
    perturbations: pd.Index
    genes: pd.Index
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", self.values.copy())
        object.__setattr__(self, "summary_table", self.summary_table.copy())
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy long table, one row per (perturbation, metric, weighting, reference).

        Columns: ``perturbation, metric, weighting`` (``"uniform"`` = unweighted),
        ``reference`` (``"control"``, ``"perturbed_centroid"``, or ``"none"`` for metrics of
        means and DE calls), ``value`` (the model), one ``baseline_<name>`` column per baseline,
        then ``calibrated`` (:math:`(s_p-n_p)/(q_p-n_p)`) and ``drf`` of the positive over the
        negative control (these two only when calibrated). Intervals are over perturbations and
        live in :meth:`summary`.
        """
        return self.values.copy()

    def summary(self) -> pd.DataFrame:
        """One row per (metric, weighting, reference), sorted by that index.

        Columns: ``mean`` and ``median`` of the model's values (NaN values left out; ``n_valid``
        counts the rest), ``calibrated`` (ratio of means between negative and positive control),
        ``ci_low``/``ci_high`` (its bootstrap interval), ``drf`` (mean DRF), ``bds``, ``flags``,
        then ``greater_is_better``, ``negative``, ``positive``, ``n_valid`` and the mean of each
        baseline (``baseline_<name>``).
        """
        return self.summary_table.copy()


def _resolve_metrics(metrics: Any, *, targets_measured: bool, penetrance: bool, dose: bool) -> list[MetricSpec]:
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


def _check_pair(pred: Any, truth: Any, perturbation_key: str, control: str) -> tuple[pd.Index, pd.Index, int]:
    from ..data.read import read_annotations

    sides = {}
    for name, obj in (("pred", pred), ("truth", truth)):
        obs, var_names = read_annotations(obj)
        if perturbation_key not in obs.columns:
            raise MissingKeyError(f"{name}: obs has no column {perturbation_key!r}; pass perturbation_key=<column>.")
        labels = obs[perturbation_key].dropna().astype(str)
        genes = pd.Index(pd.Index(var_names).astype(str))
        if genes.has_duplicates:
            raise InputError(f"{name}: duplicate gene names {genes[genes.duplicated()][:5].tolist()}; make them unique.")
        sides[name] = (labels, genes)
    (pl, pg), (tl, tg) = sides["pred"], sides["truth"]
    if not pg.equals(tg):
        missing, extra = tg.difference(pg), pg.difference(tg)
        if len(missing) or len(extra):
            raise GeneMismatchError(
                f"pred and truth have different genes: {len(missing)} truth genes missing from pred "
                f"(e.g. {missing[:10].tolist()}), {len(extra)} pred genes not in truth (e.g. {extra[:10].tolist()}). "
                "Subset both to the same genes (order may differ)."
            )
    p_perts = pd.Index(sorted(set(pl) - {control}))
    t_perts = pd.Index(sorted(set(tl) - {control}))
    if not p_perts.equals(t_perts):
        raise InputError(
            f"pred and truth have different perturbations: missing from pred {t_perts.difference(p_perts)[:10].tolist()}, "
            f"not in truth {p_perts.difference(t_perts)[:10].tolist()}. Predict exactly the true perturbations."
        )
    return t_perts, tg, int((pl == control).sum())


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
            out[str(name)] = np.asarray(w.values)[np.ix_(rows, cols)]
        else:
            arr = np.asarray(w, dtype=np.float64)
            if arr.shape not in ((len(genes),), (len(perturbations), len(genes))):
                raise InputError(f"weights {name!r} have shape {arr.shape}; expected ({len(genes)},) or "
                                 f"({len(perturbations)}, {len(genes)}) in the truth's perturbation and gene order.")
            if not np.all(np.isfinite(arr)) or (arr < 0).any():
                raise InputError(f"weights {name!r} must be finite and non-negative.")
            out[str(name)] = np.broadcast_to(arr, (len(perturbations), len(genes))).copy()
    return out


def _target_index(perturbations: pd.Index, genes: pd.Index, targets: Mapping[str, str] | None) -> np.ndarray:
    targets = dict(targets) if targets is not None else {}
    names = [targets.get(p, p) for p in perturbations]
    return np.array([genes.get_loc(g) if g in genes else -1 for g in names], dtype=np.int64)


def _frozen(values: np.ndarray, *, fresh: bool = False) -> np.ndarray:
    """Read-only (metrics share intermediates only between read-only inputs): a ``fresh``
    temporary is frozen in place, anything else is copied first so its owner's array keeps its flags."""
    out = values if fresh else np.array(values)
    out.setflags(write=False)
    return out


def _negative_for(spec: MetricSpec, reference: str) -> str:
    """The default negative control: see the module docstring."""
    if spec.needs == "cells":
        return "control"
    if reference == "perturbed_centroid":
        return "control"
    return "mean_all" if spec.kind == "rank" else "mean"


#: How ``evaluate`` calls DE genes: ``"test"`` (Welch t-test, BH) or ``"lfsr"`` (ash).
DE_CALLS = ("test", "lfsr")
_DE_DESCRIPTION = {"test": "Welch t-test vs observed control (control variance floor), BH per perturbation",
                   "lfsr": "ash local false sign rate of the same effects and standard errors"}


def _de_calls(mean, var, n, summary, perturbations, genes, method: str = "test") -> DECalls:
    """DE calls of one side against the observed control (see ``de_calls`` of :func:`evaluate`)."""
    from ..baselines._stats import bh_rows, welch_p, welch_se_df

    control_mean, control_var = summary.control_mean[None, :], summary.control_var[None, :]
    if method == "test":
        p = welch_p(mean, var, n[:, None], control_mean, control_var, summary.control_n, floor_at_b=True)
        return DECalls(lfc=mean - control_mean, q=bh_rows(p), perturbations=perturbations, genes=genes)
    from ..effects.ash import _ash_batch

    se, _ = welch_se_df(var, n[:, None], control_var, summary.control_n, floor_at_b=True)
    fit = _ash_batch(mean - control_mean, se, tol=1e-5, max_iter=200)
    return DECalls(lfc=np.nan_to_num(fit.posterior_mean), q=np.clip(np.nan_to_num(fit.lfsr, nan=1.0), 0.0, 1.0),
                   perturbations=perturbations, genes=genes)


def _spec_references(spec: MetricSpec, refs: list[str]) -> list[str]:
    """References a metric is computed under: ``"none"`` unless it takes deltas."""
    if spec.needs != "deltas":
        return ["none"]
    return [r for r in refs if spec.references is None or r in spec.references]


def _escape_exclusions(truth: Any, escape: Any, truth_cells: str, threshold: float) -> np.ndarray | None:
    """Cells left out of the truth: escapers when ``truth_cells="perturbed"``."""
    from ..data.read import read_annotations
    from ..target import EscapeResult

    if truth_cells == "weighted":
        raise NotImplementedError("truth_cells='weighted' is not implemented in evaluate(); use 'perturbed', or "
                                  "shrinkpert.target.escape_aware_effects(weighting='soft') for effect sizes.")
    if truth_cells not in ("all", "perturbed"):
        raise InputError(f"truth_cells must be 'all', 'perturbed' or 'weighted', got {truth_cells!r}.")
    if escape is not None and not isinstance(escape, EscapeResult):
        raise InputError(f"escape must be the EscapeResult of classify_escape(truth), got {type(escape).__name__}.")
    if truth_cells == "all":
        return None
    if escape is None:
        raise InputError("truth_cells='perturbed' needs escape=classify_escape(<true cells, raw counts>).")
    if not 0 < threshold < 1:
        raise InputError(f"escape_threshold must lie in (0, 1), got {threshold!r}.")
    obs, _ = read_annotations(truth)
    if not pd.Index(obs.index).astype(str).equals(escape.obs_names):
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


def _penetrances(result: Any, perturbations: pd.Index, name: str) -> np.ndarray:
    from ..target import EscapeResult

    if not isinstance(result, EscapeResult):
        raise InputError(f"{name} must be the EscapeResult of shrinkpert.target.classify_escape, got "
                         f"{type(result).__name__}.")
    return result.penetrance["penetrance"].reindex(perturbations).to_numpy(dtype=np.float64)


def _guide_responses(source: Any, perturbation_key: str, guide_key: str, perturbations: pd.Index, genes: pd.Index,
                     tindex: np.ndarray, control_mean: np.ndarray, scale: str, layer: str | None,
                     target_sum: float, chunk_size: int | None, n_threads: int | None) -> pd.Series:
    """Root-mean-square change from the observed control per (perturbation, guide), target left out."""
    from ..data.read import read_annotations
    from ..stats.group import group_statistics

    obs, _ = read_annotations(source)
    if guide_key not in obs.columns:
        raise MissingKeyError(f"obs has no column {guide_key!r} (guide_key) in both pred and truth.")
    stats = group_statistics(source, [perturbation_key, guide_key], layer=layer,
                             normalize=None if scale == "log1p" else "log1p", target_sum=target_sum,
                             chunk_size=chunk_size, n_threads=n_threads)
    perts = pd.Index(stats.groups.get_level_values(0).astype(str))
    rows = np.flatnonzero(perts.isin(perturbations))
    cols = pd.Index(stats.genes.astype(str)).get_indexer(genes)
    delta = np.asarray(stats.mean)[np.ix_(rows, cols)] - control_mean[None, :]
    target = tindex[perturbations.get_indexer(perts[rows])]
    keep = np.ones(delta.shape, dtype=bool)
    keep[np.flatnonzero(target >= 0), target[target >= 0]] = False
    response = np.sqrt(np.where(keep, delta**2, 0.0).sum(axis=1) / keep.sum(axis=1))
    index = pd.MultiIndex.from_arrays([perts[rows], stats.groups.get_level_values(1)[rows].astype(str)])
    return pd.Series(response, index=index)


def _finite_mean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _score_cells_and_guides(jobs: list, results: dict, pred: Any, truth: Any, sides: Mapping[str, tuple],
                            summary: Any, perturbations: pd.Index, genes: pd.Index, tindex: np.ndarray, *,
                            perturbation_key: str, control: str, counts: bool, layer: str | None,
                            target_sum: float, seed: int, cells_per_perturbation: int, escape: Any,
                            pred_escape: Any, guide_key: str | None, chunk_size: int | None,
                            n_threads: int | None) -> None:
    """Fill the metrics of cells (model, control and technical duplicate), penetrance and guides (model)."""
    specs = {job[0].name: job[0] for job in jobs}
    cell_specs = [spec for spec in specs.values() if spec.needs == "cells"]
    if cell_specs:
        from ..baselines._summary import _labels
        from ._cells import distribution_values, sample_plan

        plan = sample_plan(_labels(truth, perturbation_key), _labels(pred, perturbation_key), perturbations,
                           control, cells_per_perturbation, seed)
        cell_values = distribution_values(cell_specs, pred, truth, plan, layer=layer, counts=counts,
                                          target_sum=target_sum, chunk_size=chunk_size)
        for spec in cell_specs:
            for side, values in cell_values[spec.name].items():
                if side in sides:
                    results[(spec.name, "none", "uniform")][side] = values
    for spec in specs.values():
        if spec.needs == "penetrance":
            p = _penetrances(pred_escape, perturbations, "pred_escape")
            t = _penetrances(escape, perturbations, "escape")
            ok = np.isfinite(p) & np.isfinite(t)
            values = np.where(ok, spec(np.where(ok, p, 0), np.where(ok, t, 0)), np.nan)
        elif spec.needs == "dose":
            responses = [_guide_responses(side, perturbation_key, guide_key, perturbations, genes, tindex,
                                          summary.control_mean, "counts" if counts else "log1p", layer, target_sum,
                                          chunk_size, n_threads)
                         for side in (pred, truth)]
            both = responses[0].index.intersection(responses[1].index)
            score = spec(responses[0][both].to_numpy(), responses[1][both].to_numpy(),
                         groups=both.get_level_values(0))
            values = score.reindex(perturbations).to_numpy(dtype=np.float64)
        else:
            continue
        results[(spec.name, "none", "uniform")][MODEL] = values


def _tabulate(spec: MetricSpec, ref: str, wname: str, vals: Mapping[str, np.ndarray], perturbations: pd.Index,
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


def _score_sides(jobs: list, results: dict, sides: Mapping[str, tuple], truths: Mapping[str, tuple], summary: Any,
                 perturbations: pd.Index, genes: pd.Index, refs: list[str],
                 reference_vectors: Mapping[str, np.ndarray], tindex: np.ndarray, alpha: float,
                 de_method: str) -> None:
    """Fill ``results[(metric, reference, weighting)][side]`` for the pseudobulk metrics.

    Side by side (the model, then each baseline), so that a side's intermediates (deltas, DE
    calls, ranks, distance matrices) are shared by its metrics and freed before the next side; the
    truth's are shared by all sides. Metrics of cells, penetrance or guides get NaN here and are
    filled by the caller.
    """
    used = {side[3] for side in sides.values()}
    truth_de = {which: _de_calls(*truths[which], summary, perturbations, genes, de_method) for which in used
                if any(job[0].needs == "de" for job in jobs)}
    truth_deltas = {(which, ref): _frozen(truths[which][0] - reference_vectors[ref][None, :], fresh=True)
                    for which in used for ref in refs}
    with shared_intermediates():
        for name, (pm, pv, pn, which) in sides.items():
            tm = truths[which][0]
            pred_deltas = {ref: _frozen(pm - reference_vectors[ref][None, :], fresh=True) for ref in refs}
            pred_de = None
            for spec, ref, wname, w in jobs:
                out = results[(spec.name, ref, wname)]
                if spec.needs in ("penetrance", "dose", "cells"):  # filled by the caller
                    out[name] = np.full(len(perturbations), np.nan)
                    continue
                if spec.reference_free and ref not in ("none", refs[0]):
                    out[name] = results[(spec.name, refs[0], wname)][name]
                    continue
                kwargs: dict[str, Any] = {}
                if w is not None:
                    kwargs["weights"] = w
                if "target_index" in inspect.signature(spec.func).parameters:
                    kwargs["target_index"] = tindex
                if spec.needs == "means" or spec.reference_free:
                    a, b = pm, tm
                elif spec.needs == "deltas":
                    a, b = pred_deltas[ref], truth_deltas[(which, ref)]
                else:  # de
                    if pred_de is None:
                        pred_de = _de_calls(pm, pv, pn, summary, perturbations, genes, de_method)
                    a, b = pred_de, truth_de[which]
                    kwargs["alpha"] = alpha
                out[name] = np.asarray(spec(a, b, **kwargs), dtype=np.float64).reshape(len(perturbations))
            release(pm, pred_de, *pred_deltas.values())


def evaluate(
    pred: Any,
    truth: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    scale: str = "auto",
    layer: str | None = None,
    target_sum: float = TARGET_SUM,
    metrics: str | Sequence[str] = "default",
    weights: Any = None,
    references: Sequence[str] = DEFAULT_REFERENCES,
    baselines: str | Sequence[str] = "default",
    negative: str = "auto",
    positive: str = "technical_duplicate",
    calibrate: bool = True,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    targets: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    de_calls: str = "test",
    truth_cells: str = "all",
    escape: Any = None,
    pred_escape: Any = None,
    escape_threshold: float = 0.5,
    guide_key: str | None = None,
    cells_per_perturbation: int = 100,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> MetricTable:
    r"""Score predicted cells against true cells with every metric, baseline and calibration.

    Parameters
    ----------
    pred, truth
        Cell-level AnnData (in memory or backed) or ``.h5ad`` paths with the same genes and the
        same perturbations in ``obs[perturbation_key]``; read in blocks, never modified.
        ``pred`` needs no control cells (any it has are ignored).
    perturbation_key, control
        Label column and control label.
    scale
        ``"auto"`` (detect each side; raise when ambiguous or when they disagree), ``"log1p"``
        (natural log1p of counts per ``target_sum``, used as stored) or ``"counts"``
        (log1p-normalised while reading). Applies to both sides.
    layer, target_sum
        Layer to read instead of ``X`` (both sides) and the normalisation total.
    metrics
        ``"default"`` or names from :data:`~shrinkpert.metrics.METRICS`. The default is every
        registered metric of means, deltas and DE calls; the target-gene metrics when some
        perturbation's target is a measured gene; ``penetrance_error`` when ``escape`` and
        ``pred_escape`` are given; ``dose_order_score`` when ``guide_key`` is given. The
        distribution metrics (``energy_distance``, ``mmd``) run only when named.
    weights
        ``None`` (unweighted only), a :class:`~shrinkpert.GeneWeights` (named by its method) or
        a mapping name → :class:`GeneWeights` / array ``(n_genes,)`` or
        ``(n_perturbations, n_genes)`` (truth order). Weighted metrics are computed once per
        weighting besides ``"uniform"``; unweighted metrics only under ``"uniform"``.
    references
        Delta references: ``"control"`` (:math:`\bar x_p - \bar x_c`) and/or
        ``"perturbed_centroid"`` (:math:`\bar x_p - \frac1P\sum_q \bar x_q`, the true
        perturbations' centroid, Systema). Both sides use the same, observed reference.
    baselines
        ``"default"`` (:data:`~shrinkpert.baselines.BASELINES`), a list of names (adding
        ``"linear"``/``"additive"``), or ``[]``/``None`` (no baselines; then no calibration).
    negative, positive
        Baselines used as negative/positive controls. ``negative="auto"``: ``"control"`` for
        deltas against the perturbed centroid, ``"mean_all"`` for rank metrics, else ``"mean"``.
    calibrate
        Compute calibrated scores, DRF, BDS and bootstrap intervals.
    n_boot, level, seed
        Bootstrap replicates and coverage; ``seed`` also fixes the half split and the random
        baselines (the same seed gives the same table).
    targets
        Perturbation → target gene (default: the label when it is a measured gene); the target
        is excluded from rank metrics' distances and used by the linear baseline.
    alpha
        Significance level of DE calls.
    de_calls
        How DE genes are called for the DE metrics, on both sides: ``"test"`` (Welch t-test
        against the observed control with the control variance floor, Benjamini–Hochberg within
        each perturbation; ``lfc`` = difference of means) or ``"lfsr"`` (adaptive shrinkage of
        those effects and standard errors, one normal-mixture prior per perturbation, ashr's
        defaults with ``tol=1e-5``; ``lfc`` = posterior mean, a gene is DE when its local false
        sign rate is below ``alpha``).
    truth_cells
        Which true cells define the truth: ``"all"`` (every cell with the label) or
        ``"perturbed"`` (escape-aware: leave out cells with ``p_perturbed < escape_threshold``
        in ``escape``; controls, unclassified cells and every cell of a perturbation without
        evidence of an effect — penetrance 0, evidence ``"none"`` — are kept, as are all cells of a
        perturbation that would keep fewer than 2). ``"weighted"`` (cells weighted
        by ``p_perturbed``) is available for effect sizes
        (:func:`~shrinkpert.target.escape_aware_effects`) but not here yet.
    escape, pred_escape, escape_threshold
        :class:`~shrinkpert.target.EscapeResult` of :func:`~shrinkpert.target.classify_escape`
        run on the true cells (raw counts) and on the predicted cells together with the real
        control cells. ``escape`` is needed by ``truth_cells="perturbed"``; both by
        ``penetrance_error`` (:math:`|\hat\pi_p - \pi_p|`).
    guide_key
        ``obs`` column of guides in both ``pred`` and ``truth``; enables ``dose_order_score``:
        per guide the downstream response
        :math:`\sqrt{\tfrac{1}{G-1}\sum_{g \ne t}(\bar x_{\text{guide},g}-\bar x_{c,g})^2}`
        (target gene left out), and per perturbation the Spearman correlation of predicted and
        true responses across its guides (NaN with fewer than 3 guides). One extra streaming pass
        over each side.
    cells_per_perturbation
        Cells drawn (seeded) per perturbation for the distribution metrics: the model's
        predicted cells, the true cells and, as controls, a disjoint half of the true cells
        (``technical_duplicate``) and control cells (``control``), all of the same size
        :math:`m_p = \min(m, \lfloor n_p/2 \rfloor, n^{\text{pred}}_p)` so that the V-statistics
        are comparable. Only these rows are read (one pass per file); the other baselines,
        which have no cells, get NaN.
    chunk_size, n_threads, progress
        As in :func:`shrinkpert.group_statistics`.

    Returns
    -------
    MetricTable

    Raises
    ------
    GeneMismatchError
        Different gene sets (the message lists them).
    InputError
        Different perturbations, ambiguous or disagreeing scales, bad weights or options.
    MissingKeyError
        Unknown metric, column, control label or baseline role.
    NotImplementedError
        ``truth_cells="weighted"``, or ``"additive"`` on data without combinations.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> from shrinkpert.metrics.evaluate import evaluate
    >>> truth = sp.datasets.papalexi2021()
    >>> truth = truth[truth.obs["perturbation"] != "unassigned"].copy()
    >>> table = evaluate(truth, truth, metrics=["mse", "pearson_delta"], n_boot=100)
    >>> row = table.summary().loc[("pearson_delta", "uniform", "control")]
    >>> round(float(row["mean"]), 9), row["negative"], row["positive"]
    (1.0, 'mean', 'technical_duplicate')
    """
    from ..baselines import detect_scale, make_baselines, summarize_truth
    from ..stats.group import group_statistics

    if de_calls not in DE_CALLS:
        raise InputError(f"de_calls must be one of {DE_CALLS}, got {de_calls!r}.")
    refs = [references] if isinstance(references, str) else list(references)
    bad = [r for r in refs if r not in _REFERENCES]
    if bad or not refs:
        raise InputError(f"references must be a non-empty list from {_REFERENCES}, got {references!r}.")
    perturbations, genes, pred_control_cells = _check_pair(pred, truth, perturbation_key, control)
    tindex = _frozen(_target_index(perturbations, genes, targets), fresh=True)
    specs = _resolve_metrics(metrics, targets_measured=bool((tindex >= 0).any()),
                             penetrance=escape is not None and pred_escape is not None, dose=guide_key is not None)
    exclude = _escape_exclusions(truth, escape, truth_cells, escape_threshold)

    if scale == "auto":
        s_truth, s_pred = detect_scale(truth, layer=layer), detect_scale(pred, layer=layer)
        if s_truth != s_pred:
            raise InputError(
                f"pred looks like {s_pred} but truth like {s_truth}; put both on one scale (counts, or natural log1p "
                "of counts per target_sum) or pass scale= explicitly."
            )
        resolved = s_truth
    elif scale in ("log1p", "counts"):
        resolved = scale
    else:
        raise InputError(f"scale must be 'auto', 'log1p' or 'counts', got {scale!r}.")

    summary = summarize_truth(truth, perturbation_key=perturbation_key, control=control, scale=resolved, layer=layer,
                              target_sum=target_sum, seed=seed, exclude=exclude, chunk_size=chunk_size,
                              n_threads=n_threads, progress=progress)
    pstats = group_statistics(pred, perturbation_key, layer=layer, normalize=None if resolved == "log1p" else "log1p",
                              target_sum=target_sum, chunk_size=chunk_size, n_threads=n_threads, progress=progress)
    prow = pd.Index(pstats.groups.astype(str)).get_indexer(perturbations)
    pcol = pd.Index(pstats.genes.astype(str)).get_indexer(genes)
    pred_mean = np.asarray(pstats.mean)[np.ix_(prow, pcol)]
    pred_var = np.asarray(pstats.var)[np.ix_(prow, pcol)]
    pred_n = np.asarray(pstats.n_cells)[prow]

    no_baselines = baselines is None or (not isinstance(baselines, str) and len(baselines) == 0)
    base = {} if no_baselines else make_baselines(summary, baselines, seed=seed, targets=targets)
    # name -> (pred means, pred var, pred n, which truth); arrays read-only so that metrics can share
    # intermediates computed from the same objects (shared_intermediates)
    truths = {"full": (summary.mean, summary.var, summary.n_cells),
              "half_a": (summary.half_a_mean, summary.half_a_var, summary.half_a_n)}
    sides = {MODEL: (_frozen(pred_mean), pred_var, pred_n, "full")}
    for name, b in base.items():
        if b.truth == "half_a":
            sides[name] = (_frozen(b.mean), summary.half_b_var, summary.half_b_n, "half_a")
        else:
            sides[name] = (_frozen(b.mean), summary.var, summary.n_cells, "full")
    if calibrate and base:
        roles = {positive} | ({"mean", "mean_all", "control"} if negative == "auto" else {negative})
        absent = sorted(r for r in roles if r not in base)
        if absent:
            raise MissingKeyError(f"calibration needs the baselines {absent}; add them to baselines= or pass "
                                  "calibrate=False.")

    weightings = {k: None if w is None else _frozen(w) for k, w in _weightings(weights, perturbations, genes).items()}
    centroid = summary.mean.mean(axis=0)
    reference_vectors = {"control": summary.control_mean, "perturbed_centroid": centroid}
    # one row of the output per (metric, reference, weighting)
    jobs = [(spec, ref, wname, w) for spec in specs for ref in _spec_references(spec, refs)
            for wname, w in (weightings if spec.weighted else {"uniform": None}).items()]
    results: dict[tuple[str, str, str], dict[str, np.ndarray]] = {(j[0].name, j[1], j[2]): {} for j in jobs}
    _score_sides(jobs, results, sides, truths, summary, perturbations, genes, refs, reference_vectors, tindex, alpha,
                 de_calls)

    _score_cells_and_guides(jobs, results, pred, truth, sides, summary, perturbations, genes, tindex,
                            perturbation_key=perturbation_key, control=control, counts=resolved == "counts",
                            layer=layer, target_sum=target_sum, seed=seed,
                            cells_per_perturbation=cells_per_perturbation, escape=escape, pred_escape=pred_escape,
                            guide_key=guide_key, chunk_size=chunk_size, n_threads=n_threads)

    records: list[pd.DataFrame] = []
    summaries: list[dict[str, Any]] = []
    for spec, ref, wname, _ in jobs:
        neg_name = _negative_for(spec, ref) if negative == "auto" else negative
        frame, row = _tabulate(spec, ref, wname, results[(spec.name, ref, wname)], perturbations, list(base),
                               neg_name, positive, dict(n_boot=n_boot, level=level, seed=seed) if calibrate else None)
        records.append(frame)
        summaries.append(row)

    values = pd.concat(records, ignore_index=True)
    summary_table = pd.DataFrame(summaries).set_index(["metric", "weighting", "reference"]).sort_index()
    params = {
        "perturbation_key": perturbation_key, "control": control, "scale": summary.scale, "layer": layer,
        "target_sum": target_sum, "metrics": [s.name for s in specs], "weightings": list(weightings),
        "references": refs, "baselines": {n: b.params.get("kind") for n, b in base.items()},
        "negative": negative, "positive": positive, "calibrate": calibrate, "n_boot": n_boot, "level": level,
        "seed": seed, "alpha": alpha, "pred_control_cells_ignored": pred_control_cells,
        "duplicates_scored_against": "half_a", "de_calls": de_calls, "de_test": _DE_DESCRIPTION[de_calls],
        "truth_cells": truth_cells, "escape_threshold": escape_threshold if truth_cells == "perturbed" else None,
        "truth_cells_excluded": int(exclude.sum()) if exclude is not None else 0, "guide_key": guide_key,
        "targets_measured": int((tindex >= 0).sum()),
    }
    return MetricTable(values, summary_table, perturbations, genes, params)
