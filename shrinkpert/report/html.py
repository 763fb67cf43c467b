"""``write_html(table, path)``: one self-contained HTML page for a :class:`~shrinkpert.MetricTable`.

The page has no script, no external style sheet, font or image: figures are SVG images embedded
as ``data:`` URIs (drawn by :mod:`shrinkpert.report.plots`), tables are plain HTML, and the
style sheet is inline, so the file opens offline in any browser without shrinkpert installed.

Sections, in order: run manifest, model × metric summary, flags, calibration strips per metric
family, per-perturbation distributions, worst and best perturbations per model, then one
section per entry of ``extras`` (only those given).

Interval conventions: the summary's ``ci_low``/``ci_high`` are :func:`shrinkpert.evaluate`'s
bootstrap intervals of the calibrated score. The calibration strips show each side's mean value
over perturbations with a seeded percentile bootstrap interval of that mean
(:func:`shrinkpert.calibration.resample_indices`, the table's ``n_boot`` — at most 1000 — ``level``
and ``seed``; one set of draws shared by every side of a metric row, so the intervals are paired).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_path
from ..errors import InputError, OutputExistsError
from . import plots
from .tables import model_frames

__all__ = ["write_html", "render_html", "EXTRA_SECTIONS"]

#: Optional sections: ``extras`` key → (title, caption of its figure, what the table holds).
EXTRA_SECTIONS: dict[str, tuple[str, str]] = {
    "target": ("On-target effects", "Predicted versus observed change of each perturbation's target gene."),
    "escape": ("Escape and penetrance", "Fraction of cells in which the perturbation took effect, per side."),
    "dosage": ("Dosage", "Agreement of guide-level response strength between prediction and truth."),
    "biology_recall": ("Biology recall", "How many known biological relationships each model recovers."),
    "difficulty": ("Difficulty strata", "Scores within strata of perturbations from easy to hard."),
    "systematic_variation": ("Systematic variation", "How much of the signal is shared by all perturbations."),
    "exploit_arms": ("Exploit arms", "Scores of deliberately uninformative predictions that probe each metric."),
    "recommendation": ("Metric recommendation", "Which metrics separate signal from no signal on these data."),
}
_FLAG_TEXT = {
    "adversarial_beats_negative": "an adversarial baseline (no information, only a distortion) scores better than "
                                  "the negative control: the metric rewards the distortion",
    "adversarial_wins": "an adversarial baseline scores better than the positive control",
    "positive_not_better": "the positive control beats the negative control on fewer than half of the "
                           "perturbations: the metric cannot separate signal from no signal here",
    "few_perturbations": "fewer than 10 perturbations have finite values",
}
#: Content security policy of the page: no script, no network; images only from ``data:`` URIs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_REF_SHORT = {"control": "vs control", "perturbed_centroid": "vs centroid"}
_MAX_ROWS = 200
_MAX_DOTS = 60
_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;max-width:1180px;margin:24px auto;
padding:0 18px;color:#1f1f1f;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em}.meta{color:#555;font-size:.9em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0 1em}
th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.88em;color:#333;margin-top:.3em}.flag{color:#b35806}
.box{background:#f7f9fc;border:1px solid #dde3ec;padding:.6em 1em;border-radius:4px}
details summary{cursor:pointer;color:#2166ac}code{background:#f2f2f2;padding:0 3px}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(x: Any) -> str:
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        return "NaN" if not np.isfinite(x) else f"{float(x):.4g}"
    return str(x)


def _table(frame: pd.DataFrame, *, index: bool = False) -> str:
    """A plain HTML table (numbers right-aligned, 4 significant digits)."""
    frame = frame.reset_index() if index else frame
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="num">{_e(_fmt(v))}</td>' if isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
            else f"<td>{_e(_fmt(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(uri: str, caption: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{_e(alt)}"><figcaption>{_e(caption)}</figcaption></figure>'


def _label(metric: str, weighting: str, reference: str) -> str:
    parts = [metric]
    if reference != "none":
        parts.append(_REF_SHORT.get(reference, reference))
    if weighting != "uniform":
        parts.append(f"w={weighting}")
    return " · ".join(parts)


def _families(metrics: pd.Series) -> tuple[pd.Series, pd.Series]:
    from ..metrics import KINDS, METRICS

    kind = metrics.map(lambda m: METRICS[m].kind if m in METRICS else "other")
    order = {k: i for i, k in enumerate((*KINDS, "other"))}
    return kind, kind.map(order)


def _rows(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (metric, weighting, reference) in display order, with family and label."""
    keys = summary[["metric", "weighting", "reference"]].drop_duplicates().reset_index(drop=True)
    keys["family"], keys["_order"] = _families(keys["metric"])
    keys["label"] = [_label(m, w, r) for m, w, r in keys[["metric", "weighting", "reference"]].itertuples(index=False)]
    first = summary.drop_duplicates(["metric", "weighting", "reference"]).set_index(["metric", "weighting",
                                                                                   "reference"])
    flags = summary.groupby(["metric", "weighting", "reference"], sort=False)["flags"].agg(
        lambda s: ";".join(sorted({f for x in s.fillna("") for f in str(x).split(";") if f})))
    idx = pd.MultiIndex.from_frame(keys[["metric", "weighting", "reference"]])
    keys["flags"] = flags.reindex(idx).to_numpy()
    for col in ("greater_is_better", "negative", "positive"):
        keys[col] = first[col].reindex(idx).to_numpy() if col in first.columns else None
    return keys.sort_values(["_order", "metric", "reference", "weighting"], kind="stable").reset_index(drop=True)


