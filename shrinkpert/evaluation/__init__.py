"""Scoring a prediction: :func:`evaluate` and its named steps.

``read_inputs → summarise → make_sides → score → tabulate`` (:mod:`.steps`), options in one
:class:`EvaluationConfig` (:mod:`.config`), the result a :class:`MetricTable` (:mod:`.table`).
This package sits after metrics, baselines, calibration and the target-gene package in the data
flow: it is the only one that uses them all.
"""

from .config import EvaluationConfig
from .partition import merge_tables
from .pipeline import DEFAULT_REFERENCES, evaluate
from .registry import METRICS
from .steps import (
    EvaluationInputs,
    Scores,
    Side,
    Sides,
    Summaries,
    de_calls,
    make_sides,
    read_inputs,
    score,
    summarise,
    summarise_train,
    tabulate,
)
from .table import MetricTable

__all__ = [
    "evaluate",
    "EvaluationConfig",
    "MetricTable",
    "DEFAULT_REFERENCES",
    "METRICS",
    "read_inputs",
    "summarise",
    "summarise_train",
    "make_sides",
    "score",
    "tabulate",
    "de_calls",
    "EvaluationInputs",
    "Summaries",
    "Side",
    "Sides",
    "Scores",
    "merge_tables",
]
