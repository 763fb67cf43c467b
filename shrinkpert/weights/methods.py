"""Raw gene scores of each weighting method (before normalising each row to sum 1).

Every function takes arrays for the perturbations being weighted and returns non-negative
scores of shape (n_perturbations, n_genes); :func:`shrinkpert.weights.gene_weights` turns them
into weights :math:`w_{pg} = a_{pg} / \\sum_h a_{ph}`. Each row is computed from that
perturbation's own inputs elementwise (plus, for ``deg_rest``, the pooled reference set), so a
row never depends on which other perturbations are in the batch.

Formulas, for perturbation :math:`p` and gene :math:`g`:

``shrunken``
    :math:`a_{pg} = |\\tilde\\beta_{pg}|^{k}\\,(1 - \\mathrm{lfsr}_{pg})` with the posterior mean
    :math:`\\tilde\\beta` of the perturbation's own shrunken effects against control (power
    :math:`k`, default 2).
``population``
    :math:`a_{pg} = |\\hat\\beta_{pg} / \\max(\\sigma_g, \\sigma_{\\min})|^{k}` with the population
    standard deviation :math:`\\sigma_g` of log1p expression from a
    :class:`~shrinkpert.reference.population.PopulationReference` (floor :math:`\\sigma_{\\min}`,
    default 0.1 × the median of the positive :math:`\\sigma_g`).
``deg_rest`` (Mejia et al. 2025)
    scanpy's ``t-test_overestim_var`` against the rest of the reference set :math:`R`:
    :math:`t_{pg} = (\\bar x_{pg} - \\bar x_{R \\setminus p, g}) /
    \\sqrt{v_{pg}/n_p + v_{R\\setminus p, g}/n_p}` (the rest's variance divided by the group's
    own size: "overestimated"), NaN → 0; then
    :math:`a_{pg} = \\big((|t_{pg}| - \\min_h |t_{ph}|) / (\\max_h |t_{ph}| - \\min_h |t_{ph}|)\\big)^2`.
``limma_t`` (Kaggle "Myllia" 2026)
    :math:`c_{pg} = \\min(|t_{pg}| + 0.1, 10)` with limma's moderated t of :math:`p` against
    control, :math:`c = 0` for the target gene, :math:`a_{pg} = c_{pg}^2`.
``uniform``
    :math:`a_{pg} = 1`.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..errors import InputError

__all__ = ["shrunken_scores", "population_scores", "deg_rest_t", "minmax_squared", "limma_t", "myllia_scores"]


def shrunken_scores(posterior_mean: np.ndarray, lfsr: np.ndarray, *, power: float = 2.0) -> np.ndarray:
    """:math:`|\\tilde\\beta|^k (1 - \\mathrm{lfsr})` elementwise (lfsr clipped to [0, 1])."""
    pm = np.asarray(posterior_mean, dtype=np.float64)
    lf = np.clip(np.asarray(lfsr, dtype=np.float64), 0.0, 1.0)
    return np.abs(pm) ** power * (1.0 - lf)


def population_scores(effect: np.ndarray, sd: np.ndarray, *, sd_floor: float, power: float = 2.0) -> np.ndarray:
    """:math:`|\\hat\\beta / \\max(\\sigma, \\sigma_{\\min})|^k`; 0 where :math:`\\sigma` is unknown (NaN)."""
    sd = np.asarray(sd, dtype=np.float64)
    known = np.isfinite(sd)
    scale = np.where(known, np.maximum(np.where(known, sd, 1.0), sd_floor), 1.0)
    scores = np.abs(np.asarray(effect, dtype=np.float64) / scale[None, :]) ** power
    return np.where(known[None, :], scores, 0.0)


def pool(mean: np.ndarray, var: np.ndarray, n: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Cells, sum and :math:`M_2` of the union of groups (Chan et al.; rows summed in the given order).

    :math:`N = \\sum_r n_r`, :math:`S = \\sum_r n_r \\bar x_r`, :math:`\\bar x = S/N`,
    :math:`M_2 = \\sum_r (n_r - 1) v_r + \\sum_r n_r (\\bar x_r - \\bar x)^2`.
    """
    n = np.asarray(n, dtype=np.float64)
    total = float(n.sum())
    sums = (n[:, None] * mean).sum(axis=0)
    grand = sums / total
    within = np.where(n[:, None] > 1, (n[:, None] - 1) * np.nan_to_num(var), 0.0).sum(axis=0)
    between = (n[:, None] * (mean - grand) ** 2).sum(axis=0)
    return total, sums, within + between


