"""Noise ceiling against a simulation with known means: cells drawn, pseudobulks scored directly.

Every check compares :func:`noise_ceiling` with a Monte Carlo expectation computed here with
NumPy/SciPy formulas over R = 300 replicate screens whose population means and variances are
known. Cells are skewed (centred Gamma(4)), so the normal-pseudobulk model is itself under test.
Tolerance: 4 Monte Carlo standard errors (a failure rate of ~6e-5 per comparison when the formula
is right); for the second-order Pearson/cosine expansion nothing is added — the truncation error
was below 1 SE on the strong-signal perturbations used.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import r2_score

from shrinkpert.calibration.ceiling import CLOSED_FORMS, noise_ceiling
from shrinkpert.errors import InputError

G, P, N, NC, R = 100, 4, 40, 200, 300
SIGNAL = np.array([0.05, 0.1, 0.2, 0.4])  # effect SD per perturbation: weak ... strong


@pytest.fixture(scope="module")
def screens():
    rng = np.random.default_rng(20261203)
    mu_c = rng.gamma(2.0, 0.5, G)
    sd_c = rng.uniform(0.2, 0.8, G)
    mu = mu_c + rng.normal(0.0, 1.0, (P, G)) * SIGNAL[:, None]
    sd = sd_c[None, :] * np.sqrt(rng.uniform(0.8, 1.5, (P, G)))

    def cells(mean, scale, size):
        return mean + scale * (rng.gamma(4.0, 1.0, size) - 4.0) / 2.0  # mean 0, variance scale**2, skewed

    pert = [cells(mu[:, None, :], sd[:, None, :], (P, N, G)) for _ in range(R)]
    ctrl = [cells(mu_c, sd_c, (NC, G)) for _ in range(R)]
    return {
        "mu": mu, "var": sd**2, "mu_c": mu_c, "var_c": sd_c**2,
        "xb": np.stack([c.mean(axis=1) for c in pert]), "vb": np.stack([c.var(axis=1, ddof=1) for c in pert]),
        "xc": np.stack([c.mean(axis=0) for c in ctrl]), "vc": np.stack([c.var(axis=0, ddof=1) for c in ctrl]),
    }


def pearson(a, b, w):
    w = w / w.sum()
    a = a - (w * a).sum(-1, keepdims=True)
    b = b - (w * b).sum(-1, keepdims=True)
    return (w * a * b).sum(-1) / np.sqrt((w * a * a).sum(-1) * (w * b * b).sum(-1))


def cosine(a, b, w):
    return (w * a * b).sum(-1) / np.sqrt((w * a * a).sum(-1) * (w * b * b).sum(-1))


SCORES = {
    "mse_delta": lambda a, b, w: (w * (a - b) ** 2).sum(-1) / w.sum(),
    "mae_delta": lambda a, b, w: (w * np.abs(a - b)).sum(-1) / w.sum(),
    "pearson_delta": pearson,
    "cosine_delta": cosine,
}


def monte_carlo(values):
    return values.mean(axis=0), values.std(axis=0, ddof=1) / np.sqrt(len(values))


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("metric", ["mse_delta", "mae_delta", "pearson_delta", "cosine_delta"])
def test_population_control_closed_forms_match_simulation(screens, metric, weighted):
    s = screens
    w = np.random.default_rng(5).uniform(0.0, 2.0, G) if weighted else np.ones(G)
    pred = np.broadcast_to(s["mu"] - s["mu_c"], (R, P, G))  # the true effect
    truth = s["xb"] - s["xc"][:, None, :]
    mc, se = monte_carlo(SCORES[metric](pred, truth, w))
    c = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, metric, weights=w if weighted else None,
                      delta_reference="population_control", truth_is_estimate=False)
    assert c.method == "closed_form"
    strong = slice(1, None) if metric in ("pearson_delta", "cosine_delta") else slice(None)
    np.testing.assert_array_less(np.abs(c.expected - mc)[strong], 4 * se[strong])


@pytest.mark.parametrize("metric", ["mse_delta", "pearson_delta"])
def test_observed_control_ceiling_is_conditional_on_the_control(screens, metric):
    s = screens
    w = np.ones(G)
    pred = s["mu"][None] - s["xc"][:, None, :]  # both deltas against the same observed control
    truth = s["xb"] - s["xc"][:, None, :]
    mc, se = monte_carlo(SCORES[metric](pred, truth, w))
    conditional = np.mean([noise_ceiling(s["mu"], s["var"], [N] * P, s["xc"][r], s["var_c"], NC, metric,
                                         truth_is_estimate=False).expected for r in range(R)], axis=0)
    np.testing.assert_array_less(np.abs(conditional - mc)[1:], 4 * se[1:])


def test_mean_metrics_ignore_the_control(screens):
    s = screens
    mc, se = monte_carlo(((s["xb"] - s["mu"][None]) ** 2).mean(-1))
    c = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "mse", truth_is_estimate=False)
    np.testing.assert_array_less(np.abs(c.expected - mc), 4 * se)
    np.testing.assert_allclose(c.expected, (s["var"] / N).mean(axis=1), rtol=1e-14)  # sum_g w_g sigma^2/n
    mae = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "mae", truth_is_estimate=False)
    mc, se = monte_carlo(np.abs(s["xb"] - s["mu"][None]).mean(-1))
    np.testing.assert_array_less(np.abs(mae.expected - mc), 4 * se)


def test_plug_in_estimates_are_denoised(screens):
    """From each replicate's own observed means and variances, the de-noised ceiling is unbiased."""
    s = screens
    pred = s["mu"][None] - s["xc"][:, None, :]
    mc, se = monte_carlo(pearson(pred, s["xb"] - s["xc"][:, None, :], np.ones(G)))
    est = {flag: np.array([noise_ceiling(s["xb"][r], s["vb"][r], [N] * P, s["xc"][r], s["vc"][r], NC, "pearson_delta",
                                         truth_is_estimate=flag).expected for r in range(R)]) for flag in (True, False)}
    m, e = monte_carlo(est[True][:, 1:])
    np.testing.assert_array_less(np.abs(m - mc[1:]), 4 * np.hypot(se[1:], e))
    raw, _ = monte_carlo(est[False])
    assert (raw[:3] - mc[:3] > 10 * se[:3]).all()  # without de-noising the signal the ceiling is far too high


