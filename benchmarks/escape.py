"""Benchmark: escape classification, penetrance and dose-response vs pertpy's Mixscape, on
simulated screens with known escaping cells and guide efficiencies.

Data: ``shrinkpert.datasets.simulate()`` (negative-binomial counts, per-perturbation escape rate
``e_p ~ Beta(2, 8)``, guide knockdown, downstream effects, a systematic shift shared by every
perturbed cell), written to ``benchmarks/data/escape_<scale>_s<seed>.h5ad`` with one third of
the control cells relabelled ``NT_split`` (a null pseudo-perturbation: control vs control).

Jobs, each in a fresh process, one after the other (2-core machine, shared):

* ``shrinkpert`` (this venv): ``classify_escape(path, guide_key="guide")`` streamed from the file,
  then ``dose_response(path, guide_key="guide")``;
* ``mixscape`` (``--peers-python``, a separate venv with pertpy 1.0.3): ``read_h5ad``,
  ``normalize_total`` + ``log1p`` + ``pca``, ``Mixscape.perturbation_signature`` (20 nearest
  control cells), ``Mixscape.mixscape(layer="X_pert")`` with its defaults.

Scores (parent process, against the truth stored in the file):

* per-cell AUROC of "perturbed" (not escaped) among perturbed cells: ``p_perturbed`` vs
  Mixscape's ``mixscape_class_p_ko``; pooled over cells and averaged over perturbations;
* penetrance error: mean |estimated − true fraction of non-escaped cells| per perturbation
  (Mixscape: fraction of cells classed KO); the interval coverage for shrinkpert;
* escaper calls at 0.5: fraction of perturbed cells called unperturbed, precision and recall
  of the escaper calls;
* the NT_split null: penetrance (should be 0);
* dose recovery: Spearman of each guide's estimated knockdown depth with the true
  ``1 - r_k`` (Mixscape has no knockdown: its per-guide mean projection score is used) and of the
  estimated downstream response with the true one (``d_k · ||z_p||``);
* an oracle AUROC: the per-cell likelihood ratio under the true simulation parameters;
* wall time of the work (after imports; shrinkpert after a warm-up call on a 400-cell screen that
  loads its compiled kernels) and of the whole process; peak RSS, RSS before the work, and the CSR
  matrix size in memory.

Usage::

    python benchmarks/escape.py --scales small --seeds 1 2 --peers-python /work/venv-peers/bin/python

The peer environment (pertpy 1.0.3 fails with today's newest dependencies)::

    python3.11 -m venv /work/venv-peers
    /work/venv-peers/bin/pip install pertpy==1.0.3 anndata scanpy filelock "statsmodels<0.15" "scikit-learn<1.8"

(statsmodels 0.15 removed ``multipletests``; scikit-learn 1.8+ breaks Mixscape's Gaussian mixture.)

Writes ``benchmarks/results/escape.csv`` and ``benchmarks/results/escape.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCALES = {
    "small": dict(n_cells=20_000, n_genes=2_000, n_perturbations=50),
    "medium": dict(n_cells=100_000, n_genes=5_000, n_perturbations=200),
}
CONTROL = "non-targeting"
NULL = "NT_split"


def _rss_gb() -> float:
    """Peak resident memory of this process (VmHWM). Not ``ru_maxrss``: Linux carries that over
    ``fork``/``exec``, so a child would report its parent's size when the parent was larger."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # pragma: no cover


def _current_rss_gb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


# ----------------------------------------------------------------------------- jobs (child side)
def _job_shrinkpert(path: str, out: str) -> dict:
    import numpy as np
    import pandas as pd

    from shrinkpert.datasets import simulate
    from shrinkpert.ontarget import classify_escape, dose_response

    # load the compiled kernels (Numba cache) and imported modules first, so that the measured
    # increment is the working memory of the analysis itself; process_s still includes all of it
    tiny = simulate(n_cells=400, n_genes=60, n_perturbations=4, seed=0)
    classify_escape(tiny, guide_key="guide")
    dose_response(tiny, guide_key="guide")
    before = _current_rss_gb()
    t0 = time.perf_counter()
    res = classify_escape(path, guide_key="guide")
    t1 = time.perf_counter()
    dose = dose_response(path, guide_key="guide")
    t2 = time.perf_counter()
    pd.DataFrame({"score": res.p_perturbed}, index=res.obs_names).to_csv(Path(out) / "cells.csv")
    res.penetrance.to_csv(Path(out) / "penetrance.csv")
    guides = dose.to_frame().join(res.guide_penetrance[["penetrance"]])
    guides.to_csv(Path(out) / "guides.csv")
    return {"escape_s": t1 - t0, "dose_s": t2 - t1, "work_s": t2 - t0, "rss_before_gb": before,
            "n_classified": int(np.isfinite(res.p_perturbed).sum())}


