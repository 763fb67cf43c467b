"""Exploit arms emitted block by block: equal to the in-memory cells, and to the arms' definitions.

References: ``_reference_cells`` below is the arms' construction written out on the whole
matrix at once (draws per perturbation in sorted order, then the edits column by column), as
the in-memory implementation did before the arms were streamed; the noise of
``variance_inflated`` is re-drawn here block by block from its documented generators. Exact
(bit-identical) comparisons throughout, except ``log1p_format``, whose mean response is summed
in another order here (relative 1e-12).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import shrinkpert
from shrinkpert.baselines import EXPLOITS, exploit_cells
from shrinkpert.baselines.arm_cells import NOISE_ROWS, arm_source, emitted_arm
from shrinkpert.errors import CountsError
from shrinkpert.evaluation.exploits import arm_results_vcc2026
from shrinkpert.metrics.vcc2026 import check_counts_vcc2026, score_vcc2026

CONTROL = "non-targeting"


@pytest.fixture(scope="module")
def screen():
    """A small screen whose labels name their targets, with more cells than one noise block."""
    adata = shrinkpert.datasets.simulate(1300, 60, 5, seed=3, control_fraction=0.3, n_batches=1,
                                         mean_expression=3.0, effect_sd=1.0)
    assert adata.n_obs > NOISE_ROWS
    return adata


@pytest.fixture(scope="module")
def path(screen, tmp_path_factory):
    out = tmp_path_factory.mktemp("arms") / "truth.h5ad"
    screen.write_h5ad(out)
    return out


def _reference_cells(adata, arm, seed):
    """The arm on the whole matrix at once (module docstring)."""
    labels = adata.obs["perturbation"].astype(str).to_numpy()
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    ctrl_rows = np.flatnonzero(labels == CONTROL)
    perts = sorted(set(labels[labels != CONTROL]))
    rng = np.random.default_rng(seed)
    out = X.tolil()
    genes = list(adata.var_names)
    panel = sorted({genes.index(p) for p in perts if p in genes})
    for p in perts:
        rows = np.flatnonzero(labels == p)
        drawn = X[ctrl_rows[rng.integers(0, ctrl_rows.size, size=rows.size)]].toarray()
        own = genes.index(p) if p in genes else -1
        for j in panel:
            if arm == "target_spike":
                drawn[:, j] = 0.0 if j == own else 4.0 * (drawn[:, j] + 1.0)
            elif arm == "target_only" and j == own:
                drawn[:, j] = X[rows][:, [j]].toarray().ravel()
        out[rows] = drawn
    return sp.csr_matrix(out), labels != CONTROL


def _same(a: sp.csr_matrix, b: sp.csr_matrix) -> None:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    a.sort_indices()
    b.sort_indices()
    assert a.dtype == b.dtype == np.float64
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    assert np.array_equal(a.data, b.data)


@pytest.mark.parametrize("arm", EXPLOITS)
def test_streamed_equals_in_memory(screen, path, arm):
    """Any read order of the emitted arm (from the file) gives exploit_cells' matrix, bit for bit
    (the count arms are emitted as float32, exact for counts; exploit_cells returns float64)."""
    whole = exploit_cells(screen, arm, seed=4)
    _same(exploit_cells(path, arm, seed=4).X, whole.X)
    cells = emitted_arm(arm_source(path, seed=4, chunk_size=97), arm)
    for step in (37, NOISE_ROWS, 500):
        with cells.open() as source:
            blocks = sp.vstack([b.values for b in source.blocks(step)], format="csr")
            assert blocks.dtype == (np.float64 if arm == "log1p_format" else np.float32)
            _same(blocks.astype(np.float64), whole.X)  # float32 holds the counts exactly
    assert whole.obs.equals(screen.obs)


def test_cells_follow_the_definitions(screen):
    """Target arms and control_paste as the whole-matrix construction; the noise from its generators."""
    for arm in ("target_spike", "control_paste", "target_only"):
        expect, _ = _reference_cells(screen, arm, 4)
        expect.eliminate_zeros()
        _same(exploit_cells(screen, arm, seed=4).X, expect)
    paste, perturbed = _reference_cells(screen, "control_paste", 4)
    paste.eliminate_zeros()
    paste.sort_indices()
    noisy = paste.copy()
    for b in range(-(-paste.shape[0] // NOISE_ROWS)):
        lo, hi = b * NOISE_ROWS, min((b + 1) * NOISE_ROWS, paste.shape[0])
        rng = np.random.default_rng([4, 1, b])
        at = np.concatenate([np.arange(noisy.indptr[i], noisy.indptr[i + 1]) for i in range(lo, hi) if perturbed[i]])
        gamma = rng.gamma(1.0, 1.0, size=at.size)
        noisy.data[at] = rng.poisson(noisy.data[at] * gamma)
    noisy.eliminate_zeros()
    _same(exploit_cells(screen, "variance_inflated", seed=4).X, noisy)
    # log1p_format: drawn cells times m_g / control mean, then log1p(1e4 c / L) per cell (controls: no scale)
    X = sp.csr_matrix(screen.X, dtype=np.float64).toarray()
    labels = screen.obs["perturbation"].astype(str).to_numpy()
    m = np.mean([X[labels == p].mean(axis=0) for p in sorted(set(labels[perturbed]))], axis=0)
    c = X[labels == CONTROL].mean(axis=0)
    scaled = paste.toarray() * np.where(perturbed[:, None], np.where(c > 0, m / np.where(c > 0, c, 1), 0.0), 1.0)
    expect = np.log1p(1e4 * scaled / scaled.sum(axis=1, keepdims=True))
    np.testing.assert_allclose(exploit_cells(screen, "log1p_format", seed=4).X.toarray(), expect, rtol=1e-12, atol=0)


def test_preset_scores_of_streamed_arms(screen, path):
    """arm_results_vcc2026 (streamed arms) scores what score_vcc2026 gives on the whole-matrix arms."""
    names = ["target_spike", "control_paste", "target_only", "variance_inflated", "log1p_format"]
    results, refused = arm_results_vcc2026(path, names, perturbation_key="perturbation", control=CONTROL, seed=4)
    for arm in names[:4]:
        ref = _reference_cells(screen, arm, 4)[0] if arm != "variance_inflated" else \
            exploit_cells(screen, arm, seed=4).X
        expect = score_vcc2026(_adata(ref, screen), screen)
        for name, values in expect.values.items():
            assert np.array_equal(results[arm].values[name], values, equal_nan=True), (arm, name)
    assert set(refused) == {"log1p_format"} and "non-integer values" in refused["log1p_format"]
    with pytest.raises(CountsError, match="non-integer values"):
        score_vcc2026(exploit_cells(screen, "log1p_format", seed=4), screen)
    # the streamed source keeps only the control cells' rows; the refusal is decided from the arm's values
    source = arm_source(path, seed=4)
    assert source.kept.shape[0] == int((screen.obs["perturbation"] == CONTROL).sum())
    check_counts_vcc2026(emitted_arm(source, "control_paste"))
    with pytest.raises(CountsError, match="pred contains non-integer values"):
        check_counts_vcc2026(emitted_arm(source, "log1p_format"))


def _adata(X, like):
    import anndata as ad

    return ad.AnnData(X, obs=like.obs.copy(), var=like.var.copy())
