"""PopulationReference: statistics against NumPy, cell selection, files, tables, gene alignment."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy import stats

import shrinkpert
from shrinkpert.errors import CountsError, GeneMismatchError, InputError, MissingKeyError, OutputExistsError, ShrinkpertWarning
from shrinkpert.reference.population import FIELDS, PopulationReference, build_population_reference

DATA = Path(__file__).parent / "data"
PAPALEXI_SHA256 = "d592e6037deb9f0e17c792bea3d141f182ed16cda8175b840fbd8bd0c5f866ac"
THP1_UMI = 77799.02907119897


def numpy_reference(X: np.ndarray, target_sum: float = 1e4) -> dict[str, np.ndarray]:
    """The module-docstring formulas written out with dense NumPy."""
    X = np.asarray(X, dtype=np.float64)
    lib = X.sum(axis=1)
    mean, var = X.mean(axis=0), X.var(axis=0, ddof=1)
    logx = np.log1p(X * (target_sum / np.where(lib > 0, lib, 1.0))[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        dispersion = np.where(mean > 0, np.maximum(var - mean, 0) / mean**2, np.nan)
    return {
        "mean": mean,
        "var": var,
        "detection": (X > 0).mean(axis=0),
        "dispersion": dispersion,
        "relative_expression": X.sum(axis=0) / lib.sum(),
        "expression_mean": logx.mean(axis=0),
        "expression_var": logx.var(axis=0, ddof=1),
        "gene_length": np.full(X.shape[1], np.nan),  # cells carry no gene lengths
    }


@pytest.fixture(scope="module")
def controls_ref(papalexi):
    return build_population_reference(papalexi, cells={"perturbation": "non-targeting"})


@pytest.fixture(scope="module")
def table():
    return pd.read_csv(DATA / "perturbplan_papalexi_genes.csv")


# ----------------------------------------------------------------------------- statistics
def test_statistics_match_numpy_formulas(papalexi, controls_ref):
    mask = (papalexi.obs["perturbation"] == "non-targeting").to_numpy()
    expected = numpy_reference(papalexi.X[mask].toarray())
    for name in FIELDS:
        if name == "dispersion":
            continue
        # float64 sums in a different order: 1e-12 relative
        np.testing.assert_allclose(getattr(controls_ref, name), expected[name], rtol=1e-12, atol=1e-15, err_msg=name)
    # (var - mean) / mean^2 cancels for near-Poisson genes and amplifies the rounding of var
    # (~1e-16 relative) by var / (var - mean): exact formula on our moments, 1e-9 against NumPy's
    mean, var = controls_ref.mean, controls_ref.var
    np.testing.assert_array_equal(controls_ref.dispersion, np.maximum(var - mean, 0) / mean**2)
    np.testing.assert_allclose(controls_ref.dispersion, expected["dispersion"], rtol=1e-9)
    assert controls_ref.n_cells == int(mask.sum())
    assert controls_ref.scale == "log1p" and controls_ref.target_sum == 1e4
    assert controls_ref.gene_id_type == "symbol"
    assert list(controls_ref.params["passes"]) == ["counts", "log1p"]


def test_cell_selection_forms_agree_and_copy_nothing(papalexi, controls_ref):
    before = copy.deepcopy(papalexi)
    mask = (papalexi.obs["perturbation"] == "non-targeting").to_numpy()
    by_mask = build_population_reference(papalexi, cells=mask)
    by_names = build_population_reference(papalexi, cells=list(papalexi.obs_names[mask]))
    by_series = build_population_reference(papalexi, cells=pd.Series(mask, index=papalexi.obs_names))
    for ref in (by_mask, by_names, by_series):
        for name in FIELDS:  # the same cells and the same storage: bit-identical
            np.testing.assert_array_equal(getattr(ref, name), getattr(controls_ref, name))
    assert by_mask.params["cells"]["kind"] == "mask"
    assert by_names.params["cells"]["kind"] == "obs_names"
    assert dict(controls_ref.params["cells"]) == {"kind": "obs", "where": {"perturbation": ["non-targeting"]}}
    # a subset copy gives the same statistics (streaming shift differs: rounding only)
    subset = build_population_reference(papalexi[mask].copy())
    for name in FIELDS:
        np.testing.assert_allclose(getattr(subset, name), getattr(controls_ref, name), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(papalexi.X.toarray(), before.X.toarray())
    pd.testing.assert_frame_equal(papalexi.obs, before.obs)


def test_obs_mapping_with_several_values_and_columns(papalexi):
    ref = build_population_reference(papalexi, cells={"perturbation": ["CD86", "IRF1"], "bio_rep": "rep_1"})
    obs = papalexi.obs
    mask = obs["perturbation"].isin(["CD86", "IRF1"]) & (obs["bio_rep"] == "rep_1")
    assert ref.n_cells == int(mask.sum()) > 0
    assert dict(ref.params["cells"]["where"]) == {"perturbation": ["CD86", "IRF1"], "bio_rep": ["rep_1"]}


def test_backed_path_equals_in_memory_and_records_file_checksum():
    path = shrinkpert.datasets.papalexi2021_path()
    adata = shrinkpert.datasets.papalexi2021()
    from_path = build_population_reference(path, chunk_size=997)
    in_memory = build_population_reference(adata)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(from_path, name), getattr(in_memory, name), rtol=1e-12, atol=1e-15)
    assert from_path.provenance["source_sha256"] == PAPALEXI_SHA256
    assert from_path.provenance["source"] == path.name
    assert from_path.name == path.name
    assert in_memory.provenance["source_checksum"].startswith("sha256 of the stored matrix")
    for key in ("shrinkpert_version", "created_utc", "n_cells"):
        assert key in from_path.provenance


def test_already_normalised_input_has_no_count_statistics(papalexi):
    logged = papalexi[:400].copy()
    logged.X = np.log1p(logged.X.toarray().astype(np.float64))
    ref = build_population_reference(logged, normalize=None)
    for name in ("mean", "var", "dispersion", "relative_expression"):
        assert np.isnan(getattr(ref, name)).all()
    np.testing.assert_allclose(ref.expression_mean, logged.X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(ref.detection, (logged.X > 0).mean(axis=0), rtol=0)
    assert ref.scale is None and ref.target_sum is None


def test_results_are_frozen(controls_ref):
    with pytest.raises(ValueError, match="read-only"):
        controls_ref.mean[0] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign"):
        controls_ref.name = "other"
    frame = controls_ref.to_frame()
    assert list(frame.columns) == ["gene", *FIELDS] and len(frame) == 299
    assert controls_ref.summary().loc[0, "n_genes"] == 299
    assert "n_genes=299" in repr(controls_ref)
    positive = controls_ref.dispersion > 0
    np.testing.assert_allclose(controls_ref.size[positive] * controls_ref.dispersion[positive], 1.0, rtol=1e-15)


@pytest.mark.parametrize(
    ("cells", "error", "match"),
    [
        ({"nope": "x"}, MissingKeyError, "obs column 'nope'"),
        ({"perturbation": "NOT-A-LABEL"}, MissingKeyError, "no cell has that value"),
        (["cell_00000"], InputError, "at least 2"),
        (["no-such-cell", "cell_00000"], MissingKeyError, "not in obs_names"),
        (np.ones(5, dtype=bool), InputError, "one value per cell"),
    ],
)
def test_bad_cell_selections(papalexi, cells, error, match):
    with pytest.raises(error, match=match):
        build_population_reference(papalexi, cells=cells)


def test_bad_arguments(papalexi):
    with pytest.raises(InputError, match="normalize='log2'"):
        build_population_reference(papalexi, normalize="log2")
    with pytest.raises(InputError, match="target_sum"):
        build_population_reference(papalexi, target_sum=0)
    floats = papalexi[:200].copy()
    floats.X = floats.X.toarray() * 0.5
    with pytest.raises(CountsError, match="needs raw counts"):
        build_population_reference(floats)


# ----------------------------------------------------------------------------- files
def test_save_load_round_trip_is_exact(controls_ref, tmp_path):
    path = controls_ref.save(tmp_path / "thp1_controls.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thp1_controls.h5"]  # one file, no temp left
    loaded = PopulationReference.load(path)
    assert loaded.equals(controls_ref)
    for name in FIELDS:
        assert getattr(loaded, name).tobytes() == getattr(controls_ref, name).tobytes()
    assert loaded.genes.equals(controls_ref.genes)
    assert dict(loaded.params) == dict(controls_ref.params)
    assert dict(loaded.provenance) == dict(controls_ref.provenance)
    assert (loaded.n_cells, loaded.name, loaded.scale, loaded.target_sum, loaded.gene_id_type) == (
        controls_ref.n_cells, controls_ref.name, controls_ref.scale, controls_ref.target_sum, controls_ref.gene_id_type)
    with h5py.File(path, "r") as fh:  # the documented layout
        assert fh.attrs["encoding-type"] == "shrinkpert.population_reference"
        assert fh.attrs["encoding-version"] == "2"
        assert sorted(fh["statistics"]) == sorted(FIELDS)


def test_save_refuses_to_overwrite(controls_ref, tmp_path):
    path = controls_ref.save(tmp_path / "ref.h5")
    with pytest.raises(OutputExistsError, match="already exists"):
        controls_ref.save(path)
    controls_ref.save(path, force=True)
    assert PopulationReference.load(path).equals(controls_ref)


def test_round_trip_of_a_table_with_nan_and_none(table, tmp_path):
    ref = PopulationReference.from_table(table, gene_key="response_id", dataset="THP1_Yao",
                                         columns={"expression_size": "size"})
    assert ref.n_cells is None and ref.scale is None
    loaded = PopulationReference.load(ref.save(tmp_path / "t.h5"))
    assert loaded.equals(ref)


def _flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x5A]))


def test_corrupted_statistics_fail_the_checksum(controls_ref, tmp_path):
    path = controls_ref.save(tmp_path / "ref.h5")
    with h5py.File(path, "r") as fh:
        offset = fh["statistics/expression_mean"].id.get_offset()
    _flip_byte(path, offset + 8 * 17 + 3)
    with pytest.raises(InputError, match="failed its checksum"):
        PopulationReference.load(path)


def test_edited_metadata_fails_the_checksum(controls_ref, tmp_path):
    path = controls_ref.save(tmp_path / "ref.h5")
    with h5py.File(path, "r+") as fh:
        fh.attrs["metadata"] = str(fh.attrs["metadata"]).replace('"n_cells": 1923', '"n_cells": 1924')
    with pytest.raises(InputError, match="failed its checksum"):
        PopulationReference.load(path)


def test_truncated_file_gives_a_clear_error(controls_ref, tmp_path):
    path = controls_ref.save(tmp_path / "ref.h5")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupted"):
        PopulationReference.load(path)


def test_other_files_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        PopulationReference.load(tmp_path / "missing.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(InputError, match="truncated or corrupted"):
        PopulationReference.load(tmp_path / "text.h5")
    with h5py.File(tmp_path / "other.h5", "w") as fh:
        fh["x"] = np.arange(3)
    with pytest.raises(InputError, match="not a shrinkpert population reference"):
        PopulationReference.load(tmp_path / "other.h5")


def test_newer_format_version_is_refused(controls_ref, tmp_path):
    path = controls_ref.save(tmp_path / "ref.h5")
    with h5py.File(path, "r+") as fh:
        fh.attrs["encoding-version"] = "3"
    with pytest.raises(InputError, match="Update shrinkpert"):
        PopulationReference.load(path)


# ----------------------------------------------------------------------------- tables
def test_from_table_negative_binomial_statistics(table):
    ref = PopulationReference.from_table(
        table, gene_key="response_id", dataset="THP1_Yao",
        columns={"relative_expression": "relative_expression", "expression_size": "size"}, umi_per_cell=THP1_UMI,
    )
    rows = table[table["dataset"] == "THP1_Yao"].set_index("response_id").loc[ref.genes]
    mu = rows["relative_expression"].to_numpy() * THP1_UMI
    theta = rows["expression_size"].to_numpy()
    np.testing.assert_allclose(ref.mean, mu, rtol=1e-15)
    np.testing.assert_allclose(ref.dispersion, 1 / theta, rtol=1e-15)
    np.testing.assert_allclose(ref.var, mu + mu**2 / theta, rtol=1e-14)
    # 1 - pmf(0) cancels for rare genes: 1e-10
    np.testing.assert_allclose(ref.detection, 1 - stats.nbinom.pmf(0, theta, theta / (theta + mu)), rtol=1e-10)
    c = 1e4 / THP1_UMI
    for k in range(0, len(mu), 40):  # brute-force pmf sums over a generous range
        dist = stats.nbinom(theta[k], theta[k] / (theta[k] + mu[k]))
        y = np.arange(int(dist.ppf(1 - 1e-15)) + 50)
        p = dist.pmf(y)
        x = np.log1p(c * y)
        m = np.sum(p * x) / p.sum()
        np.testing.assert_allclose(ref.expression_mean[k], m, rtol=1e-10)
        np.testing.assert_allclose(ref.expression_var[k], np.sum(p * (x - m) ** 2) / p.sum(), rtol=1e-9)
    assert ref.gene_id_type == "ensembl" and ref.name == "THP1_Yao" and ref.scale == "log1p"
    assert set(ref.params["derived"]) == {"mean", "var", "detection", "expression_mean", "expression_var"}
    assert len(ref.provenance["source_sha256"]) == 64


def test_from_table_path_records_file_checksum(tmp_path, table):
    path = tmp_path / "thp1.csv"
    table[table["dataset"] == "THP1_Yao"].to_csv(path, index=False)
    ref = PopulationReference.from_table(path, gene_key="gene_name", columns={"relative_expression": "relative_expression"})
    assert ref.provenance["source_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ref.gene_id_type == "symbol"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"gene_key": "response_id"}, InputError, "pass dataset="),
        ({"gene_key": "nope", "dataset": "THP1_Yao"}, MissingKeyError, "gene_key='nope'"),
        ({"gene_key": "response_id", "dataset": "HeLa"}, MissingKeyError, "dataset='HeLa'"),
        ({"gene_key": "response_id", "dataset": "THP1_Yao", "columns": {"zzz": "mean"}}, MissingKeyError, "'zzz'"),
        ({"gene_key": "response_id", "dataset": "THP1_Yao", "columns": {"expression_size": "theta"}}, InputError,
         "not one of"),
        ({"gene_key": "response_id", "dataset": "THP1_Yao", "columns": {}}, InputError, "No statistic columns"),
        ({"gene_key": "response_id", "dataset": "THP1_Yao", "umi_per_cell": -3.0,
          "columns": {"relative_expression": "relative_expression", "expression_size": "size"}}, InputError,
         "umi_per_cell"),
    ],
)
def test_from_table_errors(table, kwargs, error, match):
    with pytest.raises(error, match=match):
        PopulationReference.from_table(table, **kwargs)


def test_from_table_rejects_duplicates_and_negatives():
    frame = pd.DataFrame({"gene": ["A", "A"], "mean": [1.0, 2.0]})
    with pytest.raises(InputError, match="repeat"):
        PopulationReference.from_table(frame)
    frame = pd.DataFrame({"gene": ["A", "B"], "mean": [1.0, -2.0]})
    with pytest.raises(InputError, match="negative"):
        PopulationReference.from_table(frame)


# ----------------------------------------------------------------------------- align
def test_align_ensembl_reference_to_symbols(table, papalexi):
    ref = PopulationReference.from_table(table, gene_key="response_id", dataset="THP1_Yao",
                                         columns={"relative_expression": "relative_expression"})
    with pytest.warns(ShrinkpertWarning, match="54 of 299 genes have no unique match"):
        aligned = ref.align(papalexi.var_names)
    report = aligned.params["aligned"]
    assert aligned.genes.tolist() == papalexi.var_names.tolist()
    assert report["n_mapped"] == 245 and report["n_unmatched"] == 54 and report["n_exact"] == 0
    assert aligned.gene_id_type == "symbol"
    sub = table[table["dataset"] == "THP1_Yao"].set_index("gene_name")["relative_expression"]
    matched = ~aligned.genes.isin(report["unmatched"])
    np.testing.assert_array_equal(aligned.relative_expression[matched], sub.loc[aligned.genes[matched]].to_numpy())
    assert np.isnan(aligned.relative_expression[~matched]).all()
    with pytest.raises(GeneMismatchError, match="no unique match"):
        ref.align(papalexi.var_names, missing="raise")


def test_align_exact_reorders_strips_versions_and_reports(controls_ref):
    genes = list(controls_ref.genes[::-1][:10]) + ["NOT_A_GENE"]
    with pytest.warns(ShrinkpertWarning, match="1 of 11 genes"):
        aligned = controls_ref.align(genes, mapping=False)
    np.testing.assert_array_equal(aligned.mean[:10], controls_ref.mean[::-1][:10])
    assert aligned.params["aligned"]["unmatched"] == ["NOT_A_GENE"]
    ens = PopulationReference.from_table(pd.DataFrame({"gene": ["ENSG00000000003.15", "ENSG00000000005.6"],
                                                       "mean": [1.0, 2.0]}))
    out = ens.align(["ENSG00000000005", "ENSG00000000003"], missing="raise")
    np.testing.assert_array_equal(out.mean, [2.0, 1.0])


def test_align_ambiguous_symbol_is_reported_not_guessed():
    # MATR3 has two Ensembl IDs in GENCODE v41; both in the reference -> ambiguous
    table = pd.read_csv(Path(shrinkpert.reference.population.__file__).parent / "_bundled"
                        / "gencode_v41_gene_id_to_name.tsv.gz", sep="\t")
    ids = table.loc[table["gene_name"] == "MATR3", "gene_id"].tolist()
    assert len(ids) == 2
    ref = PopulationReference.from_table(pd.DataFrame({"gene": ids + ["ENSG00000000003"], "mean": [1.0, 2.0, 3.0]}))
    out = ref.align(["MATR3", "TSPAN6"], missing="ignore")
    assert out.params["aligned"]["ambiguous"] == ["MATR3"]
    np.testing.assert_array_equal(out.mean, [np.nan, 3.0])
    user = ref.align(["MATR3"], mapping={"MATR3": ids[1]}, missing="raise")
    np.testing.assert_array_equal(user.mean, [2.0])


def test_align_rejects_duplicates_and_bad_options(controls_ref):
    with pytest.raises(InputError, match="duplicated genes"):
        controls_ref.align(["STAT1", "STAT1"])
    with pytest.raises(InputError, match="missing='loud'"):
        controls_ref.align(["STAT1"], missing="loud")


def test_sparse_and_dense_storage_agree(papalexi):
    dense = papalexi[:500].copy()
    dense.X = dense.X.toarray()
    csc = papalexi[:500].copy()
    csc.X = sp.csc_matrix(csc.X)
    a, b = build_population_reference(dense), build_population_reference(csc)
    for name in FIELDS:
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, atol=1e-15)


# ----------------------------------------------------------------------------- format versions, gene lengths
def _digest_by_hand(version: str, meta_text: str, genes: list[str], arrays: dict, fields: tuple) -> str:
    """The payload checksum written out from the module docstring's recipe."""
    h = hashlib.sha256(f"shrinkpert.population_reference/{version}\n".encode())
    h.update(meta_text.encode() + b"\n" + "\n".join(genes).encode() + b"\n")
    for name in fields:
        h.update(name.encode() + b"\0" + np.asarray(arrays[name], dtype="<f8").tobytes())
    return h.hexdigest()


