"""Distribution-level metrics on cells: energy distance and RBF-kernel MMD.

Both compare the predicted and true *cells* of one perturbation (matrices of shape
``(n_cells, n_genes)``, dense or sparse, on the same genes) rather than their means. Each side
is subsampled to at most ``max_cells`` cells without replacement (seeded), and all pairwise
Euclidean distances within and between the two samples are computed (memory
``(n_pred + n_true)²`` floats). Either side may carry per-cell weights (a weighted empirical
distribution, e.g. true cells weighted by their probability of being perturbed).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import GeneMismatchError, InputError

__all__ = ["energy_distance", "mmd"]


def _cells(x: Any, name: str) -> np.ndarray:
    if sp.issparse(x):
        a = x
    else:
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{name} must be a numeric (n_cells, n_genes) matrix: {exc}") from exc
    if a.ndim != 2:
        raise InputError(f"{name} has shape {a.shape}; expected (n_cells, n_genes).")
    if a.shape[0] < 2 or a.shape[1] == 0:
        raise InputError(f"{name} has shape {a.shape}; at least 2 cells and 1 gene are needed.")
    return a


def _cell_weights(w: Any, n: int, name: str) -> np.ndarray | None:
    """Checked per-cell weights (None: every cell counts the same)."""
    if w is None:
        return None
    try:
        w = np.asarray(w, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a numeric vector of per-cell weights: {exc}") from exc
    if w.shape != (n,):
        raise InputError(f"{name} has shape {w.shape}; expected ({n},), one weight per cell.")
    if not (np.isfinite(w).all() and (w >= 0).all()):
        raise InputError(f"{name} must be finite and >= 0.")
    return w


def _normalised(w: np.ndarray | None, unbiased: bool, name: str) -> np.ndarray | None:
    """Weights summing to 1, or None when they are all equal (then exactly the unweighted metric)."""
    if w is None:
        return None
    positive = int((w > 0).sum())
    if positive < (2 if unbiased else 1):
        raise InputError(f"{name} has {positive} positive weight(s) after subsampling; at least "
                         f"{2 if unbiased else 1} are needed.")
    if (w == w[0]).all():
        return None
    return w / w.sum()


def _subsample(a, weights: np.ndarray | None, max_cells: int | None, rng: np.random.Generator,
               name: str) -> tuple[np.ndarray, np.ndarray | None]:
    n = a.shape[0]
    if max_cells is not None and n > max_cells:
        keep = np.sort(rng.choice(n, size=max_cells, replace=False))
        a = a[keep]
        weights = None if weights is None else weights[keep]
    dense = np.asarray(a.toarray() if sp.issparse(a) else a, dtype=np.float64)
    bad = ~np.isfinite(dense)
    if bad.any():
        raise InputError(
            f"{name} has {int(bad.sum())} non-finite value(s); drop or fill them explicitly before scoring."
        )
    return dense, weights


def _sq_distances(a: np.ndarray, b: np.ndarray, na: np.ndarray, nb: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances from |a|^2 + |b|^2 - 2ab, with rounding-level values set to 0."""
    d2 = na[:, None] + nb[None, :] - 2.0 * (a @ b.T)
    # below a few ulps of |a|^2 + |b|^2 the difference is rounding noise, not distance
    tol = 64.0 * np.finfo(np.float64).eps * (na[:, None] + nb[None, :])
    d2[d2 <= tol] = 0.0
    return d2


def _squared_blocks(pred_cells, true_cells, max_cells, seed, pred_cell_weights=None, true_cell_weights=None):
    """Squared Euclidean distances within pred, within true and between them (subsampled cells),
    and the subsampled cells' weights (None when not given).

    The three blocks are separate products, so identical samples give bit-identical blocks.
    """
    x = _cells(pred_cells, "pred_cells")
    y = _cells(true_cells, "true_cells")
    wx = _cell_weights(pred_cell_weights, x.shape[0], "pred_cell_weights")
    wy = _cell_weights(true_cell_weights, y.shape[0], "true_cell_weights")
    if x.shape[1] != y.shape[1]:
        raise GeneMismatchError(
            f"pred_cells has {x.shape[1]} genes but true_cells has {y.shape[1]}; use the same genes in the same order."
        )
    if max_cells is not None and (int(max_cells) != max_cells or max_cells < 2):
        raise InputError(f"max_cells must be an integer >= 2 or None; got {max_cells!r}.")
    rng = np.random.default_rng(seed)
    x, wx = _subsample(x, wx, max_cells, rng, "pred_cells")
    y, wy = _subsample(y, wy, max_cells, rng, "true_cells")
    centre = (x.sum(axis=0) + y.sum(axis=0)) / (x.shape[0] + y.shape[0])
    x, y = x - centre, y - centre  # centring reduces the cancellation of |a|^2 + |b|^2 - 2ab
    nx, ny = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    dxx, dyy, dxy = _sq_distances(x, x, nx, nx), _sq_distances(y, y, ny, ny), _sq_distances(x, y, nx, ny)
    np.fill_diagonal(dxx, 0.0)
    np.fill_diagonal(dyy, 0.0)
    return dxx, dyy, dxy, wx, wy


