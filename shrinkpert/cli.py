"""Command-line interface: ``shrinkpert stats | merge | effects | evaluate | report | demo``.

Each subcommand calls one public function with the API's defaults (from ``_vocab``), writes
its outputs atomically into ``--out DIR`` (refusing a non-empty or unwritable folder without
doing any work, and leaving no empty folder behind on failure) and prints a short summary.
A problem with the input or an output is one line on stderr and exit code 2, never a traceback.
The numerical stack is imported only when a command runs, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__, _cli_scale
from ._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY, TARGET_SUM
from .errors import ShrinkpertError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["main", "build_parser"]

#: Exit code for bad inputs, options or outputs.
EXIT_USAGE = 2


def _write_h5ad(adata, path: Path) -> None:
    from ._io import atomic_path

    with atomic_path(path, force=True) as tmp:
        adata.write_h5ad(tmp)


def _write_csv(frame: pd.DataFrame, path: Path, *, index: bool = True) -> None:
    from ._io import atomic_path

    with atomic_path(path, force=True) as tmp:
        frame.to_csv(tmp, index=index)


def _add_exclude(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exclude", nargs="+", default=None, metavar="LABEL",
                   help="labels whose cells are left out (e.g. unassigned)")


def _add_common(p: argparse.ArgumentParser, *, needs_input: bool = True) -> None:
    if needs_input:
        p.add_argument("input", help="input .h5ad file (read in blocks, never modified)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite files in a non-empty --out folder")
    p.add_argument("--progress", action="store_true", help="show a progress bar")


def _add_effect_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--perturbation-key", default=PERTURBATION_KEY, help="obs column of perturbation labels")
    p.add_argument("--control", default=CONTROL, help="control label")
    p.add_argument("--scale", default="log1p", choices=["log1p", "log2fc"], help="effect scale")
    p.add_argument("--layer", default=None, help="layer with raw counts (default X)")
    p.add_argument("--target-sum", type=float, default=TARGET_SUM, help="counts per cell after normalisation")
    p.add_argument("--min-cells", type=int, default=MIN_CELLS, help="drop perturbations with fewer cells")
    _add_exclude(p)
    p.add_argument("--tidy", action="store_true", help="also write the long table effects.csv")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="shrinkpert", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"shrinkpert {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress messages")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stats", help="per-group sufficient statistics in one pass")
    _add_common(p)
    p.add_argument("--groupby", default=PERTURBATION_KEY, help="obs column defining the groups")
    _add_exclude(p)
    p.add_argument("--layer", default=None)
    p.add_argument("--normalize", default=None, choices=["log1p", "total"])
    p.add_argument("--target-sum", type=float, default=TARGET_SUM)
    _cli_scale.add_stats_arguments(p)

    p = sub.add_parser("effects", help="per-perturbation effects vs control with standard errors")
    _add_common(p)
    _add_effect_options(p)

    p = sub.add_parser("evaluate", help="score predicted cells against true cells: metrics, baselines, calibration")
    _add_common(p, needs_input=False)
    p.add_argument("--pred", required=True, nargs="+", metavar="[NAME=]FILE",
                   help="predicted cells (.h5ad, read in blocks); several models as NAME=FILE NAME=FILE ...")
    p.add_argument("--truth", required=True, help="true cells (.h5ad, read in blocks)")
    p.add_argument("--perturbation-key", default=PERTURBATION_KEY, help="obs column of perturbation labels")
    p.add_argument("--control", default=CONTROL, help="control label")
    _add_exclude(p)
    p.add_argument("--scale", default="auto", choices=["auto", "log1p", "counts"], help="scale of both inputs")
    p.add_argument("--layer", default=None, help="layer to read instead of X (both inputs)")
    p.add_argument("--target-sum", type=float, default=TARGET_SUM, help="counts per cell after normalisation")
    p.add_argument("--metrics", nargs="*", default=None,
                   help="metric names (default: means, deltas, DE and, when targets are measured genes, target-gene "
                        "metrics; energy_distance/mmd only when named)")
    p.add_argument("--guide-key", default=None, help="obs column of guides in both inputs (adds dose_order_score)")
    p.add_argument("--cells-per-perturbation", type=int, default=100,
                   help="cells sampled per perturbation for energy_distance/mmd")
    p.add_argument("--train", default=None, help="cells of the training perturbations (.h5ad): adds the train_centroid "
                   "reference; refused if it shares cells or perturbations with --truth")
    p.add_argument("--population", default=None, metavar="REF",
                   help="a saved PopulationReference: adds the population reference and population weights")
    p.add_argument("--references", nargs="+", default=["auto"],
                   help="delta references: auto (control, + train_centroid with --train, + population with "
                        "--population) or names from control, train_centroid, population, perturbed_centroid")
    p.add_argument("--allow-leakage", action="store_true",
                   help="allow the perturbed_centroid reference (the scored perturbations' own centroid; flagged)")
    p.add_argument("--weights", default="auto", choices=["auto", "none"],
                   help="gene weightings: auto (uniform + shrunken, + population with --population) or none")
    p.add_argument("--preset", default=None, choices=["vcc2026", "cell-eval-v1"],
                   help="a published evaluator's fixed settings (vcc2026: cell-eval2's VCC 2026 preset)")
    p.add_argument("--format", default="shrinkpert", choices=["shrinkpert", "cell-eval2"],
                   help="cell-eval2: also write results.csv and agg_results.csv in cell-eval2's layout (vcc2026)")
    p.add_argument("--de-test", default="welch", choices=["welch", "wilcoxon"],
                   help="test behind the DE calls: Welch on pseudobulks, or Wilcoxon rank-sum on cells vs the true "
                        "control cells (BH per perturbation either way)")
    p.add_argument("--truth-effects", nargs="+", default="raw", choices=["raw", "shrunk"],
                   help="score against raw true pseudobulks or the ash posterior means of the true effects; "
                        "'raw shrunk' gives both side by side (a truth column)")
    p.add_argument("--baselines", nargs="*", default=None, help="baseline names (default set if omitted)")
    p.add_argument("--no-calibrate", action="store_true", help="skip calibrated scores, DRF and BDS")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates over perturbations")
    p.add_argument("--seed", type=int, default=0, help="seed of the half split, random baselines and bootstrap")
    p.add_argument("--shard", type=_cli_scale._shard, default=None, metavar="i/N",
                   help="score only block i (from 0) of N of the sorted perturbations; combine the folders with 'merge'")

    p = sub.add_parser("demo", help="run the main job on the bundled Papalexi 2021 data")
    _add_common(p, needs_input=False)
    from .report.cli import add_parser as add_report_parser

    add_report_parser(sub)
    _cli_scale.add_parsers(sub)
    return parser


def _run_effects(source, args, out: Path) -> pd.DataFrame:
    from .effects.estimate import estimate_effects

    effects = estimate_effects(
        source,
        perturbation_key=args.perturbation_key,
        control=args.control,
        scale=args.scale,
        layer=args.layer,
        target_sum=args.target_sum,
        min_cells=args.min_cells,
        exclude=args.exclude,
        progress=args.progress,
    )
    summary = effects.summary()
    _write_h5ad(effects.to_anndata(), out / "effects.h5ad")
    _write_csv(summary, out / "summary.csv")
    if args.tidy:
        _write_csv(effects.to_frame(), out / "effects.csv", index=False)
    return summary


def _run_demo(source, args, out: Path) -> pd.DataFrame:
    """Effects, then shrinkage, then two simple trained models scored and reported: the main job."""
    from .effects.estimate import estimate_effects
    from .effects.shrink import shrink_effects

    effects = estimate_effects(source, exclude=args.exclude, progress=args.progress)
    shrunk = shrink_effects(effects)
    table = effects.summary()[["n_cells", "target", "target_effect", "target_z"]].join(shrunk.summary())
    _write_h5ad(effects.to_anndata(), out / "effects.h5ad")
    _write_h5ad(shrunk.to_anndata(), out / "shrunk.h5ad")
    _write_csv(shrunk.to_frame(), out / "effects.csv", index=False)
    _write_csv(table, out / "summary.csv")
    _demo_models(source, args, out)
    return table


def _demo_models(source, args, out: Path) -> None:
    """Score two models trained on a seeded two-thirds of the perturbations; write the HTML report.

    The models are the training-perturbation mean and Ahlmann-Eltze et al.'s linear PCA-ridge model
    (:mod:`shrinkpert.baselines.train`); each predicts one log1p profile per held-out perturbation,
    given as 30 identical cells (clipped at 0, the smallest log1p value), and is scored against the
    held-out true cells (log1p-normalised).
    """
    import anndata as ad
    import numpy as np

    import scipy.sparse as sp

    from .baselines import train_linear, train_mean
    from .data.read import scale_factors
    from .evaluation import evaluate
    from .stats.group import group_statistics

    adata = ad.read_h5ad(source)
    adata = adata[~adata.obs[args.perturbation_key].astype(str).isin(args.exclude)].copy()
    counts = adata.X.tocsr().astype(np.float64)
    counts = sp.diags(scale_factors(np.asarray(counts.sum(axis=1)).ravel(), args.target_sum)) @ counts
    counts.data = np.log1p(counts.data)
    adata.X = counts.tocsr()  # log1p of counts per target_sum
    labels = adata.obs[args.perturbation_key].astype(str)
    perts = np.array(sorted(set(labels) - {args.control}))
    rng = np.random.default_rng(2021)
    held_out = set(rng.choice(perts, size=len(perts) // 3, replace=False))
    control_rows = rng.permutation(np.flatnonzero(labels == args.control))
    in_test = labels.isin(held_out).to_numpy()
    in_test[control_rows[: len(control_rows) // 2]] = True
    truth, train = adata[in_test].copy(), adata[~in_test].copy()
    stats = group_statistics(train, args.perturbation_key)
    test_perts = sorted(held_out)
    models = {"training mean": train_mean(stats, test_perts, control=args.control),
              "linear (PCA-ridge)": train_linear(stats, test_perts, control=args.control)}
    preds = {}
    for name, model in models.items():
        rows = np.repeat(np.clip(np.asarray(model.mean), 0.0, None), 30, axis=0)  # log1p values are >= 0
        obs = {args.perturbation_key: np.repeat(np.asarray(model.perturbations.astype(str)), 30)}
        preds[name] = ad.AnnData(X=rows, obs=obs, var=truth.var[[]])
        preds[name].obs_names = [f"{name}:{i}" for i in range(len(rows))]
    result = evaluate(preds, truth, train=train, n_boot=200, seed=2021)
    from .report import save_table

    save_table(result, out / "evaluation", force=True)
    result.to_html(out / "report.html", title="shrinkpert demo: two trained models on Papalexi 2021", force=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 done, 2 bad input/option/output, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    out = Path(args.out)
    created = not out.exists()
    try:
        from ._io import prepare_out_dir

        out = prepare_out_dir(args.out, force=args.force)
        if args.command not in ("report", "merge"):
            _announce_compilation(args.command)
        table = _run(args, out)
        if table is not None:
            import pandas as pd

            with pd.option_context("display.width", 120, "display.max_columns", 20, "display.max_rows", 60):
                print(table.round(4).to_string())
        print(f"\nwrote {', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))} to {out}")
        if getattr(args, "closing", None):
            print(args.closing)
    except (ShrinkpertError, OSError) as exc:
        _remove_if_empty(out, created)
        what = "" if isinstance(exc, ShrinkpertError) else f"{type(exc).__name__}: "
        print(f"shrinkpert {args.command}: error: {what}{exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _remove_if_empty(out, created)
        print(f"shrinkpert {args.command}: interrupted; no partial output was written", file=sys.stderr)
        return 130
    return 0


def _remove_if_empty(out: Path, created: bool) -> None:
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def _announce_compilation(command: str) -> None:
    """Say so when the Numba kernels are not compiled yet (the first run; about a minute)."""
    from ._numba import cached_kernels_present

    if not cached_kernels_present():
        print(f"shrinkpert {command}: compiling the Numba kernels for this machine (first run only, about a minute; "
              "they are cached for later runs) ...", file=sys.stderr, flush=True)


def _predictions(items: list[str]):
    """One path, or ``{name: path}`` from ``NAME=FILE`` items (every item named when there are several)."""
    from .errors import InputError

    if len(items) == 1 and "=" not in items[0]:
        return items[0]
    named = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--pred {item!r}: with several predictions write NAME=FILE for each.")
        if name in named:
            raise InputError(f"--pred: the model name {name!r} is used twice.")
        named[name] = path
    return named


def _truth_effects(value: str | list[str]) -> str | tuple[str, ...]:
    """``--truth-effects``: one name as itself, several as a tuple (both side by side)."""
    if isinstance(value, str):
        return value
    return value[0] if len(value) == 1 else tuple(value)


def _run(args: argparse.Namespace, out: Path) -> pd.DataFrame | None:
    """Run one subcommand and return the table to print (None: nothing to print)."""
    if args.command == "report":
        args.handler(args)
        return None
    if args.command in ("stats", "merge"):
        return (_cli_scale.run_stats if args.command == "stats" else _cli_scale.run_merge)(args, out)
    if args.command == "effects":
        return _run_effects(args.input, args, out)
    if args.command == "evaluate":
        from .evaluation import evaluate

        options = dict(exclude=args.exclude, scale=args.scale, layer=args.layer, target_sum=args.target_sum,
                       references="auto" if args.references == ["auto"] else args.references,
                       weights=None if args.weights == "none" else "auto",
                       metrics="default" if args.metrics is None else args.metrics,
                       baselines="default" if args.baselines is None else args.baselines,
                       calibrate=not args.no_calibrate, n_boot=args.n_boot, seed=args.seed,
                       guide_key=args.guide_key, cells_per_perturbation=args.cells_per_perturbation,
                       train=args.train, population=args.population, allow_leakage=args.allow_leakage,
                       truth_effects=_truth_effects(args.truth_effects), de_test=args.de_test,
                       progress=args.progress)
        if args.shard is not None:
            options["shard"] = args.shard
        if args.preset is not None:  # the preset fixes these; pass only what the user set
            options = {k: v for k, v in options.items() if k not in ("references", "weights", "metrics", "baselines")
                       or v not in ("auto", "default")}
            options["preset"] = args.preset
        if args.format == "cell-eval2" and args.preset != "vcc2026":
            from .errors import InputError

            raise InputError("--format cell-eval2 needs --preset vcc2026.")
        result = evaluate(_predictions(args.pred), args.truth, perturbation_key=args.perturbation_key,
                          control=args.control, **options)
        if args.format == "cell-eval2":
            result.to_cell_eval2(out / "cell-eval2", force=True)
        from .report import save_table

        save_table(result, out, force=True)  # metrics.csv, summary.csv, params.json, table.json
        return result.summary()
    from .data.datasets import papalexi2021_path

    ns = argparse.Namespace(perturbation_key=PERTURBATION_KEY, control=CONTROL, scale="log1p", layer=None,
                            target_sum=TARGET_SUM, min_cells=MIN_CELLS, exclude=["unassigned"], tidy=True,
                            progress=args.progress)
    table = _run_demo(papalexi2021_path(), ns, out)
    print("Papalexi et al. 2021 THP-1 ECCITE-seq (bundled): effects vs non-targeting (log1p scale),"
          " shrunk with ash (normal mixture, one prior per perturbation)")
    args.closing = (f"Open first:\n  {out / 'report.html'}  (two trained models scored on held-out perturbations)\n"
                    f"  {out / 'summary.csv'}  (effects and shrinkage, one row per perturbation)\n"
                    f"  {out / 'evaluation' / 'summary.csv'}  (every metric, weighting and reference)")
    return table
