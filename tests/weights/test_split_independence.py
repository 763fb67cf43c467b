"""Split independence as a tested property.

For ``shrunken``, ``population``, ``limma_t`` and ``uniform`` weights and for deltas against the
control or a population reference, a perturbation's values are bit-identical whatever the other
perturbations and the train/test split. For ``deg_rest`` weights and perturbed-centroid deltas
they change with the split (``validation/split_dependence.py`` measures by how much).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import shrinkpert
from shrinkpert.errors import ShrinkpertWarning
from shrinkpert.stats.group import GroupStatistics
from shrinkpert.weights import compute_deltas, gene_weights

from .conftest import shrink_per_perturbation

N_SPLITS = 4


def splits(perts, seed=7):
    rng = np.random.default_rng(seed)
    for _ in range(N_SPLITS):
        order = rng.permutation(perts)
        k = int(rng.integers(4, len(perts) - 4))
        yield sorted(order[:k]), sorted(order[k:])  # (train, test)


def quiet(fn, *args, **kwargs):
    """Run ``fn`` keeping only the uniform-fallback warnings of null perturbations out of the way."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*all-zero", category=ShrinkpertWarning)
        return fn(*args, **kwargs)


def rows(result, labels):
    return np.asarray(result.values)[result.perturbations.get_indexer(labels)]


@pytest.fixture(scope="module")
def full(papalexi, shrunk, effects, population):
    return {
        "shrunken": quiet(gene_weights, shrunk, method="shrunken"),
        "population": quiet(gene_weights, effects, method="population", reference=population),
        "limma_t": gene_weights(papalexi, method="limma_t"),
        "uniform": gene_weights(papalexi, method="uniform"),
        "delta_control": compute_deltas(papalexi),
        "delta_population": compute_deltas(papalexi, reference=population),
    }


def test_independent_methods_are_bit_identical_across_splits(papalexi, perts, shrunk, effects, population, full):
    for train, test in splits(perts):
        got = {
            "shrunken": quiet(gene_weights, shrunk, method="shrunken", perturbations=test),
            "population": quiet(gene_weights, effects, method="population", reference=population, perturbations=test),
            "limma_t": gene_weights(papalexi, method="limma_t", perturbations=test),
            "uniform": gene_weights(papalexi, method="uniform", perturbations=test),
            "delta_control": compute_deltas(papalexi, perturbations=test),
            "delta_population": compute_deltas(papalexi, reference=population, perturbations=test),
        }
        for name, result in got.items():
            assert rows(result, test).tobytes() == rows(full[name], test).tobytes(), name


def test_shrinking_a_subset_of_perturbations_changes_nothing(effects, shrunk, perts):
    """Shrinkage fitted per perturbation: the other perturbations do not enter a perturbation's prior."""
    for _, test in splits(perts):
        sub = shrink_per_perturbation(effects.subset(test))
        w_sub = quiet(gene_weights, sub, method="shrunken")
        w_all = quiet(gene_weights, shrunk, method="shrunken", perturbations=test)
        assert w_sub.values.tobytes() == w_all.values.tobytes()


def test_statistics_without_the_other_perturbations_give_the_same_bits(papalexi, population, full):
    """Drop every other perturbation's row from the group statistics: identical results."""
    stats = shrinkpert.group_statistics(papalexi, "perturbation", normalize="log1p")
    keep = np.flatnonzero(np.isin(stats.groups, ["STAT1", "IRF1", "non-targeting"]))
    small = GroupStatistics(stats.groups[keep], stats.genes, stats.n_cells[keep], stats.sum[keep], stats.mean[keep],
                            stats.var[keep], stats.n_nonzero[keep], stats.library_size[keep], dict(stats.params))
    labels = ["IRF1", "STAT1"]
    assert rows(gene_weights(small, method="limma_t"), labels).tobytes() == rows(full["limma_t"], labels).tobytes()
    assert rows(compute_deltas(small), labels).tobytes() == rows(full["delta_control"], labels).tobytes()
    assert (rows(compute_deltas(small, reference=population), labels).tobytes()
            == rows(full["delta_population"], labels).tobytes())


def test_cells_of_other_perturbations_do_not_matter_beyond_rounding(papalexi, full):
    """Removing cells changes the streaming shift of the sums (rounding only), never the values."""
    keep = papalexi.obs["perturbation"].isin(["IRF1", "STAT1", "non-targeting"]).to_numpy()
    small = papalexi[keep].copy()
    labels = ["IRF1", "STAT1"]
    np.testing.assert_allclose(rows(compute_deltas(small), labels), rows(full["delta_control"], labels),
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(rows(gene_weights(small, method="limma_t"), labels), rows(full["limma_t"], labels),
                               rtol=1e-9, atol=1e-15)


def test_split_dependent_methods_change_with_the_split(papalexi, perts):
    p = "IRF1"
    others = [q for q in perts if q != p]
    a, b = others[:12], others[12:]
    w_a = gene_weights(papalexi, method="deg_rest", perturbations=[p], reference_perturbations=a)
    w_b = gene_weights(papalexi, method="deg_rest", perturbations=[p], reference_perturbations=b)
    assert np.abs(w_a.values - w_b.values).max() > 1e-4
    assert w_a.params["reference_perturbations"] == sorted(a)
    d_a = compute_deltas(papalexi, reference="perturbed_centroid", perturbations=[p], reference_perturbations=a)
    d_b = compute_deltas(papalexi, reference="perturbed_centroid", perturbations=[p], reference_perturbations=b)
    assert np.abs(d_a.values - d_b.values).max() > 1e-3
