"""Adaptive shrinkage (ash, Stephens 2016) of estimates with standard errors: :func:`ash`.

A re-implementation of ``ashr::ash`` (ashr 2.2-65) with Numba kernels, checked against ashr's
own output (``tests/golden/ashr``). :func:`ash_batch` fits thousands of independent problems
(e.g. one per perturbation) in one parallel call; :func:`shrink_effects` builds on it. The
mixture weights come from :func:`shrinkpert.effects.mixture.fit_mixture_weights`'s kernels.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._numba import thread_limit
from ..errors import InputError, ShrinkpertWarning
from . import _ash_kernels as _k
from . import _mixture_kernels as _mk
from . import mixture as _mixture

__all__ = ["ash", "ash_batch", "AshResult", "AshBatchResult", "MixturePrior"]

logger = logging.getLogger("shrinkpert")

MIXTURES = ("normal", "uniform", "halfuniform", "halfnormal", "+uniform", "-uniform")
PRIORS = ("nullbiased", "uniform")
OPTIMIZERS = _mixture.OPTIMIZERS
_KINDS = {"normal": _k.NORMAL, "uniform": _k.UNIFORM, "truncnormal": _k.TRUNCNORM}
_CHUNK = _mixture.CHUNK
_PARALLEL_FROM = _mixture.PARALLEL_FROM


def _frozen(a: Any) -> np.ndarray:
    """A read-only float64 array: ``a`` itself if it already is a read-only float64 array that owns
    its memory (what :func:`ash` passes), else a read-only copy (the caller's array is untouched)."""
    if isinstance(a, np.ndarray) and a.dtype == np.float64 and a.flags.owndata and not a.flags.writeable:
        return a
    out = np.array(a, dtype=np.float64, copy=True)
    out.setflags(write=False)
    return out


def _seal(*arrays: np.ndarray) -> None:
    for arr in arrays:
        arr.setflags(write=False)


# =========================================================================== the prior


@dataclass(frozen=True)
class MixturePrior:
    """A finite mixture prior g = Σ_k π_k g_k on the effects.

    Attributes
    ----------
    kind : {"normal", "uniform", "truncnormal"}
        Family shared by all components: N(loc_k, sd_k²) (``sd = 0`` is a point mass at
        ``loc``), U[a_k, b_k] (``a = b`` is a point mass), or N(loc_k, sd_k²) truncated to
        [a_k, b_k] (the half-normal components).
    pi : ndarray of float64, shape (K,)
        Mixture weights (non-negative, summing to 1).
    loc, sd : ndarray of float64, shape (K,)
        Means and standard deviations of the (untruncated) normal components; for uniform
        components ``loc`` is the midpoint and ``sd`` the standard deviation ``(b - a)/sqrt(12)``.
    a, b : ndarray of float64, shape (K,)
        Support of each component (−inf/+inf for normal components).

    Examples
    --------
    >>> g = MixturePrior.normal([0.6, 0.4], sd=[0.0, 1.0])
    >>> float(g.mean()), float(g.var())
    (0.0, 0.4)
    """

    kind: str
    pi: np.ndarray
    loc: np.ndarray
    sd: np.ndarray
    a: np.ndarray
    b: np.ndarray

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise InputError(f"MixturePrior kind must be one of {sorted(_KINDS)}, got {self.kind!r}.")
        arrays = {n: np.atleast_1d(np.asarray(getattr(self, n), dtype=np.float64))
                  for n in ("pi", "loc", "sd", "a", "b")}
        k = arrays["pi"].shape[0]
        for name, arr in arrays.items():
            if arr.ndim != 1 or arr.shape[0] != k:
                raise InputError(f"MixturePrior.{name} must be a vector of length {k} (one value per "
                                 f"component), got shape {arr.shape}.")
        if np.any(~np.isfinite(arrays["pi"])) or np.any(arrays["pi"] < 0):
            raise InputError("MixturePrior.pi must be finite and non-negative.")
        if np.any(arrays["b"] < arrays["a"]):
            raise InputError("MixturePrior needs a <= b for every component.")
        if np.any(arrays["sd"] < 0) or np.any(np.isnan(arrays["sd"])):
            raise InputError("MixturePrior.sd must be non-negative.")
        if self.kind == "uniform" and not (np.all(np.isfinite(arrays["a"])) and np.all(np.isfinite(arrays["b"]))):
            raise InputError("uniform components need finite end points a and b.")
        for name, arr in arrays.items():
            object.__setattr__(self, name, _frozen(arr))

    # ---------------------------------------------------------------- constructors
    @classmethod
    def normal(cls, pi, sd, loc=0.0) -> MixturePrior:
        """Mixture of N(loc_k, sd_k²) (ashr ``normalmix``); ``sd = 0`` is a point mass."""
        pi = np.atleast_1d(np.asarray(pi, dtype=np.float64))
        sd = np.broadcast_to(np.asarray(sd, dtype=np.float64), pi.shape)
        loc = np.broadcast_to(np.asarray(loc, dtype=np.float64), pi.shape)
        inf = np.full(pi.shape, np.inf)
        return cls("normal", pi, loc, sd, -inf, inf)

    @classmethod
    def uniform(cls, pi, a, b) -> MixturePrior:
        """Mixture of U[a_k, b_k] (ashr ``unimix``); ``a = b`` is a point mass."""
        pi = np.atleast_1d(np.asarray(pi, dtype=np.float64))
        a = np.broadcast_to(np.asarray(a, dtype=np.float64), pi.shape)
        b = np.broadcast_to(np.asarray(b, dtype=np.float64), pi.shape)
        return cls("uniform", pi, (a + b) / 2.0, (b - a) / math.sqrt(12.0), a, b)

    @classmethod
    def truncnormal(cls, pi, loc, sd, a, b) -> MixturePrior:
        """Mixture of N(loc_k, sd_k²) truncated to [a_k, b_k] (ashr ``tnormalmix``)."""
        pi = np.atleast_1d(np.asarray(pi, dtype=np.float64))
        shape = pi.shape
        return cls("truncnormal", pi, *(np.broadcast_to(np.asarray(v, dtype=np.float64), shape)
                                        for v in (loc, sd, a, b)))

    # ---------------------------------------------------------------- summaries
    @property
    def n_components(self) -> int:
        return int(self.pi.shape[0])

    @property
    def is_null(self) -> np.ndarray:
        """Boolean mask of components that are a point mass at exactly 0 (ashr ``pm_on_zero``)."""
        if self.kind == "uniform":
            return (self.a == 0) & (self.b == 0)
        return (self.sd == 0) & (self.loc == 0)

    @property
    def pi0(self) -> float:
        """Weight on point masses at 0."""
        return float(self.pi[self.is_null].sum())

    def _comp_moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        kind = _KINDS[self.kind]
        out = np.array([_k.comp_prior_moments(kind, *(float(v[k]) for v in (self.loc, self.sd, self.a, self.b)))
                        for k in range(self.n_components)], dtype=np.float64).reshape(-1, 3)
        return out[:, 0], out[:, 1], out[:, 2]

    def component_mean(self) -> np.ndarray:
        """Mean of each component."""
        return self._comp_moments()[0]

    def component_var(self) -> np.ndarray:
        """Variance of each component."""
        return self._comp_moments()[1]

    def mean(self) -> float:
        """Mixture mean Σ_k π_k E_k[β]."""
        m, _, _ = self._comp_moments()
        return float(np.dot(self.pi, m) / self.pi.sum())

    def var(self) -> float:
        """Mixture variance Σ_k π_k (Var_k + E_k²) − mean²."""
        m, v, _ = self._comp_moments()
        w = self.pi / self.pi.sum()
        return float(max(np.dot(w, v + m * m) - np.dot(w, m) ** 2, 0.0))

    def cdf(self, q: float) -> float:
        """P(β <= q) under the mixture."""
        kind = _KINDS[self.kind]
        tot = 0.0
        for k in range(self.n_components):
            _, _, p = _k.comp_prior_moments(kind, float(self.loc[k] - q), float(self.sd[k]),
                                            float(self.a[k] - q), float(self.b[k] - q))
            tot += self.pi[k] * p
        return float(tot / self.pi.sum())

    def prune(self, threshold: float = 1e-10) -> MixturePrior:
        """Drop components with weight <= ``threshold`` and renormalise (ashr ``prune``)."""
        keep = self.pi > threshold
        if not keep.any():
            raise InputError(f"no mixture weight exceeds threshold={threshold}; lower the threshold.")
        pi = self.pi[keep]
        return MixturePrior(self.kind, pi / pi.sum(), self.loc[keep], self.sd[keep], self.a[keep], self.b[keep])

    def log_component_density(self, betahat, sebetahat, *, df: float | None = None) -> np.ndarray:
        """n × K matrix of log p(betahat_j | component k), the component convolved with the error.

        Parameters
        ----------
        betahat, sebetahat : array-like of shape (n,)
            Estimates and (finite, positive) standard errors.
        df : float, optional
            Degrees of freedom of a t error model; normal errors if None.

        Returns
        -------
        ndarray of float64, shape (n, K)
            See :func:`ash` (Notes) for the formulas; computed in log space, so it stays finite
            where the densities underflow.
        """
        x = np.ascontiguousarray(betahat, dtype=np.float64)
        s = np.ascontiguousarray(sebetahat, dtype=np.float64)
        if x.shape != s.shape or x.ndim != 1:
            raise InputError("betahat and sebetahat must be vectors of the same length.")
        if np.any(~(s > 0)) or np.any(~np.isfinite(s)):
            raise InputError("sebetahat must be finite and positive here (excluded observations have no density).")
        out = np.empty((x.shape[0], self.n_components))
        _k.log_lik_matrix(x, s, _KINDS[self.kind], self.loc, self.sd, self.a, self.b,
                          _df_value(df), out)
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per component: pi, loc, sd, a, b."""
        return pd.DataFrame({"pi": self.pi, "loc": self.loc, "sd": self.sd, "a": self.a, "b": self.b})


# =========================================================================== the result


@dataclass(frozen=True)
class AshResult:
    """Result of :func:`ash`: raw inputs, posterior summaries and the fitted prior.

    Attributes
    ----------
    betahat, sebetahat : ndarray of float64, shape (n,)
        The inputs, unchanged.
    posterior_mean, posterior_sd : ndarray of float64, shape (n,)
        E[β_j | data] and sd[β_j | data] under the fitted prior (ashr PosteriorMean/PosteriorSD).
    lfsr, lfdr : ndarray of float64, shape (n,)
        Local false sign rate min(P(β_j <= 0), P(β_j >= 0) | data) and local false discovery
        rate P(β_j = 0 | data).
    qvalue, svalue : ndarray of float64, shape (n,)
        Running means of the sorted lfdr / lfsr (mean of the i smallest values).
    negative_prob, positive_prob : ndarray of float64, shape (n,)
        P(β_j < 0 | data) and P(β_j > 0 | data) (ashr NegativeProb/PositiveProb).
    excluded : ndarray of bool, shape (n,)
        Observations left out of the fit (NaN betahat or sebetahat, sebetahat = 0 or inf); their
        posterior summaries are those of the prior.
    prior : MixturePrior
        The fitted prior ĝ with all grid components (weights may be 0), as ashr's ``fitted_g``.
    loglik, penloglik, logLR : float
        log p(data | ĝ); that plus the Dirichlet penalty Σ_k (λ_k − 1) log π_k; and
        loglik − log p(data | β = 0).
    n_iter : int
        Optimiser iterations (0 for a fixed prior).
    converged : bool
    params : mapping
        Read-only record of the call (mixture, prior, null_weight, mode used, grid_mult, df, ...).
    index : pandas.Index
        Labels of the observations (taken from a pandas Series input, else 0..n-1).
    """

    betahat: np.ndarray
    sebetahat: np.ndarray
    posterior_mean: np.ndarray
    posterior_sd: np.ndarray
    lfsr: np.ndarray
    lfdr: np.ndarray
    qvalue: np.ndarray
    svalue: np.ndarray
    negative_prob: np.ndarray
    positive_prob: np.ndarray
    excluded: np.ndarray
    prior: MixturePrior
    loglik: float
    penloglik: float
    logLR: float
    n_iter: int
    converged: bool
    params: Mapping[str, Any]
    index: pd.Index

    def __post_init__(self) -> None:
        for name in ("betahat", "sebetahat", "posterior_mean", "posterior_sd", "lfsr", "lfdr",
                     "qvalue", "svalue", "negative_prob", "positive_prob"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        exc = np.array(self.excluded, dtype=bool, copy=True)
        exc.setflags(write=False)
        object.__setattr__(self, "excluded", exc)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per observation."""
        return pd.DataFrame(
            {
                "betahat": self.betahat,
                "sebetahat": self.sebetahat,
                "posterior_mean": self.posterior_mean,
                "posterior_sd": self.posterior_sd,
                "lfsr": self.lfsr,
                "lfdr": self.lfdr,
                "qvalue": self.qvalue,
                "svalue": self.svalue,
                "negative_prob": self.negative_prob,
                "positive_prob": self.positive_prob,
                "excluded": self.excluded,
            },
            index=self.index,
        )

    def summary(self) -> pd.DataFrame:
        """A one-row overview of the fit."""
        return pd.DataFrame(
            {
                "n": [self.betahat.shape[0]],
                "n_excluded": [int(self.excluded.sum())],
                "mixture": [self.params["mixture"]],
                "n_components": [self.prior.n_components],
                "pi0": [self.prior.pi0],
                "prior_mean": [self.prior.mean()],
                "prior_sd": [math.sqrt(self.prior.var())],
                "loglik": [self.loglik],
                "penloglik": [self.penloglik],
                "converged": [self.converged],
            }
        )


# =========================================================================== helpers


def _df_value(df: float | None) -> float:
    if df is None or (np.isscalar(df) and np.isinf(df)):
        return np.inf
    if not np.isscalar(df):
        raise InputError("df must be a single number (or None for normal errors); ashr also takes one value.")
    df = float(df)
    if not df > 2:
        raise InputError(f"df must be > 2 for the t likelihood (posterior variances need it), got {df}; "
                         "use df=None for normal errors.")
    return df


def _as_vector(v, name: str) -> tuple[np.ndarray, pd.Index | None]:
    index = v.index if isinstance(v, pd.Series) else None
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional, got shape {arr.shape}; for a matrix of "
                         "problems use shrink_effects.")
    return arr, index


