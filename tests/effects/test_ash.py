"""Adaptive shrinkage against ashr 2.2-65 golden values (tests/golden/ashr), kernel twins, API.

Golden comparisons come in three kinds:

* fixed-prior runs (``fixg_*``) and every fitted run re-evaluated at R's own fitted prior: no
  optimisation is involved, so every column must agree to rounding (<= 1e-8);
* our own fits against R's fits: limited by R's optimiser, which stops with a Frank–Wolfe gap of
  1e-5 to 1e-4 (see ``r_kkt_residual``); posterior columns agree to <= 1e-3, log likelihoods
  to <= 1e-2, and our penalised log likelihood is never lower than R's;
* three fitted runs where R's mix-SQP stopped clearly short of the optimum on a flat objective
  (our penalised log likelihood is 0.03–0.1 higher, R's KKT residual 4e-5–1.3e-4): there the
  posterior of R's (sub-optimal) prior is checked exactly instead.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special, stats

from shrinkpert.effects import _ash_kernels as K
from shrinkpert.effects import _mixture_kernels as M
from shrinkpert.effects.ash import AshResult, MixturePrior, ash, ash_batch
from shrinkpert.errors import InputError, ShrinkpertWarning

GOLDEN = pathlib.Path(__file__).resolve().parents[1] / "golden" / "ashr"
CASES = ("sparse_normal", "heavy_tail_t", "all_null", "small_asym", "shifted_mode")

# the exact ash() arguments of each fixture run (make/make_ashr.R) in our API
RUN_ARGS = {
    "normal": dict(mixture="normal"),
    "uniform": dict(mixture="uniform"),
    "halfuniform": dict(mixture="halfuniform"),
    "normal_shrink": dict(mixture="normal", pointmass=False, prior="uniform"),  # method = "shrink"
    "normal_mixEM": dict(mixture="normal", optimizer="em"),
    "halfnormal_uniformprior": dict(mixture="halfnormal", prior="uniform"),
    "uniform_t5": dict(mixture="uniform", df=5),
    "trade_halfuniform": None,  # grange depends on the data, see run_args()
    "fixg_normal": dict(fixed_prior=MixturePrior.normal([0.6, 0.25, 0.15], [0.0, 0.5, 2.0])),
    "fixg_uniform": dict(fixed_prior=MixturePrior.uniform([0.5, 0.2, 0.2, 0.1], [0, -1, 0, -3], [0, 0, 1, 3])),
    "normal_estmode": dict(mixture="normal", mode="estimate"),
    "uniform_estmode": dict(mixture="uniform", mode="estimate"),
}
# R's mix-SQP stopped short of the optimum on these (see module docstring and test_r_stopped_early)
R_STOPPED_EARLY = {
    ("sparse_normal", "halfnormal_uniformprior"),
    ("heavy_tail_t", "normal_shrink"),
    ("heavy_tail_t", "trade_halfuniform"),
}
COLUMNS = {
    "PosteriorMean": "posterior_mean",
    "PosteriorSD": "posterior_sd",
    "lfsr": "lfsr",
    "lfdr": "lfdr",
    "NegativeProb": "negative_prob",
    "PositiveProb": "positive_prob",
    "qvalue": "qvalue",
    "svalue": "svalue",
}


def load(case: str):
    d = pd.read_csv(GOLDEN / case / "input.csv")
    fits = json.loads((GOLDEN / case / "fits.json").read_text())
    return d.betahat.to_numpy(), d.sebetahat.to_numpy(), fits


def run_args(run: str, x: np.ndarray) -> dict:
    if run == "trade_halfuniform":
        return dict(mixture="halfuniform", prior="uniform", grange=(x.min(), x.max()))
    return dict(RUN_ARGS[run])


def r_prior(fitted_g: dict) -> MixturePrior:
    cls = fitted_g["class"]
    if cls == "normalmix":
        return MixturePrior.normal(fitted_g["pi"], fitted_g["sd"], fitted_g["mean"])
    if cls == "unimix":
        return MixturePrior.uniform(fitted_g["pi"], fitted_g["a"], fitted_g["b"])
    return MixturePrior.truncnormal(fitted_g["pi"], fitted_g["mean"], fitted_g["sd"], fitted_g["a"], fitted_g["b"])


def all_runs(kind: str):
    out = []
    for case in CASES:
        for run in json.loads((GOLDEN / case / "fits.json").read_text()):
            fixed = run.startswith("fixg")
            if (kind == "fixed") == fixed:
                out.append((case, run))
    return out


FITTED = all_runs("fitted")
FIXED = all_runs("fixed")


def max_abs(a, b) -> float:
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN pattern differs"
    ok = ~np.isnan(b)
    return float(np.max(np.abs(a[ok] - b[ok]))) if ok.any() else 0.0


def r_kkt_residual(x, s, g: MixturePrior, lam: np.ndarray, df=None) -> float:
    """Frank–Wolfe gap -(1 + min_k ∂f/∂π_k) of the normalised penalised objective at g.pi."""
    ll = g.log_component_density(x, s, df=df)
    L = np.exp(ll - ll.max(axis=1, keepdims=True))
    pen = lam - 1.0
    u = L @ g.pi
    with np.errstate(divide="ignore", invalid="ignore"):
        grad = -(L.T @ (1.0 / u) + np.where(pen > 0, pen / g.pi, 0.0)) / (len(x) + pen.sum())
    return max(0.0, -(1.0 + grad.min()))


def ashr_halfnormal_psd(x, s, g: MixturePrior) -> np.ndarray:
    """ashr 2.2-65's PosteriorSD for a half-normal mixture, bugs included (emulation).

    ``comp_postsd.tnormalmix`` passes the truncation points a, b (length K) together with n × K
    matrices of posterior means and sds to ``my_vtruncnorm``, so R recycles them down the
    columns: entry (j, k) is truncated to [a, b][(j + n k) mod K]. ``my_vtruncnorm`` also replaces
    the variance by min(1/t², (β - α)²/12), t = min(|α|, |β|), whenever t > 30, even when the
    interval holds all the mass on the inside (e.g. (-inf, 35]).
    """
    g = g.prune(1e-10)
    n, k = len(x), g.n_components
    ll = g.log_component_density(x, s) + np.log(g.pi)
    w = np.exp(ll - ll.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    # every (j, q) at once (scipy vectorises truncnorm's moments over arrays)
    xs, ss = x[:, None], s[:, None]
    loc, sd, a, b = (np.broadcast_to(v, (n, k)) for v in (g.loc, g.sd, g.a, g.b))
    point = sd == 0
    v = ss**2 + sd**2
    m1 = (ss**2 * loc + xs * sd**2) / v
    r = np.where(point, 1.0, np.sqrt(ss**2 * sd**2 / v))  # placeholder 1 where the component is a point
    pm = np.where(point, loc, m1 + r * stats.truncnorm.mean((a - m1) / r, (b - m1) / r))
    recycled = (np.arange(n)[:, None] + n * np.arange(k)[None, :]) % k  # R's recycling of a, b
    lo, hi = (g.a[recycled] - m1) / r, (g.b[recycled] - m1) / r
    vz = stats.truncnorm.var(lo, hi)
    t = np.minimum(np.abs(lo), np.abs(hi))
    with np.errstate(divide="ignore", invalid="ignore"):
        vz = np.where(np.isfinite(t) & (t > 30), np.minimum(1 / t**2, (hi - lo) ** 2 / 12), vz)
    var = np.where(point, 0.0, r * r * vz)
    m1_tot = (w * pm).sum(axis=1)
    m2_tot = (w * (var + pm * pm)).sum(axis=1)
    out = np.sqrt(np.maximum(m2_tot - m1_tot**2, 0.0))
    return out


# =========================================================================== golden: fixed priors


@pytest.mark.parametrize("case,run", FIXED)
def test_fixed_prior_runs_match_ashr(case, run):
    x, s, fits = load(case)
    info = fits[run]
    res = ash(x, s, **run_args(run, x))
    ref = pd.read_csv(GOLDEN / case / f"{run}.csv")
    for rcol, attr in COLUMNS.items():
        # no optimisation: only rounding differs (seen <= 2e-12; uniform PosteriorSD via
        # truncated-normal moments is the largest)
        assert max_abs(getattr(res, attr), ref[rcol]) <= 1e-8, rcol
    # sums of 2000 log densities: rounding only (seen <= 2e-12)
    assert abs(res.loglik - info["loglik"]) <= 1e-8
    assert abs(res.penloglik - info["penloglik"]) <= 1e-8
    assert abs(res.logLR - info["logLR"]) <= 1e-8
    assert res.n_iter == 0 and res.converged


# =========================================================================== golden: fitted runs


@pytest.mark.parametrize("case,run", FITTED)
def test_grid_matches_ashr(case, run):
    x, s, fits = load(case)
    info = fits[run]
    args = run_args(run, x)
    if "estimated_mode" in info:  # the grid depends on the mode; rebuild it at R's mode
        args["mode"] = info["estimated_mode"]
    res = ash(x, s, **args)
    g = r_prior(info["fitted_g"])
    assert res.prior.kind == g.kind
    assert res.prior.n_components == info["n_components"]
    for name in ("loc", "sd", "a", "b"):
        # the same closed form (sigma_max * sqrt(2)^-k) in double precision (seen <= 2e-16 relative)
        np.testing.assert_allclose(getattr(res.prior, name), getattr(g, name), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("case,run", FITTED)
def test_posterior_of_ashr_prior_matches_exactly(case, run):
    """Our posterior machinery on R's fitted prior reproduces every R column to rounding."""
    x, s, fits = load(case)
    info = fits[run]
    args = run_args(run, x)
    g = r_prior(info["fitted_g"])
    res = ash(x, s, fixed_prior=g, prior=args.get("prior", "nullbiased"), df=args.get("df"))
    ref = pd.read_csv(GOLDEN / case / f"{run}.csv")
    for rcol, attr in COLUMNS.items():
        if rcol == "PosteriorSD" and g.kind == "truncnormal":
            continue  # ashr's half-normal PosteriorSD is wrong; see test_halfnormal_posterior_sd
        # closed forms on both sides; seen <= 3e-11 (t likelihood: incomplete beta functions)
        assert max_abs(getattr(res, attr), ref[rcol]) <= 1e-8, rcol
    # R's loglik is the same sum at the same prior (seen <= 2e-12)
    assert abs(res.loglik - info["loglik"]) <= 1e-8
    assert abs(res.logLR - info["logLR"]) <= 1e-8
    if args.get("prior", "nullbiased") == "nullbiased" or g.kind != "normal":
        assert abs(res.penloglik - info["penloglik"]) <= 1e-8


