"""limma-style empirical-Bayes moderation of per-gene variances and moderated t-statistics.

Each gene's sample variance :math:`s_g^2` on :math:`d_g` residual degrees of freedom is
treated as a draw from a scaled F distribution,

.. math::

    s_g^2 \\mid \\sigma_g^2 \\sim \\sigma_g^2\\,\\chi^2_{d_g}/d_g, \\qquad
    1/\\sigma_g^2 \\sim \\chi^2_{d_0}/(d_0 s_0^2),

so :math:`s_g^2/s_0^2 \\sim F(d_g, d_0)`. The prior degrees of freedom :math:`d_0` and scale
:math:`s_0^2` are estimated by moments of :math:`\\log s_g^2` (:func:`fit_f_dist`) or of
Winsorised log-variances (:func:`fit_f_dist_robust`), and the posterior variance is

.. math:: \\tilde s_g^2 = \\frac{d_g s_g^2 + d_0 s_0^2}{d_g + d_0}.

:func:`moderated_t` then reproduces limma's ``eBayes``: moderated t, total degrees of
freedom, two-sided p-values and the B-statistic (log-odds of differential expression).

The numbers match limma 3.54.1 (``squeezeVar``, ``fitFDist``, ``fitFDistRobustly``,
``eBayes``); ``tests/golden/limma`` holds the reference values and the R script.
The code is written for this package from the method descriptions (Smyth 2004; Phipson et
al. 2016; limma's documentation) and the project's design notes; no limma code is copied.
Where limma makes a numerical choice (Newton start and stopping rule of the trigamma
inverse, the 128-node quadrature, Brent's root finder with tolerance 1e-8, the knot
placement of the spline trend) the same choice is made, so results agree to rounding.

References
----------
Smyth, G. K. (2004). Linear models and empirical Bayes methods for assessing differential
expression in microarray experiments. *Stat. Appl. Genet. Mol. Biol.* 3, Article 3.

Phipson, B., Lee, S., Majewski, I. J., Alexander, W. S. and Smyth, G. K. (2016). Robust
hyperparameter estimation protects against hypervariable genes and improves power to detect
differential expression. *Ann. Appl. Stat.* 10, 946-963.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
from scipy import special

from ..errors import InputError, ShrinkpertWarning
from ._fdist import (
    FDistFit,
    FDistRobustFit,
    _as_1d,
    _df_vector,
    _readonly,
    _scalar_or_array,
    fit_f_dist,
    fit_f_dist_robust,
    natural_spline_basis,
    trigamma_inverse,
)

__all__ = [
    "FDistFit",
    "FDistRobustFit",
    "SqueezedVariances",
    "ModeratedT",
    "trigamma_inverse",
    "natural_spline_basis",
    "fit_f_dist",
    "fit_f_dist_robust",
    "squeeze_var",
    "moderated_t",
]


# --------------------------------------------------------------------------- squeezeVar


def _gene_index(var: Any, n: int) -> pd.Index:
    """Gene labels: the index of ``var`` when it is a Series, else ``0..n-1``."""
    return pd.Index(var.index) if isinstance(var, pd.Series) else pd.RangeIndex(n)


@dataclass(frozen=True)
class SqueezedVariances:
    """Posterior variances from empirical-Bayes moderation (limma ``squeezeVar``).

    Attributes
    ----------
    var_post : ndarray of shape (G,)
        :math:`\\tilde s_g^2 = (d_g s_g^2 + d_0 s_0^2)/(d_g + d_0)` (:math:`s_0^2` when
        :math:`d_0 = \\infty`).
    df_prior : float or ndarray of shape (G,)
        :math:`d_0`; per gene when ``robust=True``.
    var_prior : float or ndarray of shape (G,)
        :math:`s_0^2`; per gene when a covariate trend was fitted.
    genes : pandas.Index
        Gene labels (the index of ``var`` when it was a Series, else 0..G-1).
    params : mapping
        Read-only record of the call: ``robust``, ``winsor_tail_p``, ``trend``,
        ``spline_df``, ``n_genes`` and for robust fits the common ``df_prior_common``.
    """

    var_post: np.ndarray
    df_prior: float | np.ndarray
    var_prior: float | np.ndarray
    genes: pd.Index
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "var_post", _readonly(self.var_post))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row per gene: ``var_post``, ``df_prior``, ``var_prior`` (scalars repeated)."""
        n = self.var_post.size
        return pd.DataFrame(
            {
                "var_post": self.var_post,
                "df_prior": np.broadcast_to(self.df_prior, n),
                "var_prior": np.broadcast_to(self.var_prior, n),
            },
            index=self.genes,
        )


