"""Map agreement: per-perturbation AP against scikit-learn, closed forms, Spearman against scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shrinkpert.biology import cosine_similarity, map_agreement, map_agreement_score
from shrinkpert.biology.agreement import neighbour_average_precision
from shrinkpert.errors import InputError

sk_metrics = pytest.importorskip("sklearn.metrics")


def _brute(s_pred, s_true, k):
    """scikit-learn AP per row with the truth's top-k (ties included) as positives."""
    n = len(s_true)
    out = np.full(n, np.nan)
    for p in range(n):
        others = [q for q in range(n) if q != p]
        t = s_true[p, others]
        kth = np.sort(t)[::-1][k - 1]
        y = (t >= kth).astype(int)
        if 0 < y.sum() < len(y):
            out[p] = sk_metrics.average_precision_score(y, s_pred[p, others])
    return out


def test_average_precision_matches_scikit_learn_with_and_without_ties():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(25, 10))
    pred = truth + rng.normal(scale=1.0, size=truth.shape)
    s_true, s_pred = cosine_similarity(truth), cosine_similarity(pred)
    for k in (1, 3, 8):
        np.testing.assert_allclose(neighbour_average_precision(s_pred, s_true, k), _brute(s_pred, s_true, k),
                                   rtol=1e-12)
    coarse = np.round(s_pred, 1)  # many tied predicted similarities
    np.testing.assert_allclose(neighbour_average_precision(coarse, s_true, 4), _brute(coarse, s_true, 4), rtol=1e-12)
    np.testing.assert_allclose(map_agreement_score(pred, truth, n_neighbors=3), _brute(s_pred, s_true, 3),
                               rtol=1e-12)


def test_row_blocks_do_not_change_the_values(monkeypatch):
    import shrinkpert.biology.agreement as agreement

    rng = np.random.default_rng(5)
    truth = rng.normal(size=(30, 6))
    s_true, s_pred = cosine_similarity(truth), cosine_similarity(truth + rng.normal(size=truth.shape))
    whole = neighbour_average_precision(s_pred, s_true, 4)
    monkeypatch.setattr(agreement, "_BLOCK_ENTRIES", 7 * 30)  # blocks of 7 rows
    np.testing.assert_array_equal(neighbour_average_precision(s_pred, s_true, 4), whole)
    np.testing.assert_allclose(whole, _brute(s_pred, s_true, 4), rtol=1e-12)


def test_closed_forms_perfect_tied_and_reversed():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(12, 6))
    assert (map_agreement_score(truth, truth, n_neighbors=4) == 1.0).all()
    collapsed = np.tile(rng.normal(size=6), (12, 1))  # every predicted similarity tied
    np.testing.assert_allclose(map_agreement_score(collapsed, truth, n_neighbors=4), 4 / 11, rtol=1e-15)
    # hand-made: 4 perturbations, truth neighbour of 0 is 1; prediction ranks 1 last of 3 -> AP = 1/3
    s_true = np.array([[1, .9, .1, .0], [.9, 1, .0, .1], [.1, .0, 1, .8], [.0, .1, .8, 1]])
    s_pred = np.array([[1, .1, .5, .4], [.1, 1, .2, .3], [.5, .2, 1, .9], [.4, .3, .9, 1]])
    np.testing.assert_allclose(neighbour_average_precision(s_pred, s_true, 1), [1 / 3, 1 / 3, 1, 1])


def test_map_level_summary_and_spearman():
    rng = np.random.default_rng(2)
    truth = pd.DataFrame(rng.normal(size=(15, 8)), index=[f"P{i}" for i in range(15)])
    pred = truth + rng.normal(scale=0.8, size=truth.shape)
    res = map_agreement(pred.iloc[::-1], truth, n_neighbors=3)  # pred reordered to truth
    iu = np.triu_indices(15, k=1)
    rho = stats.spearmanr(cosine_similarity(pred.to_numpy())[iu], cosine_similarity(truth.to_numpy())[iu]).statistic
    assert res.spearman == pytest.approx(rho, rel=1e-12)
    np.testing.assert_allclose(res.average_precision.to_numpy(),
                               map_agreement_score(pred.to_numpy(), truth.to_numpy(), n_neighbors=3), rtol=1e-12)
    assert res.chance == pytest.approx(3 / 14)
    assert list(res.to_frame().columns) == ["perturbation", "average_precision"]
    assert res.summary().loc[0, "mean_average_precision"] == pytest.approx(res.average_precision.mean())


def test_zero_rows_are_nan_and_left_out_as_candidates():
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(8, 5))
    pred = truth.copy()
    pred[2] = 0.0
    ap = map_agreement_score(pred, truth, n_neighbors=2)
    assert np.isnan(ap[2]) and np.isfinite(np.delete(ap, 2)).all()
    s_t, s_p = cosine_similarity(np.delete(truth, 2, 0)), cosine_similarity(np.delete(pred, 2, 0))
    np.testing.assert_allclose(np.delete(ap, 2), _brute(s_p, s_t, 2), rtol=1e-12)


def test_input_errors():
    x = np.random.default_rng(4).normal(size=(5, 3))
    with pytest.raises(InputError, match="n_neighbors must be a positive integer"):
        map_agreement_score(x, x, n_neighbors=0)
    with pytest.raises(InputError, match="they must match"):
        map_agreement_score(x, x[:4])
    with pytest.raises(InputError, match="NaN or infinite"):
        map_agreement_score(np.full((5, 3), np.nan), x)
    with pytest.raises(InputError, match="at least 3 perturbations"):
        map_agreement_score(x[:2], x[:2])
    a = pd.DataFrame(x, index=list("ABCDE"))
    with pytest.raises(InputError, match="same perturbations"):
        map_agreement(a.rename(index={"A": "Z"}), a)
    with pytest.raises(InputError, match="same genes"):
        map_agreement(a.rename(columns={0: 9}), a)
