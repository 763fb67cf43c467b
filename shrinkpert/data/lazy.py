"""Lazy inputs: AnnData ``.zarr`` stores and matrices held as Dask arrays.

A ``.zarr`` store is opened without reading its matrix: ``obs`` and ``var`` are read with
anndata's element reader, ``X`` (or a layer) through anndata's lazy reader, which yields a Dask
array whose row chunks are the store's own chunks. ``zarr`` and ``dask`` are optional
dependencies (``pip install "shrinkpert[dask]"``), imported only when such an input is used.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import InputError, MissingKeyError

__all__ = ["is_dask_array", "is_zarr_store", "zarr_annotations", "lazy_matrix", "matrix_element", "require"]

_TARGET_CHUNK_BYTES = 32 * 2**20  # stored bytes per row chunk (as the in-process blocks)
_HINT = 'install the optional dependencies with: pip install "shrinkpert[dask]"'


def require(module: str):
    """Import an optional dependency of the ``dask`` extra or raise an error saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{module} is needed for .zarr stores and Dask arrays; {_HINT}.") from exc


def is_dask_array(matrix: Any) -> bool:
    """True for a ``dask.array.Array`` (checked without importing dask)."""
    return type(matrix).__module__.startswith("dask.") and hasattr(matrix, "to_delayed")


def is_zarr_store(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding a zarr group (v2 ``.zgroup`` or v3 ``zarr.json``)."""
    path = Path(path)
    return path.is_dir() and ((path / ".zgroup").exists() or (path / "zarr.json").exists())


def _open_group(path: Path):
    zarr = require("zarr")
    group = zarr.open_group(str(path), mode="r")
    if "obs" not in group or "var" not in group:
        raise InputError(f"{str(path)!r} is a zarr store but not an AnnData one (no obs/var groups).")
    return group


def zarr_annotations(path: str | os.PathLike) -> tuple[pd.DataFrame, pd.Index]:
    """``(obs, var_names)`` of an AnnData ``.zarr`` store, without reading its matrix."""
    import anndata as ad

    group = _open_group(Path(path))
    return ad.io.read_elem(group["obs"]), ad.io.read_elem(group["var"]).index


def matrix_element(root: Any, layer: str | None, path: Path) -> tuple[Any, str]:
    """``(element, label)`` of ``X`` or ``layers/<layer>`` in an AnnData file's root group (h5py or zarr).

    Raises
    ------
    MissingKeyError
        No ``X`` (when ``layer`` is None) or no such layer (the message lists the layers present).
    """
    if layer is None:
        if "X" not in root:
            raise MissingKeyError(f"{str(path)!r} has no X matrix; pass layer=<name>.")
        return root["X"], f"X of {path.name}"
    layers = root["layers"] if "layers" in root else {}
    if layer not in layers:
        raise MissingKeyError(f"Layer {layer!r} not found in {path.name}; layers present: {sorted(layers)!r}.")
    return layers[layer], f"layer {layer!r} of {path.name}"


def _sparse_chunk_rows(elem) -> int:
    """Rows per chunk holding about 32 MB of stored values and indices."""
    n_rows = int(elem.attrs["shape"][0])
    nnz = int(elem["data"].shape[0])
    per_row = max(nnz / max(n_rows, 1), 1.0) * (elem["data"].dtype.itemsize + elem["indices"].dtype.itemsize)
    return int(max(1, min(n_rows, _TARGET_CHUNK_BYTES // per_row)))


def lazy_matrix(path: str | os.PathLike, layer: str | None = None) -> tuple[Any, str]:
    """``(dask_array, label)`` for ``X`` or ``layer`` of an AnnData ``.zarr`` store.

    Dense arrays keep the store's row chunks; sparse (CSR) matrices are cut into row chunks of
    about 32 MB of stored values. All genes of a row are in one chunk.
    """
    import anndata as ad

    require("dask.array")
    path = Path(path)
    elem, label = matrix_element(_open_group(path), layer, path)
    sparse = "data" in getattr(elem, "keys", lambda: ())()
    chunks = (_sparse_chunk_rows(elem), -1) if sparse else None
    reader = getattr(ad.experimental, "read_elem_lazy", None)
    if reader is None:  # pragma: no cover - depends on the installed anndata
        raise ImportError(f"Reading .zarr stores lazily needs anndata >= 0.11; {_HINT}.")
    matrix = reader(elem, chunks=chunks)
    meta = getattr(matrix, "_meta", None)
    if getattr(meta, "format", None) == "csc":
        raise InputError(
            f"{label} is a csc_matrix (stored by genes); cell blocks would each read the whole store. "
            "Rewrite it by cells: adata.X = adata.X.tocsr(); adata.write_zarr(...)."
        )
    if matrix.ndim != 2:
        raise InputError(f"{label} is {matrix.ndim}-D; expected a cells × genes matrix.")
    if len(matrix.chunks[1]) > 1:
        matrix = matrix.rechunk({1: -1})
    return matrix, label
