"""difficulty(): closed-form helpers, the public name, output shape and input errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import false_discovery_control

import shrinkpert as sp
from shrinkpert.effects.shrink import ShrunkEffects
from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.strata import STRATA
from shrinkpert.strata._profiles import prior_impact
from shrinkpert.strata.features import marker_ranks, simes_p


def test_simes_closed_form_and_bh_equivalence():
    p = np.array([[0.01, 0.04, 0.5]])
    z = -np.asarray([[2.5758293035489004, 2.053748910631823, 0.6744897501960817]])  # two-sided p above
    np.testing.assert_allclose(simes_p(z, np.ones((1, 3), bool)), [min(3 * p[0, 0], 3 * p[0, 1] / 2, p[0, 2])], rtol=1e-9)
    # Simes' p < alpha exactly when Benjamini-Hochberg (scipy) rejects some hypothesis at alpha
    rng = np.random.default_rng(2)
    zs = rng.normal(size=(200, 40)) * rng.uniform(0.5, 2.0, size=(200, 1))
    use = rng.random((200, 40)) > 0.1
    simes = simes_p(zs, use)
    from scipy.special import ndtr
    for row in range(200):
        q = false_discovery_control(2 * ndtr(-np.abs(zs[row][use[row]])), method="bh")
        assert (q.min() < 0.05) == (simes[row] < 0.05)
        assert simes[row] == pytest.approx(min(q.min(), 1.0), rel=1e-9)  # Simes' p is BH's smallest q


def _shrunk(pi, sd, n_genes):
    z = np.zeros((1, n_genes))
    return ShrunkEffects(perturbations=pd.Index(["p"]), genes=pd.Index([f"g{i}" for i in range(n_genes)]),
                         effect=z, std_error=z + 1, raw_std_error=z + 1, posterior_mean=z, posterior_sd=z,
                         lfsr=z, lfdr=z, prior_weights=np.array([pi]), prior_sd=np.array([sd]),
                         loglik=np.zeros(1), target_index=np.array([-1]), scale="log1p",
                         params={"by": "perturbation", "mixture": "normal"})


def test_prior_impact_closed_forms():
    # a fraction f of genes with N(0, s^2) effects: TI = f s^2 and M_e = f G (TRADE's reading of M_e)
    out = prior_impact(_shrunk([0.9, 0.1], [0.0, 0.5], 200))
    assert out["impact"].iloc[0] == pytest.approx(0.1 * 0.25)
    assert out["effective_n_genes"].iloc[0] == pytest.approx(0.1 * 200)
    # two scales: M_e = G (sum pi s^2)^2 / sum pi s^4
    out = prior_impact(_shrunk([0.5, 0.3, 0.2, np.nan], [0.0, 0.2, 1.0, np.nan], 100))
    ti = 0.3 * 0.04 + 0.2 * 1.0
    assert out["effective_n_genes"].iloc[0] == pytest.approx(100 * ti**2 / (0.3 * 0.2**4 + 0.2))
    assert np.isnan(prior_impact(_shrunk([1.0], [0.0], 10))["effective_n_genes"].iloc[0])


def test_marker_ranks_put_the_overdispersed_gene_first():
    mean = np.linspace(1.0, 2.0, 40)
    var = mean * 0.5
    var[7] = mean[7] * 5.0
    ranks = marker_ranks(np.r_[mean, 0.0], np.r_[var, 0.0], n_bins=4)
    assert ranks[7] == 1 and np.isnan(ranks[-1]) and sorted(ranks[:-1]) == list(range(1, 41))


@pytest.fixture(scope="module")
def table(small_screen):
    return sp.difficulty(small_screen, penetrance=False)


def test_public_function_and_output(small_screen, table):
    import shrinkpert.strata.features  # noqa: F401  importing the sub-package must not rebind the name

    assert sp.difficulty is sp.strata.difficulty and callable(sp.difficulty)
    perts = sorted(set(small_screen.obs["perturbation"].astype(str)) - {"non-targeting"})
    assert sorted(table.index) == perts and table.index.name == "perturbation"
    assert set(table["stratum"].cat.categories) == set(STRATA) and "no signal" in STRATA
    assert table["difficulty_score"].between(0, 1).all()
    assert table["target_measured"].all()  # simulated targets are measured genes
    assert (table["knockdown_log2fc"] < 0).mean() > 0.5  # knockdown lowers the target
    assert table["essentiality"].eq("unknown").all()  # GENE000xx symbols are in neither Hart list
    assert table["nearest_training"].isin(perts + [""]).all()
    assert (table["nearest_training"] != table.index).all()  # leave-one-out never picks itself


def test_training_labels_restrict_the_templates(small_screen, table):
    train = list(table.index[:3])
    out = sp.difficulty(small_screen, train=train, replicability=False, penetrance=False)
    assert out["nearest_training"].isin(train + [""]).all()
    assert out["replicability_raw"].isna().all()


def test_input_errors(small_screen):
    with pytest.raises(InputError, match="impact must be"):
        sp.difficulty(small_screen, impact="median")
    with pytest.raises(InputError, match="lfsr"):
        sp.difficulty(small_screen, lfsr=1.5)
    with pytest.raises(InputError, match="n_markers"):
        sp.difficulty(small_screen, n_markers=0)
    with pytest.raises(InputError, match="escape must be"):
        sp.difficulty(small_screen, escape="yes")
    with pytest.raises(MissingKeyError, match="not in truth"):
        sp.difficulty(small_screen, train=["NOPE"], replicability=False, penetrance=False)


def test_training_cells_and_gene_mismatch(small_screen):
    from shrinkpert.errors import GeneMismatchError

    keep = small_screen.obs["perturbation"].astype(str).isin(["non-targeting", *sorted(
        set(small_screen.obs["perturbation"].astype(str)) - {"non-targeting"})[:3]])
    train = small_screen[keep.to_numpy()].copy()
    train_perts = set(train.obs["perturbation"].astype(str)) - {"non-targeting"}
    out = sp.difficulty(small_screen, train=train, replicability=False, penetrance=False)
    assert set(out["nearest_training"]) <= train_perts | {""}
    with pytest.raises(GeneMismatchError, match="different genes"):
        sp.difficulty(small_screen, train=train[:, :-1].copy(), replicability=False, penetrance=False)


def test_one_pass_replicability_and_effects_match_the_public_functions(small_screen, table):
    # difficulty() takes the effects and the split halves from one pass grouped by (label, half):
    # the replicability columns must be replicability(n_splits=1, seed=0)'s, bit for bit, and the
    # effects those of estimate_effects (pooled halves: equal up to summation order)
    from shrinkpert.strata._profiles import fit_effects_and_halves

    rep = sp.replicability(small_screen, n_splits=1, seed=0, control="non-targeting",
                           perturbations=list(table.index)).set_index("perturbation")
    np.testing.assert_array_equal(table["replicability_raw"], rep["raw_correlation"].reindex(table.index))
    np.testing.assert_array_equal(table["replicability_shrunk"], rep["shrunk_correlation"].reindex(table.index))
    effects, _ = fit_effects_and_halves(small_screen, perturbation_key="perturbation", control="non-targeting",
                                        layer=None, targets=None, min_cells=5, seed=0, n_threads=None)
    direct = sp.estimate_effects(small_screen, control="non-targeting", min_cells=5)
    assert effects.perturbations.equals(direct.perturbations)
    np.testing.assert_allclose(effects.effect, direct.effect, rtol=0, atol=1e-12)
    np.testing.assert_allclose(effects.std_error, direct.std_error, rtol=1e-12, atol=0)
