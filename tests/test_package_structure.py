"""House rules that are cheap to check mechanically."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import shrinkpert

ROOT = pathlib.Path(shrinkpert.__file__).parent


def test_numba_jit_only_through_the_one_decorator():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "_numba.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in {"njit", "jit"}:
                offenders.append(str(path))
            if isinstance(node, ast.keyword) and node.arg == "fastmath":
                offenders.append(str(path))
    assert not offenders, offenders


def test_kernels_live_only_in_kernel_modules():
    for path in ROOT.rglob("*.py"):
        text = path.read_text()
        if "from .._numba import kernel" in text or "from ._numba import kernel" in text:
            assert path.name.startswith("_") and "kernels" in path.name, path


def test_import_is_light():
    code = "import sys, shrinkpert; print(int('matplotlib' in sys.modules), int('scanpy' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["0", "0"]


def test_no_print_in_library_code():
    for path in ROOT.rglob("*.py"):
        if path.name == "cli.py":
            continue
        tree = ast.parse(path.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"]
        assert not calls, path
