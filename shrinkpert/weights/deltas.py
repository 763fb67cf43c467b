"""Delta references: the one place that computes :math:`\\Delta = x - r`.

For perturbation :math:`p` with pseudobulk expression :math:`\\bar x_p` (mean log1p-normalised
expression of its cells) and a reference profile :math:`r`,

.. math:: \\Delta_{pg} = \\bar x_{pg} - r_g .

Three references:

``"control"``
    :math:`r = \\bar x_c`, the control cells' mean. Depends only on the control.
``"perturbed_centroid"`` (Systema; Viñas Torné et al. 2025)
    :math:`r = \\frac{1}{|R|}\\sum_{q \\in R} \\bar x_q`, the perturbation-weighted mean of the
    centroids of an explicit set :math:`R` of perturbations (``reference_perturbations``, e.g.
    the training perturbations). Split-dependent: it changes with :math:`R`, and scoring a
    perturbation in :math:`R` raises :class:`~shrinkpert.errors.LeakageError` unless
    ``allow_leakage=True``.
:class:`~shrinkpert.reference.population.PopulationReference`
    :math:`r = m` (``expression_mean``), an external population's mean on the same scale and
    ``target_sum``. Depends on nothing in the screen.

Predictions are turned into deltas with the same :class:`DeltaReference`
(:meth:`DeltaReference.subtract`), so truth and prediction always share one reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import readonly as _readonly
from .._frames import long_frame
from .._vocab import CONTROL, PERTURBATION_KEY, TARGET_SUM
from ..errors import GeneMismatchError, InputError, MissingKeyError
from ..reference.population import PopulationReference
from ..stats import GroupStatistics
from ._inputs import control_of, perturbations_of, pseudobulk, scale_of
from .leakage import check_leakage, require_reference_perturbations

__all__ = ["DeltaReference", "Deltas", "delta_reference", "compute_deltas"]

REFERENCES = ("control", "perturbed_centroid")


@dataclass(frozen=True, eq=False)
class DeltaReference:
    """The profile deltas are measured from.

    Attributes
    ----------
    kind : str
        ``"control"``, ``"perturbed_centroid"`` or ``"population"``.
    genes : pandas.Index
    values : ndarray of float64, shape (n_genes,)
        :math:`r_g`.
    reference_perturbations : tuple of str or None
        The perturbations :math:`R` a centroid was learned from (None otherwise).
    scale : str or None
        Scale of ``values`` (``"log1p"``; None = as stored).
    target_sum : float or None
    params : mapping
        How it was built (control label, population name and checksum, input).
    """

    kind: str
    genes: pd.Index
    values: np.ndarray
    reference_perturbations: tuple[str, ...] | None
    scale: str | None
    target_sum: float | None
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _readonly(self.values))
        if self.values.shape != (len(self.genes),):
            raise InputError(f"values has shape {self.values.shape}; expected ({len(self.genes)},).")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def split_dependent(self) -> bool:
        """True when the reference was learned from perturbations (``perturbed_centroid``)."""
        return self.reference_perturbations is not None

    def check(self, perturbations: Sequence[str], *, allow_leakage: bool = False) -> list[str]:
        """Perturbations to be scored that this reference was learned from.

        Raises
        ------
        LeakageError
            Some are, and ``allow_leakage`` is false.
        """
        if not self.split_dependent:
            return []
        return check_leakage(perturbations, self.reference_perturbations, allow_leakage=allow_leakage,
                             method=self.kind)

    def subtract(
        self,
        expression: pd.DataFrame | np.ndarray,
        *,
        perturbations: Sequence[str] | None = None,
        genes: Sequence[str] | None = None,
        allow_leakage: bool = False,
    ) -> Deltas:
        """Deltas :math:`x_{pg} - r_g` of pseudobulk profiles (truth or predictions).

        Parameters
        ----------
        expression
            Perturbations × genes on this reference's scale: a DataFrame (index perturbations,
            columns genes) or an array with ``perturbations`` and ``genes``.
        perturbations, genes
            Labels of an array's rows and columns (``genes`` defaults to the reference genes).
        allow_leakage
            Allow scoring perturbations this (split-dependent) reference was learned from.

        Returns
        -------
        Deltas

        Raises
        ------
        GeneMismatchError
            Some expression genes are not in the reference.
        LeakageError
            A perturbation is in ``reference_perturbations`` and ``allow_leakage`` is false.
        """
        if isinstance(expression, pd.DataFrame):
            labels = pd.Index(expression.index.astype(str), name="perturbation")
            cols = pd.Index(expression.columns.astype(str), name="gene")
            values = expression.to_numpy(dtype=np.float64)
        else:
            values = np.asarray(expression, dtype=np.float64)
            if values.ndim != 2:
                raise InputError(f"expression must be perturbations × genes (2-D), got shape {values.shape}.")
            if perturbations is None:
                raise InputError("An expression array needs perturbations= (one label per row).")
            labels = pd.Index([str(p) for p in perturbations], name="perturbation")
            cols = pd.Index([str(g) for g in genes], name="gene") if genes is not None else self.genes
        if values.shape != (len(labels), len(cols)):
            raise InputError(f"expression has shape {values.shape} but {len(labels)} perturbations × {len(cols)} genes.")
        idx = self.genes.get_indexer(cols)
        if (idx < 0).any():
            absent = cols[idx < 0][:10].tolist()
            raise GeneMismatchError(
                f"{int((idx < 0).sum())} genes of the expression are not in the {self.kind} reference (e.g. {absent!r}); "
                "build the reference on the same genes (PopulationReference.align for an external one)."
            )
        leaked = self.check(labels, allow_leakage=allow_leakage)
        params = {"reference": self.kind, "allow_leakage": bool(allow_leakage), "leaked": leaked,
                  "reference_perturbations": list(self.reference_perturbations or []) or None}
        return Deltas(labels, cols, values - self.values[idx][None, :], self, params)


@dataclass(frozen=True, eq=False)
class Deltas:
    """:math:`\\Delta_{pg} = \\bar x_{pg} - r_g` per perturbation × gene.

    Attributes
    ----------
    perturbations, genes : pandas.Index
    values : ndarray of float64, shape (n_perturbations, n_genes)
    reference : DeltaReference
    params : mapping
        ``reference`` kind, ``reference_perturbations``, ``allow_leakage`` and the ``leaked``
        perturbations (scored although in the reference set).
    """

    perturbations: pd.Index
    genes: pd.Index
    values: np.ndarray
    reference: DeltaReference
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", _readonly(self.values))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per (perturbation, gene) with ``delta``."""
        return long_frame(self.perturbations, self.genes,
                          {"delta": self.values, "reference": self.reference.kind})

    def to_anndata(self):
        """Perturbations × genes AnnData with ``X`` = delta and the reference in ``var``."""
        import anndata as ad

        idx = self.reference.genes.get_indexer(self.genes)
        var = pd.DataFrame({"reference": self.reference.values[idx]}, index=self.genes.astype(str))
        uns = {"shrinkpert": {"reference": self.reference.kind}}
        return ad.AnnData(X=np.array(self.values), obs=pd.DataFrame(index=self.perturbations.astype(str)),
                          var=var, uns=uns)


