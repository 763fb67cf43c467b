"""Known gene–gene relationships: bundled pair sets and user files, as tidy pair tables.

Every loader returns a :class:`pandas.DataFrame` with columns ``gene_a, gene_b, source``: one row
per unordered pair (``gene_a < gene_b``; self-pairs and duplicates removed), gene symbols aligned
to GENCODE v41 (Ensembl IDs translated to symbols through the table bundled with
:mod:`shrinkpert.reference`). ``frame.attrs`` carries the provenance: ``source``, ``licence``,
``path`` or bundled file, ``sha256``, ``n_genes``, ``unmatched_genes`` (identifiers GENCODE v41
does not know; kept as given, since they may be older aliases) and ``translated_genes``.

Bundled (licences allow redistribution): ``reactome`` (CC0 1.0), ``humap`` and ``stringdb``
(CC BY 4.0; attribution in ``_bundled/LICENSES.md``). CORUM and SIGNOR are CC BY-NC 4.0 and are
not bundled: read your copy with :func:`read_relationships`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import itertools
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, MissingKeyError
from ..reference import gencode_table, gene_key

__all__ = ["BUNDLED", "load_relationships", "read_relationships", "pairs_from_sets", "to_symbols"]

#: Bundled relationship sets: name -> (file, licence, citation).
BUNDLED: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    "reactome": ("reactome_pairs.tsv.gz", "CC0-1.0", "Reactome (Gillespie et al. 2022), pairs from EFAAR"),
    "humap": ("humap_pairs.tsv.gz", "CC-BY-4.0", "hu.MAP 2.0 (Drew et al. 2021), pairs from EFAAR"),
    "stringdb": ("stringdb_pairs.tsv.gz", "CC-BY-4.0", "STRING (Szklarczyk et al.), pairs from EFAAR"),
})
_NOT_BUNDLED = {"corum": "CORUM", "signor": "SIGNOR"}
_PAIR_COLUMNS = (("gene_a", "gene_b"), ("entity1", "entity2"), ("source", "target"))


@functools.lru_cache(maxsize=1)
def _symbol_lookup() -> tuple[dict[str, str], frozenset[str]]:
    """Unversioned Ensembl ID -> symbol, and the set of known symbols (GENCODE v41)."""
    table = gencode_table()
    ids, names = table.iloc[:, 0].astype(str), table.iloc[:, 1].astype(str)
    return dict(zip(ids, names)), frozenset(names)


def to_symbols(genes: Iterable[Any]) -> tuple[np.ndarray, dict[str, str], list[str]]:
    """Gene symbols for ``genes``: Ensembl IDs translated through GENCODE v41, symbols kept.

    Parameters
    ----------
    genes : iterable of str
        Symbols or Ensembl gene IDs (version suffixes ignored).

    Returns
    -------
    symbols : ndarray of object
        One symbol per input (the input itself when it cannot be translated).
    translated : dict
        Input -> symbol for every translated Ensembl ID.
    unmatched : list of str
        Inputs that are neither a GENCODE v41 symbol nor a known Ensembl ID (sorted, unique).
    """
    by_id, known = _symbol_lookup()
    values = [str(g).strip() for g in genes]
    out = np.empty(len(values), dtype=object)
    translated: dict[str, str] = {}
    unmatched: set[str] = set()
    for i, g in enumerate(values):
        if g in known:
            out[i] = g
            continue
        symbol = by_id.get(gene_key(g))
        if symbol is None:
            out[i] = g
            unmatched.add(g)
        else:
            out[i] = symbol
            translated[g] = symbol
    return out, translated, sorted(unmatched)


def _tidy(a: Iterable[Any], b: Iterable[Any], *, source: str, attrs: dict[str, Any]) -> pd.DataFrame:
    """Aligned, ordered, de-duplicated pair table with provenance in ``attrs``."""
    a, b = np.asarray(list(a), dtype=object), np.asarray(list(b), dtype=object)
    genes = pd.unique(np.concatenate([a, b]))
    symbols, translated, unmatched = to_symbols(genes)
    lookup = dict(zip(genes, symbols))
    sa = np.array([lookup[g] for g in a], dtype=object)
    sb = np.array([lookup[g] for g in b], dtype=object)
    lo, hi = np.where(sa < sb, sa, sb), np.where(sa < sb, sb, sa)
    frame = pd.DataFrame({"gene_a": lo, "gene_b": hi})
    frame = frame[frame["gene_a"] != frame["gene_b"]].drop_duplicates()
    frame = frame.sort_values(["gene_a", "gene_b"], kind="stable").reset_index(drop=True)
    frame["source"] = source
    frame.attrs.update(attrs)
    frame.attrs.update(source=source, n_pairs=len(frame),
                       n_genes=int(pd.unique(frame[["gene_a", "gene_b"]].to_numpy().ravel()).size),
                       unmatched_genes=unmatched, translated_genes=translated)
    return frame


def load_relationships(name: str) -> pd.DataFrame:
    """A bundled set of known gene–gene relationships.

    Parameters
    ----------
    name : {"reactome", "humap", "stringdb"}
        Case-insensitive. ``"corum"`` and ``"signor"`` are CC BY-NC 4.0 and not bundled.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_a, gene_b, source`` (one row per unordered pair, ``gene_a < gene_b``);
        ``attrs`` holds ``source``, ``licence``, ``citation``, ``file``, ``sha256``, ``n_pairs``,
        ``n_genes``, ``unmatched_genes`` and ``translated_genes``.

    Raises
    ------
    MissingKeyError
        Unknown name, or a set that cannot be bundled (the message says how to load it by path).

    Examples
    --------
    >>> from shrinkpert.biology import load_relationships
    >>> pairs = load_relationships("reactome")
    >>> list(pairs.columns), pairs.attrs["licence"]
    (['gene_a', 'gene_b', 'source'], 'CC0-1.0')
    """
    key = str(name).lower()
    if key in _NOT_BUNDLED:
        raise MissingKeyError(
            f"{_NOT_BUNDLED[key]} is licensed CC BY-NC 4.0 (non-commercial) and is not bundled with "
            f"shrinkpert; download it yourself and load it with read_relationships(path, source={key!r})."
        )
    if key not in BUNDLED:
        raise MissingKeyError(f"No bundled relationship set named {name!r}; choose one of {sorted(BUNDLED)}.")
    filename, licence, citation = BUNDLED[key]
    return _bundled(key, filename, licence, citation).copy(deep=True)


@functools.lru_cache(maxsize=len(BUNDLED))
def _bundled(key: str, filename: str, licence: str, citation: str) -> pd.DataFrame:
    raw = resources.files("shrinkpert.biology").joinpath("_bundled", filename).read_bytes()
    table = pd.read_csv(gzip.open(io.BytesIO(raw)), sep="\t", dtype=str)
    return _tidy(table["gene_a"], table["gene_b"], source=key,
                 attrs={"licence": licence, "citation": citation, "file": f"shrinkpert/biology/_bundled/{filename}",
                        "sha256": hashlib.sha256(raw).hexdigest()})


def pairs_from_sets(sets: Mapping[str, Iterable[Any]], *, source: str = "gene_sets") -> pd.DataFrame:
    """Every unordered pair of genes that share a set (a complex, pathway or cluster).

    Parameters
    ----------
    sets : mapping of str to iterable of str
        Set name -> member genes.
    source : str, default "gene_sets"

    Returns
    -------
    pandas.DataFrame
        As :func:`load_relationships`; ``attrs["n_sets"]`` is the number of sets with >= 2 genes.
    """
    a: list[str] = []
    b: list[str] = []
    n_sets = 0
    for members in sets.values():
        genes = sorted({str(g).strip() for g in members if str(g).strip()})
        if len(genes) >= 2:
            n_sets += 1
            for x, y in itertools.combinations(genes, 2):
                a.append(x)
                b.append(y)
    return _tidy(a, b, source=source, attrs={"n_sets": n_sets})


def _read_sets(path: Path, fmt: str) -> dict[str, list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    sets: dict[str, list[str]] = {}
    with opener(path, "rt") as fh:
        for line_no, line in enumerate(fh, 1):
            fields = line.rstrip("\n\r").split("\t")
            if not fields[0].strip():
                continue
            if fmt == "gmt":
                members = fields[2:]
            else:  # "sets": name <tab> space-separated genes
                if len(fields) < 2:
                    raise InputError(f"{path}: line {line_no} has no tab; a sets file has 'name<TAB>gene gene ...'.")
                members = fields[1].split()
            sets[f"{fields[0]}#{line_no}"] = [m for m in members if m.strip()]
    return sets


def read_relationships(path: Any, *, format: str | None = None, source: str | None = None) -> pd.DataFrame:
    """Known relationships from a file: gene pairs, or gene sets turned into pairs.

    Parameters
    ----------
    path : str or path-like
        ``.gz`` files are decompressed on the fly.
    format : {"pairs", "gmt", "sets"}, optional
        ``pairs``: a CSV or TSV table with a header (tab-separated when the header has a tab)
        whose columns ``gene_a, gene_b``, ``entity1, entity2`` or ``source, target`` (else its
        first two columns) name the two genes.
        ``gmt``: MSigDB GMT, one set per line, ``name<TAB>description<TAB>gene<TAB>gene...``.
        ``sets``: ``name<TAB>gene gene ...`` (e.g. EFAAR's ``CORUM_clusters.tsv``). Every pair
        of genes sharing a set becomes a relationship. Default: ``gmt`` for ``.gmt`` files, else
        ``pairs``.
    source : str, optional
        Label of the set (default: the file name without extensions).

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_a, gene_b, source`` as :func:`load_relationships`; ``attrs`` holds
        ``path``, ``sha256``, ``format``, ``licence`` ("user file"), ``unmatched_genes`` and
        ``translated_genes``.

    Raises
    ------
    InputError
        Missing file, unknown ``format``, fewer than two columns, or no pair in the file.

    Examples
    --------
    >>> import pathlib, tempfile
    >>> from shrinkpert.biology import read_relationships
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "complexes.gmt"
    >>> _ = path.write_text("C1\\tdemo\\tJAK2\\tSTAT1\\tIRF1\\n")
    >>> read_relationships(path)[["gene_a", "gene_b"]].to_numpy().tolist()
    [['IRF1', 'JAK2'], ['IRF1', 'STAT1'], ['JAK2', 'STAT1']]
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"read_relationships: {str(path)!r} is not a file.")
    name = path.name.split(".")[0]
    suffixes = [s.lower() for s in path.suffixes]
    fmt = format if format is not None else ("gmt" if ".gmt" in suffixes else "pairs")
    if fmt not in ("pairs", "gmt", "sets"):
        raise InputError(f"format must be 'pairs', 'gmt' or 'sets'; got {format!r}.")
    source = name if source is None else str(source)
    attrs = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "format": fmt,
             "licence": "user file"}
    if fmt == "pairs":
        with (gzip.open if path.suffix == ".gz" else open)(path, "rt") as fh:
            sep = "\t" if "\t" in fh.readline() else ","
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
        if table.shape[1] < 2:
            raise InputError(f"{path}: a pairs file needs two gene columns; found {list(table.columns)}.")
        cols = next(((a, b) for a, b in _PAIR_COLUMNS if {a, b} <= set(table.columns)), tuple(table.columns[:2]))
        frame = _tidy(table[cols[0]], table[cols[1]], source=source, attrs=attrs)
    else:
        sets = _read_sets(path, fmt)
        frame = pairs_from_sets(sets, source=source)
        frame.attrs.update(attrs)
    if frame.empty:
        raise InputError(f"{path}: no gene pair found (format={fmt!r}); check the format and separator.")
    return frame
