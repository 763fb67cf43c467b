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

import functools
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import freeze
from .._forms import AffineForm
from .._validate import CellData, check_excluded, validate
from ..errors import GeneMismatchError, InputError, MissingKeyError
from ..metrics import DECalls, MetricSpec
from ..metrics.expression import checked_once
from ..metrics.shared import SharedIntermediates, reuse
from .cells import distribution_values, sample_plan, truth_draw_weights
from .config import EvaluationConfig
from .rank_calls import WILCOXON_DESCRIPTION, rank_calls
from .registry import METRICS
from .references import auto_weights, reference_vectors, resolve_references, shrunk_truth
from .table import MetricTable

__all__ = ["EvaluationInputs", "Summaries", "Side", "Sides", "Scores", "read_inputs", "summarise", "make_sides", "score",
           "tabulate", "DEFAULT_REFERENCES", "MODEL"]

log = logging.getLogger("shrinkpert")

#: References of delta metrics computed by default: the control, plus the training centroid when
#: ``train`` is given and the population when a reference is given.
DEFAULT_REFERENCES = "auto"
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
    preds : mapping of str to CellData
        The encoded predictions by model name (``{"model": ...}`` for a single prediction).
    truth : CellData
        The encoded truth.
    perturbations, genes : pandas.Index
        Scored perturbations (sorted) and genes (the truth's order).
    scale : {"counts", "log1p"}
        The common scale.
    target_index : ndarray of int64
        Column of each perturbation's target gene, -1 when not measured (read-only).
    """

    preds: Mapping[str, CellData]
    truth: CellData
    perturbations: pd.Index
    genes: pd.Index
    scale: str
    target_index: np.ndarray

    @property
    def models(self) -> tuple[str, ...]:
        """Model names, in the order given."""
        return tuple(self.preds)


def read_inputs(pred: Any, truth: Any, *, perturbation_key: str, control: str, exclude: Sequence[str] | None,
                config: EvaluationConfig) -> EvaluationInputs:
    """Step 1: validate both inputs once and check that they pair (see the module docstring).

    ``pred`` is one prediction or a mapping ``{model name: prediction}`` (several models against
    one truth: the truth is read once, baselines and calibration are shared).

    Raises
    ------
    GeneMismatchError
        The gene sets differ (both differences are listed).
    InputError
        The perturbations or scales differ (the message says which side lacks what and how to fix it).
    MissingKeyError
        A column, the control (in the truth) or an ``exclude`` label is absent.
    """
    t = validate(truth, side="truth", perturbation_key=perturbation_key, control=control, layer=config.layer,
                 exclude=exclude, scale=config.scale)
    named = dict(pred) if isinstance(pred, Mapping) else {MODEL: pred}
    if not named:
        raise InputError("pred is an empty mapping; pass a prediction or {model name: prediction}.")
    preds = {}
    for name, one in named.items():
        if not isinstance(name, str) or not name:
            raise InputError(f"model names must be non-empty strings, got {name!r}.")
        side = "pred" if not isinstance(pred, Mapping) else f"pred {name!r}"
        preds[name] = validate(one, side=side, perturbation_key=perturbation_key, control=control,
                               layer=config.layer, exclude=exclude, scale=config.scale, require_control=False)
        _check_pair(preds[name], t, control)
    check_excluded(exclude, t, *preds.values())
    targets = dict(config.targets) if config.targets is not None else {}
    names = [targets.get(q, q) for q in t.perturbations]
    tindex = freeze(np.array([t.genes.get_loc(g) if g in t.genes else -1 for g in names], dtype=np.int64))
    return EvaluationInputs(preds, t, t.perturbations, t.genes, t.scale, tindex)


def _check_pair(p: CellData, t: CellData, control: str) -> None:
    """Same genes (any order), perturbations and scale, or an error saying which side lacks what."""
    name = p.side
    if not p.genes.equals(t.genes):
        missing, extra = t.genes.difference(p.genes), p.genes.difference(t.genes)
        if len(missing) or len(extra):
            raise GeneMismatchError(
                f"{name} and truth have different genes: {len(missing)} truth genes missing from {name} "
                f"(e.g. {missing[:10].tolist()}), {len(extra)} {name} genes not in truth (e.g. "
                f"{extra[:10].tolist()}). Subset both to the same genes (order may differ)."
            )
    if not p.perturbations.equals(t.perturbations):
        lacking, unknown = t.perturbations.difference(p.perturbations), p.perturbations.difference(t.perturbations)
        raise InputError(
            f"{name} and truth have different perturbations: missing from {name} {lacking[:10].tolist()}, not in "
            f"truth {unknown[:10].tolist()}. Predict every true perturbation, or leave labels out of both sides "
            f"with exclude=[...] (the control label is {control!r})."
        )
    if p.scale != t.scale:
        raise InputError(
            f"{name} looks like {p.scale} but truth like {t.scale}; put both on one scale (counts, or natural log1p "
            "of counts per target_sum) or pass scale= explicitly."
        )


# =========================================================================== 2. summarise


@dataclass(frozen=True)
class Summaries:
    """Pseudobulks of both sides (the result of :func:`summarise`).

    Attributes
    ----------
    truth : TruthSummary
        Full and split-half pseudobulks of the true cells and the observed control.
    preds : mapping of str to (mean, var, n)
        Per model: its means and ddof=1 variances ``(n_perturbations, n_genes)``, aligned to the
        truth, and its cells per perturbation.
    truth_cells_excluded : int
        True cells left out as escapers (``truth_cells="perturbed"``).
    """

    truth: Any
    preds: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    truth_cells_excluded: int


def summarise(inputs: EvaluationInputs, *, config: EvaluationConfig, seed: int, escape: Any = None) -> Summaries:
    """Step 2: one streaming pass over each input (see the module docstring), two at a time when
    Numba's threads allow (as for the sides, :func:`_side_workers`)."""
    from ..baselines import summarize_truth
    from ..stats.group import group_statistics

    exclude = _escape_exclusions(inputs.truth, escape, config.truth_cells, config.escape_threshold)
    stream = dict(target_sum=config.target_sum, chunk_size=config.chunk_size, n_threads=config.n_threads,
                  progress=config.progress)
    weights = None
    if config.truth_cells == "weighted":
        from ..ontarget import perturbed_weights

        weights = perturbed_weights(escape)

    def one_pass(name: str | None) -> Any:
        if name is None:  # the truth
            return summarize_truth(inputs.truth, perturbation_key=inputs.truth.perturbation_key,
                                   control=inputs.truth.control, scale=inputs.scale, seed=seed, exclude=exclude,
                                   weights=weights, **stream)
        data = inputs.preds[name]
        pstats = group_statistics(data, data.labels(), normalize=None if inputs.scale == "log1p" else "log1p",
                                  **stream)
        prow = pd.Index(pstats.groups.astype(str)).get_indexer(inputs.perturbations)
        pcol = pd.Index(pstats.genes.astype(str)).get_indexer(inputs.genes)
        return (freeze(np.asarray(pstats.mean)[np.ix_(prow, pcol)]),
                freeze(np.asarray(pstats.var)[np.ix_(prow, pcol)]), freeze(np.asarray(pstats.n_cells)[prow]))

    # the passes run two at a time (one pass leaves part of two cores idle: reading, then a kernel)
    passes = [None, *inputs.preds]
    done = dict(_in_order(one_pass, passes, _side_workers(config, len(passes))))
    truth = done.pop(None)
    preds = done
    return Summaries(truth=truth, preds=preds,
                     truth_cells_excluded=int(exclude.sum()) if exclude is not None else 0)


def summarise_train(train: Any, inputs: EvaluationInputs, *, perturbation_key: str, control: str,
                    exclude: Sequence[str] | None, config: EvaluationConfig) -> Any:
    """Group statistics of the training cells (their perturbations and any control cells).

    The training cells must share no cell and no perturbation with the truth
    (:func:`~shrinkpert.baselines.check_disjoint` raises a :class:`~shrinkpert.errors.LeakageError`
    naming them), and be on the truth's scale with all of its genes.
    """
    from ..baselines import check_disjoint
    from ..stats.group import group_statistics

    data = validate(train, side="train", perturbation_key=perturbation_key, control=control, layer=config.layer,
                    exclude=exclude, scale=config.scale, require_control=False)
    check_disjoint(data.obs.loc[data.codes >= 0], inputs.truth.obs.loc[inputs.truth.codes >= 0],
                   perturbation_key=perturbation_key, control=control)
    if data.scale != inputs.scale:
        raise InputError(f"train looks like {data.scale} but truth like {inputs.scale}; use one scale.")
    missing = inputs.genes.difference(data.genes)
    if len(missing):
        raise GeneMismatchError(f"train lacks {len(missing)} truth genes (e.g. {missing[:10].tolist()}).")
    if len(data.perturbations) == 0:
        raise InputError("train has no perturbation besides the control; pass cells of training perturbations.")
    return group_statistics(data, data.labels(), normalize=None if inputs.scale == "log1p" else "log1p",
                            target_sum=config.target_sum, chunk_size=config.chunk_size, n_threads=config.n_threads)


def train_means(train_stats: Any, genes: pd.Index, control: str) -> np.ndarray:
    """Means of the training perturbations (control left out), rows in label order, ``genes`` columns."""
    labels = pd.Index(train_stats.groups.astype(str))
    rows = np.flatnonzero(labels != control)
    return freeze(np.asarray(train_stats.mean)[np.ix_(rows, train_stats.genes.get_indexer(genes))])


def _escape_exclusions(truth: CellData, escape: Any, truth_cells: str, threshold: float) -> np.ndarray | None:
    """Cells left out of the truth: escapers when ``truth_cells="perturbed"`` (checks ``escape`` for both)."""
    from ..ontarget import EscapeResult, escaper_cells

    if escape is not None and not isinstance(escape, EscapeResult):
        raise InputError(f"escape must be the EscapeResult of classify_escape(truth), got {type(escape).__name__}.")
    if truth_cells == "all":
        return None
    if escape is None:
        raise InputError(f"truth_cells={truth_cells!r} needs escape=classify_escape(<true cells, raw counts>).")
    if not pd.Index(truth.obs.index).astype(str).equals(escape.obs_names):
        raise InputError("escape was computed on other cells than truth (names or order differ); run "
                         "classify_escape on the same data.")
    if truth_cells == "weighted":  # no cell left out: each is weighted (summarise, perturbed_weights)
        return None
    return escaper_cells(escape, threshold)


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
    form : AffineForm or None
        ``mean`` declared affine in the full truth's means (a baseline's
        :attr:`~shrinkpert.baselines.BaselinePrediction.form`), for the rank metrics' products.
    """

    mean: np.ndarray
    var: np.ndarray
    n: np.ndarray
    truth: str
    kind: str
    form: AffineForm | None = None


class Sides(Mapping[str, Side]):
    """The sides by name, the models first (the result of :func:`make_sides`).

    A baseline's :class:`Side` is built each time it is read: holding every baseline at once
    costs one perturbations × genes array each (16 by default), so :func:`score` reads them one
    at a time and only the side being scored is in memory. :meth:`kind` and :meth:`truth` need no
    build. :meth:`keeping` gives the same sides with built baselines kept up to a number of bytes
    (for scoring in several passes), the costliest to build per byte first.
    """

    def __init__(self, entries: Mapping[str, tuple[str, str, Callable[[], Side]]], keep_bytes: int = 0,
                 borrowed: Sequence[np.ndarray] = (), clock: Callable[[], float] = time.perf_counter) -> None:
        self._entries = dict(entries)  # name -> (kind, truth, build)
        self._budget = self._room = keep_bytes  # the budget, and what is left of it
        self._borrowed = tuple(borrowed)
        self._clock = clock
        self._kept: dict[str, tuple[Side, int, float]] = {}  # name -> (side, bytes, seconds to build)
        self._lock = threading.Lock()

    def keeping(self, keep_bytes: int, borrowed: Sequence[np.ndarray] = ()) -> Sides:
        """These sides, built baselines kept while the kept arrays total at most ``keep_bytes``
        (arrays in ``borrowed``, the truth's variances and cells that baselines carry, are alive
        anyway and not counted); the others are built on every read.

        What is kept is what saves the most time per byte: a side that does not fit replaces kept
        sides that took less time to build per byte, when together they took less time than it.
        Which sides are kept depends on measured build times, never on their values (a side is
        built the same each time).
        """
        return Sides(self._entries, keep_bytes, borrowed, self._clock)

    def __getitem__(self, name: str) -> Side:
        with self._lock:
            kept = self._kept.get(name)
        if kept is not None:
            return kept[0]
        kind, _, build = self._entries[name]
        start = self._clock()
        side = build()
        if self._budget > 0 and kind != "model":  # a model's side is its arrays, already alive
            size = sum(a.nbytes for a in (side.mean, side.var, side.n)
                       if a is not None and not any(a is b for b in self._borrowed))
            with self._lock:
                self._offer(name, side, size, self._clock() - start)
        return side

    def _offer(self, name: str, side: Side, size: int, seconds: float) -> None:
        """Keep a side just built if it fits, or if it fits once kept sides that are cheaper per
        byte and cheaper in all than it are dropped (called under the lock)."""
        if name in self._kept or size > self._budget:
            return
        free, dropped, saved = self._room, [], 0.0
        for other, (_, n_bytes, secs) in sorted(self._kept.items(), key=lambda kv: kv[1][2] / max(kv[1][1], 1)):
            if free >= size or secs * max(size, 1) >= seconds * max(n_bytes, 1):  # at least as costly per byte
                break
            free, saved = free + n_bytes, saved + secs
            dropped.append(other)
        if free < size or (dropped and saved >= seconds):
            return
        for other in dropped:
            self._room += self._kept.pop(other)[1]
        self._room -= size
        self._kept[name] = (side, size, seconds)

    def __iter__(self):
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def kind(self, name: str) -> str:
        """``"model"`` or the baseline's role, without building it."""
        return self._entries[name][0]

    def truth(self, name: str) -> str:
        """The truth a side is scored against (``"full"`` or ``"half_a"``), without building it."""
        return self._entries[name][1]