def _job_mixscape(path: str, out: str) -> dict:
    import numpy as np
    import pandas as pd
    import pertpy as pt
    import scanpy as sc

    before = _current_rss_gb()
    t0 = time.perf_counter()
    adata = sc.read_h5ad(path)
    sc.pp.normalize_total(adata)
    sc.pp.log1p(adata)
    sc.pp.pca(adata)
    t1 = time.perf_counter()
    ms = pt.tl.Mixscape()
    ms.perturbation_signature(adata, "perturbation", CONTROL)
    t2 = time.perf_counter()
    ms.mixscape(adata, "perturbation", CONTROL, layer="X_pert")
    t3 = time.perf_counter()
    obs = adata.obs
    frame = pd.DataFrame({"score": obs["mixscape_class_p_ko"].astype(float),
                          "call": obs["mixscape_class_global"].astype(str)}, index=obs.index)
    frame.to_csv(Path(out) / "cells.csv")
    rows = []
    for gene, parts in adata.uns["mixscape"].items():
        gv = parts["all"]
        own = gv[gv["perturbation"].astype(str) == gene]  # the perturbation's cells, not the controls
        rows.append(pd.DataFrame({"pvec": own["pvec"].astype(float)}, index=own.index))
    pd.concat(rows).to_csv(Path(out) / "pvec.csv")
    return {"pca_s": t1 - t0, "signature_s": t2 - t1, "mixscape_s": t3 - t2, "work_s": t3 - t0,
            "rss_before_gb": before, "n_classified": int(np.isfinite(frame["score"]).sum())}


