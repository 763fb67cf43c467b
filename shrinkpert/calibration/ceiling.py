r"""The noise ceiling: the expected score of a perfect prediction against a noisy truth.

A model that predicts every perturbation's *population* mean :math:`\mu_p` exactly still does not
score perfectly, because the truth it is scored against is a pseudobulk of :math:`n_p` cells,
:math:`\bar x_p = \mu_p + \varepsilon_p`. :func:`noise_ceiling` gives, per metric and
perturbation, the expected score of that perfect prediction, from the truth's sampling variance
alone (no second half of cells, unlike the technical duplicate, which compares two half-size
samples and therefore sits lower).

Model (central limit theorem for the pseudobulk; genes independent): for gene :math:`g`,

.. math::

    \bar x_{pg} = \mu_{pg} + \varepsilon_{pg},\quad \varepsilon_{pg}\sim N(0, s^2_{pg}),\quad
    s^2_{pg} = \sigma^2_{pg}/n_p, \qquad
    \bar x_{cg} = \mu_{cg} + \eta_g,\quad \eta_g \sim N(0, \sigma^2_{cg}/n_c),

with :math:`\sigma^2` the cell-level variances (``truth_var``, ``control_var``). The prediction is
:math:`\hat x_p = \mu_p`. Deltas are taken against

* ``delta_reference="observed_control"`` (default; how ``evaluate`` scores deltas): the same
  observed control on both sides, :math:`\hat\Delta_p = \mu_p - \bar x_c`,
  :math:`\Delta_p = \bar x_p - \bar x_c`, so the control's noise cancels and the error is
  :math:`e = \varepsilon_p`, variance :math:`v_g = s^2_{pg}`; the ceiling is conditional on the
  observed control (``control_mean``);
* ``"population_control"``: the prediction is the true effect :math:`\mu_p - \mu_c`, the truth
  :math:`\bar x_p - \bar x_c`; :math:`e = \varepsilon_p - \eta`, :math:`v_g = s^2_{pg} +
  \sigma^2_{cg}/n_c`.

With normalised weights :math:`\tilde w_g = w_g/\sum_h w_h` (:math:`1/G` unweighted):

**Closed forms** (``method="closed_form"``; exact under the model unless noted)

* ``mse`` (means): :math:`\mathrm E = \sum_g \tilde w_g s^2_{pg}`; ``mse_delta``:
  :math:`\sum_g \tilde w_g v_g` — the expectation of a sum of squared normals.
* ``mae`` (means): :math:`\sqrt{2/\pi}\sum_g \tilde w_g s_{pg}`; ``mae_delta``:
  :math:`\sqrt{2/\pi}\sum_g \tilde w_g \sqrt{v_g}` — the mean of a half-normal.
* ``pearson_delta`` and ``cosine_delta`` (second-order delta method). Write
  :math:`a = \hat\Delta_p` (fixed), :math:`c = a - \sum_g\tilde w_g a_g` for Pearson
  (:math:`c = a` for cosine), :math:`M = \mathrm{diag}(\tilde w) - \tilde w\tilde w^\top`
  (Pearson; :math:`\mathrm{diag}(\tilde w)` for cosine) and :math:`V = \mathrm{diag}(v)`. The
  score is :math:`X/\sqrt{A\,Y}` with :math:`A = c^\top\mathrm{diag}(\tilde w)c` (signal),
  :math:`X = A + L`, :math:`Y = A + 2L + Q`, :math:`L = \sum_g\tilde w_g c_g e_g`,
  :math:`Q = e^\top M e`. Then :math:`\mathrm E X = A`,
  :math:`\mathrm E Y = A + N` with noise :math:`N = \mathrm{tr}(MV)`,
  :math:`\mathrm{Var}\,L = \sum_g\tilde w_g^2 c_g^2 v_g =: \ell`,
  :math:`\mathrm{Var}\,Q = 2\,\mathrm{tr}((MV)^2) =: q`, :math:`\mathrm{Cov}(L, Q) = 0`, and
  expanding :math:`f(X, Y) = X/\sqrt{AY}` to second order around the means,

  .. math::

      \mathrm E[r] \approx \sqrt{\frac{A}{A+N}} - \frac{\ell}{\sqrt A\,(A+N)^{3/2}}
      + \frac{3\sqrt A\,(4\ell + q)}{8\,(A+N)^{5/2}} .

  The leading term is Spearman's attenuation (reliability) formula. The expansion needs the
  signal to dominate its own fluctuation (:math:`A \gg \sqrt{4\ell + q}`); ``params`` reports
  the perturbations where :math:`A < 3\sqrt{4\ell+q}` (``weak_signal``), and the result is NaN
  when :math:`A \le 0`.

**Parametric bootstrap** (``method="bootstrap"``; any metric of
:mod:`shrinkpert.metrics.expression` or :mod:`shrinkpert.metrics.rank` by name, or a callable):
``n_draws`` seeded draws of :math:`\varepsilon` (and :math:`\eta` for ``population_control``)
from the model above; each draw scores the perfect prediction against the drawn truth with the
metric function itself; the result is the mean score over draws, with its Monte Carlo standard
error.

``truth_is_estimate=True`` (default) says that ``truth_mean`` is itself the observed pseudobulk
(the usual case): the signal of the closed forms is then de-noised,
:math:`A \leftarrow \hat A - N_p` with :math:`N_p` the noise the estimate adds (and
:math:`c_g^2 \leftarrow \max(c_g^2 - v_g, 0)` in :math:`\ell`). The bootstrap cannot de-noise
a general metric and uses the plug-in means as they are, which makes correlation-type ceilings
slightly optimistic for weak perturbations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from ..errors import InputError

__all__ = ["NoiseCeiling", "noise_ceiling", "CLOSED_FORMS"]

CLOSED_FORMS = ("mse", "mae", "mse_delta", "mae_delta", "pearson_delta", "cosine_delta")
"""Metrics :func:`noise_ceiling` has a closed form for."""

_ON_MEANS = ("mse", "mae", "rmse")
_DELTA_REFERENCES = ("observed_control", "population_control")


@dataclass(frozen=True)
class NoiseCeiling:
    """Expected score of a perfect prediction (the population mean) per perturbation.

    Attributes
    ----------
    metric : str
    perturbations : pandas.Index
    expected : ndarray of float64, shape (n_perturbations,)
        The ceiling: :math:`\\mathrm E[\\text{score}]` of :math:`\\hat x_p = \\mu_p`.
    mc_se : ndarray of float64, shape (n_perturbations,)
        Monte Carlo standard error of ``expected`` (0 for closed forms).
    method : {"closed_form", "bootstrap"}
    params : mapping
        ``delta_reference``, ``truth_is_estimate``, ``n_draws``, ``seed``, ``weak_signal``, formula.
    """

    metric: str
    perturbations: pd.Index
    expected: np.ndarray
    mc_se: np.ndarray
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("expected", "mc_se"):
            arr = np.array(getattr(self, name), dtype=np.float64)
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy table: perturbation, metric, expected, mc_se, method."""
        return pd.DataFrame({"perturbation": np.asarray(self.perturbations, dtype=object), "metric": self.metric,
                             "expected": np.array(self.expected), "mc_se": np.array(self.mc_se),
                             "method": self.method})


