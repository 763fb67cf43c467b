r"""Partitioned scoring: ``evaluate(..., shard=(i, N))`` and :func:`merge_tables`.

A large evaluation can be split over workers along the perturbation axis. Shard :math:`i` of
:math:`N` scores the :math:`i`-th of :math:`N` contiguous, near-equal blocks of the sorted
perturbations (``numpy.array_split`` of the positions, so the partition depends only on the
number of perturbations); :func:`merge_tables` (CLI: ``shrinkpert merge``) puts the partial
tables together into the table an unsharded run gives.

What a shard computes, and why the merge is exact
-------------------------------------------------
Every shard reads both inputs whole and builds the same truth summary, baselines and gene
weights (these cost one streaming pass each and are what makes a value depend on other
perturbations: the leave-one-out mean baseline, the shuffled labels, the noise of the inflated
baselines). It then computes per-perturbation values for its own perturbations only:

* metrics of one perturbation at a time (expression, delta, DE and target-gene metrics) get only
  the shard's rows; DE calls are a Welch test per gene with Benjamini–Hochberg *within* each
  perturbation (or ash fitted per perturbation), so a row's calls do not depend on the other
  rows;
* rank metrics compare a perturbation with *all* others: their candidates must be the full set,
  so they are computed over all perturbations and the shard keeps its rows (exact, but their
  :math:`P^2 G` cost is not divided); the biology metrics likewise;
* distribution metrics draw the cell sample plan for all perturbations (the draws follow the
  sorted labels) and compute the distances for the shard's perturbations only.

Under ``preset="vcc2026"`` (:func:`~shrinkpert.evaluation.presets.merge_vcc2026`) every shard
computes the pseudobulk members (``pds_cosine`` ranks among all measured effects; the expression
member's cap pools every predicted pseudobulk) for all perturbations and keeps its rows, and runs
the Wilcoxon tests — of the submission, the mean-response baseline, the exploit arms and both
halves of every replicate-anchor split — for its perturbations only (one perturbation against the
controls, BH within it, genes gated on the controls alone). A shard carries per-perturbation
values, including the expression member's two components and each anchor split's values; the
merge recomputes every aggregate (the expression member's ratio of sums included), the anchor,
the calibration, the bootstrap and the exploit bounds from the concatenation.

The summary is what cannot be merged from partial summaries: calibrated scores, bootstrap
intervals, DRF/BDS, means and medians over perturbations, the exploit and adversarial flags and
``few_perturbations`` all pool the perturbations. :func:`merge_tables` therefore concatenates the
per-perturbation values of the model *and of every baseline* and recomputes the whole summary
with :func:`~shrinkpert.evaluation.steps.tabulate`, with the run's seed, so the bootstrap draws
the same resamples. The analytic noise ceilings are computed from the whole truth in every shard
and must agree.

Refusals: partials whose manifests (:mod:`shrinkpert.evaluation.manifest`) differ in inputs,
options or versions (``fingerprint``), in the number of shards, that repeat a shard, or that
leave one out.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, MissingKeyError

__all__ = ["check_shard", "shard_rows", "shard_record", "merge_tables", "is_partial"]

#: Metric kinds whose value for a perturbation uses that perturbation's rows only.
ROW_SEPARABLE = ("expression", "de", "target")


def check_shard(shard: Any) -> tuple[int, int] | None:
    """``None`` or ``(i, N)`` with integers ``0 <= i < N``; also parses ``"i/N"``."""
    if shard is None:
        return None
    if isinstance(shard, str):
        parts = shard.split("/")
        try:
            shard = tuple(int(x) for x in parts)
        except ValueError:
            raise InputError(f"shard={shard!r} is not 'i/N' (e.g. '0/4' for the first of four shards).") from None
    try:
        i, n = shard
    except (TypeError, ValueError):
        raise InputError(f"shard must be (i, N), got {shard!r}.") from None
    if not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in (i, n)) or not (n >= 1 and
                                                                                                     0 <= i < n):
        raise InputError(f"shard=({i!r}, {n!r}): need integers 0 <= i < N (shards are numbered from 0).")
    return int(i), int(n)


def shard_rows(n_perturbations: int, shard: tuple[int, int] | None) -> np.ndarray | None:
    """Positions (in sorted perturbation order) of shard ``(i, N)``: ``numpy.array_split`` block ``i``."""
    if shard is None:
        return None
    i, n = shard
    if n > n_perturbations:
        raise InputError(f"shard=({i}, {n}): only {n_perturbations} perturbations to split; use at most "
                         f"{n_perturbations} shards.")
    return np.array_split(np.arange(n_perturbations), n)[i]


def shard_record(perturbations: pd.Index, shard: tuple[int, int] | None, rows: np.ndarray | None) -> dict | None:
    """The ``shard`` entry of the manifest (``None`` for a whole run)."""
    from .manifest import digest

    if shard is None:
        return None
    return {"index": shard[0], "count": shard[1], "perturbations": [str(p) for p in perturbations[rows]],
            "n_perturbations_total": len(perturbations),
            "perturbations_sha256": digest([str(p) for p in perturbations])}


def is_partial(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder written from a sharded :func:`~shrinkpert.evaluate` run."""
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        return False
    return json.loads(manifest.read_text(encoding="utf-8")).get("shard") is not None


