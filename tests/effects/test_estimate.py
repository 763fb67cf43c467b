"""Effect sizes against scipy's Welch t-test, closed forms and the documented zero-variance policy."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats as ss

from shrinkpert import ShrinkpertWarning, estimate_effects, group_statistics
from shrinkpert.errors import InputError, MissingKeyError
from tests.twins import transform


def _dense_log(adata):
    return transform(adata.X.toarray(), "log1p")


def test_log1p_effects_match_scipy_welch_on_real_data(papalexi):
    effects = estimate_effects(papalexi, variance_floor="none")
    L = _dense_log(papalexi)
    labels = papalexi.obs["perturbation"].to_numpy()
    ctrl = L[labels == "non-targeting"]
    for k, pert in enumerate(effects.perturbations):
        cells = L[labels == pert]
        res = ss.ttest_ind(cells, ctrl, equal_var=False)
        ok = (cells.var(axis=0, ddof=1) > 0) & (ctrl.var(axis=0, ddof=1) > 0)
        np.testing.assert_allclose(effects.effect[k], cells.mean(0) - ctrl.mean(0), rtol=1e-12, atol=1e-13)
        # same formula, different summation order: 1e-9 relative on t and df
        np.testing.assert_allclose(effects.z[k][ok], res.statistic[ok], rtol=1e-9)
        np.testing.assert_allclose(effects.df[k][ok], res.df[ok], rtol=1e-9)


def test_log2fc_matches_delta_method_closed_form(papalexi):
    effects = estimate_effects(papalexi, scale="log2fc", pseudocount=0.5, variance_floor="none")
    Y = transform(papalexi.X.toarray(), "total")
    labels = papalexi.obs["perturbation"].to_numpy()
    p, c = Y[labels == "STAT1"], Y[labels == "non-targeting"]
    k = list(effects.perturbations).index("STAT1")
    mp, mc = p.mean(0) + 0.5, c.mean(0) + 0.5
    ok = (p.var(0, ddof=1) > 0) & (c.var(0, ddof=1) > 0)
    se = np.sqrt(p.var(0, ddof=1) / len(p) / mp**2 + c.var(0, ddof=1) / len(c) / mc**2) / np.log(2)
    # summation order differs from NumPy's: 1e-12 relative, 1e-14 absolute for effects near 0
    np.testing.assert_allclose(effects.effect[k], np.log2(mp / mc), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(effects.std_error[k][ok], se[ok], rtol=1e-10)


def test_control_variance_floor_is_the_documented_formula(papalexi):
    effects = estimate_effects(papalexi)  # variance_floor="control"
    L = _dense_log(papalexi)
    labels = papalexi.obs["perturbation"].to_numpy()
    ctrl = L[labels == "non-targeting"]
    vc, nc = ctrl.var(axis=0, ddof=1), len(ctrl)
    floored = 0
    for k, pert in enumerate(effects.perturbations):
        cells = L[labels == pert]
        vp, n = cells.var(axis=0, ddof=1), len(cells)
        ok = (vp > 0) & (vc > 0)
        below = vp < vc
        a = np.where(below, vc, vp) / n
        b = vc / nc
        df = (a + b) ** 2 / (a**2 / np.where(below, nc - 1, n - 1) + b**2 / (nc - 1))
        np.testing.assert_allclose(effects.std_error[k][ok], np.sqrt(a + b)[ok], rtol=1e-9)
        np.testing.assert_allclose(effects.df[k][ok], df[ok], rtol=1e-9)
        floored += int((below & ok).sum())
    assert floored > 1000 and effects.params["n_control_variance_floored"] >= floored
    plain = estimate_effects(papalexi, variance_floor="none")
    assert (effects.std_error >= plain.std_error - 1e-15).all()  # the floor only widens


def test_control_variance_floor_holds_the_nominal_rate_on_null_data():
    """simulate() with no effects, ~100 cells per perturbation: Welch over-calls moderately sparse genes."""
    import shrinkpert as sp

    null = sp.datasets.simulate(6000, 400, 40, seed=5, effect_sd=0.0, systematic_shift=0.0,
                                control_fraction=0.3, batch_sd=0.0)
    ctrl = null.X[(null.obs["perturbation"] == "non-targeting").to_numpy()]
    detection = np.asarray((ctrl > 0).mean(axis=0)).ravel()
    genes = (detection > 0.02) & (detection < 0.2)
    rates = {}
    for floor in ("none", "control"):
        e = estimate_effects(null, variance_floor=floor)
        p = 2 * ss.t.sf(np.abs(e.z[:, genes]), e.df[:, genes])
        rates[floor] = float((p < 0.01).mean())
    assert rates["none"] > 0.02  # Welch: more than twice the nominal 1%
    assert rates["control"] < 0.012  # the floor: at or below nominal (+ Monte Carlo error)


def test_known_biology_stat1_and_jak2_knockdown_is_strong(papalexi):
    summary = estimate_effects(papalexi).summary()
    # Papalexi et al.: JAK2/STAT1 guides strongly reduce their targets (README: 0.20 of NT counts)
    assert summary.loc["STAT1", "target_effect"] < -2 and summary.loc["JAK2", "target_effect"] < -2
    assert summary.loc["ATF2", "target"] == "ATF2"
    assert np.isnan(summary.loc["ATF2", "target_effect"])  # ATF2 is not among the 299 genes


def test_zero_variance_policy_gives_finite_documented_se(counts):
    with pytest.warns(ShrinkpertWarning, match="library size of 0"):
        effects = estimate_effects(counts)
    assert np.isfinite(effects.std_error).all() and np.isfinite(effects.df).all()
    assert (effects.effect[:, 3] == 0).all()  # gene 3 is zero everywhere
    delta = effects.params["detection_limit"]
    n_p, n_c = effects.n_cells.astype(float), effects.control_n_cells
    # each group: delta^2/(n+1); a perturbed group larger than the control is floored at the control's
    v_p = np.maximum(delta**2 / (n_p + 1), delta**2 / (n_c + 1))
    expected = np.sqrt(v_p / n_p + delta**2 / (n_c * (n_c + 1)))
    np.testing.assert_allclose(effects.std_error[:, 3], expected, rtol=1e-12)
    with pytest.warns(ShrinkpertWarning, match="library size of 0"):
        plain = estimate_effects(counts, variance_floor="none")
    np.testing.assert_allclose(plain.std_error[:, 3], delta * np.sqrt(1 / (n_p * (n_p + 1)) + 1 / (n_c * (n_c + 1))),
                               rtol=1e-12)
    lib = np.asarray(counts.X[counts.obs["perturbation"] == "non-targeting"].sum(axis=1)).mean()
    np.testing.assert_allclose(delta, np.log1p(1e4 / lib), rtol=1e-12)


def test_small_perturbations_are_dropped_with_a_named_warning(counts):
    adata = counts.copy()
    adata.obs["perturbation"] = adata.obs["perturbation"].cat.add_categories("tiny")
    adata.obs.iloc[[20, 21], 0] = "tiny"
    with pytest.warns(ShrinkpertWarning) as record:
        effects = estimate_effects(adata, min_cells=3)
    assert any("tiny (2 cells)" in str(w.message) for w in record)
    assert "tiny" not in effects.perturbations


def test_from_statistics_equals_from_anndata(papalexi):
    stats = group_statistics(papalexi, "perturbation", normalize="log1p")
    a, b = estimate_effects(stats), estimate_effects(papalexi)
    np.testing.assert_array_equal(a.effect, b.effect)
    np.testing.assert_array_equal(a.std_error, b.std_error)
    with pytest.raises(InputError, match="normalize='total'"):
        estimate_effects(stats, scale="log2fc")


def test_input_is_never_modified(papalexi):
    before = copy.deepcopy(papalexi)
    estimate_effects(papalexi, scale="log2fc")
    group_statistics(papalexi, "perturbation", normalize="log1p")
    assert (papalexi.X != before.X).nnz == 0
    assert papalexi.obs.equals(before.obs) and papalexi.var.equals(before.var)
    assert set(papalexi.uns) == set(before.uns) and set(papalexi.layers) == set(before.layers)


def test_missing_control_lists_labels(papalexi):
    with pytest.raises(MissingKeyError, match="Control label 'NT' .*'STAT1'"):
        estimate_effects(papalexi, control="NT")


def test_missing_perturbation_key_names_columns(papalexi):
    with pytest.raises(MissingKeyError, match="no column 'gene'.*'perturbation'"):
        estimate_effects(papalexi, perturbation_key="gene")


def test_target_key_maps_labels_to_genes(papalexi):
    adata = papalexi.copy()
    adata.obs["label"] = ("KO_" + adata.obs["perturbation"].astype(str)).where(
        adata.obs["perturbation"] != "non-targeting", "non-targeting")
    adata.obs["target"] = adata.obs["perturbation"].astype(str)
    effects = estimate_effects(adata, perturbation_key="label", target_key="target")
    k = list(effects.perturbations).index("KO_STAT1")
    assert effects.target[k] == "STAT1" and effects.genes[effects.target_index[k]] == "STAT1"


def test_outputs_are_read_only_and_tidy(papalexi):
    effects = estimate_effects(papalexi)
    with pytest.raises(ValueError, match="read-only"):
        effects.effect[0, 0] = 1.0
    frame = effects.to_frame()
    assert len(frame) == effects.effect.size
    assert frame["is_target"].sum() == (effects.target_index >= 0).sum()
    adata = effects.to_anndata()
    assert adata.shape == effects.effect.shape and set(adata.layers) >= {"effect", "std_error", "df"}
