"""Biology metrics through evaluate: the same values as the array functions on the same deltas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import shrinkpert
from shrinkpert.biology import load_relationships, map_agreement_score, relationship_recall_score
from shrinkpert.errors import InputError


def test_relationship_recall_and_map_agreement_in_evaluate(noisy, papalexi):
    table = shrinkpert.evaluate(noisy, papalexi, metrics=["relationship_recall", "map_agreement"],
                                relationships="reactome", weights=None, n_boot=20, seed=1)
    frame = table.to_frame()
    assert set(frame["metric"]) == {"relationship_recall", "map_agreement"}
    perts = table.perturbations
    stats = {name: shrinkpert.group_statistics(data, "perturbation", normalize="log1p")
             for name, data in (("pred", noisy), ("truth", papalexi))}
    rows = {k: pd.Index(s.groups.astype(str)).get_indexer(list(perts) + ["non-targeting"]) for k, s in stats.items()}
    control = stats["truth"].mean[rows["truth"][-1]]
    pred = stats["pred"].mean[rows["pred"][:-1]] - control  # deltas from the observed (true) control
    truth = stats["truth"].mean[rows["truth"][:-1]] - control
    recall = relationship_recall_score(pred, truth, relationships=load_relationships("reactome"), targets=list(perts))
    got = frame.query("metric == 'relationship_recall'").set_index("perturbation")["value"].reindex(perts)
    np.testing.assert_allclose(got.to_numpy(), recall, rtol=1e-9, equal_nan=True)
    agree = map_agreement_score(pred, truth)
    got = frame.query("metric == 'map_agreement'").set_index("perturbation")["value"].reindex(perts)
    np.testing.assert_allclose(got.to_numpy(), agree, rtol=1e-9, equal_nan=True)
    assert "relationship_recall" in shrinkpert.METRICS and shrinkpert.METRICS["map_agreement"].kind == "biology"


def test_biology_metrics_need_their_inputs(papalexi):
    with pytest.raises(InputError, match="needs relationships="):
        shrinkpert.evaluate(papalexi, papalexi, metrics=["relationship_recall"], weights=None)
    default = shrinkpert.evaluate(papalexi, papalexi, metrics="default", weights=None, baselines=[])
    assert not {"relationship_recall", "map_agreement"} & set(default.to_frame()["metric"])
