"""Validation: are the p-values of ``estimate_effects`` calibrated when nothing changes?

Data: ``shrinkpert.datasets.simulate()`` screens with no perturbation effect at all
(``effect_sd=0``, no systematic shift, no batch effect; 30% control cells), at about 20 and about
100 cells per perturbation. Every perturbation-gene p-value (two-sided t with the reported df) is
then a null p-value, and the share below 0.05, 0.01 and 0.001 should be at most those levels.

Two standard-error rules are compared: plain Welch (``variance_floor="none"``, the same as
``scipy.stats.ttest_ind(equal_var=False)``) and the default control variance floor
(``variance_floor="control"``). Genes are binned by their detection rate in control cells, since
the failure of Welch's approximation depends on how zero-inflated a gene is.

Writes ``validation/output/null_calibration.csv`` and ``docs/figures/null_calibration.png``.
Run: ``python validation/null_calibration.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

import shrinkpert as sp
from _output import pyplot, save_figure, write_table  # validation/_output.py

BINS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
LEVELS = (0.05, 0.01, 0.001)


def null_screen(n_perturbations: int, seed: int):
    return sp.datasets.simulate(6000, 800, n_perturbations, seed=seed, effect_sd=0.0, systematic_shift=0.0,
                                control_fraction=0.3, batch_sd=0.0)


def rates(adata, floor: str) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        effects = sp.estimate_effects(adata, variance_floor=floor)
    p = 2 * stats.t.sf(np.abs(effects.z), effects.df)
    control = adata.X[(adata.obs["perturbation"] == "non-targeting").to_numpy()]
    detection = np.asarray((control > 0).mean(axis=0)).ravel()
    bins = pd.cut(detection, BINS)
    frame = pd.DataFrame({"detection": np.tile(bins, p.shape[0]), "p": p.ravel()})
    out = frame.groupby("detection", observed=True)["p"].agg(
        **{f"rate_{lvl:g}": (lambda x, lvl=lvl: float((x < lvl).mean())) for lvl in LEVELS}, n="size")
    out.insert(0, "cells_per_perturbation", float(np.median(effects.n_cells)))
    out.insert(0, "variance_floor", floor)
    return out.reset_index()


def main() -> pd.DataFrame:
    frames = []
    for n_pert in (200, 40):  # about 20 and 100 cells per perturbation
        adata = null_screen(n_pert, seed=5)
        for floor in ("none", "control"):
            frames.append(rates(adata, floor))
    out = pd.concat(frames, ignore_index=True)
    out["detection"] = out["detection"].astype(str)
    write_table(out, "null_calibration.csv")
    plt = pyplot()
    if plt is None:
        return out
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, (cells, part) in zip(axes, out.groupby("cells_per_perturbation")):
        for floor, style in (("none", "o--"), ("control", "s-")):
            d = part[part["variance_floor"] == floor]
            ax.plot(range(len(d)), d["rate_0.001"] / 0.001, style, label=f"variance_floor={floor!r}")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_xticks(range(len(d)), d["detection"], rotation=30, fontsize=8)
        ax.set_xlabel("detection rate in control cells")
        ax.set_title(f"~{cells:.0f} cells per perturbation")
    axes[0].set_ylabel("observed / nominal rate of p < 0.001")
    axes[0].legend(fontsize=8)
    fig.suptitle("Null screens: false-positive rate of effect-size tests")
    fig.tight_layout()
    save_figure(fig, "null_calibration.png")
    return out


if __name__ == "__main__":
    with pd.option_context("display.width", 200, "display.max_rows", 100):
        print(main().round(4).to_string(index=False))
