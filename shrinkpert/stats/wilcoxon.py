"""Wilcoxon rank-sum (Mann–Whitney U) differential expression of each perturbation vs control.

:func:`wilcoxon_de` reads the matrix (in memory, CSR/CSC/dense, or an ``.h5ad`` file) in blocks —
a counting pass, then a scatter — into one compressed-column copy of its stored values (no
second layout), tests gene block by gene block —
each gene's positive values ranked with the zeros as one tie group — and returns U, the
tie-corrected two-sided normal-approximation p-value with continuity correction (the rule of
``scipy.stats.mannwhitneyu(..., method="asymptotic")``), Benjamini–Hochberg q-values within each
perturbation and log2 fold changes of the normalised means. Inputs pass the boundary
(:func:`~shrinkpert._validate.validate`) once; the engine works on the encoded
:class:`~shrinkpert._validate.CellData`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._arrays import freeze as _freeze
from .._frames import long_frame
from .._numba import thread_limit
from .._validate import CellData, validate
from ..errors import GeneMismatchError, InputError
from ._wilcoxon_kernels import gather_columns, mwu_block, scatter_rows
from .testing import bh_adjust

__all__ = ["WilcoxonResult", "wilcoxon_de", "wilcoxon_de_pair"]

#: Stored entries per gene block of the test (both sides together): bounds the block's
#: working arrays (about 20 bytes per entry) and keeps enough genes per block for the threads.
_BLOCK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class WilcoxonResult:
    r"""Mann–Whitney U tests of each perturbation's cells against the control cells, per gene.

    For perturbation :math:`p` (:math:`n_1` cells) and the control (:math:`n_2` cells), with
    mid-ranks :math:`r` of the values :math:`y` in the pooled sample and tie groups of sizes
    :math:`t`:

    .. math::
        U_{pg} = \sum_{i \in p} r_i - \frac{n_1(n_1 + 1)}{2},\qquad
        \sigma^2 = \frac{n_1 n_2}{12}\Big(n_1 + n_2 + 1 - \frac{\sum t^3 - t}{n(n-1)}\Big),

    .. math::
        p_{pg} = 2\,\bar\Phi\Big(\frac{\max(U, n_1 n_2 - U) - n_1 n_2/2 - 1/2}{\sigma}\Big)

    (clipped to 1; 1 when :math:`\sigma = 0`). ``q`` is the Benjamini–Hochberg adjustment of
    ``p`` within each perturbation over the tested genes (NaN for untested genes).
    ``lfc`` is :math:`\log_2\big((\bar x_{pg} + \epsilon)/(\bar x_{cg} + \epsilon)\big)` of the
    arithmetic means of the normalised values :math:`x = c\,T/L` (raw values when
    ``normalize=False``).

    Attributes
    ----------
    perturbations, genes : pandas.Index
    u, p, q, lfc : ndarray of float64, shape (n_perturbations, n_genes)
    mean_perturbed : ndarray of float64, shape (n_perturbations, n_genes)
    mean_control : ndarray of float64, shape (n_genes,)
    n_cells : ndarray of int64, shape (n_perturbations,)
    n_control : int
    tested : ndarray of bool, shape (n_genes,)
        Genes in the multiple-testing family (all genes unless ``min_control_cpm`` gated some).
    params : mapping
    """

    perturbations: pd.Index
    genes: pd.Index
    u: np.ndarray
    p: np.ndarray
    q: np.ndarray
    lfc: np.ndarray
    mean_perturbed: np.ndarray
    mean_control: np.ndarray
    n_cells: np.ndarray
    n_control: int
    tested: np.ndarray
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        for name in ("u", "p", "q", "lfc", "mean_perturbed", "mean_control", "n_cells", "tested"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row per perturbation × gene: ``u, p, q, lfc, tested``."""
        return long_frame(
            self.perturbations,
            self.genes,
            {"u": self.u, "p": self.p, "q": self.q, "lfc": self.lfc,
             "tested": np.broadcast_to(self.tested, self.u.shape)},
        )



# ----------------------------------------------------------------------------------------------
# reading: one compressed-column copy per input, built from row blocks without a second layout


