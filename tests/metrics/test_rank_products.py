"""Rank metrics from matrix products equal the direct kernel matrices exactly (ties included).

The twin is the code the rank metrics used before the products: the full perturbation ×
perturbation matrix of the exact kernel (``pairwise_distances``, one weight row per anchor with the
target gene set to 0) and the mid-rank / farther fraction read off it. Every value must be
identical (``assert_array_equal``, NaN in the same places): the new path decides each comparison
from the product only when the gap exceeds a bound on the rounding difference, and recomputes the
rest with a kernel that is bit-identical to the matrix entries.
"""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert._numba import thread_limit
from shrinkpert.metrics import (
    _distance_kernels as K,
    _pairwise,
    centroid_accuracy,
    discrimination_score,
    normed_retrieval,
    perturbench_rank,
    perturbench_rank_transposed,
)
from shrinkpert.metrics.shared import SharedIntermediates

KINDS = {"l1": K.L1, "l2": K.L2, "cosine": K.COSINE, "pearson": K.PEARSON}


# ------------------------------------------------------------------------------------------
# the direct twin (the previous implementation)
# ------------------------------------------------------------------------------------------


def _twin_weights(weights, target, shape):
    n_p, n_g = shape
    w = np.ones((1, n_g)) if weights is None else np.atleast_2d(np.asarray(weights, dtype=np.float64))
    if target is None:
        return np.ascontiguousarray(w[:1] if (w == w[:1]).all() else w)
    out = np.array(np.broadcast_to(w, shape), dtype=np.float64)
    rows = np.flatnonzero(np.asarray(target) >= 0)
    out[rows, np.asarray(target)[rows]] = 0.0
    return out


def _twin_matrix(pred, true, weights, target, metric, anchor):
    w = _twin_weights(weights, target, pred.shape)
    q, c = (pred, true) if anchor == "pred" else (true, pred)
    d = np.empty((q.shape[0], c.shape[0]))
    with thread_limit(1):  # small inputs: one thread is faster than waking the pool
        K.pairwise_distances(np.ascontiguousarray(q), np.ascontiguousarray(c), w, KINDS[metric], d)
    dead = (w.sum(axis=1) == 0) if w.shape[0] > 1 else np.repeat(w.sum() == 0, q.shape[0])
    return d, dead


def _twin_position(d, dead):
    own = np.diag(d)[:, None]
    pos = ((d < own).sum(axis=1) + ((d == own).sum(axis=1) - 1) / 2.0).astype(np.float64)
    pos[np.isnan(d).any(axis=1) | dead] = np.nan
    return pos


def _twin_farther(d, dead):
    own = np.diag(d)[:, None]
    frac = (d > own).sum(axis=1) / (d.shape[0] - 1.0)
    frac[np.isnan(d).any(axis=1) | dead] = np.nan
    return frac


def twin_scores(pred, true, weights=None, target=None):
    """Every rank metric and distance, the old way."""
    P = pred.shape[0]
    out = {}
    for metric in KINDS:
        d, dead = _twin_matrix(pred, true, weights, target, metric, "pred")
        out[("discrimination_score", metric)] = 1.0 - _twin_position(d, dead) / P
        out[("perturbench_rank_transposed", metric)] = _twin_position(d, dead) / P
        d, dead = _twin_matrix(pred, true, weights, target, metric, "true")
        out[("perturbench_rank", metric)] = _twin_position(d, dead) / P
    d, dead = _twin_matrix(pred, true, weights, target, "l2", "pred")
    out[("centroid_accuracy", "l2")] = _twin_farther(d, dead)
    d, dead = _twin_matrix(pred, true, weights, target, "pearson", "pred")
    out[("normed_retrieval", "pearson")] = _twin_farther(d, dead)
    return out


def new_scores(pred, true, weights=None, target=None, shared=None):
    kw = dict(weights=weights, target_index=target, shared=shared)
    out = {}
    for metric in KINDS:
        out[("discrimination_score", metric)] = discrimination_score(pred, true, metric=metric, **kw)
        out[("perturbench_rank_transposed", metric)] = perturbench_rank_transposed(pred, true, metric=metric, **kw)
        out[("perturbench_rank", metric)] = perturbench_rank(pred, true, metric=metric, **kw)
    out[("centroid_accuracy", "l2")] = centroid_accuracy(pred, true, **kw)
    out[("normed_retrieval", "pearson")] = normed_retrieval(pred, true, **kw)
    return out


