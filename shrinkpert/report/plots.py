"""Figures of the HTML report, returned as SVG data URIs.

Every function takes tidy frames (see :func:`shrinkpert.report.tables.model_frames`) and returns
``data:image/svg+xml;base64,...`` text for an ``<img>`` tag. The summary grid, calibration strips
and distributions are rectangles, lines, markers and text written directly as SVG elements
(:mod:`shrinkpert.report._svg`; matplotlib only supplies the colour map); the free-form dot plots
of extra sections are drawn with matplotlib (imported lazily; figures closed after drawing, SVG
ids salted deterministically). The same table gives the same bytes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from . import _svg

__all__ = ["summary_grid", "calibration_strips", "distributions", "generic_dots", "MODEL_COLORS"]

NEGATIVE_COLOR = "#7f7f7f"
POSITIVE_COLOR = "#1a9850"
ADVERSARIAL_COLOR = "#e08214"
#: Colours of the models, in order (cycled).
MODEL_COLORS = ("#2166ac", "#b2182b", "#6a3d9a", "#01665e", "#8c510a", "#c51b7d", "#35978f", "#542788")
FAMILY_COLORS = {"expression": "#d9ead3", "rank": "#cfe2f3", "de": "#fff2cc", "distribution": "#ead1dc",
                 "target": "#fce5cd"}


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("The HTML report needs matplotlib (colour maps, dot plots); install it with "
                          "`pip install 'shrinkpert[plot]'` (or `pip install matplotlib`).") from None
    return matplotlib


def _pyplot() -> Any:
    _matplotlib().use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _to_uri(fig: Any, *, tight: bool = True) -> str:
    """SVG data URI of ``fig``; ``tight=False`` keeps the figure's own margins (one layout pass fewer)."""
    plt = _pyplot()
    buf = io.BytesIO()
    with plt.rc_context({"svg.hashsalt": "shrinkpert", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None},
                    bbox_inches="tight" if tight else None)
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def model_color(i: int) -> str:
    return MODEL_COLORS[i % len(MODEL_COLORS)]


def _colormap(name: str) -> Any:
    return _matplotlib().colormaps[name]


def _hex(rgba: Sequence[float]) -> str:
    return "#" + "".join(f"{int(round(255 * float(c))):02x}" for c in rgba[:3])


def summary_grid(grid: pd.DataFrame, models: Sequence[str]) -> str:
    """Metric rows × models: calibrated score (bar), its interval (black line) and the number.

    ``grid`` has one row per (family, label, model) with ``calibrated``, ``ci_low``, ``ci_high``,
    ``flagged`` and ``inverted`` (the positive control does not beat the negative one, so the
    score has no meaning: drawn in grey); rows are drawn in their order of first appearance.
    Written as SVG elements (:mod:`shrinkpert.report._svg`).
    """
    cmap = _colormap("viridis_r")
    rows = grid.drop_duplicates(["family", "label"])[["family", "label", "flagged", "inverted"]].reset_index(drop=True)
    n_rows = len(rows)
    row_h, cell_w, head = 26.0, 170.0, 30.0
    labels = [r["label"] + (" (!)" if r["flagged"] else "") for _, r in rows.iterrows()]
    label_w = 12.0 + max((_svg.text_width(x, 11.0) for x in labels), default=0.0)
    fam_x = 4.0
    x0 = fam_x + 22.0 + label_w
    canvas = _svg.Canvas(x0 + cell_w * len(models) + 6.0, head + row_h * n_rows + 6.0)
    lookup = grid.set_index(["label", "model"])
    bar = 0.5 * (cell_w - 12.0)  # a score of 1 fills half a cell; bars are clipped to [0, 1.2]
    for j, model in enumerate(models):
        canvas.text(x0 + cell_w * (j + 0.5), head / 2, model, size=12.0, anchor="middle", color=model_color(j),
                    bold=True)
    for i, row in rows.iterrows():
        yc = head + row_h * (i + 0.5)
        canvas.text(x0 - 8.0, yc, labels[i], size=11.0, anchor="end", color="#b35806" if row["flagged"] else "#000000")
        for j, model in enumerate(models):
            left = x0 + cell_w * j
            canvas.rect(left + 2.0, yc - row_h * 0.46, cell_w - 4.0, row_h * 0.92, fill="#f3f3f3")
            if (row["label"], model) not in lookup.index:
                continue
            cell = lookup.loc[(row["label"], model)]
            c, lo, hi = (float(cell[k]) for k in ("calibrated", "ci_low", "ci_high"))
            if not np.isfinite(c):
                canvas.text(left + cell_w / 2, yc, "n/a (not calibrated)", size=9.0, anchor="middle", color="#666666")
                continue
            start = left + 6.0
            fill = "#d0d0d0" if row["inverted"] else _hex(cmap(float(np.clip(c, 0, 1))))
            canvas.rect(start, yc - row_h * 0.3, bar * float(np.clip(c, 0, 1.2)), row_h * 0.6, fill=fill)
            if np.isfinite(lo) and np.isfinite(hi):
                canvas.line(start + bar * float(np.clip(lo, 0, 1.2)), yc, start + bar * float(np.clip(hi, 0, 1.2)), yc,
                            stroke="#000000", width=1.3)
            canvas.line(start + bar, yc - row_h * 0.42, start + bar, yc + row_h * 0.42, stroke=POSITIVE_COLOR,
                        width=1.0, dash="2,2")
            number_x = left + cell_w * 0.67
            canvas.text(number_x, yc - 1.0, f"{c:.2f}", size=11.0, bold=True, baseline="alphabetic",
                        color="#888888" if row["inverted"] else "#000000")
            if np.isfinite(lo) and np.isfinite(hi):
                canvas.text(number_x, yc + 1.5, f"[{lo:.2f}, {hi:.2f}]", size=8.0, baseline="hanging",
                            color="#444444")
    for family, block in rows.groupby("family", sort=False):
        top = head + row_h * (block.index.min() + 0.04)
        bottom = head + row_h * (block.index.max() + 0.96)
        canvas.rect(fam_x, top, 18.0, bottom - top, fill=FAMILY_COLORS.get(family, "#eeeeee"))
        canvas.text(fam_x + 9.0, (top + bottom) / 2, family, size=10.0, anchor="middle", rotate=-90.0)
    return canvas.uri()


