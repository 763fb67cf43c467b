"""Seeded test inputs for every kind of metric input (means, deltas, DE calls, cells).

Each builder returns ``(truth, good, bad)``: a truth, a prediction close to it and a clearly
worse one, so that registry-wide tests can check perfect scores, direction and invariances
without knowing individual metrics.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from shrinkpert.metrics import DECalls

N_PERT, N_GENES = 12, 40


def profiles(rng: np.random.Generator, n_pert: int = N_PERT, n_genes: int = N_GENES):
    """Distinct true profiles (sparse-ish effects on a baseline) and good/bad predictions."""
    base = rng.normal(1.0, 0.5, size=n_genes)
    effect = rng.normal(0.0, 1.0, size=(n_pert, n_genes)) * (rng.random((n_pert, n_genes)) < 0.4)
    truth = base + effect
    good = truth + rng.normal(0.0, 0.1, size=truth.shape)
    bad = base + 0.3 * effect + rng.normal(0.0, 1.0, size=truth.shape)
    return truth, good, bad


def _calls(lfc: np.ndarray, se: float) -> DECalls:
    p = 2.0 * stats.norm.sf(np.abs(lfc) / se)
    return DECalls(lfc=lfc, q=stats.false_discovery_control(p, axis=1))


def de_calls(rng: np.random.Generator, n_pert: int = N_PERT, n_genes: int = 60):
    """True DE calls (every row has several but not all genes DE) and good/bad predicted calls."""
    beta = rng.normal(0.0, 1.5, size=(n_pert, n_genes)) * (rng.random((n_pert, n_genes)) < 0.3)
    beta[:, :3] = rng.choice([-2.5, 2.5], size=(n_pert, 3))  # >= 3 clear DE genes per row
    beta[:, -5:] = 0.0  # >= 5 null genes per row
    truth = _calls(beta + rng.normal(0.0, 0.2, size=beta.shape), 0.2)
    good = _calls(beta + rng.normal(0.0, 0.3, size=beta.shape), 0.3)
    bad = _calls(0.2 * beta + rng.normal(0.0, 1.0, size=beta.shape), 0.35)  # many false calls
    return truth, good, bad


def cells(rng: np.random.Generator, n_cells: int = 60, n_genes: int = 8):
    """Cells of one perturbation, a prediction from the same distribution and a shifted one."""
    mu = rng.normal(0.0, 1.0, size=n_genes)
    truth = mu + rng.normal(0.0, 1.0, size=(n_cells, n_genes))
    good = mu + rng.normal(0.0, 1.0, size=(n_cells, n_genes))
    bad = mu + 1.5 + rng.normal(0.0, 2.0, size=(n_cells, n_genes))
    return truth, good, bad


#: Target gene column of each perturbation in :func:`target_profiles`.
TARGETS = (np.arange(N_PERT) * 3) % N_GENES


def target_profiles(rng: np.random.Generator):
    """Deltas where each perturbation knocks down its target (``TARGETS``) plus other effects.

    The good prediction keeps every knockdown; the bad one misses half of them (sign flipped)
    and adds noise everywhere.
    """
    effect = rng.normal(0.0, 0.5, size=(N_PERT, N_GENES)) * (rng.random((N_PERT, N_GENES)) < 0.4)
    rows = np.flatnonzero(TARGETS >= 0)
    effect[rows, TARGETS[rows]] = -rng.uniform(1.0, 2.5, size=rows.size)
    good = effect + rng.normal(0.0, 0.05, size=effect.shape)
    bad = effect + rng.normal(0.0, 1.0, size=effect.shape)
    bad[rows[::2], TARGETS[rows[::2]]] *= -1.0
    return effect, good, bad


def penetrances(rng: np.random.Generator):
    """Per-perturbation penetrances in [0, 1] and good/bad predictions of them."""
    truth = rng.uniform(0.2, 0.9, size=N_PERT)
    return truth, np.clip(truth + rng.normal(0.0, 0.02, N_PERT), 0, 1), rng.uniform(0.0, 1.0, N_PERT)


#: Perturbation of each guide in :func:`doses` (4 guides each).
GUIDE_GROUPS = np.repeat([f"P{k:02d}" for k in range(N_PERT)], 4)


def doses(rng: np.random.Generator):
    """Per-guide responses; the good prediction keeps each perturbation's guide order."""
    truth = rng.uniform(0.0, 1.0, size=GUIDE_GROUPS.size)
    return truth, 0.5 * truth + 0.01 * rng.random(truth.size), rng.uniform(0.0, 1.0, size=truth.size)


def inputs(needs: str, seed: int = 0):
    """``(truth, good, bad)`` for a metric that needs ``needs`` (``"target"``: target-gene deltas)."""
    rng = np.random.default_rng(seed)
    if needs == "target":
        return target_profiles(rng)
    if needs == "penetrance":
        return penetrances(rng)
    if needs == "dose":
        return doses(rng)
    if needs in ("means", "deltas"):
        return profiles(rng)
    if needs == "de":
        return de_calls(rng)
    if needs == "cells":
        return cells(rng)
    raise ValueError(needs)


def permute_genes(x, order: np.ndarray):
    """The same input with genes (columns) in another order."""
    if isinstance(x, DECalls):
        return DECalls(lfc=x.lfc[..., order], q=x.q[..., order])
    return np.asarray(x)[..., order]


def permute_rows(x, order: np.ndarray):
    """The same input with perturbations (rows) in another order."""
    if isinstance(x, DECalls):
        return DECalls(lfc=x.lfc[order], q=x.q[order])
    return np.asarray(x)[order]


def first_row(x):
    """Row 0 as a single-perturbation (vector) input."""
    if isinstance(x, DECalls):
        return DECalls(lfc=x.lfc[0], q=x.q[0])
    return np.asarray(x)[0]


def with_nan(x):
    """The same input with one non-finite value."""
    if isinstance(x, DECalls):
        lfc = np.array(x.lfc)
        lfc[0, 1] = np.nan
        return (lfc, x.q)
    out = np.array(x, dtype=np.float64)
    out[0, 1] = np.nan
    return out
