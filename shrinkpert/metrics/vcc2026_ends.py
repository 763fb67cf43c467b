r"""The two ends of the VCC 2026 scale, streamed: mean-response baseline cells and half-splits.

:func:`~shrinkpert.metrics.vcc2026_calibration.baseline_vcc2026` and
:func:`~shrinkpert.metrics.vcc2026_calibration.replicate_anchor_vcc2026` score whole-panel
predictions built from the truth. Building them as AnnData objects in memory holds the truth
and a matrix of its size at once; here they are views that are read block by block like any
input:

* :func:`group_means` — one pass over the truth: each group's mean count vector, accumulated
  cell by cell in storage order as :meth:`scipy.sparse.csr_matrix.mean` does (each value times
  :math:`1/n` then summed in row order), so the means — and the float32 baseline counts derived
  from them — are bit-identical to the in-memory construction; and the control cells' rows
  (the only cells the baseline copies).
* :func:`emitted_baseline` — the mean-response prediction as a lazily emitted input: row block
  :math:`[s, e)` is the drawn control rows times the per-gene scale, rounded to float32, made
  when the scorer reads it. Control and unlabelled cells, which the scorer ignores on the
  prediction side, are emitted empty.
* :func:`cell_subset` — a half of a seeded split as the truth with the other cells dropped from
  every group, re-encoded to the perturbations still present (what validating the half's own
  AnnData gives), so each half is streamed from the truth's file.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._validate import MIN_CONTROL_CELLS, CellData
from ..errors import InputError

__all__ = ["group_means", "response_scale", "baseline_draws", "emitted_baseline", "cell_subset"]


def group_means(data: CellData, chunk_size: int | None = None) -> tuple[np.ndarray, sp.csr_matrix]:
    r"""Mean count vector of every group and the control cells' rows, in one pass.

    Returns
    -------
    means : ndarray, shape (n_perturbations + 1, n_genes)
        Row :math:`k`: :math:`\sum_{i \in k} x_i \cdot (1/n_k)`, accumulated over the group's
        cells in storage order (float64); the last row is the control's.
    controls : scipy.sparse.csr_matrix
        The control cells' rows (storage order), values as read.
    """
    n_groups = len(data.perturbations) + 1
    n_genes = data.shape[1]
    codes = data.codes
    n = np.bincount(codes[codes >= 0], minlength=n_groups).astype(np.float64)
    inv = np.divide(1.0, n, out=np.zeros(n_groups), where=n > 0)
    flat = np.zeros(n_groups * n_genes)
    ctrl_blocks = []
    with data.open() as source:
        for block in source.blocks(chunk_size):
            if source.by_rows:
                mat = sp.csr_matrix(block.values)
                rows = np.repeat(np.arange(block.rows.start, block.rows.stop), np.diff(mat.indptr))
                cols = mat.indices
                ctrl_blocks.append(mat[np.flatnonzero(codes[block.rows] == n_groups - 1)])
            else:
                mat = sp.csc_matrix(block.values)
                mat.sort_indices()  # each gene's cells in storage order
                rows = mat.indices
                cols = np.repeat(np.arange(block.cols.start, block.cols.stop), np.diff(mat.indptr))
                ctrl_blocks.append(mat[np.flatnonzero(codes == n_groups - 1)])
            keep = codes[rows] >= 0
            group = codes[rows[keep]]
            # np.add.at adds in element order: per (group, gene), the cells in storage order
            np.add.at(flat, group * n_genes + cols[keep], mat.data[keep].astype(np.float64) * inv[group])
    controls = sp.vstack(ctrl_blocks, format="csr") if source.by_rows else sp.hstack(ctrl_blocks, format="csr")
    return flat.reshape(n_groups, n_genes), controls


def response_scale(means: np.ndarray, cols: dict[int, int]) -> np.ndarray:
    r"""Per-gene factor :math:`m_g/\bar c_g` taking a control cell to the mean response.

    :math:`m_g` is the mean over perturbations of their mean counts (each perturbation's own
    target gene ``cols[k]`` left out of that gene's mean), :math:`\bar c_g` the control mean
    (last row of ``means``); 0 where :math:`\bar c_g = 0`.
    """
    per_pert = means[:-1]
    total = per_pert.sum(axis=0)
    count = np.full(means.shape[1], float(per_pert.shape[0]))
    for i, j in cols.items():
        total[j] -= per_pert[i, j]
        count[j] -= 1.0
    if (count <= 0).any():
        raise InputError("Every perturbation targets some gene, so its mean response is undefined.")
    profile = total / count
    ctrl_mean = means[-1]
    zero = ctrl_mean <= 0
    return np.where(zero, 0.0, profile / np.where(zero, 1.0, ctrl_mean))


def baseline_draws(codes: np.ndarray, n_perturbations: int, n_controls: int,
                   seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per perturbation (sorted order) its cells' positions and, per cell, the drawn control cell."""
    rng = np.random.default_rng(seed)
    positions = [np.flatnonzero(codes == k) for k in range(n_perturbations)]
    return positions, [rng.integers(0, n_controls, size=len(rows)) for rows in positions]


class _Rows:
    """Row slices of the emitted baseline (what a ``"csr"`` :class:`MatrixSource` reads)."""

    def __init__(self, draw: np.ndarray, controls: sp.csr_matrix, scale: np.ndarray, n_genes: int):
        self._draw, self._controls, self._scale = draw, controls, scale
        self.shape = (draw.size, n_genes)
        lengths = np.diff(controls.indptr)
        self.nnz = int(lengths[draw[draw >= 0]].sum())

    def __getitem__(self, rows: slice) -> sp.csr_matrix:
        draw = self._draw[rows]
        filled = np.flatnonzero(draw >= 0)
        cells = self._controls[draw[filled]]
        data = (cells.data * self._scale[cells.indices]).astype(np.float32)
        lengths = np.zeros(draw.size, dtype=np.int64)
        lengths[filled] = np.diff(cells.indptr)
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        out = sp.csr_matrix((data, cells.indices, indptr), shape=(draw.size, self.shape[1]))
        out.eliminate_zeros()
        return out


def emitted_baseline(truth: CellData, *, seed: int, cols: dict[int, int],
                     chunk_size: int | None = None) -> CellData:
    r"""The mean-response prediction of ``truth`` as a lazily emitted input (module docstring).

    Perturbed cell :math:`i` (perturbation :math:`k`) holds control cell :math:`d_i` (drawn with
    replacement, ``numpy.random.default_rng(seed)``, perturbations in sorted order) times
    :func:`response_scale`, stored as float32, as in
    :func:`~shrinkpert.metrics.vcc2026_calibration.mean_response_baseline`.
    """
    n_p = len(truth.perturbations)
    means, controls = group_means(truth, chunk_size)
    scale = response_scale(means, cols)
    positions, draws = baseline_draws(truth.codes, n_p, controls.shape[0], seed)
    draw = np.full(truth.shape[0], -1, dtype=np.int64)
    if positions:
        draw[np.concatenate(positions)] = np.concatenate(draws)
    return truth.emitted(_Rows(draw, controls, scale, truth.shape[1]), np.float32, "mean-response baseline")


def cell_subset(data: CellData, cells: np.ndarray, side: str, *, min_control: int = MIN_CONTROL_CELLS) -> CellData:
    """``data`` restricted to ``cells`` (positions), re-encoded to the perturbations present there.

    Raises
    ------
    InputError
        Fewer than ``min_control`` control cells remain.
    """
    n_p = len(data.perturbations)
    keep = np.zeros(data.shape[0], dtype=bool)
    keep[np.asarray(cells, dtype=np.int64)] = True
    kept = np.where(keep, data.codes, -1)
    sizes = np.bincount(kept[kept >= 0], minlength=n_p + 1)
    if sizes[n_p] < min_control:
        raise InputError(f"{side}: {int(sizes[n_p])} control cells ({data.control!r}); at least "
                         f"{min_control} are needed. The truth has too few control cells to split in halves.")
    present = np.flatnonzero(sizes[:n_p] > 0)
    recode = np.full(n_p + 2, -1, dtype=np.int64)
    recode[present] = np.arange(present.size)
    recode[n_p] = present.size
    codes = recode[np.where(kept >= 0, kept, n_p + 1)]
    codes.setflags(write=False)
    return dataclasses.replace(data, side=side, codes=codes,
                               perturbations=pd.Index(data.perturbations[present]))
