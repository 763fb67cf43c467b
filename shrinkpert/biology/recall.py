"""Known-relationship recall of a perturbation map (EFAAR-style) with a permutation null.

Definitions (``N`` = number of perturbation pairs with a defined similarity, :math:`\\alpha` =
``threshold``): sort the ``N`` similarities; the bottom tail is the rank interval
:math:`[0, \\alpha N)` and the top tail :math:`[N - \\alpha N, N)`. A pair whose similarity is tied
with others occupies the rank interval :math:`[\\ell, h)` of its tie group and gets the *tail
credit*

.. math:: c = \\frac{|[\\ell, h) \\cap [0, \\alpha N)| + |[\\ell, h) \\cap [N-\\alpha N, N)|}{h - \\ell},

the probability that it falls in a tail under random tie-breaking (1 or 0 without ties). The
credits of all ``N`` pairs sum to exactly :math:`2 \\alpha N`, so the mean credit of a random set
of pairs is :math:`2\\alpha` (0.1 at 5%).

Recall is the mean credit over the known pairs whose two genes are both perturbed in the map
(*testable* pairs). The null relabels the perturbations at random (a uniform permutation of the
rows and columns of the map, which keeps the map and the relationship graph and breaks only their
correspondence); its expectation is :math:`2\\alpha`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError, ShrinkpertWarning
from .maps import cosine_similarity, perturbation_map
from .relationships import load_relationships, to_symbols

__all__ = ["RelationshipRecall", "relationship_recall", "relationship_pairs", "upper_values"]


class _Tails:
    """Tail credits as a function of a similarity value, from the two tail-edge tie groups.

    Built in O(N) from the unsorted similarities (two order statistics by ``np.partition`` and
    counts at the two edge values): a value below the bottom edge value has bottom credit 1, above
    the top edge value top credit 1, strictly between them 0, and a value equal to an edge value
    the share of its tie group's rank interval inside the tail.
    """

    def __init__(self, values: np.ndarray, threshold: float) -> None:
        n = values.size
        self.n, self.tail = n, threshold * n
        i_lo = min(int(np.floor(self.tail)), n - 1)
        i_hi = max(min(int(np.ceil(n - self.tail)) - 1, n - 1), 0)
        part = np.partition(values, [i_lo, i_hi]) if n > 1 else values
        self.v_lo, self.v_hi = float(part[i_lo]), float(part[i_hi])
        self.edge: dict[float, tuple[float, float]] = {}
        for v in (self.v_lo, self.v_hi):
            lo, hi = float(np.count_nonzero(values < v)), float(np.count_nonzero(values <= v))
            bottom = max(min(hi, self.tail) - lo, 0.0) / (hi - lo)
            top = max(hi - max(lo, n - self.tail), 0.0) / (hi - lo)
            self.edge[v] = (bottom, top)

    def parts(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bottom- and top-tail credit of each similarity in ``s`` (any shape)."""
        bottom = (s < self.v_lo).astype(np.float64)
        top = (s > self.v_hi).astype(np.float64)
        for v, (b, t) in self.edge.items():
            at = s == v
            bottom[at], top[at] = b, t
        return bottom, top

    def __call__(self, s: np.ndarray) -> np.ndarray:
        bottom, top = self.parts(s)
        return bottom + top


