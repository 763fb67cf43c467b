"""Split-aware evaluate: references, default weights, training data and shrunken truth.

Each check is against an independent computation: group means from ``group_statistics`` and
NumPy, the public ``gene_weights``/``shrink_effects``/``ash``, or an identity that must hold
(a population reference built from the truth's own control cells *is* the control reference).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shrinkpert
from shrinkpert.errors import LeakageError
from shrinkpert.metrics import METRICS, mse_delta
from tests.conftest import make_counts

DELTA = ["mse_delta", "pearson_delta"]


def _resampled(adata, seed):
    """A 'model': every count resampled (Poisson), seeded; no cell left empty."""
    X = adata.X.toarray()
    X = np.random.default_rng(seed).poisson(X).astype(X.dtype)
    X[X.sum(axis=1) == 0, 0] = 1
    out = adata.copy()
    out.X = sp.csr_matrix(X)
    return out


@pytest.fixture(scope="module")
def screen():
    """Cells of 8 perturbations + control, split into truth (4 perturbations) and train (the rest)."""
    adata = make_counts(np.random.default_rng(5), n_cells=900, n_genes=25, n_groups=9)
    adata.X[5, 0] = 1
    adata.X = sp.csr_matrix(adata.X)
    labels = adata.obs["perturbation"].astype(str)
    test = labels.isin(["non-targeting", "G1", "G2", "G3", "G4"]).to_numpy()
    controls = np.flatnonzero(labels == "non-targeting")
    train_mask = ~test
    train_mask[controls[::2]] = True  # half of the controls go to train (disjoint cells)
    test[controls[::2]] = False
    return adata[test].copy(), adata[train_mask].copy()


def test_defaults_are_control_only_and_leakage_is_explicit(screen):
    truth, _ = screen
    table = shrinkpert.evaluate(truth, truth, metrics=DELTA, n_boot=20)
    assert set(table.to_frame()["reference"]) == {"control"} and table.params["leakage"] is False
    assert set(table.to_frame()["weighting"]) == {"uniform", "shrunken"}
    with pytest.raises(LeakageError, match="'perturbed_centroid' is the centroid of the scored perturbations"):
        shrinkpert.evaluate(truth, truth, metrics=DELTA, references=["perturbed_centroid"], weights=None)
    leaky = shrinkpert.evaluate(truth, truth, metrics=DELTA, references=["control", "perturbed_centroid"],
                                allow_leakage=True, weights=None, n_boot=20)
    flags = leaky.summary()["flags"]
    assert all("leakage" in f for (m, w, r), f in flags.items() if r == "perturbed_centroid")
    assert not any("leakage" in f for (m, w, r), f in flags.items() if r == "control")


def test_auto_weights_are_the_public_shrunken_weights(screen):
    truth, _ = screen
    table = shrinkpert.evaluate(truth, truth, metrics=["mse_delta"], n_boot=20)
    effects = shrinkpert.estimate_effects(truth, min_cells=2)
    weights = shrinkpert.gene_weights(shrinkpert.shrink_effects(effects), method="shrunken")
    pred = _resampled(truth, 8)  # a noisy prediction, so that weights matter
    scored = shrinkpert.evaluate(pred, truth, metrics=["mse_delta"], n_boot=20).to_frame()
    got = scored.query("weighting == 'shrunken'").set_index("perturbation")["value"]
    stats_p = shrinkpert.group_statistics(pred, "perturbation", normalize="log1p")
    stats_t = shrinkpert.group_statistics(truth, "perturbation", normalize="log1p")
    rows = pd.Index(stats_t.groups.astype(str)).get_indexer(weights.perturbations)
    expected = mse_delta(stats_p.mean[rows], stats_t.mean[rows], weights=np.asarray(weights.values))
    np.testing.assert_allclose(got.loc[weights.perturbations].to_numpy(), expected, rtol=1e-10)
    assert table.params["weightings"] == ["uniform", "shrunken"]


def test_train_centroid_is_the_mean_of_training_means(screen):
    truth, train = screen
    table = shrinkpert.evaluate(truth, truth, train=train, metrics=["pearson_delta"], weights=None, n_boot=20)
    assert set(table.to_frame()["reference"]) == {"control", "train_centroid"}
    assert "baseline_train_mean" in table.to_frame().columns  # no train_linear: labels are not gene names
    assert table.params["baselines"]["train_mean"] and table.params["train_perturbations"] == 4
    pred = _resampled(truth, 2)
    got = shrinkpert.evaluate(pred, truth, train=train, metrics=["pearson_delta"], weights=None, n_boot=20)
    got = got.to_frame().query("reference == 'train_centroid'").set_index("perturbation")["value"]
    tr = shrinkpert.group_statistics(train, "perturbation", normalize="log1p", exclude=["non-targeting"])
    centroid = tr.mean.mean(axis=0)
    sp_, st = (shrinkpert.group_statistics(x, "perturbation", normalize="log1p") for x in (pred, truth))
    for pert in got.index:
        i = list(st.groups.astype(str)).index(pert)
        expected = np.corrcoef(sp_.mean[i] - centroid, st.mean[i] - centroid)[0, 1]
        assert got[pert] == pytest.approx(expected, rel=1e-10)


def test_train_sharing_perturbations_or_cells_is_refused(screen):
    truth, train = screen
    renamed = truth.copy()
    renamed.obs_names = [f"other_{name}" for name in truth.obs_names]  # other cells, the same perturbations
    with pytest.raises(LeakageError, match=r"4 perturbations are in both the training and the test set"):
        shrinkpert.evaluate(truth, truth, train=renamed, metrics=DELTA, weights=None)
    overlap = shrinkpert.evaluate  # the same cells under other labels
    moved = truth[truth.obs["perturbation"] == "non-targeting"].copy()
    moved.obs["perturbation"] = "G99"
    with pytest.raises(LeakageError, match="cells are in both the training and the test set"):
        overlap(truth, truth, train=moved, metrics=DELTA, weights=None)


def test_a_population_reference_of_the_control_cells_is_the_control_reference(screen):
    truth, _ = screen
    controls = truth[truth.obs["perturbation"] == "non-targeting"].copy()
    reference = shrinkpert.build_population_reference(controls, name="own controls")
    table = shrinkpert.evaluate(truth, truth, metrics=DELTA, n_boot=20, population=reference)
    frame = table.to_frame()
    assert set(frame["reference"]) == {"control", "population"}
    assert set(frame["weighting"]) == {"uniform", "shrunken", "population"}
    a = frame.query("reference == 'control' and weighting == 'uniform'").reset_index(drop=True)
    b = frame.query("reference == 'population' and weighting == 'uniform'").reset_index(drop=True)
    np.testing.assert_allclose(b["value"], a["value"], rtol=1e-9, atol=1e-12)


def test_shrunk_truth_scores_against_posterior_means(screen):
    truth, _ = screen
    table = shrinkpert.evaluate(truth, truth, metrics=["mse_delta"], weights=None, baselines=[],
                                truth_effects="shrunk")
    got = table.to_frame().set_index("perturbation")["value"]
    stats = shrinkpert.group_statistics(truth, "perturbation", normalize="log1p")
    labels = list(stats.groups.astype(str))
    c = labels.index("non-targeting")
    n_c = stats.n_cells[c]
    for pert in got.index:
        i = labels.index(pert)
        n = stats.n_cells[i]
        v_p, v_c = np.nan_to_num(stats.var[i]) / n, np.nan_to_num(stats.var[c]) / n_c
        se = np.sqrt(np.maximum(v_p, v_c * n_c / n) + v_c)  # control variance floor
        fit = shrinkpert.ash(stats.mean[i] - stats.mean[c], se, tol=1e-5, max_iter=200)  # evaluate's settings
        raw = stats.mean[i] - stats.mean[c]
        expected = np.mean((raw - fit.posterior_mean) ** 2)  # the raw truth scored against its shrunken self
        # ash on one vector vs the batched fit: the same EM/mix-SQP to tol=1e-5 on the objective
        assert got[pert] == pytest.approx(expected, rel=1e-3, abs=1e-10)
    assert table.params["truth_effects"] == "shrunk"
    assert METRICS["mse_delta"].best == 0.0


def test_the_summary_carries_the_analytic_noise_ceiling(screen):
    from shrinkpert.calibration.ceiling import noise_ceiling

    truth, _ = screen
    summary = shrinkpert.evaluate(truth, truth, metrics=["pearson_delta", "mse", "spearman_delta"], weights=None,
                                  n_boot=20).summary()
    stats = shrinkpert.group_statistics(truth, "perturbation", normalize="log1p")
    labels = list(stats.groups.astype(str))
    c = labels.index("non-targeting")
    rows = [i for i in range(len(labels)) if i != c]
    for metric, ref in (("pearson_delta", "control"), ("mse", "none")):
        fit = noise_ceiling(stats.mean[rows], stats.var[rows], stats.n_cells[rows], stats.mean[c], stats.var[c],
                            int(stats.n_cells[c]), metric, method="closed_form")
        assert summary.loc[(metric, "uniform", ref), "ceiling"] == pytest.approx(np.nanmean(fit.expected), rel=1e-10)
    assert np.isnan(summary.loc[("spearman_delta", "uniform", "control"), "ceiling"])  # no closed form
