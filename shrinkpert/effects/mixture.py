r"""Maximum (penalised) likelihood mixture weights: :func:`fit_mixture_weights`.

The one mixture-weight solver of the package. Given the likelihood of each observation under
each of K fixed components, :math:`L_{jk} = p(x_j \mid \text{component } k)`, it finds

.. math::

    \hat\pi = \arg\max_{\pi \in \Delta_K} \sum_j \log \sum_k \pi_k L_{jk}
        + \sum_k (\lambda_k - 1) \log \pi_k,

with Dirichlet parameters :math:`\lambda_k \ge 1` (all 1: plain maximum likelihood). ash
(:func:`~shrinkpert.effects.ash.ash`, :func:`~shrinkpert.effects.ash.ash_batch`,
:func:`~shrinkpert.effects.shrink.shrink_effects`) and TRADE's transcriptome impact
(:func:`~shrinkpert.effects.impact.transcriptome_impact`,
:func:`~shrinkpert.effects.impact.impact_correlation`) all solve this problem with the same
compiled kernels (``_mixture_kernels``): mix-SQP (Kim, Carbonetto, Stephens & Anitescu 2020) by
default, or SQUAREM-accelerated EM.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._numba import thread_limit
from ..errors import InputError
from . import _mixture_kernels as _mk

__all__ = ["MixtureWeights", "fit_mixture_weights"]

OPTIMIZERS = ("mixsqp", "em")
CHUNK = 8192  # rows per work unit; fixed so results do not depend on the thread count
PARALLEL_FROM = 4 * CHUNK  # smaller problems run on one thread (same chunks, same results)
N_EM_WARMUP = 2  # EM steps before mix-SQP
SQP_EPS = 0.0  # constant added to every mixture density in the mix-SQP objective (mixsqp's eps)
_SUBSAMPLE_FROM = 100_000  # mix-SQP on at least this many observations starts from a subsample's solution
_SUBSAMPLE_SIZE = 50_000
_TINY = 1e-200  # scaled likelihoods below this are stored as 0 (as the ash kernels do)


@dataclass(frozen=True)
class MixtureWeights:
    """Result of :func:`fit_mixture_weights`.

    Attributes
    ----------
    weights : ndarray of float64, shape (K,)
        :math:`\\hat\\pi` (non-negative, summing to 1; exact zeros off the support).
    loglik : float
        :math:`\\sum_j \\log \\sum_k \\hat\\pi_k L_{jk}` on the scale of the input.
    penloglik : float
        ``loglik`` plus the Dirichlet penalty :math:`\\sum_k (\\lambda_k - 1)\\log\\hat\\pi_k`.
    n_iter : int
        Optimiser iterations.
    converged : bool
        Whether the Frank–Wolfe gap reached ``tol``.
    params : mapping
        ``optimizer``, ``tol``, ``max_iter``, ``dirichlet``.
    """

    weights: np.ndarray
    loglik: float
    penloglik: float
    n_iter: int
    converged: bool
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = np.array(self.weights, dtype=np.float64)
        w.setflags(write=False)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row per component: ``component`` (0-based column of the likelihood) and ``weight``."""
        return pd.DataFrame({"component": np.arange(self.weights.size), "weight": self.weights})


