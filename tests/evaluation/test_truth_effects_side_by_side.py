"""``truth_effects=("raw", "shrunk")``: both truths in one table, each equal to its own run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shrinkpert
from shrinkpert.cli import main
from shrinkpert.errors import InputError
from shrinkpert.report import load_table
from tests.conftest import make_counts

METRICS = ["mse", "pearson_delta", "de_sig_genes_recall"]
RUN = dict(metrics=METRICS, n_boot=30, seed=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A resampled 'model' and its truth, in memory and as files."""
    truth = make_counts(np.random.default_rng(7), n_cells=600, n_genes=30, n_groups=7)
    truth.X[5, 0] = 1  # no empty cell
    truth.X = sp.csr_matrix(truth.X)
    pred = truth.copy()
    pred.X = sp.csr_matrix(np.random.default_rng(8).poisson(truth.X.toarray() + 0.2).astype(np.int64))
    folder = tmp_path_factory.mktemp("truths")
    pred.write_h5ad(folder / "pred.h5ad")
    truth.write_h5ad(folder / "truth.h5ad")
    return pred, truth, folder


@pytest.fixture(scope="module")
def both(data):
    return shrinkpert.evaluate(data[0], data[1], truth_effects=("raw", "shrunk"), **RUN)


def _rows(table, truth):
    values = table.to_frame().query("truth == @truth").drop(columns="truth").reset_index(drop=True)
    return values, table.summary().xs(truth, level="truth")


def test_both_truths_equal_the_separate_runs(data, both):
    pred, truth, _ = data
    assert both.summary().index.names == ["truth", "metric", "weighting", "reference"]
    assert both.params["truth_effects"] == ["raw", "shrunk"]
    for name, alone in (("raw", shrinkpert.evaluate(pred, truth, **RUN)),
                        ("shrunk", shrinkpert.evaluate(pred, truth, truth_effects="shrunk", **RUN))):
        values, summary = _rows(both, name)
        pd.testing.assert_frame_equal(values, alone.to_frame(), check_exact=True)
        pd.testing.assert_frame_equal(summary, alone.summary(), check_exact=True)
    raw, shrunk = _rows(both, "raw")[0], _rows(both, "shrunk")[0]
    assert not np.allclose(raw["value"], shrunk["value"], equal_nan=True)  # the two truths differ
    assert np.isfinite(both.summary().xs("raw", level="truth")["ceiling"]).any()


def test_several_models_put_truth_after_model_and_options_are_checked(data):
    pred, truth, _ = data
    table = shrinkpert.evaluate({"a": pred, "b": pred}, truth, truth_effects=["shrunk", "raw"], **RUN)
    assert table.summary().index.names == ["model", "truth", "metric", "weighting", "reference"]
    assert list(table.to_frame().columns[:3]) == ["model", "truth", "perturbation"]
    with pytest.raises(InputError, match="distinct ones such as"):
        shrinkpert.evaluate(pred, truth, truth_effects=("raw", "raw"), **RUN)
    with pytest.raises(InputError, match="truth_effects must be"):
        shrinkpert.EvaluationConfig(truth_effects=())


def test_cli_truth_effects_raw_shrunk(tmp_path, data, both):
    folder = data[2]
    out = tmp_path / "eval"
    code = main(["evaluate", "--pred", str(folder / "pred.h5ad"), "--truth", str(folder / "truth.h5ad"),
                 "--out", str(out), "--metrics", *METRICS, "--n-boot", "30", "--seed", "4",
                 "--truth-effects", "raw", "shrunk"])
    assert code == 0
    api = both  # the same data in memory
    written = load_table(out)
    assert written.summary().index.names == api.summary().index.names
    np.testing.assert_allclose(written.summary()["mean"], api.summary()["mean"], rtol=1e-12)
    assert set(written.to_frame()["truth"]) == {"raw", "shrunk"}


def test_html_report_shows_each_truth_as_a_column(tmp_path, both):
    from shrinkpert.report.tables import model_frames

    values, summary = model_frames(both)
    assert set(summary["model"]) == {"model (raw truth)", "model (shrunk truth)"} and "truth" not in values
    html = both.to_html(tmp_path / "report.html").read_text(encoding="utf-8")
    assert "model (raw truth)" in html and "model (shrunk truth)" in html
