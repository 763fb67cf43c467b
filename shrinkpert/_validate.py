"""The boundary: every input is validated and encoded here, once.

:func:`validate` takes what a user passes (an AnnData in memory, a backed AnnData or a path to an
``.h5ad`` file) and returns a :class:`CellData`: the checked and encoded design (perturbation
codes, the control, the genes, the exclusions, the scale) plus what it takes to stream the matrix.
Every public entry point calls :func:`validate` once per input and hands the :class:`CellData`
inward; internal functions take the encoded object, never a column name, so ``obs`` is decoded
once and every check below is written once.

The rules, the same for every entry point (each error names the side — ``pred``, ``truth``,
``train`` or ``data`` — the argument and the fix):

* the input is an AnnData or a readable ``.h5ad`` file (a truncated or damaged file is refused
  with its path and what h5py found);
* cell names and gene names are unique (the duplicates are listed);
* ``obs[perturbation_key]`` exists; labels in ``exclude`` are dropped (cells with them belong to
  no group); the control label is present with at least :data:`MIN_CONTROL_CELLS` cells (the count
  is given) — fewer makes a variance and every delta meaningless, and it is never only a warning;
* the matrix is 2-D and numeric; float16 and small or unsigned integer types are up-cast block by
  block (:func:`~shrinkpert.data.read.compute_dtype`), never changed in the input;
* ``scale="auto"`` is decided from the first block (:func:`detect_scale`): raw counts or natural
  log1p of counts per ``target_sum``; anything else is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._arrays import freeze
from ._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY
from .data.design import encode_labels
from .data.read import MatrixSource, backing_path, open_matrix, read_annotations
from .errors import InputError, MissingKeyError

__all__ = ["CellData", "EmittedCells", "validate", "detect_scale", "MIN_CONTROL_CELLS", "SIDES"]

#: Fewest control cells any entry point accepts.
MIN_CONTROL_CELLS = MIN_CELLS
#: Names of the inputs in messages.
SIDES = ("data", "pred", "truth", "train")


@dataclass(frozen=True, eq=False)
class CellData:
    """A validated, encoded cells × genes input (see :func:`validate`).

    Attributes
    ----------
    source : AnnData or pathlib.Path
        What the matrix is streamed from (never modified).
    side : str
        Name of the input in messages (``"data"``, ``"pred"``, ``"truth"``, ``"train"``).
    layer : str or None
        Layer read instead of ``X``.
    obs : pandas.DataFrame
        Cell annotations as read (not a copy of an in-memory AnnData's: never write to it).
    genes : pandas.Index
        Gene names (unique strings), in the stored column order.
    perturbation_key : str or None
        The label column (None when the input was validated without one).
    control : str or None
        The control label (None when no control is required and none is present).
    perturbations : pandas.Index
        Sorted labels of the perturbations: every label except the control and ``excluded``.
    codes : ndarray of int64, shape (n_cells,)
        ``k`` for a cell of ``perturbations[k]``, ``len(perturbations)`` for a control cell and
        ``-1`` for a cell without a label or with an excluded one. Read-only.
    excluded : tuple of str
        Labels dropped through ``exclude`` that were present.
    scale : {"counts", "log1p"} or None
        Detected or declared scale (None when not asked for).
    shape : tuple of int
        Cells × genes.
    """

    source: Any
    side: str
    layer: str | None
    obs: pd.DataFrame
    genes: pd.Index
    perturbation_key: str | None
    control: str | None
    perturbations: pd.Index
    codes: np.ndarray
    excluded: tuple[str, ...]
    scale: str | None
    shape: tuple[int, int]

    @property
    def control_code(self) -> int:
        """Code of control cells (``len(perturbations)``)."""
        return len(self.perturbations)

    @property
    def n_control(self) -> int:
        """Number of control cells."""
        return int((self.codes == self.control_code).sum()) if self.control is not None else 0

    @property
    def path(self) -> Path | None:
        """The ``.h5ad`` file streamed, or None for data in memory."""
        return self.source if isinstance(self.source, Path) else None

    def labels(self) -> pd.Series:
        """Per cell its label (perturbation or control), ``None`` for unlabelled or excluded cells."""
        names = np.array(list(self.perturbations) + ([self.control] if self.control is not None else []) + [None],
                         dtype=object)
        return pd.Series(names[self.codes], index=self.obs.index, name=self.perturbation_key)

    def n_cells(self) -> pd.Series:
        """Cells per perturbation (and the control, last)."""
        groups = list(self.perturbations) + ([self.control] if self.control is not None else [])
        counts = np.bincount(self.codes[self.codes >= 0], minlength=len(groups))
        return pd.Series(counts[: len(groups)], index=groups, name="n_cells")

    def column(self, key: str, what: str) -> pd.Series:
        """``obs[key]``, or a :class:`MissingKeyError` naming the side, the argument and the columns."""
        if key not in self.obs.columns:
            shown = ", ".join(map(repr, list(self.obs.columns)[:20])) or "(none)"
            raise MissingKeyError(f"{self.side}: obs has no column {key!r} ({what}); columns present: {shown}.")
        return self.obs[key]

    def drop_cells(self, drop: np.ndarray) -> CellData:
        """The same input with the cells where ``drop`` is True left out of every group."""
        drop = np.asarray(drop, dtype=bool)
        if drop.shape != self.codes.shape:
            raise InputError(f"{self.side}: a cell mask must have one entry per cell ({len(self.codes)}).")
        codes = np.where(drop, -1, self.codes)
        return CellData(**{**self.__dict__, "codes": freeze(codes)})

    def emitted(self, rows: Any, dtype: Any, label: str) -> EmittedCells:
        """These cells and labels as a prediction (``side="pred"``) whose matrix is made on demand:
        ``rows[start:stop]`` returns the CSR row block (``rows`` also has ``shape`` and ``nnz``),
        e.g. a baseline or an exploit arm built from the truth block by block."""
        return EmittedCells(**{**self.__dict__, "side": "pred", "layer": None}, rows=rows, dtype=np.dtype(dtype),
                            label=label)

    @contextlib.contextmanager
    def open(self) -> Iterator[MatrixSource]:
        """Open the matrix for block reading (see :func:`~shrinkpert.data.read.open_matrix`)."""
        with open_matrix(self.source, self.layer) as matrix:
            yield matrix


@dataclass(frozen=True, eq=False)
class EmittedCells(CellData):
    """A :class:`CellData` whose matrix is emitted block by block instead of read (see
    :meth:`CellData.emitted`)."""

    rows: Any = None
    dtype: Any = None
    label: str = ""

    @contextlib.contextmanager
    def open(self) -> Iterator[MatrixSource]:
        yield MatrixSource("csr", self.shape, self.dtype, self.rows, self.label)


def _source(data: Any, side: str) -> Any:
    if isinstance(data, CellData):
        return data.source
    if isinstance(data, (str, Path)) or hasattr(data, "__fspath__"):
        return Path(data)
    if not (hasattr(data, "obs") and hasattr(data, "var_names")):
        raise InputError(f"{side}: expected an AnnData, a backed AnnData or a path to an .h5ad file, "
                         f"got {type(data).__name__}.")
    path = backing_path(data)  # refuses views of backed objects
    return path if path is not None else data


def _unique(index: pd.Index, side: str, what: str, fix: str) -> None:
    if index.has_duplicates:
        dup = pd.unique(index[index.duplicated()])
        raise InputError(f"{side}: {what} names are duplicated ({len(dup)} names occur more than once, e.g. "
                         f"{list(dup[:8])!r}); make them unique with {fix}.")


def validate(
    data: Any,
    *,
    side: str = "data",
    perturbation_key: str | None = PERTURBATION_KEY,
    control: str | None = CONTROL,
    layer: str | None = None,
    exclude: Iterable[str] | None = None,
    scale: str | None = None,
    require_control: bool = True,
    min_control_cells: int = MIN_CONTROL_CELLS,
) -> CellData:
    """Validate and encode one input (the rules are in the module docstring).

    Parameters
    ----------
    data
        AnnData (in memory or backed), path to an ``.h5ad`` file, or a :class:`CellData` (then
        re-encoded only if the options differ).
    side
        Name of the input in messages: one of :data:`SIDES`, optionally followed by a name
        (``"pred 'model A'"``).
    perturbation_key
        ``obs`` column of perturbation labels; ``None`` to check only the file, names and matrix.
    control
        Control label.
    layer
        Layer to read instead of ``X``.
    exclude
        Labels whose cells belong to no group (e.g. ``["unassigned"]``). Labels absent from this
        input are ignored here; an entry point with a single input refuses them
        (:func:`check_excluded`).
    scale
        ``None`` (not needed), ``"auto"`` (detect), ``"counts"`` or ``"log1p"``.
    require_control
        Refuse an input without the control label.
    min_control_cells
        Fewest control cells accepted.

    Returns
    -------
    CellData

    Raises
    ------
    InputError
        Not an AnnData or readable ``.h5ad``; duplicate names; matrix shape or dtype; too few
        control cells; an ambiguous scale.
    MissingKeyError
        The label column, the control or the layer is absent.
    """
    if not isinstance(side, str) or side.split(" ")[0] not in SIDES:
        raise InputError(f"side must start with one of {SIDES}, got {side!r}.")
    excluded_request = _as_labels(exclude, "exclude")
    if isinstance(data, CellData) and (data.perturbation_key, data.control, data.layer) == (
            perturbation_key, control, layer) and set(data.excluded) >= set(excluded_request) and (
            scale is None or scale == data.scale or (scale == "auto" and data.scale is not None)):
        return data
    source = _source(data, side)
    obs, var_names = read_annotations(source)
    genes = pd.Index(pd.Index(var_names).astype(str), name="gene")
    _unique(pd.Index(obs.index), side, "Cell", "adata.obs_names_make_unique()")
    _unique(genes, side, "Gene", "adata.var_names_make_unique() or a subset of unique genes")
    with open_matrix(source, layer) as matrix:
        shape = matrix.shape
        label = matrix.label
    if shape != (len(obs), len(genes)):
        raise InputError(f"{side}: {label} has shape {shape} but obs × var is {(len(obs), len(genes))}.")

    codes = np.full(len(obs), -1, dtype=np.int64)
    perturbations = pd.Index([], dtype=object, name="perturbation")
    found_excluded: tuple[str, ...] = ()
    resolved_control = None
    if perturbation_key is not None:
        if perturbation_key not in obs.columns:
            shown = ", ".join(map(repr, list(obs.columns)[:20])) or "(none)"
            raise MissingKeyError(f"{side}: obs has no column {perturbation_key!r} (perturbation_key); columns "
                                  f"present: {shown}. Pass perturbation_key=<the column with perturbation labels>.")
        labels = obs[perturbation_key].astype("string").to_numpy(dtype=object, na_value=None)
        codes, perturbations, resolved_control, found_excluded = encode_labels(
            labels, control, exclude=excluded_request, require_control=require_control,
            where=f"obs[{perturbation_key!r}]", side=side)
        if resolved_control is not None:
            n_control = int((codes == len(perturbations)).sum())
            if n_control < min_control_cells:
                raise InputError(
                    f"{side}: the control {resolved_control!r} has {n_control} cell{'s' * (n_control != 1)}; at "
                    f"least {min_control_cells} are needed (its variance and every delta depend on it). Check "
                    "control= or add control cells."
                )
    resolved_scale = None
    if scale is not None:
        if scale == "auto":
            resolved_scale = detect_scale(source, layer=layer, side=side)
        elif scale in ("counts", "log1p"):
            resolved_scale = scale
        else:
            raise InputError(f"scale must be 'auto', 'counts' or 'log1p', got {scale!r}.")
    return CellData(source=source, side=side, layer=layer, obs=obs, genes=genes, perturbation_key=perturbation_key,
                    control=resolved_control, perturbations=perturbations, codes=freeze(codes),
                    excluded=found_excluded, scale=resolved_scale, shape=shape)


def _as_labels(values: Iterable[str] | None, name: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        return (values,)
    try:
        return tuple(str(v) for v in values)
    except TypeError:
        raise InputError(f"{name} must be a label or a list of labels, got {type(values).__name__}.") from None


def check_excluded(exclude: Iterable[str] | None, *inputs: CellData) -> None:
    """Refuse labels in ``exclude`` that no input has (a misspelling would otherwise drop nothing)."""
    wanted = set(_as_labels(exclude, "exclude"))
    found = set().union(*(set(d.excluded) for d in inputs)) if inputs else set()
    missing = sorted(wanted - found)
    if missing:
        sides = " or ".join(d.side for d in inputs)
        raise MissingKeyError(f"exclude: labels {missing!r} are not in obs[{inputs[0].perturbation_key!r}] of "
                              f"{sides}; check the spelling.")


def detect_scale(source: Any, *, layer: str | None = None, side: str = "data", max_rows: int = 4096) -> str:
    """Decide whether stored values are raw counts or log1p-normalised, or refuse.

    Reads the first block of the matrix (at most ``max_rows`` rows, or one gene block for
    column storage). Rules:

    * any NaN, inf or negative value: :class:`InputError` (neither counts nor log1p);
    * all values integers and some positive: ``"counts"``;
    * some value non-integer and the maximum below 15 (log1p of a count per 10⁴ is ≤ 9.3 for
      libraries below 10⁸): ``"log1p"`` (cell-eval's ``guess_is_lognorm`` rule);
    * otherwise (all zero, or fractional values ≥ 15 such as CPM or ``normalize_total`` without
      log): :class:`InputError` — pass ``scale=`` explicitly.

    Returns
    -------
    {"log1p", "counts"}
    """
    if isinstance(source, CellData):
        source, layer, side = source.source, source.layer, source.side
    with open_matrix(source, layer=layer) as matrix:
        block = matrix.first_block(max_rows) if min(matrix.shape) > 0 else None
        values = np.asarray(getattr(block.values, "data", block.values)).ravel() if block is not None else np.empty(0)
        if values.dtype.kind not in "fiu":  # e.g. bool; every test below is exact in a stored float or integer type
            values = values.astype(np.float64)
        label = f"{side}: {matrix.label}"
    if values.size and not np.all(np.isfinite(values)):
        raise InputError(f"{label}: the matrix holds NaN or inf values; clean them before evaluating.")
    if values.size and values.min() < 0:
        raise InputError(
            f"{label}: the matrix has negative values (min {values.min():.3g}); it is neither raw counts nor "
            "log1p-normalised. Pass counts or log1p(normalize_total) values."
        )
    positive = values[values > 0]
    if positive.size == 0:
        raise InputError(f"{label}: the first block is all zero, so the scale cannot be detected; pass scale=.")
    if bool(np.all(positive == np.round(positive))):
        return "counts"
    if positive.max() < 15:
        return "log1p"
    raise InputError(
        f"{label}: values are fractional with maximum {positive.max():.3g} >= 15, which is neither raw counts nor "
        "natural log1p of counts per 1e4; the scale is ambiguous. Pass scale='log1p' or scale='counts' explicitly "
        "(after converting the data)."
    )
