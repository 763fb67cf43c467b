"""The one Numba policy of the package.

Every compiled kernel goes through :func:`kernel`: ``cache=True`` (compiled once per
machine), ``error_model="numpy"`` (division by zero gives inf/NaN like NumPy instead of
raising), ``nogil=True``, and never ``fastmath`` (it would change NaN/inf semantics and
summation order).  Numba caches next to the source; on a read-only installation set
``NUMBA_CACHE_DIR`` to a writable folder.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import numba

__all__ = ["kernel", "thread_limit", "one_thread_blas", "resolve_threads", "cached_kernels_present", "threading_layer"]


def kernel(func: Callable | None = None, *, parallel: bool = False) -> Callable:
    """Compile ``func`` with the package policy (optionally ``parallel`` for ``prange``)."""

    def wrap(f: Callable) -> Callable:
        return numba.njit(cache=True, error_model="numpy", nogil=True, parallel=parallel)(f)

    return wrap(func) if func is not None else wrap


def cached_kernels_present() -> bool:
    """Whether compiled kernels of this package are cached (Numba's index files, ``*.nbi``).

    Numba writes them next to the sources (``__pycache__``) or below ``NUMBA_CACHE_DIR``; their
    absence means the next run compiles (about a minute for the shrinkage kernels).
    """
    package = Path(__file__).parent
    root = os.environ.get("NUMBA_CACHE_DIR")
    places = [Path(root)] if root else [package]
    return any(next(place.rglob("*_kernels*.nbi"), None) is not None for place in places if place.is_dir())


def resolve_threads(n_threads: int | None) -> int:
    """Return the number of threads to use: ``None`` means all Numba threads."""
    if n_threads is None:
        return int(numba.config.NUMBA_NUM_THREADS)
    n = int(n_threads)
    if n < 1:
        raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}.")
    return min(n, int(numba.config.NUMBA_NUM_THREADS))


@contextlib.contextmanager
def thread_limit(n_threads: int | None) -> Iterator[int]:
    """Temporarily set Numba's thread count; yields the count in force."""
    n = resolve_threads(n_threads)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)


@kernel(parallel=True)
def _start(x):  # the smallest parallel kernel: running it makes Numba choose its threading layer
    for i in numba.prange(x.shape[0]):
        x[i] = i


def threading_layer() -> str:
    """Numba's threading layer (``"omp"``, ``"tbb"`` or ``"workqueue"``), chosen now if no parallel
    kernel has run yet. Only ``omp`` and ``tbb`` run parallel kernels from several threads at once."""
    try:
        return numba.threading_layer()
    except ValueError:  # chosen at the first parallel launch
        import numpy as np

        _start(np.zeros(2))
        return numba.threading_layer()


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries (found once: scanning them costs ~20 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


_BLAS_LOCK = threading.Lock()
_BLAS_HOLD: list[Any] = [0, None]  # threads inside one_thread_blas, and the limiter that restores the setting


@contextlib.contextmanager
def one_thread_blas() -> Iterator[None]:
    """BLAS limited to one thread while any thread is inside.

    The setting is process-wide: the first thread to enter sets it, the last to leave restores
    it, so threads inside at once never undo each other's limit. Code that runs BLAS in several
    threads enters once before starting them and leaves after they end, so that the setting never
    changes while a BLAS call runs (OpenBLAS was seen here to keep one thread after a limit was
    lifted during another thread's call).
    """
    with _BLAS_LOCK:
        if _BLAS_HOLD[0] == 0:
            _BLAS_HOLD[1] = _blas_controller().limit(limits=1, user_api="blas")
        _BLAS_HOLD[0] += 1
    try:
        yield
    finally:
        with _BLAS_LOCK:
            _BLAS_HOLD[0] -= 1
            if _BLAS_HOLD[0] == 0:
                _BLAS_HOLD[1].restore_original_limits()
                _BLAS_HOLD[1] = None


# Keep threads predictable when a user sets OMP-style limits.
if "SHRINKPERT_NUM_THREADS" in os.environ:  # pragma: no cover - environment dependent
    numba.set_num_threads(resolve_threads(int(os.environ["SHRINKPERT_NUM_THREADS"])))
