r"""DE calls of :func:`~shrinkpert.evaluate` from the Wilcoxon rank-sum test (``de_test="wilcoxon"``).

With ``de_test="welch"`` (the default) the DE metrics compare calls made by the Welch test on
pseudobulk means and variances (:func:`~shrinkpert.evaluation.steps.de_calls`). With
``de_test="wilcoxon"`` the calls come from the cells themselves:

* the truth: each perturbation's true cells against the true control cells;
* each model: its predicted cells of each perturbation against the same true control cells
  (the prediction's own control cells are ignored, as everywhere in ``evaluate``);

by :func:`~shrinkpert.stats.wilcoxon.wilcoxon_de` (tie-corrected normal approximation with
continuity correction, as ``scipy.stats.mannwhitneyu(method="asymptotic")``), BH within each
perturbation over all genes: ``q`` of :class:`~shrinkpert.metrics.DECalls`. Counts are ranked as
:math:`\log(1 + T c/L)` (``target_sum`` :math:`T`), log1p-normalised inputs as stored. The fold
change ``lfc`` is the same as under Welch, the difference of the log1p pseudobulk means from the
true control's mean, so the two tests differ only in which genes are called.

A baseline is a pseudobulk without cells, so it has no rank test: its DE metrics are NaN under
``de_test="wilcoxon"`` (and so are their calibrated scores, which need the baselines).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..metrics import DECalls
from .config import EvaluationConfig

__all__ = ["RankCalls", "rank_calls", "WILCOXON_DESCRIPTION"]

#: How the run's manifest describes the test.
WILCOXON_DESCRIPTION = ("Wilcoxon rank-sum of cells vs observed control cells, BH per perturbation; baselines "
                        "(no cells) not tested")


@dataclass(frozen=True)
class RankCalls:
    """DE calls of the truth and of each model from the Wilcoxon test.

    Attributes
    ----------
    truth : DECalls
        The true cells' calls.
    models : mapping of str to DECalls
        Each model's calls (by model name).
    """

    truth: DECalls
    models: Mapping[str, DECalls]

    def take(self, positions: np.ndarray) -> RankCalls:
        """The calls of the perturbations at ``positions`` (rows of these calls), e.g. one block."""
        def rows(c: DECalls) -> DECalls:
            return DECalls(lfc=c.lfc[positions], q=c.q[positions], perturbations=c.perturbations[positions],
                           genes=c.genes, q_order=None if c.q_order is None else c.q_order[positions])

        return RankCalls(truth=rows(self.truth), models={name: rows(c) for name, c in self.models.items()})


def rank_calls(inputs: Any, summaries: Any, config: EvaluationConfig, rows: np.ndarray | None = None) -> RankCalls:
    """Wilcoxon DE calls of the truth and every model (see the module docstring).

    Parameters
    ----------
    inputs : EvaluationInputs
        The validated inputs (:func:`~shrinkpert.evaluation.steps.read_inputs`).
    summaries : Summaries
        Their pseudobulks (:func:`~shrinkpert.evaluation.steps.summarise`): the fold changes.
    config : EvaluationConfig
    rows : ndarray of int, optional
        Positions of the perturbations to return (a shard); every perturbation is tested (BH is
        within each perturbation, so a shard's calls are those of the whole run).

    Raises
    ------
    NotImplementedError
        ``truth_cells`` other than ``"all"``, or a prediction whose genes are in another order
        than the truth's.
    """
    from ..stats.wilcoxon import wilcoxon_de

    if config.truth_cells != "all":
        raise NotImplementedError("de_test='wilcoxon' ranks every true cell; truth_cells='perturbed' is not "
                                  "implemented with it (use de_test='welch').")
    truth = inputs.truth
    for data in inputs.preds.values():
        if not data.genes.equals(truth.genes):
            raise NotImplementedError(f"de_test='wilcoxon' needs {data.side}'s genes in the truth's order; reorder "
                                      f"it (pred[:, truth.var_names]) or use de_test='welch'.")
    options = dict(perturbation_key=truth.perturbation_key, control=truth.control, layer=truth.layer,
                   normalize=inputs.scale == "counts", target_sum=config.target_sum, n_threads=config.n_threads)
    sel = slice(None) if rows is None else np.asarray(rows)
    perts, genes, control_mean = inputs.perturbations[sel], inputs.genes, summaries.truth.control_mean[None, :]
    tested = wilcoxon_de(truth, **options)
    calls = DECalls(lfc=summaries.truth.mean[sel] - control_mean, q=tested.q[sel], perturbations=perts, genes=genes)
    models = {}
    for name, data in inputs.preds.items():
        tested = wilcoxon_de(data, reference=truth, **options)
        mean = summaries.preds[name][0][sel]
        models[name] = DECalls(lfc=mean - control_mean, q=tested.q[sel], perturbations=perts, genes=genes)
    return RankCalls(truth=calls, models=models)
