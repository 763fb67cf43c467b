r"""Metrics of predicted target-gene changes (plain functions, prediction first, truth second).

Shapes follow :mod:`shrinkpert.metrics.expression`: effect matrices are
``(n_perturbations, n_genes)`` (a single ``(n_genes,)`` vector is one perturbation) and every
function returns one value per perturbation (a float for a single perturbation);
``target_index`` gives the column of each perturbation's target gene (-1: not measured).

=========================== ===================== ======== =========================================
function                    direction             best     what
=========================== ===================== ======== =========================================
``target_change_error``     lower is better       0        :math:`|\hat\beta_t - \beta_t|`
``target_sign_score``       higher is better      1        1 if the predicted target change has the
                                                           true sign, else 0
``target_rank_score``       higher is better      1        :math:`1 - (r-1)/(G-1)`, :math:`r` the rank
                                                           of the target among predicted changes
``target_rank_error``       lower is better       0        :math:`|S(\hat\beta) - S(\beta)|`, ``S`` the
                                                           rank score of prediction and truth
``penetrance_error``        lower is better       0        :math:`|\hat\pi_p - \pi_p|`
``dose_order_score``        higher is better      1        Spearman of predicted vs observed dose
                                                           responses across a perturbation's guides
=========================== ===================== ======== =========================================

NaN policy: non-finite inputs raise :class:`~shrinkpert.errors.InputError`; a value that is
undefined (target not measured, true change exactly 0 for the sign, fewer than 3 guides or a
constant vector for the Spearman) is NaN, never 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = [
    "target_change_error",
    "target_sign_score",
    "target_rank_score",
    "target_rank_error",
    "penetrance_error",
    "dose_order_score",
]


def _matrix(x: Any, name: str) -> tuple[np.ndarray, bool]:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric; could not convert it: {exc}") from exc
    vector = a.ndim == 1
    if vector:
        a = a[None, :]
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name} has shape {np.shape(x)}; expected (n_genes,) or (n_perturbations, n_genes).")
    if not np.all(np.isfinite(a)):
        raise InputError(f"{name} has non-finite values; metrics never guess missing values — drop or fill them.")
    return a, vector


def _pair(pred, truth, target_index):
    p, pv = _matrix(pred, "pred")
    t, tv = _matrix(truth, "truth")
    if p.shape != t.shape:
        raise InputError(f"pred has shape {p.shape} but truth has {t.shape}; align perturbations and genes first.")
    idx = np.atleast_1d(np.asarray(target_index))
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError("target_index must hold integers (column of each target, -1 when not measured).")
    if idx.shape != (p.shape[0],):
        raise InputError(f"target_index has shape {idx.shape}; expected one entry per perturbation ({p.shape[0]},).")
    if (idx >= p.shape[1]).any() or (idx < -1).any():
        raise InputError(f"target_index must be -1 or a column in [0, {p.shape[1]}).")
    return p, t, idx.astype(np.int64), pv


def _out(values: np.ndarray, vector: bool):
    return float(values[0]) if vector else values


def _target_values(m: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.full(m.shape[0], np.nan)
    ok = idx >= 0
    out[ok] = m[np.flatnonzero(ok), idx[ok]]
    return out


_SHARED = """
    Parameters
    ----------
    pred, truth : array-like of shape (n_perturbations, n_genes) or (n_genes,)
        Predicted and true changes from the control (e.g. log1p deltas or log2 fold changes),
        genes in the same order.
    target_index : array-like of int, shape (n_perturbations,)
        Column of each perturbation's target gene (-1: not measured).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        One value per perturbation (a float for vector input); NaN where the target is not
        measured{extra}.

    Raises
    ------
    InputError
        Shapes differ, values are not finite, or ``target_index`` is invalid.
"""


def target_change_error(pred: Any, truth: Any, *, target_index: Any) -> float | np.ndarray:
    p, t, idx, vector = _pair(pred, truth, target_index)
    return _out(np.abs(_target_values(p, idx) - _target_values(t, idx)), vector)


target_change_error.__doc__ = r"""Absolute error of the predicted change of each perturbation's target gene.

    .. math:: e_p = |\hat\beta_{p t_p} - \beta_{p t_p}|

    on the scale of the inputs; lower is better, 0 is perfect.
""" + _SHARED.format(extra="") + """
    Examples
    --------
    >>> target_change_error([[-1.0, 0.2], [0.1, -0.5]], [[-2.0, 0.0], [0.0, -0.5]], target_index=[0, 1])
    array([1., 0.])
"""


def target_sign_score(pred: Any, truth: Any, *, target_index: Any) -> float | np.ndarray:
    p, t, idx, vector = _pair(pred, truth, target_index)
    tp, tt = _target_values(p, idx), _target_values(t, idx)
    with np.errstate(invalid="ignore"):
        score = np.where(np.sign(tp) == np.sign(tt), 1.0, 0.0)
    score[~np.isfinite(tt) | (tt == 0)] = np.nan
    return _out(score, vector)


target_sign_score.__doc__ = r"""1 when the predicted target change has the sign of the true one, else 0.

    .. math:: s_p = \mathbb 1[\operatorname{sign}\hat\beta_{p t_p} = \operatorname{sign}\beta_{p t_p}]

    Higher is better; the mean over perturbations is the sign accuracy. A predicted change of
    exactly 0 counts as a wrong sign.
""" + _SHARED.format(extra=" or its true change is exactly 0") + """
    Examples
    --------
    >>> target_sign_score([[-1.0, 0.2], [0.1, 0.5]], [[-2.0, 0.0], [0.0, -0.5]], target_index=[0, 1])
    array([1., 0.])
