"""Benchmark: one streaming pass (group_statistics + estimate_effects) vs the one-pass floor and peers.

Every job runs in a fresh Python process on the same ``simulate()`` file written to disk, and
reports its own whole-process wall time and peak RSS. Ratios are taken within one run:

* ``floor``: read the CSR (data, indices, indptr) into memory with h5py, then one bare Numba
  pass summing values and squares by row group (2 threads, per-thread accumulators);
* ``shrinkpert``: ``estimate_effects(path)`` — backed streaming read, on-the-fly log1p
  normalisation, per-group statistics, Welch effects, SEs and df;
* ``scanpy``: ``read_h5ad`` + ``normalize_total`` + ``log1p`` + ``rank_genes_groups(method="t-test",
  reference=control)``;
* ``crispyx``: ``crispyx.pseudobulk.compute_normalized_effects`` on the counts file (normalise to
  10,000, mean log1p per perturbation minus control, one streaming pass). crispyx 0.2.2's
  ``t_test`` refuses count data, so it cannot run on the same file.

Each job is run once to warm the page cache and the Numba caches, then timed ``--repeats`` times
(median reported). Usage::

    python benchmarks/group_statistics.py --scales small medium large

Data files go to ``benchmarks/data/`` (git-ignored); results to
``benchmarks/results/group_statistics.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _process import child, run_job  # noqa: E402

SCALES = {
    "small": dict(n_cells=20_000, n_genes=2_000, n_perturbations=50),
    "medium": dict(n_cells=100_000, n_genes=5_000, n_perturbations=200),
    "large": dict(n_cells=300_000, n_genes=8_000, n_perturbations=1_000),
}
JOBS = ("floor", "shrinkpert", "crispyx", "scanpy")


# ----------------------------------------------------------------------------- jobs (child side)
def _job_floor(path: str) -> dict:
    import h5py
    import numba
    import numpy as np
    import pandas as pd
    import anndata as ad

    @numba.njit(parallel=True, cache=True)
    def one_pass(data, indices, indptr, codes, s1, s2):
        n_rows = indptr.shape[0] - 1
        n_t = s1.shape[0]
        step = (n_rows + n_t - 1) // n_t
        for t in numba.prange(n_t):
            for i in range(t * step, min(n_rows, (t + 1) * step)):
                g = codes[i]
                for k in range(indptr[i], indptr[i + 1]):
                    x = data[k]
                    s1[t, g, indices[k]] += x
                    s2[t, g, indices[k]] += x * x

    with h5py.File(path, "r") as fh:
        obs = ad.io.read_elem(fh["obs"])
        data, indices, indptr = fh["X/data"][...], fh["X/indices"][...], fh["X/indptr"][...]
        n_genes = int(fh["X"].attrs["shape"][1])
    codes, groups = pd.factorize(obs["perturbation"])
    n_t = numba.get_num_threads()
    s1 = np.zeros((n_t, len(groups), n_genes))
    s2 = np.zeros_like(s1)
    one_pass(data, indices, indptr, codes.astype(np.int64), s1, s2)
    return {"check": float(s1.sum())}


def _job_shrinkpert(path: str) -> dict:
    import shrinkpert as sp

    effects = sp.estimate_effects(path, control="non-targeting")
    return {"check": float(abs(effects.effect).sum()), "n_perturbations": len(effects.perturbations)}


def _job_scanpy(path: str) -> dict:
    import scanpy as sc

    adata = sc.read_h5ad(path)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.tl.rank_genes_groups(adata, "perturbation", reference="non-targeting", method="t-test")
    return {"check": float(adata.uns["rank_genes_groups"]["scores"][0][0])}


def _job_crispyx(path: str) -> dict:
    import warnings

    from crispyx.pseudobulk import compute_normalized_effects

    # crispyx 0.2.2's t_test refuses count data ("log-normalize your data first"); its one-pass
    # counts-to-effects job is the like-for-like comparison (effects only, no standard errors)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compute_normalized_effects(path, perturbation_column="perturbation", control_label="non-targeting",
                                   output_path=Path(tmp) / "effects.h5ad", verbose=False)
    return {"check": 0.0}


# ----------------------------------------------------------------------------- driver
def _generate(scale: str) -> Path:
    import shrinkpert as sp

    path = HERE / "data" / f"{scale}.h5ad"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        adata = sp.datasets.simulate(**SCALES[scale], seed=0, path=path, progress=False)
        adata.file.close()
        print(f"[{scale}] generated {path.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=list(JOBS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.job:
        child(globals()[f"_job_{args.job}"], args.path)
        return

    import numpy as np
    import pandas as pd

    rows = []
    for scale in args.scales:
        path = _generate(scale)
        size_gb = path.stat().st_size / 2**30
        for job in args.jobs:
            run_job(__file__, job, ["--path", str(path)], args.timeout)  # warm-up: page cache and Numba caches
            runs = [run_job(__file__, job, ["--path", str(path)], args.timeout) for _ in range(args.repeats)]
            ok = [r for r in runs if r.get("status") == "ok"]
            row = {"scale": scale, "job": job, "file_gb": round(size_gb, 2)}
            if ok:
                row.update(wall_s=statistics.median(r["wall_s"] for r in ok),
                           peak_rss_gb=max(r["peak_rss_gb"] for r in ok), status="ok")
            else:
                row.update(wall_s=np.nan, peak_rss_gb=np.nan, status=runs[0]["status"])
            rows.append(row)
            print(f"[{scale}] {job:10s} {row['wall_s']:8.2f} s  {row['peak_rss_gb']:6.2f} GB  {row['status']}", flush=True)
    table = pd.DataFrame(rows)
    floor = table[table.job == "floor"].set_index("scale")["wall_s"]
    ours = table[table.job == "shrinkpert"].set_index("scale")["wall_s"]
    table["x_floor"] = table["wall_s"] / table["scale"].map(floor)
    table["shrinkpert_speedup"] = table["wall_s"] / table["scale"].map(ours)
    out = HERE / "results" / "group_statistics"
    out.parent.mkdir(exist_ok=True)
    table.to_csv(out.with_suffix(".csv"), index=False, float_format="%.3f")
    out.with_suffix(".md").write_text(
        f"Machine: {os.cpu_count()} cores; Python {sys.version.split()[0]}; median of {args.repeats} run(s) after a warm-up.\n\n"
        + "```\n" + table.to_string(index=False, float_format=lambda v: f"{v:.2f}") + "\n```\n"
    )
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
