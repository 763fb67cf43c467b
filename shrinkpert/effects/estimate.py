"""Per-perturbation effect sizes against control, with standard errors: :func:`estimate_effects`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY, SCALES, TARGET_SUM
from .._frames import long_frame
from ..data.design import encode_design, target_indices
from .._validate import MIN_CONTROL_CELLS, check_excluded, validate
from ..errors import InputError, MissingKeyError, ShrinkpertWarning
from ..stats.testing import welch
from .._arrays import freeze as _freeze, rows_by_label
from ..stats.group import GroupStatistics, group_statistics

#: Accepted values of ``variance_floor``.
VARIANCE_FLOORS = ("control", "none")

__all__ = ["EffectSizes", "estimate_effects"]

_LN2 = np.log(2.0)


@dataclass(frozen=True)
class EffectSizes:
    """Effects of each perturbation on each gene, relative to control.

    Attributes
    ----------
    perturbations : pandas.Index
    genes : pandas.Index
    effect, std_error, df : ndarray of float64, shape (n_perturbations, n_genes)
        Effect (on ``scale``), its standard error and Welch–Satterthwaite degrees of freedom.
    mean, var : ndarray of float64, shape (n_perturbations, n_genes)
        Mean and variance (ddof=1) of the perturbed cells, on the measurement scale
        (log1p-normalised for ``scale="log1p"``, normalised counts for ``"log2fc"``).
    n_cells : ndarray of int64, shape (n_perturbations,)
        Cells per perturbation (from weighted statistics: Kish's effective numbers, rounded; the
        standard errors use the unrounded ones).
    control : str
    control_n_cells : int
    control_mean, control_var : ndarray of float64, shape (n_genes,)
    target : pandas.Index
        Target gene name of each perturbation.
    target_index : ndarray of int64
        Column of the target in ``genes`` (-1 when the target is not measured).
    scale : str
        ``"log1p"`` or ``"log2fc"``.
    params : mapping
        Everything needed to reproduce the estimate, including the zero-variance policy used
        and ``se_method`` (``"welch"`` or ``"replicates"``).
    n_replicates : ndarray of int64 or None
        Replicates behind each replicate-based standard error (None for cell-level SEs).
    """

    perturbations: pd.Index
    genes: pd.Index
    effect: np.ndarray
    std_error: np.ndarray
    df: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    n_cells: np.ndarray
    control: str
    control_n_cells: int
    control_mean: np.ndarray
    control_var: np.ndarray
    target: pd.Index
    target_index: np.ndarray
    scale: str
    params: Mapping[str, Any]
    n_replicates: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("effect", "std_error", "df", "mean", "var", "n_cells", "control_mean",
                     "control_var", "target_index") + (("n_replicates",) if self.n_replicates is not None else ()):
            object.__setattr__(self, name, _freeze(getattr(self, name)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def z(self) -> np.ndarray:
        """Wald statistic ``effect / std_error``."""
        return self.effect / self.std_error

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per (perturbation, gene)."""
        is_target = np.arange(len(self.genes))[None, :] == self.target_index[:, None]
        n_cells = np.broadcast_to(self.n_cells[:, None], self.effect.shape)
        control_mean = np.broadcast_to(self.control_mean, self.effect.shape)
        return long_frame(self.perturbations, self.genes, {
            "effect": self.effect, "std_error": self.std_error, "df": self.df, "mean": self.mean,
            "control_mean": control_mean, "n_cells": n_cells, "is_target": is_target,
        })

    def to_anndata(self):
        """Perturbations × genes AnnData with layers ``effect, std_error, df, mean, var``."""
        import anndata as ad

        obs = pd.DataFrame(
            {"n_cells": self.n_cells, "target": self.target.astype(str), "target_index": self.target_index},
            index=self.perturbations.astype(str),
        )
        var = pd.DataFrame({"control_mean": self.control_mean, "control_var": self.control_var},
                           index=self.genes.astype(str))
        layers = {k: np.array(getattr(self, k)) for k in ("effect", "std_error", "df", "mean", "var")}
        params = {k: v for k, v in self.params.items() if isinstance(v, (str, int, float, bool))}
        uns = {"shrinkpert": {"params": params, "scale": self.scale, "control": self.control,
                              "control_n_cells": int(self.control_n_cells)}}
        return ad.AnnData(X=np.array(self.effect), obs=obs, var=var, layers=layers, uns=uns)

    def summary(self) -> pd.DataFrame:
        """One row per perturbation: cells, target, target effect and z, genes with |z| > 3.

        ``target_effect``/``target_z`` are NaN when the target is not a measured gene; the column
        ``target_nan_reason`` then says so (``"target_not_measured"``; empty otherwise).
        """
        rows = np.arange(len(self.perturbations))
        has_t = self.target_index >= 0
        t_idx = np.where(has_t, self.target_index, 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = self.z
        return pd.DataFrame(
            {
                "n_cells": self.n_cells,
                "target": self.target.astype(str),
                "target_effect": np.where(has_t, self.effect[rows, t_idx], np.nan),
                "target_z": np.where(has_t, z[rows, t_idx], np.nan),
                "target_nan_reason": np.where(has_t, "", "target_not_measured"),
                "n_genes_abs_z_gt_3": (np.abs(z) > 3).sum(axis=1),
                "median_std_error": np.median(self.std_error, axis=1),
            },
            index=self.perturbations,
        )

    def subset(self, perturbations: Sequence[str]) -> EffectSizes:
        """The same effects restricted to ``perturbations`` (in that order)."""
        idx = self.perturbations.get_indexer(pd.Index(perturbations))
        if (idx < 0).any():
            missing = [p for p, i in zip(perturbations, idx) if i < 0]
            raise MissingKeyError(f"Perturbations {missing[:10]!r} are not in these effects.")
        fields = {f: getattr(self, f) for f in self.__dataclass_fields__}
        for name in ("effect", "std_error", "df", "mean", "var"):
            fields[name] = getattr(self, name)[idx]
        fields.update(perturbations=self.perturbations[idx], n_cells=self.n_cells[idx],
                      target=self.target[idx], target_index=self.target_index[idx], params=dict(self.params))
        if self.n_replicates is not None:
            fields["n_replicates"] = self.n_replicates[idx]
        return EffectSizes(**fields)


def _effect(mean_p, mean_c, scale: str, eps: float | None):
    """Effect on ``scale``: difference of log1p means, or log2 ratio of mean counts (+ eps)."""
    if scale == "log1p":
        return mean_p - mean_c
    return np.log2((mean_p + eps) / (mean_c + eps))


def _variance_term(mean, var, n, scale: str, eps: float | None):
    """Sampling variance of one group's contribution: v/n, or its delta-method log2 version."""
    if scale == "log1p":
        return var / n
    return var / n / (mean + eps) ** 2 / _LN2**2


def _detection_limit(stats: GroupStatistics, control_row: int, scale: str) -> tuple[float, str]:
    """Smallest change one UMI makes in an average control cell, on the effect's measurement scale."""
    lib = stats.library_size[control_row] / max(stats.total_weight[control_row], 1)
    normalize = stats.params.get("normalize")
    if normalize is not None and lib > 0:
        per_umi = stats.params["target_sum"] / lib
        if scale == "log1p":
            return float(np.log1p(per_umi)), "log1p(target_sum / mean control library size)"
        return float(per_umi), "target_sum / mean control library size"
    return 1.0, "1 (library sizes unknown: one unit of the input scale)"


def _effects_from_stats(
    stats: GroupStatistics,
    *,
    control: str,
    scale: str,
    perturbations: Sequence[str] | None,
    targets: Mapping[str, str] | None,
    min_cells: int,
    pseudocount: float | None,
    extra_params: Mapping[str, Any],
    variance_floor: str = "control",
) -> EffectSizes:
    if isinstance(stats.groups, pd.MultiIndex):
        raise InputError("Statistics grouped by several columns: pass replicate_key= or collapse() them first.")
    labels = stats.groups.astype(str)
    if control not in set(labels):
        raise MissingKeyError(
            f"Control label {control!r} is not among the groups; groups present: "
            f"{sorted(labels)[:30]!r}. Pass control=<one of these>."
        )
    c = int(np.flatnonzero(labels == control)[0])
    n_all = stats.n_eff  # cells per group; Kish's effective numbers for weighted statistics
    if n_all[c] < max(min_cells, 2):
        raise InputError(
            f"The control {control!r} has {n_all[c]:g} cells; at least {max(min_cells, 2)} are "
            "needed for a variance. Check the control label or lower min_cells."
        )
    wanted = [p for p in labels if p != control] if perturbations is None else [str(p) for p in perturbations]
    rows = labels.get_indexer(pd.Index(wanted))
    if (rows < 0).any():
        missing = [p for p, r in zip(wanted, rows) if r < 0]
        raise MissingKeyError(f"Perturbations {missing[:10]!r} are not among the groups; check perturbations=.")
    too_small = n_all[rows] < min_cells
    if too_small.any():
        dropped = [f"{p} ({n:g} cells)" for p, n in zip(np.array(wanted)[too_small], n_all[rows][too_small])]
        warnings.warn(
            f"Dropping {len(dropped)} perturbations with fewer than min_cells={min_cells} cells: "
            + ", ".join(dropped[:20]) + (" ..." if len(dropped) > 20 else ""),
            ShrinkpertWarning,
            stacklevel=3,
        )
        rows = rows[~too_small]
    if len(rows) == 0:
        raise InputError(f"No perturbation has at least min_cells={min_cells} cells.")
    perts = pd.Index(labels[rows], name="perturbation")

    n_c = float(n_all[c])
    delta, delta_rule = _detection_limit(stats, c, scale)
    eps = None
    if scale == "log2fc":
        eps = delta / n_c if pseudocount is None else float(pseudocount)
        if not eps > 0:
            raise InputError(f"pseudocount must be positive, got {pseudocount!r}.")
    # zero-variance policy: a group whose cells all share one value gets the variance it would
    # have if one more cell differed by the detection limit delta: delta**2 / (n + 1)
    if variance_floor not in VARIANCE_FLOORS:
        raise InputError(f"variance_floor={variance_floor!r} is not one of {VARIANCE_FLOORS!r}.")
    mean_c = stats.mean[c]
    zero_c = stats.var[c] == 0
    var_c = np.where(zero_c, delta**2 / (n_c + 1), stats.var[c])
    b = _variance_term(mean_c, var_c, n_c, scale, eps)
    n_floored_control = 0
    shape = (len(rows), len(stats.genes))
    effect, std_error, df = np.empty(shape), np.empty(shape), np.empty(shape)
    n_floored = int(zero_c.sum()) * len(rows)
    for lo in range(0, len(rows), 128):  # a few perturbations at a time: bounded temporaries
        part = slice(lo, lo + 128)
        r = rows[part]
        n_p = n_all[r][:, None]
        zero_p = stats.var[r] == 0
        n_floored += int(zero_p.sum())
        var_p = np.where(zero_p, delta**2 / (n_p + 1), stats.var[r])
        a = _variance_term(stats.mean[r], var_p, n_p, scale, eps)
        test = welch(a, n_p, b, n_c, floor_at_b=variance_floor == "control")
        n_floored_control += int(test.floored.sum())
        effect[part] = _effect(stats.mean[r], mean_c, scale, eps)
        std_error[part] = test.std_error
        df[part] = test.df

    names, tindex = target_indices(perts, stats.genes, targets)
    params = dict(extra_params)
    params.update(
        scale=scale,
        control=control,
        min_cells=int(min_cells),
        normalize=stats.params.get("normalize"),
        target_sum=stats.params.get("target_sum"),
        detection_limit=delta,
        detection_limit_rule=delta_rule,
        pseudocount=eps,
        n_zero_variance_floored=n_floored,
        variance_floor=variance_floor,
        n_control_variance_floored=n_floored_control,
    )
    return EffectSizes(
        perturbations=perts,
        genes=stats.genes,
        effect=effect,
        std_error=std_error,
        df=df,
        mean=stats.mean[rows],
        var=stats.var[rows],
        n_cells=np.round(n_all[rows]).astype(np.int64),
        control=control,
        control_n_cells=int(round(n_c)),
        control_mean=mean_c,
        control_var=stats.var[c],
        target=names,
        target_index=tindex,
        scale=scale,
        params=params,
    )


def _replicate_effects(
    stats: GroupStatistics,
    base: EffectSizes,
    *,
    replicate_key: str,
    min_cells: int,
    moderate: bool,
) -> EffectSizes:
    """Effects and SEs from the spread of per-replicate effects (see :func:`estimate_effects`)."""
    from .moderate import squeeze_var

    labels = stats.groups.get_level_values(0).astype(str)
    reps = stats.groups.get_level_values(1)
    big = stats.n_cells >= min_cells
    control_rows = {rep: row for row, (lab, rep) in enumerate(zip(labels, reps)) if lab == base.control and big[row]}
    eps = base.params["pseudocount"]
    delta = base.params["detection_limit"]
    n_c = float(base.control_n_cells)
    var_c = np.where(base.control_var == 0, delta**2 / (n_c + 1), base.control_var)
    control_term = _variance_term(base.control_mean, var_c, n_c, base.scale, eps)

    effect = np.array(base.effect)
    std_error = np.array(base.std_error)
    df = np.array(base.df)
    n_reps = np.zeros(len(base.perturbations), dtype=np.int64)
    too_few = []
    kept = np.flatnonzero(big)
    by_perturbation = rows_by_label(labels[kept], pd.Index(base.perturbations).astype(str))
    for k, (pert, rows) in enumerate(zip(base.perturbations, by_perturbation)):
        rows = kept[rows]
        n_reps[k] = len(rows)
        if len(rows) < 2:
            too_few.append(f"{pert} ({len(rows)})")
            continue
        paired = np.array([reps[r] in control_rows for r in rows])
        ctrl_means = np.stack([stats.mean[control_rows[reps[r]]] if ok else base.control_mean
                               for r, ok in zip(rows, paired)])
        per_rep = _effect(stats.mean[rows], ctrl_means, base.scale, eps)
        R = len(rows)
        s2 = per_rep.var(axis=0, ddof=1)
        if moderate:
            with warnings.catch_warnings():  # limma's "zero sample variances offset" note, once per perturbation
                warnings.simplefilter("ignore", ShrinkpertWarning)
                squeezed = squeeze_var(s2, R - 1)
            s2, d0 = squeezed.var_post, squeezed.df_prior
        else:
            d0 = 0.0
        unpaired = (~paired).sum() / R
        effect[k] = per_rep.mean(axis=0)
        std_error[k] = np.sqrt(s2 / R + unpaired**2 * control_term)
        df[k] = (R - 1) + np.asarray(d0, dtype=np.float64)
    if too_few:
        warnings.warn(
            f"{len(too_few)} perturbations have fewer than 2 {replicate_key!r} replicates with >= {min_cells} "
            f"cells and keep cell-level Welch standard errors: {', '.join(too_few[:20])}"
            + (" ..." if len(too_few) > 20 else ""),
            ShrinkpertWarning,
            stacklevel=3,
        )
    params = dict(base.params)
    params.update(se_method="replicates", replicate_key=replicate_key, moderate_replicate_variance=bool(moderate),
                  n_welch_fallback=len(too_few))
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(effect=effect, std_error=std_error, df=df, params=params, n_replicates=n_reps)
    return EffectSizes(**fields)


def estimate_effects(
    adata_or_stats: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    scale: str = "log1p",
    target_sum: float = TARGET_SUM,
    layer: str | None = None,
    exclude: Sequence[str] | None = None,
    normalize: bool = True,
    library_size: str | np.ndarray | None = None,
    perturbations: Sequence[str] | None = None,
    target_key: str | None = None,
    targets: Mapping[str, str] | None = None,
    min_cells: int = MIN_CELLS,
    pseudocount: float | None = None,
    replicate_key: str | None = None,
    moderate: bool = True,
    variance_floor: str = "control",
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> EffectSizes:
    """Effect of each perturbation on each gene relative to control, with standard errors.

    Parameters
    ----------
    adata_or_stats
        AnnData (in memory or backed), ``.h5ad`` path, or :class:`GroupStatistics` grouped by
        perturbation.
    perturbation_key
        ``obs`` column with each cell's perturbation.
    control
        Label of the control cells.
    scale
        ``"log1p"``: difference of group means of :math:`\\log(1 + x\\,s/L)`;
        ``"log2fc"``: :math:`\\log_2` ratio of mean normalised counts :math:`x\\,s/L`.
    target_sum
        :math:`s`, counts per cell after normalisation.
    layer
        Layer with raw counts (default ``X``).
    exclude
        Labels whose cells are left out (e.g. ``["unassigned"]``); each must be present.
    normalize
        ``True``: the matrix holds counts and is normalised on the fly. ``False``: it already
        holds values on the measurement scale of ``scale`` and is used as is.
    library_size
        ``obs`` column or array of per-cell library sizes (default: row totals).
    perturbations
        Perturbations to estimate (default: every label except ``control``).
    target_key
        ``obs`` column with each cell's target gene when labels are not gene names.
    targets
        Mapping perturbation -> target gene (alternative to ``target_key``).
    min_cells
        Perturbations with fewer cells are dropped with a :class:`ShrinkpertWarning` naming them.
    pseudocount
        :math:`\\varepsilon` of the log2 ratio (``scale="log2fc"``). Default: the mean normalised
        expression one UMI in one control cell would give, :math:`\\delta / n_c`.
    replicate_key
        ``obs`` column of replicates (guides, biological replicates or batches). When given,
        standard errors come from the spread of per-replicate effects instead of from cells,
        which are not independent within a guide or replicate (see Notes).
    moderate
        Squeeze the between-replicate variances across genes (limma ``squeezeVar``) before use.
    variance_floor
        ``"control"`` (default): a perturbed group's variance is never taken below the control's
        variance of the same gene (see Notes); ``"none"``: plain Welch, as
        ``scipy.stats.ttest_ind(equal_var=False)``.
    chunk_size, n_threads, progress
        Streaming options, as in :func:`group_statistics`.

    Returns
    -------
    EffectSizes

    Notes
    -----
    With group means :math:`\\bar x_p, \\bar x_c`, variances :math:`v_p, v_c` and sizes
    :math:`n_p, n_c`:

    ``log1p``: :math:`\\hat\\beta = \\bar x_p - \\bar x_c`,
    :math:`\\mathrm{SE}^2 = a + b` with :math:`a = v_p/n_p`, :math:`b = v_c/n_c` (Welch), and
    Welch–Satterthwaite :math:`\\nu = (a + b)^2 / (a^2/(n_p-1) + b^2/(n_c-1))`.

    ``log2fc``: :math:`\\hat\\beta = \\log_2\\frac{\\bar x_p + \\varepsilon}{\\bar x_c + \\varepsilon}`;
    by the delta method :math:`a = v_p / (n_p (\\bar x_p + \\varepsilon)^2 \\ln^2 2)` and
    likewise :math:`b`; :math:`\\nu` as above.

    Variance floor (``variance_floor="control"``). Perturbed groups are small and single-cell
    values are zero-inflated and skewed, so a small :math:`v_p` is often an accident of sampling,
    and Welch's test is then anti-conservative. On simulated null screens
    (``validation/null_calibration.py``: no effects, about 20 or 100 cells per perturbation), plain
    Welch gave up to 1.7 times the nominal rate of :math:`p < 0.05` and up to 14 times that of
    :math:`p < 0.001` (genes detected in 2–20% of control cells). The floor takes
    :math:`a' = \\max(a, b\\,n_c/n_p)`, i.e. :math:`v_p' = \\max(v_p, v_c)` on the ``log1p`` scale
    (on ``log2fc`` it bounds the delta-method term per cell, the squared coefficient of variation,
    since count variances grow with the mean); where it applies, the term is known as well as the
    control's and enters :math:`\\nu` with :math:`n_c - 1` degrees of freedom. On the same data the
    rates of :math:`p < 0.05` and :math:`p < 0.01` stay at or below nominal in every bin and
    :math:`p < 0.001` reaches at most 1.9 times nominal. The floor only widens standard errors,
    so it costs power only where a perturbation lowers a gene's variance.

    Zero variance. A group whose cells all share one value (typically a gene never detected in
    it) gets the variance it would have if one more cell had differed by the detection limit
    :math:`\\delta`, i.e. :math:`v = \\delta^2/(n+1)`, where :math:`\\delta` is the change one UMI
    makes in an average control cell (:math:`\\log(1 + s/\\bar L_c)` for ``log1p``,
    :math:`s/\\bar L_c` for ``log2fc``; 1 when library sizes are unknown). Hence a gene absent
    from both groups has effect 0 and the finite standard error
    :math:`\\delta\\sqrt{1/(n_p(n_p+1)) + 1/(n_c(n_c+1))}` on the ``log1p`` scale; no NaN is
    produced. ``mean``/``var`` keep the observed values; ``params`` records :math:`\\delta` and how
    many entries were floored.

    Raises
    ------
    MissingKeyError
        ``perturbation_key`` missing or ``control`` not among the labels (the message lists them).
    InputError
        Control with fewer than 2 (or ``min_cells``) cells; no perturbation left.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> adata = sp.datasets.papalexi2021()
    >>> adata = adata[adata.obs["perturbation"] != "unassigned"]
    >>> eff = sp.estimate_effects(adata, control="non-targeting")
    >>> eff.effect.shape
    (25, 299)
    """
    if scale not in SCALES:
        raise InputError(f"scale={scale!r} is not one of {SCALES!r}.")
    if int(min_cells) < 2:
        raise InputError(f"min_cells must be at least 2 (a variance needs two cells), got {min_cells!r}.")
    extra = {"perturbation_key": perturbation_key, "layer": layer}
    if isinstance(adata_or_stats, GroupStatistics):
        stats = adata_or_stats
        wanted = {"log1p": "log1p", "log2fc": "total"}[scale]
        if stats.params.get("normalize") not in (wanted, None):
            raise InputError(
                f"These statistics were computed with normalize={stats.params.get('normalize')!r}, but "
                f"scale={scale!r} needs normalize={wanted!r}. Recompute with group_statistics(..., normalize={wanted!r})."
            )
        if target_key is not None:
            raise InputError("target_key needs the AnnData; with statistics pass targets={perturbation: gene}.")
        target_map = targets
    else:
        data = validate(adata_or_stats, perturbation_key=perturbation_key, control=control, layer=layer,
                        exclude=exclude, min_control_cells=max(int(min_cells), MIN_CONTROL_CELLS))
        check_excluded(exclude, data)
        target_map = targets
        if target_key is not None:
            design = encode_design(data.obs.loc[data.codes >= 0], data.genes, perturbation_key=perturbation_key,
                                   control=control, target_key=target_key, perturbations=perturbations)
            target_map = dict(zip(design.perturbations, design.target))
        labels = data.labels()
        groupby = labels if replicate_key is None else [labels, data.column(replicate_key, "replicate_key")]
        stats = group_statistics(
            data,
            groupby,
            layer=layer,
            normalize={"log1p": "log1p", "log2fc": "total"}[scale] if normalize else None,
            target_sum=target_sum,
            library_size=library_size,
            chunk_size=chunk_size,
            n_threads=n_threads,
            progress=progress,
        )
        if perturbations is None:
            perturbations = list(data.perturbations)
    by_replicate = isinstance(stats.groups, pd.MultiIndex)
    if replicate_key is not None and not by_replicate:
        raise InputError("replicate_key needs statistics grouped by [perturbation_key, replicate_key].")
    pooled = stats.collapse(0) if by_replicate else stats
    extra["se_method"] = "welch"
    effects = _effects_from_stats(pooled, control=control, scale=scale, perturbations=perturbations,
                                  targets=target_map, min_cells=int(min_cells), pseudocount=pseudocount,
                                  extra_params=extra, variance_floor=variance_floor)
    if not by_replicate:
        return effects
    return _replicate_effects(stats, effects, replicate_key=replicate_key or str(stats.groups.names[1]),
                              min_cells=int(min_cells), moderate=moderate)
