"""Prior fitting for limma-style variance moderation (private; used by :mod:`.moderate`).

Estimates the prior degrees of freedom :math:`d_0` and scale :math:`s_0^2` of the scaled F
model :math:`s_g^2/s_0^2 \\sim F(d_g, d_0)` used by :mod:`shrinkpert.effects.moderate`:

* :func:`fit_f_dist` -- moments of :math:`\\log s_g^2` (limma ``fitFDist``), optionally with a
  natural-cubic-spline trend in a covariate (:func:`natural_spline_basis`);
* :func:`fit_f_dist_robust` -- Winsorised moments with per-gene :math:`d_0` for outlying
  variances (limma ``fitFDistRobustly``);

plus the numerical machinery they need: :func:`trigamma_inverse`, a Cox-de Boor B-spline
basis, F-distribution helpers with the :math:`d_2 = \\infty` (scaled chi-square) limit,
128-node Gauss-Legendre quadrature and Brent's root finder. Where limma makes a numerical
choice (Newton start and stopping rule of the trigamma inverse, the 128-node quadrature,
Brent's root finder with tolerance 1e-8, the knot placement of the spline trend) the same
choice is made, so results agree with limma 3.54.1 to rounding. No limma code is copied.

The public names are re-exported by :mod:`shrinkpert.effects.moderate`; import them from there.

References
----------
Smyth, G. K. (2004). Linear models and empirical Bayes methods for assessing differential
expression in microarray experiments. *Stat. Appl. Genet. Mol. Biol.* 3, Article 3.

Phipson, B., Lee, S., Majewski, I. J., Alexander, W. S. and Smyth, G. K. (2016). Robust
hyperparameter estimation protects against hypervariable genes and improves power to detect
differential expression. *Ann. Appl. Stat.* 10, 946-963.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from ..errors import InputError, ShrinkpertWarning

__all__ = [
    "FDistFit",
    "FDistRobustFit",
    "trigamma_inverse",
    "natural_spline_basis",
    "fit_f_dist",
    "fit_f_dist_robust",
]

_DBL_EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------- helpers


def _readonly(a: Any) -> np.ndarray:
    """A read-only float64 copy of ``a``."""
    out = np.array(a, dtype=np.float64)
    out.flags.writeable = False
    return out


def _scalar_or_array(a: np.ndarray | float) -> float | np.ndarray:
    """Return a Python float for a 0-d value, a read-only float64 array otherwise."""
    arr = np.asarray(a, dtype=np.float64)
    return float(arr) if arr.ndim == 0 else _readonly(arr)


def _as_1d(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric; convert it with numpy.asarray(..., dtype=float).") from exc
    if arr.ndim != 1:
        raise InputError(f"{name} must be one-dimensional (one value per gene), got shape {arr.shape}.")
    return arr


def _df_vector(df: Any, n: int, name: str = "df") -> np.ndarray:
    """Residual degrees of freedom as a length-``n`` vector (a scalar is repeated)."""
    try:
        arr = np.asarray(df, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be numeric (residual degrees of freedom).") from exc
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise InputError(
            f"{name} has shape {arr.shape} but there are {n} variances; pass one value or one per gene."
        )
    if np.any(arr < 0):
        raise InputError(f"{name} has negative values; degrees of freedom must be >= 0.")
    return arr


def _r_mean(x: np.ndarray) -> float:
    """Arithmetic mean with R's refinement pass (``mean.default``): ``m + mean(x - m)``."""
    m = float(np.sum(x) / x.size)
    if math.isfinite(m):
        m += float(np.sum(x - m) / x.size)
    return m


# --------------------------------------------------------------------------- trigamma inverse


