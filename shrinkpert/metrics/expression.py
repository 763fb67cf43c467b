"""Expression-level metrics: error and agreement between predicted and true profiles.

Every function takes the prediction first and the truth second, as plain arrays:

* one perturbation: two vectors of shape ``(n_genes,)`` -> a Python ``float``;
* many perturbations: two matrices of shape ``(n_perturbations, n_genes)`` -> a float64 array of
  shape ``(n_perturbations,)``, one value per row.

``weights`` (non-negative, shape ``(n_genes,)`` shared by all rows, or one row per perturbation)
turn each metric into its weighted form; weights are normalised per row, so only their ratios
matter, uniform weights give exactly the unweighted value and a weight of 0 drops the gene.

NaN policy (the same in every metric module): a non-finite input value raises
:class:`~shrinkpert.errors.InputError` (nothing is imputed or dropped silently); a value that is
mathematically undefined (a constant vector in a correlation, a zero vector in a cosine, a constant
truth in R², a row whose weights are all 0) is returned as NaN, never as 0.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._arrays import kernel_input, row_order
from ..errors import GeneMismatchError, InputError
from . import _expression_kernels as _ek
from .shared import SharedIntermediates, reuse
from ._rank_kernels import midranks_from_order

__all__ = [
    "checked_once",
    "mse",
    "mae",
    "rmse",
    "mse_delta",
    "mae_delta",
    "pearson_delta",
    "r2_delta",
    "cosine_delta",
    "spearman_delta",
]


# --------------------------------------------------------------------------------------------
# shared input checks (also used by rank.py and de.py)
# --------------------------------------------------------------------------------------------


#: Memory layouts (data address, shape, strides) of read-only float64 arrays a caller has already
#: checked (finite; ``True`` when also non-negative weights), set by :func:`checked_once`.
_CHECKED: ContextVar[dict | ChainMap | None] = ContextVar("shrinkpert_checked_arrays", default=None)


def _layout(a: np.ndarray) -> tuple:
    return a.__array_interface__["data"][0], a.shape, a.strides


def _known(a: np.ndarray, weights: bool = False) -> bool:
    """Whether ``a`` is (a view with the layout of) an array registered by :func:`checked_once`."""
    checked = _CHECKED.get()
    if not checked or a.dtype != np.float64 or a.flags.writeable:
        return False
    entry = checked.get(_layout(a))
    return entry is not None and (entry[1] or not weights)


@contextmanager
def checked_once(cache: dict, *arrays: Any, weights: Any = None) -> Iterator[None]:
    """Check ``arrays`` (finite) and ``weights`` (finite, non-negative) once for many metric calls.

    Blocks nest: inside an inner block the arrays of the outer ones count as checked too (e.g. an
    outer block with a cache that lives as long as the truth, for the truth's arrays and the
    weights, and an inner one per prediction).

    Inside the block the metric functions skip the value checks of these arrays and of any view
    with the same memory layout (the row selections ``x[:]`` a caller passes); shapes are
    still checked and other arrays are checked as always. Only read-only float64 arrays are
    registered; ``cache`` keeps each registered array (alive, so its address stays its own) and
    its result across blocks, e.g. one dictionary per scored side.

    Raises
    ------
    InputError
        A non-finite value, or a negative weight (the metric's own message).
    """
    for x, is_w in [(x, False) for x in arrays] + [(weights, True)]:
        if not isinstance(x, np.ndarray) or x.dtype != np.float64 or x.flags.writeable or x.ndim != 2:
            continue
        key = _layout(x)
        if key in cache and (cache[key][1] or not is_w):
            continue
        if is_w:
            _as_weights(x, x.shape)
        else:
            _as_matrix(x, "array")
        cache[key] = (x, is_w or (key in cache and cache[key][1]))
    outer = _CHECKED.get()
    token = _CHECKED.set(cache if outer is None else ChainMap(cache, outer))
    try:
        yield
    finally:
        _CHECKED.reset(token)


def _as_matrix(x: Any, name: str, *, allow_vector: bool = True) -> tuple[np.ndarray, bool]:
    """``x`` as a C-contiguous float64 matrix (rows = perturbations) and whether it was a vector."""
    if sp.issparse(x):
        raise InputError(
            f"{name} is a sparse matrix; metrics take dense per-perturbation profiles. "
            f"Pass {name}.toarray() (pseudobulk means are small)."
        )
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric (array of floats); could not convert it: {exc}") from exc
    if a.ndim == 1 and allow_vector:
        vector = True
        a = a.reshape(1, -1)
    elif a.ndim == 2:
        vector = False
    else:
        shapes = "(n_genes,) or (n_perturbations, n_genes)" if allow_vector else "(n_perturbations, n_genes)"
        raise InputError(f"{name} has shape {a.shape}; expected {shapes}.")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{name} has shape {a.shape}; it needs at least one perturbation and one gene.")
    if _known(a) or np.isfinite(a).all():
        return np.ascontiguousarray(a), vector
    bad = ~np.isfinite(a)
    if bad.any():
        r, g = np.argwhere(bad)[0]
        where = f"gene {g}" if vector else f"row {r}, gene {g}"
        raise InputError(
            f"{name} has {int(bad.sum())} non-finite value(s) (first at {where}). Metrics never "
            "guess missing values: drop those genes, or fill them explicitly before scoring."
        )
    return np.ascontiguousarray(a), vector


def _check_pair(pred: Any, true: Any, names: tuple[str, str], *, allow_vector: bool = True):
    """Validate a prediction/truth pair of equal shape; returns (pred, true, was_vector)."""
    p, pv = _as_matrix(pred, names[0], allow_vector=allow_vector)
    t, tv = _as_matrix(true, names[1], allow_vector=allow_vector)
    if pv != tv:
        raise InputError(
            f"{names[0]} and {names[1]} must both be vectors (one perturbation) or both matrices; "
            f"got shapes {np.shape(pred)} and {np.shape(true)}."
        )
    if p.shape[1] != t.shape[1]:
        raise GeneMismatchError(
            f"{names[0]} has {p.shape[1]} genes but {names[1]} has {t.shape[1]}; align both to the "
            "same genes in the same order."
        )
    if p.shape[0] != t.shape[0]:
        raise InputError(
            f"{names[0]} has {p.shape[0]} perturbations (rows) but {names[1]} has {t.shape[0]}; "
            "rows must be the same perturbations in the same order."
        )
    return p, t, pv


def _as_weights(weights: Any, shape: tuple[int, int], name: str = "weights") -> np.ndarray | None:
    """Non-negative finite weights broadcast to ``shape`` (read-only view), or None."""
    if weights is None:
        return None
    if sp.issparse(weights):
        raise InputError(f"{name} is a sparse matrix; pass {name}.toarray().")
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric; could not convert it: {exc}") from exc
    n_p, n_g = shape
    if w.ndim == 1 and w.shape[0] == n_g:
        w = w.reshape(1, n_g)
    elif not (w.ndim == 2 and w.shape[1] == n_g and w.shape[0] in (1, n_p)):
        raise InputError(
            f"{name} has shape {w.shape}; expected ({n_g},) (one weight per gene) or "
            f"({n_p}, {n_g}) (one row per perturbation)."
        )
    if _known(w, weights=True):
        return np.broadcast_to(w, shape)
    if not np.isfinite(w).all():
        raise InputError(f"{name} contains NaN or inf; weights must be finite and non-negative.")
    if (w < 0).any():
        raise InputError(f"{name} contains negative values; weights must be non-negative (0 drops a gene).")
    return np.broadcast_to(w, shape)


def _finish(values: np.ndarray, vector: bool) -> float | np.ndarray:
    """A float for one perturbation, else a fresh float64 array (one value per row)."""
    out = np.asarray(values, dtype=np.float64)
    return float(out[0]) if vector else out.copy()


def _wmean(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Row-wise (weighted) mean; NaN for a row whose weights sum to 0."""
    if w is None:
        return x.mean(axis=1)
    # one row broadcast to all (shared weights): its sum once (NumPy sums each row alike, bit for bit)
    total = np.full(w.shape[0], w[0].sum()) if w.shape[0] > 1 and w.strides[0] == 0 else w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.einsum("ij,ij->i", w, x) / total


def _is_constant(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Rows whose (finite) values over genes with positive weight are all equal (True without any)."""
    if w is None:
        return (x == x[:, :1]).all(axis=1)
    used = w > 0
    first = x[np.arange(x.shape[0]), used.argmax(axis=1)]  # the row's first weighted value
    return ((x == first[:, None]) | ~used).all(axis=1)


def _pearson_rows(x: np.ndarray, y: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Row-wise (weighted) Pearson correlation; NaN where either row is constant
    (:func:`~shrinkpert.metrics._expression_kernels.pearson_rows`)."""
    out = np.empty(x.shape[0])
    weights = np.ones((1, x.shape[1])) if w is None else w
    _ek.pearson_rows(kernel_input(x), kernel_input(y), kernel_input(weights), out)
    return out


def _row_order(x: np.ndarray) -> np.ndarray:
    """Each row's ascending order (NumPy's sort; it does not depend on any weights)."""
    return row_order(x)


def _weighted_midranks(x: np.ndarray, w: np.ndarray | None, order: np.ndarray | None = None) -> np.ndarray:
    """Row-wise weighted mid-ranks: weight strictly below plus half the weight of the tie group.

    With unit weights this is the average rank minus 1/2, so a Pearson correlation of these ranks
    is exactly Spearman's rho; a gene of weight 0 does not move any other gene's rank. ``order``:
    :func:`_row_order` of ``x`` when already known (ties are found by value, so any ascending
    order gives the same ranks).
    """
    x = np.ascontiguousarray(x, dtype=np.float64)
    w2 = np.ones((1, x.shape[1])) if w is None else np.ascontiguousarray(np.atleast_2d(w), dtype=np.float64)
    out = np.empty_like(x)
    midranks_from_order(x, _row_order(x) if order is None else order, w2, out)
    return out


def _support_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """:func:`_weighted_midranks` at each row's genes of positive weight, 0 at the others (which a
    weighted correlation ignores), sorting only the weighted genes of each row.

    Rows are packed to the left (padded with ``inf`` of weight 0, which ranks last and moves no
    other rank), ranked, and scattered back. Equal to the full ranks bit for bit when the weights
    in a tie group add up exactly (0/1 masks); otherwise within the order of those sums.
    """
    w = np.broadcast_to(w, x.shape)
    keep = w > 0
    counts = keep.sum(axis=1)
    width = int(counts.max()) if counts.size else 0
    if 2 * width > x.shape[1]:  # most genes weighted: the whole rows
        return np.where(keep, _weighted_midranks(x, np.ascontiguousarray(w)), 0.0)
    rows, cols = np.nonzero(keep)
    at = np.arange(rows.size) - np.repeat(np.r_[0, np.cumsum(counts)[:-1]], counts)
    packed, weights = np.full((x.shape[0], width), np.inf), np.zeros((x.shape[0], width))
    packed[rows, at], weights[rows, at] = x[rows, cols], w[rows, cols]
    out = np.zeros(x.shape)
    out[rows, cols] = _weighted_midranks(packed, weights)[rows, at]
    return out


def _shared_midranks(x: np.ndarray, w: np.ndarray | None, scope: dict | None, any_weights: dict | None
                     ) -> np.ndarray:
    """:func:`_weighted_midranks` kept in ``scope``, the sort kept in ``any_weights`` (shared by weightings)."""
    return reuse(scope, "midranks", lambda: _weighted_midranks(
        x, w, reuse(any_weights if any_weights is not None else scope, "row_order", lambda: _row_order(x))))


# --------------------------------------------------------------------------------------------
# error metrics
# --------------------------------------------------------------------------------------------


def _error(kind: str, pred, true, weights, names, shared: SharedIntermediates | None) -> float | np.ndarray:
    """Weighted mean of squared (``"mse"``) or absolute (``"mae"``) differences per row, kept in
    ``shared`` so that the metrics of one pair of inputs (mse, rmse and mse_delta on the means)
    compute it once."""

    def compute() -> float | np.ndarray:
        p, t, vector = _check_pair(pred, true, names)
        w = _as_weights(weights, p.shape)
        d = p - t
        return _finish(_wmean(np.square(d, out=d) if kind == "mse" else np.abs(d, out=d), w), vector)

    value = reuse(shared.pred if shared is not None else None, ("expression", kind), compute)
    return value if isinstance(value, float) else value.copy()


def mse(pred: Any, true: Any, *, weights: Any = None,
        shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Mean squared error between predicted and true mean profiles (weighted or not).

    Parameters
    ----------
    pred, true : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true pseudobulk means (e.g. mean log1p-normalised expression), genes in the
        same order.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights (e.g. DEG weights); normalised to sum to 1 per perturbation.
    shared : SharedIntermediates, optional
        Where the per-row errors are shared with the other error metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        Lower is better; 0 for a perfect prediction.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.
    GeneMismatchError
        ``pred`` and ``true`` have different numbers of genes.

    Notes
    -----
    With :math:`\tilde w_g = w_g / \sum_h w_h` (:math:`w_g = 1` when unweighted),

    .. math:: \mathrm{MSE} = \sum_g \tilde w_g\,(\hat y_g - y_g)^2 ,

    the weighted MSE of Mejia et al. (2025) when :math:`w` are their DEG weights; equal to
    cell-eval's ``mse`` and scikit-learn's ``mean_squared_error`` without weights. NaN for a
    perturbation whose weights are all 0.

    Examples
    --------
    >>> from shrinkpert.metrics import mse
    >>> mse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    1.3333333333333333
    >>> mse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0], weights=[1, 1, 0])
    0.0
    """
    return _error("mse", pred, true, weights, ("pred", "true"), shared)


def mae(pred: Any, true: Any, *, weights: Any = None,
        shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Mean absolute error between predicted and true mean profiles (weighted or not).

    Parameters
    ----------
    pred, true : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true pseudobulk means, genes in the same order.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights, normalised to sum to 1 per perturbation.
    shared : SharedIntermediates, optional
        Where the per-row errors are shared with the other error metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        Lower is better; 0 for a perfect prediction.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    .. math:: \mathrm{MAE} = \sum_g \tilde w_g\,|\hat y_g - y_g| ,\qquad
              \tilde w_g = w_g / \textstyle\sum_h w_h .

    cell-eval's ``mae`` (the VCC's MAE component) without weights; with weights summing to
    :math:`G` it is the Kaggle Myllia WMAE.

    Examples
    --------
    >>> from shrinkpert.metrics import mae
    >>> mae([0.0, 1.0], [1.0, 1.0])
    0.5
    """
    return _error("mae", pred, true, weights, ("pred", "true"), shared)


def rmse(pred: Any, true: Any, *, weights: Any = None,
         shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Root mean squared error between predicted and true mean profiles (weighted or not).

    Parameters
    ----------
    pred, true : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true pseudobulk means, genes in the same order.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights, normalised to sum to 1 per perturbation.
    shared : SharedIntermediates, optional
        Where the per-row errors are shared with the other error metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        Lower is better; 0 for a perfect prediction.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    .. math:: \mathrm{RMSE} = \Big(\sum_g \tilde w_g\,(\hat y_g - y_g)^2\Big)^{1/2}

    PerturBench's headline error on averaged expression.

    Examples
    --------
    >>> from shrinkpert.metrics import rmse
    >>> rmse([0.0, 0.0], [3.0, -3.0])
    3.0
    """
    value = _error("mse", pred, true, weights, ("pred", "true"), shared)
    return float(np.sqrt(value)) if isinstance(value, float) else np.sqrt(value)


def mse_delta(pred_delta: Any, true_delta: Any, *, weights: Any = None,
              shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Mean squared error between predicted and true effects (deltas from a reference).

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true changes from a reference profile (control or perturbed mean).
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights, normalised to sum to 1 per perturbation.
    shared : SharedIntermediates, optional
        Where the per-row errors are shared with the other error metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        Lower is better; 0 for a perfect prediction.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    .. math:: \mathrm{MSE}_\Delta = \sum_g \tilde w_g\,(\hat\Delta_g - \Delta_g)^2

    When both deltas use the same reference this equals :func:`mse` of the means; cell-eval's
    ``mse_delta`` subtracts each side's own control.

    Examples
    --------
    >>> from shrinkpert.metrics import mse_delta
    >>> mse_delta([0.5, -0.5], [1.0, -1.0])
    0.25
    """
    return _error("mse", pred_delta, true_delta, weights, ("pred_delta", "true_delta"), shared)


def mae_delta(pred_delta: Any, true_delta: Any, *, weights: Any = None,
              shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Mean absolute error between predicted and true effects (deltas from a reference).

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true changes from a reference profile.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights, normalised to sum to 1 per perturbation.
    shared : SharedIntermediates, optional
        Where the per-row errors are shared with the other error metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        Lower is better; 0 for a perfect prediction.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    .. math:: \mathrm{MAE}_\Delta = \sum_g \tilde w_g\,|\hat\Delta_g - \Delta_g|

    With Myllia's limma weights (summing to :math:`G`) this is the competition's
    :math:`\mathrm{WMAE} = \frac1G\sum_g w_g|\Delta_g - \hat\Delta_g|`.

    Examples
    --------
    >>> from shrinkpert.metrics import mae_delta
    >>> mae_delta([0.5, -0.5], [1.0, -1.0])
    0.5
    """
    return _error("mae", pred_delta, true_delta, weights, ("pred_delta", "true_delta"), shared)


# --------------------------------------------------------------------------------------------
# agreement metrics
# --------------------------------------------------------------------------------------------


def pearson_delta(pred_delta: Any, true_delta: Any, *, weights: Any = None) -> float | np.ndarray:
    r"""Pearson correlation between predicted and true effects (weighted or not).

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true changes from a reference profile (control, perturbed centroid, ...).
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights (weighted means, covariance and variances).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [-1, 1], higher is better; NaN where either delta is constant over the weighted genes.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    With :math:`\tilde w` the normalised weights and weighted means :math:`\bar a = \sum_g \tilde
    w_g a_g`,

    .. math:: r_w = \frac{\sum_g \tilde w_g(\hat\Delta_g-\bar{\hat\Delta})(\Delta_g-\bar\Delta)}
              {\sqrt{\sum_g \tilde w_g(\hat\Delta_g-\bar{\hat\Delta})^2\,
              \sum_g \tilde w_g(\Delta_g-\bar\Delta)^2}} .

    Unweighted, this is cell-eval's ``pearson_delta`` (``scipy.stats.pearsonr``) on the deltas it
    is given. The reference is the caller's choice: cell-eval subtracts each side's own control,
    Systema the mean of perturbation centroids.

    Examples
    --------
    >>> from shrinkpert.metrics import pearson_delta
    >>> round(pearson_delta([1.0, 2.0, 3.0], [2.0, 4.0, 6.5]), 4)
    0.9979
    """
    p, t, vector = _check_pair(pred_delta, true_delta, ("pred_delta", "true_delta"))
    w = _as_weights(weights, p.shape)
    return _finish(_pearson_rows(p, t, w), vector)


def r2_delta(pred_delta: Any, true_delta: Any, *, weights: Any = None) -> float | np.ndarray:
    r"""Coefficient of determination of the true effects by the predicted ones (weighted or not).

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true changes from a reference profile. The truth is the response.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights (scikit-learn's ``sample_weight``).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        At most 1 (best), unbounded below; NaN where the true delta is constant.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    .. math:: R^2_w = 1 - \frac{\sum_g w_g(\Delta_g - \hat\Delta_g)^2}
              {\sum_g w_g(\Delta_g - \bar\Delta_w)^2},\qquad
              \bar\Delta_w = \frac{\sum_g w_g \Delta_g}{\sum_g w_g}

    scikit-learn's ``r2_score(true_delta, pred_delta, sample_weight=w)``, the weighted
    :math:`R^2_w(\Delta)` of Mejia et al. Deliberate difference: scikit-learn returns 1 or 0 for a
    constant truth (``force_finite``); here the value is undefined and NaN.

    Examples
    --------
    >>> from shrinkpert.metrics import r2_delta
    >>> r2_delta([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    1.0
    """
    p, t, vector = _check_pair(pred_delta, true_delta, ("pred_delta", "true_delta"))
    w = _as_weights(weights, p.shape)
    ss_res = _wmean((t - p) ** 2, w)
    ss_tot = _wmean((t - _wmean(t, w)[:, None]) ** 2, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - ss_res / ss_tot
    r2[_is_constant(t, w)] = np.nan
    return _finish(r2, vector)


def cosine_delta(pred_delta: Any, true_delta: Any, *, weights: Any = None) -> float | np.ndarray:
    r"""Cosine similarity between predicted and true effects (weighted or not).

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true changes from a reference profile.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights.

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [-1, 1], higher is better; NaN where either delta is 0 on every weighted gene.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    .. math:: \cos_w = \frac{\sum_g w_g\hat\Delta_g\Delta_g}
              {\sqrt{\sum_g w_g\hat\Delta_g^2}\sqrt{\sum_g w_g\Delta_g^2}}

    Unlike Pearson, deltas are not centred, so a shared shift counts. PerturBench uses it on
    log fold changes.

    Examples
    --------
    >>> from shrinkpert.metrics import cosine_delta
    >>> cosine_delta([1.0, 0.0], [2.0, 0.0])
    1.0
    """
    p, t, vector = _check_pair(pred_delta, true_delta, ("pred_delta", "true_delta"))
    w = _as_weights(weights, p.shape)
    pt, pp, tt = _wmean(p * t, w), _wmean(p * p, w), _wmean(t * t, w)
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.clip(pt / np.sqrt(pp * tt), -1.0, 1.0)
    c[(pp == 0) | (tt == 0)] = np.nan
    return _finish(c, vector)


def spearman_delta(pred_delta: Any, true_delta: Any, *, weights: Any = None,
                   shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Spearman rank correlation between predicted and true effects (weighted or not).

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Predicted and true changes from a reference profile.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights.
    shared : SharedIntermediates, optional
        Where intermediates are shared with other metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [-1, 1], higher is better; NaN where either delta is constant over the weighted genes.

    Raises
    ------
    InputError
        Non-finite values, bad shapes or negative weights.

    Notes
    -----
    Each delta is replaced by its weighted mid-rank (the weighted empirical distribution function
    at the value, ties sharing their weight),

    .. math:: R_g = \sum_{h:\,a_h < a_g} \tilde w_h + \tfrac12 \sum_{h:\,a_h = a_g} \tilde w_h ,

    and the result is the weighted Pearson correlation (:func:`pearson_delta`) of the ranks. With
    equal weights this is exactly ``scipy.stats.spearmanr`` (average ranks for ties); a gene of
    weight 0 changes no other gene's rank, so it is the same as dropping it.

    Examples
    --------
    >>> from shrinkpert.metrics import spearman_delta
    >>> spearman_delta([1.0, 2.0, 3.0], [10.0, 20.0, 300.0])
    1.0
    """
    p, t, vector = _check_pair(pred_delta, true_delta, ("pred_delta", "true_delta"))
    w = _as_weights(weights, p.shape)
    rp = _shared_midranks(p, w, *((shared.pred, shared.pred_any_weights) if shared else (None, None)))
    rt = _shared_midranks(t, w, *((shared.truth, shared.truth_any_weights) if shared else (None, None)))
    return _finish(_pearson_rows(rp, rt, w), vector)
