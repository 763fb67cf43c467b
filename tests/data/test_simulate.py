"""The Perturb-seq simulator: layout, determinism, disk == memory, and that the stored truth is
what the counts show (each check states its tolerance)."""

from __future__ import annotations

import os
import re
import tracemalloc

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.stats as st

from shrinkpert.data.simulate import _sample_nb, simulate
from shrinkpert.errors import InputError, OutputExistsError

CONTROL = "non-targeting"


@pytest.fixture(scope="module")
def small():
    return simulate(n_cells=1500, n_genes=300, n_perturbations=8, seed=3)


@pytest.fixture(scope="module")
def big():
    """Enough cells per guide for the truth checks (20k cells, 5 perturbations)."""
    return simulate(n_cells=20000, n_genes=1000, n_perturbations=5, seed=11)


def dense(adata) -> np.ndarray:
    return np.asarray(adata.X.toarray() if sp.issparse(adata.X) else adata.X[:].toarray())


def assert_same(a: ad.AnnData, b: ad.AnnData) -> None:
    """Identical counts (values and sparsity), obs, var and uns."""
    xa, xb = sp.csr_matrix(a.X), sp.csr_matrix(b.X)
    assert xa.dtype == xb.dtype and xa.shape == xb.shape
    np.testing.assert_array_equal(xa.indptr, xb.indptr)
    np.testing.assert_array_equal(xa.indices, xb.indices)
    np.testing.assert_array_equal(xa.data, xb.data)
    pd.testing.assert_frame_equal(a.obs, b.obs)
    pd.testing.assert_frame_equal(a.var, b.var)
    assert_uns_equal(a.uns, b.uns)


