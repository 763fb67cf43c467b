"""recommend_metrics on a hand-built MetricTable whose per-perturbation values set each check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.errors import InputError
from shrinkpert.evaluation import MetricTable
from shrinkpert.strata import decision_record, recommend_metrics

P = 20
rng = np.random.default_rng(0)


def _rows(metric, *, q, n, adv=None, reference="control", weighting="uniform", drf=None, valid=P):
    """Long rows of one metric (higher is better, best 1): positive q, negative n, adversarial adv."""
    q, n = np.broadcast_to(q, P).astype(float), np.broadcast_to(n, P).astype(float)
    adv = n.copy() if adv is None else np.broadcast_to(adv, P).astype(float)
    drf = np.clip((q - n) / (1 - n + 1e-6), -1, 1) if drf is None else np.broadcast_to(drf, P).astype(float)
    value = q.copy()
    value[valid:] = np.nan
    return pd.DataFrame({"perturbation": [f"p{i}" for i in range(P)], "metric": metric, "weighting": weighting,
                         "reference": reference, "value": value, "baseline_mean": n,
                         "baseline_technical_duplicate": q, "baseline_shuffled": adv, "calibrated": 0.5,
                         "drf": drf})


def _summary_row(frame):
    q, n, adv = (frame[c].to_numpy() for c in ("baseline_technical_duplicate", "baseline_mean", "baseline_shuffled"))
    flags = []
    if adv.mean() > n.mean():
        flags.append("adversarial_beats_negative:shuffled")
    if adv.mean() > q.mean():
        flags.append("adversarial_wins:shuffled")
    bds = float((q > n).mean())
    if bds < 0.5:
        flags.append("positive_not_better")
    n_valid = int(np.isfinite(frame["value"]).sum())
    if n_valid < 10:
        flags.append("few_perturbations")
    return {"metric": frame["metric"].iloc[0], "weighting": frame["weighting"].iloc[0],
            "reference": frame["reference"].iloc[0], "mean": np.nanmean(frame["value"]), "median": 0.0,
            "calibrated": 0.5, "ci_low": 0.0, "ci_high": 1.0, "drf": float(frame["drf"].mean()), "bds": bds,
            "flags": ";".join(flags), "greater_is_better": True, "negative": "mean",
            "positive": "technical_duplicate", "n_valid": n_valid}


def _table(parts):
    values = pd.concat(parts, ignore_index=True)
    summary = pd.DataFrame([_summary_row(f) for f in parts]).set_index(["metric", "weighting", "reference"])
    params = {"calibrate": True, "n_boot": 400, "level": 0.95, "seed": 1,
              "baselines": {"mean": "negative", "technical_duplicate": "positive", "shuffled": "adversarial"}}
    return MetricTable(values, summary.sort_index(), pd.Index([f"p{i}" for i in range(P)]), pd.Index(["g"]), params)


good_q = 0.8 + 0.05 * rng.random(P)
good_n = 0.2 + 0.05 * rng.random(P)


@pytest.fixture(scope="module")
def table():
    noise = 0.3 * rng.standard_normal(P)
    return _table([
        _rows("good", q=good_q, n=good_n),
        _rows("weak", q=np.where(np.arange(P) < 8, 0.8, 0.1), n=0.2),  # BDS 0.4
        _rows("centroid", q=good_q, n=good_n, reference="perturbed_centroid"),
        _rows("leaky", q=good_q, n=good_n, weighting="deg_rest"),
        _rows("gamed", q=good_q, n=good_n, adv=good_n + 0.2),
        _rows("noisy_flag", q=good_q, n=good_n, adv=good_n + noise - noise.mean() + 0.01),
        _rows("ties", q=np.where(np.arange(P) < 10, good_n, good_q), n=good_n,
              drf=np.where(np.arange(P) < 10, 0.0, 0.8)),  # BDS 0.5 fails too; ties is what we check below
        _rows("saturated", q=1.0, n=good_n),
        _rows("few", q=good_q, n=good_n, valid=6),
    ])


def test_each_check_fails_where_built_to(table):
    rec = recommend_metrics(table)
    get = lambda m: rec.xs(m, level="metric").iloc[0]  # noqa: E731
    assert get("good")["recommended"] and get("good")["reason"].startswith("recommended: BDS 1.00")
    assert not get("weak")["calibrated"] and "BDS 0.40 < 0.70" in get("weak")["reason"]
    assert not get("centroid")["split_independent"] and "perturbed_centroid" in get("centroid")["reason"]
    assert not get("leaky")["split_independent"] and "deg_rest" in get("leaky")["reason"]
    assert not get("gamed")["not_gamed"] and "shuffled beats the negative control by 0.2" in get("gamed")["reason"]
    assert get("noisy_flag")["not_gamed"] and "within noise" in get("noisy_flag")["reason"]
    assert not get("ties")["few_ties"] and "50% of perturbations" in get("ties")["reason"]
    assert not get("saturated")["not_saturated"] and "best value on 100%" in get("saturated")["reason"]
    assert not get("few")["enough_perturbations"] and "6 perturbations (< 10)" in get("few")["reason"]
    assert rec["recommended"].dtype == bool and rec["reason"].map(type).eq(str).all()
    assert rec["recommended"].sum() == 2  # good, noisy_flag
    assert rec["recommended"].iloc[:2].all() and list(rec["rank"]) == list(range(1, len(rec) + 1))


def test_flag_mode_fails_any_flagged_adversarial(table):
    rec = recommend_metrics(table, adversarial="flag")
    assert not rec.xs("noisy_flag", level="metric")["recommended"].iloc[0]


def test_decision_record_lists_use_and_avoid(table):
    text = decision_record(recommend_metrics(table), n=3)
    assert "2 of 9 metric rows recommended" in text and "good (control): recommended" in text and "Avoid (7" in text


def test_errors(table):
    uncalibrated = MetricTable(table.to_frame(), table.summary().assign(bds=np.nan), table.perturbations,
                               table.genes, {**table.params, "calibrate": False})
    with pytest.raises(InputError, match="no calibration"):
        recommend_metrics(uncalibrated)
    with pytest.raises(InputError, match="min_bds"):
        recommend_metrics(table, min_bds=2)
    with pytest.raises(InputError, match="adversarial"):
        recommend_metrics(table, adversarial="maybe")
    with pytest.raises(InputError, match="recommend_metrics"):
        decision_record(pd.DataFrame({"x": [1]}))
