"""The fast L1 and mid-rank paths give the values of the kernels they replace.

Twins: ``pairwise_distances`` (the exact perturbation × perturbation kernel, the L1 matrix of the
rank metrics before the blocked kernel and the pivot path) and ``weighted_midranks`` (the
previous mid-rank kernel, sorting inside Numba) plus the O(G²) NumPy twin in ``tests/twins.py``.
Distances and ranks must be identical (``assert_array_equal``): ties are decided exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert._numba import thread_limit
from shrinkpert.metrics import _distance_kernels as K
from shrinkpert.metrics import _pairwise, discrimination_score, spearman_delta
from shrinkpert.metrics._rank_kernels import midranks_from_order, weighted_midranks
from shrinkpert.metrics.expression import _weighted_midranks
from shrinkpert.metrics.shared import SharedIntermediates
from tests.metrics.test_rank_products import _twin_weights, assert_same
from tests.twins import weighted_midranks as numpy_twin


def _l1_twin(q, c, w):
    out = np.empty((q.shape[0], c.shape[0]))
    with thread_limit(1):
        K.pairwise_distances(q, c, w, K.L1, out)
    return out


@pytest.mark.parametrize("shape", [(7, 37, 29), (9, 64, 5), (1, 3, 40), (70, 100, 130)])
def test_blocked_kernel_is_bit_identical(rng, shape):
    """Whole rows of every kind equal the matrix kernel under each query's weights (target at 0).

    Sizes off the 32-lane blocks, the 64-gene segments and the queries per task; shared and
    per-row weights with zeros; duplicated rows; a distance exactly 0; rows constant on their
    weighted genes (Pearson's NaN); query rows in any order."""
    n_q, n_c, G = shape
    q, c = rng.normal(size=(n_q, G)) * 10.0 ** rng.integers(-3, 4, size=(n_q, G)), rng.normal(size=(n_c, G))
    c[-1] = c[0]
    q[0] = c[1]  # distance exactly 0
    c[min(2, n_c - 1)] = 2.0
    q[-1] = -1.0
    for w in (rng.uniform(0, 2, size=(1, G)), rng.uniform(0, 2, size=(n_q, G)) * (rng.random((n_q, G)) < 0.8)):
        target = rng.integers(-1, G, size=n_q)
        for kind in (K.L1, K.L2, K.COSINE, K.PEARSON):
            twin = np.empty((n_q, n_c))
            with thread_limit(1):
                K.pairwise_distances(q, c, _twin_weights(w, target, (n_q, G)), kind, twin)
            rows = rng.permutation(n_q)
            for per_task in (1, 3, 64):
                out = np.full((n_q, n_c), -7.0)
                K.rows_blocked(q, c, K.candidate_blocks(c), w, target, kind, rows, per_task, out)
                np.testing.assert_array_equal(out, twin[rows])


def test_exact_pairs_whole_rows_and_single_pairs(rng, monkeypatch):
    """Rows with many pairs (whole rows, in blocks of rows) and rows with few give the matrix entries."""
    monkeypatch.setattr(_pairwise, "_BLOCK", 3 * 40)  # three whole rows at a time
    P, G = 30, 50
    q, c = rng.normal(size=(P, G)), rng.normal(size=(40, G))
    w, target = rng.uniform(0, 2, size=(P, G)), rng.integers(-1, G, size=P)
    counts = rng.choice([0, 1, 5, 12, 40], size=P)  # 12 and 40 of 40 candidates: whole rows
    rows = np.repeat(np.arange(P), counts)
    cols = np.concatenate([rng.choice(40, size=k, replace=False) for k in counts])
    for kind in (K.L1, K.COSINE, K.PEARSON):
        twin = np.empty((P, 40))
        K.pairwise_distances(q, c, _twin_weights(w, target, (P, G)), kind, twin)
        np.testing.assert_array_equal(_pairwise._exact(q, c, w, target, kind, rows, cols), twin[rows, cols])


def _integer_deltas(rng, P=40, G=32):
    """Small integers: L1 sums are exact, so exact ties abound (the hardest case for any bound)."""
    true = rng.integers(-2, 3, size=(P, G)).astype(float)
    true[5] = true[4]
    target = rng.integers(-1, G, size=P)
    return true, target


def test_pivot_path_single_profile_and_target_arms(rng, monkeypatch):
    """Predictions equal to one profile except at a few genes (control, target_only, target_spike).

    Integer data tie often; the path would hand them all to the exact kernel and, with many, give
    up for the full matrix: that limit is lifted here so that the pivot path decides every case."""
    monkeypatch.setattr(_pairwise, "_UNSURE", 1.0)
    true, target = _integer_deltas(rng)
    P, G = true.shape
    profile = rng.integers(-1, 2, size=G).astype(float)
    single = np.tile(profile, (P, 1))
    only = single.copy()
    rows = np.flatnonzero(target >= 0)
    only[rows, target[rows]] = true[rows, target[rows]]  # the own target from the truth
    spike = single + 0.0
    spike[:, np.unique(target[rows])] += 1.0
    spike[rows, target[rows]] = -2.0
    shrunk = rng.uniform(0, 2, size=(P, G)) * (rng.random((P, G)) < 0.9)
    for pred in (single, only, spike):
        taken = _pairwise.l1_standing(pred, true, np.ones((1, G)), target, np.zeros(P, bool))
        assert taken is not None  # the pivot path is the one tested
        for weights in (None, np.ones(G) * 0.5, shrunk):
            assert_same(pred, true, weights, target)
            assert_same(pred, true + 0.5 * rng.normal(size=true.shape), weights, target)


def test_pivot_path_decides_clear_pairs_without_the_kernel(rng):
    """Continuous data: the exact kernel computes the own pairs only."""
    P, G = 50, 300
    true = rng.normal(size=(P, G))
    pred = np.tile(true.mean(axis=0), (P, 1))
    target = np.arange(P)
    base = np.ones((1, G))
    dead = np.zeros(P, dtype=bool)
    st = _pairwise.l1_standing(pred, true, base, target, dead)
    assert st.n_exact == P
    w = _twin_weights(None, target, (P, G))
    d = _l1_twin(pred, true, w)
    own = np.diag(d)[:, None]
    np.testing.assert_array_equal(st.less, (d < own).sum(axis=1))
    np.testing.assert_array_equal(st.greater, (d > own).sum(axis=1))


def test_dense_predictions_do_not_take_the_pivot_path(rng):
    pred = rng.normal(size=(30, 50))
    assert _pairwise.l1_standing(pred, rng.normal(size=(30, 50)), np.ones((1, 50)), np.full(30, -1),
                                 np.zeros(30, bool)) is None
    true, target = _integer_deltas(rng, P=30, G=50)
    assert_same(np.round(pred), true, rng.uniform(0, 1, size=(30, 50)), target)


def test_l1_scores_with_exact_ties_in_the_blocked_kernel(rng):
    """Integer predictions and truths: the blocked kernel's ties are the twin's ties."""
    true, target = _integer_deltas(rng)
    pred = true + rng.integers(-1, 2, size=true.shape)
    got = assert_same(pred, true, None, target)
    halves = np.round(got[("discrimination_score", "l1")] * 2 * true.shape[0])
    assert (halves % 2 == 1).any()  # some exact ties were found (each counts one half)


@pytest.mark.parametrize("per_row", [False, True])
def test_midranks_from_any_order_equal_the_kernels(rng, per_row):
    x = rng.integers(-3, 4, size=(11, 57)).astype(float)
    x[3] = rng.normal(size=57)
    w = rng.uniform(0, 2, size=(11 if per_row else 1, 57))
    w[:, :4] = 0.0
    reference = np.empty_like(x)
    weighted_midranks(x, w, reference)
    np.testing.assert_allclose(reference, numpy_twin(x, w), rtol=1e-13, atol=1e-13)
    # NumPy's sort and a sort with every tie group reversed: ties are found by value
    for order in (np.argsort(x, axis=1), np.lexsort((-np.arange(57)[None, :].repeat(11, 0), x), axis=1)):
        out = np.empty_like(x)
        midranks_from_order(x, order, w, out)
        np.testing.assert_allclose(out, reference, rtol=1e-13, atol=1e-13)
        for i in range(11):  # equal values, equal ranks: tie groups identical
            same = x[i][:, None] == x[i][None, :]
            assert (out[i][:, None] == out[i][None, :])[same].all()
    unit = np.empty_like(x)
    midranks_from_order(x, np.argsort(x, axis=1), np.ones((1, 57)), unit)
    np.testing.assert_array_equal(unit, _weighted_midranks(x, None))


def test_spearman_shares_the_sort_between_weightings(rng):
    pred, true = rng.normal(size=(6, 40)), np.round(rng.normal(size=(6, 40)), 1)
    any_p, any_t = {}, {}
    for weights in (None, rng.uniform(0, 1, size=40), rng.uniform(0, 1, size=(6, 40))):
        shared = SharedIntermediates(pred_any_weights=any_p, truth_any_weights=any_t)
        np.testing.assert_array_equal(spearman_delta(pred, true, weights=weights, shared=shared),
                                      spearman_delta(pred, true, weights=weights))
        np.testing.assert_array_equal(any_p["row_order"], np.argsort(pred, axis=1))
        np.testing.assert_array_equal(any_t["row_order"], np.argsort(true, axis=1))


def test_discrimination_l1_equals_cell_eval_definition_on_a_small_case():
    """Hand example: |q - c| sums, the own truth closest for rows 0 and 2, tied for row 1."""
    true = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    pred = np.array([[0.5, 0.0], [1.0, 0.0], [0.0, 2.0]])
    # row 1: d(pred1, true0) = 1 = d(pred1, true1) -> one tie counted half
    np.testing.assert_array_equal(discrimination_score(pred, true, metric="l1"), [1.0, 1.0 - 0.5 / 3, 1.0])


def test_query_that_is_zero_only_without_its_target_is_defined(rng):
    """Shared weights, the query sums taken as full sums less the target's term: a row that is 1e-30
    except a large target value must stay defined under cosine, as in the kernel (the subtraction
    alone would give exactly 0 and call it undefined)."""
    P, G = 8, 12
    true = rng.normal(size=(P, G))
    pred = np.full((P, G), 1e-30)
    target = np.arange(P)
    pred[np.arange(P), target] = 1e10
    got = assert_same(pred, true, np.ones(G), target)
    assert np.isfinite(got[("discrimination_score", "cosine")]).all()


def test_pivot_path_is_not_used_where_terms_could_underflow(rng):
    true, target = _integer_deltas(rng)
    single = np.tile(true[0] * 1e-42, (true.shape[0], 1))
    assert not _pairwise._within(*_pairwise._TAME, _pairwise._range(single))
    assert_same(single, true * 1e-42, None, target)


def _twin_corrections(q, y, c, base, target):
    """NumPy twin of ``l1_pivot_corrections`` over every query, its deviations found afresh."""
    n, G = q.shape
    b = np.broadcast_to(base, (n, G))
    corr, mag = np.zeros((n, c.shape[0])), np.zeros((n, c.shape[0]))
    for i in range(n):
        genes = np.flatnonzero((q[i] != y) | (np.arange(G) == target[i]))
        new = np.where(genes == target[i], 0.0, b[i, genes]) * np.abs(q[i, genes] - c[:, genes])
        old = b[i, genes] * np.abs(y[genes] - c[:, genes])
        corr[i], mag[i] = (new - old).sum(axis=1), (new + old).sum(axis=1)
    return corr, mag


@pytest.mark.parametrize("per_row", [False, True])
def test_pivot_corrections_match_numpy_twin(rng, per_row):
    P, G = 9, 20
    y = rng.normal(size=G)
    q = np.tile(y, (P, 1))
    q[2, [3, 7]] = [5.0, -1.0]
    q[5, 0] = 2.0
    target = np.array([3, -1, 4, 19, -1, 0, 7, 7, -1])
    c = rng.normal(size=(P + 2, G))
    base = rng.uniform(0, 2, size=(P if per_row else 1, G))
    pivot_row, ptr, genes, residual = _pairwise._pivot_deviations(q, base, target)
    np.testing.assert_array_equal(pivot_row, y)
    np.testing.assert_array_equal(residual, 0.0)
    corr, mag = np.empty((P, P + 2)), np.empty((P, P + 2))
    K.l1_pivot_corrections(q, y, c, base, target, np.arange(P), ptr, genes, corr, mag)
    want_corr, want_mag = _twin_corrections(q, y, c, base, target)
    np.testing.assert_allclose(corr, want_corr, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(mag, want_mag, rtol=1e-12, atol=1e-12)
    # pivot distances plus corrections are the kernel's distances (to rounding)
    d = _l1_twin(q, c, _twin_weights(base if per_row else base[0], target, (P, G)))
    pivot = np.abs(y[None, :] - c) @ np.broadcast_to(base, (P, G)).T
    np.testing.assert_allclose(pivot.T + corr, d, rtol=1e-12, atol=1e-12)


def test_pivot_path_with_a_small_dense_residual(rng):
    """Leave-one-out means differ from their median on every gene, by about 1/P of a profile: the
    triangle inequality decides almost every pair, the rest go to the exact kernel."""
    P, G = 120, 40
    true = rng.normal(size=(P, G)) * rng.uniform(0.5, 3.0, size=(P, 1))  # distances spread out
    true[7] = true[6]  # equal leave-one-out means: exact ties among the queries' candidates
    loo = (true.sum(axis=0)[None, :] - true) / (P - 1)
    target = rng.integers(-1, G, size=P)
    st = _pairwise.l1_standing(loo, true, np.ones((1, G)), target, np.zeros(P, bool))
    assert st is not None and st.n_exact < P * P / 10
    for weights in (None, rng.uniform(0, 2, size=(P, G))):
        assert_same(loo, true, weights, target)
        assert_same(2.0 * loo - 1.0, true, weights, target)  # a scaled mean


@pytest.mark.parametrize("per_row", [False, True])
def test_pivot_deviations_equal_their_numpy_twin(rng, per_row):
    """Kept genes (target, and every differing gene of a sparse row) and the residual over the
    others, summed in gene order: the NumPy expressions the kernels replaced."""
    P, G = 10, 24
    y = np.round(rng.normal(size=G), 1)
    q = np.tile(y, (P, 1))
    q[1, [2, 9]] = [4.0, -3.0]  # sparse
    q[2] = y + rng.normal(size=G)  # dense: nothing but its target kept
    q[3, 5] = -0.0 if y[5] == 0 else y[5]  # equal by value
    q[4, :4] = 1e-3
    target = np.array([3, -1, 4, 23, -1, 0, 7, 7, -1, 2])
    base = rng.uniform(0, 2, size=(P if per_row else 1, G))
    max_kept = 3
    sparse, counts, residual = np.empty(P, dtype=np.bool_), np.empty(P, dtype=np.int64), np.empty(P)
    K.pivot_deviations(q, y, base, target, max_kept, sparse, counts, residual)
    ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
    genes = np.empty(ptr[-1], dtype=np.int64)
    K.kept_genes(q, y, target, sparse, ptr, genes)
    diff = q != y
    keep = diff & (diff.sum(axis=1) <= max_kept)[:, None]
    rows = np.flatnonzero(target >= 0)
    keep[rows, target[rows]] = True
    terms = np.where(keep, 0.0, np.broadcast_to(base, q.shape) * np.abs(q - y))
    np.testing.assert_array_equal(counts, keep.sum(axis=1))
    np.testing.assert_array_equal(genes, np.nonzero(keep)[1])
    np.testing.assert_array_equal(residual, np.cumsum(terms, axis=1)[:, -1])
    assert residual[2] > 0 and counts[1] == 2 and counts[2] == 1
