"""DE metrics against set arithmetic, scipy and scikit-learn; DECalls construction and checks."""

from __future__ import annotations

import dataclasses
import types

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from shrinkpert import estimate_effects
from shrinkpert.errors import GeneMismatchError, InputError, MissingKeyError
from shrinkpert.metrics import (
    DECalls,
    de_direction_match,
    de_recall,
    de_spearman_lfc,
    overlap_at_n,
    pr_auc,
    precision_at_n,
    roc_auc,
)
from tests.metrics import cases


@pytest.fixture
def calls():
    truth, good, bad = cases.inputs("de", seed=5)
    return truth, good, bad


def _ranked(lfc: np.ndarray, sig: np.ndarray) -> list[int]:
    """Significant genes by |lfc| descending, ties in gene order (written without NumPy tricks)."""
    genes = [g for g in range(len(lfc)) if sig[g]]
    return sorted(genes, key=lambda g: (-abs(lfc[g]), g))


@pytest.mark.parametrize("n", [None, 1, 5, 10, 500])
@pytest.mark.parametrize("which", ["good", "bad"])
def test_overlap_and_precision_follow_the_set_definitions(calls, n, which):
    truth, good, bad = calls
    pred = good if which == "good" else bad
    ours_o, ours_p = overlap_at_n(pred, truth, n=n), precision_at_n(pred, truth, n=n)
    for r in range(truth.q.shape[0]):
        t_list = _ranked(truth.lfc[r], truth.q[r] < 0.05)
        p_list = _ranked(pred.lfc[r], pred.q[r] < 0.05)
        k = len(t_list) if n is None else min(n, len(t_list))
        assert ours_o[r] == len(set(t_list[:k]) & set(p_list[:k])) / k
        k = len(p_list) if n is None else min(n, len(p_list))
        assert ours_p[r] == len(set(p_list[:k]) & set(t_list)) / k


def test_recall_direction_spearman_definitions(calls):
    truth, _, pred = calls
    rec, dirm, rho = de_recall(pred, truth), de_direction_match(pred, truth), de_spearman_lfc(pred, truth)
    for r in range(truth.q.shape[0]):
        t = truth.q[r] < 0.05
        assert rec[r] == np.sum(t & (pred.q[r] < 0.05)) / t.sum()
        assert dirm[r] == np.mean(np.sign(pred.lfc[r][t]) == np.sign(truth.lfc[r][t]))
        np.testing.assert_allclose(rho[r], stats.spearmanr(pred.lfc[r][t], truth.lfc[r][t])[0], rtol=1e-12)


def test_aucs_match_scikit_learn_including_ties(calls):
    skm = pytest.importorskip("sklearn.metrics")
    truth, _, pred = calls
    q = np.round(pred.q, 1)  # coarse q: many ties
    for p in (pred, DECalls(lfc=pred.lfc, q=q)):
        ap, auc = pr_auc(p, truth), roc_auc(p, truth)
        for r in range(truth.q.shape[0]):
            y = truth.q[r] < 0.05
            np.testing.assert_allclose(ap[r], skm.average_precision_score(y, -p.q[r]), rtol=1e-12)
            np.testing.assert_allclose(auc[r], skm.roc_auc_score(y, -p.q[r]), rtol=1e-12)


def test_q_floor_ties_the_most_significant_genes(calls):
    truth, good, _ = calls
    floored = DECalls(lfc=good.lfc, q=np.maximum(good.q, 1e-3))
    np.testing.assert_array_equal(pr_auc(good, truth, q_floor=1e-3), pr_auc(floored, truth))
    np.testing.assert_array_equal(roc_auc(good, truth, q_floor=1e-3), roc_auc(floored, truth))
    with pytest.raises(InputError, match="q_floor must be in \\[0, 1\\)"):
        pr_auc(good, truth, q_floor=1.0)


def test_alpha_sets_the_calls(calls):
    truth, good, _ = calls
    loose = de_recall(good, truth, alpha=0.5)
    for r in range(truth.q.shape[0]):
        t = truth.q[r] < 0.5
        assert loose[r] == np.sum(t & (good.q[r] < 0.5)) / t.sum()
    with pytest.raises(InputError, match="alpha must be in \\(0, 1\\]"):
        de_recall(good, truth, alpha=0.0)


def test_undefined_cases_are_nan():
    truth = DECalls(lfc=[1.0, 2.0, 3.0], q=[0.5, 0.6, 0.9])  # nothing DE
    pred = DECalls(lfc=[1.0, 2.0, 3.0], q=[0.01, 0.6, 0.9])
    for func in (overlap_at_n, de_recall, de_direction_match, de_spearman_lfc, pr_auc, roc_auc):
        assert np.isnan(func(pred, truth)), func.__name__
    assert precision_at_n(pred, truth) == 0.0  # a predicted call, none true: precision 0
    assert np.isnan(precision_at_n(truth, pred))  # no predicted call: undefined
    all_de = DECalls(lfc=[1.0, 2.0, 3.0], q=[0.01, 0.01, 0.01])
    assert np.isnan(pr_auc(pred, all_de)) and np.isnan(roc_auc(pred, all_de))
    one_de = DECalls(lfc=[1.0, 2.0, 3.0], q=[0.01, 0.6, 0.9])
    assert np.isnan(de_spearman_lfc(pred, one_de))


