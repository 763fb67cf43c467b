"""Delta references: control, perturbed centroid (Systema) and an external population."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import shrinkpert
from shrinkpert.errors import GeneMismatchError, InputError, LeakageError, MissingKeyError, ShrinkpertWarning
from shrinkpert.weights import DeltaReference, compute_deltas, delta_reference


def centroids(log1p_cells, labels_wanted):
    logx, labels = log1p_cells
    return np.vstack([logx[labels == p].mean(axis=0) for p in labels_wanted])


def test_control_deltas(papalexi, log1p_cells, effects, perts):
    d = compute_deltas(papalexi)
    expected = centroids(log1p_cells, perts) - centroids(log1p_cells, ["non-targeting"])
    np.testing.assert_allclose(d.values, expected, rtol=1e-12, atol=1e-13)  # difference of O(1) means
    assert d.perturbations.tolist() == perts and d.reference.kind == "control"
    # the same subtraction as the effect sizes: bit-identical
    np.testing.assert_array_equal(d.values, effects.effect)
    np.testing.assert_array_equal(compute_deltas(effects).values, effects.effect)
    assert d.reference.params["control_n_cells"] == int((log1p_cells[1] == "non-targeting").sum())


def test_perturbed_centroid(papalexi, log1p_cells, perts):
    test, train = perts[:5], perts[5:]
    d = compute_deltas(papalexi, reference="perturbed_centroid", perturbations=test, reference_perturbations=train)
    ref = centroids(log1p_cells, train).mean(axis=0)  # perturbation-weighted, not cell-weighted
    np.testing.assert_allclose(d.reference.values, ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d.values, centroids(log1p_cells, test) - ref, rtol=1e-12, atol=1e-13)  # difference of O(1) means
    assert d.reference.reference_perturbations == tuple(sorted(train)) and d.reference.split_dependent
    assert d.params["reference_perturbations"] == sorted(train) and d.params["leaked"] == []


def test_centroid_leakage_is_refused_or_recorded(papalexi, perts):
    with pytest.raises(LeakageError, match="'ATF2'"):
        compute_deltas(papalexi, reference="perturbed_centroid", perturbations=["ATF2"], reference_perturbations=perts)
    d = compute_deltas(papalexi, reference="perturbed_centroid", reference_perturbations=perts, allow_leakage=True)
    assert d.params["allow_leakage"] is True and d.params["leaked"] == perts
    with pytest.raises(InputError, match="needs reference_perturbations"):
        compute_deltas(papalexi, reference="perturbed_centroid")


def test_population_deltas(papalexi, population, log1p_cells, perts):
    d = compute_deltas(papalexi, reference=population, perturbations=perts[:3])
    np.testing.assert_allclose(d.values, centroids(log1p_cells, perts[:3]) - population.expression_mean,
                               rtol=1e-12, atol=1e-13)  # difference of O(1) means
    assert d.reference.kind == "population" and not d.reference.split_dependent
    assert d.reference.params["population"] == "papalexi-controls"
    # the reference alone, and a reference on other genes (aligned, missing genes NaN with a warning)
    alone = delta_reference(reference=population)
    np.testing.assert_array_equal(alone.values, population.expression_mean)
    part = population.align(list(population.genes[:100]), mapping=False)
    with pytest.warns(ShrinkpertWarning, match="199 of 299 genes"):
        d2 = compute_deltas(papalexi, reference=part, perturbations=perts[:3])
    assert np.isnan(d2.values[:, 100:]).all()
    np.testing.assert_array_equal(d2.values[:, :100], d.values[:, :100])


def test_population_scale_must_match(papalexi, population):
    with pytest.raises(InputError, match="target_sum"):
        compute_deltas(papalexi, reference=population, target_sum=1e6)
    other = dataclasses.replace(population, scale="total")
    with pytest.raises(InputError, match="same normalize"):
        compute_deltas(papalexi, reference=other)


def test_predictions_share_the_reference(papalexi, perts):
    ref = delta_reference(papalexi, reference="perturbed_centroid", reference_perturbations=perts[5:])
    rng = np.random.default_rng(0)
    pred = pd.DataFrame(rng.normal(size=(2, 299)), index=perts[:2], columns=papalexi.var_names)
    shuffled = pred[pred.columns[::-1]]
    a, b = ref.subtract(pred), ref.subtract(shuffled)
    np.testing.assert_array_equal(a.values, pred.to_numpy() - ref.values)
    np.testing.assert_array_equal(b.to_frame().set_index(["perturbation", "gene"]).sort_index()["delta"],
                                  a.to_frame().set_index(["perturbation", "gene"]).sort_index()["delta"])
    arr = ref.subtract(pred.to_numpy(), perturbations=perts[:2])
    np.testing.assert_array_equal(arr.values, a.values)
    with pytest.raises(LeakageError, match=repr(perts[5])):
        ref.subtract(pred.to_numpy(), perturbations=[perts[0], perts[5]])
    with pytest.raises(GeneMismatchError, match="not in the perturbed_centroid reference"):
        ref.subtract(pred.rename(columns={"STAT1": "NOT_A_GENE"}))
    with pytest.raises(InputError, match="needs perturbations="):
        ref.subtract(pred.to_numpy())


def test_result_contract(papalexi):
    d = compute_deltas(papalexi, perturbations=["IRF1", "CD86"])
    with pytest.raises(ValueError, match="read-only"):
        d.values[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        d.reference.values[0] = 1.0
    frame = d.to_frame()
    assert list(frame.columns) == ["perturbation", "gene", "delta", "reference"] and len(frame) == 2 * 299
    assert d.to_anndata().shape == (2, 299)
    assert isinstance(d.reference, DeltaReference)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"reference": "mean"}, InputError, "reference='mean'"),
        ({"reference": "control", "reference_perturbations": ["CD86"]}, InputError, "drop reference_perturbations"),
        ({"control": "nope"}, MissingKeyError, "needs control cells"),
        ({"perturbations": "CD86"}, InputError, "single string"),
        ({"perturbations": ["NOPE"]}, MissingKeyError, "NOPE"),
        ({"reference": "perturbed_centroid", "reference_perturbations": ["NOPE"]}, MissingKeyError, "NOPE"),
    ],
)
def test_argument_errors(papalexi, kwargs, error, match):
    with pytest.raises(error, match=match):
        compute_deltas(papalexi, **kwargs)


def test_group_statistics_input(papalexi, perts):
    stats = shrinkpert.group_statistics(papalexi, "perturbation", normalize="log1p")
    a = compute_deltas(stats, reference="perturbed_centroid", perturbations=perts[:2], reference_perturbations=perts[2:])
    b = compute_deltas(papalexi, reference="perturbed_centroid", perturbations=perts[:2], reference_perturbations=perts[2:])
    np.testing.assert_array_equal(a.values, b.values)
