"""Leakage guards for split-dependent weights and references.

A weight or reference is *split-dependent* when it is learned from other perturbations: the
``deg_rest`` weights (each perturbation against all other perturbed cells; Mejia et al.) and the
``perturbed_centroid`` delta reference (mean of perturbation centroids; Systema). Their value
for a perturbation changes with the train/test split, and when the perturbation being scored is
itself among those it was learned from, the score has seen the answer.

Every split-dependent method therefore takes an explicit ``reference_perturbations=`` (the
perturbations it may learn from; there is no silent "all") and refuses to weight or score a
perturbation in that set unless ``allow_leakage=True``, which reproduces the all-perturbations
setting of Mejia et al. and is recorded in the result's ``params``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ..errors import InputError, LeakageError

__all__ = ["SPLIT_DEPENDENT", "require_reference_perturbations", "check_leakage"]

SPLIT_DEPENDENT = frozenset({"deg_rest", "perturbed_centroid"})
"""Methods whose result for one perturbation depends on other perturbations."""


def require_reference_perturbations(
    reference_perturbations: Iterable[str] | None,
    *,
    method: str,
    control: str | None = None,
) -> tuple[str, ...]:
    """The validated reference set of a split-dependent ``method`` (sorted, unique).

    Raises
    ------
    InputError
        ``reference_perturbations`` is missing, empty, a bare string, contains the control or
        repeats a label.
    """
    if reference_perturbations is None:
        raise InputError(
            f"method {method!r} learns from other perturbations, so it needs reference_perturbations=: the "
            "perturbations it may learn from (e.g. the training perturbations of this split). There is no "
            "default; to reproduce the all-perturbations setting of Mejia et al. pass every perturbation and "
            "allow_leakage=True."
        )
    if isinstance(reference_perturbations, str):
        raise InputError(
            f"reference_perturbations={reference_perturbations!r} is a single string; pass a list of labels."
        )
    labels = [str(p) for p in reference_perturbations]
    if not labels:
        raise InputError(f"reference_perturbations is empty; {method!r} needs at least one perturbation to learn from.")
    if len(set(labels)) != len(labels):
        raise InputError("reference_perturbations lists a label twice; pass each perturbation once.")
    if control is not None and control in set(labels):
        raise InputError(
            f"reference_perturbations contains the control {control!r}; list perturbed groups only "
            f"({method!r} learns from perturbed cells)."
        )
    return tuple(sorted(labels))


def check_leakage(
    scored: Sequence[str],
    reference_perturbations: Sequence[str],
    *,
    allow_leakage: bool,
    method: str,
) -> list[str]:
    """Perturbations that are both scored and in the reference set.

    Returns them (for the result's ``params``) when ``allow_leakage`` is true.

    Raises
    ------
    LeakageError
        Some scored perturbation is in ``reference_perturbations`` and ``allow_leakage`` is false;
        the message names them.
    """
    reference = set(map(str, reference_perturbations))
    leaked = [str(p) for p in scored if str(p) in reference]
    if leaked and not allow_leakage:
        shown = ", ".join(map(repr, leaked[:10])) + (f" and {len(leaked) - 10} more" if len(leaked) > 10 else "")
        raise LeakageError(
            f"{method!r} would weight or score {shown}, which {'is' if len(leaked) == 1 else 'are'} also in "
            "reference_perturbations (the perturbations it learns from), so the result would be fitted on the data "
            "it scores. Pass perturbations= that exclude them (e.g. the held-out perturbations), remove them from "
            "reference_perturbations, or pass allow_leakage=True to reproduce the all-perturbations setting of "
            "Mejia et al. (recorded in params)."
        )
    return leaked