def test_bootstrap_agrees_with_closed_form_and_handles_any_metric(screens):
    s = screens
    kw = dict(delta_reference="population_control", truth_is_estimate=False)
    closed = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "pearson_delta", **kw)
    boot = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "pearson_delta", method="bootstrap",
                         n_draws=300, seed=1, **kw)
    assert boot.method == "bootstrap"
    np.testing.assert_array_less(np.abs(boot.expected - closed.expected)[1:], 4 * boot.mc_se[1:])
    r2 = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "r2_delta", n_draws=300, seed=2,
                       perturbations=list("ABCD"), **kw)
    assert r2.method == "bootstrap" and r2.to_frame()["perturbation"].tolist() == list("ABCD")
    truth, pred = s["xb"] - s["xc"][:, None, :], s["mu"] - s["mu_c"]
    sim = 1 - ((truth - pred) ** 2).sum(-1) / ((truth - truth.mean(-1, keepdims=True)) ** 2).sum(-1)
    np.testing.assert_allclose(sim[0], [r2_score(truth[0, p], pred[p]) for p in range(P)], rtol=1e-12)  # = sklearn
    mc, se = monte_carlo(sim)
    np.testing.assert_array_less(np.abs(r2.expected - mc), 4 * np.hypot(se, r2.mc_se))
    spear = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "spearman_delta", n_draws=10, seed=2,
                          **kw)
    # Spearman = Pearson of ranks (no ties in continuous draws), ranks by scipy
    ranks_true = stats.rankdata(s["xb"] - s["xc"][:, None, :], axis=-1)
    ranks_pred = np.broadcast_to(stats.rankdata(s["mu"] - s["mu_c"], axis=-1), ranks_true.shape)
    mc, se = monte_carlo(pearson(ranks_pred, ranks_true, np.ones(G)))
    np.testing.assert_array_less(np.abs(spear.expected - mc), 4 * np.hypot(se, spear.mc_se))
    once, again = (noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "r2_delta", n_draws=5, seed=9,
                                 **kw) for _ in range(2))
    np.testing.assert_array_equal(again.expected, once.expected)  # seeded
    pds = noise_ceiling(s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC, "discrimination_score", n_draws=20,
                        **kw)
    assert ((pds.expected > 0) & (pds.expected <= 1)).all()


def test_errors_name_the_argument(screens):
    s = screens
    args = (s["mu"], s["var"], [N] * P, s["mu_c"], s["var_c"], NC)
    with pytest.raises(InputError, match="no closed form"):
        noise_ceiling(*args, "spearman_delta", method="closed_form")
    with pytest.raises(InputError, match="metric='nope'"):
        noise_ceiling(*args, "nope")
    with pytest.raises(InputError, match="delta_reference="):
        noise_ceiling(*args, "mse", delta_reference="centroid")
    with pytest.raises(InputError, match="truth_var has shape"):
        noise_ceiling(s["mu"], s["var"][:, :5], [N] * P, s["mu_c"], s["var_c"], NC, "mse")
    with pytest.raises(InputError, match="n_draws"):
        noise_ceiling(*args, "r2_delta", n_draws=1)
    assert set(CLOSED_FORMS) == {"mse", "mae", "mse_delta", "mae_delta", "pearson_delta", "cosine_delta"}


def test_weak_flag_where_the_variance_cancels_to_a_negative(rng):
    """Weights on one gene: the variance 4l + q is 0 in exact arithmetic and comes out slightly
    negative by cancellation; its root is 0 (no RuntimeWarning, not a NaN that flags the row weak)."""
    import warnings

    from shrinkpert.calibration.ceiling import _ratio_ceiling

    w = np.array([[1.0, 1.35096505e-10, 7.21488340e-10]])
    w = w / w.sum()
    a = np.array([[0.2146591225063409, 0.3553727090399214, -0.6538286094183394]])
    v = np.array([[1.7900268852631005, 1.8746826803168744, 0.7798108737472333]])
    c, u = a - (w * a).sum(axis=1, keepdims=True), w * v
    variance = 4.0 * (w * w * c * c * v).sum(axis=1) + 2.0 * (
        (u * u).sum(axis=1) - 2.0 * (w * u * u).sum(axis=1) + (w * u).sum(axis=1) ** 2)
    assert variance[0] < 0  # the case this test is about
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, weak = _ratio_ceiling(a, v, w, centred=True, debias_v=None)
    signal = (w * c * c).sum(axis=1)
    np.testing.assert_array_equal(weak, ~(signal >= 0.0))
