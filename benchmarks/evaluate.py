"""Benchmark: the whole ``evaluate()`` vs ``cell-eval run`` (profiles vcc and full) and the floor.

Inputs (written once to ``benchmarks/data/``, git-ignored) are a truth/prediction pair on the same
log1p scale, so both tools read identical values (cell-eval would otherwise normalise counts to the
median library size, and we to 10⁴):

* ``<scale>_truth_log1p.h5ad``: the ``simulate(seed=0)`` counts of ``group_statistics.py``,
  log1p-normalised per 10⁴;
* ``<scale>_pred_log1p.h5ad``: a prediction with signal but not perfect: every count of the truth
  binomially thinned with p = 0.8 (seeded), log1p-normalised, and 30% of the perturbed cells given
  a random other perturbation label. It has control cells, which cell-eval requires (we ignore them).

Jobs, each a fresh Python process, reporting wall time and peak RSS (of the process and its
children):

* ``floor``: the one-pass floor of ``group_statistics.py`` on the truth file (h5py bulk read of the
  CSR, one bare Numba sum/sum² pass by group);
* ``shrinkpert``: ``evaluate(pred, truth)`` with every default: two streaming passes, all default
  metrics on both references, 10 baselines, DE calls, calibration with 1,000 bootstrap replicates;
* ``shrinkpert_vcc``: the same with only the three metrics of cell-eval's vcc profile (``mae``,
  ``discrimination_score_l1``, ``overlap_at_N``), still with every baseline and calibration;
* ``cell_eval_vcc`` / ``cell_eval_full``: ``cell-eval run --profile vcc|full`` on the same pair
  (2 threads; ``--skip-metrics`` none).

At ``--scales large`` the cell-eval jobs are skipped and ours run on the 300k × 8k × 1,000 counts
file with pred = truth, to show that ``evaluate`` completes there. Usage::

    python benchmarks/evaluate.py --scales medium large
    python benchmarks/evaluate.py --scales large --jobs floor shrinkpert
    python benchmarks/evaluate.py --scales medium --jobs floor shrinkpert shrinkpert_vcc --repeats 5

Results: ``benchmarks/results/evaluate.{csv,md}`` (rows of other scales from earlier runs are kept).
Ratios are taken within one run of a scale, between medians of ``--repeats`` timed runs per job (the
jobs in turn: a single run of the ~2.5 s floor varied from 2.3 to 5.1 s on this machine).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import group_statistics as gs  # noqa: E402  (the same data files and the same floor job)
from _process import child, run_job  # noqa: E402

JOBS = ("floor", "shrinkpert", "shrinkpert_vcc", "cell_eval_vcc", "cell_eval_full")
VCC_METRICS = ["mae", "discrimination_score_l1", "overlap_at_N"]
CONTROL = "non-targeting"


# ----------------------------------------------------------------------------- inputs
def _pair(scale: str) -> tuple[Path, Path]:
    """Truth and prediction files of ``scale`` (log1p), written on first use."""
    truth = HERE / "data" / f"{scale}_truth_log1p.h5ad"
    pred = HERE / "data" / f"{scale}_pred_log1p.h5ad"
    if truth.exists() and pred.exists():
        return truth, pred
    import anndata as ad
    import numpy as np

    counts = gs._generate(scale)
    rng = np.random.default_rng(1)
    t0 = time.perf_counter()
    for path, thin in ((truth, False), (pred, True)):
        adata = ad.read_h5ad(counts)
        adata.obs = adata.obs[["perturbation"]].copy()
        x = adata.X
        if thin:
            x.data = rng.binomial(x.data.astype(np.int64), 0.8).astype(np.float32)
            labels = adata.obs["perturbation"].astype(str).to_numpy()
            perts = np.unique(labels[labels != CONTROL])
            move = (labels != CONTROL) & (rng.random(len(labels)) < 0.3)
            labels[move] = rng.choice(perts, size=int(move.sum()))
            adata.obs["perturbation"] = labels
        totals = np.asarray(x.sum(axis=1)).ravel()
        scale_rows = np.repeat(1e4 / np.maximum(totals, 1.0), np.diff(x.indptr))
        x.data = np.log1p(x.data * scale_rows).astype(np.float32)
        x.eliminate_zeros()
        tmp = path.with_suffix(".tmp.h5ad")
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    print(f"[{scale}] wrote the log1p truth/prediction pair in {time.perf_counter() - t0:.0f} s", flush=True)
    return truth, pred


# ----------------------------------------------------------------------------- jobs (child side)
def _job_floor(truth: str, pred: str) -> dict:
    return gs._job_floor(truth)


def _job_shrinkpert(truth: str, pred: str, metrics: str | list[str] = "default") -> dict:
    from shrinkpert.evaluation import evaluate

    table = evaluate(pred, truth, control=CONTROL, metrics=metrics)
    s = table.summary()
    return {"check": float(s["mean"].abs().sum()), "n_rows": int(len(table.to_frame())), "n_summary": int(len(s))}


def _job_shrinkpert_vcc(truth: str, pred: str) -> dict:
    return _job_shrinkpert(truth, pred, VCC_METRICS)


def _cell_eval(truth: str, pred: str, profile: str) -> dict:
    exe = Path(sys.executable).with_name("cell-eval")
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([str(exe), "run", "-ap", pred, "-ar", truth, "--control-pert", CONTROL,
                               "--pert-col", "perturbation", "--profile", profile, "--num-threads", "2",
                               "-o", out], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1])
        n = len(list(Path(out).glob("*.csv")))
    return {"check": float(n)}


def _job_cell_eval_vcc(truth: str, pred: str) -> dict:
    return _cell_eval(truth, pred, "vcc")


def _job_cell_eval_full(truth: str, pred: str) -> dict:
    return _cell_eval(truth, pred, "full")


def _run(job: str, truth: Path, pred: Path, timeout: float) -> dict:
    return run_job(__file__, job, ["--truth", str(truth), "--pred", str(pred)], timeout)


def _sparse_gb(path: Path) -> float:
    import h5py

    with h5py.File(path, "r") as fh:
        return sum(fh[f"X/{k}"].size * fh[f"X/{k}"].dtype.itemsize for k in ("data", "indices", "indptr")) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["medium"], choices=list(gs.SCALES))
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up run of each job")
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed runs of each job, the jobs taken in turn; the median is reported")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--pred", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        child(globals()[f"_job_{args.job}"], args.truth, args.pred)
        return

    import numpy as np
    import pandas as pd

    rows = []
    for scale in args.scales:
        if scale == "large":  # counts file, pred = truth: shows that evaluate completes
            truth = pred = gs._generate(scale)
            jobs = [j for j in args.jobs if not j.startswith("cell_eval")]
        else:
            truth, pred = _pair(scale)
            jobs = args.jobs
        sparse = _sparse_gb(truth)
        if not args.no_warmup:
            for job in jobs:
                if not job.startswith("cell_eval"):
                    _run(job, truth, pred, args.timeout)  # page cache and Numba caches
        runs: dict[str, list[dict]] = {job: [] for job in jobs}
        for _ in range(args.repeats):  # the jobs in turn, so a drift of the machine's speed hits each alike
            for job in jobs:
                runs[job].append(_run(job, truth, pred, args.timeout))
        for job in jobs:
            ok = [r for r in runs[job] if r["status"] == "ok"]
            walls = sorted(r["wall_s"] for r in ok)
            row = {"scale": scale, "job": job, "sparse_gb": round(sparse, 2),
                   "status": "ok" if len(ok) == len(runs[job]) else runs[job][-1]["status"],
                   "wall_s": float(np.median(walls)) if walls else float("nan"),
                   "wall_min_s": walls[0] if walls else float("nan"),
                   "wall_max_s": walls[-1] if walls else float("nan"), "runs": len(walls),
                   "peak_rss_gb": max((r["peak_rss_gb"] for r in ok), default=float("nan"))}
            rows.append(row)
            print(f"[{scale}] {job:15s} {row['wall_s']:8.1f} s (median of {len(walls)}; {row['wall_min_s']:.1f}-"
                  f"{row['wall_max_s']:.1f})  {row['peak_rss_gb']:6.2f} GB  {row['status']}", flush=True)
    table = pd.DataFrame(rows)
    out = HERE / "results" / "evaluate"
    if out.with_suffix(".csv").exists():  # keep the other scales' rows of earlier runs
        old = pd.read_csv(out.with_suffix(".csv"))
        old = old[~old["scale"].isin(table["scale"])]
        table = pd.concat([old[table.columns.intersection(old.columns)], table], ignore_index=True)
    by = table.set_index(["scale", "job"])["wall_s"]
    table["x_floor"] = [w / by.get((s, "floor"), float("nan")) for s, w in zip(table.scale, table.wall_s)]
    table["x_shrinkpert"] = [w / by.get((s, "shrinkpert"), float("nan")) for s, w in zip(table.scale, table.wall_s)]
    table["rss_x_sparse"] = table["peak_rss_gb"] / table["sparse_gb"]
    out.parent.mkdir(exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False, float_format="%.3f")
    load = os.getloadavg()[0]
    out.with_suffix(".md").write_text(
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; wall_s is the median of `runs` timed runs "
        f"per job, the jobs taken in turn (shrinkpert and floor after a warm-up); load average at the end "
        f"{load:.1f}.\n\n"
        + "```\n" + table.to_string(index=False, float_format=lambda v: f"{v:.2f}") + "\n```\n"
    )
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
