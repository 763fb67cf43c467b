"""Scoring in blocks of rows (bounded memory) gives the table of one block, bit for bit.

The metrics of one perturbation at a time are scored on blocks of rows, every side on one block
before the next (:func:`shrinkpert.evaluation.steps._score_pseudobulks`); the block size follows
``_BLOCK_ENTRIES`` (perturbation × gene entries), in at most ``_MAX_BLOCKS`` blocks; the rank
metrics then take the sides once per (input, weighting). Here the blocks are set small enough that
11 perturbations fall into several blocks, and every value must equal the one-block run exactly: a
row's value may not depend on which other rows share its block.
"""

from __future__ import annotations

import logging

import pytest

import shrinkpert
from shrinkpert.evaluation import steps
from tests.conftest import poisson_resampled

N_GENES = 60


@pytest.fixture(scope="module")
def pair():
    truth = shrinkpert.datasets.simulate(1500, N_GENES, 11, seed=5, control_fraction=0.25, n_batches=1,
                                         mean_expression=3.0, effect_sd=1.0, escape_rate=0.05)
    return poisson_resampled(truth, 9), truth


def _evaluate(pair, monkeypatch, rows_per_block, **options):
    with monkeypatch.context() as m:
        m.setattr(steps, "_BLOCK_ENTRIES", rows_per_block * N_GENES)
        return shrinkpert.evaluate(*pair, n_boot=40, seed=3, **options)


def _assert_identical(a, b):
    fa, fb = a.to_frame(), b.to_frame()
    assert fa.shape == fb.shape and fa.equals(fb)
    assert a.summary().equals(b.summary())


@pytest.mark.parametrize(("options", "rows_per_block", "n_blocks"), [
    ({}, 4, 3),  # 11 rows in blocks of 4, 4 and 3
    ({}, 1, 6),  # at most 8 blocks: 11 rows in blocks of 2 (the last of 1)
    ({"truth_effects": "shrunk", "de_calls": "lfsr", "shard": (1, 2)}, 4, 2),  # the shard's 5 rows
    ({"de_test": "wilcoxon", "truth_cells": "all"}, 4, 3),
], ids=["default", "max-blocks", "shrunk-lfsr-shard", "wilcoxon"])
def test_blocks_equal_one_block(pair, monkeypatch, caplog, options, rows_per_block, n_blocks):
    one = _evaluate(pair, monkeypatch, 1000, **options)
    with caplog.at_level(logging.INFO, logger="shrinkpert"):
        blocked = _evaluate(pair, monkeypatch, rows_per_block, **options)
    blocks = [r.getMessage() for r in caplog.records if "one perturbation at a time" in r.getMessage()]
    assert len(blocks) == n_blocks, blocks
    # the run covers every kind of metric the blocks split (and the rank ones they do not)
    kinds = set(blocked.to_frame()["metric"].map(lambda name: shrinkpert.METRICS[name].kind))
    assert {"expression", "de", "target", "rank"} <= kinds
    _assert_identical(one, blocked)


def test_progress_counts_every_side_of_every_pass(pair, monkeypatch, caplog, capsys):
    """progress=True: a bar over the sides, once per block and once per pass of the rank metrics, that completes."""
    with caplog.at_level(logging.INFO, logger="shrinkpert"):
        table = _evaluate(pair, monkeypatch, 4, progress=True)
    n_sides = 1 + sum(column.startswith("baseline_") for column in table.to_frame().columns)
    messages = [r.getMessage() for r in caplog.records]
    n_blocks = sum("one perturbation at a time" in m for m in messages)
    n_rank_passes = sum("metrics over every perturbation" in m for m in messages)
    assert n_blocks == 3 and n_rank_passes >= 1
    total = (n_blocks + n_rank_passes) * n_sides
    err = capsys.readouterr().err
    assert "shrinkpert: scoring: 100%" in err and f"| {total}/{total} [" in err, err[-300:]


def test_kept_sides_change_nothing(pair, monkeypatch):
    """Built baselines kept across the passes (the default) or rebuilt on every read: the same table."""
    kept = _evaluate(pair, monkeypatch, 4)
    with monkeypatch.context() as m:
        m.setattr(steps, "_KEEP_BYTES", 0)
        rebuilt = _evaluate(pair, monkeypatch, 4)
    _assert_identical(kept, rebuilt)


