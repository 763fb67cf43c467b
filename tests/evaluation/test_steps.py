"""evaluate's named steps, one at a time, and several models against one truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shrinkpert
from shrinkpert.baselines import make_baselines
from shrinkpert.errors import InputError
from shrinkpert.evaluation import (
    EvaluationConfig,
    make_sides,
    read_inputs,
    score,
    summarise,
    tabulate,
)
from tests.conftest import make_counts

METRICS = ["mse", "pearson_delta", "discrimination_score_l1", "overlap_at_N"]


@pytest.fixture(scope="module")
def pair():
    truth = make_counts(np.random.default_rng(11), n_cells=400, n_genes=30, n_groups=6)
    truth.X[5, 0] = 1  # no empty cell
    truth.X = sp.csr_matrix(truth.X)
    pred = truth.copy()
    pred.X = truth.X.copy()
    pred.X.data = np.random.default_rng(3).poisson(pred.X.data).astype(pred.X.dtype)
    pred.X.eliminate_zeros()
    pred.X[5, 0] = 1
    return pred, truth


def test_the_steps_compose_to_evaluate(pair):
    pred, truth = pair
    config = EvaluationConfig(n_boot=30)
    inputs = read_inputs(pred, truth, perturbation_key="perturbation", control="non-targeting", exclude=None,
                         config=config)
    assert inputs.models == ("model",) and inputs.scale == "counts" and len(inputs.perturbations) == 5
    summaries = summarise(inputs, config=config, seed=4)
    mean, var, n = summaries.preds["model"]
    stats = shrinkpert.group_statistics(pred, "perturbation", normalize="log1p")
    rows = pd.Index(stats.groups.astype(str)).get_indexer(inputs.perturbations)
    np.testing.assert_allclose(mean, stats.mean[rows], rtol=1e-12)
    np.testing.assert_array_equal(n, stats.n_cells[rows])
    sides = make_sides(summaries, baselines="default", config=config, seed=4)
    assert list(sides)[0] == "model" and sides["technical_duplicate"].truth == "half_a"
    # each baseline is built when read: its role and truth are known before, and a rebuild is the same
    for name in sides:
        one, again = sides[name], sides[name]
        assert (sides.kind(name), sides.truth(name)) == (one.kind, one.truth)
        assert np.array_equal(one.mean, again.mean) and np.array_equal(one.var, again.var, equal_nan=True)
    baselines = make_baselines(summaries.truth, seed=4)
    assert [name for name in sides if name != "model"] == list(baselines)
    assert all(np.array_equal(sides[name].mean, b.mean) for name, b in baselines.items())
    scores = score(inputs, summaries, sides, metrics=METRICS, weights=None, references=["control"], config=config,
                   seed=4)
    assert set(scores.values[("mse", "none", "uniform")]) == set(sides)
    table = tabulate(scores, config=config, seed=4, params={"genes": inputs.genes, "record": {}})
    direct = shrinkpert.evaluate(pred, truth, metrics=METRICS, references=["control"], weights=None, n_boot=30,
                                 seed=4)
    pd.testing.assert_frame_equal(table.summary(), direct.summary())


def test_several_models_share_one_truth_and_equal_single_runs(pair):
    pred, truth = pair
    both = shrinkpert.evaluate({"noisy": pred, "oracle": truth}, truth, metrics=METRICS, n_boot=30, seed=2)
    frame, summary = both.to_frame(), both.summary()
    assert frame.columns[0] == "model" and set(frame["model"]) == {"noisy", "oracle"}
    assert summary.index.names == ["model", "metric", "weighting", "reference"]
    for name, data in (("noisy", pred), ("oracle", truth)):
        alone = shrinkpert.evaluate(data, truth, metrics=METRICS, n_boot=30, seed=2).summary()
        pd.testing.assert_frame_equal(summary.loc[name], alone)
    assert both.params["models"] == ["noisy", "oracle"]


def test_model_names_are_checked(pair):
    pred, truth = pair
    with pytest.raises(InputError, match="empty mapping"):
        shrinkpert.evaluate({}, truth)
    with pytest.raises(InputError, match="has the name of a model"):
        shrinkpert.evaluate({"mean": pred}, truth, metrics=["mse"], n_boot=10)
    bad = pred[pred.obs["perturbation"] != "G1"].copy()
    with pytest.raises(InputError, match=r"pred 'b' and truth have different perturbations: missing from pred 'b'"):
        shrinkpert.evaluate({"a": pred, "b": bad}, truth, metrics=["mse"], n_boot=10)


def test_stratified_groups_perturbations_by_stratum(pair):
    pred, truth = pair
    table = shrinkpert.evaluate(pred, truth, metrics=["mse"], weights=None, n_boot=20)
    strata = pd.DataFrame({"stratum": ["easy", "easy", "hard", "hard", "no signal"]}, index=table.perturbations)
    out = table.stratified(strata, n_boot=50)
    frame = table.to_frame().set_index("perturbation")
    easy = frame.loc[strata.index[strata["stratum"] == "easy"], "value"].mean()
    row = out.reset_index()
    got = row.loc[(row["stratum"] == "easy") & (row["metric"] == "mse") & (row["column"] == "value"), "mean"]
    assert got.to_numpy() == pytest.approx([easy], rel=1e-12)
