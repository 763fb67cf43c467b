r"""``difficulty_split(truth)``: seeded train/test splits of perturbations that are harder than random.

CASP separates template-based targets (a similar structure is known) from free modelling (none
is). Here the "template" of a test perturbation is its most similar training perturbation, by the
cosine similarity of shrunk specific profiles (as ``nearest_similarity`` of
:func:`~shrinkpert.difficulty`: effects minus the per-gene median effect, own target set to 0,
ash posterior means; a profile shrunk to 0 has similarity 0 to everything).

``method="cluster"`` (free modelling): each split draws a seeded anchor perturbation and holds
out the anchor together with its most similar perturbations until the test set has
``round(test_size * P)`` members, so that every close template of a test perturbation is held out
with it. ``method="random"``: a seeded random test set of the same size (the usual split, for
comparison). Each split reports ``template_similarity``, the mean over test perturbations of
the similarity to their nearest training perturbation: lower is harder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY
from ..errors import InputError
from ._profiles import cosine_similarity, fit_effects

__all__ = ["DifficultySplit", "difficulty_split", "split_similarity", "SPLIT_METHODS"]

SPLIT_METHODS = ("cluster", "random")


@dataclass(frozen=True)
class DifficultySplit:
    """One split: training and test perturbations and how close the test set is to training."""

    index: int
    method: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    template_similarity: float


def split_similarity(truth: Any, *, perturbation_key: str = PERTURBATION_KEY, control: str = CONTROL,
                     layer: str | None = None, targets: Mapping[str, str] | None = None,
                     min_cells: int = MIN_CELLS, n_threads: int | None = None) -> pd.DataFrame:
    """Perturbation × perturbation cosine similarity of shrunk specific profiles (0 where undefined)."""
    from .features import specific_effects

    effects = fit_effects(truth, perturbation_key=perturbation_key, control=control, layer=layer, targets=targets,
                          min_cells=min_cells, n_threads=n_threads)
    _, spec = specific_effects(effects, n_threads=n_threads)
    profiles = np.asarray(spec.posterior_mean)
    sim = np.nan_to_num(cosine_similarity(profiles, profiles), nan=0.0)
    names = pd.Index(effects.perturbations.astype(str), name="perturbation")
    return pd.DataFrame(sim, index=names, columns=names)


def _template_similarity(sim: np.ndarray, test: np.ndarray, train: np.ndarray) -> float:
    return float(sim[np.ix_(test, train)].max(axis=1).mean())


def difficulty_split(
    truth: Any,
    *,
    test_size: float = 0.2,
    n_splits: int = 5,
    method: str = "cluster",
    seed: int | np.random.Generator = 0,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    layer: str | None = None,
    targets: Mapping[str, str] | None = None,
    min_cells: int = MIN_CELLS,
    n_threads: int | None = None,
) -> Iterator[DifficultySplit]:
    """Yield ``n_splits`` seeded train/test splits of the perturbations (module docstring).

    Parameters
    ----------
    truth
        Cells with raw counts (AnnData or ``.h5ad`` path), or a precomputed square similarity
        DataFrame (:func:`split_similarity`).
    test_size
        Fraction of perturbations in each test set (at least 1, at most P - 1).
    n_splits
        Number of splits; cluster splits use distinct anchors while there are enough.
    method
        ``"cluster"`` (hold out an anchor and its nearest perturbations) or ``"random"``.
    seed
        Int or Generator; the same seed gives the same splits.
    perturbation_key, control, layer, targets, min_cells, n_threads
        As in :func:`~shrinkpert.estimate_effects`.

    Yields
    ------
    DifficultySplit

    Raises
    ------
    InputError
        Unknown ``method``, ``test_size`` outside (0, 1), fewer than 2 perturbations, or a
        similarity frame that is not square with matching labels.
    """
    if method not in SPLIT_METHODS:
        raise InputError(f"method must be one of {SPLIT_METHODS}, got {method!r}.")
    if not 0 < test_size < 1:
        raise InputError(f"test_size must lie in (0, 1), got {test_size!r}.")
    if isinstance(n_splits, bool) or int(n_splits) < 1:
        raise InputError(f"n_splits must be a positive integer, got {n_splits!r}.")
    if isinstance(truth, pd.DataFrame):
        if truth.shape[0] != truth.shape[1] or not truth.index.astype(str).equals(truth.columns.astype(str)):
            raise InputError("a similarity frame must be square with the same labels on both axes "
                             "(use split_similarity).")
        sim_frame = truth
    else:
        sim_frame = split_similarity(truth, perturbation_key=perturbation_key, control=control, layer=layer,
                                     targets=targets, min_cells=min_cells, n_threads=n_threads)
    names = np.asarray(sim_frame.index.astype(str))
    sim = sim_frame.to_numpy(dtype=np.float64)
    n_p = len(names)
    if n_p < 2:
        raise InputError(f"need at least 2 perturbations to split, got {n_p}.")
    n_test = min(max(1, round(test_size * n_p)), n_p - 1)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    anchors = rng.permutation(n_p)
    for k in range(int(n_splits)):
        if method == "random":
            test = np.sort(rng.choice(n_p, n_test, replace=False))
        else:
            anchor = anchors[k % n_p]
            others = np.delete(np.arange(n_p), anchor)
            tiebreak = rng.random(others.size)
            order = others[np.lexsort((tiebreak, -sim[anchor, others]))]
            test = np.sort(np.concatenate([[anchor], order[: n_test - 1]]))
        train = np.setdiff1d(np.arange(n_p), test)
        yield DifficultySplit(index=k, method=method, train=tuple(names[train]), test=tuple(names[test]),
                              template_similarity=_template_similarity(sim, test, train))
