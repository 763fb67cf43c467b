"""Perturbations without evidence of an effect keep all their cells in every escape-aware truth.

``NT_split`` and ``FAKE_TARGET`` are control cells relabelled (no measured target, no signal), so
:func:`classify_escape` has no perturbed state for them (``evidence == "none"``). Their effects
must equal those of the plain :func:`estimate_effects` (same cells, weight 1), for both
weightings, and the two escape-aware truths of ``evaluate`` must treat them the same way.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

from shrinkpert import estimate_effects
from shrinkpert.errors import InputError, ShrinkpertWarning
from shrinkpert.ontarget import (EscapeAwareEffects, classify_escape, escape_aware_effects, escaper_cells,
                                 perturbed_weights)

NULLS = ["FAKE_TARGET", "NT_split"]


@pytest.fixture(scope="module")
def nulls_escape(screen_with_nulls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ShrinkpertWarning)
        return classify_escape(screen_with_nulls)


def test_the_nulls_have_no_evidence(nulls_escape):
    table = nulls_escape.penetrance
    assert (table.loc[NULLS, "evidence"] == "none").all()
    assert (table.drop(NULLS)["evidence"] != "none").all()


@pytest.mark.parametrize("weighting", ["soft", "hard"])
def test_no_evidence_perturbations_keep_the_unweighted_effects(screen_with_nulls, nulls_escape, weighting):
    res = escape_aware_effects(screen_with_nulls, nulls_escape, weighting=weighting)
    plain = estimate_effects(screen_with_nulls)
    assert isinstance(res, EscapeAwareEffects)
    assert set(NULLS) <= set(res.perturbations)  # present, not dropped
    rows = res.perturbations.get_indexer(NULLS)
    want = plain.perturbations.get_indexer(NULLS)
    # same cells with weight 1: the same sums in the same order (1e-12: weighted vs plain accumulation)
    for name in ("effect", "std_error", "mean", "var"):
        np.testing.assert_allclose(getattr(res, name)[rows], getattr(plain, name)[want], rtol=1e-12, atol=1e-12,
                                   err_msg=name)
    np.testing.assert_array_equal(res.n_cells[rows], plain.n_cells[want])
    assert res.params["escape_no_evidence"] == 2
    assert list(res.escape_evidence[rows]) == ["none", "none"]
    frame = res.to_frame()
    assert set(frame.loc[frame["perturbation"].isin(NULLS), "escape_evidence"]) == {"none"}
    expected = nulls_escape.penetrance["evidence"].reindex(frame["perturbation"].astype(str)).to_numpy()
    np.testing.assert_array_equal(frame["escape_evidence"].to_numpy(), expected)
    assert res.to_anndata().obs.loc[NULLS, "escape_evidence"].tolist() == ["none", "none"]
    sub = res.subset(NULLS[::-1] + [res.perturbations[0]])
    assert isinstance(sub, EscapeAwareEffects)
    assert list(sub.escape_evidence) == ["none", "none", res.escape_evidence[0]]
    np.testing.assert_array_equal(sub.effect[0], res.effect[rows[1]])


def test_hard_and_soft_agree_with_the_evaluate_truths(screen_with_nulls, nulls_escape):
    labels = nulls_escape.perturbation
    null_cells = np.isin(labels, NULLS)
    # evaluate(truth_cells="weighted") weights these cells 1, "perturbed" never leaves them out
    np.testing.assert_array_equal(perturbed_weights(nulls_escape)[null_cells], 1.0)
    assert not escaper_cells(nulls_escape)[null_cells].any()
    # 0/1 posteriors: soft weighting equals the hard call on every perturbation
    zero_one = dataclasses.replace(nulls_escape, p_perturbed=np.where(
        np.isnan(nulls_escape.p_perturbed), np.nan, (nulls_escape.p_perturbed >= 0.5).astype(float)))
    soft = escape_aware_effects(screen_with_nulls, zero_one, weighting="soft")
    hard = escape_aware_effects(screen_with_nulls, nulls_escape, weighting="hard")
    assert soft.perturbations.equals(hard.perturbations)
    np.testing.assert_allclose(soft.effect, hard.effect, rtol=1e-9, atol=1e-12)


def test_hard_call_never_empties_a_perturbation(screen_with_nulls, nulls_escape):
    """A perturbation whose cells all look escaped keeps all its cells (as evaluate's truth does)."""
    p = nulls_escape.p_perturbed.copy()
    first = nulls_escape.penetrance.index[0]
    cells = nulls_escape.perturbation == first
    p[cells] = 0.0
    p[np.flatnonzero(cells)[0]] = 0.9  # one cell would remain: fewer than 2
    gone = dataclasses.replace(nulls_escape, p_perturbed=p)
    out = escaper_cells(gone)
    assert not out[cells].any()
    assert out[~cells & (nulls_escape.p_perturbed < 0.5) & ~np.isin(nulls_escape.perturbation, NULLS)
               & np.isin(nulls_escape.perturbation, nulls_escape.penetrance.index)].all()


def test_escaper_cells_errors(nulls_escape):
    with pytest.raises(InputError, match="threshold must be in"):
        escaper_cells(nulls_escape, 1.5)
    with pytest.raises(InputError, match="escape must be the EscapeResult"):
        escaper_cells("nope")
