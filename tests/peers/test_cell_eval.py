"""Peer check: shrinkpert's metrics agree with cell-eval's on the same real pred/truth pair.

Data: the bundled Papalexi 2021 THP-1 subset (assigned cells), log1p-normalised (1e4). The
"prediction" is a degraded copy: every value gets multiplicative gamma noise and 70% of the
perturbed cells are replaced by control cells (diluted effects). Both sides' DE calls come from
the same Welch t-test + Benjamini-Hochberg (per perturbation) computed here, passed to cell-eval as
precomputed DE tables (so pdex is not run) and to shrinkpert as :class:`DECalls`. cell-eval stores
DE columns as float32, so the arrays are rounded to float32 before both see them.

Where definitions coincide the values agree to 1e-6 (in practice ~1e-15). Where shrinkpert
deliberately differs, a test below shows the difference (docs/metrics.md explains each).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import shrinkpert.metrics as sm
from shrinkpert.errors import InputError

cell_eval = pytest.importorskip("cell_eval", reason="cell-eval is a peer test extra: pip install cell-eval")
pl = pytest.importorskip("polars")
ad = pytest.importorskip("anndata")

from cell_eval import MetricsEvaluator, score_agg_metrics  # noqa: E402
from cell_eval._types import PerturbationAnndataPair  # noqa: E402
from cell_eval.metrics import _anndata as ce_anndata  # noqa: E402

pytestmark = [
    pytest.mark.peer,
    # cell-eval 0.8.2 calls polars' deprecated string cache; not ours to fix
    pytest.mark.filterwarnings("ignore:the string cache has been replaced:DeprecationWarning"),
]

CONTROL = "non-targeting"
TOL = 1e-6


def _log1p_normalise(counts) -> np.ndarray:
    X = np.asarray(counts.toarray(), dtype=np.float64)
    total = X.sum(axis=1, keepdims=True)
    return np.log1p(X / np.maximum(total, 1.0) * 1e4)


def _welch_calls(Z: np.ndarray, labels: np.ndarray, perts: list[str]) -> sm.DECalls:
    """Welch t-test of each perturbation vs control, BH per perturbation; float32-rounded."""
    ctrl = Z[labels == CONTROL]
    mc, vc, nc = ctrl.mean(0), ctrl.var(0, ddof=1), ctrl.shape[0]
    lfc = np.empty((len(perts), Z.shape[1]))
    p = np.ones_like(lfc)
    for i, pert in enumerate(perts):
        z = Z[labels == pert]
        m, v, n = z.mean(0), z.var(0, ddof=1), z.shape[0]
        lfc[i] = m - mc
        a, b = v / n, vc / nc
        ok = a + b > 0  # genes never detected in either group: no test, p = 1
        t = lfc[i, ok] / np.sqrt(a[ok] + b[ok])
        df = (a[ok] + b[ok]) ** 2 / (a[ok] ** 2 / (n - 1) + b[ok] ** 2 / (nc - 1))
        p[i, ok] = 2 * stats.t.sf(np.abs(t), df)
    q = stats.false_discovery_control(p, axis=1)
    as32 = lambda x: x.astype(np.float32).astype(np.float64)  # noqa: E731
    return sm.DECalls(lfc=as32(lfc), q=as32(q))


def _de_frame(calls: sm.DECalls, perts: list[str], genes) -> pl.DataFrame:
    P, G = calls.q.shape
    return pl.DataFrame({
        "target": np.repeat(perts, G),
        "feature": np.tile(np.asarray(genes, dtype=str), P),
        "log2_fold_change": calls.lfc.ravel(),
        "p_value": calls.q.ravel(),
        "fdr": calls.q.ravel(),
    })


class Pair:
    """Real and predicted AnnData plus everything shrinkpert needs, computed once."""

    def __init__(self, papalexi):
        rng = np.random.default_rng(7)
        labels = papalexi.obs["perturbation"].astype(str).to_numpy()
        X = _log1p_normalise(papalexi.X)
        Y = np.log1p(np.expm1(X) * rng.gamma(2.0, 0.5, size=X.shape))
        ctrl = np.flatnonzero(labels == CONTROL)
        perturbed = np.flatnonzero(labels != CONTROL)
        swap = perturbed[rng.random(perturbed.size) < 0.7]
        Y[swap] = Y[rng.choice(ctrl, swap.size)]
        obs = pd.DataFrame({"target": labels}, index=papalexi.obs_names)
        var = pd.DataFrame(index=papalexi.var_names.astype(str))
        self.real = ad.AnnData(X=X, obs=obs, var=var)
        self.pred = ad.AnnData(X=Y, obs=obs.copy(), var=var.copy())
        self.perts = sorted(set(labels) - {CONTROL})  # cell-eval's order
        self.genes = papalexi.var_names.astype(str)
        self.target_index = self.genes.get_indexer(self.perts).astype(np.int64)  # -1: target not measured

        def means(Z):
            return np.vstack([Z[labels == p].mean(0) for p in self.perts]), Z[labels == CONTROL].mean(0)

        (self.mean_real, c_real), (self.mean_pred, c_pred) = means(X), means(Y)
        # cell-eval's convention: each side's deltas use that side's own control
        self.delta_real, self.delta_pred = self.mean_real - c_real, self.mean_pred - c_pred
        self.de_real = _welch_calls(X, labels, self.perts)
        self.de_pred = _welch_calls(Y, labels, self.perts)


@pytest.fixture(scope="module")
def pair(papalexi):
    return Pair(papalexi)


@pytest.fixture(scope="module")
def cell_eval_results(pair, tmp_path_factory):
    evaluator = MetricsEvaluator(
        adata_pred=pair.pred.copy(),
        adata_real=pair.real.copy(),
        de_pred=_de_frame(pair.de_pred, pair.perts, pair.genes),
        de_real=_de_frame(pair.de_real, pair.perts, pair.genes),
        control_pert=CONTROL,
        pert_col="target",
        num_threads=1,
        outdir=str(tmp_path_factory.mktemp("cell_eval")),
    )
    results, _ = evaluator.compute(
        profile="full", skip_metrics=["pearson_edistance", "clustering_agreement"], write_csv=False
    )
    frame = results.to_pandas().set_index("perturbation")
    assert list(frame.index) == pair.perts
    return frame


def _ours(pair: Pair) -> dict[str, np.ndarray]:
    t, p = pair.de_real, pair.de_pred
    out = {
        "pearson_delta": sm.pearson_delta(pair.delta_pred, pair.delta_real),
        "mse": sm.mse(pair.mean_pred, pair.mean_real),
        "mae": sm.mae(pair.mean_pred, pair.mean_real),
        "mse_delta": sm.mse_delta(pair.delta_pred, pair.delta_real),
        "mae_delta": sm.mae_delta(pair.delta_pred, pair.delta_real),
        "de_sig_genes_recall": sm.de_recall(p, t),
        "de_direction_match": sm.de_direction_match(p, t),
        "de_spearman_lfc_sig": sm.de_spearman_lfc(p, t),
        "pr_auc": sm.pr_auc(p, t, q_floor=1e-10),  # cell-eval floors q at 1e-10
        "roc_auc": sm.roc_auc(p, t, q_floor=1e-10),
    }
    for distance in ("l1", "l2", "cosine"):
        out[f"discrimination_score_{distance}"] = sm.discrimination_score(
            pair.delta_pred, pair.delta_real, metric=distance, target_index=pair.target_index
        )
    for n in (None, 50, 100, 200, 500):
        out[f"overlap_at_{'N' if n is None else n}"] = sm.overlap_at_n(p, t, n=n)
    return out


def test_coinciding_metrics_agree_to_1e_6(pair, cell_eval_results):
    ours = _ours(pair)
    report = {}
    for name, values in ours.items():
        theirs = cell_eval_results[name].to_numpy(dtype=np.float64)
        defined = np.isfinite(values)
        # same NaN pattern where both define the value (overlap: see the deliberate-difference test)
        if not name.startswith("overlap"):
            np.testing.assert_array_equal(np.isnan(theirs), ~defined, err_msg=name)
        report[name] = float(np.max(np.abs(values[defined] - theirs[defined])))
        assert report[name] <= TOL, (name, report[name])
    # the comparison is not vacuous: the prediction is imperfect and the metrics vary
    assert 0.1 < np.nanmean(ours["discrimination_score_l1"]) < 0.95
    assert np.nanstd(ours["pearson_delta"]) > 0.05
    assert np.isfinite(ours["pr_auc"]).sum() >= 15


def test_direct_metric_functions_agree_too(pair):
    """cell-eval's functions on its own pair object (independent of its pipeline runner)."""
    ce_pair = PerturbationAnndataPair(real=pair.real, pred=pair.pred, pert_col="target", control_pert=CONTROL)
    theirs = ce_anndata.pearson_delta(ce_pair)
    np.testing.assert_allclose([theirs[p] for p in pair.perts], sm.pearson_delta(pair.delta_pred, pair.delta_real),
                               rtol=0, atol=TOL)
    theirs = ce_anndata.discrimination_score(ce_pair, metric="l2")
    np.testing.assert_allclose(
        [theirs[p] for p in pair.perts],
        sm.discrimination_score(pair.delta_pred, pair.delta_real, metric="l2", target_index=pair.target_index),
        rtol=0, atol=TOL,
    )


