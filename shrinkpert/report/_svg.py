"""A minimal SVG writer for the report's simple figures (private).

Strips, box plots and the summary grid are rectangles, lines, circles and text; writing them as
SVG elements directly is hundreds of times faster than laying out one matplotlib axes per metric
row. Coordinates are in CSS pixels (the ``<img>`` scales the drawing with its ``viewBox``); text
is escaped; numbers are written with two decimals, so the same input gives the same bytes.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence

import numpy as np

FONT = "-apple-system,'Segoe UI',Helvetica,Arial,sans-serif"
#: Displayed size / drawing size: the page shows each drawing this much larger than its
#: coordinates (the ``viewBox``), so 9-unit labels read as 12 px text.
DISPLAY = 1.35
#: Average glyph width of the sans-serif fonts above, in em (for laying out labels).
GLYPH_EM = 0.52


def text_width(text: str, size: float) -> float:
    """Approximate width in pixels of ``text`` at font size ``size``."""
    return GLYPH_EM * size * len(text)


def _n(x: float) -> str:
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


class Canvas:
    """Elements of one SVG drawing of ``width`` × ``height`` pixels, written in call order."""

    def __init__(self, width: float, height: float) -> None:
        self.width, self.height = float(width), float(height)
        self._parts: list[str] = []

    def rect(self, x: float, y: float, w: float, h: float, *, fill: str = "none", stroke: str | None = None,
             stroke_width: float = 1.0) -> None:
        line = f' stroke="{stroke}" stroke-width="{_n(stroke_width)}"' if stroke else ""
        self._parts.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0.0))}" height="{_n(max(h, 0.0))}" '
                           f'fill="{fill}"{line}/>')

    def line(self, x1: float, y1: float, x2: float, y2: float, *, stroke: str, width: float = 1.0,
             dash: str | None = None) -> None:
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        self._parts.append(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
                           f'stroke-width="{_n(width)}"{extra}/>')

    def circle(self, cx: float, cy: float, r: float, *, fill: str, opacity: float = 1.0) -> None:
        extra = f' fill-opacity="{_n(opacity)}"' if opacity < 1 else ""
        self._parts.append(f'<circle cx="{_n(cx)}" cy="{_n(cy)}" r="{_n(r)}" fill="{fill}"{extra}/>')

    def marker(self, kind: str, x: float, y: float, size: float, color: str) -> None:
        """A plot marker centred at (x, y): ``"o"`` circle, ``"s"`` square, ``"D"`` diamond, ``"x"`` cross."""
        h = size / 2
        if kind == "s":
            self.rect(x - h, y - h, size, size, fill=color)
        elif kind == "D":
            pts = f"{_n(x)},{_n(y - h * 1.2)} {_n(x + h)},{_n(y)} {_n(x)},{_n(y + h * 1.2)} {_n(x - h)},{_n(y)}"
            self._parts.append(f'<polygon points="{pts}" fill="{color}"/>')
        elif kind == "x":
            self.line(x - h, y - h, x + h, y + h, stroke=color, width=1.5)
            self.line(x - h, y + h, x + h, y - h, stroke=color, width=1.5)
        else:
            self.circle(x, y, h, fill=color)

    def text(self, x: float, y: float, text: str, *, size: float = 10.0, anchor: str = "start",
             color: str = "#000000", bold: bool = False, rotate: float | None = None,
             baseline: str = "middle") -> None:
        """Text at (x, y); ``anchor`` start/middle/end, ``baseline`` middle/hanging/alphabetic."""
        extra = ' font-weight="bold"' if bold else ""
        if rotate is not None:
            extra += f' transform="rotate({_n(rotate)} {_n(x)} {_n(y)})"'
        self._parts.append(f'<text x="{_n(x)}" y="{_n(y)}" font-size="{_n(size)}" text-anchor="{anchor}" '
                           f'dominant-baseline="{baseline}" fill="{color}"{extra}>{html.escape(str(text))}</text>')

    def svg(self) -> str:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_n(self.width * DISPLAY)}" '
                f'height="{_n(self.height * DISPLAY)}" '
                f'viewBox="0 0 {_n(self.width)} {_n(self.height)}" font-family="{html.escape(FONT)}">'
                f'<rect width="100%" height="100%" fill="#ffffff"/>' + "".join(self._parts) + "</svg>")

    def uri(self) -> str:
        """``data:image/svg+xml;base64,...`` of the drawing."""
        return "data:image/svg+xml;base64," + base64.b64encode(self.svg().encode("utf-8")).decode("ascii")


def nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[np.ndarray, float]:
    """Round tick values covering [lo, hi] in at most ``n`` intervals, and their step.

    The step is the smallest of 1, 2, 2.5, 5 and 10 times a power of ten for which the multiples
    of the step from ``floor(lo / step)`` to ``ceil(hi / step)`` span at most ``n`` intervals
    (as matplotlib's ``MaxNLocator`` picks its step).
    """
    if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
        raise ValueError(f"nice_ticks needs finite lo < hi, got {lo!r}, {hi!r}.")
    n = max(int(n), 1)
    base = 10.0 ** math.floor(math.log10((hi - lo) / n))
    for step in (m * base * scale for scale in (1.0, 10.0) for m in (1.0, 2.0, 2.5, 5.0)):
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
        if last - first <= n:
            break
    else:  # pragma: no cover - 10 × base always fits (the range is at most 10 n base)
        step = 100.0 * base
        first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return np.arange(first, last + 1) * step, step


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as ``step`` needs (scientific for very large or small steps)."""
    if step >= 1e5 or step < 1e-4:
        return f"{value:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if round(step / 10.0 ** -decimals, 6) % 1:  # e.g. 0.25: one more decimal
        decimals += 1
    s = f"{value:.{decimals}f}"
    return "0" if float(s) == 0 else s


class Scale:
    """Linear map of data values [lo, hi] onto pixels [p0, p1], with round ticks."""

    def __init__(self, values: Sequence[float] | np.ndarray, p0: float, p1: float, *, n_ticks: int = 5) -> None:
        v = np.asarray(values, dtype=np.float64)
        v = v[np.isfinite(v)]
        lo, hi = (float(v.min()), float(v.max())) if v.size else (0.0, 1.0)
        if hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1.0):
            pad = 0.5 if lo == 0 else 0.1 * abs(lo)
            lo, hi = lo - pad, hi + pad
        self.ticks, self.step = nice_ticks(lo, hi, n_ticks)
        self.lo, self.hi = float(self.ticks[0]), float(self.ticks[-1])
        self.p0, self.p1 = p0, p1

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.p0 + (np.asarray(x, dtype=np.float64) - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def draw(self, canvas: Canvas, top: float, bottom: float, *, size: float = 8.0, grid: str = "#e5e5e5",
             axis: str = "#555555") -> None:
        """Vertical grid lines from ``top`` to ``bottom``, the axis line at ``bottom`` and tick labels below."""
        for t in self.ticks:
            x = float(self(t))
            canvas.line(x, top, x, bottom, stroke=grid, width=0.6)
            canvas.line(x, bottom, x, bottom + 3, stroke=axis, width=0.8)
            canvas.text(x, bottom + 4, tick_label(float(t), self.step), size=size, anchor="middle", color="#333333",
                        baseline="hanging")
        canvas.line(self.p0, bottom, self.p1, bottom, stroke=axis, width=0.8)
