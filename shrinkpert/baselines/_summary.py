"""One streaming pass over the true cells: full and split-half pseudobulks (private).

Every baseline works from a :class:`TruthSummary`: per perturbation the mean, variance (ddof=1)
and cell count of all its cells and of two disjoint, seeded halves, plus the observed control.
It is built with one call of :func:`~shrinkpert.stats.group.group_statistics` grouped by
(perturbation, half), so the cells × genes matrix is never densified.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import freeze as _freeze
from .._arrays import kept_readonly
from .._arrays import rows_by_label
from .._vocab import CONTROL, PERTURBATION_KEY, TARGET_SUM
from .._validate import validate
from ..errors import InputError, MissingKeyError

__all__ = ["TruthSummary", "summarize_truth", "SCALES"]

#: Accepted values of ``scale``.
SCALES = ("auto", "log1p", "counts")


@dataclass(frozen=True)
class TruthSummary:
    """Pseudobulk statistics of the true cells, whole and in two disjoint halves.

    All means are on the evaluation scale (natural log1p of counts per ``target_sum``, either
    computed on the fly from counts or as stored).

    Attributes
    ----------
    perturbations : pandas.Index
        Perturbations (control excluded), sorted.
    genes : pandas.Index
    control : str
    mean, var : ndarray, shape (n_perturbations, n_genes)
        :math:`\\bar x_{pg}` and the ddof=1 variance over all cells of perturbation :math:`p`.
    n_cells : ndarray of int64, shape (n_perturbations,)
        Cells per perturbation; with ``weights`` (:func:`summarize_truth`) Kish's effective
        numbers :math:`(\\sum w)^2/\\sum w^2` (float64 unless all are whole numbers), so that
        ``var / n_cells`` is the squared standard error of the weighted mean.
    half_a_mean, half_a_var, half_b_mean, half_b_var : ndarray, shape (n_perturbations, n_genes)
        The same over the two halves; half A holds :math:`\\lfloor n_p/2 \\rfloor` cells drawn
        without replacement with ``seed``, half B the rest.
    half_a_n, half_b_n : ndarray of int64, shape (n_perturbations,)
    control_mean, control_var : ndarray, shape (n_genes,)
        The observed control (all control cells).
    control_n : int
    scale : {"log1p", "counts"}
        Scale of the stored values (``"counts"``: log1p-normalised while reading).
    params : mapping
        ``perturbation_key``, ``layer``, ``target_sum``, ``seed``, ``source``.
    statistics : GroupStatistics, optional
        The whole-truth statistics these arrays come from (the perturbations in order, then the
        control; ``mean``, ``var`` and ``control_mean``, ``control_var`` are views of its rows),
        for effect sizes with the package's one Welch test (:func:`~shrinkpert.estimate_effects`).
    """

    perturbations: pd.Index
    genes: pd.Index
    control: str
    mean: np.ndarray
    var: np.ndarray
    n_cells: np.ndarray
    half_a_mean: np.ndarray
    half_a_var: np.ndarray
    half_a_n: np.ndarray
    half_b_mean: np.ndarray
    half_b_var: np.ndarray
    half_b_n: np.ndarray
    control_mean: np.ndarray
    control_var: np.ndarray
    control_n: int
    scale: str
    params: Mapping[str, Any] = field(default_factory=dict)
    statistics: Any = None

    def __post_init__(self) -> None:
        for name in ("mean", "var", "half_a_mean", "half_a_var", "half_b_mean", "half_b_var",
                     "control_mean", "control_var"):
            object.__setattr__(self, name, kept_readonly(getattr(self, name)))  # no copy of frozen arrays
        for name in ("n_cells", "half_a_n", "half_b_n"):
            values = np.asarray(getattr(self, name))
            whole = values.dtype.kind != "f" or bool(np.all(values == np.round(values)))
            arr = np.array(values, dtype=np.int64 if whole else np.float64)  # effective numbers stay float
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "perturbations", pd.Index(self.perturbations, name="perturbation"))
        object.__setattr__(self, "genes", pd.Index(self.genes, name="gene"))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def versus_control(self, mean: np.ndarray, var: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, Any]:
        r"""Differences from the observed control and their Welch test, for pseudobulks of any side.

        :math:`\bar x_{pg} - \bar x_{cg}` with :func:`~shrinkpert.stats.testing.welch` on the
        variance terms :math:`s^2/n` (control variance floor); an undefined variance (a group of one
        cell) counts as 0. Returns ``(difference, WelchTest)``.
        """
        return mean - self.control_mean[None, :], self.welch_versus_control(var, n)

    def welch_versus_control(self, var: np.ndarray, n: np.ndarray) -> Any:
        """The Welch test of :meth:`versus_control` alone (it depends on the variances and sizes only)."""
        from ..stats.testing import welch

        n = np.asarray(n, dtype=np.float64)[:, None]
        terms = np.nan_to_num(var, nan=0.0)
        terms /= n  # in place: one P × G temporary, not two
        return welch(terms, n, np.nan_to_num(self.control_var, nan=0.0)[None, :] / self.control_n, self.control_n)


def summarize_truth(
    truth: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    scale: str = "auto",
    layer: str | None = None,
    target_sum: float = TARGET_SUM,
    perturbations: Any = None,
    seed: int | np.random.Generator = 0,
    exclude: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> TruthSummary:
    """Full and split-half pseudobulks of the true cells in one streaming pass.

    Parameters
    ----------
    truth
        Cells: AnnData (in memory or backed) or ``.h5ad`` path; read, never modified.
    perturbation_key, control
        ``obs`` column of perturbation labels and the control label.
    scale
        ``"auto"`` (:func:`detect_scale`), ``"log1p"`` (values are natural log1p of counts per
        ``target_sum``; used as stored) or ``"counts"`` (log1p-normalised while reading).
    layer, target_sum, chunk_size, n_threads, progress
        As in :func:`shrinkpert.group_statistics`.
    perturbations
        Perturbations to keep (default every label except the control); cells of other labels
        are ignored.
    seed
        Seed of the half split (non-negative int or ``numpy.random.Generator``). Each
        perturbation's halves are drawn from a stream keyed by the seed and its label, so they do
        not change when other perturbations are added to or removed from the truth.
    exclude
        Boolean per cell (``obs`` order): cells to leave out, e.g. escaping cells
        (``p_perturbed`` below a threshold), so that the truth is built from perturbed cells only.
    weights
        Non-negative weight per cell (``obs`` order), e.g. the posterior probability of being
        perturbed: means are weighted, variances use reliability weights and cell counts are
        Kish's effective numbers (:func:`~shrinkpert.stats.cell_pass` with ``weights``:
        :math:`\\bar y = \\sum w y / W`, :math:`s^2 = \\sum w (y - \\bar y)^2 / (W - \\sum w^2 / W)`,
        :math:`n_\\mathrm{eff} = W^2 / \\sum w^2`), for the whole truth and each half.

    Returns
    -------
    TruthSummary

    Raises
    ------
    MissingKeyError
        The column, the control or a requested perturbation is absent.
    InputError
        A perturbation has fewer than 2 cells (it cannot be split), or the scale is ambiguous.
    """
    from ..stats.group import group_statistics

    if scale not in SCALES:
        raise InputError(f"scale must be one of {SCALES}, got {scale!r}.")
    data = validate(truth, side="truth", perturbation_key=perturbation_key, control=control, layer=layer,
                    scale=scale)
    if exclude is not None:
        exclude = np.asarray(exclude)
        if exclude.dtype != bool or exclude.shape != (data.shape[0],):
            raise InputError(f"exclude must be a boolean array with one entry per cell ({data.shape[0]}); "
                             f"got dtype {exclude.dtype} and shape {exclude.shape}.")
        data = data.drop_cells(exclude)
    labels = data.labels()
    present = pd.Index(sorted(set(labels.dropna())))
    if perturbations is None:
        keep = data.perturbations
    else:
        if isinstance(perturbations, str):
            raise InputError(f"perturbations={perturbations!r} is a single string; pass a list of labels.")
        keep = pd.Index(sorted({str(p) for p in perturbations}))
        missing = keep.difference(present)
        if len(missing):
            raise MissingKeyError(f"perturbations {missing[:10].tolist()} are not in obs[{perturbation_key!r}].")
        keep = keep[keep != control]
    if len(keep) == 0:
        raise InputError("No perturbation besides the control; nothing to evaluate.")
    values = labels.to_numpy(dtype=object)
    half = np.full(len(values), None, dtype=object)
    counts = labels.value_counts()
    small = [p for p in keep if counts.get(p, 0) < 2]
    if small:
        raise InputError(
            f"truth: perturbations {small[:10]} have fewer than 2 cells and cannot be split into halves; "
            "leave them out with exclude=."
        )
    # each perturbation's halves come from its own stream, keyed by (seed, label): they do not
    # depend on which other perturbations are in the truth (a split-independent positive control)
    base = int(seed.integers(2**63)) if isinstance(seed, np.random.Generator) else int(seed)
    for p, rows in zip(keep, rows_by_label(values, keep)):  # cells grouped once, not one scan per label
        order = np.random.default_rng([base, zlib.crc32(str(p).encode())]).permutation(len(rows))
        n_a = len(rows) // 2
        half[rows[order[:n_a]]] = "A"
        half[rows[order[n_a:]]] = "B"
    half[values == control] = "A"
    group_labels = pd.Series(
        [None if h is None else f"{v}" for v, h in zip(values, half)], index=labels.index, name=perturbation_key
    )
    half_labels = pd.Series(half, index=labels.index, name="half")
    normalize = None if data.scale == "log1p" else "log1p"
    stats = group_statistics(data, [group_labels, half_labels], normalize=normalize, target_sum=target_sum,
                             weights=weights, chunk_size=chunk_size, n_threads=n_threads, progress=progress)
    if weights is not None and (stats.weight_sum <= 0).any():
        empty = stats.groups[stats.weight_sum <= 0]
        raise InputError(f"truth: {[tuple(map(str, g)) for g in empty[:5]]} (perturbation, half) have no cell with a "
                         "positive weight; give each perturbation's cells positive weights.")
    count = (lambda s: s.n_cells) if weights is None else (lambda s: s.n_eff)  # Kish's numbers when weighted

    def rows(labels, what):
        idx = pd.Index(labels).get_indexer(keep)
        if (idx < 0).any():
            raise InputError(f"{what}: perturbations {keep[idx < 0][:5].tolist()} have no cells.")
        return idx

    # each half's rows taken straight from the (perturbation, half) groups: one copy of what is kept
    label, which = (stats.groups.get_level_values(k).astype(str) for k in (perturbation_key, "half"))
    ia, ib = (np.flatnonzero(which == h)[rows(label[which == h], f"half {h}")] for h in "AB")
    whole = stats.collapse(perturbation_key)
    rows(whole.groups.astype(str), "truth")  # every perturbation has cells, else an InputError naming them
    # the perturbations in order, then the control: the summary's full means and variances are
    # views of these statistics (one copy of each P × G array, not two)
    whole = whole.take([*keep, control], "truth")
    n = len(keep)
    return TruthSummary(
        perturbations=keep,
        genes=pd.Index(stats.genes.astype(str)),
        control=control,
        mean=whole.mean[:n],
        var=whole.var[:n],
        n_cells=count(whole)[:n],
        half_a_mean=_freeze(stats.mean[ia]),
        half_a_var=_freeze(stats.var[ia]),
        half_a_n=count(stats)[ia],
        half_b_mean=_freeze(stats.mean[ib]),
        half_b_var=_freeze(stats.var[ib]),
        half_b_n=count(stats)[ib],
        control_mean=whole.mean[n],
        control_var=whole.var[n],
        control_n=int(round(float(count(whole)[n]))),
        scale=data.scale,
        statistics=whole,
        params={
            "perturbation_key": perturbation_key,
            "layer": layer,
            "target_sum": target_sum,
            "seed": seed if isinstance(seed, int) else "Generator",
            "source": stats.params.get("source"),
        },
    )
