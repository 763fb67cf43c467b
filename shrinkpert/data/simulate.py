r"""Seeded negative-binomial Perturb-seq simulator with known truth.

Generative model
----------------
Genes :math:`g = 1..G` (``GENE00001``, ...), cells :math:`c`, batches :math:`b(c)`, guides
:math:`k(c)` belonging to perturbation :math:`p(c)` (``"non-targeting"`` for controls), whose
target gene is :math:`t_p`.  :math:`\varepsilon_g, \eta_g, \zeta_c` are independent standard
normals; every other draw below is independent too.

* Baseline mean (UMI per cell at median depth) and NB dispersion of each gene:

  .. math:: \mu_g = \mu_0 e^{\sigma_\mu \varepsilon_g}, \qquad
            \phi_g = \phi_0 e^{\sigma_\phi \eta_g}

  (``mean_expression`` :math:`\mu_0`, ``expression_sd`` :math:`\sigma_\mu`, ``dispersion``
  :math:`\phi_0`, ``dispersion_sd`` :math:`\sigma_\phi`).
* Library factor (median 1): :math:`s_c = e^{\sigma_s \zeta_c}` (``library_sd``).
* Batch effect: :math:`\gamma_{bg} \sim N(0, \sigma_b^2)` (``batch_sd``).
* Systematic shift, shared by every perturbed cell (escapers too, never controls), on a random
  set :math:`D` of ``round(systematic_shift_fraction * G)`` genes:
  :math:`\delta_g \sim N(0, \sigma_\delta^2)` for :math:`g \in D`, else 0 (``systematic_shift``).
* Guide knockdown, the remaining fraction of the target's mean:
  :math:`r_k = 0.05 + 0.45\,\mathrm{Beta}(2, 3)`, or :math:`r_k \sim U(0.6, 0.9)` for a weak
  guide (probability ``weak_guide_fraction``); knockdown depth :math:`d_k = 1 - r_k`.
  Control guides have :math:`r_k = 1`.
* Cells: exactly ``round(control_fraction * n_cells)`` controls, in random order.  Guide
  representation :math:`w_k \sim \mathrm{Gamma}(5, 1/5)`; a control cell draws a control guide and
  a perturbed cell a targeting guide, with probability :math:`\propto w_k`;
  :math:`\pi_k = w_k / \sum_{k' \in p} w_{k'}` is the guide's share of perturbation :math:`p`.
  Batches are drawn uniformly.
* Downstream effects: a set :math:`S_p \not\ni t_p` of :math:`|S_p|` genes, with
  :math:`|S_p| = 0` with probability 0.1 and otherwise geometric on :math:`\{0, 1, ...\}` with mean
  ``n_affected_genes / 0.9``; :math:`z_{pg} \sim N(0, \tau^2)` on :math:`S_p` (``effect_sd``),
  the log effect of a complete knockout.  A cell with guide :math:`k` gets :math:`d_k z_{pg}`.
* Escape: :math:`e_p \sim \mathrm{Beta}(\rho\kappa, (1-\rho)\kappa)` (``escape_rate`` :math:`\rho`,
  ``escape_concentration`` :math:`\kappa`); a perturbed cell escapes, :math:`E_c = 1`, with
  probability :math:`e_p`: no knockdown and no downstream effect, but the systematic shift.

The mean and the count of gene :math:`g` in cell :math:`c` (:math:`P_c = 1` for perturbed cells):

.. math::
    \log m_{cg} = \log s_c + \log \mu_g + \gamma_{b(c)g} + P_c \delta_g
        + P_c (1 - E_c) \left( d_{k(c)} z_{p(c)g} + [g = t_{p(c)}] \log r_{k(c)} \right),

.. math::
    X_{cg} \sim \mathrm{NB}(m_{cg}, \phi_g), \quad
    P(X = 0) = (1 + \phi_g m_{cg})^{-1/\phi_g}, \quad
    \mathrm{Var}\,X = m_{cg} + \phi_g m_{cg}^2 .

Stored truth (``uns["simulation"]["effects"]``, perturbations × genes) is the expected log
effect in a non-escaping cell of the perturbation, without the systematic shift:

.. math::
    \beta_{pg} = \bar d_p z_{pg} \;(g \ne t_p), \qquad
    \beta_{p t_p} = \sum_{k \in p} \pi_k \log r_k, \qquad \bar d_p = \sum_{k \in p} \pi_k d_k .

The pseudobulk mean ratio of perturbed over control cells (same batch mix) is therefore
:math:`e^{\delta_g} \left(e_p + (1 - e_p) \sum_k \pi_k e^{d_k z_{pg}}\right)` off target.

Sampling is exact: cells are generated in fixed blocks (the block size depends only on
``n_genes``), each block from its own ``SeedSequence(seed, spawn_key=(5, block))`` stream.  A
count is drawn by inversion: one uniform :math:`u` per entry decides :math:`X = 0` iff
:math:`u < P(X=0)`; non-zero entries continue the inversion with
:math:`P(k) / P(k-1) = \frac{k - 1 + \theta}{k} \frac{\phi m}{1 + \phi m}` (:math:`\theta = 1/\phi`),
except entries with :math:`m > 4`, drawn from the zero-truncated NB by rejection.  Results are
therefore identical whatever ``chunk_size``, ``n_threads`` or in memory versus on disk.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import numbers
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._vocab import CONTROL
from ..errors import InputError

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["simulate"]

logger = logging.getLogger("shrinkpert")

MODEL_VERSION = 1  # bump whenever the same arguments would give different values
_BLOCK_ENTRIES = 1 << 20  # cells per block = largest power of two with <= this many entries
_MAX_BLOCK_CELLS = 4096
_HIGH_MEAN = 4.0  # non-zero entries with a larger mean use rejection instead of inversion
_NULL_FRACTION = 0.1  # perturbations with no downstream effect, on top of the geometric zeros
_GUIDE_SHAPE = 5.0  # gamma shape of guide representation (coefficient of variation 0.45)
_H5_CHUNK = 1 << 18  # HDF5 chunk (elements) of X/data and X/indices
_SCRATCH = threading.local()
_DTYPES = ("float32", "float64", "int32", "int64")
# independent random streams: SeedSequence(seed, spawn_key=(stream, ...))
_GENES, _BATCH, _SHIFT, _PERTURBATIONS, _CELLS, _COUNTS, _MODULES = range(7)


class _Model(NamedTuple):
    """Everything but the counts: per-gene, per-guide and per-cell arrays."""

    entropy: int
    n_genes: int
    block: int
    phi_mean: np.ndarray  # (batches, genes): phi_g * mu_g * exp(gamma_bg)
    theta: np.ndarray  # (genes,)
    shift_genes: np.ndarray
    shift_factor: np.ndarray
    target: np.ndarray  # (perturbations,) gene index
    knockdown: np.ndarray  # (guides,) remaining fraction r_k
    depth: np.ndarray  # (guides,) d_k = 1 - r_k
    effect_indptr: np.ndarray  # CSR over perturbations of the downstream genes
    effect_genes: np.ndarray
    effect_z: np.ndarray  # log effect at complete knockout
    size: np.ndarray  # (cells,) s_c
    batch: np.ndarray  # (cells,) batch code
    guide: np.ndarray  # (cells,) guide code
    perturbation: np.ndarray  # (cells,) perturbation code, -1 for controls
    escaped: np.ndarray  # (cells,) bool


class _Rows(NamedTuple):
    """A run of consecutive rows in CSR form (local indptr) with their totals."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    n_counts: np.ndarray

    def take(self, start: int, stop: int) -> _Rows:
        a, b = self.indptr[start], self.indptr[stop]
        return _Rows(self.data[a:b], self.indices[a:b], self.indptr[start : stop + 1] - a,
                     self.n_counts[start:stop])