def _validate_inputs(betahat, sebetahat) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.Index]:
    x, index = _as_vector(betahat, "betahat")
    s, _ = _as_vector(sebetahat, "sebetahat")
    if s.shape[0] == 1 and x.shape[0] != 1:
        s = np.full(x.shape, s[0])
    if s.shape != x.shape:
        raise InputError(f"betahat has {x.shape[0]} values but sebetahat has {s.shape[0]}; pass one "
                         "standard error per estimate (or a single shared value).")
    if x.shape[0] == 0:
        raise InputError("betahat is empty; pass at least one estimate.")
    if np.any(np.isinf(x)):
        bad = np.flatnonzero(np.isinf(x))[:5].tolist()
        raise InputError(f"betahat is ±inf at positions {bad}; set them to NaN to exclude them from the fit.")
    if np.any(s < 0):
        bad = np.flatnonzero(s < 0)[:5].tolist()
        raise InputError(f"sebetahat is negative at positions {bad}; standard errors must be >= 0 "
                         "(0, inf and NaN exclude an observation from the fit).")
    excluded = ~(np.isfinite(x) & np.isfinite(s) & (s > 0))
    if excluded.all():
        raise InputError("no observation has a finite betahat and a finite, positive sebetahat; nothing to fit.")
    if index is None:
        index = pd.RangeIndex(x.shape[0])
    return x, s, excluded, index


