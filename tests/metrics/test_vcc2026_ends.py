"""The streamed ends of the VCC 2026 scale equal their in-memory construction (1e-12).

The in-memory construction is the definition: the baseline's AnnData
(:func:`mean_response_baseline`, itself equal to cell-eval2's matrix, see
``test_vcc2026_calibration.py``) scored as a prediction, and each split's two halves copied into
AnnData objects of their own and validated. The streamed versions read a backed file; the
tolerance 1e-12 allows for summation order (cells in file order instead of split order).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shrinkpert.metrics.vcc2026 import MEMBERS, _score, validate_pair
from shrinkpert.metrics.vcc2026_calibration import (
    _halves,
    _nmae_values,
    baseline_vcc2026,
    mean_response_baseline,
    replicate_anchor_vcc2026,
)
from shrinkpert.metrics.vcc2026_ends import cell_subset, group_means
from shrinkpert.stats.wilcoxon import wilcoxon_de

from .test_vcc2026 import CONTROL, _pair


@pytest.fixture(scope="module")
def backed(tmp_path_factory):
    _, real, _ = _pair(5)
    path = tmp_path_factory.mktemp("ends") / "truth.h5ad"
    real.write_h5ad(path)
    return real, path


def _close(a: float, b: float) -> bool:
    return (np.isnan(a) and np.isnan(b)) or abs(a - b) <= 1e-12 * max(1.0, abs(b))


def test_group_means_are_scipy_means_bitwise(backed):
    from shrinkpert._validate import validate

    real, path = backed
    t = validate(path, side="truth", control=CONTROL)
    means, controls = group_means(t, chunk_size=97)  # several blocks
    X = real.X.tocsr()
    for k in range(len(t.perturbations) + 1):
        rows = np.flatnonzero(t.codes == k)
        assert np.array_equal(means[k], np.asarray(X[rows].astype(np.float64).mean(axis=0)).ravel())
    assert (controls != X[np.flatnonzero(t.codes == len(t.perturbations))]).nnz == 0


def test_streamed_baseline_equals_scoring_the_in_memory_baseline(backed):
    real, path = backed
    pred, truth = validate_pair(mean_response_baseline(real, seed=3), real, perturbation_key="perturbation",
                                control=CONTROL, layer=None)
    reference = _score(pred, truth, target_genes=None, chunk_size=None, n_threads=1, fractional_pred=True)
    streamed = baseline_vcc2026(path, seed=3, n_threads=1, chunk_size=128)
    for name, value in reference.aggregate.items():
        assert _close(streamed.aggregate[name], value), name
    for name, values in reference.values.items():
        np.testing.assert_allclose(streamed.values[name], values, rtol=1e-12, atol=1e-12, err_msg=name)


def test_streamed_anchor_equals_in_memory_halves(backed):
    real, path = backed
    streamed = replicate_anchor_vcc2026(path, n_splits=2, base_seed=7, n_threads=1)
    full = wilcoxon_de(real, control=CONTROL, target_sum=1e6, min_control_cpm=5.0, epsilon=1e-9, n_threads=1)
    cols = {i: real.var_names.get_loc(p) for i, p in enumerate(full.perturbations) if p in real.var_names}
    seeds = [int(s) for s in np.random.SeedSequence(7).generate_state(2)]
    for i, seed in enumerate(seeds):
        a, b = _halves(real.obs["perturbation"], seed)
        half_b, half_a = validate_pair(real[b].copy(), real[a].copy(), perturbation_key="perturbation",
                                       control=CONTROL, layer=None, pred_controls=True)
        res = _score(half_b, half_a, target_genes=None, chunk_size=None, n_threads=1, own_controls=True)
        nmae = _nmae_values(full, res.de_truth, res.de_pred, cols, full.perturbations)
        expected = dict(res.aggregate, de_wilcoxon_lfc_nmae=float(np.mean(nmae[np.isfinite(nmae)])))
        got = streamed.splits[streamed.splits["split"] == i].set_index("metric")["value"]
        for m in MEMBERS:
            assert _close(float(got[m]), expected[m]), (seed, m)


def test_half_keeps_only_present_perturbations(backed):
    from shrinkpert._validate import validate
    from shrinkpert.errors import InputError

    _, path = backed
    t = validate(path, side="truth", control=CONTROL)
    first = np.flatnonzero(t.codes == 0)
    ctrl = np.flatnonzero(t.codes == len(t.perturbations))
    half = cell_subset(t, np.concatenate([first[:4], ctrl[:5]]), "truth")
    assert list(half.perturbations) == [t.perturbations[0]]
    assert np.bincount(half.codes[half.codes >= 0]).tolist() == [4, 5]
    assert isinstance(half.perturbations, pd.Index)
    with pytest.raises(InputError, match="2 control cells"):
        cell_subset(t, np.concatenate([first, ctrl[:2]]), "truth")