def _reference_from(pb: GroupStatistics | None, reference: Any, reference_perturbations, control: str) -> DeltaReference:
    if isinstance(reference, PopulationReference):
        if reference_perturbations is not None:
            raise InputError("A PopulationReference is not learned from perturbations; drop reference_perturbations=.")
        params = {"population": reference.name, "population_sha256": reference.provenance.get("source_sha256"),
                  "population_created": reference.provenance.get("created_utc")}
        if pb is None:
            return DeltaReference("population", reference.genes, reference.expression_mean, None, reference.scale,
                                  reference.target_sum, params)
        scale, target_sum = scale_of(pb)
        if reference.scale != scale or (scale is not None and reference.target_sum != target_sum):
            raise InputError(
                f"The population reference {reference.name!r} is on scale={reference.scale!r} with "
                f"target_sum={reference.target_sum!r}, but the expression is on scale={scale!r} with "
                f"target_sum={target_sum!r}; build both with the same normalize= and target_sum=."
            )
        aligned = reference if reference.genes.equals(pb.genes) else reference.align(pb.genes)
        params["input"] = pb.params["input"]
        return DeltaReference("population", pb.genes, aligned.expression_mean, None, reference.scale,
                              reference.target_sum, params)
    if pb is None:
        raise InputError(f"reference={reference!r} needs the truth (cells, GroupStatistics or EffectSizes).")
    if reference == "control":
        if reference_perturbations is not None:
            raise InputError("reference='control' is not learned from perturbations; drop reference_perturbations=.")
        if control_of(pb, control) is None:
            raise MissingKeyError(
                f"reference='control' needs control cells, but {control!r} is not among the groups "
                f"(e.g. {pb.groups[:10].tolist()!r}); pass control=<label>."
            )
        row = pb.rows([control], "The control")[0]
        return DeltaReference("control", pb.genes, pb.mean[row], None, *scale_of(pb),
                              {"control": control, "control_n_cells": int(pb.n_cells[row]), "input": pb.params["input"]})
    if reference == "perturbed_centroid":
        refs = require_reference_perturbations(reference_perturbations, method="perturbed_centroid",
                                               control=control_of(pb, control))
        rows = pb.rows(refs, "reference_perturbations")
        values = np.mean(pb.mean[rows], axis=0)  # rows in sorted label order: same bits for the same set
        return DeltaReference("perturbed_centroid", pb.genes, values, refs, *scale_of(pb),
                              {"weighting": "perturbation (each centroid 1/|R|)", "n_reference": len(refs),
                               "input": pb.params["input"]})
    raise InputError(
        f"reference={reference!r} is not one of {REFERENCES!r} or a PopulationReference."
    )


