r"""Numba kernels: delete-one jackknife sums of group-sum log-normalised pseudobulks.

For cell :math:`i` of group :math:`p` (gene counts :math:`y_{ig}`, total :math:`\ell_i`), group
sums :math:`P_{pg}`, group total :math:`S_p`, :math:`r_i = S_p - \ell_i` and the full-group
pseudobulk :math:`b_{pg}`, the delete-one deviation is

.. math::
    v_{ig} = \log\Big(1 + T\,\frac{P_{pg} - y_{ig}}{r_i}\Big) - b_{pg}
    \quad(v_{ig} = -b_{pg}\ \text{when}\ r_i = 0),

and the jackknife needs :math:`\sum_i v_{ig}` and :math:`\sum_i v_{ig}^2` per group and gene.
Evaluated literally that is one logarithm per cell and gene. For a cell with :math:`y_{ig} = 0`,
with :math:`a = T P_{pg}/S_p`, :math:`u = 1/(1 + a)` and :math:`\varepsilon_i = \ell_i / S_p`,

.. math::
    v_{ig} = \delta_{pg} + \log(1 - \varepsilon_i u) - \log(1 - \varepsilon_i)
           = \delta_{pg} + \sum_{k \ge 1} \varepsilon_i^k\,\frac{1 - u^k}{k},
    \qquad \delta_{pg} = \log(1 + a) - b_{pg},

so over a group's cells the zero entries contribute through the power sums
:math:`M_{pk} = \sum_i \varepsilon_i^k` (:func:`jackknife_base`), and only the stored values
need a logarithm (:func:`jackknife_block` adds the exact :math:`v` minus the series' value for
them). The series is used for groups whose largest :math:`\varepsilon` is at most 0.2, with
enough terms that the first one left out is below :math:`2^{-56}` of the first one kept; a
group with a larger share (a handful of cells) is evaluated literally.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from .._numba import kernel

__all__ = ["jackknife_block", "jackknife_base", "series_terms", "MAX_SHARE"]

#: Largest cell share :math:`\varepsilon` of a group evaluated through the series.
MAX_SHARE = 0.2


def series_terms(max_share: np.ndarray) -> np.ndarray:
    """Terms of the series per group (0: evaluate the group literally)."""
    share = np.asarray(max_share, dtype=np.float64)
    terms = np.zeros(share.shape, dtype=np.int64)
    ok = (share > 0) & (share <= MAX_SHARE)
    terms[ok] = np.maximum(np.ceil(56 * np.log(2.0) / -np.log(share[ok])), 1).astype(np.int64)
    terms[share == 0] = 1
    return terms


@kernel(parallel=True)
def jackknife_block(indptr, indices, data, codes, lib, sums, totals, bulk, alpha, delta, target_sum, terms, n_parts,
                    s1, s2):  # pragma: no cover - compiled
    r"""Accumulate the delete-one deviations of the cells of one CSR row block (canonical: no
    duplicate entries).

    A cell of a group with ``terms[p] == 0`` adds :math:`v_{ig}` and :math:`v_{ig}^2` for every
    gene (literal); a cell of another group adds, for each stored value, :math:`v_{ig}` minus the
    series' value for a zero count (``alpha`` = :math:`a`, ``delta`` = :math:`\delta`, ``terms[p]``
    terms), and its square likewise; :func:`jackknife_base` adds the series for every cell. Cells
    with code ``-1`` are skipped. The genes are split into ``n_parts`` ranges processed in
    parallel (every thread walks all rows).
    """
    n_rows = indptr.shape[0] - 1
    n_genes = sums.shape[1]
    step = (n_genes + n_parts - 1) // n_parts
    for part in prange(n_parts):
        g0 = part * step
        g1 = min(g0 + step, n_genes)
        if g0 >= g1:
            continue
        y = np.zeros(g1 - g0)
        for i in range(n_rows):
            p = codes[i]
            if p < 0 or totals[p] <= 0.0:
                continue
            r = totals[p] - lib[i]
            safe = r if r > 0.0 else 1.0
            if terms[p] == 0:
                for k in range(indptr[i], indptr[i + 1]):
                    g = indices[k]
                    if g0 <= g < g1:
                        y[g - g0] += data[k]
                for g in range(g0, g1):
                    if r > 0.0:
                        v = math.log1p(target_sum * (sums[p, g] - y[g - g0]) / safe) - bulk[p, g]
                    else:
                        v = -bulk[p, g]
                    s1[p, g] += v
                    s2[p, g] += v * v
                for k in range(indptr[i], indptr[i + 1]):
                    g = indices[k]
                    if g0 <= g < g1:
                        y[g - g0] = 0.0
                continue
            eps = lib[i] / totals[p]
            n_terms = terms[p]
            for k in range(indptr[i], indptr[i + 1]):
                g = indices[k]
                if g < g0 or g >= g1 or data[k] == 0:
                    continue
                v = math.log1p(target_sum * (sums[p, g] - data[k]) / safe) - bulk[p, g]
                a = alpha[p, g]
                u = 1.0 / (1.0 + a)
                d1 = a * u
                d = 0.0
                e = 1.0
                v0 = 0.0
                for t in range(1, n_terms + 1):
                    d = d * u + d1
                    e *= eps
                    v0 += e * d / t
                v0 += delta[p, g]
                s1[p, g] += v - v0
                s2[p, g] += v * v - v0 * v0


@kernel(parallel=True)
def jackknife_base(alpha, delta, moments, n_cells, terms, s1, s2):  # pragma: no cover - compiled
    r"""Add every cell's series value as if its count were 0, per group and gene.

    With :math:`c_k = (1 - u^k)/k` (``terms[p]`` of them; :math:`1 - u^k` by the recurrence
    :math:`d_{k+1} = u\,d_k + (1 - u)`, free of cancellation) and ``moments[p, m]`` =
    :math:`M_{pm}`:

    .. math::
        s_1 \mathrel{+}= n\delta + \sum_k c_k M_{pk},\qquad
        s_2 \mathrel{+}= n\delta^2 + 2\delta\sum_k c_k M_{pk} + \sum_{k,l} c_k c_l M_{p,k+l}.

    Groups with ``terms[p] == 0`` are left as they are (evaluated literally).
    """
    n_groups, n_genes = alpha.shape
    for p in prange(n_groups):
        n_terms = terms[p]
        if n_terms == 0:
            continue
        n = n_cells[p]
        c = np.empty(n_terms)
        for g in range(n_genes):
            a = alpha[p, g]
            u = 1.0 / (1.0 + a)
            d1 = a * u
            d = 0.0
            for t in range(n_terms):
                d = d * u + d1
                c[t] = d / (t + 1)
            lin = 0.0
            quad = 0.0
            for t in range(n_terms):
                lin += c[t] * moments[p, t + 1]
                inner = 0.0
                for q in range(n_terms):
                    inner += c[q] * moments[p, t + q + 2]
                quad += c[t] * inner
            dl = delta[p, g]
            s1[p, g] += n * dl + lin
            s2[p, g] += n * dl * dl + 2.0 * dl * lin + quad
