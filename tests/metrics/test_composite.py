"""The Virtual Cell Challenge score and the Kaggle Myllia score reproduce their published numbers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.metrics import mae_delta, myllia_score, myllia_weights, vcc_components, vcc_score

# VCC validation baselines (cell-mean baseline), as published on the challenge blog
BASE = {"mae": 0.027, "overlap_at_N": 0.106, "discrimination_score_l1": 0.514}


def _user(des, pds, mae):
    return {"mae": mae, "overlap_at_N": des, "discrimination_score_l1": pds}


def test_vcc_published_submission_scores_9_4():
    score = vcc_score(_user(0.18, 0.61, 0.036), BASE)
    # the arithmetic: MAE worse than baseline -> clipped to 0; DES, PDS scaled against the baseline
    expected = 100 / 3 * ((0.18 - 0.106) / (1 - 0.106) + (0.61 - 0.514) / (1 - 0.514) + 0.0)
    assert score == pytest.approx(expected, rel=1e-12)
    assert score == pytest.approx(9.34, abs=0.005)
    # 9.4 was published from unrounded inputs: it lies within the range the two-decimal inputs allow
    lo, hi = (vcc_score(_user(d, p, 0.036), BASE) for d, p in ((0.175, 0.605), (0.185, 0.615)))
    assert lo < 9.4 < hi


def test_vcc_after_the_pds_fix_scores_about_5_8():
    # cell-eval #189 (signed PDS): the same submission's PDS dropped to 0.56, the score to ~5.8
    scores = [vcc_score(_user(d, p, 0.036), BASE) for d, p in itertools.product((0.175, 0.185), (0.555, 0.565))]
    assert min(scores) < 5.8 < max(scores)


def test_vcc_components_clip_at_zero_and_baseline_scores_zero():
    parts = vcc_components(_user(0.18, 0.61, 0.036), BASE)
    assert parts["mae"] == 0.0  # 1 - 0.036/0.027 < 0, clipped
    assert parts["overlap_at_N"] == pytest.approx(0.074 / 0.894, rel=1e-12)
    assert vcc_score(BASE, BASE) == 0.0
    assert vcc_score(_user(1.0, 1.0, 0.0), BASE) == 100.0
    assert vcc_score(_user(0.0, 0.0, 1.0), BASE) == 0.0  # everything worse than baseline: clipped
    assert vcc_score({**_user(0.18, 0.61, 0.036), "pearson_delta": 0.9}, BASE) == vcc_score(
        _user(0.18, 0.61, 0.036), BASE)


def test_vcc_errors():
    with pytest.raises(MissingKeyError, match="user has no 'mae'"):
        vcc_score({"overlap_at_N": 0.1, "discrimination_score_l1": 0.5}, BASE)
    with pytest.raises(InputError, match="cell-eval silently scores NaN as 0"):
        vcc_score(_user(float("nan"), 0.6, 0.03), BASE)
    with pytest.raises(InputError, match="already the best value"):
        vcc_score(BASE, {**BASE, "mae": 0.0})
    with pytest.raises(InputError, match="must be one number"):
        vcc_score({**BASE, "mae": [0.1, 0.2]}, BASE)


def test_myllia_scorer_example_2_81113():
    # the worked example of the competition scorer: weights 1, baseline WMAE 2 per perturbation
    truth = np.array([[1.0, 0.0], [0.0, 1.0]])
    pred = np.array([[1.0, 1.0], [0.8, 0.8]])
    base = np.array([[5.0, 0.0], [0.0, 5.0]])
    np.testing.assert_allclose(mae_delta(base, truth, weights=np.ones(2)), [2.0, 2.0])
    assert round(myllia_score(pred, truth, weights=np.ones(2), baseline_delta=base), 5) == 2.81113


def test_myllia_baseline_scores_zero_and_perfect_scores_five_per_perturbation(rng):
    truth = rng.normal(0, 0.5, size=(6, 30))
    base = truth.mean(axis=0)
    w = myllia_weights(rng.normal(0, 3, size=(6, 30)))
    assert myllia_score(np.tile(base, (6, 1)), truth, weights=w, baseline_delta=base) == 0.0
    assert myllia_score(truth, truth, weights=w, baseline_delta=base) == pytest.approx(5.0 * 6, rel=1e-12)
    # a prediction pointing the wrong way is not rewarded, however good its WMAE ratio
    assert myllia_score(-truth, truth, weights=w, baseline_delta=base) == 0.0


def test_myllia_weights_published_formula(rng):
    t = rng.normal(0, 4, size=(3, 20))
    w = myllia_weights(t, target_index=np.array([2, -1, 19]))
    np.testing.assert_allclose(w.sum(axis=1), 20.0, rtol=1e-12)
    assert w[0, 2] == 0.0 and w[2, 19] == 0.0 and (w[1] > 0).all()
    c = np.minimum(np.abs(t[1]) + 0.1, 10.0)
    np.testing.assert_allclose(w[1], 20 * c**2 / np.sum(c**2), rtol=1e-12)
    assert myllia_weights(t[0]).shape == (20,)
    with pytest.raises(InputError, match="target_index must be 3 integer"):
        myllia_weights(t, target_index=[1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="must lie in \\[-1, 19\\]"):
        myllia_weights(t, target_index=np.array([0, 0, 20]))


def test_myllia_gate_matters_only_for_small_changes():
    truth = np.array([[0.25, -0.1, 1.0], [0.05, 0.6, -0.2]])
    pred = np.array([[0.1, 0.2, 0.9], [0.1, 0.5, 0.2]])
    base = np.zeros(3)
    w = np.ones(3)
    a = myllia_score(pred, truth, weights=w, baseline_delta=base)  # published right = 0.3
    b = myllia_score(pred, truth, weights=w, baseline_delta=base, gate=(0.0, 0.2))
    assert a != b
    big = 10 * truth, 10 * pred
    assert myllia_score(*big[::-1], weights=w, baseline_delta=base) == pytest.approx(
        myllia_score(*big[::-1], weights=w, baseline_delta=base, gate=(0.0, 0.2)), rel=1e-12)


def test_myllia_errors():
    truth = np.zeros((2, 3))
    with pytest.raises(InputError, match="weights are required"):
        myllia_score(truth, truth, weights=None, baseline_delta=np.zeros(3))
    with pytest.raises(InputError, match="baseline_delta has shape \\(4,\\)"):
        myllia_score(truth, truth, weights=np.ones(3), baseline_delta=np.zeros(4))
    with pytest.raises(InputError, match="gate must be \\(left, right\\)"):
        myllia_score(truth, truth, weights=np.ones(3), baseline_delta=np.zeros(3), gate=(0.3, 0.3))
    # all-zero vectors: the cosine denominator is 0, defined as 0 by the competition
    assert myllia_score(truth, truth, weights=np.ones(3), baseline_delta=np.ones(3)) == 0.0
