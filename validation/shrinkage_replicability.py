"""Validation: does empirical-Bayes shrinkage make per-perturbation effects more replicable?

On the bundled Papalexi 2021 data (real THP-1 ECCITE-seq), split each perturbation's cells —
and the control cells — into two halves by guide, by biological replicate, and at random;
estimate effects on each half, shrink them (ash, normal mixture, per perturbation), and ask:

* does shrinkage reduce the error of predicting half B's effects from half A?
* does it raise the cross-half correlation?

Writes ``validation/output/shrinkage_replicability.csv`` (per split × perturbation),
``validation/output/shrinkage_replicability_summary.csv`` and the figure
``docs/figures/shrinkage_replicability.png``. Run: ``python validation/shrinkage_replicability.py``.
"""

from __future__ import annotations

import pandas as pd

import shrinkpert as sp
from shrinkpert.effects.replicability import replicability
from _output import pyplot, save_figure, write_table  # validation/_output.py


def main() -> pd.DataFrame:
    adata = sp.datasets.papalexi2021()
    adata = adata[adata.obs["perturbation"] != "unassigned"].copy()
    frames = []
    for split, n_splits in (("guide_id", 5), ("bio_rep", 5), ("random", 5)):
        table = replicability(adata, split=split, n_splits=n_splits, seed=2021, min_cells=10)
        table.insert(0, "split_by", split)
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    write_table(table, "shrinkage_replicability.csv")

    table["error_reduction"] = 1 - table["shrunk_error"] / table["raw_error"]
    table["correlation_gain"] = table["shrunk_correlation"] - table["raw_correlation"]
    summary = table.groupby("split_by").agg(
        n_pairs=("perturbation", "size"),
        median_raw_correlation=("raw_correlation", "median"),
        median_shrunk_correlation=("shrunk_correlation", "median"),
        median_noise_corrected=("noise_corrected_correlation", "median"),
        median_error_reduction=("error_reduction", "median"),
        frac_error_reduced=("error_reduction", lambda x: float((x > 0).mean())),
        frac_correlation_raised=("correlation_gain", lambda x: float((x > 0).mean())),
        frac_correlation_lowered=("correlation_gain", lambda x: float((x < 0).mean())),
        frac_shrunk_to_zero=("shrunk_correlation", lambda x: float(x.isna().mean())),
    )
    write_table(summary, "shrinkage_replicability_summary.csv", index=True)
    print(summary.round(3).to_string())
    plt = pyplot()
    if plt is None:
        return summary

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    colors = {"guide_id": "tab:blue", "bio_rep": "tab:orange", "random": "tab:green"}
    for split, sub in table.groupby("split_by"):
        axes[0].scatter(sub["raw_error"], sub["shrunk_error"], s=10, alpha=0.6, color=colors[split], label=split)
        axes[1].scatter(sub["raw_correlation"], sub["shrunk_correlation"], s=10, alpha=0.6, color=colors[split], label=split)
    for ax, name in zip(axes, ("error predicting half B from half A", "cross-half correlation")):
        lo = min(ax.get_xlim()[0], ax.get_ylim()[0])
        hi = max(ax.get_xlim()[1], ax.get_ylim()[1])
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
        ax.set_xlabel(f"raw {name}")
        ax.set_ylabel(f"shrunk {name}")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[1].legend(title="split by", fontsize=8)
    fig.suptitle("Papalexi 2021 THP-1: shrinkage vs raw effects, split-half (target gene excluded)")
    fig.tight_layout()
    save_figure(fig, "shrinkage_replicability.png")
    return summary


if __name__ == "__main__":
    main()
