"""Benchmark: how ``evaluate()`` grows with the number of perturbations P, up to 10,000.

A genome-wide screen has 5–19k perturbations. This script writes one counts file per P with a
fixed number of cells per perturbation (so the cells grow with P, as in a real screen) and a
fixed gene panel, then times, each in a fresh process:

* ``floor``: the one-pass floor of ``group_statistics.py`` (h5py bulk read of the CSR and one bare
  Numba sum/sum² pass by group) on the file;
* ``evaluate``: ``evaluate(pred, truth)`` with pred = truth (the same file twice) and every
  default — both streaming passes, every default metric on both references, the baselines, DE
  calls and calibration;
* ``evaluate_vcc``: the same with only the three metrics of cell-eval's vcc profile (``mae``,
  ``discrimination_score_l1``, ``overlap_at_N``), still with every baseline and calibration.

It reports wall time, peak RSS (process and children), the ratio to the floor in the same run
and the P-scaling exponent of each job: the least-squares slope of log(wall) on log(P).

Counts (fast generator, not ``simulate()``, which would take longer than the jobs at 1 M cells):
each cell draws Poisson(``nnz_per_cell``) detected genes with probabilities ∝ a log-normal gene
profile, each detected count is 1 + Poisson(μ_g); each perturbation knocks down its own target
gene (×0.1) and scales 30 genes of its programme by 2–4 (programmes shared by groups of 10
perturbations, so perturbations have neighbours). 5 % of cells are controls.

Usage::

    python benchmarks/perturbations.py --perturbations 250 1000 4000
    python benchmarks/perturbations.py --perturbations 10000 --jobs floor evaluate --timeout 10800

Results: ``benchmarks/results/perturbations.{csv,md}`` (rows of other P kept).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import group_statistics as gs  # noqa: E402  (the same floor job)
from _process import child, run_job  # noqa: E402

JOBS = ("floor", "evaluate", "evaluate_vcc")
VCC_METRICS = ["mae", "discrimination_score_l1", "overlap_at_N"]  # cell-eval's vcc profile
CONTROL = "non-targeting"


# ----------------------------------------------------------------------------- data
def _generate(n_perturbations: int, cells_per: int, n_genes: int, nnz_per_cell: int, seed: int = 0) -> Path:
    """Write (once) the counts file of one P; rows in blocks, so memory stays ~ the CSR itself."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    path = HERE / "data" / f"p{n_perturbations}_c{cells_per}_g{n_genes}.h5ad"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    genes = pd.Index([f"G{j:05d}" for j in range(n_genes)])
    profile = rng.lognormal(0.0, 1.2, n_genes)
    p_detect = profile / profile.sum()
    mu = 0.3 + profile / profile.mean()
    labels = np.array([f"P{k:05d}" for k in range(n_perturbations)] + [CONTROL])
    n_control = max(int(0.05 * n_perturbations * cells_per), 50)
    codes = np.concatenate([np.repeat(np.arange(n_perturbations), cells_per),
                            np.full(n_control, n_perturbations)])
    rng.shuffle(codes)
    targets = rng.choice(n_genes, n_perturbations, replace=False) if n_perturbations <= n_genes else \
        rng.integers(0, n_genes, n_perturbations)
    programmes = rng.integers(0, n_genes, size=(n_perturbations // 10 + 1, 30))
    gain = rng.uniform(2, 4, size=(n_perturbations // 10 + 1, 30))
    data_parts, counts = [], []
    block = 50_000
    for lo in range(0, len(codes), block):
        c = codes[lo:lo + block]
        n_det = rng.poisson(nnz_per_cell, len(c))
        rows = np.repeat(np.arange(len(c)), n_det)
        cols = rng.choice(n_genes, size=len(rows), p=p_detect)
        vals = 1.0 + rng.poisson(mu[cols])
        perturbed = c[rows] < n_perturbations
        k = c[rows][perturbed]
        v = vals[perturbed]
        on_target = cols[perturbed] == targets[k]
        v[on_target] = np.floor(v[on_target] * 0.1)
        prog = programmes[k // 10]
        hit = prog == cols[perturbed][:, None]
        boost = np.where(hit.any(1), (gain[k // 10] * hit).sum(1), 1.0)
        v = np.round(v * boost)
        vals[perturbed] = v
        m = sp.csr_matrix((vals.astype(np.float32), (rows, cols)), shape=(len(c), n_genes))
        m.sum_duplicates()
        m.eliminate_zeros()
        data_parts.append(m)
        counts.append(m.getnnz(axis=1))
    X = sp.vstack(data_parts, format="csr")
    obs = pd.DataFrame({"perturbation": pd.Categorical(labels[codes])},
                       index=pd.Index([f"cell{i}" for i in range(len(codes))]))
    ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)
    print(f"[P={n_perturbations}] wrote {path.name}: {X.shape[0]:,} cells, {X.nnz:,} stored values, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return path


# ----------------------------------------------------------------------------- jobs (child side)
def _job_floor(path: str) -> dict:
    return gs._job_floor(path)


def _job_evaluate(path: str, metrics: str | list[str] = "default") -> dict:
    from shrinkpert import evaluate

    table = evaluate(path, path, control=CONTROL, metrics=metrics)
    s = table.summary()
    return {"check": float(s["mean"].abs().sum()), "n_summary": int(len(s))}


def _job_evaluate_vcc(path: str) -> dict:
    return _job_evaluate(path, VCC_METRICS)


def _sparse_gb(path: Path) -> float:
    import h5py

    with h5py.File(path, "r") as fh:
        return sum(fh[f"X/{k}"].size * fh[f"X/{k}"].dtype.itemsize for k in ("data", "indices", "indptr")) / 2**30


def _exponents(frame):
    """Least-squares slope of log(wall) on log(P), per job, over the P with an ``ok`` row."""
    import numpy as np

    out = {}
    for job, rows in frame[frame.status == "ok"].groupby("job"):
        if rows.n_perturbations.nunique() >= 2:
            out[job] = float(np.polyfit(np.log(rows.n_perturbations), np.log(rows.wall_s), 1)[0])
    return out


def main() -> None:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perturbations", nargs="+", type=int, default=[250, 1000, 4000])
    parser.add_argument("--cells-per-perturbation", type=int, default=100)
    parser.add_argument("--genes", type=int, default=8000)
    parser.add_argument("--nnz-per-cell", type=int, default=400)
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--write-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        child(globals()[f"_job_{args.job}"], args.path)
        return
    if args.write_only:  # the files, written in a process of their own (see below)
        for n_p in args.perturbations:
            _generate(n_p, args.cells_per_perturbation, args.genes, args.nnz_per_cell)
        return
    # write missing files in a child process: a job forked from a driver that grew while writing
    # would start with the driver's peak resident size (Linux keeps it across fork and exec)
    subprocess.run([sys.executable, __file__, "--write-only", "--perturbations", *map(str, args.perturbations),
                    "--cells-per-perturbation", str(args.cells_per_perturbation), "--genes", str(args.genes),
                    "--nnz-per-cell", str(args.nnz_per_cell)], check=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    csv = results / "perturbations.csv"
    old = pd.read_csv(csv) if csv.exists() else pd.DataFrame()
    rows = []
    for n_p in args.perturbations:
        path = _generate(n_p, args.cells_per_perturbation, args.genes, args.nnz_per_cell)
        sparse = _sparse_gb(path)
        got = {}
        for job in args.jobs:
            got[job] = run_job(__file__, job, ["--path", str(path)], args.timeout)
            print(f"[P={n_p}] {job}: {got[job]}", flush=True)
        floor = got.get("floor", {}).get("wall_s")
        for job, r in got.items():
            rows.append({"n_perturbations": n_p, "n_cells": n_p * args.cells_per_perturbation, "n_genes": args.genes,
                         "job": job, "status": r["status"], "wall_s": r.get("wall_s"), "inner_s": r.get("inner_s"),
                         "x_floor": (r.get("wall_s") / floor) if floor and r.get("wall_s") else None,
                         "peak_rss_gb": r.get("peak_rss_gb"), "sparse_gb": sparse,
                         "rss_x_sparse": (r.get("peak_rss_gb") / sparse) if r.get("peak_rss_gb") else None})
    new = pd.DataFrame(rows)
    if len(old):
        key = ["n_perturbations", "n_genes", "job"]
        old = old[~old.set_index(key).index.isin(new.set_index(key).index)]
    frame = pd.concat([old, new], ignore_index=True).sort_values(["n_genes", "n_perturbations", "job"])
    frame.to_csv(csv, index=False)
    lines = ["```", frame.to_string(index=False, float_format=lambda x: f"{x:.3g}"), "```", ""]
    for n_genes, same in frame.groupby("n_genes"):  # one exponent per gene panel
        slopes = _exponents(same[same.n_perturbations <= 4000])
        if slopes:
            lines.append(f"P-scaling exponent at {n_genes:,} genes (slope of log wall on log P, P ≤ 4,000): "
                         + ", ".join(f"{job} {slope:.2f}" for job, slope in sorted(slopes.items())))
    (results / "perturbations.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