def make_sides(summaries: Summaries, *, baselines: Any, config: EvaluationConfig, seed: int,
               train: Any = None) -> Sides:
    """Step 3: the model and every baseline as :class:`Side` objects, the models first.

    The baselines are planned, not built (:func:`~shrinkpert.baselines.plan_baselines`): each is
    built when :func:`score` reads it. With training statistics (``train``), two baselines fitted
    on them join the others: ``"train_mean"`` (the mean of the training perturbations, Mejia et
    al.'s mean / cell-eval's cell mean) and ``"train_linear"`` (Ahlmann-Eltze et al.'s PCA-ridge
    model; only when the training cells include controls).
    """
    from ..baselines import plan_baselines, train_linear, train_mean

    s = summaries.truth
    entries: dict[str, tuple[str, str, Callable[[], Side]]] = {
        name: ("model", "full", functools.partial(Side, mean, var, n, "full", "model"))
        for name, (mean, var, n) in summaries.preds.items()}
    none = baselines is None or (not isinstance(baselines, str) and len(baselines) == 0)
    plans = {} if none else {name: (p.kind, p.truth, p.build)
                             for name, p in plan_baselines(s, baselines, seed=seed, targets=config.targets).items()}
    if train is not None and not none:
        fitted = {"train_mean": train_mean(train, s.perturbations, control=s.control, genes=s.genes)}
        if s.control in set(train.groups.astype(str)):
            try:
                fitted["train_linear"] = train_linear(train, s.perturbations, control=s.control,
                                                      targets=config.targets, genes=s.genes)
            except InputError as exc:  # e.g. too few training perturbations target a measured gene
                log.info("evaluate: no train_linear baseline (%s)", exc)
        plans.update({name: (str(b.params.get("kind")), b.truth, (lambda b=b: b))
                      for name, b in fitted.items()})
    for name, (kind, truth, build) in plans.items():
        if name in entries:
            raise InputError(f"The baseline {name!r} has the name of a model; rename the model.")
        entries[name] = (kind, truth, functools.partial(_baseline_side, build, s))
    if config.calibrate and plans:
        roles = {config.positive} | ({"mean", "mean_all", "control"} if config.negative == "auto"
                                     else {config.negative})
        absent = sorted(r for r in roles if r not in plans)
        if absent:
            raise MissingKeyError(f"calibration needs the baselines {absent}; add them to baselines= or pass "
                                  "calibrate=False.")
    return Sides(entries)