def _grid(x: np.ndarray, s: np.ndarray, mode: float, grid_mult: float) -> np.ndarray:
    """ashr's automatic grid ("mixsd") from the included observations."""
    d = x - mode
    smin = float(np.min(s)) / 10.0
    excess = d * d - s * s
    if np.all(excess <= 0):
        smax = 8.0 * smin
    else:
        smax = 2.0 * math.sqrt(float(np.max(excess)))
    npoint = math.ceil(math.log2(smax / smin) / math.log2(grid_mult))
    # R's (-npoint):0 counts down when npoint < 0
    exps = np.arange(-npoint, 1) if npoint >= 0 else np.arange(-npoint, -1, -1)
    return np.power(grid_mult, exps.astype(np.float64)) * smax


def _lambda(prior, k: int, null: int, null_weight: float) -> np.ndarray:
    if isinstance(prior, str):
        lam = np.ones(k)
        if prior == "nullbiased":
            lam[null] = null_weight
        return lam
    lam = np.asarray(prior, dtype=np.float64)
    if lam.shape != (k,):
        raise InputError(f"prior has {lam.size} Dirichlet parameters but the mixture has {k} components; "
                         "pass one value per component (before half-uniform/half-normal doubling).")
    return lam


def _components(grid: np.ndarray, mixture: str, mode: float, pointmass: bool, prior, null_weight: float,
                grange) -> tuple[MixturePrior, np.ndarray]:
    """Prior components on the grid and the Dirichlet parameters λ (ashr ash.workhorse)."""
    if mixture in ("normal", "halfnormal"):
        sd, null, lam = _grid_values(grid, pointmass, prior, null_weight)
        k = sd.shape[0]
        if mixture == "normal":
            return MixturePrior.normal(np.full(k, 1.0 / k), sd, mode), lam
        other = np.arange(k) != null if pointmass else np.ones(k, dtype=bool)
        loc = np.full(k + other.sum(), mode)
        sds = np.concatenate([sd, sd[other]])
        a = np.concatenate([np.full(k, -np.inf), np.full(other.sum(), mode)])
        b = np.concatenate([np.full(k, mode), np.full(other.sum(), np.inf)])
        lam = np.concatenate([lam, lam[other]])
        w = np.full(loc.shape, 1.0 / loc.shape[0])
        return MixturePrior.truncnormal(w, loc, sds, a, b), lam
    a, b, lam = _uniform_bounds(grid, mixture, mode, pointmass, prior, null_weight, grange)
    w = np.full(a.shape, 1.0 / a.shape[0])
    return MixturePrior.uniform(w, a, b), lam


def _grid_values(grid: np.ndarray, pointmass: bool, prior, null_weight: float) -> tuple[np.ndarray, int, np.ndarray]:
    """The scales of the components (0 prepended for the point mass), the null's position, λ."""
    sd = np.concatenate([[0.0], grid]) if pointmass else np.asarray(grid, dtype=np.float64)
    null = int(np.argmin(sd))
    return sd, null, _lambda(prior, sd.shape[0], null, null_weight)


def _uniform_bounds(grid: np.ndarray, mixture: str, mode: float, pointmass: bool, prior, null_weight: float,
                    grange) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """End points (a, b) and λ of the uniform-family components of :func:`_components`, without
    building the prior: clipped to ``grange`` and de-duplicated (first occurrence kept)."""
    sd, null, lam = _grid_values(grid, pointmass, prior, null_weight)
    k = sd.shape[0]
    lo, hi = (-np.inf, np.inf) if grange is None else (float(min(grange)), float(max(grange)))
    if grange is not None:
        if lo == mode:
            mixture = "+uniform"
        elif hi == mode:
            mixture = "-uniform"
    if mixture == "uniform":
        a, b = mode - sd, mode + sd
    elif mixture == "+uniform":
        a, b = np.full(k, mode), mode + sd
    elif mixture == "-uniform":
        a, b = mode - sd, np.full(k, mode)
    else:  # halfuniform
        other = np.arange(k) != null if pointmass else np.ones(k, dtype=bool)
        a = np.concatenate([mode - sd, np.full(other.sum(), mode)])
        b = np.concatenate([np.full(k, mode), (mode + sd)[other]])
        lam = np.concatenate([lam, lam[other]])
    if grange is not None:
        a = np.maximum(a, lo)
        b = np.minimum(b, hi)
        first: dict[tuple[float, float], int] = {}  # first occurrence of each (a, b), in order
        for i, pair in enumerate(zip(a.tolist(), b.tolist())):
            first.setdefault(pair, i)
        keep = np.fromiter(first.values(), dtype=np.int64, count=len(first))
        a, b, lam = a[keep], b[keep], lam[keep]
    return a, b, lam


