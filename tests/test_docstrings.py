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
    "shrinkpert.effects.mixture",
    "shrinkpert.metrics.evaluate",
    "shrinkpert.target.knockdown",
    "shrinkpert.target.escape",
    "shrinkpert.target.dosage",
    "shrinkpert.target.prediction",
    "shrinkpert.reference.population",
    "shrinkpert.weights.core",
    "shrinkpert.weights.deltas",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0
