"""The order check of DECalls (a Numba kernel) against its NumPy twin, and DECalls' copies."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.metrics import DECalls
from shrinkpert.metrics._de_kernels import sorts_rows


def twin(q, order):
    """The array expressions the kernel replaced: each position seen once, the gathered rows non-decreasing."""
    flat = (order + np.arange(0, q.size, q.shape[1])[:, None]).ravel()
    seen = np.zeros(q.size, dtype=bool)
    seen[flat] = True
    ranked = q.ravel()[flat].reshape(q.shape)
    return bool(seen.all() and not (ranked[:, 1:] < ranked[:, :-1]).any())


def _cases(seed):
    rng = np.random.default_rng(seed)
    q = rng.choice([0.0, 0.01, 0.2, 1.0], size=(6, 40)) * rng.random((6, 40)) ** rng.integers(0, 2, (6, 1))
    q[2, 3] = np.nan  # NaN compares as not smaller in both
    order = np.argsort(q, axis=1, kind="stable")
    yield q, order
    yield q, np.array([np.lexsort((rng.random(40), row)) for row in q])  # ties in another order
    for _ in range(20):
        bad = order.copy()
        r, a, b = rng.integers(6), rng.integers(40), rng.integers(40)
        if rng.random() < 0.5:
            bad[r, [a, b]] = bad[r, [b, a]]  # a swap: unsorted unless the values tie
        else:
            bad[r, a] = bad[r, b]  # a duplicate (unless a == b)
        yield q, bad


@pytest.mark.parametrize("seed", range(4))
def test_sorts_rows_equals_twin(seed):
    results = [(sorts_rows(q, o), twin(q, o)) for q, o in _cases(seed)]
    assert all(a == b for a, b in results)
    assert {b for _, b in results} == {True, False}  # both outcomes are exercised


def test_frozen_arrays_are_kept_and_the_callers_are_copied():
    rng = np.random.default_rng(0)
    lfc, q = rng.normal(size=(3, 8)), rng.random((3, 8))
    order = np.argsort(q, axis=1)
    calls = DECalls(lfc, q, q_order=order)  # writable: copied, the caller's arrays untouched
    assert not np.shares_memory(calls.lfc, lfc) and not np.shares_memory(calls.q_order, order)
    assert lfc.flags.writeable and order.flags.writeable
    for a in (lfc, q, order):
        a.setflags(write=False)
    kept = DECalls(lfc, q, q_order=order)  # nobody can write them: no copy
    assert all(np.shares_memory(a, b) for a, b in ((kept.lfc, lfc), (kept.q, q), (kept.q_order, order)))
    assert not kept.lfc.flags.writeable


def groups_twin(q, order, labels, floor):
    """The tie groups by array expressions (the code the kernels replaced)."""
    n_genes = q.shape[1]
    flat = (order + np.arange(0, q.size, n_genes)[:, None]).ravel()
    s = np.maximum(q.ravel()[flat], floor).reshape(q.shape)
    tp = np.cumsum(labels.ravel()[flat].reshape(q.shape), axis=1)
    end = np.ones(q.shape, dtype=bool)
    np.not_equal(s[:, 1:], s[:, :-1], out=end[:, :-1])
    rows, last = np.nonzero(end)
    tp_end = tp[rows, last]
    first_group = np.ones(rows.size, dtype=bool)
    first_group[1:] = rows[1:] != rows[:-1]
    before = np.where(first_group, 0, np.r_[0, tp_end[:-1]])
    start = np.where(first_group, 0, np.r_[0, last[:-1] + 1])
    return rows, last, start, tp_end, tp_end - before, tp[:, -1]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("floor", [0.0, 1e-10, 0.3])
def test_auc_groups_equal_twin(seed, floor):
    from shrinkpert.metrics._de_kernels import auc_group_counts, auc_groups

    rng = np.random.default_rng(seed)
    q = rng.choice([0.0, 1e-12, 0.01, 0.2, 0.5, 1.0], size=(7, 50))
    q[:3] = rng.random((3, 50)) ** 8  # mostly distinct, some under the floor
    q[4] = 1.0  # one group
    q[5, :1] = 0.0
    labels = rng.random(q.shape) < 0.2
    labels[6] = False  # no true DE gene
    order = np.array([np.lexsort((rng.random(50), row)) for row in q])  # ties in any order
    counts = np.empty(7, dtype=np.int64)
    auc_group_counts(q, order, floor, counts)
    offsets = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    got = [np.empty(int(counts.sum()), dtype=np.int64) for _ in range(5)] + [np.empty(7, dtype=np.int64)]
    auc_groups(q, order, labels, floor, offsets, *got)
    for mine, theirs in zip(got, groups_twin(q, order, labels, floor)):
        np.testing.assert_array_equal(mine, theirs)
