r"""Cells for the distribution metrics of :func:`~shrinkpert.evaluate`.

Distribution metrics (energy distance, MMD) compare cells, not pseudobulks, so ``evaluate`` draws
a seeded, equal-sized sample of cells per perturbation and reads only those rows (one streaming
pass over each file; the sample is held sparse, and one perturbation at a time is densified).

Per perturbation :math:`p` with :math:`n_p` true cells, :math:`m_p = \min(m, \lfloor n_p/2
\rfloor, n^{\text{pred}}_p)` cells are drawn without replacement for each of

* ``truth``: true cells of :math:`p` (the reference sample every side is compared with);
* ``model``: predicted cells of :math:`p`;
* ``technical_duplicate``: other true cells of :math:`p`, disjoint from ``truth`` (positive control);
* ``control``: control cells (negative control: no change).

Equal sizes keep the V-statistics comparable between the three comparisons. Counts are
log1p-normalised per ``target_sum`` with each cell's own total over all genes.

The true cells follow ``truth_cells`` (:func:`truth_draw_weights`), as the pseudobulk truth does:

* ``"all"``: every true cell can be drawn;
* ``"perturbed"``: the escapers (:func:`~shrinkpert.ontarget.escaper_cells`) are never drawn,
  for ``truth`` or ``technical_duplicate``, so the values equal those of ``truth_cells="all"``
  on the truth with the escapers' cells deleted (the draw depends only on the numbers of
  cells);
* ``"weighted"``: cells of weight 0 are never drawn; the others are drawn uniformly as above
  and each keeps its weight :math:`w_i = P(\text{perturbed} \mid x_i)`
  (:func:`~shrinkpert.ontarget.perturbed_weights`) in the metric, which then compares the model's
  cells with the weighted empirical distribution :math:`\sum_i w_i \delta_{y_i} / \sum_i w_i`
  of the drawn true cells (``true_cell_weights`` of
  :func:`~shrinkpert.metrics.energy_distance` and :func:`~shrinkpert.metrics.mmd`; the
  duplicate is weighted the same way). Drawn uniformly and weighted, the sample's weighted
  distribution is a ratio estimate of the whole weighted truth, and with every drawn cell it *is*
  the weighted truth; sampling with probabilities proportional to :math:`w` without replacement
  would not give inclusion probabilities proportional to :math:`w`. All weights 1 give exactly
  the values of ``"all"``, weights 0 and 1 exactly those of deleting the weight-0 cells.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._arrays import as_rng, rows_by_label
from .._validate import CellData
from ..data.read import scale_factors
from ..errors import InputError

__all__ = ["gather_rows", "sample_plan", "distribution_values", "truth_draw_weights"]


def gather_rows(data: CellData, rows: np.ndarray, *, counts: bool, target_sum: float,
                chunk_size: int | None = None) -> sp.csr_matrix:
    """Rows ``rows`` (sorted, unique) of the matrix as CSR float64, log1p-normalised if ``counts``."""
    rows = np.asarray(rows, dtype=np.int64)
    parts = []
    with data.open() as matrix:
        for block in matrix.blocks(chunk_size):
            lo, hi = np.searchsorted(rows, [block.rows.start, block.rows.stop])
            if hi == lo:
                continue
            values = block.values[rows[lo:hi] - block.rows.start]
            parts.append(sp.csr_matrix(values, dtype=np.float64))
        n_genes = matrix.shape[1]
    if matrix.by_rows:
        out = sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_genes))
    else:  # gene blocks: every block holds all the selected rows
        out = sp.hstack(parts, format="csr")
    if counts:
        totals = np.asarray(out.sum(axis=1)).ravel()
        out = sp.csr_matrix(sp.diags(scale_factors(totals, target_sum)) @ out)
        out.data = np.log1p(out.data)
    return out


def truth_draw_weights(escape: Any, truth_cells: str, threshold: float) -> np.ndarray | None:
    """Per true cell (``obs`` order): its weight in the distribution metrics; cells of weight 0
    are never drawn. None for ``truth_cells="all"``; 0 for escapers and 1 otherwise for
    ``"perturbed"``; :func:`~shrinkpert.ontarget.perturbed_weights` for ``"weighted"``.
    ``escape`` must already be checked against the truth (``summarise`` does)."""
    from ..ontarget import escaper_cells, perturbed_weights

    if truth_cells == "all":
        return None
    if truth_cells == "perturbed":
        return np.where(escaper_cells(escape, threshold), 0.0, 1.0)
    return perturbed_weights(escape)


def sample_plan(truth: CellData, pred: CellData, perturbations: pd.Index, max_cells: int,
                seed: int, truth_weights: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Row positions per perturbation: ``truth``, ``technical_duplicate``, ``control`` (truth file)
    and ``model`` (pred file), each of :math:`m_p` cells (see the module docstring); true cells
    of weight 0 in ``truth_weights`` (:func:`truth_draw_weights`) are not drawn."""
    if int(max_cells) != max_cells or max_cells < 2:
        raise InputError(f"cells_per_perturbation must be an integer >= 2, got {max_cells!r}.")
    rng = as_rng(seed)
    t = truth.labels().to_numpy(dtype=object)
    p = pred.labels().to_numpy(dtype=object)
    control_rows = rng.permutation(np.flatnonzero(t == truth.control))
    plan: dict[str, dict[str, np.ndarray]] = {}
    drawable = t if truth_weights is None else np.where(truth_weights > 0, t, None)
    true_by, pred_by = rows_by_label(drawable, perturbations), rows_by_label(p, perturbations)
    for k, pert in enumerate(perturbations):  # sorted: the draw depends only on the seed and the labels
        true_rows = rng.permutation(true_by[k])
        pred_rows = rng.permutation(pred_by[k])
        m = int(min(max_cells, len(true_rows) // 2, len(pred_rows), len(control_rows)))
        plan[pert] = {"truth": np.sort(true_rows[:m]), "technical_duplicate": np.sort(true_rows[m:2 * m]),
                      "control": np.sort(control_rows[:m]), "model": np.sort(pred_rows[:m])}
    return plan


def distribution_values(specs: list, pred: CellData, truth: CellData, plan: Mapping[str, Mapping[str, np.ndarray]],
                        *, counts: bool, target_sum: float, chunk_size: int | None,
                        truth_weights: np.ndarray | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{metric: {side: values per perturbation}}`` for ``model``, ``control`` and ``technical_duplicate``;
    ``truth_weights`` (per true cell, ``truth_cells="weighted"``) weight the drawn ``truth`` and
    ``technical_duplicate`` cells."""
    sides = ("model", "control", "technical_duplicate")
    from_truth = np.unique(np.concatenate([plan[p][k] for p in plan for k in ("truth", "control",
                                                                               "technical_duplicate")]))
    from_pred = np.unique(np.concatenate([plan[p]["model"] for p in plan]))
    read = dict(counts=counts, target_sum=target_sum, chunk_size=chunk_size)
    truth_cells, pred_cells = gather_rows(truth, from_truth, **read), gather_rows(pred, from_pred, **read)
    out = {spec.name: {side: np.full(len(plan), np.nan) for side in sides} for spec in specs}
    for k, pert in enumerate(plan):
        rows = plan[pert]
        if len(rows["truth"]) < 2:
            continue  # too few cells for a distribution: NaN
        ref = truth_cells[np.searchsorted(from_truth, rows["truth"])].toarray()
        samples = {"model": pred_cells[np.searchsorted(from_pred, rows["model"])].toarray(),
                   "control": truth_cells[np.searchsorted(from_truth, rows["control"])].toarray(),
                   "technical_duplicate": truth_cells[np.searchsorted(from_truth,
                                                                      rows["technical_duplicate"])].toarray()}
        weights = {side: {} for side in sides}
        if truth_weights is not None:
            for side in sides:
                weights[side]["true_cell_weights"] = truth_weights[rows["truth"]]
            weights["technical_duplicate"]["pred_cell_weights"] = truth_weights[rows["technical_duplicate"]]
        for spec in specs:
            for side in sides:
                out[spec.name][side][k] = spec(samples[side], ref, max_cells=None, **weights[side])
    return out
