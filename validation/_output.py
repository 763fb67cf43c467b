"""Where the validation scripts write: tables to ``validation/output/``, figures to ``docs/figures/``.

Both are written atomically (a temporary file moved into place), so an interrupted run leaves the
previous table or figure intact.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from shrinkpert._io import atomic_path

HERE = Path(__file__).resolve().parent
TABLES = HERE / "output"
FIGURES = HERE.parent / "docs" / "figures"


def write_table(frame: pd.DataFrame, name: str, *, index: bool = False) -> Path:
    """Write ``frame`` as ``validation/output/<name>`` (CSV) and return the path."""
    path = TABLES / name
    with atomic_path(path, force=True) as tmp:
        frame.to_csv(tmp, index=index)
    return path


def write_json(obj, name: str) -> Path:
    """Write ``obj`` as indented JSON to ``validation/output/<name>`` and return the path."""
    path = TABLES / name
    with atomic_path(path, force=True) as tmp:
        tmp.write_text(json.dumps(obj, indent=2))
    return path


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name: str) -> Path:
    """Save ``fig`` as ``docs/figures/<name>`` (PNG, 120 dpi) and close it."""
    path = FIGURES / name
    with atomic_path(path, force=True) as tmp:
        fig.savefig(tmp, dpi=120, format=path.suffix.lstrip("."))
    pyplot().close(fig)
    return path