def trigamma_inverse(x: Any) -> np.ndarray | float:
    """Solve :math:`\\psi'(y) = x` for :math:`y > 0` (limma's ``trigammaInverse``).

    Newton's method on :math:`1/\\psi'(y)`, which is convex and nearly linear, started at
    :math:`y_0 = 1/2 + 1/x`:

    .. math:: y \\leftarrow y + \\psi'(y)\\,\\frac{1 - \\psi'(y)/x}{\\psi''(y)},

    stopping when the largest relative decrease :math:`-\\Delta y / y` is below 1e-8 (at most
    50 steps). For :math:`x > 10^7`, :math:`y = 1/\\sqrt{x}`; for :math:`x < 10^{-6}`,
    :math:`y = 1/x` (the asymptotes). Negative ``x`` gives NaN.

    Parameters
    ----------
    x : float or array-like
        Positive values of the trigamma function.

    Returns
    -------
    float or ndarray
        Same shape as ``x``.
    """
    arr = np.asarray(x, dtype=np.float64)
    flat = np.atleast_1d(arr).ravel().copy()
    out = np.full_like(flat, np.nan)
    big = flat > 1e7
    small = flat < 1e-6
    out[big] = 1.0 / np.sqrt(flat[big])
    out[small & (flat >= 0)] = 1.0 / flat[small & (flat >= 0)]
    todo = np.isfinite(flat) & (flat >= 1e-6) & ~big
    if np.any(todo):
        v = flat[todo]
        y = 0.5 + 1.0 / v
        for _ in range(51):
            tri = special.polygamma(1, y)
            step = tri * (1.0 - tri / v) / special.polygamma(2, y)
            y = y + step
            if np.max(-step / y) < 1e-8:
                break
        else:
            warnings.warn(
                "trigamma_inverse: Newton iteration limit (50) reached; the result may be inexact.",
                ShrinkpertWarning,
                stacklevel=2,
            )
        out[todo] = y
    out = out.reshape(np.atleast_1d(arr).shape)
    return float(out[0]) if arr.ndim == 0 else out


# --------------------------------------------------------------------------- natural cubic splines


def _bspline_basis(x: np.ndarray, knots: np.ndarray, degree: int, deriv: int = 0) -> np.ndarray:
    """All B-splines of ``degree`` on the (clamped) ``knots`` at ``x`` (Cox-de Boor recursion).

    Returns shape ``(len(x), len(knots) - degree - 1)``. Points outside ``[knots[0],
    knots[-1]]`` get zeros; ``x == knots[-1]`` belongs to the last non-empty interval (the
    basis is continuous from the left there, as in R's ``splineDesign``). Derivatives use

    .. math::

        B'_{i,p}(x) = p\\left[\\frac{B_{i,p-1}(x)}{t_{i+p}-t_i}
                     - \\frac{B_{i+1,p-1}(x)}{t_{i+p+1}-t_{i+1}}\\right]

    with terms over empty knot spans set to zero.
    """
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(knots, dtype=np.float64)
    n_int = t.size - 1
    if deriv > degree:
        return np.zeros((x.size, t.size - degree - 1))
    if degree == 0:
        basis = np.zeros((x.size, n_int))
        j = np.searchsorted(t, x, side="right") - 1
        nonempty = np.flatnonzero(t[1:] > t[:-1])
        at_end = x == t[-1]
        j = np.where(at_end, nonempty[-1], j)
        inside = (x >= t[0]) & (x <= t[-1]) & (j >= 0) & (j < n_int)
        basis[np.flatnonzero(inside), j[inside]] = 1.0
        return basis
    lower = _bspline_basis(x, t, degree - 1, max(deriv - 1, 0))
    n_out = t.size - degree - 1
    left_span = t[degree : degree + n_out] - t[:n_out]
    right_span = t[degree + 1 : degree + 1 + n_out] - t[1 : 1 + n_out]
    with np.errstate(divide="ignore", invalid="ignore"):
        if deriv > 0:
            a = np.where(left_span > 0, degree / left_span, 0.0)
            b = np.where(right_span > 0, degree / right_span, 0.0)
            return lower[:, :n_out] * a - lower[:, 1 : n_out + 1] * b
        a = np.where(left_span > 0, (x[:, None] - t[:n_out]) / left_span, 0.0)
        b = np.where(right_span > 0, (t[degree + 1 : degree + 1 + n_out] - x[:, None]) / right_span, 0.0)
    return a * lower[:, :n_out] + b * lower[:, 1 : n_out + 1]


