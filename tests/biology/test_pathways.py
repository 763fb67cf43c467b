"""Pathway activity: weighted mean and ulm t against statsmodels OLS; agreement of activities."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from shrinkpert.biology import pathway_activity
from shrinkpert.errors import InputError

GENES = ["STAT1", "JAK2", "IRF1", "IFNGR1", "IFNGR2", "MYC", "CD274", "SPI1", "ATF2", "BRD4"]
SETS = {"IFN": ["STAT1", "JAK2", "IRF1", "IFNGR1", "IFNGR2"], "MYC": ["MYC", "BRD4", "SPI1"],
        "tiny": ["ATF2"], "absent": ["NOTAGENE1", "NOTAGENE2"]}


def _profiles(seed=0, n=6):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(n, len(GENES))), index=[f"P{i}" for i in range(n)], columns=GENES)


def test_mean_activity_closed_form_and_weights():
    x = _profiles()
    act = pathway_activity(x, SETS, method="mean", min_size=2)
    assert list(act.sets) == ["IFN", "MYC"]  # "tiny" has 1 measured gene, "absent" none
    np.testing.assert_allclose(act.activity[:, 0], x[SETS["IFN"]].mean(axis=1), rtol=1e-14)
    signed = pathway_activity(x, {"S": {"STAT1": 2.0, "MYC": -1.0}}, method="mean", min_size=2)
    np.testing.assert_allclose(signed.activity[:, 0], (2 * x["STAT1"] - x["MYC"]) / 3, rtol=1e-14)
    long = pd.DataFrame({"set": ["S", "S"], "gene": ["STAT1", "MYC"], "weight": [2.0, -1.0]})
    np.testing.assert_array_equal(pathway_activity(x, long, method="mean", min_size=2).activity, signed.activity)
    assert act.to_frame().shape == (12, 4) and (act.set_size == [5, 3]).all()


def test_ulm_is_the_ols_slope_t_statistic():
    x = _profiles(1)
    act = pathway_activity(x, {"IFN": SETS["IFN"], "S": {"STAT1": 2.0, "MYC": -1.0, "SPI1": 0.5}}, min_size=2)
    for s, name in enumerate(act.sets):
        w = np.zeros(len(GENES))
        members = {"IFN": {g: 1.0 for g in SETS["IFN"]}, "S": {"STAT1": 2.0, "MYC": -1.0, "SPI1": 0.5}}[name]
        for g, v in members.items():
            w[GENES.index(g)] = v
        for p in range(len(x)):
            fit = sm.OLS(x.iloc[p].to_numpy(), sm.add_constant(w)).fit()
            assert act.activity[p, s] == pytest.approx(fit.tvalues[1], rel=1e-10)


def test_agreement_pearson_and_target_sign():
    truth = _profiles(2, n=3).rename(index={"P0": "STAT1", "P1": "MYC", "P2": "CD274"})
    pred = truth.copy()
    pred.loc["MYC"] *= -1.0
    t = pathway_activity(truth, SETS, method="mean", min_size=2)
    p = pathway_activity(pred, SETS, method="mean", min_size=2)
    agree = p.agreement(t, gene_sets=SETS)
    assert agree.loc["STAT1", "pearson"] == pytest.approx(1.0) and agree.loc["MYC", "pearson"] == pytest.approx(-1.0)
    # STAT1's own set (IFN) keeps its sign; MYC's own set flips; CD274 is in no set
    assert agree.loc["STAT1", "target_sign"] == 1.0 and agree.loc["MYC", "target_sign"] == 0.0
    assert np.isnan(agree.loc["CD274", "target_sign"]) and agree.loc["CD274", "n_target_sets"] == 0
    with pytest.raises(InputError, match="same perturbations and sets"):
        p.agreement(pathway_activity(pred, SETS, method="mean", min_size=4))


def test_input_errors():
    x = _profiles()
    with pytest.raises(InputError, match="method must be one of"):
        pathway_activity(x, SETS, method="gsea")
    with pytest.raises(InputError, match="No gene set has 20 or more measured genes"):
        pathway_activity(x, SETS, min_size=20)
    with pytest.raises(InputError, match="gene_sets must be a mapping or a DataFrame"):
        pathway_activity(x, ["STAT1"])
    with pytest.raises(InputError, match="needs columns set, gene"):
        pathway_activity(x, pd.DataFrame({"a": [1]}))
    with pytest.raises(InputError, match="weights must be finite"):
        pathway_activity(x, {"S": {"STAT1": np.inf, "JAK2": 1.0}})
