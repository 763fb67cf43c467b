"""TRADE transcriptome-wide impact against TRADE 0.1.0 golden values (tests/golden/trade)."""

from __future__ import annotations

import json
import math
import pathlib
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, special

from shrinkpert.effects import _mixture_kernels, impact
from shrinkpert.effects.impact import ImpactCorrelation, impact_correlation, mixture_moments, transcriptome_impact
from shrinkpert.effects.mixture import fit_mixture_weights
from shrinkpert.errors import InputError, ShrinkpertWarning

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "trade"
UNI = GOLDEN / "univariate_deseq2"
SYN = GOLDEN / "univariate_synthetic"
BI = GOLDEN / "bivariate_deseq2"

# (json file, genes analysed by TRADE)
FITTED_G_CASES = {
    "univariate_deseq2": (UNI / "trade_univariate.json", 1999),
    "univariate_deseq2_nosig": (UNI / "trade_univariate_nosig.json", 1999),
    "sparse_normal": (SYN / "sparse_normal.json", 2000),
    "heavy_tail_t": (SYN / "heavy_tail_t.json", 2000),
    "all_null": (SYN / "all_null.json", 2000),
}


def deseq2_input() -> pd.DataFrame:
    return pd.read_csv(UNI / "deseq2_results.csv", index_col="gene")


def synthetic_input(case: str) -> pd.DataFrame:
    x = pd.read_csv(SYN / f"{case}_input.csv")
    x.index = "g" + x["gene"].astype(str)
    return x


# --------------------------------------------------------------------------- moments of g


@pytest.mark.parametrize("case", list(FITTED_G_CASES))
def test_moments_of_fitted_g_match_trade(case):
    path, n_genes = FITTED_G_CASES[case]
    ref = json.loads(path.read_text())
    g = ref["fitted_g"]
    m = mixture_moments(g["pi"], g["a"], g["b"], n_genes=n_genes)
    # closed forms of the same fitted g: only floating-point summation order differs (seen 1e-14)
    assert m["transcriptome_wide_impact"] == pytest.approx(ref["transcriptome_wide_impact"], rel=1e-12)
    assert m["effective_n_genes"] == pytest.approx(ref["Me"], rel=1e-12)
    assert m["mean"] == pytest.approx(ref["mean"], rel=1e-12, abs=1e-16)


def test_mixture_moments_closed_forms():
    # U[-1, 1]: variance 1/3, fourth moment 1/5, kurtosis 9/5
    m = mixture_moments([1.0], [-1.0], [1.0], n_genes=100)
    assert m["transcriptome_wide_impact"] == pytest.approx(1 / 3, rel=1e-15)
    assert m["fourth_moment"] == pytest.approx(1 / 5, rel=1e-15)
    assert m["effective_n_genes"] == pytest.approx(3 * 100 / 1.8, rel=1e-14)
    # two point masses: TI is the variance between them; TRADE's M4 ignores point masses
    two = mixture_moments([0.5, 0.5], [0.0, 2.0], [0.0, 2.0])
    assert two["mean"] == 1.0 and two["transcriptome_wide_impact"] == 1.0
    assert two["fourth_moment"] == 0.0 and math.isnan(two["effective_n_genes"])
    # only the null: no impact, kurtosis undefined
    null = mixture_moments([1.0], [0.0], [0.0], n_genes=10)
    assert null["transcriptome_wide_impact"] == 0.0 and math.isnan(null["kurtosis"])
    # unnormalised weights are normalised
    assert mixture_moments([2.0, 2.0], [-1.0, 0.0], [0.0, 1.0])["transcriptome_wide_impact"] == pytest.approx(1 / 3)