"""


def target_rank_score(pred: Any, truth: Any, *, target_index: Any) -> float | np.ndarray:
    r"""How high the target ranks among the predicted changes, in the true direction.

    Genes are ranked by their predicted change in the direction of the true target change
    (most negative first for a knockdown; by :math:`|\hat\beta|` when the true change is 0),
    ties sharing their mean rank; with :math:`r` the target's rank among :math:`G` genes the
    score is :math:`1 - (r - 1)/(G - 1)`: 1 when the target is the strongest predicted change,
    0 when it is the weakest. NaN where the target is not measured or :math:`G = 1`.

    Parameters, returns and errors as :func:`target_change_error`.

    Examples
    --------
    >>> target_rank_score([[-1.0, -0.2, 0.3]], [[-2.0, 0.0, 0.0]], target_index=[0])
    array([1.])
    """
    p, t, idx, vector = _pair(pred, truth, target_index)
    n_genes = p.shape[1]
    out = np.full(p.shape[0], np.nan)
    if n_genes > 1:  # the target's mean rank among the keys, one pass per row (the kernel's docstring)
        from ._target_kernels import target_rank_rows

        target_rank_rows(np.ascontiguousarray(p), np.ascontiguousarray(t), idx, out)
    return _out(out, vector)


def target_rank_error(pred: Any, truth: Any, *, target_index: Any) -> float | np.ndarray:
    diff = np.abs(np.asarray(target_rank_score(pred, truth, target_index=target_index))
                  - np.asarray(target_rank_score(truth, truth, target_index=target_index)))
    return float(diff) if diff.ndim == 0 else diff


target_rank_error.__doc__ = r"""Difference between the target's predicted and true standing among all changes.

    .. math:: e_p = |S(\hat\beta_p) - S(\beta_p)|

    with :math:`S` the :func:`target_rank_score` (both in the direction of the true target
    change). 0 when the model ranks the target exactly where the data do, whether or not the
    target is the strongest change. This is the registered metric (a perfect prediction scores
    0); :func:`target_rank_score` describes one side alone.
""" + _SHARED.format(extra=" or there is one gene") + """
    Examples
    --------
    >>> target_rank_error([[-1.0, -0.2, 0.3]], [[-0.1, -2.0, 0.0]], target_index=[0])
    array([0.5])
"""


def penetrance_error(pred: Any, truth: Any) -> float | np.ndarray:
    r"""Absolute error of predicted penetrance (fraction of perturbed cells) per perturbation.

    .. math:: e_p = |\hat\pi_p - \pi_p|

    With per-cell predictions, obtain :math:`\hat\pi_p` by running
    :func:`~shrinkpert.ontarget.classify_escape` on the predicted cells (with the real control
    cells) and :math:`\pi_p` from the real cells.

    Parameters
    ----------
    pred, truth : array-like of shape (n_perturbations,) or float
        Penetrances in [0, 1].

    Returns
    -------
    float or ndarray of shape (n_perturbations,)

    Raises
    ------
    InputError
        Shapes differ, or values are not finite or outside [0, 1].

    Examples
    --------
    >>> penetrance_error([0.75, 0.5], [1.0, 0.5])
    array([0.25, 0.  ])
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    if p.shape != t.shape or p.ndim > 1:
        raise InputError(f"pred has shape {p.shape} but truth has {t.shape}; pass one penetrance per perturbation.")
    for name, a in (("pred", p), ("truth", t)):
        if not np.all(np.isfinite(a)) or (a < 0).any() or (a > 1).any():
            raise InputError(f"{name} penetrances must be finite and in [0, 1].")
    err = np.abs(p - t)
    return float(err) if err.ndim == 0 else err


def dose_order_score(pred: Any, truth: Any, *, groups: Any) -> pd.Series:
    r"""Spearman correlation of predicted and observed responses across each perturbation's guides.

    .. math:: \rho_p = \operatorname{corr}\big(\operatorname{rank}(\hat r_k),
              \operatorname{rank}(r_k)\big)_{k \in \text{guides of } p}

    Higher is better; 1 when the model orders the guides of a perturbation as the data do.

    Parameters
    ----------
    pred, truth : array-like of shape (n_guides,)
        Per-guide dose responses (e.g. :attr:`DoseResponse.response` of real and predicted
        data, or predicted knockdown strength vs observed), in the same guide order.
    groups : array-like of shape (n_guides,)
        Perturbation of each guide.

    Returns
    -------
    pandas.Series
        One Spearman's rho per perturbation (NaN with fewer than 3 guides or a constant vector).

    Raises
    ------
    InputError
        Lengths differ or values are not finite.

    Examples
    --------
    >>> dose_order_score([0.1, 0.5, 0.9, 1, 2, 3], [0.2, 0.4, 0.8, 3, 2, 1], groups=list("AAABBB")).tolist()
    [1.0, -1.0]
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    g = np.asarray(groups)
    if not (p.ndim == t.ndim == g.ndim == 1 and len(p) == len(t) == len(g)):
        raise InputError("pred, truth and groups must be 1-D and of the same length (one entry per guide).")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(t))):
        raise InputError("pred and truth must be finite; drop guides without a response.")
    from scipy.stats import spearmanr  # here: importing scipy.stats costs ~0.5 s, and only this metric needs it

    codes, labels = pd.factorize(pd.Series(g).astype(str), sort=True)
    out = np.full(len(labels), np.nan)
    for k in range(len(labels)):
        rows = codes == k
        if rows.sum() >= 3 and np.ptp(p[rows]) > 0 and np.ptp(t[rows]) > 0:
            out[k] = spearmanr(p[rows], t[rows]).statistic
    return pd.Series(out, index=pd.Index(labels, name="perturbation"), name="dose_order_score")
