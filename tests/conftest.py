"""Shared fixtures: small real and synthetic data, storage layouts."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import shrinkpert


@pytest.fixture(scope="session")
def papalexi():
    """The bundled real data, assigned cells only (loaded once; tests must not modify it)."""
    adata = shrinkpert.datasets.papalexi2021()
    return adata[adata.obs["perturbation"] != "unassigned"].copy()


def poisson_resampled(adata: ad.AnnData, seed: int) -> ad.AnnData:
    """A 'model': a copy of ``adata`` with every stored count resampled (Poisson), seeded."""
    out = adata.copy()
    X = out.X.tocsr().astype(np.float64)
    X.data = np.random.default_rng(seed).poisson(X.data).astype(np.float64)
    X.eliminate_zeros()
    out.X = X
    return out


def make_counts(rng: np.random.Generator, n_cells=300, n_genes=40, n_groups=4, dtype=np.int64) -> ad.AnnData:
    """Sparse NB-like counts with a control group, an all-zero gene and a zero-count cell."""
    mu = rng.lognormal(-0.5, 1.0, size=n_genes)
    labels = np.array(["non-targeting"] + [f"G{k}" for k in range(1, n_groups)])
    groups = labels[rng.integers(0, n_groups, size=n_cells)]
    groups[:n_groups] = labels  # every group present
    shift = rng.normal(0, 0.5, size=(n_groups, n_genes))
    idx = pd.Index(labels).get_indexer(groups)
    lam = mu[None, :] * np.exp(shift[idx]) * rng.lognormal(0, 0.3, size=(n_cells, 1))
    X = rng.poisson(rng.gamma(2.0, lam / 2.0)).astype(dtype)
    X[:, 3] = 0  # all-zero gene
    X[5, :] = 0  # zero-count cell
    obs = pd.DataFrame({"perturbation": pd.Categorical(groups)}, index=[f"c{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])
    return ad.AnnData(X=X, obs=obs, var=var)


@pytest.fixture
def rng():
    return np.random.default_rng(20261124)


@pytest.fixture
def counts(rng):
    return make_counts(rng)


def as_layout(adata: ad.AnnData, layout: str, dtype, tmp_path) -> ad.AnnData | str:
    """The same data stored as dense / CSR / CSC in memory, or as a backed .h5ad path."""
    X = np.asarray(adata.X).astype(dtype)
    out = adata.copy()
    if layout == "dense":
        out.X = X
    elif layout in ("csr", "backed_csr"):
        out.X = sp.csr_matrix(X)
    elif layout in ("csc", "backed_csc"):
        out.X = sp.csc_matrix(X)
    if layout.startswith("backed"):
        path = tmp_path / f"{layout}_{np.dtype(dtype).name}.h5ad"
        out.write_h5ad(path)
        return str(path)
    return out
