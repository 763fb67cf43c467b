"""The run manifest of :func:`~shrinkpert.evaluate`: what was scored, how, by which versions.

Every :class:`~shrinkpert.MetricTable` carries ``params["manifest"]``, written as ``manifest.json``
by :func:`~shrinkpert.report.save_table` (``shrinkpert evaluate --out``) and beside cell-eval2's
files by :meth:`~shrinkpert.MetricTable.to_cell_eval2`. Fields:

``format``
    ``"shrinkpert.run-manifest/1"``.
``inputs``
    A fingerprint per input (``truth``, ``pred`` or ``pred:<model>``, ``train``), cheap next to
    the scoring (it never reads the matrix of a file): for a file or ``.zarr`` store (a path or a
    backed AnnData) its path, size in bytes and modification time; for an in-memory AnnData the
    SHA-256 of its cell and gene names, ``obs`` label column, matrix format, shape, dtype, number
    of stored values and the first 2**20 of them (a change further in goes unnoticed), plus its
    shape.
``call``
    The scoring choices: ``perturbation_key``, ``control``, ``exclude``, ``metrics``, ``weights``,
    ``references``, ``baselines`` (named, or ``"default"``), ``seed``.
``config``
    :meth:`~shrinkpert.EvaluationConfig.to_dict` without ``shard``.
``versions``
    shrinkpert, numpy, scipy, pandas, anndata, numba, Python.
``shard``
    ``null`` for a whole run, else ``{"index": i, "count": N, "perturbations": [...],
    "n_perturbations_total": P, "perturbations_sha256": ...}`` (the partition's labels and a
    digest of the full sorted label list).
``fingerprint``
    SHA-256 of ``inputs``, ``call``, ``config`` and ``versions``: two partials merge only when it is
    equal (see :mod:`shrinkpert.evaluation.partition`).
``created_utc``
    When the manifest was written (not part of the fingerprint).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FORMAT", "fingerprint_input", "run_manifest", "digest"]

#: ``format`` entry of a manifest.
FORMAT = "shrinkpert.run-manifest/1"


def _plain(value: Any) -> Any:
    """JSON-safe, deterministic form of a value (mappings sorted, arrays as lists, objects by type)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_plain(v) for v in value]
        return sorted(items, key=json.dumps) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return f"<{type(value).__name__}>"


def digest(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (keys sorted)."""
    return hashlib.sha256(json.dumps(_plain(obj), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


_HASHED = 1 << 20  # stored values of an in-memory matrix that enter its fingerprint


def _hash_array(h: Any, array: Any) -> None:
    array = np.ascontiguousarray(array)
    h.update(f"{array.dtype.str}{array.shape}".encode())
    h.update(array.tobytes())


def fingerprint_input(data: Any, *, perturbation_key: str | None = None, layer: str | None = None) -> dict[str, Any]:
    """Fingerprint of one input (see the module docstring); ``None`` gives ``{"kind": "none"}``."""
    import scipy.sparse as sp

    if data is None:
        return {"kind": "none"}
    ad = sys.modules.get("anndata")  # not imported: the data cannot be an AnnData (and a path needs no import)
    is_anndata = ad is not None and isinstance(data, ad.AnnData)
    if is_anndata and data.isbacked:
        data = data.filename
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
        stats = [f.stat() for f in files]
        return {"kind": "file", "path": str(path.resolve()), "bytes": int(sum(st.st_size for st in stats)),
                "mtime_ns": int(max((st.st_mtime_ns for st in stats), default=0))}
    if not is_anndata:
        return {"kind": type(data).__name__}
    h = hashlib.sha256()
    for names in (data.obs_names, data.var_names):
        h.update("\x1f".join(map(str, names)).encode())
        h.update(b"\x1e")
    if perturbation_key is not None and perturbation_key in data.obs.columns:
        h.update("\x1f".join(data.obs[perturbation_key].astype(str)).encode())
    matrix = data.layers[layer] if layer is not None and layer in data.layers else data.X
    h.update(f"{type(matrix).__name__}{getattr(matrix, 'format', '')}{matrix.shape}{matrix.dtype}".encode())
    if sp.issparse(matrix):
        h.update(str(matrix.nnz).encode())
        for part in (matrix.indptr[:_HASHED], matrix.indices[:_HASHED], matrix.data[:_HASHED]):
            _hash_array(h, part)
    elif isinstance(matrix, np.ndarray):
        _hash_array(h, matrix.reshape(-1)[:_HASHED])
    return {"kind": "anndata", "shape": [int(data.n_obs), int(data.n_vars)], "sha256": h.hexdigest()}


def _versions() -> dict[str, str]:
    from importlib import metadata

    from .. import __version__

    out = {"shrinkpert": __version__, "python": platform.python_version()}
    for name in ("numpy", "scipy", "pandas", "anndata", "numba"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover - all are dependencies
            out[name] = "absent"
    return out


def run_manifest(*, pred: Any, truth: Any, train: Any = None, call: Mapping[str, Any], config: Any,
                 shard: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of one :func:`~shrinkpert.evaluate` call (fields: module docstring).

    ``call`` holds the scoring choices (``perturbation_key``, ``control``, ``exclude``,
    ``metrics``, ``weights``, ``references``, ``baselines``, ``seed``); ``config`` is the
    :class:`~shrinkpert.EvaluationConfig`.
    """
    key, layer = call.get("perturbation_key"), getattr(config, "layer", None)
    inputs = {"truth": fingerprint_input(truth, perturbation_key=key, layer=layer)}
    if isinstance(pred, Mapping):
        inputs.update({f"pred:{name}": fingerprint_input(p, perturbation_key=key, layer=layer)
                       for name, p in pred.items()})
    else:
        inputs["pred"] = fingerprint_input(pred, perturbation_key=key, layer=layer)
    if train is not None:
        inputs["train"] = fingerprint_input(train, perturbation_key=key, layer=layer)
    settings = {k: v for k, v in config.to_dict().items() if k not in ("shard", "progress")}
    body = {"inputs": inputs, "call": _plain(dict(call)), "config": _plain(settings), "versions": _versions()}
    return {"format": FORMAT, **body, "shard": None if shard is None else _plain(dict(shard)),
            "fingerprint": digest(body),
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