def _posterior_var(var: np.ndarray, df: np.ndarray, var_prior: Any, df_prior: Any) -> np.ndarray:
    d0 = np.broadcast_to(np.asarray(df_prior, dtype=np.float64), var.shape)
    s0 = np.broadcast_to(np.asarray(var_prior, dtype=np.float64), var.shape)
    if np.all(np.isfinite(d0)):
        return (df * var + d0 * s0) / (df + d0)
    post = s0.astype(np.float64, copy=True)
    finite = d0 <= 1e100
    post[finite] = (df[finite] * var[finite] + d0[finite] * s0[finite]) / (df[finite] + d0[finite])
    return post


def squeeze_var(
    var: Any,
    df: Any,
    *,
    covariate: Any = None,
    robust: bool = False,
    winsor_tail_p: Sequence[float] | float = (0.05, 0.1),
) -> SqueezedVariances:
    """Squeeze per-gene sample variances towards a common (or trended) prior value.

    .. math:: \\tilde s_g^2 = \\frac{d_g s_g^2 + d_0 s_0^2}{d_g + d_0}

    with :math:`(s_0^2, d_0)` from :func:`fit_f_dist` (or :func:`fit_f_dist_robust` when
    ``robust``). Genes with ``df == 0`` (no residual information) get variance 0 before the
    fit and so the prior afterwards. A single gene is returned unchanged with ``df_prior = 0``.

    Parameters
    ----------
    var : array-like or pandas.Series of shape (G,)
        Sample variances :math:`s_g^2`.
    df : float or array-like of shape (G,)
        Residual degrees of freedom :math:`d_g`.
    covariate : array-like of shape (G,), optional
        Covariate for a trended prior variance (e.g. mean log-expression).
    robust : bool, default False
        Protect the fit against hyper- and hypo-variable genes (per-gene ``df_prior``).
    winsor_tail_p : float or (float, float), default (0.05, 0.1)
        Tail proportions Winsorised by the robust fit.

    Returns
    -------
    SqueezedVariances

    Raises
    ------
    InputError
        ``var`` is empty, shapes disagree, or the prior df cannot be estimated (e.g. all
        variances missing).

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.effects.moderate import squeeze_var
    >>> rng = np.random.default_rng(0)
    >>> s2 = 0.5 * rng.chisquare(4, 500) / 4 * 6 / rng.chisquare(6, 500)
    >>> out = squeeze_var(s2, 4)
    >>> bool(np.all(np.abs(out.var_post - out.var_prior) <= np.abs(s2 - out.var_prior)))
    True
    """
    x = _as_1d(var, "var").copy()
    n = x.size
    if n == 0:
        raise InputError("var is empty; pass at least one variance.")
    genes = _gene_index(var, n)
    d = _df_vector(df, n)
    params: dict[str, Any] = {
        "robust": bool(robust),
        "winsor_tail_p": tuple(np.broadcast_to(np.asarray(winsor_tail_p, dtype=float), (2,)).tolist()),
        "trend": covariate is not None,
        "n_genes": n,
    }
    if n == 1:
        return SqueezedVariances(x, 0.0, float(x[0]), genes, params | {"spline_df": 1})
    x[d == 0] = 0.0
    if robust:
        rfit = fit_f_dist_robust(x, d, covariate=covariate, winsor_tail_p=winsor_tail_p)
        df_prior: float | np.ndarray = _scalar_or_array(rfit.df2_shrunk)
        scale = rfit.scale
        params |= {"spline_df": 1, "df_prior_common": float(rfit.df2), "df_prior_outlier": float(rfit.df2_outlier)}
    else:
        fit = fit_f_dist(x, d, covariate=covariate)
        df_prior = float(fit.df2)
        scale = fit.scale
        params["spline_df"] = fit.spline_df
    if np.any(np.isnan(np.asarray(df_prior))):
        raise InputError(
            "Could not estimate the prior degrees of freedom: fewer than two genes have a finite "
            "variance and positive df. Check var and df for NaN/zero values."
        )
    post = _posterior_var(x, d, scale, df_prior)
    return SqueezedVariances(post, df_prior, _scalar_or_array(scale), genes, params)


