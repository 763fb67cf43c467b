"""Turn the accepted ``truth`` inputs into one per-group summary (private).

Weights and deltas accept cells (AnnData, backed AnnData, ``.h5ad`` path), per-group
statistics (:class:`~shrinkpert.stats.group.GroupStatistics` grouped by perturbation) or effect
sizes (:class:`~shrinkpert.effects.estimate.EffectSizes`). Whatever arrives, the methods that
need group means and variances work on a :class:`Pseudobulk`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, MissingKeyError


@dataclass(frozen=True)
class Pseudobulk:
    """Mean, variance (ddof=1) and cell count of each group (perturbations and control)."""

    labels: pd.Index
    genes: pd.Index
    mean: np.ndarray
    var: np.ndarray
    n_cells: np.ndarray
    scale: str | None  # "log1p", "total" or None (as stored)
    target_sum: float | None
    control: str | None
    source: str

    def rows(self, labels: Sequence[str], what: str) -> np.ndarray:
        """Row of each label; a clear error naming the absent ones."""
        idx = self.labels.get_indexer(pd.Index([str(x) for x in labels]))
        if (idx < 0).any():
            absent = [str(x) for x, i in zip(labels, idx) if i < 0]
            raise MissingKeyError(
                f"{what} {absent[:10]!r} are not among the groups of the input ({len(self.labels)} groups, e.g. "
                f"{self.labels[:10].tolist()!r}); check the labels."
            )
        return idx

    def perturbations(self) -> pd.Index:
        """Every label except the control."""
        return self.labels[self.labels != self.control] if self.control is not None else self.labels


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
) -> Pseudobulk:
    """Per-group log1p means and variances from cells, GroupStatistics or EffectSizes."""
    from ..effects.estimate import EffectSizes
    from ..stats.group import GroupStatistics, group_statistics

    if isinstance(truth, EffectSizes):
        if truth.scale != "log1p":
            raise InputError(
                f"These effects are on scale={truth.scale!r}; weights and deltas need per-group log1p means. "
                "Estimate them with estimate_effects(..., scale='log1p') or pass the cells."
            )
        labels = pd.Index([*map(str, truth.perturbations), str(truth.control)], name="perturbation")
        return Pseudobulk(
            labels=labels,
            genes=truth.genes,
            mean=np.vstack([truth.mean, truth.control_mean[None, :]]),
            var=np.vstack([truth.var, truth.control_var[None, :]]),
            n_cells=np.append(truth.n_cells, truth.control_n_cells).astype(np.int64),
            scale="log1p" if truth.params.get("normalize") is not None else None,
            target_sum=truth.params.get("target_sum"),
            control=str(truth.control),
            source="EffectSizes",
        )
    if isinstance(truth, GroupStatistics):
        stats = truth
        source = "GroupStatistics"
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
    labels = pd.Index(stats.groups.astype(str), name="perturbation")
    normalized = stats.params.get("normalize")
    return Pseudobulk(
        labels=labels,
        genes=stats.genes,
        mean=np.asarray(stats.mean),
        var=np.asarray(stats.var),
        n_cells=np.asarray(stats.n_cells, dtype=np.int64),
        scale=normalized,
        target_sum=stats.params.get("target_sum") if normalized is not None else None,
        control=control if control in set(labels) else None,
        source=source,
    )


def labels_of(truth: Any, *, perturbation_key: str, control: str) -> tuple[pd.Index, pd.Index]:
    """(perturbations without control, genes) of any accepted input, reading no matrix."""
    from ..effects.estimate import EffectSizes
    from ..stats.group import GroupStatistics

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
