"""The kernels that approximate and count the rank metrics' pairs equal their NumPy twins bit for bit.

The twins are the NumPy expressions the kernels replaced (``shrinkpert.metrics._pairwise`` before
them): distances and rounding bounds from the products, then the per-row counts of candidates
certainly closer, tied and certainly farther, and the mask of pairs left to the exact kernel.
"""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.metrics import _distance_kernels as K
from shrinkpert.metrics import _standing_kernels as SK

U = 2.0**-53
TINY = 1e-280


def twin_distances(kind, s, t, u, at, q2, q1, sw, aq2, asw, f):
    q2, q1, sw, aq2, asw = (v[:, None] for v in (q2, q1, sw, aq2, asw))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if kind == K.L2:
            return np.maximum(q2 - 2.0 * s + t, 0.0), f * (np.sqrt(aq2) + np.sqrt(at)) ** 2
        if kind == K.COSINE:
            num, qq, cc, m = s, q2, t, 1.0
        else:
            num = s - q1 * u / sw
            qq = q2 - q1 * q1 / sw
            cc = t - u * u / sw
            m = 1.0 + 4.0 * asw / sw
        e_num = f * m * np.sqrt(aq2 * at)
        e_qq = f * m * aq2
        e_cc = f * m * at
        q_lo, c_lo = qq - e_qq, cc - e_cc
        r = num / np.sqrt(qq * cc)
        e_r = e_num / np.sqrt(q_lo * c_lo) + np.abs(r) * (e_qq / q_lo + e_cc / c_lo) + 8.0 * U
        ok = (q_lo > 0) & (c_lo > 0) & (q_lo * c_lo > TINY) & (e_r < 0.25)
        return 1.0 - np.clip(np.where(ok, r, 0.0), -1.0, 1.0), np.where(ok, e_r + 8.0 * U, np.inf)


def twin_tally(d, err, own_lo, own_hi, groups, undefined, row0):
    idx = np.arange(row0, row0 + d.shape[0])
    tie = groups[None, :] == groups[idx, None]
    is_less = (d + err < own_lo[idx, None]) & ~tie
    is_greater = (d - err > own_hi[idx, None]) & ~tie
    tie[np.arange(idx.size), idx] = False
    unsure = ~(is_less | is_greater | tie)
    unsure[np.arange(idx.size), idx] = False
    unsure[undefined[idx]] = False
    return is_less.sum(axis=1), tie.sum(axis=1), is_greater.sum(axis=1), unsure


def _sums(rng, rows, n, shared_t):
    """Products and sums with zeros, negatives, NaN and near-cancelling values mixed in."""
    s = rng.normal(size=(rows, n))
    t = rng.uniform(0.0, 3.0, size=(1 if shared_t else rows, n))
    u = rng.normal(size=t.shape)
    at = t * rng.uniform(1.0, 1.5, size=t.shape)
    q2, q1, sw = rng.uniform(0.0, 3.0, rows), rng.normal(size=rows), rng.uniform(0.5, 4.0, rows)
    aq2, asw = q2 * 1.2, sw * 1.1
    s[0, :3] = [np.nan, np.inf, 0.0]
    q2[1], sw[2], t[0, 4] = 0.0, 0.0, 0.0  # undefined cosines, a Pearson row with no weight
    s[3] = np.sqrt(q2[3] * t[0 if shared_t else 3]) * (1.0 - 1e-15)  # cosine distances near 0
    return s, t, u, at, q2, q1, sw, aq2, asw


def twin_less_target(m, target, coef, c, square=False):
    """The NumPy expression that took each row's target term out of a P × P block (row k:
    ``M_kj - a_k c_{j t_k}``, or ``M_kj - (a_k c_{j t_k}) c_{j t_k}``)."""
    block = np.array(np.broadcast_to(m, (target.size, m.shape[1])), dtype=np.float64)
    k = np.flatnonzero(target >= 0)
    ct = np.take(c, target[k], axis=1)
    term = ct * coef[k]
    block[k] -= (term * ct if square else term).T
    return block


@pytest.mark.parametrize("kind", [K.L2, K.COSINE, K.PEARSON])
@pytest.mark.parametrize("shared_t", [False, True])
@pytest.mark.parametrize("with_target", [False, True])
def test_distances_equal_the_numpy_twin(rng, kind, shared_t, with_target):
    s, t, u, at, q2, q1, sw, aq2, asw = _sums(rng, 9, 40, shared_t)
    f = 8.0 * (1000 * U) / (1.0 - 1000 * U)
    target = np.where(rng.random(9) < 0.6, rng.integers(0, 7, 9), -1) if with_target else np.full(9, -1)
    qt, wt, c = rng.normal(size=9), rng.uniform(0, 2, 9), rng.normal(size=(40, 7))
    d, err = np.empty(s.shape), np.empty(s.shape)
    SK.product_distances(kind, s, t, u, at, q2, q1, sw, aq2, asw, f, target, qt, wt, c, d, err)
    if with_target:  # the rows' target terms out of S, T and U first (as _pairwise did before the kernel)
        s = twin_less_target(s, target, qt, c)
        t = twin_less_target(t, target, wt, c, square=True)
        u = twin_less_target(u, target, wt, c)
        assert (target >= 0).any() and (target < 0).any()
    want_d, want_err = twin_distances(kind, s, t, u, at, q2, q1, sw, aq2, asw, f)
    np.testing.assert_array_equal(d, want_d)
    np.testing.assert_array_equal(err, want_err)
    if kind != K.L2:  # both outcomes occur: decided pairs and pairs left to the exact kernel
        assert np.isinf(err).any() and np.isfinite(err).any()


