r"""Reference predictions that every model is compared with.

Each baseline returns a :class:`BaselinePrediction`: one predicted mean profile per evaluated
perturbation, on the truth's scale (natural log1p of counts per ``target_sum``), computed from a
:class:`~shrinkpert.baselines.TruthSummary` (:func:`summarize_truth`, one streaming pass).

Notation: :math:`\bar x_p` the true mean of perturbation :math:`p` (over all its cells),
:math:`\bar x_p^A, \bar x_p^B` the means of its two disjoint halves, :math:`\bar x_c` the observed
control, :math:`P` perturbations, :math:`n_p` cells.

========================== ==================================================================== ========
name                       prediction for perturbation :math:`p`                                scored vs
========================== ==================================================================== ========
``control``                :math:`\bar x_c` (no change)                                          all cells
``mean``                   :math:`\frac{1}{P-1}\sum_{q\ne p}\bar x_q` (perturbation-weighted)    all cells
``mean_all``               :math:`\frac{1}{P}\sum_{q}\bar x_q` (one profile for all)            all cells
``mean_cells``             :math:`\sum_{q\ne p} n_q\bar x_q / \sum_{q\ne p} n_q` (Systema)        all cells
``technical_duplicate``    :math:`\bar x_p^B`                                                    half A
``interpolated_duplicate`` :math:`\alpha_g\bar x_{pg}^B + (1-\alpha_g)\,\mathrm{mean}_{pg}`,
                           :math:`\alpha_g = 1-\mathrm{padj}_g` (Mejia et al.)                   half A
``additive``               :math:`\bar x_c + \sum_{s\in p}(\bar x_s - \bar x_c)` for combinations all cells
``linear``                 ridge on PCA gene embeddings (Ahlmann-Eltze et al.)                   all cells
``scaled_mean_up/down``    :math:`\bar x_c + k(\mathrm{mean}_p - \bar x_c)`, :math:`k=2, 0.5`     all cells
``inflated_mean``          :math:`\mathrm{mean}_p + \varepsilon`, :math:`\varepsilon_g\sim N(0, s_g^2)` all cells
``shuffled``               :math:`\bar x_{\pi(p)}`, :math:`\pi` a seeded derangement               all cells
========================== ==================================================================== ========

"Mean" baselines are leave-one-out over the evaluated perturbations (the perturbation being
predicted never contributes to its own prediction), as scPertEval's centroid negative control.
The duplicates are scored against half A, which shares no cell with half B, so the positive
control never sees its own cells; they are therefore a conservative ceiling (two half-size
samples). The adversarial baselines (``scaled_mean_up``, ``scaled_mean_down``,
``inflated_mean``, ``shuffled``) carry no information beyond the mean or real profiles with the
wrong label; a metric they beat the ``mean`` baseline on rewards gaming (VCC blogs; cell-eval #183).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import as_rng
from .._forms import AffineForm
from ..errors import InputError, MissingKeyError
from ..stats.testing import bh_adjust, welch, welch_pvalue
from ._summary import TruthSummary

__all__ = [
    "BaselinePrediction",
    "BASELINES",
    "ADVERSARIAL",
    "control_baseline",
    "mean_baseline",
    "technical_duplicate",
    "interpolated_duplicate",
    "additive_baseline",
    "linear_baseline",
    "scaled_mean",
    "inflated_mean",
    "shuffled_labels",
    "make_baselines",
    "BaselinePlan",
    "plan_baselines",
    "ROLES",
]


def _sealed(a: Any) -> bool:
    """A float64 array that owns its memory and is read-only (:func:`_seal`): taken as it is, not copied.

    Nothing else can write to it (a view of it is read-only too), so a builder's fresh array need
    not be copied once more (one perturbations × genes array per baseline per build).
    """
    return isinstance(a, np.ndarray) and a.dtype == np.float64 and a.flags.owndata and not a.flags.writeable


def _seal(a: np.ndarray) -> np.ndarray:
    """``a`` (an array just built here and referenced nowhere else, or a read-only view) made read-only, in place."""
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class BaselinePrediction:
    """A baseline's predicted mean profile per perturbation.

    Attributes
    ----------
    name : str
    perturbations : pandas.Index
    genes : pandas.Index
    mean : ndarray of float64, shape (n_perturbations, n_genes)
        Predicted pseudobulk means on the truth's scale.
    truth : {"full", "half_a"}
        Which true means it is scored against: all cells, or half A (duplicates).
    params : mapping
    var, n : ndarray, optional
        Variance ``(n_perturbations, n_genes)`` and cells ``(n_perturbations,)`` its DE test
        uses; ``None`` (most baselines, which have no cells): the true perturbation's.
    form : AffineForm, optional
        ``mean`` declared as an affine function of the truth's means (``summary.mean``): the
        leave-one-out means, their scaled versions and the relabelled truth. The rank metrics
        derive their products from the truth's own product with it (a hint: the residual is
        bounded from the values, so it never changes a result).
    """

    name: str
    perturbations: pd.Index
    genes: pd.Index
    mean: np.ndarray
    truth: str = "full"
    params: Mapping[str, Any] = field(default_factory=dict)
    var: np.ndarray | None = None
    n: np.ndarray | None = None
    form: AffineForm | None = None

    def __post_init__(self) -> None:
        mean = self.mean if _sealed(self.mean) else np.array(self.mean, dtype=np.float64)
        if mean.shape != (len(self.perturbations), len(self.genes)):
            raise InputError(f"baseline {self.name!r}: mean has shape {mean.shape}, expected "
                             f"{(len(self.perturbations), len(self.genes))}.")
        if self.truth not in ("full", "half_a"):
            raise InputError(f"baseline {self.name!r}: truth must be 'full' or 'half_a', got {self.truth!r}.")
        mean.setflags(write=False)
        object.__setattr__(self, "mean", mean)
        if (self.var is None) != (self.n is None):
            raise InputError(f"baseline {self.name!r}: give both var and n, or neither.")
        if self.var is not None:
            var, n = np.array(self.var, dtype=np.float64), np.array(self.n, dtype=np.int64)
            if var.shape != mean.shape or n.shape != (mean.shape[0],):
                raise InputError(f"baseline {self.name!r}: var {var.shape} and n {n.shape} must match mean {mean.shape}.")
            var.setflags(write=False)
            n.setflags(write=False)
            object.__setattr__(self, "var", var)
            object.__setattr__(self, "n", n)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        if self.form is not None and (self.form.scale.shape[0], self.form.profiles.shape[1]) != mean.shape:
            raise InputError(f"baseline {self.name!r}: its form has {self.form.scale.shape[0]} rows and "
                             f"{self.form.profiles.shape[1]} genes, the mean has shape {mean.shape}.")

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: perturbation, gene, mean."""
        frame = pd.DataFrame(self.mean, index=self.perturbations, columns=self.genes)
        return frame.stack().rename("mean").reset_index().set_axis(["perturbation", "gene", "mean"], axis=1)

    def to_anndata(self):
        """Perturbations × genes AnnData of predicted means (``uns['baseline']`` holds the name)."""
        import anndata as ad

        return ad.AnnData(
            X=np.array(self.mean),
            obs=pd.DataFrame(index=self.perturbations.astype(str)),
            var=pd.DataFrame(index=self.genes.astype(str)),
            uns={"baseline": self.name, "scored_against": self.truth},
        )




