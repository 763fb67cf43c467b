"""Calibrated VCC 2026 score: baseline, replicate anchor and scaling against cell-eval2 0.20.0.

Tolerance 1e-9 absolute (same float64 formulas, summation order differs); the emitted baseline
matrix is compared exactly (same RNG stream, same float32 rounding).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import replace

import numpy as np
import pytest

from shrinkpert.errors import InputError
from shrinkpert.metrics.vcc2026 import MEMBERS, score_vcc2026
from shrinkpert.metrics.vcc2026_calibration import (
    baseline_vcc2026,
    bootstrap_vcc2026,
    calibrate_vcc2026,
    mean_response_baseline,
    replicate_anchor_vcc2026,
)

from .test_vcc2026 import _pair


@pytest.fixture(scope="module")
def pair():
    return _pair(1)


def test_closed_form_scaling():
    base = dict.fromkeys(MEMBERS, 0.2)
    base.update(expr_mse_unbiased_capped_norm=1.0, de_wilcoxon_lfc_nmae=1.0)
    anchor = dict.fromkeys(MEMBERS, 0.8)
    anchor.update(expr_mse_unbiased_capped_norm=0.1, de_wilcoxon_lfc_nmae=0.4)
    user = dict.fromkeys(MEMBERS, 0.5)
    user.update(expr_mse_unbiased_capped_norm=1.9, de_wilcoxon_lfc_nmae=5.0, de_wilcoxon_sig_jaccard=1.4)
    got = calibrate_vcc2026(user, base, anchor).scores
    assert got["pds_cosine"] == pytest.approx(0.5)  # (0.5 - 0.2) / 0.6
    assert got["de_wilcoxon_sig_jaccard"] == pytest.approx(2.0)  # unclamped above 1
    assert got["expr_mse_unbiased_capped_norm"] == 0.0  # clamped to [0, 1]
    assert got["de_wilcoxon_lfc_nmae"] == -6.0  # (1 - 5) / 0.6 floored at -6
    user["pds_cosine"] = float("nan")  # a missing bounded member scores as u = 0
    assert calibrate_vcc2026(user, base, anchor).scores["pds_cosine"] == pytest.approx(-1 / 3)
    with pytest.raises(InputError, match="no headroom"):
        calibrate_vcc2026(user, base, dict(anchor, pds_cosine=0.2))


@pytest.mark.peer
def test_scaling_equals_cell_eval2_score_one():
    catalog = pytest.importorskip("cell_eval2.catalog")
    scoring = pytest.importorskip("cell_eval2.scoring")
    rng = np.random.default_rng(3)
    for _ in range(20):
        base = {m: rng.uniform(0.0, 0.5) for m in MEMBERS}
        anchor = {m: rng.uniform(0.6, 1.0) for m in MEMBERS}
        for m in ("expr_mse_unbiased_capped_norm", "de_wilcoxon_lfc_nmae"):
            base[m], anchor[m] = rng.uniform(0.8, 1.2), rng.uniform(0.0, 0.5)
        user = {m: rng.uniform(-0.5, 3.0) for m in MEMBERS}
        ours = calibrate_vcc2026(user, base, anchor).scores
        for m in MEMBERS:
            policy = replace(catalog.CATALOG[m].scoring, anchor=anchor[m], allow_negative_baseline=False)
            assert ours[m] == pytest.approx(scoring.score_one(user[m], base[m], policy), abs=1e-12), m


@pytest.mark.peer
def test_baseline_and_anchor_equal_cell_eval2(pair, caplog):
    pytest.importorskip("pdex")
    ce_baseline = pytest.importorskip("cell_eval2.baseline")
    ce_anchor = pytest.importorskip("cell_eval2.anchor")
    from cell_eval2.config import EvalConfig

    caplog.set_level(logging.ERROR)
    _, real, _ = pair
    profile = ce_baseline.generic_response_profile(real, pert_col="perturbation", control="non-targeting")
    theirs = ce_baseline.build_baseline_prediction(profile, real, pert_col="perturbation",
                                                   control="non-targeting", seed=0)
    ours = mean_response_baseline(real, seed=0)
    assert (ours.X != theirs.X).nnz == 0
    cfg = dataclasses.replace(EvalConfig.from_preset("vcc2026"), pert_col="perturbation", cache_strict=False)
    base = ce_baseline.build_generic_baseline(real, config=cfg, seed=0)
    base_mean = base.agg.to_pandas().set_index("statistic").loc["mean"]
    ours_b = baseline_vcc2026(real, seed=0).aggregate
    for m in MEMBERS:
        assert ours_b[m] == pytest.approx(base_mean[m], abs=1e-9), m
    _, anchor = ce_anchor.compute_replicate_anchor(real, config=cfg)
    theirs_r = dict(zip(anchor["metric"].to_list(), anchor["replicate"].to_list()))
    ours_r = replicate_anchor_vcc2026(real)
    for m in MEMBERS:
        assert ours_r.replicate[m] == pytest.approx(theirs_r[m], abs=1e-9), m


def test_bootstrap_interval_brackets_point(pair):
    pred, real, _ = pair
    result = score_vcc2026(pred, real)
    base = dict.fromkeys(MEMBERS, 0.0)
    base.update(expr_mse_unbiased_capped_norm=1.0, de_wilcoxon_lfc_nmae=1.0)
    anchor = dict.fromkeys(MEMBERS, 1.0)
    anchor.update(expr_mse_unbiased_capped_norm=0.0, de_wilcoxon_lfc_nmae=0.0)
    scored = bootstrap_vcc2026(result, base, anchor, n_boot=200, seed=1)
    frame = scored.to_frame().set_index("metric")
    assert (frame["ci_low"] <= frame["ci_high"]).all()
    assert frame.loc["avg_score", "ci_low"] <= scored.avg_score <= frame.loc["avg_score", "ci_high"]
    again = bootstrap_vcc2026(result, base, anchor, n_boot=200, seed=1)
    assert again.ci.equals(scored.ci)
