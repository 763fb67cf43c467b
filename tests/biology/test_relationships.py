"""Relationship loaders: bundled sets with provenance, user pair/GMT/set files, symbol alignment."""

from __future__ import annotations

import gzip
import hashlib
import itertools
import re
from importlib import resources

import pandas as pd
import pytest

from shrinkpert.biology import BUNDLED, load_relationships, pairs_from_sets, read_relationships
from shrinkpert.errors import InputError, MissingKeyError

BUNDLED_DIR = resources.files("shrinkpert.biology").joinpath("_bundled")


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sets_are_tidy_and_match_their_provenance(name):
    pairs = load_relationships(name.upper())
    assert list(pairs.columns) == ["gene_a", "gene_b", "source"]
    assert (pairs["gene_a"] < pairs["gene_b"]).all()
    assert not pairs.duplicated(["gene_a", "gene_b"]).any()
    assert (pairs["source"] == name).all()
    filename = BUNDLED[name][0]
    raw = BUNDLED_DIR.joinpath(filename).read_bytes()
    # the checksum in attrs is the file's, and PROVENANCE.md records the same one and the pair count
    assert pairs.attrs["sha256"] == hashlib.sha256(raw).hexdigest()
    provenance = BUNDLED_DIR.joinpath("PROVENANCE.md").read_text()
    row = next(line for line in provenance.splitlines() if line.startswith(f"| `{filename}`"))
    assert pairs.attrs["sha256"] in row
    assert f"{len(pairs):,}" in row.split("|")[5]
    # the file itself (read independently) holds exactly these pairs
    on_disk = pd.read_csv(gzip.open(BUNDLED_DIR.joinpath(filename)), sep="\t")
    assert len(on_disk) == len(pairs)
    assert pairs.attrs["licence"] in ("CC0-1.0", "CC-BY-4.0")
    assert isinstance(pairs.attrs["unmatched_genes"], list)


def test_non_commercial_sets_are_not_bundled():
    for name in ("corum", "SIGNOR"):
        with pytest.raises(MissingKeyError, match="CC BY-NC 4.0.*read_relationships"):
            load_relationships(name)
    with pytest.raises(MissingKeyError, match="No bundled relationship set named 'kegg'"):
        load_relationships("kegg")
    assert not any("corum" in p.name.lower() or "signor" in p.name.lower() for p in BUNDLED_DIR.iterdir())


def test_loaded_frames_are_copies():
    a = load_relationships("reactome")
    a.loc[0, "gene_a"] = "CHANGED"
    assert load_relationships("reactome").loc[0, "gene_a"] != "CHANGED"


def test_pair_file_with_ensembl_ids_and_unknown_genes(tmp_path):
    path = tmp_path / "pairs.csv"
    # ENSG00000115415 is STAT1 and ENSG00000096968 is JAK2 in GENCODE v41 (version suffix ignored)
    path.write_text("entity1,entity2\nENSG00000115415.21,JAK2\nSTAT1,ENSG00000096968\nIRF1,IRF1\nNOTAGENE1,STAT1\n")
    pairs = read_relationships(path, source="mine")
    assert pairs[["gene_a", "gene_b"]].to_numpy().tolist() == [["JAK2", "STAT1"], ["NOTAGENE1", "STAT1"]]
    assert pairs.attrs["unmatched_genes"] == ["NOTAGENE1"]
    assert pairs.attrs["translated_genes"] == {"ENSG00000115415.21": "STAT1", "ENSG00000096968": "JAK2"}
    assert pairs.attrs["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (pairs["source"] == "mine").all()


def test_gmt_and_set_files_become_all_pairs_within_each_set(tmp_path):
    sets = {"S1": ["A1BG", "JAK2", "STAT1", "IRF1"], "S2": ["STAT1", "IRF1", "MYC"], "S3": ["MYC"]}
    gmt = tmp_path / "sets.gmt"
    gmt.write_text("".join(f"{k}\tdesc\t" + "\t".join(v) + "\n" for k, v in sets.items()))
    tsv = tmp_path / "clusters.tsv.gz"
    with gzip.open(tsv, "wt") as fh:
        fh.write("".join(f"{k}\t{' '.join(v)}\n" for k, v in sets.items()))
    expected = sorted({tuple(sorted(p)) for v in sets.values() for p in itertools.combinations(v, 2)})
    assert len(expected) == 6 + 3 - 1  # S1: 6 pairs, S2: 3 pairs, STAT1-IRF1 shared
    for frame in (read_relationships(gmt), read_relationships(tsv, format="sets"), pairs_from_sets(sets)):
        assert [tuple(r) for r in frame[["gene_a", "gene_b"]].to_numpy()] == expected
    assert read_relationships(gmt).attrs["format"] == "gmt"


def test_reader_errors(tmp_path):
    with pytest.raises(InputError, match="is not a file"):
        read_relationships(tmp_path / "missing.csv")
    one = tmp_path / "one.csv"
    one.write_text("gene\nSTAT1\n")
    with pytest.raises(InputError, match="needs two gene columns"):
        read_relationships(one)
    with pytest.raises(InputError, match=re.escape("format must be 'pairs', 'gmt' or 'sets'")):
        read_relationships(one, format="xml")
    bad = tmp_path / "bad.tsv"
    bad.write_text("SETONLY\n")
    with pytest.raises(InputError, match="has no tab"):
        read_relationships(bad, format="sets")
    selfonly = tmp_path / "self.csv"
    selfonly.write_text("a,b\nSTAT1,STAT1\n")
    with pytest.raises(InputError, match="no gene pair found"):
        read_relationships(selfonly)