def _entities(models: Sequence[str], negative: str, positive: str,
              adversarial: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(label, source, colour, marker) from bottom to top: negative, adversarial, models, positive."""
    out = [(f"negative: {negative}", negative, NEGATIVE_COLOR, "s")]
    out += [(f"adversarial: {a}", a, ADVERSARIAL_COLOR, "x") for a in adversarial]
    out += [(m, f"model:{m}", model_color(i), "o") for i, m in enumerate(models)]
    out.append((f"positive: {positive}", positive, POSITIVE_COLOR, "D"))
    return out


def calibration_strips(strips: Sequence[dict[str, Any]], models: Sequence[str]) -> str:
    """One panel per metric row: each entity's mean with its bootstrap interval, on the metric's scale.

    Each item of ``strips`` has ``label``, ``negative``, ``positive``, ``adversarial`` (names),
    ``greater_is_better``, ``flags`` and ``points``: source name → (mean, low, high). Written as
    SVG elements (:mod:`shrinkpert.report._svg`), the panels stacked in one drawing.
    """
    lane, title_h, axis_h, flag_h, gap, plot_w = 15.0, 20.0, 20.0, 13.0, 12.0, 560.0
    ents_of = [_entities(models, s["negative"], s["positive"], s["adversarial"]) for s in strips]
    left = 12.0 + max(_svg.text_width(e[0], 9.0) for ents in ents_of for e in ents)
    heights = [title_h + lane * len(ents) + 6.0 + axis_h + (flag_h if s["flags"] else 0.0) + gap
               for s, ents in zip(strips, ents_of)]
    canvas = _svg.Canvas(left + plot_w + 20.0, sum(heights) + 4.0)
    top = 4.0
    for strip, ents, height in zip(strips, ents_of, heights):
        points = [strip["points"].get(source, (np.nan, np.nan, np.nan)) for _, source, _, _ in ents]
        scale = _svg.Scale(np.ravel(points), left, left + plot_w)
        lanes_top = top + title_h
        bottom = lanes_top + lane * len(ents) + 6.0
        scale.draw(canvas, lanes_top, bottom)
        canvas.text(left, top + 8.0, strip["label"], size=11.0)
        canvas.text(left + plot_w, top + 8.0, "better →" if strip["greater_is_better"] else "← better", size=9.0,
                    anchor="end", color="#555555")
        canvas.line(left, lanes_top, left, bottom, stroke="#555555", width=0.8)
        for i, ((label, _, color, marker), (mean, low, high)) in enumerate(zip(ents, points)):
            y = lanes_top + 3.0 + lane * (len(ents) - 1 - i + 0.5)  # the first entity at the bottom
            canvas.line(left - 3.0, y, left, y, stroke="#555555", width=0.8)
            canvas.text(left - 5.0, y, label, size=9.0, anchor="end")
            if np.isfinite(low) and np.isfinite(high):
                canvas.line(float(scale(low)), y, float(scale(high)), y, stroke=color, width=2.0)
            if np.isfinite(mean):
                canvas.marker(marker, float(scale(mean)), y, 7.0, color)
        if strip["flags"]:
            canvas.text(left, bottom + axis_h + 4.0, "flags: " + strip["flags"].replace(";", "; ").replace(",", ", "),
                        size=9.0, color="#b35806")
        top += height
    return canvas.uri()


def distributions(panels: Sequence[dict[str, Any]], models: Sequence[str], *, ncols: int = 3) -> str:
    """Small multiples: per metric row, box plots of per-perturbation values by entity.

    Each panel has ``label``, ``negative``, ``positive``, ``greater_is_better`` and ``values``:
    source name → 1-D array over perturbations (NaN left out). Written as SVG elements
    (:mod:`shrinkpert.report._svg`).
    """
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    names = ["negative", *models, "positive"]
    lane, title_h, axis_h, gap, plot_w, col_gap = 15.0, 30.0, 20.0, 14.0, 230.0, 24.0
    label_w = 10.0 + max(_svg.text_width(x, 9.0) for x in names)
    panel_h = title_h + lane * len(names) + 6.0 + axis_h + gap
    canvas = _svg.Canvas(label_w + ncols * (plot_w + col_gap), nrows * panel_h + 4.0)
    rng = np.random.default_rng(0)  # jitter only
    for k, panel in enumerate(panels):
        row, col = divmod(k, ncols)
        left = label_w + col * (plot_w + col_gap)
        top = 4.0 + row * panel_h
        lanes = [("negative", panel["negative"], NEGATIVE_COLOR)]
        lanes += [(m, f"model:{m}", model_color(i)) for i, m in enumerate(models)]
        lanes.append(("positive", panel["positive"], POSITIVE_COLOR))
        data = []
        for _, source, _ in lanes:
            v = np.asarray(panel["values"].get(source, []), dtype=np.float64)
            data.append(v[np.isfinite(v)])
        scale = _svg.Scale(np.concatenate(data) if data else [], left, left + plot_w, n_ticks=4)
        lanes_top = top + title_h
        bottom = lanes_top + lane * len(lanes) + 6.0
        scale.draw(canvas, lanes_top, bottom)
        canvas.line(left, lanes_top, left, bottom, stroke="#555555", width=0.8)
        arrow = "better →" if panel["greater_is_better"] else "← better"
        canvas.text(left, top + 7.0, f"{panel['label']}   {arrow}", size=9.0)
        canvas.text(left, top + 19.0, f"neg: {panel['negative']}, pos: {panel['positive']}", size=9.0)
        for i, ((name, _, color), v) in enumerate(zip(lanes, data)):
            y = lanes_top + 3.0 + lane * (len(lanes) - 1 - i + 0.5)  # negative at the bottom
            canvas.line(left - 3.0, y, left, y, stroke="#555555", width=0.8)
            if col == 0:
                canvas.text(left - 5.0, y, name, size=9.0, anchor="end")
            if v.size == 0:
                continue
            q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
            lo = v[v >= q1 - 1.5 * (q3 - q1)].min()
            hi = v[v <= q3 + 1.5 * (q3 - q1)].max()
            half = 0.28 * lane
            canvas.rect(float(scale(q1)), y - half, float(scale(q3) - scale(q1)), 2 * half, fill="#ffffff",
                        stroke=color, stroke_width=1.0)
            canvas.line(float(scale(med)), y - half, float(scale(med)), y + half, stroke=color, width=1.8)
            canvas.line(float(scale(lo)), y, float(scale(q1)), y, stroke=color, width=1.0)
            canvas.line(float(scale(q3)), y, float(scale(hi)), y, stroke=color, width=1.0)
            for x, dy in zip(scale(v), rng.uniform(-0.18, 0.18, v.size) * lane):
                canvas.circle(float(x), y + float(dy), 1.3, fill=color, opacity=0.6)
    return canvas.uri()


def generic_dots(frame: pd.DataFrame, labels: Sequence[str], columns: Sequence[str]) -> str:
    """One panel per numeric column: a dot per row of ``frame``, rows labelled on the left."""
    plt = _pyplot()
    n = len(columns)
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n + 1.6, 0.2 * len(frame) + 0.8), squeeze=False, sharey=True)
    y = np.arange(len(frame))
    for ax, col in zip(axes[0], columns):
        ax.plot(pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64), y, "o", ms=3.5,
                color=MODEL_COLORS[0])
        ax.set_title(str(col), fontsize=7.5)
        ax.grid(axis="x", color="#e5e5e5", lw=0.5)
        ax.tick_params(axis="x", labelsize=6.5)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[0, 0].set_yticks(y)
    axes[0, 0].set_yticklabels([str(s) for s in labels], fontsize=6.5)
    axes[0, 0].set_ylim(len(frame) - 0.5, -0.5)
    fig.subplots_adjust(wspace=0.25)
    return _to_uri(fig)
