r"""Escape-aware truth: effect sizes from perturbed cells only, or weighted by ``p_perturbed``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import rows_by_label
from .._vocab import MIN_CELLS, TARGET_SUM
from .._validate import validate
from ..effects.estimate import EffectSizes
from ..errors import InputError
from .escape import EscapeResult

__all__ = ["EscapeAwareEffects", "escape_aware_effects", "escaper_cells", "perturbed_weights"]

#: A weighted perturbation needs at least this Kish effective number of cells, else all its
#: cells keep weight 1 (as ``truth_cells="perturbed"`` never leaves fewer than 2 cells).
MIN_EFFECTIVE_CELLS = 2.0


@dataclass(frozen=True)
class EscapeAwareEffects(EffectSizes):
    """:class:`~shrinkpert.EffectSizes` recomputed without (or down-weighting) escaping cells.

    Attributes
    ----------
    escape_evidence : ndarray of str, shape (n_perturbations,)
        The evidence :func:`~shrinkpert.ontarget.classify_escape` had for each perturbation
        (``"target+signature"``, ``"target"``, ``"signature"`` or ``"none"``). A perturbation
        with ``"none"`` has no perturbed state to judge its cells by, so all of its cells are kept
        with weight 1 and its effects equal those of :func:`~shrinkpert.estimate_effects`.

    Every other attribute is that of :class:`~shrinkpert.EffectSizes`.
    """

    escape_evidence: np.ndarray | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        evidence = np.array([] if self.escape_evidence is None else self.escape_evidence, dtype=str)
        if evidence.shape != (len(self.perturbations),):
            raise InputError(f"escape_evidence has {evidence.size} entries for {len(self.perturbations)} "
                             "perturbations; give one per perturbation.")
        evidence.setflags(write=False)
        object.__setattr__(self, "escape_evidence", evidence)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per (perturbation, gene), with the perturbation's ``escape_evidence``."""
        frame = super().to_frame()
        frame["escape_evidence"] = np.repeat(self.escape_evidence, len(self.genes))
        return frame

    def to_anndata(self):
        """As :meth:`EffectSizes.to_anndata`, with ``obs["escape_evidence"]``."""
        out = super().to_anndata()
        out.obs["escape_evidence"] = self.escape_evidence
        return out

    def subset(self, perturbations) -> EscapeAwareEffects:
        """The same effects (and evidence) restricted to ``perturbations`` (in that order)."""
        plain = EffectSizes(**{f: getattr(self, f) for f in EffectSizes.__dataclass_fields__})
        sub = plain.subset(perturbations)  # checks the names
        rows = self.perturbations.get_indexer(sub.perturbations)
        return EscapeAwareEffects(**{f: getattr(sub, f) for f in EffectSizes.__dataclass_fields__},
                                  escape_evidence=self.escape_evidence[rows])


def _judged(escape: EscapeResult) -> np.ndarray:
    """Labels of the perturbations with evidence of an effect (a perturbed state to judge cells by)."""
    table = escape.penetrance
    return table.index[table["evidence"] != "none"].astype(str).to_numpy()


def escaper_cells(escape: EscapeResult, threshold: float = 0.5) -> np.ndarray:
    r"""Cells a hard call leaves out of the truth as escapers.

    Parameters
    ----------
    escape
        The result of :func:`~shrinkpert.ontarget.classify_escape`.
    threshold
        A cell with ``p_perturbed`` below it is an escaper.

    Returns
    -------
    ndarray of bool, shape (n_cells,)
        ``obs`` order: True for the cells of a perturbation with evidence of an effect whose
        :math:`P(\text{perturbed} \mid x_i) <` ``threshold``. Never a control cell, a cell of
        a perturbation without evidence (``evidence == "none"``) or an unclassified cell, and
        never so many cells of one perturbation that fewer than 2 would remain (then none of its
        cells is left out).
    """
    if not isinstance(escape, EscapeResult):
        raise InputError(f"escape must be the EscapeResult of classify_escape, got {type(escape).__name__}.")
    if not 0 < threshold < 1:
        raise InputError(f"threshold must be in (0, 1), got {threshold!r}.")
    judged = _judged(escape)
    p = escape.p_perturbed
    out = np.isin(escape.perturbation, judged) & np.isfinite(p) & (p < threshold)
    for cells in rows_by_label(escape.perturbation, judged):
        if (~out[cells]).sum() < 2:
            out[cells] = False
    return out


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
    :func:`~shrinkpert.stats.cell_pass` with ``weights`` for its variance).
    """
    if not isinstance(escape, EscapeResult):
        raise InputError(f"escape must be the EscapeResult of classify_escape, got {type(escape).__name__}.")
    judged = np.isin(escape.perturbation, _judged(escape))
    p = escape.p_perturbed
    weights = np.where(judged & np.isfinite(p), np.clip(np.nan_to_num(p), 0.0, 1.0), 1.0)
    for cells in rows_by_label(escape.perturbation, np.unique(escape.perturbation[judged])):
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
        ``"hard"``: leave out the escapers of :func:`escaper_cells` (``p_perturbed <
        threshold``); ``"soft"``: weight every cell by :func:`perturbed_weights` (its
        ``p_perturbed``). Either way a perturbation without evidence of an effect
        (``evidence == "none"``) keeps all its cells with weight 1, as do the controls — exactly
        the truth of ``evaluate(truth_cells="perturbed" | "weighted")``.
    threshold
        Cut-off of ``"hard"``.
    scale, layer, library_size, target_sum, min_cells, chunk_size
        As in :func:`~shrinkpert.estimate_effects`.

    Returns
    -------
    EscapeAwareEffects
        :class:`~shrinkpert.EffectSizes` with the ``escape_evidence`` of each perturbation.
        ``params["escape_weighting"]`` records the choice and ``params["escape_no_evidence"]``
        the number of perturbations without evidence (kept whole); with ``"soft"``, ``n_cells``
        is the Kish effective number of cells :math:`(\sum w)^2 / \sum w^2` (rounded) and
        means and variances are weighted (reliability weights).

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
    normalize = {"log1p": "log1p", "log2fc": "total"}[scale]
    if weighting == "hard":
        labels = labels.where(~escaper_cells(escape, threshold), np.nan).rename("perturbation")
        stats = group_statistics(data, labels, normalize=normalize, target_sum=target_sum,
                                 library_size=library_size, chunk_size=chunk_size)
    else:
        stats = group_statistics(data, labels.rename("perturbation"), normalize=normalize, target_sum=target_sum,
                                 library_size=library_size, weights=perturbed_weights(escape), chunk_size=chunk_size)
    effects = estimate_effects(stats, control=control, scale=scale, min_cells=min_cells)
    table = escape.penetrance
    evidence = table.loc[effects.perturbations.astype(str), "evidence"].to_numpy(dtype=str)
    params = dict(effects.params)
    params.update(escape_weighting=weighting, escape_threshold=float(threshold) if weighting == "hard" else None,
                  escape_no_evidence=int((evidence == "none").sum()))
    fields = {f: getattr(effects, f) for f in EffectSizes.__dataclass_fields__}
    fields["params"] = params
    return EscapeAwareEffects(**fields, escape_evidence=evidence)