@dataclass(frozen=True)
class _NaturalSpline:
    """A natural cubic spline basis with fixed knots (R ``splines::ns``, ``intercept=TRUE``)."""

    interior_knots: np.ndarray
    boundary_knots: tuple[float, float]
    projection: np.ndarray  # B-spline basis -> natural basis (null space of the end constraints)

    @property
    def all_knots(self) -> np.ndarray:
        lo, hi = self.boundary_knots
        return np.concatenate([[lo] * 4, self.interior_knots, [hi] * 4])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        t = self.all_knots
        lo, hi = self.boundary_knots
        bs = np.zeros((x.size, t.size - 4))
        inside = (x >= lo) & (x <= hi)
        bs[inside] = _bspline_basis(x[inside], t, 3)
        # beyond the boundary knots a natural spline continues as a straight line
        for pivot, mask in ((lo, x < lo), (hi, x > hi)):
            if np.any(mask):
                p = np.array([pivot])
                value = _bspline_basis(p, t, 3)
                slope = _bspline_basis(p, t, 3, deriv=1)
                bs[mask] = value + (x[mask] - pivot)[:, None] * slope
        return bs @ self.projection


def _make_natural_spline(x: np.ndarray, df: int) -> _NaturalSpline:
    """Knots of ``splines::ns(x, df = df, intercept = TRUE)``.

    ``df - 2`` interior knots at the empirical quantiles ``k/(df - 1)``, ``k = 1..df-2`` (R's
    default type-7 quantiles), boundary knots at ``min(x)`` and ``max(x)``. The cubic
    B-spline basis on these knots is projected onto the null space of its second derivatives
    at both boundary knots (Householder QR of the 2-row constraint matrix, dropping the first
    two columns of Q), which is the natural-spline basis.
    """
    n_interior = df - 2
    lo, hi = float(np.min(x)), float(np.max(x))
    probs = np.linspace(0.0, 1.0, n_interior + 2)[1:-1]
    interior = np.quantile(x, probs) if n_interior > 0 else np.empty(0)
    t = np.concatenate([[lo] * 4, interior, [hi] * 4])
    constraint = _bspline_basis(np.array([lo, hi]), t, 3, deriv=2)  # (2, n_basis)
    q, _ = np.linalg.qr(constraint.T, mode="complete")
    return _NaturalSpline(np.asarray(interior, dtype=np.float64), (lo, hi), q[:, 2:])


def natural_spline_basis(x: Any, df: int) -> np.ndarray:
    """Natural cubic spline basis of ``x`` with an intercept, as R ``splines::ns(x, df, intercept=TRUE)``.

    A natural cubic spline is cubic between knots, twice continuously differentiable, and
    linear beyond the boundary knots (second derivative zero at both ends), so with
    ``df - 2`` interior knots the space has dimension ``df``.

    Parameters
    ----------
    x : array-like of shape (n,)
        Finite covariate values.
    df : int
        Number of basis columns, at least 2.

    Returns
    -------
    ndarray of shape (n, df)
        The basis. It spans the same space as R's (same knots, same projection), so fitted
        values of least-squares fits agree with R to rounding.

    Raises
    ------
    InputError
        ``x`` has non-finite values or ``df < 2``.
    """
    arr = _as_1d(x, "x")
    if not np.all(np.isfinite(arr)):
        raise InputError("x has NaN or infinite values; pass finite covariate values.")
    if int(df) < 2:
        raise InputError(f"df must be at least 2 (intercept plus slope), got {df!r}.")
    return _make_natural_spline(arr, int(df))(arr)


# --------------------------------------------------------------------------- fitFDist


@dataclass(frozen=True)
class FDistFit:
    """Moment fit of a scaled F distribution (limma ``fitFDist``).

    Attributes
    ----------
    scale : float or ndarray
        :math:`s_0^2`, one value or one per gene when a covariate trend was fitted.
    df2 : float
        Prior degrees of freedom :math:`d_0` (``inf`` when the variances show no extra
        between-gene spread; ``nan`` when nothing could be estimated).
    spline_df : int
        Columns of the natural-spline trend (1 = no covariate, a constant).
    """

    scale: float | np.ndarray
    df2: float
    spline_df: int = 1


