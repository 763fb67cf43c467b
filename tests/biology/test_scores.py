"""Registry functions: consistency with the result-level API, weights, order, specs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.biology import (METRIC_SPECS, map_agreement_score, pathway_activity_score, relationship_recall,
                                relationship_recall_score)
from shrinkpert.errors import InputError
from shrinkpert.metrics.registry import MetricSpec

NAMES = [f"G{i}" for i in range(30)]
REL = pd.DataFrame({"gene_a": ["G0", "G0", "G2", "G4", "G6", "G8"], "gene_b": ["G1", "G3", "G3", "G5", "G7", "G29"]})


def _data(seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(30, 20))
    for k in range(0, 8, 2):
        truth[k + 1] = truth[k] + 0.3 * rng.normal(size=20)
    return truth, truth + 0.5 * rng.normal(size=truth.shape)


def test_pair_weighted_mean_of_per_perturbation_recall_is_the_map_recall():
    truth, pred = _data()
    per = relationship_recall_score(pred, truth, relationships=REL, targets=NAMES)
    res = relationship_recall(pd.DataFrame(pred, index=NAMES), REL, align="none", n_permutations=10)
    n = res.per_perturbation["n_partners"].to_numpy()
    ok = n > 0
    assert np.average(per[ok], weights=n[ok]) == pytest.approx(res.recall, abs=1e-14)
    np.testing.assert_allclose(per, res.per_perturbation["recall"].to_numpy(), equal_nan=True, atol=1e-15)
    assert np.isnan(per[9:29]).all() and np.isfinite(per[[*range(9), 29]]).all()


def test_weights_uniform_zero_and_per_perturbation():
    truth, pred = _data(1)
    kw = dict(relationships=REL, targets=NAMES)
    base = relationship_recall_score(pred, truth, **kw)
    np.testing.assert_allclose(relationship_recall_score(pred, truth, weights=np.full(20, 3.0), **kw), base)
    w = np.ones(20)
    w[:5] = 0.0
    np.testing.assert_allclose(relationship_recall_score(pred, truth, weights=w, **kw),
                               relationship_recall_score(pred[:, 5:], truth[:, 5:], **kw))
    np.testing.assert_allclose(map_agreement_score(pred, truth, weights=w),
                               map_agreement_score(pred[:, 5:], truth[:, 5:]))
    np.testing.assert_allclose(map_agreement_score(pred, truth, weights=np.tile(w, (30, 1))),
                               map_agreement_score(pred, truth, weights=w))
    with pytest.raises(InputError, match="weights must have shape"):
        map_agreement_score(pred, truth, weights=np.ones(3))
    with pytest.raises(InputError, match="finite and non-negative"):
        map_agreement_score(pred, truth, weights=-np.ones(20))


def test_perturbation_order_carries_through():
    truth, pred = _data(2)
    order = np.random.default_rng(0).permutation(30)
    names = np.array(NAMES)
    a = relationship_recall_score(pred, truth, relationships=REL, targets=NAMES)
    b = relationship_recall_score(pred[order], truth[order], relationships=REL, targets=names[order])
    np.testing.assert_allclose(b, a[order], equal_nan=True, rtol=1e-12)
    np.testing.assert_allclose(map_agreement_score(pred[order], truth[order]), map_agreement_score(pred, truth)[order],
                               rtol=1e-12)


def test_specs_call_the_functions_and_reject_bad_targets():
    truth, pred = _data(3)
    specs = {s.name: s for s in METRIC_SPECS}
    assert set(specs) == {"relationship_recall", "map_agreement", "pathway_activity"}
    assert all(isinstance(s, MetricSpec) and s.weighted and s.needs == "deltas" and s.best == 1.0
               for s in specs.values() if s.name != "pathway_activity")
    np.testing.assert_array_equal(specs["relationship_recall"](pred, truth, relationships=REL, targets=NAMES),
                                  relationship_recall_score(pred, truth, relationships=REL, targets=NAMES))
    assert (specs["map_agreement"](truth, truth) == 1.0).all()
    with pytest.raises(InputError, match="targets has 3 entries but pred has 30 rows"):
        relationship_recall_score(pred, truth, relationships=REL, targets=NAMES[:3])


def test_pathway_activity_score_against_the_closed_form():
    rng = np.random.default_rng(5)
    genes = [f"g{i}" for i in range(12)]
    sets = {"A": genes[:4], "B": genes[3:8], "C": genes[8:]}
    truth = rng.normal(size=(5, 12))
    pred = truth + rng.normal(size=truth.shape)
    got = pathway_activity_score(pred, truth, gene_sets=sets, genes=genes, method="mean", min_size=2)
    mean = lambda x: np.stack([x[:, :4].mean(1), x[:, 3:8].mean(1), x[:, 8:].mean(1)], axis=1)  # noqa: E731
    want = [np.corrcoef(a, b)[0, 1] for a, b in zip(mean(pred), mean(truth))]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    spec = {s.name: s for s in METRIC_SPECS}["pathway_activity"]
    assert not spec.weighted
    np.testing.assert_allclose(spec(truth, truth, gene_sets=sets, genes=genes, min_size=2), 1.0, atol=1e-12)
    with pytest.raises(InputError, match="needs >= 2 gene sets"):
        pathway_activity_score(pred, truth, gene_sets={"A": genes[:4]}, genes=genes, min_size=2)
    with pytest.raises(InputError, match="genes has 3 entries"):
        pathway_activity_score(pred, truth, gene_sets=sets, genes=genes[:3])
