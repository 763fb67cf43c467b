"""``shrinkpert report TABLE_DIR --out DIR``: the HTML report of a saved MetricTable.

``TABLE_DIR`` is a folder written by :func:`shrinkpert.report.save_table` or by
``shrinkpert evaluate --out``. Optional sections come from CSV files given as
``--extra NAME=FILE.csv`` (NAME one of :data:`shrinkpert.report.EXTRA_SECTIONS` or any other
title). Writes ``DIR/report.html`` atomically.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to ``subparsers`` and return its parser.

    The parser's default ``handler`` is :func:`run`.
    """
    p = subparsers.add_parser("report", help="write the self-contained HTML report of a saved evaluation",
                              description=__doc__.splitlines()[0])
    p.add_argument("table", help="folder with metrics.csv and summary.csv (from `shrinkpert evaluate --out`)")
    p.add_argument("--out", required=True, help="output folder (report.html is written there)")
    p.add_argument("--force", action="store_true", help="overwrite an existing report.html")
    p.add_argument("--title", default=None, help="page title")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=FILE.csv",
                   help="an optional section from a CSV table (repeatable), e.g. difficulty=strata.csv")
    p.set_defaults(handler=run)
    return p


def _extras(items: list[str]) -> dict:
    import pandas as pd

    from ..errors import InputError, MissingKeyError

    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"--extra {item!r}: write NAME=FILE.csv, e.g. difficulty=strata.csv.")
        if not Path(path).is_file():
            raise MissingKeyError(f"--extra {name}: file {path!r} not found.")
        out[name] = pd.read_csv(path)
    return out


def run(args: argparse.Namespace) -> Path:
    """Write ``<args.out>/report.html`` from the table folder ``args.table``; returns the file."""
    from .html import write_html
    from .tables import load_table

    table = load_table(args.table)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        from ..errors import InputError

        raise InputError(f"--out {str(out)!r} is a file; give a folder.")
    path = write_html(table, out / "report.html", title=args.title, extras=_extras(args.extra), force=args.force)
    print(f"wrote {path}")
    return path
