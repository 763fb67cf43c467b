"""Benchmark: peak memory of a population reference built from a large backed ``.h5ad``.

Each job runs in a fresh Python process and reports its own wall time and peak resident set size
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the whole process: interpreter, imports, obs,
read-ahead blocks and accumulators). Jobs:

* ``imports``: import shrinkpert and read the file's ``obs`` (the floor every job pays);
* ``all_cells``: ``build_population_reference(path)`` over every cell (two streaming passes:
  counts, log1p) plus the SHA-256 of the file;
* ``control_cells``: the same with ``cells={"perturbation": "non-targeting"}``;
* ``all_cells_no_checksum``: ``checksum=False``.

The target is a peak below 1 GiB for 300,000 cells × 8,000 genes (the ``large`` file of
``benchmarks/group_statistics.py``: ``simulate(n_cells=300_000, n_genes=8_000,
n_perturbations=1_000)``, float32 CSR, 4.5 GB). Usage::

    python benchmarks/reference.py [--path benchmarks/data/large.h5ad]

Results go to ``benchmarks/results/reference.csv`` and ``.md``. The data file is only read.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
JOBS = ("imports", "all_cells", "control_cells", "all_cells_no_checksum")
GIB = 2**30


def _child(job: str, path: str) -> dict:
    start = time.perf_counter()
    from shrinkpert.data.read import read_annotations
    from shrinkpert.reference.population import build_population_reference

    out: dict = {}
    if job == "imports":
        obs, var_names = read_annotations(path)
        out.update(n_cells=len(obs), n_genes=len(var_names))
    else:
        kwargs = {"checksum": job != "all_cells_no_checksum"}
        if job == "control_cells":
            kwargs["cells"] = {"perturbation": "non-targeting"}
        ref = build_population_reference(path, **kwargs)
        out.update(n_cells=ref.n_cells, n_genes=len(ref.genes),
                   median_expression_mean=float(ref.summary().loc[0, "median_expression_mean"]),
                   source_sha256=ref.provenance["source_sha256"])
    out["wall_s"] = time.perf_counter() - start
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=str(HERE / "data" / "large.h5ad"))
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(_child(args.child, args.path)) + "\n")
        return 0

    import pandas as pd

    path = Path(args.path)
    if not path.exists():
        sys.stderr.write(f"{path} does not exist; create it with benchmarks/group_statistics.py --scales large\n")
        return 1
    rows = []
    for job in args.jobs:
        proc = subprocess.run([sys.executable, __file__, "--child", job, "--path", str(path)],
                              capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if proc.returncode != 0:
            rows.append({"job": job, "status": "failed", "error": proc.stderr.strip().splitlines()[-1:]})
            continue
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append({"job": job, "status": "ok", "file_gb": path.stat().st_size / 1e9,
                     "peak_rss_gib": result["peak_rss_bytes"] / GIB, **result})
    table = pd.DataFrame(rows)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    table.to_csv(out / "reference.csv", index=False)
    shown = table.drop(columns=[c for c in ("peak_rss_bytes", "source_sha256") if c in table.columns])
    header = (f"Machine: {os.cpu_count()} cores; Python {platform.python_version()}; file {path.name}; "
              "one run per job, each in a fresh process; peak RSS from getrusage.\n\n")
    (out / "reference.md").write_text(header + "```\n" + shown.to_string(index=False) + "\n```\n")
    sys.stdout.write(header + shown.to_string(index=False) + "\n")
    ok = table[table["status"] == "ok"]
    return 0 if len(ok) == len(table) and (ok["peak_rss_gib"] < 1.0).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
