"""The static HTML viewer of runs and evaluations: ``hiper view RUN... [--out DIR] [--serve]``.

:mod:`.data` reads one or more run folders into a compact payload (with per-trajectory failure
modes), :mod:`.plots` names the standard learning-curve panels, :mod:`.report` writes the
self-contained page (its script draws the curves as SVG) and serves it on localhost.
"""

from hiper.viz.data import load_view_data
from hiper.viz.report import build_report, make_server, render_html

__all__ = ["build_report", "load_view_data", "make_server", "render_html"]
