r"""The six members of the Virtual Cell Challenge 2026 score, as cell-eval2's ``vcc2026`` preset.

:func:`score_vcc2026` scores a predicted counts matrix against the measured one. The preset fixes
everything (restated from cell-eval2 0.20.0, whose definitions these reproduce):

* **Inputs**: raw integer counts on both sides, at most 1e6 counts per cell; the same genes in
  the same order; every measured perturbation predicted and no other; unique cell names.
* **Controls**: the *measured* control cells are the origin of every effect and the reference
  group of every DE test, for the prediction too; predicted control cells are ignored.
* **Pseudobulk** (``pds_cosine``, expression error): group count sums :math:`P_{pg}`, scaled to
  :math:`T_b = 5\times10^4` and log-transformed once, :math:`\mu_{pg} = \log(1 + P_{pg} T_b /
  \sum_h P_{ph})`.
* **DE** (the four ``de_wilcoxon_*`` members): Wilcoxon rank-sum of each perturbation's cells
  against the measured controls on :math:`\log(1 + 10^6 c/L)`, tie-corrected normal
  approximation with continuity correction; genes kept when their mean CPM over the measured
  controls exceeds 5 (one gene set for every perturbation and both sides); BH within each
  perturbation; significant means :math:`q < 0.05`; :math:`\mathrm{lfc} = \log_2((\bar x_p +
  10^{-9})/(\bar x_c + 10^{-9}))` of mean CPM.
* **Target gene**: a perturbation whose label is a measured gene (or is mapped to one by
  ``target_genes``) has that gene removed from its own DE sets and expression sums; for
  ``pds_cosine`` every panel target gene is removed from the feature space once.

Members (per perturbation :math:`p`; :math:`S^{r}`, :math:`S^{\hat r}` the measured and predicted
significant sets, target removed):

``pds_cosine``
    :math:`1 - \rho_p/(n-1)` with :math:`\rho_p` the mid-rank (0-based, ties averaged) of the
    cosine distance from the predicted effect :math:`\hat\mu_p - \mu_c` to the measured effect
    :math:`\mu_p - \mu_c` among the distances to all :math:`n` measured effects.
``expr_mse_unbiased_capped_norm`` (aggregate only)
    :math:`\sum_p N_p / \sum_p D_p` with :math:`D_p = (\lVert\mu_p - \mu_c\rVert^2 - C_p - C_c)
    / |G_p|` and :math:`N_p = (\lVert\hat\mu_p - \mu_p\rVert^2 - \tilde C_{\hat p} - C_p) /
    |G_p|`, sums over :math:`G_p` (genes but the target); :math:`C` is the delete-one jackknife
    :math:`\frac{n-1}{n}\sum_g\sum_i (v_{ig} - \bar v_g)^2` of the pseudobulk over a group's
    cells, and the prediction's :math:`\tilde C_{\hat p} = \min(C_{\hat p}, C_p)\,\min(1, B/A)`
    with :math:`A = \sum_p \min(C_{\hat p}, C_p)/|G_p|` and :math:`B` the weighted
    across-perturbation centred sum of squares of the predicted pseudobulks (weights
    :math:`1/|G_p|`, each row's target gene left out).
``de_wilcoxon_direction_fidelity_yield_raw``
    :math:`k/\max(n_{\hat r}, n_r)`: :math:`n_r = |S^r|`, :math:`n_{\hat r}` the predicted
    significant genes whose measured lfc has a sign, :math:`k` those with the same sign.
``de_wilcoxon_direction_reach_raw``
    :math:`k^*/n_r`: the measured significant genes ranked by the prediction's confidence
    (predicted-significant first, then :math:`q`, :math:`p`, :math:`|\mathrm{lfc}|` descending,
    gene name); :math:`k^*` the deepest prefix (counted in genes with a measured sign) whose sign
    agreement is at least 0.9.
``de_wilcoxon_sig_jaccard``
    :math:`|S^r\cap S^{\hat r}| / |S^r\cup S^{\hat r}|` (1 when both are empty).
``de_wilcoxon_lfc_nmae``
    :math:`\sum_{g}|\widehat{\mathrm{lfc}}_g - \mathrm{lfc}_g| / \sum_g |\mathrm{lfc}_g|` over
    :math:`S^r` (finite measured lfc); only perturbations with at least 10 such genes
    (reference-only gate), others NaN.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._numba import resolve_threads, thread_limit
from .._validate import MIN_CONTROL_CELLS, CellData, validate
from ..errors import CountsError, GeneMismatchError, InputError, ShrinkpertWarning
from ..stats.wilcoxon import WilcoxonResult, wilcoxon_de, wilcoxon_de_pair
from ._vcc2026_kernels import jackknife_base, jackknife_block, series_terms

__all__ = ["MEMBERS", "VCC2026Result", "score_vcc2026", "PRESET", "aggregate_vcc2026", "check_counts_vcc2026"]

#: The preset's fixed settings (cell-eval2 0.20.0 ``configs/vcc2026.yaml``).
PRESET = MappingProxyType({
    "max_counts_per_cell": 1e6,
    "target_sum": 1e6,
    "bulk_target_sum": 5e4,
    "min_control_cpm": 5.0,
    "alpha": 0.05,
    "epsilon": 1e-9,
    "reach_purity": 0.9,
    "lfc_nmae_min_genes": 10,
})

#: The six scored members, in cell-eval2's order of the brief.
MEMBERS = (
    "pds_cosine",
    "expr_mse_unbiased_capped_norm",
    "de_wilcoxon_direction_fidelity_yield_raw",
    "de_wilcoxon_direction_reach_raw",
    "de_wilcoxon_sig_jaccard",
    "de_wilcoxon_lfc_nmae",
)
_PER_PERTURBATION = (
    "pds_cosine",
    "de_wilcoxon_direction_fidelity_yield_raw",
    "de_wilcoxon_direction_reach_raw",
    "de_wilcoxon_sig_jaccard",
    "de_wilcoxon_lfc_nmae",
    "expr_mse_unbiased_capped",
    "expr_distance_unbiased",
    "expr_mse_unbiased",
    "expr_real_mass_ratio",
)


def _frozen(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class VCC2026Result:
    """Per-perturbation members and the aggregate of the VCC 2026 preset.

    Attributes
    ----------
    perturbations : pandas.Index
    values : mapping of str to ndarray
        Per-perturbation values of the five per-perturbation members and of the two components
        of ``expr_mse_unbiased_capped_norm`` (``expr_mse_unbiased_capped``,
        ``expr_distance_unbiased``); NaN where a member is undefined.
    aggregate : mapping of str to float
        Mean over perturbations with a finite value (``expr_mse_unbiased_capped_norm``: ratio
        of the two components' sums over perturbations where both are finite).
    de_truth, de_pred : WilcoxonResult
        The DE tests behind the four ``de_wilcoxon_*`` members.
    params : mapping
    """

    perturbations: pd.Index
    values: Mapping[str, np.ndarray]
    aggregate: Mapping[str, float]
    de_truth: WilcoxonResult = field(repr=False)
    de_pred: WilcoxonResult = field(repr=False)
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", MappingProxyType({k: _frozen(v) for k, v in self.values.items()}))
        object.__setattr__(self, "aggregate", MappingProxyType(dict(self.aggregate)))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def table(self) -> pd.DataFrame:
        """Wide table: one row per perturbation, one column per per-perturbation value."""
        return pd.DataFrame(dict(self.values), index=self.perturbations)

    def to_frame(self) -> pd.DataFrame:
        """Tidy ``perturbation, metric, value`` rows (cell-eval2's ``results.csv`` layout)."""
        wide = self.table()
        wide.index.name = "perturbation"
        long = wide.reset_index().melt(id_vars="perturbation", var_name="metric", value_name="value")
        return long[["perturbation", "metric", "value"]]


# ----------------------------------------------------------------------------------------------
# inputs


def validate_pair(pred, truth, *, perturbation_key: str, control: str, layer: str | None,
                  pred_controls: bool = False) -> tuple[CellData, CellData]:
    """Both inputs through the one boundary (:func:`~shrinkpert._validate.validate`): unique cell
    and gene names, the label column, the truth's control with at least 3 cells (``pred``'s only
    when ``pred_controls``)."""
    t = validate(truth, side="truth", perturbation_key=perturbation_key, control=control, layer=layer)
    p = validate(pred, side="pred", perturbation_key=perturbation_key, control=control, layer=layer,
                 require_control=pred_controls)
    return p, t


def _group_pass(data: CellData, codes: np.ndarray, n_groups: int, chunk_size, bulk_target_sum: float,
                max_counts: float, n_parts: int, fractional: bool = False):
    """Check the count rules; return the log pseudobulks, jackknife terms and cells per group.

    Two passes over the matrix: group sums and cell totals (with the count checks), then the
    jackknife's stored-value terms (:mod:`~shrinkpert.metrics._vcc2026_kernels`).
    """
    where = data.side
    valid = codes >= 0
    with data.open() as source:
        n_cells, n_genes = source.shape
        lib = np.zeros(n_cells)
        sums = np.zeros((n_groups, n_genes))
        for block in source.blocks(chunk_size):
            mat = _canonical(block.values, source.by_rows)
            _check_counts(mat.data, where, fractional)
            weights = mat.data.astype(np.float64)
            if source.by_rows:
                rows = np.repeat(np.arange(block.rows.start, block.rows.stop), np.diff(mat.indptr))
                cols, first = mat.indices, 0
            else:
                rows = mat.indices
                cols, first = np.repeat(np.arange(mat.shape[1]), np.diff(mat.indptr)), block.cols.start
            lib += np.bincount(rows, weights=weights, minlength=n_cells)
            keep = valid[rows]
            width = mat.shape[1]
            sums[:, first : first + width] += np.bincount(
                codes[rows[keep]] * width + cols[keep], weights=weights[keep], minlength=n_groups * width
            ).reshape(n_groups, width)
        over = lib > max_counts
        if over.any():
            raise CountsError(
                f"{where} has {int(over.sum())} cell(s) with more than {max_counts:.0e} counts "
                f"(largest {lib.max():.6g}); the vcc2026 preset caps counts per cell at 1e6. "
                "Submit raw UMI counts, not rescaled values."
            )
        totals = sums.sum(axis=1)
        scale = np.zeros_like(totals)
        scale[totals > 0] = bulk_target_sum / totals[totals > 0]
        bulk = np.log1p(sums * scale[:, None])
        n = np.bincount(codes[valid], minlength=n_groups).astype(np.float64)
        group_totals = np.bincount(codes[valid], weights=lib[valid], minlength=n_groups)
        # the jackknife's series (see the kernels' module): cell shares, their power sums
        positive = group_totals > 0
        inv = np.divide(1.0, group_totals, out=np.zeros(n_groups), where=positive)
        share = np.where(valid, lib * inv[np.where(valid, codes, 0)], 0.0)
        max_share = np.zeros(n_groups)
        np.maximum.at(max_share, codes[valid], share[valid])
        terms = series_terms(max_share)
        terms[~positive] = 0
        moments = np.stack([np.bincount(codes[valid], weights=share[valid] ** m, minlength=n_groups)
                            for m in range(2 * int(terms.max()) + 2)], axis=1)
        alpha = bulk_target_sum * sums * inv[:, None]
        delta = np.log1p(alpha) - bulk
        s1 = np.zeros((n_groups, n_genes))
        s2 = np.zeros((n_groups, n_genes))
        for block in source.blocks(chunk_size):
            mat = _canonical(block.values, True)
            if not source.by_rows:
                cols = block.cols
                a1, a2 = np.zeros((n_groups, cols.stop - cols.start)), np.zeros((n_groups, cols.stop - cols.start))
                jackknife_block(mat.indptr, mat.indices, mat.data, codes, lib, np.ascontiguousarray(sums[:, cols]),
                                group_totals, np.ascontiguousarray(bulk[:, cols]),
                                np.ascontiguousarray(alpha[:, cols]), np.ascontiguousarray(delta[:, cols]),
                                bulk_target_sum, terms, n_parts, a1, a2)
                s1[:, cols] += a1
                s2[:, cols] += a2
            else:
                rows = slice(block.rows.start, block.rows.stop)
                jackknife_block(mat.indptr, mat.indices, mat.data, np.ascontiguousarray(codes[rows]), lib[rows],
                                sums, group_totals, bulk, alpha, delta, bulk_target_sum, terms, n_parts, s1, s2)
    jackknife_base(alpha, delta, moments, n, terms, s1, s2)
    jk = np.zeros(n_groups)
    for p in range(n_groups):
        if n[p] < 2 or totals[p] <= 0:
            continue
        q = s2[p] - s1[p] ** 2 / n[p]
        jk[p] = max(((n[p] - 1) / n[p]) * float(q.sum()), 0.0)
    return bulk, jk, n


def _canonical(values, by_rows: bool):
    """One block as CSR (``by_rows``) or CSC with int64 pointers and indices, duplicates summed."""
    mat = sp.csr_matrix(values) if by_rows else sp.csc_matrix(values)
    if not mat.has_canonical_format:
        mat = mat.copy()
        mat.sum_duplicates()
    mat.indptr = mat.indptr.astype(np.int64, copy=False)
    mat.indices = mat.indices.astype(np.int64, copy=False)
    return mat


def check_counts_vcc2026(data: CellData, chunk_size: int | None = None) -> None:
    """The preset's per-value count rules (finite, non-negative, integer) on ``data``, block by
    block, stopping at the first block that breaks one (the :class:`CountsError` the scorer raises).
    """
    with data.open() as source:
        for block in source.blocks(chunk_size):
            _check_counts(_canonical(block.values, source.by_rows).data, data.side)


def _check_counts(values: np.ndarray, where: str, fractional: bool = False) -> None:
    if values.size == 0:
        return
    if not np.isfinite(values).all():
        raise CountsError(f"{where} contains NaN or infinite values; the vcc2026 preset needs raw integer counts.")
    if values.min() < 0:
        raise CountsError(
            f"{where} contains negative values; the vcc2026 preset needs raw integer counts "
            "(not centred, scaled or log-ratio values)."
        )
    if not fractional and np.any(values != np.floor(values)):
        raise CountsError(
            f"{where} contains non-integer values; the vcc2026 preset needs raw integer counts. "
            "Do not submit normalised or log1p values: the preset normalises inside."
        )


# ----------------------------------------------------------------------------------------------
# members


def _target_columns(perturbations: pd.Index, genes: pd.Index, target_genes) -> dict[int, int]:
    lookup = {g: j for j, g in enumerate(genes)}
    cols = {}
    for i, p in enumerate(perturbations):
        gene = target_genes.get(p, p) if target_genes is not None else p
        if gene is not None and gene in lookup:
            cols[i] = lookup[gene]
    if perturbations.size and not cols:
        raise InputError(
            "No perturbation label names a measured gene, so no target gene could be excluded as the "
            "vcc2026 preset requires; pass target_genes={label: gene} for construct-style labels."
        )
    return cols


def _pds_cosine(pred_eff: np.ndarray, real_eff: np.ndarray, panel_cols: np.ndarray) -> np.ndarray:
    keep = np.ones(real_eff.shape[1], dtype=bool)
    keep[panel_cols] = False
    if not keep.any():
        raise InputError("Every measured gene is a panel target; pds_cosine has no features left to compare.")
    a = np.ascontiguousarray(pred_eff[:, keep])
    b = np.ascontiguousarray(real_eff[:, keep])
    sim = a @ b.T
    denom = np.sqrt(np.einsum("ig,ig->i", a, a))[:, None] * np.sqrt(np.einsum("jg,jg->j", b, b))[None, :]
    cos = np.zeros_like(sim)
    nz = denom != 0
    cos[nz] = sim[nz] / denom[nz]
    dist = np.clip(1.0 - cos, 0.0, 2.0)
    n = b.shape[0]
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        row, match = dist[i], dist[i, i]
        rank = np.count_nonzero(row < match) + (np.count_nonzero(row == match) - 1) / 2.0
        out[i] = 1.0 if n - 1 <= 0 else 1.0 - rank / (n - 1)
    return out


def _expression_error(pred_bulk, pred_jk, real_bulk, real_jk, ctrl_bulk, ctrl_jk, cols: dict[int, int]):
    """(expr_mse_unbiased_capped, expr_distance_unbiased, expr_mse_unbiased) per perturbation."""
    n_p, n_g = real_bulk.shape
    n_row = np.full(n_p, float(n_g))
    for k in cols:
        n_row[k] = n_g - 1
    weights = np.divide(1.0, n_row, out=np.zeros_like(n_row), where=n_row > 0)

    def per_gene(summed):
        return np.divide(summed, n_row, out=np.full(n_p, np.nan), where=n_row > 0)

    diff = real_bulk - ctrl_bulk
    dist = np.einsum("ij,ij->i", diff, diff) - real_jk - ctrl_jk
    for k, g in cols.items():
        dist[k] -= (real_bulk[k, g] - ctrl_bulk[g]) ** 2
    diff_pred = pred_bulk - real_bulk
    plug_in = np.einsum("ij,ij->i", diff_pred, diff_pred)
    for k, g in cols.items():
        plug_in[k] -= (pred_bulk[k, g] - real_bulk[k, g]) ** 2
    uncapped = plug_in - pred_jk - real_jk
    term = np.minimum(pred_jk, real_jk)
    claim = float((term * weights).sum())
    if claim > 0.0:
        budget = _across_budget(pred_bulk, cols, weights)
        ratio = budget / claim
        if ratio < 1.0:
            term = term * ratio
    return per_gene(plug_in - term - real_jk), per_gene(dist), per_gene(uncapped)


def _across_budget(pred_bulk: np.ndarray, cols: dict[int, int], w: np.ndarray) -> float:
    dev = pred_bulk - pred_bulk.mean(axis=0)
    s1 = np.einsum("ij,i->j", dev, w)
    s2 = np.einsum("ij,ij,i->j", dev, dev, w)
    wsum = np.full(dev.shape[1], float(w.sum()))
    cnt = np.full(dev.shape[1], float(dev.shape[0]))
    for k, g in cols.items():
        v = dev[k, g]
        s1[g] -= w[k] * v
        s2[g] -= w[k] * v * v
        wsum[g] -= w[k]
        cnt[g] -= 1.0
    ok = (cnt >= 2.0) & (wsum > 0.0)
    if not ok.any():
        return 0.0
    return float(np.maximum(s2[ok] - s1[ok] ** 2 / wsum[ok], 0.0).sum())


def _de_members(truth: WilcoxonResult, pred: WilcoxonResult, cols: dict[int, int]) -> dict[str, np.ndarray]:
    """The four DE members; each side keeps only the genes its own CPM gate tested."""
    alpha, purity_floor = PRESET["alpha"], PRESET["reach_purity"]
    min_genes = PRESET["lfc_nmae_min_genes"]
    genes = np.asarray(truth.genes.astype(str))
    n_p = len(truth.perturbations)
    out = {name: np.full(n_p, np.nan) for name in (
        "de_wilcoxon_direction_fidelity_yield_raw", "de_wilcoxon_direction_reach_raw",
        "de_wilcoxon_sig_jaccard", "de_wilcoxon_lfc_nmae")}
    for k in range(n_p):
        in_r, in_h = truth.tested.copy(), pred.tested.copy()
        if k in cols:
            in_r[cols[k]] = in_h[cols[k]] = False
        q_r, lfc_r = truth.q[k], truth.lfc[k]
        q_h, p_h, lfc_h = pred.q[k], pred.p[k], pred.lfc[k]
        sig_r = in_r & (q_r < alpha)
        sig_h = in_h & (q_h < alpha)
        sign_r = np.isfinite(lfc_r) & (lfc_r != 0)
        committed = ~np.isnan(lfc_h) & (lfc_h != 0)
        match = sign_r & committed & (np.sign(lfc_h) == np.sign(lfc_r))
        n_conf = int(sig_r.sum())
        # fidelity-yield (raw): k / max(n_pred, N_conf), over genes both sides tested
        scored = sig_h & in_r & sign_r
        n_pred, hits = int(scored.sum()), int((scored & match).sum())
        den = max(n_pred, n_conf)
        out["de_wilcoxon_direction_fidelity_yield_raw"][k] = hits / den if den else np.nan
        # reach (raw): deepest prefix with sign purity >= 0.9 of the measured-significant genes
        if n_conf:
            sel = np.flatnonzero(sig_r & in_h)
            key_q = np.where(np.isnan(q_h[sel]), np.inf, q_h[sel])
            key_p = np.where(np.isnan(p_h[sel]), np.inf, p_h[sel])
            key_l = np.where(np.isnan(lfc_h[sel]), -np.inf, np.abs(lfc_h[sel]))
            order = sel[np.lexsort((genes[sel], -key_l, key_p, key_q, ~sig_h[sel]))]
            n_denom = np.cumsum(sign_r[order])
            n_match = np.cumsum(match[order])
            ok = (n_denom > 0) & (n_match >= purity_floor * np.maximum(n_denom, 1))
            ok &= n_match / np.maximum(n_denom, 1) >= purity_floor
            k_star = int(n_denom[ok].max()) if ok.any() else 0
            out["de_wilcoxon_direction_reach_raw"][k] = k_star / n_conf
        # significant-set Jaccard
        both = int((sig_r & sig_h).sum())
        union = n_conf + int(sig_h.sum()) - both
        out["de_wilcoxon_sig_jaccard"][k] = 1.0 if union == 0 else both / union
        # LFC NMAE over the measured-significant genes with finite lfc, >= 10 of them
        gate = sig_r & np.isfinite(lfc_r)
        if gate.sum() >= min_genes:
            real = lfc_r[gate]
            guess = np.where(in_h & np.isfinite(lfc_h), lfc_h, 0.0)[gate]
            denom = np.abs(real).mean()
            if math.isfinite(denom) and denom != 0.0:
                out["de_wilcoxon_lfc_nmae"][k] = np.abs(guess - real).mean() / denom
    return out


def aggregate_vcc2026(values: Mapping[str, np.ndarray]) -> dict[str, float]:
    """The aggregates of :class:`VCC2026Result` from its per-perturbation ``values``.

    Each per-perturbation value: the mean of its finite entries (in perturbation order);
    ``expr_mse_unbiased_capped_norm``: the sum of ``expr_mse_unbiased_capped`` over the sum of
    ``expr_distance_unbiased`` where both are finite (NaN, with a warning, unless that sum is
    positive). NaN entries do not change the others' order, so aggregating a concatenation of
    shards' rows gives the whole panel's numbers exactly.
    """
    aggregate = {}
    for name in _PER_PERTURBATION:
        v = np.asarray(values[name], dtype=np.float64)
        aggregate[name] = float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")
    capped = np.asarray(values["expr_mse_unbiased_capped"], dtype=np.float64)
    distance = np.asarray(values["expr_distance_unbiased"], dtype=np.float64)
    both = np.isfinite(capped) & np.isfinite(distance)
    den = float(distance[both].sum())
    if den > 0:
        aggregate["expr_mse_unbiased_capped_norm"] = float(capped[both].sum()) / den
    else:
        warnings.warn(
            "expr_mse_unbiased_capped_norm is undefined: the measured effects sum to "
            f"{den:.4g} after their sampling-noise correction (not positive), a property of the "
            "reference panel, not of the prediction. Reported as NaN.",
            ShrinkpertWarning,
            stacklevel=3,
        )
        aggregate["expr_mse_unbiased_capped_norm"] = float("nan")
    return {k: aggregate[k] for k in (*MEMBERS, *_PER_PERTURBATION[5:])}


def _rows_only(data: CellData, rows: np.ndarray, keep_controls: bool) -> CellData:
    """``data`` with only the cells of perturbations ``rows`` (and its controls when asked)."""
    from .vcc2026_ends import cell_subset

    keep = np.isin(data.codes, rows)
    if keep_controls:
        keep |= data.codes == len(data.perturbations)
    return cell_subset(data, np.flatnonzero(keep), data.side, min_control=MIN_CONTROL_CELLS if keep_controls else 0)


# ----------------------------------------------------------------------------------------------
# pipeline


def score_vcc2026(
    pred,
    truth,
    *,
    perturbation_key: str = "perturbation",
    control: str = "non-targeting",
    layer: str | None = None,
    target_genes: Mapping[str, str | None] | None = None,
    chunk_size: int | None = None,
    n_threads: int | None = None,
    rows: np.ndarray | None = None,
) -> VCC2026Result:
    r"""Score predicted counts against measured counts with the VCC 2026 preset.

    Definitions: module docstring (:mod:`shrinkpert.metrics.vcc2026`).

    Parameters
    ----------
    pred, truth : AnnData, path to ``.h5ad`` or CellData
        Cells × genes raw integer counts (in memory, backed, or a file read in blocks), each
        validated once at the boundary (:func:`~shrinkpert._validate.validate`). ``truth`` must
        hold at least 3 control cells; ``pred`` must hold every perturbation of ``truth`` and no
        other (its control cells, if any, are not used). Cells without a label are left out.
    perturbation_key : str
        ``obs`` column with each cell's perturbation (cell-eval2's ``pert_col``).
    control : str
        Control label.
    layer : str, optional
        Layer to read instead of ``X`` (both sides).
    target_genes : mapping, optional
        Perturbation label → its target gene (``None``: no target gene); by default a label is
        its own target gene when it names a measured gene.
    chunk_size : int, optional
        Rows (or genes) per block when reading.
    n_threads : int, optional
        Numba threads.
    rows : array of int, optional
        A shard: positions (in the sorted perturbations) whose DE tests are run; the other
        perturbations' values are NaN, and so are the aggregates (combine shards'
        per-perturbation values with :func:`aggregate_vcc2026`).

    Returns
    -------
    VCC2026Result

    Raises
    ------
    CountsError
        The preset's count rules: non-integer, negative or non-finite values, or a cell with more
        than 1e6 counts (the message names the rule and the side).
    InputError
        Missing or extra perturbations, duplicate cell or gene names, fewer than 3 control cells
        in ``truth``, or no label resolves to a target gene.
    MissingKeyError
        The label column or the control label is absent.
    GeneMismatchError
        The two sides have different genes or gene order.
    """
    pred, truth = validate_pair(pred, truth, perturbation_key=perturbation_key, control=control, layer=layer)
    return _score(pred, truth, target_genes=target_genes, chunk_size=chunk_size, n_threads=n_threads, rows=rows)


def _score(pred: CellData, truth: CellData, *, target_genes, chunk_size, n_threads, fractional_pred: bool = False,
           own_controls: bool = False, rows: np.ndarray | None = None) -> VCC2026Result:
    """:func:`score_vcc2026` on validated inputs; ``fractional_pred`` admits non-integer predicted
    counts (the emitted mean-response baseline is scaled control cells, as in cell-eval2);
    ``own_controls`` takes the prediction's effects and DE tests against its own control cells
    (cell-eval2's ``control_source="pred"``, which its replicate anchor uses).

    ``rows`` (positions of perturbations, a shard): the pseudobulk members are computed for every
    perturbation as usual (they pool the panel), the DE tests only for ``rows`` — each is a test of
    one perturbation against the controls with BH within the perturbation and a gene gate from
    the controls alone, so a row's DE members do not depend on the other rows; the DE members of
    the other rows are NaN, and so are the aggregates (a partial result)."""
    genes, perts = truth.genes, truth.perturbations
    if not pred.genes.equals(genes):
        raise GeneMismatchError(
            "pred and truth have different genes (or gene order); the vcc2026 preset scores the same "
            "gene axis on both sides. Reorder pred with pred[:, truth.var_names]."
        )
    missing = sorted(set(perts) - set(pred.perturbations))
    extra = sorted(set(pred.perturbations) - set(perts))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} measured perturbation(s) missing from pred (e.g. {missing[:3]!r})")
        if extra:
            parts.append(f"{len(extra)} perturbation(s) in pred that truth does not have (e.g. {extra[:3]!r})")
        raise InputError(
            "; ".join(parts) + ". The vcc2026 preset scores every measured perturbation, so pred must "
            "predict exactly the measured set."
        )
    if own_controls and pred.control is None:
        raise InputError(f"pred has no control cells ({truth.perturbation_key} == {truth.control!r}).")
    n_p = len(perts)
    # same sorted perturbations on both sides, so the codes agree; pred's controls are n_p too
    p_codes = pred.codes if own_controls else np.where(pred.codes < n_p, pred.codes, -1)
    with thread_limit(n_threads) as threads:
        n_parts = max(1, resolve_threads(threads))
        args = dict(chunk_size=chunk_size, bulk_target_sum=PRESET["bulk_target_sum"],
                    max_counts=PRESET["max_counts_per_cell"], n_parts=n_parts)
        real_bulk, real_jk, _ = _group_pass(truth, truth.codes, n_p + 1, **args)
        pred_bulk, pred_jk, n_pred_cells = _group_pass(pred, p_codes, n_p + own_controls, fractional=fractional_pred,
                                                       **args)
        de_args = dict(perturbation_key=truth.perturbation_key, control=truth.control, layer=truth.layer,
                       normalize=True, target_sum=PRESET["target_sum"], min_control_cpm=PRESET["min_control_cpm"],
                       epsilon=PRESET["epsilon"], n_threads=n_threads)
        de_pred_in, de_truth_in = pred, truth
        if rows is not None:
            de_truth_in = _rows_only(truth, rows, True)
            de_pred_in = _rows_only(pred, rows, own_controls)
        if own_controls:
            de_truth, de_pred = wilcoxon_de(de_truth_in, **de_args), wilcoxon_de(de_pred_in, **de_args)
        else:
            de_truth, de_pred = wilcoxon_de_pair(de_pred_in, de_truth_in, **de_args)
    pred_ctrl = pred_bulk[n_p] if own_controls else None
    pred_bulk, pred_jk, n_pred_cells = pred_bulk[:n_p], pred_jk[:n_p], n_pred_cells[:n_p]
    if (n_pred_cells == 0).any():
        raise InputError("pred has a perturbation with no cells.")
    cols = _target_columns(perts, genes, target_genes)
    panel = np.unique(np.fromiter(cols.values(), dtype=np.int64, count=len(cols)))
    ctrl = real_bulk[n_p]
    origin = pred_ctrl if own_controls else ctrl
    values = {"pds_cosine": _pds_cosine(pred_bulk - origin, real_bulk[:n_p] - ctrl, panel)}
    if rows is None:
        values.update(_de_members(de_truth, de_pred, cols))
    else:
        at = perts.get_indexer(de_truth.perturbations)
        sub = {k: cols[p] for k, p in enumerate(at) if p in cols}
        for name, v in _de_members(de_truth, de_pred, sub).items():
            values[name] = np.full(n_p, np.nan)
            values[name][at] = v
    capped, distance, uncapped = _expression_error(pred_bulk, pred_jk, real_bulk[:n_p], real_jk[:n_p],
                                                   ctrl, real_jk[n_p], cols)
    values["expr_mse_unbiased"] = uncapped
    values["expr_real_mass_ratio"] = np.expm1(real_bulk[:n_p]).sum(axis=1) / PRESET["bulk_target_sum"]
    values["expr_mse_unbiased_capped"] = capped
    values["expr_distance_unbiased"] = distance
    values = {k: values[k] for k in _PER_PERTURBATION}
    if rows is not None:
        values = {k: np.where(np.isin(np.arange(n_p), rows), v, np.nan) for k, v in values.items()}
    return VCC2026Result(
        perturbations=perts,
        values=values,
        aggregate=aggregate_vcc2026(values) if rows is None else dict.fromkeys((*MEMBERS, *_PER_PERTURBATION[5:]),
                                                                               float("nan")),
        de_truth=de_truth,
        de_pred=de_pred,
        params={"perturbation_key": truth.perturbation_key, "control": truth.control, "layer": truth.layer,
                "preset": "vcc2026", **PRESET},
    )
