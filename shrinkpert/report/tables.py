"""A :class:`~shrinkpert.MetricTable` on disk, and the tidy frames the report draws from.

On-disk layout (one folder, every file written atomically)::

    metrics.csv   the long table of MetricTable.to_frame(), one row per perturbation × metric row
    summary.csv   MetricTable.summary() with its index as leading columns
    params.json   MetricTable.params (tuples become lists)
    manifest.json the run manifest (params["manifest"]: inputs' fingerprints, options, versions, seed, shard)
    table.json    format, column dtypes, summary index names, perturbations and genes

``metrics.csv`` and ``summary.csv`` are the files ``shrinkpert evaluate`` writes, so
:func:`load_table` also reads an ``evaluate`` output folder without ``table.json`` (then the
genes are unknown and column types are inferred: the label columns stay text, the others are
numbers or booleans).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_path
from ..errors import InputError, MissingKeyError

__all__ = ["save_table", "load_table", "write_manifest", "FORMAT", "DEFAULT_MODEL"]

#: ``format`` entry of ``table.json``.
FORMAT = "shrinkpert.MetricTable/1"
#: Model name used when a table has no ``model`` column (a single prediction).
DEFAULT_MODEL = "model"
#: Columns that are labels (never converted to numbers when types are inferred).
_LABELS = ("model", "perturbation", "metric", "weighting", "reference", "flags", "negative", "positive",
           "exploit_arms")
_SUMMARY_INDEX = ("metric", "weighting", "reference")
_NA = ("", "NaN", "nan")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset, pd.Index, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None if np.isnan(value) else str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _dtypes(frame: pd.DataFrame) -> dict[str, str]:
    return {str(c): ("bool" if pd.api.types.is_bool_dtype(t) else "int" if pd.api.types.is_integer_dtype(t)
                     else "float" if pd.api.types.is_numeric_dtype(t) else "str") for c, t in frame.dtypes.items()}


def save_table(table: Any, out: str | os.PathLike, *, force: bool = False) -> Path:
    """Write a :class:`~shrinkpert.MetricTable` to the folder ``out`` (see the module docstring).

    Parameters
    ----------
    table : MetricTable
        Result of :func:`shrinkpert.evaluate`.
    out : path
        Folder, created if missing.
    force : bool
        Overwrite existing files of the same names.

    Returns
    -------
    pathlib.Path
        The folder.

    Raises
    ------
    OutputExistsError
        A file exists and ``force`` is false.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"out={str(out)!r} is a file; give a folder to save the table in.")
    values = table.to_frame()
    summary = table.summary()
    index_names = [str(n) for n in summary.index.names]
    flat = summary.reset_index()
    meta = {
        "format": FORMAT,
        "summary_index": index_names,
        "metrics_dtypes": _dtypes(values),
        "summary_dtypes": _dtypes(flat),
        "perturbations": [str(p) for p in table.perturbations],
        "genes": [str(g) for g in table.genes],
    }
    texts = {"params.json": json.dumps(_jsonable(dict(table.params)), indent=1, sort_keys=True) + "\n",
             "table.json": json.dumps(meta, indent=1) + "\n"}
    for name, frame in (("metrics.csv", values), ("summary.csv", flat)):
        with atomic_path(out / name, force=force) as tmp:
            frame.to_csv(tmp, index=False, na_rep="NaN", float_format="%.17g")
    for name, text in texts.items():
        with atomic_path(out / name, force=force) as tmp:
            tmp.write_text(text, encoding="utf-8")
    write_manifest(table, out, force=force)
    return out