def _check_options(mixture, prior, optimizer, grid_mult, null_weight, df, fixed_prior=None) -> float:
    if mixture not in MIXTURES:
        raise InputError(f"unknown mixture {mixture!r}; choose one of {', '.join(map(repr, MIXTURES))}.")
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; choose 'mixsqp' or 'em'.")
    if isinstance(prior, str) and prior not in PRIORS:
        raise InputError(f"unknown prior {prior!r}; choose 'nullbiased', 'uniform' or pass a vector of "
                         "Dirichlet parameters (each >= 1).")
    if not isinstance(prior, str) and np.any(np.asarray(prior, dtype=float) < 1):
        raise InputError("prior (Dirichlet parameters) must all be >= 1; smaller values make the "
                         "penalised likelihood unbounded.")
    if not (np.isscalar(grid_mult) and grid_mult > 1):
        raise InputError(f"grid_mult must be a number > 1 (ratio of neighbouring grid values), got {grid_mult!r}.")
    if not null_weight >= 1:
        raise InputError(f"null_weight must be >= 1, got {null_weight!r}.")
    dfv = _df_value(df)
    family = fixed_prior.kind if isinstance(fixed_prior, MixturePrior) else mixture
    if dfv < np.inf and family in ("normal", "halfnormal", "truncnormal"):
        raise InputError(f"{family} mixture components are only available with normal errors (df=None), as in "
                         "ashr; use a uniform-type mixture with df.")
    return dfv


@dataclass(frozen=True)
class _Fit:
    prior: MixturePrior
    lam: np.ndarray
    L: np.ndarray
    rowmax: np.ndarray
    loglik: float
    penloglik: float
    n_iter: int
    converged: bool


def _fit(x, s, g: MixturePrior, lam, *, fixed: bool, optimizer: str, tol: float, max_iter: int,
         dfv: float) -> _Fit:
    """Likelihood matrix, mixture weights (unless fixed), log likelihoods."""
    n, kc = x.shape[0], g.n_components
    kind = _KINDS[g.kind]
    L = np.empty((n, kc))
    rowmax = np.empty(n)
    parallel = n >= _PARALLEL_FROM
    if parallel:
        _k.lik_matrix_par(x, s, kind, g.loc, g.sd, g.a, g.b, dfv, _CHUNK, L, rowmax)
    else:
        _k.lik_matrix_ser(x, s, kind, g.loc, g.sd, g.a, g.b, dfv, L, rowmax)
    if fixed:
        pi = np.array(g.pi, dtype=np.float64)
        n_iter, converged = 0, True
    else:
        pi = np.full(kc, 1.0 / kc)
        n_iter, converged = _mixture.solve_scaled(L, lam - 1.0, pi, optimizer=optimizer, tol=tol,
                                                  max_iter=max_iter)
    loglik = _mixture.scaled_loglik(L, rowmax, pi)
    prior = MixturePrior(g.kind, pi, g.loc, g.sd, g.a, g.b)
    return _Fit(prior, lam, L, rowmax, loglik, loglik + _mixture.penalty(lam, pi), int(n_iter), bool(converged))


def _brent_minimize(f: Callable[[float], float], lo: float, hi: float, tol: float) -> float:
    """Brent's (1973) golden-section / parabolic minimiser on [lo, hi], the algorithm of R's
    ``optimize`` (same starting point, tolerances tol1 = sqrt(eps)|x| + tol/3 and step rules)."""
    c = 0.5 * (3.0 - math.sqrt(5.0))
    eps = math.sqrt(np.finfo(float).eps)
    a, b = lo, hi
    v = a + c * (b - a)
    w = x = v
    d = e = 0.0
    fx = f(x)
    fv = fw = fx
    tol3 = tol / 3.0
    while True:
        xm = 0.5 * (a + b)
        tol1 = eps * abs(x) + tol3
        t2 = 2.0 * tol1
        if abs(x - xm) <= t2 - 0.5 * (b - a):
            return x
        p = q = r = 0.0
        if abs(e) > tol1:
            r = (x - w) * (fx - fv)
            q = (x - v) * (fx - fw)
            p = (x - v) * q - (x - w) * r
            q = (q - r) * 2.0
            if q > 0.0:
                p = -p
            else:
                q = -q
            r = e
            e = d
        if abs(p) >= abs(0.5 * q * r) or p <= q * (a - x) or p >= q * (b - x):
            e = (b - x) if x < xm else (a - x)
            d = c * e
        else:
            d = p / q
            u = x + d
            if u - a < t2 or b - u < t2:
                d = tol1 if x < xm else -tol1
        if abs(d) >= tol1:
            u = x + d
        elif d > 0.0:
            u = x + tol1
        else:
            u = x - tol1
        fu = f(u)
        if fu <= fx:
            if u < x:
                b = x
            else:
                a = x
            v, fv, w, fw, x, fx = w, fw, x, fx, u, fu
        else:
            if u < x:
                a = u
            else:
                b = u
            if fu <= fw or w == x:
                v, fv, w, fw = w, fw, u, fu
            elif fu <= fv or v == x or v == w:
                v, fv = u, fu


# =========================================================================== public function