@pytest.mark.parametrize("case,run", [r for r in FITTED if r not in R_STOPPED_EARLY])
def test_fitted_runs_match_ashr(case, run):
    x, s, fits = load(case)
    info = fits[run]
    res = ash(x, s, **run_args(run, x))
    ref = pd.read_csv(GOLDEN / case / f"{run}.csv")
    assert res.converged
    for rcol, attr in COLUMNS.items():
        if rcol == "PosteriorSD" and res.prior.kind == "truncnormal":
            continue  # ashr's half-normal PosteriorSD is wrong; see test_halfnormal_posterior_sd
        # R stops with a KKT residual of 1e-6..1e-4 (r_kkt_residual); with the optimum this flat the
        # posterior columns move by up to ~6e-4 (q-/s-values, all_null) and typically 1e-5
        assert max_abs(getattr(res, attr), ref[rcol]) <= 1e-3, rcol
    # same optimum up to R's stopping rule (seen <= 1.2e-4)
    assert abs(res.loglik - info["loglik"]) <= 1e-2
    # we stop at a Frank-Wolfe gap of 1e-8, R at 1e-5..1e-4: ours is never lower beyond rounding
    assert res.penloglik >= info["penloglik"] - 1e-6


@pytest.mark.parametrize("case,run", sorted(R_STOPPED_EARLY))
def test_r_stopped_early(case, run):
    """Where R's fit is clearly sub-optimal we document it rather than copy it."""
    x, s, fits = load(case)
    info = fits[run]
    res = ash(x, s, **run_args(run, x))
    g = r_prior(info["fitted_g"])
    lam = np.asarray(res.params["dirichlet"])
    assert r_kkt_residual(x, s, g, lam) > 3e-5  # R: 4.0e-5, 8.8e-5, 1.3e-4
    assert res.converged
    assert res.penloglik > info["penloglik"] + 0.02  # ours: +0.030, +0.044, +0.098
    assert abs(res.loglik - info["loglik"]) <= 0.2


def test_kkt_residual_of_r_fits_explains_the_tolerance():
    """R's mix-SQP stops at Frank-Wolfe gaps between 1e-7 and 1.3e-4; ours at <= 1e-8."""
    gaps = []
    for case, run in FITTED:
        x, s, fits = load(case)
        args = run_args(run, x)
        g = r_prior(fits[run]["fitted_g"])
        res = ash(x, s, **args)
        lam = np.asarray(res.params["dirichlet"])
        gaps.append(r_kkt_residual(x, s, g, lam, df=args.get("df")))
        # ours stops at 1e-8 (recomputed here in NumPy: rounding only)
        assert r_kkt_residual(x, s, res.prior, lam, df=args.get("df")) <= 1.01e-8
    assert 1e-7 < max(gaps) < 2e-4


