"""shrinkpert: trustworthy evaluation of single-cell perturbation-prediction models.

Data flow (the sub-package order is the flow)::

    AnnData (in memory or backed .h5ad)               shrinkpert.data
       │ one streaming pass, Numba kernels
       ▼
    GroupStatistics (groups × genes)                  shrinkpert.stats
       ▼
    EffectSizes (perturbation × gene vs control)      shrinkpert.effects
       ▼
    shrinkage, references, weights, metrics ...       (later stages)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .data import datasets
from .data.design import PerturbationDesign, encode_design
from .effects.estimate import EffectSizes, estimate_effects

from .errors import ShrinkpertError, ShrinkpertWarning
from .stats.group import GroupStatistics, group_statistics

__all__ = [
    "__version__",
    "datasets",
    "PerturbationDesign",
    "encode_design",
    "GroupStatistics",
    "group_statistics",
    "EffectSizes",
    "estimate_effects",
    "ShrinkpertError",
    "ShrinkpertWarning",
]
