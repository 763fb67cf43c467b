"""Relationship recall: closed forms, a brute-force loop, the permutation null, validation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from shrinkpert.biology import load_relationships, relationship_recall
from shrinkpert.biology.recall import _Tails
from shrinkpert.errors import InputError, ShrinkpertWarning

NAMES = [f"G{i}" for i in range(16)]


def _loop_cosine(x):
    n = len(x)
    out = {}
    for i, j in itertools.combinations(range(n), 2):
        dot = math.fsum(a * b for a, b in zip(x[i], x[j]))
        out[(i, j)] = dot / math.sqrt(math.fsum(a * a for a in x[i]) * math.fsum(b * b for b in x[j]))
    return out


def tail_parts(values, sorted_all, alpha):
    """Reference: the overlap of each value's tie-group rank interval with the two tails."""
    n = sorted_all.size
    lo = np.searchsorted(sorted_all, values, side="left").astype(float)
    hi = np.searchsorted(sorted_all, values, side="right").astype(float)
    bottom = np.clip(np.minimum(hi, alpha * n) - lo, 0, None) / (hi - lo)
    top = np.clip(hi - np.maximum(lo, n - alpha * n), 0, None) / (hi - lo)
    return bottom, top


def tail_credit(values, sorted_all, alpha):
    bottom, top = tail_parts(values, sorted_all, alpha)
    return bottom + top


def test_tail_credit_closed_forms():
    v = np.arange(1.0, 7.0)  # N = 6, alpha = 0.25: each tail holds 1.5 pairs
    np.testing.assert_array_equal(tail_credit(v, v, 0.25), [1, 0.5, 0, 0, 0.5, 1])
    tied = np.array([1.0, 1.0, 2.0, 3.0, 4.0, 4.0])  # tie groups straddle both tail edges
    np.testing.assert_array_equal(tail_credit(tied, tied, 0.25), [0.75, 0.75, 0, 0, 0.75, 0.75])
    bottom, top = tail_parts(tied, tied, 0.25)
    np.testing.assert_array_equal(bottom, [0.75, 0.75, 0, 0, 0, 0])
    np.testing.assert_array_equal(top, [0, 0, 0, 0, 0.75, 0.75])
    rng = np.random.default_rng(0)
    for alpha in (0.05, 0.1, 0.5):
        v = np.sort(np.round(rng.normal(size=301), 1))  # many ties
        c = tail_credit(v, v, alpha)
        assert math.isclose(c.sum(), 2 * alpha * v.size, rel_tol=1e-12)  # credits sum to 2 alpha N
        f = _Tails(rng.permutation(v), alpha)  # the O(N) edge form used by the implementation agrees
        np.testing.assert_array_equal(f(v), c)
        for got, want in zip(f.parts(v), tail_parts(v, v, alpha)):
            np.testing.assert_array_equal(got, want)
    assert (tail_credit(np.ones(10), np.ones(10), 0.05) == 0.1).all()  # all tied: chance exactly
    assert (_Tails(np.ones(10), 0.05)(np.ones(10)) == 0.1).all()
    for alpha, v in ((0.25, np.arange(1.0, 7.0)), (0.25, np.array([1.0, 1.0, 2.0, 3.0, 4.0, 4.0]))):
        np.testing.assert_array_equal(_Tails(v[::-1].copy(), alpha)(v), tail_credit(v, v, alpha))


def test_recall_equals_a_brute_force_loop_without_ties():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 12))
    known = [("G0", "G1"), ("G2", "G3"), ("G4", "G9"), ("G5", "G15"), ("G7", "G8"), ("G11", "G12")]
    rel = pd.DataFrame(known, columns=["gene_a", "gene_b"])
    res = relationship_recall(pd.DataFrame(x, index=NAMES), rel, align="none", n_permutations=50)
    sims = _loop_cosine(x.tolist())
    ranked = sorted(sims, key=sims.get)  # N = 120 pairs, 5% = 6 pairs per tail exactly
    bottom, top = set(ranked[:6]), set(ranked[-6:])
    pairs = [tuple(sorted((NAMES.index(a), NAMES.index(b)))) for a, b in known]
    assert res.recall == pytest.approx(sum(p in bottom or p in top for p in pairs) / 6, abs=1e-15)
    assert res.recall_top == pytest.approx(sum(p in top for p in pairs) / 6, abs=1e-15)
    assert res.recall_bottom == pytest.approx(sum(p in bottom for p in pairs) / 6, abs=1e-15)
    assert res.n_pairs == 6 and res.n_perturbations == 16 and res.n_testable == 12


def test_planted_pairs_are_recalled_with_a_small_p_value():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 30))
    names = [f"G{i}" for i in range(40)]
    for k in range(0, 10, 2):
        x[k + 1] = x[k] + 0.05 * rng.normal(size=30)
    rel = pd.DataFrame({"gene_a": names[0:10:2], "gene_b": names[1:10:2]})
    res = relationship_recall(pd.DataFrame(x, index=names), rel, n_permutations=999, seed=1)
    assert res.recall == 1.0 and res.recall_top == 1.0
    assert res.p_value == pytest.approx(1 / 1000)
    assert res.null_mean == pytest.approx(0.1, abs=4 * res.null_sd / np.sqrt(999))
    assert res.null_low <= res.null_mean <= res.null_high
    frame = res.to_frame()
    assert {"recall", "null_mean", "p_value", "null_low", "null_high", "source"} <= set(frame.columns)
    assert res.per_perturbation.loc["G0", "recall"] == 1.0 and np.isnan(res.per_perturbation.loc["G20", "recall"])