def _baseline_side(build: Callable[[], Any], s: Any) -> Side:
    """A baseline built, as a :class:`Side`: its DE test borrows the truth's variance and cells
    (half B's for the duplicates), unless it is made of cells (an exploit arm) and brings its own."""
    b = build()
    half = b.truth == "half_a"
    var, n = (s.half_b_var, s.half_b_n) if half else (s.var, s.n_cells)
    if b.var is not None:
        var, n = b.var, b.n
    return Side(b.mean, var, n, b.truth, str(b.params.get("kind")), b.form)


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
        Side names, the models first.
    models : tuple of str
        The scored predictions among the sides.
    perturbations : pandas.Index
    params : mapping
        What the scoring used (weightings, references, metrics, DE test).
    ceilings : mapping
        ``ceilings[(metric, reference, weighting)]``: the analytic noise ceiling (mean over
        perturbations of the expected score of a prediction equal to the true population mean,
        :func:`~shrinkpert.calibration.noise_ceiling`), where a closed form exists.
    """

    jobs: tuple
    values: Mapping[tuple[str, str, str], Mapping[str, np.ndarray]]
    sides: tuple[str, ...]
    models: tuple[str, ...]
    perturbations: pd.Index
    params: Mapping[str, Any]
    ceilings: Mapping[tuple[str, str, str], float] = field(default_factory=dict)


def resolve_metrics(metrics: Any, *, targets_measured: bool, penetrance: bool, dose: bool,
                    relationships: bool = False, gene_sets: bool = False) -> list[MetricSpec]:
    """The specs to compute; ``"default"`` is every metric the given inputs allow (see evaluate)."""
    biology = {"relationship_recall": relationships, "map_agreement": relationships or gene_sets,
               "pathway_activity": gene_sets}
    if isinstance(metrics, str) and metrics == "default":
        return [s for s in METRICS.values()
                if (s.needs in ("means", "deltas", "de") and (s.kind not in ("target", "biology") or
                                                            (s.kind == "target" and targets_measured)))
                or (s.kind == "biology" and biology[s.name])
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
        if spec.name == "relationship_recall" and not relationships:
            raise InputError("metrics: 'relationship_recall' needs relationships= (a bundled set's name such as "
                             "'reactome', or a DataFrame with gene_a, gene_b).")
        if spec.name == "pathway_activity" and not gene_sets:
            raise InputError("metrics: 'pathway_activity' needs gene_sets= (set name -> genes).")
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
            values = np.asarray(w.values)  # read-only: used as it is when already in the truth's order
            same = (values.shape == (len(rows), len(cols)) and np.array_equal(rows, np.arange(len(rows)))
                    and np.array_equal(cols, np.arange(len(cols))))
            out[str(name)] = values if same and not values.flags.writeable else freeze(values[np.ix_(rows, cols)])
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
             genes: pd.Index, method: str = "test", welch_cache: dict | None = None,
             alpha: float | None = None) -> DECalls:
    r"""DE calls of one side against the observed control (``de_calls`` of :func:`~shrinkpert.evaluate`).

    The one Welch test of the package (:func:`~shrinkpert.stats.testing.welch`, control variance
    floor) on the variance terms :math:`s^2/n`, an undefined variance (one cell) counting as 0; then
    BH within each perturbation (``"test"``), or ash on the same effects and standard errors
    (``"lfsr"``: ``lfc`` = posterior mean, ``q`` = local false sign rate). The standard errors
    depend on ``var`` and ``n`` only: ``welch_cache`` keeps them per (``var``, ``n``) array pair, so
    the baselines, which carry the truth's variances, share one Welch test (the arrays must stay
    alive and unchanged while the cache is used).

    With ``alpha`` (``"test"`` only), ``q`` is exact where ``q < alpha`` and 1 elsewhere (the
    pruning rule of :func:`~shrinkpert.stats.testing.welch_bh`): for metrics that read only the
    calls (:data:`~shrinkpert.metrics.de.Q_USE`). Without it the calls carry the order in which
    BH sorted the p-values (``q_order``), which the ranking metrics reuse.
    """
    from ..effects import ash_batch
    from ..stats.testing import welch_bh

    lfc = mean - truth.control_mean[None, :]  # (as versus_control computes it)
    test = reuse(welch_cache, (id(var), id(n)), lambda: truth.welch_versus_control(var, n))
    if method == "test":
        q, order = welch_bh(lfc, test, alpha=alpha)
        return DECalls(lfc=freeze(lfc), q=freeze(q), perturbations=perturbations, genes=genes,
                       q_order=None if order is None else freeze(order))
    fit = ash_batch(lfc, test.std_error, tol=1e-5, max_iter=200)
    return DECalls(lfc=np.nan_to_num(fit.posterior_mean), q=np.clip(np.nan_to_num(fit.lfsr, nan=1.0), 0.0, 1.0),
                   perturbations=perturbations, genes=genes)


def score(inputs: EvaluationInputs, summaries: Summaries, sides: Mapping[str, Side], *, metrics: Any,
          weights: Any, references: Any, config: EvaluationConfig, seed: int, escape: Any = None,
          pred_escape: Any = None, train_mean: np.ndarray | None = None, rows: np.ndarray | None = None) -> Scores:
    """Step 4: every (metric, reference, weighting) for every side.

    ``rows``: positions of the perturbations to score (a shard, see
    :mod:`shrinkpert.evaluation.partition`); the others still serve as candidates of rank metrics.

    Side by side (the model, then each baseline; two sides at once in threads, see
    :func:`_score_rows`), so that a side's intermediates (deltas, DE calls, ranks, distance
    matrices) are shared by its metrics through
    :class:`~shrinkpert.metrics.shared.SharedIntermediates` and dropped when the side is done; the
    truth's are shared by all sides.
    """
    refs, population = resolve_references(references, train=train_mean is not None,
                                          allow_leakage=config.allow_leakage, population=config.population)
    weights = auto_weights(weights, summaries.truth, population=population)
    vectors = reference_vectors(refs, summaries.truth, inputs.genes, population=population, train_mean=train_mean)
    tindex = inputs.target_index
    specs = resolve_metrics(metrics, targets_measured=bool((tindex >= 0).any()),
                            penetrance=escape is not None and pred_escape is not None,
                            dose=config.guide_key is not None, relationships=config.relationships is not None,
                            gene_sets=config.gene_sets is not None)
    weightings = _weightings(weights, inputs.perturbations, inputs.genes)
    jobs = tuple((spec, ref, wname) for spec in specs for ref in _spec_references(spec, refs)
                 for wname in (weightings if spec.weighted else ("uniform",)))
    values: dict[tuple[str, str, str], dict[str, np.ndarray]] = {(s.name, r, w): {} for s, r, w in jobs}
    _score_pseudobulks(jobs, values, inputs, summaries, sides, weightings, refs, vectors, config, rows=rows)
    _score_cells_and_guides(jobs, values, inputs, summaries, sides, config, seed, escape, pred_escape, rows=rows)
    params = {"metrics": [s.name for s in specs], "weightings": list(weightings), "references": refs,
              "leakage": "perturbed_centroid" in refs, "truth_effects": config.truth_effects,
              "uniform_weight_fallback": {name: list(w.params.get("uniform_fallback", []))
                                          for name, w in (weights.items() if isinstance(weights, Mapping) else [])
                                          if hasattr(w, "params") and w.params.get("uniform_fallback")},
              "population_reference": getattr(population, "name", None),
              "de_test": _DE_DESCRIPTION[config.de_calls] if config.de_test == "welch" else WILCOXON_DESCRIPTION,
              "targets_measured": int((tindex >= 0).sum())}
    scored = inputs.perturbations if rows is None else inputs.perturbations[rows]
    return Scores(jobs, values, tuple(sides), inputs.models, scored, params,
                  MappingProxyType(_ceilings(jobs, summaries.truth, weightings, config)))


def _ceilings(jobs, truth: Any, weightings: Mapping[str, np.ndarray | None],
              config: EvaluationConfig) -> dict[tuple[str, str, str], float]:
    """Closed-form noise ceilings of the metrics that have one, against the raw truth and the control."""
    from ..calibration.ceiling import CLOSED_FORMS, noise_ceiling

    if config.truth_effects != "raw":
        return {}

    def one(job: tuple[MetricSpec, str, str]) -> float:
        spec, _, wname = job
        fit = noise_ceiling(truth.mean, truth.var, truth.n_cells, truth.control_mean, truth.control_var,
                            truth.control_n, spec.name, weights=weightings[wname], method="closed_form")
        expected = np.asarray(fit.expected, dtype=np.float64)
        return float(np.nanmean(expected)) if np.isfinite(expected).any() else np.nan

    todo = [job for job in jobs if job[0].name in CLOSED_FORMS and job[1] in ("none", "control")]
    return {(spec.name, ref, wname): value
            for (spec, ref, wname), value in _in_order(one, todo, _side_workers(config, len(todo)))}


#: Perturbation × gene entries per block of rows scored at once by the metrics of one
#: perturbation at a time (32 MB per float64 array); more rows are scored in blocks ...
_BLOCK_ENTRIES = 4_000_000
#: ... but in at most this many blocks (each block builds every side once more) ...
_MAX_BLOCKS = 8
#: ... unless it is kept: built baselines kept across the passes, up to this many bytes.
_KEEP_BYTES = 1 << 30
#: P x P products of the truth per weighting of the rank metrics, at most (T and U of per-row weights) ...
_TRUTH_PRODUCTS = 2
#: ... and for all weightings (its own product, from which the baselines declared affine in it take theirs).
_TRUTH_PRODUCTS_ANY = 1


def _score_pseudobulks(jobs, values, inputs: EvaluationInputs, summaries: Summaries, sides: Mapping[str, Side],
                       weightings: Mapping[str, np.ndarray | None], refs: list[str],
                       vectors: Mapping[str, np.ndarray], config: EvaluationConfig,
                       rows: np.ndarray | None = None) -> None:
    """Fill the metrics of means, deltas and DE calls; the others get NaN here (filled later).

    With ``rows``, metrics of one perturbation at a time see only those rows; the others (rank,
    biology) are computed over all perturbations and keep those rows.

    Memory: with more than :data:`_BLOCK_ENTRIES` perturbation × gene entries, the metrics of
    one perturbation at a time (:data:`~.partition.ROW_SEPARABLE`) are scored on blocks of as
    many rows as make that many entries (at most :data:`_MAX_BLOCKS` blocks), every side on one
    block before the next block, so that their intermediates (deltas, ranks, DE calls; the
    truth's shared by all sides) exist for one block at a time. The metrics that need every row
    (rank, biology) then take the sides once per input, every weighting in the same pass, when
    the truth's P × P products under all weightings (at most :data:`_TRUTH_PRODUCTS` per
    weighting and :data:`_TRUTH_PRODUCTS_ANY` for all) fit in :data:`_KEEP_BYTES`: what a side
    computes under the weights 1 (its P × P product, its L1 standing) then also serves the rows of
    per-perturbation weights that are uniform (:mod:`shrinkpert.metrics.rank`). Else they take
    them once per (input, weighting), so that the truth's products under one weighting go before
    the next one's are made. Each side is therefore read once per block and once per pass of those
    metrics; built baselines are kept for the next read up to :data:`_KEEP_BYTES`, the costliest
    to build per byte first (the others are built again). A row's value does not depend on the
    other rows, so the result equals one block's bit for bit (what makes shards exact, see
    :mod:`~shrinkpert.evaluation.partition`).
    """
    from .partition import ROW_SEPARABLE

    sel = np.arange(len(inputs.perturbations)) if rows is None else np.asarray(rows)
    step = max(1, _BLOCK_ENTRIES // max(1, len(inputs.genes)), -(-sel.size // _MAX_BLOCKS))
    # the Wilcoxon test ranks every cell: run once, its calls cut per block
    needs_ranks = config.de_test == "wilcoxon" and any(spec.needs == "de" for spec, _, _ in jobs)
    ranked = rank_calls(inputs, summaries, config, rows=rows) if needs_ranks else None
    blocks = np.array_split(np.arange(sel.size), -(-sel.size // step)) if sel.size > step else []
    whole = [job for job in jobs if job[0].kind not in ROW_SEPARABLE]
    # the weightings of one input together when the truth's P x P products under all of them fit the budget
    n_weightings = len({wname for _, _, wname in whole})
    n_products = _TRUTH_PRODUCTS * n_weightings + _TRUTH_PRODUCTS_ANY
    together = n_products * 8 * len(inputs.perturbations) ** 2 <= _KEEP_BYTES
    groups: dict[tuple[str, ...], list] = {}
    for job in whole:
        ref = _data_ref(*job[:2], refs)
        groups.setdefault((ref,) if together else (ref, job[2]), []).append(job)
    n_passes = len(blocks) + len(groups) if blocks else 1
    if n_passes > 1 and isinstance(sides, Sides):  # read once per pass: keep what was built
        t = summaries.truth
        sides = sides.keeping(_KEEP_BYTES, (t.var, t.n_cells, t.half_b_var, t.half_b_n))
    with _scoring_progress(n_passes * len(sides), config.progress) as bar:
        args = (inputs, summaries, sides, weightings, refs, vectors, config, bar)
        if not blocks:
            _score_rows(jobs, values, *args, rows=rows, ranked=ranked)
            return
        apart = [job for job in jobs if job[0].kind in ROW_SEPARABLE]
        pieces: dict[tuple[str, str, str], dict[str, list[np.ndarray]]] = {}
        for k, at in enumerate(blocks):  # positions within sel
            log.info("evaluate: metrics of one perturbation at a time, block %d of %d (%d rows)",
                     k + 1, len(blocks), at.size)
            part = {(s.name, r, w): {} for s, r, w in apart}
            _score_rows(apart, part, *args, rows=sel[at], ranked=None if ranked is None else ranked.take(at))
            for key, by_side in part.items():
                for name, v in by_side.items():
                    pieces.setdefault(key, {}).setdefault(name, []).append(v)
        for key, by_side in pieces.items():
            values[key].update({name: np.concatenate(v) for name, v in by_side.items()})
        for (ref, *_), group in groups.items():
            log.info("evaluate: metrics over every perturbation (%s), %s reference, %s weights",
                     ", ".join(sorted({spec.kind for spec, _, _ in group})), ref,
                     ", ".join(dict.fromkeys(wname for _, _, wname in group)))
            _score_rows(group, values, *args, rows=rows)


def _scoring_progress(total: int, enabled: bool):
    """A progress bar over the sides scored (each side once per block or pass), shown when ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="side", desc="shrinkpert: scoring")


