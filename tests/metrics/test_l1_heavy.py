"""The heavy-gene L1 path and the faster top-gene positions give the values of what they replace.

Twins: NumPy versions of the two new kernels (``heavy_genes``: the gene bounds binned by binary
exponent with ``np.frexp`` / ``np.bincount``; ``l1_gene_subset``: the same sums gene by gene,
vectorised over candidates), the exact L1 kernel ``pairwise_distances`` for the standings, and the
full stable argsort that ``_top_positions`` used before. Standings and positions must be identical
(``assert_array_equal``): ties are decided exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert._numba import thread_limit
from shrinkpert.metrics import _distance_kernels as K
from shrinkpert.metrics import _pairwise
from shrinkpert.metrics.de import _top_positions
from shrinkpert.metrics.shared import SharedIntermediates
from tests.metrics.test_de_vectorised import _top_twin
from tests.metrics.test_rank_products import _twin_weights, assert_same


def _l1_matrix(q, c, w):
    out = np.empty((q.shape[0], c.shape[0]))
    with thread_limit(1):
        K.pairwise_distances(q, c, w, K.L1, out)
    return out


def _standing_twin(q, c, base, target, dead):
    d = _l1_matrix(q, c, _twin_weights(base if base.shape[0] > 1 else base[0], target, q.shape))
    return _pairwise.from_matrix(d, dead)


def _assert_standing(st, q, c, base, target, dead):
    want = _standing_twin(q, c, base, target, dead)
    live = ~want.undefined
    np.testing.assert_array_equal(st.undefined, want.undefined)
    for name in ("less", "equal", "greater"):
        np.testing.assert_array_equal(getattr(st, name)[live], getattr(want, name)[live], err_msg=name)


def _heavy_twin(q, base, target, reach, rows, allowance):
    """NumPy twin of ``heavy_genes``: bounds, their binary exponents, the lowest bins within the allowance."""
    b = (np.abs(q[rows]) + reach) * (base if base.shape[0] == 1 else base[rows])
    has = np.flatnonzero(target[rows] >= 0)
    b[has, target[rows][has]] = 0.0
    _, e = np.frexp(b)
    e = np.where(b > 0, np.clip(e, -K.ORDERS, K.ORDERS) + K.ORDERS + 1, 0)
    n_bins = 2 * K.ORDERS + 2
    slot = (np.arange(len(rows)) * n_bins)[:, None] + e
    mass = np.bincount(slot.ravel(), weights=b.ravel(), minlength=len(rows) * n_bins).reshape(-1, n_bins)
    cum = np.cumsum(mass, axis=1)
    last = (cum <= np.asarray(allowance)[:, None]).sum(axis=1) - 1
    rest = np.where(last >= 0, cum[np.arange(len(rows)), np.maximum(last, 0)], 0.0)
    return e > last[:, None], rest


def _sparse_weights(rng, P, G, n_heavy=6):
    """Per-row weights like shrunken ones: a few genes near 1, the rest 1e-15..1e-9, some exactly 0."""
    w = 10.0 ** rng.uniform(-15, -9, size=(P, G))
    for i in range(P):
        w[i, rng.choice(G, n_heavy, replace=False)] = rng.uniform(0.2, 1.0, n_heavy)
    w[rng.random((P, G)) < 0.05] = 0.0
    return w / w.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shared", [False, True])
def test_heavy_genes_kernel_equals_numpy_twin(rng, shared):
    P, G = 11, 70
    q = rng.normal(size=(P, G)) * (rng.random((P, G)) < 0.7)
    q[0, :5] = 1e-310  # subnormal bounds
    c = rng.normal(size=(P + 3, G))
    base = _sparse_weights(rng, 1 if shared else P, G)
    target = rng.integers(-1, G, size=P)
    reach = np.abs(c).max(axis=0)
    rows = np.array([0, 2, 3, 5, 10])
    allowance = np.array([1e-6, 0.0, np.inf, np.nan, 1e-3])
    heavy = np.empty((rows.size, G), dtype=bool)
    rest = np.empty(rows.size)
    K.heavy_genes(q, base, target, reach, rows, allowance, heavy, rest)
    want_heavy, want_rest = _heavy_twin(q, base, target, reach, rows, allowance)
    np.testing.assert_array_equal(heavy, want_heavy)
    np.testing.assert_array_equal(rest, want_rest)
    assert not heavy[2].any() and heavy[3].sum() == G  # inf: all light; NaN: all heavy
    assert (rest <= np.where(np.isfinite(allowance), allowance, np.inf)).all()


@pytest.mark.parametrize("shared", [False, True])
def test_gene_subset_kernel_equals_numpy_twin(rng, shared):
    P, G = 7, 40
    q, c = rng.normal(size=(P, G)), rng.normal(size=(P + 5, G))
    base = rng.uniform(0, 2, size=(1 if shared else P, G))
    target = np.array([3, -1, 0, 39, -1, 5, 5])
    genes = [np.sort(rng.choice(G, k, replace=False)) for k in (0, 1, 5, 40, 12, 7, 3)]
    genes[5] = np.union1d(genes[5], [5])  # the target among a row's genes: weight 0
    ptr = np.r_[0, np.cumsum([g.size for g in genes])].astype(np.int64)
    out = np.full((P, P + 5), np.nan)
    K.l1_gene_subset(q, np.ascontiguousarray(c.T), base, target, ptr, np.concatenate(genes).astype(np.int64), out)
    want = np.zeros((P, P + 5))
    for i, row in enumerate(genes):
        w = base[0] if shared else base[i]
        for g in row:  # the kernel's order: gene by gene, each candidate its own chain
            if g != target[i]:
                want[i] += w[g] * np.abs(q[i, g] - c[:, g])
    np.testing.assert_array_equal(out, want)


def _integer_case(rng, P=40, G=60):
    """Small integers on the heavy genes: heavy sums tie exactly, the light genes break some ties."""
    true = rng.integers(-2, 3, size=(P, G)).astype(float)
    pred = true + rng.integers(-1, 2, size=(P, G))
    true[5] = true[4]  # duplicated candidates: exact ties
    pred[9] = true[9]  # own distance exactly 0
    target = rng.integers(-1, G, size=P)
    return pred, true, target


def test_heavy_path_is_exact_with_ties_targets_and_dead_rows(rng, monkeypatch):
    """The heavy path decides every pair (the undecided limit lifted) and equals the full kernel."""
    monkeypatch.setattr(_pairwise, "_UNSURE", 1.0)
    pred, true, target = _integer_case(rng)
    P, G = pred.shape
    base = _sparse_weights(rng, P, G)
    base[3] = 0.0  # a dead row
    base[6] = 0.0
    base[6, 10] = 1.0  # one weighted gene, the row's target
    target[6] = 10
    dead = _pairwise.dead_rows(base, target, P)
    assert dead[3] and dead[6]
    for q, c in ((pred, true), (true, pred), (pred + 1e-9 * rng.normal(size=pred.shape), true)):
        st = _pairwise.l1_heavy(q, c, base, target, dead)
        assert st is not None  # the path tested
        _assert_standing(st, q, c, base, target, dead)


def test_heavy_path_decides_most_pairs_without_the_kernel(rng):
    P, G = 60, 400
    true = rng.normal(size=(P, G))
    pred = true + rng.normal(0, 0.5, size=(P, G))
    base = _sparse_weights(rng, P, G, n_heavy=20)
    target = rng.integers(-1, G, size=P)
    dead = np.zeros(P, dtype=bool)
    st = _pairwise.l1_heavy(pred, true, base, target, dead)
    assert st is not None and st.n_exact < 2 * P
    _assert_standing(st, pred, true, base, target, dead)


def test_heavy_path_declines_dense_weights_and_non_finite_values(rng):
    P, G = 30, 50
    pred, true = rng.normal(size=(P, G)), rng.normal(size=(P, G))
    dead = np.zeros(P, dtype=bool)
    target = np.full(P, -1)
    assert _pairwise.l1_heavy(pred, true, np.ones((1, G)), target, dead) is None
    base = _sparse_weights(rng, P, G)
    pred[2, 7] = np.nan
    assert _pairwise.l1_heavy(pred, true, base, target, dead) is None


@pytest.mark.parametrize("with_target", [False, True])
def test_scores_with_sparse_weights_equal_the_twin_and_shared_scopes(rng, with_target):
    """Through discrimination_score / rank metrics: the same values as the kernel twin, with and
    without shared intermediates (the candidates' arrays cached in their scope)."""
    pred, true, target = _integer_case(rng, P=30, G=64)
    weights = _sparse_weights(rng, *pred.shape)
    shared = SharedIntermediates()
    for _ in range(2):  # the second pass reads the cached candidate arrays
        assert_same(pred, true + 0.25 * rng.normal(size=true.shape), weights, target if with_target else None)
        assert_same(pred, true, weights, target if with_target else None, shared=shared)


def test_pivot_path_single_pass_equals_kernel(rng):
    """A leave-one-out mean whose pairs fit one block: every row approximated once, sample read off it."""
    P, G = 80, 30
    true = rng.normal(size=(P, G)) * rng.uniform(0.5, 3.0, size=(P, 1))
    loo = (true.sum(axis=0)[None, :] - true) / (P - 1)
    target = rng.integers(-1, G, size=P)
    base, dead = np.ones((1, G)), np.zeros(P, dtype=bool)
    scope: dict = {}
    st = _pairwise.l1_standing(loo, true, base, target, dead, scope)
    assert st is not None and ("pairwise", "row_groups") in scope
    _assert_standing(st, loo, true, base, target, dead)


@pytest.mark.parametrize("density", [0.0, 0.03, 0.2, 0.9])
def test_top_positions_equal_the_full_sort(rng, density):
    """Few or many significant genes, tied |lfc| (and -0.0), every position including the others'."""
    lfc = rng.choice([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, np.inf], size=(12, 80))
    lfc[3] = rng.normal(size=80)
    sig = rng.random(lfc.shape) < density
    sig[4] = True if density > 0.5 else sig[4]
    np.testing.assert_array_equal(_top_positions(lfc, sig), _top_twin(lfc, sig))


def test_top_positions_nan_among_significant_sorted_last(rng):
    lfc = rng.normal(size=(6, 50))
    sig = rng.random(lfc.shape) < 0.1
    lfc[2, np.flatnonzero(sig[2])[:1]] = np.nan
    np.testing.assert_array_equal(_top_positions(lfc, sig), _top_twin(lfc, sig))
