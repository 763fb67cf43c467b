"""The shared mixture-weight solver (effects.mixture) and the impact kernels (effects._impact_kernels)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special

from shrinkpert.effects import _impact_kernels as IK
from shrinkpert.effects import impact
from shrinkpert.effects.ash import ash
from shrinkpert.effects.mixture import MixtureWeights, fit_mixture_weights
from shrinkpert.errors import InputError


def normal_scale_problem(rng, n=400):
    x = np.concatenate([rng.normal(0, 1, n - n // 4), rng.normal(0, 3, n // 4)])
    sd = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
    total = np.sqrt(sd**2 + 1.0)
    return -0.5 * (x[:, None] / total) ** 2 - np.log(total)  # log densities up to a constant


def penalised(log_lik, lam, pi):
    sel = lam != 1
    with np.errstate(divide="ignore"):
        pen = np.sum((lam[sel] - 1) * np.log(pi[sel]))
    return float(np.sum(special.logsumexp(log_lik, b=pi, axis=1)) + pen)


@pytest.mark.parametrize("null_weight", [1.0, 10.0])
@pytest.mark.parametrize("optimizer", ["mixsqp", "em"])
def test_fit_mixture_weights_reaches_the_slsqp_optimum(null_weight, optimizer):
    rng = np.random.default_rng(1)
    log_lik = normal_scale_problem(rng)
    lam = np.ones(5)
    lam[0] = null_weight
    fit = fit_mixture_weights(log_lik, log=True, dirichlet=lam, optimizer=optimizer)
    assert isinstance(fit, MixtureWeights) and fit.converged
    assert fit.weights.min() >= 0 and fit.weights.sum() == pytest.approx(1.0, abs=1e-12)
    # scipy's SLSQP on the simplex (softened at 1e-12 to keep the log finite) as the reference
    ref = optimize.minimize(lambda w: -penalised(log_lik, lam, np.maximum(w, 1e-12)), np.full(5, 0.2),
                            method="SLSQP", bounds=[(0, 1)] * 5,
                            constraints={"type": "eq", "fun": lambda w: w.sum() - 1}, options={"ftol": 1e-14})
    # gap 1e-8 of the normalised objective bounds the distance to the optimum by W * 1e-8 ~ 4e-6
    assert penalised(log_lik, lam, fit.weights) >= -ref.fun - 1e-5
    assert fit.penloglik == pytest.approx(penalised(log_lik, lam, fit.weights), rel=1e-12)


def test_linear_and_log_input_give_the_same_weights():
    rng = np.random.default_rng(2)
    log_lik = normal_scale_problem(rng, n=200)
    a = fit_mixture_weights(log_lik, log=True)
    b = fit_mixture_weights(np.exp(log_lik))
    # the scaled matrices agree to rounding (exp(log(.)) round trip); so do the optima
    np.testing.assert_allclose(a.weights, b.weights, atol=1e-8)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-12)
    assert list(a.to_frame().columns) == ["component", "weight"]
    assert not a.weights.flags.writeable


def test_fit_mixture_weights_rejects_bad_input():
    lik = np.ones((4, 3))
    with pytest.raises(InputError, match="non-empty matrix"):
        fit_mixture_weights(np.ones(3))
    with pytest.raises(InputError, match="negative values"):
        fit_mixture_weights(-lik)
    with pytest.raises(InputError, match="NaN or \\+inf"):
        fit_mixture_weights(np.where(np.eye(4, 3) > 0, np.nan, 1.0))
    with pytest.raises(InputError, match="likelihood 0 under every component"):
        fit_mixture_weights(np.vstack([lik, np.zeros((1, 3))]))
    with pytest.raises(InputError, match="dirichlet must hold 3"):
        fit_mixture_weights(lik, dirichlet=[0.5, 1, 1])
    with pytest.raises(InputError, match="start must hold 3"):
        fit_mixture_weights(lik, start=[0, 0, 0])
    with pytest.raises(InputError, match="unknown optimizer"):
        fit_mixture_weights(lik, optimizer="lbfgs")


# --------------------------------------------------------------------------- impact kernels


def reference_log_density(x, s, a, b):
    """log of [Phi((x-a)/s) - Phi((x-b)/s)]/(b-a) by scipy: mirrored log_ndtr differences, or
    adaptive quadrature of the density relative to its value at the midpoint for short
    intervals (where the CDF difference cancels)."""
    if a == b:
        return -0.5 * ((x - a) / s) ** 2 - 0.5 * math.log(2 * math.pi) - math.log(s)
    lo, hi = (x - b) / s, (x - a) / s
    c = 0.5 * (lo + hi)
    if hi - lo < 0.5:
        val, _ = integrate.quad(lambda u: np.exp(-0.5 * (u - c) * (u + c)), lo, hi, epsabs=0, epsrel=2e-14)
        return -0.5 * c * c - 0.5 * math.log(2 * math.pi) + math.log(val) - math.log(b - a)
    if lo >= 0:
        lo, hi = -hi, -lo
    if hi <= 0:
        la, lb = special.log_ndtr(lo), special.log_ndtr(hi)
        return lb + math.log(-math.expm1(la - lb)) - math.log(b - a)
    return math.log(special.ndtr(hi) - special.ndtr(lo)) - math.log(b - a)


def test_uniform_likelihood_rows_against_scipy():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(0, 1, 40), [0.0, 1e-9, 12.0, -9.0, 0.31]])
    s = np.concatenate([rng.uniform(0.05, 1.0, 40), [0.3, 0.01, 0.4, 1.5, 0.001]])
    grid = 0.004 * np.sqrt(2.0) ** np.arange(20)  # 0.004 .. 3.7: narrow, medium and wide components
    a = np.concatenate([[0.0], -grid, np.zeros(20)])
    b = np.concatenate([[0.0], np.zeros(20), grid])
    L = np.empty((x.size, a.size))
    rowmax = np.empty(x.size)
    IK.uniform_lik_rows(x, s, a, b, L, rowmax)
    np.testing.assert_allclose(L.max(axis=1), 1.0, rtol=0, atol=4e-16)  # d * (1/max): one rounding
    worst = 0.0
    for j in range(x.size):
        for k in range(a.size):
            ref = reference_log_density(x[j], s[j], a[k], b[k])
            if ref - rowmax[j] < math.log(1e-200):
                assert L[j, k] == 0.0  # below the storage threshold, as in the ash kernels
                continue
            got = math.log(L[j, k]) + rowmax[j]
            # relative error of the density: rounding in erfc and in the Hermite series (~1e-15),
            # up to ~1e-13 deep in the tails where exp(-t^2/2) carries t^2 * eps (t ~ 30)
            worst = max(worst, abs(got - ref) / max(1.0, 1e-3 * abs(ref)))
    assert worst < 1e-12


@pytest.mark.parametrize("c,h", [(0.0, 0.04), (3.0, 0.01), (-48.0, 0.05), (400.0, 0.006), (1.0, 1e-9)])
def test_narrow_mass_series_against_quadrature(c, h):
    ref, _ = integrate.quad(lambda u: np.exp(-c * u - 0.5 * u * u), -h, h, epsabs=0, epsrel=2e-14)
    assert IK.narrow_mass(c, h) == pytest.approx(ref / (2 * h), rel=1e-13)


def test_anchored_coefficients_kernel_matches_its_numpy_twin():
    for t in (0.0, 1.3, -4.0, 37.0):
        e = np.empty(IK._SERIES_TERMS)
        IK.anchored_coefficients(t, e)
        m = np.arange(e.size)
        unit = np.eye(e.size)
        # twin: He_m(t) / (m + 1)! from NumPy's probabilists' Hermite polynomials
        twin = np.array([np.polynomial.hermite_e.hermeval(t, unit[i]) for i in m]) / special.factorial(m + 1)
        np.testing.assert_allclose(e, twin, rtol=1e-13, atol=1e-300)


# (t, w, side): the corners of the region where the kernel uses the series (w < 0.1, |t| w < 0.5)
@pytest.mark.parametrize("t,w", [(0.0, 0.099), (1e-9, 1e-9), (4.9, 0.099), (-4.9, 0.099), (-400.0, 0.00124),
                                 (39.0, 0.0125), (2.0, 0.05)])
@pytest.mark.parametrize("side", [1, -1])
def test_anchored_series_against_quadrature(t, w, side):
    """phi(t) w S(w) = Phi(t) - Phi(t - w) and phi(t) w S(-w) = Phi(t + w) - Phi(t)."""
    e = np.empty(IK._SERIES_TERMS)
    IK.anchored_coefficients(t, e)
    got = w * IK.anchored_series(e, side * w)
    # the integral relative to phi(t): exp(-t v -v^2/2) over [-w, 0] or [0, w] (v = u - t)
    lo, hi = (-w, 0.0) if side == 1 else (0.0, w)
    ref, _ = integrate.quad(lambda v: np.exp(-t * v - 0.5 * v * v), lo, hi, epsabs=0, epsrel=2e-14)
    # 18 terms leave a truncation error below 1e-19 here; the rest is rounding
    assert got == pytest.approx(ref, rel=1e-13)


def test_skipped_far_tails_do_not_change_the_mass():
    """The far tail is skipped only where the difference of tails rounds to the same value."""
    rng = np.random.default_rng(12)
    t0 = np.concatenate([[0.0, 1e-300], rng.normal(0, 3, 300), rng.uniform(-40, 40, 100)])
    checked = 0
    for t in t0:
        # far ends on either side, clustered around both thresholds (8.5 across 0, squares gap 76)
        reach = np.sqrt(t * t + 76.0)
        fars = np.concatenate([t + rng.uniform(-12, 12, 40), np.sign(t or 1.0) * (reach + rng.uniform(-1e-3, 1e-3, 5)),
                               rng.uniform(-8.6, -8.4, 3), rng.uniform(8.4, 8.6, 3)])
        for far in fars:
            lo, hi = min(t, far), max(t, far)
            if lo == hi:
                continue
            t_far = IK._anchored_far_tail(t, far)
            full = IK._tail(far)
            tail0 = IK._tail(t)
            pair = (t_far, tail0) if far < t else (tail0, t_far)
            ref = (full, tail0) if far < t else (tail0, full)
            assert IK._tail_pair_mass(lo, hi, *pair) == IK._tail_pair_mass(lo, hi, *ref)
            checked += t_far == 0.0 and full > 0.0
    assert checked > 100  # the skip happened, on tails that were not zero


def test_fitted_uniform_mixtures_equal_ash():
    """The batched, posterior-free fits give ash's prior (same model, same solver): weights and
    log likelihood of ash(..., mixture='halfuniform', prior='uniform', grange=...)."""
    rng = np.random.default_rng(4)
    problems = []
    for n in (300, 120, 40):
        se = rng.uniform(0.1, 0.5, n)
        beta = np.where(rng.random(n) < 0.2, rng.normal(0, 1.0, n), 0.0) + se * rng.normal(size=n)
        problems.append((beta, se, (float(beta.min()), float(beta.max()))))
    fits = impact._fit_uniform_mixtures(problems)
    for (beta, se, grange), (w, a, b, loglik, converged) in zip(problems, fits):
        ref = ash(beta, se, mixture="halfuniform", pointmass=True, prior="uniform", grange=grange)
        np.testing.assert_array_equal(a, ref.prior.a)
        np.testing.assert_array_equal(b, ref.prior.b)
        assert converged and ref.converged
        # the likelihoods differ by rounding (linear vs log space, ~1e-15); both solvers stop at a
        # Frank-Wolfe gap of 1e-8, i.e. within n * 1e-8 of the optimal log likelihood
        assert loglik == pytest.approx(ref.loglik, abs=beta.size * 1e-8)
        ti = impact.mixture_moments(w, a, b)["transcriptome_wide_impact"]
        assert ti == pytest.approx(impact.mixture_moments(ref.prior.pi, a, b)["transcriptome_wide_impact"], rel=1e-6)


def test_stalled_mixsqp_restarts_and_reaches_the_kkt_condition():
    """A TRADE refit (non-significant genes of a simulated perturbation) on which ash's mix-SQP,
    before the restart rule, stopped after 49 iterations above its tolerance (no descent
    direction): it must now meet the optimality condition, checked in NumPy from ash's own
    log-density matrix."""
    rng = np.random.default_rng(0)
    shape = (8, 10000)  # the draws of benchmarks/impact.py's simulate(8, 10000); row 5 stalled
    se = rng.uniform(0.05, 0.6, shape)
    frac = rng.uniform(0.01, 0.3, (8, 1))
    scale = rng.uniform(0.1, 1.5, (8, 1))
    affected = rng.random(shape) < frac
    beta = np.where(affected, rng.normal(0, 1, shape) * scale, 0.0) + se * rng.normal(size=shape)
    x, s = beta[5], se[5]
    keep = ~(2 * special.ndtr(-np.abs(x / s)) < 0.05 / x.size)  # not Bonferroni-significant
    res = ash(x[keep], s[keep], mixture="halfuniform", pointmass=True, prior="uniform",
              grange=(float(x.min()), float(x.max())))
    assert res.converged
    log_lik = res.prior.log_component_density(x[keep], s[keep])
    lik = np.exp(log_lik - log_lik.max(axis=1, keepdims=True))
    grad = (lik / (lik @ res.prior.pi)[:, None]).mean(axis=0)  # d/dpi of the mean log likelihood
    # KKT of the simplex problem: grad_k <= 1 everywhere (= 1 on the support); the solver's gap
    # 1e-8, plus rounding of this recomputation
    assert grad.max() - 1.0 <= 2e-8


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("m", [3, 11])
def test_objective_pass_matches_its_numpy_twin(parallel, m):
    """f, g and the Hessian block of mix-SQP's pass against their formulas in NumPy: rows of
    ordinary densities (the running products of u, flushed below 1e-200), rows whose u is below
    1e-100 (logged alone), a Dirichlet penalty, a sparse x and a chunk boundary."""
    from shrinkpert.effects import _mixture_kernels as MK

    rng = np.random.default_rng(3)
    n, K = 5003, 12
    L = rng.uniform(0.0, 1.0, (n, K))
    L[:, 0] = 1.0
    L[::97] *= 1e-120  # some rows far below the others (scaled rows need not reach 1 here)
    pen = np.zeros(K)
    pen[0] = 4.0
    x = rng.uniform(0.1, 1.0, K)
    x[[2, 5]] = 0.0
    x /= x.sum()
    idx = np.r_[np.flatnonzero(x > 0)[:m], np.zeros(K, dtype=np.int64)][:K].astype(np.int64)
    chunk = 2048
    nchunks = -(-n // chunk)
    gp, Hp, op = np.empty((nchunks, K)), np.empty((nchunks, K, K)), np.empty(nchunks)
    g, H = np.empty(K), np.zeros((K, K))
    f = MK.objective_pass(L, pen, x, 0.0, idx, m, True, False, parallel, chunk, gp, Hp, op, g, H)

    u = L @ x
    W = n + pen.sum()
    sel = idx[:m]
    assert f == pytest.approx(-(np.log(u).sum() + pen[0] * np.log(x[0])) / W, rel=1e-13)
    pen_grad = np.zeros(K)
    pen_grad[0] = pen[0] / x[0]  # the only penalised component
    np.testing.assert_allclose(g, -(L.T @ (1.0 / u) + pen_grad) / W, rtol=1e-12)
    B = L[:, sel] / u[:, None]
    ref = B.T @ B
    ref[sel == 0, sel == 0] += pen[0] / x[0] ** 2
    np.testing.assert_allclose(H[:m, :m], ref / W, rtol=1e-12)


def test_clip_normalize_kernel_matches_its_numpy_twin():
    from shrinkpert.effects._mixture_kernels import clip_normalize

    for x in (np.array([0.2, -1e-12, 0.5, 0.3]), np.random.default_rng(3).normal(size=40)):
        x[0] = abs(x[0]) + 0.1  # at least one positive weight
        expected = np.maximum(x, 0.0) / np.maximum(x, 0.0).sum()
        got = x.copy()
        clip_normalize(got)
        np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)


def test_active_set_qp_on_nearly_collinear_components():
    """The QP of a mix-SQP step on a half-uniform likelihood (neighbouring narrow components have
    almost equal columns, so the Hessian is nearly singular) must stop at its solution after a
    few active-set changes. The earlier rule (stop when the next step is short) took steps of
    rounding size here until its limit of 50 (m + 1) iterations."""
    from shrinkpert.effects import _mixture_kernels as MK

    rng = np.random.default_rng(4)
    n = 500
    s = rng.uniform(0.05, 0.6, n)
    beta = np.where(rng.random(n) < 0.2, rng.normal(0, 1, n), 0.0) + s * rng.normal(size=n)
    a, b = impact._components_for(beta, s, (float(beta.min()), float(beta.max())))
    L = np.empty((n, a.size))
    IK.uniform_lik_rows(beta, s, a, b, L, np.empty(n))
    m = a.size
    x = np.full(m, 1.0 / m)
    u = L @ x
    H = (L / u[:, None] ** 2).T @ L / n  # Hessian and gradient of -mean log(L x)
    g = -(L / u[:, None]).sum(axis=0) / n
    c = g + 1.0 - H @ x  # the QP in y of mix-SQP: 1/2 (y - x)'H(y - x) + (g + 1)'(y - x)
    assert np.linalg.cond(H) > 1e12
    y = x.copy()
    n_iter = MK.qp_active_set(H.copy(), c.copy(), y, m, 1e-14, 50 * (m + 1))
    assert n_iter <= 2 * m
    q = lambda v: 0.5 * v @ H @ v + c @ v  # noqa: E731
    ref = optimize.minimize(q, x, jac=lambda v: H @ v + c, bounds=[(0, None)] * m, method="L-BFGS-B",
                            options=dict(ftol=1e-16, gtol=1e-13, maxiter=20000))
    # at least as low as L-BFGS-B, to rounding of q (~1e-16)
    assert y.min() >= 0 and q(y) <= ref.fun + 1e-14
