"""Benchmark: ``shrinkpert.difficulty`` at 1,000 perturbations × 8,000 genes.

Data: ``shrinkpert.datasets.simulate(n_cells, n_genes=8000, n_perturbations=1000, seed=0)``
written to a temporary ``.h5ad`` and read backed (as a user's file would be). Jobs, one timed run
each in this process after a warm-up on a small screen (Numba compilation excluded):

* ``floor``: :func:`shrinkpert.estimate_effects` — one streaming pass over the cells, the least
  any per-perturbation statistic of the cells costs;
* ``difficulty_core``: ``difficulty(replicability=False, penetrance=False)`` — effects, two ash
  fits (effects and specific effects), knockdown (a pass reading only target counts), novelty,
  co-expression (a pass reading only control cells' target genes), marker-ness;
* ``difficulty``: ``difficulty(penetrance=False)`` — plus split-half replicability (the effects'
  pass is grouped by perturbation × half instead of by perturbation, two more effect estimates
  and two more ash fits);
* ``systematic_variation``: ``systematic_variation(metrics=None)``.

Penetrance (``classify_escape``) is left out: its cost is that of ``benchmarks/escape.py``; pass
a computed ``escape=`` to reuse it. Usage: ``python benchmarks/difficulty.py [--cells 60000]``.
Writes ``benchmarks/results/difficulty.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import shrinkpert as sp  # noqa: E402
from shrinkpert._io import atomic_path  # noqa: E402


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, out, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=60000)
    parser.add_argument("--genes", type=int, default=8000)
    parser.add_argument("--perturbations", type=int, default=1000)
    args = parser.parse_args()

    warm = sp.datasets.simulate(n_cells=600, n_genes=50, n_perturbations=5, seed=1)
    sp.difficulty(warm, penetrance=False)
    sp.systematic_variation(warm, metrics=None)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "screen.h5ad"
        t_sim, _, _ = timed(lambda: sp.datasets.simulate(n_cells=args.cells, n_genes=args.genes,
                                                      n_perturbations=args.perturbations, seed=0, path=path))
        jobs = {
            "floor": lambda: sp.estimate_effects(path),
            "difficulty_core": lambda: sp.difficulty(path, replicability=False, penetrance=False),
            "difficulty": lambda: sp.difficulty(path, penetrance=False),
            "systematic_variation": lambda: sp.systematic_variation(path, metrics=None),
        }
        rows = []
        for name, job in jobs.items():
            seconds, out, cpu = timed(job)
            rows.append({"job": name, "wall_s": seconds, "cpu_s": cpu, "cells": args.cells, "genes": args.genes,
                         "perturbations": args.perturbations})
            if name == "difficulty":
                strata = out["stratum"].value_counts().to_dict()
    frame = pd.DataFrame(rows)
    frame["x_floor"] = frame["wall_s"] / frame.loc[frame["job"] == "floor", "wall_s"].iloc[0]
    frame["cpu_x_floor"] = frame["cpu_s"] / frame.loc[frame["job"] == "floor", "cpu_s"].iloc[0]
    frame["load_average_1min"] = os.getloadavg()[0]
    frame["cpu"] = f"{platform.machine()} x{os.cpu_count()}"
    out_dir = HERE / "results"
    with atomic_path(out_dir / "difficulty.csv", force=True) as tmp_path:
        frame.to_csv(tmp_path, index=False)
    text = (f"Machine: {os.cpu_count()} cores (shared); one run per job after a warm-up; wall and CPU (all "
            f"threads of the process) seconds; simulate took "
            f"{t_sim:.1f} s; strata of the difficulty run: {strata}.\n\n```\n{frame.to_string(index=False)}\n```\n")
    with atomic_path(out_dir / "difficulty.md", force=True) as tmp_path:
        tmp_path.write_text(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
