"""Pathway (gene-set) activity of each perturbation's profile, and agreement of predicted vs true activity.

For a profile :math:`x_p` over :math:`G` genes and a gene set :math:`s` with weights
:math:`m_{gs}` (1 for members, 0 for others, or signed weights):

* ``method="mean"``: :math:`a_{ps} = \\sum_g m_{gs} x_{pg} / \\sum_g |m_{gs}|`;
* ``method="ulm"`` (decoupler's univariate linear model): the t statistic of the slope in
  :math:`x_{pg} = \\beta_0 + \\beta_1 m_{gs} + \\varepsilon_g` over all :math:`G` genes,
  :math:`t = r\\sqrt{(G-2)/(1-r^2)}` with :math:`r` the Pearson correlation of :math:`x_p` and
  :math:`m_s`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError
from .maps import profile_matrix
from .relationships import to_symbols

__all__ = ["PathwayActivity", "pathway_activity", "gene_set_matrix", "target_membership", "activity_scores",
           "activity_agreement"]

METHODS = ("mean", "ulm")


def _long_sets(gene_sets: Any) -> pd.DataFrame:
    """``set, gene, weight`` rows of any accepted gene-set input, genes as GENCODE v41 symbols."""
    if isinstance(gene_sets, pd.DataFrame):
        if not {"set", "gene"} <= set(gene_sets.columns):
            raise InputError("A gene_sets DataFrame needs columns set, gene (and optionally weight).")
        w = gene_sets["weight"] if "weight" in gene_sets else pd.Series(1.0, index=gene_sets.index)
        long = pd.DataFrame({"set": gene_sets["set"].astype(str), "gene": gene_sets["gene"].astype(str),
                             "weight": w.astype(float)})
    elif isinstance(gene_sets, Mapping):
        rows = []
        for name, members in gene_sets.items():
            items = members.items() if isinstance(members, Mapping) else ((g, 1.0) for g in members)
            rows.extend((str(name), str(g), float(v)) for g, v in items)
        long = pd.DataFrame(rows, columns=["set", "gene", "weight"])
    else:
        raise InputError(f"gene_sets must be a mapping or a DataFrame; got {type(gene_sets).__name__}.")
    if not np.isfinite(long["weight"]).all():
        raise InputError("gene_sets weights must be finite.")
    long["gene"] = to_symbols(long["gene"])[0]
    return long


def gene_set_matrix(gene_sets: Any, genes: Any, *, min_size: int = 2) -> tuple[np.ndarray, pd.Index]:
    """Gene × set weight matrix over ``genes`` (symbols aligned through GENCODE v41).

    ``gene_sets``: mapping set -> genes, mapping set -> {gene: weight}, or a DataFrame with
    columns ``set, gene`` and optional ``weight``. Sets with fewer than ``min_size`` measured
    genes are dropped.
    """
    long = _long_sets(gene_sets)
    gene_index = pd.Index(to_symbols(genes)[0])
    long["row"] = gene_index.get_indexer(long["gene"])
    long = long[long["row"] >= 0]
    sizes = long.groupby("set")["row"].nunique()
    sets = pd.Index(sorted(sizes.index[sizes >= min_size]))
    long = long[long["set"].isin(sets)]
    m = np.zeros((len(gene_index), len(sets)))
    np.add.at(m, (long["row"].to_numpy(), sets.get_indexer(long["set"])), long["weight"].to_numpy())
    return m, sets


def target_membership(gene_sets: Any, sets: pd.Index, targets: Any) -> np.ndarray:
    """Boolean (n_targets × n_sets): does set ``s`` contain target gene ``t``."""
    long = _long_sets(gene_sets)
    keys = set(zip(long["set"], long["gene"]))
    symbols = to_symbols(targets)[0]
    return np.array([[(s, t) in keys for s in sets] for t in symbols], dtype=bool).reshape(len(symbols), len(sets))


def activity_scores(x: np.ndarray, m: np.ndarray, method: str = "ulm") -> np.ndarray:
    """Activity of each row of ``x`` (P × G) for each column of ``m`` (G × S); see module."""
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}; got {method!r}.")
    if method == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            return (x @ m) / np.abs(m).sum(axis=0)
    n = x.shape[1]
    if n < 3:
        raise InputError(f"method='ulm' needs at least 3 genes; got {n}.")
    xc = x - x.mean(axis=1, keepdims=True)
    mc = m - m.mean(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc @ mc) / np.outer(np.sqrt((xc**2).sum(axis=1)), np.sqrt((mc**2).sum(axis=0)))
        r = np.clip(r, -1.0, 1.0)
        return r * np.sqrt((n - 2) / ((1.0 - r) * (1.0 + r)))


def activity_agreement(pred_act: np.ndarray, true_act: np.ndarray) -> np.ndarray:
    """Pearson correlation across sets of predicted vs true activity, per perturbation (NaN if undefined)."""
    ok = np.isfinite(pred_act) & np.isfinite(true_act)
    out = np.full(pred_act.shape[0], np.nan)
    for p in range(pred_act.shape[0]):
        a, b = pred_act[p, ok[p]], true_act[p, ok[p]]
        if a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0:
            out[p] = float(np.corrcoef(a, b)[0, 1])
    return out


@dataclass(frozen=True)
class PathwayActivity:
    """Signed activity of each perturbation's profile on each gene set.

    Attributes
    ----------
    perturbations, sets : pandas.Index
    activity : ndarray of float64, shape (n_perturbations, n_sets)
    set_size : ndarray of int64, shape (n_sets,)
        Measured member genes of each set.
    method : str
    params : mapping
    """

    perturbations: pd.Index
    sets: pd.Index
    activity: np.ndarray
    set_size: np.ndarray
    method: str
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        self.activity.setflags(write=False)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: ``perturbation, set, activity, set_size``."""
        n_p, n_s = self.activity.shape
        return pd.DataFrame({"perturbation": np.repeat(self.perturbations.to_numpy(), n_s),
                             "set": np.tile(self.sets.to_numpy(), n_p), "activity": self.activity.ravel(),
                             "set_size": np.tile(self.set_size, n_p)})

    def agreement(self, truth: PathwayActivity, *, targets: Mapping[str, str] | None = None,
                  gene_sets: Any = None) -> pd.DataFrame:
        """Per perturbation: Pearson across sets with ``truth``, and the target's own sets' sign match.

        ``target_sign`` is the fraction of the sets containing the perturbation's target gene
        (``targets``: label -> gene, default the label) where predicted and true activity have the
        same sign (sets with true activity 0 left out); NaN when no set contains the target. It
        needs the same ``gene_sets`` as were scored.
        """
        if not (truth.sets.equals(self.sets) and truth.perturbations.equals(self.perturbations)):
            raise InputError("agreement needs activities of the same perturbations and sets (same order).")
        frame = pd.DataFrame({"pearson": activity_agreement(self.activity, truth.activity)},
                             index=self.perturbations)
        if gene_sets is not None:
            labels = [targets.get(p, p) if targets else p for p in self.perturbations]
            own = target_membership(gene_sets, self.sets, labels)
            counted = own & (truth.activity != 0) & np.isfinite(self.activity) & np.isfinite(truth.activity)
            same = counted & (np.sign(self.activity) == np.sign(truth.activity))
            with np.errstate(invalid="ignore", divide="ignore"):
                frame["target_sign"] = np.where(counted.any(axis=1), same.sum(axis=1) / counted.sum(axis=1), np.nan)
            frame["n_target_sets"] = counted.sum(axis=1)
        return frame


