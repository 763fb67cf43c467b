"""Leakage guards of the split-dependent methods (deg_rest weights, perturbed-centroid deltas)."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.errors import InputError, LeakageError
from shrinkpert.weights import SPLIT_DEPENDENT, gene_weights
from shrinkpert.weights.leakage import check_leakage, require_reference_perturbations


def test_split_dependent_methods():
    assert SPLIT_DEPENDENT == {"deg_rest", "perturbed_centroid"}


def test_reference_set_is_required_and_normalised():
    with pytest.raises(InputError, match="no default"):
        require_reference_perturbations(None, method="deg_rest")
    with pytest.raises(InputError, match="is empty"):
        require_reference_perturbations([], method="deg_rest")
    with pytest.raises(InputError, match="twice"):
        require_reference_perturbations(["A", "A"], method="deg_rest")
    assert require_reference_perturbations(["B", "A"], method="deg_rest", control="NT") == ("A", "B")


def test_check_leakage_names_the_perturbations():
    with pytest.raises(LeakageError, match="'B'.*allow_leakage=True"):
        check_leakage(["A", "B"], ["B", "C"], allow_leakage=False, method="deg_rest")
    assert check_leakage(["A", "B"], ["B", "C"], allow_leakage=True, method="deg_rest") == ["B"]
    assert check_leakage(["A"], ["B", "C"], allow_leakage=False, method="deg_rest") == []
    assert issubclass(LeakageError, ValueError)


def test_deg_rest_refuses_to_weight_its_reference_perturbations(papalexi, perts):
    with pytest.raises(LeakageError, match="'ATF2'"):
        gene_weights(papalexi, method="deg_rest", perturbations=["ATF2", "IRF1"], reference_perturbations=perts[:5])
    with pytest.raises(LeakageError, match="and 15 more"):
        gene_weights(papalexi, method="deg_rest", reference_perturbations=perts)


def test_allow_leakage_compares_each_with_the_rest_of_the_set(papalexi, perts):
    """Mejia et al.'s all-perturbations setting: p against R minus p, recorded in params."""
    w = gene_weights(papalexi, method="deg_rest", reference_perturbations=perts, allow_leakage=True)
    assert w.params["allow_leakage"] is True and w.params["leaked"] == perts
    for p in ("ATF2", "STAT1"):
        rest = [q for q in perts if q != p]
        direct = gene_weights(papalexi, method="deg_rest", perturbations=[p], reference_perturbations=rest)
        # removing p from the pooled statistics vs pooling without it: rounding only
        np.testing.assert_allclose(w.values[perts.index(p)], direct.values[0], rtol=1e-10, atol=1e-15)
