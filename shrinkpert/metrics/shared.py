"""Intermediates that several metrics compute from the same inputs, held where the caller says.

Scoring a model with dozens of metrics needs the same expensive intermediate many times (the
perturbation × perturbation products behind the rank metrics, the mid-ranks of the true deltas). A
metric function that can share one takes ``shared=``, a :class:`SharedIntermediates` with two
plain dictionaries: ``pred`` for intermediates of the prediction (or of the prediction paired with
the truth) and ``truth`` for those of the truth alone. Entries are keyed by *what* they are (e.g.
``("standing", "l1", "pred")``), never by object identity, so the contract is the caller's: use one
:class:`SharedIntermediates` only while the prediction, the truth, the gene weights and the target
indices stay the same, and a new ``pred`` dictionary for every prediction scored against one truth.
:func:`~shrinkpert.evaluate` keeps one per (prediction, reference, weighting) with the truth's
dictionary shared across predictions. Without ``shared`` every call computes afresh. The optional
``pred_any_weights`` / ``truth_any_weights`` dictionaries hold what does not depend on the gene
weights or target indices (a row's sort order, identical rows), shared by all weightings.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["SharedIntermediates", "reuse"]

T = TypeVar("T")


@dataclass(frozen=True)
class SharedIntermediates:
    """Two caches, for the prediction side and the truth side (see the module docstring)."""

    pred: dict[Hashable, Any] = field(default_factory=dict)
    truth: dict[Hashable, Any] = field(default_factory=dict)
    #: Optional caches of intermediates that depend on neither the gene weights nor the target
    #: indices (e.g. each row's sort order), shared by every weighting of the same prediction and
    #: truth; None: such intermediates go to ``pred`` / ``truth``.
    pred_any_weights: dict[Hashable, Any] | None = None
    truth_any_weights: dict[Hashable, Any] | None = None


def reuse(scope: dict[Hashable, Any] | None, key: Hashable, compute: Callable[[], T]) -> T:
    """``scope[key]``, computed by ``compute()`` on first use; always computed when ``scope`` is None."""
    if scope is None:
        return compute()
    if key not in scope:
        scope[key] = compute()
    return scope[key]
