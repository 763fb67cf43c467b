"""TRADE's subset refits take the likelihood columns they share with the main fit from it
(effects.impact, effects._impact_kernels.uniform_lik_rows_from)."""

from __future__ import annotations

import math

import numpy as np
from scipy import special

from shrinkpert.effects import _impact_kernels as IK
from shrinkpert.effects import impact


def perturbation(rng, n):
    se = rng.uniform(0.05, 0.6, n)
    beta = np.where(rng.random(n) < 0.2, rng.normal(0, 1.0, n), 0.0) + se * rng.normal(size=n)
    return beta, se


def significant(beta, se):
    return 2 * special.ndtr(-np.abs(beta / se)) < 0.05 / beta.size


def scaled_twin(M):
    """NumPy twin of the kernel's row scaling: M / row max, values below 1e-200 stored as 0."""
    mx = M.max(axis=1)
    L = M * (1.0 / mx)[:, None]
    return np.where(L > 1e-200, L, 0.0), np.array([math.log(v) for v in mx])  # libm's log, as the kernel


def test_shared_columns_kernel_matches_its_numpy_twin():
    rng = np.random.default_rng(21)
    x, s = perturbation(rng, 300)
    grange = (float(x.min()), float(x.max()))
    a, b = impact._components_for(x, s, grange)
    none = np.full(a.size, -1, dtype=np.int64)
    D0, L0, rm0 = np.empty((x.size, a.size)), np.empty((x.size, a.size)), np.empty(x.size)
    IK.uniform_lik_rows_from(x, s, a, b, none, D0, none, D0, L0, rm0)
    L0_twin, rm0_twin = scaled_twin(D0)
    np.testing.assert_array_equal(L0, L0_twin)
    np.testing.assert_array_equal(rm0, rm0_twin)
    sig = significant(x, s)
    assert 0 < sig.sum() < x.size
    kinds = set()
    for part in (sig, ~sig):
        rows = np.flatnonzero(part)
        xc, sc = x[rows], s[rows]
        ac, bc = impact._components_for(xc, sc, grange)
        src = impact._shared_columns((a, b), (ac, bc))
        kinds |= {bool(v) for v in src >= 0}
        # the columns are matched on identical components
        np.testing.assert_array_equal(ac[src >= 0], a[src[src >= 0]])
        np.testing.assert_array_equal(bc[src >= 0], b[src[src >= 0]])
        # direct computation: the unscaled densities of the subset, and its scaled likelihood
        nc = np.full(ac.size, -1, dtype=np.int64)
        Dc = np.empty((rows.size, ac.size))
        direct, rm_direct = np.empty_like(Dc), np.empty(rows.size)
        IK.uniform_lik_rows_from(xc, sc, ac, bc, nc, Dc, nc, Dc, direct, rm_direct)
        # the twin: shared columns gathered from the main fit's densities in NumPy
        M = np.where(src >= 0, D0[rows][:, np.maximum(src, 0)], Dc)
        L_twin, rm_twin = scaled_twin(M)
        Lc, rmc = np.empty_like(Dc), np.empty(rows.size)
        IK.uniform_lik_rows_from(xc, sc, ac, bc, src, D0, rows, Lc, Lc, rmc)
        np.testing.assert_array_equal(Lc, L_twin)
        np.testing.assert_array_equal(rmc, rm_twin)
        # and the copy is the value the kernel computes itself, bit for bit
        np.testing.assert_array_equal(Lc, direct)
        np.testing.assert_array_equal(rmc, rm_direct)
    assert kinds == {True, False}  # both shared and recomputed columns were exercised


def plan_problems(rng, n_perturbations, n_genes):
    problems, parents = [], []
    no_exclusion = np.zeros(n_genes, dtype=bool)
    for _ in range(n_perturbations):
        x, s = perturbation(rng, n_genes)
        impact._plan(x, s, impact._z_pvalue(x, s), no_exclusion, model_significant=True, alpha=0.05,
                     max_abs_effect=10.0, problems=problems, parents=parents)
    return problems, parents


