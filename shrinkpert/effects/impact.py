"""Transcriptome-wide impact of perturbations (TRADE, Nadig et al. 2025).

For one perturbation with estimated effects :math:`\\hat\\beta_g` (log fold changes) and
standard errors :math:`s_g` over :math:`G` genes, TRADE deconvolves the sampling noise with
adaptive shrinkage: :math:`\\hat\\beta_g \\sim N(\\beta_g, s_g^2)`, :math:`\\beta_g \\sim \\hat g`,
where :math:`\\hat g = \\sum_k \\pi_k\\, U[a_k, b_k]` is a half-uniform mixture with a point mass
at 0 (``ash(..., mixcompdist = "halfuniform", prior = "uniform", grange = range(betahat))``).
The moments of :math:`\\hat g` then summarise the perturbation:

.. math::

    \\mu = \\sum_k \\pi_k m_k, \\quad m_k = \\tfrac{a_k + b_k}{2}, \\qquad
    \\mathrm{TI} = \\sum_k \\pi_k (m_k - \\mu)^2 + \\sum_k \\pi_k \\frac{(b_k - a_k)^2}{12},

the *transcriptome-wide impact* (variance of the true effects across genes, with sampling
noise removed), and the *effective number of affected genes*

.. math::

    M_e = \\frac{3G}{\\kappa}, \\qquad
    \\kappa = \\frac{1}{\\mathrm{TI}^2}\\sum_k \\pi_k
        \\frac{(b_k - \\mu)^5 - (a_k - \\mu)^5}{5 (b_k - a_k)},

with the point-mass term of the fourth moment set to 0 (TRADE's convention; exact when
:math:`\\mu = 0`). :math:`M_e = G` for Gaussian effects and shrinks as the impact
concentrates in few genes.

The share of impact carried by significant genes refits :math:`\\hat g` separately on the
significant set :math:`S` and its complement :math:`N` (same ``grange``):
:math:`|S|\\,\\mathrm{TI}_S / (|S|\\,\\mathrm{TI}_S + |N|\\,\\mathrm{TI}_N)`.

:func:`impact_correlation` is TRADE's bivariate mode: the correlation of true effects of two
effect sets over the same genes, from a bivariate normal scale mixture fitted to both.

The code is written for this package from the TRADE paper and the project's design notes
(``STATISTICS.md`` section 3); no TRADE, ashr or mashr code is copied. The golden values are
in ``tests/golden/trade``.

References
----------
Nadig, A. et al. (2025). Transcriptome-wide analysis of differential expression in perturbation
atlases. *Nature Genetics*.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np
import pandas as pd
from scipy import special

from ..errors import InputError, ShrinkpertWarning
from ..stats.testing import bh_adjust
from . import _impact_kernels as _ik
from . import ash as _ash
from . import mixture as _mixture
from .bivariate import ImpactCorrelation, impact_correlation

__all__ = [
    "ImpactCorrelation",
    "mixture_moments",
    "transcriptome_impact",
    "impact_correlation",
]

IMPACT_COLUMNS = (
    "transcriptome_wide_impact",
    "effective_n_genes",
    "mean",
    "n_genes",
    "frac_impact_significant",
    "frac_impact_significant_fdr",
    "n_significant",
    "n_significant_fdr",
    "impact_significant",
    "impact_nonsignificant",
    "impact_significant_fdr",
    "impact_nonsignificant_fdr",
    "loglik",
    "n_nonfinite",
    "n_extreme",
    "n_excluded",
    "converged",
)


# --------------------------------------------------------------------------- moments of g


def mixture_moments(weights: Any, a: Any, b: Any, *, n_genes: int | None = None) -> dict[str, float]:
    """Mean, variance (TI), fourth central moment, kurtosis and :math:`M_e` of a uniform mixture.

    Parameters
    ----------
    weights : array-like of shape (K,)
        Mixture weights :math:`\\pi_k` (need not be normalised; they are divided by their sum).
    a, b : array-like of shape (K,)
        Component bounds, :math:`a_k \\le b_k`; :math:`a_k = b_k` is a point mass.
    n_genes : int, optional
        :math:`G`, for :math:`M_e = 3G/\\kappa`.

    Returns
    -------
    dict
        ``mean`` :math:`\\mu`, ``transcriptome_wide_impact`` (TI), ``fourth_moment`` (M4),
        ``kurtosis`` :math:`\\kappa = M_4/\\mathrm{TI}^2`, ``effective_n_genes`` (NaN without
        ``n_genes``). Point masses contribute :math:`(m_k-\\mu)^2` to TI and 0 to M4
        (TRADE's convention).

    Raises
    ------
    InputError
        Lengths differ, a weight is negative, all weights are 0 or some ``a > b``.
    """
    pi = np.asarray(weights, dtype=np.float64)
    lo = np.asarray(a, dtype=np.float64)
    hi = np.asarray(b, dtype=np.float64)
    if not (pi.ndim == 1 and pi.shape == lo.shape == hi.shape):
        raise InputError(f"weights, a and b must be 1-D of equal length; got {pi.shape}, {lo.shape}, {hi.shape}.")
    if np.any(pi < 0) or not np.isfinite(pi).all() or pi.sum() <= 0:
        raise InputError("weights must be finite, non-negative and not all zero.")
    if np.any(hi < lo):
        raise InputError("Each component needs a <= b; swap the bounds of the offending components.")
    pi = pi / pi.sum()
    mid = (lo + hi) / 2.0
    width = hi - lo
    mu = float(np.sum(pi * mid))
    ti = float(np.sum(pi * (mid - mu) ** 2) + np.sum(pi * width**2 / 12.0))
    point = width == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        m4_k = np.where(point, 0.0, ((hi - mu) ** 5 - (lo - mu) ** 5) / (5.0 * np.where(point, 1.0, width)))
    m4 = float(np.sum(pi * m4_k))
    kappa = m4 / ti**2 if ti > 0 else math.nan
    me = 3.0 * n_genes / kappa if (n_genes is not None and kappa > 0) else math.nan
    return {
        "mean": mu,
        "transcriptome_wide_impact": ti,
        "fourth_moment": m4,
        "kurtosis": kappa,
        "effective_n_genes": me,
    }


# --------------------------------------------------------------------------- the ash fits

_BLOCK = 32  # perturbations whose fits go to the kernel together (bounds the memory of the inputs)
_TOL = 1e-8  # ash's defaults for the optimiser
_MAX_ITER = 1000

# one fit: (betahat, se, grange) -> (weights, a, b, loglik)
Problem = tuple[np.ndarray, np.ndarray, tuple[float, float]]
Fitted = tuple[np.ndarray, np.ndarray, np.ndarray, float, bool]
# a problem that is a subset of another: (index of that problem, positions of its genes there)
Parent = tuple[int, np.ndarray]


def _components_for(betahat: np.ndarray, se: np.ndarray, grange: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """End points (a, b) of TRADE's ash prior on this subset: ash's automatic grid, half-uniform
    components with a point mass, clipped to ``grange`` and de-duplicated."""
    grid = _ash._grid(betahat, se, 0.0, math.sqrt(2.0))
    a, b, _ = _ash._uniform_bounds(grid, "halfuniform", 0.0, True, "uniform", 10.0, grange)
    return a, b


def _shared_columns(parent: tuple[np.ndarray, np.ndarray], child: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """For each component of ``child``, the column of the identical component (same a and b, bit
    for bit) of ``parent``, or -1."""
    pa, pb = (np.ascontiguousarray(v).view(np.int64) for v in parent)
    column = {(int(u), int(v)): k for k, (u, v) in enumerate(zip(pa, pb))}
    ca, cb = (np.ascontiguousarray(v).view(np.int64) for v in child)
    return np.array([column.get((int(u), int(v)), -1) for u, v in zip(ca, cb)], dtype=np.int64)


def _fit_uniform_mixtures(problems: Sequence[Problem], parents: Sequence[Parent | None] | None = None) -> list[Fitted]:
    """TRADE's ash call on each problem: ``ash(betahat, se, mixture="halfuniform", pointmass=True,
    prior="uniform", grange=grange)``, without the posterior (impact needs only ĝ).

    Problems below :data:`~shrinkpert.effects.mixture.PARALLEL_FROM` genes go to one parallel
    kernel call (groups of problems across workers, each fit serial); larger ones run one at a
    time with parallel passes over their genes. Either way each fit solves ash's problem on ash's input
    with ash's solver, so the weights and log likelihood are ash's to the solver's tolerance.

    ``parents[q] = (p, rows)`` says that problem q is the subset ``rows`` of problem p (same
    grange): its log likelihood is not computed (NaN; impact uses only the main fit's), and
    when there are at least as many perturbations as threads, it is fitted after p by the
    same worker, which copies the likelihood columns of the components the two share instead
    of recomputing them (bit for bit the same values, see
    :func:`~shrinkpert.effects._impact_kernels.uniform_lik_rows_from`).
    """
    if not problems:
        return []
    comps = [_components_for(x, s, grange) for x, s, grange in problems]
    links = list(parents) if parents is not None else [None] * len(problems)
    sizes = np.array([x.size for x, _, _ in problems], dtype=np.int64)
    is_small = sizes < _mixture.PARALLEL_FROM
    small = np.flatnonzero(is_small)
    out: list[Fitted | None] = [None] * len(problems)
    if small.size:
        workers = min(numba.get_num_threads(), small.size)
        groups: dict[int, list[int]] = {}
        for q in small:
            link = links[q]
            shares = link is not None and is_small[link[0]] and links[link[0]] is None
            groups.setdefault(int(link[0]) if shares else int(q), []).append(int(q))
        if len(groups) < workers:  # too few perturbations to keep the threads busy: no sharing
            groups = {int(q): [int(q)] for q in small}
        seq: list[int] = []  # the problems in kernel order: each group's parent first
        root_of: list[int] = []
        for root, members in groups.items():
            seq += [root] + [q for q in members if q != root]
            root_of += [root] * len(members)
        where = {q: i for i, q in enumerate(seq)}
        n_seq = sizes[seq]
        ncomp = np.array([comps[q][0].size for q in seq], dtype=np.int64)
        kmax = int(ncomp.max())
        a = np.zeros((len(seq), kmax))
        b = np.zeros((len(seq), kmax))
        src = np.full((len(seq), kmax), -1, dtype=np.int64)
        want_loglik = np.array([links[q] is None for q in seq], dtype=np.bool_)
        row_parts = []
        row_off = np.zeros(len(seq) + 1, dtype=np.int64)
        group_off = np.cumsum([0] + [len(members) for members in groups.values()]).astype(np.int64)
        for i, (q, root) in enumerate(zip(seq, root_of)):
            a[i, : ncomp[i]], b[i, : ncomp[i]] = comps[q]
            n_rows = 0
            if root != q:
                src[i, : ncomp[i]] = _shared_columns(comps[root], comps[q])
                row_parts.append(np.asarray(links[q][1], dtype=np.int64))
                n_rows = row_parts[-1].size
            row_off[i + 1] = row_off[i] + n_rows
        rows = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(n_seq)])
        x = np.concatenate([problems[q][0] for q in seq])
        s = np.concatenate([problems[q][1] for q in seq])
        group_size = np.add.reduceat(n_seq, group_off[:-1])
        order = np.argsort(-group_size, kind="stable")
        pi = np.zeros((len(seq), kmax))
        loglik = np.empty(len(seq))
        n_iter = np.empty(len(seq), dtype=np.int64)
        conv = np.empty(len(seq), dtype=np.bool_)
        workers = min(workers, len(groups))
        _ik.fit_uniform_groups(x, s, offsets, a, b, ncomp, group_off, src, rows, row_off, want_loglik, order,
                               workers, _TOL, _MAX_ITER, _mixture.N_EM_WARMUP, _mixture.SQP_EPS, _mixture.CHUNK,
                               pi, loglik, n_iter, conv)
        for q in small:
            i = where[int(q)]
            out[q] = (pi[i, : ncomp[i]].copy(), *comps[q], float(loglik[i]), bool(conv[i]))
    for q in np.flatnonzero(sizes >= _mixture.PARALLEL_FROM):
        x, s, _ = problems[q]
        lo, hi = comps[q]
        g = _ash.MixturePrior.uniform(np.full(lo.size, 1.0 / lo.size), lo, hi)
        fit = _ash._fit(x, s, g, np.ones(lo.size), fixed=False, optimizer="mixsqp", tol=_TOL,
                        max_iter=_MAX_ITER, dfv=np.inf)
        loglik = fit.loglik if links[q] is None else math.nan
        out[q] = (np.asarray(fit.prior.pi), lo, hi, loglik, fit.converged)
    return out  # type: ignore[return-value]


def _bh_reject(p: np.ndarray, alpha: float) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-value below ``alpha`` (R ``p.adjust(method = "fdr")``)."""
    return bh_adjust(p) < alpha


@dataclass
class _Plan:
    """One perturbation between filtering and fitting: its row, genes and the subsets to fit.

    ``subsets`` maps a packed gene mask to its position in the list of problems; the whole
    set is key ``b""``. Identical Bonferroni and BH sets are fitted once.
    """

    row: dict[str, float]
    x: np.ndarray
    s: np.ndarray
    grange: tuple[float, float]
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    subsets: dict[bytes, int] = field(default_factory=dict)


def _plan(
    betahat: np.ndarray,
    se: np.ndarray,
    pvalue: np.ndarray,
    exclude: np.ndarray,
    *,
    model_significant: bool,
    alpha: float,
    max_abs_effect: float,
    problems: list[Problem],
    parents: list[Parent | None] | None = None,
) -> _Plan:
    """TRADE univariate for one perturbation up to the fits: filters, grange, significance sets.

    Appends the subsets to fit (all genes, then S and N of each split) to ``problems`` and,
    if given, to ``parents`` what :func:`_fit_uniform_mixtures` needs to know: None for all
    genes, (index of that problem, positions of the subset's genes in it) for S and N.
    """
    finite = np.isfinite(betahat) & np.isfinite(se) & (se > 0)
    if model_significant:
        finite &= np.isfinite(pvalue)
    extreme = np.abs(betahat) > max_abs_effect
    keep = finite & ~extreme & ~exclude
    row: dict[str, float] = dict.fromkeys(IMPACT_COLUMNS, math.nan)
    row["n_nonfinite"] = int((~finite).sum())
    row["n_extreme"] = int((finite & extreme).sum())
    row["n_excluded"] = int((finite & ~extreme & exclude).sum())
    x, s = betahat[keep], se[keep]
    row["n_genes"] = int(x.size)
    plan = _Plan(row, x, s, (math.nan, math.nan))
    if x.size < 2:
        return plan
    plan.grange = (float(x.min()), float(x.max()))
    whole = len(problems)
    plan.subsets[b""] = whole
    problems.append((x, s, plan.grange))
    if parents is not None:
        parents.append(None)
    if model_significant:
        p = pvalue[keep]
        plan.splits = {"": p < alpha / p.size, "_fdr": _bh_reject(p, alpha)}
        for mask in plan.splits.values():
            if not mask.any():
                continue
            for part in (mask, ~mask) if not mask.all() else (mask,):
                key = np.packbits(part).tobytes() + b"+"
                if key not in plan.subsets:
                    plan.subsets[key] = len(problems)
                    problems.append((x[part], s[part], plan.grange))
                    if parents is not None:
                        parents.append((whole, np.flatnonzero(part)))
    return plan


def _finish(plan: _Plan, fits: Sequence[Fitted]) -> dict[str, float]:
    """The row of one perturbation from its fits: moments of ĝ and the significance shares."""
    row = plan.row
    row["converged"] = all(fits[q][4] for q in plan.subsets.values())
    if not plan.subsets:
        return row

    def ti_of(mask: np.ndarray | None) -> float:
        key = b"" if mask is None else np.packbits(mask).tobytes() + b"+"
        w, a, b, _, _ = fits[plan.subsets[key]]
        return mixture_moments(w, a, b)["transcriptome_wide_impact"]

    w, a, b, loglik, _ = fits[plan.subsets[b""]]
    moments = mixture_moments(w, a, b, n_genes=plan.x.size)
    row["transcriptome_wide_impact"] = moments["transcriptome_wide_impact"]
    row["effective_n_genes"] = moments["effective_n_genes"]
    row["mean"] = moments["mean"]
    row["loglik"] = loglik
    for suffix, mask in plan.splits.items():
        n_s = int(mask.sum())
        n_n = mask.size - n_s
        if n_s == 0:
            share, ti_s, ti_n = 0.0, 0.0, math.nan
        elif n_n == 0:
            share, ti_s, ti_n = 1.0, ti_of(mask), math.nan
        else:
            ti_s, ti_n = ti_of(mask), ti_of(~mask)
            total = n_s * ti_s + n_n * ti_n
            share = n_s * ti_s / total if total > 0 else math.nan
        row |= {
            f"frac_impact_significant{suffix}": share,
            f"impact_significant{suffix}": ti_s,
            f"impact_nonsignificant{suffix}": ti_n,
            f"n_significant{suffix}": n_s,
        }
    return row


def _finish_block(plans: list[_Plan], future: Future, counts: list[int]) -> list[dict[str, float]]:
    """The rows of one block of perturbations once its fits are done; adds the number of fits
    and of fits that stopped short of the tolerance to ``counts``."""
    fits = future.result()
    counts[0] += len(fits)
    counts[1] += sum(not f[4] for f in fits)
    return [_finish(plan, fits) for plan in plans]


# --------------------------------------------------------------------------- inputs


def _matrix(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric; convert it with numpy.asarray(..., dtype=float).") from exc
    return arr


def _exclusion_masks(
    genes: pd.Index,
    perturbations: pd.Index,
    target_index: np.ndarray | None,
    exclude_target: bool,
    target_genes: Any,
) -> np.ndarray:
    """Boolean (P, G): genes left out of each perturbation's fit."""
    n_p, n_g = len(perturbations), len(genes)
    mask = np.zeros((n_p, n_g), dtype=bool)
    if exclude_target and target_index is not None:
        ti = np.asarray(target_index, dtype=np.int64).reshape(-1)
        if ti.size != n_p:
            raise InputError(
                f"target_index has {ti.size} entries but there are {n_p} perturbations; one per perturbation."
            )
        has = (ti >= 0) & (ti < n_g)
        mask[np.flatnonzero(has), ti[has]] = True
    if target_genes is None:
        return mask
    if isinstance(target_genes, Mapping):
        per = [target_genes.get(p) for p in perturbations]
    elif isinstance(target_genes, (str, bytes)) or not isinstance(target_genes, Iterable):
        per = [target_genes] * n_p
    else:
        listed = list(target_genes)
        per = listed if (n_p > 1 and len(listed) == n_p) else [listed] * n_p
    for row, names in enumerate(per):
        if names is None:
            continue
        names = [names] if isinstance(names, (str, bytes)) or not isinstance(names, Iterable) else list(names)
        pos = genes.get_indexer(pd.Index(names))
        mask[row, pos[pos >= 0]] = True
    return mask


def _align_to(values: Any, index: pd.Index, name: str) -> Any:
    """A Series reordered to ``index`` (genes); anything else is returned unchanged."""
    if not isinstance(values, pd.Series):
        return values
    if values.index.has_duplicates or index.has_duplicates:
        raise InputError(f"Gene labels are duplicated in {name} or the effects; make them unique.")
    missing = index.difference(values.index)
    if len(missing):
        raise InputError(
            f"{name} lacks {len(missing)} gene(s) of the effects, e.g. {list(missing[:5])!r}; pass one value per gene."
        )
    return values.reindex(index)


def _z_pvalue(betahat: np.ndarray, se: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return 2.0 * special.ndtr(-np.abs(betahat / se))


# --------------------------------------------------------------------------- public: univariate


def transcriptome_impact(
    effects_or_betahat: Any,
    std_error: Any = None,
    *,
    pvalue: Any = None,
    exclude_target: bool = True,
    target_genes: Any = None,
    model_significant: bool = True,
    alpha: float = 0.05,
    max_abs_effect: float = 10.0,
    progress: bool = False,
) -> pd.DataFrame:
    """Transcriptome-wide impact and effective number of affected genes per perturbation (TRADE).

    For each perturbation: drop genes with a non-finite effect or standard error (or p-value
    when ``model_significant``), a non-positive standard error, or :math:`|\\hat\\beta| >`
    ``max_abs_effect``; then drop the excluded genes (the perturbation's own target). Fit
    the half-uniform ash mixture :math:`\\hat g` with ``grange`` = range of the remaining
    effects and report its moments (see the module docstring):

    .. math::

        \\mathrm{TI} = \\mathrm{Var}_{\\hat g}(\\beta), \\qquad
        M_e = 3G\\,\\mathrm{TI}^2 / M_4 .

    With ``model_significant``, genes significant by Bonferroni (:math:`p < \\alpha/G`) and,
    separately, by Benjamini-Hochberg (adjusted :math:`p < \\alpha`) are refitted apart from
    the rest to give the share of the impact they carry.

    Parameters
    ----------
    effects_or_betahat : EffectSizes-like or array-like of shape (G,)
        Either an object with ``effect`` and ``std_error`` (P × G), ``perturbations`` and
        ``genes`` (``pandas.Index``) and optionally ``target_index`` (column of each
        perturbation's target in ``genes``, -1 for none), or the effects of one perturbation
        (a ``pandas.Series`` keeps gene names, needed for ``target_genes``).
    std_error : array-like of shape (G,), optional
        Standard errors, required with a 1-D ``effects_or_betahat`` and not allowed otherwise.
    pvalue : array-like, optional
        P-values for the significance split (same shape as the effects), e.g. DESeq2's
        ``pvalue`` column. Default: two-sided normal :math:`2\\Phi(-|\\hat\\beta/s|)` (what
        DESeq2's Wald test reports).
    exclude_target : bool, default True
        Leave each perturbation's target gene (``target_index``) out of its fit.
    target_genes : label, list of labels, or mapping perturbation -> label(s), optional
        More genes to leave out (TRADE's ``genes_exclude``); a list of length P gives one
        entry per perturbation.
    model_significant : bool, default True
        Compute the significant-gene shares (four more mixture fits per perturbation).
    alpha : float, default 0.05
        Family-wise (Bonferroni) and false-discovery (BH) level.
    max_abs_effect : float, default 10.0
        Effects larger in absolute value are dropped as numerical failures (TRADE: 10 on the
        log2 scale).
    progress : bool, default False
        Show a progress bar over perturbations.

    Returns
    -------
    pandas.DataFrame
        Indexed by perturbation, columns ``transcriptome_wide_impact``, ``effective_n_genes``,
        ``mean``, ``n_genes``, ``frac_impact_significant`` (Bonferroni),
        ``frac_impact_significant_fdr`` (BH), ``n_significant``, ``n_significant_fdr``,
        ``impact_significant`` / ``impact_nonsignificant`` (TI of each part, and ``_fdr``),
        ``loglik`` (ash log-likelihood of the main fit), the counts of dropped genes
        ``n_nonfinite``, ``n_extreme``, ``n_excluded``, and ``converged`` (every mixture fit of
        the row reached the solver's tolerance). Fewer than two usable genes give NaN.

    Raises
    ------
    InputError
        Shapes disagree, ``std_error`` is missing or superfluous, ``alpha`` is outside (0, 1),
        or ``target_genes`` is given for unnamed genes.

    Warns
    -----
    ShrinkpertWarning
        Some mixture fit stopped before the solver's tolerance (see ``converged``), or some
        perturbation has fewer than two usable genes.

    Notes
    -----
    Matches TRADE 0.1.0 ``TRADE(mode = "univariate")`` given the same ash fit (golden tests:
    ``tests/golden/trade``). TRADE's ``frac_sig`` with no significant gene is 0 and its TI of
    the non-significant part is NA; the same here. With every gene significant TRADE would
    fail; here the share is 1.
    """
    if not 0.0 < alpha < 1.0:
        raise InputError(f"alpha must lie in (0, 1), got {alpha!r}.")
    if hasattr(effects_or_betahat, "effect") and hasattr(effects_or_betahat, "std_error"):
        if std_error is not None:
            raise InputError("std_error= is taken from the effects object; do not pass it separately.")
        obj = effects_or_betahat
        beta = _matrix(obj.effect, "effect")
        se = _matrix(obj.std_error, "std_error")
        if beta.ndim != 2 or se.shape != beta.shape:
            raise InputError(
                f"effects.effect and effects.std_error must be 2-D of equal shape, got {beta.shape} and {se.shape}."
            )
        perts = pd.Index(getattr(obj, "perturbations", pd.RangeIndex(beta.shape[0])), name="perturbation")
        genes = pd.Index(getattr(obj, "genes", pd.RangeIndex(beta.shape[1])))
        target_index = getattr(obj, "target_index", None)
    else:
        if std_error is None:
            raise InputError("std_error is required with a 1-D effect vector; pass std_error=<one per gene>.")
        named = isinstance(effects_or_betahat, pd.Series)
        if named:
            std_error = _align_to(std_error, effects_or_betahat.index, "std_error")
            pvalue = _align_to(pvalue, effects_or_betahat.index, "pvalue")
        beta = _matrix(effects_or_betahat, "effects_or_betahat")
        se = _matrix(std_error, "std_error")
        if beta.ndim != 1 or se.shape != beta.shape:
            raise InputError(
                f"effects_or_betahat and std_error must be 1-D of equal length, got {beta.shape} and {se.shape}."
            )
        if target_genes is not None and not named:
            raise InputError(
                "target_genes needs gene names: pass effects_or_betahat as a pandas.Series indexed by gene."
            )
        genes = pd.Index(effects_or_betahat.index) if named else pd.RangeIndex(beta.size)
        name = effects_or_betahat.name if named and effects_or_betahat.name is not None else 0
        perts = pd.Index([name], name="perturbation")
        beta, se = beta[None, :], se[None, :]
        target_index = None
    if len(perts) != beta.shape[0] or len(genes) != beta.shape[1]:
        raise InputError(
            f"perturbations ({len(perts)}) and genes ({len(genes)}) do not match the effect shape {beta.shape}."
        )
    if pvalue is None:
        p = _z_pvalue(beta, se)
    else:
        p = _matrix(pvalue, "pvalue").reshape(beta.shape) if np.size(pvalue) == beta.size else None
        if p is None:
            raise InputError(f"pvalue must have the shape of the effects {beta.shape}.")
    exclude = _exclusion_masks(genes, perts, target_index, exclude_target, target_genes)

    blocks = range(0, beta.shape[0], _BLOCK)
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, desc="transcriptome impact", unit="block", unit_scale=_BLOCK)
    records: list[dict[str, float]] = []
    counts = [0, 0]  # fits, fits that stopped before the tolerance
    # the fits of one block run (Numba, without the GIL) while the next block is planned
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = None
        for start in blocks:
            problems: list[Problem] = []
            parents: list[Parent | None] = []
            plans = [
                _plan(beta[i], se[i], p[i], exclude[i], model_significant=model_significant, alpha=alpha,
                      max_abs_effect=max_abs_effect, problems=problems, parents=parents)
                for i in range(start, min(start + _BLOCK, beta.shape[0]))
            ]
            future = pool.submit(_fit_uniform_mixtures, problems, parents)
            if pending is not None:
                records += _finish_block(*pending, counts)
            pending = (plans, future)
        if pending is not None:
            records += _finish_block(*pending, counts)
    n_fits, n_failed = counts
    if n_failed:
        warnings.warn(
            f"transcriptome_impact: mix-SQP stopped before its tolerance in {n_failed} of {n_fits} mixture "
            "fits; the impact of the perturbations with converged=False may be inexact.",
            ShrinkpertWarning,
            stacklevel=2,
        )
    frame = pd.DataFrame.from_records(records, index=perts, columns=list(IMPACT_COLUMNS))
    for col in ("n_genes", "n_nonfinite", "n_extreme", "n_excluded"):
        frame[col] = frame[col].astype(np.int64)
    frame["converged"] = frame["converged"].astype(bool)
    if not model_significant:
        frame = frame.drop(columns=[c for c in IMPACT_COLUMNS if "significant" in c])
    small = frame["n_genes"] < 2
    if small.any():
        warnings.warn(
            f"{int(small.sum())} perturbation(s) have fewer than 2 usable genes; their impact is NaN.",
            ShrinkpertWarning,
            stacklevel=2,
        )
    frame.attrs["params"] = {
        "model_significant": model_significant,
        "alpha": alpha,
        "max_abs_effect": max_abs_effect,
        "exclude_target": exclude_target,
        "ash": {"mixture": "halfuniform", "pointmass": True, "prior": "uniform", "grange": "range of effects"},
    }
    return frame
