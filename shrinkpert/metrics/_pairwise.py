r"""Where each perturbation's own match stands among all candidates, without a P × P × G kernel.

The rank metrics (:mod:`shrinkpert.metrics.rank`) only ask, for every anchor row :math:`p`, how
many candidates :math:`j` are strictly closer than its own candidate, exactly as far, or farther:
the signs of :math:`d_{pj} - d_{pp}`, where :math:`d` is the exact distance kernel
(:func:`~shrinkpert.metrics._distance_kernels.pairwise_distances`, sums of differences in gene
order). This module gets those signs, identical to the kernel's, from matrix products:

1. **One product per pair of matrices.** With query weights :math:`v_p` (the gene weights of row
   :math:`p`, its target gene set to 0), every pair needs
   :math:`S_{pj} = \sum_g v_{pg} x_{pg} c_{jg}`, :math:`T_{pj} = \sum_g v_{pg} c_{jg}^2`,
   :math:`U_{pj} = \sum_g v_{pg} c_{jg}` and the query's :math:`\sum v x^2, \sum v x, \sum v`:

   * cosine :math:`1 - S/\sqrt{Q_2 T}`;
   * Pearson :math:`1 - (S - Q_1U/W)/\sqrt{(Q_2 - Q_1^2/W)(T - U^2/W)}`;
   * Euclidean :math:`\sqrt{Q_2 - 2S + T}` (the same sums as cosine: the cancellation is within
     the rounding bound below, which grows with the rows' magnitudes).

   With gene weights shared by all rows, :math:`S` is one product
   :math:`(X \circ w) Y^\top` serving both anchors (its transpose ranks the other way) and the
   excluded target gene is a one-term correction per pair
   (:math:`S_{pj} - w_t x_{pt} c_{jt}`, likewise :math:`T, U`); with one weight row per
   perturbation, the target is folded into the weights and :math:`T = W (C\circ C)^\top`,
   :math:`U = W C^\top` depend on the candidates alone (the truth's, shared by every side). When
   most rows have the same weight row (the uniform fallback of perturbations without an effect),
   those rows take the shared form and the others products of their own
   (:class:`PairSums`); a constant common row scales the side's unweighted product. A prediction
   declared affine in the truth (a leave-one-out mean, the relabelled truth) takes that product
   from the truth's own product (:mod:`~shrinkpert.metrics._derived`), within a bound of its own.
2. **Exact where it matters.** The own distance :math:`d_{pp}` is computed by the exact kernel
   (:func:`~shrinkpert.metrics._distance_kernels.pair_distances`, bit-identical to the matrix
   entry). A pair is decided from the product only when
   :math:`|\tilde d_{pj} - d_{pp}|` exceeds a bound on :math:`|\tilde d_{pj} - d_{pj}|`; the others
   (near-ties, undefined or badly cancelled values) are recomputed by the exact kernel. The bound
   follows the standard model of floating-point sums (any order, FMA or not):
   :math:`|\mathrm{fl}(\sum a_g) - \sum a_g| \le \gamma_n \sum |a_g|`,
   :math:`\gamma_n = nu/(1-nu)`, :math:`u = 2^{-53}`, :math:`n` = genes + 16. The product's and the
   kernel's errors are each within that bound of the exact sums, and
   :math:`\sum_g v|x||c| \le \sqrt{\sum v x^2 \sum v c^2}`; it is propagated through the quotient
   to first order with the denominators replaced by their lower bounds and then doubled (factor
   :math:`F = 8\gamma_n` on every sum). A pair whose lower bounds are not clearly positive is
   recomputed, so undefined values (zero or constant rows) come out as the kernel's NaN.
3. **Identical rows are exact ties.** Candidates byte-identical to the own candidate are at
   exactly the own distance (the kernel gives equal inputs equal outputs), so a collapsed
   prediction (one profile for every perturbation) costs :math:`O(PG)`, not :math:`P` recomputed
   rows.

4. **L1** has no product form. Queries close to one pivot profile (the column median) — equal to
   it but on a few genes (one profile for every perturbation, or one that differs only at the
   target), or within a small L1 distance of it (a leave-one-out or scaled mean) — take the
   pivot's distances plus a correction per pair, with the triangle inequality bounding the rest
   (:func:`l1_standing`); pairs are decided under the same kind of rounding bound and the others
   computed exactly. Queries whose gene weights sit on a few genes (shrunken ``auto`` weights)
   first try :func:`l1_heavy`: sums over each query's heavy genes, the light genes' share bounded
   by :math:`10^{-4}` of its own distance. Other queries take every pair's distance in single
   precision (:func:`l1_single`: about twice the pairs per second) under a rounding bound, the
   undecided pairs computed exactly; inputs whose magnitudes do not fit single precision get the
   full matrix from the blocked kernel (:func:`~shrinkpert.metrics._distance_kernels.rows_blocked`,
   bit-identical to the exact kernel), which also computes the rows of queries with many near-ties.
   Under per-row weights whose common row is constant, those rows are ranked from the side's
   unweighted L1 standing, its near-ties recomputed (:func:`l1_scaled`).

Inputs with values outside :math:`[10^{-40}, 10^{40}]` in magnitude (other than 0), where
products could underflow or overflow, fall back to the full kernel matrix.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._arrays import kernel_input
from .._numba import one_thread_blas, thread_limit
from .._forms import AffineForm
from . import _derived
from . import _distance_kernels as _k
from . import _l1_kernels as _l1
from . import _standing_kernels as _sk
from ._rounding import U as _U
from ._rounding import gamma as _gamma
from .shared import reuse

__all__ = ["Standing", "PairSums", "compute", "standing", "direct", "from_matrix", "from_matrix_rows", "dead_rows",
           "l1_standing", "l1_heavy", "l1_single", "l1_scaled", "whole_rows"]

_TAME = (1e-40, 1e40)
_TINY = 1e-280  # smallest product of two lower bounds trusted not to underflow in the kernel
_BLOCK = 2_000_000  # pair entries classified at once (memory of the temporaries)
_SMALL_JOB = 20_000_000  # pair-gene terms below which a kernel runs in one thread (waking the pool costs more)
_SMALL_PAIRS = 200_000  # pairs below which the approximating and counting kernels run in one thread
_SPARSE = 1.0 / 8.0  # a query row differing from the L1 pivot on at most this fraction of genes keeps them all
_NEAR = 0.02  # L1 through a pivot when the median residual is below this fraction of the own distances
_UNSURE = 0.05  # ... and at most this fraction of the pairs is left to the exact kernel
_SAMPLE = 64  # rows whose pairs estimate that fraction before all are approximated
_LIGHT = 1e-4  # L1 over a query's heavy genes: the light ones move its distances by at most this x its own
_HEAVY = 1.0 / 8.0  # ... taken when the median query has at most this fraction of its genes heavy
_HEAVY_SAMPLE = 16  # queries whose heavy genes are counted first
_WHOLE = 4  # a query with at least 1/_WHOLE of the candidates to recompute gets its whole row (blocked kernel)
_ROWS_PER_TASK = 64  # queries sharing each candidate block in the blocked kernel
_COMMON = 0.5  # per-row weights: rows sharing one weight row take the shared form when at least this fraction


@dataclass(frozen=True)
class Standing:
    """How each anchor's own candidate stands among all candidates.

    Attributes
    ----------
    less, equal, greater : ndarray of int64, shape (P,)
        Other candidates (the own one left out) strictly closer than, exactly as far as, and
        strictly farther than the own candidate.
    undefined : ndarray of bool, shape (P,)
        Rows with an undefined distance (NaN) or all weights 0.
    n_exact : int
        Pairs computed by the exact kernel (diagnostic: the own pairs, near-ties, degenerate pairs).
    """

    less: np.ndarray
    equal: np.ndarray
    greater: np.ndarray
    undefined: np.ndarray
    n_exact: int


def from_matrix(d: np.ndarray, dead: np.ndarray) -> Standing:
    """The standing read off a full distance matrix (row = anchor, diagonal = own candidate)."""
    return from_matrix_rows(d, np.arange(d.shape[0]), dead)


def from_matrix_rows(d: np.ndarray, rows: np.ndarray, dead: np.ndarray) -> Standing:
    """The standing of the anchors ``rows`` read off their rows ``d`` of the distance matrix
    (their own candidates in columns ``rows``)."""
    own = d[np.arange(d.shape[0]), rows][:, None]
    less = (d < own).sum(axis=1)
    equal = (d == own).sum(axis=1) - 1
    greater = (d > own).sum(axis=1)
    undefined = np.isnan(d).any(axis=1) | dead
    return Standing(less.astype(np.int64), np.maximum(equal, 0).astype(np.int64), greater.astype(np.int64),
                    undefined, int(d.size))


def _range(a: np.ndarray) -> tuple[float, float]:
    """The smallest non-zero and the largest magnitude of ``a`` (one pass)."""
    return _sk.magnitude_range(kernel_input(np.asarray(a, dtype=np.float64)))


def _within(lo: float, hi: float, *ranges: tuple[float, float]) -> bool:
    """Every non-zero magnitude of every range within ``[lo, hi]``."""
    return all(r[0] >= lo and r[1] <= hi for r in ranges)


def _row_groups(x: np.ndarray) -> np.ndarray:
    """Group id per row, numbered in order of first appearance; rows with the same bytes share an id.

    Rows are hashed in one kernel pass; rows with equal hashes are compared bit for bit.
    """
    words = np.ascontiguousarray(x, dtype=np.float64).view(np.uint64)
    hashes = np.empty(words.shape[0], dtype=np.uint64)
    _sk.row_hashes(words, hashes)
    seen: dict[int, list[tuple[int, int]]] = {}
    ids = np.empty(words.shape[0], dtype=np.int64)
    n_groups = 0
    for i, h in enumerate(hashes.tolist()):
        same = seen.setdefault(h, [])
        for j, group in same:
            if np.array_equal(words[i], words[j]):
                ids[i] = group
                break
        else:
            same.append((i, n_groups))
            ids[i] = n_groups
            n_groups += 1
    return ids


def _candidate_groups(scope: dict[Hashable, Any] | None, c: np.ndarray) -> np.ndarray:
    """:func:`_row_groups` of the candidates ``c``, kept in their side's ``scope``."""
    return reuse(scope, ("pairwise", "row_groups"), lambda: _row_groups(c))