@pytest.mark.parametrize("case", ["sparse_normal", "small_asym"])
def test_halfnormal_posterior_sd(case):
    """ashr's half-normal PosteriorSD is reproduced by an emulation of its two bugs; ours is
    the correct posterior sd (checked by numerical integration)."""
    x, s, fits = load(case)
    info = fits["halfnormal_uniformprior"]
    g = r_prior(info["fitted_g"])
    ref = pd.read_csv(GOLDEN / case / "halfnormal_uniformprior.csv")
    # emulation of ashr on R's prior: closed forms (seen 1e-12)
    assert max_abs(ashr_halfnormal_psd(x, s, g), ref.PosteriorSD) <= 1e-8
    res = ash(x, s, fixed_prior=g, prior="uniform")
    gp = g.prune(1e-10)
    # each component's truncated-normal density, phi((b - loc) / sd) / (sd * mass) on [a, b], written
    # out once with its mass (vectorised over components: scipy's truncnorm per point took 25 s here)
    alpha, beta = (gp.a - gp.loc) / gp.sd, (gp.b - gp.loc) / gp.sd
    mass = special.ndtr(beta) - special.ndtr(alpha)
    assert (mass > 1e-3).all()  # no cancellation in the normalisers
    weight = gp.pi / (gp.sd * mass)
    for j in np.argsort(-np.abs(res.posterior_sd - ref.PosteriorSD.to_numpy()))[:4]:
        def dens(b, j=j):
            inside = (gp.a <= b) & (b <= gp.b)
            prior = np.sum(np.where(inside, weight * np.exp(-0.5 * ((b - gp.loc) / gp.sd) ** 2), 0.0)) / math.sqrt(2 * math.pi)
            return prior * math.exp(-0.5 * ((x[j] - b) / s[j]) ** 2) / (s[j] * math.sqrt(2 * math.pi))
        lo, hi = x[j] - 12 * s[j], x[j] + 12 * s[j]
        z = integrate.quad(dens, lo, hi, points=[0.0] if lo < 0 < hi else None, limit=200)[0]
        m = integrate.quad(lambda b: b * dens(b), lo, hi, points=[0.0] if lo < 0 < hi else None, limit=200)[0] / z
        m2 = integrate.quad(lambda b: b * b * dens(b), lo, hi, points=[0.0] if lo < 0 < hi else None, limit=200)[0] / z
        # quadrature accuracy (~1e-9 relative)
        assert res.posterior_mean[j] == pytest.approx(m, abs=1e-7)
        assert res.posterior_sd[j] == pytest.approx(math.sqrt(m2 - m * m), abs=1e-6)


@pytest.mark.parametrize("run", ["normal", "uniform", "halfuniform"])
def test_log_component_density_matches_ashr(run):
    x, s, fits = load("small_asym")
    g = r_prior(fits[run]["fitted_g"])
    ref = pd.read_csv(GOLDEN / "small_asym" / f"{run}_log_comp_dens.csv").drop(columns="gene").to_numpy()
    ours = g.log_component_density(x, s)
    finite = np.isfinite(ref)
    # ashr computes log Φ(u) + log(1 - exp(log Φ(v) - log Φ(u))), which cancels when both limits are
    # far in the upper tail ((x - b)/s > 5): there ashr is off by up to 3e-3 while ours agrees with
    # SciPy's truncated-normal normaliser to 1e-14
    differ = finite & (np.abs(ours - ref) > 1e-9)
    j, k = np.nonzero(differ)
    assert np.all((x[j] - g.b[k]) / s[j] > 5)
    twin = twin_log_norm_interval((x[j] - g.b[k]) / s[j], (x[j] - g.a[k]) / s[j]) - np.log(g.b[k] - g.a[k])
    np.testing.assert_allclose(ours[differ], twin, rtol=0, atol=1e-12)
    # elsewhere the same formulas agree to rounding (seen <= 1.1e-10 where ashr partly cancels)
    np.testing.assert_allclose(ours[finite & ~differ], ref[finite & ~differ], rtol=0, atol=1e-9)
    # where ashr gets -Inf (its lpa and lpb both round to 0 for (x - b)/s > ~10), ours is finite and
    # far below the row maximum, so neither the fit nor the posterior can notice the difference
    assert np.isfinite(ours).all()
    if (~finite).any():
        rowmax = np.max(np.where(finite, ref, -np.inf), axis=1, keepdims=True)
        assert np.all((ours - rowmax)[~finite] < -25)


@pytest.mark.parametrize("run", ["normal_estmode", "uniform_estmode"])
def test_mode_estimate_matches_ashr(run):
    x, s, fits = load("shifted_mode")
    res = ash(x, s, **run_args(run, x))
    # same Brent steps; our log likelihoods differ from R's by its optimiser noise (~1e-5),
    # which moves the final parabolic step slightly (seen 2e-7)
    assert res.params["mode"] == pytest.approx(fits[run]["estimated_mode"], abs=1e-4)
    assert res.params["mode_estimated"]
    assert np.all(res.lfdr == 0)  # the point mass is not at 0


@pytest.mark.parametrize("case", ["sparse_normal", "heavy_tail_t", "all_null", "small_asym"])
@pytest.mark.parametrize("mixture", ["normal", "halfuniform"])
def test_em_and_mixsqp_reach_the_same_optimum(case, mixture):
    x, s, _ = load(case)
    sqp = ash(x, s, mixture=mixture)
    em = ash(x, s, mixture=mixture, optimizer="em")
    assert sqp.converged and em.converged
    # both stop at a Frank-Wolfe gap <= 1e-8 in units of 1/W, W ~ n: penloglik within W*1e-8
    assert abs(sqp.penloglik - em.penloglik) <= 2e-5
    # the posterior is flat around the optimum (seen <= 2e-5)
    assert max_abs(sqp.posterior_mean, em.posterior_mean) <= 2e-4
    assert max_abs(sqp.lfsr, em.lfsr) <= 2e-4


# =========================================================================== kernel twins

Z = np.array([-60.0, -38.5, -30.0, -8.0, -1.5, -0.3, 0.0, 0.2, 1.0, 4.0, 7.5, 12.0, 40.0])