def _data_ref(spec: MetricSpec, ref: str, refs: list[str]) -> str:
    """What a job's data are taken against: ``ref``, or ``"none"`` (the means; DE calls test against the control).

    Reference-free rank metrics (distances of differences, centroid accuracy) take the first
    reference's deltas: the same distances as the means' up to rounding, and the products and
    standings of the other rank metrics under that reference serve them too.
    """
    if spec.kind == "rank" and spec.reference_free and refs:
        return refs[0]
    return "none" if spec.needs in ("means", "de") or spec.reference_free else ref


def _score_rows(jobs, values, inputs: EvaluationInputs, summaries: Summaries, sides: Mapping[str, Side],
                weightings: Mapping[str, np.ndarray | None], refs: list[str], vectors: Mapping[str, np.ndarray],
                config: EvaluationConfig, bar: Any, rows: np.ndarray | None = None, ranked: Any = None) -> None:
    """:func:`_score_pseudobulks` of ``jobs`` on ``rows`` (all rows if None), side by side;
    ``ranked``: the Wilcoxon calls of these rows (:class:`~.rank_calls.RankCalls`), if used;
    ``bar``: the progress bar, advanced once per side.

    Sides are scored by :func:`_side_workers` threads at once (each side's metrics in its own
    thread, the truth's intermediates computed once and shared, see :class:`~shrinkpert.metrics.shared.OnceScope`);
    their values are collected in side order, so the table does not depend on which thread
    finished first, and each side's values depend on its own inputs only.
    """
    from ..metrics.shared import OnceScope
    from .partition import ROW_SEPARABLE

    truth = summaries.truth
    perts, genes, tindex = inputs.perturbations, inputs.genes, inputs.target_index
    sel = slice(None) if rows is None else np.asarray(rows)
    if rows is not None and sel.size and (np.diff(sel) == 1).all():  # a block of consecutive rows:
        sel = slice(int(sel[0]), int(sel[-1]) + 1)  # its selections are views, not copies per metric
    n_out = len(perts[sel])
    truths = {"full": (truth.mean, truth.var, truth.n_cells),
              "half_a": (truth.half_a_mean, truth.half_a_var, truth.half_a_n)}
    order = _truths_of(sides)
    last = {which: name for name, which in order.items()}  # the last side scored against each truth
    # what the sides are scored against: raw pseudobulks, or the truth's shrunken effects
    # (each of these truth caches is filled on first use and dropped after the last side on that truth;
    # keyed by (truth, part): the shard's or block's rows when part, else all rows)
    targets = OnceScope()
    shrunk = config.truth_effects == "shrunk"
    target = lambda which, part, own: reuse(targets, (which, part), lambda: (  # noqa: E731
        shrunk_truth(*(x[own] for x in truths[which]), truth) if shrunk else truths[which][0][own]))
    # one Welch standard error per (variance, cells) array pair, shared by the baselines that carry the
    # truth's variances; keyed by identity, so only for whole arrays that stay alive (not a shard's slices)
    welch_cache: dict | None = OnceScope() if rows is None else None
    cut = (lambda x: x) if rows is None else (lambda x: x[sel])
    prune = _pruned_sides(jobs, config)
    truth_de = OnceScope({"full": ranked.truth} if ranked is not None else {})
    truth_calls = lambda which: reuse(truth_de, which, lambda: de_calls(  # noqa: E731
        *(cut(x) for x in truths[which]), truth, perts[sel], genes, config.de_calls, welch_cache, prune["truth"]))
    truth_deltas = OnceScope()
    truth_checked: dict = {}  # the truth's arrays and the weights, value-checked once for every side
    # extra inputs of the biology metrics, resolved once (a bundled set is read from disk)
    biology = {"relationships": {} if config.relationships is None else
               {"relationships": _relationships(config.relationships), "targets": _target_names(inputs, config)},
               "gene_sets": {"gene_sets": config.gene_sets, "genes": list(genes)}}
    # the truth's intermediates, per (truth, input, weighting); each side gets fresh prediction caches
    truth_scopes: dict[tuple, OnceScope] = {}
    # each weighting's jobs together (references in their order), so that a side's products and
    # ranks under one weighting (P × P each) go before the next weighting's are made
    ordered = sorted(jobs, key=lambda job: list(weightings).index(job[2]))

    def score_side(name: str) -> dict[tuple[str, str, str], np.ndarray]:
        which = order[name]
        log.debug("evaluate: scoring %s", name)
        side = sides[name]
        # the side's DE test shares the Welch errors of the truth's variances it carries (baselines);
        # other arrays (the model's, an arm's) are tested once and not kept
        shared_var = any(side.var is v and side.n is c for v, c in ((truth.var, truth.n_cells),
                                                                    (truth.half_b_var, truth.half_b_n)))
        mine: dict[tuple[str, str, str], np.ndarray] = {}
        pred_deltas: dict = {}  # (reference, part) -> the side's deltas; "means" -> its means
        # the means as one C-contiguous array: a profile broadcast to every row is copied once for
        # all the metrics of the side, not once per metric
        means = lambda: reuse(pred_deltas, "means", lambda: (  # noqa: E731
            side.mean if side.mean.flags.c_contiguous else freeze(np.ascontiguousarray(side.mean))))
        # the side's form in terms of what it is compared with: the truth's means, or their deltas
        form_of = lambda data_ref, on_means: None if side.form is None else (  # noqa: E731
            side.form if on_means else reuse(pred_deltas, ("form", data_ref),
                                             lambda: side.form.shifted(vectors[data_ref])))
        pred_de = None
        pred_scopes: dict[tuple, dict] = {}
        checked: dict = {}  # this side's arrays, value-checked once for all its metrics
        current = None
        for spec, ref, wname in ordered:
            if wname != current:  # the previous weighting's jobs are done
                for key in [k for k in pred_scopes if len(k) == 3 and k[1] == current]:
                    del pred_scopes[key]
                current = wname
            key = (spec.name, ref, wname)
            if spec.needs in ("penetrance", "dose", "cells"):
                mine[key] = np.full(n_out, np.nan)
                continue
            if spec.reference_free and ref not in ("none", refs[0]):
                mine[key] = mine[(spec.name, refs[0], wname)]
                continue
            data_ref = _data_ref(spec, ref, refs)
            on_means = data_ref == "none" and spec.needs != "de"
            part = rows is not None and spec.kind in ROW_SEPARABLE  # computed on the shard's rows only
            own = sel if part else slice(None)
            kwargs: dict[str, Any] = {}
            if weightings[wname] is not None:
                kwargs["weights"] = weightings[wname][own]
            parameters = _parameters(spec)
            if "target_index" in parameters:
                kwargs["target_index"] = tindex[own]
            if "relationships" in parameters:
                kwargs.update(biology["relationships"])
            if "gene_sets" in parameters:
                kwargs.update(biology["gene_sets"])
            if "shared" in parameters:
                kwargs["shared"] = SharedIntermediates(
                    pred=pred_scopes.setdefault((data_ref, wname, part), {}),
                    truth=truth_scopes.setdefault((which, data_ref, wname, part), OnceScope()),
                    pred_any_weights=pred_scopes.setdefault((data_ref, part), {}),  # shared by the weightings
                    truth_any_weights=truth_scopes.setdefault((which, data_ref, part), OnceScope()),
                    form=(form_of(data_ref, on_means) if spec.kind == "rank" and which == "full" and not shrunk
                          and not part else None))
            if on_means:
                a, b = means()[own], target(which, part, own)
            elif spec.needs != "de":  # deltas
                a = reuse(pred_deltas, (data_ref, part),
                          lambda: freeze(side.mean[own] - vectors[data_ref][None, :]))
                b = reuse(truth_deltas, (which, data_ref, part),
                          lambda: freeze(target(which, part, own) - vectors[data_ref][None, :]))
            else:  # de
                if ranked is not None and name not in ranked.models:  # a baseline has no cells to rank
                    mine[key] = np.full(n_out, np.nan)
                    continue
                if pred_de is None:
                    pred_de = (ranked.models[name] if ranked is not None else
                               de_calls(cut(side.mean), cut(side.var), cut(side.n), truth, perts[sel], genes,
                                        config.de_calls, welch_cache if shared_var else None, prune["pred"]))
                a, b = pred_de, truth_calls(which)
                kwargs["alpha"] = config.alpha
            # the truth's arrays and the weights are checked once for every side (selections of
            # scattered rows are fresh copies: checked with the side's, not kept beyond it)
            lasting = checked if part and not isinstance(sel, slice) else truth_checked
            with checked_once(lasting, b, weights=kwargs.get("weights")), checked_once(checked, a):
                result = np.asarray(spec(a, b, **kwargs), dtype=np.float64).reshape(-1)
            mine[key] = (result if part else result[sel]).reshape(n_out)
        bar.update(1)
        return mine

    for name, mine in _in_order(score_side, list(order), _side_workers(config, len(order))):
        for key, result in mine.items():
            values[key][name] = result
        which = order[name]
        if last[which] == name:  # no side left on this truth: drop its intermediates
            # (list(): one atomic copy of the keys while the other thread may add some)
            for cache in (truth_scopes, truth_deltas, targets):
                for key in [k for k in list(cache) if k[0] == which]:
                    del cache[key]
            truth_de.pop(which, None)
            if which == "half_a" and welch_cache is not None:
                for pair in ((truth.half_a_var, truth.half_a_n), (truth.half_b_var, truth.half_b_n)):
                    welch_cache.pop((id(pair[0]), id(pair[1])), None)


