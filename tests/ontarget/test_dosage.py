"""Dose-response: isotonic fit vs brute force, table mode vs scipy, the Jost 2020 guide ordering."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.ontarget import dose_response, isotonic_fit

JOST = Path(__file__).parent / "data" / "jost2020_guide_activity.tsv"


def _isotonic_brute_force(x, y, w):
    """NumPy twin: the best non-decreasing step function over all partitions into blocks."""
    order = np.argsort(x, kind="stable")
    xs, ys, ws = x[order], y[order], w[order]
    n = len(xs)
    best, best_fit = np.inf, None
    for cuts in itertools.product([0, 1], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        # tied x values must share a block
        if any(xs[b - 1] == xs[b] for b in bounds[1:-1]):
            continue
        means = [np.sum(ws[a:b] * ys[a:b]) / np.sum(ws[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
        if any(m2 < m1 - 1e-15 for m1, m2 in zip(means, means[1:])):
            continue
        fit = np.concatenate([np.full(b - a, m) for m, a, b in zip(means, bounds[:-1], bounds[1:])])
        loss = np.sum(ws * (ys - fit) ** 2)
        if loss < best - 1e-12:
            best, best_fit = loss, fit
    out = np.empty(n)
    out[order] = best_fit
    return out


@pytest.mark.parametrize("seed", range(6))
def test_isotonic_fit_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 8
    x = rng.integers(0, 5, n).astype(float)  # ties included
    y = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    np.testing.assert_allclose(isotonic_fit(x, y, w), _isotonic_brute_force(x, y, w), rtol=1e-12)
    dec = isotonic_fit(x, y, w, increasing=False)
    np.testing.assert_allclose(dec, -_isotonic_brute_force(x, -y, w), rtol=1e-12)


def test_table_mode_matches_scipy_and_numpy():
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"p": np.repeat(list("ABCD"), 5), "dose": rng.uniform(size=20),
                          "resp": rng.normal(size=20)})
    fit = dose_response(table, perturbation_key="p", dose="dose", response="resp")
    per = fit.by_perturbation
    for name, group in table.groupby("p"):
        assert per.loc[name, "spearman"] == pytest.approx(spearmanr(group["dose"], group["resp"]).statistic)
        slope = np.polyfit(group["dose"], group["resp"], 1)[0]
        assert per.loc[name, "slope"] == pytest.approx(slope, rel=1e-10)
    assert fit.pooled["spearman"] == pytest.approx(spearmanr(table["dose"], table["resp"]).statistic)
    # common slope with one intercept per perturbation = slope of within-centred values
    dc = table["dose"] - table.groupby("p")["dose"].transform("mean")
    rc = table["resp"] - table.groupby("p")["resp"].transform("mean")
    assert fit.pooled["slope"] == pytest.approx(np.sum(dc * rc) / np.sum(dc**2), rel=1e-10)
    assert fit.to_frame()["fitted"].notna().all()


def test_jost2020_guides_are_ordered_by_activity():
    """The metric code on real guide-level data: Spearman(activity, mAP) = 0.61 (data README)."""
    table = pd.read_csv(JOST, sep="\t")
    fit = dose_response(table, perturbation_key="target_gene", dose="relative_activity_day10",
                        response="perturbseq_mAP", guide_key="sgrna_id")
    assert fit.pooled["spearman"] == pytest.approx(0.61, abs=0.005)
    assert fit.pooled["n_perturbations"] == 25 and fit.pooled["n_units"] == 128
    assert fit.pooled["within_spearman_mean"] > 0.6  # measured 0.76: more active guides, stronger profiles
    assert fit.pooled["slope"] - 3 * fit.pooled["slope_se"] > 0


def test_cells_mode_on_simulated_screen(screen):
    fit = dose_response(screen, guide_key="guide")
    frame = fit.to_frame()
    assert len(frame) == 24
    assert ((frame["dose"] <= 1) & (frame["response"] >= 0)).all()
    sim = screen.uns["simulation"]
    depth = 1 - pd.Series(sim["guide_knockdown"], index=sim["guides"])[frame.index]
    assert spearmanr(frame["dose"], depth).statistic > 0.6  # escapers dilute the dose; noise only
    binned = dose_response(screen, bins=3)
    assert binned.params["unit"] == "bin"
    assert binned.pooled["n_units"] == 3 * 8


def test_errors(screen):
    table = pd.DataFrame({"p": ["A"], "d": [1.0], "r": ["x"]})
    with pytest.raises(InputError, match="name its columns"):
        dose_response(table, perturbation_key="p")
    with pytest.raises(MissingKeyError, match="not a column"):
        dose_response(table, perturbation_key="p", dose="dd", response="r")
    with pytest.raises(InputError, match="numeric"):
        dose_response(table, perturbation_key="p", dose="d", response="r")
    with pytest.raises(InputError, match="guide_key"):
        dose_response(screen)
    with pytest.raises(InputError, match="bins"):
        dose_response(screen, bins=1)
    with pytest.raises(InputError, match="table columns"):
        dose_response(screen, guide_key="guide", dose="x", response="y")
    with pytest.raises(InputError, match="finite"):
        isotonic_fit([0.0, np.nan], [1.0, 2.0])


def test_inputs_not_modified(screen):
    import copy

    adata = screen.copy()
    before = copy.deepcopy(adata)
    dose_response(adata, guide_key="guide")
    assert (adata.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs, before.obs)
    table = pd.DataFrame({"p": ["A", "A", "A"], "d": [0.1, 0.5, 0.9], "r": [1.0, 2.0, 3.0]})
    snapshot = table.copy()
    dose_response(table, perturbation_key="p", dose="d", response="r")
    pd.testing.assert_frame_equal(table, snapshot)
