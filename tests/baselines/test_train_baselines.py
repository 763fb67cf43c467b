"""Train-fitted baselines on real data, checked against independent pandas/sklearn computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import linalg
from sklearn.decomposition import PCA

from shrinkpert.baselines.train import check_disjoint, train_linear, train_mean
from shrinkpert.errors import GeneMismatchError, InputError, LeakageError, MissingKeyError
from shrinkpert.stats.group import group_statistics

MEASURED = {"STAT1", "JAK2", "CMTM6", "STAT2", "UBE2L6", "STAT3", "TNFRSF14", "IFNGR2", "NFKBIA"}


@pytest.fixture(scope="module")
def split(papalexi):
    perts = sorted(set(papalexi.obs["perturbation"].astype(str)) - {"non-targeting"})
    order = np.random.default_rng(12).permutation(perts)
    train, test = sorted(map(str, order[:17])), sorted(map(str, order[17:]))
    assert len(MEASURED & set(train)) >= 3 and len(MEASURED & set(test)) >= 2  # both branches exercised
    labels = papalexi.obs["perturbation"].astype(str)
    train_cells = papalexi[labels.isin(train + ["non-targeting"]).to_numpy()]
    return train, test, train_cells


@pytest.fixture(scope="module")
def train_stats(split):
    return group_statistics(split[2], "perturbation", normalize="log1p")


@pytest.fixture(scope="module")
def pandas_means(split):
    """Training pseudobulk with pandas: log1p(counts * 1e4 / library) averaged per perturbation."""
    cells = split[2]
    X = cells.X.toarray().astype(np.float64)
    logx = np.log1p(X * (1e4 / X.sum(axis=1, keepdims=True)))
    frame = pd.DataFrame(logx, columns=cells.var_names.astype(str))
    return frame.groupby(cells.obs["perturbation"].astype(str).to_numpy()).mean()


def test_train_mean_is_the_mean_of_training_perturbation_means(split, train_stats, pandas_means):
    train, test, cells = split
    pred = train_mean(train_stats, test)
    expected = pandas_means.loc[train].mean(axis=0).to_numpy()
    assert pred.name == "train_mean" and list(pred.perturbations) == test
    np.testing.assert_allclose(pred.mean, np.tile(expected, (len(test), 1)), rtol=0, atol=1e-12)
    assert pred.params["train_perturbations"] == train
    cellw = train_mean(train_stats, test, weighting="cells")
    counts = cells.obs["perturbation"].astype(str).value_counts()
    w = counts.loc[train].to_numpy(dtype=float)
    np.testing.assert_allclose(cellw.mean[0], (pandas_means.loc[train].to_numpy() * w[:, None]).sum(0) / w.sum(),
                               rtol=0, atol=1e-12)


def published_linear(means: pd.DataFrame, train: list[str], test: list[str], control: str, k=10, lam=0.1):
    """Ahlmann-Eltze et al.'s recipe from the paper's description, with sklearn's PCA.

    Genes are the PCA samples and the training conditions (perturbations + control) the features:
    the gene embedding is the PCA scores. A condition's embedding is its target gene's row (zero for
    the control); Y = change from control, centred by its row means; K from the two-sided ridge.
    """
    conds = train + [control]
    X = means.loc[conds].T  # genes × conditions
    G = PCA(n_components=k, svd_solver="full").fit_transform(X.to_numpy())
    G = pd.DataFrame(G, index=X.index)
    fit = [p for p in train if p in G.index]
    B = np.column_stack([G.loc[p].to_numpy() for p in fit] + [np.zeros(k)])
    baseline = means.loc[control].to_numpy()
    Y = X[fit + [control]].to_numpy() - baseline[:, None]
    center = Y.mean(axis=1)
    Yc = Y - center[:, None]
    A = G.to_numpy()
    K = linalg.inv(A.T @ A + lam * np.eye(k)) @ A.T @ Yc @ B.T @ linalg.inv(B @ B.T + lam * np.eye(k))
    emb = np.column_stack([G.loc[p].to_numpy() if p in G.index else np.zeros(k) for p in test])
    return (A @ K @ emb + center[:, None] + baseline[:, None]).T


def test_train_linear_matches_the_published_recipe(split, train_stats, pandas_means):
    train, test, _ = split
    pred = train_linear(train_stats, test)
    expected = published_linear(pandas_means, train, test, "non-targeting")
    # two SVD routes (LAPACK gesdd vs sklearn's) and a 1e-12 pseudobulk difference: 1e-9 absolute
    np.testing.assert_allclose(pred.mean, expected, rtol=0, atol=1e-9)
    assert pred.params["n_components"] == 10 and pred.params["ridge"] == 0.1
    assert set(pred.params["train_perturbations_fitted"]) == MEASURED & set(train)
    assert pred.params["no_embedding"] == sorted(set(test) - MEASURED)
    # the model is not the mean: measured test targets get their own profile
    measured = [i for i, p in enumerate(test) if p in MEASURED]
    assert np.abs(pred.mean[measured] - pred.mean[[test.index(pred.params["no_embedding"][0])]]).max() > 1e-3


def test_train_linear_other_settings_and_target_maps(split, train_stats, pandas_means):
    train, test, _ = split
    pred = train_linear(train_stats, test, n_components=3, ridge=1.0)
    np.testing.assert_allclose(pred.mean, published_linear(pandas_means, train, test, "non-targeting", 3, 1.0),
                               rtol=0, atol=1e-9)
    # renaming a perturbation and mapping it back to its gene gives the same prediction
    renamed = [f"sg-{p}" for p in test]
    via_map = train_linear(train_stats, renamed, targets={f"sg-{p}": p for p in test})
    np.testing.assert_array_equal(via_map.mean, train_linear(train_stats, test).mean)


def test_genes_option_reorders_and_checks(split, train_stats):
    train, test, _ = split
    genes = list(train_stats.genes[::-1][:50])
    sub = train_mean(train_stats, test, genes=genes)
    full = train_mean(train_stats, test)
    np.testing.assert_array_equal(sub.mean, full.mean[:, ::-1][:, :50])
    with pytest.raises(GeneMismatchError, match="not in the training statistics"):
        train_mean(train_stats, test, genes=["NOT_A_GENE"])


def test_leakage_and_bad_inputs_are_refused(split, train_stats, papalexi):
    train, test, cells = split
    with pytest.raises(LeakageError, match=repr(train[0])):
        train_mean(train_stats, [train[0], test[0]])
    with pytest.raises(LeakageError, match=repr(train[1])):
        train_linear(train_stats, [train[1]])
    no_control = group_statistics(cells[(cells.obs["perturbation"] != "non-targeting").to_numpy()], "perturbation",
                                  normalize="log1p")
    with pytest.raises(MissingKeyError, match="no control group 'non-targeting'"):
        train_linear(no_control, test)
    with pytest.raises(InputError, match="GroupStatistics"):
        train_mean(cells, test)
    with pytest.raises(InputError, match="contains the control"):
        train_mean(train_stats, ["non-targeting"])
    with pytest.raises(InputError, match="weighting"):
        train_mean(train_stats, test, weighting="genes")
    with pytest.raises(InputError, match="n_components"):
        train_linear(train_stats, test, n_components=0)
    with pytest.raises(InputError, match="at least 2"):
        train_linear(train_stats, test, targets={p: "nope" for p in train})


def test_check_disjoint(split, papalexi):
    train, test, train_cells = split
    labels = papalexi.obs["perturbation"].astype(str)
    test_cells = papalexi[labels.isin(test).to_numpy()]
    report = check_disjoint(train_cells, test_cells.obs)
    assert report["train_perturbations"] == train and report["test_perturbations"] == test
    controls = papalexi[(labels == "non-targeting").to_numpy()]
    half = controls.obs_names[: controls.n_obs // 2]
    # controls in both sets are fine as long as the cells differ
    check_disjoint(train_cells[~train_cells.obs_names.isin(half)], papalexi[labels.isin(test).to_numpy() | papalexi.obs_names.isin(half)])
    with pytest.raises(LeakageError, match=f"{controls.n_obs} cells are in both"):
        check_disjoint(train_cells, controls)
    leak = papalexi[labels.isin([train[0]]).to_numpy()].copy()
    leak.obs_names = [f"other_{i}" for i in range(leak.n_obs)]
    with pytest.raises(LeakageError, match=f"1 perturbations are in both.*{train[0]!r}"):
        check_disjoint(train_cells, leak)
    with pytest.raises(MissingKeyError, match="'guide'"):
        check_disjoint(train_cells, test_cells, perturbation_key="guide")
