"""Agreement of a predicted perturbation map with the measured one: neighbour retrieval and rank correlation.

For each perturbation :math:`p`, its *true neighbours* are the other perturbations whose true
similarity to :math:`p` is at least the ``n_neighbors``-th largest (ties at that value all
included). Ranking the others by predicted similarity, the average precision is

.. math:: \\mathrm{AP}_p = \\frac{1}{|T_p|} \\sum_{q \\in T_p}
    \\frac{\\#\\{r \\in T_p : \\hat S_{pr} \\ge \\hat S_{pq}\\}}{\\#\\{r \\ne p : \\hat S_{pr} \\ge \\hat S_{pq}\\}},

which is scikit-learn's ``average_precision_score`` (tied scores form one threshold) with the
true neighbours as positives. A prediction with every similarity tied scores the prevalence
:math:`|T_p| / (P' - 1)` (chance). The map-level summary adds the Spearman correlation of the
upper triangles of the two similarity matrices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .maps import cosine_similarity, perturbation_map

__all__ = ["MapAgreement", "map_agreement", "neighbour_average_precision"]

_BLOCK_ENTRIES = 1 << 21  # rows per block = this // n_perturbations


def _check_neighbors(n_neighbors: int) -> int:
    k = int(n_neighbors)
    if k < 1 or k != n_neighbors:
        raise InputError(f"n_neighbors must be a positive integer; got {n_neighbors!r}.")
    return k


def neighbour_average_precision(s_pred: np.ndarray, s_true: np.ndarray, n_neighbors: int = 5) -> np.ndarray:
    """Per-row AP of retrieving each row's true neighbours (see module) from two similarity maps.

    Rows/columns that are NaN in either map (undefined profiles) are left out as candidates; the
    row's own value is NaN then. A row with fewer than 2 candidates, or whose candidates are all
    true neighbours, is NaN.
    """
    return _neighbour_ap(s_pred, s_true, _check_neighbors(n_neighbors))[0]


def _neighbour_ap(s_pred: np.ndarray, s_true: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """AP per row and the prevalence of true neighbours among its candidates (NaN where undefined).

    Cost O(P² k): each true neighbour's precision is a count over its row. Rows are processed in
    blocks (about ``_BLOCK_ENTRIES`` map entries, times k for the comparisons), so temporaries
    stay small next to the maps.
    """
    n = s_true.shape[0]
    ok = ~(np.isnan(np.diag(s_true)) | np.isnan(np.diag(s_pred)))
    kk = min(k, n - 1)
    ap, n_pos, n_cand = np.empty(n), np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    step = max(1, _BLOCK_ENTRIES // max(n, 1))
    for a in range(0, n, step):
        b = min(a + step, n)
        rows = np.arange(a, b)
        cand = np.broadcast_to(ok, (b - a, n)).copy()
        cand[rows - a, rows] = False
        truth = np.where(cand, s_true[a:b], -np.inf)
        kth = -np.partition(-truth, kk - 1, axis=1)[:, kk - 1]
        positive = cand & (truth >= kth[:, None])
        n_pos[a:b], n_cand[a:b] = positive.sum(axis=1), cand.sum(axis=1)
        # rows that will be NaN (undefined own profile, or every candidate positive) are skipped
        positive &= ((n_pos[a:b] < n_cand[a:b]) & ok[a:b])[:, None]
        pred = s_pred[a:b]
        r, c = np.nonzero(positive)  # about k positives per row (more with ties in the truth)
        precision = np.empty(r.size)
        per = max(1, _BLOCK_ENTRIES // max(n, 1))
        for i in range(0, r.size, per):
            ri, v = r[i:i + per], pred[r[i:i + per], c[i:i + per]][:, None]
            above = pred[ri] >= v
            # candidates scored at least as high as this true neighbour, and true neighbours among them
            precision[i:i + per] = (above & positive[ri]).sum(axis=1) / (above & cand[ri]).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[a:b] = np.bincount(r, weights=precision, minlength=b - a) / n_pos[a:b]
    undefined = ~ok | (n_cand < 2) | (n_pos >= n_cand) | (n_pos == 0)
    ap[undefined] = np.nan
    prevalence = np.where(undefined, np.nan, n_pos / np.maximum(n_cand, 1))
    return ap, prevalence


def _upper_spearman(a: np.ndarray, b: np.ndarray) -> float:
    iu = np.triu_indices(a.shape[0], k=1)
    x, y = a[iu], b[iu]
    keep = ~(np.isnan(x) | np.isnan(y))
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    from scipy import stats

    return float(stats.spearmanr(x[keep], y[keep]).statistic)


@dataclass(frozen=True)
class MapAgreement:
    """How well a predicted map retrieves the measured map's neighbours.

    Attributes
    ----------
    average_precision : pandas.Series
        :math:`\\mathrm{AP}_p` per perturbation (NaN where undefined).
    mean_average_precision : float
        Mean of the defined values.
    chance : float
        Mean prevalence :math:`|T_p|/(P'-1)`: the mAP of a map with no information.
    spearman : float
        Spearman correlation of the two maps' upper triangles.
    params : mapping
        ``n_neighbors``, ``align`` and the map parameters.
    """

    average_precision: pd.Series
    mean_average_precision: float
    chance: float
    spearman: float
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row per perturbation: ``perturbation, average_precision`` (map-level values in ``attrs``)."""
        frame = self.average_precision.rename("average_precision").rename_axis("perturbation").reset_index()
        frame.attrs.update(mean_average_precision=self.mean_average_precision, spearman=self.spearman,
                           chance=self.chance)
        return frame

    def summary(self) -> pd.DataFrame:
        """One row: ``mean_average_precision, chance, spearman, n_perturbations, n_neighbors``."""
        return pd.DataFrame([{"mean_average_precision": self.mean_average_precision, "chance": self.chance,
                              "spearman": self.spearman, "n_perturbations": len(self.average_precision),
                              "n_neighbors": self.params["n_neighbors"]}])


