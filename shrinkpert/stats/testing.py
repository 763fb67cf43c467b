r"""The package's one Welch test and one Benjamini–Hochberg adjustment, from group summaries.

Every stage that tests a group against another calls these functions: effect sizes
(:func:`~shrinkpert.estimate_effects`), knockdown standard errors, the DE calls of
:func:`~shrinkpert.evaluate`, Mejia et al.'s interpolated duplicate. They work on per-group
*variance terms* (the sampling variance of each group's estimate, e.g. :math:`s^2/n`), so the same
code serves effects on the log1p scale and delta-method log2 fold changes.

Welch with the control variance floor
--------------------------------------
For a group :math:`a` (the perturbation) with variance term :math:`v_a` from :math:`n_a` cells and
a reference group :math:`b` (the control) with :math:`v_b` from :math:`n_b` cells,

.. math::

    \mathrm{SE} = \sqrt{v_a + v_b}, \qquad
    \nu = \frac{(v_a + v_b)^2}{v_a^2/\nu_a + v_b^2/\nu_b}, \qquad
    \nu_a = n_a - 1,\ \nu_b = n_b - 1 .

With ``floor_at_b`` (the default of every caller in this package), :math:`a`'s *per-cell*
variance is never taken below :math:`b`'s: :math:`v_a' = \max(v_a, v_b\,n_b/n_a)`, and a floored
term enters the Welch–Satterthwaite degrees of freedom with :math:`\nu_b`. It only widens standard
errors; plain Welch over-calls sparse genes in small groups (``docs/effects.md``).

Zero and undefined variances are the caller's to resolve before the call (the rule is part of
what the caller documents): :func:`~shrinkpert.estimate_effects` gives a constant group the
variance one detection-limit step would add; the DE calls of :func:`~shrinkpert.evaluate` count
an undefined variance (a group of one cell) as 0. Where :math:`v_a + v_b = 0` the test has no
evidence either way: :math:`\nu = 1` and :math:`p = 1`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._arrays import row_order
from ..errors import InputError

__all__ = ["WelchTest", "welch", "welch_pvalue", "t_sf", "bh_adjust", "welch_bh"]


@dataclass(frozen=True)
class WelchTest:
    """Standard error, degrees of freedom and where the control variance floor applied.

    Attributes
    ----------
    std_error, df : ndarray
        :math:`\\mathrm{SE}` and Welch–Satterthwaite :math:`\\nu` (broadcast shape of the inputs).
    floored : ndarray of bool
        Where :math:`v_a` was raised to :math:`v_b n_b / n_a` (all False without the floor).
    """

    std_error: np.ndarray
    df: np.ndarray
    floored: np.ndarray


def welch(v_a, n_a, v_b, n_b, *, floor_at_b: bool = True) -> WelchTest:
    r"""Welch standard error and degrees of freedom from variance terms (see the module docstring).

    Parameters
    ----------
    v_a, v_b : array_like
        Variance terms of the two groups' estimates (e.g. :math:`s_a^2/n_a`); broadcast together.
    n_a, n_b : array_like
        Cell counts (broadcast against the variance terms).
    floor_at_b : bool
        Apply the control variance floor :math:`v_a' = \max(v_a, v_b n_b / n_a)`.

    Returns
    -------
    WelchTest

    Examples
    --------
    >>> import numpy as np
    >>> t = welch(np.array([0.5]), 10, np.array([0.01]), 100)
    >>> bool(t.std_error[0] == np.sqrt(0.5 + 0.01)), bool(t.floored[0])
    (True, False)
    >>> t = welch(np.array([0.5]), 10, np.array([0.1]), 100)  # per cell 0.1 * 100 > 0.5 * 10
    >>> bool(t.std_error[0] == np.sqrt(0.1 * 10 + 0.1)), bool(t.floored[0])
    (True, True)
    """
    from ._welch_kernels import welch_terms

    args = [np.asarray(x, dtype=np.float64) for x in (v_a, n_a, v_b, n_b)]
    shape = np.broadcast_shapes(*(a.shape for a in args))
    if len(shape) > 2:  # rows × genes after flattening the leading axes (copies; no caller does this)
        args = [np.broadcast_to(a, shape).reshape(-1, shape[-1]) for a in args]
    # each argument 2-D with one or all rows and columns: the kernel broadcasts by index (no
    # broadcast copies)
    args = [np.ascontiguousarray(a.reshape((1,) * (2 - a.ndim) + a.shape)) for a in args]
    out_shape = (int(np.prod(shape[:-1], dtype=np.int64)), shape[-1]) if shape else (1, 1)
    std_error, df = np.empty(out_shape), np.empty(out_shape)
    floored = np.empty(out_shape, dtype=bool)
    welch_terms(*args, bool(floor_at_b), std_error, df, floored)
    return WelchTest(std_error=std_error.reshape(shape), df=df.reshape(shape), floored=floored.reshape(shape))


def welch_pvalue(difference, test: WelchTest) -> np.ndarray:
    r"""Two-sided p-value :math:`2\,P(T_\nu > |d|/\mathrm{SE})`; 1 where the SE is 0.

    Where :math:`d = 0` (and :math:`\nu > 0`) the value is 1 without evaluating the t tail
    (:math:`P(T_\nu > 0) = 1/2` exactly).
    """
    from ._welch_kernels import welch_p

    arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (difference, test.std_error, test.df)))
    out = np.empty(arrays[0].shape)
    welch_p(*(np.ascontiguousarray(a).ravel() for a in arrays), out.reshape(-1))  # one pass, in Numba's threads
    return out


def t_sf(t, df) -> np.ndarray:
    """Student-t upper tail :math:`P(T_{df} > t)` (``scipy.special.stdtr(df, -t)``), in Numba's threads.

    Evaluated by the kernel :func:`~shrinkpert.stats._t_kernels.t_tail` (its module docstring
    gives the formulas): ~50 ns per value on one thread, against ~220 ns for ``stdtr``, with a
    relative error below :math:`10^{-14}` down to tails of :math:`10^{-300}`. Any ``t`` and ``df``
    (broadcast together): negative ``t`` gives :math:`1 - P(T_{df} > |t|)`, ``df = inf`` the normal
    tail, NaN or ``df <= 0`` NaN. Each value is computed on its own, so the result does not
    depend on the thread count.
    """
    from ._t_kernels import t_tail_array

    t, df = np.broadcast_arrays(np.asarray(t, dtype=np.float64), np.asarray(df, dtype=np.float64))
    flat_t, flat_df = np.ascontiguousarray(t).ravel(), np.ascontiguousarray(df).ravel()
    out = np.empty(flat_t.size)
    t_tail_array(flat_t, flat_df, out)
    return out.reshape(t.shape)


def bh_adjust(p, *, axis: int = -1) -> np.ndarray:
    r"""Benjamini–Hochberg adjusted p-values along ``axis`` (R's ``p.adjust(method = "BH")``).

    :math:`q_{(i)} = \min\big(1, \min_{j \ge i} m\,p_{(j)}/j\big)` for the sorted
    :math:`p_{(1)} \le \dots \le p_{(m)}` of each slice; tied p-values get the same value.

    Examples
    --------
    >>> bh_adjust([0.01, 0.04, 0.03]).round(3).tolist()
    [0.03, 0.04, 0.04]
    """
    p = np.moveaxis(np.asarray(p, dtype=np.float64), axis, -1)
    if p.shape[-1] == 0:
        return np.moveaxis(p.copy(), -1, axis)
    return np.moveaxis(_bh_sorted(p)[0], -1, axis)


def _bh_sorted(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """BH along the last axis of ``p`` (at least one value), and the order that sorts ``p`` there.

    The order also sorts the adjusted values (they are non-decreasing in :math:`p`), so callers
    that rank genes by ``q`` reuse it instead of sorting again.
    """
    from ._bh_kernels import bh_from_order

    shape, m = p.shape, p.shape[-1]
    p = np.ascontiguousarray(p.reshape(-1, m))
    ones = p == 1.0
    if ones.mean() > 0.5 and p.max() <= 1.0:  # (False with a NaN)
        order = np.empty(p.shape, dtype=np.int64)
        _order_below_one(p, ones, order)
    else:
        order = row_order(p)
    out = np.empty(p.shape)
    bh_from_order(p, order, out)
    if out.shape == shape:  # the arrays themselves, not views: callers that freeze them keep them uncopied
        return out, order
    return out.reshape(shape), order.reshape(shape)


def _order_below_one(p: np.ndarray, ones: np.ndarray, order: np.ndarray) -> None:
    """A sorting order of each row of ``p`` (no NaN, at most 1) that sorts only the values below 1.

    The values equal to 1 are the largest, so they follow in gene order (any order of ties serves
    BH and the ranking metrics).
    """
    m = p.shape[1]
    rows, cols = np.nonzero(~ones)
    sort = np.lexsort((p[rows, cols], rows))
    below = np.bincount(rows, minlength=p.shape[0])
    starts = np.r_[0, np.cumsum(below)[:-1]]
    order[rows[sort], np.arange(rows.size) - starts[rows[sort]]] = cols[sort]
    rows, cols = np.nonzero(ones)
    first = np.r_[0, np.cumsum(m - below)[:-1]]
    order[rows, below[rows] + np.arange(rows.size) - first[rows]] = cols


#: Relative margins of the pruned calls of :func:`welch_bh` (far above rounding, far below any
#: meaningful change of ``alpha``).
_Z_MARGIN, _P_MARGIN = 1e-6, 2.0**-30


def welch_bh(difference, test: WelchTest, *, alpha: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    r"""BH-adjusted Welch p-values of each row: ``bh_adjust(welch_pvalue(difference, test))``.

    Parameters
    ----------
    difference : array_like of shape (n_rows, m)
        Differences tested (broadcast with the test's arrays to a matrix).
    test : WelchTest
    alpha : float, optional
        When given, only the calls :math:`q < \alpha` are computed exactly (see Notes).

    Returns
    -------
    q : ndarray of shape (n_rows, m)
        Adjusted p-values along each row.
    order : ndarray of int64 or None
        Without ``alpha``, a permutation of each row that sorts ``q`` ascending (ties in an
        unspecified order); None with ``alpha``.

    Notes
    -----
    *Pruning rule* (with ``alpha``). The adjusted value is never below the p-value: every term of
    the minimum that defines :math:`q_{(i)}` is 1 or :math:`m p_{(j)}/j \ge p_{(j)} \ge p_{(i)}`
    (:math:`i \le j \le m`), so a gene with :math:`p \ge \alpha` is never called; and the two-sided t tail is heavier than the normal one for every :math:`\nu > 0`
    (:math:`T = Z/S` with :math:`E S^2 = 1` and :math:`u \mapsto \Phi(-x\sqrt u)` convex), so
    :math:`|t| < z_{1-\alpha'/2}` implies :math:`p > \alpha'`. Hence the t tail is evaluated only
    where :math:`|t| \ge z_{1 - \alpha(1 + 10^{-6})/2}`, and BH sorts only the p-values below
    :math:`\alpha(1 + 2^{-30})`: every other term of the minimum is at least :math:`\alpha` (the
    margins cover rounding), so each :math:`q < \alpha` equals the unpruned value bit for bit
    (ties included: tied p-values share one ``q`` whatever their order). The same holds with
    :math:`\alpha` replaced by :math:`\alpha K'/m` in both cuts, for any :math:`K'` at least the
    row's number of calls :math:`K` (every call has :math:`p < \alpha K/m`, and the sorted terms
    past rank :math:`K` are at least :math:`\alpha`); :func:`_call_level` finds such a :math:`K'`
    from the normal bound alone, so a row with few calls evaluates few t tails. Every gene with
    :math:`q \ge \alpha` gets ``q = 1``. Use it only where nothing but ``q < alpha`` is read.
    Rows with a non-finite difference or standard error, or a df that is not finite and positive,
    are computed without pruning.
    """
    diff = np.asarray(difference, dtype=np.float64)
    se = np.asarray(test.std_error, dtype=np.float64)
    df = np.asarray(test.df, dtype=np.float64)
    shape = np.broadcast_shapes(diff.shape, se.shape, df.shape)
    if len(shape) != 2:
        raise InputError(f"welch_bh tests the rows of a matrix; got shape {shape}: pass 2-D differences.")
    diff, se, df = np.broadcast_arrays(diff, se, df)
    if shape[1] == 0:
        return np.ones(shape), (None if alpha is not None else np.zeros(shape, dtype=np.int64))
    if alpha is None:
        return _bh_sorted(welch_pvalue(diff, WelchTest(se, df, test.floored)))
    a = float(alpha)
    if not 0.0 < a <= 1.0:
        raise InputError(f"welch_bh: alpha must be in (0, 1]; got {alpha!r}.")
    finite = np.isfinite(diff).all(axis=1) & np.isfinite(se).all(axis=1) & (np.isfinite(df) & (df > 0)).all(axis=1)
    q = np.ones(shape)
    if not finite.all():  # the unpruned rule (NaN propagates through BH as it does there)
        bad = ~finite
        q[bad] = bh_adjust(welch_pvalue(diff[bad], WelchTest(se[bad], df[bad], test.floored)))
    positive = (se > 0) & finite[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.abs(diff / np.where(positive, se, 1.0))
    rows, cols = np.nonzero(positive & (t >= _normal_cut(a)) & (t > 0))
    level = _call_level(rows, t[rows, cols], shape, a)
    keep = t[rows, cols] >= _normal_cut(level)[rows]
    rows, cols = rows[keep], cols[keep]
    p = 2.0 * t_sf(t[rows, cols], df[rows, cols])
    keep = p < level[rows] * (1.0 + _P_MARGIN)
    return _bh_below(q, rows[keep], cols[keep], p[keep], a), None


def _normal_cut(level):
    r"""The :math:`|t|` below which the two-sided p-value exceeds ``level``: :math:`z_{1 - \ell(1 + 10^{-6})/2}`
    (0 where that level reaches 2, infinite where it is 0)."""
    wide = np.asarray(level, dtype=np.float64) * (1.0 + _Z_MARGIN)
    from scipy import special

    return np.where(wide < 2.0, special.ndtri(1.0 - np.minimum(wide, 2.0) / 2.0), 0.0)


def _call_level(rows: np.ndarray, t: np.ndarray, shape: tuple[int, int], alpha: float) -> np.ndarray:
    r"""Per row, a level :math:`\alpha K/m` below which every BH call's p-value lies.

    BH calls the genes of rank :math:`j \le K`, :math:`K` the largest :math:`j` with
    :math:`m p_{(j)}/j < \alpha`, so each call has :math:`p \le p_{(K)} < \alpha K/m`. If
    :math:`K \le K_n`, every call has :math:`|t| \ge z_{1 - \alpha K_n/(2m)}` (the normal bound of
    :func:`welch_bh`), so :math:`K \le K_{n+1}`, the number of such genes. Starting from the genes
    given (``t`` at ``rows``: those past the cut of ``alpha`` itself, :math:`K_0`), the counts
    shrink to a fixed point: the calls of a row with few true effects need the t tail of few genes.
    """
    count = np.bincount(rows, minlength=shape[0])
    while True:
        level = alpha * count / shape[1]
        keep = t >= _normal_cut(level)[rows]
        rows, t = rows[keep], t[keep]
        smaller = np.bincount(rows, minlength=shape[0])
        if (smaller == count).all():
            return level
        count = smaller


def _bh_below(q: np.ndarray, rows: np.ndarray, cols: np.ndarray, p: np.ndarray, alpha: float) -> np.ndarray:
    r"""Write into ``q`` the BH values below ``alpha`` of the p-values ``p`` at ``(rows, cols)``,
    1 at the other given positions; every p-value not given must be at least
    ``level * (1 + 2**-30)``, where ``level`` is at least :math:`\alpha K/m` and :math:`K` is the
    number of calls of its row (:func:`_call_level`; ``alpha`` itself always qualifies): the pruning
    rule of :func:`welch_bh`.

    With most positions given (e.g. a side with huge effects, every gene called), the p-values are
    sorted as whole rows (absent ones as +inf, last): the same values as one sort of the scattered
    positions, faster.
    """
    m = q.shape[1]
    if rows.size > q.size // 4:
        dense = np.full(q.shape, np.inf)
        dense[rows, cols] = p
        ranked = _bh_sorted(dense)[0][rows, cols]  # (tied p-values get one value whatever their order)
        q[rows, cols] = np.where(ranked < alpha, ranked, 1.0)
        return q
    sort = np.lexsort((p, rows))
    rows, cols, p = rows[sort], cols[sort], p[sort]
    bounds = np.searchsorted(rows, np.arange(q.shape[0] + 1))
    ranked = p * m / (np.arange(p.size) - bounds[rows] + 1)
    for r in np.flatnonzero(np.diff(bounds)):
        lo, hi = bounds[r], bounds[r + 1]
        ranked[lo:hi] = np.minimum.accumulate(ranked[lo:hi][::-1])[::-1]
    q[rows, cols] = np.where(ranked < alpha, np.minimum(ranked, 1.0), 1.0)
    return q