def deg_rest_t(
    mean: np.ndarray,
    var: np.ndarray,
    n: np.ndarray,
    *,
    rest_n: float,
    rest_sum: np.ndarray,
    rest_m2: np.ndarray,
    in_rest: np.ndarray,
) -> np.ndarray:
    """scanpy ``t-test_overestim_var`` of each group against the pooled rest (see :func:`pool`).

    ``in_rest[i]`` says group ``i`` is itself part of the pooled statistics; it is then removed
    from them first (exact algebra of Chan's merge):
    :math:`N' = N - n`, :math:`\\bar x' = (S - n\\bar x_p)/N'`,
    :math:`M_2' = M_2 - (n-1)v_p - n N'/N\\,(\\bar x_p - \\bar x')^2`.
    """
    n = np.asarray(n, dtype=np.float64)[:, None]
    own_m2 = np.where(n > 1, (n - 1) * np.nan_to_num(var), 0.0)
    drop = np.asarray(in_rest, dtype=bool)[:, None]
    n_rest = np.where(drop, rest_n - n, rest_n)
    if (n_rest < 2).any():
        raise InputError("deg_rest needs at least 2 cells in the rest of the reference set; add reference perturbations.")
    mean_rest = np.where(drop, rest_sum[None, :] - n * mean, rest_sum[None, :]) / n_rest
    m2_rest = np.where(drop, rest_m2[None, :] - own_m2 - n * n_rest / rest_n * (mean - mean_rest) ** 2,
                       rest_m2[None, :])
    var_rest = np.maximum(m2_rest, 0.0) / (n_rest - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Welch's t with the rest's sample size replaced by the group's own (scanpy's hack)
        t = (mean - mean_rest) / np.sqrt(var / n + var_rest / n)
    return np.where(np.isnan(t), 0.0, t)


def minmax_squared(t: np.ndarray) -> np.ndarray:
    """Mejia et al.'s per-row weight: :math:`((|t| - \\min|t|)/(\\max|t| - \\min|t|))^2`, NaN → 0."""
    a = np.abs(np.asarray(t, dtype=np.float64))
    lo = a.min(axis=1, keepdims=True)
    hi = a.max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = ((a - lo) / (hi - lo)) ** 2
    return np.where(np.isnan(w), 0.0, w)


def limma_t(
    mean: np.ndarray,
    var: np.ndarray,
    n: float,
    control_mean: np.ndarray,
    control_var: np.ndarray,
    control_n: float,
) -> np.ndarray:
    """limma moderated t of one perturbation against control (two-group linear model on cells).

    Pooled residual variance :math:`s_g^2 = ((n_p-1)v_{pg} + (n_c-1)v_{cg})/(n_p+n_c-2)` on
    :math:`d = n_p + n_c - 2` df, :math:`\\hat\\beta_g = \\bar x_{pg} - \\bar x_{cg}`, unscaled SD
    :math:`u = \\sqrt{1/n_p + 1/n_c}`, then ``eBayes`` (:func:`shrinkpert.effects.moderate.moderated_t`).
    Genes with :math:`s_g^2 = 0` (constant in both groups, i.e. never detected) get
    :math:`t = 0` and stay out of the variance prior, as after limma's usual filtering of
    unexpressed genes.
    """
    from ..effects.moderate import moderated_t

    df = n + control_n - 2.0
    s2 = ((n - 1) * np.nan_to_num(var) + (control_n - 1) * np.nan_to_num(control_var)) / df
    beta = mean - control_mean
    u = np.sqrt(1.0 / n + 1.0 / control_n)
    t = np.zeros_like(beta)
    live = s2 > 0
    if live.sum() < 3:
        return t
    with warnings.catch_warnings():
        # limma's B-statistic prior can fail for near-null perturbations; t does not use it
        warnings.filterwarnings("ignore", message="Estimation of the prior variance of coefficients failed")
        fit = moderated_t(beta[live], np.full(int(live.sum()), u), var=s2[live], df=df)
    t[live] = fit.t
    return t


def myllia_scores(t: np.ndarray, target_index: np.ndarray) -> np.ndarray:
    """:math:`c^2` with :math:`c = \\min(|t| + 0.1, 10)` and :math:`c = 0` at each row's target gene."""
    c = np.minimum(np.abs(np.asarray(t, dtype=np.float64)) + 0.1, 10.0)
    rows = np.flatnonzero(target_index >= 0)
    c[rows, target_index[rows]] = 0.0
    return c**2
