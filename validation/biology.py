"""Validation: do measured and predicted perturbation maps recover known biology?

1. **Papalexi et al. 2021** (bundled THP-1 ECCITE-seq subset, ``unassigned`` cells dropped; 25
   targets in the IFN-γ → JAK/STAT → IRF1 → PD-L1 axis). Cells of every perturbation and of the
   controls are split at random into halves A and B. Maps (cosine of effects vs control,
   :func:`shrinkpert.estimate_effects`, log1p scale):

   * ``real (all cells)``, and the same PCA-whitened on control cells (EFAAR's align step);
   * ``truth (half A)``: the reference for every prediction below;
   * ``technical duplicate (half B)``: should recall like the truth;
   * ``mean-response baseline``: every perturbation predicted as the mean truth effect; all
     similarities tie, so recall is exactly 2 × 5% by construction;
   * ``shuffled labels``: half-A rows given to random other perturbations (one draw of the null);
   * ``noisy``: half A plus Gaussian noise with 1 and 4 × the RMS of the true effects.

   Relationship sets: bundled Reactome, hu.MAP, STRING; CORUM and SIGNOR read by path from the
   project's shared data (CC BY-NC, never bundled; skipped when absent); and the five-gene
   IFN-γ receptor → IRF1 axis (IFNGR1, IFNGR2, JAK2, STAT1, IRF1) as one set. Every recall has a
   2,000-permutation null. ``recall_efaar_rule`` applies EFAAR's ``compute_recall`` rule (tail
   sizes floored, tied pairs straddling a tail edge count 0) to the same similarities.
   For each prediction also map agreement with half A (mAP of 3 nearest neighbours, Spearman).
2. **simulate() screen with modules**: 60 perturbations in 6 modules of 10 sharing a programme
   (``simulate(modules=6)``); the known groups become pairs. Truth = effects estimated from the
   cells; predictions = truth + Gaussian noise of increasing size (× RMS of the true effects,
   averaged over 5 noise draws) and the mean-response baseline. Recall and map agreement must
   fall monotonically with the noise.

Writes ``validation/output/biology_*.csv`` and ``docs/figures/biology_validation.png``.
Run: ``python validation/biology.py`` (about a minute).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import shrinkpert as sp
from shrinkpert.biology import (load_relationships, map_agreement, pairs_from_sets, read_relationships,
                                relationship_recall)
from _output import pyplot, save_figure, write_json, write_table  # validation/_output.py

# the project's shared data folder sits beside the repository (or beside the folder of worktrees)
SHARED = next((p / "shared" / "data" / "gene_relationships_efaar" for p in Path(__file__).resolve().parents[2:4]
               if (p / "shared" / "data").is_dir()), Path("shared/data/gene_relationships_efaar"))
SEED = 15
N_PERM = 2000
IFN_AXIS = ["IFNGR1", "IFNGR2", "JAK2", "STAT1", "IRF1"]


def relationship_sets() -> dict[str, pd.DataFrame]:
    sets = {name: load_relationships(name) for name in ("reactome", "humap", "stringdb")}
    for name, file in (("corum", "CORUM.txt.gz"), ("signor", "SIGNOR.txt.gz")):
        if (SHARED / file).exists():
            sets[name] = read_relationships(SHARED / file, source=name)
    sets["ifn_axis"] = pairs_from_sets({"IFNG-JAK-STAT-IRF1": IFN_AXIS}, source="ifn_axis")
    return sets


def efaar_rule(sims: np.ndarray, known: np.ndarray, alpha: float = 0.05) -> float:
    """EFAAR ``compute_recall``: rank_right/N <= alpha or rank_left/N >= 1 - alpha (re-implemented)."""
    null = np.sort(sims)
    left = np.searchsorted(null, known, side="left") / null.size
    right = np.searchsorted(null, known, side="right") / null.size
    return float(np.mean((right <= alpha) | (left >= 1 - alpha)))


def _efaar_on(frame: pd.DataFrame, rel: pd.DataFrame) -> float:
    s = sp.biology.cosine_similarity(frame.to_numpy())
    idx = pd.Index(frame.index)
    a, b = idx.get_indexer(rel["gene_a"]), idx.get_indexer(rel["gene_b"])
    keep = (a >= 0) & (b >= 0)
    iu = np.triu_indices(len(idx), k=1)
    return efaar_rule(s[iu], s[a[keep], b[keep]]) if keep.any() else float("nan")


def _halves(adata, rng):
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    in_a = np.zeros(len(labels), dtype=bool)
    for group in np.unique(labels):
        cells = rng.permutation(np.flatnonzero(labels == group))
        in_a[cells[: cells.size // 2]] = True
    return adata[in_a].copy(), adata[~in_a].copy()


def _frame(effects) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(effects.effect), index=effects.perturbations.astype(str),
                        columns=effects.genes.astype(str))


def _control_cells(adata) -> np.ndarray:
    x = adata[adata.obs["perturbation"] == "non-targeting"].X
    x = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float64)
    return np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1) * 1e4)


def papalexi() -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    rng = np.random.default_rng(SEED)
    adata = sp.datasets.papalexi2021()
    adata = adata[adata.obs["perturbation"] != "unassigned"].copy()
    full = _frame(sp.estimate_effects(adata))
    half_a, half_b = _halves(adata, rng)
    truth, duplicate = _frame(sp.estimate_effects(half_a)), _frame(sp.estimate_effects(half_b))
    duplicate = duplicate.loc[truth.index]
    mean = pd.DataFrame(np.tile(truth.mean(axis=0).to_numpy(), (len(truth), 1)), index=truth.index,
                        columns=truth.columns)
    shuffled = pd.DataFrame(truth.to_numpy()[rng.permutation(len(truth))], index=truth.index, columns=truth.columns)
    rms = float(np.sqrt(np.mean(truth.to_numpy() ** 2)))
    noisy = truth + rng.normal(scale=rms, size=truth.shape)
    noisier = truth + rng.normal(scale=4 * rms, size=truth.shape)
    controls = _control_cells(adata)
    maps = {"real (all cells)": (full, {}),
            "real, whitened on controls (50 PCs)": (full, {"controls": controls - controls.mean(axis=0),
                                                          "align": "whiten", "n_components": 50}),
            "truth (half A)": (truth, {}), "technical duplicate (half B)": (duplicate, {}),
            "mean-response baseline": (mean, {}), "shuffled labels": (shuffled, {}), "noisy (sd = RMS)": (noisy, {}),
            "noisy (sd = 4 × RMS)": (noisier, {})}
    rows = []
    for set_name, rel in relationship_sets().items():
        for map_name, (frame, kw) in maps.items():
            try:
                res = relationship_recall(frame, rel, n_permutations=N_PERM, seed=SEED, **kw)
            except sp.ShrinkpertError:  # no known pair among the 25 targets
                rows.append({"set": set_name, "map": map_name, "n_pairs": 0})
                continue
            row = {"set": set_name, "map": map_name, **res.to_frame().iloc[0].drop(["source"]).to_dict()}
            row["recall_efaar_rule"] = _efaar_on(frame, rel) if not kw else float("nan")
            rows.append(row)
    recall = pd.DataFrame(rows)
    agree = []
    for map_name in ("technical duplicate (half B)", "mean-response baseline", "shuffled labels", "noisy (sd = RMS)",
                     "noisy (sd = 4 × RMS)"):
        res = map_agreement(maps[map_name][0], truth, n_neighbors=3)
        agree.append({"map": map_name, **res.summary().iloc[0].to_dict()})
    s = sp.biology.perturbation_map(full).similarity()
    within = s.loc[IFN_AXIS, IFN_AXIS].to_numpy()[np.triu_indices(5, k=1)]
    others = s.loc[IFN_AXIS, s.index.difference(IFN_AXIS)].to_numpy().ravel()
    cluster = {"ifn_axis_mean_cosine_within": float(within.mean()), "ifn_axis_min_cosine_within": float(within.min()),
               "ifn_axis_mean_cosine_to_others": float(others.mean()), "n_perturbations": int(len(full))}
    return recall, pd.DataFrame(agree), cluster


def simulated() -> pd.DataFrame:
    adata = sp.datasets.simulate(n_cells=12_000, n_genes=400, n_perturbations=60, modules=6, seed=SEED)
    truth = _frame(sp.estimate_effects(adata))
    module = adata.uns["simulation"]["module"]
    perts = adata.uns["simulation"]["perturbations"]
    rel = pairs_from_sets({f"module{m}": perts[module == m] for m in range(6)}, source="modules")
    rms = float(np.sqrt(np.mean(truth.to_numpy() ** 2)))
    rows = []
    for level in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
        for draw in range(5 if level > 0 else 1):
            rng = np.random.default_rng([SEED, draw])
            pred = truth + rng.normal(scale=level * rms, size=truth.shape)
            rec = relationship_recall(pred, rel, n_permutations=500, seed=SEED)
            agr = map_agreement(pred, truth, n_neighbors=5)
            rows.append({"prediction": f"noise {level:g} × RMS", "noise": level, "draw": draw, "recall": rec.recall,
                         "null_mean": rec.null_mean, "null_high": rec.null_high, "p_value": rec.p_value,
                         "map_mAP": agr.mean_average_precision, "map_spearman": agr.spearman, "chance_mAP": agr.chance})
    mean = pd.DataFrame(np.tile(truth.mean(axis=0).to_numpy(), (len(truth), 1)), index=truth.index,
                        columns=truth.columns)
    rec = relationship_recall(mean, rel, n_permutations=500, seed=SEED)
    agr = map_agreement(mean, truth, n_neighbors=5)
    rows.append({"prediction": "mean-response baseline", "noise": np.inf, "draw": 0, "recall": rec.recall,
                 "null_mean": rec.null_mean, "null_high": rec.null_high, "p_value": rec.p_value,
                 "map_mAP": agr.mean_average_precision, "map_spearman": agr.spearman, "chance_mAP": agr.chance})
    frame = pd.DataFrame(rows)
    summary = frame.groupby(["noise", "prediction"], sort=True).mean(numeric_only=True).reset_index()
    return summary.drop(columns="draw")


def figure(recall: pd.DataFrame, sim: pd.DataFrame) -> None:
    plt = pyplot()
    if plt is None:
        return
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    shown = recall.dropna(subset=["recall"])
    shown = shown[shown["map"] != "real, whitened on controls (50 PCs)"]
    sets = list(dict.fromkeys(shown["set"]))
    maps = list(dict.fromkeys(shown["map"]))
    width = 0.8 / len(maps)
    for j, m in enumerate(maps):
        part = shown[shown["map"] == m].set_index("set").reindex(sets)
        x = np.arange(len(sets)) + j * width
        ax1.bar(x, part["recall"], width, label=m)
        ax1.vlines(x, part["null_low"], part["null_high"], color="k", lw=0.8)
        ax1.plot(x, part["null_mean"], "k_", ms=6)
    ax1.axhline(0.1, color="grey", ls=":", lw=1)
    ax1.set_xticks(np.arange(len(sets)) + 0.4 - width / 2, sets)
    ax1.set_ylabel("recall (top + bottom 5%)")
    ax1.set_title("Papalexi 2021: recall per relationship set\n(black: permutation null mean and 95% interval)")
    ax1.legend(fontsize=7)
    noisy = sim[np.isfinite(sim["noise"])]
    pos = np.arange(len(noisy))
    ax2.plot(pos, noisy["recall"], "o-", label="relationship recall (modules)")
    ax2.plot(pos, noisy["map_mAP"], "s-", label="map agreement mAP (5 NN)")
    ax2.plot(pos, noisy["map_spearman"], "^-", label="map Spearman")
    ax2.set_xticks(pos, [f"{v:g}" for v in noisy["noise"]])
    base = sim[~np.isfinite(sim["noise"])].iloc[0]
    ax2.axhline(base["recall"], color="C0", ls=":", lw=1, label="mean baseline recall")
    ax2.axhline(base["chance_mAP"], color="C1", ls=":", lw=1, label="chance mAP")
    ax2.set_xlabel("prediction noise (× RMS of true effects)")
    ax2.set_title("simulate(modules=6): 60 perturbations, 6 known groups")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, "biology_validation.png")


def main() -> None:
    recall, agree, cluster = papalexi()
    sim = simulated()
    write_table(recall, "biology_papalexi_recall.csv")
    write_table(agree, "biology_papalexi_agreement.csv")
    write_table(sim, "biology_simulated.csv")
    noisy = sim[np.isfinite(sim["noise"])].sort_values("noise")
    checks = {
        **cluster,
        "mean_baseline_recall_is_chance": bool(np.allclose(
            recall.loc[recall["map"] == "mean-response baseline", "recall"].dropna(), 0.1, atol=1e-12)),
        "simulated_recall_monotone": bool((np.diff(noisy["recall"]) <= 0).all()),
        "simulated_map_mAP_monotone": bool((np.diff(noisy["map_mAP"]) <= 0).all()),
        "simulated_map_spearman_monotone": bool((np.diff(noisy["map_spearman"]) <= 0).all()),
    }
    write_json(checks, "biology_checks.json")
    figure(recall, sim)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    cols = ["set", "map", "n_pairs", "recall", "recall_efaar_rule", "null_mean", "null_low", "null_high", "p_value"]
    print(recall[cols].round(3).to_string(index=False))
    print(agree.round(3).to_string(index=False))
    print(sim.round(3).to_string(index=False))
    print(checks)


if __name__ == "__main__":
    main()
