"""Wilcoxon rank-sum (Mann–Whitney U) differential expression of each perturbation vs control.

:func:`wilcoxon_de` streams the matrix (in memory, CSR/CSC, or an ``.h5ad`` file) in blocks of
genes, ranks each gene's positive values with the zeros as one tie group, and returns U, the
tie-corrected two-sided normal-approximation p-value with continuity correction (the rule of
``scipy.stats.mannwhitneyu(..., method="asymptotic")``), Benjamini–Hochberg q-values within each
perturbation and log2 fold changes of the normalised means.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._frames import long_frame
from .._numba import thread_limit
from .testing import bh_adjust
from ..data.read import MatrixSource, open_matrix, read_annotations, row_totals
from ..errors import GeneMismatchError, InputError, MissingKeyError
from ._wilcoxon_kernels import mwu_block
from .group import _freeze

__all__ = ["WilcoxonResult", "wilcoxon_de", "wilcoxon_de_pair"]

_BLOCK_ENTRIES_MIN = 1 << 21
_BLOCK_ENTRIES_MAX = 1 << 23


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


def _labels(obs: pd.DataFrame, key: str, where: str) -> np.ndarray:
    if key not in obs.columns:
        raise MissingKeyError(
            f"perturbation_key={key!r} is not a column of {where}.obs; columns present: "
            f"{list(obs.columns)!r}. Pass the column that names each cell's perturbation."
        )
    values = obs[key]
    if values.isna().any():
        raise InputError(f"{where}.obs[{key!r}] has missing labels; label every cell.")
    return values.astype(str).to_numpy()


def _row_positions(labels: np.ndarray, names: pd.Index, control: str, control_code: int | None) -> np.ndarray:
    codes = names.get_indexer(labels).astype(np.int32)
    if control_code is None:
        codes[labels == control] = -1
    else:
        codes[labels == control] = control_code
    return codes


def _csc_columns(values, g0: int, g1: int) -> sp.csc_matrix:
    """Columns ``g0:g1`` of one block as CSC (C-level slicing and conversion)."""
    if sp.issparse(values):
        return sp.csr_matrix(values)[:, g0:g1].tocsc() if values.format != "csc" else values[:, g0:g1]
    return sp.csc_matrix(np.asarray(values[:, g0:g1]))


class _ColumnReader:
    """Yields, gene block after gene block, one source's columns as a CSC matrix (all cells).

    Column-major storage is streamed block by block; row-major storage is read once and held as
    one compressed-column copy, so each gene block is a contiguous slice.
    """

    def __init__(self, source: MatrixSource, width: int):
        self.source = source
        self._cols: sp.csc_matrix | None = None
        self._gene_blocks: Iterator | None = None if source.by_rows else source.blocks(width)

    def read(self, g0: int, g1: int) -> sp.csc_matrix:
        if self._gene_blocks is not None:
            return _csc_columns(next(self._gene_blocks).values, 0, g1 - g0)
        if self._cols is None:
            # Row-major storage: read it once and transpose it once (C-level) to compressed columns.
            rows = sp.vstack([sp.csr_matrix(b.values) for b in self.source.blocks()], format="csr")
            self._cols = rows.tocsc()
            del rows
        return self._cols[:, g0:g1]


def _stack_rows(blocks: list[sp.csc_matrix]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, row, value)`` of CSC blocks with the same columns stacked on top of each other
    (rows of block k offset by the rows above it); one vectorised scatter, no sort."""
    counts = sum(np.diff(b.indptr) for b in blocks)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nnz = int(indptr[-1])
    rows = np.empty(nnz, dtype=np.int64)
    values = np.empty(nnz, dtype=np.result_type(*[b.data.dtype for b in blocks]))
    filled = indptr[:-1].copy()
    offset = 0
    for b in blocks:
        per_col = np.diff(b.indptr)
        dest = np.repeat(filled - b.indptr[:-1], per_col) + np.arange(b.nnz)
        rows[dest] = b.indices + offset
        values[dest] = b.data
        filled += per_col
        offset += b.shape[0]
    return indptr, rows, values