def ash(
    betahat,
    sebetahat,
    *,
    mixture: str = "normal",
    pointmass: bool = True,
    prior: str | np.ndarray = "nullbiased",
    null_weight: float = 10.0,
    mode: float | str = 0.0,
    grid_mult: float = math.sqrt(2.0),
    grid: np.ndarray | None = None,
    grange: tuple[float, float] | None = None,
    df: float | None = None,
    optimizer: str = "mixsqp",
    fixed_prior: MixturePrior | np.ndarray | None = None,
    pi_threshold: float = 1e-10,
    tol: float = 1e-8,
    max_iter: int = 1000,
    n_threads: int | None = None,
) -> AshResult:
    r"""Adaptive shrinkage: empirical-Bayes posterior of effects under a unimodal mixture prior.

    A re-implementation of ``ashr::ash`` (ashr 2.2-65); with the arguments ashr was called with
    it reproduces ashr's output (see ``tests/golden/ashr``). **Difference in defaults:** here
    ``mixture="normal"``; ashr's default ``mixcompdist`` is ``"uniform"`` — pass
    ``mixture="uniform"`` to get ashr's default call.

    Parameters
    ----------
    betahat : array-like of shape (n,)
        Estimates (NaN excludes an observation from the fit; ±inf is an error).
    sebetahat : array-like of shape (n,) or scalar
        Their standard errors (>= 0; 0, inf and NaN exclude an observation from the fit).
    mixture : {"normal", "uniform", "halfuniform", "halfnormal", "+uniform", "-uniform"}, default "normal"
        Component family of the prior g: scale mixtures of normals, symmetric uniforms
        U[mode − σ, mode + σ], one-sided uniforms on either side of the mode (allows asymmetry),
        normals truncated at the mode on either side, or only the positive/negative side.
    pointmass : bool, default True
        Include a point mass at the mode (the "null" component).
    prior : {"nullbiased", "uniform"} or array-like, default "nullbiased"
        Dirichlet parameters λ of the penalty: λ = ``null_weight`` on the null component and 1
        elsewhere, all 1, or one value (>= 1) per grid component (duplicated like the components
        for half-uniform/half-normal). ashr's ``method="shrink"`` is ``pointmass=False,
        prior="uniform"``.
    null_weight : float, default 10
        λ of the null component for ``prior="nullbiased"``.
    mode : float or "estimate", default 0
        Centre of the unimodal prior; ``"estimate"`` maximises the log likelihood over the mode
        with Brent's method on [min(betahat), max(betahat)] (tolerance range · eps^¼), refitting
        the whole model at each trial mode, as ashr does.
    grid_mult : float, default sqrt(2)
        Ratio of neighbouring grid values.
    grid : array-like, optional
        Explicit grid σ_1 < ... < σ_m (ashr ``mixsd``); a 0 is prepended when ``pointmass``.
    grange : (float, float), optional
        Support limits for uniform-type mixtures: component end points are clipped to it and
        duplicated components dropped (what TRADE passes as ``grange``).
    df : float, optional
        Degrees of freedom (> 2) of a Student-t error model (uniform-type mixtures only).
    optimizer : {"mixsqp", "em"}, default "mixsqp"
        Mix-SQP (sequential quadratic programming with an active-set QP) or SQUAREM-accelerated
        EM. Both stop at the same optimum (Frank–Wolfe gap <= ``tol``).
    fixed_prior : MixturePrior or array-like, optional
        Use this prior instead of fitting one (ashr ``g=..., fixg=TRUE``): a :class:`MixturePrior`,
        or a weight vector for the components this call would build on its grid. With a fixed
        prior, ``null_weight`` applies to its first component (for ``penloglik`` only).
    pi_threshold : float, default 1e-10
        Components with weight <= this are dropped (and the rest renormalised) before the
        posterior summaries, as ashr's ``pi_thresh``; the returned prior keeps them.
    tol : float, default 1e-8
        Convergence tolerance on the Frank–Wolfe gap of the normalised objective (see Notes).
    max_iter : int, default 1000
        Maximum mix-SQP iterations (EM: 10× this many EM steps).
    n_threads : int, optional
        Numba threads (default: all).

    Returns
    -------
    AshResult

    Raises
    ------
    InputError
        Mismatched lengths, negative standard errors, ±inf estimates, nothing left to fit,
        unknown ``mixture``/``prior``/``optimizer``, invalid ``df``, ``grid_mult``, ``prior``.

    Warns
    -----
    ShrinkpertWarning
        If the optimiser stops before converging.

    Notes
    -----
    **Model.** :math:`\hat\beta_j \mid \beta_j \sim N(\beta_j, s_j^2)` (or
    :math:`\hat\beta_j = \beta_j + s_j T_j`, :math:`T_j \sim t_\nu`, with ``df``), and
    :math:`\beta_j \sim g = \sum_k \pi_k g_k` with fixed components; only π is estimated.

    **Grid.** On the included observations, with :math:`x_j = \hat\beta_j - \text{mode}`:
    :math:`\sigma_{\min} = \min_j s_j / 10`,
    :math:`\sigma_{\max} = 2\sqrt{\max_j (x_j^2 - s_j^2)}` (or :math:`8\sigma_{\min}` if no
    :math:`x_j^2 > s_j^2`), :math:`M = \lceil \log_2(\sigma_{\max}/\sigma_{\min}) / \log_2 m\rceil`
    and :math:`\sigma = \sigma_{\max} m^{-M}, \dots, \sigma_{\max} m^{-1}, \sigma_{\max}`
    (m = ``grid_mult``), with 0 prepended for the point mass. Components: normal
    :math:`N(\text{mode}, \sigma_k^2)`; uniform :math:`U[\text{mode}-\sigma_k, \text{mode}+\sigma_k]`;
    half-uniform :math:`U[\text{mode}-\sigma_k, \text{mode}]` for all k and
    :math:`U[\text{mode}, \text{mode}+\sigma_k]` for the non-null k; half-normal
    :math:`N(\text{mode}, \sigma_k^2)` truncated to :math:`(-\infty, \text{mode}]`, then to
    :math:`[\text{mode}, \infty)` for the non-null k.

    **Likelihood** (all in log space), :math:`L_{jk} = p(\hat\beta_j \mid g_k)`:

    * normal :math:`N(\mu_k, \sigma_k^2)`: :math:`N(\hat\beta_j; \mu_k, s_j^2 + \sigma_k^2)`;
    * uniform :math:`U[a, b]`: :math:`[\Phi((\hat\beta_j - a)/s_j) - \Phi((\hat\beta_j - b)/s_j)]/(b - a)`,
      evaluated as a log-difference of normal CDFs mirrored into the lower tail (or as a sum of
      two ``erf`` terms when the interval straddles 0), which stays finite for
      :math:`|\hat\beta_j| \gg s_j`; a point mass :math:`a = b` gives :math:`N(\hat\beta_j; a, s_j^2)`;
      with ``df`` the t CDF and density replace Φ and φ;
    * truncated normal :math:`N(\mu, \sigma^2)` on [a, b]:
      :math:`N(\hat\beta_j; \mu, s_j^2 + \sigma^2)\, P_{\text{post}}([a, b]) / P_{\text{prior}}([a, b])`
      with the untruncated posterior :math:`N(m_1, v_1)` (below).

    **Objective.** Maximise :math:`\sum_j \log \sum_k \pi_k L_{jk} + \sum_k (\lambda_k - 1)\log\pi_k`
    over the simplex. Rows of L are divided by their maxima. Mix-SQP works on
    :math:`f(\pi) = -W^{-1}[\sum_j \log \sum_k \pi_k L_{jk} + \sum_k (\lambda_k - 1)
    \log \pi_k]`, :math:`W = n + \sum_k(\lambda_k - 1)`, minimising :math:`f(\pi) + \sum_k \pi_k`
    over :math:`\pi \ge 0` (ashr's mixsqp call adds :math:`\epsilon = 10^{-6}` to every
    density, which moves the optimum where rare outliers rely on small weights); EM iterates :math:`\pi_k \leftarrow (\sum_j \gamma_{jk} + \lambda_k - 1)/W`.
    Both stop when the Frank–Wolfe gap :math:`-(1 + \min_k \partial_k f)` is <= ``tol``, which
    bounds the distance to the optimal penalised log likelihood by :math:`W \cdot` ``tol``.
    Mix-SQP starts with two EM steps; Hessian blocks over more than 8 components are estimated
    from about 2,048 evenly spaced observations, and with 100,000 observations or more the
    start is the solution for every (n // 50,000)-th observation. These choices change the path,
    not the optimum: the stopping rule is always evaluated on all observations.
    ``loglik`` is :math:`\sum_j \log \sum_k \hat\pi_k L_{jk}` (unscaled); ``penloglik`` adds
    the penalty; ``logLR`` subtracts :math:`\sum_j \log p(\hat\beta_j \mid \beta_j = 0)`.

    **Posterior** (after pruning :math:`\hat\pi_k \le` ``pi_threshold``):
    :math:`w_{jk} \propto \hat\pi_k L_{jk}`; per component

    * normal: :math:`m_1 = (s^2\mu + \hat\beta\sigma^2)/(s^2 + \sigma^2)`,
      :math:`v_1 = s^2\sigma^2/(s^2 + \sigma^2)`, :math:`P(\beta \le 0) = \Phi(-m_1/\sqrt{v_1})`;
    * uniform [a, b]: :math:`N(\hat\beta, s^2)` truncated to [a, b] (t errors:
      :math:`\hat\beta - s\,T`, T a t_ν truncated to :math:`[(\hat\beta - b)/s, (\hat\beta - a)/s]`);
      moments via Mills ratios in the tails;
    * truncated normal: :math:`N(m_1, v_1)` truncated to [a, b];
    * point mass at c: β = c.

    PosteriorMean :math:`= \sum_k w_{jk} E_k`; PosteriorSD
    :math:`= \sqrt{\max(0, \sum_k w_{jk}(V_k + E_k^2) - \text{PM}^2)}`;
    lfdr :math:`= \sum` of :math:`w_{jk}` over point masses at exactly 0 (so lfdr = 0 for a
    non-zero mode); NegativeProb :math:`= \sum_k w_{jk} P_k(\beta \le 0) - \text{lfdr}`;
    PositiveProb :math:`= \max(0, 1 - \text{NegativeProb} - \text{lfdr})`; lfsr
    :math:`= 1 - \text{NegativeProb}` if NegativeProb :math:`> (1 - \text{lfdr})/2`, else
    NegativeProb + lfdr (clamped at 0); qvalue/svalue: mean of the i smallest lfdr/lfsr.

    **Excluded observations** (NaN betahat or sebetahat; sebetahat = 0 or inf) do not enter the
    grid, the fit, ``loglik`` or ``logLR``. They receive the (pruned) prior as posterior:
    PosteriorMean = mean of ĝ, PosteriorSD = sd of ĝ, lfdr = ĝ's weight on point masses at 0,
    and count in the q-/s-values — as in ashr, including for sebetahat = 0. One deliberate
    difference: ashr sets their NegativeProb to P_ĝ(β <= 0), which counts the null point mass
    twice in lfsr; here NegativeProb = P_ĝ(β < 0), so NegativeProb + PositiveProb + lfdr = 1
    and lfsr = min(P(β <= 0), P(β >= 0)) under ĝ, as for every other row.

    Other differences from ashr (all below ashr's own optimiser noise): no ε in the objective,
    no low-rank approximation of L, exact truncated-normal moments (ashr
    falls back to bounds when its formulas lose precision), and log-densities of uniform
    components that stay finite where ashr's ``log(1 - exp(...))`` gives −inf (rows with
    :math:`\hat\beta - b \gg s`; those components have negligible weight). A half-normal
    mixture with a non-zero mode is truncated at the mode (ashr truncates at 0).

    References
    ----------
    Stephens M (2017). False discovery rates: a new deal. Biostatistics 18(2):275–294.
    Kim Y, Carbonetto P, Stephens M, Anitescu M (2020). A fast algorithm for maximum likelihood
    estimation of mixture proportions using sequential quadratic programming. J Comput Graph
    Stat 29(2):261–273.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> beta = np.where(rng.random(500) < 0.1, rng.normal(0, 2, 500), 0.0)
    >>> se = np.full(500, 0.5)
    >>> res = ash(beta + se * rng.normal(size=500), se)
    >>> bool(np.all(np.abs(res.posterior_mean) <= np.abs(res.betahat) + 1e-12))
    True
    """
    x_all, s_all, excluded, index = _validate_inputs(betahat, sebetahat)
    dfv = _check_options(mixture, prior, optimizer, grid_mult, null_weight, df, fixed_prior)
    if grange is not None and mixture in ("normal", "halfnormal"):
        raise InputError("grange only applies to uniform-type mixtures (ashr ignores it with a warning for "
                         f"mixture={mixture!r}); drop grange or use mixture='uniform'/'halfuniform'.")
    if not (isinstance(mode, str) and mode == "estimate") and not np.isscalar(mode):
        raise InputError(f"mode must be a number or 'estimate', got {mode!r}.")
    if isinstance(mode, str) and mode != "estimate":
        raise InputError(f"mode must be a number or 'estimate', got {mode!r}.")
    incl = ~excluded
    x = np.ascontiguousarray(x_all[incl])
    s = np.ascontiguousarray(s_all[incl])

    def build(mode_value: float) -> tuple[MixturePrior, np.ndarray, bool]:
        if isinstance(fixed_prior, MixturePrior):
            lam = _lambda(prior, fixed_prior.n_components, 0, null_weight)
            return fixed_prior, lam, True
        grd = _grid(x, s, mode_value, grid_mult) if grid is None else np.asarray(grid, dtype=np.float64)
        g, lam = _components(grd, mixture, mode_value, pointmass, prior, null_weight, grange)
        if fixed_prior is not None:
            w = np.asarray(fixed_prior, dtype=np.float64)
            if w.shape != (g.n_components,):
                raise InputError(f"fixed_prior has {w.size} weights but this call builds {g.n_components} "
                                 "components; pass a MixturePrior, or one weight per component.")
            g = MixturePrior(g.kind, w, g.loc, g.sd, g.a, g.b)
            return g, lam, True
        return g, lam, False

    fit_kwargs = dict(optimizer=optimizer, tol=tol, max_iter=max_iter, dfv=dfv)
    with thread_limit(n_threads):
        if isinstance(mode, str):
            if fixed_prior is not None:
                raise InputError("mode='estimate' cannot be combined with fixed_prior; the prior fixes the mode.")
            lo, hi = float(np.min(x)), float(np.max(x))

            def negloglik(c: float) -> float:
                g, lam, fixed = build(c)
                return -_fit(x, s, g, lam, fixed=fixed, **fit_kwargs).loglik

            mode_value = _brent_minimize(negloglik, lo, hi, abs(hi - lo) * np.finfo(float).eps ** 0.25)
        else:
            mode_value = float(mode)
        g, lam, fixed = build(mode_value)
        fit = _fit(x, s, g, lam, fixed=fixed, **fit_kwargs)
        logger.debug("ash: %d observations (%d excluded), %d components, %s: %d iterations, converged=%s",
                      x.shape[0], int(excluded.sum()), fit.prior.n_components, optimizer, fit.n_iter,
                      fit.converged)
        if not fit.converged:
            warnings.warn(f"ash: the {optimizer} optimiser stopped after {fit.n_iter} iterations without "
                          f"reaching tol={tol}; results may be unreliable (raise max_iter).",
                          ShrinkpertWarning, stacklevel=2)
        post = _posterior(x, s, fit, pi_threshold, dfv)

    n = x_all.shape[0]
    if excluded.any():  # the prior as posterior (see Notes)
        gp = fit.prior.prune(pi_threshold)
        gm, gsd, gneg, gzero = _k.prior_summary(gp.pi, _KINDS[gp.kind], gp.loc, gp.sd, gp.a, gp.b, gp.is_null)
        prior_values = {"pm": gm, "psd": gsd, "lfdr": gzero, "negp": gneg, "lfsr": _k.lfsr_from(gneg, gzero),
                        "pos": max(1.0 - gneg - gzero, 0.0)}
        out = {}
        for name, val in prior_values.items():
            out[name] = np.empty(n)
            out[name][excluded] = val
            out[name][incl] = post[name]
    else:
        out = post
    lfsr, positive = out["lfsr"], out["pos"]
    qvalue = np.empty(n)
    svalue = np.empty(n)
    if n >= _PARALLEL_FROM:
        _k.running_means_pair(out["lfdr"], lfsr, qvalue, svalue)
    else:
        _k.running_mean_sorted(out["lfdr"], qvalue)
        _k.running_mean_sorted(lfsr, svalue)
    x_copy = np.array(x_all, copy=True)
    s_copy = np.array(s_all, copy=True)
    _seal(x_copy, s_copy, out["pm"], out["psd"], lfsr, out["lfdr"], qvalue, svalue, out["negp"], positive)
    if dfv < np.inf:
        from scipy import stats

        null_ll = float(np.sum(stats.t.logpdf(x / s, dfv) - np.log(s)))
    else:
        null_ll = float(np.sum(-0.5 * (x / s) ** 2 - 0.5 * math.log(2 * math.pi) - np.log(s)))
    params = {
        "mixture": mixture,
        "pointmass": pointmass,
        "prior": prior if isinstance(prior, str) else tuple(np.asarray(prior, dtype=float)),
        "null_weight": float(null_weight),
        "mode": mode_value,
        "mode_estimated": isinstance(mode, str),
        "grid_mult": float(grid_mult),
        "grange": None if grange is None else (float(min(grange)), float(max(grange))),
        "df": None if dfv == np.inf else dfv,
        "optimizer": optimizer,
        "fixed_prior": fixed_prior is not None,
        "pi_threshold": float(pi_threshold),
        "tol": float(tol),
        "n_excluded": int(excluded.sum()),
        "dirichlet": tuple(float(v) for v in fit.lam),
    }
    return AshResult(
        betahat=x_copy,
        sebetahat=s_copy,
        posterior_mean=out["pm"],
        posterior_sd=out["psd"],
        lfsr=lfsr,
        lfdr=out["lfdr"],
        qvalue=qvalue,
        svalue=svalue,
        negative_prob=out["negp"],
        positive_prob=positive,
        excluded=excluded,
        prior=fit.prior,
        loglik=fit.loglik,
        penloglik=fit.penloglik,
        logLR=fit.loglik - null_ll,
        n_iter=fit.n_iter,
        converged=fit.converged,
        params=params,
        index=index,
    )


