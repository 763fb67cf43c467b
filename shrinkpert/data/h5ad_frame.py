"""``obs`` and ``var`` of an ``.h5ad`` file read with h5py alone.

Reading the annotations of a file is the first thing every command does, and importing anndata
for it costs about 0.4 s, a tenth of the floor of a 100k-cell job. The AnnData on-disk format
documents its elements (https://anndata.readthedocs.io/en/stable/fileformat-prose.html); this
module reads the ones annotations are made of, in the current encodings:

* ``dataframe`` 0.2.0 — the group's attributes ``_index`` (the index column) and ``column-order``;
* ``array`` 0.2.0 (numbers, booleans) and ``string-array`` 0.2.0 (object arrays of ``str``);
* ``categorical`` 0.2.0 (``codes``, ``categories``, attribute ``ordered``; code -1 is missing);
* ``nullable-integer`` and ``nullable-boolean`` 0.1.0 (``values`` and ``mask``).

Anything else (another encoding or version, a legacy file without encoding attributes) is left to
anndata's own reader, so the result is always anndata's (tests compare the two frame by frame).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

__all__ = ["read_frame"]


class _Unhandled(Exception):
    """An element this reader leaves to anndata."""


def read_frame(group: Any) -> pd.DataFrame:
    """The DataFrame stored in the h5py ``group`` (as ``anndata.io.read_elem`` returns it)."""
    try:
        return _frame(group)
    except _Unhandled:
        import anndata as ad

        return ad.io.read_elem(group)


def _encoding(elem: Any) -> tuple[str | None, str | None]:
    attrs = elem.attrs
    return attrs.get("encoding-type"), attrs.get("encoding-version")


def _frame(group: Any) -> pd.DataFrame:
    if _encoding(group) != ("dataframe", "0.2.0"):
        raise _Unhandled
    index_key = str(group.attrs["_index"])
    columns = [str(c) for c in group.attrs["column-order"]]
    frame = pd.DataFrame({c: _column(group[c]) for c in columns}, index=_column(group[index_key]),
                         columns=columns if columns else None)
    if index_key != "_index":
        frame.index.name = index_key
    return frame


def _column(elem: Any) -> Any:
    kind = _encoding(elem)
    if kind == ("string-array", "0.2.0"):
        return elem.asstr()[...]
    if kind == ("array", "0.2.0"):
        values = elem[...]
        if values.dtype.kind not in "biuf":
            raise _Unhandled
        return values
    if kind == ("categorical", "0.2.0"):
        categories = _column(elem["categories"])
        return pd.Categorical.from_codes(elem["codes"][...], categories=categories,
                                         ordered=bool(elem.attrs.get("ordered", False)))
    if kind in (("nullable-integer", "0.1.0"), ("nullable-boolean", "0.1.0")):
        values, mask = elem["values"][...], elem["mask"][...].astype(bool)
        if kind[0] == "nullable-boolean":
            return pd.arrays.BooleanArray(values.astype(bool), mask)
        return pd.arrays.IntegerArray(values, mask)
    raise _Unhandled
