r"""The two-state mixture of :func:`~shrinkpert.ontarget.classify_escape` (private).

Signature effects (quasi-Poisson rates per perturbation and gene, shrunk with ash) and the
per-perturbation fit of the penetrance :math:`\pi` by profile likelihood over a grid, with each
cell's log likelihood ratio of the perturbed vs the unperturbed state.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import ShrinkpertWarning

_ASH_TOL, _ASH_MAX_ITER, _ASH_ROWS = 1e-5, 200, 128  # ash of the signature effects, in row batches
_CHI2_95 = 3.841458820694124  # chi-square(1) 95% quantile: likelihood-ratio interval
_R_LOW, _R_HIGH = 0.01, 100.0  # bounds on the perturbed-state ratio of a gene
_MIN_COUNTS_FOR_DISPERSION = 100


# =========================================================================== signature effects


def _dispersion(sums, squares, lib_sum, lib_sq):
    r"""NB dispersion per gene by moments pooled over groups, floored for sparse genes.

    Within group :math:`k` (rate :math:`\mu_k = X_k/L_k`), :math:`\sum_i (x_i - \mu_k l_i)^2
    \approx \sum_i x_i^2 - \mu_k^2 \sum_i l_i^2` has expectation :math:`\mu_k L_k + \phi
    \mu_k^2 \sum_i l_i^2`, so :math:`\hat\phi = \sum_k (\cdot - \mu_k L_k) / \sum_k \mu_k^2
    \sum_i l_i^2`. Genes with fewer than 100 counts in total cannot inform their own
    dispersion: they get at least the median of the better-measured genes (never Poisson by
    default, which would make chance differences look significant).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(lib_sum[:, None] > 0, sums / lib_sum[:, None], 0.0)
        resid = squares - rate**2 * lib_sq[:, None] - rate * lib_sum[:, None]
        phi = resid.sum(0) / (rate**2 * lib_sq[:, None]).sum(0)
    phi = np.clip(np.nan_to_num(phi, nan=0.0, posinf=0.0), 0.0, 1e3)
    total = sums.sum(0)
    rich = total >= _MIN_COUNTS_FOR_DISPERSION
    floor = float(np.median(phi[rich])) if rich.any() else 0.0
    return np.where(rich, phi, np.maximum(phi, floor))


