"""The report's SVG writer: round covering ticks (checked by brute force), escaped text, valid XML."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from shrinkpert.report._svg import Canvas, Scale, nice_ticks, tick_label


def _smallest_covering_step(lo, hi, n):
    """Brute force: every 1/2/2.5/5 × 10^k from 1e-8 up; the first whose covering ticks need <= n intervals."""
    for k in range(-8, 9):
        for m in (1.0, 2.0, 2.5, 5.0):
            step = m * 10.0**k
            if np.ceil(hi / step - 1e-9) - np.floor(lo / step + 1e-9) <= n:
                return step
    raise AssertionError("no step")


def test_ticks_are_the_roundest_covering_set_of_at_most_n_intervals():
    rng = np.random.default_rng(3)
    for _ in range(300):
        centre = rng.normal() * 10.0 ** rng.integers(-3, 4)
        lo = centre - abs(rng.normal()) * 10.0 ** rng.integers(-3, 3)
        hi = lo + abs(rng.normal()) * 10.0 ** rng.integers(-3, 3) + 1e-6
        n = int(rng.integers(3, 7))
        ticks, step = nice_ticks(lo, hi, n)
        assert step == pytest.approx(_smallest_covering_step(lo, hi, n), rel=1e-12)
        assert ticks[0] <= lo + 1e-9 * step and ticks[-1] >= hi - 1e-9 * step and len(ticks) - 1 <= n
        np.testing.assert_allclose(np.diff(ticks), step, rtol=1e-9)
        np.testing.assert_allclose(ticks / step, np.round(ticks / step), atol=1e-6)  # multiples of the step
    with pytest.raises(ValueError, match="finite lo < hi"):
        nice_ticks(1.0, 1.0)


def test_tick_labels_and_a_flat_scale():
    assert [tick_label(v, 0.25) for v in (-0.5, 0.0, 0.25)] == ["-0.50", "0", "0.25"]
    assert [tick_label(v, 2.0) for v in (-2.0, 4.0)] == ["-2", "4"]
    assert tick_label(-0.0, 0.1) == "0"
    scale = Scale([3.0, 3.0, np.nan], 0.0, 100.0)  # one value: padded by 10 % on each side
    assert scale.lo <= 2.7 and scale.hi >= 3.3 and scale(scale.lo) == 0.0 and scale(scale.hi) == 100.0


def test_canvas_escapes_text_and_writes_well_formed_svg():
    canvas = Canvas(120, 40)
    canvas.text(5, 10, 'a <b> & "c"', anchor="start")
    for kind in "osDx":
        canvas.marker(kind, 30, 20, 6, "#123456")
    root = ET.fromstring(base64.b64decode(canvas.uri().split(",", 1)[1]))
    assert root.tag.endswith("svg") and root.get("viewBox") == "0 0 120 40"
    texts = [el.text for el in root.iter() if el.tag.endswith("text")]
    assert texts == ['a <b> & "c"']
    assert Canvas(120, 40).uri() == Canvas(120, 40).uri()  # deterministic bytes