@pytest.mark.parametrize("row0", [0, 5])
def test_tally_equals_the_numpy_twin(rng, row0):
    n, rows = 30, 12
    d = rng.uniform(0.0, 2.0, size=(rows, n))
    err = rng.uniform(0.0, 0.05, size=(rows, n))
    err[0, :4] = np.inf
    d[1, :3] = np.nan
    own = rng.uniform(0.5, 1.5, n)
    d[2] = own[row0 + 2]  # every pair of one row near its own distance: undecided unless tied
    groups = np.arange(n, dtype=np.int64)
    groups[[3, 8, 9]] = groups[7]  # byte-identical candidates tie exactly
    undefined = np.zeros(n, dtype=np.bool_)
    undefined[row0 + 4] = True
    less, equal, greater = (np.full(n, -1, dtype=np.int64) for _ in range(3))
    unsure = np.empty((rows, n), dtype=np.bool_)
    SK.tally(d, err, own, own * (1.0 + 1e-3), groups, undefined, row0, less, equal, greater, unsure)
    want = twin_tally(d, err, own, own * (1.0 + 1e-3), groups, undefined, row0)
    block = slice(row0, row0 + rows)
    for got, expected in zip((less[block], equal[block], greater[block], unsure), want):
        np.testing.assert_array_equal(got, expected)
    assert (less[:row0] == -1).all() and (less[row0 + rows:] == -1).all()  # only the block's rows written
    assert unsure[2].sum() > 0 and not unsure[4].any()


def twin_undefined(kind, q, base, target):
    """The NumPy expressions the kernel replaced (support = positive weights, target left out)."""
    v = np.array(np.broadcast_to(base, q.shape))
    rows = np.flatnonzero(target >= 0)
    v[rows, target[rows]] = 0.0
    support = v > 0
    if kind == K.COSINE:
        return ~((q != 0) & support).any(axis=1)
    if kind == K.PEARSON:
        return ~(np.where(support, q, -np.inf).max(axis=1) > np.where(support, q, np.inf).min(axis=1))
    return np.zeros(q.shape[0], dtype=bool)


@pytest.mark.parametrize("per_row", [False, True])
def test_undefined_queries_equal_their_numpy_twin(rng, per_row):
    P, G = 12, 9
    q = np.round(rng.normal(size=(P, G)))
    q[0] = 0.0  # zero everywhere
    q[1] = 0.0
    q[1, 3] = 2.0  # zero but for one gene: the target of some rows
    q[2] = 1.5  # constant
    q[3] = 1.5
    q[3, 4] = 7.0  # constant but for one gene
    base = rng.uniform(0, 1, size=(P if per_row else 1, G)) * (rng.random((P if per_row else 1, G)) < 0.7)
    for target in (np.full(P, -1), np.array([0, 3, 1, 4, -1, 2, 3, 4, 5, 6, 7, 8])):
        for kind in (K.L1, K.L2, K.COSINE, K.PEARSON):
            out = np.empty(P, dtype=np.bool_)
            SK.undefined_queries(kind, q, base, target, out)
            np.testing.assert_array_equal(out, twin_undefined(kind, q, base, target))


@pytest.mark.parametrize("per_row", [False, True])
def test_weighted_row_sums_equal_their_numpy_twin(rng, per_row):
    """Sums in gene order: NumPy's cumulative sums (left to right) of the same products."""
    a = rng.normal(size=(7, 33)) * 10.0 ** rng.integers(-5, 5, size=(7, 33))
    base = rng.uniform(0, 2, size=(7 if per_row else 1, 33))
    out = [np.empty(7) for _ in range(3)]
    SK.weighted_row_sums(a, base, *out)
    w = np.broadcast_to(base, a.shape)
    wa = w * a
    for got, terms in zip(out, (wa * a, wa, w)):
        np.testing.assert_array_equal(got, np.cumsum(terms, axis=1)[:, -1])


def test_row_hashes_equal_their_numpy_twin(rng):
    words = rng.integers(0, 2**63, size=(6, 11), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    out = np.empty(6, dtype=np.uint64)
    SK.row_hashes(words, out)
    h = np.full(6, 14695981039346656037, dtype=np.uint64)
    for g in range(words.shape[1]):  # FNV-1a, 64-bit words, wrapping products
        h = (h ^ words[:, g]) * np.uint64(1099511628211)
    np.testing.assert_array_equal(out, h)


def test_row_groups_are_groups_of_identical_bytes(rng):
    """The ids of the former bytes dictionary: first-appearance order, -0.0 distinct from 0.0."""
    from shrinkpert.metrics._pairwise import _row_groups

    x = np.round(rng.normal(size=(40, 5)))
    x[[3, 17, 30]] = x[8]
    x[20] = 0.0
    x[21] = -0.0
    x[22] = 0.0
    seen: dict = {}
    want = np.array([seen.setdefault(row.tobytes(), len(seen)) for row in x])
    np.testing.assert_array_equal(_row_groups(x), want)
    assert want[20] == want[22] != want[21]
