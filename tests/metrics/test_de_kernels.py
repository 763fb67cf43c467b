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
