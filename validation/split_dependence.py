"""Validation: how much do weights and delta references depend on the train/test split?

Mejia et al.'s DEG weights (``deg_rest``: each perturbation against all other perturbed cells)
and Systema's perturbed-centroid reference are learned from *other* perturbations, so a
perturbation's score changes with which perturbations happen to be in the training set. This
script measures that on real data (the bundled Papalexi 2021 THP-1 screen, ``unassigned`` cells
dropped) and on ``shrinkpert.datasets.simulate()`` data:

1. Each perturbation's cells, and the control cells, are split 50/50 once (seeded): half A is
   the truth, half B gives a fixed prediction (its pseudobulk log1p mean: the "technical
   duplicate"). Nothing about the prediction depends on the split.
2. 20 random splits put half of the perturbations in the training set (the reference set of the
   split-dependent methods) and the other half in the test set.
3. For every test perturbation: the weighted MSE :math:`\\sum_g w_{pg} (\\hat x_{pg} - x_{pg})^2`
   under each weight method (``shrunken``, ``population``, ``limma_t``, ``uniform``,
   ``deg_rest``), and Pearson(:math:`\\hat x_p - r`, :math:`x_p - r`) for each delta reference
   :math:`r` (``control``, ``population``, ``perturbed_centroid``).
4. Per perturbation, over the splits that held it out: the relative range
   :math:`(\\max - \\min)/\\mathrm{mean}` of the weighted MSE (absolute range for Pearson Δ).

Writes ``validation/output/split_dependence.csv`` (one row per dataset × quantity ×
perturbation), ``validation/output/split_dependence_summary.csv`` and the figure
``docs/figures/split_dependence.png``, and ``docs/split_dependence.md`` (table + figure). Run:
``python validation/split_dependence.py``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import shrinkpert as sp
from shrinkpert._io import atomic_path
from shrinkpert.errors import ShrinkpertWarning
from shrinkpert.reference.population import build_population_reference
from shrinkpert.weights import compute_deltas, gene_weights
from _output import FIGURES, pyplot, save_figure, write_table  # validation/_output.py

N_SPLITS = 20
SEED = 2025
WEIGHTS = ("shrunken", "population", "limma_t", "uniform", "deg_rest")
REFERENCES = ("control", "population", "perturbed_centroid")


def shrink(effects):
    """Shrunken effects, fitted per perturbation (ash, normal mixture with a point mass at 0)."""
    try:
        from shrinkpert.effects.shrink import shrink_effects

        return shrink_effects(effects), "shrink_effects"
    except ImportError:
        from types import SimpleNamespace

        from shrinkpert.effects.ash import ash

        fits = [ash(effects.effect[i], effects.std_error[i]) for i in range(len(effects.perturbations))]
        stand_in = SimpleNamespace(
            perturbations=effects.perturbations, genes=effects.genes, effect=effects.effect,
            std_error=effects.std_error, posterior_mean=np.vstack([f.posterior_mean for f in fits]),
            lfsr=np.vstack([f.lfsr for f in fits]), target_index=effects.target_index, scale=effects.scale,
            params={"prior": "per perturbation (ash)"},
        )
        return stand_in, "ash per perturbation"


def halves(adata, seed: int):
    """Truth (half A) and prediction (half B) cells: each perturbation and the control split 50/50."""
    rng = np.random.default_rng(seed)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    in_a = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        in_a[rng.permutation(idx)[: len(idx) // 2]] = True
    return adata[in_a].copy(), adata[~in_a].copy()


def evaluate_dataset(name: str, adata) -> pd.DataFrame:
    truth_cells, pred_cells = halves(adata, SEED)
    stats = sp.group_statistics(truth_cells, "perturbation", normalize="log1p")
    pred_stats = sp.group_statistics(pred_cells, "perturbation", normalize="log1p")
    perts = sorted(set(stats.groups.astype(str)) - {"non-targeting"})
    truth = pd.DataFrame(stats.mean, index=stats.groups.astype(str), columns=stats.genes).loc[perts]
    pred = pd.DataFrame(pred_stats.mean, index=pred_stats.groups.astype(str), columns=pred_stats.genes).loc[perts]
    effects = sp.estimate_effects(stats)
    shrunk, how = shrink(effects)
    population = build_population_reference(truth_cells, cells={"perturbation": "non-targeting"},
                                            name=f"{name} controls (half A)")
    rng = np.random.default_rng(SEED)
    rows = []
    for split in range(N_SPLITS):
        order = rng.permutation(perts)
        train, test = sorted(order[: len(perts) // 2]), sorted(order[len(perts) // 2:])
        err2 = (pred.loc[test] - truth.loc[test]).to_numpy() ** 2
        with warnings.catch_warnings():  # null perturbations get uniform weights; counted below
            warnings.filterwarnings("ignore", message=".*all-zero", category=ShrinkpertWarning)
            weights = {
                "shrunken": gene_weights(shrunk, method="shrunken", perturbations=test),
                "population": gene_weights(effects, method="population", reference=population, perturbations=test),
                "limma_t": gene_weights(stats, method="limma_t", perturbations=test),
                "uniform": gene_weights(stats, method="uniform", perturbations=test),
                "deg_rest": gene_weights(stats, method="deg_rest", perturbations=test, reference_perturbations=train),
            }
        for method, w in weights.items():
            wmse = (w.values * err2).sum(axis=1)
            for p, value, fallback in zip(test, wmse, np.isin(test, w.params["uniform_fallback"])):
                rows.append((name, "weighted MSE", method, split, p, value, bool(fallback)))
        references = {"control": "control", "population": population, "perturbed_centroid": "perturbed_centroid"}
        for label, ref in references.items():
            extra = {"reference_perturbations": train} if label == "perturbed_centroid" else {}
            d_true = compute_deltas(stats, reference=ref, perturbations=test, **extra)
            d_pred = d_true.reference.subtract(pred.loc[test])
            for k, p in enumerate(test):
                r = np.corrcoef(d_pred.values[k], d_true.values[k])[0, 1]
                rows.append((name, "Pearson delta", label, split, p, r, False))
    frame = pd.DataFrame(rows, columns=["dataset", "metric", "method", "split", "perturbation", "value",
                                        "uniform_fallback"])
    frame.attrs["shrinkage"] = how
    return frame


def spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per dataset × metric × method × perturbation: spread of the value over the splits that held it out."""
    grouped = frame.groupby(["dataset", "metric", "method", "perturbation"], sort=False)["value"]
    table = grouped.agg(n_splits="size", mean="mean", sd="std", min="min", max="max").reset_index()
    table["range"] = table["max"] - table["min"]
    table["relative_range"] = table["range"] / table["mean"].abs()
    table["split_dependent"] = table["method"].isin(["deg_rest", "perturbed_centroid"])
    return table


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    key = np.where(table["metric"] == "weighted MSE", table["relative_range"], table["range"])
    table = table.assign(spread=key)
    summary = table.groupby(["dataset", "metric", "method"], sort=False).agg(
        n_perturbations=("perturbation", "size"),
        median_splits=("n_splits", "median"),
        median_spread=("spread", "median"),
        max_spread=("spread", "max"),
        fraction_changed=("range", lambda x: float((x > 0).mean())),
    ).reset_index()
    summary.insert(3, "spread_measure", np.where(summary["metric"] == "weighted MSE", "(max-min)/mean", "max-min"))
    return summary


