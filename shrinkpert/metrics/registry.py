"""The metric registry: every metric registered once, with its direction and what it needs.

:data:`METRICS` is built once at import from a fixed tuple of :class:`MetricSpec` and cannot be
changed afterwards (no ``register``; the mapping, the specs and their keyword arguments are all
read-only). To score with extra metrics, build a new registry with
:meth:`MetricRegistry.with_metrics`; the global one is untouched (unlike cell-eval's
``update_metric_kwargs`` or scikit-learn's mutable scorer dict).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pandas as pd

from ..errors import InputError, MissingKeyError
from . import target_gene as prediction
from . import de, distribution, expression, rank

__all__ = ["KINDS", "NEEDS", "MetricSpec", "MetricRegistry", "METRICS"]

#: Metric families.
KINDS = ("expression", "rank", "de", "distribution", "target", "biology")

#: What a metric is computed from: pseudobulk ``means`` (profiles), ``deltas`` (effects from a
#: reference), ``de`` (:class:`~shrinkpert.metrics.DECalls` of both sides), ``cells``,
#: ``penetrance`` (one fraction of perturbed cells per perturbation, from
#: :func:`~shrinkpert.ontarget.classify_escape` on each side) or ``dose`` (one downstream response
#: per guide).
NEEDS = ("means", "deltas", "de", "cells", "penetrance", "dose")


@dataclass(frozen=True, eq=False)
class MetricSpec:
    """One registered metric.

    Parameters
    ----------
    name : str
        Registry key (peer names kept where a peer defines the metric, e.g. ``overlap_at_N``).
    func : callable
        ``func(pred, truth, **kwargs)``: the plain array-level function.
    greater_is_better : bool
        Direction.
    best : float
        The value of a perfect prediction.
    kind : {"expression", "rank", "de", "distribution", "target"}
        Family.
    needs : {"means", "deltas", "de", "cells", "penetrance", "dose"}
        Input type of ``pred`` and ``truth``.
    weighted : bool
        Whether ``func`` accepts gene ``weights``.
    kwargs : mapping
        Fixed keyword arguments (e.g. ``metric="l1"``); callers cannot override them.
    nan_policy : str
        When the metric returns NaN (every metric raises on non-finite input).
    description : str
        One line.
    origin : str
        Whose definition this follows, and any deliberate difference.
    aliases : tuple of str
        Other names the registry accepts for this metric.
    reference_free : bool
        The value does not depend on a reference vector subtracted from both sides (e.g. MSE of
        deltas, L1/L2 distances between deltas): :func:`~shrinkpert.evaluate` computes it
        once and reports it under every reference (rank metrics on the first reference's deltas,
        sharing that reference's products; the others on the means).
    references : tuple of str, optional
        The delta references the metric is defined for (``None``: any). Target-gene changes are
        changes from the control, so those metrics take ``("control",)``.
    """

    name: str
    func: Callable[..., Any]
    greater_is_better: bool
    best: float
    kind: str
    needs: str
    weighted: bool
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    nan_policy: str = ""
    description: str = ""
    origin: str = ""
    aliases: tuple[str, ...] = ()
    reference_free: bool = False
    references: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"MetricSpec {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}.")
        if self.needs not in NEEDS:
            raise InputError(f"MetricSpec {self.name!r}: needs must be one of {NEEDS}, got {self.needs!r}.")
        if not callable(self.func):
            raise InputError(f"MetricSpec {self.name!r}: func must be callable.")
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if self.references is not None:
            object.__setattr__(self, "references", tuple(self.references))
        object.__setattr__(self, "best", float(self.best))

    def __call__(self, pred: Any, truth: Any, **kwargs: Any) -> Any:
        """Compute the metric: ``func(pred, truth, **fixed_kwargs, **kwargs)``."""
        fixed = set(kwargs) & set(self.kwargs)
        if fixed:
            raise InputError(
                f"Metric {self.name!r} fixes {sorted(fixed)} = {[self.kwargs[k] for k in sorted(fixed)]}; "
                f"call {self.func.__name__}() directly for other values."
            )
        if not self.weighted and "weights" in kwargs:
            if kwargs.pop("weights") is not None:
                raise InputError(f"Metric {self.name!r} does not take gene weights.")
        return self.func(pred, truth, **self.kwargs, **kwargs)

    def is_better(self, a: float, b: float) -> bool:
        """True if value ``a`` is strictly better than value ``b`` for this metric."""
        return a > b if self.greater_is_better else a < b


class MetricRegistry(Mapping[str, MetricSpec]):
    """A read-only name -> :class:`MetricSpec` mapping (aliases resolve to their metric).

    Parameters
    ----------
    specs : iterable of MetricSpec
        Metrics, each name and alias used once.

    Raises
    ------
    InputError
        A name or alias is used twice.
    """

    __slots__ = ("_specs", "_aliases")

    def __init__(self, specs: Iterable[MetricSpec]) -> None:
        by_name: dict[str, MetricSpec] = {}
        aliases: dict[str, str] = {}
        for spec in specs:
            if not isinstance(spec, MetricSpec):
                raise InputError(f"MetricRegistry takes MetricSpec objects; got {type(spec).__name__}.")
            for key in (spec.name, *spec.aliases):
                if key in by_name or key in aliases:
                    raise InputError(f"Metric name {key!r} is registered twice; names and aliases must be unique.")
            by_name[spec.name] = spec
            aliases.update({a: spec.name for a in spec.aliases})
        object.__setattr__(self, "_specs", MappingProxyType(by_name))
        object.__setattr__(self, "_aliases", MappingProxyType(aliases))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("MetricRegistry is read-only; build a new one with with_metrics().")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("MetricRegistry is read-only.")

    def __getitem__(self, name: str) -> MetricSpec:
        key = self._aliases.get(name, name)
        try:
            return self._specs[key]
        except KeyError:
            close = difflib.get_close_matches(str(name), list(self._specs) + list(self._aliases), n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise MissingKeyError(f"No metric named {name!r}.{hint} Available: {sorted(self._specs)}.") from None

    def __contains__(self, name: object) -> bool:
        return name in self._specs or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)

    def __repr__(self) -> str:
        return f"MetricRegistry({len(self)} metrics: {', '.join(self._specs)})"

    def select(
        self,
        *,
        kind: str | None = None,
        needs: str | None = None,
        weighted: bool | None = None,
    ) -> MetricRegistry:
        """The metrics matching every given criterion, as a new registry."""
        for value, allowed, label in ((kind, KINDS, "kind"), (needs, NEEDS, "needs")):
            if value is not None and value not in allowed:
                raise InputError(f"{label} must be one of {allowed}; got {value!r}.")
        return MetricRegistry(
            s
            for s in self._specs.values()
            if (kind is None or s.kind == kind)
            and (needs is None or s.needs == needs)
            and (weighted is None or s.weighted == weighted)
        )

    def with_metrics(self, *specs: MetricSpec) -> MetricRegistry:
        """A new registry with ``specs`` added (this one is unchanged)."""
        return MetricRegistry([*self._specs.values(), *specs])

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: direction, best value, kind, needs, weighting, NaN policy, origin."""
        rows = [
            {
                "metric": s.name,
                "greater_is_better": s.greater_is_better,
                "best": s.best,
                "kind": s.kind,
                "needs": s.needs,
                "weighted": s.weighted,
                "aliases": ", ".join(s.aliases),
                "nan_policy": s.nan_policy,
                "description": s.description,
                "origin": s.origin,
            }
            for s in self._specs.values()
        ]
        return pd.DataFrame(rows).set_index("metric")


def _specs() -> tuple[MetricSpec, ...]:
    const = "a constant vector (over weighted genes) or all weights 0"
    out: list[MetricSpec] = []

    def add(name, func, greater, best, kind, needs, weighted, nan, description, origin, kwargs=None, aliases=(),
            reference_free=False, references=None):
        out.append(
            MetricSpec(
                name=name,
                func=func,
                greater_is_better=greater,
                best=best,
                kind=kind,
                needs=needs,
                weighted=weighted,
                kwargs=kwargs or {},
                nan_policy=nan,
                description=description,
                origin=origin,
                aliases=aliases,
                reference_free=reference_free,
                references=references,
            )
        )

    # expression
    for name, func, needs, what in (
        ("mse", expression.mse, "means", "Mean squared error of means"),
        ("mae", expression.mae, "means", "Mean absolute error of means"),
        ("rmse", expression.rmse, "means", "Root mean squared error of means"),
        ("mse_delta", expression.mse_delta, "deltas", "Mean squared error of deltas"),
        ("mae_delta", expression.mae_delta, "deltas", "Mean absolute error of deltas"),
    ):
        add(name, func, False, 0.0, "expression", needs, True, "all weights 0", what,
            "cell-eval / scikit-learn; weighted as Mejia et al. (normalised weights)",
            reference_free=needs == "deltas")  # (p - r) - (t - r) = p - t
    add("pearson_delta", expression.pearson_delta, True, 1.0, "expression", "deltas", True, const,
        "Pearson correlation of deltas", "cell-eval pearson_delta; weighted Pearson")
    add("r2_delta", expression.r2_delta, True, 1.0, "expression", "deltas", True,
        "constant true delta or all weights 0", "R² of true deltas by predicted deltas",
        "scikit-learn r2_score(sample_weight) as Mejia et al.; NaN (not 1 or 0) for a constant truth")
    add("cosine_delta", expression.cosine_delta, True, 1.0, "expression", "deltas", True,
        "a zero vector (over weighted genes) or all weights 0", "Cosine similarity of deltas", "PerturBench cosine")
    add("spearman_delta", expression.spearman_delta, True, 1.0, "expression", "deltas", True, const,
        "Spearman correlation of deltas", "TxPert spearman_delta; weighted mid-ranks")

    # rank
    for distance in ("l1", "l2", "cosine"):
        add(f"discrimination_score_{distance}", rank.discrimination_score, True, 1.0, "rank", "deltas", True,
            "a needed distance undefined (zero vector under cosine) or all weights 0",
            f"1 - normalised rank of the true effect among all true effects ({distance})",
            "cell-eval PDS (signed deltas, target excluded); exact ties count one half",
            kwargs={"metric": distance}, reference_free=distance != "cosine")  # distances of differences
    add("perturbench_rank", rank.perturbench_rank, False, 0.0, "rank", "deltas", True,
        "a needed distance undefined (zero vector) or all weights 0",
        "Rank of the own prediction among all predictions for each true effect (cosine)",
        "PerturBench rank (eq. 2); random tie-breaking replaced by its expectation",
        kwargs={"metric": "cosine"})
    add("perturbench_rank_transposed", rank.perturbench_rank_transposed, False, 0.0, "rank", "deltas", True,
        "a needed distance undefined (zero vector) or all weights 0",
        "Rank of the own true effect among all true effects for each prediction (cosine)",
        "PerturBench transposed rank (eq. 3)", kwargs={"metric": "cosine"})
    add("centroid_accuracy", rank.centroid_accuracy, True, 1.0, "rank", "means", True, "all weights 0",
        "Fraction of other true centroids farther (Euclidean) than the own one",
        "Systema centroid accuracy = Mejia et al. NIR", aliases=("normalized_inverse_rank",),
        reference_free=True)  # Euclidean distances of differences
    add("normed_retrieval", rank.normed_retrieval, True, 1.0, "rank", "deltas", True,
        "a constant delta or all weights 0",
        "Fraction of other true effects less Pearson-correlated than the own one",
        "TxPert normed_retrieval, normalised by P-1 instead of P (perfect = 1)")

    # DE
    no_true = "no true DE gene"
    for n in (None, 50, 100, 200, 500):
        label = "N" if n is None else str(n)
        add(f"overlap_at_{label}", de.overlap_at_n, True, 1.0, "de", "de", False, no_true,
            f"Overlap of the top-{label} true and predicted DE genes (by |LFC|)",
            "cell-eval overlap_at_*; NaN (not 0) without true DE genes", kwargs={"n": n})
        add(f"precision_at_{label}", de.precision_at_n, True, 1.0, "de", "de", False, "no predicted DE gene",
            f"Share of the top-{label} predicted DE genes that are truly DE",
            "cell-eval precision_at_* without truncating the true list; NaN without predicted DE genes",
            kwargs={"n": n})
    add("de_sig_genes_recall", de.de_recall, True, 1.0, "de", "de", False, no_true,
        "Share of true DE genes called DE in the prediction", "cell-eval de_sig_genes_recall")
    add("de_direction_match", de.de_direction_match, True, 1.0, "de", "de", False, no_true,
        "Share of true DE genes with the right predicted sign", "cell-eval de_direction_match")
    add("de_spearman_lfc_sig", de.de_spearman_lfc, True, 1.0, "de", "de", False,
        "fewer than 2 true DE genes or constant LFCs among them",
        "Spearman correlation of LFCs over true DE genes", "cell-eval de_spearman_lfc_sig")
    add("pr_auc", de.pr_auc, True, 1.0, "de", "de", False, "truth has no DE gene or only DE genes",
        "Average precision of predicted q for true DE genes",
        "cell-eval pr_auc (average precision); no 1e-10 floor on q by default")
    add("roc_auc", de.roc_auc, True, 1.0, "de", "de", False, "truth has no DE gene or only DE genes",
        "ROC AUC of predicted q for true DE genes", "cell-eval roc_auc; no 1e-10 floor on q by default")

    # distribution
    add("energy_distance", distribution.energy_distance, False, 0.0, "distribution", "cells", False, "never",
        "Energy distance between predicted and true cells (Euclidean, V-statistic)",
        "Székely-Rizzo energy distance; differs from scPerturb/pertpy/cell-eval E-distances")
    add("mmd", distribution.mmd, False, 0.0, "distribution", "cells", False, "never",
        "Squared MMD, Gaussian kernel, median-heuristic bandwidth (V-statistic)", "Gretton et al. 2012")
    # target gene (shrinkpert.metrics.target_gene): changes from the control only
    target_rows = (
        ("target_change_error", prediction.target_change_error, False, 0.0,
         "Absolute error of the predicted change of the perturbation's own target gene"),
        ("target_sign_score", prediction.target_sign_score, True, 1.0,
         "1 if the predicted target change has the true sign (NaN when the true change is 0)"),
        ("target_rank_error", prediction.target_rank_error, False, 0.0,
         "|predicted - true| standing of the target among all changes (target_rank_score of each side)"),
    )
    for name, func, greater, best, what in target_rows:
        add(name, func, greater, best, "target", "deltas", False, "target not measured", what,
            "shrinkpert (no peer scores the target gene)", references=("control",))
    add("penetrance_error", prediction.penetrance_error, False, 0.0, "target", "penetrance", False,
        "no penetrance for the perturbation", "|predicted - observed| fraction of perturbed cells",
        "shrinkpert; penetrance from classify_escape on each side")
    add("dose_order_score", prediction.dose_order_score, True, 1.0, "target", "dose", False,
        "fewer than 3 guides or a constant response",
        "Spearman of predicted vs observed downstream response across a perturbation's guides",
        "shrinkpert")
    return tuple(out)


#: The registry of every metric shipped with shrinkpert (read-only).
METRICS: MetricRegistry = MetricRegistry(_specs())