def _posterior(x, s, fit: _Fit, pi_threshold: float, dfv: float) -> dict[str, np.ndarray]:
    keep = np.flatnonzero(fit.prior.pi > pi_threshold).astype(np.int64)
    if keep.size == 0:
        raise InputError(f"every fitted weight is <= pi_threshold={pi_threshold}; lower pi_threshold.")
    pk = fit.prior.pi[keep] / fit.prior.pi[keep].sum()
    g = fit.prior
    n = x.shape[0]
    out = {name: np.empty(n) for name in ("pm", "psd", "lfdr", "negp", "lfsr", "pos")}
    args = (x, s, fit.L, keep, pk, _KINDS[g.kind], g.loc, g.sd, g.a, g.b, g.is_null, dfv)
    outs = (out["pm"], out["psd"], out["lfdr"], out["negp"], out["lfsr"], out["pos"])
    if n >= _PARALLEL_FROM:
        _k.posterior_par(*args, _CHUNK, *outs)
    else:
        _k.posterior_ser(*args, *outs)
    return out


# =========================================================================== many problems


@dataclass(frozen=True)
class AshBatchResult:
    """Output of :func:`ash_batch`: P problems, G observations each, K_max grid slots.

    Attributes
    ----------
    posterior_mean, posterior_sd, lfsr, lfdr : ndarray, shape (P, G)
        Posterior summaries (as :class:`AshResult`; NaN for a row without usable entries).
    negative_prob, qvalue, svalue : ndarray of shape (P, G) or None
        Only with ``extra=True``.
    kind : str
        Component family (see :class:`MixturePrior`).
    pi, loc, sd, a, b : ndarray, shape (P, K_max)
        Fitted weights and components of each row's prior, NaN-padded beyond ``n_components``.
    n_components : ndarray of int64, shape (P,)
    mode, loglik, penloglik : ndarray, shape (P,)
    n_iter : ndarray of int64, shape (P,)
    converged : ndarray of bool, shape (P,)
    n_used : ndarray of int64, shape (P,)
        Entries of each row that entered the fit.
    """

    posterior_mean: np.ndarray
    posterior_sd: np.ndarray
    lfsr: np.ndarray
    lfdr: np.ndarray
    negative_prob: np.ndarray | None
    qvalue: np.ndarray | None
    svalue: np.ndarray | None
    kind: str
    pi: np.ndarray
    loc: np.ndarray
    sd: np.ndarray
    a: np.ndarray
    b: np.ndarray
    n_components: np.ndarray
    mode: np.ndarray
    loglik: np.ndarray
    penloglik: np.ndarray
    n_iter: np.ndarray
    converged: np.ndarray
    n_used: np.ndarray

    def prior(self, p: int) -> MixturePrior:
        """Fitted prior of problem ``p``."""
        k = int(self.n_components[p])
        return MixturePrior(self.kind, self.pi[p, :k], self.loc[p, :k], self.sd[p, :k], self.a[p, :k],
                            self.b[p, :k])


