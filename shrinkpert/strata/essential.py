"""Reference essential and non-essential genes (Hart et al. 2017, CEGv2 / NEGv1), bundled."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import pandas as pd

__all__ = ["essential_genes", "essentiality"]

_FILES = {"core_essential": "CEGv2.txt", "non_essential": "NEGv1.txt"}
_SOURCE = ("hart-lab/bagel@53388adbb4fb0931e5c9dda135502be19e4555f0 (CEGv2.txt, NEGv1.txt), MIT; "
           "Hart et al., G3 7:2719-2727 (2017)")


@lru_cache(maxsize=1)
def _table() -> pd.DataFrame:
    parts = []
    for cls, name in _FILES.items():
        with resources.files("shrinkpert.strata").joinpath("_bundled", name).open("r") as fh:
            frame = pd.read_csv(fh, sep="\t", dtype=str)
        frame = frame.rename(columns={"GENE": "gene", "HGNC_ID": "hgnc_id", "ENTREZ_ID": "entrez_id"})
        frame["class"] = cls
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def essential_genes() -> pd.DataFrame:
    """The bundled Hart reference lists: 684 core-essential (CEGv2) and 927 non-essential (NEGv1) genes.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene`` (HGNC symbol), ``hgnc_id``, ``entrez_id``, ``class``
        (``"core_essential"`` or ``"non_essential"``); ``attrs["source"]`` gives the repository,
        commit, licence and paper (``shrinkpert/strata/_bundled/PROVENANCE.md``).
    """
    frame = _table().copy()
    frame.attrs["source"] = _SOURCE
    return frame


def essentiality(genes) -> pd.Series:
    """Class of each gene in the Hart lists: ``"core_essential"``, ``"non_essential"`` or ``"unknown"``.

    Symbols match case-insensitively; a missing gene (None/NaN) is ``"unknown"``.
    """
    table = _table()
    lookup = dict(zip(table["gene"].str.upper(), table["class"]))
    values = [lookup.get(str(g).upper(), "unknown") if isinstance(g, str) else "unknown" for g in genes]
    return pd.Series(values, index=pd.Index(genes), name="essentiality", dtype=object)
