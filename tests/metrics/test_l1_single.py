"""L1 distances in single precision: the kernel equals its NumPy twin bit for bit, its bound holds
against the exact double-precision kernel, and the standings built on it equal the full matrix's.
"""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.metrics import _distance_kernels as K
from shrinkpert.metrics import _l1_kernels as L
from shrinkpert.metrics import _pairwise as W
from shrinkpert.metrics import _standing_kernels as SK


def twin_single(q, c, w, target):
    """NumPy twin of ``l1_single``: single-precision sums over segments of genes in order, the
    segments added in double precision (every pair at once, one gene at a time)."""
    q32, c32, w32 = q.astype(np.float32), c.astype(np.float32), np.broadcast_to(w, q.shape).astype(np.float32)
    w32 = w32.copy()
    rows = np.flatnonzero(target >= 0)
    w32[rows, target[rows]] = 0
    total = np.zeros((q.shape[0], c.shape[0]))
    for g0 in range(0, q.shape[1], L._SEGMENT):
        part = np.zeros((q.shape[0], c.shape[0]), dtype=np.float32)
        for g in range(g0, min(q.shape[1], g0 + L._SEGMENT)):
            part += w32[:, g, None] * np.abs(q32[:, g, None] - c32[None, :, g])
        total += part
    return total


def _single(q, c, w, target, rows=None):
    rows = np.arange(q.shape[0]) if rows is None else rows
    out = np.empty((rows.size, c.shape[0]))
    L.l1_single(q.astype(np.float32), L.single_blocks(c), np.ascontiguousarray(w, dtype=np.float32),
                target.astype(np.int64), rows.astype(np.int64), 8, out)
    return out


def _exact(q, c, w, target):
    return W.whole_rows(q, c, w, target.astype(np.int64), K.L1, np.arange(q.shape[0]))


@pytest.mark.parametrize("per_row", [False, True])
def test_kernel_equals_its_numpy_twin(rng, per_row):
    P, C, G = 11, 70, 150  # candidates beyond one block of lanes, genes beyond two segments
    q, c = rng.normal(size=(P, G)), rng.normal(size=(C, G))
    w = rng.uniform(0, 2, size=(P, G) if per_row else (1, G))
    target = rng.integers(-1, G, size=P)
    np.testing.assert_array_equal(_single(q, c, w, target), twin_single(q, c, w, target))
    rows = np.array([3, 0, 7])
    np.testing.assert_array_equal(_single(q, c, w, target, rows), twin_single(q, c, w, target)[rows])


@pytest.mark.parametrize("case", ["plain", "far", "tiny_weights", "mixed_scales"])
def test_bound_covers_the_distance_to_the_exact_kernel(rng, case):
    """Rows far from the origin (large A against small D), weights under single precision's normal
    range, and magnitudes from 1e-30 to 1e15 across genes: the bound holds for every pair."""
    P, G = 40, 300
    c = rng.normal(size=(P, G))
    q = c + rng.normal(0, 1e-3, size=(P, G))
    w = rng.uniform(0, 1, size=(P, G))
    if case == "far":
        q, c = q + 1e4, c + 1e4
    elif case == "tiny_weights":
        w = w * 10.0 ** rng.integers(-45, 3, size=(P, G))
    elif case == "mixed_scales":
        scale = 10.0 ** rng.integers(-26, 15, size=G)
        q, c = q * scale, c * scale
        w = np.minimum(w, 1e-15 / scale)
    target = rng.integers(-1, G, size=P)
    assert L.fits(W._range(q), W._range(c), W._range(w))
    d = _single(q, c, w, target)
    exact = _exact(q, c, w, target)
    magnitude = np.abs(q)
    magnitude[np.arange(P)[target >= 0], target[target >= 0]] = 0
    a = np.einsum("pg,pg->p", magnitude, w)
    err = L.bound(d, a, G, np.abs(q).max() + np.abs(c).max())
    assert (np.abs(d - exact) <= err).all()
    assert np.median(np.abs(d - exact) / err) < 0.1  # a bound, not a wild overestimate either


def test_fits_refuses_what_single_precision_cannot_hold():
    ok = (1e-3, 10.0)
    assert L.fits(ok, ok, (1e-40, 1.0))  # tiny weights are covered by the bound
    assert not L.fits((1e-31, 1.0), ok, ok)  # a value that would be subnormal
    assert not L.fits(ok, (1e-3, 1e31), ok)  # a value that would overflow
    assert not L.fits((1e-3, 1e20), ok, (1e-3, 1e20))  # terms that would overflow
    assert SK.magnitude_range(np.array([[0.0, -3.0], [2e-5, 0.0]])) == (2e-5, 3.0)
    assert SK.magnitude_range(np.zeros((2, 2))) == (np.inf, 0.0)


def test_magnitude_range_equals_its_numpy_twin(rng):
    a = rng.normal(size=(13, 17)) * 10.0 ** rng.integers(-50, 50, size=(13, 17))
    a[a > 1e40] = 0.0
    m = np.abs(a)
    assert SK.magnitude_range(a) == (m[m > 0].min(), m.max())


def _near_ties(rng, P=30, G=200):
    """Candidates at distances from the own truth equal to the last bits of double precision: the
    single-precision values cannot order them, so the exact kernel must."""
    true = rng.normal(size=(P, G))
    pred = true + rng.normal(0, 0.3, size=(P, G))
    own = np.abs(pred - true).sum(axis=1)
    # candidate 1 moved so that row 0's distance to it is row 0's own distance plus a few ulps
    for j, ulps in ((1, 3), (2, -2), (3, 0)):
        true[j] = pred[0] + np.sign(rng.normal(size=G)) * (own[0] / G)
        true[j, 0] = pred[0, 0] + np.sign(true[j, 0] - pred[0, 0]) * (own[0] / G + ulps * np.spacing(own[0]))
    true[5] = true[4]  # byte-identical candidates tie exactly
    return pred, true


@pytest.mark.parametrize("per_row", [False, True])
def test_standing_equals_the_full_matrix(rng, per_row):
    pred, true = _near_ties(rng)
    P, G = pred.shape
    for _ in range(3):
        base = rng.uniform(0, 1, size=(P, G)) if per_row else np.ones((1, G))
        target = rng.integers(-1, G, size=P)
        dead = W.dead_rows(base, target, P)
        for q, c in ((pred, true), (true, pred)):
            st = W.l1_single(q, c, base, target, dead)
            full = W.from_matrix(_exact(q, c, base, target), dead)
            for field in ("less", "equal", "greater", "undefined"):
                np.testing.assert_array_equal(getattr(st, field), getattr(full, field))
    assert st.n_exact < P * P / 4  # most pairs decided in single precision


def test_near_ties_go_to_the_exact_kernel(rng):
    """Uniform weights, no target: row 0's near-tied candidates are recomputed, and counted right."""
    pred, true = _near_ties(rng)
    P, G = pred.shape
    base, target, dead = np.ones((1, G)), np.full(P, -1), np.zeros(P, bool)
    st = W.l1_single(pred, true, base, target, dead)
    full = W.from_matrix(_exact(pred, true, base, target), dead)
    np.testing.assert_array_equal(st.less, full.less)
    np.testing.assert_array_equal(st.equal, full.equal)
    assert st.n_exact > P