def _matrix(x: Any, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric: {exc}") from exc
    if shape is not None and arr.shape != shape:
        raise InputError(f"{name} has shape {arr.shape}; expected {shape}.")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or inf; pass finite values (drop genes without a variance).")
    return arr


def _weights(weights: Any, shape: tuple[int, int]) -> np.ndarray:
    if weights is None:
        return np.full(shape, 1.0 / shape[1])
    w = _matrix(weights, "weights")
    if w.ndim == 1:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != shape[1] or w.shape[0] not in (1, shape[0]):
        raise InputError(f"weights has shape {np.shape(weights)}; expected ({shape[1]},) or {shape}.")
    if (w < 0).any():
        raise InputError("weights contains negative values; weights must be non-negative.")
    total = w.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.broadcast_to(w / total, shape)  # NaN rows where all weights are 0


def _ratio_ceiling(a: np.ndarray, v: np.ndarray, w: np.ndarray, *, centred: bool,
                   debias_v: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Second-order expectation of Pearson (centred) or cosine of a vs a + e, e ~ N(0, diag(v))."""
    c = a - (w * a).sum(axis=1, keepdims=True) if centred else a
    u = w * v
    if centred:
        noise = (u * (1.0 - w)).sum(axis=1)
        q = 2.0 * ((u * u).sum(axis=1) - 2.0 * (w * u * u).sum(axis=1) + (w * u).sum(axis=1) ** 2)
    else:
        noise = u.sum(axis=1)
        q = 2.0 * (u * u).sum(axis=1)
    signal = (w * c * c).sum(axis=1)
    c2 = c * c
    if debias_v is not None:  # the plug-in mean carries noise of variance debias_v per gene
        ud = w * debias_v
        signal = signal - ((ud * (1.0 - w)).sum(axis=1) if centred else ud.sum(axis=1))
        c2 = np.maximum(c2 - debias_v, 0.0)
    ell = (w * w * c2 * v).sum(axis=1)
    total = signal + noise
    with np.errstate(invalid="ignore", divide="ignore"):
        root = np.sqrt(signal)
        out = (np.sqrt(signal / total) - ell / (root * total**1.5)
               + 3.0 * root * (4.0 * ell + q) / (8.0 * total**2.5))
    out = np.where(signal > 0, np.clip(out, -1.0, 1.0), np.nan)
    # 4l + q is a variance (q = 2 tr((MV)^2) with M = W - ww' positive semi-definite): a negative
    # value is cancellation, its root 0 (a NaN from all-zero weights stays NaN: weak)
    weak = ~(signal >= 3.0 * np.sqrt(np.maximum(4.0 * ell + q, 0.0)))
    return out, weak


def _metric_function(metric: str | Callable) -> tuple[str, Callable, bool]:
    """(name, function, scored on means?) for a metric name of the expression/rank modules or a callable."""
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric, False
    from ..metrics import expression, rank

    for module in (expression, rank):
        if metric in getattr(module, "__all__", ()):
            return metric, getattr(module, metric), metric in _ON_MEANS
    known = sorted(set(expression.__all__) | set(rank.__all__))
    raise InputError(f"metric={metric!r} is not a metric of shrinkpert.metrics.expression or .rank ({known!r}); "
                     "pass one of them or a callable f(pred, true, **metric_kwargs).")


def noise_ceiling(
    truth_mean: Any,
    truth_var: Any,
    n_cells: Any,
    control_mean: Any,
    control_var: Any,
    control_n: int,
    metric: str | Callable,
    *,
    perturbations: Any = None,
    weights: Any = None,
    delta_reference: str = "observed_control",
    truth_is_estimate: bool = True,
    method: str = "auto",
    n_draws: int = 200,
    seed: int | np.random.Generator = 0,
    on: str | None = None,
    metric_kwargs: Mapping[str, Any] | None = None,
) -> NoiseCeiling:
    """Expected score of a prediction equal to the population mean, from the truth's sampling noise.

    The model, the closed forms (``mse``, ``mae``, ``mse_delta``, ``mae_delta``,
    ``pearson_delta``, ``cosine_delta``) with their derivations and the parametric bootstrap used
    for every other metric are in :mod:`shrinkpert.calibration.ceiling`.

    Parameters
    ----------
    truth_mean, truth_var : array-like of shape (n_perturbations, n_genes)
        Per-perturbation mean (:math:`\\mu_p`, or the observed pseudobulk as a plug-in) and
        cell-level variance (ddof=1) on the evaluation scale.
    n_cells : array-like of shape (n_perturbations,)
        Cells per perturbation in the truth.
    control_mean, control_var : array-like of shape (n_genes,)
        Control mean and cell-level variance.
    control_n : int
        Control cells.
    metric : str or callable
        A metric name of :mod:`shrinkpert.metrics.expression` or :mod:`shrinkpert.metrics.rank`,
        or a function ``f(pred, true, **metric_kwargs)`` returning one score per perturbation
        (bootstrap only).
    perturbations : sequence, optional
        Labels of the rows (default ``0..P-1``).
    weights : array-like of shape (n_genes,) or (n_perturbations, n_genes), optional
        Gene weights, passed to the metric as ``weights=``.
    delta_reference : {"observed_control", "population_control"}
        What deltas are taken against (module docstring).
    truth_is_estimate : bool
        ``truth_mean`` is the observed pseudobulk (de-noise the closed forms' signal).
    method : {"auto", "closed_form", "bootstrap"}
        ``"auto"``: the closed form when there is one, else the bootstrap.
    n_draws, seed
        Bootstrap draws and seed.
    on : {"mean", "delta"}, optional
        For a callable metric: whether it scores means or deltas (default ``"delta"``).
    metric_kwargs : mapping, optional
        Extra keyword arguments of the metric (e.g. ``target_index`` of rank metrics).

    Returns
    -------
    NoiseCeiling

    Raises
    ------
    InputError
        Shapes, non-finite or negative variances, too few cells, unknown metric or method, a
        closed form asked for a metric without one.

    Examples
    --------
    >>> import numpy as np
    >>> from shrinkpert.calibration.ceiling import noise_ceiling
    >>> var = np.full((1, 4), 0.5)
    >>> c = noise_ceiling(np.zeros((1, 4)), var, [50], np.zeros(4), np.full(4, 0.5), 500, "mse_delta")
    >>> float(c.expected[0])  # 0.5 / 50
    0.01
    """
    mu = _matrix(truth_mean, "truth_mean")
    if mu.ndim != 2:
        raise InputError(f"truth_mean has shape {mu.shape}; expected (n_perturbations, n_genes).")
    P, G = mu.shape
    var = _matrix(truth_var, "truth_var", (P, G))
    n = _matrix(n_cells, "n_cells", (P,))
    cmu = _matrix(control_mean, "control_mean", (G,))
    cvar = _matrix(control_var, "control_var", (G,))
    if (var < 0).any() or (cvar < 0).any():
        raise InputError("truth_var and control_var must be non-negative.")
    if (n < 1).any() or not (np.isfinite(control_n) and control_n >= 1):
        raise InputError("n_cells and control_n must be at least 1.")
    if delta_reference not in _DELTA_REFERENCES:
        raise InputError(f"delta_reference={delta_reference!r} is not one of {_DELTA_REFERENCES!r}.")
    if method not in ("auto", "closed_form", "bootstrap"):
        raise InputError(f"method={method!r} is not 'auto', 'closed_form' or 'bootstrap'.")
    labels = pd.Index(range(P) if perturbations is None else [str(p) for p in perturbations], name="perturbation")
    if len(labels) != P:
        raise InputError(f"perturbations has {len(labels)} labels for {P} rows of truth_mean.")
    name, func, on_means = _metric_function(metric)
    if on is not None:
        if on not in ("mean", "delta"):
            raise InputError(f"on={on!r} must be 'mean' or 'delta'.")
        on_means = on == "mean"
    s2 = var / n[:, None]
    s2c = cvar / float(control_n)
    population = delta_reference == "population_control"
    v = s2 + (s2c[None, :] if population and not on_means else 0.0)
    closed = isinstance(metric, str) and metric in CLOSED_FORMS
    if method == "closed_form" and not closed:
        raise InputError(f"metric {name!r} has no closed form here (those are {CLOSED_FORMS!r}); use "
                         "method='bootstrap' or 'auto'.")
    params: dict[str, Any] = {"delta_reference": delta_reference, "truth_is_estimate": bool(truth_is_estimate),
                              "scored_on": "mean" if on_means else "delta"}
    if closed and method != "bootstrap":
        w = _weights(weights, (P, G))
        weak = np.zeros(P, dtype=bool)
        if name in ("mse", "mse_delta"):
            expected = (w * v).sum(axis=1)
            params["formula"] = "sum_g w_g v_g"
        elif name in ("mae", "mae_delta"):
            expected = np.sqrt(2.0 / np.pi) * (w * np.sqrt(v)).sum(axis=1)
            params["formula"] = "sqrt(2/pi) sum_g w_g sqrt(v_g)"
        else:
            a = mu - cmu[None, :]
            debias = (v if population else s2) if truth_is_estimate else None
            expected, weak = _ratio_ceiling(a, v, w, centred=name == "pearson_delta", debias_v=debias)
            params["formula"] = "second-order delta method of X / sqrt(A Y)"
        params["weak_signal"] = [labels[i] for i in np.flatnonzero(weak)]
        return NoiseCeiling(name, labels, expected, np.zeros(P), "closed_form", params)

    if not (isinstance(n_draws, (int, np.integer)) and n_draws >= 2):
        raise InputError(f"n_draws must be an integer >= 2, got {n_draws!r}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    kwargs = dict(metric_kwargs or {})
    if weights is not None:
        kwargs["weights"] = weights
    scores = np.empty((n_draws, P))
    sd, sdc = np.sqrt(s2), np.sqrt(s2c)
    pred_delta = mu - cmu[None, :]
    for b in range(n_draws):
        eps = rng.standard_normal((P, G)) * sd
        if on_means:
            scores[b] = func(mu, mu + eps, **kwargs)
            continue
        truth_delta = pred_delta + eps
        if population:
            truth_delta = truth_delta - rng.standard_normal(G) * sdc
        scores[b] = func(pred_delta, truth_delta, **kwargs)
    finite = np.isfinite(scores)
    valid = finite.sum(axis=0)
    kept = np.where(finite, scores, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(valid > 0, kept.sum(axis=0) / valid, np.nan)
        spread = np.where(finite, scores - expected, 0.0)
        mc_se = np.where(valid > 1, np.sqrt((spread**2).sum(axis=0) / (valid - 1) / valid), np.nan)
    params.update(n_draws=int(n_draws), seed=seed if isinstance(seed, (int, np.integer)) else "Generator",
                  draws_with_nan=(n_draws - valid).tolist())
    return NoiseCeiling(name, labels, expected, mc_se, "bootstrap", params)
