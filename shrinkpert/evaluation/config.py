"""The options of :func:`~shrinkpert.evaluate` that are not inputs: one frozen record.

:func:`~shrinkpert.evaluate` takes its inputs (the prediction, the truth, what to score and the
escape calls) as keyword arguments and everything that tunes *how* it scores as an
:class:`EvaluationConfig` — either ``config=EvaluationConfig(...)`` or the same names as keyword
arguments, which override the config's fields. Presets of published evaluators plug in here.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._vocab import TARGET_SUM
from ..errors import InputError

__all__ = ["EvaluationConfig", "DE_CALLS", "DE_TESTS", "TRUTH_CELLS", "TRUTH_EFFECTS"]

#: How DE genes are called: Welch t-test + BH, or ash local false sign rates.
DE_CALLS = ("test", "lfsr")
#: The test behind ``de_calls="test"``: Welch on pseudobulks, or Wilcoxon rank-sum on cells.
DE_TESTS = ("welch", "wilcoxon")
#: Which true cells define the truth.
TRUTH_CELLS = ("all", "perturbed", "weighted")
#: What the sides are scored against: raw true pseudobulks or the shrunken true effects.
TRUTH_EFFECTS = ("raw", "shrunk")


@dataclass(frozen=True)
class EvaluationConfig:
    r"""How :func:`~shrinkpert.evaluate` reads, scores and calibrates (every field has a default).

    Parameters
    ----------
    scale : {"auto", "log1p", "counts"}
        ``"auto"`` detects each side (raises when ambiguous or when they disagree); ``"log1p"``
        (natural log1p of counts per ``target_sum``, used as stored) or ``"counts"``
        (log1p-normalised while reading), for both sides.
    layer : str, optional
        Layer to read instead of ``X`` (both sides).
    target_sum : float
        Normalisation total of counts.
    targets : mapping, optional
        Perturbation → target gene (default: the label when it is a measured gene); the target is
        excluded from rank metrics' distances and used by the linear baseline.
    negative, positive : str
        Baselines used as negative and positive controls; ``negative="auto"`` picks per metric
        (see :mod:`shrinkpert.evaluation.pipeline`).
    calibrate : bool
        Compute calibrated scores, DRF, BDS and bootstrap intervals.
    n_boot, level : int, float
        Bootstrap replicates over perturbations and the interval's coverage.
    alpha : float
        Significance level of DE calls.
    de_calls : {"test", "lfsr"}
        Welch t-test against the observed control (control variance floor) with BH within each
        perturbation, or ash's local false sign rate of the same effects.
    de_test : {"welch", "wilcoxon"}
        The test of ``de_calls="test"``: Welch on the pseudobulk means and variances, or the
        Wilcoxon rank-sum test of each perturbation's cells against the true control cells
        (:func:`~shrinkpert.stats.wilcoxon.wilcoxon_de`; counts are ranked as log1p of counts per
        ``target_sum``), BH within each perturbation; the fold changes are the same mean
        differences either way (:mod:`shrinkpert.evaluation.rank_calls`).
    truth_cells : {"all", "perturbed", "weighted"}
        Every true cell; (escape-aware) the cells called perturbed in ``escape``; or every cell
        weighted by its posterior probability of being perturbed
        (:func:`~shrinkpert.ontarget.perturbed_weights`): weighted means, reliability-weighted
        variances and Kish effective cell counts :math:`(\sum w)^2/\sum w^2`, so that DE calls
        and standard-error based metrics see the weighted mean's own standard error. The
        distribution metrics draw and weight true cells the same way
        (:mod:`shrinkpert.evaluation.cells`).
    escape_threshold : float
        Cells with ``p_perturbed`` below it are escapers (``truth_cells="perturbed"``).
    guide_key : str, optional
        ``obs`` column of guides in both inputs; enables ``dose_order_score``.
    cells_per_perturbation : int
        Cells drawn per perturbation for the distribution metrics.
    allow_leakage : bool
        Allow the ``"perturbed_centroid"`` reference (the scored perturbations' own centroid);
        its rows are flagged ``leakage`` (see :mod:`shrinkpert.evaluation.references`).
    population : PopulationReference or path, optional
        An external, split-independent reference: adds the ``"population"`` delta reference and
        ``"population"`` gene weights to the defaults.
    relationships : str, path or DataFrame, optional
        Known gene pairs (a bundled set such as ``"reactome"``, a pair/GMT file, or a DataFrame with
        ``gene_a, gene_b``): adds ``relationship_recall`` and ``map_agreement``.
    gene_sets : mapping or DataFrame, optional
        Gene sets (name -> genes): adds ``pathway_activity`` and ``map_agreement``.
    preset : {None, "vcc2026", "cell-eval-v1"}
        A published evaluator's fixed settings (:mod:`shrinkpert.evaluation.presets`).
    truth_effects : {"raw", "shrunk"} or sequence of them
        Score against the raw true pseudobulks or against the ash posterior means of the true
        effects (:func:`~shrinkpert.evaluation.references.shrunk_truth`); a sequence such as
        ``("raw", "shrunk")`` scores against each, side by side: the table gains a ``truth``
        column (and index level), and each truth's rows equal those of a run with that truth alone.
    chunk_size, n_threads
        As in :func:`~shrinkpert.group_statistics`. ``n_threads`` also bounds the scoring: with
        two threads or more (and Numba's ``omp`` or ``tbb`` threading layer) two sides are scored
        at once, each in its own thread; ``n_threads=1`` scores one side at a time. The values are
        the same either way, bit for bit; two sides at once hold two sides' intermediates.
    progress : bool
        Progress bars over the streaming passes (as in :func:`~shrinkpert.group_statistics`) and
        over the scoring: one step per side, once per block of rows and once per pass of the rank
        metrics (the long part at thousands of perturbations). Each pass is also logged at INFO.
    shard : (int, int), optional
        ``(i, N)``: score only the ``i``-th of ``N`` blocks of the sorted perturbations; merge the
        partial tables with :func:`~shrinkpert.evaluation.partition.merge_tables`
        (:mod:`shrinkpert.evaluation.partition`).
    """

    scale: str = "auto"
    layer: str | None = None
    target_sum: float = TARGET_SUM
    targets: Mapping[str, str] | None = None
    negative: str = "auto"
    positive: str = "technical_duplicate"
    calibrate: bool = True
    n_boot: int = 1000
    level: float = 0.95
    alpha: float = 0.05
    de_calls: str = "test"
    de_test: str = "welch"
    truth_cells: str = "all"
    escape_threshold: float = 0.5
    guide_key: str | None = None
    cells_per_perturbation: int = 100
    allow_leakage: bool = False
    population: Any = None
    relationships: Any = None
    gene_sets: Any = None
    preset: str | None = None
    truth_effects: str = "raw"
    chunk_size: int | None = None
    n_threads: int | None = None
    progress: bool = False
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        from .partition import check_shard

        object.__setattr__(self, "shard", check_shard(self.shard))
        if self.scale not in ("auto", "log1p", "counts"):
            raise InputError(f"scale must be 'auto', 'log1p' or 'counts', got {self.scale!r}.")
        if self.de_calls not in DE_CALLS:
            raise InputError(f"de_calls must be one of {DE_CALLS}, got {self.de_calls!r}.")
        if self.de_test not in DE_TESTS:
            raise InputError(f"de_test must be one of {DE_TESTS}, got {self.de_test!r}.")
        if self.de_test == "wilcoxon" and self.de_calls != "test":
            raise InputError("de_test='wilcoxon' gives p-values, not the standard errors ash needs; use it with "
                             "de_calls='test'.")
        if self.truth_cells not in TRUTH_CELLS:
            raise InputError(f"truth_cells must be one of {TRUTH_CELLS}, got {self.truth_cells!r}.")
        if not 0 < self.escape_threshold < 1:
            raise InputError(f"escape_threshold must lie in (0, 1), got {self.escape_threshold!r}.")
        if not isinstance(self.truth_effects, str):  # several truths, side by side
            object.__setattr__(self, "truth_effects", tuple(self.truth_effects))
        effects = (self.truth_effects,) if isinstance(self.truth_effects, str) else self.truth_effects
        if not effects or len(set(effects)) != len(effects) or not set(effects) <= set(TRUTH_EFFECTS):
            raise InputError(f"truth_effects must be 'raw', 'shrunk' or a sequence of distinct ones such as "
                             f"('raw', 'shrunk'), got {self.truth_effects!r}.")
        if self.preset not in (None, "vcc2026", "cell-eval-v1"):
            raise InputError(f"preset must be None, 'vcc2026' or 'cell-eval-v1', got {self.preset!r}.")
        if not 0 < self.level < 1:
            raise InputError(f"level must lie in (0, 1), got {self.level!r}.")
        if int(self.n_boot) != self.n_boot or self.n_boot < 0:
            raise InputError(f"n_boot must be a non-negative integer, got {self.n_boot!r}.")
        if self.targets is not None:
            object.__setattr__(self, "targets", MappingProxyType({str(k): str(v) for k, v in self.targets.items()}))

    def replace(self, **options: Any) -> EvaluationConfig:
        """A copy with ``options`` changed; an unknown name raises with the closest names."""
        names = [f.name for f in dataclasses.fields(self)]
        unknown = [k for k in options if k not in names]
        if unknown:
            hints = {k: difflib.get_close_matches(k, names, n=2) for k in unknown}
            shown = "; ".join(f"{k!r}" + (f" (did you mean {v}?)" if v else "") for k, v in hints.items())
            raise InputError(f"evaluate: unknown option {shown}. Options: {names}.")
        return dataclasses.replace(self, **options) if options else self

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dictionary (for manifests)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["targets"] = dict(self.targets) if self.targets is not None else None
        if not isinstance(self.truth_effects, str):
            out["truth_effects"] = list(self.truth_effects)
        if self.population is not None:
            out["population"] = getattr(self.population, "name", str(self.population))
        for name in ("relationships", "gene_sets"):
            value = getattr(self, name)
            out[name] = value if value is None or isinstance(value, str) else type(value).__name__
        return out
