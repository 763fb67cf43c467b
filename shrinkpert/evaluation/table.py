"""The result of :func:`~shrinkpert.evaluate`: :class:`MetricTable`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pandas as pd

__all__ = ["MetricTable", "stack_truths"]


@dataclass(frozen=True)
class MetricTable:
    """Result of :func:`~shrinkpert.evaluate`: per-perturbation values and summaries.

    Attributes
    ----------
    values : pandas.DataFrame
        Long table (see :meth:`to_frame`); read it through :meth:`to_frame`, which returns a copy.
    summary_table : pandas.DataFrame
        One row per (metric, weighting, reference) (see :meth:`summary`).
    perturbations, genes : pandas.Index
    params : mapping
        Every option of the call, the detected scale, what was ignored (``pred`` control cells)
        and the baselines' roles.
    """

    values: pd.DataFrame
    summary_table: pd.DataFrame
    perturbations: pd.Index
    genes: pd.Index
    params: Mapping[str, Any] = field(default_factory=dict)
    extras: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", self.values.copy())
        object.__setattr__(self, "summary_table", self.summary_table.copy())
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def to_frame(self) -> pd.DataFrame:
        """Tidy long table, one row per (perturbation, metric, weighting, reference).

        Columns: ``perturbation, metric, weighting`` (``"uniform"`` = unweighted),
        ``reference`` (``"control"``, ``"perturbed_centroid"``, or ``"none"`` for metrics of
        means and DE calls), ``value`` (the model), one ``baseline_<name>`` column per baseline,
        then ``calibrated`` (:math:`(s_p-n_p)/(q_p-n_p)`) and ``drf`` of the positive over the
        negative control (these two only when calibrated). Intervals are over perturbations and
        live in :meth:`summary`.
        """
        return self.values.copy()

    def summary(self) -> pd.DataFrame:
        """One row per (metric, weighting, reference), sorted by that index.

        Columns: ``mean`` and ``median`` of the model's values (NaN values left out; ``n_valid``
        counts the rest), ``calibrated`` (ratio of means between negative and positive control),
        ``ci_low``/``ci_high`` (its bootstrap interval), ``drf`` (mean DRF), ``bds``, ``flags``,
        then ``greater_is_better``, ``negative``, ``positive``, ``n_valid``, the mean of each
        baseline (``baseline_<name>``) and ``ceiling``: the analytic noise ceiling, the expected
        score of a prediction equal to the true population mean given the truth's sampling noise
        (closed forms for MSE/MAE of means and deltas, Pearson and cosine of deltas, against the
        control or on means; NaN elsewhere — compare with ``baseline_technical_duplicate``, the
        half-split ceiling).
        """
        return self.summary_table.copy()

    def with_manifest(self, manifest: Mapping[str, Any]) -> MetricTable:
        """A copy whose ``params["manifest"]`` is ``manifest`` (:mod:`shrinkpert.evaluation.manifest`)."""
        return MetricTable(self.values, self.summary_table, self.perturbations, self.genes,
                           {**self.params, "manifest": dict(manifest)}, extras=self.extras)

    def to_cell_eval2(self, out: Any, *, force: bool = False) -> Any:
        """Write cell-eval2's ``results.csv``, ``agg_results.csv``, ``run_meta.json`` and ``manifest.json`` into ``out``.

        Only for tables of ``evaluate(..., preset="vcc2026")`` (the same member names and layout,
        so leaderboards and scripts that read cell-eval2's output read these unchanged).
        """
        from ..errors import InputError

        if self.params.get("preset") == "vcc2026" and (self.params.get("manifest") or {}).get("shard"):
            raise InputError("to_cell_eval2: this is one shard's partial table (no pooled numbers); merge the shards "
                             "first (merge_tables / shrinkpert merge) and write the merged table.")
        if "vcc2026" not in self.extras:
            raise InputError("to_cell_eval2 needs a table of evaluate(..., preset='vcc2026'); this one has "
                             f"preset={self.params.get('preset')!r}.")
        from ..metrics.vcc2026_output import to_cell_eval2
        from ..report.tables import write_manifest

        folder = to_cell_eval2(self.extras["vcc2026"], out, calibrated=self.extras.get("vcc2026_calibrated"),
                               force=force)
        write_manifest(self, folder, force=True)
        return folder

    def to_html(self, path: Any, *, title: str | None = None, extras: Mapping[str, Any] | None = None,
                force: bool = False) -> Any:
        """Write the single-file HTML report of this table (see :func:`shrinkpert.report.write_html`)."""
        from ..report import write_html

        return write_html(self, path, title=title, extras=extras, force=force)

    def stratified(self, difficulty: Any, *, by: str = "stratum", **options: Any) -> pd.DataFrame:
        """Per-stratum means with bootstrap intervals (see :func:`shrinkpert.strata.stratify`).

        ``difficulty`` is the table of :func:`shrinkpert.difficulty` (indexed by perturbation).
        """
        from ..strata import stratify

        return stratify(self.to_frame(), difficulty, by=by, **options)


def stack_truths(tables: Mapping[str, MetricTable]) -> MetricTable:
    """One table of several truths (``{"raw": table, "shrunk": table}``), side by side.

    The values gain a ``truth`` column and the summary a ``truth`` index level, after ``model``
    when there are several models, else first; each truth's rows are its table's rows unchanged.
    ``params["truth_effects"]`` lists the truths; the other params are the first table's.
    """
    first = next(iter(tables.values()))
    values, summaries = [], []
    for name, table in tables.items():
        frame, summary = table.to_frame(), table.summary().reset_index()
        for part in (frame, summary):
            part.insert(1 if "model" in part.columns else 0, "truth", name)
        values.append(frame)
        summaries.append(summary)
    names = [n for n in first.summary_table.index.names]
    index = names[:1] + ["truth"] + names[1:] if names[0] == "model" else ["truth"] + names
    params = {**first.params, "truth_effects": list(tables)}
    return MetricTable(pd.concat(values, ignore_index=True), pd.concat(summaries, ignore_index=True).set_index(index),
                       first.perturbations, first.genes, params, dict(first.extras))