@dataclass(frozen=True)
class _Columns:
    """Compressed-column copy of (some rows of) one input: column ``g`` holds rows
    ``rows[indptr[g]:indptr[g + 1]]`` (increasing) with stored values ``values[...]``."""

    indptr: np.ndarray
    rows: np.ndarray
    values: np.ndarray

    def select(self, keep: np.ndarray) -> _Columns:
        """The entries of the rows where ``keep`` is True (column by column, order kept)."""
        n_g = len(self.indptr) - 1
        counts = np.zeros(n_g, dtype=np.int64)
        kept_rows, kept_values = [], []
        for g0, g1 in _spans(self.indptr, _BLOCK_ENTRIES):
            lo, hi = self.indptr[g0], self.indptr[g1]
            mask = keep[self.rows[lo:hi]]
            col = np.repeat(np.arange(g1 - g0), np.diff(self.indptr[g0 : g1 + 1]))
            counts[g0:g1] = np.bincount(col[mask], minlength=g1 - g0)
            kept_rows.append(self.rows[lo:hi][mask])
            kept_values.append(self.values[lo:hi][mask])
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return _Columns(indptr, np.concatenate(kept_rows), np.concatenate(kept_values))


def _spans(indptr: np.ndarray, entries: int) -> list[tuple[int, int]]:
    """Consecutive column ranges holding about ``entries`` stored values each (at least one column)."""
    n_g = len(indptr) - 1
    spans, g0 = [], 0
    while g0 < n_g:
        g1 = int(np.searchsorted(indptr, indptr[g0] + entries, side="right")) - 1
        g1 = min(max(g1, g0 + 1), n_g)
        spans.append((g0, g1))
        g0 = g1
    return spans


def _read_columns(data: CellData, keep: np.ndarray | None = None) -> tuple[_Columns, np.ndarray]:
    """The input's compressed-column copy (rows where ``keep``; all by default) and every row's
    total of stored values (float64, summed in storage order as
    :func:`~shrinkpert.data.read.row_totals` does).

    Two passes over the matrix: counts per column and row totals, then each row block scattered
    into the preallocated copy, so only the copy and one block are ever held. Negative or
    non-finite values are refused.
    """
    n_cells, n_g = data.shape
    keep = np.ones(n_cells, dtype=bool) if keep is None else np.asarray(keep, dtype=bool)
    totals = np.zeros(n_cells)
    counts = np.zeros(n_g, dtype=np.int64)
    with data.open() as source:
        by_rows = source.by_rows
        dtype = source.dtype
        for block in source.blocks():
            values = _sparse(block.values, by_rows)
            _check_values(values.data, data.side)
            weights = values.data.astype(np.float64)
            if by_rows:
                row = np.repeat(np.arange(block.rows.start, block.rows.stop), np.diff(values.indptr))
                totals += np.bincount(row, weights=weights, minlength=n_cells)
                counts += np.bincount(values.indices[keep[row]], minlength=n_g)
            else:
                totals += np.bincount(values.indices, weights=weights, minlength=n_cells)
                col = np.repeat(np.arange(block.cols.start, block.cols.stop), np.diff(values.indptr))
                counts += np.bincount(col[keep[values.indices]], minlength=n_g)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        rows = np.empty(int(indptr[-1]), dtype=np.int32 if n_cells < 2**31 else np.int64)
        stored = np.empty(int(indptr[-1]), dtype=dtype)
        fill = indptr[:-1].copy()
        for block in source.blocks():
            values = _sparse(block.values, by_rows)
            if by_rows:
                scatter_rows(values.indptr, values.indices, values.data, block.rows.start, keep, fill, rows, stored)
            else:
                mask = keep[values.indices]
                lo, hi = indptr[block.cols.start], indptr[block.cols.stop]
                rows[lo:hi] = values.indices[mask]
                stored[lo:hi] = values.data[mask]
    return _Columns(indptr, rows, stored), totals


def _sparse(values, by_rows: bool):
    """A block as CSR (row blocks) or CSC (gene blocks), stored zeros kept."""
    if by_rows:
        return values if sp.issparse(values) and values.format == "csr" else sp.csr_matrix(values)
    return values if sp.issparse(values) and values.format == "csc" else sp.csc_matrix(values)


def _check_values(values: np.ndarray, side: str) -> None:
    if values.size and not np.isfinite(values).all():
        raise InputError(f"{side}: the matrix contains NaN or infinite values; the rank-sum test needs finite values.")
    if values.size and values.min() < 0:
        raise InputError(
            f"{side}: the matrix contains negative values; the rank-sum test here treats zeros as the lowest "
            "tie group and needs non-negative data (raw counts or log-normalised counts)."
        )