def write_manifest(table: Any, out: str | os.PathLike, *, force: bool = False) -> Path | None:
    """Write ``table.params["manifest"]`` as ``manifest.json`` in ``out`` (nothing when it has none).

    The run manifest (:mod:`shrinkpert.evaluation.manifest`): input fingerprints, options,
    versions, seed and shard; ``shrinkpert merge`` reads it to check that partial results belong
    together.
    """
    manifest = table.params.get("manifest")
    if not manifest:
        return None
    path = Path(out) / "manifest.json"
    with atomic_path(path, force=force) as tmp:
        tmp.write_text(json.dumps(_jsonable(manifest), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def _convert(frame: pd.DataFrame, dtypes: Mapping[str, str] | None, name: str) -> pd.DataFrame:
    out = {}
    for col in frame.columns:
        raw = frame[col]
        kind = dtypes.get(col) if dtypes is not None else None
        if kind is None:
            if col in _LABELS:
                kind = "str"
            elif raw.isin(["True", "False"]).all():
                kind = "bool"
            else:
                kind = "float" if pd.to_numeric(raw.replace(list(_NA), np.nan), errors="coerce").notna().sum() == \
                    (~raw.isin(_NA)).sum() else "str"
        if kind == "bool":
            bad = ~raw.isin(["True", "False"])
            if bad.any():
                raise InputError(f"{name}: column {col!r} should hold True/False, found {raw[bad].iloc[0]!r}.")
            out[col] = raw.eq("True")
        elif kind == "int":
            try:
                out[col] = raw.astype(np.int64)
            except (ValueError, TypeError) as exc:
                raise InputError(f"{name}: column {col!r} should hold integers ({exc}).") from None
        elif kind == "float":
            try:
                # Python's float() parses the shortest repr exactly (pandas' fast parser may not)
                out[col] = raw.map(lambda x: np.nan if x in _NA else float(x)).astype(np.float64)
            except (ValueError, TypeError) as exc:
                raise InputError(f"{name}: column {col!r} should be numeric ({exc}).") from None
        else:
            out[col] = raw
    return pd.DataFrame(out, index=frame.index)


def load_table(path: str | os.PathLike) -> Any:
    """Read a folder written by :func:`save_table` (or by ``shrinkpert evaluate``) into a MetricTable.

    Parameters
    ----------
    path : path
        Folder with ``metrics.csv`` and ``summary.csv`` (``params.json`` and ``table.json``
        optional).

    Returns
    -------
    MetricTable
        Values are equal to the saved ones (floats round-trip exactly); tuples in ``params``
        come back as lists. Without ``table.json`` the genes are an empty index and the
        perturbations are read from ``metrics.csv`` in order of appearance.

    Raises
    ------
    MissingKeyError
        ``metrics.csv`` or ``summary.csv`` is missing.
    InputError
        ``table.json`` has another format, or a column cannot be read as its type.
    """
    from ..evaluation import MetricTable

    folder = Path(path)
    missing = [n for n in ("metrics.csv", "summary.csv") if not (folder / n).is_file()]
    if missing:
        raise MissingKeyError(f"{str(folder)!r} has no {' or '.join(missing)}; give the folder written by "
                              "save_table() or `shrinkpert evaluate --out`.")
    meta: dict[str, Any] = {}
    if (folder / "table.json").is_file():
        meta = json.loads((folder / "table.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise InputError(f"{str(folder / 'table.json')!r} has format {meta.get('format')!r}; this version reads "
                             f"{FORMAT!r}.")
    params = {}
    if (folder / "params.json").is_file():
        params = json.loads((folder / "params.json").read_text(encoding="utf-8"))

    def read(name: str) -> pd.DataFrame:
        return pd.read_csv(folder / name, dtype=str, keep_default_na=False)

    values = _convert(read("metrics.csv"), meta.get("metrics_dtypes"), "metrics.csv")
    flat = _convert(read("summary.csv"), meta.get("summary_dtypes"), "summary.csv")
    if "flags" in flat.columns:
        flat["flags"] = flat["flags"].replace(list(_NA), "")
    index = meta.get("summary_index") or [c for c in ("model", *_SUMMARY_INDEX) if c in flat.columns]
    absent = [c for c in index if c not in flat.columns]
    if absent:
        raise InputError(f"summary.csv lacks the index columns {absent}.")
    summary = flat.set_index(index)
    if "perturbations" in meta:
        perturbations = pd.Index(meta["perturbations"], dtype=object)
    elif "perturbation" in values.columns:
        perturbations = pd.Index(pd.unique(values["perturbation"]), dtype=object)
    else:
        raise InputError("metrics.csv has no 'perturbation' column.")
    genes = pd.Index(meta.get("genes", []), dtype=object)
    return MetricTable(values, summary, perturbations, genes, params)


def model_frames(table: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(values, summary)`` of a MetricTable, both flat and with a ``model`` column.

    A table of one prediction gets ``model = "model"``; a multi-model table keeps its own
    column (or index level). A table scored against several truths (``truth_effects=("raw",
    "shrunk")``) shows each (model, truth) as its own column: ``model`` becomes
    ``"<model> (<truth> truth)"``.
    """
    values = table.to_frame()
    summary = table.summary()
    if isinstance(summary.index, pd.MultiIndex) or summary.index.name is not None:
        summary = summary.reset_index()
    for frame in (values, summary):
        if "model" not in frame.columns:
            frame.insert(0, "model", DEFAULT_MODEL)
        frame["model"] = frame["model"].astype(str)
        if "truth" in frame.columns:
            frame["model"] = frame["model"] + " (" + frame.pop("truth").astype(str) + " truth)"
    missing = [c for c in ("metric", "weighting", "reference") if c not in summary.columns]
    if missing:
        raise InputError(f"table.summary() lacks the columns {missing}; pass a MetricTable from shrinkpert.evaluate.")
    return values, summary
