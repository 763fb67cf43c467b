"""Published composite scores: the Virtual Cell Challenge score and the Kaggle Myllia score.

Both are reproduced as published, including their choices this package would not make
elsewhere (clipping at 0, a baseline from the training split); see docs/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import InputError, MissingKeyError
from .expression import _as_matrix, _as_weights, _check_pair, mae_delta

__all__ = ["VCC_METRICS", "vcc_components", "vcc_score", "myllia_weights", "myllia_score"]

#: The VCC's three components and their best values (cell-eval's ``MetricBestValue``).
VCC_METRICS: Mapping[str, float] = MappingProxyType({"mae": 0.0, "discrimination_score_l1": 1.0, "overlap_at_N": 1.0})


def _scalar(mapping: Mapping[str, Any], key: str, name: str) -> float:
    if key not in mapping:
        raise MissingKeyError(
            f"{name} has no {key!r}; the VCC score needs {sorted(VCC_METRICS)} (means over perturbations)."
        )
    try:
        value = float(mapping[key])
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}[{key!r}] must be one number (the mean over perturbations): {exc}") from exc
    if not math.isfinite(value):
        raise InputError(
            f"{name}[{key!r}] is {value}; the VCC score needs finite values (cell-eval silently scores NaN as 0)."
        )
    return value


def vcc_components(user: Mapping[str, Any], baseline: Mapping[str, Any]) -> dict[str, float]:
    r"""The three baseline-scaled, clipped components of the Virtual Cell Challenge score.

    Parameters
    ----------
    user, baseline : mapping
        Mean (over perturbations) ``mae``, ``discrimination_score_l1`` and ``overlap_at_N`` of the
        model and of the baseline (VCC: the cell-mean baseline). Other keys are ignored.

    Returns
    -------
    dict of str to float
        Each component after scaling and clipping at 0.

    Raises
    ------
    MissingKeyError
        A component is missing.
    InputError
        A value is not finite, or the baseline is perfect (MAE 0, or a score of 1), which makes
        the scaling undefined.

    Notes
    -----
    For a metric whose best value is 0 (MAE) :math:`s = 1 - u/b`; for one whose best value is 1
    :math:`s = (u - b)/(1 - b)`; then :math:`s \leftarrow \max(s, 0)` (cell-eval's ``score``).
    Deliberate difference: cell-eval replaces a NaN component by 0; here it is an error.

    Examples
    --------
    >>> from shrinkpert.metrics import vcc_components
    >>> base = {"mae": 0.027, "discrimination_score_l1": 0.514, "overlap_at_N": 0.106}
    >>> user = {"mae": 0.036, "discrimination_score_l1": 0.61, "overlap_at_N": 0.18}
    >>> {k: round(v, 4) for k, v in vcc_components(user, base).items()}
    {'mae': 0.0, 'discrimination_score_l1': 0.1975, 'overlap_at_N': 0.0828}
    """
    out = {}
    for key, best in VCC_METRICS.items():
        u, b = _scalar(user, key, "user"), _scalar(baseline, key, "baseline")
        if b == best:
            raise InputError(
                f"baseline[{key!r}] = {b} is already the best value; the baseline-scaled score is undefined."
            )
        s = 1.0 - u / b if best == 0.0 else (u - b) / (best - b)
        out[key] = max(s, 0.0)
    return out


def vcc_score(user: Mapping[str, Any], baseline: Mapping[str, Any]) -> float:
    r"""The Virtual Cell Challenge overall score (0–100, higher is better).

    Parameters
    ----------
    user, baseline : mapping
        Mean ``mae``, ``discrimination_score_l1`` and ``overlap_at_N`` of the model and of the
        cell-mean baseline.

    Returns
    -------
    float
        :math:`100 \times` the mean of the three clipped components (:func:`vcc_components`);
        0 for the baseline itself.

    Raises
    ------
    MissingKeyError, InputError
        As :func:`vcc_components`.

    Notes
    -----
    .. math:: \mathrm{VCC} = \frac{100}{3}\Big[\max\big(0, 1 - \tfrac{\mathrm{MAE}}{\mathrm{MAE}_b}\big)
              + \max\big(0, \tfrac{\mathrm{PDS} - \mathrm{PDS}_b}{1 - \mathrm{PDS}_b}\big)
              + \max\big(0, \tfrac{\mathrm{DES} - \mathrm{DES}_b}{1 - \mathrm{DES}_b}\big)\Big]

    Published check (validation baselines MAE 0.027, DES 0.106, PDS 0.514): a submission with
    DES 0.18, PDS 0.61, MAE 0.036 scores 9.3, reported as 9.4 from unrounded inputs.

    Examples
    --------
    >>> from shrinkpert.metrics import vcc_score
    >>> base = {"mae": 0.027, "discrimination_score_l1": 0.514, "overlap_at_N": 0.106}
    >>> round(vcc_score({"mae": 0.036, "discrimination_score_l1": 0.61, "overlap_at_N": 0.18}, base), 2)
    9.34
    """
    parts = vcc_components(user, baseline)
    return 100.0 * sum(parts.values()) / len(parts)


def myllia_weights(t: Any, *, target_index: Any = None) -> np.ndarray:
    r"""Kaggle Myllia gene weights from moderated t statistics.

    Parameters
    ----------
    t : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        limma moderated t statistics of the true effects.
    target_index : int or array-like of int, optional
        Column of each perturbation's target gene (-1: not measured); its weight is set to 0.

    Returns
    -------
    ndarray, same shape as ``t``
        Weights summing to ``n_genes`` in every row.

    Raises
    ------
    InputError
        Non-finite ``t`` or a bad ``target_index``.

    Notes
    -----
    .. math:: c_g = \min(|t_g| + 0.1,\ 10),\quad c_{\text{target}} = 0,\quad
              w_g = G\,\frac{(c_g/M)^2}{\sum_h (c_h/M)^2},\quad M = \max_h c_h .

    Examples
    --------
    >>> from shrinkpert.metrics import myllia_weights
    >>> import numpy as np
    >>> np.round(myllia_weights([0.0, 2.0, 50.0], target_index=0), 4).tolist()
    [0.0, 0.1267, 2.8733]
    """
    tt, vector = _as_matrix(t, "t")
    c = np.minimum(np.abs(tt) + 0.1, 10.0)
    if target_index is not None:
        idx = np.atleast_1d(np.asarray(target_index))
        if not np.issubdtype(idx.dtype, np.integer) or idx.shape != (c.shape[0],):
            raise InputError(f"target_index must be {c.shape[0]} integer(s) (one per perturbation, -1 for none).")
        if ((idx < -1) | (idx >= c.shape[1])).any():
            raise InputError(f"target_index values must lie in [-1, {c.shape[1] - 1}].")
        rows = np.flatnonzero(idx >= 0)
        c[rows, idx[rows]] = 0.0
    m = c.max(axis=1, keepdims=True)
    c2 = (c / m) ** 2
    w = c.shape[1] * c2 / c2.sum(axis=1, keepdims=True)
    return w[0].copy() if vector else w


def _smoothstep(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def myllia_score(
    pred_delta: Any,
    true_delta: Any,
    *,
    weights: Any,
    baseline_delta: Any,
    gate: tuple[float, float] = (0.0, 0.3),
    max_log2: float = 5.0,
    eps: float = 1e-12,
) -> float:
    r"""The Kaggle "Myllia | Echoes of Silenced Genes" score.

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_perturbations, n_genes)
        Predicted and true log fold changes per perturbation.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Per-perturbation gene weights (:func:`myllia_weights`); rescaled per row to sum to
        ``n_genes``.
    baseline_delta : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        The baseline prediction (competition: mean log fold change of the 80 training
        perturbations).
    gate : (float, float), default (0.0, 0.3)
        Smoothstep gate limits of the weighted cosine (published ``left = 0``, ``right = 0.3``).
    max_log2 : float, default 5.0
        Cap of each perturbation's log2 WMAE ratio.
    eps : float, default 1e-12
        Floor of each WMAE (a perfect prediction scores ``max_log2``) and of the cosine
        denominator.

    Returns
    -------
    float
        :math:`W \times \max(0, \mathrm{Wcos})`, higher is better; 0 for the baseline itself.

    Raises
    ------
    InputError
        Bad shapes, non-finite values, negative weights or a bad ``gate``.

    Notes
    -----
    Per perturbation :math:`\ell`, :math:`\mathrm{WMAE}_\ell = \frac1G\sum_g w_{\ell g}|y_{\ell g}
    - \hat y_{\ell g}|` (:func:`mae_delta` with these weights) and

    .. math:: W = \sum_\ell \min\Big(5,\ \log_2\frac{\mathrm{WMAE}^{\mathrm{base}}_\ell}
              {\mathrm{WMAE}^{\mathrm{pred}}_\ell}\Big) .

    On the concatenated vectors :math:`a` (truth) and :math:`b` (prediction) of all genes and
    perturbations, with :math:`s(t) = t^2(3-2t)` and
    :math:`v_i = s\big(\mathrm{clip}((\max(|a_i|,|b_i|) - \mathrm{left})/(\mathrm{right}-\mathrm{left}),
    0, 1)\big)`,

    .. math:: \mathrm{Wcos} = \frac{\sum_i v_i^2 a_i b_i}{\sqrt{\sum_i v_i^2 a_i^2}\sqrt{\sum_i
              v_i^2 b_i^2}} \quad (0 \text{ if the denominator is } 0, \text{ as published}).

    The published text gives ``right = 0.3``; a public re-implementation of the scorer defaults to
    0.2 (pass ``gate=(0.0, 0.2)`` to match it). That scorer also rounds to 5 decimals; this
    function does not.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import myllia_score
    >>> truth = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> base = np.array([[5.0, 0.0], [0.0, 5.0]])  # baseline WMAE 2 for both perturbations
    >>> pred = np.array([[1.0, 1.0], [0.8, 0.8]])
    >>> round(myllia_score(pred, truth, weights=np.ones(2), baseline_delta=base), 5)
    2.81113
    """
    p, t, vector = _check_pair(pred_delta, true_delta, ("pred_delta", "true_delta"))
    if vector:
        p, t = p.reshape(1, -1), t.reshape(1, -1)
    w = _as_weights(weights, p.shape)
    if w is None:
        raise InputError("weights are required (use myllia_weights(t) for the published weights).")
    b, _ = _as_matrix(baseline_delta, "baseline_delta")
    if b.shape[1] != p.shape[1] or b.shape[0] not in (1, p.shape[0]):
        raise InputError(f"baseline_delta has shape {np.shape(baseline_delta)}; expected ({p.shape[1]},) or {p.shape}.")
    b = np.broadcast_to(b, p.shape)
    left, right = (float(v) for v in gate)
    if not right > left:
        raise InputError(f"gate must be (left, right) with right > left; got {gate!r}.")
    wmae_pred = np.atleast_1d(mae_delta(p, t, weights=w))
    wmae_base = np.atleast_1d(mae_delta(b, t, weights=w))
    terms = np.minimum(np.log2(np.maximum(wmae_base, eps) / np.maximum(wmae_pred, eps)), max_log2)
    big_w = float(terms.sum())
    a_, b_ = t.ravel(), p.ravel()
    gate_w = _smoothstep(np.clip((np.maximum(np.abs(a_), np.abs(b_)) - left) / (right - left), 0.0, 1.0)) ** 2
    den = math.sqrt(float(np.sum(gate_w * a_ * a_))) * math.sqrt(float(np.sum(gate_w * b_ * b_)))
    wcos = 0.0 if den < eps else float(np.sum(gate_w * a_ * b_)) / den
    return big_w * max(0.0, wcos)
