"""Exceptions and warnings raised by shrinkpert.

Every error names what is wrong (the column, label, key or file) and how to fix it.  All
errors derive from :class:`ShrinkpertError`, itself a :class:`ValueError`, so callers that
already catch ``ValueError`` keep working; key lookups also derive from :class:`KeyError`.
"""

from __future__ import annotations

__all__ = [
    "ShrinkpertError",
    "InputError",
    "MissingKeyError",
    "CountsError",
    "GeneMismatchError",
    "LeakageError",
    "OutputExistsError",
    "OutputError",
    "ShrinkpertWarning",
]


class ShrinkpertError(ValueError):
    """Base class of every error shrinkpert raises on purpose."""


class InputError(ShrinkpertError):
    """The input data are malformed (NaN/inf, duplicate names, empty groups, bad file)."""


class MissingKeyError(ShrinkpertError, KeyError):
    """A column, layer or label the call needs is absent."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class CountsError(InputError):
    """Values that must be raw counts are negative or not integers."""


class GeneMismatchError(ShrinkpertError):
    """Two inputs do not share the same genes."""


class LeakageError(ShrinkpertError):
    """A reference or weight would be learned from the perturbations it is used to score."""


class OutputExistsError(ShrinkpertError, FileExistsError):
    """An output path exists and overwriting was not requested."""


class OutputError(ShrinkpertError):
    """An output location cannot be created or written (permissions, a file in the way, a full disk)."""


class ShrinkpertWarning(UserWarning):
    """Something was dropped, replaced or is statistically doubtful; the message says what."""
