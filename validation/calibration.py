"""Validation: which metrics separate a positive from a negative control (DRF, BDS), and do
calibrated scores place known-good and known-bad predictions where they belong?

Data: the bundled Papalexi 2021 THP-1 ECCITE-seq (real; assigned cells, 25 perturbations) and a
``shrinkpert.datasets.simulate()`` screen (known truth, 20 perturbations). Two "models" per dataset,
both cell-level predictions scored with :func:`shrinkpert.evaluate`:

* ``resampled``: every true cell's counts redrawn (Poisson) — a near-oracle that should score
  at or above the positive control (calibrated ≳ 1);
* ``control_only``: each perturbation predicted by control cells (its cell count drawn from the
  control cells) — no information, should score at or below the negative control
  (calibrated ≲ 0 against the mean baseline; 0 against the control baseline).

Every weighted metric is computed unweighted (``uniform``) and with two gene weightings:
``shrunken`` (shrinkpert's split-independent weights: squared shrunken effects of the perturbation
itself) and ``deg_rest`` (Mejia et al.'s DEG weights against the rest of the data). The
distribution metrics (energy distance, MMD; 100 cells per perturbation) are included. Deltas are
taken against the control and, for comparison with Systema's choice, against the perturbed
centroid (``allow_leakage=True``: those rows are flagged ``leakage``).

Mejia/Miller et al. report MSE and Pearson(Δ vs control) as poorly calibrated and weighted/rank
metrics as well calibrated; the BDS/DRF columns test that on these data.

Writes ``validation/output/calibration_summary.csv`` and, when matplotlib is installed,
``docs/figures/calibration.png``. Run: ``python validation/calibration.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import shrinkpert as sp
from shrinkpert.metrics import METRICS
from shrinkpert.evaluation import evaluate
from shrinkpert.weights import gene_weights
from _output import pyplot, save_figure, write_table  # validation/_output.py

CONTROL = "non-targeting"


def resampled(adata, seed):
    out = adata.copy()
    X = out.X.tocsr().astype(np.float64) if hasattr(out.X, "tocsr") else np.asarray(out.X, dtype=np.float64)
    rng = np.random.default_rng(seed)
    if hasattr(X, "data"):
        X.data = rng.poisson(X.data).astype(np.float64)
        X.eliminate_zeros()
    else:
        X = rng.poisson(X).astype(np.float64)
    out.X = X
    return out


def control_only(adata, seed):
    rng = np.random.default_rng(seed)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    ctrl = np.flatnonzero(labels == CONTROL)
    rows, new = [], []
    for p in sorted(set(labels) - {CONTROL}):
        n = int((labels == p).sum())
        rows.append(rng.choice(ctrl, size=n, replace=len(ctrl) < n))
        new += [p] * n
    rows = np.concatenate(rows)
    out = adata[rows].copy()
    out.obs_names = [f"pred{i}" for i in range(out.n_obs)]
    out.obs["perturbation"] = pd.Categorical(new)
    return out


def main() -> pd.DataFrame:
    real = sp.datasets.papalexi2021()
    real = real[real.obs["perturbation"] != "unassigned"].copy()
    sim = sp.datasets.simulate(n_cells=4000, n_genes=300, n_perturbations=20, seed=3)
    metrics = [m for m, s in METRICS.items() if s.needs in ("means", "deltas", "de", "cells")]
    frames = []
    for dataset, truth in (("papalexi2021", real), ("simulate", sim)):
        perts = sorted(set(truth.obs["perturbation"].astype(str)) - {CONTROL})
        weights = {"shrunken": gene_weights(truth, method="shrunken"),
                   "deg_rest": gene_weights(truth, method="deg_rest", reference_perturbations=perts,
                                            allow_leakage=True)}
        for model, make in (("resampled", resampled), ("control_only", control_only)):
            table = evaluate(make(truth, 11), truth, metrics=metrics, weights=weights, n_boot=1000, seed=2021,
                             references=["control", "perturbed_centroid"], allow_leakage=True)
            summary = table.summary().reset_index()
            summary.insert(0, "model", model)
            summary.insert(0, "dataset", dataset)
            frames.append(summary)
    out = pd.concat(frames, ignore_index=True)
    write_table(out, "calibration_summary.csv")
    plt = pyplot()
    if plt is None:
        return out
    sel = out[(out["model"] == "resampled") & (out["weighting"] == "uniform")].copy()
    sel["label"] = sel["metric"] + np.where(sel["reference"] == "none", "", " (" + sel["reference"] + ")")
    fig, axes = plt.subplots(1, 2, figsize=(11, 9), sharey=True)
    labels = sel[sel["dataset"] == "papalexi2021"].sort_values("bds")["label"].tolist()
    for ax, dataset in zip(axes, ("papalexi2021", "simulate")):
        d = sel[sel["dataset"] == dataset].set_index("label").reindex(labels)
        y = np.arange(len(labels))
        ax.barh(y - 0.2, d["bds"], height=0.4, label="BDS")
        ax.barh(y + 0.2, d["drf"], height=0.4, label="mean DRF")
        ax.axvline(0.5, color="grey", lw=0.8, ls="--")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_title(dataset)
        ax.set_xlim(-1, 1)
    axes[0].legend(loc="lower right")
    fig.suptitle("Positive (technical duplicate) vs negative (mean / control) control per metric")
    fig.tight_layout()
    save_figure(fig, "calibration.png")
    return out


if __name__ == "__main__":
    result = main()
    cols = ["dataset", "model", "metric", "weighting", "reference", "mean", "calibrated", "ci_low", "ci_high", "drf",
            "bds", "flags"]
    with pd.option_context("display.width", 200, "display.max_rows", 400, "display.max_colwidth", 60):
        print(result[cols].round(3).to_string(index=False))
