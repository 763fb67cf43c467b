"""Validation: a per-guide perturbed state in the escape mixture (``guide_strength``).

With one perturbed state per perturbation, the perturbed cells of a weak guide look escaped, and
the penetrance intervals covered the true penetrance in only 0.69-0.80 of simulated
perturbations. This script compares ``classify_escape(..., guide_strength=False)`` (one perturbed
state per perturbation, ``single_state``) with ``True`` (per-guide strengths shrunk towards the
perturbation's by empirical Bayes; the default since this check, when ``guide_key`` is given) on

1. **simulated screens** (the escape benchmark's data: ``simulate(n_cells=20000, n_genes=2000,
   n_perturbations=50)``, seeds 1 and 2, a third of the controls relabelled ``NT_split``):
   penetrance interval coverage, bias and mean absolute error, per-cell AUROC, the fraction of
   truly perturbed cells called escaped by guide depth (weakest third of guides vs the rest), and
   the ``NT_split`` null penetrance;
2. **Papalexi 2021 nulls**: 20 random halves of the non-targeting cells relabelled as a
   perturbation (they keep their 9 real NT guides), and each NT guide against the other eight:
   penetrance and the fraction of cells called perturbed (should be 0);
3. **Papalexi, guides shuffled within each perturbation** (5 shuffles; both settings on the same
   shuffled labels): exchangeable guides have equal strengths, so the option must leave the
   penetrance where the single state puts it — a check that a guide's strength does not fit its
   own cells;
4. Papalexi with the real guides: penetrance per perturbation and guide, both settings.

Writes ``validation/output/escape_guide_strength*.csv`` and
``docs/figures/escape_guide_strength.png``. Run: ``python validation/escape_guide_strength.py``
(90 s of CPU with warm Numba caches on the shared 2-core machine).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import shrinkpert as sp
from shrinkpert.errors import ShrinkpertWarning
from shrinkpert.ontarget import classify_escape
from _output import pyplot, save_figure, write_table  # validation/_output.py
from escape_papalexi import null_relabellings  # validation/escape_papalexi.py

ROOT = Path(__file__).resolve().parents[1]
CONTROL = "non-targeting"
SEED = 2021
SETTINGS = {"single_state": False, "guide_strength": True}


def _auroc(score, label):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label, score)) if 0 < label.mean() < 1 else float("nan")


def simulated(seed: int) -> list[dict]:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from escape import NULL, _dataset  # the escape benchmark's data (benchmarks/escape.py)

    path = _dataset("small", seed)
    import anndata as ad

    adata = ad.read_h5ad(path)
    sim = adata.uns["simulation"]
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    perts = list(sim["perturbations"])
    truth = ~adata.obs["escaped"].to_numpy()
    guide = adata.obs["guide"].astype(str).to_numpy()
    kd = pd.Series(sim["guide_knockdown"], index=sim["guides"])
    depth = 1 - kd
    weak_cut = depth[[g for g in sim["guides"] if g in set(guide[np.isin(labels, perts)])]].quantile(1 / 3)
    weak_cell = depth.reindex(guide).to_numpy() <= weak_cut
    true_pen = pd.Series({p: truth[labels == p].mean() for p in perts})
    rows = []
    for name, flag in SETTINGS.items():
        res = classify_escape(path, guide_key="guide", guide_strength=flag)
        table = res.penetrance
        est = table["penetrance"].reindex(perts)
        inside = (table["ci_low"].reindex(perts) <= true_pen) & (true_pen <= table["ci_high"].reindex(perts))
        score = res.p_perturbed
        pert = np.isin(labels, perts)
        called_escaped = score < 0.5
        rows.append({
            "dataset": f"simulate seed {seed}", "setting": name,
            "coverage": float(inside.mean()), "penetrance_bias": float((est - true_pen).mean()),
            "penetrance_mae": float((est - true_pen).abs().mean()),
            "auroc_pooled": _auroc(score[pert], truth[pert]),
            "auroc_mean_per_perturbation": float(np.nanmean([_auroc(score[labels == p], truth[labels == p])
                                                              for p in perts])),
            "perturbed_called_escaped_weak_guides": float(called_escaped[pert & truth & weak_cell].mean()),
            "perturbed_called_escaped_other_guides": float(called_escaped[pert & truth & ~weak_cell].mean()),
            "escaped_called_escaped": float(called_escaped[pert & ~truth].mean()),
            "null_penetrance": float(table.loc[NULL, "penetrance"]),
            "null_called_perturbed": float((score[labels == NULL] >= 0.5).mean()),
        })
    return rows


def papalexi_nulls(adata) -> pd.DataFrame:
    """The control-vs-control nulls of validation/escape_papalexi.py, both settings."""
    rows = []
    for kind, rep, label, relabelled in null_relabellings(adata):
        nulls = adata.copy()
        nulls.obs["perturbation"] = pd.Categorical(relabelled)
        for name, flag in SETTINGS.items():
            res = classify_escape(nulls, guide_key="guide_id", guide_strength=flag, seed=SEED)
            t = res.penetrance.loc[label]
            rows.append({"null": kind, "replicate": str(rep), "setting": name, "n_cells": int(t["n_cells"]),
                         "penetrance": t["penetrance"], "ci_low": t["ci_low"], "ci_high": t["ci_high"],
                         "evidence": t["evidence"],
                         "called_perturbed": float((res.p_perturbed[relabelled == label] >= 0.5).mean())})
    return pd.DataFrame(rows)


def papalexi_shuffled(adata) -> pd.DataFrame:
    """Both settings on the same shuffled guides (the target channel is per guide in both)."""
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    guides = adata.obs["guide_id"].astype(str).to_numpy()
    rows = []
    rng = np.random.default_rng(SEED)
    for rep in range(5):
        shuffled = guides.copy()
        for p in sorted(set(labels)):
            cells = np.flatnonzero(labels == p)
            shuffled[cells] = rng.permutation(guides[cells])
        copy = adata.copy()
        copy.obs["guide_id"] = pd.Categorical(shuffled)
        res = {name: classify_escape(copy, guide_key="guide_id", guide_strength=flag, seed=SEED)
               for name, flag in SETTINGS.items()}
        pen = {name: r.penetrance for name, r in res.items()}
        for p in pen["single_state"].index:
            rows.append({"replicate": rep, "perturbation": p, "evidence": pen["single_state"].loc[p, "evidence"],
                         **{f"penetrance_{n}": t.loc[p, "penetrance"] for n, t in pen.items()},
                         **{f"ci_{n}": f"[{t.loc[p, 'ci_low']:.3f}, {t.loc[p, 'ci_high']:.3f}]" for n, t in pen.items()},
                         **{f"called_perturbed_{n}": float((r.p_perturbed[labels == p] >= 0.5).mean())
                            for n, r in res.items()}})
    return pd.DataFrame(rows)


def papalexi_real(adata) -> tuple[pd.DataFrame, pd.DataFrame]:
    out, guides = {}, {}
    for name, flag in SETTINGS.items():
        res = classify_escape(adata, guide_key="guide_id", guide_strength=flag, seed=SEED)
        out[name] = res.penetrance[["penetrance", "ci_low", "ci_high", "evidence"]]
        guides[name] = res.guide_penetrance[["perturbation", "n_cells", "penetrance", "mean_p_perturbed"]]
    pert = out["single_state"].join(out["guide_strength"], lsuffix="_single_state", rsuffix="_guide_strength")
    guide = guides["single_state"].join(guides["guide_strength"][["penetrance", "mean_p_perturbed"]],
                                   lsuffix="_single_state", rsuffix="_guide_strength")
    return pert, guide


def main() -> None:
    warnings.simplefilter("ignore", ShrinkpertWarning)
    sim = pd.DataFrame([row for seed in (1, 2) for row in simulated(seed)])
    print(write_table(sim, "escape_guide_strength_simulated.csv"))
    print(sim.to_string(index=False))
    adata = sp.datasets.papalexi2021()
    adata = adata[adata.obs["perturbation"] != "unassigned"].copy()
    nulls = papalexi_nulls(adata)
    print(write_table(nulls, "escape_guide_strength_nulls.csv"))
    print(nulls.groupby(["null", "setting"])[["penetrance", "called_perturbed"]].agg(["max", "mean"]).to_string())
    shuffled = papalexi_shuffled(adata)
    print(write_table(shuffled, "escape_guide_strength_shuffled.csv"))
    diff = shuffled["penetrance_guide_strength"] - shuffled["penetrance_single_state"]
    print("shuffled guides: penetrance change guide_strength - single_state: mean", round(float(diff.mean()), 4),
          "mean abs", round(float(diff.abs().mean()), 4), "max abs", round(float(diff.abs().max()), 4))
    print(shuffled.assign(diff=diff).groupby("perturbation")["diff"].agg(["mean", "min", "max"]).to_string())
    pert, guide = papalexi_real(adata)
    print(write_table(pert.reset_index(), "escape_guide_strength_papalexi.csv"))
    print(write_table(guide.reset_index(), "escape_guide_strength_papalexi_guides.csv"))
    print(pert.to_string())
    print(guide.to_string())
    plt = pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
        for setting, marker in (("single_state", "o"), ("guide_strength", "s")):
            part = sim[sim["setting"] == setting]
            axes[0].plot(part["dataset"], part["coverage"], marker=marker, label=setting)
            axes[0].plot(part["dataset"], part["perturbed_called_escaped_weak_guides"], marker=marker, ls="--",
                         label=f"{setting}: weak-guide perturbed cells called escaped")
        axes[0].axhline(0.95, color="grey", lw=0.8)
        axes[0].set_ylim(0, 1)
        axes[0].set_title("simulation: interval coverage (solid)")
        axes[0].legend(fontsize=6)
        axes[1].scatter(guide["penetrance_single_state"], guide["penetrance_guide_strength"], s=12)
        axes[1].plot([0, 1], [0, 1], color="grey", lw=0.8)
        axes[1].set_xlabel("guide penetrance, single state")
        axes[1].set_ylabel("guide penetrance, guide_strength")
        axes[1].set_title("Papalexi 2021 guides")
        fig.tight_layout()
        print(save_figure(fig, "escape_guide_strength.png"))


if __name__ == "__main__":
    main()
