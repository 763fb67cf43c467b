"""evaluate(preset=...): the VCC 2026 preset through evaluate, and the cell-eval v1 preset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import shrinkpert
from shrinkpert.errors import InputError
from shrinkpert.metrics import VCC_METRICS
from shrinkpert.metrics.vcc2026 import MEMBERS, score_vcc2026
from shrinkpert.metrics.vcc2026_calibration import (
    baseline_vcc2026,
    calibrate_vcc2026,
    replicate_anchor_vcc2026,
)
from tests.metrics.test_vcc2026 import _pair


@pytest.fixture(scope="module")
def pair():
    pred, truth, _ = _pair(4)
    return pred, truth


def test_vcc2026_preset_equals_the_preset_functions(pair, tmp_path):
    pred, truth = pair
    table = shrinkpert.evaluate(pred, truth, preset="vcc2026", n_boot=50, seed=0)
    summary = table.summary()
    result = score_vcc2026(pred, truth)
    calibrated = calibrate_vcc2026(result, baseline_vcc2026(truth), replicate_anchor_vcc2026(truth))
    for name in MEMBERS:
        row = summary.loc[(name, "uniform", "control")]
        assert row["mean"] == pytest.approx(result.aggregate[name], rel=1e-12, nan_ok=True)
        assert row["calibrated"] == pytest.approx(calibrated.scores[name], rel=1e-12, nan_ok=True)
        assert row["ci_low"] <= row["calibrated"] + 1e-12 or np.isnan(row["ci_low"])
    assert summary.loc[("avg_score", "uniform", "control"), "calibrated"] == pytest.approx(calibrated.avg_score)
    out = table.to_cell_eval2(tmp_path / "ce2")
    assert {"results.csv", "agg_results.csv"} <= {p.name for p in out.iterdir()}
    with pytest.raises(InputError, match="fixes"):
        shrinkpert.evaluate(pred, truth, preset="cell-eval-v1", metrics=["mse"])


def test_cell_eval_v1_preset_is_the_2025_members(pair):
    pred, truth = pair
    table = shrinkpert.evaluate(pred, truth, preset="cell-eval-v1", n_boot=20)
    assert set(table.to_frame()["metric"]) == set(VCC_METRICS)
    assert set(table.to_frame()["weighting"]) == {"uniform"}
    plain = shrinkpert.evaluate(pred, truth, metrics=list(VCC_METRICS), weights=None, references=["control"],
                                n_boot=20)
    pd.testing.assert_frame_equal(table.summary(), plain.summary())
    with pytest.raises(InputError, match="to_cell_eval2 needs a table"):
        table.to_cell_eval2("never_written")