# ------------------------------------------------------------------------------------------
# deliberate differences
# ------------------------------------------------------------------------------------------


def test_overlap_is_nan_without_true_de_genes_where_cell_eval_reports_0(pair, cell_eval_results):
    ours = sm.overlap_at_n(pair.de_pred, pair.de_real)
    none_true = (pair.de_real.q < 0.05).sum(axis=1) == 0
    assert none_true.sum() >= 3
    assert np.isnan(ours[none_true]).all()
    assert (cell_eval_results["overlap_at_N"].to_numpy()[none_true] == 0.0).all()


def test_precision_counts_every_true_de_gene_where_cell_eval_truncates_the_true_list(pair, cell_eval_results):
    t, p = pair.de_real, pair.de_pred
    ours = sm.precision_at_n(p, t)
    theirs = cell_eval_results["precision_at_N"].to_numpy()
    sig_t, sig_p = t.q < 0.05, p.q < 0.05
    # cell-eval's formula, rebuilt: top-k predicted vs top-k TRUE genes (k = number predicted)
    k = sig_p.sum(axis=1)

    def top(lfc, sig, m):  # the (at most) m significant genes with the largest |lfc|, ties in gene order
        return set(np.argsort(np.where(sig, -np.abs(lfc), np.inf), kind="stable")[: min(m, sig.sum())])

    rebuilt = np.zeros(len(k))  # cell-eval: 0 when either list is empty
    for r in np.flatnonzero((k > 0) & (sig_t.sum(axis=1) > 0)):
        rebuilt[r] = len(top(p.lfc[r], sig_p[r], k[r]) & top(t.lfc[r], sig_t[r], k[r])) / k[r]
    np.testing.assert_allclose(rebuilt, theirs, rtol=0, atol=TOL)
    # ours: share of the predicted DE genes that are truly DE (NaN when nothing is predicted)
    defined = k > 0
    np.testing.assert_allclose(ours[defined], (sig_p & sig_t).sum(axis=1)[defined] / k[defined], rtol=1e-12)
    assert np.isnan(ours[~defined]).all()
    differs = defined & (np.abs(np.nan_to_num(ours) - theirs) > TOL)
    assert differs.any()
    assert (ours[differs] >= theirs[differs]).all()  # truncating the truth can only lose hits