def test_mixture_moments_rejects_bad_mixtures():
    with pytest.raises(InputError, match="equal length"):
        mixture_moments([1.0], [0.0, 1.0], [1.0])
    with pytest.raises(InputError, match="non-negative"):
        mixture_moments([-1.0, 2.0], [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(InputError, match="a <= b"):
        mixture_moments([1.0], [1.0], [0.0])


# --------------------------------------------------------------------------- filters and splits


class RecordingFit:
    """Stand-in for the ash fits: records what each is given, returns a fixed U[-1, 1] mixture."""

    def __init__(self):
        self.calls = []

    def __call__(self, problems, parents=None):
        out = []
        for betahat, se, grange in problems:
            self.calls.append((betahat.copy(), se.copy(), grange))
            out.append((np.array([0.5, 0.5]), np.array([0.0, -1.0]), np.array([0.0, 1.0]), -1.0, True))
        return out


def test_filters_follow_trade(monkeypatch):
    fake = RecordingFit()
    monkeypatch.setattr(impact, "_fit_uniform_mixtures", fake)
    beta = pd.Series([0.5, np.nan, 11.0, -12.0, 0.2, -0.3, 0.1, 2.0], index=list("abcdefgh"), name="P1")
    se = np.array([0.1, 0.2, 0.3, 0.3, np.inf, 0.2, 0.0, 0.4])
    out = transcriptome_impact(beta, se, target_genes=["h"], model_significant=False)
    assert list(out.index) == ["P1"] and out.index.name == "perturbation"
    row = out.loc["P1"]
    # NaN effect, infinite se and zero se are non-finite/uninformative; |b| > 10 twice; h excluded
    assert (row["n_nonfinite"], row["n_extreme"], row["n_excluded"], row["n_genes"]) == (3, 2, 1, 2)
    (b, s, grange), = fake.calls
    assert b.tolist() == [0.5, -0.3] and s.tolist() == [0.1, 0.2]
    assert grange == (-0.3, 0.5)  # range of the analysed effects, after every exclusion
    assert row["transcriptome_wide_impact"] == pytest.approx(1 / 6)  # half null, half U[-1, 1]
    assert "frac_impact_significant" not in out.columns


def test_significance_split_counts_match_trade(monkeypatch):
    fake = RecordingFit()
    monkeypatch.setattr(impact, "_fit_uniform_mixtures", fake)
    res = deseq2_input()
    ref = json.loads((UNI / "trade_univariate.json").read_text())
    out = transcriptome_impact(
        res["log2FoldChange"], res["lfcSE"], pvalue=res["pvalue"], target_genes="TARGET"
    ).iloc[0]
    assert out["n_genes"] == 1999
    assert out["n_significant"] == ref["bonferroni"]["num_sig_Bonferroni"] == 31
    assert out["n_significant_fdr"] == ref["fdr"]["num_sig_FDR"] == 81
    # five fits: all, Bonferroni S and N, BH S and N; all with the full grange
    assert [c[0].size for c in fake.calls] == [1999, 31, 1968, 81, 1918]
    assert len({c[2] for c in fake.calls}) == 1
    # DESeq2's Wald p-values are the two-sided normal ones, so the default gives the same split
    default = transcriptome_impact(res["log2FoldChange"], res["lfcSE"], target_genes="TARGET").iloc[0]
    assert (default["n_significant"], default["n_significant_fdr"]) == (31, 81)
    # the stand-in gives every part the same TI, so the share is the share of genes
    assert out["frac_impact_significant"] == pytest.approx(31 / 1999)


def test_no_significant_gene_gives_zero_share(monkeypatch):
    monkeypatch.setattr(impact, "_fit_uniform_mixtures", RecordingFit())
    rng = np.random.default_rng(5)
    out = transcriptome_impact(rng.normal(0, 0.01, 50), np.full(50, 1.0)).iloc[0]
    assert out["n_significant"] == 0 and out["frac_impact_significant"] == 0.0
    assert out["impact_significant"] == 0.0 and math.isnan(out["impact_nonsignificant"])


def test_effects_object_excludes_each_target(monkeypatch):
    fake = RecordingFit()
    monkeypatch.setattr(impact, "_fit_uniform_mixtures", fake)
    rng = np.random.default_rng(6)
    effect = rng.normal(0, 0.3, (3, 20))
    effects = SimpleNamespace(
        effect=effect,
        std_error=np.full((3, 20), 0.2),
        perturbations=pd.Index(["A", "B", "C"]),
        genes=pd.Index([f"g{j}" for j in range(20)]),
        target_index=np.array([0, -1, 5]),
    )
    out = transcriptome_impact(effects, model_significant=False, target_genes={"B": "g7"})
    assert list(out.index) == ["A", "B", "C"]
    assert out["n_excluded"].tolist() == [1, 1, 1]
    assert out["n_genes"].tolist() == [19, 19, 19]
    assert fake.calls[0][0].tolist() == effect[0, 1:].tolist()
    assert 7 not in np.flatnonzero(np.isin(effect[1], fake.calls[1][0]))
    kept = transcriptome_impact(effects, model_significant=False, exclude_target=False)
    assert kept["n_genes"].tolist() == [20, 20, 20]
    assert out["n_genes"].dtype == np.int64


def test_too_few_genes_warns(monkeypatch):
    monkeypatch.setattr(impact, "_fit_uniform_mixtures", RecordingFit())
    with pytest.warns(ShrinkpertWarning, match="fewer than 2 usable genes"):
        out = transcriptome_impact(np.array([0.1, np.nan]), np.array([0.1, 0.1]))
    assert math.isnan(out["transcriptome_wide_impact"].iloc[0])


def test_input_errors():
    b = np.zeros(5)
    with pytest.raises(InputError, match="std_error is required"):
        transcriptome_impact(b)
    with pytest.raises(InputError, match="1-D of equal length"):
        transcriptome_impact(b, np.ones(4))
    with pytest.raises(InputError, match="target_genes needs gene names"):
        transcriptome_impact(b, np.ones(5), target_genes=["g1"])
    with pytest.raises(InputError, match="alpha must lie"):
        transcriptome_impact(b, np.ones(5), alpha=1.5)
    obj = SimpleNamespace(effect=np.zeros((2, 5)), std_error=np.ones((2, 5)),
                          perturbations=pd.Index(["a", "b"]), genes=pd.RangeIndex(5))
    with pytest.raises(InputError, match="taken from the effects object"):
        transcriptome_impact(obj, np.ones(5))
    with pytest.raises(InputError, match="pvalue must have the shape"):
        transcriptome_impact(b, np.ones(5), pvalue=np.ones(3))
    bad = SimpleNamespace(effect=np.zeros((2, 5)), std_error=np.ones((2, 5)),
                          perturbations=pd.Index(["a", "b"]), genes=pd.RangeIndex(5), target_index=np.zeros(3))
    with pytest.raises(InputError, match="target_index has 3 entries"):
        transcriptome_impact(bad)


# --------------------------------------------------------------------------- end to end (needs ash)

# Tolerances: TI and Me to 1e-3 relative (the brief's requirement). The fit is ash's
# half-uniform mixture solved by mix-SQP in both implementations; TI and Me are smooth
# functionals of the fitted g, so differences come from where each optimiser stops
# (seen: TI <= 3.5e-4, Me <= 3.2e-4, worst on all_null whose likelihood is flat).
END_TO_END = {
    # case: (TRADE output, excluded gene, model_significant)
    "univariate_deseq2": (UNI / "trade_univariate.json", "TARGET", True),
    "univariate_deseq2_nosig": (UNI / "trade_univariate_nosig.json", "TARGET", False),
    "sparse_normal": (SYN / "sparse_normal.json", None, True),
    "heavy_tail_t": (SYN / "heavy_tail_t.json", None, True),
    "all_null": (SYN / "all_null.json", None, True),
}


def _end_to_end_input(case: str):
    if case.startswith("univariate_deseq2"):
        res = deseq2_input()
        return res["log2FoldChange"], res["lfcSE"], res["pvalue"]
    x = synthetic_input(case)
    beta = pd.Series(x["betahat"].to_numpy(), index=x.index)
    se = x["sebetahat"].to_numpy()
    return beta, se, 2.0 * special.ndtr(-np.abs(beta.to_numpy() / se))


@pytest.mark.parametrize("case", list(END_TO_END))
def test_transcriptome_impact_matches_trade(case):
    path, exclude, model_significant = END_TO_END[case]
    ref = json.loads(path.read_text())
    beta, se, p = _end_to_end_input(case)
    out = transcriptome_impact(beta, se, pvalue=p, target_genes=exclude, model_significant=model_significant).iloc[0]
    assert out["transcriptome_wide_impact"] == pytest.approx(ref["transcriptome_wide_impact"], rel=1e-3)
    assert out["effective_n_genes"] == pytest.approx(ref["Me"], rel=1e-3)
    # the mean is near 0 (e.g. 1.8e-4), so an absolute tolerance on the scale of sqrt(TI) (seen 7e-5)
    assert out["mean"] == pytest.approx(ref["mean"], abs=1e-3 * math.sqrt(ref["transcriptome_wide_impact"]))
    # same model: our optimum is never worse than R's, and equal to 1e-6 where R's mix-SQP
    # converged; on heavy_tail_t R stopped early and ours is higher by 0.098
    assert ref["loglik"] - 1e-6 <= out["loglik"] <= ref["loglik"] + 0.2
    if model_significant:
        bon, fdr = ref["bonferroni"], ref["fdr"]
        assert out["n_significant"] == bon["num_sig_Bonferroni"]
        assert out["n_significant_fdr"] == fdr["num_sig_FDR"]
        # shares and the TI of each part come from refits on subsets (as few as 1 gene), whose
        # likelihoods are flatter: 1e-2 relative (seen: shares <= 2.7e-3, part TIs <= 1.1e-2
        # for the non-significant BH part of sparse_normal, otherwise <= 4.6e-4)
        assert out["frac_impact_significant"] == pytest.approx(bon["frac_sig_Bonferroni"], rel=1e-2)
        assert out["frac_impact_significant_fdr"] == pytest.approx(fdr["frac_sig_FDR"], rel=1e-2)
        assert out["impact_significant"] == pytest.approx(bon["var_sig_Bonferroni"], rel=1e-2)
        assert out["impact_nonsignificant"] == pytest.approx(bon["var_nonsig_Bonferroni"], rel=1e-2)
        assert out["impact_significant_fdr"] == pytest.approx(fdr["var_sig_FDR"], rel=1e-2)
        assert out["impact_nonsignificant_fdr"] == pytest.approx(fdr["var_nonsig_FDR"], rel=2e-2)


# --------------------------------------------------------------------------- mix-SQP and its twins


def em_weights(lik: np.ndarray, n_iter: int) -> np.ndarray:
    """Plain EM for mixture weights (the slow textbook twin of mix-SQP)."""
    pi = np.full(lik.shape[1], 1.0 / lik.shape[1])
    for _ in range(n_iter):
        resp = lik * pi
        resp /= resp.sum(axis=1, keepdims=True)
        pi = resp.mean(axis=0)
    return pi


def test_mixture_weights_reach_the_em_optimum():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 1, 300), rng.normal(0, 3, 100)])
    sd = np.array([0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    total = np.sqrt(sd**2 + 1.0)
    lik = np.exp(-0.5 * (x[:, None] / total) ** 2) / total
    fit = fit_mixture_weights(lik)
    pi, n_iter, converged = fit.weights, fit.n_iter, fit.converged
    assert converged and n_iter < 50
    assert pi.min() >= 0 and pi.sum() == pytest.approx(1.0, abs=1e-12)
    em = em_weights(lik, 20000)
    loglik = lambda w: float(np.sum(np.log(lik @ w)))  # noqa: E731
    # mix-SQP optimum is at least as good as 20,000 EM steps (EM approaches from below)
    assert loglik(pi) >= loglik(em) - 1e-9
    # KKT: gradient of the average log-likelihood is <= 1 everywhere and = 1 on the support
    grad = (lik / (lik @ pi)[:, None]).mean(axis=0)
    # (tolerance 1e-6: the solver stops at a KKT residual of 1e-8 on the unnormalised x, whose
    # sum is 1 only to ~1e-7)
    assert grad.max() <= 1 + 1e-6
    assert np.allclose(grad[pi > 1e-8], 1.0, atol=1e-6)


def test_nonnegative_qp_equals_nnls():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(40, 12))
    h = a.T @ a
    c = rng.normal(size=12) * 5
    y = np.zeros(12)
    _mixture_kernels.qp_active_set(h.copy(), c.copy(), y, 12, 1e-12, 500)
    # same problem as NNLS: 1/2 |R y + R^-T c|^2 with H = R'R
    r = np.linalg.cholesky(h).T
    ref, _ = optimize.nnls(r, -np.linalg.solve(r.T, c))
    assert np.allclose(y, ref, atol=1e-10)
    assert (y == 0).any() and (y > 0).any()  # the bound is active somewhere


# --------------------------------------------------------------------------- bivariate


def test_impact_correlation_matches_trade_adaptive_grid():
    r1 = pd.read_csv(BI / "deseq2_results_1.csv", index_col="gene")
    r2 = pd.read_csv(BI / "deseq2_results_2.csv", index_col="gene")
    ref = json.loads((BI / "trade_bivariate.json").read_text())
    grid = ref["adaptive_grid"]
    out = impact_correlation(r1["log2FoldChange"], r1["lfcSE"], r2["log2FoldChange"], r2["lfcSE"])
    assert isinstance(out, ImpactCorrelation)
    assert out.n_genes == ref["n_genes_used"] == 2000
    # same adaptive grid as TRADE: 3 and 4 variances, 260 distinct matrices (mash adds a
    # second, redundant null matrix, hence its 261 components)
    assert out.params["n_variances"] == (3, 4)
    assert out.weights.size == grid["n_components"] - 1
    # same maximum-likelihood problem solved by a different mix-SQP; the optimum is flat in
    # some directions of the weights, so Sigma agrees to ~1e-5 (seen 1.6e-5 on rho,
    # 1.6e-5 on Sigma, 1e-7 on loglik). Tolerances 1e-3 relative, 1e-3 on the loglik.
    assert out.correlation == pytest.approx(grid["TI_correlation"], rel=1e-3)
    assert np.allclose(out.covariance, grid["covariance_matrix"], rtol=1e-3)
    assert out.loglik == pytest.approx(grid["loglik"], abs=1e-3)
    assert out.raw_correlation == pytest.approx(grid["cor_raw"], rel=1e-12)  # Pearson, rounding only
    # and the estimate is close to the simulated truth (Monte-Carlo error of a correlation over
    # ~400 affected genes is ~0.03); the raw correlation is attenuated by noise
    assert abs(out.correlation - ref["true_correlation_of_lfc"]) < 0.05
    assert out.raw_correlation < 0.5 * ref["true_correlation_of_lfc"] + 0.05
    assert not out.weights.flags.writeable


def test_impact_correlation_recovers_simulated_truth():
    rng = np.random.default_rng(9)
    n = 4000
    affected = rng.random(n) < 0.3
    z = rng.multivariate_normal([0, 0], [[1, -0.5], [-0.5, 1]], size=n)
    beta = np.where(affected[:, None], 0.8 * z, 0.0)
    se = rng.uniform(0.1, 0.4, size=(n, 2))
    bhat = beta + se * rng.normal(size=(n, 2))
    out = impact_correlation(bhat[:, 0], se[:, 0], bhat[:, 1], se[:, 1])
    truth = np.corrcoef(beta[:, 0], beta[:, 1])[0, 1]
    assert abs(out.correlation - truth) < 0.05  # Monte-Carlo error ~0.02 with ~1200 affected genes
    assert out.raw_correlation > out.correlation  # noise pulls the raw correlation towards 0


def test_impact_correlation_aligns_series_and_validates():
    rng = np.random.default_rng(10)
    genes = [f"g{i}" for i in range(300)]
    b1 = pd.Series(rng.normal(0, 0.5, 300), index=genes)
    b2 = pd.Series(b1.to_numpy() + rng.normal(0, 0.1, 300), index=genes)[::-1]  # reversed order
    s1 = pd.Series(0.1, index=genes)
    s2 = pd.Series(0.1, index=genes)[::-1]
    out = impact_correlation(b1, s1, b2, s2, exclude_genes=["g0", "g1"])
    assert out.n_genes == 298
    assert out.correlation > 0.9
    with pytest.raises(InputError, match="have 300 and 299 genes"):
        impact_correlation(b1.to_numpy(), s1.to_numpy(), b2.to_numpy()[:299], s2.to_numpy()[:299])
    with pytest.raises(InputError, match="exclude_genes needs gene names"):
        impact_correlation(b1.to_numpy(), s1.to_numpy(), b2.to_numpy(), s2.to_numpy(), exclude_genes=["g0"])
    with pytest.raises(InputError, match="need at least 3"):
        impact_correlation([0.1, 0.2], [1, 1], [0.1, 0.2], [1, 1])
    with pytest.raises(InputError, match="correlations must lie"):
        impact_correlation(b1, s1, b2, s2, correlations=[0.5, 2.0])


def test_identical_significant_sets_are_fitted_once(monkeypatch):
    fake = RecordingFit()
    monkeypatch.setattr(impact, "_fit_uniform_mixtures", fake)
    beta = np.r_[np.full(5, 8.0), np.zeros(95)]  # five genes at z = 80, the rest exactly null
    out = transcriptome_impact(beta, np.full(100, 0.1)).iloc[0]
    assert out["n_significant"] == out["n_significant_fdr"] == 5
    assert len(fake.calls) == 3  # all genes, S, N; the BH split reuses the Bonferroni fits
    assert out["frac_impact_significant"] == out["frac_impact_significant_fdr"] == pytest.approx(0.05)


def test_impact_correlation_tables():
    rng = np.random.default_rng(11)
    b = rng.normal(0, 0.5, 200)
    out = impact_correlation(b, np.full(200, 0.1), b + rng.normal(0, 0.1, 200), np.full(200, 0.1))
    comps = out.to_frame()
    assert list(comps.columns) == ["var1", "cov", "var2", "weight"]
    assert comps["weight"].sum() == pytest.approx(1.0, abs=1e-12)
    # Sigma is the weighted sum of the components
    assert comps["var1"] @ comps["weight"] == pytest.approx(out.covariance[0, 0], rel=1e-12)
    summ = out.summary()
    assert summ.loc[0, "correlation"] == out.correlation and summ.loc[0, "n_genes"] == 200


def test_series_inputs_are_aligned_by_gene(monkeypatch):
    fake = RecordingFit()
    monkeypatch.setattr(impact, "_fit_uniform_mixtures", fake)
    beta = pd.Series([0.5, -0.2, 0.1], index=["a", "b", "c"])
    se = pd.Series([0.3, 0.1, 0.2], index=["c", "a", "b"])  # another order
    transcriptome_impact(beta, se, model_significant=False)
    assert fake.calls[0][1].tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(InputError, match="std_error lacks 1 gene"):
        transcriptome_impact(beta, se.iloc[:2], model_significant=False)