def assert_same(pred, true, weights=None, target=None, shared=None):
    expected = twin_scores(pred, true, weights, target)
    got = new_scores(pred, true, weights, target, shared)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, err_msg=str(key))
    return got


# ------------------------------------------------------------------------------------------
# inputs with every kind of tie and degenerate row
# ------------------------------------------------------------------------------------------


def _awkward(rng, P=24, G=31):
    """Deltas with duplicated rows, rows equal after dropping a target gene, zero and constant rows."""
    true = rng.normal(size=(P, G)) * (rng.random((P, G)) < 0.6)
    pred = true + rng.normal(0, 0.7, size=(P, G))
    true[3] = true[1]  # duplicated true rows
    pred[5] = pred[4]  # duplicated predictions
    pred[7] = true[7]  # a perfect prediction (own distance exactly 0)
    true[9] = 0.0  # a zero true row (cosine / Pearson undefined against it)
    pred[11] = 0.0  # a zero prediction
    pred[12] = 2.5  # a constant prediction (Pearson undefined)
    true[14] = true[13]
    true[14, 6] = 9.0  # equal to row 13 except on gene 6 ...
    target = np.full(P, -1)
    target[[0, 2, 13, 14, 20]] = [6, 6, 6, 6, 30]  # ... the target of rows 0, 2, 13 and 14
    pred[16] = pred[15]
    pred[16, 6] = -3.0  # predictions equal except on the target of rows 0, 2, 13, 14
    return pred, true, target


@pytest.mark.parametrize("weighting", ["none", "shared", "per_row"])
@pytest.mark.parametrize("with_target", [False, True])
def test_products_equal_the_direct_kernel(rng, weighting, with_target):
    pred, true, target = _awkward(rng)
    P, G = pred.shape
    weights = {"none": None, "shared": rng.uniform(0, 2, size=G) * (rng.random(G) < 0.9),
               "per_row": rng.uniform(0, 2, size=(P, G)) * (rng.random((P, G)) < 0.9)}[weighting]
    got = assert_same(pred, true, weights, target if with_target else None)
    # the degenerate rows really are NaN where the kernel says so, and the rest is defined
    assert np.isnan(got[("discrimination_score", "cosine")][11])
    assert np.isnan(got[("normed_retrieval", "pearson")][12])
    assert np.isfinite(got[("discrimination_score", "l1")]).all()


@pytest.mark.parametrize("weighting", ["none", "shared", "per_row"])
def test_mode_collapse_and_single_profile_predictions(rng, weighting):
    """One profile for every perturbation: its products are one matrix-vector product each."""
    pred, true, target = _awkward(rng)
    P, G = true.shape
    weights = {"none": None, "shared": rng.uniform(0, 2, size=G) * (rng.random(G) < 0.9),
               "per_row": rng.uniform(0, 2, size=(P, G)) * (rng.random((P, G)) < 0.9)}[weighting]
    for collapsed in (np.tile(true.mean(axis=0), (true.shape[0], 1)), np.zeros_like(true),
                      np.full_like(true, 0.25)):
        got = assert_same(collapsed, true, weights, target)
        # every prediction the same: each true row sees all predictions tied, P-1 ties count half
        if np.any(collapsed):
            P = true.shape[0]
            finite = np.isfinite(got[("perturbench_rank", "l2")])
            np.testing.assert_array_equal(got[("perturbench_rank", "l2")][finite], (P - 1) / (2 * P))


def test_one_profile_products_are_broadcast_views(rng):
    """The shortcut is taken (no P × P product) and each entry is the dot product of its two rows."""
    a, c = rng.normal(size=(7, 13)), rng.normal(size=(5, 13))
    one = np.tile(c[2], (5, 1))
    for got, want in ((_pairwise._product(a, one), a @ one.T), (_pairwise._product(one, a), one @ a.T)):
        assert got.strides[0] == 0 or got.strides[1] == 0
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(_pairwise._product(a, c), a @ c.T)


