"""Per-perturbation gene weights: :func:`gene_weights` → :class:`GeneWeights`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._frames import long_frame
from .._vocab import CONTROL, PERTURBATION_KEY, TARGET_SUM
from ..data.design import target_indices
from ..errors import InputError, MissingKeyError, ShrinkpertWarning
from ..reference.population import PopulationReference
from . import methods as M
from ._inputs import control_of, is_cells, is_shrunk, labels_of, pseudobulk, scale_of
from .leakage import SPLIT_DEPENDENT, check_leakage, require_reference_perturbations

__all__ = ["METHODS", "GeneWeights", "gene_weights"]

METHODS = ("shrunken", "population", "deg_rest", "limma_t", "uniform")
_FORMULAS = {
    "shrunken": "w ∝ |posterior_mean|^power * (1 - lfsr)",
    "population": "w ∝ |effect / max(population_sd, sd_floor)|^power",
    "deg_rest": "w ∝ ((|t| - min|t|) / (max|t| - min|t|))^2, t = scanpy t-test_overestim_var vs rest of reference set",
    "limma_t": "w ∝ min(|t| + 0.1, 10)^2, t = limma moderated t vs control, target gene 0",
    "uniform": "w = 1 / n_genes",
}
_ROW_TOL = 1e-12


@dataclass(frozen=True, eq=False)
class GeneWeights:
    """Non-negative gene weights per perturbation; each row sums to 1.

    Attributes
    ----------
    perturbations : pandas.Index
    genes : pandas.Index
    values : ndarray of float64, shape (n_perturbations, n_genes)
        :math:`w_{pg} \\geq 0`, :math:`\\sum_g w_{pg} = 1`.
    method : str
        One of :data:`METHODS`.
    params : mapping
        ``method``, ``formula``, ``perturbations``, ``reference`` (what the weights were learned
        against), ``reference_perturbations``, ``allow_leakage``, ``leaked``,
        ``uniform_fallback`` (rows whose scores were all 0) and method options.
    """

    perturbations: pd.Index
    genes: pd.Index
    values: np.ndarray
    method: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64)
        if values.shape != (len(self.perturbations), len(self.genes)):
            raise InputError(f"values has shape {values.shape}; expected {(len(self.perturbations), len(self.genes))}.")
        if not np.all(np.isfinite(values)) or (values < 0).any():
            raise InputError("Gene weights must be finite and non-negative.")
        if values.size and np.max(np.abs(values.sum(axis=1) - 1.0)) > 1e-9:
            raise InputError("Each row of gene weights must sum to 1.")
        values.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "perturbations", pd.Index(self.perturbations, name="perturbation"))
        object.__setattr__(self, "genes", pd.Index(self.genes, name="gene"))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (perturbation, gene) with ``weight``."""
        return long_frame(self.perturbations, self.genes, {"weight": self.values})

    def to_anndata(self):
        """Perturbations × genes AnnData with ``X`` = weights."""
        import anndata as ad

        params = {k: v for k, v in self.params.items() if isinstance(v, (str, int, float, bool))}
        return ad.AnnData(X=np.array(self.values), obs=pd.DataFrame(index=self.perturbations.astype(str)),
                          var=pd.DataFrame(index=self.genes.astype(str)),
                          uns={"shrinkpert": {"method": self.method, "params": params}})

    def summary(self) -> pd.DataFrame:
        """One row per perturbation: effective number of genes :math:`1/\\sum_g w_g^2`, top gene and weight."""
        top = np.argmax(self.values, axis=1) if self.values.size else np.zeros(0, dtype=int)
        return pd.DataFrame(
            {
                "effective_n_genes": 1.0 / np.sum(self.values**2, axis=1),
                "top_gene": self.genes.to_numpy()[top] if len(self.genes) else [],
                "max_weight": self.values.max(axis=1) if self.values.size else [],
                "n_nonzero": (self.values > 0).sum(axis=1),
            },
            index=self.perturbations,
        )

    def subset(self, perturbations: Sequence[str]) -> GeneWeights:
        """The weights of ``perturbations`` (in that order)."""
        idx = self.perturbations.get_indexer(pd.Index([str(p) for p in perturbations]))
        if (idx < 0).any():
            absent = [str(p) for p, i in zip(perturbations, idx) if i < 0]
            raise MissingKeyError(f"Perturbations {absent[:10]!r} have no weights here.")
        params = dict(self.params)
        params["perturbations"] = [str(p) for p in perturbations]
        return GeneWeights(self.perturbations[idx], self.genes, self.values[idx], self.method, params)


