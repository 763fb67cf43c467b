"""``shrinkpert.datasets``: bundled real data, the simulator and the shipped population references.

Implemented in :mod:`shrinkpert.data.datasets` and :mod:`shrinkpert.reference.bundled`.
"""

from .data.datasets import papalexi2021, papalexi2021_path, simulate
from .reference.bundled import population_reference, population_references

__all__ = ["papalexi2021", "papalexi2021_path", "simulate", "population_reference", "population_references"]