def test_leave_one_out_mean_and_shuffled_rows(rng):
    pred, true, target = _awkward(rng)
    P = true.shape[0]
    loo = (true.sum(axis=0)[None, :] - true) / (P - 1)
    assert_same(loo, true, rng.uniform(0.5, 1.5, size=(P, true.shape[1])), target)
    perm = np.roll(rng.permutation(P), 1)
    assert_same(true[perm], true, None, target)


def test_near_ties_are_recomputed_exactly(rng):
    """Candidates one ulp apart and large common offsets: the product cannot order them, the kernel can."""
    P, G = 12, 40
    true = rng.normal(size=(P, G))
    true[1] = np.nextafter(true[0], np.inf)  # one ulp away from row 0 on every gene
    true[2] = true[0]
    true[2, 5] = np.nextafter(true[0, 5], -np.inf)
    pred = true + 1e-9 * rng.normal(size=(P, G))
    pred[3] = pred[0]
    offset = 1e6 + true  # profiles far from the origin: heavy cancellation in the Euclidean product
    for a, b in ((pred, true), (pred + 1e6, offset)):
        assert_same(a, b)
        assert_same(a, b, rng.uniform(0, 1, size=G), np.arange(P) % G)
        assert_same(a, b, rng.uniform(0, 1, size=(P, G)), np.arange(P) % G)


def test_extreme_magnitudes_fall_back_to_the_kernel(rng):
    pred, true, target = _awkward(rng)
    pred = pred * 1e-42  # products would underflow: the full kernel matrix is used
    assert not _pairwise._within(*_pairwise._TAME, _pairwise._range(pred))
    assert_same(pred, true, None, target)


def test_target_outside_the_measured_genes_is_no_exclusion(rng):
    pred, true, _ = _awkward(rng)
    none = np.full(pred.shape[0], -1)
    a = new_scores(pred, true, None, none)
    b = new_scores(pred, true, None, None)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])


def test_shared_products_give_the_same_scores(rng):
    """One cache for every metric and both anchors (as evaluate shares it) changes no value."""
    pred, true, target = _awkward(rng)
    P, G = pred.shape
    for weights in (None, rng.uniform(0, 1, size=(P, G))):
        shared = SharedIntermediates()
        assert_same(pred, true, weights, target, shared)
        assert any(k[0] == "pairwise" for k in shared.pred)
        # a second prediction against the same truth reuses the truth's products
        pred2 = pred[::-1].copy()
        assert_same(pred2, true, weights, target, SharedIntermediates(truth=shared.truth))


