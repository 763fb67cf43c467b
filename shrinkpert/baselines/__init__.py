"""Baselines: reference predictions (negative, positive, adversarial) on the truth's scale.

:func:`summarize_truth` reads the true cells once (full and split-half pseudobulks); each
baseline returns a :class:`BaselinePrediction` (perturbations × genes means). See
:mod:`shrinkpert.baselines.baselines` for the formulas.
"""

from .._validate import detect_scale
from ._summary import SCALES, TruthSummary, summarize_truth
from .baselines import (
    ADVERSARIAL,
    BASELINES,
    BaselinePrediction,
    additive_baseline,
    control_baseline,
    inflated_mean,
    interpolated_duplicate,
    linear_baseline,
    make_baselines,
    mean_baseline,
    scaled_mean,
    shuffled_labels,
    technical_duplicate,
)

__all__ = [
    "SCALES",
    "TruthSummary",
    "detect_scale",
    "summarize_truth",
    "BaselinePrediction",
    "BASELINES",
    "ADVERSARIAL",
    "control_baseline",
    "mean_baseline",
    "technical_duplicate",
    "interpolated_duplicate",
    "additive_baseline",
    "linear_baseline",
    "scaled_mean",
    "inflated_mean",
    "shuffled_labels",
    "make_baselines",
]
