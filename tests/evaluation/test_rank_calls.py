"""evaluate(de_test="wilcoxon"): DE calls from scipy.stats.mannwhitneyu + BH per perturbation.

Tolerances: q to 1e-12 relative (the engine's p-values equal scipy's asymptotic ones to rounding;
BH is the same step-up), metric values to 1e-12 (the same metric on the same calls).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

import shrinkpert
from shrinkpert.cli import build_parser
from shrinkpert.errors import InputError
from shrinkpert.evaluation import EvaluationConfig
from shrinkpert.evaluation.rank_calls import rank_calls
from shrinkpert.evaluation.registry import METRICS
from shrinkpert.evaluation.steps import read_inputs, summarise
from shrinkpert.metrics import DECalls

CONTROL = "non-targeting"
TARGET_SUM = 1e4


def _counts(seed: int, effects: dict[str, list[int]]) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    labels = np.array([CONTROL] * 50 + ["A"] * 40 + ["B"] * 35 + ["C"] * 30)
    X = rng.poisson(rng.gamma(0.8, 2.0, size=(len(labels), 16))).astype(np.float32)
    for name, genes in effects.items():  # effects of several strengths, up and down
        for k, j in enumerate(genes):
            rows = labels == name
            X[rows, j] = rng.poisson(4.0 + 2 * k, size=rows.sum()) if k % 2 == 0 else 0
    X[:, 0] = 0  # an all-zero gene
    X[:, 1] = 2  # a constant gene: one tie group
    obs = pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))])
    return ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(X.shape[1])]))


def _scipy_calls(pred: ad.AnnData, truth: ad.AnnData) -> tuple[np.ndarray, np.ndarray]:
    """BH-adjusted mannwhitneyu p of the truth's and pred's perturbations vs the truth's controls."""

    def lognorm(a):
        X = a.X.toarray().astype(np.float64)
        return np.log1p(X / (X.sum(axis=1, keepdims=True) / TARGET_SUM))

    yt, yp = lognorm(truth), lognorm(pred)
    lt, lp = truth.obs["perturbation"].to_numpy(), pred.obs["perturbation"].to_numpy()
    control = yt[lt == CONTROL]
    out = []
    for y, labels in ((yt, lt), (yp, lp)):
        p = np.array([[stats.mannwhitneyu(y[labels == name, j], control[:, j], method="asymptotic").pvalue
                       for j in range(y.shape[1])] for name in ("A", "B", "C")])
        out.append(np.stack([stats.false_discovery_control(row, method="bh") for row in p]))
    return out[0], out[1]


@pytest.fixture(scope="module")
def pair():
    truth = _counts(1, {"A": [2, 3, 4, 5, 6, 7], "B": [3, 4, 5], "C": [8, 9]})
    pred = _counts(2, {"A": [2, 3, 9], "B": [3, 10, 11, 12], "C": [8]})
    return pred, truth


def test_calls_equal_scipy_mannwhitneyu_and_bh(pair):
    pred, truth = pair
    config = EvaluationConfig(de_test="wilcoxon", target_sum=TARGET_SUM)
    inputs = read_inputs(pred, truth, perturbation_key="perturbation", control=CONTROL, exclude=None, config=config)
    summaries = summarise(inputs, config=config, seed=0)
    calls = rank_calls(inputs, summaries, config)
    q_truth, q_pred = _scipy_calls(pred, truth)
    np.testing.assert_allclose(calls.truth.q, q_truth, rtol=1e-12, atol=0)
    np.testing.assert_allclose(calls.models["model"].q, q_pred, rtol=1e-12, atol=0)
    assert (calls.truth.q[0, 2] < 0.05) and (calls.truth.q[:, 0] == 1.0).all()
    # the fold changes are the Welch path's: log1p pseudobulk means minus the true control's
    np.testing.assert_array_equal(calls.truth.lfc, summaries.truth.mean - summaries.truth.control_mean)


def test_evaluate_scores_the_wilcoxon_calls(pair):
    pred, truth = pair
    names = ["de_sig_genes_recall", "de_direction_match", "pr_auc", "precision_at_N"]
    table = shrinkpert.evaluate(pred, truth, metrics=names, weights=None, n_boot=20, de_test="wilcoxon",
                                target_sum=TARGET_SUM)
    assert table.params["de_test"].startswith("Wilcoxon rank-sum")
    config = EvaluationConfig(target_sum=TARGET_SUM)
    inputs = read_inputs(pred, truth, perturbation_key="perturbation", control=CONTROL, exclude=None, config=config)
    s = summarise(inputs, config=config, seed=0)
    q_truth, q_pred = _scipy_calls(pred, truth)
    ref = DECalls(lfc=s.truth.mean - s.truth.control_mean, q=q_truth)
    mine = DECalls(lfc=s.preds["model"][0] - s.truth.control_mean, q=q_pred)
    frame = table.to_frame()
    values = []
    for name in names:
        rows = frame[frame.metric == name].set_index("perturbation").loc[["A", "B", "C"]]
        expect = np.asarray(METRICS[name](mine, ref, alpha=0.05), dtype=float)
        np.testing.assert_allclose(rows["value"], expect, rtol=1e-12, equal_nan=True, err_msg=name)
        values.append(expect)
        baselines = [c for c in frame.columns if c.startswith("baseline_")]
        assert baselines and rows[baselines].isna().all().all()  # a baseline has no cells to rank
    values = np.concatenate(values)
    assert np.isfinite(values).sum() >= 8 and len(np.unique(values[np.isfinite(values)])) >= 4  # not trivial


def test_options_and_refusals(pair):
    pred, truth = pair
    assert EvaluationConfig().de_test == "welch"
    cli = build_parser().parse_args(["evaluate", "--pred", "p.h5ad", "--truth", "t.h5ad", "--out", "o"])
    assert cli.de_test == EvaluationConfig().de_test
    with pytest.raises(InputError, match="de_test must be one of \\('welch', 'wilcoxon'\\), got 'ranks'"):
        EvaluationConfig(de_test="ranks")
    with pytest.raises(InputError, match="de_test='wilcoxon' gives p-values, not the standard errors ash needs"):
        EvaluationConfig(de_test="wilcoxon", de_calls="lfsr")
    shuffled = pred[:, pred.var_names[::-1]].copy()
    with pytest.raises(NotImplementedError, match="needs pred's genes in the truth's order"):
        shrinkpert.evaluate(shuffled, truth, metrics=["pr_auc"], weights=None, n_boot=20, de_test="wilcoxon")
