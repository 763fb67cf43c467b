"""Properties every registered metric must have, checked by looping over the registry.

Adding a metric to ``shrinkpert.metrics.METRICS`` enrols it here automatically (scikit-learn's
``metrics/tests/test_common.py`` pattern): perfect prediction scores the best value, gene order
does not matter, perturbation order carries through, a worse prediction scores worse, outputs
have the documented type, weights behave (uniform = unweighted, 0 = dropped, integer = repeated
genes), non-finite input is an error and undefined values are NaN, never 0.
"""

from __future__ import annotations

import dataclasses
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shrinkpert.metrics as sm
from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.metrics import METRICS, DECalls, MetricRegistry, MetricSpec
from tests.metrics import cases

NAMES = list(METRICS)
WEIGHTED = [n for n in NAMES if METRICS[n].weighted]
# metrics of gene profiles (not of per-perturbation penetrances or per-guide responses)
GENE_LEVEL = [n for n in NAMES if METRICS[n].needs not in ("penetrance", "dose")]
PER_PERTURBATION = [n for n in GENE_LEVEL if METRICS[n].kind != "distribution"]


def _kind(spec: MetricSpec) -> str:
    """Which seeded inputs of ``cases`` a metric takes."""
    return "target" if spec.kind == "target" and spec.needs == "deltas" else spec.needs


def _score(spec: MetricSpec, pred, truth, **kw):
    if _kind(spec) == "target":
        kw.setdefault("target_index", cases.TARGETS[: np.atleast_2d(pred).shape[0]])
    if spec.needs == "dose":
        kw.setdefault("groups", cases.GUIDE_GROUPS)
        return spec(pred, truth, **kw).to_numpy()
    return spec(pred, truth, **kw)


def _summary(values) -> float:
    return float(np.nanmean(values))


# ------------------------------------------------------------------------------------------
# the registry itself
# ------------------------------------------------------------------------------------------


def test_registry_is_read_only():
    with pytest.raises(TypeError, match="does not support item assignment"):
        METRICS["mse"] = METRICS["mae"]  # type: ignore[index]
    with pytest.raises(TypeError, match="does not support item assignment"):
        METRICS._specs["new"] = METRICS["mae"]  # type: ignore[index]
    with pytest.raises(AttributeError, match="read-only"):
        METRICS._specs = {}  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        METRICS["mse"].best = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError, match="does not support item assignment"):
        METRICS["discrimination_score_l1"].kwargs["metric"] = "l2"  # type: ignore[index]
    with pytest.raises(TypeError, match="does not support item assignment"):
        sm.VCC_METRICS["mae"] = 1.0  # type: ignore[index]


def test_with_metrics_returns_a_new_registry_and_leaves_the_global_one_alone():
    spec = MetricSpec(name="twice_mse", func=lambda p, t, weights=None: 2 * sm.mse(p, t, weights=weights),
                      greater_is_better=False, best=0.0, kind="expression", needs="means", weighted=True,
                      nan_policy="all weights 0")
    extended = METRICS.with_metrics(spec)
    assert "twice_mse" in extended and "twice_mse" not in METRICS
    assert len(extended) == len(METRICS) + 1
    with pytest.raises(InputError, match="registered twice"):
        extended.with_metrics(spec)
    with pytest.raises(InputError, match="registered twice"):
        METRICS.with_metrics(dataclasses.replace(spec, name="x", aliases=("mse",)))


def test_lookup_by_alias_and_helpful_error_for_unknown_names():
    assert METRICS["normalized_inverse_rank"] is METRICS["centroid_accuracy"]
    assert "normalized_inverse_rank" in METRICS and "normalized_inverse_rank" not in list(METRICS)
    with pytest.raises(MissingKeyError, match=r"No metric named 'pearson_detla'.*pearson_delta"):
        METRICS["pearson_detla"]


def test_select_filters_and_validates():
    de = METRICS.select(kind="de")
    assert set(de) == {n for n in NAMES if METRICS[n].needs == "de"} and len(de) == 15
    assert all(METRICS[n].weighted for n in METRICS.select(weighted=True))
    assert isinstance(de, MetricRegistry)
    with pytest.raises(InputError, match="kind must be one of"):
        METRICS.select(kind="bogus")
    with pytest.raises(InputError, match="needs must be one of"):
        METRICS.select(needs="counts")


def test_spec_validation():
    with pytest.raises(InputError, match="kind must be one of"):
        MetricSpec(name="x", func=sm.mse, greater_is_better=False, best=0, kind="other", needs="means", weighted=True)
    with pytest.raises(InputError, match="needs must be one of"):
        MetricSpec(name="x", func=sm.mse, greater_is_better=False, best=0, kind="expression", needs="x", weighted=True)
    with pytest.raises(InputError, match="func must be callable"):
        MetricSpec(name="x", func=None, greater_is_better=False, best=0, kind="expression", needs="means",
                   weighted=True)
    with pytest.raises(InputError, match="MetricSpec objects"):
        MetricRegistry(["mse"])  # type: ignore[list-item]


