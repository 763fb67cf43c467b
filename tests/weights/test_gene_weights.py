"""gene_weights: every method against its formula written out with NumPy, plus the result contract."""

from __future__ import annotations

import copy
import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

import shrinkpert
from shrinkpert.effects.moderate import moderated_t
from shrinkpert.errors import InputError, MissingKeyError, ShrinkpertWarning
from shrinkpert.weights import METHODS, GeneWeights, gene_weights


def _rows_sum_to_one(w: GeneWeights) -> None:
    assert (w.values >= 0).all()
    np.testing.assert_allclose(w.values.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def _normalised(a: np.ndarray) -> np.ndarray:
    total = a.sum(axis=1, keepdims=True)
    return np.where(total > 0, a / np.where(total > 0, total, 1), 1 / a.shape[1])


def null_perturbations(shrunk) -> list[str]:
    """Perturbations whose shrunken effects are all exactly 0 (ash put the whole prior on the null)."""
    return [str(p) for p, row in zip(shrunk.perturbations, shrunk.posterior_mean) if not np.any(row)]


def recorded(fn, *args, **kwargs):
    """Call ``fn``; return its result and the ShrinkpertWarnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ShrinkpertWarning)
        result = fn(*args, **kwargs)
    return result, [str(c.message) for c in caught if issubclass(c.category, ShrinkpertWarning)]


def test_shrunken_formula(shrunk):
    # null perturbations (all shrunken effects exactly 0) get uniform weights, with one warning
    nulls = null_perturbations(shrunk)
    w, caught = recorded(gene_weights, shrunk, method="shrunken")
    assert len(caught) == (1 if nulls else 0)
    assert all(f"{len(nulls)} perturbations have all-zero 'shrunken' scores" in c for c in caught)
    a = np.abs(shrunk.posterior_mean) ** 2 * (1 - shrunk.lfsr)
    np.testing.assert_allclose(w.values, _normalised(a), rtol=1e-13)
    assert w.params["uniform_fallback"] == nulls
    _rows_sum_to_one(w)
    w3 = gene_weights(shrunk, method="shrunken", power=1.0, perturbations=["IRF1", "STAT1"])
    a = (np.abs(shrunk.posterior_mean) * (1 - shrunk.lfsr))[shrunk.perturbations.get_indexer(["IRF1", "STAT1"])]
    np.testing.assert_allclose(w3.values, a / a.sum(axis=1, keepdims=True), rtol=1e-13)
    assert w3.params["perturbations"] == ["IRF1", "STAT1"] and w3.params["reference"] == "control"


def test_population_formula(effects, population):
    w = gene_weights(effects, method="population", reference=population)
    sd = np.sqrt(population.expression_var)
    floor = 0.1 * np.median(sd[sd > 0])
    z = effects.effect / np.maximum(sd, floor)
    np.testing.assert_allclose(w.values, z**2 / (z**2).sum(axis=1, keepdims=True), rtol=1e-13)
    assert w.params["population"] == "papalexi-controls" and w.params["statistic"] == "effect"
    assert w.params["population_sha256"] == population.provenance["source_sha256"]
    _rows_sum_to_one(w)


def test_population_uses_posterior_mean_of_shrunken_effects(shrunk, population):
    w, caught = recorded(gene_weights, shrunk, method="population", reference=population, sd_floor=0.05)
    assert len(caught) == (1 if null_perturbations(shrunk) else 0)
    z = shrunk.posterior_mean / np.maximum(np.sqrt(population.expression_var), 0.05)
    np.testing.assert_allclose(w.values, _normalised(z**2), rtol=1e-13)
    assert w.params["statistic"] == "posterior_mean"


def test_population_aligns_reference_genes_and_zeroes_unknown_ones(effects, population):
    half = population.align(list(population.genes[::2]), mapping=False)
    with pytest.warns(ShrinkpertWarning, match="no unique match"):
        w = gene_weights(effects, method="population", reference=half)
    assert (w.values[:, 1::2] == 0).all()
    assert w.params["genes_without_reference"] == len(population.genes[1::2])


def test_deg_rest_formula_from_cells(papalexi, log1p_cells, perts):
    logx, labels = log1p_cells
    test, train = perts[:4], perts[4:]
    w = gene_weights(papalexi, method="deg_rest", perturbations=test, reference_perturbations=train)
    rest = np.isin(labels, train)
    for k, p in enumerate(test):
        own = labels == p
        n = own.sum()
        t = (logx[own].mean(0) - logx[rest].mean(0)) / np.sqrt(
            logx[own].var(0, ddof=1) / n + logx[rest].var(0, ddof=1) / n)
        t = np.nan_to_num(t, nan=0.0)
        a = np.abs(t)
        expected = ((a - a.min()) / (a.max() - a.min())) ** 2
        # pooled group statistics vs direct cell sums: 1e-10
        np.testing.assert_allclose(w.values[k], expected / expected.sum(), rtol=1e-10, atol=1e-15)
    assert w.params["reference_perturbations"] == sorted(train)
    assert w.params["n_reference_cells"] == int(rest.sum())
    assert w.params["leaked"] == [] and w.params["allow_leakage"] is False


def test_deg_rest_accepts_group_statistics_and_effects(papalexi, effects, perts):
    stats = shrinkpert.group_statistics(papalexi, "perturbation", normalize="log1p")
    kw = dict(method="deg_rest", perturbations=perts[:3], reference_perturbations=perts[3:])
    a = gene_weights(papalexi, **kw)
    b = gene_weights(stats, **kw)
    c = gene_weights(effects, **kw)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.values, c.values)


def test_limma_t_formula(papalexi, log1p_cells, effects):
    logx, labels = log1p_cells
    w = gene_weights(papalexi, method="limma_t", perturbations=["IRF1", "STAT1"])
    ctrl = labels == "non-targeting"
    for k, p in enumerate(["IRF1", "STAT1"]):
        own = labels == p
        n_p, n_c = own.sum(), ctrl.sum()
        s2 = ((n_p - 1) * logx[own].var(0, ddof=1) + (n_c - 1) * logx[ctrl].var(0, ddof=1)) / (n_p + n_c - 2)
        beta = logx[own].mean(0) - logx[ctrl].mean(0)
        live = s2 > 0
        t = np.zeros_like(beta)
        t[live] = moderated_t(beta[live], np.full(live.sum(), np.sqrt(1 / n_p + 1 / n_c)), var=s2[live],
                              df=n_p + n_c - 2).t
        c = np.minimum(np.abs(t) + 0.1, 10)
        if p in papalexi.var_names:  # STAT1 is measured, IRF1 is not
            target = list(papalexi.var_names).index(p)
            c[target] = 0
            assert w.values[k, target] == 0
        np.testing.assert_allclose(w.values[k], c**2 / (c**2).sum(), rtol=1e-10)
    for row in w.values:  # c is clipped to [0.1, 10]
        nonzero = row[row > 0]
        assert nonzero.max() / nonzero.min() <= (10 / 0.1) ** 2 * (1 + 1e-12)
    assert w.params["exclude_target"] is True
    from_effects = gene_weights(effects, method="limma_t", perturbations=["IRF1", "STAT1"])
    np.testing.assert_array_equal(from_effects.values, w.values)


def test_uniform_and_target_exclusion(papalexi, effects):
    w = gene_weights(papalexi, method="uniform")
    np.testing.assert_array_equal(w.values, np.full((25, 299), 1 / 299))
    w = gene_weights(effects, method="uniform", exclude_target=True, perturbations=["STAT1", "CD86"])
    stat1 = list(effects.genes).index("STAT1")
    assert w.values[0, stat1] == 0 and np.isclose(w.values[0].sum(), 1)
    np.testing.assert_array_equal(w.values[1], np.full(299, 1 / 299))  # CD86 is not a measured gene


def test_targets_mapping_is_used(papalexi):
    w = gene_weights(papalexi, method="uniform", exclude_target=True, perturbations=["CD86"],
                     targets={"CD86": "STAT2"})
    assert w.values[0, list(papalexi.var_names).index("STAT2")] == 0


def test_all_zero_scores_fall_back_to_uniform_with_a_warning(shrunk):
    flat = dataclasses.replace(shrunk, posterior_mean=np.zeros_like(shrunk.posterior_mean))
    with pytest.warns(ShrinkpertWarning, match="all-zero 'shrunken' scores"):
        w = gene_weights(flat, method="shrunken", perturbations=["IRF1"])
    np.testing.assert_array_equal(w.values, np.full((1, 299), 1 / 299))
    assert w.params["uniform_fallback"] == ["IRF1"]


def test_inputs_are_not_modified(papalexi, effects, population, perts):
    before = (copy.deepcopy(papalexi), np.array(effects.effect), population.expression_var.copy())
    gene_weights(papalexi, method="deg_rest", perturbations=perts[:2], reference_perturbations=perts[2:])
    gene_weights(effects, method="population", reference=population)
    gene_weights(papalexi, method="limma_t", perturbations=perts[:2])
    np.testing.assert_array_equal(papalexi.X.toarray(), before[0].X.toarray())
    pd.testing.assert_frame_equal(papalexi.obs, before[0].obs)
    np.testing.assert_array_equal(effects.effect, before[1])
    np.testing.assert_array_equal(population.expression_var, before[2])


def test_result_contract(shrunk):
    w, _ = recorded(gene_weights, shrunk, method="shrunken")
    with pytest.raises(ValueError, match="read-only"):
        w.values[0, 0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        w.method = "x"
    frame = w.to_frame()
    assert list(frame.columns) == ["perturbation", "gene", "weight"] and len(frame) == 25 * 299
    np.testing.assert_allclose(frame.groupby("perturbation")["weight"].sum(), 1.0, atol=1e-12)
    summary = w.summary()
    np.testing.assert_allclose(summary["effective_n_genes"], 1 / (w.values**2).sum(axis=1))
    sub = w.subset(["IRF1"])
    np.testing.assert_array_equal(sub.values[0], w.values[list(w.perturbations).index("IRF1")])
    assert w.to_anndata().shape == (25, 299)
    with pytest.raises(MissingKeyError, match="no weights"):
        w.subset(["nope"])
    with pytest.raises(InputError, match="sum to 1"):
        GeneWeights(w.perturbations, w.genes, w.values * 2, "shrunken", {})


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "magic"}, InputError, "method='magic'"),
        ({"method": "population"}, InputError, "needs reference="),
        ({"method": "uniform", "reference_perturbations": ["CD86"]}, InputError, "does not learn"),
        ({"method": "limma_t", "allow_leakage": True}, InputError, "does not learn"),
        ({"method": "deg_rest"}, InputError, "needs reference_perturbations"),
        ({"method": "deg_rest", "reference_perturbations": "CD86"}, InputError, "single string"),
        ({"method": "deg_rest", "reference_perturbations": ["CD86", "non-targeting"]}, InputError, "contains the control"),
        ({"method": "uniform", "perturbations": ["NOPE"]}, MissingKeyError, "NOPE"),
        ({"method": "uniform", "perturbations": ["non-targeting"]}, InputError, "cannot be weighted"),
        ({"method": "uniform", "power": -1.0}, InputError, "power"),
        ({"method": "uniform", "statistic": "effect"}, InputError, "statistic="),
        ({"method": "limma_t", "control": "nope"}, MissingKeyError, "compares with control"),
    ],
)
def test_argument_errors(papalexi, kwargs, error, match):
    with pytest.raises(error, match=match):
        gene_weights(papalexi, **kwargs)


def test_population_scale_mismatch_is_refused(effects, population):
    other = dataclasses.replace(population, target_sum=1e6)
    with pytest.raises(InputError, match="target_sum"):
        gene_weights(effects, method="population", reference=other)
    raw = dataclasses.replace(population, scale="total")
    with pytest.raises(InputError, match="scale"):
        gene_weights(effects, method="population", reference=raw)


def test_methods_listed():
    assert METHODS == ("shrunken", "population", "deg_rest", "limma_t", "uniform")
