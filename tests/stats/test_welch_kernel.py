"""The Welch kernel equals its NumPy twin bit for bit, on every broadcast shape the callers use."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.stats.testing import welch


def twin(v_a, n_a, v_b, n_b, floor_at_b=True):
    """The array expressions of the Welch standard error and df (the code before the kernel)."""
    v_a, v_b, n_a, n_b = (np.asarray(x, dtype=np.float64) for x in (v_a, v_b, n_a, n_b))
    df_a = np.maximum(n_a - 1, 1)
    df_b = np.maximum(n_b - 1, 1)
    if floor_at_b:
        floor = v_b * (n_b / n_a)
        floored = v_a < floor
        v_a = np.where(floored, floor, v_a)
        df_a = np.where(floored, df_b, df_a)
    else:
        floored = np.zeros(np.broadcast_shapes(v_a.shape, v_b.shape, n_a.shape, n_b.shape), dtype=bool)
    se2 = v_a + v_b
    denom = v_a**2 / df_a + v_b**2 / df_b
    with np.errstate(invalid="ignore", divide="ignore"):
        df = np.where((se2 > 0) & (denom > 0), se2**2 / np.where(denom > 0, denom, 1.0), 1.0)
        se = np.sqrt(se2)
    return se, df, np.broadcast_to(floored, df.shape)


def _inputs(rng, P=37, G=211):
    v_a = rng.gamma(0.5, 0.02, size=(P, G))
    v_a[rng.random((P, G)) < 0.2] = 0.0  # undetected genes: the floor applies
    v_a[3, :5] = np.nan  # an undefined variance left to the caller
    n_a = rng.integers(1, 300, size=(P, 1)).astype(np.float64)
    n_a[0] = 1  # one cell: df 1
    v_b = rng.gamma(0.5, 0.001, size=(1, G))
    v_b[0, 7] = 0.0
    return v_a, n_a, v_b, 5000.0


@pytest.mark.parametrize("floor_at_b", [True, False])
def test_kernel_equals_the_twin(rng, floor_at_b):
    v_a, n_a, v_b, n_b = _inputs(rng)
    got = welch(v_a, n_a, v_b, n_b, floor_at_b=floor_at_b)
    se, df, floored = twin(v_a, n_a, v_b, n_b, floor_at_b)
    np.testing.assert_array_equal(got.std_error, se)
    np.testing.assert_array_equal(got.df, df)
    np.testing.assert_array_equal(got.floored, floored)
    assert got.floored.any() == floor_at_b
    # an entry with both terms 0: no evidence either way
    zero = welch(np.zeros((1, 1)), 10, np.zeros((1, 1)), 10)
    assert zero.df[0, 0] == 1.0 and zero.std_error[0, 0] == 0.0


@pytest.mark.parametrize("shapes", [
    ((5,), (), (5,), ()),  # one vector against a scalar control
    ((4, 6), (4, 1), (6,), ()),  # the DE calls: rows × genes, cells per row, the control's row
    ((4, 6), (4, 6), (4, 6), (4, 6)),  # every argument full (interpolated duplicate: rest of the rows)
    ((), (), (), ()),  # scalars
    ((2, 3, 4), (2, 1, 1), (4,), ()),  # more than two dimensions
])
def test_broadcast_shapes(rng, shapes):
    args = [rng.gamma(1.0, 0.1, size=s) if k % 2 == 0 else rng.integers(1, 50, size=s).astype(float)
            for k, s in enumerate(shapes)]
    got = welch(*args)
    se, df, floored = twin(*args)
    assert got.std_error.shape == se.shape == np.broadcast_shapes(*shapes)
    np.testing.assert_array_equal(got.std_error, se)
    np.testing.assert_array_equal(got.df, df)
    np.testing.assert_array_equal(got.floored, floored)
