"""Rank metrics of predictions declared affine in the truth: products derived from the truth's own product.

The twin is the direct kernel matrix (``test_rank_products.twin_scores``); every value must be
identical, ties included. A form is only a hint: a wrong one (grossly, or by a residual just
inside the bound) must give the same ranks as no form.
"""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert._forms import AffineForm
from shrinkpert.metrics import _derived, _pairwise
from shrinkpert.metrics._rounding import gamma
from shrinkpert.metrics.shared import SharedIntermediates

from .test_rank_products import _tie_data, assert_same


def _forms(rng, true):
    """(name, prediction, its form) for the baselines that declare one, built as the baselines build them."""
    P, G = true.shape
    loo = (true.sum(axis=0)[None, :] - true) / (P - 1)
    loo_form = AffineForm(np.full(P, -1.0 / (P - 1)), true.mean(axis=0)[None, :], np.full((P, 1), P / (P - 1)))
    n = rng.integers(20, 200, size=P).astype(np.float64)
    cells = ((n[:, None] * true).sum(axis=0)[None, :] - n[:, None] * true) / (n.sum() - n)[:, None]
    cells_form = AffineForm(-n / (n.sum() - n), ((n[:, None] * true).sum(axis=0) / n.sum())[None, :],
                            (n.sum() / (n.sum() - n))[:, None])
    control = rng.normal(size=G)
    scaled = control[None, :] + 2.0 * (loo - control[None, :])
    scaled_form = AffineForm(2.0 * loo_form.scale, np.vstack([control[None, :], loo_form.profiles]),
                             np.hstack([np.full((P, 1), -1.0), 2.0 * loo_form.coef]))
    perm = np.roll(rng.permutation(P), 1)
    shuffled_form = AffineForm(np.ones(P), np.empty((0, G)), np.empty((P, 0)), perm)
    return [("mean", loo, loo_form), ("mean_cells", cells, cells_form), ("scaled", scaled, scaled_form),
            ("shuffled", true[perm], shuffled_form)]


def _derived_used(shared: SharedIntermediates) -> bool:
    """A product with an error row E (derived) was made for this prediction."""
    scopes = (shared.pred, shared.pred_any_weights or {})
    return any(key[:2] == ("pairwise", "S") and isinstance(v, tuple) and v[1] is not None
               for scope in scopes for key, v in scope.items())


@pytest.mark.parametrize("weighting", ["none", "shared", "common_constant", "common_random"])
@pytest.mark.parametrize("data", ["awkward", "near_ties"])
def test_derived_products_equal_the_direct_kernel(rng, weighting, data):
    """Leave-one-out means (by perturbation and by cells), a scaled mean and relabelled truth rows,
    each with its form, under every kind of gene weights, with target genes: identical ranks, and
    the product was derived (not made directly)."""
    _, true, target = _tie_data(rng, data)
    P, G = true.shape
    weights = {"none": None, "shared": rng.uniform(0, 2, size=G) * (rng.random(G) < 0.9),
               "common_constant": np.full((P, G), 1.0 / G), "common_random": np.tile(rng.uniform(0, 2, size=G), (P, 1))
               }[weighting]
    if weighting.startswith("common"):
        weights[[1, 4]] = rng.uniform(0, 2, size=(2, G))
    truth_any = {}
    for name, pred, form in _forms(rng, true):
        pred_any = {}
        if weighting == "common_constant":  # the unweighted metrics first, as evaluate orders them
            assert_same(pred, true, None, target, SharedIntermediates({}, {}, pred_any, truth_any, form))
        shared = SharedIntermediates({}, {}, pred_any, truth_any, form)
        assert_same(pred, true, weights, target, shared)
        assert _derived_used(shared), name
    # every side took its product from one product of the truth, kept for all of them
    own = [k for k in truth_any if k[:2] == ("pairwise", "own")]
    assert own == [] if weighting in ("shared", "common_random") else own == [("pairwise", "own", "unit")]


