"""Benchmark: ``score_vcc2026`` vs ``cell-eval2 run --preset vcc2026`` (whole processes).

Inputs (written once to ``benchmarks/data/``, git-ignored), raw integer counts as the preset
requires:

* truth: the ``simulate(seed=0)`` counts of ``group_statistics.py`` (``small`` = 20k cells × 2k
  genes × 50 perturbations, ``medium`` = 100k × 5k × 200);
* ``<scale>_pred_counts.h5ad``: every count of the truth binomially thinned with p = 0.8 (seeded),
  same cells and labels (the preset requires exactly the measured perturbations).

Jobs, each a fresh Python process, reporting wall time, CPU time (user + system, process and
children: the fairer figure on a shared machine) and peak RSS:

* ``shrinkpert``: ``score_vcc2026(pred, truth)`` on the two files (streamed), all six members;
* ``cell_eval2``: ``cell-eval2 run --preset vcc2026`` on the same files (CPU: pdex engine);
* ``shrinkpert_preset``: the whole preset, ``evaluate(pred, truth, preset="vcc2026", n_boot=200,
  baselines=None)`` — the score, the mean-response baseline scored, the five replicate-anchor
  splits scored, the bootstrap (no exploit arms; no warm-up run);
* ``shrinkpert_preset_arms``: the same with every exploit arm (``baselines="default"``).

Only the ``shrinkpert`` and ``cell_eval2`` jobs are compared number by number.

Both jobs compute the same numbers (checked: the job prints the six aggregates; the benchmark
reports the largest absolute difference). Usage::

    python benchmarks/vcc2026.py --scales small medium

Results: ``benchmarks/results/vcc2026.{csv,md}`` (rows of other scales from earlier runs kept).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import group_statistics as gs  # noqa: E402  (the same simulated counts)
from _process import child, run_job  # noqa: E402
from evaluate import _sparse_gb  # noqa: E402  (stored bytes of a file's X)

from shrinkpert.metrics.vcc2026 import MEMBERS  # noqa: E402

JOBS = ("shrinkpert", "cell_eval2", "shrinkpert_preset", "shrinkpert_preset_arms")


def _pair(scale: str) -> tuple[Path, Path]:
    truth = gs._generate(scale)
    pred = HERE / "data" / f"{scale}_pred_counts.h5ad"
    if pred.exists():
        return truth, pred
    import anndata as ad
    import numpy as np

    adata = ad.read_h5ad(truth)
    adata.obs = adata.obs[["perturbation"]].copy()
    adata.uns = {}
    rng = np.random.default_rng(1)
    adata.X.data = rng.binomial(adata.X.data.astype(np.int64), 0.8).astype(np.float32)
    adata.X.eliminate_zeros()
    tmp = pred.with_suffix(".tmp.h5ad")
    adata.write_h5ad(tmp)
    os.replace(tmp, pred)
    return truth, pred


def _job_shrinkpert(truth: str, pred: str) -> dict:
    from shrinkpert.metrics.vcc2026 import score_vcc2026

    res = score_vcc2026(pred, truth)
    return {m: res.aggregate[m] for m in MEMBERS}


def _preset(truth: str, pred: str, baselines) -> dict:
    import shrinkpert

    table = shrinkpert.evaluate(pred, truth, preset="vcc2026", n_boot=200, baselines=baselines)
    return dict(table.summary().reset_index().set_index("metric")["calibrated"])


def _job_shrinkpert_preset(truth: str, pred: str) -> dict:
    return _preset(truth, pred, None)


def _job_shrinkpert_preset_arms(truth: str, pred: str) -> dict:
    return _preset(truth, pred, "default")


def _job_cell_eval2(truth: str, pred: str) -> dict:
    import pandas as pd

    exe = Path(sys.executable).with_name("cell-eval2")
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([str(exe), "run", "-ap", pred, "-ar", truth, "--preset", "vcc2026",
                               "--pert-col", "perturbation", "-o", out], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError((done.stderr or done.stdout).strip().splitlines()[-1])
        agg = pd.read_csv(Path(out) / "agg_results.csv").set_index("statistic")
    return {m: float(agg.loc["mean", m]) for m in MEMBERS}


def _run(job: str, truth: Path, pred: Path, timeout: float) -> dict:
    return run_job(__file__, job, ["--truth", str(truth), "--pred", str(pred)], timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=["small"], choices=["small", "medium"])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--truth", help=argparse.SUPPRESS)
    parser.add_argument("--pred", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        child(globals()[f"_job_{args.job}"], args.truth, args.pred)
        return

    import pandas as pd

    rows = []
    for scale in args.scales:
        truth, pred = _pair(scale)
        sparse = _sparse_gb(truth) + _sparse_gb(pred)
        results = {}
        for job in args.jobs:
            if job == "shrinkpert":
                _run(job, truth, pred, args.timeout)  # warm-up: page cache and Numba caches
            r = _run(job, truth, pred, args.timeout)
            results[job] = r
            row = {"scale": scale, "job": job, "inputs_sparse_gb": round(sparse, 3), "status": r["status"],
                   "wall_s": round(r.get("wall_s", float("nan")), 2),
                   "cpu_s": round(r.get("cpu_s", float("nan")), 2),
                   "peak_rss_gb": round(r.get("peak_rss_gb", float("nan")), 3)}
            rows.append(row)
            print(f"[{scale}] {job:11s} {row['wall_s']:8.1f} s wall {row['cpu_s']:8.1f} s CPU "
                  f"{row['peak_rss_gb']:6.2f} GB  {row['status']}",
                  flush=True)
        pair = ("shrinkpert", "cell_eval2")
        if set(pair) <= set(args.jobs) and all(results[j].get("status") == "ok" for j in pair):
            diff = max(abs(results["shrinkpert"][m] - results["cell_eval2"][m]) for m in MEMBERS)
            print(f"[{scale}] largest |difference| of the six aggregates: {diff:.2e}", flush=True)
            for row in rows:
                if row["scale"] == scale:
                    row["max_abs_diff_vs_cell_eval2"] = diff
    table = pd.DataFrame(rows)
    out = HERE / "results" / "vcc2026"
    if out.with_suffix(".csv").exists():
        old = pd.read_csv(out.with_suffix(".csv"))
        rerun = old["scale"].isin(args.scales) & old["job"].isin(args.jobs)
        table = pd.concat([old[~rerun], table], ignore_index=True)
    table.to_csv(out.with_suffix(".csv"), index=False)
    lines = ["| scale | job | inputs (sparse, GB) | wall (s) | CPU (s) | peak RSS (GB) | status |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.scale} | {r.job} | {r.inputs_sparse_gb} | {r.wall_s} | {r.cpu_s} | {r.peak_rss_gb} "
                     f"| {r.status} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