def test_fits_with_shared_columns_equal_the_separate_fits():
    """Grouped by perturbation (shared likelihood columns) or each problem alone: the same
    weights to the last bit; the subsets' log likelihoods are not computed."""
    rng = np.random.default_rng(22)
    problems, parents = plan_problems(rng, 3, 250)
    assert len(problems) > 6 and sum(p is not None for p in parents) > 3
    alone = impact._fit_uniform_mixtures(problems)
    shared = impact._fit_uniform_mixtures(problems, parents)
    for (x, s, _), link, one, two in zip(problems, parents, alone, shared):
        np.testing.assert_array_equal(one[0], two[0])
        np.testing.assert_array_equal(one[1], two[1])
        np.testing.assert_array_equal(one[2], two[2])
        assert one[4] == two[4]
        if link is None:
            assert two[3] == one[3] and math.isfinite(two[3])
        else:
            p, rows = link
            np.testing.assert_array_equal(problems[p][0][rows], x)
            assert math.isnan(two[3])
    # one perturbation: too few groups for the threads, so no sharing; same fits
    n_first = 1 + sum(1 for link in parents[1:] if link is not None and link[0] == 0)
    single = impact._fit_uniform_mixtures(problems[:n_first], parents[:n_first])
    for one, two in zip(alone[:n_first], single):
        np.testing.assert_array_equal(one[0], two[0])


def test_hessian_pass_matches_the_objective_pass_and_its_numpy_twin():
    """mix-SQP's Hessian-only pass (used where f and g are already known) gives the Hessian of
    the full pass bit for bit; both agree with the NumPy formula (every s-th row when
    subsampled)."""
    from shrinkpert.effects import _mixture_kernels as MK

    rng = np.random.default_rng(23)
    n, K, chunk = 5000, 12, 1024
    L = rng.random((n, K)) ** 3
    pen = np.zeros(K)
    pen[0] = 2.0  # a Dirichlet term on the diagonal
    x = rng.random(K)
    x[[3, 7]] = 0.0
    x /= x.sum()
    idx = np.array([0, 1, 2, 3, 5, 6, 8, 9, 10, 11, 4, 7])  # m > 8: subsampled when approx
    nch = (n + chunk - 1) // chunk
    for m in (6, 12):
        for approx in (False, True):
            for parallel in (False, True):
                bufs = [(np.empty((nch, K)), np.empty((nch, K, K)), np.empty(nch)) for _ in range(2)]
                g, H_full, H_only = np.empty(K), np.zeros((K, K)), np.zeros((K, K))
                MK.objective_pass(L, pen, x, 0.0, idx, m, True, approx, parallel, chunk, *bufs[0], g, H_full)
                MK.hessian_pass(L, pen, x, 0.0, idx, m, approx, parallel, chunk, *bufs[1], H_only)
                np.testing.assert_array_equal(H_only[:m, :m], H_full[:m, :m])
                stride = n // 2048 if approx and m > 8 else 1
                rows = np.arange(0, n, stride)
                Z = L[rows][:, idx[:m]] / (L[rows] @ x)[:, None]
                twin = stride * Z.T @ Z
                twin[np.diag_indices(m)] += np.where(idx[:m] == 0, pen[0] / x[0] ** 2, 0.0)
                twin /= n + pen.sum()
                np.testing.assert_allclose(H_only[:m, :m], twin, rtol=1e-12)


def test_blocks_fitted_while_the_next_is_planned_give_the_same_table(monkeypatch):
    """Perturbations go to the kernel in blocks, each fitted in a worker thread while the next
    block is planned: any block size gives the same table, rows in input order."""
    import pandas as pd
    from types import SimpleNamespace

    rng = np.random.default_rng(24)
    pairs = [perturbation(rng, 150) for _ in range(5)]
    effects = SimpleNamespace(effect=np.array([b for b, _ in pairs]), std_error=np.array([s for _, s in pairs]),
                              perturbations=pd.Index(list("ABCDE")), genes=pd.RangeIndex(150))
    whole = impact.transcriptome_impact(effects)
    monkeypatch.setattr(impact, "_BLOCK", 2)
    blocked = impact.transcriptome_impact(effects)
    pd.testing.assert_frame_equal(blocked, whole)
    assert list(blocked.index) == list("ABCDE") and blocked["converged"].all()
