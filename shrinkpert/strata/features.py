r"""``difficulty(truth)``: per-perturbation difficulty features and a stratum.

Features (one row per perturbation; effects on the natural-log1p scale against the observed
control, :func:`~shrinkpert.estimate_effects` with its control variance floor):

* **Impact.** ``impact`` and ``effective_n_genes`` of the effects (target left out), by default
  from the normal-mixture prior that :func:`~shrinkpert.shrink_effects` fits per perturbation
  (closed forms in :func:`shrinkpert.strata._profiles.prior_impact`; the same moments as TRADE's
  :math:`\mathrm{TI}` and :math:`M_e`, but of ash's normal mixture rather than TRADE's half-uniform
  one), or exactly TRADE's with ``impact="trade"`` (:func:`~shrinkpert.transcriptome_impact`,
  seconds per perturbation at 8k genes). ``n_de_genes``: genes with lfsr below ``lfsr``.
* **Specific signal.** The systematic shift shared by all perturbations is estimated per gene as
  the median effect over perturbations, :math:`s_g = \mathrm{median}_q \hat\beta_{qg}` (robust to
  the sparse specific effects; the control mean cancels:
  :math:`\hat\beta_{pg} - s_g = \bar x_{pg} - \mathrm{median}_q \bar x_{qg}`). The specific effects
  :math:`\hat\beta_{pg} - s_g` keep the standard errors of :math:`\hat\beta` (conservative: the
  control's noise cancelled) and are shrunk again: ``n_specific_genes`` (lfsr below ``lfsr``,
  target left out), ``specific_impact`` (:math:`\mathrm{TI}` of their prior),
  ``specific_reliability``
  :math:`\mathrm{TI}_{\text{spec}} / (\mathrm{TI}_{\text{spec}} + \overline{s^2})` (the share of a
  gene's observed specific variance that is signal; :math:`\overline{s^2}` the mean squared
  standard error), and ``signal_p``: Simes' global p-value of "no gene has a specific effect",
  :math:`\min_i G p_{(i)}/i` over the :math:`G` non-target genes' two-sided normal p-values of
  :math:`z = (\hat\beta_{pg} - s_g)/\mathrm{SE}`. ``difficulty_score`` is ``signal_p``: in [0, 1],
  high when nothing specific is measurable (Simes' p is a valid p-value under independence and
  positive dependence; it is ≥ ``signal_alpha`` exactly when Benjamini–Hochberg at that level
  rejects no gene).
* **Replicability.** ``replicability_raw`` / ``replicability_shrunk``: Pearson correlation of the
  effects (raw / shrunk) of two disjoint random halves of the cells, one split
  (:func:`~shrinkpert.replicability` with ``n_splits=1``, the same halves and values). The effects
  and the halves come from one pass over the cells grouped by perturbation × half, the effects
  from the halves pooled (equal to a pass by perturbation up to floating-point rounding).
* **Target.** ``knockdown_log2fc`` (raw) and ``knockdown_shrunk_log2fc`` (ash posterior mean) of
  the target gene, ``knockdown_flag`` (:func:`shrinkpert.ontarget.knockdown`), ``penetrance`` and
  ``penetrance_evidence`` (:func:`shrinkpert.ontarget.classify_escape`); NaN/empty when the target
  is not measured. ``target_control_mean``: the target's mean log1p expression in control cells.
* **Novelty.** ``nearest_similarity``: the largest cosine similarity between the perturbation's
  shrunk specific profile (own target set to 0) and a training perturbation's, ``nearest_training``
  its name, ``novelty`` :math:`= 1 -` ``nearest_similarity``. ``target_coexpression``: the largest
  absolute Pearson correlation, over control cells (log1p of counts per ``target_sum``), between
  the target gene and a training perturbation's target gene (``coexpressed_training`` its
  perturbation); the seed's mutual-information idea with a linear dependence measure.
* **Essentiality.** ``essentiality`` of the target in the bundled Hart lists
  (``core_essential`` / ``non_essential`` / ``unknown``) and, when ``gene_effect`` (e.g. a DepMap
  Chronos gene effect per gene) is given, ``gene_effect``.
* **Marker-ness.** ``marker_rank``: the target's rank (1 = first) among genes by normalised
  dispersion in control cells (:math:`\log(v_g/m_g)` of the log1p values, z-scored within 20
  quantile bins of :math:`m_g`, as Seurat's highly-variable-gene rule); ``is_marker``: rank at most
  ``n_markers``. With one cell state and no other cell types, the genes that mark the control
  cells' state are those that vary most across control cells (sub-states such as cycling or
  activated cells).
* ``stratum``: :func:`shrinkpert.strata.rules.assign_strata`.

Training set (``train``): ``None`` means leave-one-out — each perturbation's training set is every
other perturbation of ``truth`` (cross-validation over perturbations); a list of labels of
``truth``; or cells (AnnData / ``.h5ad`` path with the same genes and control label), whose
effects are estimated the same way.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY, TARGET_SUM
from ..effects.shrink import ShrunkEffects, shrink_effects
from ..errors import InputError, MissingKeyError, ShrinkpertWarning
from ._profiles import (aligned_genes, cosine_similarity, fit_effects, fit_effects_and_halves, own_target_zeroed,
                        prior_impact)
from .essential import essentiality
from .rules import StrataRules, assign_strata

__all__ = ["difficulty", "specific_effects", "marker_ranks", "simes_p", "IMPACT_METHODS"]

IMPACT_METHODS = ("prior", "trade")


def specific_effects(effects: Any, *, n_threads: int | None = None) -> tuple[np.ndarray, ShrunkEffects]:
    r"""Effects minus the systematic shift :math:`s_g = \mathrm{median}_q\hat\beta_{qg}`, own target set
    to 0, and their ash posteriors. Returns ``(shift, shrunk)``; with fewer than 3 perturbations
    the shift is 0 (a median of two is their mean and would remove half of each effect) and a
    :class:`ShrinkpertWarning` says so."""
    effect = np.asarray(effects.effect, dtype=np.float64)
    if effect.shape[0] >= 3:
        shift = np.median(effect, axis=0)
    else:
        warnings.warn(f"Only {effect.shape[0]} perturbation(s): the systematic shift is not estimated (taken as 0).",
                      ShrinkpertWarning, stacklevel=3)
        shift = np.zeros(effect.shape[1])
    specific = own_target_zeroed(effect - shift[None, :], effects.target_index)
    shrunk = shrink_effects(dataclasses.replace(effects, effect=specific), n_threads=n_threads)
    return shift, shrunk


def simes_p(z: np.ndarray, use: np.ndarray) -> np.ndarray:
    r"""Simes' global p-value per row: :math:`\min_i G p_{(i)}/i` over the ``use`` entries'
    two-sided normal p-values :math:`2\Phi(-|z|)` (:math:`G` = their number; NaN when 0)."""
    from scipy.special import ndtr

    p = np.where(use, 2.0 * ndtr(-np.abs(np.asarray(z, dtype=np.float64))), np.inf)
    p = np.sort(p, axis=1)
    g = use.sum(axis=1)
    ranks = np.arange(1, p.shape[1] + 1)[None, :]
    with np.errstate(invalid="ignore"):
        scaled = np.where(ranks <= g[:, None], p * g[:, None] / ranks, np.inf)
    out = np.minimum(scaled.min(axis=1), 1.0)
    return np.where(g > 0, out, np.nan)


def marker_ranks(control_mean: np.ndarray, control_var: np.ndarray, *, n_bins: int = 20) -> np.ndarray:
    r"""Rank (1 = most variable) of each gene by binned normalised dispersion in control cells.

    :math:`d_g = \log(v_g/m_g)` for genes with :math:`m_g > 0` and :math:`v_g > 0`; genes are put
    in ``n_bins`` quantile bins of :math:`m_g` and :math:`d_g` is z-scored within its bin (a bin
    with one gene, or no spread, gets z = 0). Genes without expression get NaN.
    """
    m = np.asarray(control_mean, dtype=np.float64)
    v = np.asarray(control_var, dtype=np.float64)
    ok = (m > 0) & (v > 0)
    z = np.full(m.shape, np.nan)
    if ok.sum() == 0:
        return z
    d = np.log(v[ok] / m[ok])
    edges = np.quantile(m[ok], np.linspace(0, 1, n_bins + 1)[1:-1])
    bins = np.searchsorted(edges, m[ok], side="right")
    zs = np.zeros(d.size)
    for b in np.unique(bins):
        idx = bins == b
        sd = d[idx].std(ddof=1) if idx.sum() > 1 else 0.0
        zs[idx] = (d[idx] - d[idx].mean()) / sd if sd > 0 else 0.0
    z[ok] = zs
    order = np.argsort(-np.where(ok, z, -np.inf), kind="stable")
    ranks = np.empty(m.size)
    ranks[order] = np.arange(1, m.size + 1)
    return np.where(ok, ranks, np.nan)


def _control_target_expression(truth: Any, control_rows: np.ndarray, cols: np.ndarray, *, layer: str | None,
                               target_sum: float, chunk_size: int | None) -> np.ndarray:
    """log1p(x s / L) of control cells × ``cols`` (dense), reading the matrix block by block."""
    from ..data.read import open_matrix, row_totals, scale_factors

    out = np.zeros((control_rows.size, cols.size))
    if cols.size == 0 or control_rows.size == 0:
        return out
    with open_matrix(truth, layer) as source:
        factor = scale_factors(row_totals(source, chunk_size), target_sum)[control_rows]
        position = np.full(source.shape[0], -1, dtype=np.int64)
        position[control_rows] = np.arange(control_rows.size)
        col_pos = np.full(source.shape[1], -1, dtype=np.int64)
        col_pos[cols] = np.arange(cols.size)
        for block in source.blocks(chunk_size):
            r0, r1 = block.rows.start, block.rows.stop
            c0, c1 = block.cols.start, block.cols.stop
            rows_here = np.flatnonzero(position[r0:r1] >= 0)
            cols_here = np.flatnonzero(col_pos[c0:c1] >= 0)
            if rows_here.size == 0 or cols_here.size == 0:
                continue
            values = block.values[rows_here][:, cols_here]
            values = values.toarray() if hasattr(values, "toarray") else np.asarray(values)
            out[np.ix_(position[r0 + rows_here], col_pos[c0 + cols_here])] = values
    return np.log1p(out * factor[:, None])


def _correlation(x: np.ndarray) -> np.ndarray:
    """Pearson correlation of the columns of ``x``; NaN for a constant column."""
    xc = x - x.mean(axis=0, keepdims=True)
    norm = np.sqrt((xc**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc.T @ xc) / np.outer(norm, norm)
    r[~np.isfinite(r)] = np.nan
    return r


def _nearest(sim: np.ndarray, allowed: np.ndarray, names: pd.Index) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the largest finite ``sim`` over allowed columns and that column's name."""
    masked = np.where(allowed & np.isfinite(sim), sim, -np.inf)
    best = masked.argmax(axis=1) if masked.shape[1] else np.zeros(masked.shape[0], dtype=np.int64)
    value = masked[np.arange(masked.shape[0]), best] if masked.shape[1] else np.full(masked.shape[0], -np.inf)
    found = np.isfinite(value)
    labels = np.where(found, np.asarray(names.astype(str))[best] if len(names) else "", "").astype(object)
    return np.where(found, value, np.nan), labels


