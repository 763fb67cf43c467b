"""calibrate() with bootstrap draws made once for several metrics equals drawing them itself."""

from __future__ import annotations

import numpy as np
import pytest

from shrinkpert.calibration import calibrate
from shrinkpert.calibration.bootstrap import resample_indices
from shrinkpert.errors import InputError


def test_shared_draws_give_the_same_intervals(rng):
    value, negative, positive = rng.normal(0.5, 0.2, 30), rng.normal(0.2, 0.1, 30), rng.normal(0.9, 0.1, 30)
    value[3] = np.nan
    kw = dict(greater_is_better=True, best=1.0, n_boot=200, seed=7)
    own = calibrate(value, negative, positive, **kw)
    shared = calibrate(value, negative, positive, indices=resample_indices(30, 200, 7), **kw)
    for name in ("calibrated", "ci_low", "ci_high", "drf_ci_low", "drf_ci_high", "bds_ci_low", "bds_ci_high"):
        assert getattr(own, name) == getattr(shared, name), name
    with pytest.raises(InputError, match=r"indices has shape \(200, 29\); expected \(200, 30\)"):
        calibrate(value, negative, positive, indices=resample_indices(29, 200, 7), **kw)
