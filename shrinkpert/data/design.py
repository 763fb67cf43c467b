"""Experimental design: ``obs`` columns to integer codes, perturbations to target genes.

Every later stage works on integer codes, never on strings: a cell's group is an index into
``PerturbationDesign.groups`` (``-1`` = not used), and each perturbation's target gene is an
index into ``var_names`` (``-1`` = the target is not a measured gene).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np
import pandas as pd

from .._vocab import CONTROL, PERTURBATION_KEY
from ..errors import InputError, MissingKeyError, ShrinkpertWarning

__all__ = ["PerturbationDesign", "encode_design", "encode_labels", "group_codes", "target_indices"]


def _require_column(obs: pd.DataFrame, key: str, what: str) -> pd.Series:
    if key not in obs.columns:
        shown = ", ".join(map(repr, list(obs.columns)[:20])) or "(none)"
        raise MissingKeyError(
            f"obs has no column {key!r} ({what}). Columns present: {shown}. "
            f"Pass the right column name, e.g. {what.split()[0]}_key=..."
        )
    return obs[key]


def group_codes(obs: pd.DataFrame, groupby: str | pd.Series | Sequence[str | pd.Series]) -> tuple[np.ndarray, pd.Index]:
    """Integer code per cell for the groups of one or several ``obs`` columns.

    Parameters
    ----------
    obs
        Cell annotations.
    groupby
        A column name, a :class:`pandas.Series` of labels aligned to ``obs`` (its name names the
        level; missing labels silently mean "not in any group"), or a list of these (groups are
        then their observed combinations).

    Returns
    -------
    codes : ndarray of int64, shape (n_cells,)
        Group of each cell, ``-1`` for cells with a missing label (dropped, with a warning when
        the label comes from an ``obs`` column).
    groups : pandas.Index or pandas.MultiIndex
        Observed groups, sorted; ``groups[codes[i]]`` is cell ``i``'s label.
    """
    items = [groupby] if isinstance(groupby, (str, pd.Series)) else list(groupby)
    if not items:
        raise InputError("groupby is empty; pass an obs column name such as 'perturbation'.")
    columns, from_obs = {}, []
    for k, item in enumerate(items):
        if isinstance(item, pd.Series):
            if len(item) != len(obs) or not item.index.equals(obs.index):
                raise InputError("A groupby Series must be indexed like obs (one label per cell, same order).")
            name = item.name if item.name is not None else f"group_{k}"
            columns[name] = item.to_numpy()
        else:
            columns[item] = _require_column(obs, item, "groupby column").to_numpy()
            from_obs.append(item)
    keys = list(columns)
    frame = pd.DataFrame(columns, index=obs.index)
    for key in from_obs:
        if isinstance(obs[key].dtype, pd.CategoricalDtype):
            frame[key] = obs[key]
    missing = frame.isna().any(axis=1).to_numpy()
    unlabelled = frame[from_obs].isna().any(axis=1).to_numpy() if from_obs else missing & False
    if unlabelled.any():
        warnings.warn(
            f"{int(unlabelled.sum())} cells have no label in {from_obs!r} and are left out of every group.",
            ShrinkpertWarning,
            stacklevel=3,
        )
    grouped = frame.groupby(keys, observed=True, sort=True, dropna=True)
    codes = grouped.ngroup().to_numpy(dtype=np.int64, na_value=-1)
    order = grouped.size().index  # the order ngroup() numbers the groups in
    if len(keys) == 1:
        groups = pd.Index(np.asarray(order), name=keys[0])
        groups = groups.astype(str) if groups.dtype == object else groups
    else:
        groups = pd.MultiIndex.from_arrays(
            [np.asarray(order.get_level_values(k)) for k in range(len(keys))], names=keys
        )
    codes[missing] = -1
    if len(groups) == 0:
        raise InputError(f"No cell has a label in {keys!r}; nothing to group.")
    return codes, groups


def target_indices(
    perturbations: Sequence[str],
    var_names: pd.Index,
    targets: Mapping[str, str] | None = None,
) -> tuple[pd.Index, np.ndarray]:
    """Map each perturbation to its target gene's column in ``var_names``.

    Parameters
    ----------
    perturbations
        Perturbation labels.
    var_names
        Measured genes.
    targets
        Optional mapping perturbation -> target gene name; a perturbation absent from it is its
        own target name (the usual convention of naming a perturbation by its target).

    Returns
    -------
    target_names : pandas.Index of str
        Target gene name per perturbation.
    index : ndarray of int64
        Column of the target in ``var_names``, ``-1`` when the target is not measured.
    """
    targets = dict(targets or {})
    names = pd.Index([str(targets.get(p, p)) for p in perturbations], name="target")
    index = pd.Index(var_names.astype(str)).get_indexer(names)
    return names, index.astype(np.int64)


@dataclass(frozen=True)
class PerturbationDesign:
    """Integer-coded design of a Perturb-seq experiment.

    Attributes
    ----------
    perturbations : pandas.Index
        Perturbation labels (control excluded), sorted.
    control : str
        The control label.
    codes : ndarray of int64, shape (n_cells,)
        ``k`` for a cell of ``perturbations[k]``, ``len(perturbations)`` for a control cell, ``-1``
        for cells that are neither (unlabelled or excluded).
    target : pandas.Index
        Target gene name per perturbation.
    target_index : ndarray of int64
        Column of each target in ``var_names`` (``-1`` when not measured).
    extra : mapping of str to (codes, labels)
        Codes of the optional guide / replicate / batch columns, ``-1`` where missing.
    """

    perturbations: pd.Index
    control: str
    codes: np.ndarray
    target: pd.Index
    target_index: np.ndarray
    extra: Mapping[str, tuple[np.ndarray, pd.Index]] = field(default_factory=dict)

    @property
    def control_code(self) -> int:
        """Code of the control group (``len(perturbations)``)."""
        return len(self.perturbations)

    @property
    def n_cells(self) -> pd.Series:
        """Number of cells per perturbation and control."""
        counts = np.bincount(self.codes[self.codes >= 0], minlength=self.control_code + 1)
        return pd.Series(counts, index=list(self.perturbations) + [self.control], name="n_cells")


def encode_labels(
    labels: np.ndarray,
    control: str | None,
    *,
    exclude: Sequence[str] = (),
    perturbations: Sequence[str] | None = None,
    require_control: bool = True,
    where: str = "the labels",
    side: str = "",
) -> tuple[np.ndarray, pd.Index, str | None, tuple[str, ...]]:
    """Integer codes of perturbation labels: the one encoder of the package.

    Parameters
    ----------
    labels : ndarray of object
        One label per cell (``None`` = unlabelled).
    control
        The control label.
    exclude
        Labels whose cells get code ``-1``; those present are returned.
    perturbations
        Labels to keep (default: every label except the control and the excluded ones).
    require_control
        Raise when the control is absent (else it is returned as ``None``).
    where, side
        How messages name the labels and the input.

    Returns
    -------
    codes : ndarray of int64
        ``k`` for ``perturbations[k]``, ``len(perturbations)`` for the control, ``-1`` otherwise.
    perturbations : pandas.Index
        Sorted (or as requested).
    control : str or None
    excluded : tuple of str
        Labels of ``exclude`` that were present.
    """
    prefix = f"{side}: " if side else ""
    present = pd.Index(pd.unique(labels[pd.notna(labels)])).astype(str)
    excluded = tuple(sorted(set(exclude) & set(present)))
    kept = present.difference(pd.Index(excluded)) if excluded else present
    resolved = control if control is not None and control in set(kept) else None
    if resolved is None and require_control:
        shown = ", ".join(map(repr, sorted(kept)[:30]))
        hint = f" ({control!r} is in exclude=)" if control in set(excluded) else ""
        raise MissingKeyError(
            f"{prefix}Control label {control!r} is not in {where}{hint}. Labels present: {shown}"
            f"{' ...' if len(kept) > 30 else ''}. Pass control=<the control label, one of these>."
        )
    if perturbations is None:
        perts = pd.Index(sorted(p for p in kept if p != resolved), name="perturbation")
    else:
        perts = pd.Index([str(p) for p in perturbations], name="perturbation")
        absent = [p for p in perts if p not in set(kept)]
        if absent:
            raise InputError(f"{prefix}perturbations {absent[:10]!r} have no cells in {where}; remove them from "
                             "perturbations=.")
        if resolved is not None and resolved in set(perts):
            raise InputError(f"{prefix}the control {resolved!r} cannot also be listed in perturbations=.")
        if perts.has_duplicates:
            raise InputError(f"{prefix}perturbations= lists a label twice; pass each label once.")
    order = list(perts) + ([resolved] if resolved is not None else [])
    codes = pd.Categorical(np.asarray(labels, dtype=object), categories=order).codes.astype(np.int64)
    return codes, perts, resolved, excluded


def encode_design(
    obs: pd.DataFrame,
    var_names: pd.Index | Sequence[str],
    *,
    perturbation_key: str = PERTURBATION_KEY,
    control: str = CONTROL,
    target_key: str | None = None,
    guide_key: str | None = None,
    replicate_key: str | None = None,
    batch_key: str | None = None,
    perturbations: Sequence[str] | None = None,
) -> PerturbationDesign:
    """Encode ``obs`` into a :class:`PerturbationDesign`.

    Parameters
    ----------
    obs
        Cell annotations (``adata.obs``).
    var_names
        Measured genes (``adata.var_names``), used to locate each perturbation's target.
    perturbation_key
        Column holding the perturbation label of each cell.
    control
        Label of control cells in ``perturbation_key``.
    target_key
        Optional column with the target gene of each cell, when perturbation labels are not
        gene names (e.g. guide or compound names). Must be constant within a perturbation.
    guide_key, replicate_key, batch_key
        Optional columns coded alongside.
    perturbations
        Labels to keep; default every label except ``control``. Cells of other labels get code
        ``-1`` and are logged, never silently merged.

    Raises
    ------
    MissingKeyError
        A named column is absent, or ``control`` is not among the labels (the message lists them).
    InputError
        ``target_key`` is not constant within a perturbation, or a requested perturbation is absent.
    """
    labels_col = _require_column(obs, perturbation_key, "perturbation labels")
    labels = labels_col.astype("string").to_numpy(dtype=object, na_value=None)
    codes, perts, _, _ = encode_labels(labels, control, perturbations=perturbations, where=f"obs[{perturbation_key!r}]")
    perts = perts.rename(perturbation_key)

    targets = None
    if target_key is not None:
        tcol = _require_column(obs, target_key, "target gene column").astype("string")
        frame = pd.DataFrame({"p": labels, "t": tcol.to_numpy(dtype=object, na_value=None)})
        frame = frame[frame["p"].isin(perts)]
        n_targets = frame.groupby("p")["t"].nunique(dropna=False)
        bad = n_targets[n_targets > 1]
        if len(bad):
            raise InputError(
                f"obs[{target_key!r}] takes several values within perturbations {list(bad.index[:10])!r}; "
                "each perturbation must have one target gene."
            )
        targets = frame.drop_duplicates("p").set_index("p")["t"].to_dict()
    target, tindex = target_indices(perts, pd.Index(var_names), targets)

    extra = {}
    for name, key in (("guide", guide_key), ("replicate", replicate_key), ("batch", batch_key)):
        if key is not None:
            _require_column(obs, key, f"{name} column")
            extra[name] = group_codes(obs, key)
    return PerturbationDesign(perts, control, codes, target, tindex, MappingProxyType(extra))
