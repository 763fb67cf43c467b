"""The documentation site builds with ``mkdocs build --strict``: a broken link, a missing page or
an API reference that does not resolve (mkdocstrings) fails this test."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    missing = [m for m in ("mkdocs", "mkdocstrings", "mkdocstrings_handlers", "pymdownx")
               if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install 'shrinkpert[docs]')")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    page = (tmp_path / "site" / "api" / "evaluate" / "index.html").read_text(encoding="utf-8")
    assert "shrinkpert.evaluate" in page or "evaluate" in page
    assert "Parameters" in page  # the numpy docstring sections were parsed, not dumped as text