def test_mean_response_baseline_scores_chance_exactly():
    row = np.random.default_rng(5).normal(size=20)
    x = pd.DataFrame(np.tile(row, (12, 1)), index=NAMES[:12])
    rel = pd.DataFrame({"gene_a": ["G0", "G2", "G4"], "gene_b": ["G1", "G3", "G10"]})
    res = relationship_recall(x, rel, n_permutations=20)
    assert res.recall == pytest.approx(0.1, abs=1e-15)
    assert res.null_mean == pytest.approx(0.1, abs=1e-15) and res.null_sd == pytest.approx(0.0, abs=1e-15)
    assert res.p_value == 1.0


def test_permutation_null_matches_a_loop_over_the_same_permutations():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(16, 5))
    rel = pd.DataFrame({"gene_a": ["G0", "G2", "G4", "G6"], "gene_b": ["G1", "G3", "G5", "G7"]})
    res = relationship_recall(pd.DataFrame(x, index=NAMES), rel, align="none", n_permutations=300, seed=11)
    # the same permutations, drawn the way the implementation documents, scored one by one
    sims = _loop_cosine(x.tolist())
    ranked = sorted(sims.values())
    credit = {k: float(tail_credit(np.array([v]), np.array(ranked), 0.05)[0]) for k, v in sims.items()}
    perms = np.random.default_rng(11).permuted(np.tile(np.arange(16), (300, 1)), axis=1)
    null = []
    for perm in perms:
        vals = [credit[tuple(sorted((perm[NAMES.index(a)], perm[NAMES.index(b)])))] for a, b in
                rel[["gene_a", "gene_b"]].to_numpy()]
        null.append(sum(vals) / len(vals))
    null = np.array(null)
    assert res.null_mean == pytest.approx(null.mean(), abs=1e-12)
    assert res.null_sd == pytest.approx(null.std(ddof=1), abs=1e-12)
    assert res.p_value == pytest.approx((1 + np.sum(null >= res.recall - 1e-12)) / 301)


def test_seeded_and_order_free():
    rng = np.random.default_rng(7)
    x = pd.DataFrame(rng.normal(size=(16, 6)), index=NAMES)
    rel = pd.DataFrame({"gene_a": ["G0", "G2", "G9"], "gene_b": ["G1", "G3", "G4"]})
    a = relationship_recall(x, rel, seed=3, n_permutations=100)
    b = relationship_recall(x, rel, seed=3, n_permutations=100)
    assert a.to_frame().equals(b.to_frame())
    shuffled = relationship_recall(x.iloc[::-1], rel.iloc[::-1], seed=3, n_permutations=100)
    assert shuffled.recall == a.recall  # the statistic does not depend on row order


def test_targets_ensembl_ids_and_zero_profiles():
    x = pd.DataFrame(np.random.default_rng(8).normal(size=(4, 5)), index=["g1", "g2", "g3", "g4"])
    x.iloc[3] = 0.0
    rel = pd.DataFrame({"gene_a": ["STAT1", "STAT1"], "gene_b": ["JAK2", "IRF1"]})
    targets = {"g1": "ENSG00000115415", "g2": "JAK2", "g3": "MYC", "g4": "IRF1"}
    with pytest.warns(ShrinkpertWarning, match="1 perturbation\\(s\\) have an all-zero aligned profile"):
        res = relationship_recall(x, rel, targets=targets, n_permutations=10)
    assert res.n_pairs == 1  # STAT1-JAK2; the IRF1 perturbation has no profile


def test_input_errors():
    x = pd.DataFrame(np.random.default_rng(9).normal(size=(4, 3)), index=["A", "B", "C", "D"])
    rel = pd.DataFrame({"gene_a": ["A"], "gene_b": ["B"]})
    with pytest.raises(InputError, match="threshold must be in \\(0, 0.5\\]"):
        relationship_recall(x, rel, threshold=0.7)
    with pytest.raises(InputError, match="n_permutations must be >= 1"):
        relationship_recall(x, rel, n_permutations=0)
    with pytest.raises(InputError, match="No known pair has both genes perturbed"):
        relationship_recall(x, pd.DataFrame({"gene_a": ["X"], "gene_b": ["Y"]}))
    with pytest.raises(InputError, match="columns gene_a, gene_b"):
        relationship_recall(x, pd.DataFrame({"a": ["A"], "b": ["B"]}))
    with pytest.raises(InputError, match="Several perturbations target the same gene"):
        relationship_recall(x, rel, targets={"A": "STAT1", "B": "STAT1"})


def test_a_bundled_set_can_be_named():
    rel = load_relationships("reactome")
    genes = pd.unique(rel[["gene_a", "gene_b"]].to_numpy().ravel())[:40]
    x = pd.DataFrame(np.random.default_rng(10).normal(size=(40, 8)), index=genes)
    a = relationship_recall(x, "reactome", n_permutations=20)
    b = relationship_recall(x, rel, n_permutations=20)
    assert a.to_frame().equals(b.to_frame()) and a.params["source"] == "reactome"
