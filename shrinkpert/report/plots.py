"""Figures of the HTML report, drawn with matplotlib (imported lazily) and returned as SVG data URIs.

Every function takes tidy frames (see :func:`shrinkpert.report.tables.model_frames`) and returns
``data:image/svg+xml;base64,...`` text for an ``<img>`` tag; figures are closed after drawing, and
SVG ids are salted deterministically so the same table gives the same bytes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["summary_grid", "calibration_strips", "distributions", "generic_dots", "MODEL_COLORS"]

NEGATIVE_COLOR = "#7f7f7f"
POSITIVE_COLOR = "#1a9850"
ADVERSARIAL_COLOR = "#e08214"
#: Colours of the models, in order (cycled).
MODEL_COLORS = ("#2166ac", "#b2182b", "#6a3d9a", "#01665e", "#8c510a", "#c51b7d", "#35978f", "#542788")
FAMILY_COLORS = {"expression": "#d9ead3", "rank": "#cfe2f3", "de": "#fff2cc", "distribution": "#ead1dc",
                 "target": "#fce5cd"}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("The HTML report draws its figures with matplotlib; install it with "
                          "`pip install 'shrinkpert[plot]'` (or `pip install matplotlib`).") from None
    matplotlib.use("Agg", force=False)
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


def _label_inches(labels: Sequence[str], fontsize: float) -> float:
    """Approximate width of the longest label (an average glyph is about 0.6 em)."""
    return 0.6 * fontsize / 72 * max((len(x) for x in labels), default=0)


def model_color(i: int) -> str:
    return MODEL_COLORS[i % len(MODEL_COLORS)]


def summary_grid(grid: pd.DataFrame, models: Sequence[str]) -> str:
    """Metric rows × models: calibrated score (bar), its interval (black line) and the number.

    ``grid`` has one row per (family, label, model) with ``calibrated``, ``ci_low``, ``ci_high``,
    ``flagged`` and ``inverted`` (the positive control does not beat the negative one, so the
    score has no meaning: drawn in grey); rows are drawn in their order of first appearance.
    """
    plt = _pyplot()
    rows = grid.drop_duplicates(["family", "label"])[["family", "label", "flagged", "inverted"]].reset_index(drop=True)
    n_rows, n_models = len(rows), len(models)
    fig = plt.figure(figsize=(3.0 + 2.2 * n_models, 0.8 + 0.36 * n_rows))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(-1.4, n_models + 0.05)
    ax.set_ylim(n_rows - 0.4, -1.3)
    ax.axis("off")
    cmap = plt.get_cmap("viridis_r")
    lookup = grid.set_index(["label", "model"])
    scale = 0.5  # a score of 1 fills half a cell; bars are clipped to [0, 1.2]
    for i, row in rows.iterrows():
        ax.text(-0.33, i, row["label"] + (" (!)" if row["flagged"] else ""), ha="right", va="center", fontsize=9,
                color="#b35806" if row["flagged"] else "black")
        for j, model in enumerate(models):
            ax.add_patch(plt.Rectangle((j + 0.02, i - 0.46), 0.96, 0.92, color="#f3f3f3", lw=0))
            if (row["label"], model) not in lookup.index:
                continue
            cell = lookup.loc[(row["label"], model)]
            c, lo, hi = (float(cell[k]) for k in ("calibrated", "ci_low", "ci_high"))
            if not np.isfinite(c):
                ax.text(j + 0.5, i, "n/a (not calibrated)", ha="center", va="center", fontsize=7.5, color="#666666")
                continue
            x0 = j + 0.05
            fill = "#d0d0d0" if row["inverted"] else cmap(float(np.clip(c, 0, 1)))
            ax.add_patch(plt.Rectangle((x0, i - 0.3), scale * float(np.clip(c, 0, 1.2)), 0.6, color=fill, lw=0))
            if np.isfinite(lo) and np.isfinite(hi):
                ax.plot([x0 + scale * float(np.clip(lo, 0, 1.2)), x0 + scale * float(np.clip(hi, 0, 1.2))], [i, i],
                        color="black", lw=1.0)
            ax.plot([x0 + scale, x0 + scale], [i - 0.42, i + 0.42], color=POSITIVE_COLOR, lw=0.8, ls=":")
            ax.text(j + 0.67, i - 0.06, f"{c:.2f}", ha="left", va="bottom", fontsize=9, fontweight="bold",
                    color="#888888" if row["inverted"] else "black")
            if np.isfinite(lo) and np.isfinite(hi):
                ax.text(j + 0.67, i + 0.02, f"[{lo:.2f}, {hi:.2f}]", ha="left", va="top", fontsize=6.5,
                        color="#444444")
    for j, model in enumerate(models):
        ax.text(j + 0.5, -0.85, model, ha="center", va="center", fontsize=10, fontweight="bold",
                color=model_color(j))
    for family, block in rows.groupby("family", sort=False):
        top, bottom = block.index.min() - 0.46, block.index.max() + 0.46
        ax.add_patch(plt.Rectangle((-0.3, top), 0.25, bottom - top, color=FAMILY_COLORS.get(family, "#eeeeee"), lw=0))
        ax.text(-0.175, (top + bottom) / 2, family, rotation=90, ha="center", va="center", fontsize=8)
    return _to_uri(fig)


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
    ``greater_is_better``, ``flags`` and ``points``: source name → (mean, low, high).
    """
    plt = _pyplot()
    n_lanes = max(len(_entities(models, s["negative"], s["positive"], s["adversarial"])) for s in strips)
    height = 0.22 * n_lanes + 0.45
    fig, axes = plt.subplots(len(strips), 1, figsize=(8.0, height * len(strips) + 0.3), squeeze=False)
    for ax, strip in zip(axes[:, 0], strips):
        ents = _entities(models, strip["negative"], strip["positive"], strip["adversarial"])
        for y, (label, source, color, marker) in enumerate(ents):
            mean, low, high = strip["points"].get(source, (np.nan, np.nan, np.nan))
            if np.isfinite(low) and np.isfinite(high):
                ax.plot([low, high], [y, y], color=color, lw=1.6)
            if np.isfinite(mean):
                ax.plot([mean], [y], marker=marker, color=color, ms=5, ls="none")
        ax.set_yticks(range(len(ents)))
        ax.set_yticklabels([e[0] for e in ents], fontsize=6.5)
        ax.set_ylim(-0.7, len(ents) - 0.3)
        ax.xaxis.set_major_locator(plt.MaxNLocator(5))
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", color="#e5e5e5", lw=0.5)
        ax.set_axisbelow(True)
        ax.set_title(strip["label"], loc="left", fontsize=8.5)
        ax.set_title(("better →" if strip["greater_is_better"] else "← better"), loc="right", fontsize=7,
                     color="#555555")
        if strip["flags"]:
            ax.set_xlabel("flags: " + strip["flags"].replace(";", "; ").replace(",", ", "), fontsize=6.5,
                          color="#b35806", loc="left")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    # fixed margins in inches (tight layouts cost a text layout pass per tick label)
    total = height * len(strips) + 0.3
    left = 0.25 + max(_label_inches([e[0] for e in _entities(models, s["negative"], s["positive"], s["adversarial"])],
                                    6.5) for s in strips)
    fig.set_size_inches(left + 6.4, total)
    fig.subplots_adjust(left=left / (left + 6.4), right=0.97, top=1 - 0.3 / total, bottom=0.4 / total, hspace=0.75)
    return _to_uri(fig, tight=False)


