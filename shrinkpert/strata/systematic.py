r"""``systematic_variation(truth)``: the shift shared by all perturbed cells (Systema), per perturbation,
per gene and per metric.

With :math:`d_p` the change of perturbation :math:`p` against the observed control (log1p scale,
each row's own target gene set to 0) and the leave-one-out mean shift of the *other*
perturbations :math:`m_{-p} = \frac{1}{P-1}\sum_{q \ne p} d_q` (its own target also set to 0), the
**systematic share** of :math:`p` is the fraction of :math:`\lVert d_p\rVert^2` explained by the
least-squares projection of :math:`d_p` on :math:`m_{-p}`:

.. math::

    \mathrm{share}_p = \frac{(d_p\cdot m_{-p})^2}{\lVert d_p\rVert^2\,\lVert m_{-p}\rVert^2}
    = \cos^2(d_p, m_{-p}) \in [0, 1], \qquad
    \mathrm{coefficient}_p = \frac{d_p\cdot m_{-p}}{\lVert m_{-p}\rVert^2}.

Leaving :math:`p` out of the mean keeps its own noise out of the direction it is projected on
(with :math:`p` included the share is biased upwards by about :math:`1/P`).

Sampling noise inflates :math:`\lVert d_p\rVert^2` and biases the plain share
(``systematic_share_raw``) towards 0, and the control mean's noise :math:`b_g` (in every
:math:`d_{qg}`) inflates :math:`d_p\cdot m_{-p}`. ``systematic_share`` removes both by the method of
moments, with :math:`s_{pg}^2` the effect's sampling variance (``std_error`` squared),
:math:`b_g` the control's part of it, :math:`a_{pg} = s_{pg}^2 - b_g` and
:math:`c_{pg} = \frac{1}{P-1}\sum_{q\ne p}[g \ne t_q]`:

.. math::

    \mathrm{share}_p = \frac{\big(d_p\cdot m_{-p} - \sum_{g \ne t_p} c_{pg} b_g\big)^2}
    {\big(\lVert d_p\rVert^2 - \sum_{g\ne t_p} s_{pg}^2\big)
     \big(\lVert m_{-p}\rVert^2 - \sum_g [\tfrac{1}{(P-1)^2}\sum_{q\ne p} a_{qg} + c_{pg}^2 b_g]\big)},

clipped to [0, 1] (NaN when a corrected norm is not positive: no signal beyond noise). On the
simulator this is what recovers the simulated shift's share (``docs/difficulty.md``). Systema
reports :math:`\cos(d_p, \bar x_{\text{pert}} - \bar x_c)` with the pooled perturbed cells; the
squared cosine is the share of variance, and the leave-one-out mean of perturbations is used here.

Per gene: the **systematic component** :math:`m_g = \frac1P\sum_p d_{pg}`, its
standard error across perturbations :math:`\mathrm{sd}_p(d_{pg})/\sqrt{P}`, and each gene's share of
:math:`\lVert m\rVert^2`; the top genes are those with the largest share.

Per metric: the **shift-only prediction** gives every perturbation the same profile, control
plus the mean shift, i.e. the mean of all perturbations' means — :func:`~shrinkpert.evaluate`'s
``mean_all`` baseline. Its mean score :math:`s` is reported with the ``control`` baseline's
:math:`n` and the ``technical_duplicate``'s :math:`q` and

.. math:: \mathrm{shift\_reward} = \frac{s - n}{q - n},

how much of the way from "predict the control" to "a technical replicate" the metric credits a
prediction of the shift alone (0: no credit; 1: as much as the duplicate). When the control's
score is undefined (a correlation of a zero change) :math:`n` is 0 for higher-is-better metrics
whose best value is 1 (no association), and the reward is NaN otherwise;
``shift_reward_reference`` says which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._vocab import CONTROL, MIN_CELLS, PERTURBATION_KEY
from ..effects.estimate import estimate_effects
from ..errors import InputError
from ._profiles import own_target_zeroed

__all__ = ["SystematicVariation", "systematic_variation", "systematic_share", "shift_rewards"]


@dataclass(frozen=True)
class SystematicVariation:
    """Result of :func:`systematic_variation` (formulas in the module docstring).

    Attributes
    ----------
    perturbations, genes : pandas.Index
    share, share_raw : ndarray (n_perturbations,)
        Systematic share, noise-corrected and plain, in [0, 1] (NaN when a moment is not positive).
    coefficient, coefficient_raw : ndarray (n_perturbations,)
        Projection coefficient on the leave-one-out mean shift (noise-corrected, plain).
    shift, shift_se : ndarray (n_genes,)
        Per-gene systematic component (mean change over perturbations) and its standard error.
    metrics : pandas.DataFrame
        Per (metric, weighting, reference): ``shift_only``, ``control``, ``technical_duplicate``,
        ``shift_reward``, ``shift_reward_reference`` (empty when not computed).
    params : mapping
    """

    perturbations: pd.Index
    genes: pd.Index
    share: np.ndarray
    share_raw: np.ndarray
    coefficient: np.ndarray
    coefficient_raw: np.ndarray
    shift: np.ndarray
    shift_se: np.ndarray
    metrics: pd.DataFrame = field(default_factory=pd.DataFrame)
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("share", "share_raw", "coefficient", "coefficient_raw", "shift", "shift_se"):
            value = np.array(getattr(self, name), dtype=np.float64)  # a read-only copy
            value.setflags(write=False)
            object.__setattr__(self, name, value)
        object.__setattr__(self, "metrics", self.metrics.copy())
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row per perturbation: ``systematic_share`` (noise-corrected) and ``systematic_share_raw``
        side by side, and the projection coefficients."""
        return pd.DataFrame({"systematic_share": self.share, "systematic_share_raw": self.share_raw,
                             "coefficient": self.coefficient, "coefficient_raw": self.coefficient_raw},
                            index=pd.Index(self.perturbations.astype(str), name="perturbation"))

    def gene_frame(self) -> pd.DataFrame:
        """One row per gene: ``shift`` :math:`m_g`, ``shift_se``, ``z`` (shift / se) and
        ``share_of_shift`` :math:`m_g^2/\\lVert m\\rVert^2`, in gene order."""
        total = float(np.sum(self.shift**2))
        with np.errstate(invalid="ignore", divide="ignore"):
            z = self.shift / self.shift_se
            share = self.shift**2 / total if total > 0 else np.full(self.shift.shape, np.nan)
        return pd.DataFrame({"shift": self.shift, "shift_se": self.shift_se, "z": z, "share_of_shift": share},
                            index=pd.Index(self.genes.astype(str), name="gene"))

    def top_genes(self, n: int = 20) -> pd.DataFrame:
        """The ``n`` genes carrying most of the systematic component (largest ``share_of_shift``)."""
        frame = self.gene_frame()
        return frame.sort_values("share_of_shift", ascending=False, kind="stable").head(int(n))

    def summary(self) -> pd.DataFrame:
        """The per-metric shift rewards (a copy of :attr:`metrics`)."""
        return self.metrics.copy()