def _upper(d: np.ndarray, keep) -> np.ndarray:
    """Distances between distinct cells among ``keep`` (upper triangle)."""
    d = d[keep][:, keep]
    return d[np.triu_indices(d.shape[0], k=1)]


def _within_mean(k: np.ndarray, a: np.ndarray | None, unbiased: bool) -> float:
    """(Weighted) mean of a within-sample block; self-pairs excluded when unbiased."""
    if a is None:
        n = k.shape[0]
        return float((k.sum() - np.trace(k)) / (n * (n - 1)) if unbiased else k.mean())
    if unbiased:
        return float((a @ k @ a - (a**2 * np.diag(k)).sum()) / (1.0 - (a**2).sum()))
    return float(a @ k @ a)


def _block_means(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, unbiased: bool,
                 ax: np.ndarray | None = None, ay: np.ndarray | None = None) -> tuple[float, float, float]:
    """Means of the within (diagonal excluded when unbiased) and between blocks; ``ax``, ``ay``:
    normalised cell weights (None: uniform)."""
    if ax is None and ay is None:
        mxy = kxy.mean()
    else:
        mxy = (np.full(kxy.shape[0], 1.0 / kxy.shape[0]) if ax is None else ax) @ kxy @ (
            np.full(kxy.shape[1], 1.0 / kxy.shape[1]) if ay is None else ay)
    return _within_mean(kxx, ax, unbiased), _within_mean(kyy, ay, unbiased), float(mxy)


def energy_distance(
    pred_cells: Any,
    true_cells: Any,
    *,
    max_cells: int | None = 1000,
    seed: int | np.random.Generator | None = 0,
    unbiased: bool = False,
    pred_cell_weights: Any = None,
    true_cell_weights: Any = None,
) -> float:
    r"""Energy distance between predicted and true cells of one perturbation.

    Parameters
    ----------
    pred_cells, true_cells : array-like or sparse matrix of shape (n_cells, n_genes)
        Cells of one perturbation (e.g. log1p-normalised expression, or a PCA embedding), same
        genes in the same order; at least 2 cells each.
    max_cells : int or None, default 1000
        Each side is subsampled (without replacement) to at most this many cells; None uses all.
    seed : int, numpy.random.Generator or None, default 0
        Randomness of the subsampling (unused when no side exceeds ``max_cells``).
    unbiased : bool, default False
        False: V-statistic (within-sample means include the zero self-distances); it is the
        energy distance between the two empirical distributions, always >= 0 and exactly 0 when
        the samples are identical. True: U-statistics (self-pairs excluded), unbiased for the
        population value but can be slightly negative.
    pred_cell_weights, true_cell_weights : array-like of shape (n_cells,), optional
        Non-negative weight of each cell of that side (subsampled with its cell): the side is
        the weighted empirical distribution :math:`\sum_i a_i \delta_{x_i}`,
        :math:`a_i = w_i / \sum_j w_j` (see Notes). None, or all weights equal: every cell
        counts the same (exactly the unweighted value).

    Returns
    -------
    float
        Lower is better, 0 for identical samples.

    Raises
    ------
    InputError
        Non-finite values, fewer than 2 cells, bad ``max_cells`` or bad cell weights (negative,
        wrong length, no positive weight; with ``unbiased=True`` fewer than 2).
    GeneMismatchError
        The two sides have different numbers of genes.

    Notes
    -----
    With Euclidean (not squared) distances,

    .. math:: \mathcal E = 2\,\mathbb E\lVert X - Y\rVert - \mathbb E\lVert X - X'\rVert
              - \mathbb E\lVert Y - Y'\rVert ,

    each expectation taken over the (weighted) empirical distributions: with normalised weights
    :math:`a_i` (pred) and :math:`b_j` (true; :math:`1/n` when unweighted), the V-statistic is

    .. math:: \mathcal E_w = 2\sum_{i,j} a_i b_j \lVert x_i - y_j\rVert
              - \sum_{i,i'} a_i a_{i'} \lVert x_i - x_{i'}\rVert
              - \sum_{j,j'} b_j b_{j'} \lVert y_j - y_{j'}\rVert ,

    the energy distance between the two weighted empirical distributions (integer weights are
    the same as repeating cells; a weight of 0 is the same as deleting the cell). The
    U-statistic replaces :math:`\sum_{i,i'} a_i a_{i'} d_{ii'}` by
    :math:`\sum_{i \ne i'} a_i a_{i'} d_{ii'} / (1 - \sum_i a_i^2)` (the unbiased
    :math:`\sum_{i \ne i'} d_{ii'}/(n(n-1))` for equal weights).

    not square-rooted (``scipy.stats.energy_distance`` returns :math:`\sqrt{\mathcal E}` for
    one-dimensional samples; this function agrees with it). Conventions elsewhere differ:
    scPerturb's E-distance uses *squared* Euclidean distances in PCA space with :math:`n-1`
    denominators, pertpy Euclidean distances in PCA space, cell-eval Euclidean distances on all
    genes (pert vs control). Values are only comparable within one convention.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import energy_distance
    >>> cells = np.random.default_rng(0).normal(size=(50, 5))
    >>> energy_distance(cells, cells)
    0.0
    >>> energy_distance(cells + 3.0, cells) > 1.0
    True
    """
    dxx, dyy, dxy, wx, wy = _squared_blocks(pred_cells, true_cells, max_cells, seed, pred_cell_weights,
                                            true_cell_weights)
    ax, ay = _normalised(wx, unbiased, "pred_cell_weights"), _normalised(wy, unbiased, "true_cell_weights")
    mxx, myy, mxy = _block_means(np.sqrt(dxx), np.sqrt(dyy), np.sqrt(dxy), bool(unbiased), ax, ay)
    value = 2.0 * mxy - mxx - myy
    return 0.0 if value == 0.0 else value


