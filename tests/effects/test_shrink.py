"""shrink_effects: each row is exactly ash() on that perturbation; raw values kept; split-independent."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert import estimate_effects
from shrinkpert.effects.ash import ash
from shrinkpert.effects.moderate import squeeze_var
from shrinkpert.effects.shrink import shrink_effects
from shrinkpert.errors import InputError


@pytest.fixture(scope="module")
def effects(papalexi):
    return estimate_effects(papalexi)


@pytest.fixture(scope="module")
def shrunk(effects):
    return shrink_effects(effects)


def test_rows_equal_ash_per_perturbation(effects, shrunk):
    for k in (0, 7, 19):
        one = ash(effects.effect[k], effects.std_error[k], mixture="normal")
        # same kernels, same grid, same optimiser: identical up to the parallel reduction order
        np.testing.assert_allclose(shrunk.posterior_mean[k], one.posterior_mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(shrunk.lfsr[k], one.lfsr, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(shrunk.loglik[k], one.loglik, rtol=1e-12)


def test_raw_values_are_kept_and_shrinkage_never_inflates(effects, shrunk):
    np.testing.assert_array_equal(shrunk.effect, effects.effect)
    np.testing.assert_array_equal(shrunk.std_error, effects.std_error)
    # zero-centred unimodal prior: |posterior mean| <= |betahat|
    assert (np.abs(shrunk.posterior_mean) <= np.abs(shrunk.effect) + 1e-12).all()
    assert (shrunk.lfsr >= shrunk.lfdr - 1e-12).all()
    assert len(shrunk.to_frame()) == effects.effect.size


def test_a_perturbation_does_not_depend_on_the_others(effects, shrunk):
    subset = effects.subset(list(effects.perturbations[5:12]))
    alone = shrink_effects(subset)
    np.testing.assert_array_equal(alone.posterior_mean, shrunk.posterior_mean[5:12])
    np.testing.assert_array_equal(alone.lfsr, shrunk.lfsr[5:12])


def test_by_gene_and_pooled(effects):
    by_gene = shrink_effects(effects, by="gene")
    col = ash(effects.effect[:, 10], effects.std_error[:, 10], mixture="normal")
    np.testing.assert_allclose(by_gene.posterior_mean[:, 10], col.posterior_mean, rtol=1e-12, atol=1e-14)
    pooled = shrink_effects(effects, by="pooled")
    flat = ash(effects.effect.ravel(), effects.std_error.ravel(), mixture="normal")
    np.testing.assert_allclose(pooled.posterior_mean.ravel(), flat.posterior_mean, rtol=1e-10, atol=1e-13)


def test_moderated_standard_errors(effects):
    got = shrink_effects(effects, moderate=True)
    k = 3
    expected = np.sqrt(squeeze_var(effects.std_error[k] ** 2, effects.df[k]).var_post)
    np.testing.assert_allclose(got.std_error[k], expected, rtol=1e-12)
    np.testing.assert_array_equal(got.raw_std_error, effects.std_error)


def test_bad_arguments(effects):
    with pytest.raises(InputError, match="by='cells' is not one of"):
        shrink_effects(effects, by="cells")
    with pytest.raises(InputError, match="needs an EffectSizes"):
        shrink_effects(np.zeros((2, 2)))
