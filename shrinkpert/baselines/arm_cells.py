r"""Exploit arms as predicted cells emitted block by block, never the whole truth or arm in memory.

An arm's cells (:func:`~shrinkpert.baselines.exploit_cells`; definitions in
:mod:`shrinkpert.baselines.exploits`) are drawn control cells edited row by row, so row block
:math:`[s, e)` of an arm depends only on the drawn control rows of those cells and a few values
per cell. :func:`arm_source` reads the truth once (block by block) and keeps just that:

* the rows of the control and unlabelled cells (storage order; the only rows an arm copies),
  canonical (duplicates summed, explicit zeros dropped, columns sorted);
* per cell, the row it is made from: a perturbed cell's drawn control cell
  (``numpy.random.default_rng(seed)``, perturbations in sorted order — the mean-response
  baseline's draws, :func:`~shrinkpert.metrics.vcc2026_ends.baseline_draws`), a control or
  unlabelled cell itself;
* per perturbed cell, its own target column and the truth's count there (``target_only``);
* for ``log1p_format`` only, the per-gene factor taking a control cell to the mean response.

:func:`emitted_arm` then gives an arm as a :class:`~shrinkpert._validate.CellData` whose matrix
is made when the scorer reads it (a ``"csr"`` source whose row slices are emitted on demand;
float32 for the count arms, which holds their integer counts exactly, as the mean-response
baseline's cells are float32, so the scorer's copies are no larger than for a float32 input).
``variance_inflated``'s noise is drawn per fixed block of :data:`NOISE_ROWS` cells (generator
``numpy.random.default_rng([seed, 1, b])`` for block :math:`b`), so any read order and any
``chunk_size`` give the same cells.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validate import CellData, validate
from ..errors import InputError
from .exploits import EXPLOITS, TARGET_ARMS, target_columns

__all__ = ["NOISE_ROWS", "ArmSource", "arm_source", "emitted_arm"]

#: Cells per block of ``variance_inflated``'s noise: block :math:`b` (cells
#: :math:`[b\,N, (b+1)\,N)` in storage order) draws from ``default_rng([seed, 1, b])``.
NOISE_ROWS = 1024
_LOG_TARGET_SUM = 1e4


@dataclass(frozen=True, eq=False)
class ArmSource:
    """What every exploit arm's cells are made from (module docstring); see :func:`arm_source`.

    Attributes
    ----------
    truth : CellData
        The validated truth.
    kept : scipy.sparse.csr_matrix
        Control and unlabelled cells' rows (storage order, canonical, as read).
    src : ndarray of int64, shape (n_cells,)
        Row of ``kept`` each cell is made from.
    edited : ndarray of bool, shape (n_cells,)
        Perturbed cells (made from a drawn control cell and edited).
    own_col : ndarray of int64, shape (n_cells,)
        A perturbed cell's own target column (-1: none measured, or not perturbed).
    own_value : ndarray of float64, shape (n_cells,)
        The truth's count at ``own_col`` (0 where ``own_col`` is -1).
    panel : ndarray of int64
        Columns of the panel's measured target genes (sorted).
    response : ndarray of float64 or None
        Per-gene factor :math:`m_g/\\bar c_g` (mean response over control mean, 0 where
        :math:`\\bar c_g = 0`); only when ``log1p_format`` was asked for.
    seed : int
    """

    truth: CellData
    kept: sp.csr_matrix
    src: np.ndarray
    edited: np.ndarray
    own_col: np.ndarray
    own_value: np.ndarray
    panel: np.ndarray
    response: np.ndarray | None
    seed: int


def _canonical(mat: sp.csr_matrix) -> sp.csr_matrix:
    mat = sp.csr_matrix(mat, copy=True)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    return mat


def arm_source(truth: Any, *, perturbation_key: str = "perturbation", control: str = "non-targeting",
               targets: Mapping[str, str] | None = None, seed: int = 0, layer: str | None = None,
               arms: Sequence[str] = EXPLOITS, chunk_size: int | None = None) -> ArmSource:
    r"""Read ``truth`` once (block by block) and keep what the exploit arms ``arms`` are made from.

    Peak memory: one block of the truth plus the control and unlabelled cells' rows and a few
    values per cell. The mean response of ``log1p_format`` is :math:`m_g = \frac1P\sum_k
    \bar x_{kg}` with :math:`\bar x_{kg}` perturbation :math:`k`'s mean count (group sums over
    its cells, times :math:`1/n_k`).

    Raises
    ------
    InputError
        Unknown arm, no control cells, or a target arm with no measured target gene.
    MissingKeyError
        ``perturbation_key`` is not an ``obs`` column.
    """
    unknown = [a for a in arms if a not in EXPLOITS]
    if unknown:
        raise InputError(f"arm must be one of {list(EXPLOITS)}, got {unknown[0]!r}.")
    t = validate(truth, side="truth", perturbation_key=perturbation_key, control=control, layer=layer)
    n_p, (n_cells, n_genes) = len(t.perturbations), t.shape
    codes = t.codes
    if not (codes == n_p).any():
        raise InputError(f"truth has no control cells ({perturbation_key} == {control!r}).")
    cols = target_columns(t.perturbations, t.genes, targets)
    if any(a in TARGET_ARMS for a in arms) and not (cols >= 0).any():
        raise InputError(f"exploit arm {next(a for a in arms if a in TARGET_ARMS)!r}: no perturbation's target "
                         "gene is measured; pass targets=.")
    perturbed = (codes >= 0) & (codes < n_p)
    own_col = np.where(perturbed, np.concatenate([cols, [-1]])[np.where(perturbed, codes, n_p)], -1)
    own_value = np.zeros(n_cells)
    kept_rows = np.flatnonzero(~perturbed)
    need_means = "log1p_format" in arms
    sums = np.zeros((n_p + 1) * n_genes) if need_means else None
    parts = []
    with t.open() as source:
        for block in source.blocks(chunk_size):
            if source.by_rows:
                mat = sp.csr_matrix(block.values)
                first = block.rows.start
                parts.append(mat[np.flatnonzero(~perturbed[block.rows])])
                coo = mat.tocoo()
                row, col = coo.row.astype(np.int64) + first, coo.col.astype(np.int64)
            else:
                mat = sp.csc_matrix(block.values)
                parts.append(mat[kept_rows])
                coo = mat.tocoo()
                row, col = coo.row.astype(np.int64), coo.col.astype(np.int64) + block.cols.start
            data = coo.data.astype(np.float64)
            hit = own_col[row] == col
            np.add.at(own_value, row[hit], data[hit])
            if need_means:
                keep = codes[row] >= 0
                sums += np.bincount(codes[row[keep]] * n_genes + col[keep], weights=data[keep],
                                    minlength=sums.size)
    kept = _canonical(sp.vstack(parts, format="csr") if source.by_rows else sp.hstack(parts, format="csr"))
    kept.sort_indices()
    from ..metrics.vcc2026_ends import baseline_draws

    ctrl_in_kept = np.flatnonzero(codes[kept_rows] == n_p)
    positions, draws = baseline_draws(codes, n_p, ctrl_in_kept.size, seed)
    src = np.empty(n_cells, dtype=np.int64)
    src[kept_rows] = np.arange(kept_rows.size)
    if positions:
        src[np.concatenate(positions)] = ctrl_in_kept[np.concatenate(draws)]
    response = None
    if need_means:
        n = np.bincount(codes[codes >= 0], minlength=n_p + 1).astype(np.float64)
        means = sums.reshape(n_p + 1, n_genes) * (1.0 / n)[:, None]
        ctrl_mean = means[n_p]
        m = means[:n_p].mean(axis=0) if n_p else np.zeros(n_genes)
        response = np.divide(m, ctrl_mean, out=np.zeros(n_genes), where=ctrl_mean > 0)
    for a in (src, perturbed, own_col, own_value):
        a.setflags(write=False)
    return ArmSource(truth=t, kept=kept, src=src, edited=perturbed, own_col=own_col, own_value=own_value,
                     panel=np.unique(cols[cols >= 0]), response=response, seed=int(seed))


class _ArmRows:
    """Row slices of one emitted arm (what a ``"csr"`` :class:`MatrixSource` reads)."""

    def __init__(self, source: ArmSource, arm: str):
        self._s, self._arm = source, arm
        self.shape = source.truth.shape
        self.nnz = int(np.diff(source.kept.indptr)[source.src].sum())
        self._cached: tuple[int, sp.csr_matrix] | None = None

    def __getitem__(self, rows: slice) -> sp.csr_matrix:
        return self.emit(rows).astype(self.dtype)

    @property
    def dtype(self) -> np.dtype:
        """float32 for the count arms (exact: an integer count below :math:`2^{24}`, and a cell with
        a larger one breaks the preset's 1e6-per-cell rule either way); float64 for ``log1p_format``."""
        return np.dtype(np.float64 if self._arm == "log1p_format" else np.float32)

    def emit(self, rows: slice) -> sp.csr_matrix:
        """Rows ``rows`` of the arm, computed in float64."""
        start, stop, _ = rows.indices(self.shape[0])
        if self._arm != "variance_inflated":
            return self._edited(start, stop)
        first, last = start // NOISE_ROWS, max(start, stop - 1) // NOISE_ROWS
        out = sp.vstack([self._noisy(b) for b in range(first, last + 1)], format="csr")
        return out[start - first * NOISE_ROWS : stop - first * NOISE_ROWS]

    def _noisy(self, b: int) -> sp.csr_matrix:
        """Noise block ``b``: each perturbed cell's stored count :math:`c` (storage order, columns
        sorted) becomes :math:`\\mathrm{Poisson}(c\\,G)`, all :math:`G\\sim\\Gamma(1,1)` of the block
        drawn first, then the Poissons."""
        if self._cached is not None and self._cached[0] == b:
            return self._cached[1]
        start, stop = b * NOISE_ROWS, min((b + 1) * NOISE_ROWS, self.shape[0])
        mat = self._edited(start, stop)
        where = np.repeat(self._s.edited[start:stop], np.diff(mat.indptr))
        rng = np.random.default_rng([self._s.seed, 1, b])
        counts = mat.data[where]
        mat.data[where] = rng.poisson(counts * rng.gamma(1.0, 1.0, size=counts.size)).astype(np.float64)
        mat.eliminate_zeros()
        self._cached = (b, mat)
        return mat

    def _edited(self, start: int, stop: int) -> sp.csr_matrix:
        s = self._s
        cells = s.kept[s.src[start:stop]].astype(np.float64)
        edited = s.edited[start:stop]
        if self._arm in TARGET_ARMS:
            cells = self._targets(cells, edited, s.own_col[start:stop], s.own_value[start:stop])
        elif self._arm == "log1p_format":
            row = np.repeat(np.arange(stop - start), np.diff(cells.indptr))
            cells.data *= np.where(edited[row], s.response[cells.indices], 1.0)
            totals = np.bincount(row, weights=cells.data, minlength=stop - start)
            inv = np.divide(_LOG_TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
            cells.data = np.log1p(cells.data * inv[row])
        cells.eliminate_zeros()
        return cells

    def _targets(self, cells: sp.csr_matrix, edited: np.ndarray, own_col: np.ndarray,
                 own_value: np.ndarray) -> sp.csr_matrix:
        """Panel columns of the perturbed cells: ``target_spike`` sets the own target to 0 and the
        other panel targets to :math:`4(c+1)`; ``target_only`` sets the own target to the truth's count."""
        panel = self._s.panel
        sub = cells[:, panel].toarray()
        own = own_col[:, None] == panel[None, :]
        if self._arm == "target_spike":
            new = np.where(own, 0.0, 4.0 * (sub + 1.0))
        else:
            new = np.where(own, own_value[:, None], sub)
        new[~edited] = sub[~edited]
        keep = np.ones(cells.shape[1])
        keep[panel] = 0.0
        r, c = np.nonzero(new)
        edits = sp.csr_matrix((new[r, c], (r, panel[c])), shape=cells.shape)
        return sp.csr_matrix(cells.multiply(keep[None, :])) + edits


def emitted_arm(source: ArmSource, arm: str) -> CellData:
    """Exploit arm ``arm`` of ``source``'s truth as a lazily emitted input (``side="pred"``, the
    truth's labels; module docstring). Its cells equal :func:`~shrinkpert.baselines.exploit_cells`'
    whatever blocks are read."""
    if arm not in EXPLOITS:
        raise InputError(f"arm must be one of {list(EXPLOITS)}, got {arm!r}.")
    if arm in TARGET_ARMS and source.panel.size == 0:
        raise InputError(f"exploit arm {arm!r}: no perturbation's target gene is measured; pass targets=.")
    if arm == "log1p_format" and source.response is None:
        raise InputError("exploit arm 'log1p_format' needs the mean response: build the source with arm_source("
                         "..., arms=[..., 'log1p_format']).")
    rows = _ArmRows(source, arm)
    return source.truth.emitted(rows, rows.dtype, f"exploit arm {arm!r}")
