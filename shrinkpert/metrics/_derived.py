r"""The prediction × truth product of a prediction declared affine in the truth, from the truth's own product.

A baseline built from the truth's means by a fixed affine rule (the leave-one-out means, their
scaled versions, the truth's rows under other labels) declares it as an
:class:`~shrinkpert._forms.AffineForm`:
:math:`x_p = s_p y_{\pi(p)} + \sum_k c_{pk} a_k + r_p`, the residual :math:`r_p` (rounding, or a
wrong declaration) measured from the values. With gene weights :math:`w`,

.. math:: S_{pj} = \sum_g w_g x_{pg} y_{jg}
          = s_p G_{\pi(p)j} + \sum_k c_{pk} H_{kj} + \sum_g w_g r_{pg} y_{jg},

:math:`G = (Y \circ w) Y^\top` the truth's own product (one per truth, shared by every such
side) and :math:`H = (A \circ w) Y^\top` (:math:`k \times P`). Every baseline of that kind then
costs :math:`O(kPG + P^2)` instead of a :math:`P^2 G` product.

**Bound.** With :math:`T_j = \sum_g w_g y_{jg}^2`, :math:`N_k = \sum_g w_g a_{kg}^2`, the standard
model (:mod:`~shrinkpert.metrics._rounding`; :math:`n` = genes + 16, :math:`\gamma = \gamma_n`,
:math:`\gamma' = \gamma_{k+4}`) and Cauchy–Schwarz (:math:`\sum_g w|a||b| \le \sqrt{\sum w a^2
\sum w b^2}`): :math:`G` is within :math:`2\gamma\sqrt{T_i T_j}` of its exact value (the product,
and a constant weight's scaling), :math:`H` within :math:`\gamma\sqrt{N_k T_j}`, the combination
within :math:`\gamma'` of its terms' magnitudes, and the residual adds at most
:math:`\lVert r_p\rVert_w\sqrt{T_j}`, where the computed residual :math:`\tilde r_p = x_p -
\mathrm{fl}(\text{form})` is within :math:`\gamma'` of the form's terms of the exact one. So

.. math:: |\tilde S_{pj} - S_{pj}| \le E_p\sqrt{T_j}, \qquad
          E_p = 1.01\big[(2\gamma + 3\gamma')\,m_p + \lVert \tilde r_p \rVert_w\big], \quad
          m_p = |s_p|\sqrt{T_{\pi(p)}} + \sum_k |c_{pk}|\sqrt{N_k},

the factor 1.01 covering the rounding of the norms themselves. The rank metrics widen the
prediction's magnitudes by :math:`E_p` (:class:`~shrinkpert.metrics._pairwise.PairSums`), so the
product is trusted only as far as this bound allows: a wrong form costs exact recomputations,
never a wrong rank. A form whose bound exceeds four times the rounding budget of a direct product
on more than 5 % of the rows is not used.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._forms import AffineForm
from .._numba import one_thread_blas
from . import _standing_kernels as _sk
from ._rounding import gamma

__all__ = ["derived_product", "derivation_error"]

_ROWS = 256  # rows of the residual computed at once (memory: _ROWS × genes)
_WORSE = 4.0  # a row's bound may be this many times the direct product's budget ...
_RARELY = 0.05  # ... on at most this fraction of the rows, else the form is not used


def _weighted_squares(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    r""":math:`\sum_g w_g a_{ig}^2` per row of ``a``, in gene order."""
    return _sk.row_sums(a, w[None, :])[0]


def derivation_error(x: np.ndarray, y: np.ndarray, w: np.ndarray, form: AffineForm) -> np.ndarray:
    r""":math:`E_p` of every row of ``x`` (see the module notes): :math:`|\tilde S_{pj} - S_{pj}| \le E_p\sqrt{T_j}`."""
    n_genes = x.shape[1]
    g, g_k = gamma(n_genes + 16), gamma(form.profiles.shape[0] + 4)
    t = _weighted_squares(y, w)
    m = np.abs(form.scale) * np.sqrt(t if form.perm is None else t[form.perm])
    if form.profiles.shape[0]:
        m += np.abs(form.coef) @ np.sqrt(_weighted_squares(form.profiles, w))
    residual = np.empty(x.shape[0])
    for start in range(0, x.shape[0], _ROWS):
        rows = slice(start, min(start + _ROWS, x.shape[0]))
        residual[rows] = _weighted_squares(x[rows] - form.values(y, rows), w)
    return 1.01 * ((2.0 * g + 3.0 * g_k) * m + np.sqrt(residual))


def derived_product(x: np.ndarray, y: np.ndarray, w: np.ndarray, form: AffineForm,
                    own_product: Callable[[], tuple[np.ndarray, float]], f: float
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    r""":math:`\tilde S = (X \circ w) Y^\top` from the form and the truth's own product, and
    :math:`E` (:func:`derivation_error`); None when the form does not describe ``x`` closely
    enough (see the module notes; ``f`` is the direct product's rounding factor :math:`F`).

    ``own_product()`` gives :math:`(G_0, c)` with :math:`G = cG_0` within :math:`2\gamma\sqrt{T_iT_j}`
    of :math:`(Y \circ w) Y^\top` (a constant weight row :math:`c` scales the unweighted product).
    """
    if form.scale.shape[0] != x.shape[0] or form.profiles.shape[1:] != x.shape[1:] or y.shape != x.shape:
        return None
    e = derivation_error(x, y, w, form)
    budget = f * np.sqrt(_weighted_squares(x, w))
    if not (e <= _WORSE * budget).mean() >= 1.0 - _RARELY:
        return None
    own, c = own_product()
    rows = np.arange(x.shape[0]) if form.perm is None else form.perm
    s = own[rows]  # a copy
    s *= (c * form.scale)[:, None]
    if form.profiles.shape[0]:
        with one_thread_blas():
            h = (form.profiles * w[None, :]) @ y.T
            for start in range(0, s.shape[0], _ROWS):
                block = slice(start, start + _ROWS)
                s[block] += form.coef[block] @ h
    return s, e
