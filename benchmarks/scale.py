"""Benchmark: group_statistics beyond one in-process pass — zarr + Dask cluster, and shards + merge.

One ``simulate()`` screen (default 100k cells × 5k genes × 200 perturbations, raw counts, CSR)
is written under ``/tmp/shrinkpert_scale/`` as ``.h5ad`` and as a ``.zarr`` store. Every job is
a fresh Python process timed from the outside (whole-process wall time, imports included) and
computes ``group_statistics(..., "perturbation", normalize="log1p")``:

* ``h5ad_inprocess``: the backed ``.h5ad`` streamed in-process (Numba threads) — the reference;
* ``zarr_inprocess``: the ``.zarr`` store through Dask's default local scheduler (threads);
* ``zarr_cluster``: the ``.zarr`` store through a ``distributed.LocalCluster`` of 2 worker
  processes × 1 thread started inside the job (start-up included; reported separately too);
* ``shard_i_of_N``: one shard ``(i, N)`` of the ``.h5ad`` saved with ``save_statistics``;
* ``merge_N``: ``merge_statistics`` of the ``N`` saved parts, compared with the reference.

Ratios are within this run: ``zarr_cluster / h5ad_inprocess`` (the distributed overhead on
one machine), ``sum(shards) + merge`` (the total work when shards run one after another) and
``max(shard) + merge`` (the wall time when each shard has its own machine) over the one pass.
The two in-process jobs run once first to warm the page cache of both files and the Numba
caches; every job then runs ``--repeats`` times (median). The cluster job therefore includes
what a fresh cluster costs: starting it and the workers' first import and kernel load. Usage::

    python benchmarks/scale.py [--cells 100000 --genes 5000 --perturbations 200 --shards 4]

Results: ``benchmarks/results/scale.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))  # run from a checkout: this copy of shrinkpert
DATA = Path("/tmp/shrinkpert_scale")
WARM_UP = ("zarr_inprocess",)  # the .h5ad is warmed by the reference job; the later jobs read cached files


# ----------------------------------------------------------------------------- jobs (child side)
def _stats(source, **kw):
    import warnings

    import shrinkpert as sp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sp.ShrinkpertWarning)
        return sp.group_statistics(source, "perturbation", normalize="log1p", **kw)


def _job(name: str, args: argparse.Namespace) -> dict:
    import shrinkpert as sp

    h5ad, zarr_path, parts = DATA / f"{args.tag}.h5ad", DATA / f"{args.tag}.zarr", DATA / f"{args.tag}_parts"
    if name == "generate":
        _generate(args)
        return {}
    if name == "reference":  # untimed: the one-pass result every other job is compared with
        sp.save_statistics(_stats(str(h5ad)), parts / "whole.npz", force=True)
        return {}
    if name == "h5ad_inprocess":
        return {"max_abs_sum_diff": _compare(_stats(str(h5ad)), sp.load_statistics(parts / "whole.npz"))}
    if name == "zarr_inprocess":
        return {"max_abs_sum_diff": _compare(_stats(str(zarr_path)), sp.load_statistics(parts / "whole.npz"))}
    if name == "zarr_cluster":
        from distributed import Client, LocalCluster

        start = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
                Client(cluster) as client:
            client.run(lambda: __import__("shrinkpert.stats.distributed"))  # workers import the package
            startup = time.perf_counter() - start
            stats = _stats(str(zarr_path))
            workers = client.run(lambda: __import__("resource").getrusage(0).ru_maxrss / 2**20)
        return {"cluster_startup_s": startup, "worker_peak_rss_gb": max(workers.values()),
                "max_abs_sum_diff": _compare(stats, sp.load_statistics(parts / "whole.npz"))}
    if name.startswith("shard_"):
        i, n = (int(x) for x in name.split("_")[1::2])
        sp.save_statistics(_stats(str(h5ad), shard=(i, n)), parts / f"part_{i}_of_{n}.npz", force=True)
        return {}
    if name.startswith("merge_"):
        n = int(name.split("_")[1])
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sp.ShrinkpertWarning)
            merged = sp.merge_statistics([parts / f"part_{i}_of_{n}.npz" for i in range(n)])
        return {"max_abs_sum_diff": _compare(merged, sp.load_statistics(parts / "whole.npz"))}
    raise ValueError(name)


def _compare(got, ref) -> float:
    """Counts must be exact; returns the largest |sum difference| (summation order only)."""
    import numpy as np

    if not (np.array_equal(got.n_cells, ref.n_cells) and np.array_equal(got.n_nonzero, ref.n_nonzero)):
        raise AssertionError("counts differ from the one-pass result")
    return float(np.max(np.abs(got.sum - ref.sum)))


def _child(name: str, args: argparse.Namespace) -> None:
    import shrinkpert  # noqa: F401  (inner_s excludes the package import; wall_s includes it)

    start = time.perf_counter()
    result = _job(name, args)
    result["inner_s"] = time.perf_counter() - start
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------- driver
def _run(name: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--job", name, "--tag", args.tag, "--cells", str(args.cells),
           "--genes", str(args.genes), "--perturbations", str(args.perturbations)]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"job {name} failed:\n{done.stderr[-2000:]}")
    return {**json.loads(lines[-1][7:]), "wall_s": wall}


def _generate(args: argparse.Namespace) -> None:
    import warnings

    import anndata as ad

    import shrinkpert as sp

    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / f"{args.tag}_parts").mkdir(exist_ok=True)
    h5ad, zarr_path = DATA / f"{args.tag}.h5ad", DATA / f"{args.tag}.zarr"
    if not h5ad.exists():
        t = time.perf_counter()
        sp.datasets.simulate(args.cells, args.genes, args.perturbations, seed=0, path=h5ad).file.close()
        print(f"generated {h5ad} in {time.perf_counter() - t:.0f} s", flush=True)
    if not zarr_path.exists():
        t = time.perf_counter()
        adata = ad.read_h5ad(h5ad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # anndata/zarr notices about future format defaults
            adata.write_zarr(zarr_path)
        print(f"wrote {zarr_path} in {time.perf_counter() - t:.0f} s", flush=True)


def _ratios(table, column: str, n: int) -> dict[str, float]:
    t = table.set_index("job")[column]
    one = t["h5ad_inprocess"]
    shards = t[[f"shard_{i}_of_{n}" for i in range(n)]]
    startup = table.set_index("job").loc["zarr_cluster", "cluster_startup_s"]
    return {
        "zarr, Dask local threads / h5ad in-process": t["zarr_inprocess"] / one,
        "zarr, 2-worker LocalCluster / h5ad in-process": t["zarr_cluster"] / one,
        "zarr, LocalCluster minus its start-up / h5ad in-process": (t["zarr_cluster"] - startup) / one,
        f"{n} shards one after another + merge / one pass": (shards.sum() + t[f"merge_{n}"]) / one,
        f"slowest of {n} shards (one machine each) + merge / one pass": (shards.max() + t[f"merge_{n}"]) / one,
    }


def _size_gb(path: Path) -> float:
    if path.is_file():
        return path.stat().st_size / 2**30
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--genes", type=int, default=5_000)
    parser.add_argument("--perturbations", type=int, default=200)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--tag", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        _child(args.job, args)
        return
    import pandas as pd

    args.tag = f"sim_{args.cells}x{args.genes}x{args.perturbations}"
    h5ad, zarr_path = DATA / f"{args.tag}.h5ad", DATA / f"{args.tag}.zarr"
    # in child processes, so that this driver stays small: Linux keeps the peak RSS across exec
    _run("generate", args)
    _run("reference", args)
    n = args.shards
    jobs = ["h5ad_inprocess", "zarr_inprocess", "zarr_cluster"] + [f"shard_{i}_of_{n}" for i in range(n)] + [f"merge_{n}"]
    rows = []
    for name in jobs:
        if name in WARM_UP:
            _run(name, args)  # warm-up: page cache of the store, Numba caches
        runs = [_run(name, args) for _ in range(args.repeats)]
        row = {"job": name, "wall_s": statistics.median(r["wall_s"] for r in runs),
               "inner_s": statistics.median(r["inner_s"] for r in runs),
               "peak_rss_gb": max(r["peak_rss_gb"] for r in runs)}
        for key in ("cluster_startup_s", "worker_peak_rss_gb", "max_abs_sum_diff"):
            if key in runs[0]:
                row[key] = statistics.median(r[key] for r in runs)
        rows.append(row)
        print(f"{name:16s} {row['wall_s']:7.2f} s  (inner {row['inner_s']:6.2f} s)  {row['peak_rss_gb']:5.2f} GB",
              flush=True)
    table = pd.DataFrame(rows)
    ratios = pd.DataFrame({"whole process": _ratios(table, "wall_s", n), "inside the job": _ratios(table, "inner_s", n)})
    ratios.index.name = "ratio"
    ratios = ratios.reset_index()
    out = HERE / "results" / "scale"
    out.parent.mkdir(exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False, float_format="%.4g")
    header = (f"{args.cells:,} cells × {args.genes:,} genes × {args.perturbations} perturbations (simulate, seed 0); "
              f".h5ad {_size_gb(h5ad):.2f} GB, .zarr {_size_gb(zarr_path):.2f} GB. Machine: {os.cpu_count()} cores, "
              f"load average {os.getloadavg()[0]:.1f} at the end; Python {sys.version.split()[0]}; median of "
              f"{args.repeats} run(s) after warming the caches; whole-process wall times.\n\n")
    out.with_suffix(".md").write_text(
        header + "```\n" + table.to_string(index=False, float_format=lambda v: f"{v:.3g}") + "\n```\n\n"
        + "```\n" + ratios.to_string(index=False, float_format=lambda v: f"{v:.2f}") + "\n```\n"
    )
    print(table.to_string(index=False))
    print(ratios.to_string(index=False))


if __name__ == "__main__":
    main()
