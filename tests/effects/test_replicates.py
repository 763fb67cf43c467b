"""Replicate-aware standard errors: closed form, calibration under guide heterogeneity, fallbacks."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from shrinkpert import ShrinkpertWarning, estimate_effects
from shrinkpert.effects.moderate import squeeze_var
from tests.twins import transform


def _guide_heterogeneity(seed: int, guide_sd: float = 0.3, n_genes: int = 300):
    """No perturbation has a true effect, but every guide shifts every gene by N(0, guide_sd²)."""
    rng = np.random.default_rng(seed)
    mu = rng.lognormal(0.0, 1.0, size=n_genes)
    labels, guides, blocks = [], [], []
    for p in range(6):
        for g in range(4):
            lam = mu * np.exp(rng.normal(0, guide_sd, size=n_genes))
            blocks.append(rng.poisson(rng.gamma(5.0, lam / 5.0, size=(150, n_genes))))
            labels += [f"P{p}"] * 150
            guides += [f"P{p}_g{g}"] * 150
    blocks.append(rng.poisson(rng.gamma(5.0, mu / 5.0, size=(800, n_genes))))
    labels += ["non-targeting"] * 800
    guides += ["NT"] * 800
    obs = pd.DataFrame({"perturbation": labels, "guide": guides}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(np.vstack(blocks).astype(np.float32), obs=obs,
                      var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))


def test_replicate_se_is_calibrated_where_welch_is_not():
    adata = _guide_heterogeneity(7)
    welch = estimate_effects(adata)
    reps = estimate_effects(adata, replicate_key="guide")
    p_welch = 2 * ss.t.sf(np.abs(welch.z), welch.df)
    p_reps = 2 * ss.t.sf(np.abs(reps.z), reps.df)
    # cells within a guide are not independent: Welch calls ~half of the null genes significant
    assert (p_welch < 0.05).mean() > 0.3
    # between-guide SEs (moderated, t with R-1+d0 df) hold the nominal 5% (1,800 tests: ±2.5%)
    assert 0.025 < (p_reps < 0.05).mean() < 0.075
    assert reps.params["se_method"] == "replicates" and (reps.n_replicates == 4).all()


def test_replicate_effect_and_se_closed_form():
    adata = _guide_heterogeneity(3, n_genes=60)
    got = estimate_effects(adata, replicate_key="guide", moderate=False)
    L = transform(adata.X, "log1p")
    obs = adata.obs
    ctrl = L[obs["perturbation"].to_numpy() == "non-targeting"]
    k = list(got.perturbations).index("P2")
    per_guide = np.stack([L[obs["guide"].to_numpy() == f"P2_g{g}"].mean(0) - ctrl.mean(0) for g in range(4)])
    np.testing.assert_allclose(got.effect[k], per_guide.mean(0), rtol=1e-10, atol=1e-12)
    # guides are compared with the shared control, whose noise enters once: SE² = s²/R + b
    se = np.sqrt(per_guide.var(0, ddof=1) / 4 + ctrl.var(0, ddof=1) / len(ctrl))
    np.testing.assert_allclose(got.std_error[k], se, rtol=1e-10)
    np.testing.assert_allclose(got.df[k], 3.0)

    moderated = estimate_effects(adata, replicate_key="guide")
    sq = squeeze_var(per_guide.var(0, ddof=1), 3)
    np.testing.assert_allclose(moderated.std_error[k], np.sqrt(sq.var_post / 4 + ctrl.var(0, ddof=1) / len(ctrl)),
                               rtol=1e-9)


def test_paired_replicates_use_their_own_control(papalexi):
    got = estimate_effects(papalexi, replicate_key="bio_rep", moderate=False)
    L = transform(papalexi.X.toarray(), "log1p")
    obs = papalexi.obs
    k = list(got.perturbations).index("JAK2")
    per_rep = []
    for rep in ("rep_1", "rep_2", "rep_3"):
        in_rep = obs["bio_rep"].to_numpy() == rep
        pert = L[in_rep & (obs["perturbation"].to_numpy() == "JAK2")].mean(0)
        ctrl = L[in_rep & (obs["perturbation"].to_numpy() == "non-targeting")].mean(0)
        per_rep.append(pert - ctrl)
    per_rep = np.stack(per_rep)
    np.testing.assert_allclose(got.effect[k], per_rep.mean(0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.std_error[k], np.sqrt(per_rep.var(0, ddof=1) / 3), rtol=1e-10)


def test_single_replicate_perturbations_fall_back_with_a_warning(papalexi):
    adata = papalexi.copy()
    adata.obs["one_rep"] = np.where(adata.obs["perturbation"] == "MYC", "only", adata.obs["guide_id"].astype(str))
    with pytest.warns(ShrinkpertWarning, match=r"fewer than 2 'one_rep' replicates.*MYC \(1\)"):
        got = estimate_effects(adata, replicate_key="one_rep")
    welch = estimate_effects(papalexi)
    k = list(got.perturbations).index("MYC")
    # pooled statistics come from merging replicate groups (Chan): equal up to rounding
    np.testing.assert_allclose(got.std_error[k], welch.std_error[k], rtol=1e-12)
    assert got.n_replicates[k] == 1
