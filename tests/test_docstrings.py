"""The examples in the public docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "shrinkpert.stats.group",
    "shrinkpert.effects.estimate",
    "shrinkpert.effects.moderate",
    "shrinkpert.effects.shrink",
    "shrinkpert.effects.ash",
    "shrinkpert.evaluation.pipeline",
    "shrinkpert.ontarget.knockdown",
    "shrinkpert.ontarget.escape",
    "shrinkpert.ontarget.dosage",
    "shrinkpert.metrics.target_gene",
    "shrinkpert.effects.mixture",
    "shrinkpert.reference.population",
    "shrinkpert.reference.bundled",
    "shrinkpert.calibration.ceiling",
    "shrinkpert.weights.core",
    "shrinkpert.weights.deltas",
    "shrinkpert.biology.relationships",
    "shrinkpert.biology.maps",
    "shrinkpert.biology.recall",
    "shrinkpert.biology.agreement",
    "shrinkpert.biology.pathways",
    "shrinkpert.biology.scores",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
