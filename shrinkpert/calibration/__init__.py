"""Calibration of metrics between negative and positive controls: DRF, BDS, calibrated scores.

See :mod:`shrinkpert.calibration.calibrate` for the formulas; intervals are seeded percentile
bootstraps over perturbations (:mod:`shrinkpert.calibration.bootstrap`). The analytic noise
ceiling — the expected score of a prediction equal to the population mean — is
:func:`noise_ceiling` (:mod:`shrinkpert.calibration.ceiling`).
"""

from .bootstrap import bootstrap_ci, resample_indices
from .ceiling import CLOSED_FORMS, NoiseCeiling, noise_ceiling
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
    "NoiseCeiling",
    "noise_ceiling",
    "CLOSED_FORMS",
]
