r"""The standard model of floating-point sums, which the rank metrics' bounds are written in.

In double precision (unit roundoff :math:`u = 2^{-53}`), a sum of :math:`n` terms computed in any
order, with or without fused multiply-adds, is within :math:`\gamma_n \sum |a_g|` of the exact
sum, :math:`\gamma_n = nu/(1 - nu)` (Higham, *Accuracy and Stability of Numerical Algorithms*,
§3.1).
"""

from __future__ import annotations

__all__ = ["U", "gamma"]

#: The unit roundoff of float64.
U = 2.0**-53


def gamma(n: int) -> float:
    r""":math:`\gamma_n = nu/(1 - nu)`, the relative rounding bound of a sum of ``n`` terms."""
    return (n * U) / (1.0 - n * U)
