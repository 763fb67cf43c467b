"""Properties of adaptive shrinkage that hold for any data (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shrinkpert.effects.ash import ash

SETTINGS = settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def estimates(draw, min_size=3, max_size=40):
    n = draw(st.integers(min_size, max_size))
    x = draw(st.lists(st.floats(-8, 8, allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    s = draw(st.lists(st.floats(0.05, 3.0, allow_nan=False, allow_infinity=False), min_size=n, max_size=n))
    return np.array(x), np.array(s)


@SETTINGS
@given(data=estimates(), mixture=st.sampled_from(["normal", "uniform"]), pointmass=st.booleans())
def test_zero_centred_priors_never_increase_magnitude(data, mixture, pointmass):
    x, s = data
    res = ash(x, s, mixture=mixture, pointmass=pointmass)
    # each component's posterior mean lies between 0 and x (scale mixture of normals: x σ²/(σ²+s²);
    # symmetric uniform: a normal centred at x truncated to [-a, a]); only rounding can overshoot
    assert np.all(np.abs(res.posterior_mean) <= np.abs(x) * (1 + 1e-12) + 1e-14)
    assert np.all(res.posterior_mean * x >= -1e-14)


@SETTINGS
@given(data=estimates(), mixture=st.sampled_from(["normal", "uniform", "halfuniform", "halfnormal"]))
def test_lfsr_is_at_least_lfdr(data, mixture):
    x, s = data
    res = ash(x, s, mixture=mixture)
    # lfsr = lfdr + min(P(β<0), P(β>0)) up to rounding of 1 - NegativeProb
    assert np.all(res.lfsr >= res.lfdr - 1e-12)
    assert np.all((res.lfsr >= 0) & (res.lfsr <= 1 + 1e-12))
    np.testing.assert_allclose(res.negative_prob + res.positive_prob + res.lfdr, 1.0, atol=1e-9)


@SETTINGS
@given(data=estimates(min_size=5), mixture=st.sampled_from(["normal", "uniform", "halfuniform"]),
       xnew=st.floats(-5, 5))
def test_posterior_tends_to_prior_as_se_grows(data, mixture, xnew):
    x, s = data
    res = ash(np.append(x, xnew), np.append(s, 1e7), mixture=mixture)
    g = res.prior.prune(1e-10)
    # with s = 1e7 the likelihood is flat to ~(prior scale / s)^2 ~ 1e-12 relative
    assert abs(res.posterior_mean[-1] - g.mean()) <= 1e-6 * (1 + abs(g.mean()))
    assert abs(res.posterior_sd[-1] - np.sqrt(g.var())) <= 1e-6 * (1 + np.sqrt(g.var()))
    assert abs(res.lfdr[-1] - g.pi0) <= 1e-6


@SETTINGS
@given(data=estimates(), seed=st.integers(0, 2**32 - 1),
       mixture=st.sampled_from(["normal", "uniform", "halfuniform"]))
def test_permutation_equivariance(data, seed, mixture):
    x, s = data
    perm = np.random.default_rng(seed).permutation(x.size)
    a = ash(x, s, mixture=mixture)
    b = ash(x[perm], s[perm], mixture=mixture)
    # the grid is order-free; sums over observations are re-ordered, so the optimiser path
    # changes by rounding only and ends at the same optimum (gap <= 1e-8)
    assert abs(a.penloglik - b.penloglik) <= 1e-6
    for attr in ("posterior_mean", "posterior_sd", "lfsr", "lfdr"):
        np.testing.assert_allclose(getattr(b, attr), getattr(a, attr)[perm], atol=1e-4)
    # q-values of tied lfdr are assigned in input order (as in ashr): compare them as multisets
    np.testing.assert_allclose(np.sort(b.qvalue), np.sort(a.qvalue), atol=1e-4)
