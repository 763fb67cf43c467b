"""Adaptive shrinkage of every perturbation's effects at once: :func:`shrink_effects`."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._frames import long_frame
from ..errors import InputError, ShrinkpertWarning
from .._arrays import freeze as _freeze
from .ash import MixturePrior, ash_batch
from .estimate import EffectSizes

__all__ = ["ShrunkEffects", "shrink_effects"]

_BY = ("perturbation", "gene", "pooled")


@dataclass(frozen=True)
class ShrunkEffects:
    """Raw effects and their empirical-Bayes posteriors, side by side.

    Attributes
    ----------
    perturbations, genes : pandas.Index
    effect, std_error : ndarray, shape (n_perturbations, n_genes)
        The raw estimates and the standard errors given to ash (moderated when ``moderate=True``;
        ``raw_std_error`` keeps the unmoderated ones).
    raw_std_error : ndarray, shape (n_perturbations, n_genes)
    posterior_mean, posterior_sd, lfsr, lfdr : ndarray, shape (n_perturbations, n_genes)
    prior_weights : ndarray, shape (n_priors, K)
        Fitted mixture weights of each prior (one prior per perturbation, per gene, or one
        pooled), NaN-padded to the largest grid.
    prior_sd : ndarray, shape (n_priors, K)
        Component standard deviations (normal mixtures; NaN otherwise).
    loglik : ndarray, shape (n_priors,)
    target_index : ndarray of int64
    scale : str
    params : mapping
    """

    perturbations: pd.Index
    genes: pd.Index
    effect: np.ndarray
    std_error: np.ndarray
    raw_std_error: np.ndarray
    posterior_mean: np.ndarray
    posterior_sd: np.ndarray
    lfsr: np.ndarray
    lfdr: np.ndarray
    prior_weights: np.ndarray
    prior_sd: np.ndarray
    loglik: np.ndarray
    target_index: np.ndarray
    scale: str
    params: Mapping[str, Any]
    _priors: tuple = ()

    def __post_init__(self) -> None:
        for name in ("effect", "std_error", "raw_std_error", "posterior_mean", "posterior_sd", "lfsr", "lfdr",
                     "prior_weights", "prior_sd", "loglik", "target_index"):
            object.__setattr__(self, name, _freeze(getattr(self, name)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def prior(self, k: int) -> MixturePrior:
        """Fitted prior number ``k`` (the ``k``-th perturbation when ``by="perturbation"``)."""
        return self._priors[k]

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per (perturbation, gene), raw and shrunken values side by side."""
        return long_frame(self.perturbations, self.genes, {
            name: getattr(self, name)
            for name in ("effect", "std_error", "posterior_mean", "posterior_sd", "lfsr", "lfdr")
        })

    def to_anndata(self):
        """Perturbations × genes AnnData, one layer per field; ``obs`` holds :meth:`summary` per
        perturbation, ``var`` per gene the mean |effect|, mean |posterior mean| and the number of
        perturbations with lfsr < 0.05."""
        import anndata as ad

        layers = {k: np.array(getattr(self, k)) for k in
                  ("effect", "std_error", "posterior_mean", "posterior_sd", "lfsr", "lfdr")}
        params = {k: v for k, v in self.params.items() if isinstance(v, (str, int, float, bool))}
        obs = self.summary().set_axis(self.perturbations.astype(str))
        obs.index.name = "perturbation"
        var = pd.DataFrame({"mean_abs_effect": np.nanmean(np.abs(self.effect), axis=0),
                            "mean_abs_posterior_mean": np.nanmean(np.abs(self.posterior_mean), axis=0),
                            "n_lfsr_below_0.05": (self.lfsr < 0.05).sum(axis=0)},
                           index=pd.Index(self.genes.astype(str), name="gene"))
        return ad.AnnData(X=np.array(self.posterior_mean), obs=obs, var=var, layers=layers,
                          uns={"shrinkpert": {"params": params, "X": "posterior_mean (log1p scale of the effects)"}})

    def summary(self, *, lfsr: float = 0.05) -> pd.DataFrame:
        """Per perturbation: genes with lfsr below ``lfsr``, mean |shrinkage|, prior null weight."""
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.abs(self.posterior_mean) / np.abs(self.effect)
        frame = pd.DataFrame({
            f"n_lfsr_below_{lfsr:g}": (self.lfsr < lfsr).sum(axis=1),
            "median_shrinkage_ratio": np.nanmedian(np.where(np.abs(self.effect) > 0, ratio, np.nan), axis=1),
            "rms_raw": np.sqrt(np.mean(self.effect**2, axis=1)),
            "rms_shrunk": np.sqrt(np.mean(self.posterior_mean**2, axis=1)),
        }, index=self.perturbations)
        if self.params["by"] == "perturbation":
            frame["prior_null_weight"] = self.prior_weights[:, 0]
            frame["loglik"] = self.loglik
        return frame


def _moderated_se(effects: EffectSizes) -> np.ndarray:
    """Standard errors with their variance squeezed across genes, per perturbation (limma)."""
    from .moderate import squeeze_var

    out = np.empty_like(effects.std_error)
    for k in range(effects.std_error.shape[0]):
        with warnings.catch_warnings():  # limma's zero-variance offset note, once per perturbation
            warnings.simplefilter("ignore", ShrinkpertWarning)
            out[k] = np.sqrt(squeeze_var(effects.std_error[k] ** 2, effects.df[k]).var_post)
    return out


