"""Bundled Hart lists: content, provenance, lookup, package data."""

from __future__ import annotations

import hashlib
import pathlib
import re

import shrinkpert
from shrinkpert.strata import essential_genes, essentiality

BUNDLED = pathlib.Path(shrinkpert.__file__).parent / "strata" / "_bundled"


def test_counts_match_the_source():
    table = essential_genes()
    counts = table["class"].value_counts()
    assert counts["core_essential"] == 684 and counts["non_essential"] == 927  # Hart et al. 2017
    assert "hart-lab/bagel@53388adb" in table.attrs["source"] and "MIT" in table.attrs["source"]


def test_checksums_in_provenance_match_the_files():
    text = (BUNDLED / "PROVENANCE.md").read_text()
    for name in ("CEGv2.txt", "NEGv1.txt"):
        recorded = re.search(rf"`{re.escape(name)}` `([0-9a-f]{{64}})`", text).group(1)
        assert hashlib.sha256((BUNDLED / name).read_bytes()).hexdigest() == recorded


def test_lookup_is_case_insensitive_and_unknown_otherwise():
    out = essentiality(["aars", "ABCG8", "NOT_A_GENE", None])
    assert out.tolist() == ["core_essential", "non_essential", "unknown", "unknown"]


def test_bundled_files_are_package_data():
    pyproject = (BUNDLED.parents[2] / "pyproject.toml").read_text()
    assert '"strata/_bundled/*"' in pyproject