def _train_profiles(train: Any, effects: Any, shrunk: ShrunkEffects, *, perturbation_key: str, control: str,
                    layer: str | None, targets: Mapping[str, str] | None, min_cells: int,
                    n_threads: int | None, chunk_size: int | None):
    """(training profiles, their names, their target genes, allowed mask P × Q) for the novelty features."""
    perts = pd.Index(effects.perturbations.astype(str))
    own = np.asarray(shrunk.posterior_mean)
    own_targets = pd.Index(effects.target.astype(str))
    if train is None:
        return own, perts, own_targets, ~np.eye(len(perts), dtype=bool)
    if isinstance(train, (list, tuple, pd.Index, np.ndarray)) and all(isinstance(t, str) for t in train):
        names = pd.Index([str(t) for t in train])
        rows = perts.get_indexer(names)
        if (rows < 0).any():
            raise MissingKeyError(f"train names perturbations not in truth: {names[rows < 0][:10].tolist()}; "
                                  "pass labels of truth's perturbations, or the training cells.")
        allowed = perts.to_numpy()[:, None] != names.to_numpy()[None, :]
        return own[rows], names, own_targets[rows], allowed
    t_effects = fit_effects(train, perturbation_key=perturbation_key, control=control, layer=layer,
                               targets=targets, min_cells=min_cells, n_threads=n_threads, chunk_size=chunk_size)
    cols = aligned_genes(effects.genes, t_effects.genes, "train")
    t_effects = dataclasses.replace(t_effects, effect=np.asarray(t_effects.effect)[:, cols],
                                    std_error=np.asarray(t_effects.std_error)[:, cols],
                                    df=np.asarray(t_effects.df)[:, cols], mean=np.asarray(t_effects.mean)[:, cols],
                                    var=np.asarray(t_effects.var)[:, cols], genes=effects.genes,
                                    control_mean=np.asarray(t_effects.control_mean)[cols],
                                    control_var=np.asarray(t_effects.control_var)[cols],
                                    target_index=effects.genes.astype(str).get_indexer(t_effects.target.astype(str)))
    _, t_shrunk = specific_effects(t_effects, n_threads=n_threads)
    names = pd.Index(t_effects.perturbations.astype(str))
    allowed = perts.to_numpy()[:, None] != names.to_numpy()[None, :]
    return np.asarray(t_shrunk.posterior_mean), names, pd.Index(t_effects.target.astype(str)), allowed