def _load(part: Any) -> Any:
    from ..report import load_table
    from .table import MetricTable

    if isinstance(part, MetricTable):
        return part
    if isinstance(part, (str, os.PathLike)):
        return load_table(part)
    raise InputError(f"merge_tables takes MetricTables or folders written by save_table, got {type(part).__name__}.")


def _manifests(tables: list) -> list[dict]:
    out = []
    for k, table in enumerate(tables):
        manifest = table.params.get("manifest")
        if not manifest or manifest.get("shard") is None:
            raise InputError(f"part {k} is not a shard of an evaluation (its manifest has no 'shard'); merge the "
                             "outputs of evaluate(..., shard=(i, N)) / shrinkpert evaluate --shard i/N.")
        out.append(manifest)
    first = out[0]
    for k, m in enumerate(out[1:], start=1):
        if m["fingerprint"] != first["fingerprint"]:
            what = [f for f in ("inputs", "call", "config", "versions") if m.get(f) != first.get(f)]
            raise InputError(f"part {k} comes from a different run than part 0 (different {', '.join(what) or 'run'}); "
                             "only shards of one evaluation (same inputs, options and versions) can be merged.")
        if m["shard"]["count"] != first["shard"]["count"] or \
                m["shard"]["perturbations_sha256"] != first["shard"]["perturbations_sha256"]:
            raise InputError(f"part {k} splits the perturbations into {m['shard']['count']} shards, part 0 into "
                             f"{first['shard']['count']} (or over other perturbations); shard all parts alike.")
    index = [m["shard"]["index"] for m in out]
    repeated = sorted({i for i in index if index.count(i) > 1})
    if repeated:
        raise InputError(f"shards {repeated} are given more than once (overlapping parts); give each shard once.")
    missing = sorted(set(range(first["shard"]["count"])) - set(index))
    if missing:
        raise MissingKeyError(f"shards {missing} of {first['shard']['count']} are missing; merge all of them.")
    return out