def test_n_validation(calls):
    truth, good, _ = calls
    for n in (0, 2.5, -3):
        with pytest.raises(InputError, match="n must be a positive integer"):
            overlap_at_n(good, truth, n=n)


# ------------------------------------------------------------------------------------------
# DECalls
# ------------------------------------------------------------------------------------------


def test_decalls_validates_and_is_read_only():
    with pytest.raises(InputError, match="q must lie in \\[0, 1\\]"):
        DECalls(lfc=[1.0], q=[1.5])
    with pytest.raises(InputError, match="lfc has shape \\(2,\\) but q has \\(3,\\)"):
        DECalls(lfc=[1.0, 2.0], q=[0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="non-finite"):
        DECalls(lfc=[np.inf, 0.0], q=[0.1, 0.2])
    with pytest.raises(InputError, match="genes has 3 labels but the arrays have 2"):
        DECalls(lfc=[[1.0, 2.0]], q=[[0.1, 0.2]], genes=["a", "b", "c"])
    with pytest.raises(InputError, match="given for a single perturbation"):
        DECalls(lfc=[1.0, 2.0], q=[0.1, 0.2], perturbations=["p"])
    calls = DECalls(lfc=[[1.0, 2.0]], q=[[0.1, 0.2]])
    with pytest.raises(ValueError, match="read-only"):
        calls.q[0, 0] = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        calls.q = np.zeros((1, 2))  # type: ignore[misc]


def test_decalls_from_frame_round_trip_and_errors(calls):
    truth, _, _ = calls
    P, G = truth.q.shape
    perts, genes = [f"P{i:02d}" for i in range(P)], [f"g{j:02d}" for j in range(G)]
    frame = pd.DataFrame({"target": np.repeat(perts, G), "feature": np.tile(genes, P),
                          "log2_fold_change": truth.lfc.ravel(), "fdr": truth.q.ravel()})
    back = DECalls.from_frame(frame.sample(frac=1.0, random_state=0))
    np.testing.assert_array_equal(back.lfc, truth.lfc)
    np.testing.assert_array_equal(back.q, truth.q)
    assert list(back.genes) == genes and list(back.perturbations) == perts
    sub = DECalls.from_frame(frame, perturbations=["P03", "P01"], genes=genes[::-1])
    np.testing.assert_array_equal(sub.q, truth.q[[3, 1]][:, ::-1])
    with pytest.raises(MissingKeyError, match="no row for 1 \\(perturbation, gene\\) pairs"):
        DECalls.from_frame(frame.iloc[1:])
    with pytest.raises(MissingKeyError, match="Column 'fdr' is not in the DE table"):
        DECalls.from_frame(frame.drop(columns="fdr"))
    with pytest.raises(InputError, match="duplicate rows"):
        DECalls.from_frame(pd.concat([frame, frame.iloc[:1]]))
    pl = pytest.importorskip("polars")
    np.testing.assert_array_equal(DECalls.from_frame(pl.from_pandas(frame)).q, truth.q)


def test_labels_must_agree_between_sides(calls):
    truth, good, _ = calls
    P, G = truth.q.shape
    a = DECalls(truth.lfc, truth.q, genes=[f"g{j}" for j in range(G)])
    b = DECalls(good.lfc, good.q, genes=[f"g{j}" for j in range(G)][::-1])
    with pytest.raises(GeneMismatchError, match="different genes"):
        overlap_at_n(b, a)
    with pytest.raises(GeneMismatchError, match="pred has 5 genes but truth has 60"):
        overlap_at_n(DECalls(good.lfc[:, :5], good.q[:, :5]), truth)
    with pytest.raises(InputError, match="rows must be the same perturbations"):
        overlap_at_n(DECalls(good.lfc[:5], good.q[:5]), truth)
    with pytest.raises(InputError, match="must be a DECalls"):
        overlap_at_n(good.q, truth)
    # a tuple (lfc, q) is accepted
    np.testing.assert_array_equal(overlap_at_n((good.lfc, good.q), truth), overlap_at_n(good, truth))


def test_from_effects_is_welch_t_then_bh_per_perturbation(papalexi):
    effects = estimate_effects(papalexi, perturbations=["STAT1", "JAK2", "IRF7"])
    calls = DECalls.from_effects(effects)
    for k in range(3):
        p = 2 * stats.t.sf(np.abs(effects.effect[k] / effects.std_error[k]), effects.df[k])
        np.testing.assert_allclose(calls.q[k], stats.false_discovery_control(p), rtol=1e-12)
    np.testing.assert_array_equal(calls.lfc, effects.effect)
    assert list(calls.genes) == list(effects.genes)
    # STAT1 knockdown: its own gene is among the most significant calls
    stat1 = list(effects.genes).index("STAT1")
    assert calls.q[0, stat1] < 1e-10


def test_from_shrunk_uses_posterior_mean_and_lfsr():
    shrunk = types.SimpleNamespace(posterior_mean=np.array([0.5, -0.1]), lfsr=np.array([0.01, 0.4]))
    calls = DECalls.from_shrunk(shrunk)
    np.testing.assert_array_equal(calls.lfc, [0.5, -0.1])
    np.testing.assert_array_equal(calls.significant(0.05), [True, False])
    with pytest.raises(InputError, match="has no attribute 'lfsr'"):
        DECalls.from_shrunk(types.SimpleNamespace(posterior_mean=np.zeros(2)))
