"""Per-gene population statistics, frozen and versioned: :func:`build_population_reference`.

A :class:`PopulationReference` summarises one population of cells gene by gene — an atlas, the
control cells of a screen, another screen — or a published table of per-gene statistics. It is
computed once, saved with its provenance and applied anywhere; nothing in it depends on the
perturbations it is later used to weight or score, so weights and deltas built from it are
split-independent.

Statistics (for gene :math:`j` over the :math:`n` selected cells with raw counts
:math:`y_{ij}` and library sizes :math:`L_i = \\sum_j y_{ij}`):

.. math::

    \\bar y_j = \\frac1n \\sum_i y_{ij}, \\qquad
    s_j^2 = \\frac{1}{n-1} \\sum_i (y_{ij} - \\bar y_j)^2, \\qquad
    d_j = \\frac1n \\#\\{i: y_{ij} > 0\\}, \\qquad
    r_j = \\frac{\\sum_i y_{ij}}{\\sum_i L_i},

    \\hat\\phi_j = \\max\\Big(\\frac{s_j^2 - \\bar y_j}{\\bar y_j^2}, 0\\Big)
    \\quad (\\mathrm{Var}\\,y = \\mu + \\phi\\mu^2), \\qquad
    m_j = \\frac1n \\sum_i x_{ij}, \\quad v_j = \\frac{1}{n-1}\\sum_i (x_{ij} - m_j)^2,

with :math:`x_{ij} = \\log(1 + y_{ij}\\, s / L_i)` (``normalize="log1p"``, :math:`s` =
``target_sum``) or :math:`y_{ij}\\,s/L_i` (``"total"``). The dispersion is the method-of-moments
estimate on raw counts; it includes the extra variance from library-size differences between
cells, so it is an upper bound on the biological dispersion.

File format (``save``/``load``), ``encoding-version`` 1: a single HDF5 file with

* root attributes ``encoding-type = "shrinkpert.population_reference"``,
  ``encoding-version = "1"``, ``metadata`` (JSON text: ``name``, ``n_cells``, ``gene_id_type``,
  ``scale``, ``target_sum``, ``params``, ``provenance``) and ``payload_sha256``;
* ``/genes``: UTF-8 strings, one per gene;
* ``/statistics/<field>``: little-endian float64 vectors, one per field in
  :data:`FIELDS` order (``mean, var, detection, dispersion, relative_expression,
  expression_mean, expression_var``; NaN where unknown).

``payload_sha256`` is the SHA-256 of ``b"shrinkpert.population_reference/1\\n"`` + the metadata
text (UTF-8) + ``b"\\n"`` + the genes joined by ``"\\n"`` (UTF-8) + ``b"\\n"`` + for each field its
name, a NUL byte and its 8-byte little-endian values. ``load`` recomputes it and refuses a file
whose payload does not match, so a corrupted or truncated file raises an error instead of
returning a wrong reference. Any HDF5 reader (h5py, rhdf5, HDFView) can read the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._io import atomic_path, provenance, sha256_file
from .._vocab import TARGET_SUM
from ..data.read import backing_path, read_annotations
from ..errors import CountsError, GeneMismatchError, InputError, MissingKeyError, ShrinkpertWarning
from ._cells import fingerprint, select_cells
from ._genes import detect_gene_id_type, match_genes
from ._nbmodel import derive_from_nb

__all__ = ["FIELDS", "PopulationReference", "build_population_reference"]

log = logging.getLogger("shrinkpert")

FIELDS = ("mean", "var", "detection", "dispersion", "relative_expression", "expression_mean", "expression_var")
"""Per-gene statistics of a :class:`PopulationReference`, in file order."""

ENCODING_TYPE = "shrinkpert.population_reference"
ENCODING_VERSION = "1"
_SCALES = ("log1p", "total", None)
_TABLE_FIELDS = FIELDS + ("size",)


def _freeze(values: Any, n: int, name: str) -> np.ndarray:
    array = np.array(values, dtype=np.float64)  # a private copy: callers' arrays stay writable
    if array.shape != (n,):
        raise InputError(f"{name} has shape {array.shape}; expected one value per gene ({n},).")
    array.setflags(write=False)
    return array


def _jsonable(value: Any) -> Any:
    """A JSON-round-trippable copy (tuples become lists, numpy scalars Python numbers)."""

    def default(obj):
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, (np.ndarray, pd.Index)):
            return list(obj.tolist())
        if isinstance(obj, Mapping):
            return dict(obj)
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable")

    return json.loads(json.dumps(value, default=default))


def _payload_digest(meta_text: str, genes: Sequence[str], arrays: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    h.update(f"{ENCODING_TYPE}/{ENCODING_VERSION}\n".encode())
    h.update(meta_text.encode("utf-8"))
    h.update(b"\n")
    h.update("\n".join(genes).encode("utf-8"))
    h.update(b"\n")
    for name in FIELDS:
        h.update(name.encode() + b"\0")
        h.update(np.ascontiguousarray(arrays[name], dtype="<f8").tobytes())
    return h.hexdigest()


@dataclass(frozen=True, eq=False, repr=False)
class PopulationReference:
    """Per-gene statistics of a reference population, with provenance.

    Build one with :func:`build_population_reference` (from cells) or
    :meth:`from_table` (from published per-gene statistics); keep it with :meth:`save` and
    :meth:`load`; map it onto another gene list with :meth:`align`. The formulas are in the
    module docstring.

    Attributes
    ----------
    genes : pandas.Index
        Gene identifiers (unique), named ``"gene"``.
    mean, var : ndarray of float64, shape (n_genes,)
        Mean and variance (ddof=1) of raw counts per cell (NaN when the input was not counts).
    detection : ndarray of float64
        Fraction of cells in which the gene is detected.
    dispersion : ndarray of float64
        Negative-binomial dispersion :math:`\\phi` (:math:`\\mathrm{Var} = \\mu + \\phi\\mu^2`), method
        of moments on counts, clipped at 0; NaN for genes never detected. ``size`` is :math:`1/\\phi`.
    relative_expression : ndarray of float64
        The gene's share of all counts, :math:`\\sum_i y_{ij} / \\sum_i L_i`.
    expression_mean, expression_var : ndarray of float64
        Mean and variance (ddof=1) of normalised expression on ``scale``.
    n_cells : int or None
        Cells the statistics come from (None when a table does not say).
    name : str
        Short name of the reference (e.g. the source file).
    gene_id_type : str
        ``"ensembl"`` or ``"symbol"``.
    scale : str or None
        Scale of ``expression_*``: ``"log1p"`` (:math:`\\log(1 + y s/L)`), ``"total"``
        (:math:`y s/L`) or None (values as stored).
    target_sum : float or None
        :math:`s` of the normalisation.
    params : mapping
        How the statistics were computed (layer, cell selection, passes, alignment report).
    provenance : mapping
        Source name and checksum, package version, creation time.
    """

    genes: pd.Index
    mean: np.ndarray
    var: np.ndarray
    detection: np.ndarray
    dispersion: np.ndarray
    relative_expression: np.ndarray
    expression_mean: np.ndarray
    expression_var: np.ndarray
    n_cells: int | None
    name: str
    gene_id_type: str
    scale: str | None
    target_sum: float | None
    params: Mapping[str, Any]
    provenance: Mapping[str, Any]

    def __post_init__(self) -> None:
        genes = pd.Index([str(g) for g in self.genes], dtype=object, name="gene")
        if genes.has_duplicates:
            dup = genes[genes.duplicated()][:5].tolist()
            raise InputError(f"Reference genes are duplicated (e.g. {dup!r}); each gene must appear once.")
        object.__setattr__(self, "genes", genes)
        for name in FIELDS:
            object.__setattr__(self, name, _freeze(getattr(self, name), len(genes), name))
        if self.scale not in _SCALES:
            raise InputError(f"scale={self.scale!r} is not one of {_SCALES!r}.")
        if self.gene_id_type not in ("ensembl", "symbol"):
            raise InputError(f"gene_id_type={self.gene_id_type!r} must be 'ensembl' or 'symbol'.")
        object.__setattr__(self, "n_cells", None if self.n_cells is None else int(self.n_cells))
        object.__setattr__(self, "name", str(self.name))
        object.__setattr__(self, "target_sum", None if self.target_sum is None else float(self.target_sum))
        object.__setattr__(self, "params", MappingProxyType(_jsonable(dict(self.params))))
        object.__setattr__(self, "provenance", MappingProxyType(_jsonable(dict(self.provenance))))

    # ------------------------------------------------------------------ views
    def __repr__(self) -> str:
        return (f"PopulationReference(name={self.name!r}, n_genes={len(self.genes)}, n_cells={self.n_cells}, "
                f"scale={self.scale!r}, gene_id_type={self.gene_id_type!r})")

    @property
    def size(self) -> np.ndarray:
        """Negative-binomial size :math:`\\theta = 1/\\phi` (inf for Poisson-like genes)."""
        with np.errstate(divide="ignore"):
            return 1.0 / self.dispersion

    @property
    def expression_sd(self) -> np.ndarray:
        """Standard deviation of normalised expression, :math:`\\sqrt{v_j}`."""
        return np.sqrt(self.expression_var)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: one row per gene, one column per statistic."""
        frame = pd.DataFrame({name: np.array(getattr(self, name)) for name in FIELDS})
        frame.insert(0, "gene", self.genes.to_numpy())
        return frame

    def summary(self) -> pd.DataFrame:
        """One row: genes, cells, genes detected, median statistics."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns of tables
            row = {
                "name": self.name,
                "n_genes": len(self.genes),
                "n_cells": self.n_cells,
                "scale": self.scale,
                "genes_detected": int(np.sum(self.detection > 0)),
                "median_mean": float(np.nanmedian(self.mean)) if np.isfinite(self.mean).any() else np.nan,
                "median_dispersion": float(np.nanmedian(self.dispersion)) if np.isfinite(self.dispersion).any() else np.nan,
                "median_expression_mean": float(np.nanmedian(self.expression_mean))
                if np.isfinite(self.expression_mean).any() else np.nan,
            }
        return pd.DataFrame([row])

    def equals(self, other: Any) -> bool:
        """True when ``other`` holds the same genes, statistics (NaN = NaN) and metadata."""
        if not isinstance(other, PopulationReference) or not self.genes.equals(other.genes):
            return False
        same_arrays = all(np.array_equal(getattr(self, f), getattr(other, f), equal_nan=True) for f in FIELDS)
        return same_arrays and self._metadata() == other._metadata()

    def _metadata(self) -> dict:
        return {
            "name": self.name,
            "n_cells": self.n_cells,
            "gene_id_type": self.gene_id_type,
            "scale": self.scale,
            "target_sum": self.target_sum,
            "params": dict(self.params),
            "provenance": dict(self.provenance),
        }

    def _fields(self, **changes) -> dict:
        fields = {name: getattr(self, name) for name in self.__dataclass_fields__}
        fields.update(changes)
        return fields

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, *, force: bool = False) -> Path:
        """Write the reference to one HDF5 file at ``path``, atomically.

        The format is described in :mod:`shrinkpert.reference.population`; the payload checksum
        is stored in the file and verified by :meth:`load`.

        Parameters
        ----------
        path
            Destination file (conventionally ``*.h5``).
        force
            Overwrite an existing file.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        OutputExistsError
            ``path`` exists and ``force`` is false.
        """
        import h5py

        meta_text = json.dumps(self._metadata(), sort_keys=True)
        genes = self.genes.tolist()
        arrays = {name: getattr(self, name) for name in FIELDS}
        digest = _payload_digest(meta_text, genes, arrays)
        with atomic_path(path, force=force) as tmp:
            with h5py.File(tmp, "w") as fh:
                fh.attrs["encoding-type"] = ENCODING_TYPE
                fh.attrs["encoding-version"] = ENCODING_VERSION
                fh.attrs["metadata"] = meta_text
                fh.attrs["payload_sha256"] = digest
                fh.create_dataset("genes", data=np.array(genes, dtype=object), dtype=h5py.string_dtype("utf-8"))
                group = fh.create_group("statistics")
                for name in FIELDS:
                    group.create_dataset(name, data=np.asarray(arrays[name], dtype="<f8"))
        log.info("Saved population reference %r (%d genes) to %s", self.name, len(genes), path)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PopulationReference:
        """Read a reference written by :meth:`save`, verifying its payload checksum.

        Raises
        ------
        InputError
            The file is missing, not a shrinkpert population reference, written by a newer
            format version, truncated, or corrupted (checksum mismatch).
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise InputError(f"Population reference file {str(path)!r} does not exist.")
        broken = (f"{str(path)!r} is not a readable shrinkpert population reference: the file is truncated "
                  "or corrupted. Rebuild it with build_population_reference() and save() it again.")
        try:
            with h5py.File(path, "r") as fh:
                enc = fh.attrs.get("encoding-type")
                if enc != ENCODING_TYPE:
                    raise InputError(
                        f"{str(path)!r} is an HDF5 file but not a shrinkpert population reference "
                        f"(encoding-type {enc!r}); pass a file written by PopulationReference.save()."
                    )
                version = str(fh.attrs.get("encoding-version"))
                if version != ENCODING_VERSION:
                    raise InputError(
                        f"{str(path)!r} uses population-reference format version {version!r}; this "
                        f"shrinkpert reads version {ENCODING_VERSION!r}. Update shrinkpert."
                    )
                meta_text = str(fh.attrs["metadata"])
                stored = str(fh.attrs["payload_sha256"])
                genes = [str(g) for g in fh["genes"].asstr()[...]]
                arrays = {name: np.asarray(fh["statistics"][name][...], dtype=np.float64) for name in FIELDS}
        except InputError:
            raise
        except (OSError, KeyError, ValueError, TypeError, RuntimeError, UnicodeDecodeError) as err:
            raise InputError(broken) from err
        if _payload_digest(meta_text, genes, arrays) != stored:
            raise InputError(
                f"{str(path)!r} failed its checksum: the stored statistics do not match payload_sha256, "
                "so the file is corrupted. Rebuild the reference (or restore the file from a backup)."
            )
        try:
            meta = json.loads(meta_text)
            return cls(genes=genes, **arrays, **meta)
        except (ValueError, TypeError) as err:  # a consistent but hand-edited metadata record
            raise InputError(broken) from err

    # ------------------------------------------------------------------ tables
    @classmethod
    def from_table(
        cls,
        frame: pd.DataFrame | str | os.PathLike,
        *,
        gene_key: str = "gene",
        columns: Mapping[str, str] | None = None,
        dataset: str | None = None,
        dataset_key: str = "dataset",
        umi_per_cell: float | None = None,
        target_sum: float = TARGET_SUM,
        scale: str | None = "log1p",
        n_cells: int | None = None,
        name: str | None = None,
        gene_id_type: str | None = None,
    ) -> PopulationReference:
        """A reference from published per-gene statistics (e.g. perturbplan's baseline tables).

        Parameters
        ----------
        frame
            Table with one row per gene (per dataset), or a path to a CSV/TSV file (``.gz``
            allowed).
        gene_key
            Column with the gene identifiers.
        columns
            Mapping table column -> statistic, the statistic being one of :data:`FIELDS` or
            ``"size"`` (NB size :math:`\\theta`, stored as :math:`\\phi = 1/\\theta`). Default:
            columns already named like a statistic.
        dataset
            Rows to use when the table holds several datasets (``dataset_key`` column).
        dataset_key
            Column naming the dataset of each row.
        umi_per_cell
            Mean library size :math:`L`. With ``relative_expression`` and a dispersion it fills
            the statistics the table lacks from a negative binomial with mean
            :math:`\\mu = r L` and the same library size in every cell: ``mean`` :math:`\\mu`,
            ``var`` :math:`\\mu + \\phi\\mu^2`, ``detection`` :math:`1 - (1 + \\phi\\mu)^{-1/\\phi}`,
            and ``expression_mean``/``expression_var`` as the exact NB moments of
            :math:`\\log(1 + y s/L)` (``scale="log1p"``) or :math:`y s/L` (``"total"``).
        target_sum
            :math:`s` of that normalisation.
        scale
            Scale of ``expression_*`` (given or derived).
        n_cells
            Cells behind the table, if known.
        name
            Reference name (default: the dataset or file name).
        gene_id_type
            ``"ensembl"`` or ``"symbol"``; detected from the identifiers by default.

        Returns
        -------
        PopulationReference

        Raises
        ------
        MissingKeyError
            ``gene_key``, ``dataset_key`` or a mapped column is absent, or ``dataset`` is not in
            the table.
        InputError
            No statistic columns, several datasets without ``dataset=``, duplicated or missing
            gene identifiers, negative values.

        Examples
        --------
        >>> import pandas as pd
        >>> table = pd.DataFrame({"gene": ["A", "B"], "relative_expression": [1e-4, 1e-3],
        ...                       "expression_size": [0.5, 2.0]})
        >>> ref = PopulationReference.from_table(table, columns={"relative_expression": "relative_expression",
        ...                                      "expression_size": "size"}, umi_per_cell=20000)
        >>> ref.mean.round(1).tolist()
        [2.0, 20.0]
        """
        source_name, source_sha = None, None
        if isinstance(frame, (str, os.PathLike)):
            path = Path(frame)
            if not path.is_file():
                raise InputError(f"Table {str(path)!r} does not exist.")
            sep = "\t" if ".tsv" in path.name or ".txt" in path.name else ","
            source_name, source_sha = path.name, sha256_file(path)
            frame = pd.read_csv(path, sep=sep)
        elif not isinstance(frame, pd.DataFrame):
            raise InputError(f"frame must be a pandas DataFrame or a path to a CSV/TSV file, got {type(frame).__name__}.")
        else:
            source_name = "DataFrame"
            source_sha = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
        if gene_key not in frame.columns:
            raise MissingKeyError(f"The table has no column gene_key={gene_key!r}; columns: {list(frame.columns)!r}.")
        if dataset_key in frame.columns:
            present = pd.unique(frame[dataset_key].astype(str))
            if dataset is None and len(present) > 1:
                raise InputError(
                    f"The table holds {len(present)} datasets in {dataset_key!r} ({list(present)[:10]!r}); "
                    "pass dataset=<one of them>."
                )
            if dataset is not None:
                if str(dataset) not in set(present):
                    raise MissingKeyError(f"dataset={dataset!r} is not in {dataset_key!r}; present: {list(present)!r}.")
                frame = frame[frame[dataset_key].astype(str) == str(dataset)]
        elif dataset is not None:
            raise MissingKeyError(f"dataset={dataset!r} was given but the table has no {dataset_key!r} column.")
        if columns is None:
            columns = {c: c for c in frame.columns if c in _TABLE_FIELDS}
        columns = dict(columns)
        for col, field in columns.items():
            if col not in frame.columns:
                raise MissingKeyError(f"Column {col!r} (given in columns=) is not in the table; columns: {list(frame.columns)!r}.")
            if field not in _TABLE_FIELDS:
                raise InputError(f"columns maps {col!r} to {field!r}, which is not one of {_TABLE_FIELDS!r}.")
        if not columns:
            raise InputError(
                f"No statistic columns found; name them like {_TABLE_FIELDS!r} or pass columns={{table column: statistic}}."
            )
        if len(set(columns.values())) != len(columns):
            raise InputError("columns maps two table columns to the same statistic; map each statistic once.")
        if scale not in _SCALES:
            raise InputError(f"scale={scale!r} is not one of {_SCALES!r}.")
        genes = frame[gene_key]
        if genes.isna().any():
            raise InputError(f"{int(genes.isna().sum())} rows have no gene identifier in {gene_key!r}; drop them first.")
        genes = genes.astype(str)
        if genes.duplicated().any():
            dup = genes[genes.duplicated()].head(5).tolist()
            raise InputError(f"Gene identifiers repeat in {gene_key!r} (e.g. {dup!r}); pass dataset= or deduplicate.")
        n = len(genes)
        stats = {f: np.full(n, np.nan) for f in FIELDS}
        for col, field in columns.items():
            values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
            if (values < 0).any():
                raise InputError(f"Column {col!r} has negative values; per-gene statistics are non-negative.")
            if field == "size":
                with np.errstate(divide="ignore"):
                    stats["dispersion"] = 1.0 / values
            else:
                stats[field] = values
        derived = []
        if umi_per_cell is not None:
            if not (np.isfinite(umi_per_cell) and umi_per_cell > 0):
                raise InputError(f"umi_per_cell must be a positive number, got {umi_per_cell!r}.")
            derived = derive_from_nb(stats, float(umi_per_cell), float(target_sum), scale)
        has_expression = any(np.isfinite(stats[f]).any() for f in ("expression_mean", "expression_var"))
        scale_used = scale if has_expression else None
        name = name or (str(dataset) if dataset is not None else source_name)
        params = {
            "kind": "table",
            "columns": columns,
            "dataset": dataset,
            "umi_per_cell": umi_per_cell,
            "derived": derived,
            "model": "negative binomial, library size umi_per_cell in every cell" if derived else None,
        }
        prov = provenance(source=source_name, source_sha256=source_sha, source_checksum="sha256 of the table file"
                          if source_name != "DataFrame" else "sha256 of the DataFrame as CSV")
        return cls(genes=genes.tolist(), **stats, n_cells=n_cells, name=name,
                   gene_id_type=gene_id_type or detect_gene_id_type(genes.tolist()), scale=scale_used,
                   target_sum=float(target_sum) if scale_used is not None else None, params=params, provenance=prov)

    # ------------------------------------------------------------------ genes
    def align(
        self,
        genes: Sequence[str] | pd.Index,
        *,
        mapping: pd.DataFrame | Mapping[str, str] | bool | None = None,
        missing: str = "warn",
    ) -> PopulationReference:
        """The same reference on another gene list (symbols or Ensembl IDs), in that order.

        Each requested gene is matched exactly (Ensembl version suffixes ignored); an unmatched
        one is translated between Ensembl IDs and symbols with ``mapping`` and matched if it
        names exactly one reference gene that no other requested gene uses. Genes left without
        a match get NaN statistics; they are reported, never dropped.

        Parameters
        ----------
        genes
            Target gene identifiers (unique).
        mapping
            ``None``: the bundled GENCODE v41 ID ↔ symbol table
            (``shrinkpert/reference/_bundled``). A DataFrame whose first two columns are Ensembl
            ID and symbol. A mapping target identifier -> reference identifier. ``False``: exact
            matches only.
        missing
            ``"warn"`` (a :class:`ShrinkpertWarning` naming the unmatched genes), ``"raise"``
            (:class:`GeneMismatchError`) or ``"ignore"``; the report is in
            ``params["aligned"]`` in every case.

        Returns
        -------
        PopulationReference
            Statistics for ``genes``; ``params["aligned"]`` lists ``unmatched`` and ``ambiguous``
            genes and counts exact and translated matches.

        Raises
        ------
        GeneMismatchError
            Some genes are unmatched and ``missing="raise"``.
        InputError
            Duplicated target genes or a bad ``missing``/``mapping``.
        """
        if missing not in ("warn", "raise", "ignore"):
            raise InputError(f"missing={missing!r} must be 'warn', 'raise' or 'ignore'.")
        target = [str(g) for g in genes]
        if len(set(target)) != len(target):
            dup = pd.Index(target)[pd.Index(target).duplicated()][:5].tolist()
            raise InputError(f"align() got duplicated genes (e.g. {dup!r}); pass each gene once.")
        rows, status, source = match_genes(self.genes, target, mapping)
        unmatched = [target[i] for i in np.flatnonzero(status == "unmatched")]
        ambiguous = [target[i] for i in np.flatnonzero(status == "ambiguous")]
        report = {
            "n_genes": len(target),
            "n_exact": int(np.sum(status == "exact")),
            "n_mapped": int(np.sum(status == "mapped")),
            "n_unmatched": len(unmatched),
            "n_ambiguous": len(ambiguous),
            "unmatched": unmatched,
            "ambiguous": ambiguous,
            "mapping": source,
            "from_genes": len(self.genes),
        }
        lost = unmatched + ambiguous
        if lost:
            text = (f"{len(lost)} of {len(target)} genes have no unique match in reference {self.name!r} "
                    f"({len(unmatched)} unmatched, {len(ambiguous)} ambiguous; e.g. {lost[:8]!r}); their "
                    "statistics are NaN. The lists are in .params['aligned'].")
            if missing == "raise":
                raise GeneMismatchError(text + " Pass mapping= or missing='warn' to keep going.")
            if missing == "warn":
                warnings.warn(text, ShrinkpertWarning, stacklevel=2)
        take = np.where(rows >= 0, rows, 0)
        arrays = {f: np.where(rows >= 0, getattr(self, f)[take], np.nan) for f in FIELDS}
        params = dict(self.params)
        params["aligned"] = report
        return PopulationReference(**self._fields(genes=target, **arrays, params=params,
                                                  gene_id_type=detect_gene_id_type(target)))


