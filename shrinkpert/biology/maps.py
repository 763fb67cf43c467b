"""Perturbation maps: profiles aligned on controls, and cosine similarity between perturbations.

A *map* (EFAAR's "embed, filter, align, aggregate, relate") here starts from one profile per
perturbation — a row of a perturbations × genes table, the ``effect`` of an
:class:`~shrinkpert.EffectSizes`, the posterior mean of a :class:`~shrinkpert.ShrunkEffects`, or
pseudobulk deltas — then

* **align**: subtract the control centre :math:`\\mu_c` (``"centre"``) or project on the
  principal axes of the control units and scale each to unit control variance (``"whiten"``,
  EFAAR's typical-variation normalisation):
  :math:`z_p = \\Lambda_k^{-1/2} V_k^\\top (x_p - \\mu_c)`, with :math:`V_k, \\Lambda_k` the top
  :math:`k` eigenvectors and eigenvalues of the control covariance;
* **relate**: cosine similarity :math:`S_{pq} = z_p^\\top z_q / (\\lVert z_p\\rVert \\lVert z_q\\rVert)`
  from one blocked matrix product of the row-normalised profiles (upper triangle only, mirrored,
  so :math:`S` is exactly symmetric; identical rows get exactly tied similarities).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..effects.estimate import EffectSizes
from ..effects.shrink import ShrunkEffects
from ..errors import InputError

__all__ = ["PerturbationMap", "perturbation_map", "cosine_similarity", "profile_matrix", "ALIGN"]

#: Alignment methods of :func:`perturbation_map`.
ALIGN = ("none", "centre", "whiten")
_BLOCK_BYTES = 1 << 26  # ~64 MB of similarities per block


def profile_matrix(profiles: Any, *, field: str | None = None,
                   min_rows: int = 2) -> tuple[np.ndarray, pd.Index, pd.Index]:
    """``(values, perturbations, genes)`` of any supported profile input (values copied, float64).

    ``profiles`` is a perturbations × genes :class:`pandas.DataFrame`, an
    :class:`~shrinkpert.EffectSizes` (``field`` default ``"effect"``), a
    :class:`~shrinkpert.ShrunkEffects` (default ``"posterior_mean"``; ``field="effect"`` for the
    raw effects) or a 2-D array (perturbations named ``"0", "1", ...``). A map needs
    ``min_rows`` (default 2) perturbations.
    """
    if isinstance(profiles, (EffectSizes, ShrunkEffects)):
        default = "effect" if isinstance(profiles, EffectSizes) else "posterior_mean"
        name = field or default
        if name not in ("effect", "posterior_mean") or not hasattr(profiles, name):
            raise InputError(f"field={field!r} is not a profile of {type(profiles).__name__}; use {default!r}.")
        values = getattr(profiles, name)
        perts, genes = pd.Index(profiles.perturbations), pd.Index(profiles.genes)
    elif isinstance(profiles, pd.DataFrame):
        if field is not None:
            raise InputError("field applies to EffectSizes/ShrunkEffects only; select DataFrame columns yourself.")
        values, perts, genes = profiles.to_numpy(), profiles.index, profiles.columns
    else:
        values = np.asarray(profiles)
        if values.ndim != 2:
            raise InputError(
                f"profiles must be a perturbations × genes DataFrame, EffectSizes, ShrunkEffects or 2-D array; "
                f"got {type(profiles).__name__} with {values.ndim} dimension(s)."
            )
        perts, genes = pd.Index([str(i) for i in range(values.shape[0])]), pd.RangeIndex(values.shape[1])
    try:
        values = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"profiles must be numeric: {exc}") from exc
    if values.shape[0] < min_rows:
        raise InputError(f"profiles needs at least {min_rows} perturbation(s); it has {values.shape[0]}.")
    if not np.isfinite(values).all():
        bad = perts[~np.isfinite(values).all(axis=1)]
        raise InputError(f"profiles has NaN or infinite values (perturbations {list(bad[:5])}); drop or fill them.")
    if perts.has_duplicates:
        raise InputError(f"profiles has duplicated perturbation labels {list(perts[perts.duplicated()][:5])}.")
    return values, pd.Index(perts), pd.Index(genes)


def _controls(controls: Any, genes: pd.Index, n_genes: int) -> np.ndarray | None:
    if controls is None:
        return None
    if isinstance(controls, pd.Series):
        controls = controls.to_frame().T
    if isinstance(controls, pd.DataFrame):
        if isinstance(genes, pd.RangeIndex):
            c = controls.to_numpy()
        else:
            missing = genes.difference(controls.columns)
            if len(missing):
                raise InputError(f"controls lacks {len(missing)} profile genes (e.g. {list(missing[:5])}).")
            c = controls.loc[:, genes].to_numpy()
    else:
        c = np.asarray(controls)
    c = np.atleast_2d(np.asarray(c, dtype=np.float64))
    if c.ndim != 2 or c.shape[1] != n_genes:
        raise InputError(f"controls must have {n_genes} columns (one per profile gene); got shape {c.shape}.")
    if not np.isfinite(c).all():
        raise InputError("controls has NaN or infinite values.")
    return c


@dataclass(frozen=True)
class PerturbationMap:
    """Aligned perturbation profiles, ready to relate.

    Attributes
    ----------
    perturbations : pandas.Index
    features : pandas.Index
        Genes (``align`` "none"/"centre") or control principal axes ``PC1, PC2, ...``.
    embedding : ndarray of float64, shape (n_perturbations, n_features)
    params : mapping
        ``align``, ``n_components``, ``n_control_units``, ``control_variance_explained``.
    """

    perturbations: pd.Index
    features: pd.Index
    embedding: np.ndarray
    params: Mapping[str, Any]

    def __post_init__(self) -> None:
        self.embedding.setflags(write=False)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def similarity(self, *, block_size: int | None = None) -> pd.DataFrame:
        """Cosine similarity between perturbations (see :func:`cosine_similarity`), labelled."""
        s = cosine_similarity(self.embedding, block_size=block_size)
        return pd.DataFrame(s, index=self.perturbations, columns=self.perturbations)

    def to_frame(self) -> pd.DataFrame:
        """Tidy table, one row per (perturbation, feature): ``perturbation, feature, value``."""
        n_p, n_f = self.embedding.shape
        return pd.DataFrame({"perturbation": np.repeat(self.perturbations.to_numpy(), n_f),
                             "feature": np.tile(self.features.to_numpy(), n_p),
                             "value": self.embedding.ravel()})


def perturbation_map(
    profiles: Any,
    *,
    controls: Any = None,
    align: str = "centre",
    n_components: int | None = None,
    field: str | None = None,
) -> PerturbationMap:
    r"""Align perturbation profiles on control units (EFAAR's *align* step).

    Parameters
    ----------
    profiles : DataFrame, EffectSizes, ShrunkEffects or 2-D array
        One row per perturbation (see :func:`profile_matrix`).
    controls : array-like, optional
        Control units on the same scale and genes as ``profiles``: a 1-D control profile, or a
        units × genes matrix (control cells or control pseudo-replicates; a DataFrame is matched
        by gene name). ``None``: the profiles are already relative to control (deltas, effects),
        so the centre is 0.
    align : {"none", "centre", "whiten"}, default "centre"
        ``"centre"``: :math:`x_p - \mu_c`. ``"whiten"``: needs >= 2 control units;
        :math:`z_p = \Lambda_k^{-1/2} V_k^\top (x_p - \mu_c)` with the eigen-decomposition of the
        control covariance (ddof 1).
    n_components : int, optional
        Axes kept by ``"whiten"`` (default: every axis with eigenvalue > 1e-10 × the largest).
    field : str, optional
        Which matrix of an effects result to use (``"effect"`` or ``"posterior_mean"``).

    Returns
    -------
    PerturbationMap

    Raises
    ------
    InputError
        Unknown ``align``, non-finite values, ``"whiten"`` without >= 2 control units, or
        ``n_components`` out of range.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from shrinkpert.biology import perturbation_map
    >>> x = pd.DataFrame([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0]], index=["A", "B", "C"])
    >>> m = perturbation_map(x)
    >>> round(float(m.similarity().loc["A", "B"]), 4)
    0.9988
    """
    if align not in ALIGN:
        raise InputError(f"align must be one of {ALIGN}; got {align!r}.")
    x, perts, genes = profile_matrix(profiles, field=field)
    c = _controls(controls, genes, x.shape[1])
    params: dict[str, Any] = {"align": align, "n_control_units": 0 if c is None else int(c.shape[0])}
    features = genes
    if align == "centre" and c is not None:
        x = x - c.mean(axis=0)
    elif align == "whiten":
        if c is None or c.shape[0] < 2:
            raise InputError("align='whiten' needs controls with at least 2 units (control cells or replicates).")
        mu = c.mean(axis=0)
        _, s, vt = np.linalg.svd(c - mu, full_matrices=False)
        lam = s**2 / (c.shape[0] - 1)
        usable = int(np.sum(lam > 1e-10 * lam[0])) if lam.size and lam[0] > 0 else 0
        k = usable if n_components is None else int(n_components)
        if not 1 <= k <= usable:
            raise InputError(f"n_components must be between 1 and {usable} (control axes with variance); got {k}.")
        x = ((x - mu) @ vt[:k].T) / np.sqrt(lam[:k])
        features = pd.Index([f"PC{i + 1}" for i in range(k)])
        params.update(n_components=k, control_variance_explained=float(lam[:k].sum() / lam.sum()))
    return PerturbationMap(perturbations=perts, features=features, embedding=np.ascontiguousarray(x), params=params)


def _unit_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    norm = np.sqrt(np.einsum("ij,ij->i", x, x))
    ok = norm > 0
    u = np.zeros_like(x)
    u[ok] = x[ok] / norm[ok, None]
    return u, ok


def cosine_similarity(x: Any, *, block_size: int | None = None) -> np.ndarray:
    r"""Cosine similarity between the rows of ``x``, from one blocked matrix product.

    .. math:: S_{pq} = \frac{x_p^\top x_q}{\lVert x_p \rVert\,\lVert x_q \rVert}

    Parameters
    ----------
    x : array-like, shape (n, d)
    block_size : int, optional
        Rows per block (default: about 64 MB of output per block). Block ``[a, b)`` computes
        ``U[a:b] @ U[a:].T`` (upper triangle) and mirrors it.

    Returns
    -------
    ndarray of float64, shape (n, n)
        Symmetric, clipped to [-1, 1], diagonal 1; rows and columns of all-zero rows are NaN.
        Rows with bit-identical unit vectors (e.g. identical rows) get exactly equal similarities. Memory: ``8 n²``
        bytes.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise InputError(f"x must be 2-D; got shape {x.shape}.")
    u, ok = _unit_rows(x)
    uniq, inverse = np.unique(u, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    if uniq.shape[0] < u.shape[0]:  # duplicates: compute once per distinct row so ties are exact
        s = cosine_similarity(uniq, block_size=block_size)[np.ix_(inverse, inverse)]
        zero = ~ok
        s[zero] = np.nan
        s[:, zero] = np.nan
        np.fill_diagonal(s, np.where(ok, 1.0, np.nan))
        return s
    n = u.shape[0]
    step = block_size or max(1, _BLOCK_BYTES // (8 * max(n, 1)))
    s = np.empty((n, n))
    for a in range(0, n, step):
        b = min(a + step, n)
        block = u[a:b] @ u[a:].T
        s[a:b, a:] = block
        s[a:, a:b] = block.T
    np.clip(s, -1.0, 1.0, out=s)
    s[~ok] = np.nan
    s[:, ~ok] = np.nan
    np.fill_diagonal(s, np.where(ok, 1.0, np.nan))
    return s
