"""Validation of shrinkpert.strata: difficulty strata, systematic share, metric recommendation.

1. **Inert perturbations land in "no signal".** ``simulate()`` screens (500 genes, 80
   perturbations, 24,000 or 36,000 cells: about 270 or 400 cells per perturbation; seeds 11, 12,
   13). A perturbation is inert when its true effects (``uns["simulation"]["effects"]``) are 0 on
   every gene but its target. Claim: AUROC of ``difficulty_score`` for inert vs the rest >= 0.9
   (at 400 cells per perturbation), and inert perturbations are "no signal".
2. **Systematic share recovers the simulated shift's share.** Truth per perturbation:
   :math:`\\cos^2(d_p, \\delta)` with :math:`\\delta` the simulated shift and :math:`d_p` the exact
   log ratio of pseudobulk means, :math:`\\delta_g + \\log(e_p + (1-e_p)\\sum_k \\pi_k e^{d_k z_{pg}})`
   (module docstring of ``shrinkpert.data.simulate``; target left out). The estimate is on the
   log1p scale, which matches the log ratio of means only for well-expressed genes, so the
   claim (correlation >= 0.9) is checked on a screen of well-expressed genes
   (``mean_expression=3, expression_sd=0.5``) and reported for the default simulator too.
3. **Papalexi 2021** (real, 25 perturbations): strata per target, stratified scores of the
   baselines, systematic share, harder splits, TRADE vs prior impact.
4. **Recommendation vs docs/calibration.md.** ``recommend_metrics`` of Papalexi's table (uniform,
   ``shrunken`` and ``deg_rest`` weights, as in validation/calibration.py) must recommend none of
   the metric rows flagged there (``positive_not_better``, ``adversarial_*``, split-dependent).

Writes ``validation/output/difficulty_*.csv`` and ``docs/figures/difficulty.png``.
Run: ``python validation/difficulty.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu, pearsonr, spearmanr

import shrinkpert as sp
from shrinkpert._io import atomic_path
from shrinkpert.evaluation import evaluate
from shrinkpert.strata import decision_record, difficulty_split, recommend_metrics, split_similarity, stratify
from shrinkpert.weights import gene_weights
from _output import pyplot, save_figure, write_table  # validation/_output.py

CONTROL = "non-targeting"
HERE = Path(__file__).resolve().parent


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of an inert perturbation > score of an active one), ties 1/2 (Mann-Whitney U / n1 n0)."""
    return float(mannwhitneyu(pos, neg).statistic / (pos.size * neg.size))