def test_erfcx_and_log_ndtr_twins():
    for t in np.concatenate([Z, np.linspace(-40, 40, 161)]):
        # erfcx: exp(x^2) erfc(x) below 25 (exp(x^2) rounding: <= 7e-14 relative), series above
        if t >= 0:
            assert K.erfcx(t) == pytest.approx(special.erfcx(t), rel=1e-13)
        # libm erfc vs cephes (seen 1.1e-13 relative at t = 20.5)
        assert K.norm_logcdf(t) == pytest.approx(special.log_ndtr(t), rel=1e-12, abs=1e-300)
        # libm erfc vs cephes ndtr: up to 2e-13 relative at t = -30
        assert K.norm_cdf(t) == pytest.approx(special.ndtr(t), rel=1e-12, abs=1e-300)
    assert K.norm_logcdf(-np.inf) == -np.inf


def twin_log_norm_interval(lo, hi):
    """log(Φ(hi) - Φ(lo)) via SciPy's truncated normal normaliser (independent implementation)."""
    lo, hi = np.broadcast_arrays(np.asarray(lo, dtype=float), np.asarray(hi, dtype=float))
    mid = np.where(np.isfinite(lo) & np.isfinite(hi), 0.5 * np.where(np.isfinite(lo), lo, 0.0)
                   + 0.5 * np.where(np.isfinite(hi), hi, 0.0),
                   np.where(np.isfinite(hi), hi - 1.0, np.where(np.isfinite(lo), lo + 1.0, 0.0)))
    return stats.norm.logpdf(mid) - stats.truncnorm.logpdf(mid, lo, hi)


def tail_moments(t: float) -> tuple[float, float]:
    """Mean and variance of N(0,1) truncated to [t, inf), t >= 30, from the asymptotic series of the
    inverse Mills ratio λ = t + 1/t - 2/t³ + 10/t⁵ - ... in exact rational arithmetic."""
    from fractions import Fraction

    x = Fraction(t)
    coef = [1, -2, 10, -74, 706, -8162, 110410, -1708394]
    lam = x + sum(Fraction(c) / x ** (2 * i + 1) for i, c in enumerate(coef))
    return float(lam), float(1 + x * lam - lam * lam)


@pytest.mark.parametrize("lo,hi", [(-np.inf, -40.0), (-41.0, -40.0), (-3.0, -2.9), (-0.5, 0.7), (-np.inf, np.inf),
                                   (2.0, 2.5), (40.0, 41.0), (38.0, np.inf), (-1e-3, 1e-3), (-12.0, 9.0),
                                   (-5e-7, 3e-7), (1.0, 1.0 + 2.0**-30), (-8.0, -7.95), (0.05, 0.2)])
def test_truncated_normal_twins(lo, hi):
    if hi - lo < 1:
        # SciPy's normaliser cancels on short intervals (1e-7 relative at width 1e-9): quadrature
        ref = math.log(integrate.quad(stats.norm.pdf, lo, hi, epsabs=0, epsrel=1e-13)[0])
    else:
        # SciPy's truncnorm is accurate in the tails; agreement ~1e-12 relative
        ref = twin_log_norm_interval(lo, hi)
    assert K.norm_logdiff(lo, hi) == pytest.approx(ref, rel=1e-10, abs=1e-12)
    m, v = K.truncnorm_moments(lo, hi)
    if lo * hi > 0 and min(abs(lo), abs(hi)) >= 30:
        # SciPy loses ~7 digits of the variance this far out; the series is exact to ~1e-15 here,
        # and the mass beyond the far end (<= e^-40 relative) is below double precision
        sm, sv = tail_moments(min(abs(lo), abs(hi)))
        sm = sm if lo > 0 else -sm
    elif hi - lo < 1:
        # quadrature (relative ~1e-13); SciPy's truncnorm variance is off by 5e-8 on [-1e-3, 1e-3]
        q = dict(epsabs=1e-20, epsrel=1e-12)
        z = integrate.quad(stats.norm.pdf, lo, hi, **q)[0]
        sm = integrate.quad(lambda u: u * stats.norm.pdf(u), lo, hi, **q)[0] / z
        sv = integrate.quad(lambda u: (u - sm) ** 2 * stats.norm.pdf(u), lo, hi, **q)[0] / z
    else:
        sm, sv = stats.truncnorm.stats(lo, hi, moments="mv")
    assert m == pytest.approx(float(sm), rel=1e-9, abs=1e-12)
    assert v == pytest.approx(float(sv), rel=1e-9, abs=1e-14)


@pytest.mark.parametrize("df", [2.5, 5.0, 30.0])
def test_student_t_twins(df):
    for t in [-1e4, -60.0, -7.0, -1.0, -0.1, 0.0, 0.3, 2.0, 9.0, 300.0]:
        # continued fraction for the incomplete beta (~1e-14 relative)
        assert K.t_logcdf(t, df) == pytest.approx(stats.t.logcdf(t, df), rel=1e-11, abs=1e-14)
        assert K.t_logpdf(t, df) == pytest.approx(stats.t.logpdf(t, df), rel=1e-12)
    for a, b, xx in [(2.5, 0.5, 0.3), (0.5, 2.5, 0.99), (15.0, 0.5, 1e-6), (0.5, 1.25, 0.5)]:
        assert K.log_betainc(a, b, xx, 1 - xx) == pytest.approx(np.log(special.betainc(a, b, xx)), rel=1e-12)
    for lo, hi in [(-3.0, -1.0), (-0.5, 2.0), (1.0, 40.0), (-200.0, -100.0), (0.3, 0.35), (-1e-6, 2e-6)]:
        z = stats.t.cdf(hi, df) - stats.t.cdf(lo, df) if hi <= 0 or lo < 0 else stats.t.sf(lo, df) - stats.t.sf(hi, df)
        assert K.t_logdiff(lo, hi, df) == pytest.approx(math.log(z), rel=1e-10)
        m, v = K.trunct_moments(lo, hi, df)
        qm = integrate.quad(lambda t: t * stats.t.pdf(t, df), lo, hi, epsabs=0, epsrel=1e-12)[0] / z
        qm2 = integrate.quad(lambda t: t * t * stats.t.pdf(t, df), lo, hi, epsabs=0, epsrel=1e-12)[0] / z
        # quadrature reference (~1e-11 relative)
        assert m == pytest.approx(qm, rel=1e-8, abs=1e-10)
        assert v == pytest.approx(qm2 - qm * qm, rel=1e-6, abs=1e-10)


COMPONENTS = [
    (K.NORMAL, 0.0, 0.0, -np.inf, np.inf),
    (K.NORMAL, 0.3, 0.7, -np.inf, np.inf),
    (K.UNIFORM, 0.0, 0.0, -1.0, 0.5),
    (K.UNIFORM, 0.2, 0.0, 0.2, 0.2),
    (K.TRUNCNORM, 0.0, 0.8, -np.inf, 0.0),
    (K.TRUNCNORM, 0.0, 0.8, 0.0, np.inf),
]


