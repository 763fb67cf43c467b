"""Rank metrics against brute-force definitions; the distance kernel against its NumPy twin."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from shrinkpert._numba import thread_limit
from shrinkpert.errors import GeneMismatchError, InputError
from shrinkpert.metrics import _distance_kernels as K
from shrinkpert.metrics import (
    centroid_accuracy,
    discrimination_score,
    normed_retrieval,
    perturbench_rank,
    perturbench_rank_transposed,
)

# ------------------------------------------------------------------------------------------
# NumPy twin of the kernel
# ------------------------------------------------------------------------------------------


def _twin_distance(q: np.ndarray, c: np.ndarray, w: np.ndarray, kind: int) -> float:
    if kind == K.L1:
        return float(np.sum(w * np.abs(q - c)))
    if kind == K.L2:
        return float(np.sqrt(np.sum(w * (q - c) ** 2)))
    if kind == K.COSINE:
        return 1.0 - float(np.sum(w * q * c) / np.sqrt(np.sum(w * q * q) * np.sum(w * c * c)))
    mq, mc = np.average(q, weights=w), np.average(c, weights=w)
    cov = np.sum(w * (q - mq) * (c - mc))
    return 1.0 - float(cov / np.sqrt(np.sum(w * (q - mq) ** 2) * np.sum(w * (c - mc) ** 2)))


def twin_pairwise(q: np.ndarray, c: np.ndarray, w: np.ndarray, kind: int) -> np.ndarray:
    out = np.empty((q.shape[0], c.shape[0]))
    for i in range(q.shape[0]):
        wi = w[0] if w.shape[0] == 1 else w[i]
        for j in range(c.shape[0]):
            out[i, j] = _twin_distance(q[i], c[j], wi, kind)
    return out


@pytest.mark.parametrize("kind", [K.L1, K.L2, K.COSINE, K.PEARSON])
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("layout", ["C", "F", "strided"])
def test_kernel_matches_numpy_twin(rng, kind, per_row, layout):
    q = rng.normal(size=(9, 23))
    c = rng.normal(size=(7, 23))
    w = rng.uniform(0, 2, size=(9 if per_row else 1, 23))
    expected = twin_pairwise(q, c, w, kind)
    if layout == "F":
        qk, ck = np.asfortranarray(q), np.asfortranarray(c)
    elif layout == "strided":
        qk, ck = np.repeat(q, 2, axis=1)[:, ::2], np.repeat(c, 2, axis=1)[:, ::2]
    else:
        qk, ck = q, c
    out = np.empty((9, 7))
    K.pairwise_distances(qk, ck, w, kind, out)
    # same sums in a different order: 1e-12 relative
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-13)


def test_kernel_is_deterministic_across_thread_counts(rng):
    q, c = rng.normal(size=(40, 50)), rng.normal(size=(40, 50))
    w = rng.uniform(size=(40, 50))
    outs = []
    for n in (1, 2):
        out = np.empty((40, 40))
        with thread_limit(n):
            K.pairwise_distances(q, c, w, K.PEARSON, out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_kernel_undefined_distances_are_nan():
    q = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    c = np.array([[1.0, 1.0, 1.0], [1.0, 2.0, 0.0]])
    w = np.ones((1, 3))
    out = np.empty((2, 2))
    K.pairwise_distances(q, c, w, K.COSINE, out)
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    K.pairwise_distances(q, c, w, K.PEARSON, out)
    assert np.isnan(out[0]).all() and np.isnan(out[1, 0]) and np.isfinite(out[1, 1])


# ------------------------------------------------------------------------------------------
# definitions, written out with loops
# ------------------------------------------------------------------------------------------


def _brute_rank(d: np.ndarray) -> np.ndarray:
    """Mid-rank of the diagonal in each row."""
    P = d.shape[0]
    out = np.empty(P)
    for p in range(P):
        others = np.delete(d[p], p)
        out[p] = np.sum(others < d[p, p]) + 0.5 * np.sum(others == d[p, p])
    return out


@pytest.fixture
def deltas(rng):
    truth = rng.normal(size=(15, 25)) * (rng.random((15, 25)) < 0.5)
    pred = truth + rng.normal(0, 0.8, size=truth.shape)
    return pred, truth


@pytest.mark.parametrize("metric", ["l1", "l2", "cosine", "pearson"])
def test_discrimination_score_definition(deltas, metric):
    pred, truth = deltas
    kind = {"l1": K.L1, "l2": K.L2, "cosine": K.COSINE, "pearson": K.PEARSON}[metric]
    d = twin_pairwise(pred, truth, np.ones((1, 25)), kind)
    expected = 1.0 - _brute_rank(d) / 15
    np.testing.assert_allclose(discrimination_score(pred, truth, metric=metric), expected, rtol=1e-12)
    np.testing.assert_allclose(perturbench_rank_transposed(pred, truth, metric=metric), 1.0 - expected, rtol=1e-12)


def test_exact_ties_count_one_half(deltas):
    pred, truth = deltas
    truth = truth.copy()
    truth[1] = truth[0]  # two perturbations with the same true effect
    d = discrimination_score(pred, truth, metric="l2")
    dist = np.linalg.norm(pred[0] - truth, axis=1)
    assert dist[0] == dist[1]
    closer = np.sum(dist < dist[0])
    assert d[0] == 1.0 - (closer + 0.5) / 15
    # cell-eval's argsort would give either 1 - closer/15 or 1 - (closer + 1)/15: ours is their mean


def test_target_gene_is_left_out_of_its_own_comparisons(deltas):
    pred, truth = deltas
    target = np.full(15, -1)
    target[[0, 4, 9]] = [3, 3, 11]
    ours = discrimination_score(pred, truth, metric="l1", target_index=target)
    for p in range(15):
        keep = np.arange(25) != target[p] if target[p] >= 0 else np.ones(25, bool)
        dist = np.abs(pred[p, keep] - truth[:, keep]).sum(axis=1)
        rank = np.sum(dist < dist[p])  # no ties in continuous data
        assert ours[p] == 1.0 - rank / 15
    # a strong true knockdown of the target that the prediction misses: excluded, it does not count
    knocked = truth.copy()
    knocked[0, 3] = -20.0
    assert discrimination_score(pred, knocked, metric="l1", target_index=target)[0] == ours[0]
    assert discrimination_score(pred, knocked, metric="l1")[0] < ours[0]


def test_perturbench_rank_definition_and_mode_collapse(deltas):
    pred, truth = deltas
    for metric, kind in (("cosine", K.COSINE), ("l2", K.L2)):
        d = twin_pairwise(truth, pred, np.ones((1, 25)), kind)  # row = true profile, column = prediction
        np.testing.assert_allclose(perturbench_rank(pred, truth, metric=metric), _brute_rank(d) / 15, rtol=1e-12)
    collapsed = np.tile(truth.mean(axis=0), (15, 1))
    np.testing.assert_array_equal(perturbench_rank(collapsed, truth, metric="l2"), np.full(15, 14 / 30))
    # the transposed rank does not see the collapse as ties (it ranks the true profiles)
    assert np.ptp(perturbench_rank_transposed(collapsed, truth, metric="l2")) > 0


def test_centroid_accuracy_matches_the_nir_loop(deltas):
    pred, truth = deltas
    d = np.linalg.norm(pred[:, None, :] - truth[None, :, :], axis=2)
    expected = [np.mean([d[i, i] < d[i, j] for j in range(15) if j != i]) for i in range(15)]
    np.testing.assert_allclose(centroid_accuracy(pred, truth), expected, rtol=1e-12)
    # ties count as failures (strict inequality), as in both sources
    truth2 = truth.copy()
    truth2[1] = truth2[0]
    assert centroid_accuracy(truth2, truth2)[0] == 13 / 14


def test_normed_retrieval_definition_and_txpert_conversion(deltas):
    pred, truth = deltas
    r = np.array([[stats.pearsonr(pred[i], truth[j])[0] for j in range(15)] for i in range(15)])
    ours = normed_retrieval(pred, truth)
    expected = [np.sum(np.delete(r[i], i) < r[i, i]) / 14 for i in range(15)]
    np.testing.assert_allclose(ours, expected, rtol=1e-12)
    # TxPert divides the ascending-sort position by P instead of P - 1
    txpert = [sorted(r[i]).index(r[i, i]) / 15 for i in range(15)]
    np.testing.assert_allclose(ours * 14 / 15, txpert, rtol=1e-12)


def test_undefined_distances_give_nan_rows(deltas):
    pred, truth = deltas
    pred = pred.copy()
    pred[2] = 0.0  # "no change" prediction: cosine and correlation undefined
    for out in (discrimination_score(pred, truth, metric="cosine"), normed_retrieval(pred, truth)):
        assert np.isnan(out[2]) and np.isfinite(np.delete(out, 2)).all()
    assert np.isfinite(discrimination_score(pred, truth, metric="l1")).all()


def test_rank_input_errors(deltas):
    pred, truth = deltas
    with pytest.raises(InputError, match="at least 2 perturbations"):
        discrimination_score(pred[:1], truth[:1])
    with pytest.raises(InputError, match="metric='manhattan' is not supported"):
        discrimination_score(pred, truth, metric="manhattan")
    with pytest.raises(InputError, match="target_index must be 15 integers"):
        discrimination_score(pred, truth, target_index=np.zeros(15))
    with pytest.raises(InputError, match="target_index must be 15 integers"):
        centroid_accuracy(pred, truth, target_index=[1, 2])
    with pytest.raises(InputError, match="must lie in \\[-1, 24\\]"):
        centroid_accuracy(pred, truth, target_index=np.full(15, 25))
    with pytest.raises(GeneMismatchError, match="25 genes"):
        normed_retrieval(pred, truth[:, :3])
    with pytest.raises(InputError, match="expected \\(n_perturbations, n_genes\\)"):
        perturbench_rank(pred[0], truth[0])
