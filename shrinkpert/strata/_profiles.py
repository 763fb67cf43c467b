"""Shared by the strata modules: effects of a truth, profile similarity, impact from a fitted prior."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..effects.estimate import EffectSizes, estimate_effects
from ..effects.shrink import ShrunkEffects
from ..errors import GeneMismatchError, InputError

__all__ = ["fit_effects", "fit_effects_and_halves", "own_target_zeroed", "cosine_similarity", "prior_impact", "aligned_genes"]


def fit_effects(truth: Any, *, perturbation_key: str, control: str, layer: str | None,
                targets: Mapping[str, str] | None, min_cells: int, n_threads: int | None,
                chunk_size: int | None = None) -> EffectSizes:
    """Effects vs control (log1p scale, control variance floor), one pass over the cells."""
    return estimate_effects(truth, perturbation_key=perturbation_key, control=control, layer=layer,
                            targets=targets, min_cells=min_cells, chunk_size=chunk_size, n_threads=n_threads)


def fit_effects_and_halves(truth: Any, *, perturbation_key: str, control: str, layer: str | None,
                           targets: Mapping[str, str] | None, min_cells: int, seed: int, n_threads: int | None,
                           chunk_size: int | None = None) -> tuple[EffectSizes, Any]:
    """:func:`fit_effects` and the split-half statistics of :func:`~shrinkpert.replicability` (one
    split, ``seed``) from one pass over the cells.

    The pass is grouped by (label, half) with the halves of ``replicability(n_splits=1, seed=seed)``
    (control cells split too), so those statistics are the ones it computes; the effects come from
    the halves pooled per label (Chan's update, :meth:`GroupStatistics.collapse`), which equals
    the one-pass means and variances up to floating-point rounding (summation order).
    Returns ``(effects, statistics grouped by (label, half))``.
    """
    from .._arrays import as_rng
    from .._validate import MIN_CONTROL_CELLS, validate
    from ..effects.replicability import split_halves
    from ..stats.group import group_statistics

    data = validate(truth, perturbation_key=perturbation_key, control=control, layer=layer,
                    min_control_cells=max(int(min_cells), MIN_CONTROL_CELLS))
    halves = split_halves(data.obs, perturbation_key=perturbation_key, seed=as_rng(seed))
    stats = group_statistics(data, [data.labels(), halves], layer=layer, normalize="log1p", chunk_size=chunk_size,
                             n_threads=n_threads)
    effects = estimate_effects(stats.collapse(perturbation_key), perturbation_key=perturbation_key, control=control,
                               layer=layer, perturbations=list(data.perturbations), targets=targets,
                               min_cells=min_cells)
    return effects, stats


def own_target_zeroed(values: np.ndarray, target_index: np.ndarray) -> np.ndarray:
    """Copy of ``values`` (P × G) with each row's own target gene set to 0 (-1: no measured target)."""
    out = np.array(values, dtype=np.float64)
    rows = np.flatnonzero(target_index >= 0)
    out[rows, target_index[rows]] = 0.0
    return out


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    r""":math:`\cos(a_i, b_j) = a_i\cdot b_j / (\lVert a_i\rVert \lVert b_j\rVert)`, NaN where a row is 0."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (a @ b.T) / np.outer(na, nb)
    sim[~np.isfinite(sim)] = np.nan
    return sim


def prior_impact(shrunk: ShrunkEffects) -> pd.DataFrame:
    r"""Impact and effective number of genes from each perturbation's fitted normal-mixture prior.

    For :math:`g = \sum_k \pi_k N(0, \sigma_k^2)` (point mass: :math:`\sigma_0 = 0`) over :math:`G`
    genes, the moments TRADE uses are closed forms:
    :math:`\mathrm{TI} = \sum_k \pi_k\sigma_k^2`, :math:`M_4 = 3\sum_k \pi_k\sigma_k^4` and
    :math:`M_e = 3G\,\mathrm{TI}^2/M_4 = G(\sum_k\pi_k\sigma_k^2)^2/\sum_k\pi_k\sigma_k^4`
    (NaN when :math:`\mathrm{TI} = 0`).
    """
    if shrunk.params.get("by") != "perturbation" or shrunk.params.get("mixture") != "normal":
        raise InputError("prior_impact needs shrink_effects(..., mixture='normal', by='perturbation').")
    pi = np.nan_to_num(np.asarray(shrunk.prior_weights, dtype=np.float64))
    sd = np.nan_to_num(np.asarray(shrunk.prior_sd, dtype=np.float64))
    ti = (pi * sd**2).sum(axis=1)
    m4 = 3.0 * (pi * sd**4).sum(axis=1)
    n_genes = len(shrunk.genes)
    with np.errstate(invalid="ignore", divide="ignore"):
        me = np.where(m4 > 0, 3.0 * n_genes * ti**2 / np.where(m4 > 0, m4, 1.0), np.nan)
    return pd.DataFrame({"impact": ti, "effective_n_genes": me}, index=pd.Index(shrunk.perturbations.astype(str)))


def aligned_genes(genes: pd.Index, other: pd.Index, name: str) -> np.ndarray:
    """Columns of ``other`` in the order of ``genes``; raises when the gene sets differ."""
    cols = pd.Index(other.astype(str)).get_indexer(pd.Index(genes.astype(str)))
    if (cols < 0).any() or len(other) != len(genes):
        missing = genes[cols < 0]
        raise GeneMismatchError(f"{name} and truth have different genes (e.g. {missing[:10].tolist()} are missing "
                                f"from {name}); subset both to the same genes.")
    return cols
