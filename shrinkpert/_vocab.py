"""Column names and defaults shared by the Python API and the CLI (one place only)."""

from __future__ import annotations

PERTURBATION_KEY = "perturbation"
CONTROL = "non-targeting"
TARGET_SUM = 1e4
MIN_CELLS = 3
CHUNK_SIZE = None  # rows per block; None picks 32-128 MB blocks from the matrix density
SCALES = ("log1p", "log2fc")
NORMALIZATIONS = (None, "log1p", "total")

# tidy-table column vocabulary
PERTURBATION = "perturbation"
GENE = "gene"
GROUP = "group"