def plot(table: pd.DataFrame, name: str) -> None:
    plt = pyplot()
    if plt is None:
        return

    datasets = list(dict.fromkeys(table["dataset"]))
    fig, axes = plt.subplots(len(datasets), 2, figsize=(11, 3.8 * len(datasets)), squeeze=False)
    rng = np.random.default_rng(0)
    for i, dataset in enumerate(datasets):
        for j, (metric, methods, column, label) in enumerate((
            ("weighted MSE", WEIGHTS, "relative_range", "relative range of weighted MSE\n(max − min)/mean over splits"),
            ("Pearson delta", REFERENCES, "range", "range of Pearson Δ over splits\n(max − min)"),
        )):
            ax = axes[i, j]
            sub = table[(table["dataset"] == dataset) & (table["metric"] == metric)]
            for k, method in enumerate(methods):
                values = sub.loc[sub["method"] == method, column].to_numpy()
                color = "tab:red" if method in ("deg_rest", "perturbed_centroid") else "tab:blue"
                ax.scatter(k + rng.uniform(-0.18, 0.18, len(values)), values, s=14, alpha=0.7, color=color)
                ax.hlines(np.median(values), k - 0.3, k + 0.3, color="black", lw=1.5)
            ax.set_xticks(range(len(methods)), methods)
            ax.set_ylabel(label)
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_title(f"{dataset}: {metric} (one dot per perturbation)", fontsize=10)
    fig.suptitle(f"Split dependence over {N_SPLITS} random train/test splits "
                 "(blue: split-independent, red: learned from other perturbations)", fontsize=11)
    fig.tight_layout()
    save_figure(fig, name)


