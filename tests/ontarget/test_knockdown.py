"""Knockdown tables and per-cell estimates: agreement with estimate_effects, flags, layouts, errors."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert import estimate_effects
from shrinkpert.errors import CountsError, InputError, MissingKeyError
from shrinkpert.ontarget import knockdown
from shrinkpert.ontarget._counts import _fit_zinb, _zinb_logpmf
from tests.conftest import as_layout


def test_log2fc_and_se_equal_estimate_effects_target_column(screen):
    kd = knockdown(screen)
    eff = estimate_effects(screen, scale="log2fc")
    table = kd.to_frame()
    rows = np.arange(len(eff.perturbations))
    expected = pd.DataFrame({"log2fc": eff.effect[rows, eff.target_index],
                             "std_error": eff.std_error[rows, eff.target_index]}, index=eff.perturbations)
    # same formula, same pseudocount and zero-variance rule: equal to rounding
    np.testing.assert_allclose(table.loc[expected.index, "log2fc"], expected["log2fc"], rtol=1e-10)
    np.testing.assert_allclose(table.loc[expected.index, "std_error"], expected["std_error"], rtol=1e-10)


def test_ratio_is_ratio_of_normalised_means(screen):
    kd = knockdown(screen)
    X = screen.X.toarray().astype(np.float64)
    y = X / X.sum(1, keepdims=True) * 1e4
    labels = screen.obs["perturbation"].astype(str).to_numpy()
    ctrl = labels == "non-targeting"
    for pert in kd.by_perturbation.groups[:3]:
        t = screen.var_names.get_loc(pert)
        want = y[labels == pert, t].mean() / y[ctrl, t].mean()
        assert kd.to_frame().loc[pert, "ratio"] == pytest.approx(want, rel=1e-12)


def test_knockdown_recovers_true_guide_knockdown_order(screen):
    kd = knockdown(screen, guide_key="guide")
    sim = screen.uns["simulation"]
    truth = pd.Series(sim["guide_knockdown"], index=sim["guides"])
    escape = pd.Series(sim["escape_rate"], index=sim["perturbations"])
    table = kd.to_frame("guide")
    # expected ratio of a guide: escapers keep full expression
    expected = escape[table["perturbation"]].to_numpy() + (1 - escape[table["perturbation"]].to_numpy()) * truth[table.index].to_numpy()
    rho = pd.Series(table["ratio"].to_numpy()).corr(pd.Series(expected), method="spearman")
    assert rho > 0.8  # 24 guides of ~70 cells each; sampling noise only


def test_flags_not_measured_low_expression_and_few_cells(screen):
    adata = screen.copy()
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    labels[np.flatnonzero(labels == "non-targeting")[:2]] = "TINY"  # 2 cells
    adata.obs["perturbation"] = pd.Categorical(labels)
    low_gene = int(np.argmin(np.asarray(screen.X.sum(0)).ravel()))
    targets = {"TINY": str(screen.var_names[0]), screen.uns["simulation"]["perturbations"][0]: "NOT_A_GENE",
               screen.uns["simulation"]["perturbations"][1]: str(screen.var_names[low_gene])}
    kd = knockdown(adata, targets=targets, min_control_mean=0.05)
    table = kd.to_frame()
    assert table.loc[screen.uns["simulation"]["perturbations"][0], "flag"] == "not_measured"
    assert np.isnan(table.loc[screen.uns["simulation"]["perturbations"][0], "ratio"])
    assert table.loc[screen.uns["simulation"]["perturbations"][1], "flag"] == "low_expression"
    assert table.loc["TINY", "flag"] == "few_cells"
    assert (table.loc[screen.uns["simulation"]["perturbations"][2:], "flag"] == "ok").all()
    assert kd.summary()["n_not_measured"].item() == 1


def test_cell_posterior_matches_gamma_poisson_formula(screen):
    kd = knockdown(screen)
    cells = kd.to_frame("cell")
    table = kd.to_frame()
    pert = table.index[0]
    sub = cells[cells["perturbation"] == pert]
    x, e = sub["observed"].to_numpy(), sub["expected"].to_numpy()
    rho = table.loc[pert, "ratio"]
    # moment estimate of the Gamma shape (NumPy twin of _cell_posterior)
    excess = np.sum((x - rho * e) ** 2 - rho * e)
    shape = np.clip(np.sum((rho * e) ** 2) / excess if excess > 0 else 1e6, 1e-2, 1e6)
    np.testing.assert_allclose(sub["posterior_mean"], (shape + x) / (shape / rho + e), rtol=1e-12)
    np.testing.assert_allclose(sub["posterior_sd"], np.sqrt(shape + x) / (shape / rho + e), rtol=1e-12)
    assert np.isnan(kd.by_cell.observed[(screen.obs["perturbation"] == "non-targeting").to_numpy()]).all()


@pytest.mark.parametrize("layout", ["dense", "csc", "backed_csr"])
def test_layouts_agree(screen, layout, tmp_path):
    ref = knockdown(screen, guide_key="guide").to_frame("guide")
    small = screen[:, :]
    small = ad.AnnData(X=np.asarray(small.X.toarray()), obs=small.obs.copy(), var=small.var.copy())
    other = knockdown(as_layout(small, layout, np.float32, tmp_path), guide_key="guide").to_frame("guide")
    pd.testing.assert_frame_equal(ref, other, rtol=1e-12)


def test_input_not_modified(screen):
    adata = screen.copy()
    before = copy.deepcopy(adata)
    knockdown(adata, guide_key="guide")
    assert (adata.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    pd.testing.assert_frame_equal(adata.var, before.var)
    assert adata.uns.keys() == before.uns.keys()


def test_results_are_read_only(screen):
    kd = knockdown(screen)
    with pytest.raises(ValueError, match="read-only"):
        kd.by_perturbation.ratio[0] = 1.0
    with pytest.raises(TypeError, match="does not support item assignment"):
        kd.params["control"] = "x"


def test_errors(screen):
    with pytest.raises(MissingKeyError, match="guide labels"):
        knockdown(screen, guide_key="no_such_column")
    with pytest.raises(InputError, match="min_control_mean"):
        knockdown(screen, min_control_mean=-1)
    with pytest.raises(InputError, match="max_std_error"):
        knockdown(screen, max_std_error=0)
    with pytest.raises(MissingKeyError, match="library_size"):
        knockdown(screen, library_size="nope")
    with pytest.raises(InputError, match="level"):
        knockdown(screen).to_frame("cells")
    with pytest.raises(InputError, match="guide_key"):
        knockdown(screen).to_frame("guide")
    bad = screen.copy()
    bad.X = sp.csr_matrix(bad.X.toarray() * 0.5)
    with pytest.raises(CountsError, match="raw counts"):
        knockdown(bad)
    shared = screen.copy()
    guides = shared.obs["guide"].astype(str).to_numpy().copy()
    first = shared.uns["simulation"]["perturbations"][0]
    guides[shared.obs["perturbation"].astype(str).to_numpy() == first] = f"{shared.uns['simulation']['perturbations'][1]}_g1"
    shared.obs["guide"] = guides
    with pytest.raises(InputError, match="several perturbations"):
        knockdown(shared, guide_key="guide")
    with pytest.raises(MissingKeyError, match="targets="):
        knockdown(screen, targets={"NOPE": "GENE00001"})


def test_fit_zinb_recovers_parameters():
    rng = np.random.default_rng(7)
    n = 8000
    lib = rng.lognormal(0, 0.3, n)
    mu, theta, pi0 = np.array([2.0, 3.0, 0.5]), np.array([3.0, 2.0, 1.5]), np.array([0.0, 0.3, 0.2])
    m = mu[None, :] * lib[:, None]
    counts = rng.negative_binomial(theta, theta / (theta + m))
    counts = np.where(rng.random(counts.shape) < pi0, 0, counts)
    est_mu, est_theta, est_pi0 = _fit_zinb(counts, lib)
    # maximum likelihood at n = 8,000: tolerances ~3 standard errors of each parameter; a
    # low-mean gene (third) identifies only the marginal mean (1 - pi0) mu well
    np.testing.assert_allclose(est_mu[:2], mu[:2], rtol=0.08)  # mu and pi0 estimates correlate
    np.testing.assert_allclose(est_theta[:2], theta[:2], rtol=0.25)
    np.testing.assert_allclose(est_pi0[:2], pi0[:2], atol=0.04)
    np.testing.assert_allclose((1 - est_pi0) * est_mu, (1 - pi0) * mu, rtol=0.05)
    # the log pmf sums to one
    xs = np.arange(200)[:, None]
    total = np.exp(_zinb_logpmf(xs, np.array([3.0]), np.array([2.0]), np.array([0.2]))).sum()
    assert total == pytest.approx(1.0, abs=1e-10)
