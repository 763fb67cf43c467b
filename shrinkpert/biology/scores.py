"""Array-level biology metrics in the registry's calling convention, and their :data:`METRIC_SPECS`.

``func(pred, truth, *, weights=None, ...)``: ``pred`` and ``truth`` are (P × G) delta arrays
(row ``p`` of both is the same perturbation); the return is one float64 value per perturbation
(NaN where undefined). ``weights`` — shape (G,) shared or (P, G) one row per perturbation —
scale each perturbation's profile by :math:`\\sqrt{w_p}` before the map is built, so with shared
weights the similarity is the weighted cosine
:math:`\\sum_g w_g x_g y_g / \\sqrt{\\sum_g w_g x_g^2 \\sum_g w_g y_g^2}`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from ..metrics.registry import MetricSpec
from .agreement import _check_neighbors, _neighbour_ap
from .maps import cosine_similarity
from .pathways import activity_agreement, activity_scores, gene_set_matrix
from .recall import _check_threshold, _Tails, relationship_pairs, upper_values

__all__ = ["relationship_recall_score", "map_agreement_score", "pathway_activity_score", "METRIC_SPECS",
           "metric_specs"]


def _pair(pred: Any, truth: Any) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for name, value in (("pred", pred), ("truth", truth)):
        try:
            a = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} must be a numeric (n_perturbations, n_genes) array: {exc}") from exc
        if a.ndim != 2:
            raise InputError(f"{name} has shape {a.shape}; expected (n_perturbations, n_genes).")
        if not np.isfinite(a).all():
            raise InputError(f"{name} has NaN or infinite values.")
        out.append(a)
    if out[0].shape != out[1].shape:
        raise InputError(f"pred has shape {out[0].shape} but truth has {out[1].shape}; they must match.")
    if out[0].shape[0] < 3:
        raise InputError(f"A map needs at least 3 perturbations; got {out[0].shape[0]}.")
    return out[0], out[1]


def _weighted(x: np.ndarray, weights: Any) -> np.ndarray:
    if weights is None:
        return x
    w = np.asarray(weights, dtype=np.float64)
    if w.shape not in ((x.shape[1],), x.shape):
        raise InputError(f"weights must have shape ({x.shape[1]},) or {x.shape}; got {w.shape}.")
    if not np.isfinite(w).all() or (w < 0).any():
        raise InputError("weights must be finite and non-negative.")
    return x * np.sqrt(w)


def relationship_recall_score(
    pred: Any,
    truth: Any,
    *,
    weights: Any = None,
    relationships: pd.DataFrame,
    targets: Any,
    threshold: float = 0.05,
) -> np.ndarray:
    r"""Per-perturbation recall of known relationships in the predicted map.

    The predicted deltas (weighted as in the module docstring) are related by cosine similarity;
    every pair gets its tail credit :math:`c_{pq}` among all pairs of the *predicted* map
    (:mod:`shrinkpert.biology.recall`), and perturbation :math:`p`'s value is the mean credit over
    its known partners :math:`K_p` in the map:

    .. math:: r_p = \frac{1}{|K_p|} \sum_{q \in K_p} c_{pq}.

    The map-level recall is the mean of :math:`r_p` weighted by :math:`|K_p|`. ``truth`` only fixes
    the shape: the value is a property of the predicted map (the truth's own recall is the
    ceiling to compare with, not 1).

    Parameters
    ----------
    pred, truth : array-like of shape (n_perturbations, n_genes)
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
    relationships : pandas.DataFrame
        Columns ``gene_a, gene_b``.
    targets : sequence of str
        Target gene (symbol or Ensembl ID) of each row, in row order.
    threshold : float, default 0.05

    Returns
    -------
    ndarray of float64, shape (n_perturbations,)
        NaN for perturbations with no known partner in the map or an all-zero prediction.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from shrinkpert.biology import relationship_recall_score
    >>> x = np.random.default_rng(0).normal(size=(30, 20))
    >>> x[1] = x[0]
    >>> rel = pd.DataFrame({"gene_a": ["G0"], "gene_b": ["G1"]})
    >>> relationship_recall_score(x, x, relationships=rel, targets=[f"G{i}" for i in range(30)])[:3]
    array([ 1.,  1., nan])
    """
    p, _ = _pair(pred, truth)
    t = _check_threshold(threshold)
    labels = list(targets)
    if len(labels) != p.shape[0]:
        raise InputError(f"targets has {len(labels)} entries but pred has {p.shape[0]} rows.")
    a, b = relationship_pairs(labels, relationships)
    s = cosine_similarity(_weighted(p, weights))
    defined = ~np.isnan(np.diag(s))
    keep = defined[a] & defined[b]
    a, b = a[keep], b[keep]
    credit = _Tails(upper_values(s), t)(s[a, b]) if a.size else np.empty(0)
    ends = np.concatenate([a, b])
    n = np.bincount(ends, minlength=p.shape[0])
    total = np.bincount(ends, weights=np.concatenate([credit, credit]), minlength=p.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def map_agreement_score(pred: Any, truth: Any, *, weights: Any = None, n_neighbors: int = 5) -> np.ndarray:
    r"""Per-perturbation average precision of retrieving the true map's nearest neighbours.

    With :math:`S` and :math:`\hat S` the cosine maps of the true and predicted deltas and
    :math:`T_p` the true neighbours of :math:`p` (true similarity at least the
    ``n_neighbors``-th largest),

    .. math:: \mathrm{AP}_p = \frac{1}{|T_p|} \sum_{q \in T_p}
        \frac{\#\{r \in T_p : \hat S_{pr} \ge \hat S_{pq}\}}{\#\{r \ne p : \hat S_{pr} \ge \hat S_{pq}\}}.

    Parameters
    ----------
    pred, truth : array-like of shape (n_perturbations, n_genes)
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
    n_neighbors : int, default 5

    Returns
    -------
    ndarray of float64, shape (n_perturbations,)
        1 for a perfect prediction; the prevalence :math:`|T_p|/(P-1)` when every predicted
        similarity is tied; NaN for an all-zero row on either side.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.biology import map_agreement_score
    >>> x = np.random.default_rng(0).normal(size=(10, 8))
    >>> map_agreement_score(x, x, n_neighbors=2).tolist() == [1.0] * 10
    True
    """
    p, t = _pair(pred, truth)
    k = _check_neighbors(n_neighbors)
    s_pred = cosine_similarity(_weighted(p, weights))
    s_true = cosine_similarity(_weighted(t, weights))
    return _neighbour_ap(s_pred, s_true, k)[0]


def pathway_activity_score(
    pred: Any,
    truth: Any,
    *,
    gene_sets: Any,
    genes: Any,
    method: str = "ulm",
    min_size: int = 5,
) -> np.ndarray:
    r"""Per-perturbation Pearson correlation of predicted and true gene-set activities.

    Activities :math:`a_{ps}` as :func:`~shrinkpert.biology.pathway_activity` (``"ulm"``: the
    slope t of the profile on the set's weights; ``"mean"``: weighted mean), then for each
    perturbation

    .. math:: \rho_p = \mathrm{corr}_s(\hat a_{ps}, a_{ps}).

    Parameters
    ----------
    pred, truth : array-like of shape (n_perturbations, n_genes)
    gene_sets : mapping or DataFrame
        Set -> genes (or -> {gene: weight}), or a long DataFrame ``set, gene[, weight]``.
    genes : sequence of str
        Gene of each column.
    method : {"ulm", "mean"}, default "ulm"
    min_size : int, default 5

    Returns
    -------
    ndarray of float64, shape (n_perturbations,)
        NaN with fewer than 2 sets or constant activities.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.biology import pathway_activity_score
    >>> x = np.random.default_rng(0).normal(size=(4, 6))
    >>> sets = {"S1": ["a", "b"], "S2": ["c", "d", "e"], "S3": ["f", "a"]}
    >>> pathway_activity_score(x, x, gene_sets=sets, genes=list("abcdef"), min_size=2).round(12).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    p, t = _pair(pred, truth)
    labels = list(genes)
    if len(labels) != p.shape[1]:
        raise InputError(f"genes has {len(labels)} entries but pred has {p.shape[1]} columns.")
    m, sets = gene_set_matrix(gene_sets, labels, min_size=int(min_size))
    if len(sets) < 2:
        raise InputError(f"pathway_activity needs >= 2 gene sets with {min_size}+ measured genes; found {len(sets)}.")
    return activity_agreement(activity_scores(p, m, method), activity_scores(t, m, method))


def metric_specs(kind: str = "biology") -> tuple[MetricSpec, ...]:
    """The biology :class:`~shrinkpert.metrics.registry.MetricSpec` objects, with family ``kind``.

    All three score deltas, are better when greater and score 1 at best.
    """
    rows = (
        ("relationship_recall", relationship_recall_score, True,
         "no known partner among the perturbations, or an all-zero predicted delta",
         "Share of a perturbation's known relationships among the top/bottom 5% of predicted-map similarities",
         "EFAAR known-relationship recall (Celik et al. 2024), per perturbation; ties get their expected tail "
         "share; needs relationships= and targets="),
        ("map_agreement", map_agreement_score, True, "an all-zero delta on either side, or fewer than 2 candidates",
         "Average precision of retrieving the true map's nearest neighbours in the predicted map",
         "copairs-style mAP (Kalinin et al. 2025) with the truth's neighbours as positives; scikit-learn ties"),
        ("pathway_activity", pathway_activity_score, False,
         "fewer than 2 gene sets, or constant predicted or true activities",
         "Pearson correlation across gene sets of predicted vs true activity (ulm t)",
         "decoupler ulm activity (univariate linear model t); needs gene_sets= and genes="),
    )
    return tuple(
        MetricSpec(name=name, func=func, greater_is_better=True, best=1.0, kind=kind, needs="deltas",
                   weighted=weighted, nan_policy=nan, description=description, origin=origin)
        for name, func, weighted, nan, description, origin in rows
    )


#: The biology metrics for the registry (see :func:`metric_specs`); :func:`~shrinkpert.evaluate`
#: scores them when it is given ``relationships=`` or ``gene_sets=``.
METRIC_SPECS: tuple[MetricSpec, ...] = metric_specs("biology")
