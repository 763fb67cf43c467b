"""Small array and randomness helpers shared by every subpackage (the bottom of the data flow)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["freeze", "readonly", "as_rng"]


def freeze(array: Any) -> np.ndarray:
    """``array`` as an ndarray, made read-only in place (no copy; for arrays the caller owns)."""
    array = np.asarray(array)
    array.setflags(write=False)
    return array


def readonly(values: Any, dtype: Any = np.float64) -> np.ndarray:
    """A read-only copy of ``values`` in ``dtype`` (the caller's array is never touched)."""
    out = np.array(values, dtype=dtype)
    out.setflags(write=False)
    return out


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """``seed`` itself when it is a :class:`numpy.random.Generator`, else ``default_rng(seed)``."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
