"""Deprecated alias of :mod:`shrinkpert.ontarget` (renamed in 0.2; removed in 0.3).

``import shrinkpert.target`` and ``from shrinkpert.target.escape import ...`` keep working and
emit a :class:`DeprecationWarning`; the modules are the very same objects as under
``shrinkpert.ontarget``, so results and classes are identical. This is a single file, not a
folder, because a folder named ``target/`` is hidden by many editors and ``.gitignore`` templates.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings

from . import ontarget as _ontarget
from .ontarget import *  # noqa: F401,F403  (the public names of the old package)
from .ontarget import __all__  # noqa: F401

warnings.warn(
    "shrinkpert.target was renamed shrinkpert.ontarget; the old name will be removed in 0.3. "
    "Replace 'shrinkpert.target' by 'shrinkpert.ontarget' in your imports.",
    DeprecationWarning,
    stacklevel=2,
)

for _info in pkgutil.iter_modules(_ontarget.__path__):
    sys.modules[f"{__name__}.{_info.name}"] = importlib.import_module(f"{_ontarget.__name__}.{_info.name}")
# the metrics of predicted target-gene changes moved to shrinkpert.metrics.target_gene
sys.modules[f"{__name__}.prediction"] = importlib.import_module("shrinkpert.metrics.target_gene")