def fit_f_dist(var: Any, df: Any, *, covariate: Any = None) -> FDistFit:
    """Estimate :math:`s_0^2` and :math:`d_0` of :math:`s_g^2 \\sim s_0^2 F(d_g, d_0)` by moments.

    Genes with a non-finite or negative variance (below -1e-15) or with ``df <= 1e-15`` are
    left out of the fit. Variances are floored at :math:`10^{-5}\\,\\mathrm{median}(s^2)`.
    With :math:`e_g = \\log s_g^2 - \\psi(d_g/2) + \\log(d_g/2)`,

    .. math::

        \\bar e = \\mathrm{mean}(e), \\qquad
        v = \\frac{\\sum_g (e_g - \\bar e)^2}{G-1} - \\mathrm{mean}\\,\\psi'(d_g/2).

    If :math:`v > 0`, :math:`d_0 = 2\\,\\psi'^{-1}(v)` and
    :math:`s_0^2 = \\exp(\\bar e + \\psi(d_0/2) - \\log(d_0/2))`; otherwise :math:`d_0 = \\infty`
    and :math:`s_0^2` is the mean of the (floored) variances.

    With a ``covariate``, :math:`e` is regressed on a natural cubic spline of the covariate
    with ``1 + [G>=3] + [G>=6] + [G>=30]`` columns (capped by the number of distinct
    values); :math:`\\bar e_g` are the fitted values (predicted, with linear extrapolation,
    for genes left out of the fit), :math:`v` uses the residual mean square
    ``RSS / (G - rank)``, and :math:`s_0^2` and the infinite-:math:`d_0` scale
    (:math:`\\exp \\bar e_g`) are per gene.

    Parameters
    ----------
    var : array-like of shape (G,)
        Sample variances :math:`s_g^2`.
    df : float or array-like of shape (G,)
        Residual degrees of freedom :math:`d_g`.
    covariate : array-like of shape (G,), optional
        E.g. mean log-expression, for a variance trend. ``-inf``/``inf`` are moved just
        outside the finite range, as limma does.

    Returns
    -------
    FDistFit

    Raises
    ------
    InputError
        Shapes disagree or the covariate has NaN.

    Warns
    -----
    ShrinkpertWarning
        Some variances are exactly zero (offset from zero), or more than half are.
    """
    x = _as_1d(var, "var")
    n = x.size
    d = _df_vector(df, n)
    cov = None
    if covariate is not None:
        cov = _as_1d(covariate, "covariate").copy()
        if cov.size != n:
            raise InputError(f"covariate has {cov.size} values but var has {n}; pass one per gene.")
        if np.any(np.isnan(cov)):
            raise InputError("covariate has NaN values; remove those genes or impute the covariate.")
        finite = np.isfinite(cov)
        if not finite.all():
            if finite.any():
                lo, hi = cov[finite].min(), cov[finite].max()
                cov[cov == -np.inf] = lo - 1.0
                cov[cov == np.inf] = hi + 1.0
            else:
                cov = np.sign(cov)
    return _fit_f_dist(x, d, cov)


