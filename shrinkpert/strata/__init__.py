"""Difficulty strata, systematic-variation diagnostics and metric recommendations.

* :func:`difficulty` — per-perturbation difficulty features and a ``stratum``
  (``easy`` / ``medium`` / ``hard`` / ``no signal``; rules in :mod:`shrinkpert.strata.rules`);
* :func:`difficulty_split` — seeded train/test splits whose test perturbations have no close
  training template (harder than random splits);
* :func:`stratify` — per-stratum means with bootstrap intervals of a ``MetricTable.to_frame()``;
* :func:`systematic_variation` — the share of each perturbation's change that is the shift shared by
  all perturbed cells, its genes, and how much each metric rewards predicting only that shift;
* :func:`recommend_metrics` / :func:`decision_record` — which metrics of a ``MetricTable`` to trust.

The package is named ``strata`` (not ``difficulty``) so that ``shrinkpert.difficulty`` can be the
function without a sub-package of the same name shadowing or being shadowed by it.
"""

from .essential import essential_genes, essentiality
from .features import difficulty
from .recommend import decision_record, recommend_metrics
from .rules import STRATA, StrataRules, assign_strata
from .split import DifficultySplit, difficulty_split, split_similarity
from .stratify import stratify
from .systematic import SystematicVariation, systematic_variation

__all__ = [
    "difficulty",
    "difficulty_split",
    "DifficultySplit",
    "split_similarity",
    "stratify",
    "systematic_variation",
    "SystematicVariation",
    "recommend_metrics",
    "decision_record",
    "essential_genes",
    "essentiality",
    "STRATA",
    "StrataRules",
    "assign_strata",
]