def twin_component_density(x, s, kind, loc, sd, a, b, df):
    """The prior component convolved with the error, by quadrature (or closed form for atoms)."""
    err = (lambda r: stats.norm.pdf(r, 0, s)) if df == np.inf else (lambda r: stats.t.pdf(r / s, df) / s)
    if kind == K.UNIFORM:
        if a == b:
            return err(x - a)
        return integrate.quad(lambda bb: err(x - bb) / (b - a), a, b, epsabs=0, epsrel=1e-12)[0]
    if sd == 0:
        return err(x - loc)
    lo, hi = (a - loc) / sd, (b - loc) / sd
    return integrate.quad(lambda bb: err(x - bb) * stats.truncnorm.pdf(bb, lo, hi, loc, sd),
                          max(a, x - 15 * s), min(b, x + 15 * s), epsabs=0, epsrel=1e-12, limit=200)[0]


@pytest.mark.parametrize(
    "comp,df", [(c, np.inf) for c in COMPONENTS] + [(c, 6.0) for c in COMPONENTS if c[0] == K.UNIFORM]
)
def test_component_density_and_posterior_twins(comp, df):
    kind = comp[0]
    for x, s in [(0.1, 0.3), (-1.2, 0.5), (2.0, 0.4), (0.0, 1.0)]:
        dens = twin_component_density(x, s, *comp, df)
        # quadrature reference (~1e-12 relative)
        assert K.log_comp_dens(x, s, *comp, df) == pytest.approx(math.log(dens), rel=1e-9, abs=1e-9)
        m, v, p = K.comp_posterior(x, s, *comp, df)
        if comp[0] == K.UNIFORM and comp[3] == comp[4] or comp[0] != K.UNIFORM and comp[2] == 0:
            assert v == 0.0 and m == (comp[3] if comp[0] == K.UNIFORM else comp[1])
            continue
        err = (lambda r: stats.norm.pdf(r, 0, s)) if df == np.inf else (lambda r: stats.t.pdf(r / s, df) / s)
        if kind == K.UNIFORM:
            prior_pdf, lo, hi = (lambda b: 1.0 / (comp[4] - comp[3])), comp[3], comp[4]
        else:
            tl, th = (comp[3] - comp[1]) / comp[2], (comp[4] - comp[1]) / comp[2]
            prior_pdf = lambda b: stats.truncnorm.pdf(b, tl, th, comp[1], comp[2])  # noqa: E731
            lo, hi = max(comp[3], x - 15 * s), min(comp[4], x + 15 * s)
        post = lambda b: err(x - b) * prior_pdf(b) / dens  # noqa: E731
        q = dict(epsabs=0, epsrel=1e-12, limit=200)
        qm = integrate.quad(lambda b: b * post(b), lo, hi, **q)[0]
        qm2 = integrate.quad(lambda b: b * b * post(b), lo, hi, **q)[0]
        qp = integrate.quad(post, lo, min(hi, 0.0), **q)[0] if lo < 0 else 0.0
        assert m == pytest.approx(qm, rel=1e-8, abs=1e-10)
        assert v == pytest.approx(qm2 - qm * qm, rel=1e-6, abs=1e-10)
        assert p == pytest.approx(qp, rel=1e-8, abs=1e-10)


def test_likelihood_matrix_kernel_twin():
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 2, 300), [40.0, -60.0]])
    s = np.concatenate([rng.uniform(0.1, 1, 300), [0.01, 0.02]])
    for g in (MixturePrior.normal(np.full(5, 0.2), [0, 0.1, 0.5, 1, 3]),
              MixturePrior.uniform(np.full(4, 0.25), [0, -1, 0, -4], [0, 0, 2, 4])):
        L = np.empty((len(x), g.n_components))
        rowmax = np.empty(len(x))
        K.lik_matrix_par(x, s, {"normal": K.NORMAL, "uniform": K.UNIFORM}[g.kind], g.loc, g.sd, g.a, g.b,
                         np.inf, 64, L, rowmax)
        # twin: scipy log densities, scaled in log space
        if g.kind == "normal":
            ll = stats.norm.logpdf(x[:, None], g.loc, np.sqrt(s[:, None] ** 2 + g.sd**2))
        else:
            ll = np.stack([twin_log_norm_interval((x - b) / s, (x - a) / s) - np.log(b - a) if a < b
                           else stats.norm.logpdf(x, a, s) for a, b in zip(g.a, g.b)], axis=1)
        mx = ll.max(axis=1)
        twin = np.exp(ll - mx[:, None])
        twin[twin < 1e-200] = 0.0
        # direct densities vs scipy log densities (~1e-14 relative)
        np.testing.assert_allclose(L, twin, rtol=1e-11, atol=1e-300)
        np.testing.assert_allclose(rowmax, mx, rtol=1e-12)
        assert L.max(axis=1) == pytest.approx(1.0)


def random_mixture_problem(rng, n=300, k=8):
    x = np.where(rng.random(n) < 0.3, rng.normal(0, 2, n), 0.0) + rng.normal(size=n)
    grid = np.concatenate([[0.0], 0.1 * 2.0 ** np.arange(k - 1)])
    ll = stats.norm.logpdf(x[:, None], 0, np.sqrt(1 + grid**2))
    return np.ascontiguousarray(np.exp(ll - ll.max(axis=1, keepdims=True)))


def twin_fw_gap(L, pen, pi):
    """NumPy Frank–Wolfe gap of the normalised penalised objective: an optimality certificate
    (f(pi) - min f <= gap for this convex problem on the simplex)."""
    W = L.shape[0] + pen.sum()
    sel = pen > 0
    grad = -(L.T @ (1.0 / (L @ pi))) / W
    grad[sel] -= pen[sel] / pi[sel] / W
    return -(1.0 + grad.min())


def penalised(L, pen, pi):
    sel = pen > 0
    return np.log(L @ pi).sum() + np.sum(pen[sel] * np.log(pi[sel]))


def twin_slsqp(L, pen):
    """SciPy SLSQP on the simplex (a generic constrained solver, for comparison)."""
    k = L.shape[1]
    res = optimize.minimize(lambda p: -penalised(L, pen, np.maximum(p, 1e-300)), np.full(k, 1.0 / k),
                            method="SLSQP", bounds=[(1e-300, 1)] * k,
                            constraints=[dict(type="eq", fun=lambda p: p.sum() - 1)],
                            options=dict(ftol=1e-14, maxiter=1000))
    return res.x / res.x.sum()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("null_weight", [1.0, 10.0])