def test_weightings_share_a_pass_when_the_truths_products_fit(pair, monkeypatch, caplog):
    """The rank metrics take every weighting of an input in one pass while the truth's P x P
    products under all of them fit the budget, else one pass per weighting: the same table."""
    def passes(**patch):
        caplog.clear()
        with monkeypatch.context() as m, caplog.at_level(logging.INFO, logger="shrinkpert"):
            for name, value in patch.items():
                m.setattr(steps, name, value)
            table = _evaluate(pair, monkeypatch, 4)
        return table, [r.getMessage() for r in caplog.records if "metrics over every perturbation" in r.getMessage()]

    together, one = passes()
    apart, each = passes(_KEEP_BYTES=2 * 8 * 11**2)  # the truth's products of one weighting, not two
    assert len(one) >= 1 and all("uniform, shrunken weights" in m for m in one), one
    assert len(each) == 2 * len(one) and all(m.endswith(("uniform weights", "shrunken weights")) for m in each), each
    _assert_identical(together, apart)


def test_baselines_declared_affine_derive_their_products(pair, monkeypatch):
    """The leave-one-out, scaled and shuffled baselines take their rank products from the truth's
    own product (the derivation returns a product for each), and the table equals the one with
    every product made directly."""
    from shrinkpert.metrics import _derived

    made, derive = [], _derived.derived_product

    def counted(*args, **kwargs):
        out = derive(*args, **kwargs)
        made.append(out is not None)
        return out

    with monkeypatch.context() as m:
        m.setattr(_derived, "derived_product", counted)
        derived = _evaluate(pair, monkeypatch, 1000)
    assert len(made) >= 5 and all(made), made
    with monkeypatch.context() as m:
        m.setattr(_derived, "derived_product", lambda *args, **kwargs: None)
        direct = _evaluate(pair, monkeypatch, 1000)
    _assert_identical(derived, direct)


def test_sides_kept_within_their_budget():
    """Baselines are built once while they fit the budget, then on every read; models and the
    arrays they borrow from the truth are not counted. Every build takes one second of a clock the
    builders advance, so what is kept never depends on this machine's timing."""
    import numpy as np

    borrowed = np.zeros((3, 4))
    builds = {"model": 0, "a": 0, "b": 0, "c": 0}
    now = [0.0]

    def build(name, own_var):
        def make():
            builds[name] += 1
            now[0] += 1.0
            return steps.Side(np.ones((3, 4)), np.ones((3, 4)) if own_var else borrowed, np.ones(3), "full", "negative")
        return make

    sides = steps.Sides({"model": ("model", "full", build("model", True)), "a": ("negative", "full", build("a", False)),
                         "b": ("negative", "full", build("b", True)), "c": ("negative", "full", build("c", False))},
                        clock=lambda: now[0])
    # a (mean and cells: 96 + 24 bytes) and b (96 + 96 + 24) fill the budget; c takes as long as b to
    # build for fewer bytes, so it replaces neither
    kept = sides.keeping(120 + 216, borrowed=(borrowed,))
    for _ in range(3):
        for name in kept:
            assert kept[name].mean.shape == (3, 4)
    assert builds == {"model": 3, "a": 1, "b": 1, "c": 3}
    for name in sides:  # the sides themselves keep nothing
        sides[name]
    assert builds == {"model": 4, "a": 2, "b": 2, "c": 4}


def test_sides_kept_by_build_time_per_byte():
    """A side that does not fit replaces kept sides that took less time per byte and less in all to
    build; a cheap side never replaces a costly one (build times from a clock the builders advance)."""
    import numpy as np

    now = [0.0]
    builds = dict.fromkeys("abcd", 0)
    cost = {"a": 1.0, "b": 1.5, "c": 5.0, "d": 0.5}  # seconds per build; every side is 120 bytes

    def build(name):
        def make():
            builds[name] += 1
            now[0] += cost[name]
            return steps.Side(np.ones((3, 4)), None, np.ones(3), "full", "negative")
        return make

    sides = steps.Sides({name: ("negative", "full", build(name)) for name in "abcd"})
    kept = sides.keeping(240)  # room for two
    kept._clock = lambda: now[0]
    for _ in range(3):
        for name in kept:
            kept[name]
    # a and b fit; c (5 s) replaces a (1 s, the cheaper of the two); d (0.5 s) replaces nothing
    assert builds == {"a": 3, "b": 1, "c": 1, "d": 3}
    assert set(kept._kept) == {"b", "c"}
    # c alone would need both places: b and a together (2.5 s) are cheaper than it, so both go
    now[0] = 0.0
    builds.update(dict.fromkeys("abcd", 0))
    wide = steps.Sides({name: ("negative", "full", build(name)) for name in "abcd"}).keeping(240)
    wide._clock = lambda: now[0]
    big = steps.Side(np.ones((6, 4)), None, np.ones(6), "full", "negative")  # 192 + 48 bytes
    wide._entries["c"] = ("negative", "full", lambda: (now.__setitem__(0, now[0] + 5.0), big)[1])
    for _ in range(2):
        for name in "abc":
            wide[name]
    assert set(wide._kept) == {"c"} and builds["a"] == 2 and builds["b"] == 2
