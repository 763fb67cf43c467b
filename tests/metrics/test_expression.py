"""Expression metrics against scipy / scikit-learn / NumPy closed forms, and their edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from shrinkpert.errors import GeneMismatchError, InputError
from shrinkpert.metrics import (
    cosine_delta,
    mae,
    mae_delta,
    mse,
    mse_delta,
    pearson_delta,
    r2_delta,
    rmse,
    spearman_delta,
)
from shrinkpert.metrics.expression import _weighted_midranks


@pytest.fixture
def pair(rng):
    truth = rng.normal(size=(6, 30))
    pred = truth + rng.normal(0, 0.7, size=truth.shape)
    w = rng.uniform(0, 3, size=(6, 30))
    return pred, truth, w


def test_errors_match_scikit_learn_with_sample_weight(pair):
    skm = pytest.importorskip("sklearn.metrics")
    pred, truth, w = pair
    for k in range(pred.shape[0]):
        kw = {"sample_weight": w[k]}
        np.testing.assert_allclose(mse(pred[k], truth[k], weights=w[k]),
                                   skm.mean_squared_error(truth[k], pred[k], **kw), rtol=1e-13)
        np.testing.assert_allclose(mae(pred, truth, weights=w)[k], skm.mean_absolute_error(truth[k], pred[k], **kw),
                                   rtol=1e-13)
        np.testing.assert_allclose(rmse(pred, truth, weights=w)[k],
                                   np.sqrt(skm.mean_squared_error(truth[k], pred[k], **kw)), rtol=1e-13)
        np.testing.assert_allclose(r2_delta(pred, truth, weights=w)[k], skm.r2_score(truth[k], pred[k], **kw),
                                   rtol=1e-12)
    np.testing.assert_allclose(mse_delta(pred, truth), mse(pred, truth), rtol=0)
    np.testing.assert_allclose(mae_delta(pred, truth), mae(pred, truth), rtol=0)


def test_correlations_match_scipy_unweighted(pair):
    pred, truth, _ = pair
    for k in range(pred.shape[0]):
        np.testing.assert_allclose(pearson_delta(pred[k], truth[k]), stats.pearsonr(pred[k], truth[k])[0], rtol=1e-13)
        np.testing.assert_allclose(spearman_delta(pred[k], truth[k]), stats.spearmanr(pred[k], truth[k])[0],
                                   rtol=1e-13)


def test_weighted_pearson_and_cosine_closed_forms(pair):
    pred, truth, w = pair
    for k in range(pred.shape[0]):
        c = np.cov(pred[k], truth[k], aweights=w[k])
        np.testing.assert_allclose(pearson_delta(pred[k], truth[k], weights=w[k]), c[0, 1] / np.sqrt(c[0, 0] * c[1, 1]),
                                   rtol=1e-12)
        cos = np.sum(w[k] * pred[k] * truth[k]) / np.sqrt(np.sum(w[k] * pred[k] ** 2) * np.sum(w[k] * truth[k] ** 2))
        np.testing.assert_allclose(cosine_delta(pred[k], truth[k], weights=w[k]), cos, rtol=1e-13)


def test_spearman_with_ties_matches_scipy_average_ranks(rng):
    x = rng.integers(0, 4, size=50).astype(float)
    y = rng.integers(0, 5, size=50).astype(float)
    np.testing.assert_allclose(spearman_delta(x, y), stats.spearmanr(x, y)[0], rtol=1e-13)


def test_weighted_midranks_are_weight_below_plus_half_the_tie_group():
    x = np.array([[3.0, 1.0, 3.0, 2.0]])
    w = np.array([[1.0, 2.0, 0.5, 4.0]])
    # sorted values 1 (weight 2), 2 (weight 4), 3 and 3 (weights 1 and 0.5): weight below + half the group
    np.testing.assert_allclose(_weighted_midranks(x, w), [[6.0 + 0.75, 0.0 + 1.0, 6.0 + 0.75, 2.0 + 2.0]])
    np.testing.assert_allclose(_weighted_midranks(x, None), stats.rankdata(x, axis=1) - 0.5)


@pytest.mark.parametrize("per_row", [False, True])
def test_midrank_kernel_matches_numpy_twin(rng, per_row):
    """Kernel vs the obviously-correct O(G^2) twin, with ties, zero weights and thread counts 1 and 2."""
    from shrinkpert._numba import thread_limit
    from tests.twins import weighted_midranks as twin

    x = rng.integers(-4, 5, size=(9, 31)).astype(float)
    x[2] = rng.normal(size=31)  # no ties
    w = rng.uniform(0, 2, size=(9 if per_row else 1, 31))
    w[:, :3] = 0.0
    for n in (1, 2):
        with thread_limit(n):
            got = _weighted_midranks(x, w)
        np.testing.assert_allclose(got, twin(x, w), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("func", [pearson_delta, spearman_delta])
def test_constant_vectors_give_nan(func):
    assert np.isnan(func([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert np.isnan(func([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))
    # constant on the weighted genes only
    assert np.isnan(func([1.0, 1.0, 9.0], [1.0, 2.0, 3.0], weights=[1, 1, 0]))
    assert np.isfinite(func([1.0, 1.0, 9.0], [1.0, 2.0, 3.0]))


def test_r2_of_constant_truth_is_nan_where_scikit_learn_forces_a_number():
    skm = pytest.importorskip("sklearn.metrics")
    pred, truth = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0])
    assert np.isnan(r2_delta(pred, truth))
    assert skm.r2_score(truth, pred) == 0.0  # deliberate difference (docs/metrics.md)
    assert np.isnan(r2_delta(truth, truth))
    assert skm.r2_score(truth, truth) == 1.0


def test_cosine_of_zero_vector_is_nan():
    assert np.isnan(cosine_delta([0.0, 0.0], [1.0, 2.0]))
    assert np.isnan(cosine_delta([1.0, 2.0], [0.0, 0.0]))


def test_all_zero_weights_give_nan_not_zero(pair):
    pred, truth, w = pair
    w = w.copy()
    w[2] = 0.0
    for func in (mse, mae, rmse, mse_delta, mae_delta, pearson_delta, r2_delta, cosine_delta, spearman_delta):
        out = func(pred, truth, weights=w)
        assert np.isnan(out[2]) and np.isfinite(np.delete(out, 2)).all(), func.__name__


def test_known_values():
    assert mse([0.0, 0.0], [1.0, 3.0]) == 5.0
    assert mae([0.0, 0.0], [1.0, 3.0]) == 2.0
    assert mae([0.0, 0.0], [1.0, 3.0], weights=[3, 1]) == 1.5
    assert rmse([0.0], [2.0]) == 2.0
    assert cosine_delta([1.0, 0.0], [0.0, 1.0]) == 0.0
    assert pearson_delta([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == -1.0


def test_rows_of_a_matrix_equal_vector_calls(pair):
    pred, truth, w = pair
    out = pearson_delta(pred, truth, weights=w)
    for k in range(pred.shape[0]):
        assert out[k] == pearson_delta(pred[k], truth[k], weights=w[k])


def test_input_errors(pair):
    pred, truth, _ = pair
    with pytest.raises(GeneMismatchError, match="30 genes but true has 29"):
        mse(pred, truth[:, :29])
    with pytest.raises(InputError, match="6 perturbations \\(rows\\) but true has 5"):
        mse(pred, truth[:5])
    with pytest.raises(InputError, match="both be vectors"):
        mse(pred[0], truth)
    with pytest.raises(InputError, match="sparse matrix"):
        mse(sp.csr_matrix(pred), truth)
    with pytest.raises(InputError, match="must be numeric"):
        mse(["a", "b"], [1.0, 2.0])
    with pytest.raises(InputError, match="expected \\(n_genes,\\) or"):
        mse(pred[None], truth[None])
    with pytest.raises(InputError, match="at least one perturbation and one gene"):
        mse(np.empty((0, 3)), np.empty((0, 3)))
    with pytest.raises(InputError, match="1 non-finite value\\(s\\) \\(first at row 1, gene 2\\)"):
        bad = pred.copy()
        bad[1, 2] = np.inf
        mse(bad, truth)


def test_weight_errors(pair):
    pred, truth, _ = pair
    with pytest.raises(InputError, match="weights has shape \\(29,\\)"):
        mse(pred, truth, weights=np.ones(29))
    with pytest.raises(InputError, match="non-negative"):
        mse(pred, truth, weights=-np.ones(30))
    with pytest.raises(InputError, match="NaN or inf"):
        mse(pred, truth, weights=np.full(30, np.nan))
    with pytest.raises(InputError, match="sparse matrix"):
        mse(pred, truth, weights=sp.csr_matrix(np.ones((6, 30))))
    with pytest.raises(InputError, match="must be numeric"):
        mse(pred, truth, weights=["x"] * 30)


def test_accepts_lists_and_pandas(pair):
    pd = pytest.importorskip("pandas")
    pred, truth, _ = pair
    frame = pd.DataFrame(pred)
    np.testing.assert_array_equal(mse(frame, truth), mse(pred, truth))
    assert mse(pred[0].tolist(), truth[0].tolist()) == mse(pred[0], truth[0])


def test_error_metrics_of_one_pair_share_one_pass(rng):
    """mse, rmse and mse_delta (and mae, mae_delta) of the same inputs read one kept per-row error;
    each call returns its own array, equal to the unshared value."""
    from shrinkpert.metrics import mae, mae_delta, mse, mse_delta, rmse
    from shrinkpert.metrics.shared import SharedIntermediates

    pred, true = rng.normal(size=(6, 30)), rng.normal(size=(6, 30))
    w = rng.uniform(0, 1, size=(6, 30))
    shared = SharedIntermediates()
    got = {f.__name__: f(pred, true, weights=w, shared=shared) for f in (mse, mae, rmse, mse_delta, mae_delta)}
    for f in (mse, mae, rmse, mse_delta, mae_delta):
        np.testing.assert_array_equal(got[f.__name__], f(pred, true, weights=w))
    assert sorted(k for k in shared.pred if k[0] == "expression") == [("expression", "mae"), ("expression", "mse")]
    got["mse"][:] = -1.0  # the caller's copy, not the kept one
    np.testing.assert_array_equal(mse_delta(pred, true, weights=w, shared=shared), mse(pred, true, weights=w))
