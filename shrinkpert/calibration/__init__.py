"""Calibration of metrics between negative and positive controls: DRF, BDS, calibrated scores.

See :mod:`shrinkpert.calibration.calibrate` for the formulas; intervals are seeded percentile
bootstraps over perturbations (:mod:`shrinkpert.calibration.bootstrap`).
"""

from .bootstrap import bootstrap_ci, resample_indices
from .calibrate import (
    Calibration,
    bound_discrimination_score,
    calibrate,
    calibrated_score,
    dynamic_range_fraction,
)

__all__ = [
    "Calibration",
    "calibrate",
    "calibrated_score",
    "dynamic_range_fraction",
    "bound_discrimination_score",
    "bootstrap_ci",
    "resample_indices",
]