def test_pr_auc_without_the_1e_10_floor_keeps_the_ranking_of_strong_calls(pair, cell_eval_results):
    t, p = pair.de_real, pair.de_pred
    assert (p.q < 1e-10).any()
    floored, full = sm.pr_auc(p, t, q_floor=1e-10), sm.pr_auc(p, t)
    theirs = cell_eval_results["pr_auc"].to_numpy()
    ok = np.isfinite(full)
    np.testing.assert_allclose(floored[ok], theirs[ok], rtol=0, atol=TOL)
    assert np.max(np.abs(full[ok] - theirs[ok])) > 1e-3


def test_discrimination_ties_count_one_half_where_cell_eval_uses_argsort_order(rng):
    genes = [f"g{j}" for j in range(6)]
    labels = np.repeat([CONTROL, "A", "B", "C"], 4)
    X = rng.gamma(2.0, 0.3, size=(16, 6))
    X[8:12] = X[4:8]  # B's cells are copies of A's: identical true effects, an exact tie
    obs = pd.DataFrame({"target": labels}, index=[f"c{i}" for i in range(16)])
    real = ad.AnnData(X=X, obs=obs, var=pd.DataFrame(index=genes))
    Y = X + 0.01 * rng.random(X.shape)
    pred = ad.AnnData(X=Y, obs=obs.copy(), var=pd.DataFrame(index=genes))
    theirs = ce_anndata.discrimination_score(PerturbationAnndataPair(real=real, pred=pred, pert_col="target",
                                                                     control_pert=CONTROL), metric="l1")

    def delta(Z):
        return np.vstack([Z[labels == p].mean(0) for p in "ABC"]) - Z[labels == CONTROL].mean(0)

    ours = sm.discrimination_score(delta(Y), delta(X), metric="l1")
    for k, p in enumerate("AB"):
        # A and B tie: cell-eval puts the true match first or second, ours is the mean of the two
        assert theirs[p] in (1.0, 1.0 - 1.0 / 3.0)
        assert ours[k] == pytest.approx(1.0 - 0.5 / 3.0, abs=1e-12)
    assert ours[2] == theirs["C"] == 1.0


