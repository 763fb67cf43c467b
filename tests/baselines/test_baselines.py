"""Baselines on real data (Papalexi 2021, assigned cells), each checked against an independent computation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert.baselines import (
    ADVERSARIAL,
    BASELINES,
    EXPLOITS,
    BaselinePrediction,
    additive_baseline,
    control_baseline,
    detect_scale,
    inflated_mean,
    interpolated_duplicate,
    linear_baseline,
    make_baselines,
    mean_baseline,
    scaled_mean,
    shuffled_labels,
    summarize_truth,
    technical_duplicate,
)
from shrinkpert._forms import AffineForm
from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.stats.group import group_statistics


def test_summary_matches_direct_pseudobulk(summary, direct):
    assert summary.scale == "counts"
    np.testing.assert_allclose(summary.mean, direct.loc[summary.perturbations].to_numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(summary.control_mean, direct.loc["non-targeting"].to_numpy(), rtol=0, atol=1e-12)


def test_halves_are_disjoint_and_pool_to_the_whole(summary):
    n = summary.n_cells
    assert np.array_equal(summary.half_a_n + summary.half_b_n, n)
    assert np.array_equal(summary.half_a_n, n // 2)
    pooled = (summary.half_a_mean * summary.half_a_n[:, None] + summary.half_b_mean * summary.half_b_n[:, None])
    np.testing.assert_allclose(pooled / n[:, None], summary.mean, rtol=0, atol=1e-12)
    assert not np.allclose(summary.half_a_mean, summary.half_b_mean)


def test_split_is_deterministic_for_a_seed(papalexi, summary):
    again = summarize_truth(papalexi, seed=7)
    other = summarize_truth(papalexi, seed=8)
    assert np.array_equal(again.half_a_mean, summary.half_a_mean)
    assert not np.array_equal(other.half_a_mean, summary.half_a_mean)


def test_inputs_are_not_modified(papalexi):
    before_obs = papalexi.obs.copy()
    before_x = papalexi.X.copy()
    summarize_truth(papalexi, seed=1)
    pd.testing.assert_frame_equal(papalexi.obs, before_obs)
    assert (papalexi.X != before_x).nnz == 0


def test_control_and_mean_baselines(summary, direct):
    pert = direct.loc[summary.perturbations].to_numpy()
    ctrl = control_baseline(summary)
    assert np.array_equal(ctrl.mean, np.tile(summary.control_mean, (len(summary.perturbations), 1)))
    mean = mean_baseline(summary)
    for i in (0, 5, len(pert) - 1):
        others = np.delete(pert, i, axis=0).mean(axis=0)
        np.testing.assert_allclose(mean.mean[i], others, rtol=0, atol=1e-12)


def test_cell_weighted_mean_is_the_mean_of_the_other_cells(papalexi, summary):
    p = "IRF1"
    keep = ~papalexi.obs["perturbation"].isin([p, "non-targeting"])
    label = pd.Series(np.where(keep, "rest", None), index=papalexi.obs_names, dtype=object)
    stats = group_statistics(papalexi, label, normalize="log1p")
    i = summary.perturbations.get_loc(p)
    np.testing.assert_allclose(mean_baseline(summary, weighting="cells").mean[i], np.asarray(stats.mean)[0],
                               rtol=0, atol=1e-10)


def test_duplicates_are_scored_against_half_a(summary):
    dup = technical_duplicate(summary)
    assert dup.truth == "half_a"
    assert np.array_equal(dup.mean, summary.half_b_mean)
    interp = interpolated_duplicate(summary)
    low = np.minimum(summary.half_b_mean, mean_baseline(summary).mean)
    high = np.maximum(summary.half_b_mean, mean_baseline(summary).mean)
    assert np.all(interp.mean >= low - 1e-12) and np.all(interp.mean <= high + 1e-12)
    # interpolating towards the mean at non-DE genes removes noise: closer to the held-out half
    err = lambda m: np.mean((m - summary.half_a_mean) ** 2)  # noqa: E731
    assert err(interp.mean) < err(dup.mean)


def test_interpolated_duplicate_in_blocks_equals_the_whole_formula(summary, monkeypatch):
    """Blocks of rows give the whole computation bit for bit, and scipy's Welch test + BH."""
    from scipy import stats as sstats

    import shrinkpert.baselines.baselines as module

    n = summary.half_b_n.astype(np.float64)[:, None]
    mean, var = summary.half_b_mean, np.nan_to_num(summary.half_b_var, nan=0.0)
    ss = var * (n - 1) + n * mean**2
    rest_n = n.sum() - n
    rest_mean = ((n * mean).sum(axis=0)[None, :] - n * mean) / rest_n
    rest_var = np.maximum(ss.sum(axis=0)[None, :] - ss - rest_n * rest_mean**2, 0.0) / np.maximum(rest_n - 1, 1)
    t = sstats.ttest_ind_from_stats(mean, np.sqrt(var), n, rest_mean, np.sqrt(rest_var), rest_n, equal_var=False)
    p = np.where(np.isfinite(t.pvalue), t.pvalue, 1.0)
    alpha = 1.0 - sstats.false_discovery_control(p, axis=1)
    expected = alpha * mean + (1.0 - alpha) * mean_baseline(summary).mean
    monkeypatch.setattr(module, "_ROWS_PER_BLOCK", 3)
    blocked = interpolated_duplicate(summary).mean
    monkeypatch.setattr(module, "_ROWS_PER_BLOCK", 10**9)
    whole = interpolated_duplicate(summary).mean
    assert np.array_equal(blocked, whole)
    # scipy's Welch test and BH (8.9e-16 apart on this data; 1e-12 allows the t tail's rounding)
    np.testing.assert_allclose(whole, expected, rtol=0, atol=1e-12)