def _manifest(table: Any, models: list[str]) -> str:
    from .. import __version__

    params = dict(table.params)
    facts = [("models", ", ".join(models)), ("perturbations", len(table.perturbations)),
             ("genes", len(table.genes) if len(table.genes) else "not recorded")]
    for key in ("inputs", "checksums", "scale", "preset", "metrics", "references", "weightings", "negative",
                "positive", "n_boot", "level", "seed", "de_calls", "truth_cells", "versions"):
        if key in params:
            value = params[key]
            facts.append((key, json.dumps(value, default=str) if isinstance(value, (Mapping, list, tuple))
                          else value))
    baselines = params.get("baselines")
    if isinstance(baselines, Mapping) and baselines:
        roles: dict[str, list[str]] = {}
        for name, role in baselines.items():
            roles.setdefault(str(role), []).append(str(name))
        facts.append(("baselines", "; ".join(f"{r}: {', '.join(n)}" for r, n in roles.items())))
    leak = {k: v for k, v in params.items() if "leak" in str(k).lower()}
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(_fmt(v))}</td></tr>" for k, v in facts)
    out = [f"<table>{rows}</table>"]
    if leak:
        items = "".join(f"<li><code>{_e(k)}</code>: {_e(json.dumps(v, default=str))}</li>" for k, v in leak.items())
        out.append(f'<div class="box"><b>Leakage checks</b><ul>{items}</ul></div>')
    else:
        out.append('<p class="meta">No leakage checks were recorded with this table.</p>')
    env = {"report written by shrinkpert": __version__, "python": platform.python_version(),
           "numpy": np.__version__, "pandas": pd.__version__}
    full = pd.DataFrame({"parameter": list(params), "value": [json.dumps(v, default=str) if not isinstance(v, str)
                                                                else v for v in params.values()]})
    out.append("<details><summary>Every parameter of the run</summary>" + _table(full) + "</details>")
    out.append('<p class="meta">' + ", ".join(f"{_e(k)} {_e(v)}" for k, v in env.items()) + "</p>")
    return "\n".join(out)


def _side_arrays(values: pd.DataFrame, rows: pd.DataFrame, models: list[str],
                 perturbations: pd.Index) -> dict[tuple[str, str, str], dict[str, np.ndarray]]:
    """Per metric row: source → values over ``perturbations`` (models as ``model:<name>``)."""
    out: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    base_cols = [c for c in values.columns if c.startswith("baseline_")]
    grouped = values.groupby(["metric", "weighting", "reference"], sort=False)
    for key in rows[["metric", "weighting", "reference"]].itertuples(index=False, name=None):
        if key not in grouped.groups:
            continue
        block = grouped.get_group(key)
        arrays: dict[str, np.ndarray] = {}
        for model in models:
            part = block[block["model"] == model].set_index("perturbation")
            if not len(part):
                continue
            arrays[f"model:{model}"] = part["value"].reindex(perturbations).to_numpy(dtype=np.float64)
            for col in base_cols:
                arrays.setdefault(col[len("baseline_"):],
                                  part[col].reindex(perturbations).to_numpy(dtype=np.float64))
        out[key] = arrays
    return out