def _loo_mean(summary: TruthSummary, *, weighting: str = "perturbation") -> np.ndarray:
    mean, n = summary.mean, summary.n_cells.astype(np.float64)
    P = len(summary.perturbations)
    if P < 2:
        raise InputError("The mean baselines need at least 2 perturbations (they leave the predicted one out).")
    if weighting == "perturbation":
        return (mean.sum(axis=0)[None, :] - mean) / (P - 1)
    if weighting == "cells":
        total = (n[:, None] * mean).sum(axis=0)[None, :]
        return (total - n[:, None] * mean) / (n.sum() - n)[:, None]
    raise InputError(f"weighting must be 'perturbation' or 'cells', got {weighting!r}.")


def _loo_form(summary: TruthSummary, *, weighting: str = "perturbation") -> AffineForm:
    r""":func:`_loo_mean` as an affine form of the truth's means: with weights :math:`v_q` (1, or the
    cells :math:`n_q`) and :math:`V = \sum_q v_q`,
    :math:`\hat x_p = \frac{V}{V - v_p}\,\frac{\sum_q v_q\bar x_q}{V} - \frac{v_p}{V - v_p}\,\bar x_p`."""
    v = (np.ones(len(summary.perturbations)) if weighting == "perturbation"
         else summary.n_cells.astype(np.float64))
    total = v.sum()
    profile = (v @ summary.mean) / total  # one matrix-vector product, no P x G temporary
    return AffineForm(-v / (total - v), profile[None, :], (total / (total - v))[:, None])


