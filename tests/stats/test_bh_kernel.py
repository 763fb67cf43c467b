"""The BH kernel equals its NumPy twin (the array expressions it replaced) bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.stats._bh_kernels import bh_from_order


def twin(p, order):
    """BH from a sorting order by array expressions: scaled sorted values, backward running minimum, cap at 1."""
    m = p.shape[1]
    flat = (order + np.arange(0, p.size, m)[:, None]).ravel()
    ranked = p.ravel()[flat].reshape(p.shape) * m / np.arange(1, m + 1)
    ranked = np.minimum.accumulate(ranked[:, ::-1], axis=-1)[:, ::-1]
    out = np.empty(p.size)
    out[flat] = np.minimum(ranked, 1.0).ravel()
    return out.reshape(p.shape)


def _p_values(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.uniform(size=(9, 301)) ** rng.choice([1.0, 4.0, 20.0], size=(9, 1))
    p[0, :40] = p[0, 0]  # ties
    p[1] = 1.0  # a row of ones
    p[2, ::7] = 0.0  # zeros
    p[3, 5] = np.nan  # a NaN: its row is NaN, as np.minimum propagates it
    p[4, :] = 1e-300  # scaled values past the cap never, tiny ones exactly
    p[5, -1] = np.inf  # an absent value sorted last (the pruned path's padding)
    return p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kernel_equals_twin(seed):
    p = _p_values(seed)
    order = np.argsort(p, axis=1)
    out = np.empty_like(p)
    bh_from_order(p, order, out)
    expected = twin(p, order)
    np.testing.assert_array_equal(out, expected)  # NaN where the twin has NaN, every other bit equal
    assert np.isnan(out[3]).all() and not np.isnan(np.delete(out, 3, axis=0)).any()


def test_kernel_detects_a_wrong_order():
    """A test that can fail: an order that does not sort the row gives other values than BH."""
    p = _p_values(0)
    order = np.argsort(p, axis=1)
    wrong = order[:, ::-1].copy()
    out = np.empty_like(p)
    bh_from_order(p, wrong, out)
    assert not np.array_equal(out[6:], twin(p, order)[6:])