def test_plans_know_each_role_before_building(summary):
    from shrinkpert.baselines import plan_baselines

    plans = plan_baselines(summary, seed=3)
    built = make_baselines(summary, seed=3)
    assert list(plans) == list(built)
    for name, plan in plans.items():
        b = plan.build()
        assert (plan.kind, plan.truth) == (b.params["kind"], b.truth)
        assert np.array_equal(b.mean, built[name].mean)
    with pytest.raises(InputError, match="int seed"):
        plan_baselines(summary, seed=np.random.default_rng(0))


def test_additive_needs_combinations(summary):
    with pytest.raises(NotImplementedError, match="no combinations"):
        additive_baseline(summary)


def test_additive_on_combinations():
    rng = np.random.default_rng(3)
    labels = np.repeat(["non-targeting", "A", "B", "A+B"], 40)
    X = sp.csr_matrix(rng.poisson(5.0, size=(len(labels), 12)).astype(np.float32))
    adata = ad.AnnData(X=X, obs=pd.DataFrame({"perturbation": labels}, index=[f"c{i}" for i in range(len(labels))]),
                       var=pd.DataFrame(index=[f"g{j}" for j in range(12)]))
    s = summarize_truth(adata, seed=0)
    pred = additive_baseline(s)
    row = dict(zip(s.perturbations, s.mean))
    expected = s.control_mean + (row["A"] - s.control_mean) + (row["B"] - s.control_mean)
    np.testing.assert_allclose(pred.mean[s.perturbations.get_loc("A+B")], expected, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pred.mean[s.perturbations.get_loc("A")], s.control_mean)
    with pytest.raises(MissingKeyError, match="needs single perturbations"):
        additive_baseline(summarize_truth(adata[adata.obs["perturbation"] != "B"].copy(), seed=0))


def test_linear_falls_back_to_the_mean_without_a_measured_target(summary):
    pred = linear_baseline(summary)
    mean = mean_baseline(summary).mean
    measured = [p in set(summary.genes) for p in summary.perturbations]
    assert pred.params["n_targets_measured"] == sum(measured) > 0
    for i, m in enumerate(measured):
        if not m:
            np.testing.assert_allclose(pred.mean[i], mean[i], rtol=0, atol=1e-10)
    assert not np.allclose(pred.mean[np.array(measured)], mean[np.array(measured)])
    with pytest.raises(InputError, match="no perturbation's target gene is measured"):
        linear_baseline(summary, targets={p: "not-a-gene" for p in summary.perturbations})


def test_adversarial_baselines(summary):
    assert np.allclose(scaled_mean(summary, factor=1.0).mean, mean_baseline(summary).mean, rtol=0, atol=1e-12)
    up = scaled_mean(summary, factor=2.0)
    np.testing.assert_allclose(up.mean - summary.control_mean, 2 * (mean_baseline(summary).mean - summary.control_mean))
    shuf = shuffled_labels(summary, seed=4)
    perm = np.asarray(shuf.params["permutation"])
    assert sorted(perm.tolist()) == list(range(len(perm))) and np.all(perm != np.arange(len(perm)))
    assert np.array_equal(shuf.mean, summary.mean[perm])
    assert np.array_equal(inflated_mean(summary, seed=2).mean, inflated_mean(summary, seed=2).mean)
    assert not np.array_equal(inflated_mean(summary, seed=2).mean, inflated_mean(summary, seed=3).mean)


def test_make_baselines(summary):
    built = make_baselines(summary)
    assert list(built) == list(BASELINES) + list(EXPLOITS)  # the exploit arms the data allow come last
    assert set(ADVERSARIAL) <= set(built)
    assert all(b.mean.shape == summary.mean.shape and not b.mean.flags.writeable for b in built.values())
    frame = built["control"].to_frame()
    assert list(frame.columns) == ["perturbation", "gene", "mean"] and len(frame) == summary.mean.size
    assert built["mean"].to_anndata().shape == summary.mean.shape
    with pytest.raises(InputError, match="unknown baselines"):
        make_baselines(summary, ["median"])


