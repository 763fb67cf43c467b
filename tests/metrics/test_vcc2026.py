"""VCC 2026 preset: parity with cell-eval2 0.20.0, closed-form cases, the jackknife kernel twin, errors.

Tolerance for parity: 1e-9 absolute on every per-perturbation member and on the aggregate of
``expr_mse_unbiased_capped_norm`` (both tools evaluate the same float64 formulas; they differ in
summation order only, ~1e-15 here).
"""

from __future__ import annotations

import dataclasses
import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shrinkpert as spkg
from shrinkpert.errors import CountsError, GeneMismatchError, InputError, MissingKeyError
from shrinkpert.metrics._vcc2026_kernels import jackknife_base, jackknife_block, series_terms
from shrinkpert.metrics.vcc2026 import MEMBERS, score_vcc2026
from shrinkpert.metrics.vcc2026_output import to_cell_eval2

CONTROL = "non-targeting"


def _pair(seed: int):
    """A measured screen and a noisy 'prediction' of it (same cells, Poisson-resampled)."""
    truth = spkg.datasets.simulate(
        900, 60, 4, seed=seed, mean_expression=3.0, effect_sd=2.0, n_affected_genes=20,
        escape_rate=0.0, weak_guide_fraction=0.0,
    )
    X = np.asarray(truth.X.toarray() if sp.issparse(truth.X) else truth.X, dtype=np.float64)
    X[:, [0, 1]] = 0  # all-zero genes
    labels = truth.obs["perturbation"].astype(str).to_numpy()
    targets = set(labels)
    # a null perturbation: 25 control cells relabelled with a measured, untargeted gene
    null_gene = next(g for g in truth.var_names[::-1] if g not in targets)
    labels[np.flatnonzero(labels == CONTROL)[:25]] = null_gene
    obs = pd.DataFrame({"perturbation": labels}, index=truth.obs_names)
    var = pd.DataFrame(index=truth.var_names)
    real = ad.AnnData(sp.csr_matrix(X.astype(np.float32)), obs=obs, var=var)
    rng = np.random.default_rng(seed + 100)
    Y = rng.poisson(X * rng.uniform(0.5, 1.5, size=X.shape[1])).astype(np.float32)
    pred = ad.AnnData(sp.csr_matrix(Y), obs=obs.copy(), var=var.copy())
    return pred, real, null_gene


@pytest.fixture(scope="module")
def pairs():
    return [_pair(seed) for seed in (1, 2, 3)]


@pytest.mark.peer
def test_members_equal_cell_eval2(pairs, caplog, tmp_path):
    pytest.importorskip("cell_eval2")
    pytest.importorskip("pdex")
    from cell_eval2.config import EvalConfig
    from cell_eval2.run import aggregate_metrics_wide, compute_metrics

    cfg = dataclasses.replace(EvalConfig.from_preset("vcc2026"), pert_col="perturbation", cache_strict=False)
    caplog.set_level(logging.ERROR)
    for i, (pred, real, null_gene) in enumerate(pairs):
        ours = score_vcc2026(pred, real)
        # the scenario has what it should: a perturbation with no significant gene
        k = ours.perturbations.get_loc(null_gene)
        assert not (ours.de_truth.q[k] < 0.05).any()
        peer = compute_metrics(pred, real, config=cfg)
        peer_wide = peer.to_pandas().pivot(index="perturbation", columns="metric", values="value")
        table = ours.table()
        for name in table.columns:
            theirs = peer_wide[name].reindex(table.index) if name in peer_wide else pd.Series(np.nan, index=table.index)
            np.testing.assert_array_equal(np.isnan(table[name]), np.isnan(theirs), err_msg=name)
            np.testing.assert_allclose(table[name], theirs, rtol=0, atol=1e-9, err_msg=name)
        agg = aggregate_metrics_wide(peer, metrics=list(peer_wide.columns) + ["expr_mse_unbiased_capped_norm"])
        agg = agg.to_pandas().set_index("statistic")
        assert ours.aggregate["expr_mse_unbiased_capped_norm"] == pytest.approx(
            agg.loc["mean", "expr_mse_unbiased_capped_norm"], abs=1e-9)
        # the written files have cell-eval2's rows, columns and statistics
        folder = to_cell_eval2(ours, tmp_path / f"out{i}")
        written = pd.read_csv(folder / "agg_results.csv").set_index("statistic")
        assert list(written.columns) == list(agg.columns)
        np.testing.assert_allclose(written.to_numpy(), agg[written.columns].to_numpy(), rtol=1e-9, atol=1e-12)
        rows = pd.read_csv(folder / "results.csv")
        assert sorted(zip(rows.perturbation, rows.metric)) == sorted(zip(peer["perturbation"], peer["metric"]))


