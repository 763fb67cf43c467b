"""The registry :func:`~shrinkpert.evaluate` draws from: every metric of the package.

:data:`shrinkpert.metrics.METRICS` holds the metrics of expression, ranks, DE calls, cell
distributions and target genes; the biology metrics (``relationship_recall``, ``map_agreement``,
``pathway_activity``) are defined in :mod:`shrinkpert.biology`, which uses perturbation maps and
relationship sets, and join them here, where the pipeline that uses them all sits. It is the
registry exported as ``shrinkpert.METRICS``.
"""

from __future__ import annotations

from ..biology import METRIC_SPECS as BIOLOGY_METRICS
from ..metrics import METRICS as CORE_METRICS

__all__ = ["METRICS", "BIOLOGY_METRICS"]

#: Every metric: :data:`shrinkpert.metrics.METRICS` and the biology metrics.
METRICS = CORE_METRICS.with_metrics(*BIOLOGY_METRICS)
