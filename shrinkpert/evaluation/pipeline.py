r"""``evaluate(pred, truth)``: every metric × weighting × reference, with baselines and calibration.

Pipeline (two streaming passes, one over each file; cells × genes are never densified), as the
named steps of :mod:`shrinkpert.evaluation.steps`:

1. **Validation** (:func:`~shrinkpert.evaluation.read_inputs`, at the boundary
   :func:`shrinkpert._validate.validate`). Same genes (a
   :class:`~shrinkpert.errors.GeneMismatchError` lists the genes missing on either side; a
   different order is fine and is aligned), same perturbations (the control and ``exclude``
   labels left out), same scale: with ``scale="auto"`` both sides go through
   :func:`~shrinkpert.baselines.detect_scale`, which raises when the scale is ambiguous, and the
   two must agree. The truth needs at least 3 control cells.
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

from collections.abc import Mapping, Sequence
from typing import Any

from .._vocab import CONTROL, PERTURBATION_KEY
from ..errors import InputError
from .config import EvaluationConfig
from .manifest import run_manifest
from .partition import shard_record, shard_rows
from .steps import (
    DEFAULT_REFERENCES,
    make_sides,
    read_inputs,
    score,
    summarise,
    summarise_train,
    tabulate,
    train_means,
)
from .table import MetricTable, stack_truths

__all__ = ["evaluate", "DEFAULT_REFERENCES"]


def evaluate(
    pred: Any,
    truth: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    exclude: Sequence[str] | None = None,
    train: Any = None,
    metrics: str | Sequence[str] = "default",
    weights: Any = "auto",
    references: Any = DEFAULT_REFERENCES,
    baselines: str | Sequence[str] | None = "default",
    escape: Any = None,
    pred_escape: Any = None,
    seed: int = 0,
    config: EvaluationConfig | None = None,
    **options: Any,
) -> MetricTable:
    r"""Score predicted cells against true cells with every metric, baseline and calibration.

    Parameters
    ----------
    pred, truth
        Cell-level AnnData (in memory or backed) or ``.h5ad`` paths with the same genes and the
        same perturbations in ``obs[perturbation_key]``; read in blocks, never modified.
        ``pred`` needs no control cells (any it has are ignored); ``truth`` needs at least 3.
        ``pred`` may be a mapping ``{model name: prediction}``: the truth is read once, the
        baselines and their scores are shared, and the table gains a ``model`` column (and a
        ``model`` level first in the summary's index).
    perturbation_key, control
        Label column and control label.
    exclude
        Labels left out of both sides (e.g. ``["unassigned"]``): their cells are neither scored
        nor predicted. Each label must occur in ``pred`` or ``truth``.
    train
        Cells of the *training* perturbations (AnnData, backed AnnData or ``.h5ad`` path), with
        their control cells if any. Adds the ``"train_centroid"`` reference and two baselines
        fitted on them, ``"train_mean"`` and (with control cells) ``"train_linear"``
        (Ahlmann-Eltze et al.'s PCA-ridge model). Refused when it shares cells or perturbations
        with ``truth``.
    metrics
        ``"default"`` or names from :data:`~shrinkpert.metrics.METRICS`. The default is every
        registered metric of means, deltas and DE calls; the target-gene metrics when some
        perturbation's target is a measured gene; ``penetrance_error`` when ``escape`` and
        ``pred_escape`` are given; ``dose_order_score`` when ``guide_key`` is given. The
        distribution metrics (``energy_distance``, ``mmd``) run only when named.
    weights
        ``"auto"`` (default): unweighted (``"uniform"``), the ``"shrunken"`` weights of each true
        perturbation against the control, and ``"population"`` weights when a population
        reference is configured — none of them depends on the other perturbations in the split.
        Or ``None`` (unweighted only), a :class:`~shrinkpert.GeneWeights` (named by its method)
        or a mapping name → :class:`GeneWeights` / array ``(n_genes,)`` or
        ``(n_perturbations, n_genes)`` (truth order). Weighted metrics are computed once per
        weighting besides ``"uniform"``; unweighted metrics only under ``"uniform"``.
    references
        Delta references (:mod:`shrinkpert.evaluation.references`): ``"auto"`` (default) is
        ``"control"`` (:math:`\bar x_p - \bar x_c`), plus ``"train_centroid"`` (the mean of the
        training perturbations' means) with ``train``, plus ``"population"`` (the per-gene log1p
        mean of an external :class:`~shrinkpert.PopulationReference`) with ``population=``. Or a
        list of these names, or ``"perturbed_centroid"`` (the scored perturbations' own centroid,
        Systema) with ``allow_leakage=True`` — its rows are flagged ``leakage``.
    baselines
        ``"default"`` (:data:`~shrinkpert.baselines.BASELINES`), a list of names (adding
        ``"linear"``/``"additive"``), or ``[]``/``None`` (no baselines; then no calibration).
    escape, pred_escape
        :class:`~shrinkpert.ontarget.EscapeResult` of :func:`~shrinkpert.ontarget.classify_escape`
        run on the true cells (raw counts) and on the predicted cells together with the real
        control cells. ``escape`` is needed by ``truth_cells="perturbed"`` and ``"weighted"``; both by
        ``penetrance_error`` (:math:`|\hat\pi_p - \pi_p|`).
    seed
        Fixes the half split, the random baselines, the cell samples and the bootstrap (the same
        seed gives the same table).
    config, **options
        How to read, score and calibrate: an :class:`~shrinkpert.EvaluationConfig`, and/or its
        field names as keyword arguments, which override it — ``scale``, ``layer``,
        ``target_sum``, ``targets``, ``negative``, ``positive``, ``calibrate``, ``n_boot``,
        ``level``, ``alpha``, ``de_calls``, ``truth_cells``, ``escape_threshold``,
        ``guide_key``, ``cells_per_perturbation``, ``allow_leakage``, ``population``,
        ``relationships`` / ``gene_sets`` (add the biology metrics), ``preset`` (``"vcc2026"``:
        cell-eval2's VCC 2026 preset, see :mod:`shrinkpert.evaluation.presets`; ``"cell-eval-v1"``),
        ``truth_effects`` (``"shrunk"``: score against the ash posterior means of the true effects;
        ``("raw", "shrunk")``: both, side by side in a ``truth`` column),
        ``chunk_size``, ``n_threads``, ``progress``, ``shard`` (``(i, N)``: score one block of the
        perturbations, :mod:`shrinkpert.evaluation.partition`) (documented there). An unknown name raises :class:`~shrinkpert.errors.InputError`.

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
        Unknown metric, column, control label, ``exclude`` label or baseline role.
    NotImplementedError
        ``"additive"`` on data without combinations.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> truth = sp.datasets.papalexi2021()
    >>> table = sp.evaluate(truth, truth, exclude=["unassigned"], metrics=["mse", "pearson_delta"], n_boot=100)
    >>> row = table.summary().loc[("pearson_delta", "uniform", "control")]
    >>> round(float(row["mean"]), 9), row["negative"], row["positive"]
    (1.0, 'mean', 'technical_duplicate')
    """
    config = (config or EvaluationConfig()).replace(**options)
    call = {"perturbation_key": perturbation_key, "control": control, "exclude": exclude, "metrics": metrics,
            "weights": weights if weights is None or isinstance(weights, str) else "<given>",
            "references": references, "baselines": baselines, "seed": seed, "preset": config.preset}
    if config.preset == "vcc2026":
        from .presets import evaluate_vcc2026

        if isinstance(pred, Mapping) or train is not None or exclude is not None:
            raise InputError("preset='vcc2026' scores one prediction against its truth as cell-eval2 does; pass "
                             "neither several models, train= nor exclude= (subset the files instead).")
        table = evaluate_vcc2026(pred, truth, perturbation_key=perturbation_key, control=control, seed=seed,
                                 config=config, baselines=baselines)
        shard = None
        if config.shard is not None:  # the table's perturbations are the shard's
            from .presets import score_perturbations

            perts = score_perturbations(truth, perturbation_key, control)
            shard = shard_record(perts, config.shard, shard_rows(len(perts), config.shard))
        return table.with_manifest(run_manifest(pred=pred, truth=truth, call=call, config=config, shard=shard))
    if config.preset == "cell-eval-v1":
        from .presets import preset_options

        fixed = preset_options("cell-eval-v1", metrics=metrics, weights=weights, references=references)
        metrics, weights, references = fixed["metrics"], fixed["weights"], fixed["references"]
    inputs = read_inputs(pred, truth, perturbation_key=perturbation_key, control=control, exclude=exclude,
                         config=config)
    summaries = summarise(inputs, config=config, seed=seed, escape=escape)
    train_stats = None if train is None else summarise_train(train, inputs, perturbation_key=perturbation_key,
                                                             control=control, exclude=exclude, config=config)
    sides = make_sides(summaries, baselines=baselines, config=config, seed=seed, train=train_stats)
    train_mean = None if train_stats is None else train_means(train_stats, inputs.genes, control)
    rows = shard_rows(len(inputs.perturbations), config.shard)
    # one score and table per truth (raw pseudobulks, shrunken effects); several are stacked
    truths = (config.truth_effects,) if isinstance(config.truth_effects, str) else config.truth_effects
    runs = {name: config.replace(truth_effects=name) for name in truths}
    scored = {name: score(inputs, summaries, sides, metrics=metrics, weights=weights, references=references,
                          config=runs[name], seed=seed, escape=escape, pred_escape=pred_escape, train_mean=train_mean,
                          rows=rows)
              for name in truths}
    scores = scored[truths[0]]
    record = {
        "perturbation_key": perturbation_key, "control": control, "exclude": list(inputs.truth.excluded),
        **config.to_dict(), "scale": inputs.scale, "seed": seed,
        "baselines": {name: sides.kind(name) for name in sides if name != "model"},
        "models": list(inputs.models),
        "pred_control_cells_ignored": (inputs.preds["model"].n_control if inputs.models == ("model",)
                                       else {name: d.n_control for name, d in inputs.preds.items()}),
        "duplicates_scored_against": "half_a",
        "truth_cells_excluded": summaries.truth_cells_excluded, **scores.params,
        "train_perturbations": 0 if train_mean is None else int(train_mean.shape[0]),
    }
    if config.truth_cells != "perturbed":
        record["escape_threshold"] = None
    record["manifest"] = run_manifest(pred=pred, truth=truth, train=train, call=call, config=config,
                                      shard=shard_record(inputs.perturbations, config.shard, rows))
    tables = {name: tabulate(scored[name], config=runs[name], seed=seed,
                             params={"genes": inputs.genes, "record": {**record, **scored[name].params}})
              for name in truths}
    return tables[truths[0]] if isinstance(config.truth_effects, str) else stack_truths(tables)
