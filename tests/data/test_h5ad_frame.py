"""The h5py reader of obs/var gives anndata's own frames, and leaves what it does not know to anndata."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest

from shrinkpert.data.h5ad_frame import _frame, _Unhandled, read_frame
from shrinkpert.data.read import read_annotations


def _adata(n: int = 9) -> ad.AnnData:
    obs = pd.DataFrame({
        "perturbation": pd.Categorical(list("aabcbcaac")),
        "ordered": pd.Categorical(list("xyxyxyxyy"), ordered=True),
        "with_missing": pd.Categorical(["a", None, "b", "a", None, "b", "a", "a", "b"]),
        "numeric_categories": pd.Categorical([1, 2, 1, 2, 3, 3, 1, 2, 3]),
        "name": [f"s{i}" for i in range(n)],
        "count": np.arange(n),
        "fraction": np.linspace(0.0, 1.0, n),
        "flag": np.arange(n) % 2 == 0,
        "nullable_int": pd.array([1, None, 3, 4, 5, None, 7, 8, 9], dtype="Int64"),
        "nullable_bool": pd.array([True, None, False, True, False, True, None, False, True], dtype="boolean"),
        "small": np.arange(n, dtype=np.uint8),
        "single": np.ones(n, dtype=np.float32),
    }, index=pd.Index([f"cell{i}" for i in range(n)], name="barcode"))
    var = pd.DataFrame({"symbol": ["A", "B", "C"]}, index=["g1", "g2", "g3"])
    return ad.AnnData(X=np.zeros((n, 3), dtype=np.float32), obs=obs, var=var)


def test_frames_equal_anndata(tmp_path):
    path = tmp_path / "x.h5ad"
    _adata().write_h5ad(path)
    with h5py.File(path, "r") as fh:
        for name in ("obs", "var"):
            mine = _frame(fh[name])  # the h5py path itself, no fallback
            pd.testing.assert_frame_equal(mine, ad.io.read_elem(fh[name]), check_exact=True)
    obs, var_names = read_annotations(path)
    assert obs.index.name == "barcode" and list(var_names) == ["g1", "g2", "g3"]


def test_an_unknown_encoding_is_left_to_anndata(tmp_path):
    path = tmp_path / "x.h5ad"
    _adata().write_h5ad(path)
    with h5py.File(path, "r+") as fh:
        fh["obs"].attrs["encoding-version"] = "0.1.0"  # an older dataframe encoding anndata still reads
    with h5py.File(path, "r") as fh:
        with pytest.raises(_Unhandled):
            _frame(fh["obs"])
        pd.testing.assert_frame_equal(read_frame(fh["obs"]), ad.io.read_elem(fh["obs"]), check_exact=True)


def test_reading_annotations_does_not_import_anndata(tmp_path):
    path = tmp_path / "x.h5ad"
    _adata().write_h5ad(path)
    code = ("import sys; from shrinkpert.data.read import read_annotations; "
            f"obs, var = read_annotations({str(path)!r}); "
            "assert list(obs['perturbation']) == list('aabcbcaac'); print('anndata' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
