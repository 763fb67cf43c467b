"""Fixtures shared by the metric tests."""

from __future__ import annotations

import pytest

from tests.conftest import poisson_resampled


@pytest.fixture(scope="module")
def noisy(papalexi):
    """A 'model': every cell's counts resampled (Poisson), seeded; controls included."""
    return poisson_resampled(papalexi, 2026)
