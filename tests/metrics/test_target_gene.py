"""Target-gene prediction metrics: best values, direction, invariances, NaN policy, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.errors import InputError
from shrinkpert.metrics.target_gene import (
    dose_order_score,
    penetrance_error,
    target_change_error,
    target_rank_score,
    target_sign_score,
)


@pytest.fixture
def deltas():
    rng = np.random.default_rng(3)
    truth = rng.normal(0, 0.3, size=(6, 40))
    target = np.array([0, 5, 9, 17, 30, -1])
    truth[np.arange(5), target[:5]] = -2.0  # knockdowns
    return truth, target


def test_perfect_prediction_gets_the_best_value(deltas):
    truth, target = deltas
    assert np.nanmax(target_change_error(truth, truth, target_index=target)) == 0
    assert np.nanmin(target_sign_score(truth, truth, target_index=target)) == 1
    assert np.nanmin(target_rank_score(truth, truth, target_index=target)) == 1
    assert (penetrance_error([0.2, 0.8], [0.2, 0.8]) == 0).all()
    scores = dose_order_score([1.0, 2, 3, 1, 2, 3], [1.0, 2, 3, 1, 2, 3], groups=list("aaabbb"))
    assert (scores == 1).all()


def test_direction_worse_prediction_scores_worse(deltas):
    truth, target = deltas
    good = truth + 0.01
    bad = truth.copy()
    rows = np.arange(5)
    bad[rows, target[:5]] = 1.0  # predicts up-regulation
    assert np.all(target_change_error(bad, truth, target_index=target)[:5]
                  > target_change_error(good, truth, target_index=target)[:5])
    assert np.all(target_sign_score(bad, truth, target_index=target)[:5] == 0)
    assert np.all(target_rank_score(bad, truth, target_index=target)[:5]
                  < target_rank_score(good, truth, target_index=target)[:5])


def test_target_rank_score_matches_scipy_average_ranks_with_ties():
    """The rank is scipy's average rank of the signed key, ties and zero true changes included."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(5)
    pred = rng.integers(-3, 4, size=(30, 12)).astype(float)  # many ties
    truth = rng.integers(-2, 3, size=(30, 12)).astype(float)  # some true target changes are 0
    target = rng.integers(0, 12, size=30)
    got = target_rank_score(pred, truth, target_index=target)
    for k in range(30):
        d = np.sign(truth[k, target[k]])
        key = -d * pred[k] if d != 0 else -np.abs(pred[k])
        expected = 1 - (rankdata(key)[target[k]] - 1) / 11
        assert got[k] == pytest.approx(expected, abs=1e-15)


def test_unmeasured_target_is_nan_and_gene_order_does_not_matter(deltas):
    truth, target = deltas
    pred = truth + np.random.default_rng(1).normal(0, 0.2, truth.shape)
    perm = np.random.default_rng(2).permutation(truth.shape[1])
    inverse = np.argsort(perm)
    new_target = np.where(target >= 0, inverse[np.maximum(target, 0)], -1)
    for metric in (target_change_error, target_sign_score, target_rank_score):
        a = metric(pred, truth, target_index=target)
        b = metric(pred[:, perm], truth[:, perm], target_index=new_target)
        np.testing.assert_allclose(a, b, rtol=1e-12)
        assert np.isnan(a[-1])


def test_vector_input_gives_a_float_and_zero_truth_sign_is_nan():
    assert isinstance(target_change_error([-1.0, 0.0], [-2.0, 0.0], target_index=[0]), float)
    assert np.isnan(target_sign_score([[-1.0, 0.0]], [[0.0, 0.0]], target_index=[0])[0])
    assert penetrance_error(0.5, 0.75) == 0.25


def test_dose_order_needs_three_guides():
    scores = dose_order_score([1.0, 2.0, 1.0, 2.0, 3.0], [2.0, 1.0, 3.0, 2.0, 1.0], groups=["a", "a", "b", "b", "b"])
    assert np.isnan(scores["a"]) and scores["b"] == pytest.approx(-1.0)
    assert isinstance(scores, pd.Series)


def test_errors(deltas):
    truth, target = deltas
    with pytest.raises(InputError, match="shape"):
        target_change_error(truth[:, :5], truth, target_index=target)
    with pytest.raises(InputError, match="target_index"):
        target_change_error(truth, truth, target_index=target[:3])
    with pytest.raises(InputError, match="integers"):
        target_change_error(truth, truth, target_index=target.astype(float))
    bad = truth.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        target_rank_score(bad, truth, target_index=target)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        penetrance_error([1.2], [0.5])
    with pytest.raises(InputError, match="same length"):
        dose_order_score([1.0], [1.0, 2.0], groups=["a"])


def _target_rank_twin(p, t, idx):
    """The NumPy expressions the kernel replaced (target_rank_score before it)."""
    out = np.full(p.shape[0], np.nan)
    rows = np.flatnonzero(idx >= 0)
    direction = np.sign(t[rows, idx[rows]])[:, None]
    key = np.where(direction != 0, -direction * p[rows], -np.abs(p[rows]))
    own = key[np.arange(rows.size), idx[rows]][:, None]
    rank = (key < own).sum(axis=1) + ((key == own).sum(axis=1) + 1) / 2.0
    out[rows] = 1 - (rank - 1) / (p.shape[1] - 1)
    return out


def test_target_rank_kernel_equals_its_numpy_twin():
    """Knockdowns, activations, zero and NaN true changes, ties with the target, unmeasured targets."""
    from shrinkpert.metrics._target_kernels import target_rank_rows

    rng = np.random.default_rng(21)
    p = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=(40, 13)) + rng.normal(0, 1, (40, 13)) * (rng.random((40, 13)) < 0.5)
    t = rng.normal(size=(40, 13))
    idx = rng.integers(-1, 13, size=40)
    idx[:10] = [0, 4, 12, 3, 3, 6, 9, 2, -1, -1]
    t[np.arange(5), idx[:5]] = 0.0  # no true change at the target: ranked by |change|
    t[7, idx[7]] = np.nan  # a NaN sign: NaN keys, rank 1/2
    out = np.full(40, np.nan)
    target_rank_rows(p, t, idx, out)
    np.testing.assert_array_equal(out, _target_rank_twin(p, t, idx))
    assert np.isnan(out[idx < 0]).all() and np.isfinite(out[idx >= 0]).all() and (idx < 0).any()
    assert out[7] == 1 - (0.5 - 1) / 12