def test_version_1_files_are_still_read(tmp_path):
    genes = ["STAT1", "IRF1", "Δgene"]
    v1_fields = ("mean", "var", "detection", "dispersion", "relative_expression", "expression_mean", "expression_var")
    arrays = {f: np.arange(3.0) + k for k, f in enumerate(v1_fields)}
    meta = {"name": "old", "n_cells": 10, "gene_id_type": "symbol", "scale": "log1p", "target_sum": 1e4,
            "params": {"kind": "cells"}, "provenance": {"source": "x"}}
    meta_text = json.dumps(meta, sort_keys=True)
    path = tmp_path / "v1.h5"
    with h5py.File(path, "w") as fh:  # the version-1 layout: variable-length names, seven fields
        fh.attrs["encoding-type"] = "shrinkpert.population_reference"
        fh.attrs["encoding-version"] = "1"
        fh.attrs["metadata"] = meta_text
        fh.attrs["payload_sha256"] = _digest_by_hand("1", meta_text, genes, arrays, v1_fields)
        fh.create_dataset("genes", data=np.array(genes, dtype=object), dtype=h5py.string_dtype("utf-8"))
        for f in v1_fields:
            fh.create_dataset(f"statistics/{f}", data=arrays[f])
    ref = PopulationReference.load(path)
    assert ref.genes.tolist() == genes and ref.name == "old" and ref.n_cells == 10
    for f in v1_fields:
        np.testing.assert_array_equal(getattr(ref, f), arrays[f])
    assert np.isnan(ref.gene_length).all()
    with h5py.File(path, "r+") as fh:  # a v1 file checked with the v2 header must fail: versions are not mixed up
        fh.attrs["payload_sha256"] = _digest_by_hand("2", meta_text, genes, {**arrays, "gene_length": np.full(3, np.nan)},
                                                     FIELDS)
    with pytest.raises(InputError, match="failed its checksum"):
        PopulationReference.load(path)


