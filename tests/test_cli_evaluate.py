"""``shrinkpert evaluate``: the same tables as the API, written atomically as CSV."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shrinkpert.cli import main
from shrinkpert.evaluation import evaluate
from tests.conftest import poisson_resampled

ARGS = ["--metrics", "mae", "pearson_delta", "discrimination_score_l1", "--n-boot", "40", "--seed", "3"]


def test_evaluate_writes_the_api_tables(tmp_path, papalexi, capsys):
    pred = poisson_resampled(papalexi, 9)
    pred_path, truth_path = tmp_path / "pred.h5ad", tmp_path / "truth.h5ad"
    pred.write_h5ad(pred_path)
    papalexi.write_h5ad(truth_path)
    out = tmp_path / "eval"
    code = main(["evaluate", "--pred", str(pred_path), "--truth", str(truth_path), "--out", str(out), *ARGS])
    assert code == 0
    assert "pearson_delta" in capsys.readouterr().out
    # the two tables plus the manifest the report reads; no temp files left
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "metrics.csv", "params.json", "summary.csv",
                                                     "table.json"]
    api = evaluate(str(pred_path), str(truth_path), metrics=["mae", "pearson_delta", "discrimination_score_l1"],
                   n_boot=40, seed=3)
    frame = pd.read_csv(out / "metrics.csv")
    pd.testing.assert_frame_equal(frame, api.to_frame(), check_exact=False, rtol=1e-12, atol=1e-15)
    summary = pd.read_csv(out / "summary.csv", index_col=[0, 1, 2], keep_default_na=False, na_values=[""])
    expected = api.summary()
    np.testing.assert_allclose(summary["calibrated"], expected["calibrated"], rtol=1e-12)
    assert summary["flags"].fillna("").tolist() == expected["flags"].tolist()
    # refuses a non-empty folder; errors go to stderr with exit code 2
    assert main(["evaluate", "--pred", str(pred_path), "--truth", str(truth_path), "--out", str(out), *ARGS]) == 2
    assert "not empty; pass --force" in capsys.readouterr().err
    assert main(["evaluate", "--pred", str(pred_path), "--truth", str(truth_path), "--out", str(tmp_path / "x"),
                 "--control", "NT", *ARGS]) == 2
    assert "control" in capsys.readouterr().err
