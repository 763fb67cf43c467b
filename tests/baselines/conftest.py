"""Fixtures shared by the baseline tests: the Papalexi truth summary and independent group means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.baselines import summarize_truth
from shrinkpert.stats.group import group_statistics


@pytest.fixture(scope="module")
def summary(papalexi):
    return summarize_truth(papalexi, seed=7)


@pytest.fixture(scope="module")
def direct(papalexi):
    """Per-perturbation log1p means from an ordinary group_statistics call (no halves)."""
    stats = group_statistics(papalexi, "perturbation", normalize="log1p")
    return pd.DataFrame(np.asarray(stats.mean), index=stats.groups.astype(str), columns=stats.genes.astype(str))
