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
weights or target indices (a row's sort order, the range of its magnitudes), shared by all weightings.
The optional ``form`` declares what the prediction is in terms of the truth (see the field).

A dictionary shared by metrics running in several threads at once (the truth's, when
:func:`~shrinkpert.evaluate` scores two sides at a time) is a :class:`OnceScope`: :func:`reuse`
then computes each entry once, the other threads waiting for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .._forms import AffineForm

__all__ = ["SharedIntermediates", "OnceScope", "reuse"]

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
    #: Optional: the prediction declared affine in the truth (an :class:`~shrinkpert._forms.AffineForm`,
    #: e.g. a leave-one-out mean baseline); the rank metrics then derive the prediction × truth
    #: product from the truth's own product, kept in ``truth_any_weights`` (or ``truth``). A hint:
    #: the residual is measured and bounded, so a wrong form costs time, never a wrong rank.
    form: AffineForm | None = None


class OnceScope(dict):
    """A cache shared by threads: :func:`reuse` computes each key once, other threads wait for it.

    Reading, writing and deleting entries are those of a ``dict``. A computation that fails
    leaves no entry; a thread that waited for it computes the entry itself (and meets the error).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._pending: dict[Hashable, threading.Event] = {}

    def once(self, key: Hashable, compute: Callable[[], T]) -> T:
        """``self[key]``, computed by ``compute()`` in exactly one thread on first use."""
        with self._lock:
            if key in self:
                return self[key]
            event = self._pending.get(key)
            mine = event is None
            if mine:
                event = self._pending[key] = threading.Event()
        if not mine:
            event.wait()
            return self[key] if key in self else self.once(key, compute)
        try:
            value = compute()
            self[key] = value
            return value
        finally:
            with self._lock:
                del self._pending[key]
            event.set()


def reuse(scope: dict[Hashable, Any] | None, key: Hashable, compute: Callable[[], T]) -> T:
    """``scope[key]``, computed by ``compute()`` on first use; always computed when ``scope`` is None
    (once across threads when ``scope`` is a :class:`OnceScope`)."""
    if scope is None:
        return compute()
    if isinstance(scope, OnceScope):
        return scope.once(key, compute)
    if key not in scope:
        scope[key] = compute()
    return scope[key]
