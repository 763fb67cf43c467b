"""Small array and randomness helpers shared by every subpackage (the bottom of the data flow)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["freeze", "readonly", "kept_readonly", "kernel_input", "in_threads", "row_order", "as_rng",
           "rows_by_label", "finite_mean"]


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


def kept_readonly(values: Any, dtype: Any = np.float64) -> np.ndarray:
    """``values`` itself when nothing can write it (a ``dtype`` ndarray read-only down to the array
    that owns its memory, e.g. a view of frozen statistics), else :func:`readonly` (a copy)."""
    owner = values
    while isinstance(owner, np.ndarray) and not owner.flags.writeable:
        if owner.base is None:
            return values if values.dtype == dtype else readonly(values, dtype)
        owner = owner.base
    return readonly(values, dtype)


def kernel_input(a: np.ndarray) -> np.ndarray:
    """``a`` as a read-only C-contiguous float64 array, the one type the Numba kernels take their
    input matrices in (one specialisation for every caller): a frozen array as it is, a writable
    one as a read-only view, anything else as a copy (never the caller's array)."""
    if a.dtype != np.float64 or not a.flags.c_contiguous:
        a = np.array(a, np.float64, order="C")
    elif not a.flags.writeable:
        return a
    view = a.view()
    view.flags.writeable = False
    return view


def in_threads(part: Any, n: int, work: int) -> None:
    """``part(lo, hi)`` over equal slices of ``range(n)``, in Numba's thread count when ``work``
    (elements) is large; ``part`` must release the GIL and write disjoint slices."""
    import numba

    n_threads = max(1, min(numba.get_num_threads(), work // 100_000, n))
    if n_threads == 1:
        part(0, n)
        return
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, n, n_threads + 1).astype(np.int64)
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(lambda k: part(bounds[k], bounds[k + 1]), range(n_threads)))


def row_order(x: np.ndarray, kind: str | None = None) -> np.ndarray:
    """``np.argsort(x, axis=1, kind=kind)`` of a matrix, blocks of rows sorted in Numba's threads
    (NumPy's sort releases the GIL; each row's order is NumPy's whatever the blocks)."""
    out = np.empty(x.shape, dtype=np.intp)

    def part(lo: int, hi: int) -> None:
        out[lo:hi] = np.argsort(x[lo:hi], axis=1, kind=kind)

    in_threads(part, x.shape[0], x.size)
    return out


def as_rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    """``seed`` itself when it is a :class:`numpy.random.Generator`, else ``default_rng(seed)``."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def rows_by_label(values: Any, labels: Any) -> list[np.ndarray]:
    """For each of ``labels`` (unique), the positions ``i`` with ``values[i] == label``, increasing.

    Equal to ``[np.flatnonzero(values == label) for label in labels]`` in one grouping pass
    (a stable sort of the label codes) instead of one scan of ``values`` per label.
    """
    import pandas as pd

    codes = pd.Index(labels).get_indexer(np.asarray(values, dtype=object))
    order = np.argsort(codes, kind="stable").astype(np.int64)
    bounds = np.searchsorted(codes[order], np.arange(len(labels) + 1))
    return [order[bounds[k]:bounds[k + 1]] for k in range(len(labels))]


def finite_mean(values: Any) -> np.ndarray:
    """Mean of the finite entries over the last axis (NaN where there is none), e.g. of
    ``values[indices]`` for bootstrap draws ``indices`` of shape ``(n_boot, n)``: one mean per
    replicate."""
    values = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(values)
    count = ok.sum(axis=-1)
    return np.divide(np.where(ok, values, 0.0).sum(axis=-1), count, out=np.full(count.shape, np.nan),
                     where=count > 0)
