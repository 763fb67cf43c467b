"""shrinkpert.effects: effect sizes with standard errors, moderation, shrinkage, impact.

``ash_batch`` fits ash to many independent problems at once (one row each; it is what
:func:`shrink_effects` uses, for callers that have plain arrays); ``fit_mixture_weights`` is the
one mixture-weight solver (mix-SQP or EM) behind ash, ``shrink_effects`` and impact.
"""

from .ash import AshBatchResult, ash_batch
from .mixture import MixtureWeights, fit_mixture_weights

__all__ = ["ash_batch", "AshBatchResult", "fit_mixture_weights", "MixtureWeights"]