def test_fixed_kwargs_cannot_be_overridden_and_unweighted_metrics_refuse_weights():
    truth, good, _ = cases.inputs("deltas")
    with pytest.raises(InputError, match="fixes \\['metric'\\]"):
        METRICS["discrimination_score_l1"](good, truth, metric="l2")
    t, g, _ = cases.inputs("de")
    with pytest.raises(InputError, match="does not take gene weights"):
        METRICS["pr_auc"](g, t, weights=np.ones(t.q.shape[1]))
    # weights=None is accepted everywhere, so a caller can pass it uniformly
    np.testing.assert_array_equal(METRICS["pr_auc"](g, t, weights=None), sm.pr_auc(g, t))


def test_to_frame_documents_every_metric():
    frame = METRICS.to_frame()
    assert list(frame.index) == NAMES
    assert {"greater_is_better", "best", "kind", "needs", "weighted", "nan_policy", "origin"} <= set(frame.columns)


@pytest.mark.parametrize("name", NAMES)
def test_spec_is_consistent_and_documented(name):
    spec = METRICS[name]
    assert spec.func.__name__ in sm.__all__, "registered functions are public"
    doc = inspect.getdoc(spec.func)
    assert ".. math::" in doc and "Returns" in doc and "Examples" in doc
    assert spec.nan_policy, "every metric states when it returns NaN"
    assert spec.description and spec.origin
    params = inspect.signature(spec.func).parameters
    assert list(params)[:2] and all(params[k].kind is inspect.Parameter.KEYWORD_ONLY for k in list(params)[2:])
    assert ("weights" in params) == spec.weighted
    assert set(spec.kwargs) <= set(params)
    # direction and best value agree: the best is an extreme of the metric's range
    assert spec.best in (0.0, 1.0)
    assert spec.is_better(spec.best + (0.1 if spec.greater_is_better else -0.1), spec.best) is True