def test_gene_lengths_from_a_table_round_trip_with_unicode_names(tmp_path):
    frame = pd.DataFrame({"gene": ["STAT1", "Δgène", "IRF1"], "mean": [1.0, 2.0, 3.0],
                          "median_transcript_length": [1679.0, np.nan, 1467.0]})
    ref = PopulationReference.from_table(frame, columns={"mean": "mean", "median_transcript_length": "gene_length"})
    np.testing.assert_array_equal(ref.gene_length, [1679.0, np.nan, 1467.0])
    path = ref.save(tmp_path / "lengths.h5")
    loaded = PopulationReference.load(path)
    assert loaded.equals(ref) and loaded.genes.tolist() == ["STAT1", "Δgène", "IRF1"]
    with h5py.File(path, "r") as fh:  # the documented v2 layout, readable without shrinkpert
        assert fh.attrs["payload_sha256"] == _digest_by_hand(
            "2", str(fh.attrs["metadata"]), ["STAT1", "Δgène", "IRF1"],
            {f: fh["statistics"][f][...] for f in FIELDS}, FIELDS)
        assert [s.decode() for s in fh["genes"][...]] == ["STAT1", "Δgène", "IRF1"]
    np.testing.assert_array_equal(ref.align(["IRF1", "STAT1"], mapping=False).gene_length, [1467.0, 1679.0])
