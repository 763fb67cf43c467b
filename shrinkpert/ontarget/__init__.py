"""Target-gene metrics: knockdown, escaping cells, dosage, and target-gene prediction metrics.

* :func:`knockdown` — the target gene's expression relative to control, per perturbation, guide
  and cell, raw and shrunken, flagged when the target is not measured or too lowly expressed.
* :func:`classify_escape` — per-cell probability of being perturbed (target counts + signature),
  penetrance per perturbation and guide with intervals; :func:`escape_aware_effects` recomputes
  effects from perturbed cells only or weighted by that probability.
* :func:`dose_response` — knockdown strength against downstream effect size, monotone fit.
* the metrics of predicted target-gene changes live in :mod:`shrinkpert.metrics.target_gene`.
"""

from .dosage import DoseResponse, dose_response, isotonic_fit
from .escape import EscapeResult, PenetranceTable, classify_escape
from .escape_truth import EscapeAwareEffects, escape_aware_effects, escaper_cells, perturbed_weights
from .knockdown import CellKnockdown, Knockdown, KnockdownTable, knockdown

__all__ = [
    "knockdown",
    "classify_escape",
    "escape_aware_effects",
    "perturbed_weights",
    "escaper_cells",
    "dose_response",
    "isotonic_fit",
    "Knockdown",
    "KnockdownTable",
    "CellKnockdown",
    "EscapeResult",
    "PenetranceTable",
    "EscapeAwareEffects",
    "DoseResponse",
]