@pytest.mark.parametrize("common", ["random", "constant"])
@pytest.mark.parametrize("n_other", [1, 5, 11])
def test_rows_sharing_one_weight_row_take_the_shared_form(rng, n_other, common):
    """Per-row weights where most rows have the same row (the uniform fallback of null
    perturbations): those rows are ranked from one shared product, the others from their own, and
    every value equals the direct kernel's (the degenerate rows and targets of ``_awkward`` among
    both kinds of rows). A constant common row (1/G, the fallback) scales the unweighted product."""
    pred, true, target = _awkward(rng)
    P, G = pred.shape
    row = np.full(G, 1.0 / G) if common == "constant" else rng.uniform(0, 2, size=G) * (rng.random(G) < 0.9)
    weights = np.tile(row, (P, 1))
    other = rng.choice(P, n_other, replace=False)
    weights[other] = rng.uniform(0, 2, size=(n_other, G)) * (rng.random((n_other, G)) < 0.9)
    if n_other > 1:
        weights[other[0], :] = 0.0  # a dead row among the others
    # the unweighted metrics first, as evaluate orders them: their product is kept for every weighting
    pred_any, truth_any = {}, {}
    assert_same(pred, true, None, target, SharedIntermediates({}, {}, pred_any, truth_any))
    shared = SharedIntermediates({}, {}, pred_any, truth_any)
    assert_same(pred, true, weights, target, shared)
    w, mask = shared.truth[("pairwise", "common_weights")]
    np.testing.assert_array_equal(np.flatnonzero(~mask), np.sort(other))
    assert ("pairwise", "S", "common") in shared.pred and ("pairwise", "S", "pred", True) not in shared.pred
    if common == "constant":  # 1/G times the unweighted product, not a product of its own
        unit, _ = pred_any[("pairwise", "S", "unit")]
        np.testing.assert_array_equal(shared.pred[("pairwise", "S", "common")][0], unit * (1.0 / G))
    # the other rows' products have their rows only
    assert shared.pred[("pairwise", "S", "pred", False)].shape == (n_other, P)
    # one profile but on one gene (L1 through the pivot: one row of pivot distances for the common rows)
    near = np.tile(true.mean(axis=0), (P, 1))
    near[:, 3] += rng.normal(size=P)
    assert_same(near, true, weights, target)
    # fewer than half the rows sharing a weight row: one product per row as before
    few = weights.copy()
    few[: P // 2 + 1] = rng.uniform(0, 2, size=(P // 2 + 1, G))
    shared = SharedIntermediates()
    assert_same(pred, true, few, target, shared)
    assert shared.truth[("pairwise", "common_weights")] is None


def _near_ties(rng, P=16, G=40):
    """Candidates one ulp apart on every gene or on one, and predictions close to them: L1 gaps
    that the rounding of a weight 1/G can reverse."""
    true = rng.normal(size=(P, G))
    true[1] = np.nextafter(true[0], np.inf)
    true[2] = true[0]
    true[2, 5] = np.nextafter(true[0, 5], -np.inf)
    true[4] = true[3] * (1 + 1e-15)
    pred = true + 1e-9 * rng.normal(size=(P, G))
    pred[3] = pred[0]
    return pred, true


def _tie_data(rng, data):
    """(pred, true, target) of ``_awkward`` or of ``_near_ties`` (targets on most rows)."""
    if data == "awkward":
        return _awkward(rng)
    pred, true = _near_ties(rng)
    return pred, true, np.arange(pred.shape[0]) % 7 - 1


@pytest.mark.parametrize("data", ["awkward", "near_ties"])
def test_l1_under_a_constant_common_row_from_the_unweighted_standing(rng, data):
    """L1 under per-row weights whose common row is 1/G is ranked from the unweighted standing of
    the same side (its decided pairs, its near-ties recomputed under the rows' weights) and equals
    the direct kernel, ties and near-ties included."""
    pred, true, target = _tie_data(rng, data)
    P, G = pred.shape
    weights = np.full((P, G), 1.0 / G)
    weights[[2, 6]] = rng.uniform(0, 2, size=(2, G))
    for anchor in ("pred", "true"):
        pred_any = {}
        base = np.ones((1, G))
        unit = _pairwise.compute(pred, true, base, target, K.L1, anchor, _pairwise.dead_rows(base, target, P),
                                 {}, {}, pred_any, {})
        record = pred_any[("pairwise", "l1_unit", anchor)]
        assert record["standing"] is unit
        dead = _pairwise.dead_rows(weights, target, P)
        common = np.ones(P, dtype=bool)
        common[[2, 6]] = False
        q, c = (pred, true) if anchor == "pred" else (true, pred)
        want = _pairwise.direct(pred, true, weights, target, K.L1, anchor, dead)
        # the other rows by the blocked kernel, or in single precision (``reach`` given)
        for reach in (None, np.abs(q).max() + np.abs(c).max()):
            got = _pairwise.l1_scaled(q, c, weights, target, dead, common, record, reach=reach)
            for name in ("less", "equal", "greater", "undefined"):
                np.testing.assert_array_equal(getattr(got, name), getattr(want, name),
                                              err_msg=f"{anchor} {name} {reach}")
    # through the metrics, the unweighted first as evaluate orders them
    pred_any, truth_any = {}, {}
    assert_same(pred, true, None, target, SharedIntermediates({}, {}, pred_any, truth_any))
    assert_same(pred, true, weights, target, SharedIntermediates({}, {}, pred_any, truth_any))


def test_scaled_standing_keeps_only_pairs_decided_with_margin(rng):
    """Even an approximation with no error at all (the kernel's own distances, bound 0) leaves the
    pairs within the scaling margin to the exact kernel: candidates with the genes of one row in
    another order are at L1 distances that differ by a few ulps, and the weight 1/G reverses many
    of those comparisons (the margin set to 0, this test fails)."""
    P, G = 40, 30
    true = rng.normal(size=(P, G))
    for j in range(1, P):
        true[j] = true[0][rng.permutation(G)] if j % 2 else np.nextafter(true[0], rng.choice([-np.inf, np.inf], G))
    pred = np.tile(true[0] + rng.normal(size=G), (P, 1))
    target, dead = np.full(P, -1), np.zeros(P, dtype=bool)
    ones, scaled = np.ones((1, G)), np.full((P, G), 1.0 / G)
    d1 = _pairwise.whole_rows(pred, true, ones, target, K.L1, np.arange(P))
    dc = _pairwise.whole_rows(pred, true, scaled, target, K.L1, np.arange(P))
    own1, ownc = np.diag(d1)[:, None], np.diag(dc)[:, None]
    assert (np.sign(d1 - own1) != np.sign(dc - ownc)).any()  # the scaling reverses comparisons here
    keep = {"target": target}
    unit = _pairwise._classify(lambda rows: (d1[rows], np.zeros_like(d1[rows])), np.diag(d1), np.diag(d1),
                               np.diag(d1), dead, _pairwise._row_groups(true), (pred, true, ones, target, K.L1), P,
                               keep=keep)
    np.testing.assert_array_equal(unit.less, _pairwise.from_matrix(d1, dead).less)
    got = _pairwise.l1_scaled(pred, true, scaled, target, dead, np.ones(P, dtype=bool), keep)
    want = _pairwise.from_matrix(dc, dead)
    for name in ("less", "equal", "greater", "undefined"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


@pytest.mark.parametrize("offset", [0.0, 300.0])
@pytest.mark.parametrize("per_row", [False, True])
def test_only_near_ties_are_recomputed(rng, offset, per_row):
    """On continuous data the exact kernel runs on the own pairs and nothing else — also for L2
    far from the origin, whose centred sums come from the raw products (a shift of 300 noise SDs
    shared by every row: their rounding bound grows with the raw magnitudes, still far below the
    gaps)."""
    P, G = 60, 200
    true = rng.normal(size=(P, G)) + offset
    pred = true + rng.normal(0, 1.0, size=(P, G))
    base = rng.uniform(0, 1, size=(P, G)) if per_row else np.ones((1, G))
    sums = _pairwise.PairSums(pred, true, base, np.full(P, -1), None, None)
    for kind in (K.L2, K.COSINE, K.PEARSON):
        for anchor in ("pred", "true"):
            st = _pairwise.standing(sums, kind, anchor, np.zeros(P, bool))
            assert st.n_exact == P
            assert (st.less + st.equal + st.greater == P - 1).all()


def test_pair_kernel_is_bit_identical_to_the_matrix(rng):
    P, G = 9, 23
    q, c = rng.normal(size=(P, G)), rng.normal(size=(7, G))
    for kind in KINDS.values():
        for w in (rng.uniform(0, 2, size=(1, G)), rng.uniform(0, 2, size=(P, G))):
            target = rng.integers(-1, G, size=P)
            full = np.empty((P, 7))
            K.pairwise_distances(q, c, _twin_weights(w, target, (P, G)), kind, full)
            rows, cols = np.repeat(np.arange(P), 7), np.tile(np.arange(7)[::-1], P)
            out = np.empty(P * 7)
            K.pair_distances(q, c, w, target.astype(np.int64), kind, np.arange(P), np.arange(0, P * 7 + 1, 7), cols,
                             out)
            np.testing.assert_array_equal(out, full[rows, cols])


def test_blocked_product_equals_matmul(rng):
    """Row blocks in threads (each a one-thread BLAS call) give the product to rounding."""
    a, b = rng.normal(size=(300, 6000)), rng.normal(size=(6000, 300))
    np.testing.assert_allclose(_pairwise._matmul(a, b), a @ b, rtol=1e-12, atol=1e-10)
