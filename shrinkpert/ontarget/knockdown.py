r"""Knockdown of each perturbation's target gene, per perturbation, per guide and per cell.

:func:`knockdown` reads the matrix once (block by block, never densified) and keeps, for every
perturbed cell, the count of its own target gene and, for every control cell, the counts of all
measured target genes. Everything else is computed from those few numbers.

The count-model machinery it shares with :mod:`shrinkpert.ontarget.escape` lives in
:mod:`shrinkpert.ontarget._counts`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY, TARGET_SUM
from ..data.read import scale_factors
from ..stats.testing import welch
from ..errors import InputError
from ._counts import _count_pass, _Design, _frozen, _library_column, _resolve, _shrink_vector

__all__ = ["Knockdown", "KnockdownTable", "CellKnockdown", "knockdown"]

log = logging.getLogger("shrinkpert")

FLAGS = ("ok", "not_measured", "low_expression", "few_cells")
_LN2 = math.log(2.0)


# =========================================================================== results


@dataclass(frozen=True)
class KnockdownTable:
    r"""Knockdown of the target gene in groups of cells (perturbations or guides) vs control.

    With :math:`\bar y_k` the mean normalised target expression :math:`x\,s/L` in group
    :math:`k` and :math:`\bar y_c` in control cells:
    ``ratio`` :math:`= \bar y_k / \bar y_c`,
    ``log2fc`` :math:`= \log_2((\bar y_k + \varepsilon)/(\bar y_c + \varepsilon))` and
    ``std_error`` its delta-method standard error (exactly as
    :func:`~shrinkpert.estimate_effects` with ``scale="log2fc"``); ``posterior_mean``,
    ``posterior_sd`` and ``lfsr`` come from adaptive shrinkage (ash, half-uniform mixture) of
    ``log2fc`` across the groups of the table whose target is measured, and
    ``shrunk_ratio`` :math:`= 2^{\text{posterior mean}}`.

    Attributes
    ----------
    level : {"perturbation", "guide"}
    groups : pandas.Index
        Perturbation or guide labels.
    perturbation : pandas.Index
        Perturbation of each group.
    target : pandas.Index
        Target gene of each group.
    target_index : ndarray of int64
        Column of the target in ``var_names`` (-1: not measured).
    n_cells : ndarray of int64
    mean, control_mean : ndarray of float64
        :math:`\bar y_k` and :math:`\bar y_c` (normalised counts per ``target_sum``).
    ratio, log2fc, std_error, posterior_mean, posterior_sd, lfsr, shrunk_ratio : ndarray of float64
        NaN when the target is not measured.
    flag : ndarray of str
        ``"ok"``, ``"not_measured"``, ``"low_expression"`` (control mean count below
        ``min_control_mean`` or ``std_error`` above ``max_std_error``) or ``"few_cells"``
        (fewer than ``min_cells`` cells).
    """

    level: str
    groups: pd.Index
    perturbation: pd.Index
    target: pd.Index
    target_index: np.ndarray
    n_cells: np.ndarray
    mean: np.ndarray
    control_mean: np.ndarray
    ratio: np.ndarray
    log2fc: np.ndarray
    std_error: np.ndarray
    posterior_mean: np.ndarray
    posterior_sd: np.ndarray
    lfsr: np.ndarray
    shrunk_ratio: np.ndarray
    flag: np.ndarray

    def __post_init__(self) -> None:
        for name in ("mean", "control_mean", "ratio", "log2fc", "std_error", "posterior_mean",
                     "posterior_sd", "lfsr", "shrunk_ratio"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        object.__setattr__(self, "target_index", _frozen(self.target_index, np.int64))
        object.__setattr__(self, "n_cells", _frozen(self.n_cells, np.int64))
        object.__setattr__(self, "flag", _frozen(self.flag, str))

    def to_frame(self) -> pd.DataFrame:
        """One row per group, indexed by the group label."""
        frame = pd.DataFrame(
            {
                "perturbation": self.perturbation.to_numpy(dtype=str),
                "target": self.target.to_numpy(dtype=str),
                "n_cells": self.n_cells,
                "mean": self.mean,
                "control_mean": self.control_mean,
                "ratio": self.ratio,
                "log2fc": self.log2fc,
                "std_error": self.std_error,
                "ci_low": self.log2fc - 1.959963984540054 * self.std_error,
                "ci_high": self.log2fc + 1.959963984540054 * self.std_error,
                "posterior_mean": self.posterior_mean,
                "posterior_sd": self.posterior_sd,
                "lfsr": self.lfsr,
                "shrunk_ratio": self.shrunk_ratio,
                "flag": self.flag,
            },
            index=pd.Index(self.groups.to_numpy(dtype=str), name=self.level),
        )
        return frame


@dataclass(frozen=True)
class CellKnockdown:
    r"""Per-cell target expression relative to control (aligned to ``obs_names``).

    For a perturbed cell :math:`i` with target count :math:`x_i` and library size :math:`L_i`,
    ``expected`` :math:`e_i = \bar y_c L_i / s` is its expected count under control expression,
    ``ratio`` :math:`= x_i / e_i`, and the empirical-Bayes estimate of its relative expression
    :math:`\rho_i` under :math:`x_i \sim \mathrm{Poisson}(\rho_i e_i)`,
    :math:`\rho_i \sim \mathrm{Gamma}(\theta_k, \theta_k/\bar\rho_k)` (the cell's guide, or
    perturbation, ratio :math:`\bar\rho_k` and cell-to-cell shape :math:`\theta_k` from moments) is

    .. math:: \mathrm{E}[\rho_i \mid x_i] = \frac{\theta_k + x_i}{\theta_k/\bar\rho_k + e_i}, \qquad
              \mathrm{sd}[\rho_i \mid x_i] = \frac{\sqrt{\theta_k + x_i}}{\theta_k/\bar\rho_k + e_i}.

    Control cells, cells of unmeasured targets and cells of no perturbation hold NaN.
    """

    obs_names: pd.Index
    perturbation: np.ndarray
    observed: np.ndarray
    expected: np.ndarray
    ratio: np.ndarray
    posterior_mean: np.ndarray
    posterior_sd: np.ndarray

    def __post_init__(self) -> None:
        object.__setattr__(self, "perturbation", _frozen(self.perturbation, object))
        for name in ("observed", "expected", "ratio", "posterior_mean", "posterior_sd"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))

    def to_frame(self) -> pd.DataFrame:
        """One row per cell with a measured target (controls and others dropped)."""
        keep = np.isfinite(self.observed)
        return pd.DataFrame(
            {
                "perturbation": self.perturbation[keep],
                "observed": self.observed[keep],
                "expected": self.expected[keep],
                "ratio": self.ratio[keep],
                "posterior_mean": self.posterior_mean[keep],
                "posterior_sd": self.posterior_sd[keep],
            },
            index=pd.Index(self.obs_names[keep], name="cell"),
        )


@dataclass(frozen=True)
class Knockdown:
    """Result of :func:`knockdown`: tables per perturbation and guide, values per cell.

    Attributes
    ----------
    by_perturbation : KnockdownTable
    by_guide : KnockdownTable or None
        None without ``guide_key``.
    by_cell : CellKnockdown
    params : mapping
        The call's options (keys, thresholds, ``target_sum``, detection limit).
    """

    by_perturbation: KnockdownTable
    by_guide: KnockdownTable | None
    by_cell: CellKnockdown
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self, level: str = "perturbation") -> pd.DataFrame:
        """Tidy table at ``level`` = ``"perturbation"``, ``"guide"`` or ``"cell"``."""
        if level == "perturbation":
            return self.by_perturbation.to_frame()
        if level == "guide":
            if self.by_guide is None:
                raise InputError("No guide-level table: call knockdown(..., guide_key=<obs column>).")
            return self.by_guide.to_frame()
        if level == "cell":
            return self.by_cell.to_frame()
        raise InputError(f"level={level!r} is not one of 'perturbation', 'guide', 'cell'.")

    def summary(self) -> pd.DataFrame:
        """Counts of perturbations per flag and the median ratio of the judged ones."""
        table = self.by_perturbation.to_frame()
        ok = table["flag"] == "ok"
        return pd.DataFrame(
            {
                "n_perturbations": [len(table)],
                "n_ok": [int(ok.sum())],
                "n_not_measured": [int((table["flag"] == "not_measured").sum())],
                "n_low_expression": [int((table["flag"] == "low_expression").sum())],
                "median_ratio_ok": [float(table.loc[ok, "ratio"].median()) if ok.any() else np.nan],
                "n_significant_lfsr_0.05": [int((ok & (table["lfsr"] < 0.05)).sum())],
            }
        )


# =========================================================================== computation


class _TargetData(NamedTuple):
    """Per-cell target counts and library sizes, control counts of every measured target."""

    totals: np.ndarray  # per-cell library size (column or row totals)
    own: np.ndarray  # per cell: count of its own target (NaN: control, unmeasured, no perturbation)
    control_rows: np.ndarray  # indices of control cells
    control_counts: sp.csc_matrix  # (n_control, n_targets) counts of the measured targets
    target_genes: np.ndarray  # gene index of each column of control_counts


def _read_targets(design: _Design, library, chunk_size) -> _TargetData:
    """One pass: own-target count of each perturbed cell, all target counts of control cells."""
    n_genes = len(design.genes)
    n_p = len(design.perturbations)
    measured = np.unique(design.target_index[design.target_index >= 0])
    # code per cell: perturbation code (own target only) or n_p (control: every measured target)
    row_codes = np.where((design.codes >= 0) & (design.codes <= n_p), design.codes, -1)
    keys = [np.flatnonzero(design.target_index >= 0) * n_genes + design.target_index[design.target_index >= 0],
            n_p * n_genes + measured]
    pairs = np.unique(np.concatenate(keys).astype(np.int64))
    scan = _count_pass(design, row_codes=row_codes, pairs=pairs, chunk_size=chunk_size)
    totals = scan.totals if library is None else library
    n_cells = len(design.codes)
    codes = design.codes
    own = np.full(n_cells, np.nan)
    perturbed = (codes >= 0) & (codes < n_p)
    has_target = np.zeros(n_cells, dtype=bool)
    has_target[perturbed] = design.target_index[codes[perturbed]] >= 0
    own[has_target] = 0.0
    control_rows = np.flatnonzero(codes == n_p)
    col_of_gene = np.full(n_genes, -1)
    col_of_gene[measured] = np.arange(len(measured))
    pos_in_control = np.full(n_cells, -1)
    pos_in_control[control_rows] = np.arange(len(control_rows))
    found = scan.entries.tocoo()
    r, c, v = found.row.astype(np.int64), found.col.astype(np.int64), found.data
    is_ctrl = codes[r] == n_p
    control_counts = sp.csc_matrix((v[is_ctrl], (pos_in_control[r[is_ctrl]], col_of_gene[c[is_ctrl]])),
                                   shape=(len(control_rows), len(measured)))
    own_hit = ~is_ctrl
    own[r[own_hit]] = v[own_hit]
    return _TargetData(np.asarray(totals, dtype=np.float64), own, control_rows, control_counts, measured)


def _normalised_stats(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: cells, mean and variance (ddof=1, NaN for < 2 cells) of ``values``."""
    n = np.bincount(groups, minlength=n_groups).astype(np.int64)
    s = np.bincount(groups, weights=values, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        dev = values - mean[groups]
        m2 = np.bincount(groups, weights=dev**2, minlength=n_groups)
        var = np.where(n > 1, m2 / (n - 1), np.nan)
    return n, mean, var


def _log2_ratio(mean_k, var_k, n_k, mean_c, var_c, n_c, delta):
    """log2 ratio and SE as :func:`estimate_effects` (``scale="log2fc"``, zero-variance policy and
    control variance floor included)."""
    eps = delta / n_c
    var_k = np.where(var_k == 0, delta**2 / (n_k + 1), var_k)
    var_c = np.where(var_c == 0, delta**2 / (n_c + 1), var_c)
    with np.errstate(invalid="ignore", divide="ignore"):
        effect = np.log2((mean_k + eps) / (mean_c + eps))
        a = var_k / n_k / (mean_k + eps) ** 2 / _LN2**2
        b = var_c / n_c / (mean_c + eps) ** 2 / _LN2**2
        se = welch(a, n_k, b, n_c).std_error
    return effect, se


def _table(level, groups, owner, design, n, mean, var, ctrl_mean, ctrl_var, n_c, ctrl_raw_mean, delta,
           min_control_mean, max_std_error) -> KnockdownTable:
    tindex = design.target_index[owner]
    measured = tindex >= 0
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(measured, mean / ctrl_mean, np.nan)
    log2fc, se = _log2_ratio(mean, var, n, ctrl_mean, ctrl_var, n_c, delta)
    log2fc = np.where(measured, log2fc, np.nan)
    se = np.where(measured & (n > 1), se, np.nan)
    flag = np.where(measured, "ok", "not_measured").astype(object)
    low = measured & ((ctrl_raw_mean < min_control_mean) | ~(se <= max_std_error))
    flag[low] = "low_expression"
    flag[measured & ~np.isfinite(mean)] = "few_cells"
    pm, psd, lfsr = _shrink_vector(log2fc, se)
    return KnockdownTable(
        level=level,
        groups=pd.Index(groups, name=level),
        perturbation=pd.Index(design.perturbations[owner], name="perturbation"),
        target=pd.Index(design.target[owner], name="target"),
        target_index=tindex,
        n_cells=n,
        mean=np.where(measured, mean, np.nan),
        control_mean=np.where(measured, ctrl_mean, np.nan),
        ratio=ratio,
        log2fc=log2fc,
        std_error=se,
        posterior_mean=pm,
        posterior_sd=psd,
        lfsr=lfsr,
        shrunk_ratio=np.exp2(pm),
        flag=flag.astype(str),
    )


def _cell_posterior(observed, expected, group, rho):
    """Gamma-Poisson posterior mean and sd of each cell's relative expression (see CellKnockdown)."""
    n_groups = len(rho)
    pm = np.full(observed.shape, np.nan)
    psd = np.full(observed.shape, np.nan)
    ok = np.isfinite(observed) & np.isfinite(expected) & (group >= 0)
    ok[ok] = np.isfinite(rho[group[ok]])
    if not ok.any():
        return pm, psd
    g, x, e = group[ok], observed[ok], expected[ok]
    r = rho[g]
    # cell-to-cell shape of rho within a group, by moments: Var x = r e + (r e)^2 / shape
    sum_e2 = np.bincount(g, weights=(r * e) ** 2, minlength=n_groups)
    excess = np.bincount(g, weights=(x - r * e) ** 2 - r * e, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        shape = np.where(excess > 0, sum_e2 / excess, 1e6)
    shape = np.clip(np.nan_to_num(shape, nan=1e6), 1e-2, 1e6)[g]
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = shape / r
        pm[ok] = np.where(r > 0, (shape + x) / (rate + e), 0.0)
        psd[ok] = np.where(r > 0, np.sqrt(shape + x) / (rate + e), 0.0)
    return pm, psd


def knockdown(
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
    target_sum: float = TARGET_SUM,
    min_cells: int = MIN_CELLS,
    min_control_mean: float = 0.1,
    max_std_error: float = 1.0,
    chunk_size: int | None = None,
) -> Knockdown:
    r"""Knockdown of each perturbation's target gene, per perturbation, per guide and per cell.

    Parameters
    ----------
    adata
        AnnData (in memory or backed) or path to an ``.h5ad`` file holding raw counts.
    perturbation_key
        ``obs`` column with each cell's perturbation.
    control
        Label of the control cells.
    guide_key
        Optional ``obs`` column with each cell's guide; adds the per-guide table.
    layer
        Layer with raw counts (default ``X``).
    library_size
        ``obs`` column or array of per-cell library sizes (default: row totals), e.g. the
        whole-transcriptome UMI count when only a gene panel is stored.
    target_key, targets
        Target gene of each perturbation when labels are not gene names: an ``obs`` column or a
        mapping perturbation -> gene. A perturbation whose target is not in ``var_names`` (or
        not a gene at all) is reported with ``flag="not_measured"``.
    perturbations
        Perturbations to report (default: every label except ``control``).
    target_sum
        :math:`s`, counts per cell after normalisation.
    min_cells
        Groups (perturbations or guides) with fewer cells get NaN statistics.
    min_control_mean
        A target whose mean raw count in control cells is below this is flagged
        ``"low_expression"`` (too lowly expressed to judge a knockdown).
    max_std_error
        A group whose ``log2fc`` standard error exceeds this is flagged ``"low_expression"`` too.
    chunk_size
        Rows per block when reading (default ≈ 64 MB blocks).

    Returns
    -------
    Knockdown

    Raises
    ------
    MissingKeyError
        A named ``obs`` column or the control label is absent.
    CountsError
        The matrix does not hold raw counts.
    InputError
        Bad thresholds, duplicated names, or a guide shared by two perturbations.

    Notes
    -----
    One pass over the matrix keeps each perturbed cell's own target count and every control
    cell's counts of all measured targets (memory :math:`O(n_{\text{cells}} + n_c T)`).
    With :math:`y_i = x_i s / L_i`, group means and variances give ``log2fc`` and its delta-method
    standard error with the pseudocount :math:`\varepsilon = \delta / n_c`,
    :math:`\delta = s / \bar L_c` and the zero-variance rule of
    :func:`~shrinkpert.estimate_effects`; the ``log2fc`` values are then shrunk across the
    table's groups by adaptive shrinkage. Per-cell estimates are described in
    :class:`CellKnockdown`.

    Examples
    --------
    >>> import shrinkpert as sp
    >>> from shrinkpert.ontarget import knockdown
    >>> adata = sp.datasets.papalexi2021()
    >>> kd = knockdown(adata[adata.obs["perturbation"] != "unassigned"])
    >>> table = kd.to_frame()
    >>> round(float(table.loc["STAT1", "ratio"]), 2)
    0.2
    """
    if not (np.isfinite(target_sum) and target_sum > 0):
        raise InputError(f"target_sum must be a positive number, got {target_sum!r}.")
    if not (np.isfinite(min_control_mean) and min_control_mean >= 0):
        raise InputError(f"min_control_mean must be a non-negative number, got {min_control_mean!r}.")
    if not (max_std_error > 0):
        raise InputError(f"max_std_error must be positive, got {max_std_error!r}.")
    if int(min_cells) < 2:
        raise InputError(f"min_cells must be at least 2 (a variance needs two cells), got {min_cells!r}.")
    design, obs = _resolve(adata, perturbation_key=perturbation_key, control=control, guide_key=guide_key,
                           target_key=target_key, targets=targets, perturbations=perturbations, layer=layer)
    library = _library_column(obs, library_size)
    data = _read_targets(design, library, chunk_size)
    n_p = len(design.perturbations)
    n_c = len(data.control_rows)
    if n_c < 2:
        raise InputError(f"The control {control!r} has {n_c} cells; at least 2 are needed.")
    totals = data.totals
    scale = scale_factors(totals, target_sum)
    lib_c = totals[data.control_rows]
    delta = target_sum / max(lib_c.mean(), 1e-300)

    # control statistics of every measured target, on the normalised scale and on raw counts
    y_c = sp.diags(scale[data.control_rows]) @ data.control_counts
    c_mean = np.asarray(y_c.mean(axis=0)).ravel()
    c_var = (np.asarray(y_c.multiply(y_c).sum(axis=0)).ravel() - n_c * c_mean**2) / (n_c - 1)
    c_var = np.maximum(c_var, 0.0)
    c_raw = np.asarray(data.control_counts.mean(axis=0)).ravel()
    column = np.full(len(design.genes), -1, dtype=np.int64)
    column[data.target_genes] = np.arange(len(data.target_genes))

    def control_of(owner):
        k = np.where(design.target_index[owner] >= 0, column[design.target_index[owner]], -1)
        out = []
        for arr in (c_mean, c_var, c_raw):
            vals = np.full(len(k), np.nan)
            vals[k >= 0] = arr[k[k >= 0]]
            out.append(vals)
        return out

    y_own = data.own * scale
    perturbed = np.isfinite(y_own)
    codes = design.codes

    def group_table(level, labels, owner, cell_group):
        n_groups = len(labels)
        sel = perturbed & (cell_group >= 0)
        n, mean, var = _normalised_stats(y_own[sel], cell_group[sel], n_groups)
        n_all = np.bincount(cell_group[cell_group >= 0], minlength=n_groups).astype(np.int64)
        small = n_all < min_cells
        mean = np.where(small, np.nan, mean)
        var = np.where(small, np.nan, var)
        cm, cv, craw = control_of(owner)
        return _table(level, labels, owner, design, n_all, mean, var, cm, cv, n_c, craw, delta,
                      min_control_mean, max_std_error)

    pert_group = np.where((codes >= 0) & (codes < n_p), codes, -1)
    by_pert = group_table("perturbation", design.perturbations.to_numpy(dtype=str), np.arange(n_p), pert_group)
    by_guide = None
    if design.guides is not None:
        by_guide = group_table("guide", design.guides.to_numpy(dtype=str), design.guide_perturbation,
                               design.guide_codes)

    # per cell: expected count under control expression, raw ratio, Gamma-Poisson posterior
    cm_p = control_of(np.arange(n_p))[0]
    owner = np.where(perturbed, codes, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(perturbed & (totals > 0), cm_p[owner] * totals / target_sum, np.nan)
        ratio = data.own / expected
    table, group_of_cell = (by_guide, design.guide_codes) if by_guide is not None else (by_pert, pert_group)
    pm, psd = _cell_posterior(data.own, expected, group_of_cell, np.asarray(table.ratio))
    labels = np.full(len(codes), "", dtype=object)
    labels[perturbed] = design.perturbations.to_numpy(dtype=str)[codes[perturbed]]
    cells = CellKnockdown(design.obs_names, labels, data.own, expected, ratio, pm, psd)
    params = {
        "perturbation_key": perturbation_key,
        "control": control,
        "guide_key": guide_key,
        "layer": layer,
        "library_size": library_size if isinstance(library_size, str) else (None if library_size is None else "array"),
        "target_sum": float(target_sum),
        "min_cells": int(min_cells),
        "min_control_mean": float(min_control_mean),
        "max_std_error": float(max_std_error),
        "detection_limit": float(delta),
        "control_n_cells": int(n_c),
    }
    return Knockdown(by_pert, by_guide, cells, params)