# ------------------------------------------------------------------------------------------
# the VCC score against cell-eval's scorer
# ------------------------------------------------------------------------------------------


def test_vcc_score_equals_cell_eval_score_agg_metrics(pair, tmp_path_factory):
    def agg(pred_adata, de_pred):
        ev = MetricsEvaluator(
            adata_pred=pred_adata, adata_real=pair.real.copy(),
            de_pred=_de_frame(de_pred, pair.perts, pair.genes), de_real=_de_frame(pair.de_real, pair.perts, pair.genes),
            control_pert=CONTROL, pert_col="target", num_threads=1,
            outdir=str(tmp_path_factory.mktemp("vcc")),
        )
        return ev.compute(profile="vcc", write_csv=False)[1]

    labels = pair.real.obs["target"].to_numpy()
    # baseline: every perturbed cell predicted as the mean of the perturbation means (cell-mean baseline)
    base_X = pair.real.X.copy()
    cell_mean = pair.mean_real.mean(axis=0)
    base_X[labels != CONTROL] = cell_mean
    base = ad.AnnData(X=base_X, obs=pair.real.obs.copy(), var=pair.real.var.copy())
    base_calls = _welch_calls(base_X, labels, pair.perts)
    agg_user, agg_base = agg(pair.pred.copy(), pair.de_pred), agg(base, base_calls)
    theirs = score_agg_metrics(agg_user, agg_base).to_pandas().set_index("metric")["from_baseline"]

    def means(frame):
        row = frame.to_pandas().set_index("statistic").loc["mean"]
        return {k: float(row[k]) for k in sm.VCC_METRICS}

    ours = sm.vcc_components(means(agg_user), means(agg_base))
    for key in sm.VCC_METRICS:
        assert abs(ours[key] - theirs[key]) <= TOL, key
    assert abs(sm.vcc_score(means(agg_user), means(agg_base)) - 100 * theirs["avg_score"]) <= 100 * TOL


def test_vcc_refuses_nan_where_cell_eval_scores_it_as_zero():
    user = pl.DataFrame({"statistic": ["mean"], "mae": [0.02], "discrimination_score_l1": [float("nan")],
                         "overlap_at_N": [0.2]})
    base = pl.DataFrame({"statistic": ["mean"], "mae": [0.027], "discrimination_score_l1": [0.514],
                         "overlap_at_N": [0.106]})
    theirs = score_agg_metrics(user, base).to_pandas().set_index("metric")["from_baseline"]
    assert theirs["discrimination_score_l1"] == 0.0
    with pytest.raises(InputError, match="finite values"):
        sm.vcc_score(user.to_pandas().iloc[0].to_dict(), base.to_pandas().iloc[0].to_dict())
