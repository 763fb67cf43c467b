"""systematic_share closed forms, the method-of-moments noise correction, shift rewards."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import shrinkpert as sp
from shrinkpert.errors import InputError
from shrinkpert.strata.systematic import shift_rewards, systematic_share


def test_share_closed_form_on_hand_made_profiles():
    d = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    share, coef = systematic_share(d)
    # row 0: m_-0 = (1/2, 1/2, 0): cos^2 = (1/2)^2 / (1 * 1/2) = 1/2; coefficient = (1/2) / (1/2) = 1
    # row 2: m_-2 = (1, 0, 0) is orthogonal to (0, 1, 0)
    np.testing.assert_allclose(share, [0.5, 0.5, 0.0], atol=1e-15)
    np.testing.assert_allclose(coef, [1.0, 1.0, 0.0], atol=1e-15)


def test_share_is_one_along_the_shift_and_scale_free():
    shift = np.array([1.0, -2.0, 0.5, 0.0])
    d = np.outer([0.5, 1.0, 3.0], shift)
    share, coef = systematic_share(d)
    np.testing.assert_allclose(share, 1.0)
    np.testing.assert_allclose(coef, [0.5 / 2.0, 1.0 / 1.75, 3.0 / 0.75])  # c_p / mean of the others' c


def test_zero_row_gives_nan_not_zero():
    share, _ = systematic_share(np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]))
    assert np.isnan(share[0]) and np.isfinite(share[1:]).all()


def test_zero_variances_reproduce_the_plain_share():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(5, 30))
    plain, _ = systematic_share(d)
    corrected, _ = systematic_share(d, np.zeros_like(d), np.zeros(30))
    np.testing.assert_allclose(corrected, plain, rtol=1e-12)


def test_noise_correction_removes_the_bias_of_noisy_deltas():
    # true deltas = coefficient * shift + sparse specific effects; observed = truth + perturbation
    # noise (variance a) - the same control noise in every row (variance b)
    rng = np.random.default_rng(1)
    n_p, n_g = 30, 3000
    shift = np.where(rng.random(n_g) < 0.1, rng.normal(0, 0.5, n_g), 0.0)
    spec = np.where(rng.random((n_p, n_g)) < 0.02, rng.normal(0, 1.0, (n_p, n_g)), 0.0)
    truth = rng.uniform(0.5, 1.5, n_p)[:, None] * shift + spec
    a = np.full((n_p, n_g), 0.02)
    b = np.full(n_g, 0.005)
    observed = truth + rng.normal(0, np.sqrt(a)) - rng.normal(0, np.sqrt(b))[None, :]
    expected, _ = systematic_share(truth)
    plain, _ = systematic_share(observed)
    corrected, _ = systematic_share(observed, a + b, b)
    assert np.mean(expected - plain) > 0.1  # the plain share is biased towards 0
    assert np.max(np.abs(corrected - expected)) < 0.06  # sampling error of 3,000 noisy genes


def test_input_errors():
    with pytest.raises(InputError, match="at least 2 perturbations"):
        systematic_share(np.ones((1, 3)))


def _summary(**cols):
    index = pd.MultiIndex.from_tuples([("mse", "uniform", "none"), ("pearson_delta", "uniform", "control"),
                                       ("rank", "uniform", "control")], names=["metric", "weighting", "reference"])
    return pd.DataFrame(cols, index=index)


def test_shift_reward_closed_form_and_zero_reference():
    summary = _summary(baseline_mean_all=[0.3, 0.6, 0.5], baseline_control=[0.5, np.nan, np.nan],
                       baseline_technical_duplicate=[0.1, 0.8, 0.1], greater_is_better=[False, True, False])
    out = shift_rewards(summary)
    assert out.loc[("mse", "uniform", "none"), "shift_reward"] == pytest.approx((0.3 - 0.5) / (0.1 - 0.5))
    assert out.loc[("pearson_delta", "uniform", "control"), "shift_reward"] == pytest.approx(0.6 / 0.8)
    assert out.loc[("pearson_delta", "uniform", "control"), "shift_reward_reference"] == "zero"
    assert np.isnan(out.loc[("rank", "uniform", "control"), "shift_reward"])


def test_shift_reward_needs_the_baselines():
    with pytest.raises(InputError, match="mean_all"):
        shift_rewards(_summary(baseline_control=[0.0, 0.0, 0.0]))


def test_systematic_variation_on_a_small_screen(small_screen):
    res = sp.systematic_variation(small_screen, metrics=None)
    frame = res.to_frame()
    share = frame["systematic_share"].dropna()
    assert len(share) >= 1 and share.between(0, 1).all()
    assert frame["systematic_share_raw"].between(0, 1).all()
    top = res.top_genes(5)
    assert top["share_of_shift"].is_monotonic_decreasing and len(top) == 5
    assert res.gene_frame()["share_of_shift"].sum() == pytest.approx(1.0)
    with pytest.raises(InputError, match="scale"):
        sp.systematic_variation(small_screen, scale="log10", metrics=None)
