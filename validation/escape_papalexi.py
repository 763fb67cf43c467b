"""Validation: target-gene knockdown, escaping cells and dose-response on real screens.

1. **Papalexi et al. 2021** (bundled THP-1 ECCITE-seq subset, ``unassigned`` cells dropped):
   knockdown per measured target (9 of the 299 stored genes) and per guide; penetrance per target
   and guide; the bimodal STAT1 case; null checks where control cells are relabelled as a
   perturbation (20 random halves of the non-targeting cells, and each non-targeting guide against
   the other eight) — penetrance must be consistent with 0.
2. **scMAGeCK MCF10A tumour-suppressor screen** (``shared/data/scmageck_mcf10a_tsg``; knockout
   with weak on-target mRNA reduction; whole-transcriptome library size
   ``n_umis_transcriptome``): the escape metrics must not invent knockdown where there is none.
3. **Jost et al. 2020 CRISPRi titration** (guide-level summary: relative activity and Perturb-seq
   mAP per guide): :func:`dose_response` fed with those numbers must order guides as the data do
   (a check of the metric code).

Writes ``validation/output/escape_*.csv`` and ``docs/figures/escape_validation.png``.
Run: ``python validation/escape_papalexi.py`` (about a minute).
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from scipy.stats import spearmanr

import shrinkpert as sp
from shrinkpert.ontarget import classify_escape, dose_response, knockdown
from _output import pyplot, save_figure, write_json, write_table  # validation/_output.py

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CONTROL = "non-targeting"
SEED = 2021


def papalexi() -> dict:
    adata = sp.datasets.papalexi2021()
    adata = adata[adata.obs["perturbation"] != "unassigned"].copy()
    kd = knockdown(adata, guide_key="guide_id")
    esc = classify_escape(adata, guide_key="guide_id", seed=SEED)
    measured = kd.to_frame().query("flag != 'not_measured'")
    kd_table = measured.join(esc.penetrance[["penetrance", "ci_low", "ci_high", "evidence",
                                             "target_ratio_perturbed"]], rsuffix="_escape")
    kd_table = kd_table.rename(columns={"ci_low": "log2fc_ci_low", "ci_high": "log2fc_ci_high",
                                        "ci_low_escape": "penetrance_ci_low", "ci_high_escape": "penetrance_ci_high"})
    guides = kd.to_frame("guide").join(esc.guide_penetrance[["penetrance", "ci_low", "ci_high", "mean_p_perturbed"]],
                                       rsuffix="_escape")
    guides = guides.rename(columns={"ci_low": "log2fc_ci_low", "ci_high": "log2fc_ci_high",
                                    "ci_low_escape": "penetrance_ci_low", "ci_high_escape": "penetrance_ci_high"})

    # STAT1: bimodal knockout vs escape
    stat1 = adata.var_names.get_loc("STAT1")
    X = adata.X.tocsc()[:, stat1].toarray().ravel()
    lib = np.asarray(adata.X.sum(1)).ravel()
    norm = np.log1p(X / np.maximum(lib, 1) * 1e4)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    frame = esc.to_frame()
    stat1_cells = pd.DataFrame({"group": labels, "stat1_log1p": norm, "stat1_count": X,
                                "p_perturbed": frame["p_perturbed"].to_numpy(), "call": frame["call"].to_numpy()},
                               index=adata.obs_names)
    stat1_cells = stat1_cells[np.isin(labels, ["STAT1", CONTROL])]
    stat1_summary = stat1_cells.groupby(["group", "call"]).agg(
        n_cells=("stat1_count", "size"), fraction_zero=("stat1_count", lambda x: float((x == 0).mean())),
        mean_count=("stat1_count", "mean")).reset_index()

    # nulls: control vs control
    rng = np.random.default_rng(SEED)
    controls = np.flatnonzero(labels == CONTROL)
    rows = []
    for k in range(20):
        relabelled = labels.copy()
        relabelled[rng.choice(controls, len(controls) // 2, replace=False)] = "NT_split"
        nulls = adata.copy()
        nulls.obs["perturbation"] = pd.Categorical(relabelled)
        table = classify_escape(nulls, seed=SEED).penetrance.loc["NT_split"]
        rows.append({"null": "random half of NT cells", "replicate": k, **table[["n_cells", "penetrance", "ci_low",
                                                                                  "ci_high", "evidence"]].to_dict()})
    nt_guides = sorted(adata.obs.loc[labels == CONTROL, "guide_id"].astype(str).unique())
    for guide in nt_guides:
        relabelled = labels.copy()
        relabelled[(labels == CONTROL) & (adata.obs["guide_id"].astype(str).to_numpy() == guide)] = "NT_guide"
        nulls = adata.copy()
        nulls.obs["perturbation"] = pd.Categorical(relabelled)
        table = classify_escape(nulls, seed=SEED).penetrance.loc["NT_guide"]
        rows.append({"null": "one NT guide vs the other NT guides", "replicate": guide,
                     **table[["n_cells", "penetrance", "ci_low", "ci_high", "evidence"]].to_dict()})
    nulls = pd.DataFrame(rows)
    return {"knockdown": kd_table, "guides": guides, "penetrance": esc.penetrance, "stat1_cells": stat1_cells,
            "stat1_summary": stat1_summary, "nulls": nulls, "summary": esc.summary()}


def scmageck() -> dict:
    path = SHARED / "scmageck_mcf10a_tsg" / "scmageck_tsg_screen_28genes.h5ad"
    adata = ad.read_h5ad(path)
    adata = adata[~adata.obs["perturbation"].isin(["multiple", "no_guide"])].copy()
    kd = knockdown(adata, library_size="n_umis_transcriptome")
    esc = classify_escape(adata, library_size="n_umis_transcriptome", seed=SEED)
    table = kd.to_frame().join(esc.penetrance[["penetrance", "ci_low", "ci_high", "evidence", "n_signature_genes"]],
                               rsuffix="_escape")
    table = table.rename(columns={"ci_low": "log2fc_ci_low", "ci_high": "log2fc_ci_high",
                                  "ci_low_escape": "penetrance_ci_low", "ci_high_escape": "penetrance_ci_high"})
    return {"table": table, "signature": {p: list(g) for p, g in esc.signature_genes.items() if g}}


def jost() -> dict:
    table = pd.read_csv(SHARED / "jost2020_k562_crispri_titration" / "jost2020_guide_activity.tsv", sep="\t")
    fit = dose_response(table, perturbation_key="target_gene", dose="relative_activity_day10",
                        response="perturbseq_mAP", guide_key="sgrna_id")
    direct = spearmanr(table["relative_activity_day10"], table["perturbseq_mAP"]).statistic
    return {"fit": fit, "direct_spearman": float(direct), "table": table}


def figure(pap: dict, scm: dict, jst: dict) -> None:
    plt = pyplot()
    if plt is None:
        return

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    # (a) knockdown per measured target
    ax = axes[0, 0]
    kd = pap["knockdown"].sort_values("ratio")
    y = np.arange(len(kd))
    lo, hi = np.exp2(kd["log2fc_ci_low"]), np.exp2(kd["log2fc_ci_high"])
    ax.errorbar(kd["ratio"], y, xerr=[kd["ratio"] - lo, hi - kd["ratio"]], fmt="o", color="k", label="ratio, 95% CI")
    ax.plot(kd["shrunk_ratio"], y, "s", mfc="none", color="tab:blue", label="shrunken")
    ax.plot(kd["target_ratio_perturbed"], y, "^", color="tab:red", label="in perturbed cells")
    ax.axvline(1, color="grey", lw=0.8)
    ax.set_yticks(y, kd.index)
    ax.set_xlabel("target expression / control")
    ax.set_title("a  Papalexi: knockdown of measured targets", loc="left")
    ax.legend(fontsize=8, loc="lower right")
    # (b) penetrance per target
    ax = axes[0, 1]
    pen = pap["penetrance"].query("evidence != 'none'").sort_values("penetrance")
    colors = {"target+signature": "tab:purple", "target": "tab:red", "signature": "tab:blue"}
    y = np.arange(len(pen))
    for ev, c in colors.items():
        m = (pen["evidence"] == ev).to_numpy()
        ax.errorbar(pen["penetrance"][m], y[m], xerr=[(pen["penetrance"] - pen["ci_low"])[m],
                                                      (pen["ci_high"] - pen["penetrance"])[m]],
                    fmt="o", color=c, label=ev)
    ax.set_yticks(y, pen.index)
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("penetrance (fraction perturbed), 95% interval")
    n_none = int((pap["penetrance"]["evidence"] == "none").sum())
    ax.set_title(f"b  Papalexi: penetrance ({n_none} targets without evidence not shown)", loc="left", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    # (c) STAT1 bimodality
    ax = axes[0, 2]
    cells = pap["stat1_cells"]
    bins = np.linspace(0, cells["stat1_log1p"].max() + 0.1, 40)
    for (grp, call), c, lab in (((CONTROL, "control"), "grey", "non-targeting"),
                                (("STAT1", "perturbed"), "tab:red", "STAT1 cells called perturbed"),
                                (("STAT1", "escaped"), "tab:blue", "STAT1 cells called escaped")):
        sub = cells[(cells["group"] == grp) & (cells["call"] == call)]
        ax.hist(sub["stat1_log1p"], bins=bins, density=True, histtype="step", lw=1.8, color=c,
                label=f"{lab} (n={len(sub)})")
    ax.set_xlabel("STAT1 log1p(counts per 10k)")
    ax.set_ylabel("density")
    ax.set_title("c  STAT1: knocked-out vs escaping cells", loc="left")
    ax.legend(fontsize=8)
    # (d) nulls
    ax = axes[1, 0]
    nulls = pap["nulls"]
    for j, (name, grp) in enumerate(nulls.groupby("null", sort=False)):
        x = np.arange(len(grp)) + (0 if j == 0 else len(nulls) - len(grp) + 2)
        ax.errorbar(x, grp["penetrance"], yerr=[grp["penetrance"] - grp["ci_low"], grp["ci_high"] - grp["penetrance"]],
                    fmt="o", ms=4, label=name)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("null replicate")
    ax.set_ylabel("penetrance, 95% interval")
    ax.set_title("d  Papalexi nulls: control cells relabelled", loc="left")
    ax.legend(fontsize=8, loc="center right")
    # (e) scMAGeCK
    ax = axes[1, 1]
    tab = scm["table"].query("flag != 'not_measured'").sort_values("ratio")
    y = np.arange(len(tab))
    ok = tab["flag"] == "ok"
    lo, hi = np.exp2(tab["log2fc_ci_low"]), np.exp2(tab["log2fc_ci_high"])
    ax.errorbar(tab["ratio"][ok], y[ok.to_numpy()], xerr=[(tab["ratio"] - lo)[ok], (hi - tab["ratio"])[ok]],
                fmt="o", color="k", label="ratio (flag ok), 95% CI")
    ax.plot(tab["ratio"][~ok], y[~ok.to_numpy()], "x", color="grey", label="low expression")
    ax.plot(tab["penetrance"], y, "D", color="tab:red", ms=4, label="penetrance")
    ax.axvline(1, color="grey", lw=0.8)
    ax.set_yticks(y, tab.index, fontsize=7)
    ax.set_xlim(-0.05, 3)
    ax.set_title("e  scMAGeCK MCF10A: weak knockdown, no invented escape", loc="left", fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    # (f) Jost
    ax = axes[1, 2]
    table = jst["table"]
    for _, grp in table.groupby("target_gene"):
        grp = grp.sort_values("relative_activity_day10")
        ax.plot(grp["relative_activity_day10"], grp["perturbseq_mAP"], "-o", ms=3, lw=0.8, alpha=0.7)
    fit = jst["fit"]
    ax.set_xlabel("relative guide activity (day 10)")
    ax.set_ylabel("Perturb-seq mAP")
    ax.set_title(f"f  Jost 2020 CRISPRi: Spearman {fit.pooled['spearman']:.2f} pooled, "
                 f"{fit.pooled['within_spearman_mean']:.2f} within target", loc="left", fontsize=10)
    fig.tight_layout()
    save_figure(fig, "escape_validation.png")


def main() -> dict:
    pap = papalexi()
    scm = scmageck()
    jst = jost()
    write_table(pap["knockdown"], "escape_papalexi_knockdown.csv", index=True)
    write_table(pap["guides"], "escape_papalexi_guides.csv", index=True)
    write_table(pap["penetrance"], "escape_papalexi_penetrance.csv", index=True)
    write_table(pap["stat1_summary"], "escape_papalexi_stat1.csv")
    write_table(pap["nulls"], "escape_papalexi_nulls.csv")
    write_table(scm["table"], "escape_scmageck.csv", index=True)
    write_table(jst["fit"].to_frame(), "escape_jost_guides.csv", index=True)
    write_table(jst["fit"].by_perturbation, "escape_jost_targets.csv", index=True)
    nulls = pap["nulls"]
    summary = {
        "papalexi": {
            "measured_targets": int(len(pap["knockdown"])),
            "median_ratio_measured": float(pap["knockdown"]["ratio"].median()),
            "targets_with_evidence": int((pap["penetrance"]["evidence"] != "none").sum()),
            "median_penetrance_with_evidence": float(pap["penetrance"].query("evidence != 'none'")["penetrance"].median()),
            "null_max_penetrance": float(nulls["penetrance"].max()),
            "null_fraction_ci_includes_0": float((nulls["ci_low"] == 0).mean()),
            "null_n": int(len(nulls)),
        },
        "scmageck": {
            "targets": int(len(scm["table"])),
            "targets_with_escape_evidence": int((scm["table"]["evidence"] != "none").sum()),
            "signature": scm["signature"],
            "knockdown_lfsr_below_0.05": scm["table"].index[scm["table"]["lfsr"] < 0.05].tolist(),
        },
        "jost": {"pooled_spearman": float(jst["fit"].pooled["spearman"]), "direct_scipy_spearman": jst["direct_spearman"],
                 "within_target_mean_spearman": float(jst["fit"].pooled["within_spearman_mean"]),
                 "pooled_slope": float(jst["fit"].pooled["slope"]), "pooled_slope_se": float(jst["fit"].pooled["slope_se"])},
    }
    write_json(summary, "escape_summary.json")
    figure(pap, scm, jst)
    return summary


if __name__ == "__main__":
    result = main()
    print(json.dumps(result, indent=2))
