r"""Difficulty strata of perturbations: the documented rules.

Each perturbation gets one stratum, decided in this order (the first rule that applies wins):

1. ``"no signal"`` — ``signal_p`` (Simes' global p-value that no gene, target left out, has an
   effect beyond the systematic shift) is at least ``signal_alpha``; equivalently no gene is
   significant at a Benjamini–Hochberg FDR of ``signal_alpha``. Nothing specific to this
   perturbation is measurable, so a prediction that gets the shared shift right (the mean
   baseline) is as good as the truth allows.
2. ``"hard"`` — split-half replicability (``replicability_shrunk``) below ``hard_replicability``,
   or the nearest training perturbation's similarity (``nearest_similarity``) below
   ``hard_similarity`` (no template in training: CASP's free modelling).
3. ``"easy"`` — replicability at least ``easy_replicability`` *and* nearest similarity at least
   ``easy_similarity`` (a reproducible profile with a close template).
4. ``"medium"`` — everything else.

A missing replicability or similarity (NaN: too few cells, a single perturbation) does not
trigger rule 2 or 3, so such perturbations are ``"medium"`` unless they have no signal.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from ..errors import InputError, MissingKeyError

__all__ = ["STRATA", "StrataRules", "assign_strata"]

#: Stratum labels, easiest first.
STRATA: tuple[str, ...] = ("easy", "medium", "hard", "no signal")


@dataclass(frozen=True)
class StrataRules:
    """Thresholds of the stratum rules (see the module docstring)."""

    signal_alpha: float = 0.05
    hard_replicability: float = 0.2
    hard_similarity: float = 0.2
    easy_replicability: float = 0.5
    easy_similarity: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.signal_alpha < 1:
            raise InputError(f"rules.signal_alpha must lie in (0, 1), got {self.signal_alpha!r}.")
        for low, high in (("hard_replicability", "easy_replicability"), ("hard_similarity", "easy_similarity")):
            lo, hi = getattr(self, low), getattr(self, high)
            if not (np.isfinite(lo) and np.isfinite(hi) and -1 <= lo <= hi <= 1):
                raise InputError(f"rules: need -1 <= {low} <= {high} <= 1, got {lo!r} and {hi!r}.")

    def as_dict(self) -> dict:
        return asdict(self)


_NEEDED = ("signal_p", "replicability_shrunk", "nearest_similarity")


def assign_strata(features: pd.DataFrame, rules: StrataRules | None = None) -> pd.Series:
    """The stratum of each row of ``features`` (columns ``signal_p``,
    ``replicability_shrunk``, ``nearest_similarity``) by the rules of the module docstring.

    Returns
    -------
    pandas.Series
        Categorical with categories :data:`STRATA`, same index as ``features``.
    """
    rules = StrataRules() if rules is None else rules
    missing = [c for c in _NEEDED if c not in features.columns]
    if missing:
        raise MissingKeyError(f"features lacks the columns {missing}; they come from shrinkpert.difficulty().")
    signal_p = features["signal_p"].to_numpy(dtype=np.float64)
    rep = features["replicability_shrunk"].to_numpy(dtype=np.float64)
    sim = features["nearest_similarity"].to_numpy(dtype=np.float64)
    with np.errstate(invalid="ignore"):
        no_signal = ~(signal_p < rules.signal_alpha)
        hard = (rep < rules.hard_replicability) | (sim < rules.hard_similarity)
        easy = (rep >= rules.easy_replicability) & (sim >= rules.easy_similarity)
    label = np.where(no_signal, "no signal", np.where(hard, "hard", np.where(easy, "easy", "medium")))
    return pd.Series(pd.Categorical(label, categories=list(STRATA)), index=features.index, name="stratum")