def ash_batch(
    betahat,
    sebetahat,
    *,
    mixture: str = "normal",
    pointmass: bool = True,
    prior: str | np.ndarray = "nullbiased",
    null_weight: float = 10.0,
    mode: float | np.ndarray = 0.0,
    grid_mult: float = math.sqrt(2.0),
    grange: tuple[float, float] | None = None,
    df: float | np.ndarray | None = None,
    optimizer: str = "mixsqp",
    fixed_prior: MixturePrior | None = None,
    pi_threshold: float = 1e-10,
    tol: float = 1e-8,
    max_iter: int = 1000,
    extra: bool = False,
    n_threads: int | None = None,
) -> AshBatchResult:
    """:func:`ash` on each row of ``betahat``/``sebetahat`` (P × G), all rows in one parallel kernel.

    Row p is an independent problem with its own grid (from its own included entries), prior
    weights and posterior, exactly as ``ash(betahat[p], sebetahat[p], ...)`` would compute them
    (same kernels; the optimiser runs serially inside each row, rows run in parallel). Entries
    with NaN betahat/sebetahat or sebetahat in {0, inf} are excluded and get the row's prior as
    posterior; a row without usable entries gives NaN. ``extra`` also returns NegativeProb,
    q-values and s-values. ``mode`` and ``df`` may be a scalar or one value per row ("estimate"
    is not supported here).

    Parameters
    ----------
    betahat, sebetahat : array-like of shape (P, G)
        Estimates and standard errors, one problem per row (NaN excludes an entry; ±inf
        betahat and negative sebetahat are errors).
    mixture, pointmass, prior, null_weight, grid_mult, grange, optimizer, fixed_prior, pi_threshold, tol, max_iter
        As in :func:`ash`, shared by all rows.
    mode, df : float or array-like of shape (P,)
        As in :func:`ash`, per row or shared.
    extra : bool, default False
        Also return NegativeProb, q-values and s-values.
    n_threads : int, optional
        Numba threads (default: all).

    Returns
    -------
    AshBatchResult

    Raises
    ------
    InputError
        Shapes differ, ±inf estimates, negative standard errors, or an invalid option.

    Warns
    -----
    ShrinkpertWarning
        If the optimiser stops before converging on some row.
    """
    X = np.ascontiguousarray(betahat, dtype=np.float64)
    S = np.ascontiguousarray(sebetahat, dtype=np.float64)
    if X.ndim != 2 or X.shape != S.shape:
        raise InputError(f"betahat and sebetahat must be matrices of the same shape, got {X.shape} and {S.shape}.")
    if np.any(np.isinf(X)):
        raise InputError("betahat contains ±inf; set those entries to NaN to exclude them.")
    if np.any(S < 0):
        raise InputError("sebetahat contains negative values; standard errors must be >= 0.")
    P, G = X.shape
    if df is None or np.ndim(df) == 0:
        dfs = np.full(P, _check_options(mixture, prior, optimizer, grid_mult, null_weight, df, fixed_prior))
    else:
        dfs = np.array([_check_options(mixture, prior, optimizer, grid_mult, null_weight, d, fixed_prior)
                        for d in np.broadcast_to(np.asarray(df, dtype=np.float64), (P,))])
    if grange is not None and mixture in ("normal", "halfnormal"):
        raise InputError("grange only applies to uniform-type mixtures.")
    modes = np.broadcast_to(np.asarray(mode, dtype=np.float64), (P,)).copy()
    incl = np.isfinite(X) & np.isfinite(S) & (S > 0)
    comps: list[tuple[MixturePrior, np.ndarray]] = []
    for p in range(P):
        if fixed_prior is not None:
            comps.append((fixed_prior, _lambda(prior, fixed_prior.n_components, 0, null_weight)))
        elif not incl[p].any():
            comps.append((MixturePrior.normal([1.0], [0.0], modes[p]), np.ones(1)))
        else:
            grd = _grid(X[p, incl[p]], S[p, incl[p]], modes[p], grid_mult)
            comps.append(_components(grd, mixture, modes[p], pointmass, prior, null_weight, grange))
    kmax = max(g.n_components for g, _ in comps)
    kind = comps[0][0].kind
    pad = {name: np.full((P, kmax), np.nan) for name in ("loc", "sd", "a", "b", "pen", "fixed")}
    zero = np.zeros((P, kmax), dtype=bool)
    ncomp = np.empty(P, dtype=np.int64)
    for p, (g, lam) in enumerate(comps):
        k = g.n_components
        ncomp[p] = k
        pad["loc"][p, :k], pad["sd"][p, :k], pad["a"][p, :k], pad["b"][p, :k] = g.loc, g.sd, g.a, g.b
        pad["pen"][p, :k] = lam - 1.0
        pad["fixed"][p, :k] = g.pi
        zero[p, :k] = g.is_null
    out = {name: np.empty((P, G)) for name in ("pm", "psd", "lfsr", "lfdr")}
    ext = {name: np.empty((P, G) if extra else (0, 0)) for name in ("negp", "qval", "sval")}
    pi = np.full((P, kmax), np.nan)
    loglik = np.empty(P)
    penloglik = np.empty(P)
    n_iter = np.empty(P, dtype=np.int64)
    conv = np.empty(P, dtype=np.bool_)
    n_used = np.empty(P, dtype=np.int64)
    opt = _mk.OPT_EM if optimizer == "em" else _mk.OPT_MIXSQP
    iters = max_iter * 10 if optimizer == "em" else max_iter
    with thread_limit(n_threads):
        _k.ash_batch(X, S, _KINDS[kind], pad["loc"], pad["sd"], pad["a"], pad["b"], ncomp, pad["pen"], zero,
                     pad["fixed"], fixed_prior is not None, dfs, opt, _mixture.SQP_EPS, tol, iters, _mixture.N_EM_WARMUP,
                     pi_threshold, _CHUNK, extra, out["pm"], out["psd"], out["lfsr"], out["lfdr"],
                     ext["negp"], ext["qval"], ext["sval"], pi, loglik, penloglik, n_iter, conv, n_used)
    for p in range(P):  # the kernel writes pi only for the first ncomp[p] slots
        pi[p, ncomp[p]:] = np.nan
    bad = np.flatnonzero(~conv & (n_used > 0))
    if bad.size:
        warnings.warn(f"ash: the optimiser did not converge for {bad.size} of {P} problems (first: row "
                      f"{int(bad[0])}); raise max_iter.", ShrinkpertWarning, stacklevel=2)
    return AshBatchResult(
        posterior_mean=out["pm"], posterior_sd=out["psd"], lfsr=out["lfsr"], lfdr=out["lfdr"],
        negative_prob=ext["negp"] if extra else None, qvalue=ext["qval"] if extra else None,
        svalue=ext["sval"] if extra else None, kind=kind, pi=pi, loc=pad["loc"], sd=pad["sd"],
        a=pad["a"], b=pad["b"], n_components=ncomp, mode=modes, loglik=loglik, penloglik=penloglik,
        n_iter=n_iter, converged=conv, n_used=n_used,
    )


