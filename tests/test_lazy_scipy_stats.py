"""Importing and running the evaluation does not import scipy.stats (~0.5 s of every process).

Only a few metrics (the Spearman correlations of guide doses, dose order and map agreement) need
it; they import it when called. Checked in a fresh interpreter, where nothing else has imported
it yet; the lazily importing functions are checked against the closed form
:math:`1 - 6\\sum d^2 / (n(n^2 - 1))` (no ties).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def test_importing_the_evaluation_leaves_scipy_stats_unloaded():
    code = "import sys, shrinkpert, shrinkpert.evaluation; print('scipy.stats' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_lazily_imported_spearman_still_works():
    from shrinkpert.biology.agreement import _upper_spearman
    from shrinkpert.metrics.target_gene import dose_order_score
    from shrinkpert.ontarget.dosage import _spearman

    x, y = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 3.0, 2.0, 4.0])  # d = 0, -1, 1, 0: rho = 0.8
    assert np.isclose(_spearman(x, y), 0.8, rtol=1e-12)
    assert np.isclose(dose_order_score(x, y, groups=list("AAAA")).iloc[0], 0.8, rtol=1e-12)
    a = np.zeros((3, 3))
    b = np.zeros((3, 3))
    a[np.triu_indices(3, 1)] = [1.0, 2.0, 3.0]
    b[np.triu_indices(3, 1)] = [3.0, 2.0, 1.0]
    assert np.isclose(_upper_spearman(a, b), -1.0, rtol=1e-12)