def map_agreement(
    pred: Any,
    truth: Any,
    *,
    n_neighbors: int = 5,
    controls: Any = None,
    align: str = "centre",
    n_components: int | None = None,
) -> MapAgreement:
    r"""Retrieval of each perturbation's true nearest neighbours in the predicted map.

    Both maps are built with :func:`perturbation_map` (same ``controls`` and ``align``) and
    related by cosine similarity; :math:`\mathrm{AP}_p` is defined in the module docstring.

    Parameters
    ----------
    pred, truth : DataFrame, EffectSizes or ShrunkEffects
        Profiles of the same perturbations and genes (``pred`` is reordered to ``truth``).
    n_neighbors : int, default 5
        True neighbours per perturbation (more on ties).
    controls, align, n_components
        See :func:`perturbation_map`.

    Returns
    -------
    MapAgreement

    Raises
    ------
    InputError
        Different perturbations or genes, or a bad ``n_neighbors``.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from shrinkpert.biology import map_agreement
    >>> x = pd.DataFrame(np.random.default_rng(0).normal(size=(20, 15)))
    >>> res = map_agreement(x, x, n_neighbors=3)
    >>> res.mean_average_precision, res.spearman
    (1.0, 1.0)
    """
    k = _check_neighbors(n_neighbors)
    mt = perturbation_map(truth, controls=controls, align=align, n_components=n_components)
    mp = perturbation_map(pred, controls=controls, align=align, n_components=n_components)
    if set(mp.perturbations) != set(mt.perturbations) or len(mp.perturbations) != len(mt.perturbations):
        raise InputError("pred and truth must hold the same perturbations; "
                         f"only in pred: {list(mp.perturbations.difference(mt.perturbations)[:5])}, "
                         f"only in truth: {list(mt.perturbations.difference(mp.perturbations)[:5])}.")
    if not mp.features.equals(mt.features):
        raise InputError("pred and truth must have the same genes in the same order.")
    order = mp.perturbations.get_indexer(mt.perturbations)
    s_true = cosine_similarity(mt.embedding)
    s_pred = cosine_similarity(mp.embedding[order])
    ap, prevalence = _neighbour_ap(s_pred, s_true, k)
    defined = np.isfinite(ap).any()
    return MapAgreement(
        average_precision=pd.Series(ap, index=mt.perturbations, name="average_precision"),
        mean_average_precision=float(np.nanmean(ap)) if defined else float("nan"),
        chance=float(np.nanmean(prevalence)) if defined else float("nan"),
        spearman=_upper_spearman(s_pred, s_true),
        params={"n_neighbors": k, **dict(mt.params)},
    )
