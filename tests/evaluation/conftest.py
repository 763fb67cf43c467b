"""Fixtures shared by the metric tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def noisy(papalexi):
    """A 'model': every cell's counts resampled (Poisson), seeded; controls included."""
    out = papalexi.copy()
    rng = np.random.default_rng(2026)
    X = out.X.tocsr().astype(np.float64)
    X.data = rng.poisson(X.data).astype(np.float64)
    X.eliminate_zeros()
    out.X = X
    return out