# --------------------------------------------------------------------------- eBayes


@dataclass(frozen=True)
class ModeratedT:
    """Moderated t-statistics and B-statistics (limma ``eBayes``).

    Arrays have the shape of ``effect``: (G,) or (G, K) for K coefficients.

    Attributes
    ----------
    t : ndarray
        :math:`t_{gj} = \\hat\\beta_{gj} / (u_{gj} \\tilde s_g)`.
    df_total : ndarray of shape (G,)
        :math:`\\min(d_g + d_0, \\sum_g d_g)`.
    p_value : ndarray
        Two-sided :math:`2 P(T_{df\\_total} > |t|)`.
    lods : ndarray
        B-statistic (log posterior odds of a non-zero coefficient).
    s2_post, s2_prior, df_prior
        From :func:`squeeze_var` (``s2_prior`` per gene with a trend, ``df_prior`` per gene
        when robust).
    var_prior : ndarray of shape (K,)
        Prior variance :math:`v_{0j}` of non-zero coefficients (unscaled), used by ``lods``.
    genes : pandas.Index
    params : mapping
        ``proportion``, ``stdev_coef_lim``, ``robust``, ``trend``, ``winsor_tail_p``.
    """

    t: np.ndarray
    df_total: np.ndarray
    p_value: np.ndarray
    lods: np.ndarray
    s2_post: np.ndarray
    s2_prior: float | np.ndarray
    df_prior: float | np.ndarray
    var_prior: np.ndarray
    genes: pd.Index
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("t", "df_total", "p_value", "lods", "s2_post", "var_prior"):
            object.__setattr__(self, name, _readonly(getattr(self, name)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per gene (and coefficient when there are several)."""
        t = self.t if self.t.ndim == 2 else self.t[:, None]
        n_genes, n_coef = t.shape
        frame = pd.DataFrame(
            {
                "gene": np.repeat(np.asarray(self.genes), n_coef),
                "coefficient": np.tile(np.arange(n_coef), n_genes),
                "t": t.ravel(),
                "p_value": np.reshape(self.p_value, (n_genes, n_coef)).ravel(),
                "lods": np.reshape(self.lods, (n_genes, n_coef)).ravel(),
                "df_total": np.repeat(self.df_total, n_coef),
                "s2_post": np.repeat(self.s2_post, n_coef),
            }
        )
        return frame


def _tmixture(
    t_abs: np.ndarray, stdev_unscaled: np.ndarray, df: np.ndarray, proportion: float, lim: tuple[float, float]
) -> float:
    """limma's ``tmixture.vector``: prior variance of true effects from the largest |t|.

    The ``ceil(proportion/2 * G)`` largest |t| (after mapping each t to the largest df by
    equal tail probability) are compared with the quantiles they would have if a fraction
    ``proportion`` of genes followed :math:`\\sqrt{1 + v_0/v_1}\\,t_{df}`; each gives a
    :math:`v_0` (0 when uninformative), clipped to ``lim``, and their mean is returned.
    """
    keep = ~np.isnan(t_abs)
    t_abs, v_unscaled, df = np.abs(t_abs[keep]), stdev_unscaled[keep], df[keep]
    n_genes = t_abs.size
    n_target = math.ceil(proportion / 2.0 * n_genes)
    if n_target < 1:
        return math.nan
    p = max(n_target / n_genes, proportion)
    df_max = float(np.max(df))
    lower = df < df_max
    if lower.any():
        log_tail = np.log(special.stdtr(df[lower], -t_abs[lower]))
        t_abs = t_abs.copy()
        t_abs[lower] = -special.stdtrit(df_max, np.exp(log_tail))
    order = np.argsort(-t_abs, kind="stable")[:n_target]
    top = t_abs[order]
    v1 = v_unscaled[order] ** 2
    ranks = np.arange(1, n_target + 1)
    p0 = 2.0 * special.stdtr(df_max, -top)
    p_target = ((ranks - 0.5) / n_genes - (1.0 - p) * p0) / p
    v0 = np.zeros(n_target)
    pos = p_target > p0
    if pos.any():
        q_target = -special.stdtrit(df_max, p_target[pos] / 2.0)
        v0[pos] = v1[pos] * ((top[pos] / q_target) ** 2 - 1.0)
    v0 = np.clip(v0, lim[0], lim[1])
    return float(np.mean(v0))


def moderated_t(
    effect: Any,
    stdev_unscaled: Any = None,
    *,
    var: Any,
    df: Any,
    std_error: Any = None,
    covariate: Any = None,
    robust: bool = False,
    winsor_tail_p: Sequence[float] | float = (0.05, 0.1),
    proportion: float = 0.01,
    stdev_coef_lim: tuple[float, float] = (0.1, 4.0),
) -> ModeratedT:
    """Empirical-Bayes moderated t-statistics, p-values and B-statistics (limma ``eBayes``).

    The residual variances are squeezed with :func:`squeeze_var`, then for gene ``g`` and
    coefficient ``j`` with unscaled standard deviation :math:`u_{gj}` (the standard error
    divided by the residual standard deviation, ``stdev.unscaled`` in limma):

    .. math::

        t_{gj} = \\frac{\\hat\\beta_{gj}}{u_{gj}\\,\\tilde s_g}, \\qquad
        \\nu_g = \\min(d_g + d_0, \\textstyle\\sum_g d_g), \\qquad
        p_{gj} = 2\\,P(T_{\\nu_g} > |t_{gj}|).

    The B-statistic, with prior variance :math:`v_{0j}` of the non-zero coefficients
    (estimated from the top ``proportion/2`` |t|, clipped to
    ``stdev_coef_lim**2 / median(s0^2)``) and :math:`r = (u^2 + v_0)/u^2`, is

    .. math::

        B = \\log\\frac{\\pi}{1-\\pi} - \\tfrac12\\log r
            + \\frac{1+\\nu}{2}\\log\\frac{t^2 + \\nu}{t^2/r + \\nu}

    (Gaussian limit :math:`t^2(1 - 1/r)/2` for genes whose :math:`d_0 > 10^6`), with
    :math:`\\pi` = ``proportion``.

    Parameters
    ----------
    effect : array-like of shape (G,) or (G, K)
        Estimated coefficients :math:`\\hat\\beta` (genes along the first axis).
    stdev_unscaled : array-like, same shape as ``effect``, optional
        Unscaled standard deviations :math:`u`. Give this or ``std_error``.
    var : array-like of shape (G,)
        Residual variances :math:`s_g^2` (limma ``sigma**2``).
    df : float or array-like of shape (G,)
        Residual degrees of freedom :math:`d_g`.
    std_error : array-like, same shape as ``effect``, optional
        Ordinary standard errors :math:`u\\,s_g`; converted with :math:`u = se/s_g`.
    covariate, robust, winsor_tail_p
        Passed to :func:`squeeze_var` (``covariate`` = limma's ``trend=TRUE`` with Amean).
    proportion : float, default 0.01
        Assumed fraction of non-zero coefficients (B-statistic only).
    stdev_coef_lim : (float, float), default (0.1, 4.0)
        Limits on the prior standard deviation of non-zero coefficients.

    Returns
    -------
    ModeratedT

    Raises
    ------
    InputError
        Neither or both of ``stdev_unscaled`` and ``std_error`` given, mismatched shapes, or
        a ``proportion`` outside (0, 1).
    """
    beta = np.asarray(effect, dtype=np.float64)
    if beta.ndim not in (1, 2):
        raise InputError(f"effect must have shape (genes,) or (genes, coefficients), got {beta.shape}.")
    if (stdev_unscaled is None) == (std_error is None):
        raise InputError("Pass exactly one of stdev_unscaled= and std_error=.")
    if not 0.0 < proportion < 1.0:
        raise InputError(f"proportion must lie in (0, 1), got {proportion!r}.")
    s2 = _as_1d(var, "var")
    n = s2.size
    if beta.shape[0] != n:
        raise InputError(f"effect has {beta.shape[0]} genes (rows) but var has {n}; align them.")
    d = _df_vector(df, n)
    if stdev_unscaled is not None:
        u = np.asarray(stdev_unscaled, dtype=np.float64)
        name = "stdev_unscaled"
    else:
        sd = np.sqrt(s2).reshape((n,) + (1,) * (beta.ndim - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.asarray(std_error, dtype=np.float64) / sd
        name = "std_error"
    if u.shape != beta.shape:
        raise InputError(f"{name} has shape {u.shape} but effect has {beta.shape}; they must match.")

    sq = squeeze_var(s2, d, covariate=covariate, robust=robust, winsor_tail_p=winsor_tail_p)
    s2_post = sq.var_post
    col = (slice(None),) + (None,) * (beta.ndim - 1)
    t = beta / u / np.sqrt(s2_post)[col]
    df_prior = np.broadcast_to(np.asarray(sq.df_prior, dtype=np.float64), (n,))
    df_total = np.minimum(d + df_prior, np.nansum(d))
    p_value = 2.0 * special.stdtr(df_total[col], -np.abs(t))

    t2d = t if t.ndim == 2 else t[:, None]
    u2d = u if u.ndim == 2 else u[:, None]
    lim_scale = float(np.median(np.asarray(sq.var_prior)))
    lim = (stdev_coef_lim[0] ** 2 / lim_scale, stdev_coef_lim[1] ** 2 / lim_scale)
    var_prior = np.array([_tmixture(t2d[:, j], u2d[:, j], df_total, proportion, lim) for j in range(t2d.shape[1])])
    if np.any(np.isnan(var_prior)):
        warnings.warn(
            "Estimation of the prior variance of coefficients failed; set to 1/s2_prior.",
            ShrinkpertWarning,
            stacklevel=2,
        )
        var_prior = np.where(np.isnan(var_prior), 1.0 / lim_scale, var_prior)
    r = (u2d**2 + var_prior[None, :]) / u2d**2
    t2 = t2d**2
    nu = df_total[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = (1.0 + nu) / 2.0 * np.log((t2 + nu) / (t2 / r + nu))
    infinite = df_prior > 1e6
    if infinite.any():
        kernel[infinite] = (t2 * (1.0 - 1.0 / r) / 2.0)[infinite]
    lods = math.log(proportion / (1.0 - proportion)) - np.log(r) / 2.0 + kernel
    if beta.ndim == 1:
        lods = lods[:, 0]
    return ModeratedT(
        t=t,
        df_total=df_total,
        p_value=p_value,
        lods=lods,
        s2_post=s2_post,
        s2_prior=sq.var_prior,
        df_prior=sq.df_prior,
        var_prior=var_prior,
        genes=_gene_index(var, n),
        params={
            "proportion": float(proportion),
            "stdev_coef_lim": tuple(float(v) for v in stdev_coef_lim),
            "robust": bool(robust),
            "trend": covariate is not None,
            "winsor_tail_p": sq.params["winsor_tail_p"],
        },
    )
