"""Benchmark: ``transcriptome_impact`` per perturbation at 10k genes, this tree vs another.

Simulated DE summaries (``--perturbations`` × ``--genes``; per perturbation 1–30 % of genes
affected with N(0, scale²) effects, standard errors U(0.05, 0.6)) are written once to a
temporary ``.npz``. Each job then runs in a fresh Python process and reports the wall and CPU
time of the ``transcriptome_impact`` call (default arguments: five ash fits per perturbation,
TRADE's default) and of the whole process, and its peak RSS:

* ``new``: the package in this tree;
* ``old``: the package at ``--old`` (e.g. the main checkout), on the first ``--old-perturbations``
  perturbations only (it is ~5× slower), to bound the CPU time of a run.

A warm-up run of each job (a few perturbations) fills the Numba caches first. The results of
the two jobs are compared on the perturbations both ran. With ``--breakdown N``, each tree
also times the stages of its fits on the first N perturbations in a one-thread process:
filters and significance sets, component grids, likelihood matrices (in a tree that has them,
with the subset refits copying the columns they share with the main fit), mix-SQP, log likelihood
(CPU time per perturbation; this uses the package's private kernels, whose signatures are the
same in both trees). Usage::

    python benchmarks/impact.py --old /work/main --breakdown 20

Results go to ``benchmarks/results/impact.csv`` and ``.md``. TRADE's own time (R, one core,
10,000 genes: 2.5 s TI only, 7.5 s with the significance split) is from the project's design
notes, not re-measured here (R's ashr and TRADE are not installable on this machine).
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
ROOT = HERE.parent


def simulate(n_perturbations: int, n_genes: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    se = rng.uniform(0.05, 0.6, (n_perturbations, n_genes))
    frac = rng.uniform(0.01, 0.3, (n_perturbations, 1))
    scale = rng.uniform(0.1, 1.5, (n_perturbations, 1))
    affected = rng.random((n_perturbations, n_genes)) < frac
    beta = np.where(affected, rng.normal(0, 1, (n_perturbations, n_genes)) * scale, 0.0)
    return beta + se * rng.normal(size=(n_perturbations, n_genes)), se


def _markdown(frame) -> list[str]:
    cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    return ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * frame.shape[1]] + [
        "| " + " | ".join(r) + " |" for r in cells]


# ----------------------------------------------------------------------------- child side
def _child(data: str, n: int, out: str) -> None:
    import warnings
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd

    from shrinkpert.effects.impact import transcriptome_impact

    arrays = np.load(data)
    X, S = arrays["effect"][:n], arrays["std_error"][:n]
    eff = SimpleNamespace(effect=X, std_error=S, perturbations=pd.Index(range(n), name="perturbation"),
                          genes=pd.RangeIndex(X.shape[1]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0, c0 = time.perf_counter(), time.process_time()
        frame = transcriptome_impact(eff)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    frame.to_pickle(out)
    print(json.dumps({"wall": wall, "cpu": cpu, "warnings": [str(w.message) for w in caught],
                      "rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))


def _breakdown(data: str, n: int) -> None:
    """CPU time per perturbation of each stage of the fits (one thread, after a warm-up)."""
    import numpy as np

    from shrinkpert.effects import _impact_kernels as ik
    from shrinkpert.effects import _mixture_kernels as mk
    from shrinkpert.effects import impact, mixture

    arrays = np.load(data)
    X, S = arrays["effect"][:n], arrays["std_error"][:n]
    keep = np.zeros(X.shape[1], dtype=bool)
    clock = time.process_time
    # trees whose subset refits share the main fit's likelihood columns (and skip their log likelihood)
    sharing = hasattr(ik, "uniform_lik_rows_from")
    for rep in range(2):  # the first pass compiles or loads the kernels
        t = dict.fromkeys(("plan", "grids", "likelihood", "mixsqp", "loglik"), 0.0)
        n_fits = n_iter = 0
        for i in range(X.shape[0]):
            c0 = clock()
            problems: list = []
            parents: list = []
            impact._plan(X[i], S[i], impact._z_pvalue(X[i], S[i]), keep, model_significant=True, alpha=0.05,
                         max_abs_effect=10.0, problems=problems, **({"parents": parents} if sharing else {}))
            t["plan"] += clock() - c0
            main = D0 = None
            for q, (x, s, grange) in enumerate(problems):
                c0 = clock()
                a, b = impact._components_for(x, s, grange)
                c1 = clock()
                L = np.empty((x.size, a.size))
                rowmax = np.empty(x.size)
                if not sharing or len(problems) == 1:
                    ik.uniform_lik_rows(x, s, a, b, L, rowmax)
                elif q == 0:
                    main, D0 = (a, b), np.empty_like(L)
                    none = np.full(a.size, -1, dtype=np.int64)
                    ik.uniform_lik_rows_from(x, s, a, b, none, D0, none, D0, L, rowmax)
                else:
                    ik.uniform_lik_rows_from(x, s, a, b, impact._shared_columns(main, (a, b)), D0, parents[q][1],
                                             L, L, rowmax)
                c2 = clock()
                pi = np.full(a.size, 1.0 / a.size)
                it, _ = mk.mixsqp(L, np.zeros(a.size), pi, mixture.SQP_EPS, 1e-8, 1000, mixture.N_EM_WARMUP,
                                  False, mixture.CHUNK)
                c3 = clock()
                if not sharing or q == 0:
                    mk.loglik_chunked(L, rowmax, pi, mixture.CHUNK)
                c4 = clock()
                t["grids"] += c1 - c0
                t["likelihood"] += c2 - c1
                t["mixsqp"] += c3 - c2
                t["loglik"] += c4 - c3
                n_fits += 1
                n_iter += int(it)
            if not rep and len(problems) > 1:  # warmed up on a perturbation with subset refits
                break
    out = {f"{k}_ms": 1e3 * v / n for k, v in t.items()}
    out |= {"fits_per_perturbation": n_fits / n, "mixsqp_iterations_per_fit": n_iter / n_fits}
    print(json.dumps(out))


def _run(tree: Path, data: str, n: int, out: str, breakdown: bool = False) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    if breakdown:
        env["NUMBA_NUM_THREADS"] = "1"
    t0 = time.perf_counter()
    flag = "--breakdown-child" if breakdown else "--child"
    proc = subprocess.run([sys.executable, __file__, flag, data, str(n), out], env=env,
                          capture_output=True, text=True, check=True, cwd=tempfile.gettempdir())
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process"] = time.perf_counter() - t0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--perturbations", type=int, default=200)
    ap.add_argument("--genes", type=int, default=10_000)
    ap.add_argument("--old", type=Path, default=None, help="another checkout to compare with")
    ap.add_argument("--old-perturbations", type=int, default=40)
    ap.add_argument("--breakdown", type=int, default=0, help="time the stages on this many perturbations")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--breakdown-child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child[0], int(args.child[1]), args.child[2])
        return
    if args.breakdown_child:
        _breakdown(args.breakdown_child[0], int(args.breakdown_child[1]))
        return
    import numpy as np
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "effects.npz")
        X, S = simulate(args.perturbations, args.genes)
        np.savez(data, effect=X, std_error=S)
        jobs = [("new", ROOT, args.perturbations)]
        if args.old is not None:
            jobs.append(("old", args.old.resolve(), min(args.old_perturbations, args.perturbations)))
        rows, frames, stages = [], {}, []
        for name, tree, n in jobs:
            _run(tree, data, 2, str(Path(tmp) / "warm.pkl"))  # compile / load the Numba caches
            res = _run(tree, data, n, str(Path(tmp) / f"{name}.pkl"))
            frames[name] = pd.read_pickle(Path(tmp) / f"{name}.pkl")
            rows.append({
                "job": name, "perturbations": n, "genes": args.genes,
                "ms_per_perturbation_wall": 1e3 * res["wall"] / n,
                "ms_per_perturbation_cpu": 1e3 * res["cpu"] / n,
                "call_s": res["wall"], "process_s": res["process"], "peak_rss_gb": res["rss_gb"],
                "warnings": " | ".join(res["warnings"]),
            })
        for name, tree, _ in jobs if args.breakdown else ():
            n = min(args.breakdown, args.perturbations)
            stages.append({"job": name, "perturbations": n, **_run(tree, data, n, "", breakdown=True)})
    table = pd.DataFrame(rows)
    notes = []
    if "old" in frames:
        old, new = frames["old"], frames["new"].iloc[: len(frames["old"])]
        per = table.set_index("job")["ms_per_perturbation_wall"]
        cpu = table.set_index("job")["ms_per_perturbation_cpu"]
        notes.append(f"speed-up per perturbation: wall {per['old'] / per['new']:.2f}x, "
                     f"CPU {cpu['old'] / cpu['new']:.2f}x")
        gain = (new["loglik"] - old["loglik"]).to_numpy()
        notes.append(f"main-fit log likelihood new - old: min {gain.min():.2e}, max {gain.max():.2e} "
                     "(positive: the new fit found a higher likelihood, i.e. the old one had stalled)")
        conv = new["converged"].to_numpy()
        notes.append(f"perturbations whose fits all reached mix-SQP's tolerance (new): {conv.sum()} of {conv.size}")
        for col in ("transcriptome_wide_impact", "effective_n_genes", "impact_nonsignificant",
                    "impact_nonsignificant_fdr", "loglik"):
            rel = ((new[col] - old[col]).abs() / old[col].abs()).to_numpy()
            for label, sel in (("converged", conv), ("not converged", ~conv)):
                r = rel[sel & np.isfinite(rel)]
                if r.size:
                    notes.append(f"{col} ({label}): max relative difference new vs old {r.max():.2e}, "
                                 f"median {np.median(r):.2e}, > 1e-8 in {(r > 1e-8).sum()} of {r.size}")
    notes.append("load average (1, 5, 15 min) at the end of the run: "
                 + ", ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores")
    out = HERE / "results" / "impact"
    table.to_csv(out.with_suffix(".csv"), index=False)
    md = [f"# transcriptome_impact, {args.genes:,} genes (`python benchmarks/impact.py`)", "",
          *_markdown(table.drop(columns="warnings")), ""]
    if stages:
        stage_table = pd.DataFrame(stages).drop(columns="process", errors="ignore")
        stage_table.to_csv(out.with_name("impact_stages.csv"), index=False)
        md += ["CPU ms per perturbation by stage (one thread; `--breakdown`):", "",
               *_markdown(stage_table.drop(columns=["wall", "cpu", "rss_gb", "warnings"], errors="ignore")), ""]
    md += [f"- {n}" for n in notes]
    md += [f"- warnings ({r['job']}): {r['warnings'] or 'none'}" for r in rows]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