def _mean_interval(arrays: Mapping[str, np.ndarray], idx: np.ndarray,
                   level: float) -> dict[str, tuple[float, float, float]]:
    """Mean over finite perturbations and the percentile interval over the shared resamples ``idx``."""
    out = {}
    for name, a in arrays.items():
        ok = np.isfinite(a)
        if not ok.any():
            out[name] = (np.nan, np.nan, np.nan)
            continue
        filled = np.where(ok, a, 0.0)
        counts = ok[idx].sum(axis=1)
        reps = filled[idx].sum(axis=1)[counts > 0] / counts[counts > 0]
        low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2]) if reps.size else (np.nan, np.nan)
        out[name] = (float(filled.sum() / ok.sum()), float(low), float(high))
    return out


def _adversarial(params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> list[str]:
    roles = params.get("baselines")
    if isinstance(roles, Mapping):
        return [n for n, r in roles.items() if r == "adversarial" and n in arrays]
    from ..baselines import ADVERSARIAL

    return [n for n in ADVERSARIAL if n in arrays]


def _standing(values: pd.DataFrame, rows: pd.DataFrame, models: list[str], n_show: int) -> str:
    """Worst and best perturbations per model: share of metric rows that beat the negative control."""
    parts = []
    meta = rows.set_index(["metric", "weighting", "reference"])
    for model in models:
        block = values[values["model"] == model]
        scores = []
        for key, grp in block.groupby(["metric", "weighting", "reference"], sort=False):
            if key not in meta.index:
                continue
            info = meta.loc[key]
            neg, pos = f"baseline_{info['negative']}", f"baseline_{info['positive']}"
            if neg not in grp.columns or not isinstance(info["greater_is_better"], (bool, np.bool_)):
                continue
            sign = 1.0 if info["greater_is_better"] else -1.0
            v = sign * grp["value"].to_numpy(dtype=np.float64)
            n = sign * grp[neg].to_numpy(dtype=np.float64)
            ok = np.isfinite(v) & np.isfinite(n)
            frame = pd.DataFrame({"perturbation": grp["perturbation"].to_numpy(),
                                  "beats_negative": np.where(ok, v > n, np.nan),
                                  "reaches_positive": np.nan,
                                  "calibrated": grp["calibrated"].to_numpy(dtype=np.float64)
                                  if "calibrated" in grp.columns else np.nan})
            if pos in grp.columns:
                q = sign * grp[pos].to_numpy(dtype=np.float64)
                frame["reaches_positive"] = np.where(ok & np.isfinite(q), v >= q, np.nan)
            scores.append(frame)
        if not scores:
            continue
        per = pd.concat(scores).groupby("perturbation", sort=False).agg(
            metric_rows=("beats_negative", "count"), beats_negative=("beats_negative", "mean"),
            reaches_positive=("reaches_positive", "mean"), median_calibrated=("calibrated", "median"))
        per = per[per["metric_rows"] > 0].sort_values(["beats_negative", "median_calibrated"], kind="stable")
        worst = per.head(n_show).reset_index()
        best = per.iloc[::-1].head(n_show).reset_index()
        parts.append(f"<h3>{_e(model)}</h3><p><b>Worst {len(worst)}</b></p>{_table(worst)}"
                     f"<p><b>Best {len(best)}</b></p>{_table(best)}")
    return "\n".join(parts)


def _extra_section(key: str, value: Any) -> str:
    if isinstance(value, pd.Series):
        value = value.to_frame(name=value.name if value.name is not None else key)
    title, what = EXTRA_SECTIONS.get(key, (key.replace("_", " ").capitalize(), ""))
    frame = value.reset_index() if not isinstance(value.index, pd.RangeIndex) else value
    frame.columns = [str(c) for c in frame.columns]
    out = [f'<h2 id="extra-{_e(key)}">{_e(title)}</h2>']
    if what:
        out.append(f"<p>{_e(what)}</p>")
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c]) and np.isfinite(frame[c].to_numpy(dtype=float)).any()]
    text = [c for c in frame.columns if c not in numeric]
    if numeric and 0 < len(frame) <= _MAX_DOTS:
        labels = (frame[text].astype(str).agg(" · ".join, axis=1) if text
                  else pd.Series([str(i) for i in range(len(frame))]))
        cols = numeric[:4]
        out.append(_figure(plots.generic_dots(frame, labels.tolist(), cols),
                           f"Each panel is one numeric column of the {title.lower()} table ({', '.join(cols)}); "
                           "each dot is one row, named on the left.", f"{title}: dot plot"))
    shown = frame.head(_MAX_ROWS)
    if len(frame) > _MAX_ROWS:
        out.append(f'<p class="meta">First {_MAX_ROWS} of {len(frame)} rows.</p>')
    out.append(_table(shown))
    return "\n".join(out)


