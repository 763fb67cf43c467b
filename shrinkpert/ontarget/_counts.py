r"""Count-model machinery shared by :mod:`~shrinkpert.ontarget.knockdown` and :mod:`~shrinkpert.ontarget.escape` (private).

* :func:`_resolve`: the design of the target-gene problem (perturbations, guides, target columns);
* :func:`_count_pass`: one pass over the raw counts (the shared engine) keeping the (cell, gene)
  entries asked for, plus row totals and raw group sums;
* :func:`_fit_zinb`: the zero-inflated negative-binomial fit of control counts (EM) and its
  log-likelihood :func:`_zinb_logpmf`;
* :func:`_shrink_vector`: adaptive shrinkage of one vector of effects.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.special import gammaln, ndtr

from ..data.design import encode_design
from .._validate import CellData, validate
from ..stats import CellPass, cell_pass
from ..errors import InputError, MissingKeyError, ShrinkpertWarning

log = logging.getLogger("shrinkpert")



def _frozen(values: Any, dtype: Any = np.float64) -> np.ndarray:
    out = np.array(values, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


# =========================================================================== design


class _Design(NamedTuple):
    """Integer-coded design of a target-gene analysis."""

    obs_names: pd.Index
    genes: pd.Index
    perturbations: pd.Index  # classified/measured perturbations (control excluded)
    control: str
    codes: np.ndarray  # per cell: perturbation code, n_perturbations for control, -1 otherwise
    target: pd.Index  # target gene name per perturbation
    target_index: np.ndarray  # column of the target in genes, -1 if not measured
    guides: pd.Index | None  # guide labels (targeting guides only), None without guide_key
    guide_codes: np.ndarray | None  # per cell: index into guides, -1 for controls and others
    guide_perturbation: np.ndarray | None  # per guide: perturbation code
    data: CellData  # the validated input (reader of the counts)


def _resolve(
    adata: Any,
    *,
    perturbation_key: str,
    control: str,
    guide_key: str | None,
    target_key: str | None,
    targets: Mapping[str, str] | None,
    perturbations: Sequence[str] | None,
    layer: str | None = None,
) -> tuple[_Design, pd.DataFrame]:
    """Encode cells, perturbations, targets and guides; validate names (no data read)."""
    data = validate(adata, perturbation_key=perturbation_key, control=control, layer=layer)  # the one boundary
    obs, genes = data.obs, data.genes
    if target_key is not None and targets is not None:
        raise InputError("Pass either target_key= (an obs column) or targets= (a mapping), not both.")
    design = encode_design(obs, genes, perturbation_key=perturbation_key, control=control,
                           target_key=target_key, perturbations=perturbations)
    target, tindex = design.target, design.target_index
    if targets is not None:
        unknown = sorted(set(map(str, targets)) - set(design.perturbations))
        if unknown:
            raise MissingKeyError(
                f"targets= names perturbations {unknown[:10]!r} that have no cells in "
                f"obs[{perturbation_key!r}]; remove them or fix the labels."
            )
        target = pd.Index([str(targets.get(p, p)) for p in design.perturbations], name="target")
        tindex = genes.get_indexer(target).astype(np.int64)
    guides = guide_codes = guide_pert = None
    if guide_key is not None:
        if guide_key not in obs.columns:
            raise MissingKeyError(
                f"obs has no column {guide_key!r} (guide labels). Columns present: "
                f"{list(obs.columns)[:20]!r}. Pass guide_key=<column> or guide_key=None."
            )
        raw = obs[guide_key].astype("string").to_numpy(dtype=object, na_value=None)
        perturbed = design.codes[(design.codes >= 0) & (design.codes < len(design.perturbations))]
        sel = (design.codes >= 0) & (design.codes < len(design.perturbations))
        pairs = pd.DataFrame({"guide": raw[sel], "p": perturbed}).dropna()
        owners = pairs.groupby("guide")["p"].nunique()
        shared = owners[owners > 1]
        if len(shared):
            raise InputError(
                f"Guides {list(shared.index[:10])!r} in obs[{guide_key!r}] occur in several "
                f"perturbations of obs[{perturbation_key!r}]; each guide must belong to one perturbation."
            )
        first = pairs.drop_duplicates("guide").set_index("guide")["p"]
        order = np.lexsort((first.index.to_numpy(dtype=str), first.to_numpy()))
        guides = pd.Index(first.index.to_numpy(dtype=str)[order], name="guide")
        guide_pert = first.to_numpy(dtype=np.int64)[order]
        lookup = {g: k for k, g in enumerate(guides)}
        guide_codes = np.full(len(obs), -1, dtype=np.int64)
        idx = np.flatnonzero(sel)
        guide_codes[idx] = [lookup.get(g, -1) if g is not None else -1 for g in raw[idx]]
    return _Design(pd.Index(obs.index).astype(str), genes, design.perturbations, control, design.codes,
                   target, tindex, guides, guide_codes, guide_pert, data), obs


def _library_column(obs: pd.DataFrame, library_size: str | np.ndarray | None) -> np.ndarray | None:
    if library_size is None:
        return None
    if isinstance(library_size, str):
        if library_size not in obs.columns:
            raise MissingKeyError(
                f"library_size={library_size!r} is not an obs column; pass a column name, an array "
                "of per-cell totals, or None to use the row totals."
            )
        lib = obs[library_size].to_numpy(dtype=np.float64)
    else:
        lib = np.asarray(library_size, dtype=np.float64)
    if lib.shape != (len(obs),):
        raise InputError(f"library_size has shape {lib.shape}; expected one value per cell ({len(obs)},).")
    if not np.all(np.isfinite(lib)) or (lib < 0).any():
        raise InputError("library_size has negative or non-finite values; pass non-negative totals per cell.")
    return lib


# =========================================================================== the count pass


def _count_pass(design: _Design, *, group_codes: np.ndarray | None = None, row_codes: np.ndarray | None = None,
                pairs: np.ndarray | None = None, chunk_size: int | None = None) -> CellPass:
    """One pass over the raw counts through the shared engine (:func:`shrinkpert.stats.cell_pass`).

    ``group_codes`` (per cell, -1: none) give raw group sums; ``row_codes`` and ``pairs`` (sorted
    keys ``code * n_genes + gene``) name the stored entries to keep. Values must be counts.
    """
    n_cells, n_genes = len(design.codes), len(design.genes)
    codes = np.full(n_cells, -1, dtype=np.int64) if group_codes is None else group_codes
    n_groups = int(codes.max()) + 1 if codes.size and codes.max() >= 0 else 0
    wanted = None
    if row_codes is not None:
        keys = np.asarray(pairs, dtype=np.int64)
        n_codes = max(int(row_codes.max()) + 1 if row_codes.size else 0, 1)
        mask = sp.csr_matrix((np.ones(len(keys), dtype=bool), (keys // n_genes, keys % n_genes)),
                             shape=(n_codes, n_genes))
        wanted = (row_codes, mask)
    return cell_pass(design.data, codes, pd.RangeIndex(n_groups), check_counts=True, wanted=wanted,
                     chunk_size=chunk_size)


# =========================================================================== count model


def _zinb_logpmf(x: np.ndarray, mean: np.ndarray, theta: np.ndarray, pi0: np.ndarray) -> np.ndarray:
    r"""Log pmf of the zero-inflated negative binomial (broadcasting).

    :math:`P(0) = \pi_0 + (1-\pi_0)(\theta/(\theta+m))^\theta`; for :math:`x > 0`,
    :math:`(1-\pi_0)\,\Gamma(x+\theta)/(\Gamma(\theta)\,x!)\,(\theta/(\theta+m))^\theta (m/(\theta+m))^x`.
    """
    x, mean = np.asarray(x, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    log_q = theta * (np.log(theta) - np.log(theta + mean))  # log P_NB(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_nb = (gammaln(x + theta) - gammaln(theta) - gammaln(x + 1) + log_q
                  + np.where(x > 0, x * (np.log(mean) - np.log(theta + mean)), 0.0))
        zero = np.log(pi0 + (1 - pi0) * np.exp(log_q))
        return np.where(x == 0, zero, np.log1p(-pi0) + log_nb)


def _nb_em(x, lib, zero, mu, theta, pi0, *, zero_inflated: bool, n_iter: int):
    """EM / Newton iterations of the (zero-inflated) NB fit, vectorised over genes (columns)."""
    from scipy.special import digamma, polygamma

    log_mu, log_th = np.log(mu), np.log(theta)
    # non-zero entries all have weight 1 (only zeros can be structural): the digamma terms
    # need each distinct (gene, count) pair once, with its multiplicity
    nz_row, nz_col = np.nonzero(~zero)
    span = int(x.max()) + 1 if x.size else 1
    pairs, mult = np.unique(nz_col.astype(np.int64) * span + x[nz_row, nz_col].astype(np.int64), return_counts=True)
    u_col, u_x = pairs // span, (pairs % span).astype(np.float64)
    for _ in range(n_iter):
        mu, th = np.exp(log_mu), np.exp(log_th)
        m = mu * lib
        log_frac = np.log(th) - np.log(th + m)
        q = np.exp(th * log_frac)
        if zero_inflated:
            with np.errstate(invalid="ignore", divide="ignore"):
                z = np.where(zero, pi0 / (pi0 + (1 - pi0) * q), 0.0)
            z = np.nan_to_num(z)
            pi0 = np.clip(z.mean(0), 0.0, 0.99)
        else:
            z = np.zeros_like(x)
        w = 1 - z
        # Newton step in log(mu) (exact second derivative)
        g_mu = (w * (x - m) * th / (th + m)).sum(0)
        h_mu = -(w * m * th * (th + x) / (th + m) ** 2).sum(0)
        step_mu = np.clip(np.where(h_mu < 0, -g_mu / np.minimum(h_mu, -1e-300), 0.0), -2, 2)
        # Newton step in log(theta); the digamma terms vanish at x = 0, so they are summed over
        # the non-zero entries only
        th_u = th[u_col]
        dig = np.bincount(u_col, weights=mult * (digamma(u_x + th_u) - digamma(th_u)), minlength=x.shape[1])
        tri = np.bincount(u_col, weights=mult * (polygamma(1, u_x + th_u) - polygamma(1, th_u)),
                          minlength=x.shape[1])
        g_th = dig + (w * (log_frac + 1 - (x + th) / (th + m))).sum(0)
        h_th = tri + (w * (1 / th - 2 / (th + m) + (x + th) / (th + m) ** 2)).sum(0)
        big_g, big_h = th * g_th, th**2 * h_th + th * g_th
        step_th = np.clip(np.where(big_h < 0, -big_g / np.minimum(big_h, -1e-300), np.sign(big_g) * 0.5), -2, 2)
        log_mu = log_mu + step_mu
        new_th = np.clip(log_th + step_th, math.log(1e-3), math.log(1e6))
        moved = max(np.abs(step_mu).max(initial=0), np.abs(new_th - log_th).max(initial=0))
        log_th = new_th
        if moved < 1e-7:
            break
    mu, th = np.exp(log_mu), np.exp(log_th)
    loglik = _zinb_logpmf(x, mu * lib, th, pi0).sum(0)
    return mu, th, pi0, loglik


def _fit_zinb(counts: np.ndarray, lib: np.ndarray, *, n_iter: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Maximum-likelihood (zero-inflated) negative binomial per gene, library-size offsets.

    Model: :math:`x_{ij} \sim \pi_{0j}\,\delta_0 + (1-\pi_{0j})\,\mathrm{NB}(\mu_j l_i, \theta_j)`
    (:math:`\mathrm{Var} = m + m^2/\theta`, :math:`\theta \in [10^{-3}, 10^6]`), by EM over the
    structural zeros with exact Newton steps for :math:`\log\mu` and :math:`\log\theta`,
    vectorised over genes. Zero inflation is fitted where the NB fit leaves more zeros than
    expected (by two Poisson standard deviations) and kept only when it raises the log
    likelihood by more than :math:`\chi^2_{1,0.95}/2` (sparse genes cannot tell zero inflation
    from over-dispersion). Returns ``(mu, theta, pi0)``; a gene never detected gets
    ``mu = 0, theta = inf, pi0 = 0`` (the caller flags it).
    """
    counts = np.asarray(counts, dtype=np.float64)
    lib = np.asarray(lib, dtype=np.float64)
    n, t = counts.shape
    mu_out, theta_out, pi0_out = np.zeros(t), np.full(t, np.inf), np.zeros(t)
    seen = counts.sum(0) > 0
    if not seen.any() or n < 2:
        return mu_out, theta_out, pi0_out
    x = counts[:, seen]
    zero = x == 0
    lcol = lib[:, None]
    rate = x.sum(0) / max(lib.sum(), 1e-300)
    m = rate * lcol
    excess = ((x - m) ** 2 - m).sum(0) / np.maximum((m**2).sum(0), 1e-300)
    theta0 = 1.0 / np.clip(excess, 1e-3, 1e3)
    nb = _nb_em(x, lcol, zero, rate, theta0, np.zeros(x.shape[1]), zero_inflated=False, n_iter=n_iter)
    mu_out[seen], theta_out[seen] = nb[0], nb[1]
    # zero inflation is only worth fitting where the NB fit leaves excess zeros
    m = nb[0] * lcol
    expected_zeros = np.exp(nb[1] * (np.log(nb[1]) - np.log(nb[1] + m))).sum(0)
    excess = zero.sum(0) - expected_zeros > 2 * np.sqrt(np.maximum(expected_zeros, 1.0))
    if excess.any():
        cols = np.flatnonzero(excess)
        zi = _nb_em(x[:, cols], lcol, zero[:, cols], nb[0][cols], nb[1][cols], np.full(len(cols), 0.05),
                    zero_inflated=True, n_iter=n_iter)
        use_zi = zi[3] - nb[3][cols] > 3.841458820694124 / 2
        idx = np.flatnonzero(seen)[cols[use_zi]]
        mu_out[idx], theta_out[idx], pi0_out[idx] = zi[0][use_zi], zi[1][use_zi], zi[2][use_zi]
    return mu_out, theta_out, pi0_out


# =========================================================================== shrinkage helper


def _shrink_vector(effect: np.ndarray, se: np.ndarray, *, mixture: str = "halfuniform") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Adaptive shrinkage of one vector (posterior mean, sd, lfsr); NaN where the input is NaN.

    With fewer than 5 finite values ash cannot learn a prior: the raw values are returned with
    ``lfsr = Φ(-|z|)``.
    """
    from ..effects.ash import ash

    effect, se = np.asarray(effect, dtype=np.float64), np.asarray(se, dtype=np.float64)
    pm, psd, lfsr = np.full(effect.shape, np.nan), np.full(effect.shape, np.nan), np.full(effect.shape, np.nan)
    ok = np.isfinite(effect) & np.isfinite(se) & (se > 0)
    if ok.sum() >= 5:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ShrinkpertWarning)
            fit = ash(effect[ok], se[ok], mixture=mixture)
        pm[ok], psd[ok], lfsr[ok] = fit.posterior_mean, fit.posterior_sd, fit.lfsr
    elif ok.any():
        pm[ok], psd[ok] = effect[ok], se[ok]
        lfsr[ok] = ndtr(-np.abs(effect[ok] / se[ok]))
    return pm, psd, lfsr