def control_baseline(summary: TruthSummary) -> BaselinePrediction:
    r"""No change: every perturbation is predicted as the observed control, :math:`\hat x_p = \bar x_c`."""
    mean = np.broadcast_to(summary.control_mean, (len(summary.perturbations), len(summary.genes)))
    return BaselinePrediction("control", summary.perturbations, summary.genes, mean, params={"kind": "negative"})


def mean_baseline(summary: TruthSummary, *, weighting: str = "perturbation",
                  leave_one_out: bool = True) -> BaselinePrediction:
    r"""Mean of the other perturbations ("mode collapse").

    ``weighting="perturbation"``: :math:`\hat x_p = \frac{1}{P-1}\sum_{q\ne p}\bar x_q`
    (cell-eval's cell-mean baseline, Mejia et al.'s mean); ``"cells"``:
    :math:`\hat x_p = \sum_{q\ne p} n_q \bar x_q / \sum_{q\ne p} n_q` (Systema's perturbed mean).

    ``leave_one_out=False`` averages all evaluated perturbations, :math:`\frac1P\sum_q \bar x_q`
    (name ``"mean_all"``): one profile for every perturbation, which includes :math:`p` with weight
    :math:`1/P`. The leave-one-out mean is instead *anti*-correlated with :math:`p`'s own effect:
    :math:`\hat x_p - \frac1P\sum_q\bar x_q = -\frac{1}{P-1}(\bar x_p - \frac1P\sum_q\bar x_q)`,
    so against the perturbed centroid its Pearson Δ is exactly −1 and rank metrics put it below
    chance; :func:`~shrinkpert.evaluate` therefore uses ``"mean_all"`` as the
    negative control of rank metrics and ``"control"`` for deltas against the perturbed centroid.
    """
    form = None
    if leave_one_out:
        name = "mean" if weighting == "perturbation" else "mean_cells"
        mean = _loo_mean(summary, weighting=weighting)
        form = _loo_form(summary, weighting=weighting)
    else:
        name = "mean_all" if weighting == "perturbation" else "mean_cells_all"
        if weighting == "perturbation":
            profile = summary.mean.mean(axis=0)
        elif weighting == "cells":
            n = summary.n_cells.astype(np.float64)
            profile = (n[:, None] * summary.mean).sum(axis=0) / n.sum()
        else:
            raise InputError(f"weighting must be 'perturbation' or 'cells', got {weighting!r}.")
        mean = np.broadcast_to(profile, summary.mean.shape)
    return BaselinePrediction(name, summary.perturbations, summary.genes, _seal(mean),
                              params={"kind": "negative", "weighting": weighting, "leave_one_out": leave_one_out},
                              form=form)


def technical_duplicate(summary: TruthSummary) -> BaselinePrediction:
    r"""The mean of half B, scored against half A: :math:`\hat x_p = \bar x_p^B` (Mejia et al.)."""
    return BaselinePrediction("technical_duplicate", summary.perturbations, summary.genes, summary.half_b_mean,
                              truth="half_a", params={"kind": "positive", "seed": summary.params.get("seed")})


#: Rows per block of :func:`interpolated_duplicate` (its Welch test holds ~10 such blocks at once).
_ROWS_PER_BLOCK = 256


def _half_b_moments(summary: TruthSummary, rows: slice) -> tuple[np.ndarray, ...]:
    """Cells (a column), means, variances (undefined as 0) and sums of squares of half B's ``rows``."""
    n = summary.half_b_n.astype(np.float64)[rows, None]
    mean, var = summary.half_b_mean[rows], np.nan_to_num(summary.half_b_var[rows], nan=0.0)
    return n, mean, var, var * (n - 1) + n * mean**2


