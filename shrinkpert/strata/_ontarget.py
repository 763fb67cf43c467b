"""The one place this package imports the target-gene package (knockdown, escape).

The target-gene package is being renamed; switching is this one import.
"""

from ..target import EscapeResult, classify_escape, knockdown

__all__ = ["EscapeResult", "classify_escape", "knockdown"]