def render_html(table: Any, *, title: str | None = None, extras: Mapping[str, Any] | None = None,
                n_show: int = 5) -> str:
    """The report page of ``table`` as a string (see :func:`write_html`)."""
    values, summary = model_frames(table)
    if extras is not None and not isinstance(extras, Mapping):
        raise InputError(f"extras must be a mapping name -> DataFrame, got {type(extras).__name__}.")
    for key, value in (extras or {}).items():
        if not isinstance(value, (pd.DataFrame, pd.Series)):
            raise InputError(f"extras[{key!r}] must be a pandas DataFrame or Series, got {type(value).__name__}.")
    models = list(pd.unique(summary["model"]))
    params = dict(table.params)
    rows = _rows(summary)
    title = title or ("shrinkpert report: " + ", ".join(models))
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">{len(models)} model(s), {len(table.perturbations)} perturbations, {len(rows)} metric '
            f"rows; written {now}.</p>",
            '<div class="box"><b>How to read this page.</b> Each metric is compared between a <i>negative '
            "control</i> (a baseline that carries no perturbation-specific information) and a <i>positive "
            "control</i> (a technical duplicate: half of the true cells scored against the other half). The "
            "<b>calibrated score</b> puts the model on that scale: 0 = no better than the negative control, 1 = as "
            "good as re-measuring the experiment. Intervals are bootstrap intervals over perturbations.</div>",
            "<h2 id='manifest'>Run manifest</h2>", _manifest(table, models)]

    grid = summary.merge(rows[["metric", "weighting", "reference", "family", "label", "_order"]],
                         on=["metric", "weighting", "reference"])
    grid["flagged"] = grid.groupby("label")["flags"].transform(lambda s: s.fillna("").str.len().gt(0).any())
    grid["inverted"] = grid.groupby("label")["flags"].transform(
        lambda s: s.fillna("").str.contains("positive_not_better").any())
    grid = grid.set_index("label").loc[rows["label"]].reset_index()
    for col in ("calibrated", "ci_low", "ci_high"):
        if col not in grid.columns:
            grid[col] = np.nan
    level = float(params.get("level", 0.95))
    body += ["<h2 id='summary'>Model × metric summary</h2>",
             _figure(plots.summary_grid(grid, models),
                     "Each row is a metric (grouped by family on the left) and each column a model: the bar and "
                     "number are the calibrated score (0 = negative control, 1 = positive control, dotted green "
                     f"line), the black line its {level:.0%} bootstrap interval, rows marked (!) carry flags and "
                     "grey bars mark rows where the positive control does not beat the negative one (the score means nothing "
                     "there).",
                     "model by metric summary grid")]
    wide = grid.assign(score=[f"{c:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(c) else "n/a"
                              for c, lo, hi in grid[["calibrated", "ci_low", "ci_high"]].itertuples(index=False)])
    pivot = wide.pivot_table(index=["family", "label"], columns="model", values="score", aggfunc="first", sort=False)
    pivot = pivot.reindex(columns=models)
    body.append("<details><summary>The same numbers as a table (calibrated score [interval])</summary>"
                + _table(pivot, index=True) + "</details>")

    flagged = rows[rows["flags"].fillna("").str.len() > 0]
    body.append("<h2 id='flags'>Flags</h2>")
    if len(flagged):
        used = sorted({f.split(":")[0] for s in flagged["flags"] for f in s.split(";")})
        body.append("<ul>" + "".join(f"<li><code>{_e(u)}</code>: {_e(_FLAG_TEXT.get(u, ''))}</li>" for u in used)
                    + "</ul>" + _table(flagged[["label", "flags"]].rename(columns={"label": "metric row"})))
    else:
        body.append("<p>No metric row is flagged.</p>")

    perts = pd.Index(table.perturbations).astype(str)
    arrays = _side_arrays(values, rows, models, perts)
    from ..calibration import resample_indices

    idx = resample_indices(len(perts), min(int(params.get("n_boot", 1000) or 1000), 1000),
                           int(params.get("seed", 0) or 0))
    strips_by_family: dict[str, list] = {}
    panels_by_family: dict[str, list] = {}
    for row in rows.itertuples(index=False):
        key = (row.metric, row.weighting, row.reference)
        if key not in arrays or not isinstance(row.greater_is_better, (bool, np.bool_)) or not row.negative:
            continue
        common = dict(label=row.label, negative=row.negative, positive=row.positive,
                      greater_is_better=bool(row.greater_is_better))
        adversarial = _adversarial(params, arrays[key])
        points = _mean_interval({k: v for k, v in arrays[key].items() if k.startswith("model:")
                                 or k in (row.negative, row.positive, *adversarial)}, idx, level)
        strips_by_family.setdefault(row.family, []).append(dict(common, adversarial=adversarial, points=points,
                                                                flags=row.flags))
        panels_by_family.setdefault(row.family, []).append(dict(common, values=arrays[key]))

    body.append("<h2 id='calibration'>Calibration strips</h2>")
    if not strips_by_family:
        body.append("<p>This table has no calibration (no baselines, or calibrate=False).</p>")
    for family, strips in strips_by_family.items():
        body.append(f"<h3>{_e(family)} metrics</h3>")
        body.append(_figure(plots.calibration_strips(strips, models),
                            "Each panel is one metric on its own scale: a marker is the mean over perturbations "
                            f"and the line its {level:.0%} bootstrap interval, for the negative control (grey "
                            "square), adversarial baselines (orange crosses), each model and the positive control "
                            "(green diamond); the arrow says which direction is better.",
                            f"calibration strips of {family} metrics"))

    body.append("<h2 id='distributions'>Per-perturbation distributions</h2>")
    for family, panels in panels_by_family.items():
        body.append(f"<h3>{_e(family)} metrics</h3>")
        body.append(_figure(plots.distributions(panels, models),
                            "Each panel is one metric: a box (quartiles, median, whiskers to 1.5 IQR) and one dot "
                            "per perturbation for the negative control, each model and the positive control.",
                            f"per-perturbation distributions of {family} metrics"))

    body.append("<h2 id='perturbations'>Worst and best perturbations</h2>"
                "<p><code>beats_negative</code> is the share of metric rows on which the model's value for that "
                "perturbation is better than the negative control's, <code>reaches_positive</code> the share on "
                "which it is at least as good as the positive control's, <code>median_calibrated</code> the "
                "median per-perturbation calibrated score across metric rows; the worst perturbations are those "
                "with the lowest <code>beats_negative</code> (ties: lowest median calibrated score).</p>")
    body.append(_standing(values, rows, models, n_show) or "<p>No per-perturbation comparison is possible "
                                                           "(no baselines).</p>")

    extras = dict(extras or {})
    for key in [k for k in EXTRA_SECTIONS if k in extras] + [k for k in extras if k not in EXTRA_SECTIONS]:
        body.append(_extra_section(str(key), extras[key]))

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{CSP}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def write_html(table: Any, path: str | os.PathLike, *, title: str | None = None,
               extras: Mapping[str, Any] | None = None, force: bool = False) -> Path:
    """Write the self-contained HTML report of a :class:`~shrinkpert.MetricTable`.

    Parameters
    ----------
    table : MetricTable
        Result of :func:`shrinkpert.evaluate` (one or several models: a ``model`` column in
        ``to_frame()`` and a ``model`` level or column in ``summary()``; without it the one
        prediction is called ``"model"``).
    path : path
        The ``.html`` file to write (atomically).
    title : str, optional
        Page title (default: ``"shrinkpert report: <models>"``).
    extras : mapping of str to DataFrame, optional
        Optional sections, each rendered as a table and, when it has numeric columns and at most
        60 rows, a dot plot. Known keys get their own titles (:data:`EXTRA_SECTIONS`:
        ``target``, ``escape``, ``dosage``, ``biology_recall``, ``difficulty``,
        ``systematic_variation``, ``exploit_arms``, ``recommendation``); other keys are shown
        after them under their own name.
    force : bool
        Overwrite an existing file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ImportError
        matplotlib is not installed (``pip install 'shrinkpert[plot]'``).
    InputError
        ``extras`` is not a mapping of DataFrames, or ``table`` lacks the summary columns.
    OutputExistsError
        ``path`` exists and ``force`` is false.
    """
    if Path(path).exists() and not force:  # fail before the slow part; atomic_path checks again
        raise OutputExistsError(f"{str(path)!r} already exists; pass force=True (CLI: --force) to overwrite it.")
    text = render_html(table, title=title, extras=extras)
    with atomic_path(path, force=force) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
