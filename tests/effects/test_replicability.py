"""Split-half replicability: halves are disjoint and balanced, results seeded, shrinkage helps on real data."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.effects.replicability import replicability, split_halves
from shrinkpert.errors import InputError


def test_random_halves_are_balanced_within_each_perturbation(papalexi):
    halves = split_halves(papalexi.obs, split="random", seed=1)
    counts = papalexi.obs.assign(half=halves).groupby(["perturbation", "half"], observed=True).size().unstack()
    assert (abs(counts["A"] - counts["B"]) <= 1).all()
    assert halves.notna().all()


def test_guide_halves_never_share_a_guide(papalexi):
    halves = split_halves(papalexi.obs, split="guide_id", seed=3)
    per_guide = papalexi.obs.assign(half=halves).groupby("guide_id", observed=True)["half"].nunique()
    assert (per_guide <= 1).all()


def test_replicability_on_real_data_is_seeded_and_shrinkage_reduces_error(papalexi):
    a = replicability(papalexi, split="random", n_splits=2, seed=5, min_cells=10)
    b = replicability(papalexi, split="random", n_splits=2, seed=5, min_cells=10)
    np.testing.assert_array_equal(a["raw_error"].to_numpy(), b["raw_error"].to_numpy())
    assert set(a.columns) >= {"raw_correlation", "shrunk_correlation", "noise_corrected_correlation",
                              "raw_error", "shrunk_error"}
    # predicting half B from a shrunk half A beats the raw half A for most perturbations
    assert (a["shrunk_error"] < a["raw_error"]).mean() > 0.8


def test_bad_split_column(papalexi):
    with pytest.raises(InputError, match="split='donor' is neither 'random' nor an obs column"):
        replicability(papalexi, split="donor", n_splits=1)


def test_replicate_halves_are_paired_across_perturbations_and_control(papalexi):
    halves = split_halves(papalexi.obs, split="bio_rep", seed=4)
    frame = papalexi.obs.assign(half=halves).dropna(subset=["half"])
    per_rep = frame.groupby("bio_rep", observed=True)["half"].nunique()
    assert (per_rep == 1).all()  # a replicate sits in one half for every label, control included
    assert set(frame.loc[frame["perturbation"] == "non-targeting", "half"]) == {"A", "B"}
