"""The bad-input catalogue: every case a clear error (class and message), the input unchanged.

Each case runs through the Python API and, where a command takes the input, through the CLI
(one line on stderr, exit code 2, no traceback). Inputs are compared with a deep copy (in memory)
or their bytes (files) afterwards.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shrinkpert
from shrinkpert.errors import InputError, MissingKeyError, OutputExistsError
from tests.conftest import make_counts

QUICK = dict(metrics=["mse", "pearson_delta"], n_boot=20)


@pytest.fixture
def counts():
    adata = make_counts(np.random.default_rng(7), n_cells=240, n_genes=30)
    adata.X[5, 0] = 1  # no empty cell (make_counts has one; here it would only warn)
    adata.X = sp.csr_matrix(adata.X)
    return adata


def _unchanged(before: ad.AnnData, after: ad.AnnData) -> None:
    assert before.obs.equals(after.obs) and before.var.equals(after.var)
    a, b = before.X, after.X
    assert a.dtype == b.dtype
    assert (a != b).nnz == 0 if sp.issparse(a) else np.array_equal(a, b)


def _digest(path) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shrinkpert", *args], capture_output=True, text=True, timeout=300)


def _one_line_error(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and pd.Series(lines).str.contains(pattern).all(), result.stderr


# --------------------------------------------------------------------------- the control


def _with_control_cells(adata: ad.AnnData, n: int) -> ad.AnnData:
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    control = np.flatnonzero(labels == "non-targeting")
    keep = np.ones(adata.n_obs, dtype=bool)
    keep[control[n:]] = False
    return adata[keep].copy()


def test_a_control_of_one_cell_is_refused_by_evaluate_and_estimate_effects(counts):
    tiny = _with_control_cells(counts, 1)
    before = tiny.copy()
    with pytest.raises(InputError, match=r"truth: the control 'non-targeting' has 1 cell; at least 3"):
        shrinkpert.evaluate(tiny, tiny, **QUICK)
    with pytest.raises(InputError, match=r"data: the control 'non-targeting' has 1 cell; at least 3"):
        shrinkpert.estimate_effects(tiny)
    _unchanged(before, tiny)


def test_two_control_cells_are_refused_three_accepted(counts):
    with pytest.raises(InputError, match="has 2 cells; at least 3"):
        shrinkpert.evaluate(_with_control_cells(counts, 2), _with_control_cells(counts, 2), **QUICK)
    three = _with_control_cells(counts, 3)
    assert shrinkpert.estimate_effects(three).control_n_cells == 3


def test_a_misspelled_control_names_the_side_and_the_labels(counts):
    with pytest.raises(MissingKeyError, match=r"truth: Control label 'non-targetting' is not in .*'non-targeting'"):
        shrinkpert.evaluate(counts, counts, control="non-targetting", **QUICK)


def test_a_missing_label_column_names_the_side(counts):
    pred = counts.copy()
    pred.obs = pred.obs.rename(columns={"perturbation": "guide"})
    with pytest.raises(MissingKeyError, match=r"pred: obs has no column 'perturbation'.*'guide'"):
        shrinkpert.evaluate(pred, counts, **QUICK)


# --------------------------------------------------------------------------- exclusions


def test_excluded_labels_need_not_be_predicted(counts):
    truth = counts.copy()
    labels = truth.obs["perturbation"].astype(str).to_numpy()
    labels[:20] = "unassigned"
    truth.obs["perturbation"] = labels
    pred = truth[truth.obs["perturbation"] != "unassigned"].copy()
    with pytest.raises(InputError, match=r"missing from pred \['unassigned'\].*exclude="):
        shrinkpert.evaluate(pred, truth, **QUICK)
    table = shrinkpert.evaluate(pred, truth, exclude=["unassigned"], **QUICK)
    assert "unassigned" not in set(table.perturbations) and table.params["exclude"] == ["unassigned"]
    direct = shrinkpert.evaluate(pred, pred, **QUICK)  # the same cells without the excluded ones
    pd.testing.assert_frame_equal(table.summary(), direct.summary())


def test_a_misspelled_exclude_label_is_refused(counts):
    with pytest.raises(MissingKeyError, match=r"exclude: labels \['unasigned'\] are not in"):
        shrinkpert.evaluate(counts, counts, exclude=["unasigned"], **QUICK)
    with pytest.raises(MissingKeyError, match=r"exclude: labels \['unasigned'\]"):
        shrinkpert.estimate_effects(counts, exclude=["unasigned"])
    with pytest.raises(MissingKeyError, match=r"exclude: labels \['unasigned'\]"):
        shrinkpert.group_statistics(counts, "perturbation", exclude=["unasigned"])


def test_group_statistics_exclude_equals_subsetting(counts):
    whole = shrinkpert.group_statistics(counts, "perturbation", exclude=["G1"])
    subset = shrinkpert.group_statistics(counts[counts.obs["perturbation"] != "G1"].copy(), "perturbation")
    assert list(whole.groups) == list(subset.groups)
    np.testing.assert_array_equal(whole.sum, subset.sum)


# --------------------------------------------------------------------------- names and dtypes


@pytest.mark.filterwarnings("ignore:Variable names are not unique")  # anndata's own, on copies
def test_duplicate_gene_names_are_listed(counts):
    dup = counts.copy()
    dup.var_names = ["gene0"] + list(dup.var_names[1:-1]) + ["gene0"]
    before = dup.copy()
    with pytest.raises(InputError, match=r"data: Gene names are duplicated .*'gene0'.*var_names_make_unique"):
        shrinkpert.estimate_effects(dup)
    with pytest.raises(InputError, match=r"truth: Gene names are duplicated"):
        shrinkpert.evaluate(counts, dup, **QUICK)
    _unchanged(before, dup)


@pytest.mark.parametrize("dtype", [np.float16, np.uint16, np.int8])
def test_small_dtypes_are_up_cast_and_give_the_same_numbers(counts, dtype):
    small = counts.copy()
    small.X = np.clip(counts.X.toarray(), 0, 100).astype(dtype)
    ref = counts.copy()
    ref.X = small.X.astype(np.float64)
    before = small.copy()
    got = shrinkpert.estimate_effects(small)
    want = shrinkpert.estimate_effects(ref)
    np.testing.assert_allclose(got.effect, want.effect, rtol=1e-6, atol=1e-9)
    _unchanged(before, small)


def test_float16_input_runs_through_evaluate_in_memory_and_on_disk(counts, tmp_path):
    half = counts.copy()
    half.X = counts.X.toarray().astype(np.float16)  # scipy.sparse has no float16; files and dense arrays do
    path = tmp_path / "half.h5ad"
    half.write_h5ad(path)
    for data in (half, path):
        table = shrinkpert.evaluate(data, data, **QUICK)
        assert np.isclose(table.summary().loc[("pearson_delta", "uniform", "control"), "mean"], 1.0)
    assert half.X.dtype == np.float16


# --------------------------------------------------------------------------- files


@pytest.fixture
def truncated(counts, tmp_path):
    path = tmp_path / "cut.h5ad"
    counts.write_h5ad(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_a_truncated_file_is_refused_with_its_path(truncated):
    digest = _digest(truncated)
    for call in (lambda: shrinkpert.group_statistics(truncated, "perturbation"),
                 lambda: shrinkpert.estimate_effects(truncated),
                 lambda: shrinkpert.evaluate(truncated, truncated, **QUICK)):
        with pytest.raises(InputError, match=r"cut\.h5ad.*(truncated or damaged|not an HDF5)"):
            call()
    assert _digest(truncated) == digest


def test_the_cli_reports_a_truncated_file_in_one_line(truncated, tmp_path):
    result = _cli("effects", str(truncated), "--out", str(tmp_path / "out"))
    _one_line_error(result, "cut.h5ad")
    assert not (tmp_path / "out").exists()  # no empty folder left behind


def test_the_cli_refuses_an_unwritable_out_before_reading(counts, tmp_path):
    path = tmp_path / "data.h5ad"
    counts.write_h5ad(path)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = _cli("effects", str(path), "--out", str(blocker / "sub"))
    _one_line_error(result, "cannot be written|exists and is not a folder")


def test_the_cli_refuses_a_non_empty_out_and_keeps_its_files(counts, tmp_path):
    path = tmp_path / "data.h5ad"
    counts.write_h5ad(path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = _cli("effects", str(path), "--out", str(out))
    _one_line_error(result, "not empty; pass --force")
    assert (out / "keep.txt").read_text() == "mine"
    with pytest.raises(OutputExistsError, match="not empty"):
        from shrinkpert._io import prepare_out_dir

        prepare_out_dir(out, force=False)


def test_the_cli_reports_a_bad_control_in_one_line_and_exclude_works(counts, tmp_path):
    path = tmp_path / "data.h5ad"
    counts.write_h5ad(path)
    digest = _digest(path)
    _one_line_error(_cli("evaluate", "--pred", str(path), "--truth", str(path), "--control", "NT", "--out",
                         str(tmp_path / "o1")), "Control label 'NT'")
    _one_line_error(_cli("stats", str(path), "--exclude", "G9", "--out", str(tmp_path / "o2")),
                    r"exclude: labels \['G9'\]")
    done = _cli("stats", str(path), "--exclude", "G1", "--out", str(tmp_path / "o3"))
    assert done.returncode == 0, done.stderr
    assert "G1" not in pd.read_csv(tmp_path / "o3" / "summary.csv").iloc[:, 0].astype(str).tolist()
    assert _digest(path) == digest


# --------------------------------------------------------------------------- order invariance


def test_baselines_do_not_depend_on_the_gene_order(counts):
    shuffled = counts[:, np.random.default_rng(1).permutation(counts.n_vars)].copy()
    a = shrinkpert.evaluate(counts, counts, metrics=["mse"], n_boot=20).summary()
    b = shrinkpert.evaluate(shuffled, shuffled, metrics=["mse"], n_boot=20).summary()
    pd.testing.assert_frame_equal(a, b, rtol=1e-10)


def test_unknown_options_are_refused_with_a_suggestion(counts):
    with pytest.raises(InputError, match=r"unknown option 'n_bot' \(did you mean \['n_boot'\]"):
        shrinkpert.evaluate(counts, counts, n_bot=10)
