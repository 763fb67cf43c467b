"""Per-group sufficient statistics in one streaming pass: :func:`group_statistics`."""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._arrays import freeze as _freeze
from .._numba import thread_limit
from .._vocab import NORMALIZATIONS, TARGET_SUM
from ..data.design import group_codes
from .._validate import CellData, validate
from ..data.read import MatrixSource, row_totals, scale_factors
from ..errors import CountsError, InputError, MissingKeyError, ShrinkpertWarning
from . import _kernels as K

__all__ = ["GroupStatistics", "group_statistics"]

#: Group × gene entries per block of genes pooled at once by :meth:`GroupStatistics.collapse`.
_COLLAPSE_ENTRIES = 4_000_000

log = logging.getLogger("shrinkpert")

_MODES = {None: 0, "total": 1, "log1p": 2}
_PILOT_ROWS = 1024


@dataclass(frozen=True)
class GroupStatistics:
    """Sufficient statistics per group × gene.

    For group :math:`g` with :math:`n_g` cells and values :math:`x_{ig}` of gene :math:`j`
    (after the optional normalisation recorded in ``params``):

    .. math::

        \\mathrm{sum}_{gj} = \\sum_i x_{ij}, \\quad
        \\mathrm{mean}_{gj} = \\mathrm{sum}_{gj} / n_g, \\quad
        \\mathrm{var}_{gj} = \\frac{1}{n_g - 1} \\sum_i (x_{ij} - \\mathrm{mean}_{gj})^2 ,

    and ``n_nonzero`` counts cells with :math:`x_{ij} \\neq 0`. ``var`` is NaN for groups of one
    cell. ``library_size`` is the summed library size (row total before normalisation) of each
    group, used for detection limits. Statistics rebuilt from means and variances alone
    (:meth:`from_moments`) have ``n_nonzero`` and ``library_size`` set to ``None``.

    Attributes
    ----------
    groups : pandas.Index
        Group labels (a MultiIndex when grouped by several columns).
    genes : pandas.Index
        Gene names.
    n_cells : ndarray of int64, shape (n_groups,)
    sum, mean, var : ndarray of float64, shape (n_groups, n_genes)
    n_nonzero : ndarray of int64, shape (n_groups, n_genes), or None
    library_size : ndarray of float64, shape (n_groups,), or None
    params : mapping
        ``groupby``, ``layer``, ``normalize``, ``target_sum``, ``source``, ``n_cells_total``.
    """

    groups: pd.Index
    genes: pd.Index
    n_cells: np.ndarray
    sum: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    n_nonzero: np.ndarray | None
    library_size: np.ndarray | None
    params: Mapping[str, Any]
    weight_sum: np.ndarray | None = None
    weight_sq: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("n_cells", "sum", "mean", "var", "n_nonzero", "library_size", "weight_sum", "weight_sq"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _freeze(getattr(self, name)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def weighted(self) -> bool:
        """Whether the cells carried weights (:func:`cell_pass` with ``weights=``)."""
        return self.weight_sum is not None

    @property
    def n_eff(self) -> np.ndarray:
        """Effective cells per group: ``n_cells`` (as float), or Kish's :math:`W^2/V` when weighted (0 if :math:`W = 0`)."""
        if not self.weighted:
            return self.n_cells.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.weight_sq > 0, self.weight_sum**2 / self.weight_sq, 0.0)

    @property
    def total_weight(self) -> np.ndarray:
        """Total weight :math:`W` per group (the cell count, as float, when unweighted)."""
        return self.weight_sum if self.weighted else self.n_cells.astype(np.float64)

    @classmethod
    def from_moments(cls, groups: pd.Index, genes: pd.Index, mean: np.ndarray, var: np.ndarray,
                     n_cells: np.ndarray, params: Mapping[str, Any]) -> GroupStatistics:
        """Statistics known only through their means, variances and sizes (``sum = n · mean``).

        Detection counts and library sizes are unknown, so ``n_nonzero`` and ``library_size``
        are ``None`` (and :attr:`detection` raises).
        """
        n_cells = np.asarray(n_cells, dtype=np.int64)
        return cls(pd.Index(groups), pd.Index(genes), n_cells, np.asarray(mean) * n_cells[:, None], mean, var,
                   None, None, params)

    def rows(self, labels: Sequence[str], what: str) -> np.ndarray:
        """Row of each label in :attr:`groups`; a clear error naming the absent ones."""
        idx = pd.Index(self.groups.astype(str)).get_indexer(pd.Index([str(x) for x in labels]))
        if (idx < 0).any():
            absent = [str(x) for x, i in zip(labels, idx) if i < 0]
            raise MissingKeyError(
                f"{what} {absent[:10]!r} are not among the groups of the input ({len(self.groups)} groups, e.g. "
                f"{self.groups[:10].tolist()!r}); check the labels."
            )
        return idx

    @property
    def m2(self) -> np.ndarray:
        """Sum of (weighted) squared deviations from the group mean: :math:`(n_g - 1)\\,\\mathrm{var}`,
        or :math:`(W - V/W)\\,\\mathrm{var}` when weighted."""
        return self._m2_of(self.var)

    def _m2_scale(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The factor per group that turns a variance into :attr:`m2`, and the groups where it
        applies (``None`` when weighted: wherever the variance is finite)."""
        if self.weighted:
            with np.errstate(invalid="ignore", divide="ignore"):
                return self.weight_sum - self.weight_sq / self.weight_sum, None
        return self.n_cells.astype(np.float64) - 1.0, self.n_cells > 1

    def _m2_of(self, var: np.ndarray) -> np.ndarray:
        """:attr:`m2` of ``var``, some columns of :attr:`var` (every group)."""
        scale, valid = self._m2_scale()
        return np.where(np.isfinite(var) if valid is None else valid[:, None], var * scale[:, None], 0.0)

    @property
    def detection(self) -> np.ndarray:
        """Fraction of cells with a non-zero value, ``n_nonzero / n_cells``."""
        if self.n_nonzero is None:
            raise InputError("These statistics were rebuilt from means and variances; detection is unknown. "
                             "Compute them from the cells with group_statistics().")
        return self.n_nonzero / np.maximum(self.n_cells, 1)[:, None]

    def merge(self, other: GroupStatistics) -> GroupStatistics:
        """Combine statistics of disjoint cells (groups matched by label; Chan et al. 1979).

        .. math::

            n = n_a + n_b,\\quad \\bar x = (n_a \\bar x_a + n_b \\bar x_b)/n,\\quad
            M_2 = M_{2,a} + M_{2,b} + \\frac{n_a n_b}{n} (\\bar x_a - \\bar x_b)^2 .
        """
        if not self.genes.equals(other.genes):
            raise InputError("Cannot merge statistics over different genes; align the genes first.")
        if self.weighted or other.weighted:
            raise NotImplementedError("Merging weighted statistics is not implemented; compute them in one pass.")
        for key in ("normalize", "target_sum", "layer"):
            if self.params.get(key) != other.params.get(key):
                raise InputError(f"Cannot merge statistics computed with different {key!r}.")
        groups = self.groups.union(other.groups, sort=True) if not self.groups.equals(other.groups) else self.groups
        ia, ib = self.groups.get_indexer(groups), other.groups.get_indexer(groups)

        def take(arr, idx, fill=0):
            out = np.full((len(groups),) + arr.shape[1:], fill, dtype=arr.dtype)
            out[idx >= 0] = arr[idx[idx >= 0]]
            return out

        na = take(self.n_cells, ia).astype(np.float64)[:, None]
        nb = take(other.n_cells, ib).astype(np.float64)[:, None]
        n = na + nb
        ma, mb = take(self.mean, ia, 0.0), take(other.mean, ib, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, (na * ma + nb * mb) / n, np.nan)
            m2 = take(self.m2, ia, 0.0) + take(other.m2, ib, 0.0) + np.where(n > 0, na * nb / n, 0.0) * (ma - mb) ** 2
            var = np.where(n > 1, m2 / (n - 1), np.nan)
        params = dict(self.params)
        params["n_cells_total"] = self.params.get("n_cells_total", 0) + other.params.get("n_cells_total", 0)
        return GroupStatistics(
            groups=groups,
            genes=self.genes,
            n_cells=(na + nb)[:, 0].astype(np.int64),
            sum=take(self.sum, ia, 0.0) + take(other.sum, ib, 0.0),
            mean=mean,
            var=var,
            n_nonzero=_both(self.n_nonzero, other.n_nonzero, lambda a, b: take(a, ia) + take(b, ib)),
            library_size=_both(self.library_size, other.library_size,
                               lambda a, b: take(a, ia, 0.0) + take(b, ib, 0.0)),
            params=params,
        )

    def select(self, level: str | int, value: Any) -> GroupStatistics:
        """The groups whose ``level`` equals ``value``, indexed by the remaining level(s)."""
        if not isinstance(self.groups, pd.MultiIndex):
            raise InputError("select() needs statistics grouped by several columns.")
        rows = np.flatnonzero(self.groups.get_level_values(level) == value)
        if len(rows) == 0:
            raise InputError(f"No group has {level!r} == {value!r}.")
        groups = self.groups[rows].droplevel(level)
        params = dict(self.params)
        params["groupby"] = tuple(groups.names) if isinstance(groups, pd.MultiIndex) else groups.name
        return self._take_rows(rows, groups, params)

    def take(self, labels: Sequence[str], what: str = "groups") -> GroupStatistics:
        """The groups ``labels`` in that order (their rows copied); :class:`MissingKeyError` names
        the absent ones (``what`` says what they are)."""
        rows = self.rows(labels, what)
        return self._take_rows(rows, self.groups[rows], dict(self.params))

    def _take_rows(self, rows: np.ndarray, groups: pd.Index, params: dict[str, Any]) -> GroupStatistics:
        return GroupStatistics(groups, self.genes, self.n_cells[rows], self.sum[rows], self.mean[rows],
                               self.var[rows], _rows_of(self.n_nonzero, rows), _rows_of(self.library_size, rows),
                               params, _rows_of(self.weight_sum, rows), _rows_of(self.weight_sq, rows))

    def collapse(self, level: str | int) -> GroupStatistics:
        """Pool the groups of a MultiIndex over every level but ``level`` (Chan's update).

        For the sub-groups :math:`r` of a pooled group:
        :math:`n = \\sum_r n_r`, :math:`\\bar x = \\sum_r n_r \\bar x_r / n`,
        :math:`M_2 = \\sum_r M_{2,r} + \\sum_r n_r (\\bar x_r - \\bar x)^2`.
        """
        if not isinstance(self.groups, pd.MultiIndex):
            raise InputError("collapse() needs statistics grouped by several columns.")
        codes, pooled = pd.factorize(self.groups.get_level_values(level), sort=True)
        pooled = pd.Index(pooled, name=self.groups.names[level] if isinstance(level, int) else level)

        order = np.argsort(codes, kind="stable")  # sub-groups of each pooled group, in their order
        starts = np.searchsorted(codes[order], np.arange(len(pooled)))
        lengths = np.diff(np.r_[starts, len(codes)])
        identity = bool((order == np.arange(len(order))).all())

        def add(values):  # every pooled group has at least one sub-group (factorize)
            values = values if identity else values[order]
            if values.ndim == 1:
                return np.add.reduceat(values, starts)
            return _sum_segments(values, starts, lengths)

        n = add(self.total_weight)  # cells, or total weights
        shape = (len(pooled), len(self.genes))
        mean, m2, sums = np.empty(shape), np.empty(shape), np.empty(shape, dtype=self.sum.dtype)
        nnz = None if self.n_nonzero is None else np.empty(shape, dtype=self.n_nonzero.dtype)
        scale, valid = self._m2_scale()
        K.pool_moments(*(np.ascontiguousarray(a, dtype=np.float64) for a in (self.mean, self.var, self.total_weight,
                                                                            scale)),
                       np.ones(len(scale), np.bool_) if valid is None else valid, valid is None,
                       *(a.astype(np.int64) for a in (order, starts, lengths)), n, mean, m2)
        n = n[:, None]
        # sums a block of genes at a time: the temporaries are groups × block, not groups × genes
        step = max(1, _COLLAPSE_ENTRIES // max(1, len(self.groups)))
        for start in range(0, shape[1], step):
            cols = slice(start, start + step)
            sums[:, cols] = add(self.sum[:, cols])
            if nnz is not None:
                nnz[:, cols] = add(self.n_nonzero[:, cols])
        params = dict(self.params)
        params["groupby"] = pooled.name
        weight_sq = _apply(add, self.weight_sq)
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.weighted:  # reliability weights, as in cell_pass
                denom = n - weight_sq[:, None] / n
                var = np.where((n**2 > weight_sq[:, None] * (1 + 1e-12)) & (denom > 0), m2 / denom, np.nan)
            else:
                var = np.where(n > 1, m2 / (n - 1), np.nan)
        return GroupStatistics(pooled, self.genes, add(self.n_cells), sums, mean, var, nnz,
                               _apply(add, self.library_size), params, _apply(add, self.weight_sum), weight_sq)

    def to_anndata(self):
        """Groups × genes AnnData with layers ``sum, mean, var, n_nonzero`` (as ``scanpy.get.aggregate``)."""
        import anndata as ad

        obs = pd.DataFrame(index=self.groups.map(str) if isinstance(self.groups, pd.MultiIndex) else self.groups.astype(str))
        if isinstance(self.groups, pd.MultiIndex):
            for level, name in enumerate(self.groups.names):
                obs[name] = self.groups.get_level_values(level).astype(str)
        obs["n_obs_aggregated"] = self.n_cells
        if self.library_size is not None:
            obs["library_size"] = self.library_size
        layers = {"sum": np.array(self.sum), "mean": np.array(self.mean), "var": np.array(self.var)}
        if self.n_nonzero is not None:
            layers["n_nonzero"] = np.array(self.n_nonzero)
        uns = {"shrinkpert": {"params": {k: ("None" if v is None else v) for k, v in self.params.items()
                                          if isinstance(v, (str, int, float, type(None)))}}}
        return ad.AnnData(obs=obs, var=pd.DataFrame(index=self.genes.astype(str)), layers=layers, uns=uns)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (group, gene) with ``n_cells, sum, mean, var, n_nonzero``."""
        n_g, n_p = self.mean.shape
        index = pd.MultiIndex.from_product([self.groups, self.genes])
        frame = pd.DataFrame(
            {
                "n_cells": np.repeat(self.n_cells, n_p),
                "sum": self.sum.ravel(),
                "mean": self.mean.ravel(),
                "var": self.var.ravel(),
                **({} if self.n_nonzero is None else {"n_nonzero": self.n_nonzero.ravel()}),
            },
            index=index,
        )
        return frame.reset_index().rename(columns={"level_0": "group", "level_1": "gene"})

    def summary(self) -> pd.DataFrame:
        """One row per group: cells, mean library size, genes detected, median variance."""
        median_var = np.full(len(self.groups), np.nan)
        several = self.n_cells > 1  # groups of 0 or 1 cells (e.g. in a shard) have no variance
        if several.any():
            median_var[several] = np.nanmedian(self.var[several], axis=1)
        return pd.DataFrame(
            {
                "n_cells": self.n_cells,
                **({} if self.library_size is None
                   else {"mean_library_size": self.library_size / np.maximum(self.n_cells, 1)}),
                **({} if self.n_nonzero is None else {"genes_detected": (self.n_nonzero > 0).sum(axis=1)}),
                "median_var": median_var,
            },
            index=self.groups,
        )


def _rows_of(values: np.ndarray | None, rows) -> np.ndarray | None:
    return None if values is None else values[rows]


def _apply(f, values: np.ndarray | None) -> np.ndarray | None:
    return None if values is None else f(values)


def _both(a: np.ndarray | None, b: np.ndarray | None, f) -> np.ndarray | None:
    """``f(a, b)``, or ``None`` when either side is unknown (statistics from moments)."""
    return None if a is None or b is None else f(a, b)


class _RowAccumulator:
    """Sums for row-block sources, ``acc[g, j] = (S1, S2, count)``, shared by the threads."""

    def __init__(self, n_threads: int, n_groups: int, n_genes: int):
        self.acc = np.zeros((n_groups, n_genes, 3))
        self.flags = np.zeros((n_threads, 4), dtype=np.int64)

    def add(self, values, codes, weights, lib, use_lib, shift, mode, target_sum, check_counts, totals):
        if not sp.issparse(values):
            values = sp.csr_matrix(values)  # one block only; zeros are implicit in the statistics anyway
        order = np.argsort(codes, kind="stable")
        bounds = K.group_bounds(codes[order], self.flags.shape[0])
        K.accumulate_csr(values.data, values.indices, values.indptr, codes, weights, order, bounds, lib, use_lib,
                         shift, mode, target_sum, check_counts, self.acc, totals, self.flags)


def _sum_segments(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The sums of segments of ``lengths`` rows (each at least one) starting at ``starts``, each
    segment's rows added left to right.

    Vectorised across the segments: one pass per row position (8x faster than
    ``np.add.reduceat(values, starts, axis=0)`` on 2,001 × 2,000 pairs of halves). For segments of
    one or two rows (a truth's halves) the values are reduceat's; for longer ones reduceat adds the
    later rows together first, so float sums differ from it in the last bits.
    """
    out = values[starts]
    for j in range(1, int(lengths.max(initial=1))):
        longer = np.flatnonzero(lengths > j)
        out[longer] += values[starts[longer] + j]
    return out


def _drop_groups(codes: np.ndarray, groups: pd.Index, exclude: Sequence[str]) -> tuple[np.ndarray, pd.Index]:
    """Leave out the groups whose (first-level) label is in ``exclude``; renumber the others."""
    wanted = [exclude] if isinstance(exclude, str) else [str(x) for x in exclude]
    first = pd.Index(groups.get_level_values(0)).astype(str)
    absent = sorted(set(wanted) - set(first))
    if absent:
        raise MissingKeyError(f"exclude: labels {absent!r} are not among the groups (e.g. {sorted(set(first))[:10]!r}); "
                              "check the spelling.")
    keep = np.flatnonzero(~first.isin(wanted))
    if len(keep) == 0:
        raise InputError("exclude leaves no group; nothing to compute.")
    renumber = np.full(len(groups), -1, dtype=np.int64)
    renumber[keep] = np.arange(len(keep))
    return np.where(codes >= 0, renumber[np.maximum(codes, 0)], -1), groups[keep]


def _library_sizes(library_size, obs: pd.DataFrame, n_rows: int) -> np.ndarray | None:
    if library_size is None:
        return None
    if isinstance(library_size, str):
        if library_size not in obs.columns:
            raise InputError(f"library_size={library_size!r} is not an obs column; pass a column name or an array.")
        lib = obs[library_size].to_numpy(dtype=np.float64)
    else:
        lib = np.asarray(library_size, dtype=np.float64)
    if lib.shape != (n_rows,):
        raise InputError(f"library_size has shape {lib.shape}; expected one value per cell ({n_rows},).")
    if not np.all(np.isfinite(lib)) or (lib < 0).any():
        raise InputError("library_size has negative or non-finite values; pass positive totals per cell.")
    return lib


def _raise_on_flags(flags: np.ndarray, label: str, counts_required: bool, normalize) -> None:
    nonfinite, negative, nonint, zero_total = (int(x) for x in flags.sum(axis=0))
    if nonfinite:
        raise InputError(f"{label} contains {nonfinite} NaN or infinite values; remove or impute them first.")
    need = f"normalize={normalize!r}" if normalize is not None else "this analysis"
    fix = "Pass the raw-count layer (layer=...)" + (" or normalize=None for already-normalised data."
                                                    if normalize is not None else ".")
    if counts_required and negative:
        raise CountsError(f"{label} contains {negative} negative values, but {need} needs raw counts. {fix}")
    if counts_required and nonint:
        raise CountsError(f"{label} contains {nonint} non-integer values, but {need} needs raw counts. {fix}")
    if normalize is not None and zero_total:
        warnings.warn(
            f"{zero_total} cells of {label} have a library size of 0; they count as all-zero cells.",
            ShrinkpertWarning,
            stacklevel=3,
        )


def _shard_rows(shard, n_rows: int) -> slice:
    """Contiguous cells of shard ``i`` of ``N``: ``[i n // N, (i + 1) n // N)``."""
    if shard is None:
        return slice(0, n_rows)
    try:
        i, n = (int(x) for x in shard)
        valid = (i, n) == tuple(shard) and n >= 1 and 0 <= i < n
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InputError(f"shard={shard!r} is not (i, N) with integers 0 <= i < N; e.g. shard=(0, 4).")
    return slice(i * n_rows // n, (i + 1) * n_rows // n)


def input_fingerprint(cell_names: pd.Index, gene_names: pd.Index, codes: np.ndarray) -> str:
    """SHA-256 over the cell names, gene names and group of every cell (the matrix is not read).

    Shards of one input agree on it wherever they were computed (a copied file keeps it); a
    different file, cell order, gene list or grouping changes it.
    """
    h = hashlib.sha256()
    for names in (pd.Index(cell_names), pd.Index(gene_names)):
        h.update(np.int64(len(names)).tobytes())
        h.update(pd.util.hash_pandas_object(names.astype(str), index=False).to_numpy().tobytes())
    h.update(np.ascontiguousarray(codes, dtype=np.int64).tobytes())
    return h.hexdigest()


def _file_identity(adata: Any) -> str | None:
    """``path`` (``size`` bytes) of a file input, for the record; ``None`` in memory."""
    path = adata if isinstance(adata, (str, os.PathLike)) else getattr(adata, "filename", None)
    if path is None:
        return None
    path = os.path.abspath(path)
    size = os.path.getsize(path) if os.path.isfile(path) else None
    return path if size is None else f"{path} ({size} bytes)"


def group_statistics(
    adata: Any,
    groupby: str | pd.Series | Sequence[str | pd.Series],
    *,
    layer: str | None = None,
    normalize: str | None = None,
    target_sum: float = TARGET_SUM,
    library_size: str | np.ndarray | None = None,
    check_counts: bool | None = None,
    exclude: Sequence[str] | None = None,
    weights: np.ndarray | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
) -> GroupStatistics:
    """Per-group count, sum, mean, variance and detection of every gene in one pass.

    The matrix is read block by block (in memory, CSR, CSC, a backed ``.h5ad``, a ``.zarr``
    store or a Dask array) and never densified or normalised as a whole; normalisation, when
    asked for, is applied to each value as it is read. A Dask matrix (an AnnData whose ``X`` is
    a Dask array, or a ``.zarr`` store, read lazily) is processed chunk by chunk as Dask tasks
    on the active scheduler (a ``distributed.Client`` when one exists) and the partial sums are
    tree-reduced (:mod:`shrinkpert.stats.distributed`).

    Parameters
    ----------
    adata
        AnnData (in memory, backed, or with a Dask ``X``), path to an ``.h5ad`` file or an AnnData
        ``.zarr`` store, or an input already validated by :func:`shrinkpert._validate.validate`
        (then not checked again).
    groupby
        ``obs`` column(s) defining the groups (e.g. ``"perturbation"``), or label Series aligned
        to ``obs`` (cells with a missing label belong to no group).
    layer
        Layer to read instead of ``X``.
    normalize
        ``None`` (values as stored), ``"total"`` (:math:`x \\cdot s / L_i`) or ``"log1p"``
        (:math:`\\log(1 + x \\cdot s / L_i)`), with :math:`s` = ``target_sum`` and :math:`L_i`
        the library size of cell :math:`i` (row total, or ``library_size``).
    target_sum
        :math:`s` above.
    library_size
        ``obs`` column or array of per-cell library sizes to use instead of the row totals
        (e.g. the whole-transcriptome UMI count when only a gene panel is stored).
    check_counts
        Require non-negative integers. Default: ``True`` when ``normalize`` is set.
    exclude
        Labels of the (first) ``groupby`` column whose cells are left out (e.g. ``["unassigned"]``);
        each must be present.
    weights
        Optional weight per cell (``obs`` order): weighted means, reliability-weighted variances
        and Kish effective counts (:func:`cell_pass` gives the formulas).
    chunk_size
        Rows per block (genes per block for CSC storage); default ≈ 128 MB blocks of CSR rows,
        32 MB otherwise, at most 1/8 of the matrix. For a Dask matrix: rows per task (default:
        the array's row chunks).
    n_threads
        Numba threads (default: all). Results do not depend on it beyond floating-point
        summation order (exact for integer data).
    progress
        Show a progress bar.
    shard
        ``(i, N)``: read only shard ``i`` (0-based) of ``N`` contiguous row ranges, cells
        :math:`[\\lfloor i n / N \\rfloor, \\lfloor (i + 1) n / N \\rfloor)` of :math:`n`. Each cell
        is normalised exactly as in the whole pass; the groups are those of the whole input
        (possibly with 0 cells in this shard). Combine the ``N`` parts with
        :func:`~shrinkpert.stats.merge_statistics`, which checks the provenance recorded in
        ``params`` (``input_fingerprint``, ``shard``, ``rows``, ``n_rows_total``). Row storage
        reads only the shard's rows; gene (CSC) storage reads every gene block and keeps the
        shard's cells.

    Returns
    -------
    GroupStatistics

    Raises
    ------
    MissingKeyError
        ``groupby`` or ``layer`` is absent.
    InputError
        NaN/inf values, duplicate cell or gene names, or a path that is not ``.h5ad``.
    CountsError
        Negative or non-integer values where counts are required.

    Notes
    -----
    Row-major storage accumulates per thread, over non-zero values :math:`v` and with a per-gene
    shift :math:`K_j`, :math:`S_1 = \\sum (v - K_j)` and :math:`S_2 = \\sum (v - K_j)^2`; the
    :math:`n_g - \\mathrm{nnz}` zeros are added at the end, then
    :math:`M_2 = S_2 - S_1^2 / n_g`. :math:`K_j = 0` for raw integer counts (sums exact, results
    bit-identical for any thread count and chunk size); otherwise :math:`K_j` is the mean of the
    first 1,024 cells, which removes the cancellation of the textbook formula. Column-major
    storage uses an exact two-pass mean and :math:`M_2` per gene.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> adata = sp.datasets.papalexi2021()
    >>> stats = sp.group_statistics(adata, "perturbation", normalize="log1p")
    >>> stats.mean.shape
    (27, 299)
    """
    data = validate(adata, perturbation_key=None, layer=layer) if not isinstance(adata, CellData) else adata
    if layer is not None and layer != data.layer:
        raise InputError(f"layer={layer!r} differs from the layer the input was validated with ({data.layer!r}).")
    codes, groups = group_codes(data.obs, groupby)
    if exclude is not None:
        codes, groups = _drop_groups(codes, groups, exclude)
    result = cell_pass(data, codes, groups, normalize=normalize, target_sum=target_sum, library_size=library_size,
                       check_counts=check_counts, weights=weights, chunk_size=chunk_size, n_threads=n_threads,
                       progress=progress, shard=shard)
    stats = result.statistics
    single = stats.n_cells == 1
    if single.any() and shard is None:  # a shard's single cells are pooled by the merge
        warnings.warn(
            f"Groups {groups[single][:10].tolist()!r} have a single cell; their variance is NaN.",
            ShrinkpertWarning,
            stacklevel=2,
        )
    return stats


@dataclass(frozen=True)
class CellPass:
    """What one pass over the matrix returns: group statistics, row totals and gathered entries.

    Attributes
    ----------
    statistics : GroupStatistics
    totals : ndarray of float64, shape (n_cells,)
        Per cell, the sum of its stored values (before any normalisation), or ``library_size``
        when given; 0 for cells outside the shard.
    entries : scipy.sparse.csr_matrix or None
        cells × genes, the stored values asked for with ``wanted`` (zeros elsewhere); ``None``
        when nothing was asked for.
    """

    statistics: GroupStatistics
    totals: np.ndarray
    entries: sp.csr_matrix | None

    def __post_init__(self) -> None:
        object.__setattr__(self, "totals", _freeze(self.totals))


def cell_pass(
    data: CellData,
    codes: np.ndarray,
    groups: pd.Index,
    *,
    normalize: str | None = None,
    target_sum: float = TARGET_SUM,
    library_size: str | np.ndarray | None = None,
    check_counts: bool | None = None,
    wanted: tuple[np.ndarray, sp.spmatrix] | None = None,
    weights: np.ndarray | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
    shard: tuple[int, int] | None = None,
) -> CellPass:
    """The one streaming pass: group statistics, per-cell totals and, optionally, chosen entries.

    This is the engine behind :func:`group_statistics` for callers that already hold integer
    group codes (other subpackages, e.g. the target-gene analyses, which also need the row
    totals and a few stored values per cell read in the same pass).

    Parameters
    ----------
    data
        A validated input (:func:`shrinkpert._validate.validate`).
    codes
        Per cell, its group (``0 .. len(groups) - 1``) or -1 for no group.
    groups
        Group labels.
    normalize, target_sum, library_size, check_counts, chunk_size, n_threads, progress, shard
        As in :func:`group_statistics`.
    wanted
        ``(row_codes, mask)``: copy the stored value of cell :math:`i` at gene :math:`j` into
        ``entries`` when ``row_codes[i] = q >= 0`` and ``mask[q, j]`` is true (``mask`` a
        boolean sparse matrix, codes × genes). Values are copied as stored, before any
        normalisation.
    weights
        One finite, non-negative weight :math:`w_i` per cell (e.g. its posterior probability of
        being perturbed); cells of weight 0 join no group. The statistics are then weighted:
        with :math:`W = \\sum_i w_i` and :math:`V = \\sum_i w_i^2` over a group,
        ``mean`` :math:`= \\sum_i w_i x_i / W`, ``var`` :math:`= \\sum_i w_i (x_i - \\bar x)^2 / (W - V/W)`
        (reliability weights, ``numpy.cov(aweights=...)``; NaN unless :math:`n_\\mathrm{eff} > 1`),
        ``weight_sum`` :math:`W`, ``weight_sq`` :math:`V`, :attr:`GroupStatistics.n_eff`
        :math:`= W^2/V` (Kish), ``library_size`` :math:`\\sum_i w_i L_i`; ``n_cells`` and
        ``n_nonzero`` still count cells. For fixed weights and independent cells,
        :math:`\\operatorname{Var}(\\bar x) = \\sigma^2 / n_\\mathrm{eff}` and
        :math:`E[\\mathrm{var}] = \\sigma^2`, so ``var / n_eff`` estimates the squared standard
        error of the mean. Weighted sums are accumulated without the per-gene shift (the
        implicit zeros then add nothing): about :math:`10^{-13}` relative precision on log1p data.

    Returns
    -------
    CellPass
    """
    if normalize not in NORMALIZATIONS:
        raise InputError(f"normalize={normalize!r} is not one of {NORMALIZATIONS!r}.")
    if not (np.isfinite(target_sum) and target_sum > 0):
        raise InputError(f"target_sum must be a positive number, got {target_sum!r}.")
    obs, var_names = data.obs, data.genes
    codes = np.asarray(codes, dtype=np.int64)
    n_groups, n_genes = len(groups), len(var_names)
    fingerprint = input_fingerprint(obs.index, var_names, codes)
    rows = _shard_rows(shard, len(obs))
    grouped = codes >= 0  # in the whole input, before the shard
    if shard is not None:
        codes = codes.copy()
        codes[: rows.start] = -1
        codes[rows.stop :] = -1
    weighted = weights is not None
    w = _cell_weights(weights, len(obs)) if weighted else np.ones(len(obs))
    if weighted:
        codes = np.where(w > 0, codes, -1)  # cells of weight 0 join no group
    in_group = codes >= 0
    n_cells = np.bincount(codes[in_group], minlength=n_groups).astype(np.int64)
    size = np.bincount(codes[in_group], weights=w[in_group], minlength=n_groups) if weighted else \
        n_cells.astype(np.float64)
    lib = _library_sizes(library_size, obs, len(obs))
    mode = _MODES[normalize]
    counts_required = (normalize is not None) if check_counts is None else bool(check_counts)
    gather = _Gather(wanted, len(obs), n_genes, rows) if wanted is not None else None

    with data.open() as source, thread_limit(n_threads) as threads:
        totals = np.zeros(len(obs))
        if source.kind == "dask" and gather is None and not weighted:
            sums, m2, nnz, flags, library = _dask_pass(source, codes, grouped, n_groups, n_cells, lib, mode,
                                                       target_sum, counts_required, rows, chunk_size)
        elif source.by_rows:
            sums, m2, nnz, flags = _row_pass(source, codes, grouped, w, weighted, n_groups, size, lib, mode,
                                             target_sum, counts_required, chunk_size, threads, totals, progress,
                                             rows, gather)
        else:
            sums, m2, nnz, flags = _column_pass(source, codes, w, n_groups, size, lib, mode, target_sum,
                                                counts_required, chunk_size, totals, progress, gather)
        if source.kind != "dask" or gather is not None or weighted:
            library = np.bincount(codes[in_group], weights=(w * totals)[in_group], minlength=n_groups)
        _raise_on_flags(flags, source.label, counts_required, normalize)

    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / size[:, None]
        var = np.maximum(m2, 0.0, out=m2)
        if weighted:  # reliability weights: M2 / (W - V/W), undefined unless n_eff > 1
            weight_sq = np.bincount(codes[in_group], weights=w[in_group] ** 2, minlength=n_groups)
            denom = size - weight_sq / size
            var /= denom[:, None]
            var[~((size**2 > weight_sq * (1 + 1e-12)) & (denom > 0))] = np.nan
        else:
            var /= size[:, None] - 1
            var[n_cells <= 1] = np.nan
    params = {
        "groupby": tuple(groups.names) if isinstance(groups, pd.MultiIndex) else groups.name,
        "layer": data.layer,
        "normalize": normalize,
        "target_sum": float(target_sum),
        "library_size": library_size if isinstance(library_size, str) else (None if library_size is None else "array"),
        "source": source.label,
        "storage": source.kind,
        "n_cells_total": int(rows.stop - rows.start),
        "input_fingerprint": fingerprint,
        "input_file": _file_identity(data.source),
        "shard": (0, 1) if shard is None else (int(shard[0]), int(shard[1])),
        "rows": (int(rows.start), int(rows.stop)),
        "n_rows_total": int(len(obs)),
    }
    if weighted:
        params["weights"] = "per cell"
    stats = GroupStatistics(groups, pd.Index(var_names).astype(str), n_cells, sums, mean, var, nnz, library, params,
                            weight_sum=size if weighted else None, weight_sq=weight_sq if weighted else None)
    totals[: rows.start] = 0.0
    totals[rows.stop :] = 0.0
    return CellPass(stats, totals, gather.result() if gather is not None else None)


def _cell_weights(weights: Any, n_cells: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_cells,):
        raise InputError(f"weights must have one entry per cell ({n_cells},); got shape {w.shape}.")
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise InputError("weights must be finite and non-negative (e.g. probabilities of being perturbed).")
    return w


class _Gather:
    """Collects the wanted stored entries block by block (:func:`_kernels.gather_block`)."""

    def __init__(self, wanted, n_cells: int, n_genes: int, rows: slice):
        row_codes, mask = wanted
        row_codes = np.array(row_codes, dtype=np.int64)  # a copy: cells outside the shard are not gathered
        row_codes[: rows.start] = -1
        row_codes[rows.stop :] = -1
        mask = sp.csr_matrix(mask, dtype=bool)
        mask.sum_duplicates()
        mask.sort_indices()
        if row_codes.shape != (n_cells,) or mask.shape[1] != n_genes or \
                (row_codes.size and row_codes.max() >= mask.shape[0]):
            raise InputError(f"wanted: row codes {row_codes.shape} / mask {mask.shape} do not fit "
                             f"{n_cells} cells × {n_genes} genes.")
        self.row_codes = row_codes
        self.ptr = mask.indptr.astype(np.int64)
        self.genes = mask.indices.astype(np.int64)
        self.shape = (n_cells, n_genes)
        self.parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def add(self, csr: sp.csr_matrix, row_offset: int, col_offset: int) -> None:
        size = csr.nnz
        r, c, v = np.empty(size, dtype=np.int64), np.empty(size, dtype=np.int64), np.empty(size)
        n = K.gather_block(csr.data, csr.indices, csr.indptr, row_offset, col_offset, self.row_codes, self.ptr,
                           self.genes, r, c, v)
        if n:
            self.parts.append((r[:n].copy(), c[:n].copy(), v[:n].copy()))

    def result(self) -> sp.csr_matrix:
        if not self.parts:
            return sp.csr_matrix(self.shape)
        r, c, v = (np.concatenate(x) for x in zip(*self.parts))
        return sp.csr_matrix((v, (r, c)), shape=self.shape)


def _progress(total: int, enabled: bool, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit=unit, desc="shrinkpert: one pass")


def _pilot_shift(source: MatrixSource, grouped, lib, mode, target_sum, counts_required, integer_input) -> np.ndarray:
    """Per-gene shift: 0 for raw integers, else the mean over the grouped cells among the first 1,024.

    ``grouped`` marks the cells that belong to a group in the whole input (a shard's pilot is the
    whole input's, and cells left out, e.g. by ``exclude``, do not move the shift).
    """
    n_genes = source.shape[1]
    if mode == 0 and integer_input:
        return np.zeros(n_genes)
    block = source.first_block(_PILOT_ROWS)
    stored = block.values.data if sp.issparse(block.values) else block.values
    if mode == 0 and np.all(np.isfinite(stored)) and np.array_equal(stored, np.round(stored)):
        return np.zeros(n_genes)  # integer-valued floats (counts stored as float): keep sums exact
    rows = block.values.shape[0]
    acc = _RowAccumulator(1, 1, n_genes)
    codes = np.where(grouped[block.rows], 0, -1).astype(np.int64)
    sub_lib = lib[block.rows] if lib is not None else np.zeros(rows)
    with thread_limit(1):
        acc.add(block.values, codes, np.ones(rows), sub_lib, lib is not None, np.zeros(n_genes), mode, target_sum,
                False, np.zeros(rows))
    return acc.acc[0, :, 0] / max(int((codes >= 0).sum()), 1)


def _row_pass(source, codes, grouped, weights, weighted, n_groups, size, lib, mode, target_sum, counts_required,
              chunk_size, threads, totals, progress, rows=None, gather=None):
    n_genes = source.shape[1]
    integer_input = np.issubdtype(source.dtype, np.integer) or source.dtype == bool
    # weighted sums are not shifted: the implicit zeros then add nothing, whatever their weights
    shift = np.zeros(n_genes) if weighted else _pilot_shift(source, grouped, lib, mode, target_sum,
                                                            counts_required, integer_input)
    acc = _RowAccumulator(threads, n_groups, n_genes)
    use_lib = lib is not None
    lib_all = lib if use_lib else np.zeros(0)
    rows = slice(0, source.shape[0]) if rows is None else rows
    with _progress(rows.stop - rows.start, progress, "cells") as bar:
        for block in source.blocks(chunk_size, rows=rows):
            rows = block.rows
            sub_lib = lib_all[rows] if use_lib else lib_all
            values = block.values if sp.issparse(block.values) else sp.csr_matrix(block.values)
            acc.add(values, codes[rows], weights[rows], sub_lib, use_lib, shift, mode, target_sum, counts_required,
                    totals[rows])
            if gather is not None:
                gather.add(values.tocsr(), rows.start, 0)
            bar.update(rows.stop - rows.start)
    total = acc.acc
    flags = acc.flags
    del acc
    sums, m2, nnz = _finalise(total, size, shift)
    return sums, m2, nnz, flags


def _dask_pass(source, codes, grouped, n_groups, n_cells, lib, mode, target_sum, counts_required, rows, chunk_size):
    from .distributed import dask_row_pass

    integer_input = np.issubdtype(source.dtype, np.integer) or source.dtype == bool
    shift = _pilot_shift(source, grouped, lib, mode, target_sum, counts_required, integer_input)
    total, library, flags = dask_row_pass(source.dask_array, codes, n_groups, lib, shift, mode, target_sum,
                                          counts_required, rows, chunk_size)
    sums, m2, nnz = _finalise(total, n_cells, shift)
    return sums, m2, nnz, flags[None, :], library


def _finalise(total: np.ndarray, n_cells: np.ndarray, shift: np.ndarray):
    """``(sums, m2, nnz)`` from summed ``(S1, S2, count)`` over the non-zero values (``total``, G × P × 3).

    ``n_cells`` is each group's size — its total weight for weighted sums, which are never
    shifted (``shift`` 0), so that :math:`M_2 = S_2 - S_1^2 / W`.
    """
    n_groups = total.shape[0]
    s1, s2 = total[..., 0], total[..., 1]
    nnz = total[..., 2].astype(np.int64)  # counts are exact integers in float64
    # finalise in place, a few groups at a time (bounded temporaries): add the implicit zeros,
    # each contributing (0 - K) to S1 and K**2 to S2, then M2 = S2 - S1**2 / n
    for lo in range(0, n_groups, 64):
        rows = slice(lo, lo + 64)
        n = n_cells[rows, None].astype(np.float64)
        zeros = n - nnz[rows]
        s1_all = s1[rows] - zeros * shift
        with np.errstate(invalid="ignore", divide="ignore"):
            s2[rows] = np.where(n > 0, s2[rows] + zeros * shift**2 - s1_all**2 / n, 0.0)
        s1[rows] += nnz[rows] * shift
    # a gene never detected in a group is exactly constant: no rounding residue from the shift
    undetected = nnz == 0
    s1[undetected] = 0.0
    s2[undetected] = 0.0
    return s1.copy(), s2.copy(), nnz


def _column_pass(source, codes, weights, n_groups, size, lib, mode, target_sum, counts_required,
                 chunk_size, totals, progress, gather=None):
    n_genes = source.shape[1]
    count_totals = lib is None and mode == 0  # else known before the pass
    if lib is not None:
        totals[:] = lib
    elif mode != 0:
        totals[:] = row_totals(source, chunk_size)
    scale = np.ones(len(codes))
    if mode != 0:
        scale = scale_factors(totals, target_sum)
    sums = np.zeros((n_groups, n_genes))
    m2 = np.zeros((n_groups, n_genes))
    nnz = np.zeros((n_groups, n_genes), dtype=np.int64)
    flags = np.zeros((1, 4), dtype=np.int64)
    with _progress(n_genes, progress, "genes") as bar:
        for block in source.blocks(chunk_size):
            values = block.values
            cols = block.cols
            width = cols.stop - cols.start
            b_sums = np.zeros((n_groups, width))
            b_m2 = np.zeros((n_groups, width))
            b_nnz = np.zeros((n_groups, width), dtype=np.int64)
            b_flags = np.zeros((width, 4), dtype=np.int64)
            K.accumulate_csc(values.data, values.indices, values.indptr, codes, weights, scale, mode,
                             counts_required, size, b_sums, b_m2, b_nnz, b_flags)
            sums[:, cols] = b_sums
            m2[:, cols] = b_m2
            nnz[:, cols] = b_nnz
            flags[0] += b_flags.sum(axis=0)
            if count_totals:
                totals += np.bincount(values.indices, weights=values.data, minlength=len(totals))
            if gather is not None:
                gather.add(values.tocsr(), 0, cols.start)
            bar.update(width)
    if mode != 0 and lib is None:
        flags[0, K.ZERO_TOTAL] = int((totals == 0).sum())
    return sums, m2, nnz, flags