def merge_tables(parts: Sequence[Any]) -> Any:
    """Combine the partial tables of a sharded evaluation into the table of the whole run.

    Parameters
    ----------
    parts : sequence of MetricTable or paths
        The results of ``evaluate(..., shard=(i, N))`` for every ``i`` (any order), or the
        folders ``save_table``/``shrinkpert evaluate --shard`` wrote.

    Returns
    -------
    MetricTable
        Per-perturbation values equal to an unsharded run's (they are the same numbers); the
        summary recomputed from them (module docstring). ``params`` are the run's, with
        ``shard = None`` and ``merged_shards = N`` in the manifest.

    Raises
    ------
    InputError
        Parts of different runs (inputs, options or versions), different shard counts, a shard
        given twice, or a part that is not a shard.
    MissingKeyError
        A shard is missing.
    """
    from .config import EvaluationConfig
    from .registry import METRICS
    from .steps import Scores, tabulate

    if isinstance(parts, (str, os.PathLike)) or len(parts) == 0:
        raise InputError("merge_tables needs a list of the partial tables (or their folders).")
    tables = [_load(p) for p in parts]
    manifests = _manifests(tables)
    order = np.argsort([m["shard"]["index"] for m in manifests])
    tables = [tables[k] for k in order]
    manifests = [manifests[k] for k in order]
    perturbations = pd.Index([str(p) for t in tables for p in t.perturbations], dtype=object)
    for t, m in zip(tables, manifests):
        if [str(p) for p in t.perturbations] != m["shard"]["perturbations"]:
            raise InputError(f"shard {m['shard']['index']}: its table's perturbations differ from its manifest's.")
    from .manifest import digest

    if digest(list(perturbations)) != manifests[0]["shard"]["perturbations_sha256"]:
        raise InputError("the shards' perturbations do not make up the run's perturbations (overlapping or altered "
                         "parts).")
    if tables[0].params.get("preset") == "vcc2026":
        from .presets import merge_vcc2026

        config = EvaluationConfig(**{k: manifests[0]["config"][k] for k in ("n_boot", "level")})
        merged = merge_vcc2026(tables, config)
        return merged.with_manifest({**manifests[0], "shard": None, "merged_shards": len(tables)})
    frames = [t.to_frame() for t in tables]
    several = "model" in frames[0].columns
    keys = ["metric", "reference", "weighting"]
    job_keys = list(dict.fromkeys(map(tuple, frames[0][keys].itertuples(index=False, name=None))))
    models = list(dict.fromkeys(frames[0]["model"])) if several else ["model"]
    baselines = [c[len("baseline_"):] for c in frames[0].columns if c.startswith("baseline_")]
    unknown = sorted({name for name, _, _ in job_keys if name not in METRICS})
    if unknown:
        raise InputError(f"the parts hold metrics this version does not know: {unknown}.")
    jobs = tuple((METRICS[name], ref, w) for name, ref, w in job_keys)
    values: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    for name, ref, w in job_keys:
        per_side: dict[str, list[np.ndarray]] = {}
        for frame in frames:
            block = frame[(frame["metric"] == name) & (frame["reference"] == ref) & (frame["weighting"] == w)]
            for model in models:
                rows = block[block["model"] == model] if several else block
                per_side.setdefault(model, []).append(rows["value"].to_numpy(dtype=np.float64))
            first = block[block["model"] == models[0]] if several else block
            for b in baselines:
                per_side.setdefault(b, []).append(first[f"baseline_{b}"].to_numpy(dtype=np.float64))
        values[(name, ref, w)] = {side: np.concatenate(arrays) for side, arrays in per_side.items()}
        lengths = {side: len(v) for side, v in values[(name, ref, w)].items()}
        if set(lengths.values()) != {len(perturbations)}:
            raise InputError(f"metric {name!r} ({ref}, {w}) lacks values for some perturbations in some shard.")
    ceilings = _ceilings(tables, job_keys)
    manifest = dict(manifests[0])
    config = EvaluationConfig(**{k: manifest["config"][k] for k in ("negative", "positive", "calibrate", "n_boot",
                                                                    "level")})
    seed = int(manifest["call"]["seed"])
    record = {k: v for k, v in tables[0].params.items() if k not in ("manifest", "shard")}
    record["shard"] = None
    record["manifest"] = {**manifest, "shard": None, "merged_shards": len(tables)}
    scores = Scores(jobs, values, tuple(models) + tuple(baselines), tuple(models), perturbations,
                    {}, ceilings)
    return tabulate(scores, config=config, seed=seed, params={"genes": tables[0].genes, "record": record})


def _ceilings(tables: list, job_keys: list) -> dict[tuple[str, str, str], float]:
    """The noise ceilings, which every shard computes from the whole truth: they must agree."""
    out: dict[tuple[str, str, str], float] = {}
    for k, table in enumerate(tables):
        summary = table.summary().reset_index()
        for name, ref, w in job_keys:
            rows = summary[(summary["metric"] == name) & (summary["reference"] == ref) & (summary["weighting"] == w)]
            if rows.empty or "ceiling" not in rows:
                continue
            value = float(rows["ceiling"].iloc[0])
            if not np.isfinite(value):
                continue
            if (name, ref, w) in out and out[(name, ref, w)] != value:
                raise InputError(f"shard {k} has another noise ceiling for {name!r} than shard 0; the parts were not "
                                 "computed from the same truth.")
            out[(name, ref, w)] = value
    return out
