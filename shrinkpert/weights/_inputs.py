"""Turn the accepted ``truth`` inputs into one per-group summary (private).

Weights and deltas accept cells (AnnData, backed AnnData, ``.h5ad`` path), per-group
statistics (:class:`~shrinkpert.stats.group.GroupStatistics` grouped by perturbation) or effect
sizes (:class:`~shrinkpert.effects.estimate.EffectSizes`). Whatever arrives, the methods that
need group means and variances work on one :class:`~shrinkpert.stats.group.GroupStatistics`
(groups labelled by perturbation, the control among them) — the package's one per-group
container. Its ``params`` say where it came from (``input``), its scale (``normalize``) and
``target_sum``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, MissingKeyError
from ..stats import GroupStatistics, group_statistics


def is_cells(obj: Any) -> bool:
    """AnnData (in memory or backed) or a path."""
    import os

    return isinstance(obj, (str, os.PathLike)) or (hasattr(obj, "obs") and hasattr(obj, "var_names"))


def is_shrunk(obj: Any) -> bool:
    """Duck type of :class:`ShrunkEffects`: posterior means and lfsr per perturbation × gene."""
    return all(hasattr(obj, name) for name in ("perturbations", "genes", "posterior_mean", "lfsr"))


def pseudobulk(
    truth: Any,
    *,
    perturbation_key: str,
    control: str,
    layer: str | None,
    normalize: bool,
    target_sum: float,
    chunk_size: int | None,
    n_threads: int | None,
    progress: bool,
) -> GroupStatistics:
    """Per-group means and variances (log1p when ``normalize``) from cells, GroupStatistics or EffectSizes."""
    from ..effects.estimate import EffectSizes

    if isinstance(truth, EffectSizes):
        if truth.scale != "log1p":
            raise InputError(
                f"These effects are on scale={truth.scale!r}; weights and deltas need per-group log1p means. "
                "Estimate them with estimate_effects(..., scale='log1p') or pass the cells."
            )
        labels = pd.Index([*map(str, truth.perturbations), str(truth.control)], name="perturbation")
        normalized = "log1p" if truth.params.get("normalize") is not None else None
        return GroupStatistics.from_moments(
            labels, truth.genes,
            mean=np.vstack([truth.mean, truth.control_mean[None, :]]),
            var=np.vstack([truth.var, truth.control_var[None, :]]),
            n_cells=np.append(truth.n_cells, truth.control_n_cells),
            params={"groupby": "perturbation", "normalize": normalized, "target_sum": truth.params.get("target_sum"),
                    "input": "EffectSizes"},
        )
    if isinstance(truth, GroupStatistics):
        stats, source = truth, "GroupStatistics"
    elif is_cells(truth):
        stats = group_statistics(truth, perturbation_key, layer=layer, normalize="log1p" if normalize else None,
                                 target_sum=target_sum, chunk_size=chunk_size, n_threads=n_threads,
                                 progress=progress)
        source = f"cells ({stats.params.get('source')})"
    else:
        raise InputError(
            f"truth must be an AnnData, an .h5ad path, GroupStatistics or EffectSizes, got {type(truth).__name__}."
        )
    if isinstance(stats.groups, pd.MultiIndex):
        raise InputError("GroupStatistics grouped by several columns: collapse() them to the perturbation level first.")
    params = dict(stats.params, input=source)
    return GroupStatistics(pd.Index(stats.groups.astype(str), name="perturbation"), stats.genes, stats.n_cells,
                           stats.sum, stats.mean, stats.var, stats.n_nonzero, stats.library_size, params)


def scale_of(stats: GroupStatistics) -> tuple[str | None, float | None]:
    """``(normalize, target_sum)`` of group statistics; ``target_sum`` is ``None`` when not normalised."""
    normalized = stats.params.get("normalize")
    return normalized, (stats.params.get("target_sum") if normalized is not None else None)


def control_of(stats: GroupStatistics, control: str) -> str | None:
    """``control`` when it is among the groups, else ``None``."""
    return control if control in set(stats.groups) else None


def perturbations_of(stats: GroupStatistics, control: str) -> pd.Index:
    """Every group label except the control."""
    return stats.groups[stats.groups != control]


def labels_of(truth: Any, *, perturbation_key: str, control: str) -> tuple[pd.Index, pd.Index]:
    """(perturbations without control, genes) of any accepted input, reading no matrix."""
    from ..effects.estimate import EffectSizes

    if isinstance(truth, GroupStatistics):
        if isinstance(truth.groups, pd.MultiIndex):
            raise InputError("GroupStatistics grouped by several columns: collapse() them first.")
        groups = pd.Index(truth.groups.astype(str))
        return groups[groups != control], truth.genes
    if isinstance(truth, EffectSizes) or is_shrunk(truth) or (hasattr(truth, "perturbations") and hasattr(truth, "genes")):
        return pd.Index([str(p) for p in truth.perturbations]), pd.Index(truth.genes)
    if is_cells(truth):
        from ..data.read import read_annotations

        obs, var_names = read_annotations(truth)
        if perturbation_key not in obs.columns:
            raise MissingKeyError(
                f"obs has no column {perturbation_key!r}; pass perturbation_key=<column with the perturbation labels>."
            )
        labels = pd.Index(sorted(pd.unique(obs[perturbation_key].dropna().astype(str))))
        return labels[labels != control], pd.Index(var_names).astype(str)
    raise InputError(f"Cannot read perturbations and genes from {type(truth).__name__}.")
