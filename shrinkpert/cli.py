"""Command-line interface: ``shrinkpert stats | effects | evaluate | demo``.

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

from . import __version__
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

    p = sub.add_parser("effects", help="per-perturbation effects vs control with standard errors")
    _add_common(p)
    _add_effect_options(p)

    p = sub.add_parser("evaluate", help="score predicted cells against true cells: metrics, baselines, calibration")
    _add_common(p, needs_input=False)
    p.add_argument("--pred", required=True, help="predicted cells (.h5ad, read in blocks)")
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
    p.add_argument("--references", nargs="*", default=["control", "perturbed_centroid"], help="delta references")
    p.add_argument("--baselines", nargs="*", default=None, help="baseline names (default set if omitted)")
    p.add_argument("--no-calibrate", action="store_true", help="skip calibrated scores, DRF and BDS")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates over perturbations")
    p.add_argument("--seed", type=int, default=0, help="seed of the half split, random baselines and bootstrap")

    p = sub.add_parser("demo", help="run the main job on the bundled Papalexi 2021 data")
    _add_common(p, needs_input=False)
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
    """Effects, then shrinkage: the main job on the bundled data."""
    from .effects.estimate import estimate_effects
    from .effects.shrink import shrink_effects

    effects = estimate_effects(source, exclude=args.exclude, progress=args.progress)
    shrunk = shrink_effects(effects)
    table = effects.summary()[["n_cells", "target", "target_effect", "target_z"]].join(shrunk.summary())
    _write_h5ad(effects.to_anndata(), out / "effects.h5ad")
    _write_h5ad(shrunk.to_anndata(), out / "shrunk.h5ad")
    _write_csv(shrunk.to_frame(), out / "effects.csv", index=False)
    _write_csv(table, out / "summary.csv")
    return table


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (0 done, 2 bad input/option/output, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    out = Path(args.out)
    created = not out.exists()
    try:
        from ._io import prepare_out_dir

        out = prepare_out_dir(args.out, force=args.force)
        _announce_compilation(args.command)
        table = _run(args, out)
        import pandas as pd

        with pd.option_context("display.width", 120, "display.max_columns", 20, "display.max_rows", 60):
            print(table.round(4).to_string())
        print(f"\nwrote {', '.join(sorted(p.name for p in out.iterdir() if not p.name.startswith('.')))} to {out}")
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


def _run(args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """Run one subcommand and return the table to print."""
    if args.command == "stats":
        from .stats.group import group_statistics

        stats = group_statistics(args.input, args.groupby, layer=args.layer, normalize=args.normalize,
                                 target_sum=args.target_sum, exclude=args.exclude, progress=args.progress)
        _write_h5ad(stats.to_anndata(), out / "stats.h5ad")
        table = stats.summary()
        _write_csv(table, out / "summary.csv")
        return table
    if args.command == "effects":
        return _run_effects(args.input, args, out)
    if args.command == "evaluate":
        from .evaluation import evaluate

        result = evaluate(args.pred, args.truth, perturbation_key=args.perturbation_key, control=args.control,
                          exclude=args.exclude, scale=args.scale, layer=args.layer, target_sum=args.target_sum,
                          metrics="default" if args.metrics is None else args.metrics,
                          references=args.references,
                          baselines="default" if args.baselines is None else args.baselines,
                          calibrate=not args.no_calibrate, n_boot=args.n_boot, seed=args.seed,
                          guide_key=args.guide_key, cells_per_perturbation=args.cells_per_perturbation,
                          progress=args.progress)
        _write_csv(result.to_frame(), out / "metrics.csv", index=False)
        table = result.summary()
        _write_csv(table, out / "summary.csv")
        return table
    from .data.datasets import papalexi2021_path

    ns = argparse.Namespace(perturbation_key=PERTURBATION_KEY, control=CONTROL, scale="log1p", layer=None,
                            target_sum=TARGET_SUM, min_cells=MIN_CELLS, exclude=["unassigned"], tidy=True,
                            progress=args.progress)
    table = _run_demo(papalexi2021_path(), ns, out)
    print("Papalexi et al. 2021 THP-1 ECCITE-seq (bundled): effects vs non-targeting (log1p scale),"
          " shrunk with ash (normal mixture, one prior per perturbation)")
    return table