def _child(job: str, path: str, out: str) -> None:
    os.environ.setdefault("NUMBA_NUM_THREADS", "2")
    result = {"shrinkpert": _job_shrinkpert, "mixscape": _job_mixscape}[job](path, out)
    result["peak_rss_gb"] = _rss_gb()
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------- parent side
def _dataset(scale: str, seed: int) -> Path:
    import numpy as np
    import pandas as pd

    from shrinkpert.datasets import simulate

    path = HERE / "data" / f"escape_{scale}_s{seed}.h5ad"
    if path.exists():
        return path
    adata = simulate(**SCALES[scale], seed=seed)
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    controls = np.flatnonzero(labels == CONTROL)
    rng = np.random.default_rng(seed)
    labels[rng.choice(controls, len(controls) // 3, replace=False)] = NULL
    adata.obs["perturbation"] = pd.Categorical(labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return path


def _run(job: str, python: str, path: Path) -> tuple[dict, Path]:
    out = Path(tempfile.mkdtemp(prefix=f"escape_{job}_"))
    env = dict(os.environ, NUMBA_NUM_THREADS="2", OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2",
               MKL_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run([python, str(Path(__file__).resolve()), "--child", job, str(path), str(out)],
                          capture_output=True, text=True, env=env, cwd=str(HERE.parent))
    wall = time.perf_counter() - t0
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        return {"status": f"failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}", "process_s": wall}, out
    result = json.loads(line[-1][7:])
    result.update(status="ok", process_s=wall)
    return result, out


def _auroc(score, label):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(label, score)) if 0 < label.mean() < 1 else float("nan")


def _oracle(adata) -> tuple[float, float]:
    """Per-cell log likelihood ratio perturbed vs escaped under the true simulation parameters."""
    import numpy as np

    sim = adata.uns["simulation"]
    X = adata.X.tocsr()
    genes_mu, phi, gamma, shift = sim["gene_mean"], sim["gene_dispersion"], sim["batch_effects"], sim["systematic_shift"]
    guides = {g: k for k, g in enumerate(sim["guides"])}
    batches = {b: k for k, b in enumerate(sim["batches"])}
    gp = np.asarray(sim["guide_perturbation"])
    w, kd = sim["guide_weight"], sim["guide_knockdown"]
    totals = np.asarray(X.sum(1)).ravel()
    med = np.median(totals)
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    aucs, scores, truth = [], [], []
    for k, p in enumerate(sim["perturbations"]):
        cells = np.flatnonzero(labels == p)
        mask = gp == p
        mean_depth = float((w[mask] * (1 - kd[mask])).sum())
        z = sim["effects"][k] / mean_depth
        t = int(sim["target_index"][k])
        z[t] = 0.0
        cols = np.concatenate([np.flatnonzero(z != 0), [t]])
        g_idx = np.array([guides[g] for g in adata.obs["guide"].astype(str).to_numpy()[cells]])
        b_idx = np.array([batches[b] for b in adata.obs["batch"].astype(str).to_numpy()[cells]])
        m0 = genes_mu[cols][None, :] * np.exp(gamma[b_idx][:, cols] + shift[cols][None, :]) * (totals[cells] / med)[:, None]
        m1 = m0.copy()
        m1[:, :-1] *= np.exp((1 - kd[g_idx])[:, None] * z[cols[:-1]][None, :])
        m1[:, -1] *= kd[g_idx]
        x = X[cells][:, cols].toarray()
        th = 1 / phi[cols]
        ll = lambda m: (x * np.log(m / (th + m)) + th * np.log(th / (th + m))).sum(1)  # noqa: E731
        lr = ll(m1) - ll(m0)
        esc = adata.obs["escaped"].to_numpy()[cells]
        aucs.append(_auroc(lr, ~esc))
        prior = 1 - sim["escape_rate"][k]
        scores.append(1 / (1 + np.exp(-(lr + np.log(prior / (1 - prior))))))
        truth.append(~esc)
    return float(np.nanmean(aucs)), _auroc(np.concatenate(scores), np.concatenate(truth))


def _score(job: str, out: Path, adata) -> dict:
    import numpy as np
    import pandas as pd
    from scipy.stats import spearmanr

    sim = adata.uns["simulation"]
    obs = adata.obs
    labels = obs["perturbation"].astype(str).to_numpy()
    cells = pd.read_csv(out / "cells.csv", index_col=0).reindex(obs.index)
    score = cells["score"].to_numpy()
    perts = list(sim["perturbations"])
    pert_mask = np.isin(labels, perts)
    truth = ~obs["escaped"].to_numpy()
    res = {"auroc_pooled": _auroc(score[pert_mask], truth[pert_mask])}
    per = [_auroc(score[labels == p], truth[labels == p]) for p in perts]
    res["auroc_mean_per_perturbation"] = float(np.nanmean(per))
    true_pen = pd.Series({p: truth[labels == p].mean() for p in perts})
    if job == "shrinkpert":
        table = pd.read_csv(out / "penetrance.csv", index_col=0)
        est = table["penetrance"].reindex(perts)
        res["penetrance_ci_coverage"] = float(((table["ci_low"].reindex(perts) <= true_pen)
                                               & (true_pen <= table["ci_high"].reindex(perts))).mean())
        res["null_penetrance"] = float(table.loc[NULL, "penetrance"])
        res["null_ci"] = f"[{table.loc[NULL, 'ci_low']:.2f}, {table.loc[NULL, 'ci_high']:.2f}]"
        called_perturbed = score >= 0.5
    else:
        called_perturbed = cells["call"].to_numpy() == "KO"
        est = pd.Series({p: called_perturbed[labels == p].mean() for p in perts})
        res["null_penetrance"] = float(called_perturbed[labels == NULL].mean())
    err = (est - true_pen).abs()
    res["penetrance_mae"] = float(err.mean())
    res["penetrance_bias"] = float((est - true_pen).mean())
    escaped_call = ~called_perturbed[pert_mask]
    true_esc = ~truth[pert_mask]
    res["frac_called_unperturbed"] = float(escaped_call.mean())
    res["true_escape_rate"] = float(true_esc.mean())
    res["escaper_precision"] = float((escaped_call & true_esc).sum() / max(escaped_call.sum(), 1))
    res["escaper_recall"] = float((escaped_call & true_esc).sum() / max(true_esc.sum(), 1))
    # dose recovery
    kd = pd.Series(sim["guide_knockdown"], index=sim["guides"])
    gp = pd.Series(np.asarray(sim["guide_perturbation"]), index=sim["guides"])
    w = pd.Series(sim["guide_weight"], index=sim["guides"])
    znorm = {}
    for k, p in enumerate(perts):
        m = gp == p
        depth = float((w[m] * (1 - kd[m])).sum())
        z = sim["effects"][k] / depth
        z[int(sim["target_index"][k])] = 0
        znorm[p] = float(np.linalg.norm(z))
    targeting = [g for g in sim["guides"] if gp[g] in znorm]
    true_depth = 1 - kd[targeting]
    true_resp = pd.Series([true_depth[g] * znorm[gp[g]] for g in targeting], index=targeting)
    if job == "shrinkpert":
        guides = pd.read_csv(out / "guides.csv", index_col=0).reindex(targeting)
        dose_est, resp_est = guides["dose"], guides["response"]
    else:
        pvec = pd.read_csv(out / "pvec.csv", index_col=0)
        pvec["guide"] = obs["guide"].astype(str).reindex(pvec.index).to_numpy()
        dose_est = pvec.groupby("guide")["pvec"].mean().reindex(targeting)
        resp_est = dose_est
    ok = dose_est.notna()
    res["dose_spearman_pooled"] = float(spearmanr(dose_est[ok], true_depth[ok]).statistic)
    within = []
    for p in perts:
        g = [x for x in targeting if gp[x] == p and ok[x]]
        if len(g) >= 3 and dose_est[g].nunique() > 1:
            within.append(spearmanr(dose_est[g], true_depth[g]).statistic)
    res["dose_spearman_within_mean"] = float(np.nanmean(within)) if within else float("nan")
    ok_r = resp_est.notna()
    res["response_spearman_pooled"] = float(spearmanr(resp_est[ok_r], true_resp[ok_r]).statistic)
    return res


def _markdown(frame) -> str:
    """A GitHub table (no tabulate dependency); floats with 3 decimals."""
    def fmt(v):
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", nargs=3, metavar=("JOB", "PATH", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--scales", nargs="+", default=["small"], choices=list(SCALES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--jobs", nargs="+", default=["shrinkpert", "mixscape"], choices=["shrinkpert", "mixscape"])
    parser.add_argument("--peers-python", default="/work/venv-peers/bin/python")
    parser.add_argument("--mixscape-scales", nargs="+", default=["small"],
                        help="scales on which Mixscape is run (it needs ~4-5 GB at 20k cells and ran out of 23 GB at 100k)")
    parser.add_argument("--warmup", action="store_true", help="run each job once untimed first")
    parser.add_argument("--fresh", action="store_true", help="replace results/escape.csv instead of merging")
    args = parser.parse_args(argv)
    if args.child:
        _child(*args.child)
        return

    import anndata as ad
    import pandas as pd

    rows = []
    for scale in args.scales:
        for seed in args.seeds:
            path = _dataset(scale, seed)
            adata = ad.read_h5ad(path)
            nnz = adata.X.nnz
            csr_gb = (nnz * (adata.X.data.itemsize + adata.X.indices.itemsize) + (adata.n_obs + 1) * 8) / 1e9
            oracle_mean, oracle_pooled = _oracle(adata)
            for job in args.jobs:
                if job == "mixscape" and scale not in args.mixscape_scales:
                    continue
                python = sys.executable if job == "shrinkpert" else args.peers_python
                if args.warmup:
                    _run(job, python, path)
                result, out = _run(job, python, path)
                row = {"scale": scale, "seed": seed, "job": job, "n_cells": adata.n_obs, "n_genes": adata.n_vars,
                       "csr_gb": csr_gb, "oracle_auroc_mean": oracle_mean, "oracle_auroc_pooled": oracle_pooled,
                       **result}
                if result["status"] == "ok":
                    row.update(_score(job, out, adata))
                    row["rss_increment_gb"] = row["peak_rss_gb"] - row["rss_before_gb"]
                    row["increment_over_csr"] = row["rss_increment_gb"] / csr_gb
                rows.append(row)
                print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    table = pd.DataFrame(rows)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    previous = results / "escape.csv"
    if previous.exists() and not args.fresh:
        # keep earlier rows of (scale, seed, job) combinations not re-run now (e.g. the slow Mixscape runs)
        old = pd.read_csv(previous)
        done = set(zip(table["scale"], table["seed"], table["job"]))
        old = old[[(a, b, c) not in done for a, b, c in zip(old["scale"], old["seed"], old["job"])]]
        table = pd.concat([old, table], ignore_index=True).sort_values(["scale", "seed", "job"], kind="stable")
    table.to_csv(previous, index=False)
    cols = ["scale", "seed", "job", "status", "work_s", "process_s", "peak_rss_gb", "rss_increment_gb",
            "increment_over_csr", "auroc_pooled", "auroc_mean_per_perturbation", "oracle_auroc_mean",
            "penetrance_mae", "penetrance_bias", "penetrance_ci_coverage", "frac_called_unperturbed",
            "true_escape_rate", "escaper_precision", "escaper_recall", "null_penetrance",
            "dose_spearman_pooled", "dose_spearman_within_mean", "response_spearman_pooled"]
    shown = table[[c for c in cols if c in table.columns]]
    with open(results / "escape.md", "w") as fh:
        fh.write("Machine: 2 cores (shared); one run per job; times are wall seconds.\n\n")
        fh.write(_markdown(shown))
        fh.write("\n")
    print(shown.to_string())


if __name__ == "__main__":
    main()
