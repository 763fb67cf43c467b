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
"""

from __future__ import annotations

from collections.abc import Mapping
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._arrays import as_rng, rows_by_label
from .._validate import CellData
from ..data.read import scale_factors
from ..errors import InputError

__all__ = ["gather_rows", "sample_plan", "distribution_values"]


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


def sample_plan(truth: CellData, pred: CellData, perturbations: pd.Index, max_cells: int,
                seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Row positions per perturbation: ``truth``, ``technical_duplicate``, ``control`` (truth file)
    and ``model`` (pred file), each of :math:`m_p` cells (see the module docstring)."""
    if int(max_cells) != max_cells or max_cells < 2:
        raise InputError(f"cells_per_perturbation must be an integer >= 2, got {max_cells!r}.")
    rng = as_rng(seed)
    t = truth.labels().to_numpy(dtype=object)
    p = pred.labels().to_numpy(dtype=object)
    control_rows = rng.permutation(np.flatnonzero(t == truth.control))
    plan: dict[str, dict[str, np.ndarray]] = {}
    true_by, pred_by = rows_by_label(t, perturbations), rows_by_label(p, perturbations)
    for k, pert in enumerate(perturbations):  # sorted: the draw depends only on the seed and the labels
        true_rows = rng.permutation(true_by[k])
        pred_rows = rng.permutation(pred_by[k])
        m = int(min(max_cells, len(true_rows) // 2, len(pred_rows), len(control_rows)))
        plan[pert] = {"truth": np.sort(true_rows[:m]), "technical_duplicate": np.sort(true_rows[m:2 * m]),
                      "control": np.sort(control_rows[:m]), "model": np.sort(pred_rows[:m])}
    return plan


def distribution_values(specs: list, pred: CellData, truth: CellData, plan: Mapping[str, Mapping[str, np.ndarray]],
                        *, counts: bool, target_sum: float,
                        chunk_size: int | None) -> dict[str, dict[str, np.ndarray]]:
    """``{metric: {side: values per perturbation}}`` for ``model``, ``control`` and ``technical_duplicate``."""
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
        for spec in specs:
            for side in sides:
                out[spec.name][side][k] = spec(samples[side], ref, max_cells=None)
    return out