def test_mixsqp_and_em_kernels_against_plain_em(seed, null_weight):
    rng = np.random.default_rng(seed)
    L = random_mixture_problem(rng)
    pen = np.zeros(L.shape[1])
    pen[0] = null_weight - 1.0
    ref = twin_slsqp(L, pen)
    for solver in ("sqp", "em"):
        pi = np.full(L.shape[1], 1.0 / L.shape[1])
        if solver == "sqp":
            it, ok = M.mixsqp(L, pen, pi, 0.0, 1e-10, 1000, 2, False, 128)
        else:
            it, ok = M.mixem(L, pen, pi, 1e-10, 100000, False, 128)
        assert ok
        assert pi.sum() == pytest.approx(1.0, abs=1e-14) and pi.min() >= 0
        # the kernels stop at gap 1e-10; recomputed in NumPy (rounding ~1e-15)
        assert twin_fw_gap(L, pen, pi) <= 2e-10
        # hence within W * 2e-10 ~ 1e-7 of the optimum, so never worse than SLSQP beyond that
        assert penalised(L, pen, pi) >= penalised(L, pen, ref) - 1e-7


def test_mixsqp_parallel_and_serial_passes_agree_exactly():
    rng = np.random.default_rng(4)
    L = random_mixture_problem(rng, n=5000)
    pen = np.zeros(L.shape[1])
    pen[0] = 9.0
    out = []
    for parallel in (False, True):
        pi = np.full(L.shape[1], 1.0 / L.shape[1])
        M.mixsqp(L, pen, pi, 1e-10, 1e-8, 1000, 2, parallel, 512)
        out.append(pi)
    np.testing.assert_array_equal(out[0], out[1])  # same chunks, same reduction order


