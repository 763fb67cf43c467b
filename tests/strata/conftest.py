from __future__ import annotations

import pytest

import shrinkpert as sp


@pytest.fixture(scope="session")
def small_screen():
    return sp.datasets.simulate(n_cells=900, n_genes=60, n_perturbations=6, seed=4)
