"""evaluate(): registry-driven checks on real data (Papalexi 2021, assigned cells)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert.calibration import calibrate
from shrinkpert.errors import GeneMismatchError, InputError, MissingKeyError
from shrinkpert.metrics import METRICS
from shrinkpert.evaluation import MetricTable, evaluate

QUICK = ["mae", "pearson_delta", "discrimination_score_l1", "overlap_at_N"]


@pytest.fixture(scope="module")
def perfect(papalexi):
    return evaluate(papalexi, papalexi, n_boot=30, seed=0)


@pytest.fixture(scope="module")
def model(noisy, papalexi):
    return evaluate(noisy, papalexi, metrics=QUICK + ["mse", "centroid_accuracy"], n_boot=50, seed=1)


def test_perfect_prediction_gets_the_best_value_of_every_metric(perfect):
    summary = perfect.summary()
    names = {m for m, _, _ in summary.index}
    expected = {n for n, s in METRICS.items() if s.needs in ("means", "deltas", "de")}
    assert names == expected
    frame = perfect.to_frame()
    for name in names:
        spec = METRICS[name]
        values = frame.loc[frame["metric"] == name, "value"].to_numpy()
        finite = values[np.isfinite(values)]
        assert finite.size > 0, name
        np.testing.assert_allclose(finite, spec.best, rtol=0, atol=1e-9, err_msg=name)
        for column in [c for c in summary.columns if c.startswith("baseline_")]:
            base = summary.loc[name, column].to_numpy()
            worse_or_equal = base <= spec.best + 1e-9 if spec.greater_is_better else base >= spec.best - 1e-9
            assert np.all(worse_or_equal | np.isnan(base)), (name, column)


def test_table_layout(model):
    frame, summary = model.to_frame(), model.summary()
    assert list(frame.columns[:5]) == ["perturbation", "metric", "weighting", "reference", "value"]
    assert list(frame.columns[-2:]) == ["calibrated", "drf"]
    assert list(summary.columns[:8]) == ["mean", "median", "calibrated", "ci_low", "ci_high", "drf", "bds", "flags"]
    assert summary.index.names == ["metric", "weighting", "reference"]
    assert set(frame["reference"]) == {"none", "control", "perturbed_centroid"}
    assert set(frame.loc[frame["metric"] == "mae", "reference"]) == {"none"}
    assert len(frame) == 25 * (4 + 2 * 2)  # 4 metrics without a reference, 2 delta metrics × 2 references
    frame.loc[:, "value"] = 0.0  # a copy: the table is unchanged
    assert not (model.to_frame()["value"] == 0).all()
    assert isinstance(model, MetricTable)


def test_calibration_matches_calibrate_on_the_table(model):
    frame = model.to_frame()
    rows = frame[(frame["metric"] == "pearson_delta") & (frame["reference"] == "control")]
    cal = calibrate(rows["value"], rows["baseline_mean"], rows["baseline_technical_duplicate"],
                    greater_is_better=True, best=1.0, n_boot=50, seed=1)
    got = model.summary().loc[("pearson_delta", "uniform", "control")]
    assert got["calibrated"] == cal.calibrated and got["ci_low"] == cal.ci_low and got["bds"] == cal.bds
    centroid = model.summary().loc[("pearson_delta", "uniform", "perturbed_centroid")]
    assert centroid["negative"] == "control"
    rank = model.summary().loc[("discrimination_score_l1", "uniform", "control")]
    assert rank["negative"] == "mean_all"
    assert rank["baseline_mean_all"] == pytest.approx(0.5 - 0.5 / 25, abs=0.05)  # one profile for all: ≈ chance


def test_flags_follow_the_baseline_means(model):
    summary = model.summary()
    for key, row in summary.iterrows():
        spec = METRICS[key[0]]
        better = (lambda a, b: a > b) if spec.greater_is_better else (lambda a, b: a < b)
        beats = [a for a in ("scaled_mean_up", "scaled_mean_down", "inflated_mean", "shuffled")
                 if better(row[f"baseline_{a}"], row[f"baseline_{row['negative']}"])]
        flags = row["flags"].split(";") if row["flags"] else []
        expected = "adversarial_beats_negative:" + ",".join(beats) if beats else None
        assert (expected in flags) if beats else not any(f.startswith("adversarial_beats_negative") for f in flags)
        assert ("positive_not_better" in flags) == (row["bds"] < 0.5)


def test_control_cells_of_the_prediction_are_ignored(noisy, papalexi):
    base = evaluate(noisy, papalexi, metrics=QUICK, baselines=[], seed=0)
    moved = noisy.copy()
    ctrl = (moved.obs["perturbation"] == "non-targeting").to_numpy()
    X = moved.X.tolil()
    X[np.flatnonzero(ctrl)[:200]] = 50
    moved.X = X.tocsr()
    dropped = noisy[~ctrl].copy()
    for other in (moved, dropped):
        pd.testing.assert_frame_equal(evaluate(other, papalexi, metrics=QUICK, baselines=[], seed=0).to_frame(),
                                      base.to_frame())
    assert base.params["pred_control_cells_ignored"] == int(ctrl.sum())


def test_gene_order_and_storage_do_not_matter(noisy, papalexi, tmp_path):
    base = evaluate(noisy, papalexi, metrics=QUICK, baselines=[], seed=0).to_frame()
    order = np.random.default_rng(0).permutation(noisy.n_vars)
    path = tmp_path / "pred.h5ad"
    noisy[:, order].copy().write_h5ad(path)
    other = evaluate(str(path), papalexi, metrics=QUICK, baselines=[], seed=0).to_frame()
    pd.testing.assert_frame_equal(other, base, check_exact=False, rtol=1e-12, atol=1e-12)


def test_log1p_inputs_give_the_same_values(noisy, papalexi):
    def logged(a):
        out = a.copy()
        X = a.X.toarray().astype(np.float64)
        out.X = sp.csr_matrix(np.log1p(X / np.maximum(X.sum(axis=1, keepdims=True), 1) * 1e4))
        return out

    counts = evaluate(noisy, papalexi, metrics=QUICK, baselines=[], seed=0)
    logs = evaluate(logged(noisy), logged(papalexi), metrics=QUICK, baselines=[], seed=0)
    assert counts.params["scale"] == "counts" and logs.params["scale"] == "log1p"
    pd.testing.assert_frame_equal(logs.to_frame(), counts.to_frame(), check_exact=False, rtol=1e-9, atol=1e-9)
    with pytest.raises(InputError, match="looks like log1p but truth like counts"):
        evaluate(logged(noisy), papalexi, metrics=QUICK, baselines=[])


def test_deterministic_and_inputs_untouched(noisy, papalexi, model):
    obs, X = papalexi.obs.copy(), papalexi.X.copy()
    again = evaluate(noisy, papalexi, metrics=QUICK + ["mse", "centroid_accuracy"], n_boot=50, seed=1)
    pd.testing.assert_frame_equal(again.to_frame(), model.to_frame())
    pd.testing.assert_frame_equal(again.summary(), model.summary())
    pd.testing.assert_frame_equal(papalexi.obs, obs)
    assert (papalexi.X != X).nnz == 0


def test_uniform_weights_equal_unweighted(noisy, papalexi):
    table = evaluate(noisy, papalexi, metrics=["mae", "pearson_delta", "overlap_at_N"], baselines=[],
                     weights={"flat": np.full(papalexi.n_vars, 3.0)}, references=["control"])
    frame = table.to_frame()
    assert set(frame.loc[frame["metric"] == "overlap_at_N", "weighting"]) == {"uniform"}
    for metric in ("mae", "pearson_delta"):
        a = frame[(frame["metric"] == metric) & (frame["weighting"] == "uniform")]["value"].to_numpy()
        b = frame[(frame["metric"] == metric) & (frame["weighting"] == "flat")]["value"].to_numpy()
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-15)


def test_validation_errors(noisy, papalexi):
    with pytest.raises(GeneMismatchError, match="1 truth genes missing from pred"):
        evaluate(noisy[:, 1:].copy(), papalexi, metrics=QUICK)
    fewer = noisy[noisy.obs["perturbation"] != "IRF1"].copy()
    with pytest.raises(InputError, match=r"different perturbations: missing from pred \['IRF1'\]"):
        evaluate(fewer, papalexi, metrics=QUICK)
    with pytest.raises(MissingKeyError, match="unknown metric 'nope'"):
        evaluate(noisy, papalexi, metrics=["nope"])
    with pytest.raises(InputError, match="cells_per_perturbation must be"):
        evaluate(noisy, papalexi, metrics=["energy_distance"], cells_per_perturbation=1)
    with pytest.raises(InputError, match="references must be"):
        evaluate(noisy, papalexi, metrics=QUICK, references=["median"])
    with pytest.raises(InputError, match="weights 'bad' have shape"):
        evaluate(noisy, papalexi, metrics=QUICK, weights={"bad": np.ones(3)})
    with pytest.raises(MissingKeyError, match="calibration needs the baselines"):
        evaluate(noisy, papalexi, metrics=QUICK, baselines=["control"])
    with pytest.raises(InputError, match="scale must be"):
        evaluate(noisy, papalexi, metrics=QUICK, scale="log2")


def test_opt_in_baselines(noisy, papalexi):
    table = evaluate(noisy, papalexi, metrics=["centroid_accuracy"], n_boot=20,
                     baselines=["control", "mean", "mean_all", "technical_duplicate", "linear"])
    frame = table.to_frame()
    assert "baseline_linear" in frame.columns and np.isfinite(frame["baseline_linear"]).all()
    assert table.params["baselines"]["linear"] == "reference"
    with pytest.raises(NotImplementedError, match="no combinations"):
        evaluate(noisy, papalexi, metrics=["mae"], baselines=["mean", "additive"])