def _fit_f_dist(x: np.ndarray, d: np.ndarray, cov: np.ndarray | None) -> FDistFit:
    n = x.size
    if n <= 1:
        return FDistFit(np.nan, np.nan)
    ok = np.isfinite(d) & (d > 1e-15) & np.isfinite(x) & (x > -1e-15)
    n_ok = int(ok.sum())
    if n_ok == 0:
        return FDistFit(np.nan if cov is None else np.full(n, np.nan), np.nan)
    if n_ok == 1:
        scale = float(x[ok][0])
        return FDistFit(scale if cov is None else np.full(n, scale), 0.0)
    spline_df = 1
    if cov is not None:
        spline_df = 1 + int(n_ok >= 3) + int(n_ok >= 6) + int(n_ok >= 30)
        spline_df = min(spline_df, int(np.unique(cov[ok]).size))
        if spline_df < 2:
            fit = _fit_f_dist(x, d, None)
            return FDistFit(np.full(n, fit.scale), fit.df2, 1)
    xs = np.maximum(x[ok], 0.0)
    ds = d[ok]
    med = float(np.median(xs))
    if med == 0.0:
        warnings.warn(
            "More than half of the variances are exactly zero; variance moderation is unreliable.",
            ShrinkpertWarning,
            stacklevel=3,
        )
        med = 1.0
    elif np.any(xs == 0.0):
        warnings.warn(
            "Zero sample variances detected; they were offset away from zero (1e-5 x median).",
            ShrinkpertWarning,
            stacklevel=3,
        )
    xs = np.maximum(xs, 1e-5 * med)
    e = np.log(xs) - special.digamma(ds / 2.0) + np.log(ds / 2.0)
    if cov is None:
        emean: float | np.ndarray = _r_mean(e)
        evar = float(np.sum((e - emean) ** 2) / (n_ok - 1))
    else:
        spline = _make_natural_spline(cov[ok], spline_df)
        design = spline(cov[ok])
        coef, _, rank, _ = np.linalg.lstsq(design, e, rcond=None)
        fitted = design @ coef
        evar = float(np.sum((e - fitted) ** 2) / (n_ok - rank))
        emean = np.empty(n)
        emean[ok] = fitted
        if n_ok < n:
            emean[~ok] = spline(cov[~ok]) @ coef
    evar -= _r_mean(special.polygamma(1, ds / 2.0))
    if evar > 0:
        df2 = 2.0 * float(trigamma_inverse(evar))
        scale = np.exp(emean + special.digamma(df2 / 2.0) - np.log(df2 / 2.0))
    else:
        df2 = math.inf
        scale = _r_mean(xs) if cov is None else np.exp(emean)
    return FDistFit(_scalar_or_array(scale), df2, spline_df)


# --------------------------------------------------------------------------- fitFDistRobustly


@dataclass(frozen=True)
class FDistRobustFit:
    """Robust fit of a scaled F distribution (limma ``fitFDistRobustly``).

    Attributes
    ----------
    scale : float or ndarray
        :math:`s_0^2` (bias-corrected Winsorised trimmed-mean location).
    df2 : float
        Common prior degrees of freedom of the non-outlying genes.
    df2_shrunk : ndarray of shape (G,)
        Per-gene prior degrees of freedom, lowered for genes whose variance is an outlier.
    df2_outlier : float
        Prior df that puts the largest observed variance at the median of its F distribution.
    tail_p : ndarray of shape (G,)
        Upper-tail probability of each variance under the fitted F distribution.
    prob_outlier : ndarray of shape (G,)
        Estimated probability that a gene's variance is an outlier.
    """

    scale: float | np.ndarray
    df2: float
    df2_shrunk: np.ndarray
    df2_outlier: float = math.nan
    tail_p: np.ndarray | None = None
    prob_outlier: np.ndarray | None = None