def build_population_reference(
    source: Any,
    *,
    layer: str | None = None,
    normalize: str | None = "log1p",
    target_sum: float = TARGET_SUM,
    cells: Any = None,
    name: str | None = None,
    gene_id_type: str | None = None,
    checksum: bool = True,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> PopulationReference:
    """Per-gene statistics of a population of cells, streamed from any AnnData or ``.h5ad``.

    Parameters
    ----------
    source
        AnnData (in memory or backed) or path to an ``.h5ad`` file — an atlas, the control
        cells of a screen, another screen. Backed files are read block by block; the matrix is
        never loaded or copied.
    layer
        Layer with raw counts (default ``X``).
    normalize
        Scale of ``expression_mean``/``expression_var``: ``"log1p"`` (:math:`\\log(1 + y s/L)`),
        ``"total"`` (:math:`y s/L`) or ``None`` (the stored values are already normalised; the
        count statistics ``mean, var, dispersion, relative_expression`` are then NaN).
    target_sum
        :math:`s`, counts per cell after normalisation.
    cells
        Cells to use (default: all): a boolean mask over cells, a list of obs names, or a
        mapping ``{obs column: value or list of values}`` (e.g. ``{"perturbation":
        "non-targeting"}`` for the control cells; several columns must all match).
    name
        Short name recorded with the reference (default: the file name).
    gene_id_type
        ``"ensembl"`` or ``"symbol"`` (detected from ``var_names`` by default).
    checksum
        Record the SHA-256 of the source (the whole file for a path; the stored matrix and names
        for an in-memory AnnData). ``False`` skips the extra read.
    chunk_size, n_threads, progress
        Streaming options, as in :func:`shrinkpert.group_statistics`.

    Returns
    -------
    PopulationReference

    Raises
    ------
    MissingKeyError
        A ``cells=`` column, value or obs name is absent, or ``layer`` is missing.
    CountsError
        ``normalize`` is set but the matrix does not hold raw counts.
    InputError
        Fewer than two cells selected, or a bad ``normalize``.

    Notes
    -----
    Two streaming passes of :func:`shrinkpert.group_statistics`, each with all selected cells in
    one group (unselected cells get a missing label, so no matrix is copied): one on raw counts
    (mean, variance, detection, library sizes → dispersion and relative expression) and one on
    the ``normalize`` scale (expression mean and variance). With ``normalize=None`` only the
    second pass runs. Formulas are in :mod:`shrinkpert.reference.population`.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> from shrinkpert.reference.population import build_population_reference
    >>> adata = sp.datasets.papalexi2021()
    >>> ref = build_population_reference(adata, cells={"perturbation": "non-targeting"})
    >>> ref.n_cells, len(ref.genes), ref.scale
    (1923, 299, 'log1p')
    """
    from ..stats.group import group_statistics

    if normalize not in _SCALES:
        raise InputError(f"normalize={normalize!r} is not one of {_SCALES!r}.")
    if not (np.isfinite(target_sum) and target_sum > 0):
        raise InputError(f"target_sum must be a positive number, got {target_sum!r}.")
    obs, var_names = read_annotations(source)
    mask, selection = select_cells(obs, cells)
    n_selected = int(mask.sum())
    if n_selected < 2:
        raise InputError(f"cells= selects {n_selected} cells; a reference needs at least 2 (a variance needs two).")
    labels = pd.Series(np.where(mask, "population", None), index=obs.index, name="population", dtype=object)
    options = dict(layer=layer, chunk_size=chunk_size, n_threads=n_threads, progress=progress)
    n_genes = len(var_names)
    nan = np.full(n_genes, np.nan)
    passes = []
    if normalize is not None:
        try:
            counts = group_statistics(source, labels, normalize=None, check_counts=True, **options)
        except CountsError as err:
            raise CountsError(
                f"build_population_reference(normalize={normalize!r}) needs raw counts: {err} "
                "Pass the raw-count layer with layer=..., or normalize=None if the values are already normalised."
            ) from err
        passes.append("counts")
        n = float(counts.n_cells[0])
        mean, var = counts.mean[0], counts.var[0]
        with np.errstate(invalid="ignore", divide="ignore"):
            dispersion = np.where(mean > 0, np.maximum(var - mean, 0.0) / mean**2, np.nan)
        detection = counts.n_nonzero[0] / n
    expr = group_statistics(source, labels, normalize=normalize, target_sum=target_sum,
                            check_counts=False, **options)
    passes.append(normalize or "as stored")
    if normalize is not None:
        library = float(expr.library_size[0])  # summed row totals (also for column-major storage)
        relative = counts.sum[0] / library if library > 0 else nan
    if normalize is None:
        mean = var = dispersion = relative = nan
        detection = expr.n_nonzero[0] / float(expr.n_cells[0])
    src_name, src_sha, src_what = (None, None, None)
    if checksum:
        src_name, src_sha, src_what = fingerprint(source, layer, chunk_size)
    else:
        path = backing_path(source)
        src_name = path.name if path is not None else "AnnData (in memory)"
    params = {
        "kind": "cells",
        "layer": layer,
        "normalize": normalize,
        "cells": selection,
        "n_cells_total": int(len(obs)),
        "passes": passes,
        "dispersion_method": "method of moments on raw counts, clipped at 0" if normalize is not None else None,
    }
    prov = provenance(source=src_name, source_sha256=src_sha, source_checksum=src_what, n_cells=n_selected)
    return PopulationReference(
        genes=[str(g) for g in var_names],
        mean=mean,
        var=var,
        detection=detection,
        dispersion=dispersion,
        relative_expression=relative,
        expression_mean=expr.mean[0],
        expression_var=expr.var[0],
        n_cells=n_selected,
        name=name or src_name,
        gene_id_type=gene_id_type or detect_gene_id_type([str(g) for g in var_names]),
        scale=normalize,
        target_sum=float(target_sum) if normalize is not None else None,
        params=params,
        provenance=prov,
    )