def test_exact_copy_scores_perfectly(pairs):
    _, real, _ = pairs[0]
    res = score_vcc2026(real.copy(), real)
    table = res.table()
    assert (table["de_wilcoxon_sig_jaccard"] == 1.0).all()
    assert (table["de_wilcoxon_lfc_nmae"].dropna() == 0.0).all()
    assert (table["pds_cosine"] == 1.0).all()
    fid = table["de_wilcoxon_direction_fidelity_yield_raw"]
    assert (fid.dropna() == 1.0).all()
    # a copy's error is pure (negative) sampling correction: -(C_pred + C_real)/|G| < 0
    assert (table["expr_mse_unbiased_capped"] < 0).all()


def _twin_jackknife(X: np.ndarray, codes: np.ndarray, n_groups: int, ts: float) -> np.ndarray:
    """Literal delete-one jackknife of log1p(ts * P / S) per group (dense loops)."""
    out = np.zeros(n_groups)
    for p in range(n_groups):
        rows = X[codes == p]
        n = len(rows)
        if n < 2 or rows.sum() == 0:
            continue
        loo = np.array([np.log1p(ts * (rows.sum(0) - r) / (rows.sum() - r.sum())) for r in rows])
        out[p] = (n - 1) / n * ((loo - loo.mean(0)) ** 2).sum()
    return out


@pytest.mark.parametrize("n_parts", [1, 2])
def test_jackknife_kernels_match_twin(n_parts):
    """Series for zero counts + exact stored values (groups 0-2) and the literal path (group 3, two
    cells: a cell share above MAX_SHARE) against the literal delete-one twin."""
    rng = np.random.default_rng(7)
    X = rng.poisson(2.0, size=(60, 7)).astype(np.float64)
    X[:, 3] = 0  # a gene no cell expresses
    codes = rng.integers(-1, 3, size=60).astype(np.int64)
    codes[:2] = 3
    X[5] = 0  # an empty cell
    n_groups = 4
    csr = sp.csr_matrix(X)
    lib = X.sum(1)
    sums = np.stack([X[codes == p].sum(0) for p in range(n_groups)])
    totals = np.array([lib[codes == p].sum() for p in range(n_groups)])
    bulk = np.log1p(sums * (5e4 / sums.sum(1))[:, None])
    share = lib / totals[np.maximum(codes, 0)]
    max_share = np.array([share[codes == p].max() for p in range(n_groups)])
    terms = series_terms(max_share)
    assert (terms[:3] > 0).all() and terms[3] == 0
    moments = np.array([[np.sum(share[codes == p] ** m) for m in range(2 * terms.max() + 2)]
                        for p in range(n_groups)])
    alpha = 5e4 * sums / totals[:, None]
    delta = np.log1p(alpha) - bulk
    n = np.bincount(codes[codes >= 0], minlength=n_groups).astype(np.float64)
    s1, s2 = np.zeros((n_groups, 7)), np.zeros((n_groups, 7))
    jackknife_block(csr.indptr.astype(np.int64), csr.indices.astype(np.int64), csr.data, codes, lib, sums, totals,
                    bulk, alpha, delta, 5e4, terms, n_parts, s1, s2)
    jackknife_base(alpha, delta, moments, n, terms, s1, s2)
    got = (n - 1) / n * (s2 - s1**2 / n[:, None]).sum(1)
    np.testing.assert_allclose(got, _twin_jackknife(X, codes, n_groups, 5e4), rtol=1e-12)  # measured 2e-15


def test_backed_file_and_dense_give_same_numbers(pairs, tmp_path):
    pred, real, _ = pairs[1]
    base = score_vcc2026(pred, real)
    path = tmp_path / "real.h5ad"
    csc = real.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(path)
    dense_pred = pred.copy()
    dense_pred.X = dense_pred.X.toarray()
    other = score_vcc2026(dense_pred, path, chunk_size=7)
    for name, values in base.values.items():
        np.testing.assert_allclose(other.values[name], values, rtol=1e-12, atol=1e-14, err_msg=name)
    frame = base.to_frame()
    assert list(frame.columns) == ["perturbation", "metric", "value"]


