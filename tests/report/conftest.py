"""A small two-model MetricTable scored by the real ``evaluate`` on simulated cells."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import shrinkpert as sp
from shrinkpert import MetricTable

METRICS = ["mse", "pearson_delta", "discrimination_score_l1", "overlap_at_N"]


def _split(adata, seed):
    """Two disjoint halves of the cells within each perturbation (seeded)."""
    rng = np.random.default_rng(seed)
    first = np.zeros(adata.n_obs, dtype=bool)
    for _, rows in pd.Series(np.arange(adata.n_obs)).groupby(adata.obs["perturbation"].to_numpy(), observed=True):
        picked = rng.permutation(rows.to_numpy())[: len(rows) // 2]
        first[picked] = True
    return adata[first].copy(), adata[~first].copy()


def _relabel(adata, fraction, seed, control):
    """Permute the labels of ``fraction`` of the perturbed cells (a worse prediction)."""
    out = adata.copy()
    rng = np.random.default_rng(seed)
    labels = out.obs["perturbation"].astype(str).to_numpy().copy()
    cells = np.flatnonzero(labels != control)
    chosen = cells[rng.random(len(cells)) < fraction]
    labels[chosen] = rng.permutation(labels[chosen])
    out.obs["perturbation"] = labels
    return out


@pytest.fixture(scope="package")
def tables():
    """``(single, combined)``: one model's table, and two models' tables stacked with a model column.

    Truth is one half of a simulated screen; "replicate" is the other half (an honest prediction),
    "half shuffled" the other half with half of the perturbed cells' labels permuted.
    """
    cells = sp.datasets.simulate(n_cells=1600, n_genes=150, n_perturbations=14, seed=7)
    control = "non-targeting"  # the simulator's control label
    truth, other = _split(cells, 1)
    models = {"replicate": other, "half shuffled": _relabel(other, 0.5, 2, control)}
    scored = {name: sp.evaluate(pred, truth, metrics=METRICS, n_boot=50, seed=3, control=control)
              for name, pred in models.items()}
    first = scored["replicate"]
    values = pd.concat([t.to_frame().assign(model=n) for n, t in scored.items()], ignore_index=True)
    summary = pd.concat([t.summary().assign(model=n).set_index("model", append=True) for n, t in scored.items()])
    combined = MetricTable(values, summary, first.perturbations, first.genes, first.params)
    return first, combined


@pytest.fixture(scope="package")
def small(tables):
    """The one-model table restricted to its ``mse`` rows (one family: a quick page)."""
    single, _ = tables
    values = single.to_frame()
    summary = single.summary()
    return MetricTable(values[values["metric"] == "mse"], summary.loc[["mse"]], single.perturbations, single.genes,
                       single.params)


@pytest.fixture(scope="package")
def pages(small, tables):
    """The rendered pages of ``small`` and of the two-model table (rendering is the slow part; done once)."""
    from shrinkpert.report import render_html

    return render_html(small), render_html(tables[1])