def distributions(panels: Sequence[dict[str, Any]], models: Sequence[str], *, ncols: int = 3) -> str:
    """Small multiples: per metric row, box plots of per-perturbation values by entity.

    Each panel has ``label``, ``negative``, ``positive``, ``greater_is_better`` and ``values``:
    source name → 1-D array over perturbations (NaN left out).
    """
    plt = _pyplot()
    n = len(panels)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    n_lanes = len(models) + 2
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, (0.3 * n_lanes + 0.75) * nrows), squeeze=False)
    rng = np.random.default_rng(0)  # jitter only
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        panel = panels[k]
        lanes = [("negative", panel["negative"], NEGATIVE_COLOR)]
        lanes += [(m, f"model:{m}", model_color(i)) for i, m in enumerate(models)]
        lanes.append(("positive", panel["positive"], POSITIVE_COLOR))
        for y, (_, source, color) in enumerate(lanes):
            v = np.asarray(panel["values"].get(source, []), dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size == 0:
                continue
            q1, med, q3 = np.quantile(v, [0.25, 0.5, 0.75])
            lo = v[v >= q1 - 1.5 * (q3 - q1)].min()
            hi = v[v <= q3 + 1.5 * (q3 - q1)].max()
            ax.add_patch(plt.Rectangle((q1, y - 0.28), q3 - q1, 0.56, facecolor="white", edgecolor=color, lw=0.9))
            ax.plot([med, med], [y - 0.28, y + 0.28], color=color, lw=1.4)
            ax.plot([lo, q1], [y, y], color=color, lw=0.8)
            ax.plot([q3, hi], [y, y], color=color, lw=0.8)
            ax.scatter(v, y + rng.uniform(-0.18, 0.18, v.size), s=3, color=color, alpha=0.6, lw=0)
        ax.set_yticks(range(len(lanes)))
        ax.set_yticklabels([lane[0] for lane in lanes] if k % ncols == 0 else [], fontsize=6.5)
        ax.xaxis.set_major_locator(plt.MaxNLocator(4))
        ax.tick_params(axis="x", labelsize=6.5)
        arrow = "better →" if panel["greater_is_better"] else "← better"
        ax.set_title(f"{panel['label']}   {arrow}\nneg: {panel['negative']}, pos: {panel['positive']}", fontsize=7,
                     loc="left")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    panel_h = 0.3 * n_lanes + 0.75
    label = 0.2 + _label_inches(["negative", "positive", *models], 6.5)
    width = label + ncols * 2.6
    fig.set_size_inches(width, panel_h * nrows)
    fig.subplots_adjust(left=label / width, right=0.98, wspace=0.15, hspace=0.8 / panel_h * 1.6,
                        top=1 - 0.3 / (panel_h * nrows), bottom=0.3 / (panel_h * nrows))
    return _to_uri(fig, tight=False)


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
