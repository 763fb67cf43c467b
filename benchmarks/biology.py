"""Benchmark: perturbation similarity maps and relationship recall at 1,000 and 10,000 perturbations.

Each job runs in a fresh Python process and reports its whole-process wall time and peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``: interpreter, imports, the random
profiles and everything the job allocates). Profiles are P × G (G = 2,000) Gaussian rows where
groups of 10 perturbations share a programme; the relationships are all pairs within a group
(4.5 P known pairs). Jobs:

* ``floor``: import shrinkpert.biology, make the profiles, normalise the rows and one BLAS product
  ``U @ U.T`` (the P² × G cost any cosine map pays), nothing else;
* ``similarity``: :func:`shrinkpert.biology.cosine_similarity` (blocked upper triangle, mirrored,
  duplicate-row check, NaN handling);
* ``recall``: :func:`shrinkpert.biology.relationship_recall` with 1,000 permutations (map, sorted
  upper triangle, tail credits, vectorised null);
* ``map_agreement``: :func:`shrinkpert.biology.map_agreement_score` of a noisy prediction against
  the profiles (two maps; one count per true neighbour over its row, O(P² k)).

Usage::

    python benchmarks/biology.py [--sizes 1000 10000] [--jobs floor similarity recall map_agreement] [--repeat 2]

Results go to ``benchmarks/results/biology.csv`` and ``.md``.
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
JOBS = ("floor", "similarity", "recall", "map_agreement")
N_GENES = 2000
GROUP = 10
GIB = 2**30


def _profiles(n: int):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(n)
    programmes = rng.normal(size=(n // GROUP + 1, N_GENES))
    x = programmes[np.arange(n) // GROUP] + 2.0 * rng.normal(size=(n, N_GENES))
    names = [f"P{i:05d}" for i in range(n)]
    a, b = [], []
    for start in range(0, n, GROUP):
        members = names[start:start + GROUP]
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                a.append(members[i])
                b.append(members[j])
    return pd.DataFrame(x, index=names), pd.DataFrame({"gene_a": a, "gene_b": b})


def _child(job: str, n: int) -> dict:
    start = time.perf_counter()
    import numpy as np

    import shrinkpert.biology  # noqa: F401  (every job pays the import)

    frame, rel = _profiles(n)
    x = frame.to_numpy()
    out: dict = {"n_pairs_known": len(rel)}
    t0 = time.perf_counter()
    if job == "floor":
        u = x / np.linalg.norm(x, axis=1, keepdims=True)
        s = u @ u.T
        out["checksum"] = float(s[0, 1])
    elif job == "similarity":
        from shrinkpert.biology import cosine_similarity

        out["checksum"] = float(cosine_similarity(x)[0, 1])
    elif job == "recall":
        from shrinkpert.biology import relationship_recall

        res = relationship_recall(frame, rel, n_permutations=1000, seed=0)
        out.update(recall=res.recall, null_mean=res.null_mean, p_value=res.p_value)
    else:
        from shrinkpert.biology import map_agreement_score

        pred = x + 2.0 * np.random.default_rng(1).normal(size=x.shape)
        out["mAP"] = float(np.nanmean(map_agreement_score(pred, x, n_neighbors=5)))
    out["compute_s"] = time.perf_counter() - t0
    out["wall_s"] = time.perf_counter() - start
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[1000, 10000])
    parser.add_argument("--jobs", nargs="+", default=list(JOBS), choices=JOBS)
    parser.add_argument("--agreement-max", type=int, default=10000, help="largest P for map_agreement")
    parser.add_argument("--repeat", type=int, default=2, help="runs per job; the fastest is kept")
    parser.add_argument("--child", choices=JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        sys.stdout.write(json.dumps(_child(args.child, args.n)) + "\n")
        return 0

    import pandas as pd

    rows = []
    root = str(HERE.parent)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for n in args.sizes:
        for job in args.jobs:
            if job == "map_agreement" and n > args.agreement_max:
                continue
            runs = []
            for _ in range(args.repeat):
                proc = subprocess.run([sys.executable, __file__, "--child", job, "--n", str(n)],
                                      capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    break
                runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            if proc.returncode != 0:
                rows.append({"n_perturbations": n, "job": job, "status": "failed",
                             "error": " ".join(proc.stderr.strip().splitlines()[-1:])})
                continue
            result = min(runs, key=lambda r: r["wall_s"])
            rows.append({"n_perturbations": n, "n_genes": N_GENES, "job": job, "status": "ok",
                         "peak_rss_gib": result.pop("peak_rss_bytes") / GIB, **result})
            sys.stderr.write(f"{n} {job}: {result['wall_s']:.1f} s\n")
    table = pd.DataFrame(rows)
    floor = table[table["job"] == "floor"].set_index("n_perturbations")["wall_s"]
    table["x_floor"] = table["wall_s"] / table["n_perturbations"].map(floor)
    compute_floor = table[table["job"] == "floor"].set_index("n_perturbations")["compute_s"]
    table["compute_x_floor"] = table["compute_s"] / table["n_perturbations"].map(compute_floor)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    table.to_csv(out / "biology.csv", index=False)
    header = (f"Machine: {os.cpu_count()} cores, shared with other work; Python {platform.python_version()}; "
              f"fastest of {args.repeat} runs per job, each in a fresh process (whole-process wall time, peak RSS "
              "from getrusage); G = 2,000 genes.\n\n")
    (out / "biology.md").write_text(header + "```\n" + table.round(4).to_string(index=False) + "\n```\n")
    sys.stdout.write(header + table.round(4).to_string(index=False) + "\n")
    return 0 if (table["status"] == "ok").all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
