"""stratify: per-stratum means and bootstrap intervals of a tidy metric table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.strata import stratify


@pytest.fixture()
def frame():
    rng = np.random.default_rng(3)
    perts = [f"p{i}" for i in range(12)]
    rows = []
    for metric in ("mse", "pearson_delta"):
        for p in perts:
            rows.append({"perturbation": p, "metric": metric, "weighting": "uniform", "reference": "none",
                         "value": rng.normal(), "baseline_mean": rng.normal(), "calibrated": rng.normal()})
    out = pd.DataFrame(rows)
    out.loc[0, "value"] = np.nan
    return out


@pytest.fixture()
def strata():
    return pd.DataFrame({"stratum": ["easy"] * 5 + ["hard"] * 6}, index=[f"p{i}" for i in range(11)])  # p11 missing


def test_means_match_numpy_and_intervals_cover_them(frame, strata):
    out = stratify(frame, strata, n_boot=500, seed=1)
    assert out.attrs["n_unmatched"] == 2  # p11 under both metrics
    row = out[(out.metric == "mse") & (out.stratum == "easy") & (out.column == "value")].iloc[0]
    expected = frame[(frame.metric == "mse") & frame.perturbation.isin([f"p{i}" for i in range(5)])]["value"]
    assert row["n"] == 4 and row["mean"] == pytest.approx(np.nanmean(expected))
    assert (out["ci_low"] <= out["mean"]).all() and (out["mean"] <= out["ci_high"]).all()
    assert set(out["column"]) == {"value", "baseline_mean", "calibrated"}


def test_seeded_and_accepts_a_series(frame, strata):
    a = stratify(frame, strata["stratum"], n_boot=200, seed=5)
    b = stratify(frame, strata, n_boot=200, seed=5)
    pd.testing.assert_frame_equal(a, b)
    c = stratify(frame, strata, n_boot=200, seed=6)
    assert not np.allclose(a["ci_low"], c["ci_low"])


def test_errors(frame, strata):
    with pytest.raises(MissingKeyError, match="no column 'tier'"):
        stratify(frame, strata, by="tier")
    with pytest.raises(MissingKeyError, match="columns"):
        stratify(frame, strata, columns=["nope"])
    with pytest.raises(InputError, match="n_boot"):
        stratify(frame, strata, n_boot=0)
    with pytest.raises(MissingKeyError, match="to_frame"):
        stratify(frame.drop(columns="metric"), strata)
