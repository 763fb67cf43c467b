"""welch_bh's pruning at alpha K/m per row, and _bh_below's whole-row sort, against the full BH.

Twin: the t tail of every gene (``t_sf``, itself checked against ``stdtr``) and BH by one argsort per row, as in
``test_welch_bh.py``. Every call ``q < alpha`` must equal the full value bit for bit, every other
gene be 1; rows have a few strong effects among many null genes (where the per-row level prunes
most tails), only strong effects (every gene called), exact ties and p-values at the thresholds.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from shrinkpert.stats import testing
from shrinkpert.stats.testing import WelchTest, _bh_below, welch_bh
from tests.stats.test_welch_bh import _bh_twin, assert_pruned_keeps_every_call


def _rows(seed: int, n_rows: int = 16, m: int = 400):
    rng = np.random.default_rng(seed)
    se = rng.uniform(0.5, 2.0, size=(n_rows, m))
    df = rng.choice([3.0, 40.0, 1e4], size=(n_rows, 1)) * np.ones((1, m))
    t = rng.normal(size=(n_rows, m))  # null genes
    for r in range(n_rows):
        k = int(rng.choice([0, 1, 5, 30]))
        t[r, rng.choice(m, k, replace=False)] = rng.choice([-1, 1], k) * rng.uniform(3.0, 12.0, k)
    t[3] = rng.choice([-1, 1], m) * rng.uniform(6.0, 40.0, m)  # every gene called
    t[4] = t[3]
    t[5, :20] = t[5, 0]  # ties
    # row 6: the BH value m p_(j) / j of its j-th strongest gene exactly at alpha for j = 1..10
    p_edge = 0.05 * np.arange(1, 11) / m
    t[6, :10] = -special.stdtrit(df[6, 0], p_edge / 2)
    return t * se, WelchTest(se, df, np.zeros(se.shape, dtype=bool))


@pytest.mark.parametrize("alpha", [0.05, 1e-3, 0.5])
@pytest.mark.parametrize("seed", range(3))
def test_pruned_calls_equal_the_full_bh(seed, alpha):
    assert_pruned_keeps_every_call(*_rows(seed), alpha)


def test_rows_with_few_calls_evaluate_few_tails(monkeypatch):
    """The per-row level: far fewer t tails than the genes past the cut of alpha itself."""
    diff, test = _rows(0, n_rows=8, m=2000)
    diff, test = diff[5:], WelchTest(test.std_error[5:], test.df[5:], test.floored[5:])  # not all called
    sizes = []
    real = testing.t_sf

    def counting(t, df):
        sizes.append(np.size(t))
        return real(t, df)

    monkeypatch.setattr(testing, "t_sf", counting)
    welch_bh(diff, test, alpha=0.05)
    past_alpha = (np.abs(diff / test.std_error) >= special.ndtri(1 - 0.05 / 2)).sum()
    assert sum(sizes) < past_alpha / 4


def test_bh_below_whole_rows_equal_scattered_sort():
    """Most positions given (the whole-row branch) and few (the scattered sort): the same calls."""
    rng = np.random.default_rng(5)
    m, alpha = 50, 0.05
    p = rng.choice([1e-6, 1e-4, 0.001, 0.004, 0.01, 0.03], size=(10, m))
    p[1] = 0.05 * np.arange(1, m + 1) / m  # BH values exactly at alpha
    p[2, :5] = np.inf
    full = _bh_twin(np.minimum(p, 1.0))
    called = full < alpha
    for keep in (np.isfinite(p), np.isfinite(p) & (rng.random(p.shape) < 0.2)):
        r, c = np.nonzero(keep & (p < alpha * (1 + 2.0**-30)))
        q = _bh_below(np.ones(p.shape), r, c, p[r, c], alpha)
        if keep.all() or keep.mean() > 0.5:
            assert r.size > p.size // 4  # the whole-row branch is the one tested
            np.testing.assert_array_equal(q < alpha, called)
            np.testing.assert_array_equal(q[called], full[called])
        else:  # a subset of the p-values: compare with the same subset through the full BH
            sub = np.where(keep, p, np.inf)
            want = _bh_twin(np.minimum(sub, 1.0))
            np.testing.assert_array_equal(q < alpha, want < alpha)