def _rank_pass(sides, group_sizes: np.ndarray, control_code: int, n_g: int, *, normalize: bool,
               chunk_size: int | None):
    """U, p (every group vs ``control_code``) and the sums of normalised values per group.

    ``sides``: ``(columns, divisor, row_codes)`` per input; every group's cells lie in one side.
    Gene block by gene block, the sides' columns are gathered into one compressed-column block
    (the kernel's input), log-transformed with NumPy when ``normalize`` and tested.
    """
    n_groups = len(group_sizes)
    sums = np.zeros((n_groups, n_g))
    u = np.full((n_groups, n_g), np.nan)
    p = np.full((n_groups, n_g), np.nan)
    merged = sum(cols.indptr for cols, _, _ in sides)
    if chunk_size is not None:
        if int(chunk_size) < 1:
            raise InputError(f"chunk_size must be a positive number of genes, got {chunk_size!r}.")
        spans = [(g0, min(g0 + int(chunk_size), n_g)) for g0 in range(0, n_g, int(chunk_size))]
    else:
        spans = _spans(merged, _BLOCK_ENTRIES)
    for g0, g1 in spans:
        indptr = merged[g0 : g1 + 1] - merged[g0]
        codes = np.empty(int(indptr[-1]), dtype=np.int32)
        lin = np.empty(int(indptr[-1]))
        start = indptr[:-1].copy()
        for cols, divisor, row_codes in sides:
            gather_columns(cols.indptr, cols.rows, cols.values, divisor, row_codes, g0, start, codes, lin, sums)
            start += np.diff(cols.indptr[g0 : g1 + 1])
        ranked = np.log1p(lin, out=lin) if normalize else lin
        mwu_block(indptr, codes, ranked, group_sizes, control_code, u[:, g0:g1], p[:, g0:g1])
    return u, p, sums


def _divisor(totals: np.ndarray, normalize: bool, target_sum: float) -> np.ndarray:
    return totals / float(target_sum) if normalize else np.ones_like(totals)


def _sizes(codes: np.ndarray, n_groups: int) -> np.ndarray:
    return np.bincount(codes[codes >= 0], minlength=n_groups).astype(np.int64)


def _check_genes(other: CellData, data: CellData, name: str) -> None:
    if not other.genes.equals(data.genes):
        raise GeneMismatchError(
            f"{name} has different genes (or gene order) from {data.side}; align the gene axis "
            f"(e.g. {name}[:, {data.side}.var_names]) before testing."
        )


def _validated(data, side: str, *, perturbation_key, control, layer, require_control: bool) -> CellData:
    """``data`` through the boundary; a CellData of the same column, control (or, when no control
    is required, none) and layer is used as it is."""
    if isinstance(data, CellData) and (data.perturbation_key, data.layer) == (perturbation_key, layer) and (
            data.control == control or (data.control is None and not require_control)):
        return data
    return validate(data, side=side, perturbation_key=perturbation_key, control=control, layer=layer,
                    require_control=require_control)


