"""Differential-expression (DE) metrics: do predicted DE calls recover the true ones?

Each side (truth, prediction) is a :class:`DECalls`: a log fold change and a significance value
``q`` per (perturbation, gene), where smaller ``q`` means more significant and a gene is called
DE when ``q < alpha``. ``q`` can come from anywhere:

* a test: BH-adjusted p-values (:meth:`DECalls.from_effects` runs Welch t-tests on
  :class:`~shrinkpert.EffectSizes` and adjusts per perturbation; cell-eval uses Mann-Whitney FDRs);
* shrinkage: the local false sign rate ``lfsr`` of shrunken effects
  (:meth:`DECalls.from_shrunk`), which is also an error rate, so ``lfsr < alpha`` is a DE call;
* a long table (:meth:`DECalls.from_frame`, e.g. cell-eval/pdex CSVs).

The metrics never mix conventions: the caller decides how each side's calls were made and
``alpha`` applies to both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from .._arrays import freeze, kept_readonly, kernel_input, row_order
from . import _de_kernels as _dk
from ..stats.testing import bh_adjust, t_sf
from ..errors import GeneMismatchError, InputError, MissingKeyError
from .shared import SharedIntermediates, reuse
from .expression import _as_matrix, _finish, _pearson_rows, _support_midranks

__all__ = [
    "DECalls",
    "overlap_at_n",
    "precision_at_n",
    "de_recall",
    "de_direction_match",
    "de_spearman_lfc",
    "pr_auc",
    "roc_auc",
]


@dataclass(frozen=True, eq=False)
class DECalls:
    """DE results of one side: log fold changes and significance values, gene by gene.

    Parameters
    ----------
    lfc : array-like of shape (n_genes,) or (n_perturbations, n_genes)
        Effect size used to order DE genes (log fold change, shrunken posterior mean, ...).
    q : array-like, same shape as ``lfc``
        Significance in [0, 1], smaller = more significant: adjusted p-value, q-value or lfsr.
    perturbations, genes : sequence of str, optional
        Row and column labels; when both sides carry them, the metrics check they agree.
    q_order : array-like of int, optional
        A permutation of each row that sorts ``q`` ascending (ties in any order), e.g. the order in
        which BH sorted the p-values. The ranking metrics (:func:`pr_auc`, :func:`roc_auc`) use
        it instead of sorting ``q`` again; without it they sort once per object.

    Raises
    ------
    InputError
        Non-finite values, ``q`` outside [0, 1], shapes that differ, labels of the wrong length,
        or a ``q_order`` that is not a sorting permutation of ``q``.

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls
    >>> calls = DECalls(lfc=[1.5, -0.2, 0.0], q=[0.001, 0.3, 0.9])
    >>> calls.significant(0.05).tolist()
    [True, False, False]
    """

    lfc: np.ndarray
    q: np.ndarray
    perturbations: pd.Index | None = None
    genes: pd.Index | None = None
    q_order: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        lfc, vec_l = _as_matrix(self.lfc, "lfc")
        q, vec_q = _as_matrix(self.q, "q")
        if lfc.shape != q.shape or vec_l != vec_q:
            raise InputError(f"lfc has shape {np.shape(self.lfc)} but q has {np.shape(self.q)}; they must match.")
        if ((q < 0) | (q > 1)).any():
            raise InputError("q must lie in [0, 1] (an adjusted p-value, q-value or lfsr); got values outside.")
        shape = np.shape(self.lfc)
        # no copy of arrays nobody can write (the DE calls of evaluate are frozen when made)
        object.__setattr__(self, "lfc", kept_readonly(lfc.reshape(shape)))
        object.__setattr__(self, "q", kept_readonly(q.reshape(shape)))
        for name, n in (("perturbations", lfc.shape[0] if not vec_l else None), ("genes", lfc.shape[1])):
            labels = getattr(self, name)
            if labels is None:
                continue
            labels = pd.Index(labels).astype(str)
            if n is None:
                raise InputError(f"{name} given for a single perturbation (vector input); pass 2-D arrays.")
            if len(labels) != n:
                raise InputError(f"{name} has {len(labels)} labels but the arrays have {n}.")
            object.__setattr__(self, name, labels)
        if self.q_order is not None:
            object.__setattr__(self, "q_order", kept_readonly(_check_order(self.q_order, q), dtype=np.int64))

    def sorted_q(self) -> np.ndarray:
        """A permutation of each row of ``q`` (as a matrix) that sorts it ascending: ``q_order``
        when given, else computed once and kept."""
        if self.q_order is None:
            cached = self.__dict__.get("_order")
            if cached is None:
                cached = freeze(row_order(_mat(self.q)))
                object.__setattr__(self, "_order", cached)
            return cached
        return _mat(self.q_order)

    def significant(self, alpha: float = 0.05) -> np.ndarray:
        """Boolean DE calls ``q < alpha`` (same shape as ``q``)."""
        return self.q < _check_alpha(alpha)

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        perturbations: Sequence[str] | None = None,
        genes: Sequence[str] | None = None,
        perturbation_col: str = "target",
        gene_col: str = "feature",
        lfc_col: str = "log2_fold_change",
        q_col: str = "fdr",
    ) -> DECalls:
        """Calls from a long table, one row per (perturbation, gene) (cell-eval/pdex layout).

        Parameters
        ----------
        frame : pandas.DataFrame (or anything with ``to_pandas()``, e.g. a polars frame)
            Long table of DE results.
        perturbations, genes : sequence of str, optional
            Row and column order of the result (default: sorted labels found in ``frame``).
        perturbation_col, gene_col, lfc_col, q_col : str
            Column names (defaults: cell-eval's).

        Returns
        -------
        DECalls
            Matrices of shape (n_perturbations, n_genes) with the labels attached.

        Raises
        ------
        MissingKeyError
            A column is absent, or a (perturbation, gene) pair is missing from ``frame``.
        InputError
            Duplicate (perturbation, gene) rows.
        """
        if hasattr(frame, "to_pandas") and not isinstance(frame, pd.DataFrame):
            frame = frame.to_pandas()
        for col in (perturbation_col, gene_col, lfc_col, q_col):
            if col not in frame.columns:
                raise MissingKeyError(
                    f"Column {col!r} is not in the DE table (columns: {list(frame.columns)[:20]}); "
                    "pass perturbation_col=, gene_col=, lfc_col=, q_col= to name yours."
                )
        keys = frame[[perturbation_col, gene_col]].astype(str)
        if keys.duplicated().any():
            dup = keys[keys.duplicated()].iloc[0].tolist()
            raise InputError(f"The DE table has duplicate rows for (perturbation, gene) = {dup}.")
        found_perts = sorted(keys[perturbation_col].unique())
        perts = pd.Index(found_perts if perturbations is None else perturbations).astype(str)
        gene_index = pd.Index(sorted(keys[gene_col].unique()) if genes is None else genes).astype(str)
        rows = perts.get_indexer(keys[perturbation_col])
        cols = gene_index.get_indexer(keys[gene_col])
        keep = (rows >= 0) & (cols >= 0)
        lfc = np.full((len(perts), len(gene_index)), np.nan)
        q = np.full_like(lfc, np.nan)
        lfc[rows[keep], cols[keep]] = frame[lfc_col].to_numpy(dtype=np.float64)[keep]
        q[rows[keep], cols[keep]] = frame[q_col].to_numpy(dtype=np.float64)[keep]
        missing = np.isnan(lfc) & np.isnan(q)
        if missing.any():
            r, c = np.argwhere(missing)[0]
            raise MissingKeyError(
                f"The DE table has no row for {int(missing.sum())} (perturbation, gene) pairs, e.g. "
                f"({perts[r]!r}, {gene_index[c]!r}); every gene of every perturbation is needed "
                "(an untested gene has no call: add it with q=1 if that is what you mean)."
            )
        return cls(lfc=lfc, q=q, perturbations=perts, genes=gene_index)

    @classmethod
    def from_shrunk(cls, shrunk: Any) -> DECalls:
        """Calls from shrunken effects: ``lfc`` = posterior mean, ``q`` = local false sign rate.

        Parameters
        ----------
        shrunk : object with ``posterior_mean`` and ``lfsr``
            E.g. the result of adaptive shrinkage (per perturbation or for one vector).

        Returns
        -------
        DECalls
        """
        for attr in ("posterior_mean", "lfsr"):
            if not hasattr(shrunk, attr):
                raise InputError(f"{type(shrunk).__name__} has no attribute {attr!r}; pass shrunken effects.")
        return cls(
            lfc=np.asarray(shrunk.posterior_mean),
            q=np.asarray(shrunk.lfsr),
            perturbations=getattr(shrunk, "perturbations", None) if np.ndim(shrunk.lfsr) == 2 else None,
            genes=getattr(shrunk, "genes", None) if np.ndim(shrunk.lfsr) == 2 else None,
        )

    @classmethod
    def from_effects(cls, effects: Any) -> DECalls:
        r"""Calls from a Welch t-test on effect sizes, Benjamini–Hochberg within each perturbation.

        Parameters
        ----------
        effects : EffectSizes
            Any object with ``effect``, ``std_error``, ``df`` (perturbations × genes).

        Returns
        -------
        DECalls
            ``lfc`` = effect; ``q`` = BH-adjusted :math:`2\,T_\nu(-|\hat\beta/\mathrm{SE}|)` per row.

        Notes
        -----
        Uses the effect's own scale (log1p difference or log2 fold change) as ``lfc``.
        """
        z = np.asarray(effects.effect, dtype=np.float64) / np.asarray(effects.std_error, dtype=np.float64)
        p = 2.0 * t_sf(np.abs(z), np.asarray(effects.df, dtype=np.float64))
        if not np.isfinite(p).all():
            raise InputError("Some effects have non-finite t statistics (zero or NaN standard errors).")
        q = bh_adjust(p, axis=-1)
        return cls(
            lfc=np.asarray(effects.effect),
            q=q,
            perturbations=getattr(effects, "perturbations", None),
            genes=getattr(effects, "genes", None),
        )


def _check_order(order: Any, q: np.ndarray) -> np.ndarray:
    """``order`` as an int64 matrix like ``q`` (a matrix) if it permutes each row into ascending order."""
    try:
        o = np.asarray(order).reshape(q.shape)
    except ValueError as exc:
        raise InputError(f"q_order must have the shape of q {q.shape}; got {np.shape(order)}.") from exc
    if o.dtype.kind not in "iu" or (o.size and (o.min() < 0 or o.max() >= q.shape[1])):
        raise InputError("q_order must hold integer gene positions (0 .. n_genes - 1) for each row.")
    o = o.astype(np.int64, copy=False)
    if not _dk.sorts_rows(np.ascontiguousarray(q, dtype=np.float64), np.ascontiguousarray(o)):
        raise InputError("q_order must be, in each row, a permutation of the genes that sorts q ascending; "
                         "leave it out to let the metrics sort q.")
    return o


def _check_alpha(alpha: float) -> float:
    a = float(alpha)
    if not 0.0 < a <= 1.0:
        raise InputError(f"alpha must be in (0, 1]; got {alpha!r}.")
    return a


def _as_calls(x: Any, name: str) -> DECalls:
    if isinstance(x, DECalls):
        return x
    if isinstance(x, tuple) and len(x) == 2:
        return DECalls(lfc=x[0], q=x[1])
    raise InputError(f"{name} must be a DECalls (or a tuple (lfc, q)); got {type(x).__name__}.")


def _pair(pred: Any, truth: Any) -> tuple[DECalls, DECalls, bool]:
    p, t = _as_calls(pred, "pred"), _as_calls(truth, "truth")
    if p.q.shape != t.q.shape:
        if p.q.shape[-1] != t.q.shape[-1]:
            raise GeneMismatchError(
                f"pred has {p.q.shape[-1]} genes but truth has {t.q.shape[-1]}; align both to the same genes."
            )
        raise InputError(f"pred has shape {p.q.shape} but truth has {t.q.shape}; rows must be the same perturbations.")
    for attr, err in (("genes", GeneMismatchError), ("perturbations", InputError)):
        a, b = getattr(p, attr), getattr(t, attr)
        if a is not None and b is not None and not a.equals(b):
            raise err(f"pred and truth carry different {attr}; reorder one side to match the other.")
    return p, t, p.q.ndim == 1


def _mat(a: np.ndarray) -> np.ndarray:
    return a.reshape(1, -1) if a.ndim == 1 else a


def _top_positions(lfc: np.ndarray, sig: np.ndarray) -> np.ndarray:
    """Position of each gene in its row's list of significant genes sorted by |lfc| (descending).

    Non-significant genes come after all significant ones, in gene order; exact ties keep gene
    order. With few significant genes only those are sorted (one stable sort by row, then
    ``-|lfc|``); otherwise, or with a NaN among them (sorted last, after the others), whole rows.
    """
    n_sig = np.count_nonzero(sig)
    if n_sig <= sig.size // 4 and not np.isnan(lfc[sig]).any():
        rows, cols = np.nonzero(sig)  # row-major: genes ascending within a row
        sort = np.lexsort((-np.abs(lfc[rows, cols]), rows))  # stable: ties keep gene order
        count = np.bincount(rows, minlength=sig.shape[0])
        pos = count[:, None] + np.cumsum(~sig, axis=1) - 1  # non-significant genes, in gene order
        first = np.r_[0, np.cumsum(count)[:-1]]
        rows, cols = rows[sort], cols[sort]
        pos[rows, cols] = np.arange(rows.size) - first[rows]
        return pos
    key = np.where(sig, -np.abs(lfc), np.inf)
    order = row_order(key, kind="stable")
    pos = np.empty(order.size, dtype=np.int64)
    pos[(order + np.arange(0, order.size, order.shape[1])[:, None]).ravel()] = np.tile(
        np.arange(order.shape[1]), order.shape[0])
    return pos.reshape(order.shape)


def _significant(scope: dict | None, calls: DECalls, alpha: float) -> np.ndarray:
    """``q < alpha`` as a matrix, shared through ``scope``."""
    return reuse(scope, ("significant", alpha), lambda: _mat(calls.q) < alpha)


def _ranked(scope: dict | None, calls: DECalls, sig: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`_top_positions` of ``calls``, shared through ``scope`` (a side of :class:`SharedIntermediates`)."""
    return reuse(scope, ("top_positions", alpha), lambda: _top_positions(_mat(calls.lfc), sig))


def _k(n: int | None, count: np.ndarray) -> np.ndarray:
    if n is None:
        return count
    if int(n) != n or n < 1:
        raise InputError(f"n must be a positive integer or None (= number of true DE genes); got {n!r}.")
    return np.minimum(int(n), count)


def overlap_at_n(pred: Any, truth: Any, *, n: int | None = None, alpha: float = 0.05,
                 shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Share of the top true DE genes that are also among the top predicted DE genes.

    Parameters
    ----------
    pred, truth : DECalls or tuple (lfc, q)
        Predicted and true DE calls, same perturbations and genes.
    n : int, optional
        List length; ``None`` (cell-eval's ``overlap_at_N``) uses the number of true DE genes.
    alpha : float, default 0.05
        A gene is DE when ``q < alpha``.
    shared : SharedIntermediates, optional
        Where intermediates are shared with other metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [0, 1], higher is better; NaN for a perturbation without true DE genes.

    Raises
    ------
    InputError
        Bad inputs or ``n``.

    Notes
    -----
    With :math:`T` and :math:`\hat T` the true and predicted DE genes, each sorted by
    :math:`|\mathrm{lfc}|` (descending; exact ties in gene order), and
    :math:`k = \min(n, |T|)`,

    .. math:: \mathrm{overlap@}n = \frac{|\mathrm{top}_k(T) \cap \mathrm{top}_k(\hat T)|}{k} .

    Same as cell-eval's ``overlap_at_*`` (the VCC's DES for ``n=None``), except that a
    perturbation with no true DE genes is undefined (NaN) instead of 0.

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls, overlap_at_n
    >>> truth = DECalls(lfc=[2.0, 1.0, 0.1, 0.0], q=[0.001, 0.01, 0.5, 0.9])
    >>> pred = DECalls(lfc=[1.5, 0.0, 1.0, 0.0], q=[0.001, 0.6, 0.02, 0.9])
    >>> overlap_at_n(pred, truth)
    0.5
    """
    a = _check_alpha(alpha)
    p, t, vector = _pair(pred, truth)
    sig_t = _significant(shared.truth if shared else None, t, a)
    sig_p = _significant(shared.pred if shared else None, p, a)
    n_t = sig_t.sum(axis=1)
    k = _k(n, n_t)
    top_t = sig_t & (_ranked(shared.truth if shared else None, t, sig_t, a) < k[:, None])
    top_p = sig_p & (_ranked(shared.pred if shared else None, p, sig_p, a) < k[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (top_t & top_p).sum(axis=1) / k
    out = np.where(k == 0, np.nan, out)
    return _finish(out, vector)


def precision_at_n(pred: Any, truth: Any, *, n: int | None = None, alpha: float = 0.05,
                   shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Share of the top predicted DE genes that are truly DE (precision of the predicted list).

    Parameters
    ----------
    pred, truth : DECalls or tuple (lfc, q)
        Predicted and true DE calls, same perturbations and genes.
    n : int, optional
        List length; ``None`` uses the number of predicted DE genes.
    alpha : float, default 0.05
        A gene is DE when ``q < alpha``.
    shared : SharedIntermediates, optional
        Where intermediates are shared with other metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [0, 1], higher is better; NaN for a perturbation without predicted DE genes.

    Raises
    ------
    InputError
        Bad inputs or ``n``.

    Notes
    -----
    With :math:`k = \min(n, |\hat T|)`,

    .. math:: \mathrm{precision@}n = \frac{|\mathrm{top}_k(\hat T) \cap T|}{k} .

    Deliberate difference from cell-eval's ``precision_at_*``: cell-eval also truncates the
    *true* list to its top :math:`k`, so a correctly predicted DE gene ranked below :math:`k` in
    the truth counts as a false positive; here every true DE gene counts.

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls, precision_at_n
    >>> truth = DECalls(lfc=[2.0, 1.0, 0.1, 0.0], q=[0.001, 0.01, 0.5, 0.9])
    >>> pred = DECalls(lfc=[1.5, 0.0, 1.0, 0.0], q=[0.001, 0.6, 0.02, 0.9])
    >>> precision_at_n(pred, truth)
    0.5
    """
    a = _check_alpha(alpha)
    p, t, vector = _pair(pred, truth)
    sig_t = _significant(shared.truth if shared else None, t, a)
    sig_p = _significant(shared.pred if shared else None, p, a)
    k = _k(n, sig_p.sum(axis=1))
    top_p = sig_p & (_ranked(shared.pred if shared else None, p, sig_p, a) < k[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (top_p & sig_t).sum(axis=1) / k
    out = np.where(k == 0, np.nan, out)
    return _finish(out, vector)


def de_recall(pred: Any, truth: Any, *, alpha: float = 0.05) -> float | np.ndarray:
    r"""Share of the true DE genes that are also called DE in the prediction.

    Parameters
    ----------
    pred, truth : DECalls or tuple (lfc, q)
        Predicted and true DE calls.
    alpha : float, default 0.05
        A gene is DE when ``q < alpha``.

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [0, 1], higher is better; NaN without true DE genes.

    Raises
    ------
    InputError
        Bad inputs.

    Notes
    -----
    .. math:: \mathrm{recall} = |T \cap \hat T| / |T|

    cell-eval's ``de_sig_genes_recall``.

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls, de_recall
    >>> de_recall(DECalls([1.0, 1.0], [0.01, 0.5]), DECalls([1.0, 1.0], [0.01, 0.01]))
    0.5
    """
    a = _check_alpha(alpha)
    p, t, vector = _pair(pred, truth)
    sig_t, sig_p = _mat(t.q) < a, _mat(p.q) < a
    n_t = sig_t.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sig_t & sig_p).sum(axis=1) / n_t
    out = np.where(n_t == 0, np.nan, out)
    return _finish(out, vector)


def de_direction_match(pred: Any, truth: Any, *, alpha: float = 0.05) -> float | np.ndarray:
    r"""Share of the true DE genes whose predicted change has the true sign.

    Parameters
    ----------
    pred, truth : DECalls or tuple (lfc, q)
        Predicted and true DE calls (the prediction's ``q`` is not used).
    alpha : float, default 0.05
        A gene is truly DE when its true ``q < alpha``.

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [0, 1], higher is better; NaN without true DE genes.

    Raises
    ------
    InputError
        Bad inputs.

    Notes
    -----
    .. math:: \frac{1}{|T|}\sum_{g \in T}\mathbb 1[\operatorname{sign}\hat\ell_g =
              \operatorname{sign}\ell_g]

    (a predicted change of exactly 0 matches only a true change of 0). cell-eval's
    ``de_direction_match``.

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls, de_direction_match
    >>> de_direction_match(DECalls([1.0, 1.0], [0.5, 0.5]), DECalls([2.0, -1.0], [0.01, 0.01]))
    0.5
    """
    a = _check_alpha(alpha)
    p, t, vector = _pair(pred, truth)
    sig_t = _mat(t.q) < a
    n_t = sig_t.sum(axis=1)
    same = np.sign(_mat(p.lfc)) == np.sign(_mat(t.lfc))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (same & sig_t).sum(axis=1) / n_t
    out = np.where(n_t == 0, np.nan, out)
    return _finish(out, vector)


def de_spearman_lfc(pred: Any, truth: Any, *, alpha: float = 0.05,
                    shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Spearman correlation of predicted and true log fold changes over the true DE genes.

    Parameters
    ----------
    pred, truth : DECalls or tuple (lfc, q)
        Predicted and true DE calls (the prediction's ``q`` is not used).
    alpha : float, default 0.05
        A gene is truly DE when its true ``q < alpha``.
    shared : SharedIntermediates, optional
        Where intermediates are shared with other metrics of the same inputs
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [-1, 1], higher is better; NaN with fewer than 2 true DE genes or constant changes.

    Raises
    ------
    InputError
        Bad inputs.

    Notes
    -----
    Spearman's :math:`\rho` (average ranks for ties) over the true DE genes :math:`T`,

    .. math:: \rho = \operatorname{corr}\big(\operatorname{rank}(\hat\ell_g),
              \operatorname{rank}(\ell_g)\big)_{g \in T} ,

    cell-eval's ``de_spearman_lfc_sig`` (which scores a gene absent from the prediction as 0;
    here every gene must be present).

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls, de_spearman_lfc
    >>> de_spearman_lfc(DECalls([1.0, 2.0, 9.0], [1, 1, 1]), DECalls([0.5, 0.7, 3.0], [0.01, 0.01, 0.01]))
    1.0
    """
    a = _check_alpha(alpha)
    p, t, vector = _pair(pred, truth)
    scope = shared.truth if shared else None
    w = reuse(scope, ("de_mask", a), lambda: (_mat(t.q) < a).astype(np.float64))
    rt = reuse(scope, ("de_midranks", a), lambda: _support_midranks(_mat(t.lfc), w))
    rho = _pearson_rows(_support_midranks(_mat(p.lfc), w), rt, w)
    return _finish(rho, vector)


def _auc_groups(pred: Any, truth: Any, alpha: float, q_floor: float, shared: SharedIntermediates | None):
    """The tie groups of the prediction's ``max(q, q_floor)`` (ascending) in each row, as flat arrays
    over the groups: row, position of the group's last gene, its first gene, true DE genes up to
    its end and within it; plus the number of true DE genes per row, of genes, and the vector flag.

    Shared through ``shared.pred`` by :func:`pr_auc` and :func:`roc_auc`; every quantity is
    independent of the order of genes within a tie group.
    """
    a = _check_alpha(alpha)
    floor = float(q_floor)
    if not 0.0 <= floor < 1.0:
        raise InputError(f"q_floor must be in [0, 1); got {q_floor!r}.")
    p, t, vector = _pair(pred, truth)

    def compute():
        q, labels = kernel_input(_mat(p.q)), np.ascontiguousarray(_mat(t.q) < a)
        order = np.ascontiguousarray(p.sorted_q(), dtype=np.int64)
        n_rows, n_genes = q.shape
        counts = np.empty(n_rows, dtype=np.int64)
        _dk.auc_group_counts(q, order, floor, counts)
        offsets = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
        rows, last, start, tp_end, gained = (np.empty(int(counts.sum()), dtype=np.int64) for _ in range(5))
        n_pos = np.empty(n_rows, dtype=np.int64)
        _dk.auc_groups(q, order, labels, floor, offsets, rows, last, start, tp_end, gained, n_pos)
        return rows, last, start, tp_end, gained, n_pos, n_genes

    groups = reuse(shared.pred if shared else None, ("auc_groups", a, floor), compute)
    return (*groups, vector)


def pr_auc(pred: Any, truth: Any, *, alpha: float = 0.05, q_floor: float = 0.0,
           shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Average precision of the predicted significance for recovering the true DE genes.

    Parameters
    ----------
    pred, truth : DECalls or tuple (lfc, q)
        Predicted and true DE calls (the ``lfc`` are not used).
    alpha : float, default 0.05
        Labels: a gene is truly DE when its true ``q < alpha``.
    q_floor : float, default 0
        Predicted ``q`` below this are tied at it before ranking. cell-eval uses ``1e-10``
        (it scores :math:`-\log_{10}\max(q, 10^{-10})`); 0 keeps the full ranking.
    shared : SharedIntermediates, optional
        Where the prediction's tie groups are shared with :func:`roc_auc`
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [0, 1], higher is better (chance = share of true DE genes); NaN if the truth has no DE
        gene or only DE genes.

    Raises
    ------
    InputError
        Bad inputs, ``alpha`` or ``q_floor``.

    Notes
    -----
    Genes are ranked by predicted :math:`q` (ascending); with precision :math:`P_k` and recall
    :math:`R_k` at the :math:`k`-th distinct threshold,

    .. math:: \mathrm{AP} = \sum_k (R_k - R_{k-1})\,P_k ,

    scikit-learn's ``average_precision_score``, which cell-eval uses since its PR #210.

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls, pr_auc
    >>> pr_auc(DECalls([0.0] * 4, [0.001, 0.2, 0.01, 0.9]), DECalls([0.0] * 4, [0.01, 0.9, 0.9, 0.01]))
    0.75
    """
    rows, last, _, tp_end, gained, n_pos, n_genes, vector = _auc_groups(pred, truth, alpha, q_floor, shared)
    # each tie group adds its step of recall times the precision at its end, summed row by row in
    # group order (the same terms and summation as scikit-learn's step sum)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n_pos[rows]
        steps = (tp_end / n - (tp_end - gained) / n) * (tp_end / (last + 1.0))
    bounds = np.searchsorted(rows, np.arange(n_pos.size + 1))
    out = np.full(n_pos.size, np.nan)
    for r in np.flatnonzero((n_pos > 0) & (n_pos < n_genes)):
        out[r] = np.sum(steps[bounds[r]:bounds[r + 1]])
    return _finish(out, vector)


def roc_auc(pred: Any, truth: Any, *, alpha: float = 0.05, q_floor: float = 0.0,
            shared: SharedIntermediates | None = None) -> float | np.ndarray:
    r"""Area under the ROC curve of the predicted significance for the true DE genes.

    Parameters
    ----------
    pred, truth : DECalls or tuple (lfc, q)
        Predicted and true DE calls (the ``lfc`` are not used).
    alpha : float, default 0.05
        Labels: a gene is truly DE when its true ``q < alpha``.
    q_floor : float, default 0
        Predicted ``q`` below this are tied at it (cell-eval: ``1e-10``).
    shared : SharedIntermediates, optional
        Where the prediction's tie groups are shared with :func:`pr_auc`
        (:mod:`shrinkpert.metrics.shared`).

    Returns
    -------
    float or ndarray of shape (n_perturbations,)
        In [0, 1], higher is better, 0.5 at chance; NaN if the truth has no DE gene or only DE
        genes.

    Raises
    ------
    InputError
        Bad inputs, ``alpha`` or ``q_floor``.

    Notes
    -----
    The Mann–Whitney form, ties counting one half:

    .. math:: \mathrm{AUC} = \frac{1}{|T|\,|T^c|}\sum_{g\in T}\sum_{h \notin T}
              \big(\mathbb 1[\hat q_g < \hat q_h] + \tfrac12\mathbb 1[\hat q_g = \hat q_h]\big),

    equal to scikit-learn's trapezoidal ``roc_auc_score`` used by cell-eval.

    Examples
    --------
    >>> from shrinkpert.metrics import DECalls, roc_auc
    >>> roc_auc(DECalls([0.0] * 4, [0.001, 0.2, 0.01, 0.9]), DECalls([0.0] * 4, [0.01, 0.9, 0.9, 0.01]))
    0.5
    """
    rows, last, start, _, gained, n_pos, n_genes, vector = _auc_groups(pred, truth, alpha, q_floor, shared)
    # rank of -q ascending with ties averaged (scipy.stats.rankdata), summed over the true DE genes:
    # a group spanning [start, last] in q's ascending order has rank n_genes - (start + last) / 2
    rank_sum = np.bincount(rows, weights=gained * (n_genes - (start + last) / 2.0), minlength=n_pos.size)
    n_pos = n_pos.astype(np.float64)
    n_neg = n_genes - n_pos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    auc = np.where((n_pos == 0) | (n_neg == 0), np.nan, auc)
    return _finish(auc, vector)


#: How each DE metric reads ``q`` of (pred, truth): ``"calls"`` only through ``q < alpha``,
#: ``"values"`` the values themselves, ``"none"`` not at all. A caller may hand a metric calls
#: whose ``q`` is exact only below ``alpha`` (e.g. :func:`~shrinkpert.stats.testing.welch_bh`
#: with ``alpha``) on a side it reads as ``"calls"``.
Q_USE = MappingProxyType({
    overlap_at_n: ("calls", "calls"),
    precision_at_n: ("calls", "calls"),
    de_recall: ("calls", "calls"),
    de_direction_match: ("none", "calls"),
    de_spearman_lfc: ("none", "calls"),
    pr_auc: ("values", "calls"),
    roc_auc: ("values", "calls"),
})
