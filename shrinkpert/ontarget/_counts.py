r"""Count-model machinery shared by :mod:`~shrinkpert.ontarget.knockdown` and :mod:`~shrinkpert.ontarget.escape` (private).

* :func:`_resolve`: the design of the target-gene problem (perturbations, guides, target columns);
* :func:`_scan`: one pass over the matrix keeping only the (cell, gene) entries asked for, plus
  row totals and raw group sums;
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
from .._validate import validate
from ..data.read import open_matrix
from ..errors import CountsError, InputError, MissingKeyError, ShrinkpertWarning

log = logging.getLogger("shrinkpert")

_DENSE_MAP_LIMIT = 1 << 25  # (groups x genes) slots of the dense lookup used by _scan
_BLOCK_VALUES = 1 << 20  # stored values per block read by _scan


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


def _resolve(
    adata: Any,
    *,
    perturbation_key: str,
    control: str,
    guide_key: str | None,
    target_key: str | None,
    targets: Mapping[str, str] | None,
    perturbations: Sequence[str] | None,
) -> tuple[_Design, pd.DataFrame]:
    """Encode cells, perturbations, targets and guides; validate names (no data read)."""
    data = validate(adata, perturbation_key=perturbation_key, control=control)  # the one boundary
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
                   target, tindex, guides, guide_codes, guide_pert), obs


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


# =========================================================================== the extraction pass


class _Scan(NamedTuple):
    """What one pass over the matrix returned."""

    totals: np.ndarray  # per-cell row totals (float64)
    rows: np.ndarray  # extracted entries: cell index
    cols: np.ndarray  # gene index
    values: np.ndarray  # raw value (float64)
    group_sums: np.ndarray | None  # (n_groups, n_genes) sums of raw values, when asked
    group_sq: np.ndarray | None  # (n_groups, n_genes) sums of squared raw values, when asked


def _block_rows(source, chunk_size: int | None) -> int:
    """Rows (or genes, for column storage) per block: ``chunk_size`` or ~2**20 stored values."""
    if chunk_size is not None:
        return int(chunk_size)
    major = source.shape[0] if source.by_rows else source.shape[1]
    per_line = max(source.nnz / max(major, 1), 1.0)
    return int(max(1, min(major, _BLOCK_VALUES // per_line)))


def _scan(
    adata: Any,
    layer: str | None,
    *,
    row_codes: np.ndarray,
    pairs: np.ndarray,
    n_genes: int,
    group_codes: np.ndarray | None = None,
    n_groups: int = 0,
    chunk_size: int | None = None,
) -> _Scan:
    """One pass: row totals, the wanted entries and (optionally) raw group sums and squares.

    Parameters
    ----------
    row_codes
        Per cell, the code under which its wanted genes are listed in ``pairs`` (-1: extract
        nothing from this cell).
    pairs
        Sorted unique int64 keys ``code * n_genes + gene`` of the wanted (code, gene) entries.
    group_codes, n_groups
        When given, also sum every gene and its square over the cells of each group (-1: no group).
    chunk_size
        Rows per block (genes for column storage); default about 2**20 stored values, so the
        working memory stays a few tens of MB whatever the matrix size.

    Raises
    ------
    InputError
        Shape mismatch or NaN/inf values.
    CountsError
        Negative or non-integer values.
    """
    from ._escape_kernels import scan_block

    row_codes = np.ascontiguousarray(row_codes, dtype=np.int64)
    n_codes = int(row_codes.max()) + 1 if row_codes.size and row_codes.max() >= 0 else 0
    use_map = 0 < n_codes * n_genes <= _DENSE_MAP_LIMIT
    slot_map = np.zeros((n_codes if use_map else 0, n_genes if use_map else 0), dtype=np.bool_)
    keys = np.ascontiguousarray(pairs, dtype=np.int64)
    if use_map and len(keys):
        slot_map[keys // n_genes, keys % n_genes] = True
    accumulate = group_codes is not None
    groups = np.ascontiguousarray(group_codes if accumulate else np.full(len(row_codes), -1), dtype=np.int64)
    sums = np.zeros((n_groups if accumulate else 0, n_genes))
    squares = np.zeros_like(sums)
    flags = np.zeros(2, dtype=np.int64)
    out_rows, out_cols, out_vals = [], [], []
    with open_matrix(adata, layer) as source:
        n_cells = source.shape[0]
        if source.shape[1] != n_genes or row_codes.shape != (n_cells,):
            raise InputError(f"{source.label} has shape {source.shape}, which does not match obs × var.")
        totals = np.zeros(n_cells)
        for block in source.blocks(_block_rows(source, chunk_size)):
            values = block.values
            csr = values.tocsr() if sp.issparse(values) else sp.csr_matrix(np.asarray(values))
            size = csr.nnz
            rows_b = np.empty(size, dtype=np.int64)
            cols_b = np.empty(size, dtype=np.int64)
            vals_b = np.empty(size, dtype=np.float64)
            n_out = scan_block(csr.data, csr.indices, csr.indptr, block.rows.start, block.cols.start, row_codes,
                               groups, use_map, slot_map, keys, n_genes, totals, sums, squares, rows_b, cols_b,
                               vals_b, flags)
            if flags[0]:
                raise InputError(f"{source.label} contains NaN or infinite values; remove or impute them first.")
            if flags[1]:
                raise CountsError(
                    f"{source.label} must hold raw counts (non-negative integers) for target-gene metrics. "
                    "Pass the raw-count layer with layer=..."
                )
            if n_out:
                out_rows.append(rows_b[:n_out].copy())
                out_cols.append(cols_b[:n_out].copy())
                out_vals.append(vals_b[:n_out].copy())
    cat = (lambda parts, dt: np.concatenate(parts).astype(dt, copy=False) if parts else np.zeros(0, dtype=dt))
    return _Scan(totals, cat(out_rows, np.int64), cat(out_cols, np.int64), cat(out_vals, np.float64),
                 sums if accumulate else None, squares if accumulate else None)


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