def difficulty(
    truth: Any,
    *,
    train: Any = None,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    layer: str | None = None,
    targets: Mapping[str, str] | None = None,
    replicability: bool = True,
    penetrance: bool = True,
    escape: Any = None,
    gene_effect: Mapping[str, float] | pd.Series | None = None,
    impact: str = "prior",
    lfsr: float = 0.05,
    n_markers: int = 50,
    rules: StrataRules | None = None,
    target_sum: float = TARGET_SUM,
    min_cells: int = MIN_CELLS,
    seed: int = 0,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> pd.DataFrame:
    r"""Per-perturbation difficulty features and a ``stratum`` (easy / medium / hard / no signal).

    Every feature, with its formula, is described in :mod:`shrinkpert.strata.features`; the stratum
    rules in :mod:`shrinkpert.strata.rules`.

    Parameters
    ----------
    truth
        Cells with raw counts: AnnData (in memory or backed) or ``.h5ad`` path; read, never modified.
    train
        Training perturbations for the novelty features: ``None`` (leave-one-out over ``truth``),
        labels of ``truth``, or training cells (AnnData / path, same genes and control label).
    perturbation_key, control, layer, targets
        As in :func:`~shrinkpert.estimate_effects`.
    replicability
        Compute split-half replicability (the pass is then grouped by perturbation × half, and two
        more ash fits are made); ``False`` gives NaN.
    penetrance, escape
        Penetrance from ``escape`` (a :func:`~shrinkpert.ontarget.classify_escape` result of
        ``truth``) when given; otherwise computed when ``penetrance`` is true (the slowest feature).
    gene_effect
        Optional per-gene essentiality score (e.g. DepMap Chronos gene effect), indexed by symbol.
    impact
        ``"prior"`` (closed forms of the ash prior, fast) or ``"trade"`` (TRADE's half-uniform fit).
    lfsr
        Local false sign rate below which a gene counts as affected.
    n_markers
        Number of top control-state marker genes (``is_marker``).
    rules
        :class:`~shrinkpert.strata.rules.StrataRules` thresholds.
    target_sum, min_cells, seed, chunk_size, n_threads
        Normalisation total; smallest group; seed of the replicability split; reading and threads.

    Returns
    -------
    pandas.DataFrame
        Indexed by perturbation; the columns above and ``stratum`` (categorical). ``attrs["params"]``
        records the options and rule thresholds.

    Raises
    ------
    InputError
        Bad options (``impact``, ``lfsr``, ``n_markers``), or fewer than 2 perturbations.
    MissingKeyError
        Missing ``perturbation_key`` column, control label, or ``train`` labels not in ``truth``.
    GeneMismatchError
        ``train`` cells have other genes than ``truth``.
    """
    from ..effects.impact import transcriptome_impact
    from ..effects.replicability import split_scores
    from ._ontarget import EscapeResult, classify_escape, knockdown

    if impact not in IMPACT_METHODS:
        raise InputError(f"impact must be one of {IMPACT_METHODS}, got {impact!r}.")
    if not 0 < lfsr < 1:
        raise InputError(f"lfsr must lie in (0, 1), got {lfsr!r}.")
    if isinstance(n_markers, bool) or not isinstance(n_markers, (int, np.integer)) or n_markers < 1:
        raise InputError(f"n_markers must be a positive integer, got {n_markers!r}.")
    if escape is not None and not isinstance(escape, EscapeResult):
        raise InputError(f"escape must be a classify_escape result of truth, got {type(escape).__name__}.")
    rules = StrataRules() if rules is None else rules

    options = dict(perturbation_key=perturbation_key, control=control, layer=layer, targets=targets,
                   min_cells=min_cells, n_threads=n_threads, chunk_size=chunk_size)
    if replicability:  # one pass serves the effects and the split halves
        effects, half_stats = fit_effects_and_halves(truth, seed=seed, **options)
    else:
        effects = fit_effects(truth, **options)
    perts = pd.Index(effects.perturbations.astype(str), name="perturbation")
    if len(perts) < 2:
        raise InputError(f"truth has {len(perts)} perturbation(s) besides the control; difficulty needs at least 2.")
    tindex = np.asarray(effects.target_index)
    measured = tindex >= 0
    out = pd.DataFrame(index=perts)
    out["n_cells"] = np.asarray(effects.n_cells)
    out["target"] = effects.target.astype(str).to_numpy()
    out["target_measured"] = measured

    # impact of the effects vs control, own target left out
    zeroed = dataclasses.replace(effects, effect=own_target_zeroed(effects.effect, tindex))
    shrunk = shrink_effects(zeroed, n_threads=n_threads)
    if impact == "prior":
        moments = prior_impact(shrunk)
    else:
        ti = transcriptome_impact(effects, model_significant=False)
        moments = pd.DataFrame({"impact": ti["transcriptome_wide_impact"].to_numpy(),
                                "effective_n_genes": ti["effective_n_genes"].to_numpy()}, index=perts)
    out["impact"] = moments["impact"].to_numpy()
    out["effective_n_genes"] = moments["effective_n_genes"].to_numpy()
    not_target = np.ones(shrunk.lfsr.shape, dtype=bool)
    not_target[np.flatnonzero(measured), tindex[measured]] = False
    out["n_de_genes"] = ((np.asarray(shrunk.lfsr) < lfsr) & not_target).sum(axis=1)

    # specific signal (systematic shift removed)
    _, spec = specific_effects(effects, n_threads=n_threads)
    spec_ti = prior_impact(spec)["impact"].to_numpy()
    noise = np.mean(np.asarray(effects.std_error) ** 2, axis=1)
    out["n_specific_genes"] = ((np.asarray(spec.lfsr) < lfsr) & not_target).sum(axis=1)
    out["specific_impact"] = spec_ti
    out["specific_reliability"] = spec_ti / (spec_ti + noise)
    out["signal_p"] = simes_p(np.asarray(spec.effect) / np.asarray(effects.std_error), not_target)
    out["difficulty_score"] = out["signal_p"].to_numpy()

    # split-half replicability
    rep_raw = np.full(len(perts), np.nan)
    rep_shrunk = np.full(len(perts), np.nan)
    if replicability:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShrinkpertWarning)  # small halves: NaN rows below
            rep = split_scores(half_stats, control=control, min_cells=min_cells, perturbations=list(perts),
                               n_threads=n_threads)
        rep = rep.set_index(rep["perturbation"].astype(str))
        rep_raw = rep["raw_correlation"].reindex(perts).to_numpy(dtype=np.float64)
        rep_shrunk = rep["shrunk_correlation"].reindex(perts).to_numpy(dtype=np.float64)
    out["replicability_raw"] = rep_raw
    out["replicability_shrunk"] = rep_shrunk

    # target gene: knockdown and penetrance
    out["knockdown_log2fc"] = np.nan
    out["knockdown_shrunk_log2fc"] = np.nan
    out["knockdown_flag"] = "not_measured"
    out["penetrance"] = np.nan
    out["penetrance_evidence"] = ""
    target_map = dict(zip(perts, out["target"])) if targets is not None else None
    if measured.any():
        kd = knockdown(truth, perturbation_key=perturbation_key, control=control, layer=layer, targets=target_map,
                       perturbations=list(perts), target_sum=target_sum, min_cells=min_cells,
                       chunk_size=chunk_size).to_frame("perturbation")
        kd.index = kd.index.astype(str)
        out["knockdown_log2fc"] = kd["log2fc"].reindex(perts).to_numpy(dtype=np.float64)
        out["knockdown_shrunk_log2fc"] = kd["posterior_mean"].reindex(perts).to_numpy(dtype=np.float64)
        out["knockdown_flag"] = kd["flag"].reindex(perts).fillna("not_measured").to_numpy()
        if escape is None and penetrance:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ShrinkpertWarning)  # per-perturbation notes; NaN rows remain NaN
                escape = classify_escape(truth, perturbation_key=perturbation_key, control=control, layer=layer,
                                         targets=target_map, perturbations=list(perts), min_cells=min_cells,
                                         seed=seed, chunk_size=chunk_size)
    if escape is not None:
        pen = escape.penetrance
        pen.index = pen.index.astype(str)
        out["penetrance"] = pen["penetrance"].reindex(perts).to_numpy(dtype=np.float64)
        out["penetrance_evidence"] = pen["evidence"].reindex(perts).fillna("").to_numpy()
    cm = np.asarray(effects.control_mean)
    out["target_control_mean"] = np.where(measured, cm[np.where(measured, tindex, 0)], np.nan)

    # novelty: nearest training profile, co-expression of targets in control cells
    train_prof, train_names, train_targets, allowed = _train_profiles(
        train, effects, spec, perturbation_key=perturbation_key, control=control, layer=layer, targets=targets,
        min_cells=min_cells, n_threads=n_threads, chunk_size=chunk_size)
    sim = cosine_similarity(np.asarray(spec.posterior_mean), train_prof)
    nearest, nearest_name = _nearest(sim, allowed, train_names)
    out["nearest_training"] = nearest_name
    out["nearest_similarity"] = nearest
    out["novelty"] = 1.0 - nearest
    out["target_coexpression"], out["coexpressed_training"] = _coexpression(
        truth, effects, train_names, train_targets, allowed, perturbation_key=perturbation_key, control=control,
        layer=layer, target_sum=target_sum, chunk_size=chunk_size)

    # essentiality and marker-ness of the target
    out["essentiality"] = essentiality(out["target"].tolist()).to_numpy()
    if gene_effect is not None:
        ge = pd.Series(gene_effect, dtype=np.float64)
        ge.index = ge.index.astype(str).str.upper()
        out["gene_effect"] = ge.reindex(out["target"].str.upper()).to_numpy()
    ranks = marker_ranks(cm, np.asarray(effects.control_var))
    out["marker_rank"] = np.where(measured, ranks[np.where(measured, tindex, 0)], np.nan)
    out["is_marker"] = out["marker_rank"].to_numpy() <= n_markers

    out["stratum"] = assign_strata(out, rules)
    out.attrs["params"] = {"perturbation_key": perturbation_key, "control": control, "impact": impact, "lfsr": lfsr,
                           "n_markers": int(n_markers), "rules": rules.as_dict(), "seed": seed,
                           "train": "leave-one-out" if train is None else "given", "scale": "log1p",
                           "target_sum": target_sum, "replicability": bool(replicability),
                           "penetrance": escape is not None}
    return out