def _side_workers(config: EvaluationConfig, n_sides: int) -> int:
    """How many sides are scored at once: one per Numba thread (at most two), one when Numba's
    threading layer cannot run parallel kernels from several threads (``workqueue``)."""
    from .._numba import resolve_threads, threading_layer

    if threading_layer() not in ("omp", "tbb"):
        return 1
    return max(1, min(2, resolve_threads(config.n_threads), n_sides))


def _in_order(func: Callable[[Any], Any], names: list[Any], workers: int):
    """``(name, func(name))`` for each of ``names`` (sides, or any items) in their order, ``workers``
    calls running at once in threads, each with the calling thread's Numba thread count; one
    worker: in this thread."""
    if workers == 1:
        for name in names:
            yield name, func(name)
        return
    from concurrent.futures import ThreadPoolExecutor

    import numba

    from .._numba import one_thread_blas, thread_limit

    n_threads = numba.get_num_threads()

    def run(name: str) -> Any:
        with thread_limit(n_threads):
            return func(name)

    # BLAS in one thread for the pool's whole life (each side's products already run in Numba's
    # threads), set before the first side starts and restored after the last one ends
    with one_thread_blas():
        pool = ThreadPoolExecutor(workers, thread_name_prefix="shrinkpert-side")
        futures = [pool.submit(run, name) for name in names]
        try:
            for name, future in zip(names, futures):
                yield name, future.result()
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def _truths_of(sides: Mapping[str, Side]) -> dict[str, str]:
    """Side name -> the truth it is scored against, without building a planned side."""
    truth_of = sides.truth if isinstance(sides, Sides) else (lambda name: sides[name].truth)
    return {name: truth_of(name) for name in sides}