def _tiny():
    X = np.array([[1, 2, 0], [2, 1, 1], [1, 1, 2], [0, 3, 1], [4, 0, 2], [1, 1, 1], [2, 2, 0]], dtype=np.float32)
    obs = pd.DataFrame({"perturbation": [CONTROL, CONTROL, CONTROL, "g1", "g1", "g2", "g2"]},
                       index=[f"c{i}" for i in range(7)])
    return ad.AnnData(sp.csr_matrix(X), obs=obs, var=pd.DataFrame(index=["g0", "g1", "g2"]))


@pytest.mark.parametrize(
    ("edit", "error", "match"),
    [
        (lambda a: a.X.data.__setitem__(0, 1.5), CountsError, "pred contains non-integer values; the vcc2026 "
         "preset needs raw integer counts"),
        (lambda a: a.X.data.__setitem__(0, -1.0), CountsError, "pred contains negative values; the vcc2026 preset"),
        (lambda a: a.X.data.__setitem__(0, np.nan), CountsError, "pred contains NaN or infinite values"),
        (lambda a: a.X.data.__setitem__(0, 2e6), CountsError, "pred has 1 cell\\(s\\) with more than 1e\\+06 "
         "counts .* caps counts per cell at 1e6"),
    ],
)
def test_bad_counts(edit, error, match):
    truth = _tiny()
    pred = truth.copy()
    edit(pred)
    with pytest.raises(error, match=match):
        score_vcc2026(pred, truth)


def test_bad_panels():
    truth = _tiny()
    missing = truth[truth.obs["perturbation"] != "g2"].copy()
    with pytest.raises(InputError, match="1 measured perturbation\\(s\\) missing from pred .* The vcc2026 preset "
                       "scores every measured perturbation"):
        score_vcc2026(missing, truth)
    extra = truth.copy()
    extra.obs["perturbation"] = extra.obs["perturbation"].astype(str).replace({"g2": "g9"})
    with pytest.raises(InputError, match="that truth does not have"):
        score_vcc2026(extra, truth)
    with pytest.warns(UserWarning, match="not unique"):
        dup = ad.concat([truth, truth[:1]])
    with pytest.raises(InputError, match="pred: Cell names are duplicated"):
        score_vcc2026(dup, truth)
    renamed = truth.copy()
    renamed.var_names = ["a", "b", "c"]
    with pytest.raises(GeneMismatchError, match="different genes"):
        score_vcc2026(renamed, truth)
    no_ctrl = truth[truth.obs["perturbation"] != CONTROL].copy()
    with pytest.raises(MissingKeyError, match="truth: Control label 'non-targeting' is not in"):
        score_vcc2026(truth, no_ctrl)
    few = truth[1:].copy()
    with pytest.raises(InputError, match="truth: the control 'non-targeting' has 2 cells; at least 3"):
        score_vcc2026(truth, few)


def test_writer_layout(pairs, tmp_path):
    import json

    from shrinkpert.errors import OutputExistsError

    pred, real, _ = pairs[2]
    result = score_vcc2026(pred, real)
    folder = to_cell_eval2(result, tmp_path / "out")
    rows = pd.read_csv(folder / "results.csv")
    assert list(rows.columns) == ["perturbation", "metric", "value"]
    nmae = result.table()["de_wilcoxon_lfc_nmae"]
    assert (rows.metric == "de_wilcoxon_lfc_nmae").sum() == nmae.notna().sum()
    agg = pd.read_csv(folder / "agg_results.csv").set_index("statistic")
    assert list(agg.index) == ["count", "null_count", "mean", "std", "min", "max", "median"]
    assert list(agg.columns) == sorted(agg.columns)
    for member in MEMBERS:
        assert agg.loc["mean", member] == pytest.approx(result.aggregate[member], rel=1e-12)
    values = result.table()["pds_cosine"]
    assert agg.loc["std", "pds_cosine"] == pytest.approx(values.std(ddof=1), rel=1e-12)
    meta = json.loads((folder / "run_meta.json").read_text())
    assert meta["preset"] == "vcc2026" and meta["metrics"] == list(MEMBERS)
    with pytest.raises(OutputExistsError, match="not empty"):
        to_cell_eval2(result, folder)