def delta_reference(
    truth: Any = None,
    *,
    reference: str | PopulationReference = "control",
    reference_perturbations: Sequence[str] | None = None,
    control: str = CONTROL,
    perturbation_key: str = PERTURBATION_KEY,
    layer: str | None = None,
    normalize: bool = True,
    target_sum: float = TARGET_SUM,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> DeltaReference:
    """The reference profile :math:`r` that deltas are measured from.

    Parameters
    ----------
    truth
        Cells (AnnData, backed AnnData or ``.h5ad`` path; log1p-normalised on the fly),
        :class:`~shrinkpert.stats.group.GroupStatistics` grouped by perturbation, or
        :class:`~shrinkpert.effects.estimate.EffectSizes` (``scale="log1p"``). May be None for
        a :class:`PopulationReference` used on its own genes.
    reference
        ``"control"``, ``"perturbed_centroid"`` or a :class:`PopulationReference`.
    reference_perturbations
        Required for ``"perturbed_centroid"``: the perturbations whose centroids are averaged.
    control
        Control label.
    perturbation_key, layer, normalize, target_sum, chunk_size, n_threads, progress
        How cells are read (as in :func:`shrinkpert.estimate_effects`).

    Returns
    -------
    DeltaReference

    Raises
    ------
    InputError
        ``reference_perturbations`` missing for the centroid (or given for another reference),
        or scales that do not match.
    MissingKeyError
        The control or a reference perturbation is absent.
    """
    pb = None
    if truth is not None:
        pb = pseudobulk(truth, perturbation_key=perturbation_key, control=control, layer=layer,
                        normalize=normalize, target_sum=target_sum, chunk_size=chunk_size,
                        n_threads=n_threads, progress=progress)
    return _reference_from(pb, reference, reference_perturbations, control)


def compute_deltas(
    truth: Any,
    *,
    reference: str | PopulationReference = "control",
    perturbations: Sequence[str] | None = None,
    reference_perturbations: Sequence[str] | None = None,
    allow_leakage: bool = False,
    control: str = CONTROL,
    perturbation_key: str = PERTURBATION_KEY,
    layer: str | None = None,
    normalize: bool = True,
    target_sum: float = TARGET_SUM,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> Deltas:
    """Deltas of the true perturbation profiles against a reference.

    :math:`\\Delta_{pg} = \\bar x_{pg} - r_g` (module docstring). For ``"control"`` and a
    :class:`PopulationReference` a perturbation's deltas depend on nothing but its own cells and
    the reference, bit for bit; for ``"perturbed_centroid"`` they depend on
    ``reference_perturbations``.

    Parameters
    ----------
    truth
        As in :func:`delta_reference`.
    reference
        ``"control"``, ``"perturbed_centroid"`` or a :class:`PopulationReference`.
    perturbations
        Perturbations to return (default: every group except the control).
    reference_perturbations
        Required for ``"perturbed_centroid"`` (the perturbations it learns from).
    allow_leakage
        Allow ``perturbations`` that are in ``reference_perturbations`` (recorded in ``params``).
    control, perturbation_key, layer, normalize, target_sum, chunk_size, n_threads, progress
        As in :func:`delta_reference`.

    Returns
    -------
    Deltas

    Raises
    ------
    LeakageError
        A scored perturbation is in ``reference_perturbations`` and ``allow_leakage`` is false.
    MissingKeyError
        A perturbation, reference perturbation or the control is absent.
    InputError
        As in :func:`delta_reference`.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> from shrinkpert.weights.deltas import compute_deltas
    >>> adata = sp.datasets.papalexi2021()
    >>> adata = adata[adata.obs["perturbation"] != "unassigned"].copy()
    >>> d = compute_deltas(adata, reference="perturbed_centroid", perturbations=["CD86", "IRF1"],
    ...                    reference_perturbations=["ATF2", "CAV1", "CUL3", "ETV7"])
    >>> d.values.shape
    (2, 299)
    """
    pb = pseudobulk(truth, perturbation_key=perturbation_key, control=control, layer=layer, normalize=normalize,
                    target_sum=target_sum, chunk_size=chunk_size, n_threads=n_threads, progress=progress)
    ref = _reference_from(pb, reference, reference_perturbations, control)
    if isinstance(perturbations, str):
        raise InputError(f"perturbations={perturbations!r} is a single string; pass a list of labels.")
    labels = perturbations_of(pb, control) if perturbations is None else pd.Index([str(p) for p in perturbations])
    rows = pb.rows(labels, "perturbations")
    frame = pd.DataFrame(pb.mean[rows], index=labels, columns=pb.genes)
    deltas = ref.subtract(frame, allow_leakage=allow_leakage)
    params = dict(deltas.params)
    scale, target_sum = scale_of(pb)
    params.update(input=pb.params["input"], scale=scale, target_sum=target_sum)
    return Deltas(deltas.perturbations, deltas.genes, deltas.values, ref, params)
