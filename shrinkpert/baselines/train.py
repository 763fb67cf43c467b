r"""Baselines fitted on the training perturbations only, and the train/test disjointness guard.

The baselines in :mod:`shrinkpert.baselines.baselines` are leave-one-out over the *evaluated*
perturbations, which is all a truth-only evaluation has. When the cells of the training
perturbations are available, the published baselines are fitted on them instead, and nothing
about the test perturbations enters a prediction:

``train_mean`` (Mejia et al. 2025 "mean"; cell-eval's "cell mean" baseline)
    one profile for every test perturbation,
    :math:`\hat x_p = \frac{1}{|T|}\sum_{q\in T}\bar x_q` over the training perturbations
    :math:`T` (``weighting="perturbation"``), or the mean of all their cells,
    :math:`\sum_{q\in T} n_q\bar x_q / \sum_{q\in T} n_q` (``"cells"``; Systema's perturbed mean).

``train_linear`` (Ahlmann-Eltze, Huber & Anders 2025, linear model with training-data embeddings)
    with :math:`X` the genes × conditions matrix of training pseudobulk means, the conditions
    being the training perturbations and the control :math:`c`, and :math:`\bar x_c` the control
    mean:

    1. gene embedding :math:`G` (genes × :math:`K`): principal-component scores of the genes in
       :math:`X` (each condition's column centred over genes; :math:`G = U_K S_K` of the centred
       matrix), as ``prcomp(X)$x`` in the published R code;
    2. a condition's embedding :math:`b_q` is the row of :math:`G` of its target gene, zero for
       the control; training perturbations whose target is not a measured gene are left out of
       the fit;
    3. :math:`Y` = changes :math:`\bar x_q - \bar x_c` of the fitted conditions (control
       included, its change is 0), :math:`m` = row means of :math:`Y`, :math:`Y_c = Y - m`;
    4. :math:`W = (G^\top G + \lambda I)^{-1} G^\top Y_c B^\top (B B^\top + \lambda I)^{-1}`;
    5. :math:`\hat x_p = G W b_{t(p)} + m + \bar x_c`.

    :math:`K = 10`, :math:`\lambda = 0.1` as published. The only deliberate difference: a test
    perturbation whose target gene is not measured has no embedding, and the published code
    returns NA for it; here it gets :math:`b = 0`, i.e. :math:`m + \bar x_c` (the model's
    prediction for "no specific effect"), and is listed in ``params["no_embedding"]``.

Both take the training statistics as a :class:`~shrinkpert.stats.group.GroupStatistics` grouped
by perturbation on the evaluation scale (``group_statistics(train_cells, "perturbation",
normalize="log1p")``), and refuse to predict a perturbation that is in the training set
(:class:`~shrinkpert.errors.LeakageError`). :func:`check_disjoint` refuses a training set that
shares cells or perturbations with the test set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._vocab import CONTROL, PERTURBATION_KEY
from ..errors import GeneMismatchError, InputError, LeakageError, MissingKeyError
from .baselines import BaselinePrediction

__all__ = ["train_mean", "train_linear", "check_disjoint"]


def _train_table(train: Any, control: str, genes: Sequence[str] | None) -> tuple[pd.Index, np.ndarray, np.ndarray,
                                                                                    pd.Index]:
    """Labels, means (groups × genes, in ``genes`` order), cell counts and genes of the training statistics."""
    from ..stats.group import GroupStatistics

    if not isinstance(train, GroupStatistics):
        raise InputError(
            f"train must be GroupStatistics grouped by perturbation (group_statistics(train_cells, "
            f"'perturbation', normalize='log1p')), got {type(train).__name__}."
        )
    if isinstance(train.groups, pd.MultiIndex):
        raise InputError("train is grouped by several columns; group the training cells by perturbation only.")
    labels = pd.Index([str(g) for g in train.groups])
    mean = np.asarray(train.mean, dtype=np.float64)
    train_genes = pd.Index([str(g) for g in train.genes])
    if genes is not None:
        wanted = pd.Index([str(g) for g in genes])
        idx = train_genes.get_indexer(wanted)
        if (idx < 0).any():
            missing = wanted[idx < 0][:10].tolist()
            raise GeneMismatchError(
                f"{int((idx < 0).sum())} evaluated genes are not in the training statistics (e.g. {missing!r}); "
                "compute the training statistics over the same genes."
            )
        mean, train_genes = mean[:, idx], wanted
    if not np.isfinite(mean).all():
        raise InputError("The training means contain NaN or inf (a group without cells?); drop empty groups first.")
    return labels, mean, np.asarray(train.n_cells, dtype=np.float64), train_genes


def _test_labels(perturbations: Sequence[str], control: str) -> pd.Index:
    if isinstance(perturbations, str):
        raise InputError(f"perturbations={perturbations!r} is a single string; pass a list of labels.")
    labels = pd.Index([str(p) for p in perturbations], name="perturbation")
    if labels.empty:
        raise InputError("perturbations is empty; pass the test perturbations to predict.")
    if labels.has_duplicates:
        raise InputError("perturbations lists a label twice; pass each test perturbation once.")
    if control in set(labels):
        raise InputError(f"perturbations contains the control {control!r}; list test perturbations only.")
    return labels


def _refuse_overlap(test: pd.Index, train_perturbations: pd.Index, method: str) -> None:
    leaked = [p for p in test if p in set(train_perturbations)]
    if leaked:
        raise LeakageError(
            f"{method}: {len(leaked)} test perturbation(s) are also training perturbations ({leaked[:10]!r}); a "
            "baseline fitted on train must not predict a perturbation it was fitted on. Remove them from "
            "perturbations= or their cells from train."
        )


def train_mean(
    train: Any,
    perturbations: Sequence[str],
    *,
    control: str = CONTROL,
    weighting: str = "perturbation",
    genes: Sequence[str] | None = None,
) -> BaselinePrediction:
    r"""The mean of the training perturbations, predicted for every test perturbation.

    :math:`\hat x_p = \frac{1}{|T|}\sum_{q\in T}\bar x_q` (``weighting="perturbation"``, Mejia et
    al.'s mean and cell-eval's cell-mean baseline) or :math:`\sum_{q\in T} n_q\bar x_q / \sum_{q\in
    T} n_q` (``"cells"``, Systema's perturbed mean), over the training perturbations :math:`T`
    (every group of ``train`` except ``control``).

    Parameters
    ----------
    train
        :class:`~shrinkpert.stats.group.GroupStatistics` of the training cells grouped by
        perturbation, on the evaluation scale; the control group, if present, is not used.
    perturbations
        Test perturbations to predict; none may be a training perturbation.
    control
        Control label.
    weighting
        ``"perturbation"`` (default) or ``"cells"``.
    genes
        Genes to predict, in this order (default: those of ``train``).

    Returns
    -------
    BaselinePrediction
        Name ``"train_mean"`` (``"train_mean_cells"`` for cell weighting); ``params`` lists the
        training perturbations.

    Raises
    ------
    LeakageError
        A test perturbation is in ``train``.
    InputError
        No training perturbation, bad ``weighting`` or inputs.
    GeneMismatchError
        ``genes`` are not all in ``train``.
    """
    labels, mean, n, gene_index = _train_table(train, control, genes)
    test = _test_labels(perturbations, control)
    rows = np.flatnonzero(labels != control)
    if not len(rows):
        raise InputError(f"train holds no perturbation other than the control {control!r}; the mean needs one.")
    _refuse_overlap(test, labels[rows], "train_mean")
    if weighting == "perturbation":
        profile = mean[rows].mean(axis=0)
    elif weighting == "cells":
        profile = (n[rows, None] * mean[rows]).sum(axis=0) / n[rows].sum()
    else:
        raise InputError(f"weighting must be 'perturbation' or 'cells', got {weighting!r}.")
    name = "train_mean" if weighting == "perturbation" else "train_mean_cells"
    return BaselinePrediction(name, test, gene_index, np.broadcast_to(profile, (len(test), len(gene_index))),
                              params={"kind": "negative", "weighting": weighting, "fitted_on": "train",
                                      "train_perturbations": sorted(labels[rows])})


def train_linear(
    train: Any,
    perturbations: Sequence[str],
    *,
    control: str = CONTROL,
    targets: Mapping[str, str] | None = None,
    n_components: int = 10,
    ridge: float = 0.1,
    genes: Sequence[str] | None = None,
) -> BaselinePrediction:
    r"""Ahlmann-Eltze et al.'s linear model with PCA embeddings, fitted on the training perturbations.

    The recipe (PCA gene embedding of the training pseudobulk, target-gene rows as perturbation
    embeddings, two-sided ridge on the changes from control) is written out in
    :mod:`shrinkpert.baselines.train`.

    Parameters
    ----------
    train
        :class:`~shrinkpert.stats.group.GroupStatistics` of the training cells grouped by
        perturbation, **including the control group** (the model predicts changes from it).
    perturbations
        Test perturbations to predict; none may be a training perturbation.
    control
        Control label.
    targets
        Perturbation -> target gene (training and test); default: the label itself.
    n_components, ridge
        :math:`K` (default 10, capped at the number of conditions and genes) and :math:`\lambda`
        (default 0.1), as published.
    genes
        Genes to predict, in this order (default: those of ``train``).

    Returns
    -------
    BaselinePrediction
        Name ``"train_linear"``; ``params`` has ``n_components`` (used), ``ridge``, the fitted
        training perturbations and ``no_embedding`` (test perturbations whose target is not
        measured; predicted as :math:`m + \bar x_c`).

    Raises
    ------
    MissingKeyError
        ``train`` has no control group.
    LeakageError
        A test perturbation is in ``train``.
    InputError
        Fewer than two training perturbations with a measured target, or bad options.
    """
    if not (isinstance(n_components, (int, np.integer)) and n_components >= 1) or not (np.isfinite(ridge) and ridge >= 0):
        raise InputError(f"train_linear: need an integer n_components >= 1 and ridge >= 0, got {n_components!r}, "
                         f"{ridge!r}.")
    labels, mean, _, gene_index = _train_table(train, control, genes)
    test = _test_labels(perturbations, control)
    if control not in set(labels):
        raise MissingKeyError(
            f"train has no control group {control!r}; the linear baseline predicts changes from the control, so "
            "include the control cells in the training statistics (or pass control=)."
        )
    c = labels.get_loc(control)
    perts = labels[labels != control]
    _refuse_overlap(test, perts, "train_linear")
    targets = dict(targets) if targets is not None else {}

    def target_row(label: str) -> int:
        gene = str(targets.get(label, label))
        return int(gene_index.get_loc(gene)) if gene in gene_index else -1

    fit = [p for p in perts if target_row(p) >= 0]
    if len(fit) < 2:
        raise InputError(
            f"train_linear: {len(fit)} training perturbation(s) target a measured gene; the model needs at least 2. "
            "Pass targets={perturbation: gene} mapping perturbations to measured genes."
        )
    X = mean.T  # genes × conditions (all training perturbations and the control)
    centred = X - X.mean(axis=0, keepdims=True)
    U, s, _ = np.linalg.svd(centred, full_matrices=False)
    k = int(min(n_components, len(s)))
    G = U[:, :k] * s[:k]
    cols = [labels.get_loc(p) for p in fit] + [c]
    B = np.column_stack([G[target_row(p)] for p in fit] + [np.zeros(k)])  # k × fitted conditions
    Y = X[:, cols] - X[:, [c]]
    m = Y.mean(axis=1)
    Yc = Y - m[:, None]
    eye = np.eye(k)
    W = np.linalg.solve(G.T @ G + ridge * eye, G.T @ Yc @ B.T)
    W = np.linalg.solve((B @ B.T + ridge * eye).T, W.T).T
    rows = np.array([target_row(p) for p in test])
    emb = np.where(rows[:, None] >= 0, G[np.maximum(rows, 0)], 0.0)  # test × k
    pred = emb @ W.T @ G.T + (m + X[:, c])[None, :]
    return BaselinePrediction("train_linear", test, gene_index, pred,
                              params={"kind": "reference", "fitted_on": "train", "n_components": k, "ridge": float(ridge),
                                      "train_perturbations_fitted": sorted(fit),
                                      "train_perturbations_without_target": sorted(set(perts) - set(fit)),
                                      "no_embedding": [p for p, r in zip(test, rows) if r < 0]})


def _obs(frame: Any, what: str) -> pd.DataFrame:
    obs = getattr(frame, "obs", frame)
    if not isinstance(obs, pd.DataFrame):
        raise InputError(f"{what} must be an AnnData or its obs DataFrame, got {type(frame).__name__}.")
    return obs


def check_disjoint(
    train_obs: Any,
    test_obs: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
) -> dict:
    """Refuse a training set that shares cells or perturbations with the test set.

    Cells are compared by ``obs_names``; perturbations by the labels in ``perturbation_key``
    (the control label may appear in both, its cells may not).

    Parameters
    ----------
    train_obs, test_obs
        AnnData (in memory or backed) or their ``obs`` DataFrames.
    perturbation_key
        Column with the perturbation labels.
    control
        Control label, allowed in both sets.

    Returns
    -------
    dict
        ``n_train_cells``, ``n_test_cells``, ``train_perturbations``, ``test_perturbations``
        (sorted, control excluded), for the evaluation record.

    Raises
    ------
    LeakageError
        Shared cells or shared perturbations; the message counts them and names up to ten.
    MissingKeyError
        ``perturbation_key`` is not a column of either.
    """
    train, test = _obs(train_obs, "train_obs"), _obs(test_obs, "test_obs")
    for frame, what in ((train, "train"), (test, "test")):
        if perturbation_key not in frame.columns:
            raise MissingKeyError(f"The {what} cells have no obs column {perturbation_key!r}; pass perturbation_key=.")
    shared_cells = train.index.intersection(test.index)
    if len(shared_cells):
        raise LeakageError(
            f"{len(shared_cells)} cells are in both the training and the test set (e.g. "
            f"{shared_cells[:10].tolist()!r}); a training set must not contain test cells. Remove them from train."
        )
    train_p = set(train[perturbation_key].astype(str)) - {control}
    test_p = set(test[perturbation_key].astype(str)) - {control}
    shared = sorted(train_p & test_p)
    if shared:
        raise LeakageError(
            f"{len(shared)} perturbations are in both the training and the test set ({shared[:10]!r}); a split must "
            "hold each perturbation out entirely. Remove their cells from train."
        )
    return {"n_train_cells": int(len(train)), "n_test_cells": int(len(test)),
            "train_perturbations": sorted(train_p), "test_perturbations": sorted(test_p)}
