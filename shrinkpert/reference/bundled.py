"""Population references shipped with shrinkpert: :func:`population_reference`.

Each bundled reference is a frozen, versioned :class:`PopulationReference` built from public
per-gene statistics of unperturbed cells of one cell type — perturbplan's baseline expression
tables (Katsevich lab, MIT licence) — plus median transcript lengths, by
:func:`build_perturbplan_reference`. Nothing in them comes from any screen a user evaluates, so
weights and deltas computed from them do not depend on the train/test split
(``gene_weights(method="population", reference=population_reference("thp1_yao"))``).

For a perturbplan dataset with UMIs per cell :math:`L`, relative expression :math:`r_g` and NB
size :math:`\\theta_g`, the statistics are those of a negative binomial with mean
:math:`\\mu_g = r_g L` and dispersion :math:`\\phi_g = 1/\\theta_g` in every cell (formulas in
:meth:`PopulationReference.from_table`): ``expression_mean``/``expression_var`` are the exact
moments of :math:`\\log(1 + y\\, s/L)` with :math:`s = 10^4`.

Bundled (see ``shrinkpert/reference/_bundled/PROVENANCE.md``):

==================  =================================================  =======  ========
name                source (perturbplan dataset)                       genes    version
==================  =================================================  =======  ========
``thp1_yao``        THP-1 non-targeting cells, Yao et al. 2023         16,373   1
``k562_gasperini``  K562 cells, Gasperini et al. 2019                  19,942   1
==================  =================================================  =======  ========

The other six perturbplan cell types (K562 10x, K562 Ray, CD8 T cells, iPSC, iPSC neurons,
A549) are not shipped, to keep the package small; build them with
:func:`build_perturbplan_reference` from the same tables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from .._io import sha256_file
from .._vocab import TARGET_SUM
from ..errors import InputError, MissingKeyError
from .population import PopulationReference

__all__ = ["BundledReference", "BUNDLED", "population_reference", "population_references",
           "build_perturbplan_reference"]

STATISTICS_LICENCE = "MIT (perturbplan, Katsevich lab)"
LENGTHS_LICENCE = "LGPL (>= 2) (Bioconductor geneLenDataBase 1.34.0; UCSC hg19 ensGene/RefSeq tracks)"


@dataclass(frozen=True)
class BundledReference:
    """One shipped reference: where its file is and what it was built from.

    Attributes
    ----------
    name : str
        Name passed to :func:`population_reference`.
    dataset : str
        perturbplan dataset it was built from.
    cell_type : str
        Cells the statistics describe.
    study : str
        Underlying study and accession.
    version : str
        Version of this bundled reference (changes whenever its numbers change).
    file : str
        File name in ``shrinkpert/reference/_bundled``.
    sha256 : str
        SHA-256 of that file, recorded when it was built.
    """

    name: str
    dataset: str
    cell_type: str
    study: str
    version: str
    file: str
    sha256: str


BUNDLED: Mapping[str, BundledReference] = {
    ref.name: ref
    for ref in (
        BundledReference("thp1_yao", "THP1_Yao", "THP-1 (human monocytic leukaemia line), non-targeting cells",
                         "Yao et al. 2023, GSE221321", "1", "perturbplan_THP1_Yao.v1.h5",
                         "08e04f30eb09192cf960e930b2b807c4285d7646be69cbeb0f96771cf41004ad"),
        BundledReference("k562_gasperini", "K562_Gasperini", "K562 (human chronic myeloid leukaemia line)",
                         "Gasperini et al. 2019, GSE120861", "1", "perturbplan_K562_Gasperini.v1.h5",
                         "ec02ce77bba0e1ca5c2d399d7ba2a08c25b05e0a9c4e251c48ef5d31a619a185"),
    )
}
"""The shipped references by name."""


def _bundled_path(entry: BundledReference) -> Path:
    return Path(str(resources.files("shrinkpert.reference").joinpath("_bundled", entry.file)))


def _entry(name: str) -> BundledReference:
    if not isinstance(name, str) or name.lower() not in BUNDLED:
        raise MissingKeyError(
            f"No bundled population reference named {name!r}; available: {sorted(BUNDLED)!r}. "
            "Build others with shrinkpert.reference.bundled.build_perturbplan_reference()."
        )
    return BUNDLED[name.lower()]


def population_references() -> pd.DataFrame:
    """The shipped population references, one row each (name, cell type, study, version, file, licences)."""
    rows = [{**dataclasses.asdict(e), "statistics_licence": STATISTICS_LICENCE, "gene_length_licence": LENGTHS_LICENCE}
            for e in BUNDLED.values()]
    return pd.DataFrame(rows)


def population_reference(name: str, *, verify: bool = False) -> PopulationReference:
    """A shipped, versioned :class:`PopulationReference` (per-gene statistics of one cell type).

    Parameters
    ----------
    name
        ``"thp1_yao"`` or ``"k562_gasperini"`` (case-insensitive); :func:`population_references`
        lists them.
    verify
        Also compare the file's SHA-256 with the value recorded when it was built (the payload
        checksum inside the file is always verified by :meth:`PopulationReference.load`).

    Returns
    -------
    PopulationReference
        Ensembl gene IDs (``align()`` maps symbols through GENCODE v41); log1p scale with
        ``target_sum`` 10,000; ``gene_length`` in bases; ``params["bundle"]`` names the bundled
        version and sources.

    Raises
    ------
    MissingKeyError
        ``name`` is not a bundled reference.
    InputError
        The file is missing or corrupted (reinstall shrinkpert).

    Examples
    --------
    >>> import shrinkpert as sp
    >>> ref = sp.datasets.population_reference("thp1_yao")
    >>> ref.scale, ref.target_sum, ref.params["bundle"]["version"]
    ('log1p', 10000.0, '1')
    """
    entry = _entry(name)
    path = _bundled_path(entry)
    if verify and (not path.is_file() or sha256_file(path) != entry.sha256):
        raise InputError(f"The bundled population reference {path} is missing or corrupted (checksum mismatch); "
                         "reinstall shrinkpert.")
    return PopulationReference.load(path)


def _read(table: pd.DataFrame | str | os.PathLike, what: str, sep: str = ",") -> tuple[pd.DataFrame, dict]:
    if isinstance(table, pd.DataFrame):
        digest = hashlib.sha256(table.to_csv(index=False).encode()).hexdigest()
        return table, {"source": "DataFrame", "sha256": digest, "checksum_of": "the DataFrame as CSV"}
    path = Path(table)
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist.")
    return pd.read_csv(path, sep=sep), {"source": path.name, "sha256": sha256_file(path), "checksum_of": "the file"}


def _need(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MissingKeyError(f"The {what} has no column(s) {missing!r}; columns: {list(frame.columns)!r}.")


def build_perturbplan_reference(
    statistics: pd.DataFrame | str | os.PathLike,
    library: pd.DataFrame | str | os.PathLike,
    *,
    dataset: str,
    lengths: pd.DataFrame | str | os.PathLike | None = None,
    symbol_lengths: pd.DataFrame | str | os.PathLike | None = None,
    length_column: str = "median_transcript_length",
    name: str | None = None,
    version: str = "1",
    target_sum: float = TARGET_SUM,
) -> PopulationReference:
    """A :class:`PopulationReference` from perturbplan's baseline tables, with gene lengths.

    Parameters
    ----------
    statistics
        perturbplan's per-gene table (columns ``dataset, response_id, relative_expression,
        expression_size, gene_name``) or its path.
    library
        perturbplan's library table (columns ``dataset, UMI_per_cell``) or its path; gives
        :math:`L`.
    dataset
        Which perturbplan dataset (e.g. ``"THP1_Yao"``).
    lengths
        Per-Ensembl-gene lengths (columns ``gene_id`` and ``length_column``; e.g.
        ``hg19_ensGene_gene_lengths.csv.gz``), matched on the unversioned Ensembl ID.
    symbol_lengths
        Per-symbol lengths (columns ``gene_name`` and ``length_column``; e.g.
        ``hg19_refseq_symbol_gene_lengths.csv.gz``), used for genes the Ensembl table lacks,
        matched on perturbplan's ``gene_name``.
    length_column
        Length statistic to take (default the median transcript length).
    name
        Reference name (default: ``dataset``).
    version
        Version recorded in ``params["bundle"]``.
    target_sum
        :math:`s` of the log1p scale.

    Returns
    -------
    PopulationReference
        Genes = perturbplan's Ensembl IDs in table order. ``params["bundle"]`` records the
        version, the three sources with their SHA-256, licences, and how many genes got a length
        from each table.

    Raises
    ------
    MissingKeyError
        A table lacks a required column, or ``dataset`` is not in the library table.
    InputError
        A path does not exist, or ``dataset`` has several library rows.
    """
    stats, stats_src = _read(statistics, "statistics table")
    lib, lib_src = _read(library, "library table")
    _need(stats, ("dataset", "response_id", "relative_expression", "expression_size", "gene_name"), "statistics table")
    _need(lib, ("dataset", "UMI_per_cell"), "library table")
    row = lib[lib["dataset"].astype(str) == str(dataset)]
    if len(row) != 1:
        if row.empty:
            raise MissingKeyError(f"dataset={dataset!r} is not in the library table; present: "
                                  f"{lib['dataset'].astype(str).tolist()!r}.")
        raise InputError(f"dataset={dataset!r} has {len(row)} rows in the library table; expected one.")
    umi = float(row["UMI_per_cell"].iloc[0])
    frame = stats[stats["dataset"].astype(str) == str(dataset)].copy()  # a copy: the caller's table stays as it is
    frame["gene_length"] = np.nan
    counts = {"ensembl_table": 0, "symbol_table": 0, "none": len(frame)}
    sources = {"statistics": stats_src, "library": lib_src}
    if lengths is not None:
        table, sources["lengths"] = _read(lengths, "lengths table")
        _need(table, ("gene_id", length_column), "lengths table")
        by_id = table.assign(key=table["gene_id"].astype(str).str.split(".").str[0]).drop_duplicates("key")
        hit = frame["response_id"].astype(str).str.split(".").str[0].map(by_id.set_index("key")[length_column])
        frame["gene_length"] = hit.to_numpy(dtype=np.float64)
        counts["ensembl_table"] = int(np.isfinite(frame["gene_length"]).sum())
    if symbol_lengths is not None:
        table, sources["symbol_lengths"] = _read(symbol_lengths, "symbol lengths table")
        _need(table, ("gene_name", length_column), "symbol lengths table")
        by_name = table.drop_duplicates("gene_name").set_index("gene_name")[length_column]
        fill = frame["gene_name"].astype(str).map(by_name).to_numpy(dtype=np.float64)
        todo = ~np.isfinite(frame["gene_length"].to_numpy(dtype=np.float64))
        frame.loc[todo, "gene_length"] = fill[todo]
        counts["symbol_table"] = int(np.isfinite(fill[todo]).sum())
    counts["none"] = int((~np.isfinite(frame["gene_length"].to_numpy(dtype=np.float64))).sum())
    ref = PopulationReference.from_table(
        frame, gene_key="response_id", dataset=dataset,
        columns={"relative_expression": "relative_expression", "expression_size": "size",
                 "gene_length": "gene_length"},
        umi_per_cell=umi, target_sum=target_sum, scale="log1p", name=name or dataset, gene_id_type="ensembl",
    )
    params = dict(ref.params)
    params["bundle"] = {
        "version": str(version),
        "perturbplan_dataset": str(dataset),
        "umi_per_cell": umi,
        "gene_length": {"statistic": length_column, "genes_from": counts, "unit": "bases"},
        "sources": sources,
        "licences": {"statistics": STATISTICS_LICENCE, "gene_length": LENGTHS_LICENCE},
    }
    provenance = dict(ref.provenance)
    provenance.update(source=stats_src["source"], source_sha256=stats_src["sha256"],
                      source_checksum=f"sha256 of {stats_src['checksum_of']}")
    return dataclasses.replace(ref, params=params, provenance=provenance)