def _normalise(scores: np.ndarray, labels: pd.Index) -> tuple[np.ndarray, list[str]]:
    """Rows divided by their sums, one row at a time; all-zero rows become uniform (reported)."""
    out = np.empty_like(scores)
    fallback = []
    for i in range(scores.shape[0]):
        row = scores[i]
        total = row.sum()
        if not np.isfinite(total):
            raise InputError(f"Non-finite gene scores for perturbation {labels[i]!r}; check its inputs for NaN.")
        if total > 0:
            out[i] = row / total
        else:
            out[i] = 1.0 / row.size
            fallback.append(str(labels[i]))
    return out, fallback


def _select(available: pd.Index, perturbations: Sequence[str] | None, control: str) -> pd.Index:
    if isinstance(perturbations, str):
        raise InputError(f"perturbations={perturbations!r} is a single string; pass a list of labels.")
    if perturbations is None:
        return pd.Index([p for p in available if p != control], name="perturbation")
    wanted = pd.Index([str(p) for p in perturbations], name="perturbation")
    if wanted.has_duplicates:
        raise InputError("perturbations= lists a label twice; pass each perturbation once.")
    if control in set(wanted):
        raise InputError(f"The control {control!r} cannot be weighted; remove it from perturbations=.")
    absent = [p for p in wanted if p not in set(available)]
    if absent:
        raise MissingKeyError(
            f"Perturbations {absent[:10]!r} are not in the input (it has {len(available)}, e.g. "
            f"{list(available[:10])!r}); check perturbations=."
        )
    return wanted


def _targets(truth: Any, labels: pd.Index, genes: pd.Index, targets: Mapping[str, str] | None) -> np.ndarray:
    """Column of each perturbation's target gene (-1 when not measured)."""
    if targets is None and hasattr(truth, "target_index") and hasattr(truth, "perturbations"):
        own = pd.Index([str(p) for p in truth.perturbations])
        return np.asarray(truth.target_index, dtype=np.int64)[own.get_indexer(labels)]
    return target_indices(labels, genes, targets)[1]


def _effects(truth: Any, options: dict):
    from ..effects.estimate import EffectSizes, estimate_effects

    if isinstance(truth, EffectSizes) or is_shrunk(truth):
        return truth
    if is_cells(truth):
        return estimate_effects(truth, scale="log1p", **options)
    raise InputError(
        f"This method needs effects: pass ShrunkEffects, EffectSizes or cells (AnnData/.h5ad), got {type(truth).__name__}."
    )


def _shrunk(truth: Any, options: dict):
    if is_shrunk(truth):
        return truth
    effects = _effects(truth, options)
    try:
        from ..effects.shrink import shrink_effects
    except ImportError as err:  # pragma: no cover - depends on the installed version
        raise InputError(
            "method='shrunken' needs ShrunkEffects and shrinkpert.effects.shrink is not available; "
            "pass the output of shrink_effects() as truth."
        ) from err
    return shrink_effects(effects)


def _rows_of(obj: Any, labels: pd.Index) -> np.ndarray:
    own = pd.Index([str(p) for p in obj.perturbations])
    return own.get_indexer(labels)


def _scale_of(effects: Any) -> tuple[str | None, float | None]:
    params = getattr(effects, "params", {}) or {}
    return getattr(effects, "scale", None) or params.get("scale"), params.get("target_sum")