def true_deltas(sim) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Exact log ratio of pseudobulk means (perturbed / control) per perturbation, own target set to 0."""
    u = sim.uns["simulation"]
    perts = [str(p) for p in u["perturbations"]]
    index = {p: i for i, p in enumerate(perts)}
    owner = np.array([index.get(str(g), -1) for g in u["guide_perturbation"]])
    r, w = np.asarray(u["guide_knockdown"]), np.asarray(u["guide_weight"])
    beta = np.asarray(u["effects"], dtype=np.float64)
    n_p = len(perts)
    depth = np.bincount(owner[owner >= 0], weights=(w * (1 - r))[owner >= 0], minlength=n_p)
    z = np.divide(beta, depth[:, None], out=np.zeros_like(beta), where=depth[:, None] > 0)
    mix = np.zeros_like(beta)
    for k in np.flatnonzero(owner >= 0):
        mix[owner[k]] += w[k] * np.exp((1 - r[k]) * z[owner[k]])
    esc = np.asarray(u["escape_rate"])[:, None]
    shift = np.asarray(u["systematic_shift"], dtype=np.float64)
    d = shift[None, :] + np.log(esc + (1 - esc) * mix)
    d[np.arange(n_p), np.asarray(u["target_index"])] = 0.0
    return d, shift, perts


def inert_check() -> pd.DataFrame:
    rows, scores = [], []
    for n_cells, seed in [(n, s) for n in (24000, 36000) for s in (11, 12, 13)]:
        sim = sp.datasets.simulate(n_cells=n_cells, n_genes=500, n_perturbations=80, seed=seed)
        d = sp.difficulty(sim, penetrance=False)
        u = sim.uns["simulation"]
        beta = np.array(u["effects"])
        beta[np.arange(beta.shape[0]), u["target_index"]] = 0
        inert = pd.Series((beta != 0).sum(axis=1) == 0, index=[str(p) for p in u["perturbations"]])
        d = d.reindex(inert.index)
        s = d["difficulty_score"].to_numpy()
        rows.append({"n_cells": n_cells, "seed": seed, "n_perturbations": len(d), "n_inert": int(inert.sum()),
                     "auroc_difficulty_score": auroc(s[inert.to_numpy()], s[~inert.to_numpy()]),
                     "inert_in_no_signal": float((d["stratum"][inert] == "no signal").mean()),
                     "active_in_no_signal": float((d["stratum"][~inert] == "no signal").mean()),
                     **{f"n_{k.replace(' ', '_')}": int(v) for k, v in d["stratum"].value_counts().items()}})
        scores.append(pd.DataFrame({"n_cells": n_cells, "seed": seed, "inert": inert.to_numpy(), "difficulty_score": s}))
    return pd.DataFrame(rows), pd.concat(scores, ignore_index=True)


def share_check() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, points = [], []
    for label, extra in (("well-expressed (mean 3, sd 0.5)", dict(mean_expression=3.0, expression_sd=0.5)),
                         ("default simulator (mean 0.15, sd 1.5)", {})):
        for seed in (5, 6):
            sim = sp.datasets.simulate(n_cells=8000, n_genes=500, n_perturbations=40, seed=seed, **extra)
            d, shift, perts = true_deltas(sim)
            truth = (d @ shift) ** 2 / ((d * d).sum(axis=1) * (shift @ shift))
            res = sp.systematic_variation(sim, metrics=None).to_frame().reindex(perts)
            est, raw = res["systematic_share"].to_numpy(), res["systematic_share_raw"].to_numpy()
            ok = np.isfinite(est)
            rows.append({"simulation": label, "seed": seed, "n_perturbations": len(perts), "n_finite": int(ok.sum()),
                         "pearson_corrected": pearsonr(truth[ok], est[ok])[0],
                         "pearson_raw": pearsonr(truth, raw)[0], "mean_true_share": truth.mean(),
                         "mean_corrected": np.nanmean(est), "mean_raw": raw.mean()})
            points.append(pd.DataFrame({"simulation": label, "seed": seed, "true_share": truth, "corrected": est,
                                        "raw": raw}))
    return pd.DataFrame(rows), pd.concat(points, ignore_index=True)


def papalexi() -> dict:
    real = sp.datasets.papalexi2021()
    real = real[real.obs["perturbation"] != "unassigned"].copy()
    perts = sorted(set(real.obs["perturbation"].astype(str)) - {CONTROL})
    t0 = time.perf_counter()
    diff = sp.difficulty(real)
    t_diff = time.perf_counter() - t0
    trade = sp.difficulty(real, impact="trade", replicability=False, penetrance=False)
    weights = {"shrunken": gene_weights(real, method="shrunken"),
               "deg_rest": gene_weights(real, method="deg_rest", reference_perturbations=perts, allow_leakage=True)}
    table = evaluate(real, real, weights=weights, n_boot=1000, seed=2021)
    strat = stratify(table.to_frame(), diff, n_boot=1000, seed=2021)
    sysvar = sp.systematic_variation(real, table=table)
    rec = recommend_metrics(table)
    rec_flag = recommend_metrics(table, adversarial="flag")
    sim = split_similarity(real)
    splits = [{"method": s.method, "split": s.index, "template_similarity": s.template_similarity,
               "test": ",".join(s.test)}
              for method in ("cluster", "random") for s in difficulty_split(sim, method=method, n_splits=10, seed=7)]
    return {"difficulty": diff, "seconds": t_diff, "trade": trade, "table": table, "stratified": strat,
            "systematic": sysvar, "recommendation": rec, "recommendation_flag": rec_flag, "splits": pd.DataFrame(splits)}


def calibration_cross_check(rec: pd.DataFrame, strict: pd.DataFrame) -> pd.DataFrame:
    """Rows flagged in validation/output/calibration_summary.csv (Papalexi, docs/calibration.md) vs recommended."""
    path = HERE / "output" / "calibration_summary.csv"
    cal = pd.read_csv(path, keep_default_na=False)
    cal = cal[(cal["dataset"] == "papalexi2021") & (cal["model"] == "resampled")]
    flagged = cal[cal["flags"].str.contains("positive_not_better|adversarial")
                  | (cal["reference"] == "perturbed_centroid") | (cal["weighting"] == "deg_rest")]
    keys = list(zip(flagged["metric"], flagged["weighting"], flagged["reference"]))
    present = [k for k in keys if k in rec.index]
    out = rec.loc[present, ["recommended", "reason"]].reset_index()
    out.insert(4, "recommended_flag_mode", strict.loc[present, "recommended"].to_numpy())
    out["calibration_md_flags"] = [flagged.set_index(["metric", "weighting", "reference"]).loc[k, "flags"]
                                   for k in present]
    return out


def main() -> None:
    inert, inert_scores = inert_check()
    share, share_points = share_check()
    pap = papalexi()
    cross = calibration_cross_check(pap["recommendation"], pap["recommendation_flag"])

    write_table(inert, "difficulty_inert.csv")
    write_table(share, "difficulty_systematic_share.csv")
    diff = pap["difficulty"].copy()
    diff["impact_trade"] = pap["trade"]["impact"]
    diff["effective_n_genes_trade"] = pap["trade"]["effective_n_genes"]
    diff = diff.join(pap["systematic"].to_frame())
    write_table(diff, "difficulty_papalexi.csv", index=True)
    write_table(pap["stratified"], "difficulty_papalexi_stratified.csv")
    write_table(pap["systematic"].summary(), "difficulty_papalexi_shift_reward.csv", index=True)
    write_table(pap["systematic"].top_genes(15), "difficulty_papalexi_shift_genes.csv", index=True)
    write_table(pap["recommendation"], "difficulty_papalexi_recommendation.csv", index=True)
    write_table(pap["splits"], "difficulty_papalexi_splits.csv")
    write_table(cross, "difficulty_calibration_cross_check.csv")
    with atomic_path(HERE / "output" / "difficulty_decision_record.txt", force=True) as tmp:
        tmp.write_text(decision_record(pap["recommendation"], n=8))
    ok = np.isfinite(diff["impact"]) & np.isfinite(diff["impact_trade"])
    summary = {
        "auroc_min_400_cells": inert.query("n_cells == 36000")["auroc_difficulty_score"].min(),
        "auroc_min_270_cells": inert.query("n_cells == 24000")["auroc_difficulty_score"].min(), "inert_in_no_signal_min": inert["inert_in_no_signal"].min(),
        "share_pearson_well_expressed_min": share[share["simulation"].str.startswith("well")]["pearson_corrected"].min(),
        "share_pearson_default_min": share[share["simulation"].str.startswith("default")]["pearson_corrected"].min(),
        "papalexi_difficulty_seconds": pap["seconds"],
        "impact_prior_vs_trade_spearman": spearmanr(diff["impact"][ok], diff["impact_trade"][ok])[0],
        "recommended_among_calibration_flagged": int(cross["recommended"].sum()),
        "recommended_among_positive_not_better_or_wins": int(
            cross[cross["calibration_md_flags"].str.contains("positive_not_better|adversarial_wins")]["recommended"].sum()),
        "recommended_among_split_dependent": int(
            cross[(cross["reference"] == "perturbed_centroid") | (cross["weighting"] == "deg_rest")]["recommended"].sum()),
        "recommended_among_calibration_flagged_flag_mode": int(cross["recommended_flag_mode"].sum()),
        "n_calibration_flagged": len(cross),
        "template_similarity_cluster": pap["splits"].query("method == 'cluster'")["template_similarity"].mean(),
        "template_similarity_random": pap["splits"].query("method == 'random'")["template_similarity"].mean(),
    }
    write_table(pd.DataFrame([summary]), "difficulty_summary.csv")

    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 3, figsize=(14, 4))
        ax = axes[0]
        for k, (flag, name) in enumerate(((True, "inert"), (False, "active"))):
            v = inert_scores[(inert_scores["inert"] == flag) & (inert_scores["n_cells"] == 36000)]["difficulty_score"]
            ax.scatter(np.full(v.size, k) + np.random.default_rng(0).uniform(-0.2, 0.2, v.size), v, s=8, alpha=0.6)
        ax.set_xticks([0, 1], ["inert", "active"])
        ax.set_ylabel("difficulty_score (Simes p, specific signal)")
        ax.set_title(f"simulate, 400 cells/pert.: AUROC >= {summary['auroc_min_400_cells']:.2f}")
        ax = axes[1]
        for label, sub in share_points.groupby("simulation"):
            ax.scatter(sub["true_share"], sub["corrected"], s=10, label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        ax.set_xlabel("true share of the simulated shift")
        ax.set_ylabel("systematic_share (noise-corrected)")
        ax.legend(fontsize=7)
        ax = axes[2]
        s = pap["stratified"]
        sel = s[(s["metric"] == "pearson_delta") & (s["weighting"] == "uniform") & (s["reference"] == "control")
                & s["column"].isin(["baseline_technical_duplicate", "baseline_mean", "baseline_control"])]
        strata = [x for x in ("easy", "medium", "hard", "no signal") if x in set(sel["stratum"])]
        for j, col in enumerate(["baseline_technical_duplicate", "baseline_mean"]):
            sub = sel[sel["column"] == col].set_index("stratum").reindex(strata)
            x = np.arange(len(strata)) + 0.2 * j
            ax.errorbar(x, sub["mean"], yerr=[sub["mean"] - sub["ci_low"], sub["ci_high"] - sub["mean"]], fmt="o",
                        label=col.replace("baseline_", ""))
        ax.set_xticks(np.arange(len(strata)) + 0.1, strata)
        ax.set_ylabel("pearson_delta vs control (mean, 95% CI)")
        ax.set_title("Papalexi: baselines by stratum")
        ax.legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, "difficulty.png")
    print(pd.Series(summary).to_string())


if __name__ == "__main__":
    main()
