"""evaluate's DE metrics with pruned DE calls equal those from the full, unpruned calls.

The reference recomputes every side's calls the way ``de_calls`` did before pruning (the full
t tail for every gene, BH by one argsort per row) and scores them with the public metric
functions; ``score`` must give the same values with the calls-only metrics (both sides pruned)
and with the ranking metrics added (the prediction then unpruned).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import special

from shrinkpert.evaluation import EvaluationConfig, make_sides, read_inputs, score, summarise
from shrinkpert.evaluation.steps import _pruned_sides
from shrinkpert.metrics import DECalls
from shrinkpert.evaluation.registry import METRICS as REGISTRY
from tests.conftest import make_counts

CALLS_ONLY = ["overlap_at_N", "overlap_at_50", "precision_at_N", "de_sig_genes_recall", "de_direction_match",
              "de_spearman_lfc_sig"]
RANKING = ["pr_auc", "roc_auc"]


def _full_calls(mean, var, n, truth):
    """The unpruned calls: Welch with the full t tail, then BH by one argsort per row."""
    lfc, test = truth.versus_control(mean, var, n)
    positive = test.std_error > 0
    t = np.where(positive, lfc / np.where(positive, test.std_error, 1.0), 0.0)
    p = np.where(positive, 2.0 * special.stdtr(test.df, -np.abs(t)), 1.0)
    m = p.shape[1]
    order = np.argsort(p, axis=1)
    ranked = np.take_along_axis(p, order, axis=1) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=1)[:, ::-1]
    q = np.empty_like(p)
    np.put_along_axis(q, order, np.minimum(ranked, 1.0), axis=1)
    return DECalls(lfc=lfc, q=q)


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(5)
    truth = make_counts(rng, n_cells=700, n_genes=120, n_groups=8)
    truth.X[5, 0] = 1
    truth.X = sp.csr_matrix(truth.X)
    pred = truth.copy()
    pred.X = truth.X.copy()
    pred.X.data = np.random.default_rng(3).poisson(pred.X.data * 1.3).astype(pred.X.dtype)
    pred.X.eliminate_zeros()
    config = EvaluationConfig(n_boot=10)
    inputs = read_inputs(pred, truth, perturbation_key="perturbation", control="non-targeting", exclude=None,
                         config=config)
    summaries = summarise(inputs, config=config, seed=1)
    sides = make_sides(summaries, baselines="default", config=config, seed=1)
    out = {}
    for name, metrics in (("calls", CALLS_ONLY), ("ranking", CALLS_ONLY + RANKING)):
        out[name] = score(inputs, summaries, sides, metrics=metrics, weights=None, references=["control"],
                          config=config, seed=1).values
    return summaries, sides, config, out


def test_pruning_is_chosen_from_what_the_metrics_read(scored):
    config = scored[2]
    jobs = lambda names: [(REGISTRY[n], "none", "uniform") for n in names]  # noqa: E731
    assert _pruned_sides(jobs(CALLS_ONLY), config) == {"pred": config.alpha, "truth": config.alpha}
    assert _pruned_sides(jobs(CALLS_ONLY + RANKING), config) == {"pred": None, "truth": config.alpha}


def test_scores_equal_those_of_unpruned_calls(scored):
    summaries, sides, config, out = scored
    truth = summaries.truth
    true_calls = {"full": _full_calls(truth.mean, truth.var, truth.n_cells, truth),
                  "half_a": _full_calls(truth.half_a_mean, truth.half_a_var, truth.half_a_n, truth)}
    assert (true_calls["full"].q < config.alpha).any() and not (true_calls["full"].q < config.alpha).all()
    for name, side in sides.items():
        pred = _full_calls(side.mean, side.var, side.n, truth)
        for metric in CALLS_ONLY + RANKING:
            expected = np.asarray(REGISTRY[metric](pred, true_calls[side.truth], alpha=config.alpha))
            if metric in CALLS_ONLY:
                np.testing.assert_array_equal(out["calls"][(metric, "none", "uniform")][name], expected)
            np.testing.assert_array_equal(out["ranking"][(metric, "none", "uniform")][name], expected)
