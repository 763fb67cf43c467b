"""rows_by_label against one scan per label (the loop it replaces)."""

from __future__ import annotations

import numpy as np

from shrinkpert._arrays import rows_by_label


def test_rows_by_label_equals_one_scan_per_label(rng):
    values = rng.choice(np.array(["a", "b", "ctrl", None], dtype=object), size=500)
    labels = ["ctrl", "a", "absent"]
    for rows, label in zip(rows_by_label(values, labels), labels):
        np.testing.assert_array_equal(rows, np.flatnonzero(values == label))
    assert [len(r) for r in rows_by_label(np.array([], dtype=object), labels)] == [0, 0, 0]