def _query_weights(base: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    """The (n, G) weights of each query row: its base row with the target gene set to 0."""
    v = np.array(np.broadcast_to(base, (n, base.shape[1])), dtype=np.float64)
    rows = np.flatnonzero(target >= 0)
    v[rows, target[rows]] = 0.0
    return v


def dead_rows(base: np.ndarray, target: np.ndarray, n: int) -> np.ndarray:
    """Rows whose weights (target excluded) are all 0."""
    positive = base > 0
    count = np.broadcast_to(positive.sum(axis=1), (n,)).copy()
    rows = np.flatnonzero(target >= 0)
    count[rows] -= np.broadcast_to(positive, (n, base.shape[1]))[rows, target[rows]]
    return count == 0


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` by single-threaded BLAS calls on row blocks of ``a``, the blocks in Numba's thread count.

    A multithreaded BLAS call synchronises its threads by spinning; on a busy machine one
    descheduled thread stalls the others (measured here: 200 × 5,000 × 200 took 0.2-0.3 s with 2
    OpenBLAS threads, 0.01-0.02 s with 1). Independent row blocks, each a one-thread BLAS call in
    its own Python thread (the GIL is released), do not wait for each other.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numba

    n_threads = max(1, min(numba.get_num_threads(), int(2.0 * a.shape[0] * a.shape[1] * b.shape[1] // 5e8)))
    with one_thread_blas():
        if n_threads == 1 or a.shape[0] < 2 * n_threads:
            return a @ b
        out = np.empty((a.shape[0], b.shape[1]))
        bounds = np.linspace(0, a.shape[0], n_threads + 1).astype(np.int64)

        def part(k: int) -> None:
            np.matmul(a[bounds[k]:bounds[k + 1]], b, out=out[bounds[k]:bounds[k + 1]])

        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(part, range(n_threads)))
    return out


def _one_profile(a: np.ndarray) -> bool:
    """Every row of ``a`` equal to the first (a prediction of one profile for every perturbation)."""
    return a.shape[0] > 1 and bool(np.array_equal(a[1], a[0])) and bool((a == a[:1]).all())


def _product(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a @ c.T``; when the rows of ``c`` (or of ``a``) are all equal, one matrix-vector product
    broadcast to P × P (a read-only view).

    A side that predicts one profile for every perturbation (the control, the mean of all
    perturbations) then costs O(P·G) instead of P²·G. Each entry is still a dot product of the
    same two rows, summed in another order: within the rounding bound that :func:`_approx` assumes.
    """
    shape = (a.shape[0], c.shape[0])
    with one_thread_blas():
        if _one_profile(c):
            return np.broadcast_to((a @ c[0])[:, None], shape)
        if _one_profile(a):
            return np.broadcast_to((c @ a[0])[None, :], shape)
    return _matmul(a, c.T)


def _exact(q, c, base, target, kind, rows, cols) -> np.ndarray:
    """Exact kernel values of the pairs (rows[m], cols[m]); ``rows`` sorted.

    A query with at least ``1 / _WHOLE`` of the candidates to compute gets its whole row from the
    blocked kernel (several times faster per pair); the others, their pairs alone.
    """
    out = np.empty(rows.shape[0])
    if rows.size == 0:
        return out
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    counts = np.diff(np.r_[starts, rows.size])
    whole = counts * _WHOLE >= c.shape[0]
    by_row = np.repeat(whole, counts)
    step = max(1, _BLOCK // c.shape[0])  # whole rows held at once
    for first in range(0, int(whole.sum()), step):  # whole rows, a block of rows at a time
        which = np.flatnonzero(whole)[first:first + step]
        full = whole_rows(q, c, base, target, kind, rows[starts[which]])
        span = slice(starts[which[0]], starts[which[-1]] + counts[which[-1]])
        mine = by_row[span]
        local = np.repeat(np.arange(which.size), counts[which])
        out[span][mine] = full[local, cols[span][mine]]
    if not whole.all():
        starts, counts = starts[~whole], counts[~whole]
        ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
        # small jobs in one thread: waking the thread pool costs more than the work on a busy machine
        work = (starts.size * 3 + ptr[-1]) * q.shape[1]
        part = np.empty(ptr[-1])
        with thread_limit(None if work > _SMALL_JOB else 1):
            _k.pair_distances(q, c, base, target, kind, rows[starts].astype(np.int64), ptr,
                              cols[~by_row].astype(np.int64), part)
        out[~by_row] = part
    return out


def whole_rows(q: np.ndarray, c: np.ndarray, base: np.ndarray, target: np.ndarray, kind: int,
               rows: np.ndarray) -> np.ndarray:
    """Exact kernel distances of the queries ``rows`` to every candidate, shape (rows, candidates).

    Bit-identical to the entries of :func:`~shrinkpert.metrics._distance_kernels.pairwise_distances`
    under each query's weights (its target gene at 0), from the blocked kernel
    (:func:`~shrinkpert.metrics._distance_kernels.rows_blocked`), without a weight matrix.
    """
    q, c, base = kernel_input(q), kernel_input(c), kernel_input(base)
    target, rows = np.asarray(target, dtype=np.int64), np.asarray(rows, dtype=np.int64)
    out = np.empty((rows.size, c.shape[0]))
    if rows.size == 0:
        return out
    blocks = _k.candidate_blocks(c)
    with thread_limit(None if out.size * q.shape[1] > _SMALL_JOB else 1):
        _k.rows_blocked(q, c, blocks, base, target, kind, rows, _ROWS_PER_TASK, out)
    return out


# ----------------------------------------------------------------------------- the sums of every pair


class PairSums:
    r"""Products of a prediction ``x`` and a truth ``y`` (both P × G), computed once and shared.

    Parameters
    ----------
    x, y : ndarray
        Prediction and truth rows (the same perturbations).
    base : ndarray of shape (1, G) or (P, G)
        Non-negative gene weights, shared or one row per perturbation.
    target : ndarray of int64, shape (P,)
        Excluded target gene per row, -1 for none.
    pred_scope, truth_scope : dict or None
        Where products are cached: products involving the prediction in ``pred_scope``, products
        of the truth and the weights alone in ``truth_scope``.
    pred_any, truth_any : dict or None
        Where the unweighted products :math:`XY^\top` and :math:`YY^\top` are kept for every
        weighting of the prediction and of the truth (default ``pred_scope``, ``truth_scope``).
    form : AffineForm or None
        The prediction declared affine in the truth (:mod:`~shrinkpert.metrics._derived`).

    Notes
    -----
    One weight row per perturbation costs three P × P products per anchor pair (:math:`S` for
    each anchor and the prediction's :math:`T`), shared weights one. When at least ``_COMMON``
    of the rows have byte-identical weights (in a genome-wide screen, the many perturbations
    without an effect get the uniform fallback of :func:`~shrinkpert.weights.gene_weights`),
    those rows take the shared form, one product :math:`(X \circ w) Y^\top` read by both
    anchors, and only the other rows take products of their own (:func:`_common_row`). A weight
    row with one value :math:`c` on every gene (that fallback) takes :math:`c\,(XY^\top)` from the
    unweighted product when the unweighted metrics already made it (kept in ``pred_any``): one
    more rounding per entry, within the margin of the bound of :func:`_approx` (:math:`n` = genes
    + 16). A prediction with a ``form`` takes that product from the truth's own product
    (:func:`~shrinkpert.metrics._derived.derived_product`), and its magnitudes in the bound are
    widened by the derivation's error: :math:`\sqrt{A} \to \sqrt{A} + 2E_p/F`.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, base: np.ndarray, target: np.ndarray,
                 pred_scope: dict[Hashable, Any] | None, truth_scope: dict[Hashable, Any] | None,
                 pred_any: dict[Hashable, Any] | None = None, truth_any: dict[Hashable, Any] | None = None,
                 form: AffineForm | None = None) -> None:
        self.x, self.y, self.base, self.target, self.form = x, y, base, target, form
        self.pred_scope, self.truth_scope = pred_scope, truth_scope
        self.pred_any = pred_scope if pred_any is None else pred_any
        self.truth_any = truth_scope if truth_any is None else truth_any
        self.shared = base.shape[0] == 1
        self.n, self.n_genes = x.shape

    def _sides(self, anchor: str) -> tuple[np.ndarray, np.ndarray]:
        return (self.x, self.y) if anchor == "pred" else (self.y, self.x)

    def _weights(self, rows: np.ndarray | None) -> np.ndarray:
        """The weights of ``rows`` (all if None) with each row's target at 0, kept with the truth:
        the same for every side."""
        if rows is None:
            return reuse(self.truth_scope, ("pairwise", "query_weights"),
                         lambda: _query_weights(self.base, self.target, self.n))
        return reuse(self.truth_scope, ("pairwise", "query_weights", "other"),
                     lambda: _query_weights(self.base[rows], self.target[rows], rows.size))

    def sums(self, anchor: str, need_u: bool) -> dict[str, Any]:
        """S, T, U (P × P) and the query sums Q2, Q1, SW with their magnitudes AQ2, AT, ASW.

        The same sums serve every kind (Euclidean distances too, from the raw rows: their
        cancellation is inside the rounding bound, which grows with the raw magnitudes). With
        shared weights the query sums are the full ones less the target's term, like S, T and U:
        within the same rounding bound, without a P × G weight matrix. With a common weight row
        (see the class notes), ``{"parts": [(local, sums), ...]}``: each part's sums over its own
        rows, ``local`` the position of every query row in them (-1 for the other part's rows).
        """
        out = reuse(self.pred_scope, ("pairwise", "sums", anchor), lambda: self._sums(anchor))
        for _, part in out.get("parts", [(None, out)]):
            if need_u and "U" not in part:  # one weight row per perturbation: U is a product of its own
                rows = part["rows"]
                c = self._sides(anchor)[1]
                scope = self.truth_scope if anchor == "pred" else self.pred_scope
                key = ("pairwise", "U", "" if anchor == "pred" else "true", rows is None)
                part["U"] = reuse(scope, key, lambda: _product(self._weights(rows), c))
        return out

    def _sums(self, anchor: str) -> dict[str, Any]:
        if self.shared:
            return self._shared_sums(anchor, self.base[0], ("pairwise", "S"))
        common = _common(self.truth_scope, self.base)
        if common is None:
            return self._own_sums(anchor, None)
        w, mask = common
        rows = np.flatnonzero(~mask)
        local_common = np.where(mask, np.arange(self.n), -1)
        local_other = np.full(self.n, -1, dtype=np.int64)
        local_other[rows] = np.arange(rows.size)
        parts = [(local_common, self._shared_sums(anchor, w, ("pairwise", "S", "common")))]
        if rows.size:
            parts.append((local_other, self._own_sums(anchor, rows)))
        return {"parts": parts}

    def _shared_sums(self, anchor: str, w: np.ndarray, key: tuple) -> dict[str, Any]:
        """Every row's sums under the one weight row ``w``, the product kept under ``key``."""
        q, c = self._sides(anchor)
        base = w[None, :]
        s_full, e = reuse(self.pred_scope, key, lambda: self._weighted_product(w))
        t_full, u_full, _ = _sk.row_sums(c, base)
        q2, q1, _ = _sk.row_sums(q, base)
        aq2, at = q2.copy(), t_full
        if e is not None:  # a derived product: the prediction's magnitudes in the bound widened by its error
            step = 2.0 * e / _factor(self.n_genes)
            if anchor == "pred":
                aq2 = (np.sqrt(aq2) + step)**2
            else:
                at = (np.sqrt(t_full) + step)**2
        # the target's term is taken out of S, T and U entry by entry as they are read
        # (product_distances), and out of the query's sums here: no P × G weights, no P × P copies
        rows = np.flatnonzero(self.target >= 0)
        t = self.target[rows]
        wt, qt = np.zeros(self.n), np.zeros(self.n)
        wt[rows] = w[t]
        qt[rows] = wt[rows] * q[rows, t]
        out = {"S": s_full if anchor == "pred" else s_full.T, "T": t_full[None, :], "U": u_full[None, :],
               "AT": at[None, :], "target": self.target, "qt": qt, "wt": wt, "C": c,
               "AQ2": aq2, "ASW": np.full(self.n, w.sum())}
        out["Q2"], out["Q1"], out["SW"] = q2, q1, out["ASW"].copy()
        if rows.size:
            qt = q[rows, t]
            out["Q2"][rows] -= (w[t] * qt) * qt
            out["Q1"][rows] -= w[t] * qt
            out["SW"][rows] -= w[t]
        return out

    def _weighted_product(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        r""":math:`(X \circ w) Y^\top` and the error rows :math:`E` of a derived product (None for a direct
        one); :math:`c\,(XY^\top)` and :math:`\sqrt c\,E` when ``w`` is one value :math:`c > 0` on every
        gene and the unweighted product is kept in ``pred_any`` (made by the weights 1)."""
        c = _constant(w)
        key = ("pairwise", "S", "unit")
        if c == 1.0:
            return reuse(self.pred_any, key, lambda: self._fresh_product(w, c))
        kept = self.pred_any.get(key) if c is not None and self.pred_any is not None else None
        if kept is None:
            return self._fresh_product(w, c)
        unit, e = kept
        if e is not None:  # c E_p sqrt(T_j) = sqrt(c) E_p sqrt(c T_j); 1.01: the rounding of the scaled sums
            e = 1.01 * np.sqrt(c) * e
        if 0 in unit.strides:  # a broadcast row or column (one profile): scaled as such
            line = unit[:1] if unit.strides[0] == 0 else unit[:, :1]
            return np.broadcast_to(c * line, unit.shape), e
        return c * unit, e

    def _fresh_product(self, w: np.ndarray, c: float | None) -> tuple[np.ndarray, np.ndarray | None]:
        """:meth:`_weighted_product` made now (``c``: :func:`_constant` of ``w``): derived from the
        truth's own product when the prediction has a form that describes it, else a direct product."""
        if self.form is not None:
            derived = _derived.derived_product(self.x, self.y, w, self.form, lambda: self._own_truth_product(w, c),
                                               _factor(self.n_genes))
            if derived is not None:
                return derived
        return (_product(self.x, self.y) if c == 1.0 else _product(self.x * w, self.y)), None

    def _own_truth_product(self, w: np.ndarray, c: float | None) -> tuple[np.ndarray, float]:
        r"""The truth's own product :math:`(Y \circ w) Y^\top` as (product, factor): the unweighted
        one (kept for every weighting) and ``c`` for a constant weight row, else its own (kept with
        this weighting)."""
        if c is not None:
            return reuse(self.truth_any, ("pairwise", "own", "unit"), lambda: _product(self.y, self.y)), c
        return reuse(self.truth_scope, ("pairwise", "own"), lambda: _product(self.y * w, self.y)), 1.0

    def _own_sums(self, anchor: str, rows: np.ndarray | None) -> dict[str, Any]:
        """The sums of the query ``rows`` (all if None), each under its own weight row."""
        q, c = self._sides(anchor)
        v = self._weights(rows)
        if rows is not None:
            q = q[rows]
        truth_side = anchor == "pred"  # candidates are the truth: T and U depend on it and the weights only
        cscope = self.truth_scope if truth_side else self.pred_scope
        side = "" if truth_side else "true"
        s = reuse(self.pred_scope, ("pairwise", "S", anchor, rows is None), lambda: _product(v * q, c))
        t_pc = reuse(cscope, ("pairwise", "T", side, rows is None), lambda: _product(v, c * c))
        aq2, q1, sw = _sk.row_sums(q, v)
        return {"S": s, "T": t_pc, "AT": t_pc, "AQ2": aq2, "Q2": aq2, "Q1": q1, "ASW": sw, "SW": sw,
                "target": None, "rows": rows}


def _common(scope: dict[Hashable, Any] | None, base: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`_common_row` of the per-row weights ``base``, kept in ``scope`` (their side's)."""
    return reuse(scope, ("pairwise", "common_weights"), lambda: _common_row(base))


def _constant(w: np.ndarray) -> float | None:
    """The value of a weight row with one value :math:`c > 0` on every gene, else None."""
    c = float(w[0])
    return c if c > 0.0 and bool((w == c).all()) else None


def _common_row(base: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The weight row shared by most rows of ``base`` (P × G) and the mask of those rows, or None
    when fewer than ``_COMMON`` of the rows have it (byte for byte)."""
    ids = _row_groups(base)
    counts = np.bincount(ids)
    top = int(np.argmax(counts))
    if counts[top] < _COMMON * base.shape[0]:
        return None
    mask = ids == top
    return base[int(np.argmax(mask))], mask


# ----------------------------------------------------------------------------- approximations and bounds


def _factor(n_genes: int) -> float:
    r""":math:`F = 8\gamma_n`, :math:`n` = genes + 16: the rounding factor on every sum of the products' bound."""
    return 8.0 * _gamma(n_genes + 16)


def _rows_of(a: np.ndarray, rows: slice) -> np.ndarray:
    """The block's rows of ``a``, or ``a`` itself when it is one row shared by every query."""
    return a if a.shape[0] == 1 else a[rows]


def _approx(kind: int, z: dict[str, Any], rows: slice, n_genes: int) -> tuple[np.ndarray, np.ndarray]:
    """Approximate distances (squared for L2) of the rows' pairs and a bound on their distance to the kernel's
    (:func:`~shrinkpert.metrics._standing_kernels.product_distances`).

    The bound is ``inf`` where the product cannot be trusted (recompute those pairs exactly).
    ``rows``: a slice or the row numbers; with ``parts`` (:meth:`PairSums.sums`), each part gives its rows.
    """
    if "parts" in z:
        idx = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows
        d = np.empty((idx.size, z["parts"][0][1]["S"].shape[1]))
        err = np.empty(d.shape)
        for local, part in z["parts"]:
            mine = local[idx]
            take = mine >= 0
            if take.any():
                d[take], err[take] = _approx(kind, part, mine[take], n_genes)
        return d, err
    f = _factor(n_genes)
    s, t = z["S"][rows], _rows_of(z["T"], rows)
    u = _rows_of(z["U"], rows) if kind == _k.PEARSON else t
    sums = [z[key][rows] for key in ("Q2", "Q1", "SW", "AQ2", "ASW")]
    if z["target"] is None:  # one weight row per query: the target is already in the weights
        target, qt, wt, c = np.full(s.shape[0], -1, dtype=np.int64), sums[0], sums[0], np.zeros((1, 1))
    else:
        target, qt, wt, c = z["target"][rows], z["qt"][rows], z["wt"][rows], z["C"]
    d, err = np.empty(s.shape), np.empty(s.shape)
    with thread_limit(None if s.size > _SMALL_PAIRS else 1):
        _sk.product_distances(kind, s, t, u, _rows_of(z["AT"], rows), *sums, f, target, qt, wt, c, d, err)
    return d, err


def standing(sums: PairSums, kind: int, anchor: str, dead: np.ndarray) -> Standing:
    """The exact standing of every anchor row under ``kind`` (cosine, Pearson or Euclidean), from products."""
    n, n_genes = sums.n, sums.n_genes
    q_raw, c_raw = (sums.x, sums.y) if anchor == "pred" else (sums.y, sums.x)
    q_raw, c_raw = kernel_input(q_raw), kernel_input(c_raw)
    base, target = kernel_input(sums.base), np.array(sums.target, dtype=np.int64)
    z = sums.sums(anchor, need_u=kind == _k.PEARSON)
    # cosine: a query zero on its weighted genes (every distance 0/0; no underflow when tame);
    # Pearson: a query constant on them (the kernel's rule)
    undefined = np.empty(n, dtype=np.bool_)
    _sk.undefined_queries(kind, q_raw, base, target, undefined)
    undefined |= dead
    live = np.flatnonzero(~undefined)
    own = np.full(n, np.nan)
    own[live] = _exact(q_raw, c_raw, base, target, kind, live, live)
    undefined |= np.isnan(own)
    groups = _candidate_groups(sums.truth_scope if anchor == "pred" else sums.pred_scope, c_raw)
    if kind == _k.L2:
        own_lo, own_hi = own * own * (1.0 - 8.0 * _U), own * own * (1.0 + 8.0 * _U)
    else:
        own_lo = own_hi = own
    return _classify(lambda rows: _approx(kind, z, rows, n_genes), own, own_lo, own_hi, undefined, groups,
                     (q_raw, c_raw, base, target, kind), int(live.size))


def _classify(approx, own, own_lo, own_hi, undefined, groups, exact_args, n_exact,
              max_exact: int | None = None, keep: dict[str, Any] | None = None,
              rows: np.ndarray | None = None) -> Standing | None:
    r"""Count each row's candidates below, at and above its own distance.

    ``approx(rows)`` gives approximate distances (squared for L2) of the rows' pairs and a bound on
    their difference to the kernel's, compared with ``[own_lo, own_hi]`` (the own distance, squared
    with its rounding for L2); byte-identical candidates tie exactly; the undecided pairs are
    computed by the exact kernel (``exact_args``: query, candidates, base, target, kind) and
    compared with ``own``. None if more than ``max_exact`` pairs are undecided.

    ``keep`` (L1 under the weights 1): a pair is decided only when its kernel distance is also
    more than :math:`\rho\,(d_{pj} + d_{pp})` from the own one, :math:`\rho = 4\gamma_n` (bound widened by
    :math:`\rho(|\tilde d| + e + d_{pp})`); ``keep`` receives the counts before the exact kernel
    (``decided``), the pairs left to it (``pairs``), ``undefined`` and the ``standing``, from which
    :func:`l1_scaled` ranks the same rows under any constant weight.

    ``rows`` (increasing): the anchors to rank, all if None (``approx`` then takes slices of rows,
    else arrays of them); the others keep counts 0.
    """
    n = own.shape[0]
    if keep is not None:
        rho = 4.0 * _gamma(exact_args[0].shape[1] + 16)
        unwidened = approx

        def approx(block: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            d, err = (np.asarray(a, dtype=np.float64) for a in unwidened(block))
            return d, err + rho * (np.abs(d) + err + own_hi[block, None])
    less = np.zeros(n, dtype=np.int64)
    equal = np.zeros(n, dtype=np.int64)
    greater = np.zeros(n, dtype=np.int64)
    todo_rows, todo_cols = [], []
    anchors = np.arange(n) if rows is None else np.asarray(rows, dtype=np.int64)
    step = max(1, _BLOCK // n)
    for start in range(0, anchors.size, step):
        idx = anchors[start:start + step]
        block = slice(int(idx[0]), int(idx[-1]) + 1) if rows is None else idx
        d, err = (np.ascontiguousarray(a, dtype=np.float64) for a in approx(block))
        unsure = np.empty(d.shape, dtype=np.bool_)
        with thread_limit(None if d.size > _SMALL_PAIRS else 1):
            for i, p in ((0, idx[0]),) if rows is None else enumerate(idx):  # consecutive rows: one call
                one = slice(None) if rows is None else slice(i, i + 1)
                _sk.tally(d[one], err[one], own_lo, own_hi, groups, undefined, int(p), less, equal, greater,
                          unsure[one])
        r, col = np.nonzero(unsure)
        todo_rows.append(idx[r])
        todo_cols.append(col)
    rows_x = np.concatenate(todo_rows) if todo_rows else np.empty(0, np.int64)
    cols_x = np.concatenate(todo_cols) if todo_cols else np.empty(0, np.int64)
    if max_exact is not None and rows_x.size > max_exact:
        return None
    if keep is not None:
        keep.update(decided=(less.copy(), equal.copy(), greater.copy()), pairs=(rows_x, cols_x))
    exact = _exact(*exact_args, rows_x, cols_x)
    undefined = undefined.copy()
    st = _tally_exact(Standing(less, equal, greater, undefined, n_exact + int(rows_x.size)), rows_x, exact, own)
    if keep is not None:
        keep.update(undefined=st.undefined, standing=st)
    return st


def _tally_exact(st: Standing, rows: np.ndarray, exact: np.ndarray, own: np.ndarray) -> Standing:
    """Add the exact kernel values ``exact`` of pairs of ``rows`` to the counts of ``st`` (in place):
    their comparisons with ``own``, and NaN values as undefined rows."""
    mine = own[rows]
    np.add.at(st.less, rows, exact < mine)
    np.add.at(st.equal, rows, exact == mine)
    np.add.at(st.greater, rows, exact > mine)
    st.undefined[rows[np.isnan(exact)]] = True
    return st


# ----------------------------------------------------------------------------- L1


def _pivot_deviations(q: np.ndarray, base: np.ndarray, target: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    r"""A pivot profile :math:`y` (a column median) and how each query row departs from it.

    Row :math:`i` keeps its own values on the genes ``genes[ptr[i]:ptr[i + 1]]`` (ascending): its
    target and, when it differs from :math:`y` on at most ``_SPARSE`` of the genes, every gene where
    it does. Elsewhere it is replaced by :math:`y`, which moves its L1 distances by at most
    ``residual[i]`` :math:`= \sum_g b_{ig}|q_{ig} - y_g|` over those other genes (triangle
    inequality). Compared by value: -0.0 and 0.0 give the same ``|q - c|``.
    """
    # the median of up to _SAMPLE rows (any pivot is valid; one profile for every row gives it exactly)
    some = np.unique(np.linspace(0, q.shape[0] - 1, min(q.shape[0], _SAMPLE)).astype(np.int64))
    y = np.median(q[some], axis=0)
    max_kept = int(_SPARSE * q.shape[1])
    sparse = np.empty(q.shape[0], dtype=np.bool_)
    counts, residual = np.empty(q.shape[0], dtype=np.int64), np.empty(q.shape[0])
    with thread_limit(None if q.size > _SMALL_JOB // 8 else 1):
        _k.pivot_deviations(q, y, base, target, max_kept, sparse, counts, residual)
    ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
    genes = np.empty(ptr[-1], dtype=np.int64)
    _k.kept_genes(q, y, target, sparse, ptr, genes)
    return y, ptr, genes, residual


def l1_standing(q: np.ndarray, c: np.ndarray, base: np.ndarray, target: np.ndarray, dead: np.ndarray,
                scope: dict[Hashable, Any] | None = None, keep: dict[str, Any] | None = None) -> Standing | None:
    r"""The exact L1 standing of queries close to one pivot profile :math:`y`, or None if they are not.

    With :math:`q'_i` = :math:`q_i` on its kept genes and :math:`y` elsewhere
    (:func:`_pivot_deviations`),
    :math:`d_{v_i}(q'_i, c_j) = \sum_g b_{ig}|y_g - c_{jg}| + \mathrm{corr}_{ij}`: one product (one
    row of distances when the base weights are shared) plus a correction over the kept genes
    (:func:`~shrinkpert.metrics._distance_kernels.l1_pivot_corrections`), and
    :math:`|d_{v_i}(q_i, c_j) - d_{v_i}(q'_i, c_j)| \le r_i`, the residual. Every term is
    non-negative, so the rounding of each sum, in any order, is at most :math:`\gamma_n` times the
    sum of its terms; a pair is decided when its gap to the own distance (exact kernel) exceeds
    the residual plus four times that rounding bound, else it is computed by the exact kernel.
    A prediction with one profile for every perturbation, one that differs only at the target,
    or one within a small distance of a common profile (a leave-one-out mean) costs
    :math:`O(PG)` plus :math:`P^2` corrections, not :math:`P^2G`. None when the residuals are not
    small against the own distances or too many pairs stay undecided (use the full kernel).
    ``scope``: as in :func:`l1_heavy`; ``keep``: as in :func:`_classify`.
    """
    n, n_genes = q.shape
    q, c, base = kernel_input(q), kernel_input(c), kernel_input(base)
    y, ptr, genes, residual = _pivot_deviations(q, base, target)
    undefined = dead.copy()
    live = np.flatnonzero(~undefined)
    own = np.full(n, np.nan)
    own[live] = _exact(q, c, base, target, _k.L1, live, live)
    if live.size and not np.median(residual[live] / np.maximum(own[live], _TINY)) < _NEAR:
        return None
    far = np.abs(y[None, :] - c)  # |y - c_j|, candidates × genes
    # sum_g b_ig |y_g - c_jg| for each weight row: one row of them for shared weights, and for the
    # rows sharing a common weight row (:func:`_common_row`); a product for the others
    common = None if base.shape[0] == 1 else _common(scope, base)
    row = base[0] if base.shape[0] == 1 else None if common is None else common[0]
    pivot = None if row is None else far @ row
    f = 4.0 * _gamma(n_genes + 16)

    def approx(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        counts = ptr[idx + 1] - ptr[idx]
        local = np.r_[0, np.cumsum(counts)].astype(np.int64)
        mine = genes[np.arange(local[-1]) - np.repeat(local[:-1] - ptr[idx], counts)]
        corr = np.empty((idx.size, c.shape[0]))
        mag = np.empty((idx.size, c.shape[0]))
        with thread_limit(None if local[-1] * c.shape[0] > _SMALL_JOB // 8 else 1):
            _k.l1_pivot_corrections(q, y, c, base, target, idx, local, mine, corr, mag)
        if common is None:
            m = np.broadcast_to(pivot, corr.shape) if pivot is not None else _matmul(base[idx], far.T)
        else:
            m = np.empty(corr.shape)
            on = common[1][idx]
            m[on] = pivot
            if not on.all():
                m[~on] = _matmul(base[idx[~on]], far.T)
        r = residual[idx, None]
        d = m + corr
        return d, r * (1.0 + f) + f * (m + mag + r) + 4.0 * _U * np.abs(d)

    # a sample of rows first: give up early when too many pairs would be left to the exact kernel
    # (when every pair fits in one block, all rows are approximated once and the sample read off them)
    sample = np.unique(live[np.linspace(0, live.size - 1, min(live.size, _SAMPLE)).astype(np.int64)])
    every = approx(np.arange(n, dtype=np.int64)) if n * c.shape[0] <= _BLOCK and sample.size else None
    if sample.size:
        d, err = (every[0][sample], every[1][sample]) if every is not None else approx(sample)
        if (np.abs(d - own[sample, None]) <= err).mean() > _UNSURE:
            return None
    rows_approx = ((lambda rows: (every[0][rows], every[1][rows])) if every is not None else
                   (lambda rows: approx(np.arange(rows.start, rows.stop, dtype=np.int64))))
    groups = _candidate_groups(scope, c)
    return _classify(rows_approx, own, own, own, undefined, groups, (q, c, base, target, _k.L1), int(live.size),
                     max_exact=int(_UNSURE * n * c.shape[0]), keep=keep)


def _split_genes(q: np.ndarray, base: np.ndarray, target: np.ndarray, reach: np.ndarray, rows: np.ndarray,
                 allowance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Heavy-gene mask and light-gene bound sum of the query rows ``rows``
    (:func:`~shrinkpert.metrics._distance_kernels.heavy_genes`)."""
    heavy = np.empty((rows.size, q.shape[1]), dtype=np.bool_)
    rest = np.empty(rows.size)
    with thread_limit(None if heavy.size > _SMALL_JOB // 8 else 1):
        _k.heavy_genes(q, base, target, reach, rows.astype(np.int64), np.asarray(allowance, np.float64), heavy, rest)
    return heavy, rest


def l1_heavy(q: np.ndarray, c: np.ndarray, base: np.ndarray, target: np.ndarray, dead: np.ndarray,
             scope: dict[Hashable, Any] | None = None, keep: dict[str, Any] | None = None) -> Standing | None:
    r"""The exact L1 standing when each query's gene weights sit on a few genes, or None if they do not.

    Gene :math:`g` adds at most :math:`b_{ig} = v_{ig}(|q_{ig}| + \max_j |c_{jg}|)` to any
    distance of query :math:`i` (weights :math:`v_i`, its target at 0). Its *light* genes are those
    of the lowest binary orders of magnitude of :math:`b_{ig}` whose bounds sum to at most
    :math:`R_i \le 10^{-4} d_{ii}` (``_LIGHT``); the rest are *heavy*. Then
    :math:`d_{ij} = H_{ij} + L_{ij}` with :math:`H_{ij}` the sum over the heavy genes
    (:func:`~shrinkpert.metrics._distance_kernels.l1_gene_subset`) and :math:`0 \le L_{ij} \le R_i`;
    with :math:`F = 8\gamma_n` covering the rounding of every sum (all terms non-negative),
    :math:`H_{ij}(1 - F) \le d_{ij} \le (H_{ij} + R_i)(1 + F)` for the kernel's value. A pair is
    decided when that interval excludes the own distance (exact kernel), else computed by the
    exact kernel. Gene weights shrunk towards 0 on most genes (``auto`` weights) leave a few
    hundred heavy genes per query: :math:`P^2` times those, not :math:`P^2 G`. None when the
    median query has more than ``_HEAVY`` of the genes heavy (a sample decides first), or when too
    many pairs stay undecided (use the other paths). ``scope`` keeps what depends on the
    candidates alone (a :class:`~shrinkpert.metrics.shared.SharedIntermediates` side of ``c``);
    ``keep``: as in :func:`_classify`.
    """
    n, n_genes = q.shape
    live = np.flatnonzero(~dead)
    if live.size == 0:
        return None
    q, c, base = kernel_input(q), kernel_input(c), kernel_input(base)
    target = np.array(target, dtype=np.int64)
    reach = reuse(scope, ("pairwise", "l1_reach"), lambda: np.abs(c).max(axis=0))
    sample = np.unique(live[np.linspace(0, live.size - 1, min(live.size, _HEAVY_SAMPLE)).astype(np.int64)])
    own_sample = _exact(q, c, base, target, _k.L1, sample, sample)
    heavy, _ = _split_genes(q, base, target, reach, sample, _LIGHT * own_sample)
    if not np.median(heavy.sum(axis=1)) <= _HEAVY * n_genes:
        return None
    finite = reuse(scope, ("pairwise", "finite"), lambda: bool(np.isfinite(c).all()))
    if not (finite and np.isfinite(q).all()):
        return None
    own = np.full(n, np.nan)
    own[live] = _exact(q, c, base, target, _k.L1, live, live)
    allowance = np.where(np.isnan(own) | dead, np.inf, _LIGHT * own)  # undefined rows: nothing computed
    heavy, rest = _split_genes(q, base, target, reach, np.arange(n), allowance)
    ptr = np.r_[0, np.cumsum(heavy.sum(axis=1))].astype(np.int64)
    genes = np.nonzero(heavy)[1].astype(np.int64)
    part = np.empty((n, c.shape[0]))
    with thread_limit(None if genes.size * c.shape[0] > _SMALL_JOB else 1):
        _k.l1_gene_subset(q, reuse(scope, ("pairwise", "gene_major"), lambda: np.ascontiguousarray(c.T)), base,
                          target, ptr, genes, part)
    f = _factor(n_genes)
    rest = rest * (1.0 + f)  # the bounds and their sums are rounded too

    def approx(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        lower = part[rows] * (1.0 - f)
        upper = (part[rows] + rest[rows, None]) * (1.0 + f)
        mid = 0.5 * (lower + upper)
        return mid, 0.5 * (upper - lower) + 8.0 * _U * np.abs(mid)

    groups = _candidate_groups(scope, c)
    return _classify(approx, own, own, own, dead.copy(), groups, (q, c, base, target, _k.L1),
                     int(live.size), max_exact=int(_UNSURE * n * c.shape[0]), keep=keep)


def l1_single(q: np.ndarray, c: np.ndarray, base: np.ndarray, target: np.ndarray, dead: np.ndarray,
              scope: dict[Hashable, Any] | None = None, reach: float | None = None,
              keep: dict[str, Any] | None = None, rows: np.ndarray | None = None) -> Standing:
    r"""The exact L1 standing from distances computed in single precision.

    Every pair's distance comes from :func:`~shrinkpert.metrics._l1_kernels.l1_single` (about
    twice as many pairs per second as the double-precision kernel) with the bound of
    :func:`~shrinkpert.metrics._l1_kernels.bound` on its distance to the exact kernel's value,
    :math:`\le 2(4uA_i + 72u\tilde d + \dots)`, :math:`u = 2^{-24}`, :math:`A_i = \sum_g v_{ig}|q_{ig}|`:
    a pair is decided when its gap to the own distance (exact kernel) exceeds the bound, ties
    between byte-identical rows are exact, and the other pairs are computed by the exact kernel.
    For inputs whose magnitudes fit single precision (:func:`~shrinkpert.metrics._l1_kernels.fits`,
    checked by the caller). ``scope``: as in :func:`l1_heavy` (keeps the candidates' blocks);
    ``reach``: at least :math:`\max|q| + \max|c|` (computed when not given); ``keep``, ``rows``
    (the anchors to rank, all if None; the others get no counts): as in :func:`_classify`.
    """
    n, n_genes = q.shape
    q, c, base = kernel_input(q), kernel_input(c), kernel_input(base)
    target = np.array(target, dtype=np.int64)
    live = np.flatnonzero(~dead) if rows is None else rows[~dead[rows]]
    own = np.full(n, np.nan)
    own[live] = _exact(q, c, base, target, _k.L1, live, live)
    blocks = reuse(scope, ("pairwise", "single_blocks"), lambda: _l1.single_blocks(c))
    q32, w32 = q.astype(np.float32), base.astype(np.float32)
    magnitude = np.abs(q)
    if reach is None:
        reach = float(magnitude.max() + np.abs(c).max())
    targeted = np.flatnonzero(target >= 0)
    magnitude[targeted, target[targeted]] = 0.0
    # A_i, the query's weighted magnitude (its rounding is covered by the bound's factor 2)
    size = magnitude @ base[0] if base.shape[0] == 1 else np.einsum("pg,pg->p", magnitude, base)

    def approx(block: slice | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(block.start, block.stop, dtype=np.int64) if isinstance(block, slice) else block
        d = np.empty((idx.size, c.shape[0]))
        with thread_limit(None if d.size * n_genes > _SMALL_JOB else 1):
            _l1.l1_single(q32, blocks, w32, target, idx, _ROWS_PER_TASK, d)
        return d, _l1.bound(d, size[idx], n_genes, reach)

    groups = _candidate_groups(scope, c)
    return _classify(approx, own, own, own, dead.copy(), groups, (q, c, base, target, _k.L1), int(live.size),
                     keep=keep, rows=rows)


def l1_scaled(q: np.ndarray, c: np.ndarray, base: np.ndarray, target: np.ndarray, dead: np.ndarray,
              common: np.ndarray, record: dict[str, Any], scope: dict[Hashable, Any] | None = None,
              reach: float | None = None) -> Standing:
    r"""The exact L1 standing under per-row weights whose ``common`` rows are one value :math:`c > 0`
    on every gene, from the standing of the same queries and candidates under the weights 1.

    For a common row the kernel sums the same non-negative terms, each times :math:`c`, so
    :math:`|d^{(c)}_{pj} - c\,d^{(1)}_{pj}| \le 2\gamma_{n+1}c\,d^{(1)}_{pj}/(1 - \gamma_n)
    \le \rho\, c\, d^{(1)}_{pj}/2` (:math:`\rho = 4\gamma_{G+16}`). A pair that ``record`` (the
    ``keep`` of :func:`_classify` under the weights 1) decided has
    :math:`|d^{(1)}_{pj} - d^{(1)}_{pp}| > \rho(d^{(1)}_{pj} + d^{(1)}_{pp})`, hence the same sign of
    :math:`d^{(c)}_{pj} - d^{(c)}_{pp}`: its count is taken as it is; the pairs it left to the exact
    kernel are computed again under the rows' weights. The other rows (and any common row the
    record has undefined) are ranked by :func:`l1_single` when ``reach`` is given (the inputs fit
    single precision; ``scope`` as there), else from their whole rows by the blocked kernel. Equal
    to the standing computed from scratch, ties included.
    """
    n = q.shape[0]
    q, c, base = kernel_input(q), kernel_input(c), kernel_input(base)
    target = np.array(target, dtype=np.int64)
    less, equal, greater = (a.copy() for a in record["decided"])
    taken = common & ~dead & ~record["undefined"]
    live = np.flatnonzero(taken)
    own = np.full(n, np.nan)
    own[live] = _exact(q, c, base, target, _k.L1, live, live)
    rows_x, cols_x = record["pairs"]
    mine = taken[rows_x]
    rows_x, cols_x = rows_x[mine], cols_x[mine]
    st = Standing(less, equal, greater, dead | (taken & np.isnan(own)), int(live.size + rows_x.size))
    _tally_exact(st, rows_x, _exact(q, c, base, target, _k.L1, rows_x, cols_x), own)
    rest = np.flatnonzero(~taken & ~dead)
    pieces: list[tuple[np.ndarray, Standing]] = []  # rows and their standing, its arrays one entry per row
    if rest.size and reach is not None:
        part = l1_single(q, c, base, target, dead, scope, reach=reach, rows=rest)
        pieces.append((rest, Standing(part.less[rest], part.equal[rest], part.greater[rest], part.undefined[rest],
                                      part.n_exact)))
    else:
        step = max(1, _BLOCK // c.shape[0])
        for first in range(0, rest.size, step):
            rows = rest[first:first + step]
            pieces.append((rows, from_matrix_rows(whole_rows(q, c, base, target, _k.L1, rows), rows, dead[rows])))
    n_exact = st.n_exact
    for rows, part in pieces:
        for ours, theirs in ((st.less, part.less), (st.equal, part.equal), (st.greater, part.greater),
                             (st.undefined, part.undefined)):
            ours[rows] = theirs
        n_exact += part.n_exact
    return Standing(st.less, st.equal, st.greater, st.undefined, n_exact)


def direct(x: np.ndarray, y: np.ndarray, base: np.ndarray, target: np.ndarray, kind: int, anchor: str,
           dead: np.ndarray) -> Standing:
    """The standing from the full kernel matrix (L1, and inputs too extreme for products)."""
    q, c = (x, y) if anchor == "pred" else (y, x)
    return from_matrix(whole_rows(q, c, base, target, kind, np.arange(q.shape[0])), dead)


def compute(x: np.ndarray, y: np.ndarray, base: np.ndarray, target: np.ndarray, kind: int, anchor: str,
            dead: np.ndarray, pred_scope: dict[Hashable, Any] | None,
            truth_scope: dict[Hashable, Any] | None, pred_any: dict[Hashable, Any] | None = None,
            truth_any: dict[Hashable, Any] | None = None, form: AffineForm | None = None) -> Standing:
    """The standing of every anchor row: from products when they apply, else from the kernel matrix
    (the scopes and ``form`` as in :class:`PairSums`; ``pred_any``, ``truth_any``: what depends on the
    prediction or the truth alone, shared by every weighting; by default the other two)."""
    ranges = (reuse(pred_scope if pred_any is None else pred_any, ("pairwise", "range"), lambda: _range(x)),
              reuse(truth_scope if truth_any is None else truth_any, ("pairwise", "range"), lambda: _range(y)),
              reuse(truth_scope, ("pairwise", "weight_range"), lambda: _range(base)))
    tame = _within(*_TAME, *ranges)  # no product of three underflows or overflows
    if kind == _k.L1 and tame:
        q, c = (x, y) if anchor == "pred" else (y, x)
        scope = truth_scope if anchor == "pred" else pred_scope  # the candidates' side
        q_range, c_range = ranges[:2] if anchor == "pred" else ranges[1::-1]
        # the standing under the weights 1 is kept for the weightings whose common row is constant (l1_scaled)
        key = ("pairwise", "l1_unit", anchor)
        record = None if pred_any is None or base.shape[0] == 1 else pred_any.get(key)
        if record is not None and np.array_equal(record["target"], target):
            common = _common(scope, base)
            if common is not None and _constant(common[0]) is not None:
                return l1_scaled(q, c, base, target, dead, common[1], record, scope,
                                 reach=q_range[1] + c_range[1] if _l1.fits(q_range, c_range, ranges[2]) else None)
        keep = {"target": target} if pred_any is not None and base.shape[0] == 1 and _constant(base[0]) == 1.0 else None
        st = l1_heavy(q, c, base, target, dead, scope, keep)
        if st is None:
            st = l1_standing(q, c, base, target, dead, scope, keep)
        if st is None and _l1.fits(q_range, c_range, ranges[2]):
            st = l1_single(q, c, base, target, dead, scope, reach=q_range[1] + c_range[1], keep=keep)
        if st is not None:
            if keep is not None and keep.get("standing") is st:
                pred_any[key] = keep
            return st
    if kind == _k.L1 or not tame:
        return direct(x, y, base, target, kind, anchor, dead)
    return standing(PairSums(x, y, base, target, pred_scope, truth_scope, pred_any, truth_any, form), kind, anchor,
                    dead)