def wilcoxon_de(
    data,
    *,
    perturbation_key: str = "perturbation",
    control: str = "non-targeting",
    reference=None,
    layer: str | None = None,
    normalize: bool = True,
    target_sum: float = 1e6,
    min_control_cpm: float | None = None,
    epsilon: float = 1e-9,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> WilcoxonResult:
    r"""Wilcoxon rank-sum test of every perturbation against the control cells, gene by gene.

    Parameters
    ----------
    data : AnnData, path to ``.h5ad`` or CellData
        Cells × genes, non-negative values (raw counts when ``normalize=True``); backed AnnData
        and paths are read in blocks. Validated once at the boundary
        (:func:`~shrinkpert._validate.validate`: unique names, the label column, at least 3
        control cells); cells without a label belong to no group.
    perturbation_key : str
        ``obs`` column naming each cell's perturbation.
    control : str
        Label of the control cells.
    reference : AnnData, path or CellData, optional
        Take the control cells from this dataset instead (its ``control`` cells, same genes in
        the same order); ``data``'s own control cells are then ignored. This is how a prediction
        is tested against the measured controls.
    layer : str, optional
        Layer instead of ``X`` (the same name in ``reference``).
    normalize : bool, default True
        Rank :math:`\log(1 + c/(L/T))` with :math:`L` the cell's total and :math:`T` =
        ``target_sum`` (the ranks are those of :math:`c/L`; the logarithm is taken so that ties
        in floating point are exactly those of the log-normalised matrix other tools rank),
        and average :math:`c/(L/T)` for the fold changes. ``False`` ranks and averages the
        stored values.
    target_sum : float, default 1e6
        :math:`T` (1e6: counts per million).
    min_control_cpm : float, optional
        Test only genes whose mean counts-per-million over the control cells exceeds this
        (a reference-only gate, the same genes for every perturbation); BH runs over them.
    epsilon : float, default 1e-9
        Pseudocount of the log2 fold change.
    chunk_size : int, optional
        Genes per block of the test (default: about 4 M stored values per block).
    n_threads : int, optional
        Numba threads (default: all).

    Returns
    -------
    WilcoxonResult

    Notes
    -----
    Memory: the input is held once as a compressed-column copy (row indices and stored values,
    the size of the sparse matrix), built from row blocks without a second layout; the test
    then runs gene block by gene block.

    Raises
    ------
    MissingKeyError
        ``perturbation_key`` is not an ``obs`` column, or the control label is absent.
    InputError
        Too few control cells, no perturbed cells; negative or non-finite values.
    GeneMismatchError
        ``reference`` has other genes.
    """
    data = _validated(data, "data", perturbation_key=perturbation_key, control=control, layer=layer,
                      require_control=reference is None)
    ref = None
    if reference is not None:
        ref = _validated(reference, "data 'reference'", perturbation_key=perturbation_key, control=control,
                         layer=layer, require_control=True)
        _check_genes(ref, data, "reference")
    return _wilcoxon(data, ref, normalize=normalize, target_sum=target_sum, min_control_cpm=min_control_cpm,
                     epsilon=epsilon, chunk_size=chunk_size, n_threads=n_threads)


def _wilcoxon(data: CellData, ref: CellData | None, *, normalize, target_sum, min_control_cpm, epsilon, chunk_size,
              n_threads) -> WilcoxonResult:
    """:func:`wilcoxon_de` on validated inputs (``ref``: the controls' input, or None)."""
    n_p, n_g = len(data.perturbations), data.shape[1]
    if n_p == 0:
        raise InputError(f"{data.side}: no perturbed cells (every labelled cell is the control); nothing to test.")
    with thread_limit(n_threads):
        own, totals = _read_columns(data, keep=data.codes >= 0)
        sides = [(own, _divisor(totals, normalize, target_sum), data.codes)]
        if ref is None:
            sizes = _sizes(data.codes, n_p + 1)
        else:  # the data's perturbations, the reference's controls
            codes = np.where(data.codes < n_p, data.codes, -1)
            ref_codes = np.where(ref.codes == ref.control_code, n_p, -1)
            controls, ref_totals = _read_columns(ref, keep=ref_codes >= 0)
            sides = [(own, sides[0][1], codes), (controls, _divisor(ref_totals, normalize, target_sum), ref_codes)]
            sizes = _sizes(codes, n_p + 1) + _sizes(ref_codes, n_p + 1)
        u, p, sums = _rank_pass(sides, sizes, n_p, n_g, normalize=normalize, chunk_size=chunk_size)
    return _result(data.perturbations, data.genes, u[:n_p], p[:n_p], sums[:n_p], sums[n_p], sizes[:n_p],
                   int(sizes[n_p]), perturbation_key=data.perturbation_key, control=data.control or ref.control,
                   layer=data.layer, normalize=normalize, target_sum=target_sum, min_control_cpm=min_control_cpm,
                   epsilon=epsilon, reference=ref is not None)


def _result(perturbations, genes, u, p, sums, control_sum, n_cells, n_control, *, min_control_cpm, epsilon,
            normalize, target_sum, **params) -> WilcoxonResult:
    n_p, n_g = u.shape
    means = sums / n_cells[:, None]
    mean_control = control_sum / n_control
    tested = np.ones(n_g, dtype=bool)
    if min_control_cpm is not None:
        cpm = mean_control * (1e6 / float(target_sum)) if normalize else mean_control
        tested = cpm > float(min_control_cpm)
    q = np.full((n_p, n_g), np.nan)
    if tested.any():
        q[:, tested] = bh_adjust(p[:n_p, tested])
    with np.errstate(divide="ignore", invalid="ignore"):
        lfc = np.log2((means + epsilon) / (mean_control + epsilon))
    return WilcoxonResult(
        perturbations=perturbations,
        genes=pd.Index(genes),
        u=u,
        p=p,
        q=q,
        lfc=lfc,
        mean_perturbed=means,
        mean_control=mean_control,
        n_cells=n_cells,
        n_control=n_control,
        tested=tested,
        params={**params, "normalize": normalize, "target_sum": float(target_sum),
                "min_control_cpm": min_control_cpm, "epsilon": epsilon},
    )


def wilcoxon_de_pair(
    pred,
    truth,
    *,
    perturbation_key: str = "perturbation",
    control: str = "non-targeting",
    layer: str | None = None,
    normalize: bool = True,
    target_sum: float = 1e6,
    min_control_cpm: float | None = None,
    epsilon: float = 1e-9,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[WilcoxonResult, WilcoxonResult]:
    """Test ``truth``'s and ``pred``'s perturbations against ``truth``'s control cells.

    Equal to ``(wilcoxon_de(truth, ...), wilcoxon_de(pred, reference=truth, ...))`` (same
    parameters, same numbers), with each input validated (AnnData, path or CellData) and read
    once: the truth is tested first, then only its control cells' columns are kept while the
    prediction is read and tested, so one input's compressed-column copy is held at a time.
    ``pred``'s own control cells are ignored; both sides test the perturbations of ``truth``
    (``pred`` must have cells for each; extra labels are ignored).

    Returns
    -------
    (WilcoxonResult, WilcoxonResult)
        Truth's tests, then pred's.
    """
    truth = _validated(truth, "truth", perturbation_key=perturbation_key, control=control, layer=layer,
                       require_control=True)
    pred = _validated(pred, "pred", perturbation_key=perturbation_key, control=control, layer=layer,
                      require_control=False)
    _check_genes(pred, truth, "pred")
    return _wilcoxon_pair(pred, truth, normalize=normalize, target_sum=target_sum, min_control_cpm=min_control_cpm,
                          epsilon=epsilon, chunk_size=chunk_size, n_threads=n_threads)


def _wilcoxon_pair(pred: CellData, truth: CellData, *, normalize, target_sum, min_control_cpm, epsilon, chunk_size,
                   n_threads) -> tuple[WilcoxonResult, WilcoxonResult]:
    """:func:`wilcoxon_de_pair` on validated inputs: the truth's pass, then the prediction's
    against the truth's control cells (only one input's copy held at a time)."""
    n_p, n_g = len(truth.perturbations), truth.shape[1]
    position = truth.perturbations.get_indexer(pred.perturbations)
    lookup = np.append(position, [-1, -1])  # pred's control code and -1 map to -1
    p_codes = lookup[np.where(pred.codes >= 0, pred.codes, len(lookup) - 1)]
    t_sizes = _sizes(truth.codes, n_p + 1)
    p_sizes = _sizes(p_codes, n_p + 1)
    p_sizes[n_p] = t_sizes[n_p]
    if n_p == 0 or (p_sizes[:n_p] == 0).any():
        absent = list(truth.perturbations[p_sizes[:n_p] == 0][:5])
        raise InputError(f"pred has no cells for perturbations {absent!r} of truth; every perturbation needs cells.")
    common = dict(perturbation_key=truth.perturbation_key, control=truth.control, layer=truth.layer,
                  normalize=normalize, target_sum=target_sum, min_control_cpm=min_control_cpm, epsilon=epsilon)
    with thread_limit(n_threads):
        cols, totals = _read_columns(truth, keep=truth.codes >= 0)
        t_div = _divisor(totals, normalize, target_sum)
        u, p, sums = _rank_pass([(cols, t_div, truth.codes)], t_sizes, n_p, n_g, normalize=normalize,
                                chunk_size=chunk_size)
        truth_res = _result(truth.perturbations, truth.genes, u[:n_p], p[:n_p], sums[:n_p], sums[n_p],
                            t_sizes[:n_p], int(t_sizes[n_p]), reference=False, **common)
        controls = cols.select(truth.codes == n_p)
        del cols
        pcols, p_totals = _read_columns(pred, keep=p_codes >= 0)
        sides = [(pcols, _divisor(p_totals, normalize, target_sum), p_codes), (controls, t_div, truth.codes)]
        u, p, sums = _rank_pass(sides, p_sizes, n_p, n_g, normalize=normalize, chunk_size=chunk_size)
    pred_res = _result(truth.perturbations, truth.genes, u[:n_p], p[:n_p], sums[:n_p], sums[n_p], p_sizes[:n_p],
                       int(p_sizes[n_p]), reference=True, **common)
    return truth_res, pred_res
