"""shrinkpert.effects: effect sizes with standard errors, moderation, shrinkage, impact.

``ash_batch`` fits ash to many independent problems at once (one row each; it is what
:func:`shrink_effects` uses, for callers that have plain arrays).
"""

from .ash import _ash_batch as ash_batch

__all__ = ["ash_batch"]