def shrink_effects(
    effects: EffectSizes,
    *,
    mixture: str = "normal",
    by: str = "perturbation",
    moderate: bool = False,
    pointmass: bool = True,
    prior: str = "nullbiased",
    null_weight: float = 10.0,
    grid_mult: float = float(np.sqrt(2.0)),
    optimizer: str = "mixsqp",
    tol: float = 1e-8,
    max_iter: int = 1000,
    n_threads: int | None = None,
) -> ShrunkEffects:
    """Adaptive shrinkage (ash) of an :class:`EffectSizes`, all perturbations in one parallel kernel.

    Model, for the effects :math:`\\hat\\beta_j` of one problem (by default one perturbation's
    genes) with standard errors :math:`s_j`:

    .. math::

        \\hat\\beta_j \\mid \\beta_j \\sim N(\\beta_j, s_j^2), \\qquad
        \\beta_j \\sim g = \\pi_0 \\delta_0 + \\sum_k \\pi_k N(0, \\sigma_k^2)

    with :math:`\\sigma_k` on ashr's grid and :math:`\\pi` fitted by penalised maximum likelihood
    (null-biased Dirichlet prior, mix-SQP); the outputs are the posterior mean and sd of
    :math:`\\beta_j`, lfdr :math:`= P(\\beta_j = 0 \\mid \\hat\\beta)` and
    lfsr :math:`= \\min\\{P(\\beta_j \\ge 0 \\mid \\cdot), P(\\beta_j \\le 0 \\mid \\cdot)\\}`.
    Each row is exactly ``ash(effect[k], std_error[k], mixture=..., ...)``.

    Parameters
    ----------
    effects
        Raw effects from :func:`estimate_effects`.
    mixture
        ``"normal"``, ``"uniform"``, ``"halfuniform"`` or ``"halfnormal"`` components.
    by
        ``"perturbation"`` (default): one prior per perturbation, fitted on its own genes only,
        so a perturbation's posterior does not depend on which other perturbations are present
        (the split-independence the weights rely on). ``"gene"``: one prior per gene across
        perturbations. ``"pooled"``: one prior for all effects.
    moderate
        First squeeze each perturbation's squared standard errors across genes with
        :func:`squeeze_var` (with the effects' Welch df) and use the moderated ones.
    pointmass, prior, null_weight, grid_mult, optimizer
        As in :func:`ash`.
    tol, max_iter
        Convergence tolerance and iteration cap of the mixture-weight optimiser (ashr's defaults;
        a looser ``tol`` such as 1e-5 is much faster on rows with many exactly-zero effects).
    n_threads
        Numba threads.

    Returns
    -------
    ShrunkEffects
        Raw effects stay beside the posterior fields; nothing is overwritten.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> adata = sp.datasets.papalexi2021()
    >>> adata = adata[adata.obs["perturbation"] != "unassigned"]
    >>> shrunk = sp.shrink_effects(sp.estimate_effects(adata))
    >>> bool((abs(shrunk.posterior_mean) <= abs(shrunk.effect) + 1e-12).all())
    True
    """
    if by not in _BY:
        raise InputError(f"by={by!r} is not one of {_BY!r}.")
    for name in ("effect", "std_error", "perturbations", "genes"):
        if not hasattr(effects, name):
            raise InputError(f"shrink_effects needs an EffectSizes (from estimate_effects); got {type(effects).__name__}.")
    raw_se = np.asarray(effects.std_error, dtype=np.float64)
    se = _moderated_se(effects) if moderate else raw_se
    X = np.asarray(effects.effect, dtype=np.float64)
    if by == "perturbation":
        Xb, Sb = X, se
    elif by == "gene":
        Xb, Sb = X.T, se.T
    else:
        Xb, Sb = X.reshape(1, -1), se.reshape(1, -1)
    fit = ash_batch(Xb, Sb, mixture=mixture, pointmass=pointmass, prior=prior, null_weight=null_weight,
                     grid_mult=grid_mult, optimizer=optimizer, tol=tol, max_iter=max_iter, n_threads=n_threads)

    def back(a):
        return a.T if by == "gene" else a.reshape(X.shape)

    params = {"mixture": mixture, "by": by, "moderate": bool(moderate), "pointmass": bool(pointmass),
              "prior": prior, "null_weight": float(null_weight), "grid_mult": float(grid_mult),
              "optimizer": optimizer, "tol": float(tol), "max_iter": int(max_iter), "scale": getattr(effects, "scale", None),
              "n_not_converged": int((~fit.converged).sum())}
    return ShrunkEffects(
        perturbations=effects.perturbations,
        genes=effects.genes,
        effect=X,
        std_error=se,
        raw_std_error=raw_se,
        posterior_mean=back(fit.posterior_mean),
        posterior_sd=back(fit.posterior_sd),
        lfsr=back(fit.lfsr),
        lfdr=back(fit.lfdr),
        prior_weights=fit.pi,
        prior_sd=fit.sd if mixture in ("normal", "halfnormal") else np.full_like(fit.pi, np.nan),
        loglik=fit.loglik,
        target_index=np.asarray(getattr(effects, "target_index", np.full(len(effects.perturbations), -1))),
        scale=getattr(effects, "scale", ""),
        params=params,
        _priors=tuple(fit.prior(p) for p in range(Xb.shape[0])),
    )