def _concat(parts: list[_Rows]) -> _Rows:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [p.indptr[-1] for p in parts[:-1]])
    indptr = np.concatenate([parts[0].indptr[:1]] + [p.indptr[1:] + o for p, o in zip(parts, offsets)])
    return _Rows(np.concatenate([p.data for p in parts]), np.concatenate([p.indices for p in parts]),
                 indptr, np.concatenate([p.n_counts for p in parts]))


def _stream(entropy: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=key))


def _check_int(name: str, value, low: int, high: int | None = None, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (
        high is not None and value > high
    ):
        upper = "" if high is None else f" and <= {high}"
        raise InputError(f"{name} must be an integer >= {low}{upper}{hint}; got {value!r}.")
    return int(value)


def _check_float(name: str, value, low: float, high: float = np.inf, *, open_low=False,
                 open_high=False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise InputError(f"{name} must be a finite number in {interval}; got {value!r}.")
    return float(value)


def _resolve_seed(seed) -> int:
    if isinstance(seed, np.random.Generator):
        return int(seed.integers(0, np.iinfo(np.int64).max))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise InputError(f"seed must be an integer in [0, 2**63) or a numpy.random.Generator; got {seed!r}.")
    return int(seed)


def _block_cells(n_genes: int) -> int:
    cells = 1 << max(0, int(np.floor(np.log2(_BLOCK_ENTRIES / n_genes))))
    return min(cells, _MAX_BLOCK_CELLS)


def _build(entropy, n_cells, n_genes, n_perturbations, p, modules: int = 0) -> tuple[_Model, dict]:
    """Draw all gene, perturbation, guide and cell parameters; return the model and the truth."""
    rng = _stream(entropy, _GENES)
    mu = p["mean_expression"] * np.exp(p["expression_sd"] * rng.standard_normal(n_genes))
    phi = p["dispersion"] * np.exp(p["dispersion_sd"] * rng.standard_normal(n_genes))
    gamma = p["batch_sd"] * _stream(entropy, _BATCH).standard_normal((p["n_batches"], n_genes))

    rng = _stream(entropy, _SHIFT)
    n_shift = round(p["systematic_shift_fraction"] * n_genes)
    shift_genes = np.sort(rng.choice(n_genes, n_shift, replace=False))
    shift = np.zeros(n_genes)
    shift[shift_genes] = p["systematic_shift"] * rng.standard_normal(shift_genes.size)

    rng = _stream(entropy, _PERTURBATIONS)
    n_guides = p["guides_per_perturbation"]
    eligible = np.argsort(-mu, kind="stable")[: (n_genes + 1) // 2]  # the better-expressed half
    target = np.sort(rng.choice(eligible, n_perturbations, replace=False))
    n_targeting = n_perturbations * n_guides
    weak = rng.random(n_targeting) < p["weak_guide_fraction"]
    r = np.where(weak, rng.uniform(0.6, 0.9, n_targeting), 0.05 + 0.45 * rng.beta(2.0, 3.0, n_targeting))
    weight = rng.gamma(_GUIDE_SHAPE, 1.0 / _GUIDE_SHAPE, n_guides + n_targeting)  # controls first
    rho, kappa = p["escape_rate"], p["escape_concentration"]
    escape_p = np.zeros(n_perturbations)
    if rho > 0:
        escape_p = rng.beta(rho * kappa, (1 - rho) * kappa, n_perturbations)
    mean_size = p["n_affected_genes"] / (1 - _NULL_FRACTION)
    sizes = rng.negative_binomial(1, 1 / (1 + mean_size), n_perturbations)
    sizes[rng.random(n_perturbations) < _NULL_FRACTION] = 0
    sizes = np.minimum(sizes, n_genes - 1)
    genes, zs = [], []
    for t, size in zip(target, sizes):
        chosen = rng.choice(n_genes - 1, size, replace=False)
        chosen = np.sort(chosen + (chosen >= t))  # skip the target itself
        genes.append(chosen)
        zs.append(p["effect_sd"] * rng.standard_normal(size))
    module = None
    if modules:
        module, genes, zs = _add_modules(entropy, modules, target, genes, zs, n_genes, p)
        sizes = np.array([g.size for g in genes], dtype=np.int64)
    effect_indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    effect_genes = np.concatenate(genes).astype(np.int64)
    effect_z = np.concatenate(zs)

    guide_perturbation = np.repeat(np.arange(-1, n_perturbations), n_guides)  # -1: control guides
    knockdown = np.concatenate([np.ones(n_guides), r])
    share = weight / np.bincount(guide_perturbation + 1, weights=weight)[guide_perturbation + 1]
    owner, share_t = guide_perturbation[n_guides:], share[n_guides:]
    mean_depth = np.bincount(owner, weights=share_t * (1 - r), minlength=n_perturbations)
    effects = np.zeros((n_perturbations, n_genes))
    rows = np.repeat(np.arange(n_perturbations), sizes)
    effects[rows, effect_genes] = mean_depth[rows] * effect_z
    effects[np.arange(n_perturbations), target] = np.bincount(owner, weights=share_t * np.log(r),
                                                              minlength=n_perturbations)

    rng = _stream(entropy, _CELLS)
    n_control = round(p["control_fraction"] * n_cells)
    w_c, w_t = weight[:n_guides], weight[n_guides:]
    guide = np.concatenate([rng.choice(n_guides, n_control, p=w_c / w_c.sum()),
                            n_guides + rng.choice(n_targeting, n_cells - n_control, p=w_t / w_t.sum())])
    guide = rng.permutation(guide)
    pert = guide_perturbation[guide]
    escaped = (pert >= 0) & (rng.random(n_cells) < escape_p[np.maximum(pert, 0)])
    batch = rng.integers(0, p["n_batches"], n_cells)
    size = np.exp(p["library_sd"] * rng.standard_normal(n_cells))

    model = _Model(entropy, n_genes, _block_cells(n_genes), phi * mu * np.exp(gamma), 1 / phi,
                   shift_genes, np.exp(shift[shift_genes]), target, knockdown,
                   1 - knockdown, effect_indptr, effect_genes, effect_z, size, batch, guide, pert, escaped)
    truth = dict(effects=effects, systematic_shift=shift, gene_mean=mu, gene_dispersion=phi,
                 batch_effects=gamma, escape_rate=escape_p, target_index=target, guide_knockdown=knockdown,
                 guide_weight=share, guide_perturbation_index=guide_perturbation)
    if module is not None:
        truth["module"] = module
    return model, truth


def _add_modules(entropy, modules, target, genes, zs, n_genes, p):
    """Give perturbation ``k`` the programme of module ``k % modules`` on top of its own effects.

    Each programme is ``round(n_affected_genes)`` genes (none of them a member's target) with
    log effects ``effect_sd * N(0, 1)``, drawn from its own stream, so ``modules=0`` leaves every
    other draw unchanged. Where a programme gene is also one of the perturbation's own, the two
    log effects add.
    """
    rng = _stream(entropy, _MODULES)
    module = np.arange(target.size) % modules
    size = min(int(round(p["n_affected_genes"])), n_genes - 1)
    out_genes, out_z = list(genes), list(zs)
    for m in range(modules):
        members = np.flatnonzero(module == m)
        allowed = np.setdiff1d(np.arange(n_genes), target[members])
        prog = np.sort(rng.choice(allowed, min(size, allowed.size), replace=False))
        prog_z = p["effect_sd"] * rng.standard_normal(prog.size)
        for k in members:
            merged = np.union1d(out_genes[k], prog)
            z = np.zeros(merged.size)
            z[np.searchsorted(merged, out_genes[k])] += out_z[k]
            z[np.searchsorted(merged, prog)] += prog_z
            out_genes[k], out_z[k] = merged, z
    return module, out_genes, out_z


def _truncated_nb(rng: np.random.Generator, mean: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """NB(mean, 1/theta) conditional on >= 1, by rejection (used for means > ``_HIGH_MEAN``)."""
    prob = theta / (theta + mean)
    x = rng.negative_binomial(theta, prob)
    redo = np.flatnonzero(x == 0)
    while redo.size:
        x[redo] = rng.negative_binomial(theta[redo], prob[redo])
        redo = redo[x[redo] == 0]
    return x


def _invert_tail(u, p0, q, theta) -> np.ndarray:
    """Smallest k >= 1 with u < CDF(k), given u >= P(0); vectorised over a shrinking active set."""
    out = np.ones(u.size, dtype=np.int64)
    pk = p0 * theta * q  # P(1)
    cdf = p0 + pk
    live = np.flatnonzero(u >= cdf)
    u, q, theta, pk, cdf = u[live], q[live], theta[live], pk[live], cdf[live]
    k = 1
    while live.size:
        k += 1
        pk *= (theta + (k - 1)) / k * q
        cdf += pk
        out[live] = k
        # stop where u is reached, or where the remaining tail is below rounding (pk ~ eps)
        keep = np.flatnonzero((u >= cdf) & (pk > 1e-16 * cdf))
        live, u, q, theta, pk, cdf = live[keep], u[keep], q[keep], theta[keep], pk[keep], cdf[keep]
    return out


def _scratch(n_rows: int, n_genes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three float64 (n_rows, n_genes) work arrays, reused by the calling thread (no page faults)."""
    bufs = getattr(_SCRATCH, "bufs", None)
    if bufs is None or bufs[0].shape[1] != n_genes or bufs[0].shape[0] < n_rows:
        bufs = _SCRATCH.bufs = tuple(np.empty((n_rows, n_genes)) for _ in range(3))
    return tuple(b[:n_rows] for b in bufs)


def _sample_nb(rng: np.random.Generator, phi_mean: np.ndarray, theta: np.ndarray, u=None, p0=None):
    """Exact NB draws for a (cells, genes) block given phi_g * m_cg; returns (flat non-zeros, counts).

    ``phi_mean`` is overwritten.  ``theta`` (genes,) is 1 / phi_g.  ``u`` and ``p0`` are optional
    work arrays of the same shape.
    """
    n_genes = phi_mean.shape[1]
    u = rng.random(phi_mean.shape, out=u)
    big_l = np.log1p(phi_mean, out=phi_mean)  # L = log(1 + phi m)
    p0 = np.multiply(big_l, -theta, out=p0)
    np.exp(p0, out=p0)  # P(X = 0) = (1 + phi m)^(-theta)
    nz = np.flatnonzero(np.greater_equal(u, p0))
    big_l = big_l.ravel()[nz]
    th = theta[nz % n_genes]
    mean = np.expm1(big_l) * th
    values = np.empty(nz.size, dtype=np.int64)
    high = mean > _HIGH_MEAN
    low = ~high
    l_low, th_low = big_l[low], th[low]
    values[low] = _invert_tail(u.ravel()[nz[low]], np.exp(-th_low * l_low), -np.expm1(-l_low), th_low)
    values[high] = _truncated_nb(rng, mean[high], th[high])
    return nz, values


def _counts_block(model: _Model, index: int, dtype: np.dtype) -> _Rows:
    """Counts of the cells of block ``index`` as CSR rows (exact NB sampling, see module notes)."""
    start = index * model.block
    stop = min(start + model.block, model.size.size)
    rng = _stream(model.entropy, _COUNTS, index)
    n_genes = model.n_genes
    pert = model.perturbation[start:stop]
    # phi_g * m_cg, built multiplicatively
    pm, u, p0 = _scratch(stop - start, n_genes)
    np.take(model.phi_mean, model.batch[start:stop], axis=0, out=pm, mode="clip")
    pm *= model.size[start:stop, None]
    perturbed = np.flatnonzero(pert >= 0)
    if perturbed.size and model.shift_genes.size:
        pm[np.ix_(perturbed, model.shift_genes)] *= model.shift_factor
    active = np.flatnonzero((pert >= 0) & ~model.escaped[start:stop])
    if active.size:
        g, a_pert = model.guide[start:stop][active], pert[active]
        pm[active, model.target[a_pert]] *= model.knockdown[g]
        lo, hi = model.effect_indptr[a_pert], model.effect_indptr[a_pert + 1]
        lens = hi - lo
        total = int(lens.sum())
        if total:
            offsets = np.arange(total) + np.repeat(lo - (np.cumsum(lens) - lens), lens)
            pm[np.repeat(active, lens), model.effect_genes[offsets]] *= np.exp(
                model.effect_z[offsets] * np.repeat(model.depth[g], lens))

    nz, values = _sample_nb(rng, pm, model.theta, u, p0)
    cols = nz % n_genes
    indptr = np.searchsorted(nz, np.arange(stop - start + 1, dtype=np.int64) * n_genes).astype(np.int64)
    cumulative = np.concatenate([[0], np.cumsum(values)])
    return _Rows(values.astype(dtype), cols.astype(np.int32 if n_genes < 2**31 else np.int64), indptr,
                 cumulative[indptr[1:]] - cumulative[indptr[:-1]])


def _iter_rows(model: _Model, dtype, n_threads: int, chunk_size: int | None):
    """Yield consecutive row runs of ``chunk_size`` cells (or one block each when None)."""
    n_blocks = -(-model.size.size // model.block)
    pending: collections.deque = collections.deque()
    buffer: list[_Rows] = []
    n_buffered = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=n_threads) as pool:
        try:
            for b in range(min(n_blocks, 2 * n_threads)):
                pending.append(pool.submit(_counts_block, model, b, dtype))
            next_block = len(pending)
            while pending:
                rows = pending.popleft().result()
                if next_block < n_blocks:
                    pending.append(pool.submit(_counts_block, model, next_block, dtype))
                    next_block += 1
                if chunk_size is None:
                    yield rows
                    continue
                buffer.append(rows)
                n_buffered += rows.n_counts.size
                while n_buffered >= chunk_size or (not pending and n_buffered):
                    merged = _concat(buffer)
                    n_out = min(chunk_size, n_buffered)
                    yield merged.take(0, n_out)
                    n_buffered -= n_out
                    buffer = [merged.take(n_out, merged.n_counts.size)] if n_buffered else []
        finally:
            for future in pending:
                future.cancel()


def simulate(
    n_cells: int = 2000,
    n_genes: int = 500,
    n_perturbations: int = 20,
    *,
    seed: int | np.random.Generator = 0,
    path: str | os.PathLike | None = None,
    control_fraction: float = 0.1,
    guides_per_perturbation: int = 3,
    n_batches: int = 2,
    escape_rate: float = 0.2,
    escape_concentration: float = 10.0,
    systematic_shift: float = 0.25,
    systematic_shift_fraction: float = 0.05,
    effect_sd: float = 0.5,
    n_affected_genes: float = 30.0,
    modules: int = 0,
    weak_guide_fraction: float = 0.15,
    mean_expression: float = 0.15,
    expression_sd: float = 1.5,
    dispersion: float = 0.3,
    dispersion_sd: float = 0.5,
    library_sd: float = 0.35,
    batch_sd: float = 0.1,
    dtype: str = "float32",
    chunk_size: int | None = None,
    n_threads: int | None = None,
    progress: bool = False,
    force: bool = False,
) -> ad.AnnData:
    r"""Simulate a negative-binomial Perturb-seq screen with known truth.

    The generative model, with every formula, is in the module docstring
    (:mod:`shrinkpert.data.simulate`).

    Parameters
    ----------
    n_cells : int, default=2000
        Number of cells (>= 2).
    n_genes : int, default=500
        Number of genes (>= 2), named ``GENE00001``, ``GENE00002``, ...
    n_perturbations : int, default=20
        Number of targeting perturbations, 1 <= n <= ``(n_genes + 1) // 2``; each is named after its
        target gene, drawn without replacement from the better-expressed half of the genes.
    seed : int or numpy.random.Generator, default=0
        Integer in [0, 2**63), or a Generator from which one such integer is drawn.
    path : str or os.PathLike, optional
        Write an ``.h5ad`` here, block by block (memory stays bounded), and return it opened
        with ``backed="r"``. ``None`` builds the AnnData in memory.
    control_fraction : float, default=0.1
        Fraction of cells labelled ``"non-targeting"``, in (0, 1); the count is rounded and must
        leave at least one control and one perturbed cell.
    guides_per_perturbation : int, default=3
        Guides per perturbation (>= 1), named ``"<TARGET>_g1"``, ...; the controls get as many
        ``"non-targeting_g1"``, ... guides.
    n_batches : int, default=2
        Number of batches (>= 1); cells are assigned uniformly at random. ``obs["replicate"]``
        (``rep1``, ...) equals the batch.
    escape_rate : float, default=0.2
        Mean :math:`\rho` in [0, 1) of the per-perturbation escape fraction
        :math:`e_p \sim \mathrm{Beta}(\rho\kappa, (1-\rho)\kappa)`; 0 means no escapers.
    escape_concentration : float, default=10.0
        Concentration :math:`\kappa > 0` of that Beta distribution (larger: less spread).
    systematic_shift : float, default=0.25
        Standard deviation :math:`\sigma_\delta \ge 0` of the log shift shared by all perturbed
        cells (the "mode collapse" confounder).
    systematic_shift_fraction : float, default=0.05
        Fraction of genes, in [0, 1], carrying the systematic shift.
    effect_sd : float, default=0.5
        Standard deviation :math:`\tau \ge 0` of the downstream log effects at complete knockout.
    n_affected_genes : float, default=30.0
        Mean number (>= 0) of downstream genes per perturbation (zero-inflated geometric).
    modules : int, default=0
        Number of shared programmes (0 <= modules <= n_perturbations). Perturbation ``k`` (in
        target order) joins module ``k % modules`` and gets its programme — ``round(n_affected_genes)``
        genes with log effects :math:`N(0, \tau^2)`, scaled by the knockdown depth like its own
        effects — on top of its own; ``uns["simulation"]["module"]`` records the groups. With 0
        (default) the output is unchanged.
    weak_guide_fraction : float, default=0.15
        Probability, in [0, 1], that a guide is weak (remaining fraction U(0.6, 0.9) instead of
        0.05 + 0.45 Beta(2, 3)).
    mean_expression : float, default=0.15
        Median :math:`\mu_0 > 0` of the baseline gene means (UMI per cell at median depth).
    expression_sd : float, default=1.5
        Log-scale spread :math:`\sigma_\mu \ge 0` of the gene means (log-normal, long right tail).
    dispersion : float, default=0.3
        Median NB dispersion :math:`\phi_0 > 0` (:math:`\mathrm{Var} = m + \phi m^2`).
    dispersion_sd : float, default=0.5
        Log-scale spread :math:`\sigma_\phi \ge 0` of the dispersions.
    library_sd : float, default=0.35
        Log-scale spread :math:`\sigma_s \ge 0` of the per-cell library factor (median 1).
    batch_sd : float, default=0.1
        Standard deviation :math:`\sigma_b \ge 0` of the per-batch, per-gene log effects.
    dtype : {"float32", "float64", "int32", "int64"}, default="float32"
        Data type of the counts in ``X`` (values are integers whatever the type).
    chunk_size : int, optional
        Cells written per step (>= 1); ``None`` writes one internal block at a time. Affects memory
        and speed only, never the values.
    n_threads : int, optional
        Threads generating blocks in parallel (>= 1); ``None`` uses Numba's thread count. Never
        changes the values.
    progress : bool, default=False
        Show a tqdm progress bar over cells.
    force : bool, default=False
        Overwrite ``path`` if it exists.

    Returns
    -------
    anndata.AnnData
        ``n_cells × n_genes`` raw counts in CSR ``X``. ``obs``: ``perturbation``, ``guide``,
        ``batch``, ``replicate`` (categorical), ``escaped`` (bool), ``n_counts`` (int64 total UMI).
        ``var``: ``is_perturbation_target`` (bool, as in the bundled data). ``uns["simulation"]``: ``effects`` (perturbations × genes
        :math:`\beta_{pg}`), ``perturbations``, ``genes``, ``systematic_shift`` (genes),
        ``guides``, ``guide_perturbation``, ``guide_knockdown`` (:math:`r_k`, 1 for controls),
        ``guide_weight`` (:math:`\pi_k`), ``escape_rate`` (:math:`e_p`), ``target_index``,
        ``gene_mean`` (:math:`\mu_g`), ``gene_dispersion`` (:math:`\phi_g`), ``batches``,
        ``batch_effects`` (:math:`\gamma`), ``params`` (every argument that affects the values,
        with ``seed`` as the integer used, and ``model_version``). In memory when ``path`` is None,
        otherwise backed read-only.

    Raises
    ------
    InputError
        An argument is out of range (the message names it and the allowed range), or ``path`` is
        a folder.
    OutputExistsError
        ``path`` exists and ``force`` is False.

    Notes
    -----
    The same arguments (and seed) give identical output, independent of ``chunk_size``,
    ``n_threads`` and ``path``. Blocks hold ``min(4096, 2**floor(log2(2**20 / n_genes)))`` cells
    (about 2**20 matrix entries); writing to ``path`` needs about 60 MB of working memory per
    thread plus ``obs`` and ``uns``, whatever ``n_cells``. The returned backed object keeps the
    file open; call ``adata.file.close()`` when done.

    Examples
    --------
    >>> import shrinkpert
    >>> adata = shrinkpert.datasets.simulate(n_cells=500, n_genes=200, n_perturbations=5, seed=1)
    >>> adata.shape
    (500, 200)
    >>> adata.uns["simulation"]["effects"].shape
    (5, 200)
    """
    from .._io import atomic_path
    from .._numba import resolve_threads

    n_cells = _check_int("n_cells", n_cells, 2)
    n_genes = _check_int("n_genes", n_genes, 2)
    n_perturbations = _check_int("n_perturbations", n_perturbations, 1, (n_genes + 1) // 2,
                                 " (targets come from the better-expressed half of n_genes)")
    entropy = _resolve_seed(seed)
    p = dict(
        control_fraction=_check_float("control_fraction", control_fraction, 0, 1, open_low=True,
                                      open_high=True),
        guides_per_perturbation=_check_int("guides_per_perturbation", guides_per_perturbation, 1),
        n_batches=_check_int("n_batches", n_batches, 1),
        escape_rate=_check_float("escape_rate", escape_rate, 0, 1, open_high=True),
        escape_concentration=_check_float("escape_concentration", escape_concentration, 0, open_low=True),
        systematic_shift=_check_float("systematic_shift", systematic_shift, 0),
        systematic_shift_fraction=_check_float("systematic_shift_fraction", systematic_shift_fraction, 0, 1),
        effect_sd=_check_float("effect_sd", effect_sd, 0),
        n_affected_genes=_check_float("n_affected_genes", n_affected_genes, 0),
        weak_guide_fraction=_check_float("weak_guide_fraction", weak_guide_fraction, 0, 1),
        mean_expression=_check_float("mean_expression", mean_expression, 0, open_low=True),
        expression_sd=_check_float("expression_sd", expression_sd, 0),
        dispersion=_check_float("dispersion", dispersion, 0, open_low=True),
        dispersion_sd=_check_float("dispersion_sd", dispersion_sd, 0),
        library_sd=_check_float("library_sd", library_sd, 0),
        batch_sd=_check_float("batch_sd", batch_sd, 0),
    )
    n_control = round(p["control_fraction"] * n_cells)
    if not 1 <= n_control <= n_cells - 1:
        raise InputError(
            f"control_fraction={control_fraction!r} gives {n_control} control cells out of "
            f"n_cells={n_cells}; choose it so that at least one control and one perturbed cell remain."
        )
    if dtype not in _DTYPES:
        raise InputError(f"dtype must be one of {', '.join(_DTYPES)}; got {dtype!r}.")
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size, 1)
    threads = resolve_threads(None if n_threads is None else _check_int("n_threads", n_threads, 1))
    if path is not None and Path(path).is_dir():
        raise InputError(f"path {str(path)!r} is a folder; give a file name such as 'simulated.h5ad'.")

    params = dict(n_cells=n_cells, n_genes=n_genes, n_perturbations=n_perturbations, seed=entropy,
                  seed_from_generator=isinstance(seed, np.random.Generator), **p, dtype=dtype,
                  model_version=MODEL_VERSION)
    t0 = time.perf_counter()
    modules = _check_int("modules", modules, 0, n_perturbations)
    if modules:
        params["modules"] = modules
    model, truth = _build(entropy, n_cells, n_genes, n_perturbations, p, modules)
    adata = _skeleton(model, truth, params)
    logger.info("simulate: %d cells x %d genes, %d perturbations, seed %d, %s",
                n_cells, n_genes, n_perturbations, entropy, "in memory" if path is None else f"to {path}")
    rows = _iter_rows(model, np.dtype(dtype), threads, chunk_size)

    from tqdm.auto import tqdm

    with tqdm(total=n_cells, unit="cell", desc="simulate", disable=not progress) as bar:
        if path is None:
            parts = []
            for part in rows:
                parts.append(part)
                bar.update(part.n_counts.size)
            whole = _concat(parts)
            adata.X = sp.csr_matrix((whole.data, whole.indices, whole.indptr), shape=(n_cells, n_genes))
            adata.obs["n_counts"] = whole.n_counts.astype(np.int64)
            result = adata
        else:
            with atomic_path(path, force=force) as tmp:
                _write_h5ad(tmp, adata, rows, bar)
            import anndata

            result = anndata.read_h5ad(path, backed="r")
    elapsed = time.perf_counter() - t0
    logger.info("simulate: done in %.1f s (%.0f cells/s)", elapsed, n_cells / max(elapsed, 1e-9))
    return result


def _skeleton(model: _Model, truth: dict, params: dict):
    """AnnData with obs, var and uns filled and an all-zero X."""
    import anndata

    n_cells, n_genes = model.size.size, model.n_genes
    n_guides = params["guides_per_perturbation"]
    genes = np.array([f"GENE{i + 1:05d}" for i in range(n_genes)], dtype=object)
    perts = genes[model.target]
    guides = np.array([f"{t}_g{j + 1}" for t in [CONTROL, *perts] for j in range(n_guides)], dtype=object)
    batches = np.array([f"batch{i + 1}" for i in range(params["n_batches"])], dtype=object)
    replicates = [f"rep{i + 1}" for i in range(params["n_batches"])]
    pert_labels = np.concatenate([[CONTROL], perts]).astype(object)
    width = len(str(n_cells))
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical.from_codes(model.perturbation + 1, categories=pert_labels),
            "guide": pd.Categorical.from_codes(model.guide, categories=guides),
            "batch": pd.Categorical.from_codes(model.batch, categories=batches),
            "replicate": pd.Categorical.from_codes(model.batch, categories=replicates),
            "escaped": model.escaped.copy(),
            "n_counts": np.zeros(n_cells, dtype=np.int64),
        },
        index=pd.Index([f"cell{i + 1:0{width}d}" for i in range(n_cells)], dtype=object),
    )
    is_target = np.zeros(n_genes, dtype=bool)
    is_target[model.target] = True
    var = pd.DataFrame({"is_perturbation_target": is_target}, index=pd.Index(genes, dtype=object))
    gp = truth.pop("guide_perturbation_index")
    uns = dict(perturbations=perts, genes=genes, guides=guides, batches=batches,
               guide_perturbation=pert_labels[gp + 1], **truth, params=params)
    x = sp.csr_matrix((n_cells, n_genes), dtype=np.dtype(params["dtype"]))
    return anndata.AnnData(X=x, obs=obs, var=var, uns={"simulation": uns})


def _write_h5ad(tmp: Path, adata, rows, bar) -> None:
    """Write ``adata`` (X all zero) with anndata, then stream the real X into it with h5py."""
    import h5py

    adata.write_h5ad(tmp)
    n_cells, n_genes = adata.shape
    with h5py.File(tmp, "r+") as f:
        del f["X"]
        group = f.create_group("X")
        group.attrs["encoding-type"] = "csr_matrix"
        group.attrs["encoding-version"] = "0.1.0"
        group.attrs["shape"] = np.array([n_cells, n_genes], dtype=np.int64)
        data = group.create_dataset("data", shape=(0,), maxshape=(None,), chunks=(_H5_CHUNK,),
                                    dtype=adata.X.dtype)
        indices = group.create_dataset("indices", shape=(0,), maxshape=(None,), chunks=(_H5_CHUNK,),
                                       dtype=np.int32 if n_genes < 2**31 else np.int64)
        indptr = group.create_dataset("indptr", shape=(n_cells + 1,), dtype=np.int64)
        n_counts = f["obs"]["n_counts"]
        row, nnz = 0, 0
        indptr[0] = 0
        for part in rows:
            n_rows, n_new = part.n_counts.size, part.data.size
            if n_new:
                data.resize((nnz + n_new,))
                indices.resize((nnz + n_new,))
                data[nnz:] = part.data
                indices[nnz:] = part.indices
            indptr[row + 1 : row + n_rows + 1] = part.indptr[1:] + nnz
            n_counts[row : row + n_rows] = part.n_counts
            row, nnz = row + n_rows, nnz + n_new
            bar.update(n_rows)
        if nnz < 2**31 and indices.dtype == np.int32:
            # scipy needs indices and indptr of one dtype (peers such as scanpy fail otherwise):
            # the row pointers are small, so rewrite them as int32 once the size is known
            pointers = indptr[...].astype(np.int32)
            del group["indptr"]
            group.create_dataset("indptr", data=pointers)
