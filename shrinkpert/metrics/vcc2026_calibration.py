r"""Calibrated VCC 2026 score: mean-response baseline, replicate anchor, scaling, bootstrap CIs.

cell-eval2 scales each member's aggregate :math:`u` between a baseline :math:`b` (the score of
a mean-response prediction) and a replicate anchor :math:`r` (the score of one half of the
measured cells predicting the other half, averaged over five seeded splits):

.. math::
    s = \frac{u - b}{r - b}\ \text{(higher is better)},\qquad
    s = \frac{b - u}{b - r}\ \text{(lower is better)},

kept unclamped except ``expr_mse_unbiased_capped_norm`` (clipped to [0, 1]) and
``de_wilcoxon_lfc_nmae`` (floored at -6). A member without a finite value scores as
:math:`u = 0` (the four bounded members) or at its floor. The overall score is the mean of
the six. shrinkpert adds percentile bootstrap intervals over perturbations
(:func:`bootstrap_vcc2026`) and reports the anchor's seed spread.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._arrays import as_rng, finite_mean
from .._validate import CellData, validate
from ..errors import InputError
from .vcc2026 import MEMBERS, VCC2026Result, _score, _target_columns
from .vcc2026_ends import baseline_draws, cell_subset, emitted_baseline, response_scale

__all__ = [
    "CalibratedScore",
    "calibrate_vcc2026",
    "mean_response_baseline",
    "baseline_vcc2026",
    "replicate_anchor_vcc2026",
    "ReplicateAnchor",
    "anchor_from_values",
    "bootstrap_vcc2026",
    "member_values",
    "GREATER_IS_BETTER",
]

#: Direction of each member and the clamps cell-eval2 publishes for the replicate scale.
_POLICY = MappingProxyType({
    "pds_cosine": ("higher", -np.inf, np.inf, 0.0),
    "expr_mse_unbiased_capped_norm": ("lower", 0.0, 1.0, None),
    "de_wilcoxon_direction_fidelity_yield_raw": ("higher", -np.inf, np.inf, 0.0),
    "de_wilcoxon_direction_reach_raw": ("higher", -np.inf, np.inf, 0.0),
    "de_wilcoxon_sig_jaccard": ("higher", -np.inf, np.inf, 0.0),
    "de_wilcoxon_lfc_nmae": ("lower", -6.0, np.inf, None),
})

#: Whether a larger value of each member is better.
GREATER_IS_BETTER = MappingProxyType({m: policy[0] == "higher" for m, policy in _POLICY.items()})


@dataclass(frozen=True)
class CalibratedScore:
    """Scaled members and their mean.

    Attributes
    ----------
    scores : mapping of str to float
        :math:`s` per member (formula in the module docstring).
    avg_score : float
        Mean of the six member scores.
    raw, baseline, anchor : mapping of str to float
        :math:`u`, :math:`b`, :math:`r` per member.
    ci : pandas.DataFrame or None
        Bootstrap interval per member and for ``avg_score`` (:func:`bootstrap_vcc2026`).
    """

    scores: Mapping[str, float]
    avg_score: float
    raw: Mapping[str, float]
    baseline: Mapping[str, float]
    anchor: Mapping[str, float]
    ci: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        for name in ("scores", "raw", "baseline", "anchor"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    def to_frame(self) -> pd.DataFrame:
        """One row per member (and ``avg_score``): raw, baseline, anchor, score (and CI)."""
        frame = pd.DataFrame({
            "metric": [*MEMBERS, "avg_score"],
            "raw": [*(self.raw[m] for m in MEMBERS), np.nan],
            "baseline": [*(self.baseline[m] for m in MEMBERS), np.nan],
            "anchor": [*(self.anchor[m] for m in MEMBERS), np.nan],
            "score": [*(self.scores[m] for m in MEMBERS), self.avg_score],
        })
        if self.ci is not None:
            frame = frame.merge(self.ci, on="metric", how="left")
        return frame


def _scale(name: str, u: float, b: float, r: float) -> float:
    direction, low, high, metric_min = _POLICY[name]
    span = (r - b) if direction == "higher" else (b - r)
    if not np.isfinite(b) or not np.isfinite(r) or span <= 0:
        raise InputError(
            f"{name}: the anchor ({r!r}) leaves no headroom over the baseline ({b!r}); the calibrated "
            "scale is undefined. Rebuild the anchor or the baseline."
        )
    if not np.isfinite(u):
        if metric_min is None:
            return float(low)
        u = metric_min
    s = (u - b) / span if direction == "higher" else (b - u) / span
    if not np.isfinite(s):
        return float(low) if metric_min is None else float(np.clip((metric_min - b) / span, low, high))
    return float(np.clip(s, low, high))


def _aggregate(values) -> dict[str, float]:
    if isinstance(values, VCC2026Result):
        return dict(values.aggregate)
    return {k: float(v) for k, v in dict(values).items()}


def calibrate_vcc2026(result, baseline, anchor) -> CalibratedScore:
    r"""Scale each member between the baseline and the replicate anchor.

    Parameters
    ----------
    result : VCC2026Result or mapping
        The submission's aggregates :math:`u` (``result.aggregate`` or ``{member: value}``).
    baseline : VCC2026Result or mapping
        :math:`b` per member (e.g. :func:`baseline_vcc2026`, or cell-eval2's baseline agg).
    anchor : ReplicateAnchor or mapping
        :math:`r` per member (e.g. :func:`replicate_anchor_vcc2026`).

    Returns
    -------
    CalibratedScore

    Raises
    ------
    InputError
        A member is missing from ``baseline`` or ``anchor``, or the anchor is not beyond the
        baseline in the member's direction.
    """
    u = _aggregate(result)
    b = _aggregate(baseline)
    r = dict(anchor.replicate) if isinstance(anchor, ReplicateAnchor) else {k: float(v) for k, v in dict(anchor).items()}
    for name, where in ((b, "baseline"), (r, "anchor")):
        absent = [m for m in MEMBERS if m not in name]
        if absent:
            raise InputError(f"{where} has no value for {absent!r}; it must cover all six vcc2026 members.")
    scores = {m: _scale(m, u.get(m, float("nan")), b[m], r[m]) for m in MEMBERS}
    return CalibratedScore(
        scores=scores,
        avg_score=float(np.mean([scores[m] for m in MEMBERS])),
        raw={m: u.get(m, float("nan")) for m in MEMBERS},
        baseline={m: b[m] for m in MEMBERS},
        anchor={m: r[m] for m in MEMBERS},
    )


# ----------------------------------------------------------------------------------------------
# the two ends of the scale


def _in_memory(data) -> ad.AnnData:
    if isinstance(data, CellData):
        data = data.source
    if isinstance(data, ad.AnnData) and not data.isbacked:
        return data
    if isinstance(data, ad.AnnData):
        return data.to_memory()
    return ad.read_h5ad(data)


def mean_response_baseline(truth, *, perturbation_key: str = "perturbation", control: str = "non-targeting",
                           target_genes=None, seed: int = 0) -> ad.AnnData:
    r"""The mean-response prediction cell-eval2 anchors the 0 end of the scale with.

    Profile :math:`m_g` = mean over perturbations of their mean counts, each perturbation's own
    target gene left out of that gene's mean. Every perturbed cell of ``truth`` is replaced by
    a control cell drawn with replacement (``numpy.random.default_rng(seed)``, perturbations in
    sorted order) whose counts are multiplied by :math:`m_g / \bar c_g` (:math:`\bar c_g` the
    control mean; 0 where it is 0), stored as float32; control cells are kept as they are.

    Returns
    -------
    anndata.AnnData
        Same shape, ``obs`` and ``var`` as ``truth``; counts are fractional.
    """
    adata = _in_memory(truth)
    t = validate(adata, side="truth", perturbation_key=perturbation_key, control=control)
    n_p = len(t.perturbations)
    X = sp.csr_matrix(adata.X)
    groups = [np.flatnonzero(t.codes == k) for k in range(n_p + 1)]  # the control last
    means = np.stack([np.asarray(X[rows].astype(np.float64).mean(axis=0)).ravel() for rows in groups])
    scale = response_scale(means, _target_columns(t.perturbations, t.genes, target_genes))
    ctrl_X = X[groups[n_p]]
    positions, draws = baseline_draws(t.codes, n_p, ctrl_X.shape[0], seed)
    emitted = ctrl_X[np.concatenate(draws)].copy()
    emitted.data = (emitted.data * scale[emitted.indices]).astype(np.float32)
    emitted.eliminate_zeros()
    kept = np.flatnonzero((t.codes == n_p) | (t.codes < 0))  # control and unlabelled cells as they are
    stacked = sp.vstack([emitted, X[kept].astype(np.float32)], format="csr")
    order = np.empty(X.shape[0], dtype=np.intp)
    order[np.concatenate([*positions, kept])] = np.arange(X.shape[0])
    return ad.AnnData(stacked[order], obs=adata.obs.copy(), var=adata.var.copy())


def baseline_vcc2026(truth, *, perturbation_key: str = "perturbation", control: str = "non-targeting",
                     target_genes=None, seed: int = 0, n_threads: int | None = None,
                     chunk_size: int | None = None, rows: np.ndarray | None = None) -> VCC2026Result:
    """Score :func:`mean_response_baseline` against ``truth``: the :math:`b` of every member.

    Streamed (:mod:`~shrinkpert.metrics.vcc2026_ends`): the truth is read in blocks (one pass for
    the group means, then as the scorer reads it) and the baseline's cells are emitted block by
    block from the control cells' rows; the numbers are those of scoring
    :func:`mean_response_baseline`'s AnnData. ``rows``: a shard, as for
    :func:`~shrinkpert.metrics.vcc2026.score_vcc2026`.
    """
    t = validate(truth, side="truth", perturbation_key=perturbation_key, control=control)
    pred = emitted_baseline(t, seed=seed, cols=_target_columns(t.perturbations, t.genes, target_genes),
                            chunk_size=chunk_size)
    return _score(pred, t, target_genes=target_genes, chunk_size=chunk_size, n_threads=n_threads,
                  fractional_pred=True, rows=rows)


@dataclass(frozen=True)
class ReplicateAnchor:
    """The replicate end of the scale: members averaged over seeded half-splits.

    Attributes
    ----------
    replicate, sd : mapping of str to float
        Mean and population SD (ddof=0) over splits per member; the SD is the scale's resolution.
    splits : pandas.DataFrame
        ``split, seed, metric, value``.
    per_perturbation : pandas.DataFrame or None
        ``split, seed, perturbation`` and each per-perturbation value of the split (NaN for a
        perturbation a split's halves do not hold); the splits' aggregates are computed from it.
    """

    replicate: Mapping[str, float]
    sd: Mapping[str, float]
    splits: pd.DataFrame
    per_perturbation: pd.DataFrame | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "replicate", MappingProxyType(dict(self.replicate)))
        object.__setattr__(self, "sd", MappingProxyType(dict(self.sd)))


def _halves(labels: pd.Series, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if isinstance(labels.dtype, pd.CategoricalDtype):
        keys = [c for c in labels.cat.categories if (labels == c).any()]
    else:
        keys = sorted(labels.astype(str).unique())
    values = labels.astype(str).to_numpy() if not isinstance(labels.dtype, pd.CategoricalDtype) else labels.to_numpy()
    a, b = [], []
    for key in keys:
        perm = rng.permutation(np.flatnonzero(values == key))
        h = perm.size // 2
        if h >= 1:
            a.append(perm[:h])
            b.append(perm[h : 2 * h])
    return np.concatenate(a), np.concatenate(b)


def replicate_anchor_vcc2026(truth, *, perturbation_key: str = "perturbation", control: str = "non-targeting",
                             target_genes=None, n_splits: int = 5, base_seed: int = 0,
                             n_threads: int | None = None, rows: np.ndarray | None = None) -> ReplicateAnchor:
    r"""Replicate anchor: score one half of the measured cells against the other, ``n_splits`` times.

    Seeds ``numpy.random.SeedSequence(base_seed).generate_state(n_splits)``; per seed every
    group's cells (control included) are permuted and split into two disjoint halves of
    :math:`\lfloor n/2 \rfloor`; half B is scored as a prediction of half A, each half with its
    own controls. ``de_wilcoxon_lfc_nmae`` is replaced by its split-half reference:
    :math:`\sum|\mathrm{lfc}^A - \mathrm{lfc}^B| / \sum|\mathrm{lfc}|` over the full data's
    significant genes (finite lfc, target removed, >= 10 genes; a gene a half does not test
    counts as lfc 0), averaged over perturbations.

    Each half is the truth with the other cells left out (read from the truth's file, never
    copied). ``rows`` (positions of perturbations, a shard): the DE tests are run for those
    perturbations only (:func:`~shrinkpert.metrics.vcc2026.score_vcc2026`'s rule); the result
    then holds only ``per_perturbation`` values, to be combined by :func:`anchor_from_values`.
    """
    t = validate(truth, side="truth", perturbation_key=perturbation_key, control=control)
    labels = t.column(perturbation_key, "perturbation_key")  # the raw column: cell-eval2's split order
    seeds = [int(s) for s in np.random.SeedSequence(int(base_seed)).generate_state(n_splits)]
    from ..stats.wilcoxon import wilcoxon_de
    from .vcc2026 import PRESET, _rows_only

    de_args = dict(perturbation_key=perturbation_key, control=control, target_sum=PRESET["target_sum"],
                   min_control_cpm=PRESET["min_control_cpm"], epsilon=PRESET["epsilon"], n_threads=n_threads)
    full = wilcoxon_de(t if rows is None else _rows_only(t, rows, True), **de_args)
    perts = t.perturbations
    cols = _target_columns(perts, t.genes, target_genes)
    frames = []
    for i, seed in enumerate(seeds):
        a, b = _halves(labels, seed)
        half_b, half_a = cell_subset(t, b, "pred"), cell_subset(t, a, "truth")
        at = perts.get_indexer(half_a.perturbations)
        res = _score(half_b, half_a, target_genes=target_genes, chunk_size=None, n_threads=n_threads,
                     own_controls=True, rows=None if rows is None else np.flatnonzero(np.isin(at, rows)))
        values = {}
        for name, v in res.values.items():
            values[name] = np.full(len(perts), np.nan)
            values[name][at] = v
        # the halves' own tests (each against its own controls) are the split-half lfc reference's
        values["de_wilcoxon_lfc_nmae"] = _nmae_values(full, res.de_truth, res.de_pred, cols, perts)
        frames.append(pd.DataFrame({"split": i, "seed": seed, "perturbation": perts.astype(str), **values}))
    per_perturbation = pd.concat(frames, ignore_index=True)
    if rows is not None:
        return ReplicateAnchor(replicate={}, sd={}, splits=pd.DataFrame(columns=["split", "seed", "metric", "value"]),
                               per_perturbation=per_perturbation.iloc[
                                   np.flatnonzero(np.isin(np.tile(np.arange(len(perts)), n_splits), rows))])
    return anchor_from_values(per_perturbation)


def anchor_from_values(per_perturbation: pd.DataFrame) -> ReplicateAnchor:
    """The anchor from its per-perturbation values (``split, seed, perturbation`` and one column
    per value, rows in perturbation order within each split): each split's aggregates
    (:func:`~shrinkpert.metrics.vcc2026.aggregate_vcc2026`), then their mean and SD."""
    from .vcc2026 import aggregate_vcc2026

    rows = []
    for (i, seed), block in per_perturbation.groupby(["split", "seed"], sort=True):
        values = aggregate_vcc2026({k: block[k].to_numpy(dtype=np.float64) for k in block.columns
                                    if k not in ("split", "seed", "perturbation")})
        if not np.isfinite(values["de_wilcoxon_lfc_nmae"]):
            raise InputError("No perturbation has >= 10 significant genes; the lfc_nmae anchor is undefined.")
        rows += [{"split": int(i), "seed": int(seed), "metric": m, "value": values[m]} for m in MEMBERS]
    splits = pd.DataFrame(rows)
    grouped = splits.groupby("metric")["value"]
    return ReplicateAnchor(replicate=grouped.mean().to_dict(), sd=grouped.std(ddof=0).to_dict(), splits=splits,
                           per_perturbation=per_perturbation)


def _nmae_values(full, de_a, de_b, cols, perts) -> np.ndarray:
    """Per perturbation of ``perts``: the split-half lfc reference (NaN where the gate leaves it out
    or ``full`` did not test it)."""
    from .vcc2026 import PRESET

    out = np.full(len(perts), np.nan)
    for k, name in enumerate(full.perturbations):
        j = perts.get_loc(name)
        gate = full.tested & (full.q[k] < PRESET["alpha"]) & np.isfinite(full.lfc[k])
        if j in cols:
            gate[cols[j]] = False
        if gate.sum() < PRESET["lfc_nmae_min_genes"]:
            continue
        ka, kb = de_a.perturbations.get_loc(name), de_b.perturbations.get_loc(name)
        la = np.where(de_a.tested & np.isfinite(de_a.lfc[ka]), de_a.lfc[ka], 0.0)[gate]
        lb = np.where(de_b.tested & np.isfinite(de_b.lfc[kb]), de_b.lfc[kb], 0.0)[gate]
        den = np.abs(full.lfc[k][gate]).mean()
        if np.isfinite(den) and den != 0:
            out[j] = np.abs(la - lb).mean() / den
    return out


# ----------------------------------------------------------------------------------------------
# uncertainty


def _ratio_of_sums(values: np.ndarray) -> np.ndarray:
    """``expr_mse_unbiased_capped_norm`` over the last axis: ``values[0]`` summed over
    ``values[1]`` where both are finite (NaN unless the denominator is positive)."""
    ok = np.isfinite(values[0]) & np.isfinite(values[1])
    num = np.where(ok, values[0], 0.0).sum(axis=-1)
    den = np.where(ok, values[1], 0.0).sum(axis=-1)
    return np.divide(num, den, out=np.full(den.shape, np.nan), where=den > 0)


def member_values(result: VCC2026Result, member: str) -> tuple[np.ndarray, Any]:
    """A member's per-perturbation values (perturbations last) and the aggregate over them:
    ``(values, None)`` (mean of the finite values) or, for the ratio member, its two components
    stacked with :func:`_ratio_of_sums`."""
    if member == "expr_mse_unbiased_capped_norm":
        parts = [np.asarray(result.values[k], dtype=np.float64)
                 for k in ("expr_mse_unbiased_capped", "expr_distance_unbiased")]
        return np.stack(parts), _ratio_of_sums
    return np.asarray(result.values[member], dtype=np.float64), None


def bootstrap_vcc2026(result: VCC2026Result, baseline, anchor, *, n_boot: int = 2000, level: float = 0.95,
                      seed: int = 0, indices: np.ndarray | None = None) -> CalibratedScore:
    r"""Calibrated score with percentile bootstrap intervals over perturbations.

    Each replicate resamples the perturbations with replacement
    (``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))``, the draws of
    :func:`~shrinkpert.calibration.bootstrap.resample_indices`, or the given ``indices``), recomputes every member's aggregate
    (means; ratio of sums for ``expr_mse_unbiased_capped_norm``) and rescales with the fixed
    ``baseline`` and ``anchor``. Intervals are the :math:`(1 \pm \text{level})/2` quantiles.
    The baseline and anchor are held fixed, so the interval is the uncertainty of the
    submission's score over the panel's perturbations, not of the scale itself.
    """
    point = calibrate_vcc2026(result, baseline, anchor)
    n = len(result.perturbations)
    idx = as_rng(seed).integers(0, n, size=(int(n_boot), n)) if indices is None else indices
    draws = np.empty((len(idx), len(MEMBERS) + 1))
    for j, m in enumerate(MEMBERS):
        values, aggregate = member_values(result, m)
        reps = (aggregate or finite_mean)(values[..., idx])
        draws[:, j] = [_scale(m, u, point.baseline[m], point.anchor[m]) for u in reps]
    draws[:, -1] = draws[:, :-1].mean(axis=1)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    ci = pd.DataFrame({"metric": [*MEMBERS, "avg_score"], "ci_low": lo, "ci_high": hi})
    return CalibratedScore(scores=point.scores, avg_score=point.avg_score, raw=point.raw,
                           baseline=point.baseline, anchor=point.anchor, ci=ci)
