"""evaluate() with the target-gene metrics and escape-aware truth, on real data (Papalexi 2021).

Expected values come from independent paths: pseudobulks from ``scanpy.get.aggregate`` on
log1p(normalize_total) data, the prediction functions called directly, and subsets of the cells.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from shrinkpert.errors import InputError
from shrinkpert.evaluation import evaluate
from shrinkpert.ontarget import classify_escape
from shrinkpert.metrics.target_gene import target_change_error, target_rank_error, target_sign_score

sc = pytest.importorskip("scanpy", reason="scanpy is a test extra")
TARGET = ["target_change_error", "target_sign_score", "target_rank_error"]


def _means(adata, key):
    """Mean log1p(counts per 1e4) per group, by scanpy (independent of group_statistics)."""
    x = adata.copy()
    sc.pp.normalize_total(x, target_sum=1e4)
    sc.pp.log1p(x)
    agg = sc.get.aggregate(x, by=key, func="mean")
    return pd.DataFrame(agg.layers["mean"], index=agg.obs_names.astype(str), columns=x.var_names.astype(str))


@pytest.fixture(scope="module")
def escapes(papalexi, noisy):
    return classify_escape(papalexi, guide_key="guide_id"), classify_escape(noisy, guide_key="guide_id")


def test_target_metrics_equal_the_functions_on_deltas_from_the_control(noisy, papalexi):
    table = evaluate(noisy, papalexi, metrics=TARGET, baselines=None, calibrate=False)
    frame = table.to_frame()
    assert set(frame["reference"]) == {"control"}  # changes from the control only
    pred, true = _means(noisy, "perturbation"), _means(papalexi, "perturbation")
    perts = table.perturbations
    dp = pred.loc[perts].to_numpy() - true.loc["non-targeting"].to_numpy()  # both sides: the true control
    dt = true.loc[perts].to_numpy() - true.loc["non-targeting"].to_numpy()
    genes = list(table.genes)
    tindex = np.array([genes.index(p) if p in genes else -1 for p in perts])
    assert (tindex >= 0).sum() >= 9 and (tindex < 0).any()
    for name, func in zip(TARGET, (target_change_error, target_sign_score, target_rank_error)):
        got = frame.loc[frame["metric"] == name].set_index("perturbation")["value"].reindex(perts).to_numpy()
        # float32 storage and a different summation order in scanpy: 1e-6 absolute on log1p values
        np.testing.assert_allclose(got, func(dp, dt, target_index=tindex), atol=1e-6, err_msg=name)
        assert np.isnan(got[tindex < 0]).all()


def test_target_metrics_are_default_only_when_a_target_is_measured(noisy, papalexi):
    names = {m for m, _, _ in evaluate(noisy, papalexi, baselines=None, calibrate=False).summary().index}
    assert set(TARGET) <= names
    renamed = {p: f"drug_{k}" for k, p in enumerate(sorted(set(papalexi.obs["perturbation"]) - {"non-targeting"}))}
    a, b = noisy.copy(), papalexi.copy()
    for x in (a, b):
        x.obs["perturbation"] = x.obs["perturbation"].astype(str).replace(renamed)
    names = {m for m, _, _ in evaluate(a, b, baselines=None, calibrate=False, metrics="default").summary().index}
    assert not set(TARGET) & names


def test_perturbed_truth_equals_evaluating_on_the_perturbed_cells_only(noisy, papalexi, escapes):
    esc = escapes[0]
    judged = esc.penetrance.index[esc.penetrance["evidence"] != "none"]
    assert 5 <= len(judged) < len(esc.penetrance)  # perturbations without evidence keep every cell
    escaped = np.isin(esc.perturbation, judged) & np.isfinite(esc.p_perturbed) & (esc.p_perturbed < 0.5)
    assert 100 < escaped.sum() < len(escaped) // 2
    got = evaluate(noisy, papalexi, metrics=["mae", "pearson_delta"], baselines=None, calibrate=False,
                   truth_cells="perturbed", escape=esc)
    subset = papalexi[~escaped].copy()
    expected = evaluate(noisy, subset, metrics=["mae", "pearson_delta"], baselines=None, calibrate=False)
    # the same cells summed in other blocks (log1p values are not integers): 1e-12 relative
    np.testing.assert_allclose(got.to_frame()["value"], expected.to_frame()["value"], rtol=1e-12)
    assert got.params["truth_cells_excluded"] == int(escaped.sum())
    plain = evaluate(noisy, papalexi, metrics=["mae"], baselines=None, calibrate=False)
    assert not np.array_equal(plain.to_frame()["value"], got.to_frame().query("metric == 'mae'")["value"])


def test_penetrance_error_is_the_difference_of_the_two_penetrance_tables(noisy, papalexi, escapes):
    esc, pred_esc = escapes
    table = evaluate(noisy, papalexi, metrics=["penetrance_error", "mae"], escape=esc, pred_escape=pred_esc,
                     n_boot=20)
    rows = table.to_frame().query("metric == 'penetrance_error'").set_index("perturbation")
    p = pred_esc.penetrance["penetrance"].reindex(rows.index)
    t = esc.penetrance["penetrance"].reindex(rows.index)
    np.testing.assert_allclose(rows["value"].to_numpy(), np.abs(p - t).to_numpy(), rtol=0, atol=0)
    assert rows.filter(like="baseline_").isna().all().all()  # pseudobulk baselines have no cells
    assert np.isnan(table.summary().loc[("penetrance_error", "uniform", "none"), "calibrated"])


def test_dose_order_score_is_the_spearman_of_guide_responses(noisy, papalexi):
    table = evaluate(noisy, papalexi, metrics=["dose_order_score"], guide_key="guide_id", baselines=None,
                     calibrate=False)
    got = table.to_frame().set_index("perturbation")["value"]
    genes = list(papalexi.var_names)
    control = _means(papalexi, "perturbation").loc["non-targeting"].to_numpy()
    responses = []
    for adata in (noisy, papalexi):
        guides = _means(adata, "guide_id")
        pert_of = adata.obs.groupby("guide_id", observed=True)["perturbation"].first().astype(str)
        resp = {}
        for guide, pert in pert_of.items():
            if pert == "non-targeting":
                continue
            d = guides.loc[guide].to_numpy() - control
            keep = np.ones(len(d), bool)
            if pert in genes:
                keep[genes.index(pert)] = False
            resp[(pert, guide)] = np.sqrt(np.mean(d[keep] ** 2))
        responses.append(pd.Series(resp))
    checked = 0
    for pert in table.perturbations:
        p, t = responses[0][pert], responses[1][pert]
        if len(p) >= 3:
            expected = spearmanr(p.to_numpy(), t[p.index].to_numpy()).statistic
            assert got[pert] == pytest.approx(expected, abs=1e-12), pert
            checked += 1
        else:
            assert np.isnan(got[pert])
    assert checked >= 10


def test_target_options_are_validated(noisy, papalexi, escapes):
    with pytest.raises(InputError, match="pred_escape"):
        evaluate(noisy, papalexi, metrics=["penetrance_error"], escape=escapes[0])
    with pytest.raises(InputError, match="guide_key"):
        evaluate(noisy, papalexi, metrics=["dose_order_score"])
    with pytest.raises(InputError, match="escape="):
        evaluate(noisy, papalexi, metrics=["mae"], truth_cells="perturbed")
    with pytest.raises(InputError, match="truth_cells='weighted' needs escape="):
        evaluate(noisy, papalexi, metrics=["mae"], truth_cells="weighted")
    with pytest.raises(InputError, match="other cells"):
        evaluate(noisy, papalexi[::-1].copy(), metrics=["mae"], truth_cells="perturbed", escape=escapes[0])


# ------------------------------------------------------------------------------------------
# distribution metrics (cells) inside evaluate
# ------------------------------------------------------------------------------------------


def test_sample_plan_draws_equal_disjoint_samples_of_the_right_cells(noisy, papalexi):
    from shrinkpert._validate import validate
    from shrinkpert.evaluation.cells import sample_plan

    labels = papalexi.obs["perturbation"].astype(str)
    perts = pd.Index(sorted(set(labels) - {"non-targeting"}))
    truth, pred = validate(papalexi, side="truth"), validate(noisy, side="pred", require_control=False)
    plan = sample_plan(truth, pred, perts, 40, seed=3)
    again = sample_plan(truth, pred, perts, 40, seed=3)
    for pert in perts:
        rows = plan[pert]
        sizes = {len(v) for v in rows.values()}
        assert sizes == {min(40, (labels == pert).sum() // 2)}
        assert not set(rows["truth"]) & set(rows["technical_duplicate"])
        assert (labels.iloc[rows["truth"]] == pert).all() and (labels.iloc[rows["control"]] == "non-targeting").all()
        assert all(np.array_equal(rows[k], again[pert][k]) for k in rows)


def test_gathered_rows_equal_scanpy_normalised_rows(papalexi, tmp_path):
    from shrinkpert._validate import validate
    from shrinkpert.evaluation.cells import gather_rows

    rows = np.sort(np.random.default_rng(0).choice(papalexi.n_obs, 300, replace=False))
    x = papalexi.copy()
    sc.pp.normalize_total(x, target_sum=1e4)
    sc.pp.log1p(x)
    expected = x.X[rows].toarray()
    path = tmp_path / "p.h5ad"
    papalexi.write_h5ad(path)
    for source, chunk in ((papalexi, None), (str(path), 997)):
        got = gather_rows(validate(source, perturbation_key=None), rows, counts=True, target_sum=1e4,
                          chunk_size=chunk).toarray()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)  # scanpy works in float32


def test_distribution_metrics_in_evaluate_compare_the_planned_samples(noisy, papalexi):
    from shrinkpert.metrics import energy_distance
    from shrinkpert._validate import validate
    from shrinkpert.evaluation.cells import sample_plan

    table = evaluate(noisy, papalexi, metrics=["energy_distance", "mae"], cells_per_perturbation=30, n_boot=50,
                     seed=5)
    rows = table.to_frame().query("metric == 'energy_distance'").set_index("perturbation")
    plan = sample_plan(validate(papalexi, side="truth"), validate(noisy, side="pred", require_control=False),
                       table.perturbations, 30, seed=5)
    norm = {}
    for name, adata in (("pred", noisy), ("truth", papalexi)):
        x = adata.copy()
        sc.pp.normalize_total(x, target_sum=1e4)
        sc.pp.log1p(x)
        norm[name] = x.X
    for pert in table.perturbations[:6]:
        ref = norm["truth"][plan[pert]["truth"]].toarray()
        model = energy_distance(norm["pred"][plan[pert]["model"]].toarray(), ref, max_cells=None)
        dup = energy_distance(norm["truth"][plan[pert]["technical_duplicate"]].toarray(), ref, max_cells=None)
        assert rows.loc[pert, "value"] == pytest.approx(model, rel=1e-5)  # float32 normalisation in scanpy
        assert rows.loc[pert, "baseline_technical_duplicate"] == pytest.approx(dup, rel=1e-5)
    assert rows["baseline_mean"].isna().all()  # pseudobulk baselines have no cells
    summary = table.summary().loc[("energy_distance", "uniform", "none")]
    assert summary["negative"] == "control" and np.isfinite(summary["calibrated"])


def test_lfsr_de_calls_are_ash_on_the_floored_welch_effects(noisy, papalexi):
    """de_calls='lfsr': truth's DE genes are those with ash lfsr < alpha; checked against ash() per row."""
    from shrinkpert.effects.ash import ash
    from shrinkpert.metrics import DECalls, de_recall

    table = evaluate(noisy, papalexi, metrics=["de_sig_genes_recall", "overlap_at_N"], de_calls="lfsr",
                     baselines=None, calibrate=False)
    assert table.params["de_calls"] == "lfsr"
    pred, true = _means(noisy, "perturbation"), _means(papalexi, "perturbation")
    x = papalexi.copy()
    sc.pp.normalize_total(x, target_sum=1e4)
    sc.pp.log1p(x)
    labels = papalexi.obs["perturbation"].astype(str).to_numpy()
    ctrl = x.X[labels == "non-targeting"].toarray()
    vc, nc = ctrl.var(axis=0, ddof=1), len(ctrl)
    calls = {}
    for side, adata, means in (("pred", noisy, pred), ("truth", papalexi, true)):
        y = adata.copy()
        sc.pp.normalize_total(y, target_sum=1e4)
        sc.pp.log1p(y)
        lab = adata.obs["perturbation"].astype(str).to_numpy()
        lfc, q = [], []
        for pert in table.perturbations:
            cells = y.X[lab == pert].toarray()
            vp, n = cells.var(axis=0, ddof=1), len(cells)
            se = np.sqrt(np.maximum(vp, vc) / n + vc / nc)
            beta = means.loc[pert].to_numpy() - true.loc["non-targeting"].to_numpy()
            fit = ash(beta, se, tol=1e-5, max_iter=200)
            lfc.append(fit.posterior_mean)
            q.append(fit.lfsr)
        calls[side] = DECalls(np.nan_to_num(np.array(lfc)), np.clip(np.nan_to_num(np.array(q), nan=1.0), 0, 1))
    got = table.to_frame().query("metric == 'de_sig_genes_recall'")["value"].to_numpy()
    expected = de_recall(calls["pred"], calls["truth"])
    # float32 normalisation in scanpy could move an lfsr across the 0.05 cut-off: 0.02 absolute
    # (0 observed; the t-test calls differ from these by up to 0.5)
    np.testing.assert_allclose(got, expected, atol=0.02, equal_nan=True)
    with pytest.raises(InputError, match="de_calls must be"):
        evaluate(noisy, papalexi, metrics=["pr_auc"], de_calls="bayes")
