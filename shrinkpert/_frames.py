"""Tidy long tables of perturbation × gene results (one row per pair)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def long_frame(perturbations: pd.Index, genes: pd.Index, columns: dict) -> pd.DataFrame:
    """``perturbation, gene`` then one column per entry of ``columns``.

    Each value is a (n_perturbations, n_genes) matrix, flattened row by row, or a scalar.
    """
    n_p, n_g = len(perturbations), len(genes)
    out = {"perturbation": np.repeat(perturbations.to_numpy(), n_g), "gene": np.tile(genes.to_numpy(), n_p)}
    for name, value in columns.items():
        out[name] = np.ravel(value) if np.ndim(value) == 2 else value
    return pd.DataFrame(out)
