"""``shard=(i, N)`` under ``preset="vcc2026"``: the merged shards are the whole run.

The whole run is the reference (it is itself checked against cell-eval2 in
``tests/metrics/test_vcc2026*.py``). Tolerance 1e-12 on every value of the long table and the
summary (the shards compute the same per-perturbation numbers; a DE test read from a subset of
the cells sums its means in the same order), and the calibrated score identical.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import shrinkpert
from shrinkpert.errors import InputError
from shrinkpert.evaluation.partition import merge_tables
from shrinkpert.report import save_table
from tests.metrics.test_vcc2026 import _pair

OPTIONS = dict(preset="vcc2026", n_boot=20, seed=2, baselines=["target_spike"])


@pytest.fixture(scope="module")
def runs():
    """The whole run and its two shards on a counts pair with a null perturbation."""
    pred, truth, _ = _pair(6)
    return shrinkpert.evaluate(pred, truth, **OPTIONS), [shrinkpert.evaluate(pred, truth, shard=(i, 2), **OPTIONS)
                                                         for i in range(2)]


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns) and list(a.index) == list(b.index)
    for col in a.columns:
        if pd.api.types.is_numeric_dtype(a[col]) and not pd.api.types.is_bool_dtype(a[col]):
            np.testing.assert_allclose(b[col].to_numpy(dtype=float), a[col].to_numpy(dtype=float), rtol=1e-12,
                                       atol=1e-12, err_msg=col)
        else:
            assert a[col].tolist() == b[col].tolist(), col


def test_merged_shards_equal_the_whole_run(runs, tmp_path):
    whole, parts = runs
    sizes = [len(p.perturbations) for p in parts]
    assert sum(sizes) == len(whole.perturbations) and min(sizes) >= 1
    merged = merge_tables(parts)
    _assert_same(whole.to_frame(), merged.to_frame())
    _assert_same(whole.summary(), merged.summary())
    assert merged.params["avg_score"] == whole.params["avg_score"]
    assert merged.params["manifest"]["merged_shards"] == 2
    # from folders (floats round-trip exactly), in any order
    folders = []
    for k in (1, 0):
        save_table(parts[k], tmp_path / f"part{k}")
        folders.append(tmp_path / f"part{k}")
    again = merge_tables(folders)
    _assert_same(whole.summary(), again.summary())
    assert again.params["avg_score"] == whole.params["avg_score"]
    written = again.to_cell_eval2(tmp_path / "ce2")
    assert pd.read_csv(written / "results.csv").equals(pd.read_csv(whole.to_cell_eval2(tmp_path / "w") / "results.csv"))
    with pytest.raises(InputError, match="one shard's partial table"):
        parts[0].to_cell_eval2(tmp_path / "part")


def test_shard_values_are_the_whole_runs_rows(runs):
    """Each shard's per-perturbation members are the whole run's rows (pooled ones included)."""
    whole, parts = runs
    full = whole.to_frame().set_index(["perturbation", "metric"])["value"]
    for part in parts:
        frame = part.to_frame()
        rows = frame[frame["metric"].isin(full.index.get_level_values("metric").unique())]
        got = rows.set_index(["perturbation", "metric"])["value"]
        np.testing.assert_allclose(got.to_numpy(), full.loc[got.index].to_numpy(), rtol=1e-12, atol=1e-12)


def test_refuses_overlapping_or_whole_parts(runs):
    whole, parts = runs
    with pytest.raises(InputError, match="more than once"):
        merge_tables([parts[0], parts[0], parts[1]])
    with pytest.raises(InputError, match="is not a shard"):
        merge_tables([whole, parts[1]])
