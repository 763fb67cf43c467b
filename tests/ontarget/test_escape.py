"""Escape classification: accuracy on simulated truth, no over-calling on nulls, invariances, errors."""

from __future__ import annotations

import copy
import dataclasses

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert import estimate_effects, group_statistics
from shrinkpert.errors import CountsError, InputError, MissingKeyError, ShrinkpertWarning
from shrinkpert.ontarget import classify_escape, escape_aware_effects
from shrinkpert.ontarget._mixture import _fit_one, _zinb_part
from tests.conftest import as_layout


def _auroc(score, label):
    """Mann-Whitney AUROC (ties count one half)."""
    pos, neg = score[label], score[~label]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return greater / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def result(screen):
    return classify_escape(screen, guide_key="guide")


def test_escape_accuracy_on_simulated_truth(screen, result):
    obs = screen.obs
    perturbed = (obs["perturbation"] != "non-targeting").to_numpy()
    truth = ~obs["escaped"].to_numpy()
    auc = _auroc(result.p_perturbed[perturbed], truth[perturbed])
    # 8 perturbations, well-expressed targets: clearly better than chance (0.5); measured 0.86
    assert auc > 0.75
    true_pen = obs[perturbed].groupby("perturbation", observed=True)["escaped"].apply(lambda e: 1 - e.mean())
    est = result.penetrance["penetrance"]
    err = (est - true_pen.reindex(est.index)).abs()
    assert err.mean() < 0.12  # measured 0.06
    table = result.penetrance
    assert ((table["ci_low"] <= table["penetrance"]) & (table["penetrance"] <= table["ci_high"])).all()


def test_p_perturbed_is_aligned_and_controls_are_zero(screen, result):
    assert result.obs_names.equals(pd.Index(screen.obs_names))
    ctrl = (screen.obs["perturbation"] == "non-targeting").to_numpy()
    assert (result.p_perturbed[ctrl] == 0).all()
    assert np.isfinite(result.p_perturbed).all()
    assert ((result.p_perturbed >= 0) & (result.p_perturbed <= 1)).all()
    frame = result.to_frame()
    assert (frame.loc[ctrl, "call"] == "control").all()
    assert set(frame.loc[~ctrl, "call"]) <= {"perturbed", "escaped"}
    # guide table sums to the perturbation's cells
    guides = result.guide_penetrance
    assert guides.groupby("perturbation")["n_cells"].sum().equals(result.penetrance["n_cells"].rename(None)
                                                                  .rename_axis("perturbation"))


def test_no_overcalling_on_null_splits(screen_with_nulls):
    res = classify_escape(screen_with_nulls, targets={"FAKE_TARGET": "GENE00003"})
    table = res.penetrance
    for null in ("NT_split", "FAKE_TARGET"):
        assert table.loc[null, "penetrance"] <= 0.05
        assert table.loc[null, "ci_low"] == 0.0
    cells = (screen_with_nulls.obs["perturbation"] == "NT_split").to_numpy()
    assert res.p_perturbed[cells].mean() <= 0.05


def test_no_signature_without_downstream_effects():
    from shrinkpert.data.simulate import simulate

    flat = simulate(n_cells=1500, n_genes=150, n_perturbations=5, seed=2, effect_sd=0.0,
                    weak_guide_fraction=1.0, systematic_shift=0.0, mean_expression=0.05, escape_rate=0.0)
    res = classify_escape(flat)
    # no downstream effects: no perturbation may have signature evidence (only its knockdown)
    assert set(res.penetrance["evidence"]) <= {"none", "target"}
    assert all(len(genes) == 0 for genes in res.signature_genes.values())


def test_no_overcalling_on_fake_targets(screen):
    adata = screen.copy()
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    controls = np.random.default_rng(8).permutation(np.flatnonzero(labels == "non-targeting"))
    fakes = {}
    means = np.asarray(screen.X.mean(0)).ravel()
    for j, part in enumerate(np.array_split(controls, 5)[:4]):
        name = f"FAKE{j}"
        labels[part] = name
        fakes[name] = str(screen.var_names[np.argsort(-means)[j + 10]])  # well-expressed, untargeted
    adata.obs["perturbation"] = pd.Categorical(labels)
    table = classify_escape(adata, targets=fakes).penetrance
    assert (table.loc[list(fakes), "penetrance"] <= 0.05).all()
    assert (table.loc[list(fakes), "ci_low"] == 0.0).all()


def test_unmeasured_target_uses_signature_only(screen):
    first = screen.uns["simulation"]["perturbations"][0]
    res = classify_escape(screen, targets={first: "NOT_A_GENE"})
    assert res.penetrance.loc[first, "evidence"] in ("signature", "none")
    assert np.isnan(res.penetrance.loc[first, "target_ratio"])


def test_deterministic_and_layout_invariant(screen, tmp_path):
    ref = classify_escape(screen, seed=3)
    again = classify_escape(screen, seed=3)
    np.testing.assert_array_equal(ref.p_perturbed, again.p_perturbed)
    dense = ad.AnnData(X=screen.X.toarray(), obs=screen.obs.copy(), var=screen.var.copy())
    for layout in ("csc", "backed_csr"):
        other = classify_escape(as_layout(dense, layout, np.float32, tmp_path), seed=3)
        np.testing.assert_allclose(other.p_perturbed, ref.p_perturbed, rtol=1e-9, atol=1e-12)
        pd.testing.assert_frame_equal(other.penetrance, ref.penetrance, rtol=1e-9)