def _gauss_legendre_unit(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes and weights on [0, 1] (weights sum to 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(n)
    return (nodes + 1.0) / 2.0, weights / 2.0


_GL_NODES, _GL_WEIGHTS = _gauss_legendre_unit(128)


def _f_ppf(p: np.ndarray, df1: float, df2: float) -> np.ndarray:
    if math.isinf(df2):
        return stats.chi2.ppf(p, df1) / df1
    return stats.f.ppf(p, df1, df2)


def _f_pdf(x: np.ndarray, df1: float, df2: float) -> np.ndarray:
    if math.isinf(df2):
        return df1 * stats.chi2.pdf(x * df1, df1)
    return stats.f.pdf(x, df1, df2)


def _f_logsf(x: np.ndarray, df1: float, df2: float) -> np.ndarray:
    """log P(F > x): ``log(fdtrc)``, with scipy's slower log-space routine only in the far tail."""
    if math.isinf(df2):
        return stats.chi2.logsf(x * df1, df1)
    with np.errstate(divide="ignore"):
        out = np.log(special.fdtrc(df1, df2, x))
    tiny = out < -700.0
    if np.any(tiny):
        out[tiny] = stats.f.logsf(x[tiny], df1, df2)
    return out


def _winsorized_log_f_moments(df1: float, df2: float, tail_p: tuple[float, float]) -> tuple[float, float]:
    """Mean and variance of :math:`\\log F(d_1, d_2)` Winsorised at tail probabilities ``tail_p``.

    The central part is integrated with 128-point Gauss-Legendre quadrature in the variable
    :math:`u = F/(1+F)`, the two tails contribute the log-quantiles times their probabilities.
    """
    fq = _f_ppf(np.array([tail_p[0], 1.0 - tail_p[1]]), df1, df2)
    zq = np.log(fq)
    q = fq / (1.0 + fq)
    q21 = q[1] - q[0]
    u = q[0] + q21 * _GL_NODES
    f_nodes = u / (1.0 - u)
    z_nodes = np.log(f_nodes)
    dens = _f_pdf(f_nodes, df1, df2) / (1.0 - u) ** 2
    tails = np.asarray(tail_p)
    mean = q21 * np.sum(_GL_WEIGHTS * dens * z_nodes) + np.sum(zq * tails)
    var = q21 * np.sum(_GL_WEIGHTS * dens * (z_nodes - mean) ** 2) + np.sum((zq - mean) ** 2 * tails)
    return float(mean), float(var)


def _brent_root(
    func: Callable[[float], float], lower: float, upper: float, f_lower: float, f_upper: float, tol: float,
    max_iter: int = 1000,
) -> float:
    """Brent's (1973) root finder in the form of R's ``uniroot`` (same steps, same stopping rule).

    Keeps a bracket ``[b, c]`` with ``b`` the best point; tries inverse quadratic (or
    secant) interpolation and falls back to bisection when the step would leave the bracket
    or shrink too slowly. Stops when half the bracket is within
    ``2 eps |b| + tol/2``.
    """
    a, b, c = lower, upper, lower
    fa, fb, fc = f_lower, f_upper, f_lower
    if fa == 0.0:
        return a
    if fb == 0.0:
        return b
    for _ in range(max_iter + 1):
        prev_step = b - a
        if abs(fc) < abs(fb):
            a, b, c = b, c, b
            fa, fb, fc = fb, fc, fb
        tol_act = 2.0 * _DBL_EPS * abs(b) + tol / 2.0
        new_step = (c - b) / 2.0
        if abs(new_step) <= tol_act or fb == 0.0:
            return b
        if abs(prev_step) >= tol_act and abs(fa) > abs(fb):
            cb = c - b
            if a == c:
                t1 = fb / fa
                p = cb * t1
                q = 1.0 - t1
            else:
                q = fa / fc
                t1 = fb / fc
                t2 = fb / fa
                p = t2 * (cb * q * (q - t1) - (b - a) * (t1 - 1.0))
                q = (q - 1.0) * (t1 - 1.0) * (t2 - 1.0)
            if p > 0:
                q = -q
            else:
                p = -p
            if p < (0.75 * cb * q - abs(tol_act * q) / 2.0) and p < abs(prev_step * q / 2.0):
                new_step = p / q
        if abs(new_step) < tol_act:
            new_step = tol_act if new_step > 0 else -tol_act
        a, fa = b, fb
        b = b + new_step
        fb = func(b)
        if (fb > 0 and fc > 0) or (fb < 0 and fc < 0):
            c, fc = a, fa
    warnings.warn("Root finding did not converge in 1000 steps.", ShrinkpertWarning, stacklevel=3)
    return b


def _rank_average(x: np.ndarray) -> np.ndarray:
    return stats.rankdata(x, method="average")


def fit_f_dist_robust(
    var: Any,
    df: Any,
    *,
    covariate: Any = None,
    winsor_tail_p: Sequence[float] | float = (0.05, 0.1),
) -> FDistRobustFit:
    """Robust estimate of :math:`s_0^2` and :math:`d_0`, with per-gene :math:`d_0` for outliers.

    Follows limma's ``fitFDistRobustly`` (Phipson et al. 2016):

    1. Non-robust :func:`fit_f_dist` first. When residual df differ between genes, each
       variance is moved to the largest df by equal F tail probability under that fit.
    2. :math:`z_g = \\log s_g^2`; location = mean trimmed by the upper tail proportion
       (``winsor_tail_p[1]``); residuals Winsorised at their ``winsor_tail_p[0]`` and
       ``1 - winsor_tail_p[1]`` quantiles; their variance (divisor :math:`G-1`) is matched to the
       Winsorised variance of :math:`\\log F(d, d_0)` by Brent root finding in
       :math:`d_0/(1+d_0)` between the non-robust :math:`d_0` and infinity (tolerance 1e-8).
    3. :math:`s_0^2 = \\exp(\\text{location} + \\bar z_w - m_w(d_0))`, removing the bias of the
       Winsorised mean :math:`m_w`.
    4. Outliers: with :math:`p_g = P(F > s_g^2/s_0^2)` and the empirical tail probability
       :math:`(G - r_g + 1/2)/G` (:math:`r_g` = rank), the probability of not being an outlier
       is :math:`\\pi_g = \\min(1, p_g/\\hat p_g)`; :math:`d_{0g} = \\pi_g d_0 + (1-\\pi_g) d_{out}`
       where :math:`d_{out}` puts the largest variance at the median of its F distribution;
       finally :math:`d_{0g}` is made non-decreasing in :math:`p_g`.

    Parameters
    ----------
    var : array-like of shape (G,)
        Sample variances.
    df : float or array-like of shape (G,)
        Residual degrees of freedom.
    covariate : array-like of shape (G,), optional
        Not supported yet (limma fits a loess trend here); passing one raises.
    winsor_tail_p : float or (float, float), default (0.05, 0.1)
        Lower and upper tail proportions to Winsorise.

    Returns
    -------
    FDistRobustFit

    Raises
    ------
    InputError
        Bad shapes, a covariate, or more than half of the variances are not positive.
    """
    x = _as_1d(var, "var").copy()
    n = x.size
    d = _df_vector(df, n)
    if covariate is not None:
        raise InputError(
            "robust=True together with covariate= is not supported (limma fits a loess trend "
            "there); pass robust=False for a spline trend, or drop covariate= for a robust fit."
        )
    tails = np.broadcast_to(np.asarray(winsor_tail_p, dtype=np.float64), (2,))
    if np.any(tails < 0) or np.any(tails >= 0.5):
        raise InputError(f"winsor_tail_p must lie in [0, 0.5), got {tuple(tails)!r}.")
    tail_p = (float(tails[0]), float(tails[1]))
    ok = ~np.isnan(x) & np.isfinite(d) & (d > 1e-6)
    if not ok.all():
        inner = _fit_robust_core(x[ok], d[ok], tail_p)
        shrunk = np.full(n, inner.df2)
        shrunk[ok] = inner.df2_shrunk
        return FDistRobustFit(inner.scale, inner.df2, shrunk, inner.df2_outlier, None, None)
    return _fit_robust_core(x, d, tail_p)


def _fit_robust_core(x: np.ndarray, d: np.ndarray, tail_p: tuple[float, float]) -> FDistRobustFit:
    n = x.size
    if n < 2:
        return FDistRobustFit(math.nan, math.nan, np.full(n, np.nan))
    if n == 2:
        fit = _fit_f_dist(x, d, None)
        return FDistRobustFit(fit.scale, fit.df2, np.full(n, fit.df2))
    med = float(np.median(x))
    if med <= 0:
        raise InputError("More than half of the variances are <= 0; robust moderation needs positive variances.")
    tiny = x < med * 1e-12
    if tiny.any():
        warnings.warn(
            f"{int(tiny.sum())} very small variances detected; offset away from zero (1e-12 x median).",
            ShrinkpertWarning,
            stacklevel=3,
        )
        x = np.where(tiny, med * 1e-12, x)
    nonrobust = _fit_f_dist(x, d, None)
    if tail_p[0] < 1.0 / n and tail_p[1] < 1.0 / n:
        return FDistRobustFit(nonrobust.scale, nonrobust.df2, np.full(n, nonrobust.df2))

    df1_max = float(np.max(d))
    lower_df = d < df1_max - 1e-14
    if lower_df.any():
        s0 = float(nonrobust.scale)
        f = x[lower_df] / s0
        d2 = nonrobust.df2
        if math.isinf(d2):
            log_up = stats.chi2.logsf(f * d[lower_df], d[lower_df])
            log_lo = stats.chi2.logcdf(f * d[lower_df], d[lower_df])
        else:
            log_up = stats.f.logsf(f, d[lower_df], d2)
            log_lo = stats.f.logcdf(f, d[lower_df], d2)
        up = log_up < log_lo
        f_new = np.empty_like(f)
        if math.isinf(d2):
            f_new[up] = stats.chi2.isf(np.exp(log_up[up]), df1_max) / df1_max
            f_new[~up] = stats.chi2.ppf(np.exp(log_lo[~up]), df1_max) / df1_max
        else:
            f_new[up] = stats.f.isf(np.exp(log_up[up]), df1_max, d2)
            f_new[~up] = stats.f.ppf(np.exp(log_lo[~up]), df1_max, d2)
        x = x.copy()
        x[lower_df] = f_new * s0
    df1 = df1_max

    z = np.log(x)
    z_trend = float(stats.trim_mean(z, tail_p[1]))
    z_resid = z - z_trend
    zq = np.quantile(z_resid, [tail_p[0], 1.0 - tail_p[1]])
    z_wins = np.clip(z_resid, zq[0], zq[1])
    zw_mean = _r_mean(z_wins)
    zw_var = float(np.mean((z_wins - zw_mean) ** 2) * n / (n - 1))

    mom_mean_inf, mom_var_inf = _winsorized_log_f_moments(df1, math.inf, tail_p)
    fun_inf = math.log(zw_var / mom_var_inf)
    if fun_inf <= 0:
        corrected = z_trend + zw_mean - mom_mean_inf
        scale = math.exp(corrected)
        f_stat = np.exp(z - corrected)
        tail = stats.chi2.sf(f_stat * df1, df1)
        rank = _rank_average(f_stat)
        emp_tail = (n - rank + 0.5) / n
        prob_not = np.minimum(tail / emp_tail, 1.0)
        shrunk = np.full(n, math.inf)
        out = prob_not < 1
        if out.any():
            shrunk[out] = prob_not[out] * (n * df1)
            order = np.argsort(tail, kind="stable")
            shrunk[order] = np.maximum.accumulate(shrunk[order])
        return FDistRobustFit(scale, math.inf, shrunk, math.nan, tail, 1.0 - prob_not)

    def objective(u: float) -> float:
        _, v = _winsorized_log_f_moments(df1, u / (1.0 - u), tail_p)
        return math.log(zw_var / v)

    if math.isinf(nonrobust.df2):
        return FDistRobustFit(nonrobust.scale, nonrobust.df2, np.full(n, nonrobust.df2))
    u_low = nonrobust.df2 / (1.0 + nonrobust.df2)
    fun_low = objective(u_low)
    if fun_low >= 0:
        df2 = nonrobust.df2
    else:
        root = _brent_root(objective, u_low, 1.0, fun_low, fun_inf, 1e-8)
        df2 = root / (1.0 - root)

    mom_mean, _ = _winsorized_log_f_moments(df1, df2, tail_p)
    corrected = z_trend + zw_mean - mom_mean
    scale = math.exp(corrected)
    f_stat = np.exp(z - corrected)
    log_tail = _f_logsf(f_stat, df1, df2)
    tail = np.exp(log_tail)
    rank = _rank_average(f_stat)
    log_emp = np.log(n - rank + 0.5) - math.log(n)
    log_not = np.minimum(log_tail - log_emp, 0.0)
    prob_not = np.exp(log_not)
    prob_out = -np.expm1(log_not)
    if np.any(log_not < 0):
        min_log_tail = float(np.min(log_tail))
        if min_log_tail == -math.inf:
            df2_outlier = 0.0
            shrunk = prob_not * df2
        else:
            df2_outlier = math.log(0.5) / min_log_tail * df2
            refined = float(_f_logsf(np.array([np.max(f_stat)]), df1, df2_outlier)[0])
            df2_outlier = math.log(0.5) / refined * df2_outlier
            shrunk = prob_not * df2 + prob_out * df2_outlier
        order = np.argsort(log_tail, kind="stable")
        ordered = shrunk[order]
        running_mean = np.cumsum(ordered) / np.arange(1, n + 1)
        i_min = int(np.argmin(running_mean))
        ordered[: i_min + 1] = running_mean[i_min]
        shrunk = np.empty(n)
        shrunk[order] = np.maximum.accumulate(ordered)
    else:
        df2_outlier = df2
        shrunk = np.full(n, df2)
    return FDistRobustFit(scale, df2, shrunk, df2_outlier, tail, prob_out)
