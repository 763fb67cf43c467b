"""The one place this package imports the target-gene package (knockdown, escape).

(The target-gene package was renamed from ``shrinkpert.target``; this was the one import to switch.)
"""

from ..ontarget import EscapeResult, classify_escape, knockdown

__all__ = ["EscapeResult", "classify_escape", "knockdown"]
