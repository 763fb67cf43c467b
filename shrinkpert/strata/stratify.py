r"""``stratify(frame, difficulty)``: per-stratum means of a ``MetricTable.to_frame()`` with bootstrap intervals.

For each (metric, weighting, reference, stratum) and each value column (the model's ``value``,
every ``baseline_<name>``, ``calibrated``): the mean over the stratum's perturbations with finite
values and a percentile bootstrap interval over those perturbations. All columns of one
(metric, weighting, reference, stratum) share the same seeded draws, as
:func:`~shrinkpert.evaluate` does for one metric; a perturbation with a NaN in one column is
left out of that column's mean and of its resamples (each replicate averages the finite values
it drew; a replicate with none is dropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import InputError, MissingKeyError

__all__ = ["stratify"]

_KEYS = ["metric", "weighting", "reference"]


def _value_columns(frame: pd.DataFrame, columns: Sequence[str] | None) -> list[str]:
    if columns is None:
        return [c for c in frame.columns if c == "value" or c.startswith("baseline_") or c == "calibrated"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingKeyError(f"columns {missing} are not in the table; it has {list(frame.columns)}.")
    return list(columns)


def stratify(
    frame: pd.DataFrame,
    difficulty: pd.DataFrame | pd.Series,
    *,
    by: str = "stratum",
    columns: Sequence[str] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Means with bootstrap intervals per stratum of a metric table.

    Parameters
    ----------
    frame
        ``MetricTable.to_frame()`` (columns ``perturbation, metric, weighting, reference, value``,
        ``baseline_<name>``, ...).
    difficulty
        :func:`~shrinkpert.difficulty` output (indexed by perturbation) with column ``by``, or a
        Series perturbation → stratum.
    by
        Column of ``difficulty`` to stratify by.
    columns
        Value columns to summarise (default ``value``, every ``baseline_*`` and ``calibrated``).
    n_boot, level, seed
        Bootstrap replicates, coverage and seed.

    Returns
    -------
    pandas.DataFrame
        Tidy: one row per (metric, weighting, reference, ``by``, column) with ``n`` (finite values),
        ``mean``, ``ci_low``, ``ci_high``. Perturbations of ``frame`` missing from ``difficulty``
        are left out; ``attrs["n_unmatched"]`` counts them.

    Raises
    ------
    MissingKeyError
        ``by`` or a needed column is absent.
    InputError
        Bad ``n_boot``/``level``.
    """
    if int(n_boot) < 1 or not 0 < level < 1:
        raise InputError(f"need n_boot >= 1 and 0 < level < 1, got {n_boot!r} and {level!r}.")
    missing = [c for c in ["perturbation", *_KEYS] if c not in frame.columns]
    if missing:
        raise MissingKeyError(f"frame lacks {missing}; pass MetricTable.to_frame().")
    if isinstance(difficulty, pd.Series):
        strata = difficulty.rename(by)
    else:
        if by not in difficulty.columns:
            raise MissingKeyError(f"difficulty has no column {by!r}; columns: {list(difficulty.columns)}.")
        strata = difficulty[by]
    strata = pd.Series(strata.to_numpy(), index=pd.Index(strata.index.astype(str)), name=by)
    cols = _value_columns(frame, columns)
    labels = frame["perturbation"].astype(str).map(strata)
    matched = labels.notna()
    data = frame.loc[matched, _KEYS + cols].copy()
    data[by] = labels[matched].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    alpha = (1 - level) / 2
    rows = []
    for key, group in data.groupby(_KEYS + [by], sort=True, observed=True):
        values = group[cols].to_numpy(dtype=np.float64)  # perturbations × columns
        n = values.shape[0]
        draws = rng.integers(0, n, size=(int(n_boot), n))
        finite = np.isfinite(values)
        sampled = np.where(finite, values, 0.0)[draws]  # boot × n × columns
        counts = finite[draws].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            boot = sampled.sum(axis=1) / counts
        for j, col in enumerate(cols):
            ok = finite[:, j]
            reps = boot[counts[:, j] > 0, j]
            mean = float(values[ok, j].mean()) if ok.any() else np.nan
            lo, hi = (np.quantile(reps, [alpha, 1 - alpha]) if ok.any() and reps.size else (np.nan, np.nan))
            rows.append((*key, col, int(ok.sum()), mean, float(lo), float(hi)))
    out = pd.DataFrame(rows, columns=_KEYS + [by, "column", "n", "mean", "ci_low", "ci_high"])
    out.attrs["n_unmatched"] = int((~matched).sum())
    out.attrs["params"] = {"by": by, "n_boot": int(n_boot), "level": level, "seed": seed}
    return out
