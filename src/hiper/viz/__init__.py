"""The static HTML viewer of runs and evaluations: ``hiper view RUN [--out DIR] [--serve]``.

:mod:`.data` reads a run folder into a compact payload, :mod:`.plots` draws the learning curves
as SVG, :mod:`.report` writes the self-contained page and serves it on localhost.
"""

from hiper.viz.data import load_view_data
from hiper.viz.report import build_report, make_server, render_html

__all__ = ["build_report", "load_view_data", "make_server", "render_html"]