def gene_weights(
    truth: Any,
    *,
    method: str = "shrunken",
    reference: PopulationReference | None = None,
    perturbations: Sequence[str] | None = None,
    reference_perturbations: Sequence[str] | None = None,
    allow_leakage: bool = False,
    control: str = CONTROL,
    perturbation_key: str = PERTURBATION_KEY,
    layer: str | None = None,
    normalize: bool = True,
    target_sum: float = TARGET_SUM,
    targets: Mapping[str, str] | None = None,
    exclude_target: bool | None = None,
    power: float = 2.0,
    statistic: str | None = None,
    sd_floor: float | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> GeneWeights:
    """Gene weights per perturbation, by one of five methods.

    Every method returns non-negative weights :math:`w_{pg} = a_{pg}/\\sum_h a_{ph}` (rows sum
    to 1) from raw scores :math:`a_{pg}` (formulas in :mod:`shrinkpert.weights.methods`). A row
    whose scores are all 0 (e.g. a null perturbation under ``deg_rest``) becomes uniform, with a
    :class:`ShrinkpertWarning` and ``params["uniform_fallback"]``.

    ``"shrunken"``, ``"population"``, ``"limma_t"`` and ``"uniform"`` use nothing but the
    perturbation itself, the control and (for ``population``) an external reference: a
    perturbation's weights are bit-identical whatever the other perturbations and the train/test
    split. ``"deg_rest"`` learns from other perturbations and therefore requires
    ``reference_perturbations`` and refuses to weight any of them (:class:`LeakageError`) unless
    ``allow_leakage=True``.

    Parameters
    ----------
    truth
        What the weights are computed from; per method:

        * ``shrunken``: :class:`ShrunkEffects` (from ``shrink_effects``), or EffectSizes / cells
          (then estimated and shrunk with default settings);
        * ``population``: EffectSizes or ShrunkEffects (``scale="log1p"``), or cells;
        * ``deg_rest``, ``limma_t``: cells (AnnData, backed AnnData, ``.h5ad`` path; one
          streaming pass, log1p-normalised on the fly), :class:`GroupStatistics` grouped by
          perturbation (``normalize="log1p"``) or EffectSizes (``scale="log1p"``);
        * ``uniform``: any of these (only labels and genes are read).
    method
        ``"shrunken"`` (default), ``"population"``, ``"deg_rest"``, ``"limma_t"`` or ``"uniform"``.
    reference
        The :class:`PopulationReference` of ``method="population"`` (log1p scale, same
        ``target_sum``); aligned to the genes of ``truth`` when they differ.
    perturbations
        Perturbations to weight (default: all in ``truth`` except the control).
    reference_perturbations
        ``deg_rest`` only, and required there: the perturbations whose cells form the "rest"
        (e.g. the training perturbations).
    allow_leakage
        ``deg_rest``: allow weighting perturbations that are in ``reference_perturbations``
        (each is then compared with the rest of the set, as in Mejia et al.). Recorded.
    control
        Control label.
    perturbation_key, layer, normalize, target_sum
        How cells are read (``normalize=False``: values already log1p).
    targets
        Perturbation -> target gene, when labels are not gene names.
    exclude_target
        Give each perturbation's target gene weight 0. Default: True for ``limma_t`` (its
        definition), False otherwise.
    power
        Exponent :math:`k` of ``shrunken`` and ``population``.
    statistic
        ``population``: ``"effect"`` or ``"posterior_mean"`` (default: posterior mean when
        ``truth`` has it).
    sd_floor
        ``population``: floor :math:`\\sigma_{\\min}` on the population SD (default 0.1 × the
        median positive SD).
    chunk_size, n_threads, progress
        Streaming options for cells.

    Returns
    -------
    GeneWeights

    Raises
    ------
    InputError
        Unknown method, missing ``reference``/``reference_perturbations``, options that do not
        apply to the method, scales that do not match.
    LeakageError
        ``deg_rest`` would weight a perturbation in ``reference_perturbations``.
    MissingKeyError
        A perturbation, reference perturbation or the control is absent.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> from shrinkpert.weights import gene_weights
    >>> adata = sp.datasets.papalexi2021()
    >>> adata = adata[adata.obs["perturbation"] != "unassigned"].copy()
    >>> w = gene_weights(adata, method="deg_rest", perturbations=["IRF1", "CD86"],
    ...                  reference_perturbations=["ATF2", "CAV1", "CUL3", "ETV7", "IFNGR1"])
    >>> w.values.shape, bool(abs(w.values.sum(axis=1) - 1).max() < 1e-12)
    ((2, 299), True)
    """
    if method not in METHODS:
        raise InputError(f"method={method!r} is not one of {METHODS!r}.")
    if method in SPLIT_DEPENDENT:
        refs = require_reference_perturbations(reference_perturbations, method=method, control=control)
    elif reference_perturbations is not None or allow_leakage:
        raise InputError(
            f"method {method!r} does not learn from other perturbations; reference_perturbations= and "
            "allow_leakage= apply to 'deg_rest' only. Drop them."
        )
    if method == "population":
        if not isinstance(reference, PopulationReference):
            raise InputError(
                "method='population' needs reference=<PopulationReference> (build_population_reference(...) "
                "or PopulationReference.load(...))."
            )
    elif reference is not None:
        raise InputError(f"reference= is used by method='population' only, not {method!r}.")
    if not (np.isfinite(power) and power > 0):
        raise InputError(f"power must be a positive number, got {power!r}.")
    if statistic is not None and method != "population":
        raise InputError("statistic= applies to method='population' only.")
    if sd_floor is not None and method != "population":
        raise InputError("sd_floor= applies to method='population' only.")
    exclude = (method == "limma_t") if exclude_target is None else bool(exclude_target)
    cells = dict(perturbation_key=perturbation_key, layer=layer, normalize=normalize, target_sum=target_sum,
                 chunk_size=chunk_size, n_threads=n_threads, progress=progress)
    effect_options = dict(perturbation_key=perturbation_key, control=control, layer=layer, normalize=normalize,
                          target_sum=target_sum, chunk_size=chunk_size, n_threads=n_threads, progress=progress)
    params: dict[str, Any] = {"method": method, "formula": _FORMULAS[method], "control": control,
                              "reference_perturbations": None, "allow_leakage": False, "leaked": []}

    if method == "shrunken":
        shrunk = _shrunk(truth, effect_options)
        available = pd.Index([str(p) for p in shrunk.perturbations])
        labels = _select(available, perturbations, control)
        rows = _rows_of(shrunk, labels)
        genes = pd.Index(shrunk.genes)
        scores = M.shrunken_scores(np.asarray(shrunk.posterior_mean)[rows], np.asarray(shrunk.lfsr)[rows], power=power)
        shrink_params = dict(getattr(shrunk, "params", {}) or {})
        params.update(reference="control", power=power, input=type(shrunk).__name__,
                      shrinkage={k: v for k, v in shrink_params.items() if isinstance(v, (str, int, float, bool))})
        target_src = shrunk
    elif method == "population":
        effects = _effects(truth, effect_options)
        stat = statistic or ("posterior_mean" if is_shrunk(effects) else "effect")
        if stat not in ("effect", "posterior_mean") or not hasattr(effects, stat):
            raise InputError(f"statistic={stat!r} is not available on {type(effects).__name__}; use 'effect' "
                             "(or 'posterior_mean' with ShrunkEffects).")
        scale, t_sum = _scale_of(effects)
        if scale not in (None, "log1p") or reference.scale != "log1p":
            raise InputError(
                f"method='population' compares log1p effects with the population's log1p SD, but the effects are on "
                f"scale={scale!r} and the reference {reference.name!r} on scale={reference.scale!r}. Use "
                "estimate_effects(..., scale='log1p') and build_population_reference(..., normalize='log1p')."
            )
        if t_sum is not None and reference.target_sum is not None and float(t_sum) != reference.target_sum:
            raise InputError(
                f"The effects use target_sum={t_sum!r} but the reference {reference.name!r} uses "
                f"target_sum={reference.target_sum!r}; build both with the same target_sum."
            )
        available = pd.Index([str(p) for p in effects.perturbations])
        labels = _select(available, perturbations, control)
        rows = _rows_of(effects, labels)
        genes = pd.Index(effects.genes)
        aligned = reference if reference.genes.equals(genes) else reference.align(genes)
        sd = aligned.expression_sd
        positive = sd[np.isfinite(sd) & (sd > 0)]
        floor = float(sd_floor) if sd_floor is not None else (0.1 * float(np.median(positive)) if positive.size else 1.0)
        if not (np.isfinite(floor) and floor > 0):
            raise InputError(f"sd_floor must be a positive number, got {sd_floor!r}.")
        scores = M.population_scores(np.asarray(getattr(effects, stat))[rows], sd, sd_floor=floor, power=power)
        params.update(reference=f"population:{reference.name}", population=reference.name,
                      population_sha256=reference.provenance.get("source_sha256"),
                      population_created=reference.provenance.get("created_utc"), statistic=stat, power=power,
                      sd_floor=floor, genes_without_reference=int((~np.isfinite(sd)).sum()),
                      input=type(effects).__name__)
        target_src = effects
    elif method == "uniform":
        available, genes = labels_of(truth, perturbation_key=perturbation_key, control=control)
        labels = _select(pd.Index(available), perturbations, control)
        genes = pd.Index(genes)
        scores = np.ones((len(labels), len(genes)))
        params.update(reference="none", input=type(truth).__name__)
        target_src = truth
    else:
        pb = pseudobulk(truth, control=control, **cells)
        scale, target_sum = scale_of(pb)
        if scale == "total":
            raise InputError(f"method={method!r} needs log1p expression; recompute the statistics with normalize='log1p'.")
        labels = _select(pb.groups, perturbations, control)
        rows = pb.rows(labels, "perturbations")
        genes = pb.genes
        small = labels[pb.n_cells[rows] < 2]
        if len(small):
            raise InputError(f"Perturbations {list(small[:10])!r} have fewer than 2 cells; {method!r} needs a variance.")
        if method == "deg_rest":
            leaked = check_leakage(labels, refs, allow_leakage=allow_leakage, method=method)
            ref_rows = pb.rows(refs, "reference_perturbations")
            rest_n, rest_sum, rest_m2 = M.pool(pb.mean[ref_rows], pb.var[ref_rows], pb.n_cells[ref_rows])
            t = M.deg_rest_t(pb.mean[rows], pb.var[rows], pb.n_cells[rows], rest_n=rest_n, rest_sum=rest_sum,
                             rest_m2=rest_m2, in_rest=np.isin(labels, refs))
            scores = M.minmax_squared(t)
            params.update(reference="rest of reference_perturbations", reference_perturbations=list(refs),
                          allow_leakage=bool(allow_leakage), leaked=leaked, n_reference_cells=int(rest_n),
                          test="scanpy t-test_overestim_var (rest variance / own group size)")
        else:
            if control_of(pb, control) is None:
                raise MissingKeyError(
                    f"method='limma_t' compares with control cells, but {control!r} is not among the groups; pass control=."
                )
            c = pb.rows([control], "The control")[0]
            if pb.n_cells[c] < 2:
                raise InputError(f"The control {control!r} has fewer than 2 cells; limma_t needs a variance.")
            t = np.vstack([
                M.limma_t(pb.mean[r], pb.var[r], float(pb.n_cells[r]), pb.mean[c], pb.var[c], float(pb.n_cells[c]))
                for r in rows
            ]) if len(rows) else np.zeros((0, len(genes)))
            target_rows = _targets(truth, labels, genes, targets)
            scores = M.myllia_scores(t, target_rows if exclude else np.full(len(labels), -1))
            params.update(reference="control", control_n_cells=int(pb.n_cells[c]),
                          test="limma eBayes moderated t, two-group model (perturbation vs control cells)")
        params.update(input=pb.params["input"], scale=scale, target_sum=target_sum)
        target_src = truth

    if exclude and method != "limma_t":
        target_rows = _targets(target_src, labels, genes, targets)
        hit = np.flatnonzero(target_rows >= 0)
        scores = np.array(scores)
        scores[hit, target_rows[hit]] = 0.0
    values, fallback = _normalise(np.asarray(scores, dtype=np.float64), labels)
    if fallback:
        warnings.warn(
            f"{len(fallback)} perturbations have all-zero {method!r} scores and get uniform weights: "
            + ", ".join(fallback[:20]) + (" ..." if len(fallback) > 20 else ""),
            ShrinkpertWarning,
            stacklevel=2,
        )
    params.update(perturbations=[str(p) for p in labels], exclude_target=exclude, uniform_fallback=fallback)
    return GeneWeights(labels, genes, values, method, params)