def scaled_likelihood(likelihood: Any, *, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Rows divided by their maxima (the solver's input) and the log of each row's maximum.

    Raises :class:`InputError` for a non-2-D or empty matrix, NaN or negative entries, +inf, or a
    row that is 0 (``-inf`` in log space) under every component.
    """
    arr = np.asarray(likelihood, dtype=np.float64)
    name = "log_likelihood" if log else "likelihood"
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty matrix (observations × components), got shape {arr.shape}.")
    if np.isnan(arr).any() or np.isposinf(arr).any():
        raise InputError(f"{name} contains NaN or +inf; every entry must be a (log) density.")
    if not log:
        if (arr < 0).any():
            raise InputError("likelihood contains negative values; pass densities (>= 0) or log=True.")
        with np.errstate(divide="ignore"):
            arr = np.log(arr)
    rowmax = arr.max(axis=1)
    dead = np.flatnonzero(rowmax == -np.inf)
    if dead.size:
        raise InputError(f"observation(s) {dead[:5].tolist()} have likelihood 0 under every component; "
                         "drop them or add a component that covers them.")
    scaled = np.exp(arr - rowmax[:, None])
    scaled[scaled < _TINY] = 0.0
    return np.ascontiguousarray(scaled), rowmax


def solve_scaled(L: np.ndarray, pen: np.ndarray, pi: np.ndarray, *, optimizer: str, tol: float,
                 max_iter: int) -> tuple[int, bool]:
    """Run the solver on a row-max-scaled likelihood ``L`` with penalty ``pen`` (λ − 1), starting
    from ``pi`` (overwritten with the solution). Returns ``(n_iter, converged)``.

    Large problems run their passes over the rows in parallel; mix-SQP on at least 100,000
    observations starts from the solution for every (n // 50,000)-th observation (penalty
    scaled to the subsample). These choices change the path, not the stopping rule, which is
    always evaluated on all observations.
    """
    n = L.shape[0]
    parallel = n >= PARALLEL_FROM
    if optimizer == "em":
        return _mk.mixem(L, pen, pi, tol, max_iter * 10, parallel, CHUNK)
    n_em = N_EM_WARMUP
    if n >= _SUBSAMPLE_FROM:
        stride = n // _SUBSAMPLE_SIZE
        Ls = np.ascontiguousarray(L[::stride])
        _mk.mixsqp(Ls, pen * (Ls.shape[0] / n), pi, SQP_EPS, tol, max_iter, N_EM_WARMUP, False, CHUNK)
        n_em = 0
    return _mk.mixsqp(L, pen, pi, SQP_EPS, tol, max_iter, n_em, parallel, CHUNK)


def scaled_loglik(L: np.ndarray, rowmax: np.ndarray, pi: np.ndarray) -> float:
    """:math:`\\sum_j \\log \\sum_k \\pi_k L_{jk} + \\text{rowmax}_j` (chunked; parallel when large)."""
    fn = _mk.loglik_par if L.shape[0] >= PARALLEL_FROM else _mk.loglik_chunked
    return float(fn(L, rowmax, pi, CHUNK))


def penalty(lam: np.ndarray, pi: np.ndarray) -> float:
    """Dirichlet penalty :math:`\\sum_{k: \\lambda_k \\ne 1} (\\lambda_k - 1) \\log \\pi_k`."""
    sel = lam != 1.0
    with np.errstate(divide="ignore"):
        return float(np.sum((lam[sel] - 1.0) * np.log(pi[sel])))


def fit_mixture_weights(
    likelihood: Any,
    *,
    log: bool = False,
    dirichlet: Any = None,
    optimizer: str = "mixsqp",
    start: Any = None,
    tol: float = 1e-8,
    max_iter: int = 1000,
    n_threads: int | None = None,
) -> MixtureWeights:
    r"""Maximum (penalised) likelihood weights of a mixture with fixed components.

    Maximises :math:`\sum_j \log \sum_k \pi_k L_{jk} + \sum_k (\lambda_k - 1)\log\pi_k` over
    the simplex. Rows of :math:`L` are first divided by their maxima (which does not move the
    optimum); mix-SQP then minimises :math:`f(\pi) + \sum_k \pi_k` over :math:`\pi \ge 0`, with
    :math:`f = -W^{-1}[\ldots]` the normalised objective and :math:`W = n + \sum_k(\lambda_k - 1)`:
    each iteration solves the quadratic model on the working set by an active-set QP and
    backtracks (Armijo); EM iterates :math:`\pi_k \leftarrow (\sum_j \gamma_{jk} + \lambda_k - 1)/W`
    with SQUAREM steps. Both stop when the Frank–Wolfe gap :math:`-(1 + \min_k \partial_k f)`
    is <= ``tol``, which bounds the distance to the optimal penalised log likelihood by
    :math:`W \cdot` ``tol``.

    Parameters
    ----------
    likelihood : array-like of shape (n, K)
        :math:`L_{jk} \ge 0`, or :math:`\log L_{jk}` with ``log=True`` (use log space when
        densities may underflow). Every row needs a positive entry.
    log : bool, default False
        Whether ``likelihood`` holds log densities.
    dirichlet : array-like of shape (K,), optional
        Dirichlet parameters :math:`\lambda_k \ge 1` (default all 1: no penalty).
    optimizer : {"mixsqp", "em"}, default "mixsqp"
    start : array-like of shape (K,), optional
        Starting weights (positive somewhere; normalised). Default uniform.
    tol : float, default 1e-8
        Frank–Wolfe gap at which to stop.
    max_iter : int, default 1000
        Maximum mix-SQP iterations (EM: 10× this many steps).
    n_threads : int, optional
        Numba threads for large problems (default: all).

    Returns
    -------
    MixtureWeights

    Raises
    ------
    InputError
        A malformed likelihood (see above), a ``dirichlet`` or ``start`` of the wrong length or
        with values out of range, or an unknown ``optimizer``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([-2.0, -0.1, 0.0, 0.2, 3.0])
    >>> sd = np.array([0.5, 1.0, 3.0])  # three centred normal components
    >>> lik = np.exp(-0.5 * (x[:, None] / sd) ** 2) / sd
    >>> fit = fit_mixture_weights(lik)
    >>> bool(fit.converged), round(float(fit.weights.sum()), 12)
    (True, 1.0)
    """
    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; choose 'mixsqp' or 'em'.")
    if not (tol > 0 and int(max_iter) >= 1):
        raise InputError(f"tol must be > 0 and max_iter >= 1, got tol={tol!r}, max_iter={max_iter!r}.")
    L, rowmax = scaled_likelihood(likelihood, log=log)
    k = L.shape[1]
    lam = np.ones(k) if dirichlet is None else np.asarray(dirichlet, dtype=np.float64).reshape(-1)
    if lam.shape != (k,) or not np.all(lam >= 1) or not np.isfinite(lam).all():
        raise InputError(f"dirichlet must hold {k} finite values >= 1 (one per component), got {lam!r}.")
    if start is None:
        pi = np.full(k, 1.0 / k)
    else:
        pi = np.array(start, dtype=np.float64).reshape(-1)
        if pi.shape != (k,) or not np.isfinite(pi).all() or (pi < 0).any() or pi.sum() <= 0:
            raise InputError(f"start must hold {k} finite, non-negative weights, not all 0.")
        pi = pi / pi.sum()
    with thread_limit(n_threads):
        n_iter, converged = solve_scaled(L, lam - 1.0, pi, optimizer=optimizer, tol=float(tol),
                                         max_iter=int(max_iter))
        loglik = scaled_loglik(L, rowmax, pi)
    return MixtureWeights(
        weights=pi, loglik=loglik, penloglik=loglik + penalty(lam, pi), n_iter=int(n_iter),
        converged=bool(converged),
        params={"optimizer": optimizer, "tol": float(tol), "max_iter": int(max_iter),
                "dirichlet": tuple(lam.tolist())},
    )
