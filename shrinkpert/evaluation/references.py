r"""What deltas are taken from, how genes are weighted, and what the truth is: split-aware choices.

The seed's three scenarios for the reference :math:`r` of a delta :math:`\bar x_p - r`:

1. ``"perturbed_centroid"`` — the centroid of the scored (test) perturbations, the scored one
   included (Systema as usually run): each perturbation shapes its own reference (**leakage**),
   and the reference moves with the split. Computed only with ``allow_leakage=True``, and flagged.
2. ``"train_centroid"`` — the centroid of the *training* perturbations' means (``train=``): sound,
   but split-dependent, so scores are not comparable across splits.
3. ``"population"`` — an external :class:`~shrinkpert.PopulationReference` (its per-gene log1p
   mean), or ``"control"`` — the observed control: both split-independent.

The default is ``("control",)``, plus ``"train_centroid"`` when ``train`` is given, plus
``"population"`` when a reference is given. Weights default to ``"auto"``: uniform, the
``"shrunken"`` weights of each true perturbation against the control (nothing else in the split
enters them), and ``"population"`` weights when a reference is given.

``truth_effects="shrunk"`` replaces each true pseudobulk :math:`\bar x_p` by
:math:`\bar x_c + \tilde\beta_p`, with :math:`\tilde\beta_p` the ash posterior means of the
Welch effects :math:`\bar x_p - \bar x_c` (control variance floor, one normal-mixture prior per
perturbation) — for the full truth and for the half the duplicates are scored against — so that
noise in the truth does not count as model error.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import freeze
from ..errors import InputError, LeakageError, ShrinkpertWarning

__all__ = ["REFERENCE_NAMES", "resolve_references", "reference_vectors", "auto_weights", "shrunk_truth"]

#: Delta references :func:`~shrinkpert.evaluate` knows.
REFERENCE_NAMES = ("control", "train_centroid", "population", "perturbed_centroid")


def resolve_references(references: Any, *, train: bool, allow_leakage: bool,
                       population: Any = None) -> tuple[list[str], Any]:
    """Reference names and the :class:`PopulationReference` (or None) to use.

    ``references`` is ``"auto"`` or a list of names from :data:`REFERENCE_NAMES`; an item may
    also be a :class:`~shrinkpert.PopulationReference` or the path of a saved one (both mean
    ``"population"``). ``population`` is the config's reference (object or path), used by
    ``"auto"`` and by the name ``"population"``.
    """
    from ..reference.population import PopulationReference

    def load(item: Any) -> Any:
        return item if isinstance(item, PopulationReference) else PopulationReference.load(item)

    population = load(population) if population is not None else None
    if isinstance(references, str) and references == "auto":
        names = ["control"] + (["train_centroid"] if train else []) + (["population"] if population is not None
                                                                         else [])
        return names, population
    items = [references] if isinstance(references, (str, PopulationReference, os.PathLike)) else list(references)
    names: list[str] = []
    for item in items:
        if isinstance(item, (PopulationReference, os.PathLike)) or (
                isinstance(item, str) and item not in REFERENCE_NAMES and os.path.exists(item)):
            population, item = load(item), "population"
        if item not in REFERENCE_NAMES:
            raise InputError(f"references must be 'auto' or names from {REFERENCE_NAMES} (a PopulationReference or "
                             f"the path of a saved one counts as 'population'); got {item!r}.")
        if item == "population" and population is None:
            raise InputError("references: 'population' needs the reference itself; pass population=<a "
                             "PopulationReference or its path>, or put the reference in references=.")
        if item == "train_centroid" and not train:
            raise InputError("references: 'train_centroid' needs train= (cells of the training perturbations).")
        if item == "perturbed_centroid" and not allow_leakage:
            raise LeakageError(
                "references: 'perturbed_centroid' is the centroid of the scored perturbations themselves, so each "
                "shapes its own reference (leakage) and scores move with the split. Use 'control', 'population' or "
                "'train_centroid' (with train=), or pass allow_leakage=True to compute it anyway (it is flagged)."
            )
        if item not in names:
            names.append(item)
    if not names:
        raise InputError("references is empty; pass 'auto' or a list of references.")
    return names, population


def reference_vectors(names: Sequence[str], truth: Any, genes: pd.Index, *, population: Any,
                      train_mean: np.ndarray | None) -> dict[str, np.ndarray]:
    """The vector :math:`r` of each reference, on the evaluation scale, aligned to ``genes``."""
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "control":
            out[name] = truth.control_mean
        elif name == "perturbed_centroid":
            out[name] = freeze(truth.mean.mean(axis=0))
        elif name == "train_centroid":
            out[name] = freeze(np.asarray(train_mean).mean(axis=0))
        else:
            out[name] = freeze(_population_mean(population, genes, truth))
    return out


def _population_mean(population: Any, genes: pd.Index, truth: Any) -> np.ndarray:
    if population.scale != "log1p":
        raise InputError(f"The population reference {population.name!r} is on scale {population.scale!r}; deltas "
                         "need its log1p means (build it with normalize='log1p').")
    if population.target_sum is not None and truth.params.get("target_sum") is not None and not np.isclose(
            population.target_sum, truth.params["target_sum"]):
        raise InputError(f"The population reference uses target_sum={population.target_sum}, the evaluation "
                         f"{truth.params['target_sum']}; use the same normalisation.")
    aligned = population.align(genes)
    values = np.asarray(aligned.expression_mean, dtype=np.float64)
    missing = ~np.isfinite(values)
    if missing.any():
        raise InputError(f"The population reference has no log1p mean for {int(missing.sum())} genes (e.g. "
                         f"{genes[missing][:5].tolist()}); subset the data to the reference's genes.")
    return values


def auto_weights(weights: Any, truth: Any, *, population: Any) -> Any:
    """``weights="auto"``: ``{"shrunken": ..., "population": ...}`` from the truth alone (else unchanged)."""
    if not (isinstance(weights, str) and weights == "auto"):
        if isinstance(weights, str):
            raise InputError(f"weights must be 'auto', None, GeneWeights, arrays or a mapping; got {weights!r}.")
        return weights
    from ..effects.estimate import estimate_effects
    from ..effects.shrink import shrink_effects
    from ..weights import gene_weights

    effects = estimate_effects(truth.statistics, control=truth.control, perturbations=list(truth.perturbations),
                               min_cells=2)
    with warnings.catch_warnings():  # a null perturbation's uniform fallback is recorded in params, not warned
        warnings.filterwarnings("ignore", message=".*get uniform weights", category=ShrinkpertWarning)
        out = {"shrunken": gene_weights(shrink_effects(effects), method="shrunken", control=truth.control)}
        if population is not None:
            out["population"] = gene_weights(effects, method="population", reference=population,
                                             control=truth.control)
    return out


def shrunk_truth(mean: np.ndarray, var: np.ndarray, n: np.ndarray, truth: Any) -> np.ndarray:
    r"""Posterior pseudobulk :math:`\bar x_c + \tilde\beta_p` of one truth (see the module docstring)."""
    from ..effects import ash_batch

    lfc, test = truth.versus_control(mean, var, n)
    fit = ash_batch(lfc, test.std_error, tol=1e-5, max_iter=200)
    return freeze(truth.control_mean[None, :] + np.nan_to_num(fit.posterior_mean))
