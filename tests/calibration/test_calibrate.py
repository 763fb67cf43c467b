"""Calibrated scores, DRF, BDS and bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.calibration import (
    bootstrap_ci,
    bound_discrimination_score,
    calibrate,
    calibrated_score,
    dynamic_range_fraction,
    resample_indices,
)
from shrinkpert.errors import InputError


@pytest.fixture
def controls():
    rng = np.random.default_rng(11)
    negative = rng.uniform(0.2, 0.5, size=40)
    positive = negative + rng.uniform(0.05, 0.4, size=40)
    return negative, positive


@pytest.mark.parametrize("greater", [True, False])
def test_calibrated_score_is_exactly_0_and_1_at_the_controls(controls, greater):
    negative, positive = controls if greater else (controls[1], controls[0])
    kw = dict(greater_is_better=greater, best=1.0 if greater else 0.0, n_boot=50, seed=0)
    at_neg = calibrate(negative, negative, positive, **kw)
    at_pos = calibrate(positive, negative, positive, **kw)
    assert at_neg.calibrated == 0.0 and at_pos.calibrated == 1.0
    assert np.all(at_neg.calibrated_per_perturbation == 0.0)
    assert np.all(at_pos.calibrated_per_perturbation == 1.0)
    halfway = calibrate((negative + positive) / 2, negative, positive, **kw)
    assert halfway.calibrated == pytest.approx(0.5, abs=1e-12)


def test_drf_formulas():
    drf = dynamic_range_fraction([0.2, 0.5, 0.9], [0.6, 0.4, 0.95], greater_is_better=True, best=1.0)
    np.testing.assert_allclose(drf, [0.4 / (0.8 + 1e-6), -0.1 / (0.5 + 1e-6), 0.05 / (0.1 + 1e-6)])
    drf = dynamic_range_fraction([2.0, 1.0], [0.5, 4.0], greater_is_better=False, best=0.0)
    np.testing.assert_allclose(drf, [1.5 / (2.0 + 1e-6), -1.0])  # second clipped from -3
    assert bound_discrimination_score([0.2, 0.5, np.nan, 0.1], [0.3, 0.4, 0.9, 0.1], greater_is_better=True) == 1 / 3
    assert bound_discrimination_score([2.0, 1.0], [0.5, 4.0], greater_is_better=False) == 0.5


def test_calibrated_score_nan_where_controls_tie():
    out = calibrated_score([0.3, 0.3], [0.2, 0.5], [0.4, 0.5])
    assert out[0] == pytest.approx(0.5) and np.isnan(out[1])


def test_summary_uses_a_ratio_of_means_and_skips_nan(controls):
    negative, positive = controls
    value = negative + 0.25 * (positive - negative)
    value[3] = np.nan
    cal = calibrate(value, negative, positive, greater_is_better=True, best=1.0, n_boot=20)
    ok = np.isfinite(value)
    expected = (value[ok].mean() - negative[ok].mean()) / (positive[ok].mean() - negative[ok].mean())
    assert cal.calibrated == pytest.approx(expected, rel=1e-12) and cal.n_valid == 39
    assert list(cal.to_frame().columns) == ["perturbation", "value", "negative", "positive", "calibrated", "drf"]


def test_intervals_are_deterministic_for_a_seed(controls):
    negative, positive = controls
    rng = np.random.default_rng(5)
    value = negative + rng.uniform(0, 1, size=40) * (positive - negative)
    kw = dict(greater_is_better=True, best=1.0, n_boot=300)
    a = calibrate(value, negative, positive, seed=42, **kw)
    b = calibrate(value, negative, positive, seed=42, **kw)
    c = calibrate(value, negative, positive, seed=43, **kw)
    assert a.summary().equals(b.summary())
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low <= a.calibrated <= a.ci_high
    assert a.drf_ci_low <= a.drf <= a.drf_ci_high
    assert a.bds == 1.0 and a.bds_ci_low == 1.0


def test_bootstrap_ci_against_a_direct_loop():
    x = np.arange(10, dtype=float) ** 2
    idx = resample_indices(10, 200, seed=3)
    low, high = bootstrap_ci(np.mean, [x], indices=idx, level=0.9)
    reps = np.array([x[i].mean() for i in np.random.default_rng(3).integers(0, 10, size=(200, 10))])
    assert (low, high) == tuple(np.quantile(reps, [0.05, 0.95]))


def test_errors():
    with pytest.raises(InputError, match="same length"):
        calibrate([1.0, 2.0], [1.0], [2.0, 3.0], greater_is_better=True, best=1.0)
    with pytest.raises(InputError, match="level must lie"):
        bootstrap_ci(np.mean, [np.ones(3)], level=1.5)
    with pytest.raises(InputError, match="n_boot must be a positive integer"):
        resample_indices(3, 0)
    with pytest.raises(InputError, match="1-D"):
        calibrated_score(np.ones((2, 2)), np.ones(2), np.ones(2))
