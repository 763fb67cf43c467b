"""Gene weights and delta references, split-independent by default.

* :func:`gene_weights` → :class:`GeneWeights`: per perturbation × gene weights by method
  (``shrunken``, ``population``, ``deg_rest``, ``limma_t``, ``uniform``).
* :func:`compute_deltas` / :func:`delta_reference`: :math:`\\Delta = x - r` against the control,
  the perturbed centroid (Systema) or a :class:`~shrinkpert.reference.population.PopulationReference`.
* :mod:`shrinkpert.weights.leakage`: the guards of split-dependent methods.
"""

from .core import METHODS, GeneWeights, gene_weights
from .deltas import DeltaReference, Deltas, compute_deltas, delta_reference
from .leakage import SPLIT_DEPENDENT

__all__ = [
    "METHODS",
    "SPLIT_DEPENDENT",
    "GeneWeights",
    "gene_weights",
    "DeltaReference",
    "Deltas",
    "compute_deltas",
    "delta_reference",
]
