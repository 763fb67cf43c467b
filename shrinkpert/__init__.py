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
    metric functions and their registry               shrinkpert.metrics
       ▼
    baselines, calibration                            shrinkpert.baselines, shrinkpert.calibration
       ▼
    knockdown, escape, dosage                         shrinkpert.ontarget
       ▼
    evaluate: read → summarise → baselines → score → calibrate     shrinkpert.evaluation

Every input enters through one boundary (``shrinkpert._validate``). Names are imported on first
use, so ``import shrinkpert`` (and ``shrinkpert --help``) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_EXPORTS = {
    "datasets": ".datasets",
    "ontarget": ".ontarget",
    "metrics": ".metrics",
    "biology": ".biology",
    "PerturbationDesign": ".data.design",
    "encode_design": ".data.design",
    "GroupStatistics": ".stats.group",
    "group_statistics": ".stats.group",
    "merge_statistics": ".stats",
    "save_statistics": ".stats",
    "load_statistics": ".stats",
    "EffectSizes": ".effects.estimate",
    "estimate_effects": ".effects.estimate",
    "squeeze_var": ".effects.moderate",
    "moderated_t": ".effects.moderate",
    "ash": ".effects.ash",
    "AshResult": ".effects.ash",
    "shrink_effects": ".effects.shrink",
    "ShrunkEffects": ".effects.shrink",
    "transcriptome_impact": ".effects.impact",
    "impact_correlation": ".effects.impact",
    "replicability": ".effects.replicability",
    "PopulationReference": ".reference.population",
    "build_population_reference": ".reference.population",
    "GeneWeights": ".weights",
    "gene_weights": ".weights",
    "evaluate": ".evaluation",
    "EvaluationConfig": ".evaluation",
    "MetricTable": ".evaluation",
    "merge_tables": ".evaluation",
    "METRICS": ".evaluation",
    "strata": ".strata",
    "difficulty": ".strata",
    "systematic_variation": ".strata",
    "recommend_metrics": ".strata",
    "ShrinkpertError": ".errors",
    "ShrinkpertWarning": ".errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        value = module if _EXPORTS[name].endswith("." + name) and not hasattr(module, name) else getattr(module, name)
        globals()[name] = value
        return value
    # ``shrinkpert.target`` was renamed ``shrinkpert.ontarget`` (``target/`` is a build-output folder
    # name that many tools hide); the old name works, with a warning, for one release.
    if name == "target":
        return importlib.import_module(".target", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
