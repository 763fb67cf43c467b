"""Metrics for predicted vs true perturbation responses, and the registry that lists them.

Plain array-level functions, prediction first and truth second:

* expression (means or deltas, one value per perturbation): :func:`mse`, :func:`mae`,
  :func:`rmse`, :func:`mse_delta`, :func:`mae_delta`, :func:`pearson_delta`, :func:`r2_delta`,
  :func:`cosine_delta`, :func:`spearman_delta` — all with optional gene ``weights``;
* rank / retrieval (perturbations × genes matrices): :func:`discrimination_score`,
  :func:`perturbench_rank`, :func:`perturbench_rank_transposed`, :func:`centroid_accuracy`,
  :func:`normed_retrieval`;
* DE calls (:class:`DECalls` of each side): :func:`overlap_at_n`, :func:`precision_at_n`,
  :func:`de_recall`, :func:`de_direction_match`, :func:`de_spearman_lfc`, :func:`pr_auc`,
  :func:`roc_auc`;
* distributions of cells: :func:`energy_distance`, :func:`mmd`;
* published composite scores: :func:`vcc_score`, :func:`myllia_score`.

:data:`METRICS` records each metric once (name, direction, best value, what it needs); see
``docs/metrics.md`` for formulas, NaN policy and deliberate differences from peers.
"""

from __future__ import annotations

from .composite import VCC_METRICS, myllia_score, myllia_weights, vcc_components, vcc_score
from .de import (
    DECalls,
    de_direction_match,
    de_recall,
    de_spearman_lfc,
    overlap_at_n,
    pr_auc,
    precision_at_n,
    roc_auc,
)
from .distribution import energy_distance, mmd
from .expression import (
    cosine_delta,
    mae,
    mae_delta,
    mse,
    mse_delta,
    pearson_delta,
    r2_delta,
    rmse,
    spearman_delta,
)
from .rank import (
    centroid_accuracy,
    discrimination_score,
    normed_retrieval,
    perturbench_rank,
    perturbench_rank_transposed,
)
from .target_gene import (
    dose_order_score,
    penetrance_error,
    target_change_error,
    target_rank_error,
    target_rank_score,
    target_sign_score,
)
from .registry import KINDS, METRICS, NEEDS, MetricRegistry, MetricSpec
from .shared import SharedIntermediates

__all__ = [
    "SharedIntermediates",
    # registry
    "METRICS",
    "MetricSpec",
    "MetricRegistry",
    "KINDS",
    "NEEDS",
    # expression
    "mse",
    "mae",
    "rmse",
    "mse_delta",
    "mae_delta",
    "pearson_delta",
    "r2_delta",
    "cosine_delta",
    "spearman_delta",
    # rank
    "discrimination_score",
    "perturbench_rank",
    "perturbench_rank_transposed",
    "centroid_accuracy",
    "normed_retrieval",
    # DE
    "DECalls",
    "overlap_at_n",
    "precision_at_n",
    "de_recall",
    "de_direction_match",
    "de_spearman_lfc",
    "pr_auc",
    "roc_auc",
    # distribution
    "energy_distance",
    "mmd",
    # target gene (defined in shrinkpert.metrics.target_gene)
    "target_change_error",
    "target_sign_score",
    "target_rank_score",
    "target_rank_error",
    "penetrance_error",
    "dose_order_score",
    # composite
    "VCC_METRICS",
    "vcc_components",
    "vcc_score",
    "myllia_weights",
    "myllia_score",
]
