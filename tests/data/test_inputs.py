"""Bad input gets a clear error naming what is wrong and the fix; inputs are never modified."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from shrinkpert import encode_design, estimate_effects, group_statistics
from shrinkpert.data.read import open_matrix
from shrinkpert.errors import CountsError, InputError, MissingKeyError


def test_missing_groupby_column(counts):
    with pytest.raises(MissingKeyError, match="no column 'guide'.*Columns present: 'perturbation'"):
        group_statistics(counts, "guide")


def test_missing_layer_lists_layers(counts):
    adata = counts.copy()
    adata.layers["counts"] = adata.X.copy()
    with pytest.raises(MissingKeyError, match="Layer 'raw' not found.*'counts'"):
        group_statistics(adata, "perturbation", layer="raw")


def test_missing_layer_in_backed_file(counts, tmp_path):
    path = tmp_path / "x.h5ad"
    counts.write_h5ad(path)
    with pytest.raises(MissingKeyError, match="Layer 'raw' not found in x.h5ad"):
        group_statistics(str(path), "perturbation", layer="raw")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_and_inf_are_rejected(counts, bad):
    adata = counts.copy()
    X = adata.X.astype(float)
    X[7, 2] = bad
    adata.X = sp.csr_matrix(X)
    with pytest.raises(InputError, match="1 NaN or infinite values"):
        group_statistics(adata, "perturbation")


def test_negative_counts_are_rejected_when_normalising(counts):
    adata = counts.copy()
    adata.X = adata.X.astype(float)
    adata.X[1, 1] = -2
    with pytest.raises(CountsError, match="negative values.*needs raw counts.*layer="):
        estimate_effects(adata)


def test_non_integer_counts_are_rejected_when_normalising(counts):
    adata = counts.copy()
    adata.X = adata.X.astype(float) + 0.5
    with pytest.raises(CountsError, match="non-integer values.*raw-count layer"):
        group_statistics(adata, "perturbation", normalize="log1p")


def test_log_data_accepted_without_normalising(counts):
    adata = counts.copy()
    adata.X = np.log1p(adata.X.astype(float))
    stats = group_statistics(adata, "perturbation")
    assert np.isfinite(stats.mean).all()


def test_duplicate_gene_names(counts):
    adata = counts.copy()
    names = adata.var_names.tolist()
    names[1] = names[0]
    adata.var_names = names
    with pytest.raises(InputError, match="Gene names are duplicated.*var_names_make_unique"):
        group_statistics(adata, "perturbation")


def test_duplicate_cell_names(counts):
    adata = counts.copy()
    names = adata.obs_names.tolist()
    names[1] = names[0]
    adata.obs_names = names
    with pytest.raises(InputError, match="Cell names are duplicated.*obs_names_make_unique"):
        group_statistics(adata, "perturbation")


def test_not_an_h5ad_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not an HDF5/.h5ad file"):
        group_statistics(str(path), "perturbation")


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        group_statistics(str(tmp_path / "nope.h5ad"), "perturbation")


def test_backed_view_is_refused_with_advice(counts, tmp_path):
    import anndata as ad

    path = tmp_path / "b.h5ad"
    counts.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(InputError, match="view of a backed AnnData.*to_memory"):
        group_statistics(backed[:10], "perturbation")
    backed.file.close()


def test_requested_perturbation_absent(counts):
    with pytest.raises(InputError, match=r"\['G9'\] have no cells"):
        encode_design(counts.obs, counts.var_names, perturbations=["G9"])


def test_empty_group_label_column(counts):
    obs = counts.obs.copy()
    obs["perturbation"] = pd.Categorical([None] * len(obs), categories=["x"])
    with pytest.raises(MissingKeyError, match="Control label 'non-targeting' is not in"):
        encode_design(obs, counts.var_names)


def test_design_codes_and_targets(papalexi):
    design = encode_design(papalexi.obs, papalexi.var_names, guide_key="guide_id", replicate_key="bio_rep")
    assert design.control_code == len(design.perturbations)
    assert (design.codes >= 0).all()
    stat1 = list(design.perturbations).index("STAT1")
    assert papalexi.var_names[design.target_index[stat1]] == "STAT1"
    assert design.target_index[list(design.perturbations).index("ATF2")] == -1
    guide_codes, guides = design.extra["guide"]
    assert len(guides) == papalexi.obs["guide_id"].nunique() and (guide_codes >= 0).all()


def test_block_reader_covers_every_value_once(counts, tmp_path):
    path = tmp_path / "r.h5ad"
    counts.write_h5ad(path)
    total = float(np.asarray(counts.X).sum())
    with open_matrix(str(path)) as src:
        seen = sum(float(np.asarray(b.values.sum())) for b in src.blocks(7))
    assert seen == total


def test_first_block_reads_the_head_only(counts, tmp_path):
    """A peek at the head (scale detection, pilot shift) reads the head once, no read-ahead."""
    path = tmp_path / "r.h5ad"
    counts.write_h5ad(path)
    with open_matrix(str(path)) as src:
        spans = []
        read = src._read_rows
        src._read_rows = lambda start, stop: spans.append((start, stop)) or read(start, stop)
        head = src.first_block(7)
        assert spans == [(0, 7)]
        assert head.rows == slice(0, 7)
        dense = [v.toarray() if sp.issparse(v) else np.asarray(v) for v in (head.values, counts.X[:7])]
        np.testing.assert_array_equal(*dense)
        list(src.blocks(7))  # the streaming reader still reads every block once
        assert spans[1:] == [(start, min(start + 7, counts.n_obs)) for start in range(0, counts.n_obs, 7)]


def test_scale_factors_normalise_each_cell_to_the_target_sum_and_leave_empty_cells_at_zero():
    from shrinkpert.data.read import scale_factors

    totals = np.array([2.0, 0.0, 1e4, 3.0])
    s = scale_factors(totals, 1e4)
    np.testing.assert_array_equal(s, [5e3, 0.0, 1.0, 1e4 / 3.0])
    assert np.all(np.isfinite(s))
