"""Row shards + merge against the one-pass result and NumPy; provenance refusals; one-file save/load."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shrinkpert
from shrinkpert import GroupStatistics, ShrinkpertWarning, group_statistics, load_statistics, merge_statistics
from shrinkpert import save_statistics
from shrinkpert.cli import main
from shrinkpert.stats.shards import CONFIG_KEYS
from shrinkpert.errors import GeneMismatchError, InputError, OutputExistsError
from tests.conftest import as_layout, make_counts
from tests.twins import group_stats, transform


def _quiet(func, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShrinkpertWarning)  # single cells / the zero-count cell
        return func(*args, **kw)


def _shards(source, n, **kw):
    return [_quiet(group_statistics, source, "perturbation", shard=(i, n), **kw) for i in range(n)]


def _sorted_counts(rng, n_cells=240):
    """Cells ordered by group, so most groups live in one or two shards only."""
    adata = make_counts(rng, n_cells=n_cells, n_groups=6)
    order = np.argsort(adata.obs["perturbation"].to_numpy().astype(str), kind="stable")
    return adata[order].copy()


def assert_equal_stats(got: GroupStatistics, ref: GroupStatistics, exact_sums: bool):
    assert got.groups.equals(ref.groups) and got.genes.equals(ref.genes)
    np.testing.assert_array_equal(got.n_cells, ref.n_cells)
    np.testing.assert_array_equal(got.n_nonzero, ref.n_nonzero)
    np.testing.assert_array_equal(got.library_size, ref.library_size)  # sums of integer totals
    if exact_sums:  # integers in float64: exact whatever the order
        np.testing.assert_array_equal(got.sum, ref.sum)
        np.testing.assert_array_equal(got.mean, ref.mean)
    else:  # summation order only
        np.testing.assert_allclose(got.sum, ref.sum, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12, atol=1e-12)
    # Chan's combination vs the one-pass S2 - S1^2/n: a few ulps of the variance
    np.testing.assert_allclose(got.var, ref.var, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("layout", ["csr", "dense", "backed_csr", "backed_csc"])
@pytest.mark.parametrize("normalize", [None, "log1p"])
def test_shards_merge_to_the_one_pass_result_and_numpy(rng, layout, normalize, tmp_path):
    adata = _sorted_counts(rng)
    source = as_layout(adata, layout, np.int64, tmp_path)
    whole = _quiet(group_statistics, source, "perturbation", normalize=normalize)
    parts = _shards(source, 4, normalize=normalize)
    # cells sorted by group: some groups have 0 cells in some shards
    assert (np.stack([p.n_cells for p in parts]) == 0).any()
    merged = _quiet(merge_statistics, parts[::-1])  # any order
    assert_equal_stats(merged, whole, exact_sums=normalize is None)
    codes = pd.Index(whole.groups).get_indexer(adata.obs["perturbation"].astype(str))
    ref = group_stats(transform(adata.X, normalize), codes, len(whole.groups))
    np.testing.assert_array_equal(merged.n_cells, ref["n_cells"])
    np.testing.assert_array_equal(merged.n_nonzero, ref["n_nonzero"])
    np.testing.assert_allclose(merged.var, ref["var"], rtol=1e-10, atol=1e-12)  # NumPy two-pass var
    assert merged.params["rows"] == (0, adata.n_obs) and merged.params["shard"] == (0, 1)
    assert merged.params["n_cells_total"] == adata.n_obs and merged.params["merged_parts"] == 4


def test_shard_reads_its_rows_only_and_records_provenance(rng):
    adata = make_counts(rng, n_cells=10)
    adata.X = sp.csr_matrix(adata.X)
    part = _quiet(group_statistics, adata, "perturbation", shard=(1, 3))
    assert part.params["rows"] == (3, 6) and part.params["shard"] == (1, 3)
    assert part.params["n_rows_total"] == 10 and part.params["n_cells_total"] == 3
    sub = _quiet(group_statistics, adata[3:6].copy(), pd.Series(adata.obs["perturbation"].to_numpy()[3:6],
                                                                 index=adata.obs_names[3:6], name="perturbation"))
    np.testing.assert_array_equal(part.sum[part.n_cells > 0], sub.sum[sub.n_cells > 0])


@pytest.mark.parametrize("shard", [(3, 3), (-1, 2), (0, 0), (1.5, 2), "0/2", (0, 1, 2)])
def test_bad_shard_is_refused(counts, shard):
    with pytest.raises(InputError, match=r"shard=.* is not \(i, N\)"):
        group_statistics(counts, "perturbation", shard=shard)


def test_refusals(rng):
    adata = make_counts(rng, n_cells=90)
    parts = _shards(adata, 3)
    with pytest.raises(InputError, match=r"shard 1/3\).*overlaps .*shard 1/3.*passed once"):
        merge_statistics([parts[0], parts[1], parts[1], parts[2]])
    with pytest.raises(InputError, match=r"Rows 30–60 of 90 are in no part; a shard is missing \(shard 1/3"):
        merge_statistics([parts[0], parts[2]])
    with pytest.raises(InputError, match=r"Rows 60–90 of 90 .*shard 2/3"):
        merge_statistics(parts[:2])
    log = _quiet(group_statistics, adata, "perturbation", shard=(2, 3), normalize="log1p")
    with pytest.raises(InputError, match=r"Mixed configurations: .*normalize=None.*normalize='log1p'"):
        merge_statistics([parts[0], parts[1], log])
    other = adata.copy()
    other.obs_names = [f"x{i}" for i in range(other.n_obs)]
    foreign = _quiet(group_statistics, other, "perturbation", shard=(2, 3))
    with pytest.raises(InputError, match=r"comes from another input"):
        merge_statistics([parts[0], parts[1], foreign])
    # a different split of the same cells: shards 0/3 and 1/2 overlap on rows 45–60
    half = _quiet(group_statistics, adata, "perturbation", shard=(1, 2))
    with pytest.raises(InputError, match=r"overlaps"):
        merge_statistics([parts[0], parts[1], half])
    bare = GroupStatistics(parts[0].groups, parts[0].genes, parts[0].n_cells, parts[0].sum, parts[0].mean,
                           parts[0].var, parts[0].n_nonzero, parts[0].library_size,
                           {k: parts[0].params[k] for k in CONFIG_KEYS})
    with pytest.raises(InputError, match=r"no provenance .*check=False"):
        merge_statistics([bare, parts[1], parts[2]])
    with pytest.raises(InputError, match="at least one part"):
        merge_statistics([])
    fewer = adata[:, :10].copy()
    with pytest.raises(GeneMismatchError, match="other genes"):
        merge_statistics([parts[0], _quiet(group_statistics, fewer, "perturbation", shard=(1, 3))])


def test_unchecked_merge_of_different_inputs_pools_the_cells(rng):
    a, b = make_counts(rng, n_cells=50), make_counts(rng, n_cells=70)
    b.obs_names = [f"b{i}" for i in range(b.n_obs)]
    stacked = np.vstack([a.X, b.X])
    labels = np.concatenate([a.obs["perturbation"].astype(str), b.obs["perturbation"].astype(str)])
    merged = merge_statistics([_quiet(group_statistics, a, "perturbation"), _quiet(group_statistics, b, "perturbation")],
                              check=False)
    ref = group_stats(transform(stacked, None), merged.groups.get_indexer(labels), len(merged.groups))
    np.testing.assert_array_equal(merged.n_cells, ref["n_cells"])
    np.testing.assert_array_equal(merged.sum, ref["sum"])
    np.testing.assert_allclose(merged.var, ref["var"], rtol=1e-10)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(2, 6), data=st.data())
def test_hierarchical_merges_are_associative(counts_log1p_parts, n, data):
    """Merging any grouping of adjacent shards, in any order, gives the flat merge."""
    parts = counts_log1p_parts[n]
    cut = data.draw(st.integers(1, n - 1))
    order = data.draw(st.permutations(range(n)))
    flat = _quiet(merge_statistics, [parts[k] for k in order])
    left = _quiet(merge_statistics, parts[:cut], partial=True)
    right = _quiet(merge_statistics, parts[cut:], partial=True)
    assert left.params["shard"] is None and left.params["rows"] == (0, parts[cut].params["rows"][0])
    tree = _quiet(merge_statistics, [right, left])
    assert_equal_stats(tree, flat, exact_sums=False)
    assert tree.params["merged_parts"] == n


@pytest.fixture(scope="module")
def counts_log1p_parts():
    adata = _sorted_counts(np.random.default_rng(7), n_cells=120)
    return {n: _shards(adata, n, normalize="log1p") for n in range(2, 7)}


def test_save_load_round_trip_is_bit_exact(rng, tmp_path):
    adata = make_counts(rng, n_cells=80)
    adata.obs["batch"] = np.arange(adata.n_obs) % 3  # integer labels in a MultiIndex
    stats = _quiet(group_statistics, adata, ["perturbation", "batch"], normalize="log1p", shard=(0, 2))
    path = save_statistics(stats, tmp_path / "part_0.npz")
    back = load_statistics(path)
    assert back.groups.equals(stats.groups) and back.groups.names == stats.groups.names
    assert back.groups.get_level_values(1).dtype.kind == "i"
    for name in ("n_cells", "sum", "mean", "var", "n_nonzero", "library_size"):
        np.testing.assert_array_equal(getattr(back, name), getattr(stats, name))
    assert dict(back.params) == dict(stats.params)
    with pytest.raises(OutputExistsError, match="already exists"):
        save_statistics(stats, path)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a statistics file"):
        load_statistics(tmp_path / "junk.npz")
    with pytest.raises(InputError, match="does not exist"):
        load_statistics(tmp_path / "nope.npz")


def test_cli_shards_and_merge_equal_one_pass(rng, tmp_path, capsys):
    adata = _sorted_counts(rng, n_cells=60)
    path = tmp_path / "data.h5ad"
    adata.write_h5ad(path)
    for i in range(3):
        assert _quiet(main, ["stats", str(path), "--shard", f"{i}/3", "--out", str(tmp_path / f"part_{i}")]) == 0
    parts = [str(tmp_path / f"part_{i}") for i in (2, 0, 1)]
    assert _quiet(main, ["merge", *parts, "--out", str(tmp_path / "whole")]) == 0
    assert _quiet(main, ["stats", str(path), "--out", str(tmp_path / "one")]) == 0
    assert_equal_stats(load_statistics(tmp_path / "whole"), load_statistics(tmp_path / "one"), exact_sums=True)
    assert main(["merge", *parts[:2], "--out", str(tmp_path / "bad")]) == 2
    assert "shard 1/3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stats", str(path), "--shard", "3/3", "--out", str(tmp_path / "x")])
    assert "need 0 <= i < N" in capsys.readouterr().err


def test_public_names():
    assert shrinkpert.stats.merge_statistics is merge_statistics
    assert {"merge_statistics", "save_statistics", "load_statistics"} <= set(shrinkpert.__all__)