@pytest.mark.parametrize("m,n", [(3, 300), (8, 300), (12, 5000)])
def test_objective_pass_twin(m, n):
    """Objective, gradient and Hessian block against NumPy (a block larger than 8 uses every
    (n // 2048)-th observation, scaled)."""
    rng = np.random.default_rng(m)
    L = np.ascontiguousarray(rng.random((n, 12)))
    x = rng.dirichlet(np.ones(12))
    pen = np.zeros(12)
    pen[0] = 9.0
    idx = np.zeros(12, dtype=np.int64)
    idx[:m] = rng.choice(12, m, replace=False)
    chunk = 128
    nch = (n + chunk - 1) // chunk
    g = np.empty(12)
    H = np.zeros((12, 12))
    for parallel in (False, True):
        obj = M.objective_pass(L, pen, x, 1e-10, idx, m, True, True, parallel, chunk, np.empty((nch, 12)),
                               np.empty((nch, 12, 12)), np.empty(nch), g, H)
        W = n + pen.sum()
        u = L @ x + 1e-10
        twin_obj = -(np.log(u).sum() + 9.0 * np.log(x[0] + 1e-10)) / W
        twin_g = -(L.T @ (1 / u)) / W
        twin_g[0] -= 9.0 / (x[0] + 1e-10) / W
        step = max(1, n // 2048) if m > 8 else 1
        rows = np.arange(n) % step == 0
        Ls = L[rows][:, idx[:m]] / u[rows, None]
        twin_H = step * (Ls.T @ Ls) / W
        twin_H[idx[:m] == 0, idx[:m] == 0] += 9.0 / (x[0] + 1e-10) ** 2 / W
        # summation order only (~1e-15 relative)
        assert obj == pytest.approx(twin_obj, rel=1e-12)
        np.testing.assert_allclose(g, twin_g, rtol=1e-12)
        np.testing.assert_allclose(H[:m, :m], twin_H, rtol=1e-12)


def test_loglik_kernels_twin():
    rng = np.random.default_rng(2)
    L = rng.random((20000, 6))
    rowmax = rng.normal(size=20000)
    pi = rng.dirichlet(np.ones(6))
    twin = np.sum(np.log(L @ pi) + rowmax)
    # summation order only
    assert M.loglik_rows(L, rowmax, pi) == pytest.approx(twin, rel=1e-12)
    assert M.loglik_par(L, rowmax, pi, 1024) == pytest.approx(twin, rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_active_set_qp_twin(seed):
    rng = np.random.default_rng(seed)
    m = 7
    A = rng.normal(size=(20, m))
    H = A.T @ A + 1e-3 * np.eye(m)
    c = rng.normal(size=m) * 5
    y = np.full(m, 0.1)
    M.qp_active_set(H.copy(), c.copy(), y, m, 1e-14, 500)
    ref = optimize.minimize(lambda v: 0.5 * v @ H @ v + c @ v, np.full(m, 0.1), jac=lambda v: H @ v + c,
                            bounds=[(0, None)] * m, method="L-BFGS-B", options=dict(ftol=1e-15, gtol=1e-12))
    assert y.min() >= 0
    # L-BFGS-B to its 1e-12 gradient tolerance
    assert 0.5 * y @ H @ y + c @ y <= ref.fun + 1e-9


def test_posterior_and_prior_summary_kernels_twin():
    rng = np.random.default_rng(11)
    x = rng.normal(0, 1.5, 200)
    s = rng.uniform(0.2, 1.0, 200)
    g = MixturePrior.uniform([0.5, 0.2, 0.2, 0.1], [0, -1, 0, -3], [0, 0, 1, 3])
    res = ash(x, s, fixed_prior=g)
    # twin: responsibilities from scipy log densities, component moments from scipy truncnorm
    ll = g.log_component_density(x, s) + np.log(g.pi)
    w = np.exp(ll - ll.max(axis=1, keepdims=True))
    w /= w.sum(axis=1, keepdims=True)
    m = np.empty_like(w)
    v = np.empty_like(w)
    p = np.empty_like(w)
    for k in range(g.n_components):
        if g.a[k] == g.b[k]:
            m[:, k], v[:, k], p[:, k] = g.a[k], 0.0, float(g.a[k] <= 0)
            continue
        lo, hi = (g.a[k] - x) / s, (g.b[k] - x) / s
        mz, vz = stats.truncnorm.stats(lo, hi, moments="mv")
        m[:, k], v[:, k] = x + s * mz, s * s * vz
        p[:, k] = stats.truncnorm.cdf(-x / s, lo, hi)
    pm = (w * m).sum(axis=1)
    lfdr = w[:, 0]
    negp = (w * p).sum(axis=1) - lfdr
    # SciPy vs our closed forms (~1e-13)
    np.testing.assert_allclose(res.posterior_mean, pm, atol=1e-10)
    np.testing.assert_allclose(res.posterior_sd, np.sqrt((w * (v + m * m)).sum(axis=1) - pm**2), atol=1e-9)
    np.testing.assert_allclose(res.lfdr, lfdr, atol=1e-12)
    np.testing.assert_allclose(res.negative_prob, negp, atol=1e-10)
    lfsr = np.maximum(np.where(negp > 0.5 * (1 - lfdr), 1 - negp, negp + lfdr), 0)
    np.testing.assert_allclose(res.lfsr, lfsr, atol=1e-10)
    gm, gsd, gneg, gz = K.prior_summary(g.pi, K.UNIFORM, g.loc, g.sd, g.a, g.b, g.is_null)
    assert gm == pytest.approx(np.sum(g.pi * (g.a + g.b) / 2), abs=1e-15)
    assert gsd**2 == pytest.approx(np.sum(g.pi * ((g.b - g.a) ** 2 / 12 + ((g.a + g.b) / 2) ** 2)) - gm**2)
    assert gz == 0.5 and gneg == pytest.approx(0.2 + 0.1 * 0.5)


@pytest.mark.parametrize("n", [1000, 60000])  # merge sort below 50,000 values, radix sort above
def test_running_mean_kernel_twin(n):
    rng = np.random.default_rng(3)
    v = np.round(rng.random(n), 3)  # many ties: order among ties must be the stable one
    v[:50] = 0.0
    v[50] = -0.0  # sorts like +0
    out = np.empty_like(v)
    K.running_mean_sorted(v, out)
    order = np.argsort(v, kind="stable")
    twin = np.empty_like(v)
    twin[order] = np.cumsum(v[order]) / np.arange(1, v.size + 1)
    np.testing.assert_allclose(out, twin, rtol=1e-15, atol=0)
    w = rng.random(n)
    out1, out2 = np.empty_like(v), np.empty_like(v)
    K.running_means_pair(v, w, out1, out2)
    np.testing.assert_array_equal(out1, out)
    order = np.argsort(w, kind="stable")
    twin[order] = np.cumsum(w[order]) / np.arange(1, n + 1)
    np.testing.assert_allclose(out2, twin, rtol=1e-15, atol=0)


# =========================================================================== batch


@pytest.mark.parametrize("mixture", ["normal", "uniform", "halfuniform", "halfnormal"])
@pytest.mark.parametrize("optimizer", ["mixsqp", "em"])
def test_batch_equals_one_problem_at_a_time(mixture, optimizer):
    rng = np.random.default_rng(5)
    P, G = 6, 250
    se = rng.uniform(0.2, 1, (P, G))
    X = np.where(rng.random((P, G)) < 0.2, rng.normal(0, 1, (P, G)), 0) + se * rng.normal(size=(P, G))
    X[0, 3] = np.nan
    se[1, 4] = 0.0
    se[2, :] = np.inf  # nothing usable: NaN row
    b = ash_batch(X, se, mixture=mixture, optimizer=optimizer, extra=True)
    assert np.isnan(b.posterior_mean[2]).all() and not b.converged[2] and b.n_used[2] == 0
    for p in (0, 1, 3, 4, 5):
        r = ash(X[p], se[p], mixture=mixture, optimizer=optimizer)
        # same kernels and chunking, optimiser serial in both: identical up to rounding
        for attr in ("posterior_mean", "posterior_sd", "lfsr", "lfdr", "negative_prob", "qvalue", "svalue"):
            np.testing.assert_allclose(getattr(b, attr)[p], getattr(r, attr), rtol=0, atol=1e-13)
        np.testing.assert_allclose(b.prior(p).pi, r.prior.pi, atol=1e-13)
        assert b.loglik[p] == pytest.approx(r.loglik, abs=1e-9)
        assert b.n_used[p] == (~r.excluded).sum()


def test_batch_rejects_bad_input():
    with pytest.raises(InputError, match="same shape"):
        ash_batch(np.zeros((2, 3)), np.ones((3, 2)))
    with pytest.raises(InputError, match="negative"):
        ash_batch(np.zeros((2, 3)), -np.ones((2, 3)))


# =========================================================================== API and edge cases


def test_excluded_observations_get_the_prior():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    s = np.full(60, 0.5)
    x[3] = np.nan
    s[4] = 0.0
    s[5] = np.inf
    s[6] = np.nan
    res = ash(x, s, mixture="uniform")
    ex = np.zeros(60, dtype=bool)
    ex[[3, 4, 5, 6]] = True
    np.testing.assert_array_equal(res.excluded, ex)
    g = res.prior.prune(1e-10)
    assert np.all(res.posterior_mean[ex] == pytest.approx(g.mean(), abs=1e-15))
    assert np.all(res.posterior_sd[ex] == pytest.approx(math.sqrt(g.var()), rel=1e-12))
    assert np.all(res.lfdr[ex] == pytest.approx(g.pi0, rel=1e-12))
    # NegativeProb = P(beta < 0) under the prior (ashr: P(beta <= 0), see ash Notes)
    assert np.all(res.negative_prob[ex] == pytest.approx(g.cdf(0.0) - g.pi0, abs=1e-14))
    np.testing.assert_allclose(res.negative_prob + res.positive_prob + res.lfdr, 1.0, atol=1e-12)
    # excluded observations do not change the fit
    clean = ash(x[~ex], s[~ex], mixture="uniform")
    np.testing.assert_allclose(clean.posterior_mean, res.posterior_mean[~ex], atol=1e-14)
    assert clean.loglik == pytest.approx(res.loglik, abs=1e-10)
    assert res.params["n_excluded"] == 4


def test_result_is_frozen_and_tidy():
    x = pd.Series([0.1, -2.0, 3.0, 0.5], index=list("abcd"))
    res = ash(x, 0.5)
    assert isinstance(res, AshResult)
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        res.loglik = 0.0
    with pytest.raises(ValueError, match="read-only"):
        res.posterior_mean[0] = 1.0
    with pytest.raises(TypeError, match="does not support item assignment"):
        res.params["mixture"] = "uniform"
    frame = res.to_frame()
    assert list(frame.index) == list("abcd")
    assert {"posterior_mean", "posterior_sd", "lfsr", "lfdr", "qvalue", "svalue"} <= set(frame.columns)
    np.testing.assert_array_equal(frame["betahat"], x.to_numpy())
    assert res.summary().shape[0] == 1
    assert res.params["mixture"] == "normal"  # our default (ashr's is "uniform")
    g = res.prior
    assert g.pi.sum() == pytest.approx(1.0) and not g.pi.flags.writeable


def test_mixture_prior_moments():
    g = MixturePrior.normal([0.5, 0.5], [0.0, 2.0], loc=1.0)
    assert g.mean() == pytest.approx(1.0) and g.var() == pytest.approx(2.0)
    u = MixturePrior.uniform([1.0], [-1.0], [3.0])
    assert u.mean() == pytest.approx(1.0) and u.var() == pytest.approx(16 / 12)
    assert u.cdf(0.0) == pytest.approx(0.25)
    t = MixturePrior.truncnormal([1.0], [0.0], [1.0], [0.0], [np.inf])
    assert t.mean() == pytest.approx(math.sqrt(2 / math.pi)) and t.var() == pytest.approx(1 - 2 / math.pi)
    assert MixturePrior.normal([0.3, 0.7], [0.0, 1.0]).pi0 == pytest.approx(0.3)


def test_thread_count_does_not_change_results():
    rng = np.random.default_rng(8)
    n = 40_000  # several chunks
    s = rng.uniform(0.2, 1, n)
    x = np.where(rng.random(n) < 0.1, rng.normal(0, 1, n), 0) + s * rng.normal(size=n)
    one = ash(x, s, n_threads=1)
    two = ash(x, s, n_threads=2)
    np.testing.assert_array_equal(one.posterior_mean, two.posterior_mean)
    np.testing.assert_array_equal(one.prior.pi, two.prior.pi)


def test_serial_and_parallel_paths_agree_exactly(monkeypatch):
    """Small problems run on one thread; the chunked reductions make both paths identical."""
    from shrinkpert.effects import ash as ash_module

    rng = np.random.default_rng(12)
    n = 40_000
    s = rng.uniform(0.2, 1, n)
    x = np.where(rng.random(n) < 0.1, rng.normal(0, 1, n), 0) + s * rng.normal(size=n)
    s[:10] = np.inf  # exercise the prior-as-posterior rows too
    par = ash(x, s, mixture="halfuniform")
    monkeypatch.setattr(ash_module, "_PARALLEL_FROM", 10**9)
    ser = ash(x, s, mixture="halfuniform")
    for attr in ("posterior_mean", "posterior_sd", "lfsr", "lfdr", "qvalue", "svalue"):
        np.testing.assert_array_equal(getattr(par, attr), getattr(ser, attr))
    assert par.loglik == ser.loglik


def test_large_input_warm_start_reaches_the_optimum():
    """From 100,000 observations on, mix-SQP starts from the solution for a 50,000-row subsample."""
    rng = np.random.default_rng(9)
    n = 250_000
    s = rng.uniform(0.2, 1, n)
    x = np.where(rng.random(n) < 0.1, rng.normal(0, 1, n), 0) + s * rng.normal(size=n)
    x[:5] = [30.0, -25.0, 40.0, 12.0, -60.0]  # outliers a subsample is likely to miss
    res = ash(x, s)
    assert res.converged
    lam = np.asarray(res.params["dirichlet"])
    # the full-data Frank-Wolfe gap (NumPy) is at the tolerance, whatever the start
    assert r_kkt_residual(x, s, res.prior, lam) <= 1.01e-8
    assert np.all(np.abs(res.posterior_mean[:5]) > 10)


def test_inputs_are_not_modified():
    x = np.array([0.5, -1.0, np.nan, 2.0])
    s = np.array([0.3, 0.0, 0.2, 0.4])
    x0, s0 = x.copy(), s.copy()
    ash(x, s)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(s, s0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(betahat=[1.0, 2.0], sebetahat=[1.0, 1.0, 1.0]), "betahat has 2 values but sebetahat has 3"),
        (dict(betahat=[1.0, 2.0], sebetahat=[1.0, -1.0]), "sebetahat is negative at positions \\[1\\]"),
        (dict(betahat=[1.0, np.inf], sebetahat=[1.0, 1.0]), "betahat is ±inf"),
        (dict(betahat=[np.nan], sebetahat=[1.0]), "nothing to fit"),
        (dict(betahat=[1.0], sebetahat=[1.0], mixture="gauss"), "unknown mixture 'gauss'; choose one of"),
        (dict(betahat=[1.0], sebetahat=[1.0], optimizer="ip"), "unknown optimizer 'ip'"),
        (dict(betahat=[1.0], sebetahat=[1.0], prior="flat"), "unknown prior 'flat'"),
        (dict(betahat=[1.0], sebetahat=[1.0], df=2.0), "df must be > 2"),
        (dict(betahat=[1.0], sebetahat=[1.0], df=5.0), "normal mixture components are only available with normal errors"),
        (dict(betahat=[1.0], sebetahat=[1.0], grid_mult=1.0), "grid_mult must be a number > 1"),
        (dict(betahat=[1.0], sebetahat=[1.0], grange=(-1, 1)), "grange only applies to uniform-type"),
        (dict(betahat=[1.0], sebetahat=[1.0], mode="median"), "mode must be a number or 'estimate'"),
        (dict(betahat=[[1.0]], sebetahat=[[1.0]]), "must be one-dimensional"),
        (dict(betahat=[1.0], sebetahat=[1.0], fixed_prior=[0.5, 0.5]), "fixed_prior has 2 weights"),
        (dict(betahat=[1.0, 2.0], sebetahat=[1.0, 1.0], prior=[1.0, 0.5]), "must all be >= 1"),
    ],
)
def test_errors_name_the_argument_and_the_fix(kwargs, match):
    kwargs = dict(kwargs)
    x, s = kwargs.pop("betahat"), kwargs.pop("sebetahat")
    with pytest.raises(InputError, match=match):
        ash(x, s, **kwargs)