def systematic_share(deltas: np.ndarray, variance: np.ndarray | None = None,
                     control_variance: np.ndarray | None = None,
                     mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    r"""``(share, coefficient)`` of each row of ``deltas`` (P × G) on the leave-one-out mean of the others.

    Without variances: :math:`\cos^2(d_p, m_{-p})` and :math:`d_p\cdot m_{-p}/\lVert m_{-p}\rVert^2`.
    With ``variance`` (:math:`s_{pg}^2`, the sampling variance of :math:`d_{pg}`) and
    ``control_variance`` (:math:`b_g`, the part of it from the control mean, shared by every row),
    the noise is removed from each moment (method of moments; the module docstring):
    :math:`(d_p\cdot m_{-p} - C_p)^2 / ((\lVert d_p\rVert^2 - S_p)(\lVert m_{-p}\rVert^2 - M_p))`
    clipped to [0, 1]. ``mask`` (bool, P × G) marks the entries used (False: a row's own target,
    whose delta must already be 0). NaN when a moment is not positive. Needs :math:`P \ge 2`.
    """
    d = np.asarray(deltas, dtype=np.float64)
    if d.ndim != 2 or d.shape[0] < 2:
        raise InputError(f"deltas must be (perturbations, genes) with at least 2 perturbations, got {d.shape}.")
    n_p = d.shape[0]
    keep = np.ones(d.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    loo = (d.sum(axis=0, keepdims=True) - d) / (n_p - 1)
    dot = (d * loo).sum(axis=1)
    dd = (d * d).sum(axis=1)
    mm = (loo * loo).sum(axis=1)
    if variance is not None:
        s2 = np.where(keep, np.asarray(variance, dtype=np.float64), 0.0)
        b = np.zeros(d.shape[1]) if control_variance is None else np.asarray(control_variance, dtype=np.float64)
        k = keep.astype(np.float64)
        c = (k.sum(axis=0, keepdims=True) - k) / (n_p - 1)  # weight of the control's noise in m_{-p}
        a = np.where(keep, s2 - b[None, :], 0.0)  # the perturbation's own part
        dot = dot - (k * c * b[None, :]).sum(axis=1)
        dd = dd - s2.sum(axis=1)
        mm = mm - ((a.sum(axis=0, keepdims=True) - a) / (n_p - 1) ** 2 + c**2 * b[None, :]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where((dd > 0) & (mm > 0), dot**2 / (dd * mm), np.nan)
        coef = np.where(mm > 0, dot / mm, np.nan)
    return np.clip(share, 0.0, 1.0), coef


def _control_variance(effects: Any) -> np.ndarray:
    r""":math:`b_g`, the control mean's share of each effect's sampling variance, as
    :func:`~shrinkpert.estimate_effects` computes it (zero variance: :math:`\delta^2/(n_c+1)`;
    ``log2fc``: delta method with the pseudocount)."""
    n_c = float(effects.control_n_cells)
    v = np.asarray(effects.control_var, dtype=np.float64)
    v = np.where(v == 0, effects.params["detection_limit"] ** 2 / (n_c + 1), v)
    if effects.scale == "log1p":
        return v / n_c
    eps = effects.params["pseudocount"]
    return v / n_c / (np.asarray(effects.control_mean) + eps) ** 2 / np.log(2.0) ** 2


def shift_rewards(summary: pd.DataFrame) -> pd.DataFrame:
    """Per-metric shift-only scores and rewards from a ``MetricTable.summary()`` with the baselines
    ``mean_all``, ``control`` and ``technical_duplicate`` (see the module docstring)."""
    need = ["baseline_mean_all", "baseline_control", "baseline_technical_duplicate"]
    missing = [c for c in need if c not in summary.columns]
    if missing:
        raise InputError(f"the table lacks {missing}; evaluate with baselines including 'mean_all', 'control' and "
                         "'technical_duplicate'.")
    s = summary["baseline_mean_all"].to_numpy(dtype=np.float64)
    n = summary["baseline_control"].to_numpy(dtype=np.float64)
    q = summary["baseline_technical_duplicate"].to_numpy(dtype=np.float64)
    higher = summary["greater_is_better"].to_numpy(dtype=bool)
    correlation_like = higher & ~np.isfinite(n)
    n_used = np.where(np.isfinite(n), n, np.where(correlation_like, 0.0, np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        reward = (s - n_used) / (q - n_used)
    reward[~np.isfinite(reward)] = np.nan
    reference = np.where(np.isfinite(n), "control", np.where(correlation_like, "zero", ""))
    return pd.DataFrame({"shift_only": s, "control": n, "technical_duplicate": q, "shift_reward": reward,
                         "shift_reward_reference": reference}, index=summary.index)


def systematic_variation(
    truth: Any,
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    layer: str | None = None,
    targets: Mapping[str, str] | None = None,
    scale: str = "log1p",
    metrics: str | Sequence[str] | None = "default",
    table: Any = None,
    min_cells: int = MIN_CELLS,
    seed: int = 0,
    chunk_size: int | None = None,
    n_threads: int | None = None,
) -> SystematicVariation:
    """Share of each perturbation's change that is the shift shared by all perturbed cells, its genes,
    and how much each metric rewards predicting only that shift.

    Parameters
    ----------
    truth
        Cells with raw counts (AnnData or ``.h5ad`` path); read, never modified.
    perturbation_key, control, layer, targets, min_cells, chunk_size, n_threads
        As in :func:`~shrinkpert.estimate_effects`.
    metrics
        Metrics whose shift reward is computed by scoring ``truth`` against itself with
        :func:`~shrinkpert.evaluate` (baselines ``control``, ``mean_all``,
        ``technical_duplicate``; no calibration; two more passes over the cells); ``None`` skips it.
    table
        A :class:`~shrinkpert.MetricTable` of ``truth`` to read the baselines from instead
        (no evaluation).
    seed
        Seed of the technical duplicate's half split.

    Returns
    -------
    SystematicVariation

    Raises
    ------
    InputError
        Fewer than 2 perturbations, or a ``table`` without the needed baselines.
    """
    if scale not in ("log1p", "log2fc"):
        raise InputError(f"scale must be 'log1p' or 'log2fc', got {scale!r}.")
    effects = estimate_effects(truth, perturbation_key=perturbation_key, control=control, layer=layer,
                               targets=targets, scale=scale, min_cells=min_cells, n_threads=n_threads,
                               chunk_size=chunk_size)
    if len(effects.perturbations) < 2:
        raise InputError("systematic_variation needs at least 2 perturbations besides the control.")
    tindex = np.asarray(effects.target_index)
    raw = own_target_zeroed(effects.effect, tindex)
    keep = np.ones(raw.shape, dtype=bool)
    has = np.flatnonzero(tindex >= 0)
    keep[has, tindex[has]] = False
    share, coef = systematic_share(raw, np.asarray(effects.std_error) ** 2, _control_variance(effects), keep)
    share_raw, coef_raw = systematic_share(raw)
    n_p = raw.shape[0]
    if table is not None:
        frame = shift_rewards(table.summary())
    elif metrics is not None:
        from ..evaluation import evaluate

        scored = evaluate(truth, truth, perturbation_key=perturbation_key, control=control, layer=layer,
                          scale="counts", metrics=metrics, baselines=["control", "mean_all", "technical_duplicate"],
                          calibrate=False, seed=seed, targets=targets, chunk_size=chunk_size, n_threads=n_threads)
        frame = shift_rewards(scored.summary())
    else:
        frame = pd.DataFrame()
    return SystematicVariation(
        perturbations=pd.Index(effects.perturbations.astype(str)), genes=pd.Index(effects.genes.astype(str)),
        share=share, share_raw=share_raw, coefficient=coef, coefficient_raw=coef_raw,
        shift=raw.mean(axis=0), shift_se=raw.std(axis=0, ddof=1) / np.sqrt(n_p),
        metrics=frame,
        params={"perturbation_key": perturbation_key, "control": control, "scale": scale, "exclude_target": True,
                "mean_shift": "leave-one-out mean of the other perturbations' changes", "seed": seed,
                "metrics_from": "table" if table is not None else ("evaluate" if metrics is not None else "none")},
    )