def _pruned_sides(jobs, config: EvaluationConfig) -> dict[str, float | None]:
    """``alpha`` for the side (``"pred"``, ``"truth"``) whose ``q`` every DE metric of ``jobs``
    reads only through ``q < alpha`` (:data:`~shrinkpert.metrics.de.Q_USE`; an unknown metric reads
    the values), else None: where the DE calls may be pruned."""
    from ..metrics.de import Q_USE

    uses = [Q_USE.get(spec.func, ("values", "values")) for spec, _, _ in jobs if spec.needs == "de"]
    ok = config.de_calls == "test"
    return {side: config.alpha if ok and all(u[k] != "values" for u in uses) else None
            for k, side in enumerate(("pred", "truth"))}


def _relationships(value: Any) -> pd.DataFrame:
    """A bundled set's name or a path (read with :func:`~shrinkpert.biology.read_relationships`), or pairs."""
    from ..biology import BUNDLED, load_relationships, read_relationships

    if isinstance(value, str) and value in BUNDLED:
        return load_relationships(value)
    if isinstance(value, (str, os.PathLike)):
        return read_relationships(value)
    return value


def _target_names(inputs: EvaluationInputs, config: EvaluationConfig) -> list[str]:
    """Target gene of each scored perturbation (``targets`` or the label itself)."""
    targets = dict(config.targets) if config.targets is not None else {}
    return [targets.get(p, p) for p in inputs.perturbations]


