"""The vectorised DE ranking metrics against their previous per-row implementations and closed forms.

Twins: the loop over perturbations of ``_average_precision`` (tied scores one threshold), the
``scipy.stats.rankdata`` ROC AUC and the full stable argsort of ``_top_positions``, as they were
before they were vectorised; plus brute-force definitions (precision at every distinct threshold,
the Mann–Whitney pair count). Inputs have many ties in ``q`` and ``|lfc|``, rows without or with
only DE genes and ``q`` exactly at ``alpha``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shrinkpert.errors import InputError
from shrinkpert.metrics import DECalls, overlap_at_n, pr_auc, precision_at_n, roc_auc
from shrinkpert.metrics.de import Q_USE, _top_positions
from shrinkpert.metrics.shared import SharedIntermediates


def _ap_row_twin(y, s):
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tp = np.cumsum(y)[ends]
    precision = tp / (ends + 1)
    return float(np.sum(np.diff(np.r_[0.0, tp / tp[-1]]) * precision))


def _pr_auc_twin(pred, truth, alpha, q_floor):
    labels = np.atleast_2d(truth.q) < alpha
    scores = -np.maximum(np.atleast_2d(pred.q), q_floor)
    out = np.full(labels.shape[0], np.nan)
    for r in range(labels.shape[0]):
        if 0 < labels[r].sum() < labels.shape[1]:
            out[r] = _ap_row_twin(labels[r].astype(float), scores[r])
    return out


def _roc_auc_twin(pred, truth, alpha, q_floor):
    labels = np.atleast_2d(truth.q) < alpha
    ranks = stats.rankdata(-np.maximum(np.atleast_2d(pred.q), q_floor), axis=1)
    n_pos = labels.sum(axis=1).astype(float)
    n_neg = labels.shape[1] - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * labels).sum(axis=1) - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return np.where((n_pos == 0) | (n_neg == 0), np.nan, auc)


def _top_twin(lfc, sig):
    key = np.where(sig, -np.abs(lfc), np.inf)
    order = np.argsort(key, axis=1, kind="stable")
    pos = np.empty_like(order)
    np.put_along_axis(pos, order, np.arange(order.shape[1])[None, :].repeat(order.shape[0], 0), axis=1)
    return pos


def _brute_ap(y, q):
    """AP from its definition: sum over distinct thresholds of (recall step) x precision."""
    out, prev = 0.0, 0.0
    for c in np.unique(q):
        hit = q <= c
        recall = y[hit].sum() / y.sum()
        out += (recall - prev) * y[hit].mean()
        prev = recall
    return out


def _brute_auc(y, q):
    pos, neg = q[y], q[~y]
    return float(((pos[:, None] < neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def _calls(seed, n_rows=9, n_genes=40):
    rng = np.random.default_rng(seed)
    q = rng.choice([0.0, 1e-12, 0.001, 0.01, 0.05, 0.2, 0.5, 1.0], size=(n_rows, n_genes))
    q[0] = rng.random(n_genes)
    q[1] = 1.0  # truth: no DE gene / prediction: all tied
    q[2] = 0.001  # all DE
    lfc = rng.choice([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0], size=(n_rows, n_genes))
    lfc[3] = rng.normal(size=n_genes)
    return DECalls(lfc=lfc, q=q)


@pytest.mark.parametrize("q_floor", [0.0, 1e-10, 0.05])
@pytest.mark.parametrize("seed", range(5))
def test_pr_and_roc_auc_equal_their_per_row_twins(seed, q_floor):
    pred, truth = _calls(seed), _calls(seed + 100)
    for alpha in (0.05, 0.01):
        np.testing.assert_array_equal(pr_auc(pred, truth, alpha=alpha, q_floor=q_floor),
                                      _pr_auc_twin(pred, truth, alpha, q_floor))
        np.testing.assert_array_equal(roc_auc(pred, truth, alpha=alpha, q_floor=q_floor),
                                      _roc_auc_twin(pred, truth, alpha, q_floor))


def test_auc_against_their_definitions():
    pred, truth = _calls(7), _calls(8)
    labels = truth.q < 0.05
    for r in range(pred.q.shape[0]):
        if 0 < labels[r].sum() < labels.shape[1]:
            assert pr_auc(DECalls(pred.lfc[r], pred.q[r]),
                          DECalls(truth.lfc[r], truth.q[r])) == pytest.approx(_brute_ap(labels[r], pred.q[r]), rel=1e-12)
            assert roc_auc(DECalls(pred.lfc[r], pred.q[r]),
                           DECalls(truth.lfc[r], truth.q[r])) == pytest.approx(_brute_auc(labels[r], pred.q[r]), rel=1e-12)


def test_given_order_gives_the_same_auc_and_is_checked():
    pred, truth = _calls(11), _calls(12)
    rng = np.random.default_rng(0)
    # a different sorting permutation (ties shuffled): same values
    key = rng.random(pred.q.shape)
    order = np.array([np.lexsort((k, q)) for k, q in zip(key, pred.q)])
    given = DECalls(pred.lfc, pred.q, q_order=order)
    np.testing.assert_array_equal(pr_auc(given, truth), pr_auc(pred, truth))
    np.testing.assert_array_equal(roc_auc(given, truth), roc_auc(pred, truth))
    bad = order.copy()
    bad[0, [0, -1]] = bad[0, [-1, 0]]
    with pytest.raises(InputError, match="sorts q ascending"):
        DECalls(pred.lfc, pred.q, q_order=bad)
    dup = order.copy()
    dup[0, 1] = dup[0, 0]
    with pytest.raises(InputError, match="permutation"):
        DECalls(pred.lfc, pred.q, q_order=dup)
    with pytest.raises(InputError, match="integer gene positions"):
        DECalls(pred.lfc, pred.q, q_order=order + 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_top_positions_agree_with_full_sort_on_significant_genes(seed):
    calls = _calls(seed)
    for alpha in (0.05, 0.001, 1.0):
        sig = calls.q < alpha
        new, old = _top_positions(calls.lfc, sig), _top_twin(calls.lfc, sig)
        np.testing.assert_array_equal(new[sig], old[sig])
        assert (new[~sig] >= sig.sum(axis=1, keepdims=True).repeat(sig.shape[1], 1)[~sig]).all()


@pytest.mark.parametrize("seed", range(3))
def test_overlap_and_precision_shared_equal_unshared(seed):
    pred, truth = _calls(seed), _calls(seed + 50)
    shared = SharedIntermediates()
    for n in (None, 3, 10):
        np.testing.assert_array_equal(overlap_at_n(pred, truth, n=n, shared=shared), overlap_at_n(pred, truth, n=n))
        np.testing.assert_array_equal(precision_at_n(pred, truth, n=n, shared=shared),
                                      precision_at_n(pred, truth, n=n))


def test_calls_only_metrics_ignore_q_above_alpha():
    """What Q_USE promises: replacing every q >= alpha by 1 on a "calls" side changes nothing."""
    pred, truth = _calls(21), _calls(22)
    alpha = 0.05
    pruned = {"pred": DECalls(pred.lfc, np.where(pred.q < alpha, pred.q, 1.0)),
              "truth": DECalls(truth.lfc, np.where(truth.q < alpha, truth.q, 1.0))}
    for func, (use_p, use_t) in Q_USE.items():
        p = pruned["pred"] if use_p != "values" else pred
        t = pruned["truth"] if use_t != "values" else truth
        np.testing.assert_array_equal(func(p, t, alpha=alpha), func(pred, truth, alpha=alpha))


def test_auc_shared_equal_unshared():
    pred, truth = _calls(31), _calls(32)
    shared = SharedIntermediates()
    for func in (pr_auc, roc_auc, pr_auc):
        np.testing.assert_array_equal(func(pred, truth, shared=shared), func(pred, truth))
    np.testing.assert_array_equal(roc_auc(pred, truth, q_floor=0.05, shared=shared), roc_auc(pred, truth, q_floor=0.05))