def _block_width(sources: list[MatrixSource], n_genes: int, chunk_size: int | None) -> int:
    if chunk_size is not None:
        width = int(chunk_size)
        if width < 1:
            raise InputError(f"chunk_size must be a positive number of genes, got {chunk_size!r}.")
        return min(width, n_genes)
    nnz = sum(s.nnz for s in sources)
    target = min(max(_BLOCK_ENTRIES_MIN, nnz // 4), _BLOCK_ENTRIES_MAX)
    per_gene = max(nnz / max(n_genes, 1), 1.0)
    return int(min(n_genes, max(1, target // per_gene)))


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
    data : AnnData or path to ``.h5ad``
        Cells × genes, non-negative values (raw counts when ``normalize=True``); backed AnnData
        and paths are read in blocks.
    perturbation_key : str
        ``obs`` column naming each cell's perturbation.
    control : str
        Label of the control cells.
    reference : AnnData or path, optional
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
        Genes per block (default: about a quarter of the stored values, 2–8 M per block).
    n_threads : int, optional
        Numba threads (default: all).

    Returns
    -------
    WilcoxonResult

    Raises
    ------
    MissingKeyError
        ``perturbation_key`` is not an ``obs`` column.
    InputError
        No control or no perturbed cells; negative or non-finite values.
    GeneMismatchError
        ``reference`` has other genes.
    """
    obs, genes = read_annotations(data)
    labels = _labels(obs, perturbation_key, "data")
    perturbations = pd.Index(np.unique(labels[labels != control]), name=perturbation_key)
    if len(perturbations) == 0:
        raise InputError(f"data has no perturbed cells (every cell is {control!r}); nothing to test.")
    n_p, n_g = len(perturbations), len(genes)
    items = [(data, _row_positions(labels, perturbations, control, None if reference is not None else n_p))]
    if reference is not None:
        ref_obs, ref_genes = read_annotations(reference)
        if not pd.Index(ref_genes).equals(pd.Index(genes)):
            raise GeneMismatchError(
                "reference has different genes (or gene order) from data; align the gene axis "
                "(e.g. reference[:, data.var_names]) before testing."
            )
        ref_labels = _labels(ref_obs, perturbation_key, "reference")
        items.append((reference, np.where(ref_labels == control, n_p, -1).astype(np.int32)))
    group_sizes = _group_sizes(items, n_p + 1)
    if group_sizes[n_p] == 0:
        where = "reference" if reference is not None else "data"
        raise InputError(
            f"No control cells: no cell of {where} has {perturbation_key} == {control!r}. Pass the "
            "control label with control=..."
        )
    u, p, sums = _test(items, group_sizes, n_p, n_g, layer=layer, normalize=normalize,
                       target_sum=target_sum, chunk_size=chunk_size, n_threads=n_threads)
    return _result(perturbations, genes, u[:n_p], p[:n_p], sums[:n_p], sums[n_p], group_sizes[:n_p],
                   int(group_sizes[n_p]), perturbation_key=perturbation_key, control=control, layer=layer,
                   normalize=normalize, target_sum=target_sum, min_control_cpm=min_control_cpm,
                   epsilon=epsilon, reference=reference is not None)


def _group_sizes(items, n_groups: int) -> np.ndarray:
    sizes = np.zeros(n_groups, dtype=np.int64)
    for _, codes in items:
        sizes += np.bincount(codes[codes >= 0], minlength=n_groups)
    return sizes


def _test(items, group_sizes, control_code: int, n_g: int, *, layer, normalize, target_sum, chunk_size, n_threads):
    """U, p (every group vs ``control_code``) and normalised sums per group, one pass over genes."""
    n_groups = len(group_sizes)
    sums = np.zeros((n_groups, n_g))
    u = np.full((n_groups, n_g), np.nan)
    p = np.full((n_groups, n_g), np.nan)
    with thread_limit(n_threads), contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_matrix(item[0], layer)) for item in items]
        divisors = []
        for source, (_, codes) in zip(sources, items):
            if source.shape != (len(codes), n_g):
                raise InputError(f"{source.label} has shape {source.shape}, expected {(len(codes), n_g)}.")
            divisors.append(row_totals(source) / float(target_sum) if normalize else None)
        width = _block_width(sources, n_g, chunk_size)
        readers = [_ColumnReader(source, width) for source in sources]
        row_codes = np.concatenate([codes for _, codes in items])
        divisor = np.concatenate(divisors) if normalize else None
        for g0 in range(0, n_g, width):
            g1 = min(g0 + width, n_g)
            indptr_all, rows, values = _stack_rows([reader.read(g0, g1) for reader in readers])
            values = _checked(values, "the data")
            col = np.repeat(np.arange(g1 - g0), np.diff(indptr_all))
            code = row_codes[rows]
            keep = (code >= 0) & (values != 0)
            col, code, lin = col[keep], code[keep], values[keep].astype(np.float64)
            if divisor is not None:
                lin = lin / divisor[rows[keep]]
            sums[:, g0:g1] = np.bincount(
                code.astype(np.int64) * (g1 - g0) + col, weights=lin, minlength=n_groups * (g1 - g0)
            ).reshape(n_groups, g1 - g0)
            indptr = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=g1 - g0))]).astype(np.int64)
            ranked = np.log1p(lin) if normalize else lin
            mwu_block(indptr, code, ranked, group_sizes, control_code, u[:, g0:g1], p[:, g0:g1])
    return u, p, sums


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
    """Test ``truth``'s and ``pred``'s perturbations against ``truth``'s control cells in one pass.

    Equal to ``(wilcoxon_de(truth, ...), wilcoxon_de(pred, reference=truth, ...))`` (same
    parameters, same numbers) but each gene block is read, normalised and its control values
    sorted once for both. ``pred``'s own control cells are ignored; both sides test the
    perturbations of ``truth`` (``pred`` must have cells for each; extra labels are ignored).

    Returns
    -------
    (WilcoxonResult, WilcoxonResult)
        Truth's tests, then pred's.
    """
    obs, genes = read_annotations(truth)
    t_labels = _labels(obs, perturbation_key, "truth")
    p_obs, p_genes = read_annotations(pred)
    if not pd.Index(p_genes).equals(pd.Index(genes)):
        raise GeneMismatchError(
            "pred has different genes (or gene order) from truth; align the gene axis "
            "(e.g. pred[:, truth.var_names]) before testing."
        )
    p_labels = _labels(p_obs, perturbation_key, "pred")
    perturbations = pd.Index(np.unique(t_labels[t_labels != control]), name=perturbation_key)
    n_p, n_g = len(perturbations), len(genes)
    t_codes = _row_positions(t_labels, perturbations, control, n_p)
    p_codes = perturbations.get_indexer(p_labels).astype(np.int32)
    p_codes[(p_codes >= 0)] += n_p + 1
    p_codes[p_labels == control] = -1
    items = [(truth, t_codes), (pred, p_codes)]
    sizes = _group_sizes(items, 2 * n_p + 1)
    if sizes[n_p] == 0:
        raise InputError(f"No control cells: no cell of truth has {perturbation_key} == {control!r}.")
    if n_p == 0 or (sizes[n_p + 1 :] == 0).any():
        raise InputError("pred has no cells for some perturbation of truth; every perturbation needs cells.")
    u, p, sums = _test(items, sizes, n_p, n_g, layer=layer, normalize=normalize, target_sum=target_sum,
                       chunk_size=chunk_size, n_threads=n_threads)
    common = dict(perturbation_key=perturbation_key, control=control, layer=layer, normalize=normalize,
                  target_sum=target_sum, min_control_cpm=min_control_cpm, epsilon=epsilon)
    truth_res = _result(perturbations, genes, u[:n_p], p[:n_p], sums[:n_p], sums[n_p], sizes[:n_p],
                        int(sizes[n_p]), reference=False, **common)
    pred_res = _result(perturbations, genes, u[n_p + 1 :], p[n_p + 1 :], sums[n_p + 1 :], sums[n_p],
                       sizes[n_p + 1 :], int(sizes[n_p]), reference=True, **common)
    return truth_res, pred_res


def _checked(values: np.ndarray, label: str) -> np.ndarray:
    values = np.asarray(values)
    if values.size and not np.isfinite(values).all():
        raise InputError(f"{label} contains NaN or infinite values; the rank-sum test needs finite values.")
    if values.size and values.min() < 0:
        raise InputError(
            f"{label} contains negative values; the rank-sum test here treats zeros as the lowest "
            "tie group and needs non-negative data (raw counts or log-normalised counts)."
        )
    return values
