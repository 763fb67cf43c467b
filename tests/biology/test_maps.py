"""Maps: blocked cosine similarity and control alignment, against scikit-learn and closed forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.biology import cosine_similarity, perturbation_map
from shrinkpert.errors import InputError

sk_pairwise = pytest.importorskip("sklearn.metrics.pairwise")
sk_decomposition = pytest.importorskip("sklearn.decomposition")


def test_cosine_matches_scikit_learn_and_blocks_do_not_matter():
    x = np.random.default_rng(0).normal(size=(23, 9))
    s = cosine_similarity(x)
    # scikit-learn normalises and multiplies the same way; summation order differs at 1e-15
    np.testing.assert_allclose(s, sk_pairwise.cosine_similarity(x), rtol=0, atol=1e-14)
    for block in (1, 4, 23, 100):
        np.testing.assert_allclose(cosine_similarity(x, block_size=block), s, rtol=0, atol=1e-14)
    assert (s == s.T).all()  # exactly symmetric: upper triangle mirrored
    assert (np.diag(s) == 1.0).all()


def test_zero_rows_are_undefined_and_identical_rows_tie_exactly():
    rng = np.random.default_rng(1)
    row = rng.normal(size=7)
    x = np.vstack([row, 3.0 * row, np.zeros(7), rng.normal(size=(4, 7)), row])
    s = cosine_similarity(x)
    assert np.isnan(s[2]).all() and np.isnan(s[:, 2]).all()
    assert s[0, 7] == 1.0
    np.testing.assert_array_equal(s[0, 3:7], s[7, 3:7])  # identical rows: exact ties
    # a scaled copy has the same direction only up to rounding of its unit vector
    np.testing.assert_allclose(s[1, 3:7], s[7, 3:7], rtol=0, atol=1e-15)
    same = cosine_similarity(np.tile(row, (5, 1)))
    assert (same == 1.0).all()


def test_centre_and_whiten_against_closed_form_and_scikit_learn():
    rng = np.random.default_rng(2)
    controls = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 3.0
    profiles = pd.DataFrame(rng.normal(size=(8, 6)) + 3.0, index=[f"P{i}" for i in range(8)])
    centred = perturbation_map(profiles, controls=controls, align="centre")
    np.testing.assert_allclose(centred.embedding, profiles.to_numpy() - controls.mean(axis=0), rtol=1e-14)
    white = perturbation_map(profiles, controls=controls, align="whiten")
    pca = sk_decomposition.PCA(whiten=True, svd_solver="full").fit(controls)
    ref = pca.transform(profiles.to_numpy())
    # same axes up to sign; scikit-learn uses the same ddof=1 variance
    np.testing.assert_allclose(np.abs(white.embedding), np.abs(ref), rtol=1e-9, atol=1e-12)
    # the control units themselves come out with identity covariance
    back = perturbation_map(pd.DataFrame(controls), controls=controls, align="whiten").embedding
    np.testing.assert_allclose(np.cov(back, rowvar=False), np.eye(6), atol=1e-10)
    two = perturbation_map(profiles, controls=controls, align="whiten", n_components=2)
    np.testing.assert_allclose(two.embedding, white.embedding[:, :2], rtol=1e-12)
    assert list(two.features) == ["PC1", "PC2"] and 0 < two.params["control_variance_explained"] < 1
    frame = two.to_frame()
    assert list(frame.columns) == ["perturbation", "feature", "value"] and len(frame) == 16
    sim = two.similarity()
    assert list(sim.index) == list(profiles.index)


def test_map_inputs_are_validated():
    x = pd.DataFrame(np.ones((3, 2)), index=["A", "B", "C"])
    with pytest.raises(InputError, match="align must be one of"):
        perturbation_map(x, align="tvn")
    with pytest.raises(InputError, match="needs controls with at least 2 units"):
        perturbation_map(x, align="whiten", controls=np.ones(2))
    with pytest.raises(InputError, match="controls must have 2 columns"):
        perturbation_map(x, controls=np.ones((4, 3)))
    with pytest.raises(InputError, match="n_components must be between 1 and"):
        perturbation_map(x, controls=np.random.default_rng(0).normal(size=(5, 2)), align="whiten", n_components=3)
    with pytest.raises(InputError, match="NaN or infinite"):
        perturbation_map(pd.DataFrame([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(InputError, match="duplicated perturbation labels"):
        perturbation_map(pd.DataFrame(np.eye(2), index=["A", "A"]))
    with pytest.raises(InputError, match="at least 2 perturbation"):
        perturbation_map(pd.DataFrame([[1.0, 2.0]]))
    with pytest.raises(InputError, match="field applies to EffectSizes"):
        perturbation_map(x, field="effect")
    with pytest.raises(InputError, match="controls lacks 1 profile genes"):
        perturbation_map(pd.DataFrame(np.eye(2), columns=["g1", "g2"]), controls=pd.DataFrame({"g1": [1.0]}))
    profiles = x.copy()
    perturbation_map(profiles, controls=np.zeros((2, 2)))
    pd.testing.assert_frame_equal(profiles, x)  # inputs untouched


def test_effect_results_are_profiles(counts):
    from shrinkpert import ShrunkEffects, estimate_effects
    from shrinkpert.biology import profile_matrix

    from shrinkpert.errors import ShrinkpertWarning

    with pytest.warns(ShrinkpertWarning, match="library size of 0"):  # the fixture has a zero-count cell
        effects = estimate_effects(counts)
    values, perts, genes = profile_matrix(effects)
    np.testing.assert_array_equal(values, effects.effect)
    assert list(perts) == list(effects.perturbations) and list(genes) == list(effects.genes)
    shape = effects.effect.shape
    shrunk = ShrunkEffects(  # built directly (fitting ash is not what is tested here)
        perturbations=effects.perturbations, genes=effects.genes, effect=effects.effect,
        std_error=effects.std_error, raw_std_error=effects.std_error, posterior_mean=0.5 * effects.effect,
        posterior_sd=np.ones(shape), lfsr=np.ones(shape), lfdr=np.ones(shape), prior_weights=np.ones((1, 1)),
        prior_sd=np.ones((1, 1)), loglik=np.zeros(1), target_index=effects.target_index, scale="log1p",
        params={"by": "pooled"})
    np.testing.assert_array_equal(profile_matrix(shrunk)[0], shrunk.posterior_mean)
    np.testing.assert_array_equal(profile_matrix(shrunk, field="effect")[0], shrunk.effect)
    with pytest.raises(InputError, match="field='lfsr' is not a profile of ShrunkEffects"):
        profile_matrix(shrunk, field="lfsr")
    m = perturbation_map(effects)
    np.testing.assert_array_equal(m.embedding, effects.effect)
