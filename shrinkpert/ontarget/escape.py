r"""Escaping cells: per-cell probability of being perturbed, penetrance per perturbation and guide.

:func:`classify_escape` fits, for every perturbation, a two-state mixture over its cells —
*unperturbed* (escaped) or *perturbed* — from two kinds of evidence, both count models against
the control cells:

* the **target gene's own counts** (zero-inflated negative binomial with library-size offsets);
* the **signature**: the perturbation's shrunken effect direction on the other genes, i.e. a
  projection of the cell's counts onto the log fold changes of the genes the perturbation
  changes (quasi-Poisson), with each cell left out of its own signature.

:func:`escape_aware_effects` recomputes effect sizes from perturbed cells only, or weighting
each cell by its posterior probability of being perturbed.

The model is described in the Notes of :func:`classify_escape`.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._arrays import as_rng
from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY
from ..errors import InputError, ShrinkpertWarning
from ._counts import _count_pass, _fit_zinb, _frozen, _library_column, _resolve, _shrink_vector
from ._mixture import _R_HIGH, _R_LOW, _dispersion, _fit_one, _rate_effects, _shrink_rows

__all__ = ["EscapeResult", "PenetranceTable", "classify_escape"]

log = logging.getLogger("shrinkpert")

_NULL_SHIFTS = ("auto", "median", "none")
_MIN_PERTURBATIONS_FOR_SHIFT = 10
_EVIDENCE = ("target+signature", "target", "signature", "none")


# =========================================================================== results


@dataclass(frozen=True)
class PenetranceTable:
    """Penetrance (fraction of perturbed cells) per perturbation or guide, with its interval.

    Attributes
    ----------
    level : {"perturbation", "guide"}
    groups : pandas.Index
    perturbation : pandas.Index
        Perturbation of each group.
    n_cells : ndarray of int64
    penetrance : ndarray of float64
        Maximum-likelihood mixing weight of the perturbed state (0 when there is no evidence).
    ci_low, ci_high : ndarray of float64
        95% likelihood-ratio interval of the penetrance.
    mean_p_perturbed : ndarray of float64
        Mean per-cell posterior probability of being perturbed.
    evidence : ndarray of str
        ``"target+signature"``, ``"target"``, ``"signature"`` or ``"none"`` (no evidence of any
        effect: penetrance 0, interval [0, 1]).
    n_signature_genes : ndarray of int64
    target_ratio : ndarray of float64
        Target expression of all the group's cells relative to control (rate ratio; NaN when the
        target channel is not used).
    target_ratio_perturbed : ndarray of float64
        The same in the perturbed state (the knockdown among perturbed cells).
    null_state : ndarray of str
        Unperturbed state chosen by the likelihood: ``"control"`` or ``"generic"`` (control
        moved by the effect every perturbation shares); empty when not applicable.
    loglik_ratio : ndarray of float64
        :math:`2(\\ell(\\hat\\pi) - \\ell(0))`, evidence for any perturbed cell.
    """

    level: str
    groups: pd.Index
    perturbation: pd.Index
    n_cells: np.ndarray
    penetrance: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    mean_p_perturbed: np.ndarray
    evidence: np.ndarray
    n_signature_genes: np.ndarray
    target_ratio: np.ndarray
    target_ratio_perturbed: np.ndarray
    null_state: np.ndarray
    loglik_ratio: np.ndarray

    def __post_init__(self) -> None:
        for name in ("penetrance", "ci_low", "ci_high", "mean_p_perturbed", "target_ratio",
                     "target_ratio_perturbed", "loglik_ratio"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        for name in ("n_cells", "n_signature_genes"):
            object.__setattr__(self, name, _frozen(getattr(self, name), np.int64))
        for name in ("evidence", "null_state"):
            object.__setattr__(self, name, _frozen(getattr(self, name), str))

    def to_frame(self) -> pd.DataFrame:
        """One row per group, indexed by the group label."""
        return pd.DataFrame(
            {
                "perturbation": self.perturbation.to_numpy(dtype=str),
                "n_cells": self.n_cells,
                "penetrance": self.penetrance,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "mean_p_perturbed": self.mean_p_perturbed,
                "evidence": self.evidence,
                "n_signature_genes": self.n_signature_genes,
                "target_ratio": self.target_ratio,
                "target_ratio_perturbed": self.target_ratio_perturbed,
                "null_state": self.null_state,
                "loglik_ratio": self.loglik_ratio,
            },
            index=pd.Index(self.groups.to_numpy(dtype=str), name=self.level),
        )


@dataclass(frozen=True)
class EscapeResult:
    """Result of :func:`classify_escape`.

    Attributes
    ----------
    obs_names : pandas.Index
        Cell names, in ``obs`` order; every per-cell array is aligned to them.
    perturbation : ndarray of str
        Perturbation label of each cell (the control label for controls, ``""`` for cells of no
        classified perturbation).
    p_perturbed : ndarray of float64
        Posterior probability of being perturbed: 0 for control cells, NaN for cells of no
        classified perturbation.
    log_lr : ndarray of float64
        Log likelihood ratio perturbed vs unperturbed state at the fitted penetrance (NaN for
        controls and unclassified cells).
    log_lr_target : ndarray of float64
        Its target-gene part (0 when the target channel is not used).
    by_perturbation : PenetranceTable
    by_guide : PenetranceTable or None
    signature_genes : mapping of str to tuple of str
        Genes of each perturbation's signature, strongest first.
    params : mapping
    """

    obs_names: pd.Index
    perturbation: np.ndarray
    p_perturbed: np.ndarray
    log_lr: np.ndarray
    log_lr_target: np.ndarray
    by_perturbation: PenetranceTable
    by_guide: PenetranceTable | None
    signature_genes: Mapping[str, tuple[str, ...]]
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "perturbation", _frozen(self.perturbation, str))
        for name in ("p_perturbed", "log_lr", "log_lr_target"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "signature_genes",
                           MappingProxyType({k: tuple(v) for k, v in self.signature_genes.items()}))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    @property
    def penetrance(self) -> pd.DataFrame:
        """Per perturbation: ``penetrance``, ``ci_low``, ``ci_high`` and diagnostics (a new frame)."""
        return self.by_perturbation.to_frame()

    @property
    def guide_penetrance(self) -> pd.DataFrame:
        """Per guide, as :attr:`penetrance` (requires ``guide_key``)."""
        if self.by_guide is None:
            raise InputError("No guide-level penetrance: call classify_escape(..., guide_key=<obs column>).")
        return self.by_guide.to_frame()

    def to_frame(self) -> pd.DataFrame:
        """One row per cell (``obs`` order): perturbation, ``p_perturbed``, log LRs, call."""
        p = self.p_perturbed
        call = np.where(np.isnan(p), "", np.where(p >= 0.5, "perturbed", "escaped")).astype(object)
        call[self.perturbation == self.params["control"]] = "control"
        return pd.DataFrame(
            {
                "perturbation": self.perturbation,
                "p_perturbed": p,
                "log_lr": self.log_lr,
                "log_lr_target": self.log_lr_target,
                "call": call,
            },
            index=pd.Index(self.obs_names, name="cell"),
        )

    def summary(self) -> pd.DataFrame:
        """One row: perturbations by evidence, median penetrance, cells called perturbed."""
        table = self.by_perturbation.to_frame()
        judged = table["evidence"] != "none"
        perturbed_cells = np.isfinite(self.p_perturbed) & (self.perturbation != self.params["control"])
        return pd.DataFrame(
            {
                "n_perturbations": [len(table)],
                **{f"n_{e.replace('+', '_')}": [int((table["evidence"] == e).sum())] for e in _EVIDENCE},
                "median_penetrance": [float(table.loc[judged, "penetrance"].median()) if judged.any() else np.nan],
                "fraction_cells_perturbed": [float((self.p_perturbed[perturbed_cells] >= 0.5).mean())
                                             if perturbed_cells.any() else np.nan],
            }
        )


# =========================================================================== main entry


def _resolve_shift(null_shift: str, n_perturbations: int) -> str:
    if null_shift not in _NULL_SHIFTS:
        raise InputError(f"null_shift={null_shift!r} is not one of {_NULL_SHIFTS!r}.")
    if null_shift == "auto":
        return "median" if n_perturbations >= _MIN_PERTURBATIONS_FOR_SHIFT else "none"
    return null_shift


def classify_escape(
    adata: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    guide_key: str | None = None,
    layer: str | None = None,
    library_size: str | np.ndarray | None = None,
    target_key: str | None = None,
    targets: Mapping[str, str] | None = None,
    perturbations: Sequence[str] | None = None,
    lfsr_threshold: float = 0.05,
    max_signature_genes: int = 200,
    min_control_mean: float = 0.05,
    null_shift: str = "auto",
    min_cells: int = MIN_CELLS,
    n_grid: int = 200,
    max_control_cells: int = 5000,
    seed: int | np.random.Generator = 0,
    chunk_size: int | None = None,
    guide_strength: bool | None = None,
) -> EscapeResult:
    r"""Per-cell probability of being perturbed and per-perturbation penetrance.

    Parameters
    ----------
    adata
        AnnData (in memory or backed) or path to an ``.h5ad`` file holding raw counts.
    perturbation_key
        ``obs`` column with each cell's perturbation.
    control
        Label of the control cells.
    guide_key
        Optional ``obs`` column of guides: per-guide knockdown in the model and per-guide
        penetrance in the result.
    layer
        Layer with raw counts (default ``X``).
    library_size
        ``obs`` column or array of per-cell library sizes (default: row totals).
    target_key, targets
        Target gene of each perturbation when labels are not gene names (``obs`` column or
        mapping). Perturbations whose target is not a measured gene, or not a gene at all, are
        classified from their signature alone.
    perturbations
        Perturbations to classify (default: every label except ``control``).
    lfsr_threshold
        A gene enters a perturbation's signature, and the target enters the model, when its
        effect's local false sign rate is below this.
    max_signature_genes
        At most this many signature genes per perturbation (smallest lfsr first).
    min_control_mean
        The target channel is not used when the target's mean count in control cells is below
        this (too lowly expressed to judge).
    null_shift
        ``"median"``: unperturbed cells of a perturbation may sit at the control state or at the
        *generic* perturbed state, the control moved by the median effect over all
        perturbations (what every perturbation shares, e.g. a Cas9 or library effect);
        ``"none"``: unperturbed means control; ``"auto"`` (default): ``"median"`` with at least
        10 perturbations.
    min_cells
        Perturbations with fewer cells are not classified (NaN, with a warning).
    n_grid
        Penetrance grid size (resolution ``1/n_grid``).
    max_control_cells
        Control cells used to fit the target genes' count distributions (random subset).
    seed
        Seed (int or ``numpy.random.Generator``) of that subset.
    chunk_size
        Rows per block when reading.
    guide_strength
        Give each guide its own perturbed state on the signature genes: one signature strength
        per guide, shrunk towards the perturbation's by empirical Bayes (see Notes; needs
        ``guide_key``). Default (``None``): on when ``guide_key`` is given.

    Returns
    -------
    EscapeResult

    Raises
    ------
    MissingKeyError
        A named ``obs`` column or the control label is absent.
    CountsError
        The matrix does not hold raw counts.
    InputError
        Bad options, duplicated names, or a guide shared by two perturbations.

    Warns
    -----
    ShrinkpertWarning
        Perturbations with fewer than ``min_cells`` cells (not classified).

    Notes
    -----
    **Effects.** From group sums :math:`X_{pg}` and relative library sizes
    :math:`l_i = L_i / \operatorname{median}_c L`, the log rate ratio
    :math:`\log \hat R_{pg}` of gene :math:`g` in perturbation :math:`p` vs control has a
    negative-binomial standard error (control moment dispersion). With ``null_shift="median"``,
    :math:`h_g = \operatorname{median}_p \log\hat R_{pg}` (targets excluded) is the generic
    perturbed state; a gene's specific effect is its distance to the segment between the two
    possible unperturbed states, :math:`e_{pg} = \log\hat R_{pg} - \operatorname{clip}(\log\hat
    R_{pg}, \min(0, h_g), \max(0, h_g))`, shrunk per perturbation by ash (posterior mean
    :math:`\tilde e_{pg}`, lfsr). Signature genes :math:`S_p` have lfsr below
    ``lfsr_threshold``; their shrunken ratio is :math:`R_{pg} = \exp(\log\hat R_{pg} - e_{pg} +
    \tilde e_{pg})`. The target enters when its knockdown (ash across perturbations) has
    lfsr below the threshold.

    **Mixture.** Cell :math:`i` is perturbed with probability :math:`\pi` (the penetrance).
    Unperturbed, gene :math:`g` has mean :math:`\mu_g l_i r^0_g` with
    :math:`r^0_g = e^{\nu h_g}`, :math:`\nu \in \{0, 1\}` (control or generic state). Perturbed,
    its ratio is fixed by the group mean, :math:`R_g = (1 - \pi) r^0_g + \pi r_g`, so
    :math:`r_g(\pi) = (R_g - (1-\pi) r^0_g)/\pi` (clipped to [0.01, 100]): the perturbed cells
    carry the whole effect, and a perturbation without effect (:math:`R = r^0`) has no
    perturbed state to find. The per-cell log likelihood ratio is

    .. math::
        \lambda_i(\pi) = \sum_{g \in S_p} \frac{x_{ig} \log(r_g/r^0_g) - l_i \mu_g (r_g - r^0_g)}{d_g}
          + \log\frac{f(x_{it}; \mu_t l_i r_t)}{f(x_{it}; \mu_t l_i r^0_t)},

    a quasi-Poisson projection of the counts on the log fold changes (:math:`d_g = 1 + \phi_g
    \mu_g` absorbs over-dispersion) plus the target's zero-inflated negative binomial
    :math:`f` fitted on control cells, with the target's ratio per guide. Each cell is left
    out of its own signature: exactly for the target (its guide's ratio without the cell), to
    first order for the signature genes (the shrinkage factor :math:`\tilde e/e` included).
    :math:`\hat\pi` maximises :math:`\ell(\pi) = \sum_i \log(1 - \pi + \pi e^{\lambda_i(\pi)})`
    (plus the null term) over a grid and :math:`\nu`; ``p_perturbed`` is
    :math:`\hat\pi e^{\lambda_i}/(1 - \hat\pi + \hat\pi e^{\lambda_i})`. The interval is
    :math:`\{\pi : 2(\ell(\hat\pi) - \ell(\pi)) \le \chi^2_{1, 0.95}\}`, which includes 0
    when the evidence for perturbed cells is weak. Guide-level penetrance re-fits the mixing
    weight on each guide's cells with the perturbed state held fixed.

    **Per-guide strength** (``guide_strength=True``). A weak guide moves the signature genes of
    its perturbed cells less than the perturbation's average, so with one perturbed state its
    perturbed cells look escaped. With this option guide :math:`k`'s group ratio of signature
    gene :math:`g` is :math:`R_{kg} = r^0_g (R_g/r^0_g)^{s_k}` with one strength :math:`s_k`
    per guide, and its perturbed state is :math:`r_{kg}(\pi) = (R_{kg} - (1-\pi) r^0_g)/\pi` — the
    same construction the target channel already uses per guide. The penetrance :math:`\pi`
    stays common to the guides of a perturbation. :math:`\hat s_k` is the weighted regression of
    the guide's log ratios on the perturbation's (a weak :math:`N(1, 0.5^2)` prior, clipped to
    [0, 3]); guides of one perturbation differ by chance (over-dispersed, correlated genes; more
    escapers in one guide than another), so the strengths are shrunk towards their common value
    by empirical Bayes: each guide's sampling variance from its cells (infinitesimal jackknife),
    the spread of the true strengths between guides by DerSimonian and Laird's moment estimator,
    :math:`s_k = 1 + B_k(\hat s_k/\bar s - 1)` with :math:`B_k = \tau^2/(\tau^2 + v_k/\bar s^2)`
    (``_shrink_strengths`` in ``ontarget/_mixture.py``). Guides no more different than their
    cells allow get :math:`s_k = 1`, the single perturbed state.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> from shrinkpert.ontarget import classify_escape
    >>> adata = sp.datasets.papalexi2021()
    >>> res = classify_escape(adata[adata.obs["perturbation"] != "unassigned"])
    >>> table = res.penetrance
    >>> round(float(table.loc["STAT1", "penetrance"]), 1), str(table.loc["STAT1", "evidence"])
    (0.8, 'target+signature')
    """
    if not 0 < lfsr_threshold < 1:
        raise InputError(f"lfsr_threshold must be in (0, 1), got {lfsr_threshold!r}.")
    if int(max_signature_genes) < 0:
        raise InputError(f"max_signature_genes must be >= 0, got {max_signature_genes!r}.")
    if int(n_grid) < 10:
        raise InputError(f"n_grid must be at least 10, got {n_grid!r}.")
    if int(min_cells) < 2:
        raise InputError(f"min_cells must be at least 2, got {min_cells!r}.")
    if int(max_control_cells) < 10:
        raise InputError(f"max_control_cells must be at least 10, got {max_control_cells!r}.")
    if guide_strength and guide_key is None:
        raise InputError("guide_strength=True fits one signature strength per guide; pass guide_key=<obs column>.")
    guide_strength = guide_key is not None if guide_strength is None else bool(guide_strength)
    rng = as_rng(seed)
    design, obs = _resolve(adata, perturbation_key=perturbation_key, control=control, guide_key=guide_key,
                           target_key=target_key, targets=targets, perturbations=perturbations, layer=layer)
    library = _library_column(obs, library_size)
    n_p, n_genes, n_cells = len(design.perturbations), len(design.genes), len(design.codes)
    codes = design.codes
    if n_p == 0:
        raise InputError(f"obs[{perturbation_key!r}] has no perturbation besides the control {control!r}.")

    # ---- pass 1: row totals and raw group sums
    group = np.where((codes >= 0) & (codes <= n_p), codes, -1)
    first = _count_pass(design, group_codes=group, chunk_size=chunk_size)
    group_sums = first.statistics.sum
    group_sq = first.statistics.m2 + group_sums**2 / np.maximum(first.statistics.n_cells, 1)[:, None]
    totals = first.totals if library is None else library
    control_rows = np.flatnonzero(codes == n_p)
    if len(control_rows) < 2:
        raise InputError(f"The control {control!r} has {len(control_rows)} cells; at least 2 are needed.")
    ref = np.median(totals[control_rows])
    if not ref > 0:
        raise InputError("The median library size of the control cells is 0; check the layer and library_size.")
    lib = totals / ref
    n_per = np.bincount(group[group >= 0], minlength=n_p + 1)
    lib_sum = np.bincount(group[group >= 0], weights=lib[group >= 0], minlength=n_p + 1)
    lib_sq = np.bincount(group[group >= 0], weights=lib[group >= 0] ** 2, minlength=n_p + 1)
    small = n_per[:n_p] < int(min_cells)
    if small.any():
        names = [f"{p} ({n})" for p, n in zip(design.perturbations[small], n_per[:n_p][small])]
        warnings.warn(
            f"{len(names)} perturbations have fewer than min_cells={min_cells} cells and are not "
            f"classified: {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}",
            ShrinkpertWarning, stacklevel=2)

    # ---- effects, generic shift, specific effects, shrinkage
    phi = _dispersion(group_sums, group_sq, lib_sum, lib_sq)
    log_r, se, mu = _rate_effects(group_sums, lib_sum, lib_sq, n_p, phi)
    tindex = design.target_index
    is_target = np.zeros((n_p, n_genes), dtype=bool)
    has_t = tindex >= 0
    is_target[np.flatnonzero(has_t), tindex[has_t]] = True
    usable = ~small
    shift_mode = _resolve_shift(null_shift, int(usable.sum()))
    h = np.zeros(n_genes)
    se_h = np.zeros(n_genes)
    if shift_mode == "median":
        masked = np.where(is_target | small[:, None], np.nan, log_r)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            h = np.nan_to_num(np.nanmedian(masked, axis=0))
            se_h = np.nan_to_num(1.2533 * np.nanmedian(np.where(usable[:, None], se, np.nan), axis=0)
                                 / math.sqrt(max(int(usable.sum()), 1)))
    base = np.clip(log_r, np.minimum(0.0, h), np.maximum(0.0, h))
    spec = log_r - base
    se_spec = np.sqrt(se**2 + se_h**2)
    pm, _, lfsr = _shrink_rows(spec, se_spec, is_target | small[:, None])
    # target knockdown (beyond the null segment), shrunk across perturbations
    rows_t = np.flatnonzero(has_t)
    e_t = np.full(n_p, np.nan)
    s_t = np.full(n_p, np.nan)
    e_t[rows_t] = spec[rows_t, tindex[rows_t]]
    s_t[rows_t] = se_spec[rows_t, tindex[rows_t]]
    e_t[small] = np.nan
    pm_t, _, lfsr_t = _shrink_vector(e_t, s_t)
    control_mean_count = np.full(n_p, np.nan)
    control_mean_count[rows_t] = group_sums[n_p, tindex[rows_t]] / len(control_rows)
    use_target = has_t & ~small & (lfsr_t < lfsr_threshold) & (control_mean_count >= min_control_mean)
    signature: list[np.ndarray] = []
    for k in range(n_p):
        if small[k]:
            signature.append(np.zeros(0, dtype=np.int64))
            continue
        genes = np.flatnonzero((lfsr[k] < lfsr_threshold) & ~is_target[k])
        order = np.lexsort((-np.abs(pm[k, genes]), lfsr[k, genes]))
        signature.append(genes[order][: int(max_signature_genes)])

    # ---- pass 2: the counts the mixture needs
    used_targets = np.unique(tindex[use_target])
    sub = control_rows
    if len(sub) > max_control_cells:
        sub = np.sort(rng.choice(control_rows, int(max_control_cells), replace=False))
    row_codes = np.where((codes >= 0) & (codes < n_p) & ~small[np.clip(codes, 0, n_p - 1)], codes, -1)
    row_codes[sub] = n_p
    keys = [k * n_genes + signature[k] for k in range(n_p)]
    keys += [np.array([k * n_genes + tindex[k]]) for k in np.flatnonzero(use_target)]
    keys.append(n_p * n_genes + used_targets)
    pairs = np.unique(np.concatenate(keys).astype(np.int64)) if keys else np.zeros(0, dtype=np.int64)
    entries = _count_pass(design, row_codes=row_codes, pairs=pairs, chunk_size=chunk_size).entries

    # target count models from control cells
    zinb = {}
    if len(used_targets):
        counts = entries[sub][:, used_targets].toarray()
        m_t, th_t, p0_t = _fit_zinb(counts, lib[sub])
        zinb = {int(g): (m_t[j], th_t[j], p0_t[j]) for j, g in enumerate(used_targets)}

    # ---- per perturbation
    grid = np.arange(1, int(n_grid) + 1) / int(n_grid)
    d_all = 1.0 + phi * mu
    p_perturbed = np.full(n_cells, np.nan)
    p_perturbed[control_rows] = 0.0
    log_lr = np.full(n_cells, np.nan)
    log_lr_t = np.full(n_cells, np.nan)
    have_guides = design.guides is not None
    n_g_all = len(design.guides) if have_guides else 0
    guide_pen = np.full(n_g_all, np.nan)
    guide_lo = np.full(n_g_all, np.nan)
    guide_hi = np.full(n_g_all, np.nan)
    out = {key: np.full(n_p, np.nan) for key in ("pen", "lo", "hi", "lr", "tr", "trp")}
    evidence = np.full(n_p, "none", dtype=object)
    null_state = np.full(n_p, "", dtype=object)
    nus = (0, 1) if shift_mode == "median" else (0,)
    for k in range(n_p):
        cells = np.flatnonzero(codes == k)
        if small[k]:
            continue
        sig_genes = signature[k]
        if have_guides:
            gcodes = design.guide_codes[cells]
            local_guides = np.flatnonzero(design.guide_perturbation == k)
            local = np.full(max(n_g_all, 1), -1)
            local[local_guides] = np.arange(len(local_guides))
            gl = np.where(gcodes >= 0, local[np.maximum(gcodes, 0)], len(local_guides))
            n_local = len(local_guides) + int((gcodes < 0).any())
        else:
            gl = np.zeros(len(cells), dtype=np.int64)
            n_local = 1
        sig = tgt = None
        if len(sig_genes):
            xs = entries[cells][:, sig_genes].toarray()
            eff = spec[k, sig_genes]
            with np.errstate(invalid="ignore", divide="ignore"):
                lam = np.clip(np.where(eff != 0, pm[k, sig_genes] / eff, 0.0), 0.0, 1.0)
            sig = dict(xs=xs, lib=lib[cells], mu=mu[sig_genes], d=d_all[sig_genes],
                       ratio=np.exp(base[k, sig_genes] + pm[k, sig_genes]), lam=lam,
                       xsum=group_sums[k, sig_genes] + 0.5, lsum=lib_sum[k], h=h[sig_genes])
            if guide_strength and n_local > 1:
                onehot = sp.csr_matrix((np.ones(len(cells)), (gl, np.arange(len(cells)))), shape=(n_local, len(cells)))
                sig.update(xsum_g=np.asarray(onehot @ xs), lsum_g=np.bincount(gl, weights=lib[cells], minlength=n_local))
        if use_target[k]:
            t = int(tindex[k])
            x_t = np.asarray(entries[cells][:, [t]].toarray()).ravel()
            m_t, th_t, p0_t = zinb[t]
            if m_t > 0:
                tgt = dict(x=x_t, lib=lib[cells], mu=m_t, theta=th_t, pi0=p0_t, h=h[t],
                           sign=-1.0 if pm_t[k] < 0 else 1.0,
                           xsum_g=np.bincount(gl, weights=x_t, minlength=n_local),
                           lsum_g=np.bincount(gl, weights=lib[cells], minlength=n_local))
        if sig is None and tgt is None:
            p_perturbed[cells] = 0.0
            out["pen"][k], out["lo"][k], out["hi"][k], out["lr"][k] = 0.0, 0.0, 1.0, 0.0
            if have_guides:
                guide_pen[local_guides], guide_lo[local_guides], guide_hi[local_guides] = 0.0, 0.0, 1.0
            continue
        fit = _fit_one(sig, tgt, grid, nus, n_local, gl)
        evidence[k] = "target+signature" if (sig is not None and tgt is not None) else (
            "target" if tgt is not None else "signature")
        null_state[k] = "generic" if fit["nu"] else "control"
        p_perturbed[cells] = fit["post"]
        log_lr[cells] = fit["llr"]
        log_lr_t[cells] = fit["llr_t"]
        out["pen"][k], out["lo"][k], out["hi"][k] = fit["pi"], fit["ci_low"], fit["ci_high"]
        out["lr"][k] = fit["lr_stat"]
        if tgt is not None:
            r0 = math.exp(fit["nu"] * tgt["h"])
            ratio = (tgt["xsum_g"].sum() + 0.5) / (tgt["lsum_g"].sum() * tgt["mu"])
            out["tr"][k] = ratio
            if fit["pi"] > 0:
                out["trp"][k] = float(np.clip((ratio - (1 - fit["pi"]) * r0) / fit["pi"], _R_LOW, _R_HIGH))
        if have_guides:
            for j, gi in enumerate(local_guides):
                guide_pen[gi], guide_lo[gi], guide_hi[gi] = fit["guides"][j]

    perts = design.perturbations
    by_pert = PenetranceTable(
        level="perturbation", groups=perts, perturbation=perts, n_cells=n_per[:n_p],
        penetrance=out["pen"], ci_low=out["lo"], ci_high=out["hi"],
        mean_p_perturbed=np.where(small, np.nan, _group_mean(p_perturbed, codes, n_p)),
        evidence=np.where(small, "", evidence).astype(str),
        n_signature_genes=np.array([len(s) for s in signature]), target_ratio=out["tr"],
        target_ratio_perturbed=out["trp"], null_state=null_state.astype(str), loglik_ratio=out["lr"])
    by_guide = None
    if have_guides:
        gp = design.guide_perturbation
        n_gc = np.bincount(design.guide_codes[design.guide_codes >= 0], minlength=n_g_all)
        by_guide = PenetranceTable(
            level="guide", groups=design.guides, perturbation=pd.Index(perts[gp], name="perturbation"),
            n_cells=n_gc, penetrance=guide_pen, ci_low=guide_lo, ci_high=guide_hi,
            mean_p_perturbed=_group_mean(p_perturbed, design.guide_codes, n_g_all),
            evidence=by_pert.evidence[gp], n_signature_genes=by_pert.n_signature_genes[gp],
            target_ratio=np.full(n_g_all, np.nan), target_ratio_perturbed=np.full(n_g_all, np.nan),
            null_state=by_pert.null_state[gp], loglik_ratio=np.full(n_g_all, np.nan))
    labels = np.full(n_cells, "", dtype=object)
    inside = (codes >= 0) & (codes < n_p)
    labels[inside] = perts.to_numpy(dtype=str)[codes[inside]]
    labels[codes == n_p] = control
    labels[inside & small[np.clip(codes, 0, n_p - 1)]] = ""
    params = {
        "perturbation_key": perturbation_key, "control": control, "guide_key": guide_key, "layer": layer,
        "library_size": library_size if isinstance(library_size, str) else (None if library_size is None else "array"),
        "lfsr_threshold": float(lfsr_threshold), "max_signature_genes": int(max_signature_genes),
        "min_control_mean": float(min_control_mean), "null_shift": shift_mode, "min_cells": int(min_cells),
        "n_grid": int(n_grid), "max_control_cells": int(max_control_cells),
        "control_n_cells": int(len(control_rows)), "guide_strength": bool(guide_strength),
    }
    sig_names = {str(p): tuple(design.genes[signature[k]]) for k, p in enumerate(perts)}
    return EscapeResult(design.obs_names, labels.astype(str), p_perturbed, log_lr, log_lr_t, by_pert, by_guide,
                        sig_names, params)


def _group_mean(values: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    ok = (codes >= 0) & (codes < n_groups) & np.isfinite(values)
    n = np.bincount(codes[ok], minlength=n_groups)
    s = np.bincount(codes[ok], weights=values[ok], minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, s / n, np.nan)