def test_a_callers_array_is_copied_and_a_builders_fresh_one_is_not(summary):
    perts, genes = summary.perturbations, summary.genes
    mine = np.ones(summary.mean.shape)
    b = BaselinePrediction("mine", perts, genes, mine)
    mine[0, 0] = 5.0  # the caller's array stays theirs: the baseline holds a copy
    assert b.mean[0, 0] == 1.0 and not b.mean.flags.writeable
    view = mine.view()
    view.setflags(write=False)  # read-only, but a view of a writable array: copied too
    assert not np.shares_memory(BaselinePrediction("view", perts, genes, view).mean, mine)
    sealed = np.ones(summary.mean.shape)
    sealed.setflags(write=False)  # owns its memory and nothing can write to it: held as it is
    assert BaselinePrediction("sealed", perts, genes, sealed).mean is sealed
    # the builders' arrays are fresh and sealed: held as built, one copy fewer per build
    shuffled = shuffled_labels(summary, seed=1)
    assert shuffled.mean.flags.owndata and not shuffled.mean.flags.writeable
    assert not np.shares_memory(shuffled.mean, summary.mean)
    with pytest.raises(ValueError):
        shuffled.mean[0, 0] = 0.0


def test_detect_scale(papalexi):
    assert detect_scale(papalexi) == "counts"
    logged = papalexi.copy()
    logged.X = sp.csr_matrix(np.log1p(logged.X.toarray() / logged.X.sum(axis=1).A * 1e4))
    assert detect_scale(logged) == "log1p"
    cpm = papalexi.copy()
    cpm.X = sp.csr_matrix(cpm.X.toarray() / cpm.X.sum(axis=1).A * 1e6)
    with pytest.raises(InputError, match="ambiguous"):
        detect_scale(cpm)
    neg = papalexi[:50].copy()
    neg.X = sp.csr_matrix(-neg.X.toarray())
    with pytest.raises(InputError, match="negative values"):
        detect_scale(neg)


def test_summarize_errors(papalexi):
    with pytest.raises(MissingKeyError, match="control label"):
        summarize_truth(papalexi, control="NT")
    with pytest.raises(InputError, match="scale must be one of"):
        summarize_truth(papalexi, scale="log2")
    with pytest.raises(MissingKeyError, match="not in obs"):
        summarize_truth(papalexi, perturbations=["IRF1", "NOPE"])


def test_mean_all_and_the_leave_one_out_anticorrelation(summary):
    all_ = mean_baseline(summary, leave_one_out=False)
    assert all_.name == "mean_all"
    np.testing.assert_allclose(all_.mean, np.tile(summary.mean.mean(axis=0), (len(summary.perturbations), 1)))
    centroid = summary.mean.mean(axis=0)
    loo = mean_baseline(summary).mean - centroid
    truth = summary.mean - centroid
    np.testing.assert_allclose(loo, -truth / (len(summary.perturbations) - 1), rtol=0, atol=1e-12)


def test_halves_do_not_depend_on_the_other_perturbations(papalexi):
    whole = summarize_truth(papalexi, seed=4)
    fewer = papalexi[~papalexi.obs["perturbation"].isin(["ATF2", "BRD4", "CAV1"])].copy()
    part = summarize_truth(fewer, seed=4)
    rows = whole.perturbations.get_indexer(part.perturbations)
    np.testing.assert_array_equal(part.half_a_n, whole.half_a_n[rows])
    np.testing.assert_allclose(part.half_a_mean, whole.half_a_mean[rows], rtol=1e-12, atol=1e-15)


def test_declared_forms_describe_the_baselines(summary):
    """The forms that the rank metrics derive their products with are the baselines' rules: on the
    truth's means they give each baseline's mean to rounding (1e-12 relative to the largest mean:
    the same sums in another order), and no other baseline declares one."""
    built = make_baselines(summary, "default")
    declared = {name for name, b in built.items() if b.form is not None}
    assert declared == {"mean", "mean_cells", "scaled_mean_up", "scaled_mean_down", "shuffled"}
    scale = np.abs(summary.mean).max()
    for name in declared:
        b = built[name]
        np.testing.assert_allclose(b.form.values(summary.mean), b.mean, rtol=0, atol=1e-12 * scale, err_msg=name)
        # a form that is wrong by a little is told apart: the check has the power to fail
        assert np.abs(b.form.values(summary.mean * (1 + 1e-9)) - b.mean).max() > 1e-12 * scale
    two_rows = AffineForm(np.ones(2), np.empty((0, len(summary.genes))), np.empty((2, 0)))
    with pytest.raises(InputError, match="its form has 2 rows"):
        BaselinePrediction("x", summary.perturbations, summary.genes, built["mean"].mean, form=two_rows)
