"""The command-line interface: demo on bundled data, effects on a file, refusing to overwrite."""

from __future__ import annotations

import inspect
import subprocess
import sys

import anndata as ad
import pandas as pd
import pytest

from shrinkpert import estimate_effects, group_statistics
from shrinkpert.cli import build_parser, main


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the demo (it evaluates two models and writes the report), shared by the tests."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["demo", "--out", str(out)])
    return out, code, printed.getvalue()


def test_demo_writes_outputs_and_summary(demo):
    out, code, printed = demo
    assert code == 0
    assert "STAT1" in printed and "target_effect" in printed
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert summary.loc["JAK2", "target_effect"] < -2
    effects = ad.read_h5ad(out / "effects.h5ad")
    assert effects.shape == (25, 299)
    shrunk = ad.read_h5ad(out / "shrunk.h5ad")
    assert set(shrunk.layers) >= {"effect", "posterior_mean", "lfsr"}
    assert summary.loc["IFNGR1", "n_lfsr_below_0.05"] > summary.loc["CD86", "n_lfsr_below_0.05"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_demo_scores_two_models_and_writes_the_report(demo):
    out, _, printed = demo
    assert "Open first:" in printed and str(out / "report.html") in printed
    scores = pd.read_csv(out / "evaluation" / "summary.csv")
    assert set(scores["model"]) == {"training mean", "linear (PCA-ridge)"}
    assert {"train_centroid", "control"} <= set(scores["reference"])
    assert "<svg" in (out / "report.html").read_text() or "data:image/svg" in (out / "report.html").read_text()


@pytest.mark.filterwarnings("ignore:1 cells:shrinkpert.errors.ShrinkpertWarning")  # the fixture's zero-count cell
def test_refuses_to_overwrite_without_force(demo, tmp_path, counts, capsys):
    out = demo[0]
    before = sorted(p.name for p in out.iterdir())
    assert main(["demo", "--out", str(out)]) == 2  # refused before any work
    assert "not empty; pass --force" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before
    path = tmp_path / "in.h5ad"
    counts.write_h5ad(path)
    target = tmp_path / "e"
    target.mkdir()
    (target / "old.txt").write_text("x")
    assert main(["effects", str(path), "--out", str(target), "--exclude", "G3"]) == 2
    assert main(["effects", str(path), "--out", str(target), "--exclude", "G3", "--force"]) == 0
    assert (target / "effects.h5ad").exists()


@pytest.mark.filterwarnings("ignore:1 cells:shrinkpert.errors.ShrinkpertWarning")  # the fixture's zero-count cell
def test_effects_and_stats_on_a_file(tmp_path, counts):
    path = tmp_path / "in.h5ad"
    counts.write_h5ad(path)
    before = path.read_bytes()
    assert main(["effects", str(path), "--out", str(tmp_path / "e"), "--exclude", "G3"]) == 0
    effects = ad.read_h5ad(tmp_path / "e" / "effects.h5ad")
    assert list(effects.obs_names) == ["G1", "G2"]
    assert main(["stats", str(path), "--out", str(tmp_path / "s"), "--normalize", "log1p"]) == 0
    assert ad.read_h5ad(tmp_path / "s" / "stats.h5ad").shape == (4, counts.n_vars)
    assert path.read_bytes() == before  # the input file is never touched


def test_bad_control_is_a_clean_error(tmp_path, counts, capsys):
    path = tmp_path / "in.h5ad"
    counts.write_h5ad(path)
    assert main(["effects", str(path), "--out", str(tmp_path / "e"), "--control", "NT"]) == 2
    assert "Control label 'NT'" in capsys.readouterr().err


def test_python_dash_m_runs():
    done = subprocess.run([sys.executable, "-m", "shrinkpert", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.startswith("shrinkpert ")


@pytest.mark.parametrize("command,func", [("effects", estimate_effects), ("stats", group_statistics)])
def test_cli_defaults_equal_api_defaults(command, func):
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]
    defaults = {a.dest: a.default for a in sub._actions}
    params = inspect.signature(func).parameters
    for name, value in defaults.items():
        if name in params and params[name].default is not inspect.Parameter.empty:
            assert params[name].default == value, name


def test_evaluate_cli_defaults_equal_the_api_defaults():
    import dataclasses

    from shrinkpert import EvaluationConfig, evaluate

    sub = build_parser()._subparsers._group_actions[0].choices["evaluate"]
    cli = {a.dest: a.default for a in sub._actions}
    api = {name: p.default for name, p in inspect.signature(evaluate).parameters.items()
           if p.default is not inspect.Parameter.empty}
    api.update({f.name: f.default for f in dataclasses.fields(EvaluationConfig)})
    # how the CLI spells a default the API spells otherwise
    spelled = {"references": ["auto"], "metrics": None, "baselines": None, "weights": "auto"}
    compared = 0
    for name, value in cli.items():
        if name in api:
            expected = spelled.get(name, api[name])
            assert value == expected, (name, value, api[name])
            compared += 1
    assert cli["no_calibrate"] is (not api["calibrate"])
    assert compared >= 15