@functools.lru_cache(maxsize=None)
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
                            pred_escape: Any, rows: np.ndarray | None = None) -> None:
    """Fill the metrics of cells (model, control and technical duplicate), penetrance and guides (model)."""
    specs = {spec.name: spec for spec, _, _ in jobs}
    perts = inputs.perturbations if rows is None else inputs.perturbations[rows]
    cell_specs = [spec for spec in specs.values() if spec.needs == "cells"]
    draw = truth_draw_weights(escape, config.truth_cells, config.escape_threshold) if cell_specs else None
    for k, (model, pred) in enumerate(inputs.preds.items()):
        if cell_specs:  # the plan's draws follow all sorted labels; a shard keeps its perturbations' rows
            plan = sample_plan(inputs.truth, pred, inputs.perturbations, config.cells_per_perturbation, seed,
                               truth_weights=draw)
            plan = {p: plan[p] for p in perts}
            cell_values = distribution_values(cell_specs, pred, inputs.truth, plan, counts=inputs.scale == "counts",
                                              target_sum=config.target_sum, chunk_size=config.chunk_size,
                                              truth_weights=draw if config.truth_cells == "weighted" else None)
            for spec in cell_specs:
                for side, side_values in cell_values[spec.name].items():
                    target = model if side == MODEL else side
                    if target in sides and (side == MODEL or k == 0):  # controls: from the first model's draw
                        values[(spec.name, "none", "uniform")][target] = side_values
        for spec in specs.values():
            if spec.needs == "penetrance":
                escaped = pred_escape[model] if isinstance(pred_escape, Mapping) else pred_escape
                p = _penetrances(escaped, perts, "pred_escape")
                t = _penetrances(escape, perts, "escape")
                ok = np.isfinite(p) & np.isfinite(t)
                result = np.where(ok, spec(np.where(ok, p, 0), np.where(ok, t, 0)), np.nan)
            elif spec.needs == "dose":
                responses = [_guide_responses(data, inputs, summaries.truth.control_mean, config)
                             for data in (pred, inputs.truth)]
                both = responses[0].index.intersection(responses[1].index)
                by_pert = spec(responses[0][both].to_numpy(), responses[1][both].to_numpy(),
                               groups=both.get_level_values(0))
                result = by_pert.reindex(perts).to_numpy(dtype=np.float64)
            else:
                continue
            values[(spec.name, "none", "uniform")][model] = result


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
    base = [s for s in scores.sides if s not in scores.models]
    several = scores.models != (MODEL,)
    records, rows = [], []
    draws = None  # the bootstrap draws over perturbations, made once for every metric (and the exploit flags)
    if base:
        from ..calibration.bootstrap import resample_indices

        draws = resample_indices(len(scores.perturbations), config.n_boot, seed)
    bootstrap = dict(n_boot=config.n_boot, level=config.level, seed=seed, indices=draws) if config.calibrate else None

    def one(item: tuple[str, tuple[MetricSpec, str, str]]) -> tuple[pd.DataFrame, dict[str, Any]]:
        model, (spec, ref, wname) = item
        negative = negative_for(spec, ref) if config.negative == "auto" else config.negative
        return _tabulate_one(spec, ref, wname, scores.values[(spec.name, ref, wname)], model, scores.perturbations,
                             base, negative, config.positive, bootstrap,
                             exploit=None if draws is None else (draws, config.level))

    # every (model, metric, reference, weighting) on its own (the bootstrap draws are shared, read only),
    # two at a time like the sides; collected in order
    items = [(model, job) for model in scores.models for job in scores.jobs]
    for (model, (spec, ref, wname)), (frame, row) in _in_order(one, items, _side_workers(config, len(items))):
        row["ceiling"] = scores.ceilings.get((spec.name, ref, wname), np.nan)
        if several:
            frame.insert(0, "model", model)
            row = {"model": model, **row}
        records.append(frame)
        rows.append(row)
    values = pd.concat(records, ignore_index=True)
    index = ["model", "metric", "weighting", "reference"] if several else ["metric", "weighting", "reference"]
    summary = pd.DataFrame(rows).set_index(index).sort_index()
    return MetricTable(values, summary, scores.perturbations, params["genes"], params["record"])