# ------------------------------------------------------------------------------------------
# behaviour, for every metric
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_perfect_prediction_gets_the_best_value(name):
    spec = METRICS[name]
    truth, _, _ = cases.inputs(_kind(spec))
    value = _score(spec, truth, truth)
    # exact for errors and distances; correlations/cosines of identical vectors to rounding
    np.testing.assert_allclose(value, spec.best, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_a_worse_prediction_scores_worse(name):
    spec = METRICS[name]
    truth, good, bad = cases.inputs(_kind(spec))
    g, b = _summary(_score(spec, good, truth)), _summary(_score(spec, bad, truth))
    assert spec.is_better(g, b), (g, b)


@pytest.mark.parametrize("name", GENE_LEVEL)
def test_gene_order_does_not_matter(name):
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    n_genes = truth.q.shape[1] if isinstance(truth, DECalls) else truth.shape[1]
    order = np.random.default_rng(1).permutation(n_genes)
    a = _score(spec, good, truth)
    kw = {"target_index": np.where(cases.TARGETS >= 0, np.argsort(order)[cases.TARGETS], -1)} \
        if _kind(spec) == "target" else {}
    b = _score(spec, cases.permute_genes(good, order), cases.permute_genes(truth, order), **kw)
    # summation order changes: 1e-12 relative (1e-9 for pairwise-distance statistics)
    np.testing.assert_allclose(b, a, rtol=1e-9 if spec.needs == "cells" else 1e-12, atol=1e-14)


@pytest.mark.parametrize("name", PER_PERTURBATION)
def test_perturbation_order_carries_through(name):
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    order = np.random.default_rng(2).permutation(cases.N_PERT)
    a = _score(spec, good, truth)
    kw = {"target_index": cases.TARGETS[order]} if _kind(spec) == "target" else {}
    b = _score(spec, cases.permute_rows(good, order), cases.permute_rows(truth, order), **kw)
    np.testing.assert_allclose(b, a[order], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", GENE_LEVEL)
def test_output_types(name):
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    value = _score(spec, good, truth)
    if spec.kind == "distribution":
        assert type(value) is float
        return
    assert isinstance(value, np.ndarray) and value.dtype == np.float64 and value.shape == (cases.N_PERT,)
    assert value.flags.writeable
    if spec.kind == "rank":  # rank metrics compare perturbations: vectors are refused
        with pytest.raises(InputError, match="expected \\(n_perturbations, n_genes\\)"):
            _score(spec, cases.first_row(good), cases.first_row(truth))
    else:  # one perturbation -> one Python float, equal to row 0 of the matrix result
        one = _score(spec, cases.first_row(good), cases.first_row(truth))
        assert type(one) is float
        np.testing.assert_allclose(one, value[0], rtol=1e-12)


@pytest.mark.parametrize("name", GENE_LEVEL)
def test_non_finite_input_is_an_error_not_a_guess(name):
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    with pytest.raises(InputError, match="non-finite"):
        _score(spec, cases.with_nan(good), truth)
    with pytest.raises(InputError, match="non-finite"):
        _score(spec, good, cases.with_nan(truth))


def _undefined_case(spec: MetricSpec):
    """Inputs for which the metric is undefined in row 0, per its documented NaN policy."""
    truth, good, _ = cases.inputs(_kind(spec))
    if spec.weighted:
        w = np.ones((cases.N_PERT, cases.N_GENES))
        w[0] = 0.0
        return good, truth, {"weights": w}
    if _kind(spec) == "target":
        return good, truth, {"target_index": np.where(np.arange(cases.N_PERT) == 0, -1, cases.TARGETS)}
    if spec.needs == "de":
        lfc_t, q_t, q_p = np.array(truth.lfc), np.array(truth.q), np.array(good.q)
        if spec.func is sm.precision_at_n:
            q_p[0] = 1.0  # no predicted DE gene
        else:
            q_t[0] = 1.0  # no true DE gene
        return DECalls(lfc=good.lfc, q=q_p), DECalls(lfc=lfc_t, q=q_t), {}
    return None


@pytest.mark.parametrize("name", GENE_LEVEL)
def test_undefined_values_are_nan_never_zero(name):
    spec = METRICS[name]
    case = _undefined_case(spec)
    if case is None:
        assert spec.nan_policy == "never"
        truth, _, _ = cases.inputs(_kind(spec))
        flat = np.ones_like(truth)  # all cells identical: still defined (0), not NaN
        assert _score(spec, flat, flat) == 0.0
        return
    pred, truth, kw = case
    value = np.asarray(_score(spec, pred, truth, **kw))
    assert np.isnan(value[0])
    assert np.isfinite(value[1:]).all()


@pytest.mark.parametrize("name", WEIGHTED)
def test_uniform_weights_equal_unweighted(name):
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    plain = _score(spec, good, truth)
    for w in (np.full(cases.N_GENES, 3.7), np.full((cases.N_PERT, cases.N_GENES), 0.25)):
        np.testing.assert_allclose(_score(spec, good, truth, weights=w), plain, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", WEIGHTED)
def test_zero_weight_equals_dropping_the_gene(name):
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2.0, size=cases.N_GENES)
    drop = np.array([0, 7, 19])
    w[drop] = 0.0
    keep = w > 0
    a = _score(spec, good, truth, weights=w)
    b = _score(spec, good[:, keep], truth[:, keep], weights=w[keep])
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", WEIGHTED)
def test_integer_weights_equal_repeated_genes(name):
    """An outside check of the weighted formulas: weight k = the gene counted k times."""
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    w = np.random.default_rng(4).integers(1, 4, size=cases.N_GENES)
    rep = np.repeat(np.arange(cases.N_GENES), w)
    a = _score(spec, good, truth, weights=w)
    b = _score(spec, good[:, rep], truth[:, rep])
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", GENE_LEVEL)
def test_inputs_are_not_modified(name):
    spec = METRICS[name]
    truth, good, _ = cases.inputs(_kind(spec))
    if isinstance(truth, DECalls):
        before = [np.array(a) for a in (truth.lfc, truth.q, good.lfc, good.q)]
        _score(spec, good, truth)
        for x, y in zip(before, (truth.lfc, truth.q, good.lfc, good.q), strict=True):
            np.testing.assert_array_equal(x, y)
        return
    t0, g0 = truth.copy(), good.copy()
    _score(spec, good, truth)
    np.testing.assert_array_equal(truth, t0)
    np.testing.assert_array_equal(good, g0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_pert=st.integers(2, 6), n_genes=st.integers(2, 12))
def test_weight_properties_hold_on_tie_heavy_data(seed, n_pert, n_genes):
    """Small integer data (many exact ties, constant rows): zero weight = dropped, weight 2 = unweighted."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(-2, 3, size=(n_pert, n_genes)).astype(float)
    pred = rng.integers(-2, 3, size=(n_pert, n_genes)).astype(float)
    w = rng.integers(1, 4, size=n_genes).astype(float)
    keep = rng.random(n_genes) < 0.7
    keep[rng.integers(n_genes)] = True
    w[~keep] = 0.0
    with np.errstate(all="raise"):  # no stray floating-point warnings either
        for name in WEIGHTED:
            spec = METRICS[name]
            np.testing.assert_allclose(spec(pred, truth, weights=w), spec(pred[:, keep], truth[:, keep],
                                                                          weights=w[keep]),
                                       rtol=1e-12, atol=1e-14, err_msg=name)
            np.testing.assert_allclose(spec(pred, truth, weights=np.full(n_genes, 2.0)), spec(pred, truth),
                                       rtol=1e-12, atol=1e-14, err_msg=name)
