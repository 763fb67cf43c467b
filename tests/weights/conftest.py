"""Fixtures for weights and deltas: real effects, a shrunken-effects object, a population reference."""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pytest

import shrinkpert
from shrinkpert.effects.ash import ash
from shrinkpert.reference.population import build_population_reference


@dataclass(frozen=True)
class ShrunkStandIn:
    """The attributes of ``ShrunkEffects`` that gene_weights reads, filled by real per-perturbation ash.

    Stands in for ``shrinkpert.effects.shrink.shrink_effects`` output until that module exists.
    """

    perturbations: pd.Index
    genes: pd.Index
    effect: np.ndarray
    std_error: np.ndarray
    posterior_mean: np.ndarray
    posterior_sd: np.ndarray
    lfsr: np.ndarray
    lfdr: np.ndarray
    target_index: np.ndarray
    scale: str
    params: Mapping[str, Any]


def shrink_per_perturbation(effects) -> Any:
    """Real shrinkage: ash (normal mixture, point mass) fitted to each perturbation on its own."""
    try:  # the real function once it exists
        from shrinkpert.effects.shrink import shrink_effects

        return shrink_effects(effects)
    except ImportError:
        pass
    fits = [ash(effects.effect[i], effects.std_error[i]) for i in range(len(effects.perturbations))]
    stack = lambda name: np.vstack([getattr(f, name) for f in fits])  # noqa: E731
    return ShrunkStandIn(
        perturbations=effects.perturbations,
        genes=effects.genes,
        effect=np.array(effects.effect),
        std_error=np.array(effects.std_error),
        posterior_mean=stack("posterior_mean"),
        posterior_sd=stack("posterior_sd"),
        lfsr=stack("lfsr"),
        lfdr=stack("lfdr"),
        target_index=np.array(effects.target_index),
        scale=effects.scale,
        params=MappingProxyType({"prior": "per perturbation", "mixture": "normal", **dict(effects.params)}),
    )


@pytest.fixture(scope="session")
def perts(papalexi) -> list[str]:
    return sorted(set(papalexi.obs["perturbation"].astype(str)) - {"non-targeting"})


@pytest.fixture(scope="session")
def effects(papalexi):
    return shrinkpert.estimate_effects(papalexi)


@pytest.fixture(scope="session")
def shrunk(effects):
    return shrink_per_perturbation(effects)


@pytest.fixture(scope="session")
def population(papalexi):
    """A population reference from the control cells (log1p, target_sum 1e4)."""
    return build_population_reference(papalexi, cells={"perturbation": "non-targeting"}, name="papalexi-controls")


@pytest.fixture(scope="session")
def log1p_cells(papalexi):
    """Dense log1p-normalised expression and labels, for direct NumPy formulas."""
    X = papalexi.X.toarray().astype(np.float64)
    lib = X.sum(axis=1)
    logx = np.log1p(X * (1e4 / np.where(lib > 0, lib, 1.0))[:, None])
    return logx, papalexi.obs["perturbation"].astype(str).to_numpy()