def pathway_activity(
    profiles: Any,
    gene_sets: Any,
    *,
    method: str = "ulm",
    min_size: int = 5,
    field: str | None = None,
) -> PathwayActivity:
    r"""Signed activity of every perturbation on every gene set (weighted mean, or decoupler's ulm t).

    Parameters
    ----------
    profiles : DataFrame, EffectSizes or ShrunkEffects
        Perturbations × genes effects (deltas).
    gene_sets : mapping or DataFrame
        Set -> genes (or -> {gene: weight}), or a long DataFrame ``set, gene[, weight]``.
    method : {"ulm", "mean"}, default "ulm"
        See the module docstring.
    min_size : int, default 5
        Sets with fewer measured genes are dropped.
    field : str, optional
        Matrix of an effects result (see :func:`~shrinkpert.biology.profile_matrix`).

    Returns
    -------
    PathwayActivity

    Raises
    ------
    InputError
        Unknown ``method``, malformed ``gene_sets``, or no set with ``min_size`` measured genes.

    Examples
    --------
    >>> import pandas as pd
    >>> from shrinkpert.biology import pathway_activity
    >>> x = pd.DataFrame([[1.0, 1.0, 0.0, 0.0]], index=["P"], columns=["A", "B", "C", "D"])
    >>> pathway_activity(x, {"AB": ["A", "B"]}, method="mean", min_size=2).activity.tolist()
    [[1.0]]
    """
    x, perts, genes = profile_matrix(profiles, field=field, min_rows=1)
    m, sets = gene_set_matrix(gene_sets, genes, min_size=int(min_size))
    if len(sets) == 0:
        raise InputError(f"No gene set has {min_size} or more measured genes; lower min_size or check gene names.")
    act = activity_scores(x, m, method)
    return PathwayActivity(perturbations=perts, sets=sets, activity=np.ascontiguousarray(act),
                           set_size=(m != 0).sum(axis=0).astype(np.int64), method=method,
                           params={"method": method, "min_size": int(min_size)})
