r"""Escape-aware truth: effect sizes from perturbed cells only, or weighted by ``p_perturbed``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .._vocab import MIN_CELLS, TARGET_SUM
from .._validate import validate
from ..errors import InputError
from .escape import EscapeResult

__all__ = ["escape_aware_effects", "perturbed_weights"]

#: A weighted perturbation needs at least this Kish effective number of cells, else all its
#: cells keep weight 1 (as ``truth_cells="perturbed"`` never leaves fewer than 2 cells).
MIN_EFFECTIVE_CELLS = 2.0


def perturbed_weights(escape: EscapeResult) -> np.ndarray:
    r"""Per-cell weights of an escape-weighted truth: the posterior probability of being perturbed.

    Parameters
    ----------
    escape
        The result of :func:`~shrinkpert.ontarget.classify_escape` on the true cells.

    Returns
    -------
    ndarray of float64, shape (n_cells,)
        ``obs`` order: :math:`w_i = P(\text{perturbed} \mid x_i)` (``p_perturbed``) for the cells
        of perturbations with evidence of an effect; 1 for control cells, for cells of a
        perturbation without evidence (``evidence == "none"``: the mixture has no perturbed state
        to weight by) or not classified (``p_perturbed`` NaN), and for every cell of a
        perturbation whose Kish effective number :math:`(\sum_i w_i)^2 / \sum_i w_i^2` would
        fall below 2 (a penetrance of 0).

    Notes
    -----
    A weighted mean :math:`\sum_i w_i y_i / \sum_i w_i` with these weights estimates the mean of
    the perturbed cells without a hard call: a cell that is probably an escaper counts little
    instead of not at all, so no cell near the threshold flips the truth (see
    :func:`~shrinkpert.stats.weighted.weighted_group_statistics` for its variance).
    """
    if not isinstance(escape, EscapeResult):
        raise InputError(f"escape must be the EscapeResult of classify_escape, got {type(escape).__name__}.")
    table = escape.penetrance
    judged = np.isin(escape.perturbation, table.index[table["evidence"] != "none"].astype(str))
    p = escape.p_perturbed
    weights = np.where(judged & np.isfinite(p), np.clip(np.nan_to_num(p), 0.0, 1.0), 1.0)
    for pert in np.unique(escape.perturbation[judged]):
        cells = escape.perturbation == pert
        w = weights[cells]
        if not (w**2).sum() > 0 or w.sum() ** 2 / (w**2).sum() < MIN_EFFECTIVE_CELLS:
            weights[cells] = 1.0
    return weights


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
    from ..stats.group import group_statistics
    from ..stats.weighted import weighted_group_statistics

    if weighting not in ("hard", "soft"):
        raise InputError(f"weighting={weighting!r} is not one of 'hard', 'soft'.")
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be in (0, 1), got {threshold!r}.")
    if scale not in ("log1p", "log2fc"):
        raise InputError(f"scale={scale!r} is not one of 'log1p', 'log2fc'.")
    data = validate(adata, perturbation_key=None, layer=layer)  # the one boundary
    obs = data.obs
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
        stats = weighted_group_statistics(data, labels.rename("perturbation"), weights, normalize=normalize,
                                          target_sum=target_sum, library_size=library_size,
                                          chunk_size=chunk_size).to_group_statistics()
    effects = estimate_effects(stats, control=control, scale=scale, min_cells=min_cells)
    params = dict(effects.params)
    params.update(escape_weighting=weighting, escape_threshold=float(threshold) if weighting == "hard" else None)
    fields = {f: getattr(effects, f) for f in effects.__dataclass_fields__}
    fields["params"] = params
    return type(effects)(**fields)