def markdown_table(frame: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def write_doc(summary: pd.DataFrame, table: pd.DataFrame, shrinkage: str, path: Path) -> None:
    """docs/split_dependence.md: what was done, the summary table and the figure."""
    shown = summary.drop(columns=["median_splits"]).rename(columns={"n_perturbations": "perturbations"})
    dependent = table[table["split_dependent"]]
    dependent = dependent.assign(spread=np.where(dependent["metric"] == "weighted MSE", dependent["relative_range"],
                                                 dependent["range"]))
    worst = (dependent.sort_values("spread").groupby(["dataset", "method"]).tail(1)
             [["dataset", "metric", "method", "perturbation", "n_splits", "min", "max", "spread"]])
    text = f"""# Split dependence of gene weights and delta references

*Generated by `validation/split_dependence.py` (seed {SEED}); do not edit by hand.*

A perturbation's score should not depend on which *other* perturbations happen to be in the
training set. Weights and references learned from other perturbations break this: Mejia et
al.'s DEG weights (`deg_rest`, each perturbation against all other perturbed cells) and Systema's
perturbed-centroid reference. shrinkpert's `shrunken`, `population`, `limma_t` and `uniform`
weights and the `control` and `population` delta references use only the perturbation itself, the
control cells and (for `population`) a fixed external reference.

**Setup.** Papalexi 2021 THP-1 (bundled, `unassigned` cells dropped; 25 perturbations, 299 genes)
and `simulate(n_cells=6000, n_genes=400, n_perturbations=24, seed=11)`. Each perturbation's
cells and the control cells are split 50/50 once: half A is the truth, half B's pseudobulk log1p
mean is a fixed prediction (technical duplicate). {N_SPLITS} random splits put half of the
perturbations in the training set (`reference_perturbations` of the split-dependent methods) and
score the other half. For each held-out perturbation: weighted MSE
$\\sum_g w_{{pg}}(\\hat x_{{pg}} - x_{{pg}})^2$ under each weight method, and Pearson
correlation of $\\hat x_p - r$ with $x_p - r$ for each delta reference $r$. Spread = the
relative range (max − min)/mean of the weighted MSE, or the range (max − min) of Pearson Δ,
over the splits that held the perturbation out (median {int(table["n_splits"].median())} splits).
Shrinkage: {shrinkage}; population reference: the control cells of half A
(`build_population_reference(..., cells={{"perturbation": "non-targeting"}})`).

**Result.** The split-independent methods give exactly the same number in every split (spread
0, bit for bit, as `tests/weights/test_split_independence.py` asserts). `deg_rest` and the
perturbed centroid change a held-out perturbation's score from split to split:

{markdown_table(shown)}

`fraction_changed`: share of perturbations whose value was not identical in all splits.
Largest swings (per dataset and method, the perturbation with the largest spread):

{markdown_table(worst)}

![split dependence](figures/split_dependence.png)

Per-perturbation values: `validation/output/split_dependence.csv`; summary:
`validation/output/split_dependence_summary.csv`. A few null perturbations (no non-zero shrunken
effect) get uniform `shrunken` weights (column `uniform_fallback`); this is also split-independent.
"""
    with atomic_path(path, force=True) as tmp:
        tmp.write_text(text)


def main() -> pd.DataFrame:
    papalexi = sp.datasets.papalexi2021()
    papalexi = papalexi[papalexi.obs["perturbation"] != "unassigned"].copy()
    simulated = sp.datasets.simulate(n_cells=6000, n_genes=400, n_perturbations=24, seed=11)
    frames = [evaluate_dataset("Papalexi 2021 THP-1", papalexi), evaluate_dataset("simulate(seed=11)", simulated)]
    values = pd.concat(frames, ignore_index=True)
    table = spread(values)
    fallback = values.groupby(["dataset", "method", "perturbation"])["uniform_fallback"].any().rename("uniform_fallback")
    table = table.merge(fallback.reset_index(), on=["dataset", "method", "perturbation"], how="left")
    write_table(table, "split_dependence.csv")
    summary = summarise(table)
    write_table(summary, "split_dependence_summary.csv")
    plot(table, "split_dependence.png")
    write_doc(summary, table, frames[0].attrs["shrinkage"], FIGURES.parent / "split_dependence.md")
    print(f"shrinkage: {frames[0].attrs['shrinkage']}")
    print(summary.to_string(index=False))
    return summary


if __name__ == "__main__":
    main()
