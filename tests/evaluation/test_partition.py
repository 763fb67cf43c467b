"""Partitioned scoring: shards merged equal the unsharded run; mismatched parts are refused; the manifest."""

from __future__ import annotations

import json

import numpy as np
import pytest

import shrinkpert
from shrinkpert.cli import main
from shrinkpert.errors import InputError, MissingKeyError
from shrinkpert.evaluation.partition import check_shard, merge_tables, shard_rows
from shrinkpert.report import load_table, save_table
from tests.conftest import poisson_resampled

# one metric of each way a value is computed: per row (means, deltas, DE, target gene) and against all rows (rank)
METRICS = ["mse", "pearson_delta", "overlap_at_N", "target_change_error", "discrimination_score_cosine",
           "perturbench_rank_transposed"]
OPTIONS = dict(weights=None, metrics=METRICS, n_boot=50, seed=4)


@pytest.fixture(scope="module")
def pair():
    truth = shrinkpert.datasets.simulate(1400, 80, 7, seed=21, control_fraction=0.25, n_batches=1,
                                         mean_expression=3.0, effect_sd=1.0, escape_rate=0.05)
    return poisson_resampled(truth, 8), truth


@pytest.fixture(scope="module")
def whole(pair):
    return shrinkpert.evaluate(*pair, **OPTIONS)


@pytest.fixture(scope="module")
def parts(pair):
    return [shrinkpert.evaluate(*pair, shard=(i, 3), **OPTIONS) for i in range(3)]


def _assert_same(a, b):
    fa, fb = a.to_frame(), b.to_frame()
    assert list(fa.columns) == list(fb.columns) and len(fa) == len(fb)
    num = fa.select_dtypes("number").columns
    text = [c for c in fa.columns if c not in num]
    assert fa[text].equals(fb[text])
    # per-perturbation values: the very same numbers
    assert np.array_equal(fa[num].to_numpy(), fb[num].to_numpy(), equal_nan=True)
    sa, sb = a.summary(), b.summary()
    assert sa.index.equals(sb.index) and list(sa.columns) == list(sb.columns)
    snum = sa.select_dtypes("number").columns
    np.testing.assert_allclose(sb[snum].to_numpy(float), sa[snum].to_numpy(float), rtol=0, atol=1e-12)
    stext = [c for c in sa.columns if c not in snum]
    assert sa[stext].equals(sb[stext])


def test_shard_rows_partition():
    blocks = [shard_rows(10, (i, 3)) for i in range(3)]
    assert [b.tolist() for b in blocks] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert check_shard("1/4") == (1, 4) and check_shard(None) is None
    with pytest.raises(InputError, match="need integers 0 <= i < N"):
        check_shard((3, 3))
    with pytest.raises(InputError, match="is not 'i/N'"):
        check_shard("a/b")
    with pytest.raises(InputError, match="only 10 perturbations"):
        shard_rows(10, (0, 11))


def test_merged_shards_equal_the_whole_run(whole, parts):
    sizes = [len(p.perturbations) for p in parts]
    assert sizes == [3, 2, 2] and sum(sizes) == len(whole.perturbations)
    merged = merge_tables([parts[2], parts[0], parts[1]])  # any order
    _assert_same(whole, merged)
    manifest = merged.params["manifest"]
    assert manifest["shard"] is None and manifest["merged_shards"] == 3
    assert manifest["fingerprint"] == whole.params["manifest"]["fingerprint"]
    # a shard's own summary pools only its perturbations: it is not the run's
    assert not np.allclose(parts[0].summary()["mean"], whole.summary()["mean"], equal_nan=True)