def test_mixture_prior_validation():
    with pytest.raises(InputError, match="kind must be one of"):
        MixturePrior("cauchy", [1.0], [0.0], [1.0], [-np.inf], [np.inf])
    with pytest.raises(InputError, match="a <= b"):
        MixturePrior.uniform([1.0], [1.0], [0.0])
    with pytest.raises(InputError, match="vector of length 2"):
        MixturePrior("normal", [0.5, 0.5], [0.0], [1.0, 1.0], [-np.inf] * 2, [np.inf] * 2)


def test_non_convergence_warns():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, 500)
    with pytest.warns(ShrinkpertWarning, match="raise max_iter"):
        ash(x, 1.0, optimizer="em", max_iter=1)


@pytest.mark.parametrize("lo,hi,c", [(-1.0, 2.0, 0.3), (-1.0, 2.0, -1.5), (-1.0, 2.0, 2.5), (-np.inf, 0.5, -0.2),
                                     (3.0, np.inf, 3.5)])
def test_truncated_normal_mass_below(lo, hi, c):
    """P(Z <= c | lo <= Z <= hi) against SciPy's truncated normal cdf (1e-12)."""
    m, v, p = K.truncnorm_below(lo, hi, c)
    assert (m, v) == K.truncnorm_moments(lo, hi)
    assert p == pytest.approx(float(stats.truncnorm.cdf(c, lo, hi)), rel=1e-12, abs=1e-14)