def _rate_effects(sums, lib_sum, lib_sq, control_row, phi):
    r"""Log rate ratios vs control and their standard errors (perturbations × genes).

    :math:`\log\hat R_{pg} = \log\frac{X_{pg} + 1/2}{L_p} - \log\frac{X_{cg} + 1/2}{L_c}` with
    group sums :math:`X` and summed relative library sizes :math:`L`; with the pooled rate
    :math:`\bar\mu` and the dispersion :math:`\phi_g` (:func:`_dispersion`), the Wald error
    :math:`\mathrm{SE}_W^2 = \sum_{k \in \{p, c\}} 1/(\bar\mu L_k) + \phi_g \sum_{i\in k} l_i^2 / L_k^2`.
    A log ratio of few counts (worst: none) is far more extreme than the evidence behind it, so
    the score statistic :math:`z = (X_p - L_p X_c / L_c)/\sqrt{V_0}`, with its null variance
    :math:`V_0 = \bar\mu L_p + \phi\bar\mu^2\sum_p l^2 + (L_p/L_c)^2(\bar\mu L_c +
    \phi\bar\mu^2\sum_c l^2)`, caps the evidence:
    :math:`\mathrm{SE} = \max(\mathrm{SE}_W, |\log\hat R|/|z|)`.
    """
    x_c, l_c, l2_c = sums[control_row], lib_sum[control_row], lib_sq[control_row]
    mu = (x_c + 0.5) / l_c
    rows = np.delete(np.arange(sums.shape[0]), control_row)
    x_p, l_p, l2_p = sums[rows], lib_sum[rows][:, None], lib_sq[rows][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        log_r = np.log((x_p + 0.5) / l_p) - np.log(mu)[None, :]
        pooled = (x_p + x_c[None, :] + 1.0) / (l_p + l_c)
        se = np.sqrt(1 / (pooled * l_p) + phi * l2_p / l_p**2 + 1 / (pooled * l_c) + phi * l2_c / l_c**2)
        var0 = (pooled * l_p + phi * pooled**2 * l2_p
                + (l_p / l_c) ** 2 * (pooled * l_c + phi * pooled**2 * l2_c))
        z = (x_p - l_p * x_c[None, :] / l_c) / np.sqrt(var0)
        se = np.where(np.abs(z) > 0, np.maximum(se, np.abs(log_r) / np.abs(z)), se)
    se = np.where(l_p > 0, se, np.nan)
    return log_r, se, mu


def _shrink_rows(effect: np.ndarray, se: np.ndarray, exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive shrinkage of each row (ash, normal mixture, one prior per row): mean, sd, lfsr.

    All rows in one parallel call of the kernel behind
    :func:`~shrinkpert.effects.shrink.shrink_effects`, with the optimiser tolerance relaxed to
    ``1e-5`` (at most 200 mix-SQP iterations): signature genes only need lfsr to about 0.005,
    and at the default ``1e-8`` mix-SQP fails to converge on some rows whose genes are mostly
    inside the null segment (exact zeros), at ~35× the cost. Excluded or unusable entries, and
    rows with fewer than 2 usable entries, get posterior mean 0, sd NaN and lfsr 1.
    """
    usable = ~exclude & np.isfinite(effect) & np.isfinite(se) & (se > 0)
    usable &= (usable.sum(axis=1) >= 2)[:, None]
    x = np.where(usable, effect, np.nan)
    s = np.where(usable, se, np.nan)
    pm = np.zeros_like(x)
    psd = np.full_like(x, np.nan)
    lfsr = np.ones_like(x)
    rows = np.flatnonzero(usable.any(axis=1))
    if len(rows) == 0:
        return pm, psd, lfsr
    from ..effects import ash_batch

    post = tuple(np.empty((len(rows), x.shape[1])) for _ in range(3))
    for start in range(0, len(rows), _ASH_ROWS):  # bounded memory; rows are independent problems
        part = rows[start:start + _ASH_ROWS]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShrinkpertWarning)
            fit = ash_batch(x[part], s[part], tol=_ASH_TOL, max_iter=_ASH_MAX_ITER)
        for out, value in zip(post, (fit.posterior_mean, fit.posterior_sd, fit.lfsr)):
            out[start:start + len(part)] = value
    ok = usable[rows]
    pm[rows] = np.where(ok, post[0], 0.0)
    psd[rows] = np.where(ok, post[1], np.nan)
    lfsr[rows] = np.where(ok, post[2], 1.0)
    return pm, psd, lfsr


# =========================================================================== the mixture


def _zinb_part(x, mean, theta, pi0):
    """Mean-dependent part of the ZINB log pmf (differences between means are exact)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(theta) - np.log(theta + mean)
        nonzero = x * (np.log(mean) - np.log(theta + mean)) + theta * log_ratio
        zero = np.log(pi0 + (1 - pi0) * np.exp(theta * log_ratio))
    return np.where(x > 0, nonzero, zero)


_STRENGTH_PRIOR_SD = 0.5  # per-guide signature strength ~ N(1, 0.5^2) before the guide's own evidence
_STRENGTH_MAX = 3.0


def _guide_ratios(sig, nu):
    r"""Per-guide group ratios of the signature genes from one strength per guide.

    Relative to the unperturbed state :math:`r^0_g = e^{\nu h_g}`, guide :math:`k`'s log ratio is
    modelled as :math:`s_k` times the perturbation's, :math:`\log R_{kg} - \log r^0_g = s_k
    (\log R_g - \log r^0_g)`. :math:`\hat s_k` is the quasi-Poisson weighted regression of the
    guide's raw log ratios :math:`o_{kg} = \log((X_{kg} + 1/2)/(L_k\mu_g)) - \log r^0_g` on
    :math:`d_g = \log R_g - \log r^0_g` (weights :math:`w_{kg} = L_k \mu_g R_g / d_g`, the
    expected counts over the over-dispersion), shrunk towards 1 with a :math:`N(1, 0.5^2)` prior
    and clipped to :math:`[0, 3]`: :math:`s_k = (\sum_g w_{kg} o_{kg} d_g + 4)/(I_k + 4)`,
    :math:`I_k = \sum_g w_{kg} d_g^2`.

    Also returns the first-order change of :math:`s_k` when cell :math:`i` leaves its guide,
    :math:`\delta_i = s_k - s_k^{(-i)} = \sum_g x_{ig} c_{kg} - l_i b_k` with
    :math:`c_{kg} = w_{kg} d_g / ((X_{kg} + 1/2)(I_k + 4))` and
    :math:`b_k = \sum_g w_{kg} d_g / (L_k (I_k + 4))` (0 where :math:`s_k` is clipped).
    """
    base = nu * sig["h"]
    dg = np.log(sig["ratio"]) - base
    lsum_g = sig["lsum_g"][:, None]
    prior = 1.0 / _STRENGTH_PRIOR_SD**2
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.log((sig["xsum_g"] + 0.5) / (lsum_g * sig["mu"][None, :])) - base[None, :]
        w = lsum_g * (sig["mu"] * sig["ratio"] / sig["d"])[None, :]
        denom = (w * dg * dg).sum(axis=1) + prior
        raw = np.where(lsum_g[:, 0] > 0, ((w * own * dg).sum(axis=1) + prior) / denom, 1.0)
        coef_x = w * dg / ((sig["xsum_g"] + 0.5) * denom[:, None])
        coef_l = (w * dg).sum(axis=1) / (lsum_g[:, 0] * denom)
    raw = np.nan_to_num(raw, nan=1.0)
    strength = np.clip(raw, 0.0, _STRENGTH_MAX)
    inside = (strength == raw) & (lsum_g[:, 0] > 0)
    coef_x = np.where(inside[:, None], np.nan_to_num(coef_x), 0.0)
    coef_l = np.where(inside, np.nan_to_num(coef_l), 0.0)
    return np.exp(base[None, :] + strength[:, None] * dg[None, :]), strength, dg, coef_x, coef_l


def _shrink_strengths(strength, coef_x, coef_l, sig, guide_of_cell):
    r"""Empirical-Bayes shrinkage of the guides' relative strengths towards the perturbation's (1).

    A guide's strength :math:`\hat s_k` (:func:`_guide_ratios`) varies from cell to cell far more
    than its regression weights say: genes of one cell move together (library size, cell state),
    counts are over-dispersed, and by chance one guide's cells hold more escapers than another's.
    Its sampling variance is therefore taken from its cells, by the infinitesimal jackknife:
    :math:`v_k = \sum_{i \in k} (\delta_i - \bar\delta_k)^2`, with :math:`\delta_i` the
    first-order change of :math:`\hat s_k` when cell :math:`i` leaves. The strengths are measured
    against the perturbation's *shrunken* ratio, so exchangeable guides share a common strength
    :math:`\bar s = \sum_k \hat s_k v_k^{-1} / \sum_k v_k^{-1}` (above 1 by as much as ash shrank
    the signature) and only a guide's strength relative to it, :math:`\hat s_k / \bar s`, is a
    guide effect. Their variance between guides is DerSimonian and Laird's moment estimate
    :math:`\tau^2 = \max(0, (Q - (K - 1)) / (\sum_k u_k^{-1} - \sum_k u_k^{-2} / \sum_k u_k^{-1}))`,
    :math:`Q = \sum_k (\hat s_k / \bar s - 1)^2 / u_k`, :math:`u_k = v_k / \bar s^2`, over the
    :math:`K` guides with at least 2 cells, and each guide's strength is
    :math:`s_k = 1 + B_k (\hat s_k / \bar s - 1)`, :math:`B_k = \tau^2/(\tau^2 + u_k)`
    (:math:`\delta_i` scaled by :math:`B_k / \bar s`). Guides no more different than their cells
    allow (:math:`\tau^2 = 0`) all get strength 1: the single perturbed state of
    ``guide_strength=False``.
    """
    n_guides = len(strength)
    delta = np.einsum("ij,ij->i", sig["xs"], coef_x[guide_of_cell]) - sig["lib"] * coef_l[guide_of_cell]
    n = np.bincount(guide_of_cell, minlength=n_guides)
    mean = np.bincount(guide_of_cell, weights=delta, minlength=n_guides) / np.maximum(n, 1)
    v = np.bincount(guide_of_cell, weights=(delta - mean[guide_of_cell]) ** 2, minlength=n_guides)
    ok = (n >= 2) & (v > 0)
    weight = np.zeros(n_guides)  # B_k
    relative = np.zeros(n_guides)  # s_k / s_bar - 1
    common = 1.0
    if ok.sum() >= 2 and (strength[ok] / v[ok]).sum() > 0:
        common = float((strength[ok] / v[ok]).sum() / (1.0 / v[ok]).sum())
        u = v[ok] / common**2
        relative[ok] = strength[ok] / common - 1.0
        q = float((relative[ok] ** 2 / u).sum())
        tau2 = max(0.0, (q - (ok.sum() - 1)) / ((1 / u).sum() - (1 / u**2).sum() / (1 / u).sum()))
        weight[ok] = tau2 / (tau2 + u)
    scale = weight / common
    return 1.0 + weight * relative, coef_x * scale[:, None], coef_l * scale


def _signature_llr(sig, rows, ratio, strength, nu, pis, loo=None):
    r"""Signature part of the per-cell log likelihood ratio (cells ``rows``) over the penetrance grid.

    ``ratio`` is the group ratio that fixes the perturbed state of these cells and ``strength``
    its derivative in log space with respect to the perturbation's ratio (1 without guides), so
    the first-order leave-one-out correction follows the cell's influence on the perturbation's
    ratio. ``loo = (delta, dg)`` adds the first-order correction for the cell's influence on its
    guide's strength: :math:`-\delta_i\,\partial\lambda_i/\partial s` with
    :math:`\partial r_g/\partial s = R_{kg} d_g/\pi` on unclipped genes.
    """
    xs, lib, mu, d = sig["xs"][rows], sig["lib"][rows], sig["mu"], sig["d"]
    r0 = np.exp(nu * sig["h"])[:, None]
    num = ratio[:, None] - (1 - pis) * r0
    r = np.clip(num / pis, _R_LOW, _R_HIGH)
    free = (num / pis > _R_LOW) & (num / pis < _R_HIGH)
    xd = xs / d
    mud = (mu / d)[:, None]
    out = xd @ np.log(r / r0) - lib[:, None] * (mud * (r - r0)).sum(0)[None, :]
    # leave-one-out: first-order change of the cell's own contribution to the ratio
    jac = np.where(free, strength * sig["lam"][:, None] * ratio[:, None] / num, 0.0)
    a = xd / sig["xsum"]
    out += (lib[:, None] * (a @ (mu[:, None] * r * jac)) - (xs * a) @ jac
            - (lib**2 / sig["lsum"])[:, None] * (mud * r * jac).sum(0)[None, :]
            + (lib / sig["lsum"])[:, None] * (xd @ jac))
    if loo is not None:
        delta, dg = loo
        slope = np.where(free, (ratio * dg)[:, None] / pis, 0.0)  # dr/ds
        out -= delta[:, None] * (xd @ (slope / r) - lib[:, None] * (mud * slope).sum(0)[None, :])
    return out


def _fit_one(sig, tgt, grid, nus, n_guides, guide_of_cell):
    """Fit one perturbation: returns the chosen (nu, pi) with per-cell LLRs and the profile.

    ``sig``: dict with xs (n×s), lib (n), mu, d, ratio, lam, xsum, lsum, h (s), and optionally
    xsum_g (guides×s), lsum_g (guides) for a per-guide perturbed state — or None.
    ``tgt``: dict with x (n), lib (n), mu, theta, pi0, h, sign, xsum_g, lsum_g (per guide) — or None.
    """
    n = len(guide_of_cell)
    pis = grid[None, :]
    best = None
    profiles = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_pi, log_1mpi = np.log(grid), np.log1p(-grid)
        for nu in nus:
            llr = np.zeros((n, len(grid)))
            llr_t = np.zeros((n, len(grid)))
            l0 = np.zeros(n)
            if sig is not None:
                if "xsum_g" in sig:  # per-guide perturbed state: one signature strength per guide
                    _, strength, dg, coef_x, coef_l = _guide_ratios(sig, nu)
                    strength, coef_x, coef_l = _shrink_strengths(strength, coef_x, coef_l, sig, guide_of_cell)
                    ratio_g = np.exp(nu * sig["h"][None, :] + strength[:, None] * dg[None, :])
                    for k in range(ratio_g.shape[0]):
                        rows = guide_of_cell == k
                        if rows.any():
                            delta = sig["xs"][rows] @ coef_x[k] - sig["lib"][rows] * coef_l[k]
                            llr[rows] += _signature_llr(sig, rows, ratio_g[k], strength[k], nu, pis,
                                                        loo=(delta, dg))
                else:
                    llr += _signature_llr(sig, slice(None), sig["ratio"], 1.0, nu, pis)
                if nu:
                    eh = np.exp(sig["h"])
                    l0 += (sig["xs"] / sig["d"]) @ sig["h"] - sig["lib"] * ((sig["mu"] / sig["d"]) @ (eh - 1))
            if tgt is not None:
                x, lib, mu_t = tgt["x"], tgt["lib"], tgt["mu"]
                r0 = math.exp(nu * tgt["h"])
                g = guide_of_cell
                rest_x = tgt["xsum_g"][g] - x + 0.5
                rest_l = tgt["lsum_g"][g] - lib
                ratio_i = np.where(rest_l > 0, rest_x / (rest_l * mu_t),
                                   (tgt["xsum_g"][g] + 0.5) / (tgt["lsum_g"][g] * mu_t))
                rt = (ratio_i[:, None] - (1 - pis) * r0) / pis
                rt = np.clip(rt, _R_LOW, r0) if tgt["sign"] < 0 else np.clip(rt, r0, _R_HIGH)
                base = _zinb_part(x, mu_t * lib * r0, tgt["theta"], tgt["pi0"])
                llr_t = _zinb_part(x[:, None], (mu_t * lib)[:, None] * rt, tgt["theta"], tgt["pi0"]) - base[:, None]
                llr += llr_t
                l0 += base - _zinb_part(x, mu_t * lib, tgt["theta"], tgt["pi0"])
            ll = l0.sum() + np.logaddexp(log_1mpi[None, :], log_pi[None, :] + llr).sum(0)
            ll = np.nan_to_num(ll, nan=-np.inf)
            ll_null = float(l0.sum())
            profiles[nu] = (ll, ll_null, llr, llr_t)
            j = int(np.argmax(ll))
            cand = (ll[j], nu, j) if ll[j] > ll_null else (ll_null, nu, -1)
            if best is None or cand[0] > best[0]:
                best = cand
    ll_max, nu, j = best
    ll, ll_null, llr, llr_t = profiles[nu]
    half = _CHI2_95 / 2
    inside = ll >= ll_max - half
    pi = 0.0 if j < 0 else float(grid[j])
    ci_low = 0.0 if ll_null >= ll_max - half else float(grid[inside].min())
    ci_high = float(grid[inside].max()) if inside.any() else 0.0
    # perturbed state: at the estimate, or (estimate 0) at the best non-zero penetrance
    col = j if j >= 0 else int(np.argmax(ll))
    lr_col = llr[:, col]
    if pi > 0:
        with np.errstate(divide="ignore", over="ignore"):
            num = math.log(pi) + lr_col
            post = np.exp(num - np.logaddexp(math.log1p(-pi) if pi < 1 else -np.inf, num))
    else:
        post = np.zeros(n)
    # per guide: its own mixing weight, perturbed state held at the perturbation's fit
    guide_rows = []
    for k in range(n_guides):
        cells = guide_of_cell == k
        if not cells.any():
            guide_rows.append((np.nan, np.nan, np.nan))
            continue
        with np.errstate(divide="ignore", over="ignore"):
            llk = np.logaddexp(log_1mpi[None, :], log_pi[None, :] + lr_col[cells, None]).sum(0)
        llk = np.nan_to_num(llk, nan=-np.inf)
        jk = int(np.argmax(llk))
        top = max(float(llk[jk]), 0.0)
        in_k = llk >= top - half
        guide_rows.append((float(grid[jk]) if llk[jk] > 0 else 0.0,
                           0.0 if top <= half else float(grid[in_k].min()),
                           float(grid[in_k].max()) if in_k.any() else 0.0))
    return dict(nu=nu, pi=pi, ci_low=ci_low, ci_high=ci_high, post=post, llr=lr_col,
                llr_t=llr_t[:, col], lr_stat=2 * (ll_max - ll_null), guides=guide_rows)
