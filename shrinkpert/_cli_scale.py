"""Command-line pieces for screens larger than one pass: ``stats --shard i/N`` and ``merge``.

``shrinkpert stats DATA --shard i/N --out part_i`` computes the statistics of one contiguous
row range; ``shrinkpert merge part_* --out whole`` checks the parts' provenance and combines
them. Both write ``stats.npz`` (reloadable with :func:`shrinkpert.load_statistics`, and the
input of ``merge``), ``stats.h5ad`` and ``summary.csv`` into their ``--out`` folder.

``merge`` also combines the folders of ``shrinkpert evaluate --shard i/N`` (recognised by the
``shard`` entry of their ``manifest.json``) into the evaluation of the whole run
(:func:`shrinkpert.evaluation.partition.merge_tables`): one verb for "put the parts of a sharded
run back together", whichever command made them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["add_stats_arguments", "add_parsers", "run_stats", "run_merge"]


def _shard(text: str) -> tuple[int, int]:
    """``"i/N"`` → ``(i, N)`` with ``0 <= i < N``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r} is not i/N (e.g. 0/4 for the first of four shards)") from None
    if not (n >= 1 and 0 <= i < n):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < N (shards are numbered from 0)")
    return i, n


def add_stats_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--shard i/N`` to the ``stats`` subcommand."""
    parser.add_argument("--shard", type=_shard, default=None, metavar="i/N",
                        help="only shard i (from 0) of N contiguous row ranges; combine parts with 'merge'")


def add_parsers(subparsers) -> None:
    """Add the ``merge`` subcommand."""
    p = subparsers.add_parser("merge", help="combine the parts of a sharded run (stats --shard or evaluate --shard)")
    p.add_argument("parts", nargs="+", help="output folders of 'stats --shard' (or their stats.npz files) or of "
                   "'evaluate --shard' (recognised by their manifest.json)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite files in a non-empty --out folder")
    p.add_argument("--no-check", action="store_true",
                   help="merge disjoint cells of different inputs without the provenance checks")


def _write(stats, out: Path) -> pd.DataFrame:
    from .cli import _write_csv, _write_h5ad
    from .stats.shards import save_statistics

    save_statistics(stats, out / "stats.npz", force=True)
    _write_h5ad(stats.to_anndata(), out / "stats.h5ad")
    table = stats.summary()
    _write_csv(table, out / "summary.csv")
    return table


def run_stats(args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """``shrinkpert stats``: one pass (or one shard) and its outputs."""
    from .stats.group import group_statistics

    stats = group_statistics(args.input, args.groupby, layer=args.layer, normalize=args.normalize,
                             target_sum=args.target_sum, exclude=args.exclude, progress=args.progress,
                             shard=getattr(args, "shard", None))
    return _write(stats, out)


def run_merge(args: argparse.Namespace, out: Path) -> pd.DataFrame:
    """``shrinkpert merge``: check and combine the parts (statistics, or evaluation partials)."""
    from .evaluation.partition import is_partial
    from .stats.shards import merge_statistics

    partial = [is_partial(p) for p in args.parts]
    if any(partial):
        from .errors import InputError
        from .evaluation.partition import merge_tables
        from .report import save_table

        if not all(partial):
            raise InputError("merge: some parts are evaluation shards and some are not; merge one kind at a time.")
        if args.no_check:
            raise InputError("merge: --no-check does not apply to evaluation shards (their checks make the merge exact).")
        table = merge_tables(args.parts)
        save_table(table, out, force=True)
        return table.summary()

    return _write(merge_statistics([Path(p) for p in args.parts], check=not args.no_check), out)
