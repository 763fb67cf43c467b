r"""Escape-aware truth: effect sizes from perturbed cells only, or weighted by ``p_perturbed``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._vocab import MIN_CELLS, TARGET_SUM
from .._validate import validate
from ..data.read import row_totals, scale_factors
from ..errors import InputError
from ._counts import _library_column
from .escape import EscapeResult

__all__ = ["escape_aware_effects"]


def escape_aware_effects(
    adata: Any,
    escape: EscapeResult,
    *,
    weighting: str = "hard",
    threshold: float = 0.5,
    scale: str = "log1p",
    layer: str | None = None,
    library_size: str | np.ndarray | None = None,
    target_sum: float = TARGET_SUM,
    min_cells: int = MIN_CELLS,
    chunk_size: int | None = None,
):
    r"""Effect sizes recomputed from perturbed cells only, or weighted by ``p_perturbed``.

    Parameters
    ----------
    adata
        The data :func:`classify_escape` was run on (same cells, same order).
    escape
        Its result.
    weighting
        ``"hard"``: keep the cells with ``p_perturbed >= threshold`` (and all controls);
        ``"soft"``: weight every perturbed cell by its ``p_perturbed`` (controls weight 1).
    threshold
        Cut-off of ``"hard"``.
    scale, layer, library_size, target_sum, min_cells, chunk_size
        As in :func:`~shrinkpert.estimate_effects`.

    Returns
    -------
    EffectSizes
        ``params["escape_weighting"]`` records the choice; with ``"soft"``, ``n_cells`` is the
        Kish effective number of cells :math:`(\sum w)^2 / \sum w^2` (rounded) and means and
        variances are weighted (reliability weights).

    Raises
    ------
    InputError
        The cells do not match the escape result, or an option is invalid.

    Notes
    -----
    Soft weighting: :math:`\bar y = \sum_i w_i y_i / W`,
    :math:`v = \sum_i w_i (y_i - \bar y)^2 / (W - \sum_i w_i^2 / W)`, :math:`W = \sum_i w_i`.
    Which truth a metric is scored against (all cells, perturbed only, or weighted) is the
    caller's choice; this function only builds the alternatives.
    """
    from ..effects.estimate import estimate_effects
    from ..stats.group import GroupStatistics, group_statistics

    if weighting not in ("hard", "soft"):
        raise InputError(f"weighting={weighting!r} is not one of 'hard', 'soft'.")
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be in (0, 1), got {threshold!r}.")
    if scale not in ("log1p", "log2fc"):
        raise InputError(f"scale={scale!r} is not one of 'log1p', 'log2fc'.")
    data = validate(adata, perturbation_key=None, layer=layer)  # the one boundary
    obs, var_names = data.obs, data.genes
    if not pd.Index(obs.index).astype(str).equals(escape.obs_names):
        raise InputError(
            "The cells of adata do not match the escape result (names or order differ); pass the data "
            "classify_escape was run on."
        )
    control = escape.params["control"]
    labels = pd.Series(np.where(escape.perturbation == "", None, escape.perturbation).astype(object),
                       index=obs.index, dtype=object)
    p = escape.p_perturbed
    is_ctrl = escape.perturbation == control
    normalize = {"log1p": "log1p", "log2fc": "total"}[scale]
    if weighting == "hard":
        keep = is_ctrl | (np.nan_to_num(p, nan=0.0) >= threshold)
        labels = labels.where(keep, np.nan).rename("perturbation")
        stats = group_statistics(data, labels, normalize=normalize, target_sum=target_sum,
                                 library_size=library_size, chunk_size=chunk_size)
    else:
        weights = np.where(is_ctrl, 1.0, np.nan_to_num(p, nan=0.0))
        stats = _weighted_statistics(data, labels, weights, normalize=normalize, target_sum=target_sum,
                                     library_size=library_size, chunk_size=chunk_size, genes=var_names,
                                     statistics_class=GroupStatistics)
    effects = estimate_effects(stats, control=control, scale=scale, min_cells=min_cells)
    params = dict(effects.params)
    params.update(escape_weighting=weighting, escape_threshold=float(threshold) if weighting == "hard" else None)
    fields = {f: getattr(effects, f) for f in effects.__dataclass_fields__}
    fields["params"] = params
    return type(effects)(**fields)


def _weighted_statistics(data, labels, weights, *, normalize, target_sum, library_size, chunk_size,
                         genes, statistics_class):
    """Weighted per-group sums, means and variances in one pass (plus a row-total pass)."""
    obs = data.obs
    codes, groups = pd.factorize(labels, sort=True)
    groups = pd.Index(groups.astype(str), name="perturbation")
    n_groups, n_genes = len(groups), len(genes)
    lib = _library_column(obs, library_size)
    with data.open() as source:
        totals = row_totals(source, chunk_size) if lib is None else lib
        scale = scale_factors(totals, target_sum)
        s1 = np.zeros((n_groups, n_genes))
        s2 = np.zeros((n_groups, n_genes))
        nnz = np.zeros((n_groups, n_genes), dtype=np.int64)
        for block in source.blocks(chunk_size):
            values = block.values
            coo = values.tocoo() if sp.issparse(values) else sp.coo_matrix(np.asarray(values))
            r = coo.row.astype(np.int64) + block.rows.start
            c = coo.col.astype(np.int64) + block.cols.start
            y = coo.data.astype(np.float64) * scale[r]
            if normalize == "log1p":
                y = np.log1p(y)
            g = codes[r]
            keep = (g >= 0) & (weights[r] > 0)
            g, c, y, w = g[keep], c[keep], y[keep], weights[r[keep]]
            np.add.at(s1, (g, c), w * y)
            np.add.at(s2, (g, c), w * y * y)
            np.add.at(nnz, (g, c), 1)
    ok = codes >= 0
    w_sum = np.bincount(codes[ok], weights=weights[ok], minlength=n_groups)
    w_sq = np.bincount(codes[ok], weights=weights[ok] ** 2, minlength=n_groups)
    lib_w = np.bincount(codes[ok], weights=weights[ok] * totals[ok], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / w_sum[:, None]
        m2 = np.maximum(s2 - w_sum[:, None] * mean**2, 0.0)
        var = m2 / (w_sum - w_sq / w_sum)[:, None]
        n_eff = np.where(w_sq > 0, w_sum**2 / w_sq, 0.0)
    n_cells = np.round(n_eff).astype(np.int64)
    var = np.where(n_cells[:, None] > 1, var, np.nan)
    params = {"groupby": "perturbation", "layer": data.layer, "normalize": normalize, "target_sum": float(target_sum),
              "library_size": library_size if isinstance(library_size, str) else None,
              "weights": "p_perturbed", "n_cells_total": int(len(obs))}
    sums = np.nan_to_num(mean) * n_cells[:, None]
    lib_mean = np.where(w_sum > 0, lib_w / np.where(w_sum > 0, w_sum, 1.0), 0.0)
    return statistics_class(groups, genes, n_cells, sums, np.nan_to_num(mean), var, nnz,
                            lib_mean * n_cells, params)
