"""Block iteration over an expression matrix, wherever it lives.

One interface for every storage: in-memory dense arrays, CSR and CSC matrices, and ``.h5ad``
files read chunk by chunk with h5py (``X`` or any layer) without loading the matrix.

* Row-major storage (dense, CSR, on-disk dense, on-disk CSR) is read in blocks of rows; each
  :class:`Block` holds every gene of ``block.rows``.
* Column-major storage (CSC, on-disk CSC) is read in blocks of genes; each block holds every
  cell of ``block.cols``. Per-cell quantities that need the whole row (library sizes) then take
  one extra, cheap pass over the stored values (:func:`row_totals`).

Blocks are dense ``numpy`` arrays or ``scipy.sparse.csr_matrix``/``csc_matrix`` in the
stored dtype; nothing is converted to float64 or densified beyond one block.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import InputError, MissingKeyError
from .h5ad_frame import read_frame
from .lazy import is_dask_array, is_zarr_store, lazy_matrix, matrix_element, zarr_annotations

__all__ = ["Block", "MatrixSource", "open_matrix", "backing_path", "row_totals", "scale_factors", "read_annotations"]

_TARGET_BLOCK_BYTES = 32 * 2**20
#: Sparse rows are read in larger blocks: the group kernel adds each row into its group's
#: accumulator row, and with cells in random order a block of 32 MB holds about one cell per
#: group (perturbation × half), so nearly every update misses the cache. Blocks four times larger
#: made the truth's pass of a 300k × 8k × 1,000 file 10.0 -> 8.6 s and the prediction's 5.9 -> 4.2 s.
_TARGET_SPARSE_ROW_BYTES = 128 * 2**20
_MIN_BLOCK_BYTES = 2**20
#: The matrix's file is opened without HDF5's chunk cache. Blocks are read in
#: order and span many chunks, so no chunk is read twice but at the ends of a block; with the
#: cache (1 MB by default) every chunk that fits it was read into the cache and then copied,
#: which made reading a 4 GB CSR matrix 1.75-2.08 s (0.63 s user CPU) instead of 1.29 s (0.2 s).
_CHUNK_CACHE_BYTES = 0


def compute_dtype(dtype: Any) -> np.dtype:
    """The dtype blocks are handed out in: stored int32/int64/float32/float64 unchanged; smaller or
    unsigned integers and booleans up-cast to int64, float16 to float32 (neither scipy.sparse nor the
    kernels take them). Up-casting is exact, block by block; the stored data are never changed."""
    dtype = np.dtype(dtype)
    if dtype in (np.int32, np.int64, np.float32, np.float64):
        return dtype
    if dtype == np.bool_ or np.issubdtype(dtype, np.integer):
        return np.dtype(np.float64) if dtype == np.uint64 else np.dtype(np.int64)
    if np.issubdtype(dtype, np.floating) and dtype.itemsize < 4:
        return np.dtype(np.float32)
    if np.issubdtype(dtype, np.floating):
        return np.dtype(np.float64)
    raise InputError(f"The matrix has dtype {dtype}; expected numbers (integers or floats).")


@dataclass(frozen=True)
class Block:
    """A block of the matrix: ``rows`` × ``cols`` (one of them spans the whole axis)."""

    rows: slice
    cols: slice
    values: Any  # ndarray (dense), csr_matrix (row blocks) or csc_matrix (column blocks)


class MatrixSource:
    """A readable cells × genes matrix (memory or h5py) with block iteration.

    Use :func:`open_matrix` to create one; do not instantiate directly.
    """

    def __init__(self, kind: str, shape: tuple[int, int], dtype: np.dtype, obj: Any, label: str):
        self.kind = kind  # dense | csr | csc | h5dense | h5csr | h5csc | dask
        self.shape = (int(shape[0]), int(shape[1]))
        self.stored_dtype = np.dtype(dtype)
        self.dtype = compute_dtype(dtype)  # what blocks hold
        self._obj = obj
        self.label = label
        self._indptr = None
        if kind in ("h5csr", "h5csc"):
            self._indptr = obj["indptr"][...].astype(np.int64)

    @property
    def by_rows(self) -> bool:
        """True when blocks are row blocks (all genes), False for gene blocks (all cells)."""
        return self.kind in ("dense", "csr", "h5dense", "h5csr", "dask")

    @property
    def dask_array(self) -> Any:
        """The Dask array behind a ``"dask"`` source (``None`` for other storage)."""
        return self._obj if self.kind == "dask" else None

    @property
    def nnz(self) -> int:
        """Stored values (for dense storage: all entries)."""
        if self.kind in ("dense", "h5dense", "dask"):
            return self.shape[0] * self.shape[1]
        if self.kind in ("csr", "csc"):
            return int(self._obj.nnz)
        return int(self._indptr[-1])

    def auto_chunk_size(self) -> int:
        """Rows (or genes) per block: about 32 MB of stored values (128 MB for CSR rows), or 1/8 of
        a smaller matrix.

        Streaming keeps two blocks in memory (one read ahead), so small matrices use small
        blocks (at least 1 MB) to keep the peak well below the size of the matrix itself.
        """
        if self.kind == "dask":  # the array's own row chunks (a zarr store: its stored chunks)
            return int(max(1, self._obj.chunks[0][0]))
        major = self.shape[0] if self.by_rows else self.shape[1]
        item = self.dtype.itemsize + (0 if self.kind in ("dense", "h5dense") else 4)
        per_line = max(self.nnz / max(major, 1), 1.0) * item
        cap = _TARGET_SPARSE_ROW_BYTES if self.kind in ("csr", "h5csr") else _TARGET_BLOCK_BYTES
        target = min(cap, max(_MIN_BLOCK_BYTES, per_line * major / 8))
        return int(max(1, min(major, target // per_line)))

    def blocks(self, chunk_size: int | None = None, rows: slice | None = None,
               read_ahead: bool = True) -> Iterator[Block]:
        """Yield consecutive blocks of ``chunk_size`` rows (or genes for column storage).

        For on-disk storage the next block is read in a background thread while the caller
        works on the current one (at most two blocks in memory), unless ``read_ahead`` is
        false. ``rows`` (row storage only) restricts the blocks to one contiguous range of
        cells; ``block.rows`` stays absolute.
        """
        step = int(chunk_size) if chunk_size is not None else self.auto_chunk_size()
        if step < 1:
            raise InputError(f"chunk_size must be a positive integer, got {chunk_size!r}.")
        n_rows, n_cols = self.shape
        major = n_rows if self.by_rows else n_cols
        first, last = 0, major
        if rows is not None:
            if not self.by_rows:
                raise InputError(f"{self.label} is stored by genes; a row range cannot be read alone.")
            first, last, _ = rows.indices(n_rows)
        spans = [(start, min(start + step, last)) for start in range(first, last, step)]
        read = self._read_rows if self.by_rows else self._read_cols

        def block(span, values):
            if self.by_rows:
                return Block(slice(*span), slice(0, n_cols), values)
            return Block(slice(0, n_rows), slice(*span), values)

        if not (read_ahead and self.kind.startswith("h5")) or len(spans) < 2:
            for span in spans:
                yield block(span, self._checked(lambda: read(*span), span))
            return
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="shrinkpert-read") as pool:
            pending = pool.submit(read, *spans[0])
            for k, span in enumerate(spans):
                values = self._checked(pending.result, span)
                if k + 1 < len(spans):
                    pending = pool.submit(read, *spans[k + 1])
                yield block(span, values)

    def first_block(self, size: int) -> Block:
        """The first block of ``size`` rows (genes for column storage), without a read-ahead.

        A peek at the head of the matrix (scale detection, the pilot shift) reads the head only.
        """
        return next(self.blocks(max(1, int(size)), read_ahead=False))

    def _checked(self, read, span):
        """``read()``, with a damaged file reported as an :class:`InputError` naming the span."""
        try:
            return read()
        except OSError as exc:  # h5py: a truncated or damaged file
            raise InputError(f"{self.label}: the file could not be read at rows/genes {span[0]}-{span[1]} ({exc}); "
                             "it is probably truncated or damaged. Write it again with anndata.") from None

    def _read_rows(self, start: int, stop: int):
        kind, obj = self.kind, self._obj
        if kind == "dense":
            return np.ascontiguousarray(obj[start:stop])
        if kind == "csr":
            return obj[start:stop]
        if kind == "h5dense":
            return np.ascontiguousarray(obj[start:stop], dtype=self.dtype)
        if kind == "dask":  # one row block computed by the active Dask scheduler
            values = obj[start:stop].compute()
            return values.tocsr().astype(self.dtype, copy=False) if sp.issparse(values) else \
                np.ascontiguousarray(values, dtype=self.dtype)
        lo, hi = self._indptr[start], self._indptr[stop]
        data = obj["data"][lo:hi].astype(self.dtype, copy=False)
        indices = obj["indices"][lo:hi]
        indptr = self._indptr[start : stop + 1] - lo
        return sp.csr_matrix((data, indices, indptr), shape=(stop - start, self.shape[1]))

    def _read_cols(self, start: int, stop: int):
        if self.kind == "csc":
            return self._obj[:, start:stop]
        lo, hi = self._indptr[start], self._indptr[stop]
        data = self._obj["data"][lo:hi].astype(self.dtype, copy=False)
        indices = self._obj["indices"][lo:hi]
        indptr = self._indptr[start : stop + 1] - lo
        return sp.csc_matrix((data, indices, indptr), shape=(self.shape[0], stop - start))


def _h5_source(elem: h5py.Group | h5py.Dataset, label: str) -> MatrixSource:
    if isinstance(elem, h5py.Dataset):
        if elem.ndim != 2:
            raise InputError(f"{label} is a {elem.ndim}-D dataset; expected a cells × genes matrix.")
        return MatrixSource("h5dense", elem.shape, elem.dtype, elem, label)
    enc = elem.attrs.get("encoding-type", "")
    enc = enc.decode() if isinstance(enc, bytes) else str(enc)
    if enc not in ("csr_matrix", "csc_matrix"):
        raise InputError(
            f"{label} has encoding-type {enc!r}; only dense arrays and csr_matrix/csc_matrix "
            "are supported. Rewrite the file with anndata (adata.write_h5ad)."
        )
    shape = tuple(int(s) for s in elem.attrs["shape"])
    kind = "h5csr" if enc == "csr_matrix" else "h5csc"
    return MatrixSource(kind, shape, elem["data"].dtype, elem, label)


def _memory_source(matrix: Any, label: str) -> MatrixSource:
    dtype = getattr(matrix, "dtype", None)
    if dtype is not None and compute_dtype(dtype) != dtype:  # a converted copy; the caller's matrix is untouched
        matrix = matrix.astype(compute_dtype(dtype))
    if sp.issparse(matrix):
        if matrix.format == "csr":
            return MatrixSource("csr", matrix.shape, matrix.dtype, matrix, label)
        if matrix.format == "csc":
            return MatrixSource("csc", matrix.shape, matrix.dtype, matrix, label)
        return MatrixSource("csr", matrix.shape, matrix.dtype, sp.csr_matrix(matrix), label)
    if is_dask_array(matrix):  # e.g. anndata's lazy zarr/h5ad readers: computed one row block at a time
        return MatrixSource("dask", matrix.shape, matrix.dtype, matrix, label)
    if hasattr(matrix, "to_memory"):  # anndata's backed sparse dataset
        return _memory_source(matrix.to_memory(), label)
    array = np.asarray(matrix)
    if array.ndim != 2:
        raise InputError(f"{label} is {array.ndim}-D; expected a cells × genes matrix.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise InputError(f"{label} has dtype {array.dtype}; expected numbers.")
    return MatrixSource("dense", array.shape, array.dtype, array, label)


def _check_h5ad_path(path: Path) -> None:
    if not path.exists():
        raise InputError(f"File {str(path)!r} does not exist.")
    if not h5py.is_hdf5(path):
        raise InputError(
            f"{str(path)!r} is not an HDF5/.h5ad file. shrinkpert streams .h5ad files; convert other "
            "formats with anndata (e.g. anndata.read_loom(...).write_h5ad(...))."
        )


@contextlib.contextmanager
def open_matrix(source: Any, layer: str | None = None) -> Iterator[MatrixSource]:
    """Open the expression matrix of an AnnData or ``.h5ad`` path for block reading.

    Parameters
    ----------
    source
        An in-memory AnnData (its matrix may be a Dask array, computed one row block at a
        time), a backed AnnData (read through its file, chunk by chunk), or a path to an
        ``.h5ad`` file or a ``.zarr`` store.
    layer
        ``None`` for ``X``, otherwise the name of a layer.

    Raises
    ------
    MissingKeyError
        ``layer`` does not exist (the message lists the layers present).
    InputError
        The path is not an ``.h5ad`` file or the matrix is not 2-D numeric.
    """
    path = backing_path(source)
    if path is not None and is_zarr_store(path):
        yield _memory_source(*lazy_matrix(path, layer))
        return
    if path is not None:
        _check_h5ad_path(path)
        try:
            fh = h5py.File(path, "r", rdcc_nbytes=_CHUNK_CACHE_BYTES)
        except OSError as exc:
            raise _damaged(path, exc) from None
        with fh:
            yield _h5_source(*matrix_element(fh, layer, path))
        return
    if layer is None:
        matrix, label = source.X, "adata.X"
        if matrix is None:
            raise MissingKeyError("adata.X is None; pass layer=<name> to use a layer.")
    else:
        if layer not in source.layers:
            raise MissingKeyError(
                f"Layer {layer!r} not found; adata.layers has {sorted(source.layers.keys())!r}."
            )
        matrix, label = source.layers[layer], f"adata.layers[{layer!r}]"
    yield _memory_source(matrix, label)


def backing_path(source: Any) -> Path | None:
    """The ``.h5ad`` file behind ``source`` (a path or a backed AnnData), ``None`` for data in memory."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    if getattr(source, "isbacked", False):
        if source.is_view:
            raise InputError(
                "A view of a backed AnnData cannot be streamed; pass the backed AnnData itself "
                "(or the .h5ad path) and select cells with the function's cell/group options, "
                "or load the subset into memory with .to_memory()."
            )
        return Path(source.filename)
    return None


