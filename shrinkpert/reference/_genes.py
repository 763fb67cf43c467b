"""Gene identifiers: Ensembl IDs vs symbols, and matching one gene list onto another (private)."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?(_PAR_Y)?$")
_VERSION = re.compile(r"\.\d+(?=(_PAR_Y)?$)")
_GENCODE = "gencode_v41_gene_id_to_name.tsv.gz"


def detect_gene_id_type(genes: Sequence[str]) -> str:
    """``"ensembl"`` when at least 90% of the identifiers are Ensembl gene IDs, else ``"symbol"``."""
    genes = [str(g) for g in genes]
    if not genes:
        return "symbol"
    hits = sum(bool(_ENSEMBL.match(g)) for g in genes)
    return "ensembl" if hits >= 0.9 * len(genes) else "symbol"


def gene_key(gene: str) -> str:
    """Matching key: Ensembl IDs lose their version suffix, everything else is kept."""
    return _VERSION.sub("", gene) if _ENSEMBL.match(gene) else gene


@functools.lru_cache(maxsize=1)
def gencode_table() -> pd.DataFrame:
    """The bundled GENCODE v41 Ensembl ID -> symbol table (see ``_bundled/PROVENANCE.md``)."""
    path = resources.files("shrinkpert.reference").joinpath("_bundled", _GENCODE)
    with resources.as_file(path) as local:
        return pd.read_csv(local, sep="\t", dtype=str)


@functools.lru_cache(maxsize=1)
def gencode_equivalents() -> dict[str, set[str]]:
    """:func:`equivalents` of the bundled table, built once."""
    return equivalents(gencode_table())


def equivalents(table: pd.DataFrame) -> dict[str, set[str]]:
    """Identifier -> identifiers naming the same gene (ID -> symbol and symbol -> IDs)."""
    ids, names = table.iloc[:, 0].astype(str).map(gene_key), table.iloc[:, 1].astype(str)
    out: dict[str, set[str]] = {}
    for i, n in zip(ids, names):
        out.setdefault(i, set()).add(n)
        out.setdefault(n, set()).add(i)
    return out


def match_genes(
    reference: Sequence[str], target: Sequence[str], mapping: Any
) -> tuple[np.ndarray, np.ndarray, str]:
    """Row of ``reference`` for each ``target`` gene (-1 if none) and how it matched.

    Exact match first (Ensembl version suffixes ignored); an unmatched gene is translated with
    ``mapping`` (None: bundled GENCODE v41; DataFrame (Ensembl ID, symbol); dict target ->
    reference; False: no translation) and kept if it names exactly one reference gene that no
    other target uses. Status per gene: ``exact``, ``mapped``, ``ambiguous`` or ``unmatched``.
    """
    lookup: dict[str, list[int]] = {}
    for row, g in enumerate(reference):
        lookup.setdefault(gene_key(g), []).append(row)
    rows = np.full(len(target), -1, dtype=np.int64)
    status = np.array(["unmatched"] * len(target), dtype=object)
    for i, g in enumerate(target):
        hit = lookup.get(gene_key(g), [])
        if len(hit) == 1:
            rows[i], status[i] = hit[0], "exact"
        elif len(hit) > 1:
            status[i] = "ambiguous"
    todo = np.flatnonzero(status == "unmatched")
    source = "none"
    if len(todo) and mapping is not False:
        if isinstance(mapping, Mapping):
            source = "user mapping (target -> reference)"
            translate = {str(k): {gene_key(str(v))} for k, v in mapping.items()}
            equiv = lambda g: translate.get(g, set())  # noqa: E731
        else:
            if mapping is None:
                pairs, source = gencode_equivalents(), "GENCODE v41 (bundled)"
            elif isinstance(mapping, pd.DataFrame):
                if mapping.shape[1] < 2:
                    raise InputError("A mapping DataFrame needs two columns: Ensembl ID and symbol.")
                pairs, source = equivalents(mapping), "user table (Ensembl ID, symbol)"
            else:
                raise InputError(
                    f"mapping must be None, False, a DataFrame or a dict, got {type(mapping).__name__}."
                )
            equiv = lambda g: pairs.get(gene_key(g), set())  # noqa: E731
        for i in todo:
            candidates = {r for e in equiv(target[i]) for r in lookup.get(gene_key(e), [])}
            if len(candidates) == 1:
                rows[i], status[i] = candidates.pop(), "mapped"
            elif len(candidates) > 1:
                status[i] = "ambiguous"
        used = pd.Series(rows[rows >= 0]).value_counts()
        shared = set(used.index[used > 1])
        for i in np.flatnonzero(status == "mapped"):
            if rows[i] in shared:
                rows[i], status[i] = -1, "ambiguous"
    return rows, status, source
