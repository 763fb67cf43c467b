"""``shrinkpert.datasets``: bundled real data and the simulator (implemented in :mod:`shrinkpert.data.datasets`)."""

from .data.datasets import papalexi2021, papalexi2021_path, simulate

__all__ = ["papalexi2021", "papalexi2021_path", "simulate"]
