"""Rank and retrieval metrics: is each prediction closer to its own truth than to the others'?

All functions take two matrices of shape ``(n_perturbations, n_genes)``: predicted and true
profiles (or deltas), row ``p`` of both being the same perturbation, and returns one value per
perturbation. Each compares, for every perturbation, the distance to its own match with the
distances to all other candidates, as the exact distance kernel computes them (sums of
differences in gene order, so identical rows tie exactly). Cosine, Pearson and Euclidean distances
come from one matrix product per pair of inputs plus row sums; only the own pairs and comparisons
too close for the product's rounding are recomputed with the exact kernel, so every rank equals
the one of the full kernel matrix (:mod:`shrinkpert.metrics._pairwise`). L1 uses a blocked kernel
(cost ``P² × G``, bit-identical to the exact one), or, for a prediction close to one profile (one
profile except at a few genes per perturbation, or a leave-one-out mean), that profile's distances
plus a correction per pair (``P × G`` plus ``P²``), decided exactly in the same way.

Per-perturbation ``weights`` (and ``target_index``, which gives the perturbation's own target gene
weight 0) apply to every comparison made on behalf of that perturbation: when ranking for
perturbation ``p``, all distances use the weights of row ``p``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import InputError
from . import _distance_kernels as _k
from . import _pairwise
from .shared import SharedIntermediates, reuse
from .expression import _as_weights, _check_pair

__all__ = [
    "discrimination_score",
    "perturbench_rank",
    "perturbench_rank_transposed",
    "centroid_accuracy",
    "normed_retrieval",
]

_KINDS = {"l1": _k.L1, "l2": _k.L2, "cosine": _k.COSINE, "pearson": _k.PEARSON}


def _targets(target_index: Any, shape: tuple[int, int]) -> np.ndarray:
    """Validated target columns (-1 = none), one per perturbation."""
    n_p, n_g = shape
    if target_index is None:
        return np.full(n_p, -1, dtype=np.int64)
    t = np.asarray(target_index)
    if t.shape != (n_p,) or not np.issubdtype(t.dtype, np.integer):
        raise InputError(
            f"target_index must be {n_p} integers (the target gene's column for each perturbation, "
            f"-1 when not measured); got shape {t.shape} and dtype {t.dtype}."
        )
    if ((t < -1) | (t >= n_g)).any():
        raise InputError(f"target_index values must lie in [-1, {n_g - 1}]; got {t[(t < -1) | (t >= n_g)][:5]}.")
    return t.astype(np.int64)


def _base_weights(weights: Any, shape: tuple[int, int]) -> np.ndarray:
    """Gene weights as one shared row (1, G) when all rows agree, else one row per perturbation (P, G)."""
    w = _as_weights(weights, shape)
    if w is None:
        return np.ones((1, shape[1]))
    # a view, not a copy: the weights are read-only and P x G (one such array per truth scope)
    return np.ascontiguousarray(w[:1] if (w == w[:1]).all() else w, dtype=np.float64)


def _prepare(pred, true, weights, target_index, metric, names=("pred", "true"), truth_scope=None):
    """Checked inputs, base weights, targets and dead rows (the last three kept in ``truth_scope``)."""
    if metric not in _KINDS:
        raise InputError(f"metric={metric!r} is not supported; use one of {sorted(_KINDS)}.")
    p, t, _ = _check_pair(pred, true, names, allow_vector=False)
    if p.shape[0] < 2:
        raise InputError(
            f"Rank metrics compare each perturbation with the others; {names[0]} has only "
            f"{p.shape[0]} row. Pass at least 2 perturbations."
        )

    def weighting():
        base = _base_weights(weights, p.shape)
        target = _targets(target_index, p.shape)
        return base, target, _pairwise.dead_rows(base, target, p.shape[0])

    return (p, t, *reuse(truth_scope, ("rank", "weighting"), weighting))


def _anchored(pred, true, weights, target_index, metric, *, anchor="pred", names=("pred", "true"),
              shared=None) -> _pairwise.Standing:
    """Where each anchor's own candidate stands among all candidates (and which rows are undefined).

    ``anchor="pred"``: row ``p`` ranks the true profiles by ``d_{w_p}(pred_p, true_j)``;
    ``anchor="true"``: row ``p`` ranks the predictions by ``d_{w_p}(true_p, pred_i)``. The signs of
    ``d_pj - d_pp`` are those of the exact kernel (see :mod:`shrinkpert.metrics._pairwise`); products
    and results are shared between metrics through ``shared``
    (:class:`~shrinkpert.metrics.shared.SharedIntermediates`).
    """

    def compute():
        p, t, base, target, dead = _prepare(pred, true, weights, target_index, metric, names,
                                            shared.truth if shared is not None else None)
        scopes = ((None,) * 5 if shared is None else
                  (shared.pred, shared.truth, shared.pred_any_weights, shared.truth_any_weights, shared.form))
        return _pairwise.compute(p, t, base, target, _KINDS[metric], anchor, dead, *scopes)

    return reuse(shared.pred if shared is not None else None, ("standing", metric, anchor), compute)


def _position(st: _pairwise.Standing) -> np.ndarray:
    """Mid-rank of the own candidate within each row (0 = strictly closest), NaN if a row is undefined."""
    pos = st.less + st.equal / 2.0
    pos[st.undefined] = np.nan
    return pos


def _farther_fraction(st: _pairwise.Standing) -> np.ndarray:
    """Fraction of the other candidates strictly farther than the own one, NaN if undefined."""
    frac = st.greater / (st.less.shape[0] - 1.0)
    frac[st.undefined] = np.nan
    return frac


def discrimination_score(
    pred_delta: Any,
    true_delta: Any,
    *,
    metric: str = "l1",
    weights: Any = None,
    target_index: Any = None,
    shared: SharedIntermediates | None = None,
) -> np.ndarray:
    r"""cell-eval's perturbation discrimination score (PDS): 1 − normalised rank of the true match.

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_perturbations, n_genes)
        Predicted and true effects (signed deltas from a reference), same perturbations and genes
        in the same order. At least 2 perturbations.
    metric : {"l1", "l2", "cosine", "pearson"}, default "l1"
        Distance: Manhattan, Euclidean, 1 − cosine similarity or 1 − Pearson correlation.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights; row ``p`` weighs the distances from prediction ``p``.
    target_index : array-like of int of shape (n_perturbations,), optional
        Column of each perturbation's target gene (-1 if not measured); the target is left out of
        that perturbation's distances (weight 0), as cell-eval does by gene-name matching.
    shared : SharedIntermediates, optional
        Where matrix products and standings are shared with other metrics of the same inputs.

    Returns
    -------
    ndarray of shape (n_perturbations,)
        In [1/P, 1], higher is better; 1 = the prediction is closer to its own truth than to any
        other, about 0.5 at chance. NaN where a needed distance is undefined (zero vector under
        ``cosine``, constant vector under ``pearson``) or all weights are 0.

    Raises
    ------
    InputError
        Non-finite values, fewer than 2 perturbations, bad ``target_index`` or unknown ``metric``.

    Notes
    -----
    With :math:`d_{pj} = d_{w_p}(\hat\Delta_p, \Delta_j)`,

    .. math:: \mathrm{PDS}_p = 1 - \frac{\#\{j: d_{pj} < d_{pp}\}
              + \tfrac12\#\{j\ne p: d_{pj} = d_{pp}\}}{P} .

    Identical to cell-eval ≥ 0.8 (signed deltas since its issue #189) when there are no ties;
    cell-eval breaks exact ties by ``numpy.argsort`` order, here they count one half (the expected
    rank under random tie-breaking). Equals ``1 − perturbench_rank_transposed``.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import discrimination_score
    >>> truth = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> discrimination_score(truth + 0.1, truth).tolist()
    [1.0, 1.0, 1.0]
    """
    st = _anchored(pred_delta, true_delta, weights, target_index, metric, names=("pred_delta", "true_delta"),
                   shared=shared)
    return 1.0 - _position(st) / st.less.shape[0]


def perturbench_rank(
    pred: Any,
    true: Any,
    *,
    metric: str = "cosine",
    weights: Any = None,
    target_index: Any = None,
    shared: SharedIntermediates | None = None,
) -> np.ndarray:
    r"""PerturBench's rank metric: where does the own prediction rank among all predictions?

    Parameters
    ----------
    pred, true : array-like of shape (n_perturbations, n_genes)
        Predicted and true profiles or effects (PerturBench: cosine on log fold changes, RMSE on
        averaged expression). At least 2 perturbations.
    metric : {"cosine", "l2", "l1", "pearson"}, default "cosine"
        Distance. Ranks by ``"l2"`` equal ranks by RMSE or MSE; ``"l1"`` those by MAE.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights; row ``p`` weighs the distances to true profile ``p``.
    target_index : array-like of int of shape (n_perturbations,), optional
        Target gene column per perturbation (-1 if not measured), left out of its distances.
    shared : SharedIntermediates, optional
        Where matrix products and standings are shared with other metrics of the same inputs.

    Returns
    -------
    ndarray of shape (n_perturbations,)
        In [0, 1), lower is better: 0 = no other prediction is closer to the true profile of ``p``
        than prediction ``p``; about 0.5 for a prediction that ignores the perturbation (mode
        collapse).

    Raises
    ------
    InputError
        Non-finite values, fewer than 2 perturbations, bad ``target_index`` or unknown ``metric``.

    Notes
    -----
    For each true profile :math:`y_p`, the predictions are ranked by distance to it:

    .. math:: \mathrm{rank}_p = \frac{\#\{i: d(\hat y_i, y_p) < d(\hat y_p, y_p)\}
              + \tfrac12\#\{i \ne p: d(\hat y_i, y_p) = d(\hat y_p, y_p)\}}{P} .

    PerturBench (Wu et al. 2024, eq. 2; ``rank_helper``) shuffles before sorting, so ties are
    broken at random; here they count one half, the expected value of that shuffle, which makes
    the result deterministic. A collapsed model predicting one profile for every perturbation
    gets exactly :math:`(P-1)/(2P)`.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import perturbench_rank
    >>> truth = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> perturbench_rank(truth, truth).tolist()
    [0.0, 0.0, 0.0]
    >>> collapsed = np.tile(truth.mean(axis=0), (3, 1))
    >>> perturbench_rank(collapsed, truth, metric="l2").tolist()
    [0.3333333333333333, 0.3333333333333333, 0.3333333333333333]
    """
    st = _anchored(pred, true, weights, target_index, metric, anchor="true", shared=shared)
    return _position(st) / st.less.shape[0]


def perturbench_rank_transposed(
    pred: Any,
    true: Any,
    *,
    metric: str = "cosine",
    weights: Any = None,
    target_index: Any = None,
    shared: SharedIntermediates | None = None,
) -> np.ndarray:
    r"""PerturBench's transposed rank: where does the own truth rank among all true profiles?

    Parameters
    ----------
    pred, true : array-like of shape (n_perturbations, n_genes)
        Predicted and true profiles or effects. At least 2 perturbations.
    metric : {"cosine", "l2", "l1", "pearson"}, default "cosine"
        Distance.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights; row ``p`` weighs the distances from prediction ``p``.
    target_index : array-like of int of shape (n_perturbations,), optional
        Target gene column per perturbation (-1 if not measured), left out of its distances.
    shared : SharedIntermediates, optional
        Where matrix products and standings are shared with other metrics of the same inputs.

    Returns
    -------
    ndarray of shape (n_perturbations,)
        In [0, 1), lower is better; about 0.5 at chance.

    Raises
    ------
    InputError
        Non-finite values, fewer than 2 perturbations, bad ``target_index`` or unknown ``metric``.

    Notes
    -----
    .. math:: \mathrm{rank}^{T}_p = \frac{\#\{j: d(\hat y_p, y_j) < d(\hat y_p, y_p)\}
              + \tfrac12\#\{j \ne p: d(\hat y_p, y_j) = d(\hat y_p, y_p)\}}{P}

    (PerturBench eq. 3). The candidates are the true profiles passed in, i.e. the evaluated
    perturbations only; adding training perturbations would leak (PerturBench issue #8). Equal to
    ``1 − discrimination_score`` with the same distance.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import perturbench_rank_transposed
    >>> truth = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> perturbench_rank_transposed(truth, truth).tolist()
    [0.0, 0.0, 0.0]
    """
    st = _anchored(pred, true, weights, target_index, metric, shared=shared)
    return _position(st) / st.less.shape[0]


def centroid_accuracy(
    pred: Any,
    true: Any,
    *,
    weights: Any = None,
    target_index: Any = None,
    shared: SharedIntermediates | None = None,
) -> np.ndarray:
    r"""Systema's centroid accuracy (= Mejia et al.'s normalised inverse rank, NIR).

    Parameters
    ----------
    pred, true : array-like of shape (n_perturbations, n_genes)
        Predicted and true post-perturbation profiles (pseudobulk means). At least 2
        perturbations. Euclidean distances do not depend on a reference subtracted from both.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights; row ``p`` weighs the distances from prediction ``p``.
    target_index : array-like of int of shape (n_perturbations,), optional
        Target gene column per perturbation (-1 if not measured), left out of its distances.
    shared : SharedIntermediates, optional
        Where matrix products and standings are shared with other metrics of the same inputs.

    Returns
    -------
    ndarray of shape (n_perturbations,)
        In [0, 1], higher is better: the fraction of the other true centroids that are strictly
        farther from prediction ``p`` than its own true centroid; about 0.5 at chance.

    Raises
    ------
    InputError
        Non-finite values, fewer than 2 perturbations or bad ``target_index``.

    Notes
    -----
    With Euclidean :math:`d_{pj} = \lVert \hat y_p - y_j \rVert_{w_p}`,

    .. math:: \mathrm{CA}_p = \frac{1}{P-1}\sum_{j \ne p} \mathbb 1[d_{pj} > d_{pp}] .

    Ties count as failures, as in both sources (Systema's centroid accuracy; cellsimbench's
    ``nir`` uses ``correct < other``). Registered as ``centroid_accuracy`` with the alias
    ``normalized_inverse_rank``.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import centroid_accuracy
    >>> truth = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> centroid_accuracy(truth, truth).tolist()
    [1.0, 1.0, 1.0]
    """
    return _farther_fraction(_anchored(pred, true, weights, target_index, "l2", shared=shared))


def normed_retrieval(
    pred_delta: Any,
    true_delta: Any,
    *,
    weights: Any = None,
    target_index: Any = None,
    shared: SharedIntermediates | None = None,
) -> np.ndarray:
    r"""TxPert-style normalised retrieval: how many true effects are less correlated than the own?

    Parameters
    ----------
    pred_delta, true_delta : array-like of shape (n_perturbations, n_genes)
        Predicted and true effects (TxPert: deltas from the batch-matched control). At least 2
        perturbations.
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Non-negative gene weights (weighted Pearson); row ``p`` for prediction ``p``.
    target_index : array-like of int of shape (n_perturbations,), optional
        Target gene column per perturbation (-1 if not measured), left out of its correlations.
    shared : SharedIntermediates, optional
        Where matrix products and standings are shared with other metrics of the same inputs.

    Returns
    -------
    ndarray of shape (n_perturbations,)
        In [0, 1], higher is better; about 0.5 at chance. NaN where a delta is constant.

    Raises
    ------
    InputError
        Non-finite values, fewer than 2 perturbations or bad ``target_index``.

    Notes
    -----
    With :math:`r_{pj}` the (weighted) Pearson correlation of :math:`\hat\Delta_p` and
    :math:`\Delta_j`,

    .. math:: \mathrm{NR}_p = \frac{1}{P-1}\sum_{j\ne p}\mathbb 1[r_{pj} < r_{pp}] .

    Deliberate difference: TxPert's ``normed_retrieval`` divides the same count by :math:`P`
    (so a perfect prediction scores :math:`(P-1)/P`) and breaks ties by perturbation name;
    multiply by :math:`(P-1)/P` to convert. The candidates are the perturbations passed in
    (TxPert uses every perturbation of the dataset).

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import normed_retrieval
    >>> truth = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.2], [1.0, 1.0, 0.0]])
    >>> normed_retrieval(truth, truth).tolist()
    [1.0, 1.0, 1.0]
    """
    return _farther_fraction(_anchored(pred_delta, true_delta, weights, target_index, "pearson",
                                       names=("pred_delta", "true_delta"), shared=shared))
