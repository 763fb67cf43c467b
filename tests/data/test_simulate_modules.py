"""simulate(modules=...): shared programmes for groups of perturbations; the default is unchanged."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from shrinkpert.datasets import simulate
from shrinkpert.errors import InputError

# SHA-256 of X (data, indices, indptr), the true effects, guide codes and escape flags of
# simulate(n_cells=500, n_genes=120, n_perturbations=10, seed=7), produced by the simulator as it
# was before modules= existed (commit 0fa0133): the option must not change the default output.
DEFAULT_SHA256 = "2369ddd30af63c096faa9b4a6a47bd89331231897994c72c1b7afe8d8c39fcd0"


def _digest(a) -> str:
    h = hashlib.sha256()
    for arr in (a.X.data, a.X.indices, a.X.indptr, a.uns["simulation"]["effects"],
                a.obs["guide"].cat.codes.to_numpy(), a.obs["escaped"].to_numpy()):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def test_default_output_is_bit_identical_to_before():
    a = simulate(n_cells=500, n_genes=120, n_perturbations=10, seed=7)
    assert _digest(a) == DEFAULT_SHA256
    assert "module" not in a.uns["simulation"] and "modules" not in a.uns["simulation"]["params"]
    assert _digest(simulate(n_cells=500, n_genes=120, n_perturbations=10, seed=7, modules=0)) == DEFAULT_SHA256


def test_modules_add_one_shared_programme_per_group_and_change_nothing_else():
    kw = dict(n_cells=500, n_genes=120, n_perturbations=10, seed=7)
    a, b = simulate(**kw), simulate(**kw, modules=3)
    ta, tb = a.uns["simulation"], b.uns["simulation"]
    np.testing.assert_array_equal(tb["module"], np.arange(10) % 3)
    for key in ("gene_mean", "gene_dispersion", "target_index", "guide_knockdown", "escape_rate"):
        np.testing.assert_array_equal(ta[key], tb[key])
    np.testing.assert_array_equal(a.obs["guide"].to_numpy(), b.obs["guide"].to_numpy())
    np.testing.assert_array_equal(a.obs["escaped"].to_numpy(), b.obs["escaped"].to_numpy())
    extra = tb["effects"] - ta["effects"]  # the programme part, scaled by each perturbation's depth
    depth = np.abs(extra).max(axis=1)
    assert (depth > 0).all()
    for m in range(3):
        members = np.flatnonzero(tb["module"] == m)
        support = extra[members] != 0
        assert (support == support[0]).all() and support[0].sum() == 30  # round(n_affected_genes) genes
        # same programme: rows are proportional (ratio = ratio of knockdown depths)
        ratio = extra[members][:, support[0]] / extra[members[0], support[0]]
        np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones_like(ratio), rtol=1e-12)
        assert not support[0][tb["target_index"][members]].any()  # never a member's own target


def test_bad_modules_value():
    with pytest.raises(InputError, match="modules"):
        simulate(n_cells=100, n_genes=40, n_perturbations=4, modules=5)
