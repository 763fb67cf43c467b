"""shrinkpert: trustworthy evaluation of single-cell perturbation-prediction models.

Data flow (the sub-package order is the flow)::

    AnnData (in memory or backed .h5ad)               shrinkpert.data
       │ one streaming pass, Numba kernels
       ▼
    GroupStatistics (groups × genes)                  shrinkpert.stats
       ▼
    EffectSizes (perturbation × gene vs control)      shrinkpert.effects
       ▼
    squeeze_var / ash / shrink_effects                shrinkpert.effects
       ▼
    PopulationReference, GeneWeights, deltas          shrinkpert.reference, shrinkpert.weights
       ▼
    metric registry                                   shrinkpert.metrics
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import metrics
from . import biology, datasets, target
from .data.design import PerturbationDesign, encode_design
from .effects.estimate import EffectSizes, estimate_effects

from .effects.ash import AshResult, ash
from .effects.impact import impact_correlation, transcriptome_impact
from .effects.moderate import moderated_t, squeeze_var
from .effects.replicability import replicability
from .effects.shrink import ShrunkEffects, shrink_effects
from .metrics.evaluate import MetricTable, evaluate
from .errors import ShrinkpertError, ShrinkpertWarning
from .reference.population import PopulationReference, build_population_reference
from .stats.group import GroupStatistics, group_statistics
from .weights import GeneWeights, gene_weights

__all__ = [
    "__version__",
    "datasets",
    "target",
    "biology",
    "PerturbationDesign",
    "encode_design",
    "GroupStatistics",
    "group_statistics",
    "EffectSizes",
    "estimate_effects",
    "squeeze_var",
    "ash",
    "AshResult",
    "shrink_effects",
    "ShrunkEffects",
    "transcriptome_impact",
    "impact_correlation",
    "replicability",
    "moderated_t",
    "PopulationReference",
    "build_population_reference",
    "GeneWeights",
    "gene_weights",
    "metrics",
    "evaluate",
    "MetricTable",
    "ShrinkpertError",
    "ShrinkpertWarning",
]
