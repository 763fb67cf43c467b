"""Write a VCC 2026 result in cell-eval2's output layout: :func:`to_cell_eval2`.

Files (names and table layouts as cell-eval2 0.20.0 ``run`` writes them, so scripts and
leaderboards that read those files read these unchanged):

``results.csv``
    ``perturbation, metric, value``: one row per perturbation and per-perturbation metric
    (the five scored per-perturbation members and the four ``expr_*`` diagnostics).
    ``de_wilcoxon_lfc_nmae`` omits the perturbations its reference-only gate leaves out, as
    cell-eval2 does; other undefined values are written as NaN.
``agg_results.csv``
    ``statistic`` rows ``count, null_count, mean, std, min, max, median`` × one column per
    metric, sorted by name; ``std`` has ddof=1 and skips NaN. The derived
    ``expr_mse_unbiased_capped_norm`` has only its ``mean`` row (the ratio of sums).
``run_meta.json``
    shrinkpert's manifest of the run: preset settings, metric names, counts, the calibrated
    score when given, and provenance. Its fields are shrinkpert's own (cell-eval2's manifest
    records cell-eval2 internals such as cache digests that have no counterpart here).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import atomic_path, prepare_out_dir, provenance
from .vcc2026 import MEMBERS, VCC2026Result

__all__ = ["to_cell_eval2"]

_STATISTICS = ("count", "null_count", "mean", "std", "min", "max", "median")


def _results(result: VCC2026Result) -> pd.DataFrame:
    frame = result.to_frame()
    omitted = (frame["metric"] == "de_wilcoxon_lfc_nmae") & frame["value"].isna()
    return frame[~omitted].sort_values(["metric", "perturbation"], kind="stable").reset_index(drop=True)


def _aggregate(results: pd.DataFrame, result: VCC2026Result) -> pd.DataFrame:
    columns = {"statistic": list(_STATISTICS)}
    names = sorted({*results["metric"].unique(), "expr_mse_unbiased_capped_norm"})
    for name in names:
        if name == "expr_mse_unbiased_capped_norm":
            col = [math.nan] * len(_STATISTICS)
            col[_STATISTICS.index("mean")] = result.aggregate[name]
            columns[name] = col
            continue
        raw = results.loc[results["metric"] == name, "value"].to_numpy(dtype=np.float64)
        finite = raw[~np.isnan(raw)]
        stats = (
            (finite.mean(), finite.std(ddof=1) if finite.size > 1 else math.nan, finite.min(), finite.max(),
             float(np.median(finite)))
            if finite.size else (math.nan,) * 5
        )
        columns[name] = [float(raw.size), 0.0, *map(float, stats)]
    return pd.DataFrame(columns)


def to_cell_eval2(result: VCC2026Result, out: str | os.PathLike, *, calibrated=None, force: bool = False) -> Path:
    """Write ``results.csv``, ``agg_results.csv`` and ``run_meta.json`` into folder ``out``.

    Parameters
    ----------
    result : VCC2026Result
        From :func:`~shrinkpert.metrics.vcc2026.score_vcc2026`.
    out : path
        Folder to create (or an empty one).
    calibrated : CalibratedScore, optional
        Adds the scaled members, ``avg_score`` (and bootstrap intervals) to the manifest.
    force : bool
        Overwrite files in a non-empty folder.

    Returns
    -------
    pathlib.Path
        The folder. Each file is written atomically (temporary file, then rename).
    """
    folder = prepare_out_dir(out, force=force)
    results = _results(result)
    with atomic_path(folder / "results.csv", force=True) as tmp:
        results.to_csv(tmp, index=False)
    with atomic_path(folder / "agg_results.csv", force=True) as tmp:
        _aggregate(results, result).to_csv(tmp, index=False)
    meta = provenance(
        preset="vcc2026",
        settings=dict(result.params),
        metrics=list(MEMBERS),
        diagnostics=sorted(set(result.values) - set(MEMBERS)),
        n_perturbations=len(result.perturbations),
        aggregate={k: (None if not math.isfinite(v) else v) for k, v in result.aggregate.items()},
    )
    if calibrated is not None:
        meta["calibrated"] = {
            "scores": dict(calibrated.scores),
            "avg_score": calibrated.avg_score,
            "baseline": dict(calibrated.baseline),
            "anchor": dict(calibrated.anchor),
        }
        if calibrated.ci is not None:
            meta["calibrated"]["ci"] = calibrated.ci.set_index("metric").to_dict(orient="index")
    with atomic_path(folder / "run_meta.json", force=True) as tmp:
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
    return folder