def relationship_pairs(perturbation_genes: Any, relationships: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(a, b)``, ``a < b``, of the known pairs among the perturbations' genes."""
    if not isinstance(relationships, pd.DataFrame) or not {"gene_a", "gene_b"} <= set(relationships.columns):
        raise InputError(
            "relationships must be a DataFrame with columns gene_a, gene_b (from load_relationships or "
            "read_relationships)."
        )
    symbols, _, _ = to_symbols(perturbation_genes)
    index = pd.Index(symbols)
    if index.has_duplicates:
        dup = sorted(set(index[index.duplicated()]))[:5]
        raise InputError(
            f"Several perturbations target the same gene ({dup}); aggregate them to one profile per gene "
            f"first (e.g. average the guides) or pass targets= that name them apart."
        )
    ga = index.get_indexer(to_symbols(relationships["gene_a"])[0])
    gb = index.get_indexer(to_symbols(relationships["gene_b"])[0])
    keep = (ga >= 0) & (gb >= 0) & (ga != gb)
    a, b = np.minimum(ga[keep], gb[keep]), np.maximum(ga[keep], gb[keep])
    pairs = np.unique(np.stack([a, b], axis=1), axis=0) if keep.any() else np.empty((0, 2), dtype=np.int64)
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


@dataclass(frozen=True)
class RelationshipRecall:
    """Recall of known relationships among the most and least similar perturbation pairs.

    Attributes
    ----------
    recall : float
        Mean tail credit of the testable known pairs (both tails).
    recall_top, recall_bottom : float
        The same for the top (most similar) and bottom (most anti-similar) tail alone.
    null_mean, null_sd : float
        Mean and standard deviation of recall over the permutation null (expectation
        :math:`2\\alpha`).
    null_low, null_high : float
        Central 95% interval of the null.
    p_value : float
        :math:`(1 + \\#\\{\\text{null} \\ge \\text{recall}\\}) / (1 + B)`.
    n_pairs : int
        Testable known pairs.
    n_perturbations, n_testable : int
        Perturbations in the map, and those with at least one known partner in it.
    per_perturbation : pandas.DataFrame
        ``n_partners`` and ``recall`` (mean credit over its own pairs) per perturbation.
    params : mapping
        ``threshold``, ``n_permutations``, ``seed``, ``source``, ``align`` and the unmatched genes.
    """

    recall: float
    recall_top: float
    recall_bottom: float
    null_mean: float
    null_sd: float
    null_low: float
    null_high: float
    p_value: float
    n_pairs: int
    n_perturbations: int
    n_testable: int
    per_perturbation: pd.DataFrame
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """One row: every scalar field plus ``source`` and ``threshold``."""
        row = {k: getattr(self, k) for k in ("recall", "recall_top", "recall_bottom", "null_mean", "null_sd",
                                             "null_low", "null_high", "p_value", "n_pairs", "n_perturbations",
                                             "n_testable")}
        row.update(source=self.params["source"], threshold=self.params["threshold"],
                   n_permutations=self.params["n_permutations"])
        return pd.DataFrame([row])


def upper_values(s: np.ndarray) -> np.ndarray:
    """Defined values of the strict upper triangle, row by row (row slices: no P² index arrays)."""
    n = s.shape[0]
    v = np.empty(n * (n - 1) // 2)
    pos = 0
    for i in range(n - 1):
        v[pos:pos + n - 1 - i] = s[i, i + 1:]
        pos += n - 1 - i
    if np.isnan(v).any():
        v = v[~np.isnan(v)]
    return v


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0 < t <= 0.5:
        raise InputError(f"threshold must be in (0, 0.5] (each tail's share of pairs); got {threshold!r}.")
    return t


def _permutation_null(s: np.ndarray, a: np.ndarray, b: np.ndarray, credit: _Tails, n_perm: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Recall of ``n_perm`` random relabellings of the defined perturbations (chunked)."""
    defined = np.flatnonzero(~np.isnan(np.diag(s)))
    out = np.empty(n_perm)
    pos = np.full(s.shape[0], -1)
    pos[defined] = np.arange(defined.size)
    pa, pb = pos[a], pos[b]
    chunk = max(1, (1 << 22) // max(a.size, 1))
    for start in range(0, n_perm, chunk):
        m = min(chunk, n_perm - start)
        perms = rng.permuted(np.broadcast_to(defined, (m, defined.size)), axis=1)
        vals = s[perms[:, pa], perms[:, pb]]
        out[start:start + m] = credit(vals).mean(axis=1)
    return out


def relationship_recall(
    profiles: Any,
    relationships: pd.DataFrame | str,
    *,
    targets: Mapping[str, str] | None = None,
    controls: Any = None,
    align: str = "centre",
    n_components: int | None = None,
    field: str | None = None,
    threshold: float = 0.05,
    n_permutations: int = 1000,
    seed: int | np.random.Generator = 0,
) -> RelationshipRecall:
    r"""Fraction of known relationships among the most (and least) similar perturbation pairs.

    The map is built by :func:`perturbation_map` (``controls``, ``align``, ``n_components``,
    ``field``) and related by cosine similarity. With credits :math:`c_{pq}` as in the module
    docstring and :math:`K` the testable known pairs,

    .. math:: \mathrm{recall} = \frac{1}{|K|} \sum_{(p,q) \in K} c_{pq},

    against a null of ``n_permutations`` random relabellings of the perturbations.

    Parameters
    ----------
    profiles : DataFrame, EffectSizes, ShrunkEffects
        One row per perturbation, labelled by its target gene (or use ``targets``).
    relationships : pandas.DataFrame or str
        Columns ``gene_a, gene_b`` (:func:`load_relationships`, :func:`read_relationships`), or
        the name of a bundled set.
    targets : mapping, optional
        Perturbation label -> target gene symbol or Ensembl ID (default: the label itself).
    controls, align, n_components, field
        See :func:`perturbation_map`.
    threshold : float, default 0.05
        Share of pairs in each tail (EFAAR's 5%/95%).
    n_permutations : int, default 1000
    seed : int or numpy.random.Generator, default 0

    Returns
    -------
    RelationshipRecall

    Raises
    ------
    InputError
        Malformed inputs, bad ``threshold``, several perturbations on one gene, or no testable
        known pair.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from shrinkpert.biology import relationship_recall
    >>> rng = np.random.default_rng(0)
    >>> x = pd.DataFrame(rng.normal(size=(40, 30)), index=[f"G{i}" for i in range(40)])
    >>> x.iloc[1] = x.iloc[0] + 0.01
    >>> pairs = pd.DataFrame({"gene_a": ["G0"], "gene_b": ["G1"]})
    >>> res = relationship_recall(x, pairs, n_permutations=200)
    >>> res.recall, round(res.null_mean, 1)
    (1.0, 0.1)
    """
    t = _check_threshold(threshold)
    n_perm = int(n_permutations)
    if n_perm < 1:
        raise InputError(f"n_permutations must be >= 1; got {n_permutations!r}.")
    if isinstance(relationships, str):
        relationships = load_relationships(relationships)
    pmap = perturbation_map(profiles, controls=controls, align=align, n_components=n_components, field=field)
    perts = pmap.perturbations
    genes = [targets.get(p, p) for p in perts] if targets is not None else [str(p) for p in perts]
    a, b = relationship_pairs(genes, relationships)
    s = cosine_similarity(pmap.embedding)
    undefined = np.isnan(np.diag(s))
    if undefined.any():
        warnings.warn(f"{int(undefined.sum())} perturbation(s) have an all-zero aligned profile and no "
                      f"similarity (e.g. {list(perts[undefined][:5])}); they are left out.", ShrinkpertWarning,
                      stacklevel=2)
        keep = ~(undefined[a] | undefined[b])
        a, b = a[keep], b[keep]
    if a.size == 0:
        raise InputError(
            "No known pair has both genes perturbed in the map; check that perturbation labels (or targets=) are "
            "gene symbols or Ensembl IDs of the relationship set."
        )
    tails = _Tails(upper_values(s), t)
    bottom, top = tails.parts(s[a, b])
    credit = bottom + top
    rng = np.random.default_rng(seed)
    null = _permutation_null(s, a, b, tails, n_perm, rng)
    recall = float(credit.mean())
    n_partners = np.bincount(np.concatenate([a, b]), minlength=len(perts))
    sums = np.bincount(np.concatenate([a, b]), weights=np.concatenate([credit, credit]), minlength=len(perts))
    with np.errstate(invalid="ignore", divide="ignore"):
        per = pd.DataFrame({"n_partners": n_partners, "recall": np.where(n_partners > 0, sums / n_partners, np.nan)},
                           index=perts)
    sources = relationships["source"].unique().tolist() if "source" in relationships else ["user"]
    return RelationshipRecall(
        recall=recall,
        recall_top=float(top.mean()),
        recall_bottom=float(bottom.mean()),
        null_mean=float(null.mean()),
        null_sd=float(null.std(ddof=1)) if n_perm > 1 else float("nan"),
        null_low=float(np.quantile(null, 0.025)),
        null_high=float(np.quantile(null, 0.975)),
        p_value=float((1 + np.sum(null >= recall - 1e-12)) / (1 + n_perm)),
        n_pairs=int(a.size),
        n_perturbations=int(len(perts)),
        n_testable=int((n_partners > 0).sum()),
        per_perturbation=per,
        params={"threshold": t, "n_permutations": n_perm,
                "seed": int(seed) if isinstance(seed, (int, np.integer)) else "generator",
                "source": "+".join(map(str, sources)), "align": align, **dict(pmap.params)},
    )
