"""zarr stores and Dask matrices through a real 2-process ``distributed.LocalCluster``.

The reference is the in-memory pass over the same numbers and the NumPy twin: counts and
integer sums exact; normalised sums to summation order (1e-12 relative: Dask chunks and Numba
threads add the same values in another order).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert import ShrinkpertWarning, estimate_effects, group_statistics, merge_statistics
from shrinkpert.data.read import open_matrix, read_annotations
from shrinkpert.errors import InputError, MissingKeyError
from tests.conftest import make_counts
from tests.twins import group_stats, transform

ad = pytest.importorskip("anndata")
da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")

CHUNK = 64  # rows per task: 400 cells -> 7 tasks, a two-level tree


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # distributed's own start-up chatter
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=":0", silence_logs=logging.ERROR)
        client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def adata():
    data = make_counts(np.random.default_rng(11), n_cells=400, n_genes=30, n_groups=5)
    data.X = sp.csr_matrix(data.X.astype(np.float32))
    data.layers["counts"] = data.X.copy()
    return data


def _write_zarr(adata, path):
    with ad.settings.override(zarr_write_format=3), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata/zarr notices about future format defaults
        adata.write_zarr(path, chunks=(CHUNK, adata.n_vars))
    return str(path)


@pytest.fixture(scope="module")
def store(adata, tmp_path_factory):
    return _write_zarr(adata, tmp_path_factory.mktemp("zarr") / "screen.zarr")


def _quiet(func, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShrinkpertWarning)  # the zero-count cell
        return func(*args, **kw)


@pytest.mark.parametrize("normalize", [None, "log1p"])
def test_zarr_store_through_the_cluster_equals_in_memory(client, adata, store, normalize):
    with distributed.get_task_stream(client) as stream:
        got = _quiet(group_statistics, store, "perturbation", normalize=normalize, chunk_size=CHUNK)
    ran = [t for t in stream.data if "_partial" in str(t["key"])]
    assert len(ran) == -(-adata.n_obs // CHUNK)  # one kernel task per row chunk, run by the workers
    ref = _quiet(group_statistics, adata, "perturbation", normalize=normalize)
    np.testing.assert_array_equal(got.n_cells, ref.n_cells)
    np.testing.assert_array_equal(got.n_nonzero, ref.n_nonzero)
    np.testing.assert_array_equal(got.library_size, ref.library_size)
    assert got.params["storage"] == "dask"
    twin = group_stats(transform(adata.X.toarray(), normalize), got.groups.get_indexer(adata.obs["perturbation"]),
                       len(got.groups))
    if normalize is None:
        np.testing.assert_array_equal(got.sum, ref.sum)
        np.testing.assert_array_equal(got.sum, twin["sum"])
    else:
        np.testing.assert_allclose(got.sum, ref.sum, rtol=1e-12)
    np.testing.assert_allclose(got.var, twin["var"], rtol=1e-10, atol=1e-12)


def test_anndata_with_a_dask_matrix_and_library_sizes(client, adata):
    dense = adata.X.toarray()
    lazy = ad.AnnData(X=da.from_array(dense, chunks=(90, 11)), obs=adata.obs, var=adata.var)  # 3 gene chunks
    lib = np.random.default_rng(3).uniform(500, 900, adata.n_obs)
    got = _quiet(group_statistics, lazy, "perturbation", normalize="log1p", library_size=lib)
    ref = _quiet(group_statistics, adata, "perturbation", normalize="log1p", library_size=lib)
    np.testing.assert_array_equal(got.n_nonzero, ref.n_nonzero)
    np.testing.assert_allclose(got.mean, ref.mean, rtol=1e-12)
    np.testing.assert_allclose(got.var, ref.var, rtol=1e-10)
    assert lazy.X.shape == dense.shape and isinstance(lazy.X, da.Array)  # input untouched


def test_effects_from_a_zarr_store_equal_in_memory(client, adata, store):
    got = _quiet(estimate_effects, store, layer="counts")
    ref = _quiet(estimate_effects, adata, layer="counts")
    assert list(got.perturbations) == list(ref.perturbations)
    np.testing.assert_allclose(got.effect, ref.effect, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.std_error, ref.std_error, rtol=1e-10, atol=1e-14)


def test_zarr_shards_merge_to_the_whole(client, adata, store):
    parts = [_quiet(group_statistics, store, "perturbation", shard=(i, 3)) for i in range(3)]
    whole = _quiet(group_statistics, adata, "perturbation")
    merged = _quiet(merge_statistics, parts)
    np.testing.assert_array_equal(merged.n_cells, whole.n_cells)
    np.testing.assert_array_equal(merged.sum, whole.sum)  # integer counts: exact
    assert parts[0].params["input_fingerprint"] == whole.params["input_fingerprint"]


def test_open_matrix_streams_a_zarr_store_by_row_blocks(client, adata, store):
    obs, genes = read_annotations(store)
    pd.testing.assert_index_equal(obs.index, adata.obs_names)
    with open_matrix(store) as source:
        assert source.kind == "dask" and source.by_rows and source.auto_chunk_size() == adata.n_obs  # < 32 MB: one chunk
        blocks = list(source.blocks(50, rows=slice(20, 170)))
    assert [b.rows for b in blocks] == [slice(20, 70), slice(70, 120), slice(120, 170)]
    np.testing.assert_array_equal(sp.vstack([b.values for b in blocks]).toarray(), adata.X[20:170].toarray())


def test_zarr_refusals(adata, tmp_path):
    csc = adata.copy()
    csc.X = sp.csc_matrix(csc.X)
    path = _write_zarr(csc, tmp_path / "by_genes.zarr")
    with pytest.raises(InputError, match=r"csc_matrix \(stored by genes\).*tocsr"):
        group_statistics(path, "perturbation")
    store = _write_zarr(adata, tmp_path / "ok.zarr")
    with pytest.raises(MissingKeyError, match=r"Layer 'raw' not found in ok.zarr; layers present: \['counts'\]"):
        group_statistics(store, "perturbation", layer="raw")
    import zarr

    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w", zarr_format=3).create_group("x")
    with pytest.raises(InputError, match="not an AnnData one"):
        group_statistics(str(tmp_path / "plain.zarr"), "perturbation")


def test_evaluate_on_zarr_stores_runs_its_passes_on_the_cluster(client, adata, store, tmp_path):
    """evaluate's truth and prediction passes are Dask tasks on the cluster; scores equal in memory."""
    from shrinkpert import evaluate

    pred = adata.copy()
    rng = np.random.default_rng(3)
    pred.X = sp.csr_matrix(rng.poisson(np.asarray(adata.X.todense()) + 0.5).astype(np.float32))
    pred_store = _write_zarr(pred, tmp_path / "pred.zarr")
    options = dict(control="non-targeting", metrics=["pearson_delta", "mse"], seed=0, chunk_size=CHUNK)
    with distributed.get_task_stream(client) as stream:
        got = _quiet(evaluate, pred_store, store, **options)
    ref = _quiet(evaluate, pred, adata, **options)
    partials = [t for t in stream.data if "_partial" in str(t["key"])]
    workers = {t["worker"] for t in partials}
    assert len(partials) >= 2 * 7 and len(workers) == 2  # both sides, 7 row chunks each, on both workers
    a, b = got.to_frame(), ref.to_frame()
    pd.testing.assert_index_equal(a.index, b.index)
    # the same values summed in another order (Dask chunks vs Numba threads)
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), rtol=1e-10, atol=1e-12)
