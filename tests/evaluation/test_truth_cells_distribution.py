"""The distribution metrics of ``evaluate`` draw their true cells as ``truth_cells`` says.

* ``"perturbed"``: exactly the values of ``truth_cells="all"`` on the truth with the escapers'
  cells deleted;
* ``"weighted"`` with every weight 1: exactly ``"all"``; with weights 0 and 1: exactly the truth
  with the weight-0 cells deleted; with posterior weights: the weighted energy distance of the
  drawn cells (checked with a double loop over scipy distances).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from shrinkpert._validate import validate
from shrinkpert.data.simulate import simulate
from shrinkpert.errors import ShrinkpertWarning
from shrinkpert.evaluation import evaluate
from shrinkpert.evaluation.cells import sample_plan
from shrinkpert.ontarget import classify_escape, escaper_cells, perturbed_weights

METRICS = ["energy_distance", "mmd"]
COLUMNS = ["value", "baseline_control", "baseline_technical_duplicate"]


@pytest.fixture(scope="module")
def data():
    """A screen (1,200 cells x 80 genes, 5 perturbations, 30% escape), its escape result, a noisy prediction."""
    screen = simulate(n_cells=1200, n_genes=80, n_perturbations=5, seed=3, mean_expression=0.8, effect_sd=0.9,
                      n_affected_genes=20, control_fraction=0.25, escape_rate=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShrinkpertWarning)
        escape = classify_escape(screen)
    pred = screen.copy()
    pred.X = np.random.default_rng(8).poisson(screen.X.toarray() * 1.1).astype(np.float64)
    return screen, escape, pred


def _values(pred, truth, **kwargs):
    table = evaluate(pred, truth, metrics=METRICS, weights=None, cells_per_perturbation=40, calibrate=False,
                     seed=3, **kwargs)
    frame = table.to_frame().set_index(["metric", "perturbation"]).sort_index()
    return frame[COLUMNS]


def test_perturbed_equals_deleting_the_escapers(data):
    screen, escape, pred = data
    out = escaper_cells(escape)
    assert out.sum() > 50  # there are escapers to leave out
    got = _values(pred, screen, truth_cells="perturbed", escape=escape)
    want = _values(pred, screen[~out].copy())
    assert np.isfinite(got.to_numpy()).all()
    np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())
    assert not np.array_equal(got.to_numpy(), _values(pred, screen).to_numpy())


def test_weighted_with_unit_weights_equals_all(data):
    screen, escape, pred = data
    ones = dataclasses.replace(escape, p_perturbed=np.where(np.isnan(escape.p_perturbed), np.nan, 1.0))
    got = _values(pred, screen, truth_cells="weighted", escape=ones)
    np.testing.assert_array_equal(got.to_numpy(), _values(pred, screen).to_numpy())


def test_weighted_with_zero_weights_equals_deletion(data):
    screen, escape, pred = data
    zero_one = dataclasses.replace(escape, p_perturbed=np.where(
        np.isnan(escape.p_perturbed), np.nan, (escape.p_perturbed >= 0.5).astype(float)))
    w = perturbed_weights(zero_one)
    assert set(np.unique(w)) == {0.0, 1.0}
    got = _values(pred, screen, truth_cells="weighted", escape=zero_one)
    np.testing.assert_array_equal(got.to_numpy(), _values(pred, screen[w > 0].copy()).to_numpy())


def test_weighted_is_the_weighted_energy_distance_of_the_drawn_cells(data):
    screen, escape, pred = data
    w = perturbed_weights(escape)
    got = _values(pred, screen, truth_cells="weighted", escape=escape).loc["energy_distance"]
    plan = sample_plan(validate(screen, side="truth"), validate(pred, side="pred", require_control=False),
                       got.index, 40, seed=3, truth_weights=w)

    def log1p(adata, rows):
        x = np.asarray(adata.X[rows].toarray() if hasattr(adata.X, "toarray") else adata.X[rows], dtype=np.float64)
        return np.log1p(x * 1e4 / x.sum(axis=1, keepdims=True))

    for pert in got.index:
        rows = plan[pert]
        assert (w[rows["truth"]] > 0).all() and (w[rows["technical_duplicate"]] > 0).all()
        y, b = log1p(screen, rows["truth"]), w[rows["truth"]] / w[rows["truth"]].sum()
        for column, x, a in (("value", log1p(pred, rows["model"]), None),
                             ("baseline_technical_duplicate", log1p(screen, rows["technical_duplicate"]),
                              w[rows["technical_duplicate"]])):
            a = np.full(len(x), 1 / len(x)) if a is None else a / a.sum()
            want = 2 * a @ cdist(x, y) @ b - a @ cdist(x, x) @ a - b @ cdist(y, y) @ b
            # Gram-trick distances vs scipy's direct ones: 1e-9 relative
            assert got.loc[pert, column] == pytest.approx(want, rel=1e-9)
