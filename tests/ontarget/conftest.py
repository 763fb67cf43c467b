"""Small simulated screens with known escapers and guide efficiencies (built once per session)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.data.simulate import simulate


@pytest.fixture(scope="session")
def screen():
    """2,400 cells × 200 genes, 8 perturbations with 3 guides, 20% escape, a systematic shift."""
    return simulate(n_cells=2400, n_genes=200, n_perturbations=8, seed=11, mean_expression=0.6,
                    effect_sd=0.8, n_affected_genes=25, control_fraction=0.2)


@pytest.fixture(scope="session")
def screen_with_nulls(screen):
    """``screen`` plus two null pseudo-perturbations made of control cells.

    ``NT_split`` (a third of the controls, no target) and ``FAKE_TARGET`` (another third; the
    tests give it a measured target gene through ``targets=``).
    """
    adata = screen.copy()
    labels = adata.obs["perturbation"].astype(str).to_numpy().copy()
    controls = np.flatnonzero(labels == "non-targeting")
    rng = np.random.default_rng(5)
    pick = rng.permutation(controls)
    labels[pick[: len(pick) // 3]] = "NT_split"
    labels[pick[len(pick) // 3: 2 * len(pick) // 3]] = "FAKE_TARGET"
    adata.obs["perturbation"] = pd.Categorical(labels)
    return adata
