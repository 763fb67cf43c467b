"""The truth summary keeps one copy of each perturbation × gene array, and never aliases a caller's arrays."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shrinkpert._arrays import kept_readonly
from shrinkpert.baselines import summarize_truth
from shrinkpert.errors import MissingKeyError
from shrinkpert.stats.group import group_statistics


def test_full_means_are_views_of_the_statistics(papalexi):
    s = summarize_truth(papalexi, seed=3)
    stats = s.statistics
    # the perturbations in the summary's order, then the control
    assert stats.groups.astype(str).tolist() == [*s.perturbations, s.control]
    for name, source in (("mean", stats.mean), ("var", stats.var)):
        assert np.shares_memory(getattr(s, name), source), name
        assert not getattr(s, name).flags.writeable
    assert np.shares_memory(s.control_mean, stats.mean)
    # the values: each perturbation's row of a separate pass (its own cells, all of them)
    direct = group_statistics(papalexi, "perturbation", normalize="log1p")
    rows = direct.rows(list(s.perturbations), "perturbations")
    np.testing.assert_allclose(s.mean, direct.mean[rows], rtol=1e-12, atol=1e-12)  # summation order differs
    np.testing.assert_allclose(s.var, direct.var[rows], rtol=1e-9, atol=1e-12)
    c = direct.rows([s.control], "control")[0]
    np.testing.assert_allclose(s.control_mean, direct.mean[c], rtol=1e-12, atol=1e-12)
    assert s.control_n == direct.n_cells[c]


def test_a_callers_arrays_are_copied(papalexi):
    s = summarize_truth(papalexi, seed=3)
    mine = np.array(s.mean)  # writable, the caller's
    again = dataclasses.replace(s, mean=mine)
    assert not np.shares_memory(again.mean, mine)
    mine[:] = -1.0
    np.testing.assert_array_equal(again.mean, s.mean)


def test_kept_readonly_copies_unless_nothing_can_write():
    owner = np.arange(6.0).reshape(2, 3).copy()  # owns its memory
    view = owner[:1]
    view.setflags(write=False)  # a read-only view of a writable array: the owner can still change it
    assert not np.shares_memory(kept_readonly(view), owner)
    owner.setflags(write=False)
    assert kept_readonly(owner[:1]).base is owner  # frozen down to the owner: kept
    assert kept_readonly(owner.astype(np.float32)).dtype == np.float64  # another dtype: converted


def test_take_orders_groups_and_names_absent_labels(papalexi):
    stats = group_statistics(papalexi, "perturbation", normalize="log1p")
    labels = list(stats.groups.astype(str))[::-1][:4]
    taken = stats.take(labels)
    assert taken.groups.astype(str).tolist() == labels
    rows = stats.rows(labels, "labels")
    for name in ("n_cells", "sum", "mean", "var", "n_nonzero", "library_size"):
        np.testing.assert_array_equal(getattr(taken, name), getattr(stats, name)[rows])
    with pytest.raises(MissingKeyError, match="no-such-label"):
        stats.take(["no-such-label"], "perturbations")
