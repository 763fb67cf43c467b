"""Seeded percentile bootstrap over perturbations."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .._arrays import as_rng
from ..errors import InputError

__all__ = ["bootstrap_ci", "resample_indices"]


def resample_indices(n: int, n_boot: int, seed: int | np.random.Generator = 0) -> np.ndarray:
    """``n_boot`` × ``n`` row indices drawn with replacement (one bootstrap sample per row).

    The same ``seed`` always gives the same indices; an int seed goes through
    :func:`numpy.random.default_rng`.
    """
    if n < 1:
        raise InputError("bootstrap needs at least one perturbation.")
    if int(n_boot) < 1:
        raise InputError(f"n_boot must be a positive integer, got {n_boot!r}.")
    rng = as_rng(seed)
    return rng.integers(0, n, size=(int(n_boot), n))


def bootstrap_ci(
    statistic: Callable[..., float],
    arrays: Sequence[np.ndarray],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int | np.random.Generator = 0,
    indices: np.ndarray | None = None,
    vectorized: bool = False,
) -> tuple[float, float]:
    r"""Percentile bootstrap interval of ``statistic(*arrays)`` resampling perturbations.

    Each replicate :math:`b` draws perturbations :math:`i_{b1},\dots,i_{bP}` with replacement
    and evaluates ``statistic(*(a[i_b] for a in arrays))``; the interval is the
    :math:`(1-\text{level})/2` and :math:`(1+\text{level})/2` quantiles of the finite replicates
    (NaN when none is finite).

    Parameters
    ----------
    statistic
        Function of the resampled arrays returning a float.
    arrays
        Arrays whose first axis is perturbations (all the same length).
    n_boot, level, seed
        Replicates, coverage and seed (int or ``numpy.random.Generator``).
    indices
        Precomputed :func:`resample_indices` (so several statistics share the same draws).
    vectorized
        ``statistic`` reduces the last axis, so it is called once on the stacked resamples
        (arrays of shape ``(n_boot, n)``) and returns one value per replicate.

    Returns
    -------
    (low, high) : tuple of float
    """
    if not 0 < level < 1:
        raise InputError(f"level must lie in (0, 1), got {level!r}.")
    arrays = [np.asarray(a) for a in arrays]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise InputError("bootstrap arrays must have the same number of perturbations.")
    idx = resample_indices(n, n_boot, seed) if indices is None else indices
    if vectorized:
        reps = np.asarray(statistic(*(a[idx] for a in arrays)), dtype=np.float64).reshape(len(idx))
    else:
        reps = np.array([statistic(*(a[i] for a in arrays)) for i in idx], dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)
