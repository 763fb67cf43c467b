"""A scoped memo for intermediates that several metrics share (private).

:func:`evaluate` scores the model and every baseline with dozens of metrics; many of them need the
same expensive intermediate (the same perturbation × perturbation distance matrix, the ranks of the
same true deltas). Inside ``with shared_intermediates():`` such an intermediate is computed once per
set of input *objects* and reused.

The key is the identity of the inputs, so a hit requires the very same objects, and only immutable
inputs take part: read-only NumPy arrays (``flags.writeable`` false), frozen dataclasses (such as
:class:`~shrinkpert.metrics.DECalls`, whose arrays are read-only) and ``None``. A writable array
could change between two calls, so a call with one is computed afresh. Outside the ``with`` block
nothing is cached and nothing is kept alive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import numpy as np

__all__ = ["shared_intermediates", "memo", "release"]

T = TypeVar("T")
_CACHE: ContextVar[dict | None] = ContextVar("shrinkpert_metric_memo", default=None)


@contextlib.contextmanager
def shared_intermediates() -> Iterator[None]:
    """Share intermediates between metric calls made inside the block (see the module docstring)."""
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def _frozen(x: Any) -> bool:
    if isinstance(x, np.ndarray):
        return not x.flags.writeable
    params = getattr(type(x), "__dataclass_params__", None)
    return x is None or bool(params is not None and params.frozen)


def memo(tag: Hashable, inputs: tuple[Any, ...], compute: Callable[[], T]) -> T:
    """``compute()``, or its earlier value for the same ``tag`` and the same input objects."""
    cache = _CACHE.get()
    if cache is None or not all(_frozen(x) for x in inputs):
        return compute()
    key = (tag, tuple(id(x) for x in inputs))
    hit = cache.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], inputs)):
        return hit[1]
    value = compute()
    cache[key] = (inputs, value)  # holding the inputs keeps their ids unique while the scope lives
    return value


def release(*objects: Any) -> None:
    """Drop every memoised value computed from any of ``objects`` (frees memory early)."""
    cache = _CACHE.get()
    if cache is None:
        return
    for key in [k for k, (inputs, _) in cache.items() if any(x is o for x in inputs for o in objects)]:
        del cache[key]
