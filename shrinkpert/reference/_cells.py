"""Cell selection and source fingerprints for ``build_population_reference`` (private)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._io import sha256_file
from ..data.read import backing_path, open_matrix
from ..errors import InputError, MissingKeyError


def select_cells(obs: pd.DataFrame, cells: Any) -> tuple[np.ndarray, dict]:
    """Boolean mask over ``obs`` and a JSON description of the selection."""
    n = len(obs)
    if cells is None:
        return np.ones(n, dtype=bool), {"kind": "all"}
    if isinstance(cells, Mapping):
        mask = np.ones(n, dtype=bool)
        where = {}
        for column, values in cells.items():
            if column not in obs.columns:
                raise MissingKeyError(
                    f"cells= selects on obs column {column!r}, which does not exist; columns: {list(obs.columns)[:20]!r}."
                )
            values = [values] if isinstance(values, (str, int, float, bool, np.generic)) else list(values)
            col = obs[column].astype(str)
            absent = [v for v in values if str(v) not in set(col.unique())]
            if absent:
                raise MissingKeyError(
                    f"cells= asks for obs[{column!r}] in {absent!r}, but no cell has that value; "
                    f"values present: {sorted(col.unique())[:20]!r}."
                )
            mask &= col.isin([str(v) for v in values]).to_numpy()
            where[str(column)] = [str(v) for v in values]
        return mask, {"kind": "obs", "where": where}
    if isinstance(cells, pd.Series) and cells.dtype == bool:
        if not cells.index.equals(obs.index):
            raise InputError("A boolean cells= Series must be indexed like obs (same cells, same order).")
        cells = cells.to_numpy()
    array = np.asarray(cells)
    if array.dtype == bool:
        if array.shape != (n,):
            raise InputError(f"A boolean cells= mask needs one value per cell ({n},), got shape {array.shape}.")
        digest = hashlib.sha256(np.packbits(array).tobytes()).hexdigest()
        return array.copy(), {"kind": "mask", "sha256_packbits": digest}
    names = pd.Index([str(c) for c in np.atleast_1d(array)])
    if names.has_duplicates:
        raise InputError("cells= lists a cell name twice; pass each obs name once.")
    idx = obs.index.astype(str).get_indexer(names)
    if (idx < 0).any():
        missing = names[idx < 0][:5].tolist()
        raise MissingKeyError(f"cells= names {int((idx < 0).sum())} cells not in obs_names (e.g. {missing!r}).")
    mask = np.zeros(n, dtype=bool)
    mask[idx] = True
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()
    return mask, {"kind": "obs_names", "sha256_sorted_names": digest}


def fingerprint(source: Any, layer: str | None, chunk_size: int | None) -> tuple[str, str | None, str]:
    """(name, sha256, what the checksum covers) of the input."""
    path = backing_path(source)
    if path is not None:
        return path.name, sha256_file(path), "sha256 of the .h5ad file"
    h = hashlib.sha256()
    h.update("\n".join(map(str, source.obs_names)).encode() + b"\0")
    h.update("\n".join(map(str, source.var_names)).encode() + b"\0")
    with open_matrix(source, layer) as matrix:
        h.update(f"{matrix.kind}|{matrix.shape}|{matrix.dtype.str}".encode())
        for block in matrix.blocks(chunk_size):
            values = block.values
            if hasattr(values, "indptr"):
                for part in (values.data, values.indices, values.indptr):
                    h.update(np.ascontiguousarray(part).tobytes())
            else:
                h.update(np.ascontiguousarray(values).tobytes())
    return "AnnData (in memory)", h.hexdigest(), "sha256 of the stored matrix, obs_names and var_names"