def assert_uns_equal(a, b) -> None:
    assert isinstance(a, dict) == isinstance(b, dict)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_uns_equal(a[key], b[key])
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def log_ratio_z(x: np.ndarray, y: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """z-score of log(mean x / mean y) - expected (columns), delta-method standard error."""
    mx, my = x.mean(0), y.mean(0)
    se = np.sqrt(x.var(0, ddof=1) / (len(x) * mx**2) + y.var(0, ddof=1) / (len(y) * my**2))
    return (np.log(mx / my) - expected) / se


# ---------------------------------------------------------------- layout


def test_shape_columns_and_dtypes(small):
    a = small
    assert a.shape == (1500, 300)
    assert list(a.obs.columns) == ["perturbation", "guide", "batch", "replicate", "escaped", "n_counts"]
    for col in ("perturbation", "guide", "batch", "replicate"):
        assert isinstance(a.obs[col].dtype, pd.CategoricalDtype)
    assert a.obs["escaped"].dtype == bool and a.obs["n_counts"].dtype == np.int64
    assert list(a.var_names[:2]) == ["GENE00001", "GENE00002"] and a.var_names.is_unique
    assert sp.issparse(a.X) and a.X.format == "csr" and a.X.dtype == np.float32
    assert a.X.has_canonical_format and (a.X.data > 0).all()
    np.testing.assert_array_equal(a.X.data, np.round(a.X.data))
    np.testing.assert_array_equal(a.obs["n_counts"], np.asarray(a.X.sum(1)).ravel())


def test_labels_targets_and_guides(small):
    a, truth = small, small.uns["simulation"]
    perts = list(a.obs["perturbation"].cat.categories)
    assert perts[0] == CONTROL and perts[1:] == list(truth["perturbations"])
    assert set(perts[1:]) <= set(a.var_names)  # named by target gene
    assert list(a.var_names[a.var["is_perturbation_target"]]) == perts[1:]
    assert (a.obs["perturbation"] == CONTROL).sum() == round(0.1 * 1500)
    assert not a.obs.loc[a.obs["perturbation"] == CONTROL, "escaped"].any()
    assert (a.obs["batch"].cat.codes == a.obs["replicate"].cat.codes).all()
    # each cell's guide belongs to its perturbation: "<TARGET>_gK" / "non-targeting_gK"
    guide_pert = a.obs["guide"].astype(str).str.replace(r"_g\d+$", "", regex=True)
    assert (guide_pert == a.obs["perturbation"].astype(str)).all()
    assert len(truth["guides"]) == 3 * 9 and truth["guides"][0] == f"{CONTROL}_g1"
    assert truth["guides"][3] == f"{perts[1]}_g1" and truth["guide_perturbation"][3] == perts[1]
    assert list(a.obs["guide"].cat.categories) == list(truth["guides"])
    assert set(np.unique(a.obs["batch"])) == {"batch1", "batch2"}


def test_truth_record_is_consistent(small):
    t = small.uns["simulation"]
    n_p, n_g = 8, 300
    assert t["effects"].shape == (n_p, n_g) and t["effects"].dtype == np.float64
    assert list(t["genes"]) == list(small.var_names)
    np.testing.assert_array_equal(t["genes"][t["target_index"]], t["perturbations"])
    assert t["systematic_shift"].shape == (n_g,) and (t["systematic_shift"] != 0).sum() == round(0.05 * n_g)
    kd, share = t["guide_knockdown"], t["guide_weight"]
    targeting = t["guide_perturbation"] != CONTROL
    assert ((kd[targeting] > 0.05) & (kd[targeting] < 0.9)).all() and (kd[~targeting] == 1).all()
    for p, target in enumerate(t["perturbations"]):
        mine = t["guide_perturbation"] == target
        assert mine.sum() == 3 and np.isclose(share[mine].sum(), 1.0)
        # the target's entry is the guide-averaged log remaining fraction
        assert np.isclose(t["effects"][p, t["target_index"][p]], (share[mine] * np.log(kd[mine])).sum())
    assert ((t["escape_rate"] >= 0) & (t["escape_rate"] < 1)).all()
    assert t["params"]["seed"] == 3 and t["params"]["model_version"] == 1
    assert {"n_cells", "n_genes", "escape_rate", "dtype", "systematic_shift"} <= t["params"].keys()


def test_realistic_magnitudes(small):
    t = small.uns["simulation"]
    assert 0.1 <= np.median(t["gene_mean"]) <= 0.2
    assert np.mean(t["gene_mean"]) > 2 * np.median(t["gene_mean"])  # long right tail
    assert 0.15 < small.X.nnz / np.prod(small.shape) < 0.35
    n_counts = small.obs["n_counts"].to_numpy()
    assert 0.25 < np.std(np.log(n_counts)) < 0.6  # library sizes vary (sigma 0.35 plus sampling noise)
    n_affected = (t["effects"] != 0).sum(1) - 1  # minus the target's entry
    assert 5 < n_affected.mean() < 80


def test_int_dtype_gives_the_same_counts(small):
    b = simulate(n_cells=1500, n_genes=300, n_perturbations=8, seed=3, dtype="int32")
    assert b.X.dtype == np.int32
    np.testing.assert_array_equal(b.X.toarray(), small.X.toarray())


# ---------------------------------------------------------------- sampler


@pytest.mark.parametrize(("mean", "phi"), [(0.02, 0.3), (0.3, 1.5), (3.5, 0.2), (25.0, 0.4)])
def test_sampler_matches_negative_binomial(mean, phi):
    """Chi-square goodness of fit against scipy's NB pmf (200k draws); fails at p < 1e-4."""
    rng = np.random.default_rng(7)
    n = 200_000
    nz, values = _sample_nb(rng, np.full((n // 4, 4), phi * mean), np.full(4, 1 / phi))
    x = np.zeros(n, dtype=np.int64)
    x[nz] = values
    dist = st.nbinom(1 / phi, 1 / (1 + phi * mean))
    top = int(dist.ppf(0.999)) + 1
    observed = np.bincount(np.minimum(x, top), minlength=top + 1)
    expected = n * np.append(dist.pmf(np.arange(top)), dist.sf(top - 1))
    keep = expected > 5
    chi2 = ((observed[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    assert st.chi2.sf(chi2, keep.sum() - 1) > 1e-4


# ---------------------------------------------------------------- determinism


def test_same_seed_same_output_and_different_seed_differs(small):
    assert_same(simulate(n_cells=1500, n_genes=300, n_perturbations=8, seed=3), small)
    other = simulate(n_cells=1500, n_genes=300, n_perturbations=8, seed=4)
    assert (other.X != small.X).nnz > 0
    assert not np.array_equal(other.uns["simulation"]["effects"], small.uns["simulation"]["effects"])


def test_generator_seed_is_reproducible():
    a = simulate(n_cells=200, n_genes=50, n_perturbations=3, seed=np.random.default_rng(5))
    b = simulate(n_cells=200, n_genes=50, n_perturbations=3, seed=np.random.default_rng(5))
    assert_same(a, b)
    assert a.uns["simulation"]["params"]["seed_from_generator"] is True


def test_chunk_size_and_threads_do_not_change_values(tmp_path):
    # 2100 genes -> 256-cell blocks, so 2500 cells span 10 blocks; 333 is not a block multiple
    kwargs = dict(n_cells=2500, n_genes=2100, n_perturbations=10, seed=8)
    ref = simulate(**kwargs, n_threads=1)
    assert_same(simulate(**kwargs, chunk_size=333, n_threads=2), ref)
    disk = simulate(**kwargs, chunk_size=1000, path=tmp_path / "sim.h5ad")
    assert_same(disk.to_memory(), ref)
    disk.file.close()


def test_disk_matches_memory_and_reads_back(tmp_path):
    kwargs = dict(n_cells=30_000, n_genes=500, n_perturbations=25, seed=2)
    mem = simulate(**kwargs)
    path = tmp_path / "sim.h5ad"
    backed = simulate(**kwargs, path=path, chunk_size=7000)
    assert backed.isbacked and backed.filename == path
    pd.testing.assert_frame_equal(backed.obs, mem.obs)
    rows = np.arange(100, 30_000, 997)
    np.testing.assert_array_equal(backed.X[rows].toarray(), mem.X[rows].toarray())
    backed.file.close()
    assert_same(ad.read_h5ad(path), mem)
    assert os.listdir(tmp_path) == ["sim.h5ad"]  # no temporary file left behind


def test_disk_memory_is_bounded(tmp_path):
    """Peak NumPy/Python heap of a disk run is O(block), not O(matrix): 5x the cells gives about the
    same peak, below the size X would take in memory (1000 genes -> 1024-cell blocks)."""
    peaks, x_bytes = [], 0
    for n_cells in (12_000, 60_000):
        tracemalloc.start()
        out = simulate(n_cells=n_cells, n_genes=1000, n_perturbations=10, seed=1, n_threads=1,
                       path=tmp_path / f"m{n_cells}.h5ad")
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        out.file.close()
        with h5py.File(tmp_path / f"m{n_cells}.h5ad", "r") as f:
            x_bytes = f["X/data"].size * (4 + 4)  # float32 data + int32 indices
    assert peaks[1] < 1.25 * peaks[0]
    assert peaks[1] < 0.75 * x_bytes


# ---------------------------------------------------------------- truth is what the counts show
# Expected mean ratios (module docstring): perturbed / control of gene g is e^{delta_g} times the
# knockdown or downstream factor; tolerance: |z| < 4.5 with delta-method standard errors.


def test_knockdown_matches_guides(big):
    t = big.uns["simulation"]
    X = dense(big)
    obs = big.obs
    ctrl = (obs["perturbation"] == CONTROL).to_numpy()
    z = []
    for guide, pert, r in zip(t["guides"], t["guide_perturbation"], t["guide_knockdown"]):
        if pert == CONTROL:
            continue
        g = list(t["genes"]).index(pert)
        cells = ((obs["guide"] == guide) & ~obs["escaped"]).to_numpy()
        expected = np.log(r) + t["systematic_shift"][g]
        z.append(log_ratio_z(X[cells][:, [g]], X[ctrl][:, [g]], np.array([expected]))[0])
    assert len(z) == 15 and np.max(np.abs(z)) < 4.5


def test_escapers_have_no_knockdown_and_match_the_escape_rate(big):
    t = big.uns["simulation"]
    X, obs = dense(big), big.obs
    ctrl = (obs["perturbation"] == CONTROL).to_numpy()
    for p, target in enumerate(t["perturbations"]):
        cells = (obs["perturbation"] == target).to_numpy()
        esc = obs["escaped"].to_numpy()[cells]
        e = t["escape_rate"][p]
        assert abs(esc.mean() - e) < 4.5 * np.sqrt(e * (1 - e) / cells.sum()) + 1e-12
        g = t["target_index"][p]
        escaped = cells & obs["escaped"].to_numpy()
        if escaped.sum() >= 30:
            zz = log_ratio_z(X[escaped][:, [g]], X[ctrl][:, [g]], t["systematic_shift"][[g]])
            assert abs(zz[0]) < 4.5


def test_systematic_shift_is_visible_in_all_perturbed_cells(big):
    """On genes no perturbation targets or affects, perturbed / control = e^{delta_g} exactly."""
    t = big.uns["simulation"]
    X, obs = dense(big), big.obs
    ctrl = (obs["perturbation"] == CONTROL).to_numpy()
    clean = (t["effects"] == 0).all(0) & (X[ctrl].mean(0) > 0.3)
    shift = t["systematic_shift"]
    z = log_ratio_z(X[~ctrl][:, clean], X[ctrl][:, clean], shift[clean])
    assert (shift[clean] != 0).sum() >= 5 and np.max(np.abs(z)) < 4.5
    # and a naive "no shift" model is clearly rejected on the shifted genes
    big_shift = clean & (np.abs(shift) > 0.2)
    z0 = log_ratio_z(X[~ctrl][:, big_shift], X[ctrl][:, big_shift], np.zeros(big_shift.sum()))
    assert np.mean(np.abs(z0) > 4.5) > 0.5


def test_downstream_effects_match_truth(big):
    """Non-escaped cells of p vs controls: ratio e^{delta_g} * sum_k pihat_k e^{d_k z_pg}."""
    t = big.uns["simulation"]
    X, obs = dense(big), big.obs
    ctrl = (obs["perturbation"] == CONTROL).to_numpy()
    expressed = X[ctrl].mean(0) > 0.3
    z_all, observed, truth = [], [], []
    for p, target in enumerate(t["perturbations"]):
        mine = t["guide_perturbation"] == target
        kd, share = t["guide_knockdown"][mine], t["guide_weight"][mine]
        genes = np.flatnonzero((t["effects"][p] != 0) & expressed)
        genes = genes[genes != t["target_index"][p]]
        if genes.size == 0:
            continue
        cells = ((obs["perturbation"] == target) & ~obs["escaped"]).to_numpy()
        full = t["effects"][p, genes] / (share * (1 - kd)).sum()  # z_pg, effect at full knockout
        guide_codes = obs["guide"].astype(str).to_numpy()[cells]
        pihat = np.array([(guide_codes == g).mean() for g in t["guides"][mine]])
        expected = t["systematic_shift"][genes] + np.log(pihat @ np.exp(np.outer(1 - kd, full)))
        z_all.append(log_ratio_z(X[cells][:, genes], X[ctrl][:, genes], expected))
        observed.append(np.log(X[cells][:, genes].mean(0) / X[ctrl][:, genes].mean(0)))
        truth.append(t["effects"][p, genes] + t["systematic_shift"][genes])
    z_all = np.concatenate(z_all)
    assert z_all.size > 20 and np.max(np.abs(z_all)) < 4.5
    assert np.corrcoef(np.concatenate(observed), np.concatenate(truth))[0, 1] > 0.8


# ---------------------------------------------------------------- files and arguments


def test_refuses_to_overwrite_and_force_replaces(tmp_path):
    path = tmp_path / "sim.h5ad"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError, match=re.escape(str(path)) + ".*already exists.*force=True"):
        simulate(n_cells=100, n_genes=20, n_perturbations=2, path=path)
    assert path.read_bytes() == b"keep me"
    out = simulate(n_cells=100, n_genes=20, n_perturbations=2, path=path, force=True)
    assert out.shape == (100, 20)
    out.file.close()
    assert sorted(os.listdir(tmp_path)) == ["sim.h5ad"]


def test_path_that_is_a_folder_is_rejected(tmp_path):
    with pytest.raises(InputError, match="is a folder; give a file name"):
        simulate(n_cells=100, n_genes=20, n_perturbations=2, path=tmp_path)


def test_progress_bar_runs(capsys):
    simulate(n_cells=100, n_genes=20, n_perturbations=2, progress=True)
    assert "cell" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(n_cells=1), r"n_cells must be an integer >= 2; got 1"),
        (dict(n_cells=True), r"n_cells must be an integer >= 2; got True"),
        (dict(n_genes=10.0), r"n_genes must be an integer >= 2; got 10\.0"),
        (dict(n_perturbations=0), r"n_perturbations must be an integer >= 1 and <= 250"),
        (dict(n_perturbations=251), r"n_perturbations must be an integer >= 1 and <= 250 \(targets come "
         r"from the better-expressed half of n_genes\); got 251"),
        (dict(control_fraction=0.0), r"control_fraction must be a finite number in \(0, 1\)"),
        (dict(control_fraction=1.0), r"control_fraction must be a finite number in \(0, 1\)"),
        (dict(control_fraction=1e-5), r"control_fraction=1e-05 gives 0 control cells out of n_cells=2000"),
        (dict(escape_rate=1.0), r"escape_rate must be a finite number in \[0, 1\)"),
        (dict(escape_rate=np.nan), r"escape_rate must be a finite number in \[0, 1\); got nan"),
        (dict(systematic_shift=-0.1), r"systematic_shift must be a finite number in \[0, inf\]"),
        (dict(dispersion=0), r"dispersion must be a finite number in \(0, inf\]"),
        (dict(guides_per_perturbation=0), r"guides_per_perturbation must be an integer >= 1"),
        (dict(n_batches=0), r"n_batches must be an integer >= 1"),
        (dict(dtype="float16"), r"dtype must be one of float32, float64, int32, int64; got 'float16'"),
        (dict(seed=-1), r"seed must be an integer in \[0, 2\*\*63\) or a numpy\.random\.Generator; got -1"),
        (dict(seed="0"), r"seed must be an integer .* got '0'"),
        (dict(chunk_size=0), r"chunk_size must be an integer >= 1; got 0"),
        (dict(n_threads=0), r"n_threads must be an integer >= 1; got 0"),
    ],
)
def test_bad_arguments_name_the_parameter_and_range(kwargs, message):
    with pytest.raises(InputError, match=message):
        simulate(**kwargs)


def test_disk_index_dtypes_agree_for_peers(tmp_path):
    """scipy sparse tools (used by scanpy) need indices and indptr of the same dtype."""
    path = tmp_path / "dtypes.h5ad"
    simulate(n_cells=500, n_genes=100, n_perturbations=5, seed=1, path=path).file.close()
    with h5py.File(path, "r") as fh:
        assert fh["X/indices"].dtype == fh["X/indptr"].dtype == np.int32
