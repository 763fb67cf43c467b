"""The single-file HTML report of a :class:`~shrinkpert.MetricTable`, and the table on disk.

Plotting lives only here; matplotlib is imported when a figure is drawn, never by
``import shrinkpert``.
"""

from .html import EXTRA_SECTIONS, render_html, write_html
from .tables import load_table, save_table

__all__ = ["write_html", "render_html", "EXTRA_SECTIONS", "save_table", "load_table"]