def mmd(
    pred_cells: Any,
    true_cells: Any,
    *,
    bandwidth: float | None = None,
    max_cells: int | None = 1000,
    seed: int | np.random.Generator | None = 0,
    unbiased: bool = False,
    pred_cell_weights: Any = None,
    true_cell_weights: Any = None,
) -> float:
    r"""Squared maximum mean discrepancy with a Gaussian (RBF) kernel, median-heuristic bandwidth.

    Parameters
    ----------
    pred_cells, true_cells : array-like or sparse matrix of shape (n_cells, n_genes)
        Cells of one perturbation, same genes in the same order; at least 2 cells each.
    bandwidth : float, optional
        Kernel width :math:`\sigma`. Default: the median heuristic, the median Euclidean
        distance between distinct pooled cells of positive weight (if that median is 0, the
        median of the positive distances; if all cells coincide, the MMD is 0).
    max_cells : int or None, default 1000
        Each side is subsampled (without replacement) to at most this many cells; None uses all.
    seed : int, numpy.random.Generator or None, default 0
        Randomness of the subsampling.
    unbiased : bool, default False
        False: V-statistic (>= 0, exactly 0 for identical samples). True: the unbiased
        U-statistic of Gretton et al. (self-pairs excluded within each sample).
    pred_cell_weights, true_cell_weights : array-like of shape (n_cells,), optional
        Non-negative per-cell weights, as in :func:`energy_distance`.

    Returns
    -------
    float
        :math:`\mathrm{MMD}^2`; lower is better, 0 for identical samples.

    Raises
    ------
    InputError
        Non-finite values, fewer than 2 cells, bad ``max_cells``, bad cell weights or a
        non-positive ``bandwidth``.
    GeneMismatchError
        The two sides have different numbers of genes.

    Notes
    -----
    .. math:: k(a,b) = \exp\!\Big(-\frac{\lVert a-b\rVert^2}{2\sigma^2}\Big),\qquad
              \mathrm{MMD}^2 = \mathbb E\,k(X,X') + \mathbb E\,k(Y,Y') - 2\,\mathbb E\,k(X,Y) .

    With cell weights, each expectation is over the weighted empirical distributions (normalised
    weights :math:`a_i`, :math:`b_j`):
    :math:`\sum_{i,i'} a_i a_{i'} k(x_i, x_{i'}) + \sum_{j,j'} b_j b_{j'} k(y_j, y_{j'})
    - 2 \sum_{i,j} a_i b_j k(x_i, y_j)` (V-statistic; the U-statistic as in
    :func:`energy_distance`).

    The median heuristic is computed on the pooled sample after subsampling (the cells of
    positive weight, unweighted, so a weight of 0 is the same as deleting the cell), so the
    bandwidth adapts to each perturbation (values are not comparable across bandwidths).

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.metrics import mmd
    >>> cells = np.random.default_rng(0).normal(size=(50, 5))
    >>> mmd(cells, cells)
    0.0
    """
    dxx, dyy, dxy, wx, wy = _squared_blocks(pred_cells, true_cells, max_cells, seed, pred_cell_weights,
                                            true_cell_weights)
    ax, ay = _normalised(wx, unbiased, "pred_cell_weights"), _normalised(wy, unbiased, "true_cell_weights")
    if bandwidth is None:
        px = slice(None) if wx is None else wx > 0
        py = slice(None) if wy is None else wy > 0
        upper = np.concatenate([_upper(dxx, px), _upper(dyy, py), dxy[px][:, py].ravel()])
        sigma2 = float(np.median(upper))
        if sigma2 == 0.0:
            positive = upper[upper > 0]
            if positive.size == 0:
                return 0.0
            sigma2 = float(np.median(positive))
    else:
        if not (np.isfinite(bandwidth) and bandwidth > 0):
            raise InputError(f"bandwidth must be a positive number or None (median heuristic); got {bandwidth!r}.")
        sigma2 = float(bandwidth) ** 2
    scale = -1.0 / (2.0 * sigma2)
    kxx, kyy, kxy = _block_means(np.exp(dxx * scale), np.exp(dyy * scale), np.exp(dxy * scale), bool(unbiased),
                                 ax, ay)
    value = kxx + kyy - 2.0 * kxy
    return 0.0 if value == 0.0 else value
