"""Two sides scored at once (threads) give the table of one side at a time, bit for bit.

:func:`shrinkpert.evaluation.steps._score_rows` scores the sides in ``_side_workers`` threads;
the truth's intermediates are computed once (:class:`~shrinkpert.metrics.shared.OnceScope`) and
the values collected in side order. Here the same evaluation runs with one worker and with two
(checked to be two threads), under options that touch the truth's shared caches differently.
"""

from __future__ import annotations

import logging
import threading
import time

import numba
import pytest
from threadpoolctl import threadpool_info

import shrinkpert
from shrinkpert.evaluation import steps
from shrinkpert.metrics.shared import OnceScope, reuse
from tests.conftest import poisson_resampled


@pytest.fixture(scope="module")
def pair():
    truth = shrinkpert.datasets.simulate(1500, 60, 11, seed=5, control_fraction=0.25, n_batches=1,
                                         mean_expression=3.0, effect_sd=1.0, escape_rate=0.05)
    return poisson_resampled(truth, 9), truth


def _blas_threads() -> dict[str, int]:
    return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.mark.parametrize("options", [{}, {"truth_effects": "shrunk", "de_calls": "lfsr"},
                                     {"de_test": "wilcoxon", "truth_cells": "all"}, {"shard": (0, 2)}],
                         ids=["default", "shrunk-lfsr", "wilcoxon", "shard"])
def test_two_sides_at_once_equal_one_at_a_time(pair, monkeypatch, caplog, options):
    if numba.get_num_threads() < 2:
        pytest.skip("one Numba thread: sides are scored one at a time")
    blas = _blas_threads()
    with caplog.at_level(logging.DEBUG, logger="shrinkpert"):
        both = shrinkpert.evaluate(*pair, n_boot=40, seed=3, **options)
    threads = {r.threadName for r in caplog.records if r.getMessage().startswith("evaluate: scoring ")}
    assert len(threads) == 2 and all(t.startswith("shrinkpert-side") for t in threads), threads
    after = _blas_threads()
    assert {k: after[k] for k in blas} == blas  # the BLAS limit is restored
    with monkeypatch.context() as m:
        m.setattr(steps, "_side_workers", lambda config, n: 1)
        one = shrinkpert.evaluate(*pair, n_boot=40, seed=3, **options)
    fa, fb = both.to_frame(), one.to_frame()
    assert fa.shape == fb.shape and fa.equals(fb)
    assert both.summary().equals(one.summary())


def test_n_threads_one_scores_one_side_at_a_time(pair, caplog):
    with caplog.at_level(logging.DEBUG, logger="shrinkpert"):
        shrinkpert.evaluate(*pair, n_boot=10, seed=3, metrics=["mse"], n_threads=1)
    threads = {r.threadName for r in caplog.records if r.getMessage().startswith("evaluate: scoring ")}
    assert threads == {threading.current_thread().name}


def test_once_scope_computes_each_key_once():
    scope, calls = OnceScope(), []

    def slow():
        calls.append(threading.current_thread().name)
        time.sleep(0.05)
        return 42

    threads = [threading.Thread(target=lambda: reuse(scope, "k", slow)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and scope["k"] == 42


def test_once_scope_failure_leaves_no_entry_and_a_waiter_retries():
    scope, started = OnceScope(), threading.Event()
    results = []

    def failing():
        started.set()
        time.sleep(0.05)
        raise RuntimeError("boom")

    def first():
        with pytest.raises(RuntimeError):
            reuse(scope, "k", failing)

    t = threading.Thread(target=first)
    t.start()
    started.wait()
    results.append(reuse(scope, "k", lambda: 7))  # waits for the failed computation, then computes
    t.join()
    assert results == [7] and scope["k"] == 7
