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


def _imports(path: pathlib.Path):
    """(imported module path parts, imported names) of every relative import in ``path``."""
    package = list(path.relative_to(ROOT).parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[: len(package) - (node.level - 1)]
            yield base + (node.module.split(".") if node.module else []), [a.name for a in node.names]


def _subpackage(parts):
    return parts[0] if parts and (ROOT / parts[0]).is_dir() else None


def test_no_import_of_another_subpackages_private_names():
    offenders = []
    for path in ROOT.rglob("*.py"):
        own = _subpackage(list(path.relative_to(ROOT).parts))
        for target, names in _imports(path):
            other = _subpackage(target)
            if other is None or other == own:
                continue
            private = [p for p in target[1:] if p.startswith("_")] + [n for n in names if n.startswith("_") and n[:2] != "__"]
            if private:
                offenders.append(f"{path.relative_to(ROOT)}: {'.'.join(target)} {names}")
    assert not offenders, offenders


def test_metrics_do_not_import_later_stages():
    later = {"ontarget", "baselines", "calibration", "biology", "evaluation", "strata", "report"}
    offenders = [f"{path.relative_to(ROOT)} -> {'.'.join(t)}" for path in (ROOT / "metrics").rglob("*.py")
                 for t, _ in _imports(path) if _subpackage(t) in later]
    assert not offenders, offenders


def test_no_folder_named_like_build_output():
    assert not any(p.is_dir() for p in ROOT.rglob("target")), "rename target/ folders (build-output name)"
