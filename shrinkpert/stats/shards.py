"""Row shards of one input: :func:`merge_statistics`, :func:`save_statistics`, :func:`load_statistics`.

A screen too large for one pass is split into ``N`` contiguous row ranges,
``group_statistics(data, ..., shard=(i, N))`` runs on each (anywhere, at any time), each part
is saved to one file, and :func:`merge_statistics` combines the parts into the statistics of
the whole input. Each part records its provenance in ``params``: the input fingerprint (cell
names, gene names and group of every cell), the configuration (``groupby``, ``layer``,
``normalize``, ``target_sum``, ``library_size``), the shard ``(i, N)`` and its row range.
The merge refuses parts of different inputs or configurations and row ranges that overlap or
leave cells out.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_path, provenance
from ..errors import GeneMismatchError, InputError, ShrinkpertWarning
from .group import GroupStatistics

__all__ = ["merge_statistics", "save_statistics", "load_statistics", "CONFIG_KEYS"]

CONFIG_KEYS = ("groupby", "layer", "normalize", "target_sum", "library_size")
_FORMAT = "shrinkpert.GroupStatistics/1"
_ARRAYS = ("n_cells", "sum", "mean", "var", "n_nonzero", "library_size")


def _describe(part: GroupStatistics, k: int) -> str:
    shard = part.params.get("shard")
    return f"part {k}" + (f" (shard {shard[0]}/{shard[1]})" if shard is not None else "")


def _check_config(parts: Sequence[GroupStatistics]) -> None:
    first = parts[0].params
    for k, part in enumerate(parts[1:], start=1):
        if not part.genes.equals(parts[0].genes):
            raise GeneMismatchError(
                f"{_describe(part, k)} has other genes than part 0; every shard must be computed on the same input."
            )
        for key in CONFIG_KEYS:
            if part.params.get(key) != first.get(key):
                raise InputError(
                    f"Mixed configurations: part 0 has {key}={first.get(key)!r} but {_describe(part, k)} has "
                    f"{key}={part.params.get(key)!r}; recompute the shards with the same {key}."
                )


def _check_shards(parts: Sequence[GroupStatistics], partial: bool) -> tuple[int, int]:
    """Same input; row ranges that tile ``[0, n_rows_total)`` (or, ``partial``, one range) exactly once."""
    for k, part in enumerate(parts):
        missing = [key for key in ("input_fingerprint", "rows", "n_rows_total") if key not in part.params]
        if missing:
            raise InputError(
                f"{_describe(part, k)} has no provenance ({', '.join(missing)} missing from params); compute it with "
                "group_statistics(..., shard=(i, N)) or pass check=False to merge statistics of disjoint cells "
                "without checks."
            )
    fingerprint, n_rows = parts[0].params["input_fingerprint"], parts[0].params["n_rows_total"]
    for k, part in enumerate(parts[1:], start=1):
        if part.params["input_fingerprint"] != fingerprint or part.params["n_rows_total"] != n_rows:
            raise InputError(
                f"{_describe(part, k)} comes from another input than part 0 (input fingerprint "
                f"{part.params['input_fingerprint'][:12]}… vs {fingerprint[:12]}…: other cells, genes, cell order "
                "or group labels); merge only shards of one file."
            )
    spans = sorted((tuple(p.params["rows"]), k) for k, p in enumerate(parts))
    first = covered = spans[0][0][0] if partial else 0
    for (lo, hi), k in spans:
        if lo < covered:
            other = next(j for (a, b), j in spans if j != k and a < hi and lo < b)
            raise InputError(
                f"{_describe(parts[k], k)} (rows {lo}–{hi}) overlaps {_describe(parts[other], other)} "
                f"(rows {parts[other].params['rows'][0]}–{parts[other].params['rows'][1]}); each shard must be "
                "passed once."
            )
        if lo > covered:
            raise InputError(f"Rows {covered}–{lo} of {n_rows} are in no part; a shard is missing{_which(parts, covered)}.")
        covered = hi
    if covered < n_rows and not partial:
        raise InputError(f"Rows {covered}–{n_rows} of {n_rows} are in no part; a shard is missing{_which(parts, covered)}.")
    return first, covered


def _which(parts: Sequence[GroupStatistics], start: int) -> str:
    """Name the missing shard(s) when every part used the same ``N``."""
    shards = {tuple(p.params.get("shard") or ()) for p in parts}
    totals = {n for _, n in shards} if all(len(s) == 2 for s in shards) else set()
    if len(totals) != 1:
        return ""
    (n,) = totals
    absent = sorted(set(range(n)) - {i for i, _ in shards})
    return f" (shard{'s' if len(absent) > 1 else ''} {', '.join(f'{i}/{n}' for i in absent)} of the N = {n})"


def merge_statistics(parts: Sequence[GroupStatistics | str | os.PathLike], *, check: bool = True,
                     partial: bool = False) -> GroupStatistics:
    """Statistics of the whole input from the statistics of disjoint row shards.

    For group :math:`g` with parts :math:`k` of :math:`n_k` cells, sums :math:`s_k`, means
    :math:`\\bar x_k` and sums of squared deviations :math:`M_{2,k}` (Chan et al. 1979, all parts
    at once):

    .. math::

        n = \\sum_k n_k,\\quad s = \\sum_k s_k,\\quad \\bar x = s / n,\\quad
        M_2 = \\sum_k M_{2,k} + \\sum_k n_k (\\bar x_k - \\bar x)^2,\\quad
        \\mathrm{var} = M_2 / (n - 1).

    Counts (``n_cells``, ``n_nonzero``) are added as integers, so they are bit-exact; sums of
    integer-valued data (raw counts, library sizes) are exact in float64 below :math:`2^{53}`,
    so ``sum`` and ``mean`` then equal the one-pass result bit for bit; other sums agree to
    floating-point summation order. Groups absent from some parts (or with 0 cells there)
    contribute nothing there.

    Parameters
    ----------
    parts
        :class:`GroupStatistics` or files written by :func:`save_statistics`, in any order.
    check
        Verify the provenance: one input (same fingerprint and number of cells), row ranges
        that cover every cell exactly once. ``False`` merges statistics of disjoint cells from
        different inputs (your responsibility); the configuration is checked either way.
    partial
        Allow parts that cover one contiguous range of cells rather than all of them (a step of
        a hierarchical merge); the result records that range and can be merged again.

    Returns
    -------
    GroupStatistics
        ``params`` as in the parts, with ``rows`` the covered range, ``shard`` ``(0, 1)`` when
        it is the whole input (``None`` for a partial merge), ``n_cells_total`` summed and
        ``merged_parts`` the number of shards merged.

    Raises
    ------
    InputError
        No parts; parts of different inputs or configurations; overlapping or missing shards;
        parts without provenance (when ``check``).
    GeneMismatchError
        Parts over different genes.
    """
    parts = [load_statistics(p) if isinstance(p, (str, os.PathLike)) else p for p in parts]
    if not parts:
        raise InputError("merge_statistics needs at least one part; pass the statistics of every shard.")
    for k, part in enumerate(parts):
        if not isinstance(part, GroupStatistics):
            raise InputError(f"parts[{k}] is a {type(part).__name__}; pass GroupStatistics or files from save_statistics.")
    _check_config(parts)
    if check:
        rows = _check_shards(parts, partial)
        parts = sorted(parts, key=lambda p: tuple(p.params["rows"]))  # sums in row order
    groups = parts[0].groups
    for part in parts[1:]:
        if not part.groups.equals(groups):
            groups = groups.union(part.groups, sort=True)
    n_groups, n_genes = len(groups), len(parts[0].genes)
    n_cells = np.zeros(n_groups, dtype=np.int64)
    sums = np.zeros((n_groups, n_genes))
    nnz = np.zeros((n_groups, n_genes), dtype=np.int64)
    library = np.zeros(n_groups)
    where = [part.groups.get_indexer(groups) for part in parts]
    for k, (part, idx) in enumerate(zip(parts, where)):
        at = idx >= 0
        n_cells[at] += part.n_cells[idx[at]]
        sums[at] += part.sum[idx[at]]
        if part.n_nonzero is None or part.library_size is None:
            raise InputError(f"{_describe(part, k)} was rebuilt from means and variances; shards must come from "
                             "group_statistics(..., shard=(i, N)).")
        nnz[at] += part.n_nonzero[idx[at]]
        library[at] += part.library_size[idx[at]]
    n = n_cells[:, None].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / n
    m2 = np.zeros((n_groups, n_genes))
    for part, idx in zip(parts, where):
        at = np.flatnonzero((idx >= 0) & (n_cells > 0))
        src = idx[at]
        n_k = part.n_cells[src].astype(np.float64)[:, None]
        dev = np.where(n_k > 0, part.mean[src] - mean[at], 0.0)
        m2[at] += part.m2[src] + n_k * dev**2
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n > 1, m2 / (n - 1), np.nan)
    single = n_cells == 1
    if single.any():
        warnings.warn(f"Groups {groups[single][:10].tolist()!r} have a single cell; their variance is NaN.",
                      ShrinkpertWarning, stacklevel=2)
    params = dict(parts[0].params)
    params["n_cells_total"] = int(sum(p.params.get("n_cells_total", 0) for p in parts))
    params["merged_parts"] = int(sum(p.params.get("merged_parts", 1) for p in parts))
    if check:
        whole = rows == (0, params["n_rows_total"])
        params["shard"] = (0, 1) if whole else None
        params["rows"] = (int(rows[0]), int(rows[1]))
    return GroupStatistics(groups, parts[0].genes, n_cells, sums, mean, var, nnz, library, params)


# ----------------------------------------------------------------------------- one file per part
def _level_array(values: pd.Index) -> tuple[np.ndarray, str]:
    if pd.api.types.is_integer_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        return np.asarray(values), "int"
    if pd.api.types.is_float_dtype(values.dtype):
        return np.asarray(values, dtype=np.float64), "float"
    return np.asarray(values.astype(str), dtype=str), "str"


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool, type(None), list)):
        return value
    return str(value)


def _from_json(value: Any) -> Any:
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_from_json(v) for v in value["__tuple__"])
    return value


def save_statistics(stats: GroupStatistics, path: str | os.PathLike, *, force: bool = False) -> Path:
    """Write ``stats`` to one ``.npz`` file (arrays, labels, ``params`` and provenance), atomically.

    The file is written next to ``path`` and moved into place, so a reader never sees half a
    file. Nothing is pickled; :func:`load_statistics` restores the object bit for bit (group
    labels come back as strings, integers or floats).

    Raises
    ------
    OutputExistsError
        ``path`` exists and ``force`` is false.
    """
    levels = [stats.groups.get_level_values(k) for k in range(stats.groups.nlevels)]
    arrays = {name: np.asarray(getattr(stats, name)) for name in _ARRAYS if getattr(stats, name) is not None}
    kinds = []
    for k, level in enumerate(levels):
        arrays[f"group_level_{k}"], kind = _level_array(level)
        kinds.append(kind)
    arrays["genes"] = np.asarray(stats.genes.astype(str), dtype=str)
    meta = {
        "format": _FORMAT,
        "group_names": [None if n is None else str(n) for n in stats.groups.names],
        "group_kinds": kinds,
        "multi": isinstance(stats.groups, pd.MultiIndex),
        "params": {key: _jsonable(value) for key, value in stats.params.items()},
        "provenance": provenance(),
    }
    arrays["meta"] = np.asarray(json.dumps(meta))
    with atomic_path(path, force=force) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    return Path(path)


def load_statistics(path: str | os.PathLike) -> GroupStatistics:
    """Read statistics written by :func:`save_statistics` (a folder: its ``stats.npz``).

    Raises
    ------
    InputError
        The file does not exist or was not written by :func:`save_statistics`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "stats.npz"
    if not path.is_file():
        raise InputError(f"{str(path)!r} does not exist; pass a file written by save_statistics (or its folder).")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            if meta.get("format") != _FORMAT:
                raise KeyError("format")
            data = {name: npz[name] for name in npz.files}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{str(path)!r} is not a statistics file written by shrinkpert's save_statistics.") from exc
    levels = [pd.Index(data[f"group_level_{k}"]) for k in range(len(meta["group_kinds"]))]
    if meta["multi"]:
        groups = pd.MultiIndex.from_arrays(levels, names=meta["group_names"])
    else:
        groups = levels[0].rename(meta["group_names"][0])
    params = {key: _from_json(value) for key, value in meta["params"].items()}
    return GroupStatistics(groups, pd.Index(data["genes"]), *(data.get(name) for name in _ARRAYS), params=params)