def test_input_not_modified(screen):
    adata = screen.copy()
    before = copy.deepcopy(adata)
    classify_escape(adata, guide_key="guide")
    assert (adata.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)


def test_small_perturbations_warn_and_are_nan(screen):
    adata = screen.copy()
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    labels[np.flatnonzero(labels == "non-targeting")[:2]] = "TINY"
    adata.obs["perturbation"] = pd.Categorical(labels)
    with pytest.warns(ShrinkpertWarning, match="not classified"):
        res = classify_escape(adata)
    cells = labels == "TINY"
    assert np.isnan(res.p_perturbed[cells]).all()
    assert np.isnan(res.penetrance.loc["TINY", "penetrance"])


def test_errors(screen):
    with pytest.raises(InputError, match="lfsr_threshold"):
        classify_escape(screen, lfsr_threshold=1.5)
    with pytest.raises(InputError, match="null_shift"):
        classify_escape(screen, null_shift="mean")
    with pytest.raises(MissingKeyError, match="Control label"):
        classify_escape(screen, control="NTC")
    with pytest.raises(InputError, match="n_grid"):
        classify_escape(screen, n_grid=3)
    bad = screen.copy()
    bad.X = sp.csr_matrix(bad.X.toarray() + 0.25)
    with pytest.raises(CountsError, match="raw counts"):
        classify_escape(bad)
    with pytest.raises(InputError, match="guide_key"):
        classify_escape(screen).guide_penetrance  # noqa: B018


def test_mixture_recovers_penetrance_of_a_known_model():
    """Target channel only, data drawn from the model itself (NB, known knockdown)."""
    rng = np.random.default_rng(4)
    n, pi, r = 3000, 0.7, 0.2
    lib = rng.lognormal(0, 0.2, n)
    perturbed = rng.random(n) < pi
    m = 4.0 * lib * np.where(perturbed, r, 1.0)
    x = rng.negative_binomial(5.0, 5.0 / (5.0 + m)).astype(float)
    ratio = (x.sum() + 0.5) / (lib.sum() * 4.0)
    tgt = dict(x=x, lib=lib, mu=4.0, theta=5.0, pi0=0.0, h=0.0, sign=-1.0,
               xsum_g=np.array([x.sum()]), lsum_g=np.array([lib.sum()]))
    fit = _fit_one(None, tgt, np.arange(1, 201) / 200, (0,), 1, np.zeros(n, dtype=np.int64))
    assert abs(fit["pi"] - pi) < 0.03  # ~3 standard errors at n = 3000
    # the interval is conditional on the group's effect sizes (see classify_escape Notes)
    assert fit["ci_low"] <= fit["pi"] <= fit["ci_high"] and fit["ci_high"] - fit["ci_low"] < 0.1
    assert ratio == pytest.approx(pi * r + 1 - pi, abs=0.03)
    assert _auroc(fit["post"], perturbed) > 0.9


def test_zinb_part_differences_match_full_log_pmf():
    from shrinkpert.ontarget._counts import _zinb_logpmf

    x = np.array([0.0, 1.0, 3.0, 10.0])
    a = _zinb_part(x, 2.0, 1.5, 0.1) - _zinb_part(x, 0.7, 1.5, 0.1)
    b = _zinb_logpmf(x, 2.0, 1.5, 0.1) - _zinb_logpmf(x, 0.7, 1.5, 0.1)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_escape_aware_effects_hard_equals_relabelled_estimate(screen, result):
    hard = escape_aware_effects(screen, result, weighting="hard")
    labels = screen.obs["perturbation"].astype(str).to_numpy().astype(object)
    keep = (labels == "non-targeting") | (result.p_perturbed >= 0.5)
    series = pd.Series(np.where(keep, labels, None), index=screen.obs_names, name="perturbation", dtype=object)
    want = estimate_effects(group_statistics(screen, series, normalize="log1p"), control="non-targeting")
    np.testing.assert_allclose(hard.effect, want.effect, rtol=1e-12)
    assert hard.params["escape_weighting"] == "hard"


def test_soft_weights_of_one_and_zero_equal_unweighted(screen, result):
    ones = dataclasses.replace(result, p_perturbed=np.where(np.isnan(result.p_perturbed), np.nan, 1.0))
    soft = escape_aware_effects(screen, ones, weighting="soft")
    plain = estimate_effects(screen)
    # weights 1: the same means, variances (ddof=1) and Welch SEs as the unweighted estimate
    np.testing.assert_allclose(soft.effect, plain.effect, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(soft.std_error, plain.std_error, rtol=1e-9)
    # weights 0/1: the same as dropping the zero-weight cells
    zero_one = dataclasses.replace(result, p_perturbed=(result.p_perturbed >= 0.5).astype(float))
    soft01 = escape_aware_effects(screen, zero_one, weighting="soft")
    hard = escape_aware_effects(screen, result, weighting="hard")
    np.testing.assert_allclose(soft01.effect, hard.effect, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(soft01.std_error, hard.std_error, rtol=1e-9)


def test_escape_aware_effects_errors(screen, result):
    with pytest.raises(InputError, match="weighting"):
        escape_aware_effects(screen, result, weighting="fuzzy")
    with pytest.raises(InputError, match="do not match"):
        escape_aware_effects(screen[::-1].copy(), result)


def test_escape_aware_effects_leave_inputs_unchanged(screen, result):
    adata = screen.copy()
    before = copy.deepcopy(adata)
    p_before = result.p_perturbed.copy()
    escape_aware_effects(adata, result, weighting="soft")
    assert (adata.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    np.testing.assert_array_equal(result.p_perturbed, p_before)
