"""TRADE's bivariate mode: noise-corrected correlation of two effect sets, :func:`impact_correlation`.

The pairs :math:`(\\hat\\beta_{1g}, \\hat\\beta_{2g})` are modelled as a bivariate normal scale
mixture over an adaptive grid of covariances built from two half-normal ash fits; the weights
come from the package's one mixture solver
(:func:`~shrinkpert.effects.mixture.fit_mixture_weights`). Written for this package from the
TRADE paper and the project's design notes (``STATISTICS.md`` section 3); golden values in
``tests/golden/trade/bivariate_deseq2``. Also importable from :mod:`shrinkpert.effects.impact`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, ShrinkpertWarning
from .mixture import fit_mixture_weights

__all__ = ["ImpactCorrelation", "impact_correlation"]

_LOG_2PI = math.log(2.0 * math.pi)


def _vector(values: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric; convert it with numpy.asarray(..., dtype=float).") from exc


# --------------------------------------------------------------------------- bivariate


def _halfnormal_support(betahat: np.ndarray, se: np.ndarray, threshold: float) -> np.ndarray:
    """Variances :math:`\\sigma_k^2 > 0` carrying weight in a half-normal ash fit (uniform prior).

    TRADE's adaptive grid: ``ash(betahat, se, mixcompdist = "halfnormal", prior = "uniform")``
    (here :func:`shrinkpert.effects.ash.ash`), then the distinct non-zero component standard
    deviations whose summed weight (both halves) exceeds ``threshold``. Mix-SQP's active set
    gives exact zeros, so with ``threshold = 0`` this is the support of the fit.
    """
    from .ash import ash

    prior = ash(betahat, se, mixture="halfnormal", pointmass=True, prior="uniform").prior
    sd = np.asarray(prior.sd, dtype=np.float64)
    pi = np.asarray(prior.pi, dtype=np.float64)
    values = np.unique(sd[sd > 0])
    weight = np.array([pi[sd == v].sum() for v in values])
    return values[weight > threshold] ** 2


def _bivariate_components(var1: np.ndarray, var2: np.ndarray, correlations: np.ndarray) -> np.ndarray:
    """Distinct 2x2 covariances diag(v1, v2) with off-diagonal r*sqrt(v1 v2), v in {0} U grid."""
    v1 = np.concatenate([[0.0], var1])
    v2 = np.concatenate([[0.0], var2])
    mats = []
    for a in v1:
        for b in v2:
            rs = correlations if (a > 0 and b > 0) else np.array([0.0])
            for r in rs:
                off = r * math.sqrt(a * b)
                mats.append((a, off, b))
    comps = np.unique(np.asarray(mats) + 0.0, axis=0)  # "+ 0.0" turns -0.0 into 0.0
    return comps


def _bivariate_log_lik(b1: np.ndarray, s1: np.ndarray, b2: np.ndarray, s2: np.ndarray, comps: np.ndarray) -> np.ndarray:
    """log N2((b1, b2); 0, U_k + diag(s1^2, s2^2)) for every gene (rows) and component (columns)."""
    c11 = comps[None, :, 0] + s1[:, None] ** 2
    c12 = comps[None, :, 1]
    c22 = comps[None, :, 2] + s2[:, None] ** 2
    det = c11 * c22 - c12**2
    x1 = b1[:, None]
    x2 = b2[:, None]
    quad = (c22 * x1**2 - 2.0 * c12 * x1 * x2 + c11 * x2**2) / det
    return -_LOG_2PI - 0.5 * np.log(det) - 0.5 * quad


@dataclass(frozen=True)
class ImpactCorrelation:
    """Noise-corrected correlation of the true effects of two effect sets (TRADE bivariate).

    Attributes
    ----------
    correlation : float
        :math:`\\Sigma_{12}/\\sqrt{\\Sigma_{11}\\Sigma_{22}}` (NaN when either variance is 0).
    covariance : ndarray of shape (2, 2)
        Mixture covariance of true effects :math:`\\Sigma = \\sum_k \\pi_k U_k`.
    raw_correlation : float
        Pearson correlation of the raw effects (attenuated by sampling noise).
    loglik : float
        Log-likelihood of the fitted bivariate mixture.
    n_genes : int
        Genes used (finite effects and positive standard errors in both sets).
    components : ndarray of shape (K, 3)
        Covariances :math:`U_k` as rows ``(U11, U12, U22)``.
    weights : ndarray of shape (K,)
        Fitted mixture weights.
    params : mapping
        ``correlations``, ``grid_weight_threshold``, ``n_variances`` (per set), ``converged``.
    """

    correlation: float
    covariance: np.ndarray
    raw_correlation: float
    loglik: float
    n_genes: int
    components: np.ndarray
    weights: np.ndarray
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("covariance", "components", "weights"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """The fitted mixture, one row per component: ``var1``, ``cov``, ``var2``, ``weight``."""
        return pd.DataFrame(
            {
                "var1": self.components[:, 0],
                "cov": self.components[:, 1],
                "var2": self.components[:, 2],
                "weight": self.weights,
            }
        )

    def summary(self) -> pd.DataFrame:
        """One row: ``correlation``, ``raw_correlation``, the three entries of Σ, ``n_genes``, ``loglik``."""
        return pd.DataFrame(
            {
                "correlation": [self.correlation],
                "raw_correlation": [self.raw_correlation],
                "var1": [self.covariance[0, 0]],
                "cov": [self.covariance[0, 1]],
                "var2": [self.covariance[1, 1]],
                "n_genes": [self.n_genes],
                "loglik": [self.loglik],
            }
        )


def _aligned_pair(betahat: Any, se: Any, name: str) -> tuple[np.ndarray, np.ndarray, pd.Index | None]:
    b = _vector(betahat, f"betahat{name}")
    s = _vector(se, f"se{name}")
    if b.ndim != 1 or s.shape != b.shape:
        raise InputError(f"betahat{name} and se{name} must be 1-D of equal length, got {b.shape} and {s.shape}.")
    index = pd.Index(betahat.index) if isinstance(betahat, pd.Series) else None
    return b, s, index


def impact_correlation(
    betahat1: Any,
    se1: Any,
    betahat2: Any,
    se2: Any,
    *,
    correlations: Sequence[float] | None = None,
    grid_weight_threshold: float = 0.0,
    exclude_genes: Iterable[Any] | None = None,
    tol: float = 1e-8,
) -> ImpactCorrelation:
    """Correlation of the true effects behind two effect sets, with sampling noise removed.

    TRADE's bivariate mode with the ``"adaptive_grid"`` covariance set: the pairs
    :math:`(\\hat\\beta_{1g}, \\hat\\beta_{2g})` are modelled as

    .. math::

        \\hat\\beta_g \\sim N_2\\big(0,\\, U_k + \\mathrm{diag}(s_{1g}^2, s_{2g}^2)\\big)
        \\text{ with probability } \\pi_k,

    with :math:`U_k` every distinct matrix with diagonal :math:`(v_1, v_2)` and
    off-diagonal :math:`r\\sqrt{v_1 v_2}`, :math:`v_i \\in \\{0\\} \\cup` the variances that
    carry weight in a half-normal ash fit of set :math:`i` (uniform prior), and
    :math:`r \\in` ``correlations``. The weights are maximum likelihood
    (:func:`~shrinkpert.effects.mixture.fit_mixture_weights`, mix-SQP, no penalty) and

    .. math::

        \\Sigma = \\sum_k \\pi_k U_k, \\qquad \\rho = \\Sigma_{12}/\\sqrt{\\Sigma_{11}\\Sigma_{22}}.

    Parameters
    ----------
    betahat1, se1, betahat2, se2 : array-like or pandas.Series of shape (G,)
        Effects and standard errors of the two sets. Series are aligned on their common
        index (genes); arrays must have equal length. Genes with a non-finite value or a
        non-positive standard error in either set are dropped.
    correlations : sequence of float, default -1, -0.9, ..., 1
        Correlations of the grid.
    grid_weight_threshold : float, default 0
        Keep a variance of the univariate fits when its weight exceeds this (TRADE's
        ``component_varexplained_threshold``).
    exclude_genes : iterable of labels, optional
        Genes to leave out (needs Series input).
    tol : float, default 1e-8
        Convergence tolerance of mix-SQP (Frank–Wolfe gap of the normalised log likelihood; see
        :func:`~shrinkpert.effects.mixture.fit_mixture_weights`).

    Returns
    -------
    ImpactCorrelation

    Raises
    ------
    InputError
        Shapes disagree, fewer than 3 usable genes, or ``exclude_genes`` without gene names.
    """
    b1, s1, idx1 = _aligned_pair(betahat1, se1, "1")
    b2, s2, idx2 = _aligned_pair(betahat2, se2, "2")
    if idx1 is not None and idx2 is not None:
        common = idx1.intersection(idx2, sort=False)
        p1, p2 = idx1.get_indexer(common), idx2.get_indexer(common)
        b1, s1, b2, s2 = b1[p1], s1[p1], b2[p2], s2[p2]
        genes: pd.Index | None = common
    else:
        if b1.shape != b2.shape:
            raise InputError(
                f"The two effect sets have {b1.size} and {b2.size} genes; pass pandas.Series to align by gene."
            )
        genes = idx1 if idx1 is not None else idx2
    keep = np.isfinite(b1) & np.isfinite(b2) & np.isfinite(s1) & np.isfinite(s2) & (s1 > 0) & (s2 > 0)
    if exclude_genes is not None:
        if genes is None:
            raise InputError("exclude_genes needs gene names: pass the effects as pandas.Series indexed by gene.")
        keep &= ~genes.isin(list(exclude_genes))
    b1, s1, b2, s2 = b1[keep], s1[keep], b2[keep], s2[keep]
    n = b1.size
    if n < 3:
        raise InputError(f"Only {n} genes have finite effects in both sets; need at least 3.")
    corrs = np.round(np.linspace(-1.0, 1.0, 21), 12) if correlations is None else np.asarray(correlations, float)
    if np.any(np.abs(corrs) > 1):
        raise InputError("correlations must lie in [-1, 1].")

    var1 = _halfnormal_support(b1, s1, grid_weight_threshold)
    var2 = _halfnormal_support(b2, s2, grid_weight_threshold)
    comps = _bivariate_components(var1, var2, corrs)
    log_lik = _bivariate_log_lik(b1, s1, b2, s2, comps)
    fit = fit_mixture_weights(log_lik, log=True, tol=tol)
    pi, n_iter, converged, loglik = fit.weights, fit.n_iter, fit.converged, fit.loglik
    if not converged:
        warnings.warn(
            f"mix-SQP did not converge in {n_iter} iterations; the correlation may be inexact.",
            ShrinkpertWarning,
            stacklevel=2,
        )
    s11, s12, s22 = (pi @ comps).tolist()
    cov = np.array([[s11, s12], [s12, s22]])
    corr = s12 / math.sqrt(s11 * s22) if s11 > 0 and s22 > 0 else math.nan
    raw = float(np.corrcoef(b1, b2)[0, 1])
    return ImpactCorrelation(
        correlation=float(corr),
        covariance=cov,
        raw_correlation=raw,
        loglik=loglik,
        n_genes=int(n),
        components=comps,
        weights=pi,
        params={
            "correlations": tuple(corrs.tolist()),
            "grid_weight_threshold": grid_weight_threshold,
            "n_variances": (int(var1.size), int(var2.size)),
            "n_iter": n_iter,
            "converged": converged,
        },
    )
