r"""A prediction declared as an affine function of the truth's rows (shared by every subpackage).

Several baselines are built from the truth's means by a fixed affine rule: the leave-one-out
means, their scaled versions, the truth's rows under another label. Declaring that rule lets a
consumer derive what depends on the prediction from what depends on the truth alone (the rank
metrics take the prediction × truth product from the truth's own product,
:mod:`shrinkpert.metrics._derived`). A form is a declaration, not a promise: a consumer bounds
the residual between the prediction and its form from the values, so a wrong form costs time,
never a wrong result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._arrays import readonly
from .errors import InputError

__all__ = ["AffineForm"]


@dataclass(frozen=True)
class AffineForm:
    r"""Row :math:`p` of a prediction as :math:`x_p = s_p\,y_{\pi(p)} + \sum_k c_{pk} a_k`.

    :math:`y` are the truth's rows, :math:`a_k` a few fixed profiles.

    Attributes
    ----------
    scale : ndarray of float64, shape (P,)
        :math:`s_p`, the weight of the truth's row.
    profiles : ndarray of float64, shape (k, G)
        :math:`a_k`; ``k`` may be 0.
    coef : ndarray of float64, shape (P, k)
        :math:`c_{pk}`.
    perm : ndarray of int64, shape (P,), or None
        :math:`\pi(p)`, the truth's row that row :math:`p` is built from; None for :math:`\pi(p) = p`.

    Notes
    -----
    When every row's weights sum to 1 (:math:`s_p + \sum_k c_{pk} = 1`, an affine combination of
    profiles), the prediction minus a reference :math:`r` is the same combination of the truth's
    rows minus :math:`r` and of the profiles minus :math:`r` (:meth:`shifted`): deltas keep
    magnitudes of deltas.
    """

    scale: np.ndarray
    profiles: np.ndarray
    coef: np.ndarray
    perm: np.ndarray | None = None

    def __post_init__(self) -> None:
        scale, profiles, coef = (readonly(a) for a in (self.scale, self.profiles, self.coef))
        n = scale.shape[0] if scale.ndim == 1 else -1
        if profiles.ndim != 2 or coef.shape != (n, profiles.shape[0]):
            raise InputError(f"AffineForm: scale (P,), profiles (k, G) and coef (P, k) needed; got {scale.shape}, "
                             f"{profiles.shape} and {coef.shape}.")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "profiles", profiles)
        object.__setattr__(self, "coef", coef)
        if self.perm is not None:
            perm = readonly(self.perm, np.int64)
            if perm.shape != (n,) or ((perm < 0) | (perm >= n)).any():
                raise InputError(f"AffineForm: perm must hold {n} row numbers in [0, {n}).")
            object.__setattr__(self, "perm", perm)

    def truth_rows(self, truth: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        r""":math:`y_{\pi(p)}` of ``rows`` (all by default)."""
        return truth[rows] if self.perm is None else truth[self.perm[rows]]

    def values(self, truth: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        r"""The form evaluated on ``truth`` (P × G): :math:`s_p y_{\pi(p)} + \sum_k c_{pk} a_k` for ``rows``."""
        out = self.scale[rows, None] * self.truth_rows(truth, rows)
        if self.profiles.shape[0]:
            out += self.coef[rows] @ self.profiles
        return out

    def shifted(self, reference: np.ndarray) -> AffineForm:
        r"""The form of :math:`x - r` in terms of :math:`y - r`: the profiles :math:`a_k - r`, and
        :math:`r` itself with the weight :math:`s_p + \sum_k c_{pk} - 1` where that is more than
        rounding (weights that sum to 1 up to a few ulps leave :math:`r` out; the form stays a
        hint, its residual measured by whoever uses it)."""
        r = np.asarray(reference, dtype=np.float64).reshape(1, -1)
        profiles, coef = self.profiles - r, self.coef
        rest = self.scale + coef.sum(axis=1) - 1.0
        rest[np.abs(rest) <= 2.0**-50 * (np.abs(self.scale) + np.abs(coef).sum(axis=1))] = 0.0
        if (rest != 0.0).any():
            profiles, coef = np.vstack([profiles, r]), np.hstack([coef, rest[:, None]])
        return AffineForm(self.scale, profiles, coef, self.perm)