def _tabulate_one(spec: MetricSpec, ref: str, wname: str, vals: Mapping[str, np.ndarray], model: str,
                  perturbations: pd.Index, base: list[str], neg_name: str, positive: str,
                  bootstrap: Mapping[str, Any] | None,
                  exploit: tuple[np.ndarray, float] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Long-table rows and the summary row of one (metric, reference, weighting); ``exploit`` is
    ``(bootstrap draws, level)`` for the exploit arms' paired intervals."""
    from ..baselines import ADVERSARIAL, EXPLOITS, exploit_advantage, exploitable_arms
    from ..baselines.exploits import TARGET_ARMS
    from ..calibration import calibrate as calibrate_metric

    model = vals[model]
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
    if ref == "perturbed_centroid":
        flags.append("leakage")
    row["flags"] = ";".join(flags)
    lower = {}
    for arm in (a for a in EXPLOITS if a in base and exploit is not None):
        point, lower[arm] = exploit_advantage(vals[arm], vals[neg_name], greater_is_better=spec.greater_is_better,
                                              indices=exploit[0], level=exploit[1])
        row.update({f"advantage_{arm}": point, f"advantage_low_{arm}": lower[arm]})
    arms = exploitable_arms(lower, skip=TARGET_ARMS if spec.kind == "target" else ())
    row.update(exploitable=bool(arms), exploit_arms=",".join(arms))
    row.update(greater_is_better=spec.greater_is_better, negative=neg_name if base else "",
               positive=positive if base else "", n_valid=int(np.isfinite(model).sum()))
    for name in base:
        row[f"baseline_{name}"] = _finite_mean(vals[name])
    return frame, row