def read_annotations(source: Any) -> tuple[pd.DataFrame, pd.Index]:
    """Return ``(obs, var_names)`` of an AnnData or ``.h5ad`` path without reading the matrix."""
    path = backing_path(source)
    if path is None:
        if not hasattr(source, "obs") or not hasattr(source, "var_names"):
            raise InputError(
                f"Expected an AnnData or a path to an .h5ad file, got {type(source).__name__}."
            )
        return source.obs, source.var_names
    if is_zarr_store(path):
        return zarr_annotations(path)
    _check_h5ad_path(path)
    try:
        with h5py.File(path, "r") as fh:
            if "obs" not in fh or "var" not in fh:
                raise InputError(f"{str(path)!r} is HDF5 but not an .h5ad file (no obs/var groups).")
            obs, var = read_frame(fh["obs"]), read_frame(fh["var"])
    except (OSError, KeyError, ValueError, TypeError) as exc:
        if isinstance(exc, InputError):
            raise
        raise _damaged(path, exc) from None
    return obs, var.index


def _damaged(path: Path, exc: BaseException) -> InputError:
    return InputError(f"{str(path)!r} could not be read as an .h5ad file ({type(exc).__name__}: {exc}); it is "
                      "probably truncated or damaged. Write it again with anndata (adata.write_h5ad).")


def row_totals(source: MatrixSource, chunk_size: int | None = None) -> np.ndarray:
    """Sum of each row (cell), accumulated in float64, in one pass over the stored values.

    (scipy's ``sum(axis=1, dtype=float64)`` of a float32 sparse matrix accumulates in float32,
    which moves fractional totals; the stored values are converted before summing.)
    """
    totals = np.zeros(source.shape[0], dtype=np.float64)
    for block in source.blocks(chunk_size):
        values = block.values
        if sp.issparse(values):
            coo = values.tocoo()
            totals += np.bincount(coo.row + block.rows.start, weights=coo.data.astype(np.float64),
                                  minlength=source.shape[0])
        else:
            totals[block.rows] += np.asarray(values, dtype=np.float64).sum(axis=1)
    return totals


def scale_factors(totals: np.ndarray, target_sum: float) -> np.ndarray:
    r"""Per-cell factor :math:`s_i = T / L_i` that scales cell :math:`i` (total :math:`L_i`) to
    ``target_sum`` :math:`T`; 0 for an empty cell (it stays all zero)."""
    totals = np.asarray(totals, dtype=np.float64)
    return np.where(totals > 0, target_sum / np.where(totals > 0, totals, 1.0), 0.0)