def _welch_padj_vs_rest(summary: TruthSummary, rows: slice,
                        totals: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    r"""BH-adjusted Welch p-values of half B of each perturbation in ``rows`` vs half B of all the
    others; ``totals`` are the column sums of :math:`n\bar x` and of the sums of squares over all rows."""
    n, mean, var, ss = _half_b_moments(summary, rows)
    rest_n = summary.half_b_n.sum(dtype=np.float64) - n
    rest_mean = (totals[0][None, :] - n * mean) / rest_n
    rest_ss = totals[1][None, :] - ss
    rest_var = np.maximum(rest_ss - rest_n * rest_mean**2, 0.0) / np.maximum(rest_n - 1, 1)
    test = welch(var / n, n, rest_var / rest_n, rest_n, floor_at_b=False)
    return bh_adjust(welch_pvalue(mean - rest_mean, test))


def interpolated_duplicate(summary: TruthSummary) -> BaselinePrediction:
    r"""Mejia et al.'s interpolated duplicate, scored against half A.

    .. math:: \hat x_{pg} = \alpha_{pg}\,\bar x^B_{pg} + (1-\alpha_{pg})\,m_{pg},\qquad
              \alpha_{pg} = 1 - \mathrm{padj}_{pg}

    with :math:`m_p` the leave-one-out perturbation-weighted mean and padj the
    Benjamini–Hochberg-adjusted Welch t-test of half B of :math:`p` against half B of all other
    perturbations (only the predictor half is used, so half A stays unseen). Computed in blocks
    of rows (the test is per perturbation), so its temporaries stay small at any number of
    perturbations.
    """
    n, mean, _, ss = _half_b_moments(summary, slice(None))
    totals = ((n * mean).sum(axis=0), ss.sum(axis=0))
    del n, mean, ss
    mean = _loo_mean(summary)  # m, overwritten block by block with the interpolation
    for start in range(0, mean.shape[0], _ROWS_PER_BLOCK):
        rows = slice(start, start + _ROWS_PER_BLOCK)
        alpha = 1.0 - _welch_padj_vs_rest(summary, rows, totals)
        mean[rows] = alpha * summary.half_b_mean[rows] + (1.0 - alpha) * mean[rows]
    return BaselinePrediction("interpolated_duplicate", summary.perturbations, summary.genes, _seal(mean),
                              truth="half_a", params={"kind": "positive", "alpha": "1 - BH(Welch half B vs rest)"})


def additive_baseline(summary: TruthSummary, *, separator: str = "+",
                      singles: Mapping[str, np.ndarray] | None = None) -> BaselinePrediction:
    r"""Additive prediction of combinations: :math:`\hat x_{AB} = \bar x_c + (\bar x_A-\bar x_c)+(\bar x_B-\bar x_c)`.

    Single perturbations come from ``singles`` (label -> mean profile on the same genes) or from
    the evaluated perturbations themselves; a single perturbation is predicted by the control
    when its own profile is not given separately (it is not allowed to predict itself).

    Raises
    ------
    NotImplementedError
        When no evaluated label contains ``separator``: these data have no combinations, so the
        additive baseline is undefined (pass combination labels such as ``"A+B"``).
    MissingKeyError
        A component of a combination has no single-perturbation profile.
    """
    labels = [str(p) for p in summary.perturbations]
    if not any(separator in p for p in labels):
        raise NotImplementedError(
            f"additive baseline: no perturbation label contains the combination separator {separator!r}, so these "
            "data have no combinations; it is only defined for combinations such as 'A+B'."
        )
    profiles = {p: summary.mean[i] for i, p in enumerate(labels) if separator not in p}
    if singles is not None:
        profiles.update({str(k): np.asarray(v, dtype=np.float64) for k, v in singles.items()})
    out = np.empty_like(summary.mean)
    for i, p in enumerate(labels):
        if separator not in p:
            out[i] = summary.control_mean if singles is None or p not in singles else profiles[p]
            continue
        parts = [s for s in p.split(separator) if s and s != summary.control]
        absent = [s for s in parts if s not in profiles]
        if absent:
            raise MissingKeyError(f"additive baseline: combination {p!r} needs single perturbations {absent}; "
                                  "evaluate them too or pass singles={label: mean profile}.")
        out[i] = summary.control_mean + sum(profiles[s] - summary.control_mean for s in parts)
    return BaselinePrediction("additive", summary.perturbations, summary.genes, _seal(out),
                              params={"kind": "reference", "separator": separator})


def linear_baseline(summary: TruthSummary, *, targets: Mapping[str, str] | None = None, n_components: int = 10,
                    ridge: float = 0.1) -> BaselinePrediction:
    r"""Ahlmann-Eltze et al.'s linear model with PCA gene embeddings, leave-one-out.

    For each perturbation :math:`p`, on the other perturbations' centred pseudobulk
    :math:`Y` (genes × perturbations, centred by the row mean :math:`b`):
    :math:`G` = top-:math:`K` left singular vectors of :math:`Y` scaled by their singular values
    (gene embedding), :math:`P` = rows of :math:`G` of each perturbation's target gene,
    :math:`W = (G^\top G+\lambda I)^{-1}G^\top Y P (P^\top P+\lambda I)^{-1}` and
    :math:`\hat x_p = G W g_{t(p)} + b`, where :math:`g_{t(p)}` is the embedding of
    :math:`p`'s target gene (zero when the target is not measured, giving the mean :math:`b`).

    Parameters
    ----------
    targets
        Perturbation -> target gene; default: the label itself when it is a measured gene.
    n_components, ridge
        :math:`K` (default 10) and :math:`\lambda` (default 0.1), as published.
    """
    labels = [str(p) for p in summary.perturbations]
    genes = pd.Index(summary.genes)
    targets = dict(targets) if targets is not None else {}
    tidx = np.array([genes.get_loc(targets.get(p, p)) if targets.get(p, p) in genes else -1 for p in labels])
    if (tidx < 0).all():
        raise InputError(
            "linear baseline: no perturbation's target gene is measured, so there is no gene embedding to use; "
            "pass targets={perturbation: gene} mapping perturbations to measured genes."
        )
    if n_components < 1 or ridge < 0:
        raise InputError(f"linear baseline: need n_components >= 1 and ridge >= 0, got {n_components}, {ridge}.")
    X = summary.mean  # P × G
    out = np.empty_like(X)
    for i in range(len(labels)):
        train = np.flatnonzero(np.arange(len(labels)) != i)
        Y = X[train].T  # G × (P-1)
        b = Y.mean(axis=1)
        Yc = Y - b[:, None]
        U, s, _ = np.linalg.svd(Yc, full_matrices=False)
        K = min(n_components, len(s))
        Gm = U[:, :K] * s[:K]
        Pm = np.where(tidx[train, None] >= 0, Gm[np.maximum(tidx[train], 0)], 0.0)  # (P-1) × K
        lhs = np.linalg.solve(Gm.T @ Gm + ridge * np.eye(K), Gm.T @ Yc @ Pm)
        W = np.linalg.solve((Pm.T @ Pm + ridge * np.eye(K)).T, lhs.T).T
        g = Gm[tidx[i]] if tidx[i] >= 0 else np.zeros(K)
        out[i] = Gm @ W @ g + b
    return BaselinePrediction("linear", summary.perturbations, summary.genes, _seal(out),
                              params={"kind": "reference", "n_components": n_components, "ridge": ridge,
                                      "n_targets_measured": int((tidx >= 0).sum())})


def scaled_mean(summary: TruthSummary, *, factor: float) -> BaselinePrediction:
    r"""Adversarial: the mean baseline's change from control scaled, :math:`\bar x_c + k(m_p - \bar x_c)`."""
    mean = summary.control_mean[None, :] + factor * (_loo_mean(summary) - summary.control_mean[None, :])
    name = "scaled_mean_up" if factor > 1 else "scaled_mean_down"
    loo = _loo_form(summary)  # (1 - k) x_c + k m_p
    form = AffineForm(factor * loo.scale, np.vstack([summary.control_mean[None, :], loo.profiles]),
                      np.hstack([np.full((loo.scale.shape[0], 1), 1.0 - factor), factor * loo.coef]))
    return BaselinePrediction(name, summary.perturbations, summary.genes, _seal(mean),
                              params={"kind": "adversarial", "factor": factor}, form=form)


def inflated_mean(summary: TruthSummary, *, seed: int | np.random.Generator = 0, scale: float = 1.0) -> BaselinePrediction:
    r"""Adversarial: mean baseline plus seeded Gaussian noise, :math:`m_{pg} + \varepsilon_{pg}`.

    :math:`\varepsilon_{pg}\sim N(0, (k\,s_g)^2)` with :math:`s_g` the standard deviation of the
    true perturbation means of gene :math:`g` across perturbations and :math:`k` = ``scale``:
    random spread with the data's magnitude but no information. The draws are made in the order of
    the sorted gene names, so a gene gets the same noise whatever the column order of the data.
    """
    sd = summary.mean.std(axis=0, ddof=1) if len(summary.perturbations) > 1 else np.zeros(len(summary.genes))
    by_name = np.argsort(np.asarray(summary.genes.astype(str)), kind="stable")
    noise = np.empty(summary.mean.shape)
    noise[:, by_name] = as_rng(seed).normal(size=summary.mean.shape)
    noise *= (scale * sd)[None, :]
    return BaselinePrediction("inflated_mean", summary.perturbations, summary.genes, _seal(_loo_mean(summary) + noise),
                              params={"kind": "adversarial", "scale": scale})


def shuffled_labels(summary: TruthSummary, *, seed: int | np.random.Generator = 0) -> BaselinePrediction:
    r"""Adversarial: real profiles with permuted labels, :math:`\hat x_p = \bar x_{\pi(p)}`.

    :math:`\pi` is a seeded cyclic shift of a random order (a derangement: no perturbation keeps
    its own profile).
    """
    P = len(summary.perturbations)
    if P < 2:
        raise InputError("shuffled_labels needs at least 2 perturbations.")
    order = as_rng(seed).permutation(P)
    perm = np.empty(P, dtype=np.int64)
    perm[order] = np.roll(order, 1)
    form = AffineForm(np.ones(P), np.empty((0, len(summary.genes))), np.empty((P, 0)), perm)
    return BaselinePrediction("shuffled", summary.perturbations, summary.genes, _seal(summary.mean[perm]),
                              params={"kind": "adversarial", "permutation": perm.tolist()}, form=form)


#: Baselines computed by default (name -> builder); ``additive`` and ``linear`` are opt-in.
BASELINES: tuple[str, ...] = (
    "control", "mean", "mean_all", "mean_cells", "technical_duplicate", "interpolated_duplicate",
    "scaled_mean_up", "scaled_mean_down", "inflated_mean", "shuffled",
)
#: Names of the adversarial sanity baselines.
ADVERSARIAL: tuple[str, ...] = ("scaled_mean_up", "scaled_mean_down", "inflated_mean", "shuffled")
_ALL = BASELINES + ("additive", "linear")
#: Role (``params["kind"]``) and scored truth of each named baseline, known before it is built.
ROLES: Mapping[str, tuple[str, str]] = MappingProxyType({
    "control": ("negative", "full"), "mean": ("negative", "full"), "mean_all": ("negative", "full"),
    "mean_cells": ("negative", "full"), "technical_duplicate": ("positive", "half_a"),
    "interpolated_duplicate": ("positive", "half_a"), "scaled_mean_up": ("adversarial", "full"),
    "scaled_mean_down": ("adversarial", "full"), "inflated_mean": ("adversarial", "full"),
    "shuffled": ("adversarial", "full"), "additive": ("reference", "full"), "linear": ("reference", "full"),
})


@dataclass(frozen=True)
class BaselinePlan:
    """A baseline not built yet: its role, the truth it is scored against, and its builder.

    ``build()`` makes the :class:`BaselinePrediction` afresh at each call (the same values: every
    random baseline draws from its own seed), so a caller can hold one baseline's arrays at a time.

    Attributes
    ----------
    name : str
    kind : str
        ``params["kind"]`` of the built baseline (``"negative"``, ``"positive"``, ``"exploit"``, ...).
    truth : {"full", "half_a"}
    build : callable
    """

    name: str
    kind: str
    truth: str
    build: Callable[[], BaselinePrediction]


def _builders(summary: TruthSummary, names: Sequence[str] | str, seed: int | np.random.Generator,
              targets: Mapping[str, str] | None) -> dict[str, tuple[str, str, Callable[[], BaselinePrediction]]]:
    """(kind, truth, builder) of each named baseline, the exploit arms last; checks the names."""
    from .exploits import EXPLOITS, exploit_builders

    default = isinstance(names, str) and names == "default"
    names = list(BASELINES) if default else ([names] if isinstance(names, str) else list(names))
    unknown = [n for n in names if n not in _ALL + EXPLOITS]
    if unknown:
        raise InputError(f"unknown baselines {unknown}; choose from {list(_ALL + EXPLOITS)}.")
    arms = exploit_builders(summary, "default" if default else [n for n in names if n in EXPLOITS], seed=seed,
                            targets=targets)
    builders = {
        "control": lambda: control_baseline(summary),
        "mean": lambda: mean_baseline(summary),
        "mean_all": lambda: mean_baseline(summary, leave_one_out=False),
        "mean_cells": lambda: mean_baseline(summary, weighting="cells"),
        "technical_duplicate": lambda: technical_duplicate(summary),
        "interpolated_duplicate": lambda: interpolated_duplicate(summary),
        "scaled_mean_up": lambda: scaled_mean(summary, factor=2.0),
        "scaled_mean_down": lambda: scaled_mean(summary, factor=0.5),
        "inflated_mean": lambda: inflated_mean(summary, seed=seed),
        "shuffled": lambda: shuffled_labels(summary, seed=seed),
        "additive": lambda: additive_baseline(summary),
        "linear": lambda: linear_baseline(summary, targets=targets),
    }
    out = {n: (*ROLES[n], builders[n]) for n in names if n not in EXPLOITS}
    return {**out, **{n: ("exploit", "full", build) for n, build in arms.items()}}


def plan_baselines(summary: TruthSummary, names: Sequence[str] | str = "default", *,
                   seed: int = 0, targets: Mapping[str, str] | None = None) -> dict[str, BaselinePlan]:
    """The baselines of :func:`make_baselines`, not built yet (one :class:`BaselinePlan` each).

    The opt-in ``"additive"`` and ``"linear"`` are built here, once, so that data they cannot
    serve fail now; the others are built at each ``build()``.

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones), or a generator as ``seed`` (each build
        must draw the same values: pass an int).
    NotImplementedError
        ``"additive"`` on data without combinations.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"plan_baselines needs an int seed (each build draws afresh), got {seed!r}.")
    plans = {}
    for name, (kind, truth, build) in _builders(summary, names, int(seed), targets).items():
        if kind == "reference":  # opt-in, and they check the data (combinations, targets): built now
            build = (lambda built: lambda: built)(build())
        plans[name] = BaselinePlan(name, kind, truth, build)
    return plans


def make_baselines(summary: TruthSummary, names: Sequence[str] | str = "default", *,
                   seed: int | np.random.Generator = 0,
                   targets: Mapping[str, str] | None = None) -> dict[str, BaselinePrediction]:
    """Build several baselines by name (``"default"`` = :data:`BASELINES` and the exploit arms the data allow).

    Exploit arms (:data:`~shrinkpert.baselines.exploits.EXPLOITS`) may be named too; they come last.
    :func:`plan_baselines` gives the same baselines unbuilt.

    Raises
    ------
    InputError
        An unknown name (the message lists the known ones).
    NotImplementedError
        ``"additive"`` on data without combinations.
    """
    plans = _builders(summary, names, seed, targets)
    # the arms are built first, as they always were: a shared generator gives each the same draws
    arms = {name: build() for name, (kind, _, build) in plans.items() if kind == "exploit"}
    return {name: arms[name] if name in arms else build() for name, (_, _, build) in plans.items()}
