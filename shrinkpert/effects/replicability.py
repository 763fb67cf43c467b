"""Split-half replicability of per-perturbation effects, raw and shrunk: :func:`replicability`."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import as_rng
from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY
from ..data.read import read_annotations
from ..errors import InputError, ShrinkpertWarning
from ..stats.group import GroupStatistics, group_statistics
from .estimate import EffectSizes, estimate_effects

__all__ = ["replicability", "split_halves", "split_scores"]


def split_halves(
    obs: pd.DataFrame,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    split: str = "random",
    seed: int | np.random.Generator = 0,
) -> pd.Series:
    """Assign each cell to half ``"A"`` or ``"B"`` within its perturbation (control included).

    ``split="random"``: a random half of each perturbation's cells (sizes differ by at most one).
    ``split=<obs column>``: levels shared by several labels (biological replicates, batches)
    are shuffled once and the first :math:`\\lceil L/2 \\rceil` go to A for every perturbation
    and the control alike (so each half compares cells of the same replicates); levels owned by
    one label (its guides) are shuffled and split within it. A label whose cells all fall in
    one half gets no half (NaN).
    """
    rng = as_rng(seed)
    labels = obs[perturbation_key].astype("string").to_numpy(dtype=object, na_value=None)
    half = np.full(len(obs), None, dtype=object)
    by_label = pd.Series(np.arange(len(obs))).groupby(pd.Series(labels), sort=True, dropna=True)
    if split == "random":
        for _, idx in by_label:
            order = rng.permutation(idx.to_numpy())
            half[order[: (len(order) + 1) // 2]] = "A"
            half[order[(len(order) + 1) // 2:]] = "B"
    else:
        if split not in obs.columns:
            raise InputError(f"split={split!r} is neither 'random' nor an obs column; columns: {list(obs.columns)[:20]!r}.")
        levels = obs[split].astype("string").to_numpy(dtype=object, na_value=None)
        owners = pd.DataFrame({"label": labels, "level": levels}).dropna().drop_duplicates()
        n_owners = owners.groupby("level")["label"].nunique()
        # levels shared by several perturbations (replicates, batches) go to one half for every
        # perturbation and the control alike, so the halves stay paired; levels owned by one
        # perturbation (its guides) are split within it
        shared = sorted(n_owners.index[n_owners > 1])
        shared = [shared[i] for i in rng.permutation(len(shared))]
        assigned = {lev: ("A" if i < (len(shared) + 1) // 2 else "B") for i, lev in enumerate(shared)}
        for _, idx in by_label:
            idx = idx.to_numpy()
            own = sorted({levels[i] for i in idx if levels[i] is not None and levels[i] not in assigned})
            own = [own[i] for i in rng.permutation(len(own))]
            local = {lev: ("A" if i < (len(own) + 1) // 2 else "B") for i, lev in enumerate(own)}
            local.update(assigned)
            present = {local[levels[i]] for i in idx if levels[i] is not None}
            if present != {"A", "B"}:
                continue  # a single level: this label cannot be split
            for i in idx:
                if levels[i] is not None:
                    half[i] = local[levels[i]]
    return pd.Series(half, index=obs.index, name="half")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denom) if denom > 0 else np.nan


def _noise_corrected(a: np.ndarray, sa: np.ndarray, b: np.ndarray, sb: np.ndarray) -> float:
    """cov(a, b) / sqrt((var a - mean sa²)(var b - mean sb²)); NaN when a signal variance is ≤ 0."""
    va = a.var(ddof=1) - np.mean(sa**2)
    vb = b.var(ddof=1) - np.mean(sb**2)
    if va <= 0 or vb <= 0:
        return np.nan
    return float(np.cov(a, b)[0, 1] / np.sqrt(va * vb))


_COLUMNS = ("split", "perturbation", "n_cells_a", "n_cells_b", "n_genes", "raw_correlation", "shrunk_correlation",
            "noise_corrected_correlation", "raw_error", "shrunk_error")


def split_scores(
    stats: GroupStatistics,
    *,
    control: str = CONTROL,
    scale: str = "log1p",
    min_cells: int = MIN_CELLS,
    perturbations: list[str] | None = None,
    exclude_target: bool = True,
    mixture: str = "normal",
    n_threads: int | None = None,
) -> pd.DataFrame:
    """The scores of :func:`replicability` for one split, from statistics grouped by (label, half).

    ``stats`` is :func:`~shrinkpert.group_statistics` grouped by ``[perturbation_key, halves]``
    with ``halves`` from :func:`split_halves` (control cells split too), normalised as ``scale``
    needs. Each half's effects are estimated against that half's control; ``perturbations``
    (default: every label but the control) absent from a half, or with fewer than ``min_cells``
    cells in it, are left out. Returns one row per perturbation (columns of :func:`replicability`
    without ``split``).
    """
    from .shrink import shrink_effects

    effects: dict[str, EffectSizes] = {}
    for h in ("A", "B"):
        half_stats = stats.select("half", h)
        present = set(half_stats.groups.astype(str))
        wanted = [p for p in (perturbations or sorted(present - {control})) if p in present]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShrinkpertWarning)  # small halves are reported below
            effects[h] = estimate_effects(half_stats, control=control, scale=scale, perturbations=wanted,
                                          min_cells=min_cells)
    common = effects["A"].perturbations.intersection(effects["B"].perturbations, sort=False)
    if len(common) == 0:
        raise InputError("No perturbation has enough cells in both halves; lower min_cells or use split='random'.")
    # subset() copies every array; skip it when a half already holds exactly these rows
    a, b = (e if e.perturbations.equals(common) else e.subset(common) for e in (effects["A"], effects["B"]))
    sa = shrink_effects(a, mixture=mixture, n_threads=n_threads)
    sb = shrink_effects(b, mixture=mixture, n_threads=n_threads)
    genes = np.arange(len(a.genes))
    rows = []
    for k, pert in enumerate(common):
        keep = genes != a.target_index[k] if exclude_target else np.ones(len(genes), bool)
        ba, bb = a.effect[k, keep], b.effect[k, keep]
        pa, pb = sa.posterior_mean[k, keep], sb.posterior_mean[k, keep]
        rows.append({
            "perturbation": pert,
            "n_cells_a": int(a.n_cells[k]),
            "n_cells_b": int(b.n_cells[k]),
            "n_genes": int(keep.sum()),
            "raw_correlation": _pearson(ba, bb),
            "shrunk_correlation": _pearson(pa, pb),
            "noise_corrected_correlation": _noise_corrected(ba, a.std_error[k, keep], bb, b.std_error[k, keep]),
            "raw_error": float(np.mean((ba - bb) ** 2)),
            "shrunk_error": float(np.mean((pa - bb) ** 2)),
        })
    return pd.DataFrame(rows, columns=list(_COLUMNS[1:]))


def replicability(
    adata: Any,
    *,
    split: str = "random",
    n_splits: int = 5,
    seed: int | np.random.Generator = 0,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    scale: str = "log1p",
    min_cells: int = MIN_CELLS,
    exclude_target: bool = True,
    mixture: str = "normal",
    perturbations: list[str] | None = None,
    layer: str | None = None,
    n_threads: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Agreement between effects estimated on two disjoint halves of each perturbation's cells.

    For each split, every perturbation's cells **and the control cells** are divided into
    halves A and B (at random, or by guide / replicate with ``split=<obs column>``); effects
    :math:`\\hat\\beta^A, \\hat\\beta^B` with standard errors :math:`s^A, s^B` are estimated on
    each half against that half's control and shrunk per perturbation with :func:`shrink_effects`
    (posterior means :math:`\\tilde\\beta`). Per perturbation (target gene excluded by default):

    * ``raw_correlation`` :math:`= r(\\hat\\beta^A, \\hat\\beta^B)`;
    * ``shrunk_correlation`` :math:`= r(\\tilde\\beta^A, \\tilde\\beta^B)`;
    * ``noise_corrected_correlation``
      :math:`= \\mathrm{cov}(\\hat\\beta^A, \\hat\\beta^B)/\\sqrt{(\\mathrm{var}\\,\\hat\\beta^A - \\overline{(s^A)^2})
      (\\mathrm{var}\\,\\hat\\beta^B - \\overline{(s^B)^2})}` (method-of-moments disattenuation; the
      halves share no cells, so their noise is independent; NaN when a half shows no signal
      variance beyond noise);
    * ``raw_error`` :math:`= \\overline{(\\hat\\beta^A - \\hat\\beta^B)^2}` and ``shrunk_error``
      :math:`= \\overline{(\\tilde\\beta^A - \\hat\\beta^B)^2}`: the error of predicting half B's
      effects from half A, raw or shrunk (both include B's own noise).

    Parameters
    ----------
    adata
        AnnData or ``.h5ad`` path with raw counts.
    split
        ``"random"`` or an ``obs`` column (e.g. a guide or replicate column).
    n_splits
        Number of independent splits (one streaming pass each).
    seed
        Seed or Generator; results are identical for the same seed.
    exclude_target
        Leave each perturbation's own target gene out of every score.
    mixture
        Prior family of :func:`shrink_effects`.

    Returns
    -------
    pandas.DataFrame
        One row per (split, perturbation) with the scores above, ``n_cells_a``, ``n_cells_b`` and
        ``n_genes``.
    """
    if int(n_splits) < 1:
        raise InputError(f"n_splits must be a positive integer, got {n_splits!r}.")
    obs, _ = read_annotations(adata)
    if perturbation_key not in obs.columns:
        raise InputError(f"obs has no column {perturbation_key!r}; pass perturbation_key=.")
    rng = as_rng(seed)
    rows = []
    for s in range(int(n_splits)):
        halves = split_halves(obs, perturbation_key=perturbation_key, split=split, seed=rng)
        stats = group_statistics(adata, [perturbation_key, halves], layer=layer,
                                 normalize={"log1p": "log1p", "log2fc": "total"}[scale],
                                 n_threads=n_threads, progress=progress)
        labels = obs[perturbation_key].astype("string")
        wanted = perturbations or sorted(set(labels.dropna()) - {control})
        rows.append(split_scores(stats, control=control, scale=scale, min_cells=min_cells, perturbations=wanted,
                                 exclude_target=exclude_target, mixture=mixture, n_threads=n_threads).assign(split=s))
    frame = pd.concat(rows, ignore_index=True)[list(_COLUMNS)]
    frame.attrs["params"] = {"split": split, "n_splits": int(n_splits), "scale": scale, "mixture": mixture,
                             "exclude_target": exclude_target, "control": control}
    return frame