def _coexpression(truth, effects, train_names, train_targets, allowed, *, perturbation_key, control, layer,
                  target_sum, chunk_size) -> tuple[np.ndarray, np.ndarray]:
    """Largest |correlation| in control cells between each target and a training perturbation's target."""
    from ..data.read import read_annotations

    genes = pd.Index(effects.genes.astype(str))
    own_cols = np.asarray(effects.target_index)
    train_cols = genes.get_indexer(pd.Index(train_targets.astype(str)))
    n_p = len(own_cols)
    if not (own_cols >= 0).any() or not (train_cols >= 0).any():
        return np.full(n_p, np.nan), np.full(n_p, "", dtype=object)
    obs, _ = read_annotations(truth)
    control_rows = np.flatnonzero(obs[perturbation_key].astype(str).to_numpy() == control)
    union = np.unique(np.concatenate([own_cols[own_cols >= 0], train_cols[train_cols >= 0]]))
    x = _control_target_expression(truth, control_rows, union, layer=layer, target_sum=target_sum,
                                   chunk_size=chunk_size)
    r = np.abs(_correlation(x))
    pos = pd.Index(union)
    ri = pos.get_indexer(own_cols)
    ci = pos.get_indexer(train_cols)
    full = np.full((n_p, len(train_cols)), np.nan)
    ok_r, ok_c = ri >= 0, ci >= 0
    full[np.ix_(ok_r, ok_c)] = r[np.ix_(ri[ok_r], ci[ok_c])]
    same_gene = own_cols[:, None] == train_cols[None, :]
    value, name = _nearest(full, allowed & ~same_gene, train_names)
    return value, name