def test_a_wrong_form_changes_no_rank(rng):
    """A form far from the prediction is not used; one off by a residual just inside the bound is
    used, and the residual's share of the bound keeps every rank exact: here the prediction of row
    0 equals truth row 1 (distance 0) while the form says it is truth row 0, and the product
    without the residual would rank row 1 as clearly farther."""
    P, G = 12, 50
    true = rng.normal(size=(P, G))
    f = 8.0 * gamma(G + 16)
    true[1] = true[0] * (1.0 + 3.0 * f)
    pred = true.copy()
    pred[0] = true[1]
    form = AffineForm(np.ones(P), np.empty((0, G)), np.empty((P, 0)))
    e = _derived.derivation_error(pred, true, np.ones(G), form)
    assert e[0] > 2.0 * f * np.linalg.norm(pred[0])  # the residual dominates the bound of row 0
    pred_any = {}
    shared = SharedIntermediates({}, {}, pred_any, {}, form)
    assert_same(pred, true, None, None, shared)
    assert _derived_used(shared)
    # the same under weights 1/G on most rows: the unweighted product and its error, scaled
    weights = np.full((P, G), 1.0 / G)
    weights[[3, 7]] = rng.uniform(0, 2, size=(2, G))
    assert_same(pred, true, weights, None, SharedIntermediates({}, {}, pred_any, {}, form))
    far = AffineForm(np.full(P, 0.5), np.empty((0, G)), np.empty((P, 0)))
    shared = SharedIntermediates({}, {}, {}, {}, far)
    assert_same(pred, true, None, None, shared)
    assert not _derived_used(shared)
    # a form for other shapes is ignored
    assert _derived.derived_product(pred[:5], true[:5], np.ones(G), form, lambda: (None, 1.0), f) is None


def test_derivation_error_bounds_the_product(rng):
    """The derived product is within E_p sqrt(T_j) of the exact sums (computed in extended precision
    from the same rows), with E_p from the residual of a form off by 1e-14."""
    P, G = 30, 80
    true = rng.normal(size=(P, G)) * rng.uniform(0.1, 10, size=(P, 1))
    _, pred, form = _forms(rng, true)[2]
    pred = pred + 1e-14 * rng.normal(size=pred.shape)
    w = rng.uniform(0, 2, size=G)
    s, e = _derived.derived_product(pred, true, w, form, lambda: ((true * w) @ true.T, 1.0), 8.0 * gamma(G + 16))
    exact = np.array([[float(np.sum(np.longdouble(w) * pred[p] * true[j])) for j in range(P)] for p in range(P)])
    t = np.array([float(np.sum(np.longdouble(w) * true[j] ** 2)) for j in range(P)])
    assert (np.abs(s - exact) <= e[:, None] * np.sqrt(t)[None, :]).all()
    assert (np.abs(s - exact) > 1e-3 * e[:, None] * np.sqrt(t)[None, :]).any()  # the bound is not vacuous


def test_shifted_forms_describe_deltas(rng):
    """``shifted(r)`` gives the form of x - r in terms of y - r, for affine and non-affine rows."""
    P, G = 9, 15
    true = rng.normal(size=(P, G))
    r = rng.normal(size=G)
    for name, pred, form in _forms(rng, true):
        shifted = form.shifted(r)
        np.testing.assert_allclose(shifted.values(true - r), pred - r, rtol=1e-12, atol=1e-12, err_msg=name)
        # affine rows (weights summing to 1): no extra profile for the reference
        assert shifted.profiles.shape[0] == form.profiles.shape[0], name
    loose = AffineForm(np.full(P, 2.0), np.empty((0, G)), np.empty((P, 0)))  # 2y: not affine
    shifted = loose.shifted(r)
    assert shifted.profiles.shape[0] == 1
    np.testing.assert_allclose(shifted.values(true - r), 2.0 * true - r, rtol=1e-12, atol=1e-12)
