"""Baselines: reference predictions (negative, positive, adversarial) on the truth's scale.

:func:`summarize_truth` reads the true cells once (full and split-half pseudobulks); each
baseline returns a :class:`BaselinePrediction` (perturbations × genes means; those built from
the truth's means by a fixed affine rule declare it as an :class:`AffineForm`). See
:mod:`shrinkpert.baselines.baselines` for the formulas. :mod:`shrinkpert.baselines.train` fits
the mean and linear baselines on training perturbations instead (:func:`train_mean`,
:func:`train_linear`) and guards the split (:func:`check_disjoint`).
:mod:`shrinkpert.baselines.exploits` holds the exploit arms (predictions that game a metric
without biology), scored beside the baselines.
"""

from .._forms import AffineForm
from .._validate import detect_scale
from ._summary import SCALES, TruthSummary, summarize_truth
from .baselines import (
    ADVERSARIAL,
    BASELINES,
    ROLES,
    BaselinePlan,
    BaselinePrediction,
    additive_baseline,
    control_baseline,
    inflated_mean,
    interpolated_duplicate,
    linear_baseline,
    make_baselines,
    mean_baseline,
    plan_baselines,
    scaled_mean,
    shuffled_labels,
    technical_duplicate,
)
from .exploits import EXPLOITS, exploit_advantage, exploit_baselines, exploit_cells, exploitable_arms
from .train import check_disjoint, train_linear, train_mean

__all__ = [
    "AffineForm",
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
    "plan_baselines",
    "BaselinePlan",
    "ROLES",
    "train_mean",
    "train_linear",
    "check_disjoint",
    "EXPLOITS",
    "exploit_baselines",
    "exploit_cells",
    "exploitable_arms",
    "exploit_advantage",
]