def test_refuses_parts_that_do_not_belong_together(pair, whole, parts):
    pred, truth = pair
    with pytest.raises(InputError, match="more than once"):
        merge_tables([parts[0], parts[0], parts[1], parts[2]])
    with pytest.raises(MissingKeyError, match=r"shards \[1\] of 3 are missing"):
        merge_tables([parts[0], parts[2]])
    other_seed = shrinkpert.evaluate(pred, truth, shard=(1, 3), **{**OPTIONS, "seed": 5})
    with pytest.raises(InputError, match="different call"):
        merge_tables([parts[0], other_seed, parts[2]])
    changed = truth.copy()
    X = changed.X.tocsr(copy=True)
    X.data[0] += 1
    changed.X = X
    other_truth = shrinkpert.evaluate(pred, changed, shard=(1, 3), **OPTIONS)
    with pytest.raises(InputError, match="different inputs"):
        merge_tables([parts[0], other_truth, parts[2]])
    halves = shrinkpert.evaluate(pred, truth, shard=(1, 2), **OPTIONS)
    with pytest.raises(InputError, match="into 2 shards, part 0 into 3"):
        merge_tables([parts[0], halves, parts[2]])
    with pytest.raises(InputError, match="is not a shard"):
        merge_tables([whole, parts[1]])


def test_manifest_fingerprints(pair, whole, tmp_path):
    pred, truth = pair
    manifest = whole.params["manifest"]
    assert manifest["format"] == "shrinkpert.run-manifest/1" and manifest["shard"] is None
    assert set(manifest["inputs"]) == {"truth", "pred"} and manifest["inputs"]["truth"]["kind"] == "anndata"
    assert manifest["inputs"]["truth"]["shape"] == list(truth.shape)
    assert manifest["call"]["seed"] == 4 and manifest["call"]["metrics"] == METRICS
    assert {"shrinkpert", "numpy", "scipy", "anndata"} <= set(manifest["versions"])
    # a file's fingerprint is its path, size and modification time (the matrix is not read)
    import os

    path = tmp_path / "truth.h5ad"
    truth.write_h5ad(path)
    from shrinkpert.evaluation.manifest import fingerprint_input

    entry = fingerprint_input(str(path))
    assert (entry["bytes"], entry["mtime_ns"]) == (path.stat().st_size, path.stat().st_mtime_ns)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched: another input
    assert fingerprint_input(str(path))["mtime_ns"] != entry["mtime_ns"]
    # the same content gives the same fingerprint, in another object; a changed label does not
    assert fingerprint_input(truth.copy(), perturbation_key="perturbation")["sha256"] == \
        fingerprint_input(truth, perturbation_key="perturbation")["sha256"]
    other = truth.copy()
    other.obs["perturbation"] = other.obs["perturbation"].astype(str).to_numpy()[::-1]
    assert fingerprint_input(other, perturbation_key="perturbation")["sha256"] != \
        fingerprint_input(truth, perturbation_key="perturbation")["sha256"]
    out = save_table(whole, tmp_path / "saved")
    written = json.loads((out / "manifest.json").read_text())
    assert written["fingerprint"] == manifest["fingerprint"]


def test_folders_and_cli(pair, whole, parts, tmp_path):
    pred, truth = pair
    folders = [save_table(p, tmp_path / f"part{i}") for i, p in enumerate(parts)]
    _assert_same(whole, merge_tables(folders))
    # the command line: evaluate --shard on files, then merge
    pred_path, truth_path = tmp_path / "pred.h5ad", tmp_path / "truth.h5ad"
    pred.write_h5ad(pred_path)
    truth.write_h5ad(truth_path)
    args = ["evaluate", "--pred", str(pred_path), "--truth", str(truth_path), "--weights", "none", "--n-boot", "50",
            "--seed", "4", "--metrics", *METRICS]
    for i in range(2):
        assert main([*args, "--shard", f"{i}/2", "--out", str(tmp_path / f"cli{i}")]) == 0
    assert main(["merge", str(tmp_path / "cli0"), str(tmp_path / "cli1"), "--out", str(tmp_path / "merged")]) == 0
    merged = load_table(tmp_path / "merged")
    _assert_same(whole, merged)  # the same scores as the in-memory whole run
    assert json.loads((tmp_path / "merged" / "manifest.json").read_text())["inputs"]["truth"]["kind"] == "file"
    assert main(["merge", str(tmp_path / "cli0"), "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()
    assert list(merged.perturbations) == [str(p) for p in whole.perturbations]
