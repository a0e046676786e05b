"""The self-contained HTML report of a run or an evaluation, and a localhost server for it.

The page is one file: style, script, learning curves (inline SVG) and the data payload
(:func:`hiper.viz.data.load_view_data`) are all inside it; it loads nothing from anywhere. A
Content-Security-Policy forbids every network request and allows only the viewer's own script
(by its SHA-256 hash), so even markup that got into the page could not run script or fetch
anything: model output in a trajectory renders as text (the script only uses ``textContent``) and
the JSON payload is escaped so it cannot close its ``<script>`` element.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.server
import json
from collections.abc import Sequence
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from hiper.runs.log import atomic_write_text
from hiper.viz.data import load_view_data

__all__ = ["build_report", "make_server", "render_html", "safe_json"]

REPORT_NAME = "index.html"


def safe_json(data: Any) -> str:
    """JSON text safe inside a ``<script type="application/json">`` element: ASCII only, and
    ``<``, ``>``, ``&`` written as ``\\u003c`` etc. (so ``</script>`` or ``<!--`` in a string
    cannot end the element); ``JSON.parse`` reads it back unchanged."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files("hiper.viz").joinpath("assets", name).read_text(encoding="utf-8")


def _report_table(report: dict[str, Any] | None, run: str | None = None) -> str:
    """The evaluation's mean +- std success per task type (``hiper eval --out``'s report.json);
    ``run`` names the run when several are compared."""
    if not isinstance(report, dict) or not isinstance(report.get("results"), dict):
        return ""
    rows = []
    for k, v in sorted(report["results"].items(), key=lambda kv: (kv[0] == "all", kv[0])):
        if not isinstance(v, dict):
            continue
        try:
            succ = f"{100 * float(v['success_mean']):.1f} ± {100 * float(v['success_std']):.1f}"
            score = f"{float(v['score_mean']):.3f} ± {float(v['score_std']):.3f}"
        except (KeyError, TypeError, ValueError):
            continue
        rows.append(
            f"<tr><td>{escape(str(k))}</td><td class=num>{escape(str(v.get('episodes', '')))}"
            f"</td><td class=num>{escape(succ)}</td><td class=num>{escape(score)}</td></tr>"
        )
    if not rows:
        return ""
    head = "Evaluation" if run is None else f"Evaluation: {escape(run)}"
    return (
        f'<h2>{head}</h2><table class="eval-table"><thead><tr><th>task type</th><th>tasks</th>'
        "<th>success %</th><th>score</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


_CURVES = """
<h2>Learning curves</h2>
<div class="filters curve-controls">
  <label>metric <select id="metric-pick" aria-label="metric"></select></label>
  <label>smoothing (EMA weight) <input id="smooth" type="range" min="0" max="0.99" step="0.01"
    value="0" aria-label="smoothing"></label><span id="smooth-value" class="sub">0.00</span>
</div>
<div class="curves" id="picked"></div>
<div class="curves" id="curves"></div>
<p class="sub">Smoothing: s<sub>0</sub> = y<sub>0</sub>, s<sub>t</sub> = w·s<sub>t−1</sub> +
(1 − w)·y<sub>t</sub> over each series' logged points; the raw curve stays faint behind it.
Error bars: ± the metric's <code>_std</code> companion (e.g. <code>eval/success_std</code>, the
spread over evaluation seeds) around the raw points.</p>
"""

_FILTERS = """
<div class="filters">
  <select id="f-run" aria-label="run" hidden></select>
  <select id="f-split" aria-label="split"></select>
  <select id="f-type" aria-label="task type"></select>
  <select id="f-outcome" aria-label="outcome">
    <option value="">success and failure</option><option value="success">success</option>
    <option value="failure">failure</option></select>
  <select id="f-mode" aria-label="failure mode"></select>
  <select id="f-iteration" aria-label="iteration"></select>
  <input id="f-query" type="search" placeholder="task id or goal contains…" aria-label="search">
  <label>lens <select id="f-lens" aria-label="credit-assignment lens">
    <option value="all">all levels</option><option value="action">A^L: action tokens</option>
    <option value="subgoal">A^H: subgoal tokens</option>
    <option value="switch">A^S: switch tokens</option><option value="off">off</option>
  </select></label>
  <label><input id="f-values" type="checkbox" checked> advantage values</label>
</div>
<div id="count" class="sub"></div>
"""

_LEGEND = (
    '<p class="sub">Credit-assignment lens: each block of a response is coloured by the advantage '
    "its tokens received (switch tokens A^S, subgoal tokens A^H, action tokens A^L; HAE gives all "
    "tokens of a block the same value): "
    '<span class="legend-box" style="background:rgba(215,48,39,0.8)"></span> negative '
    '<span class="legend-box" style="background:rgba(26,152,80,0.8)"></span> positive '
    "(saturated at |A| = 2); hatched: no advantage (turn 0's switch, a KEEP turn's copied subgoal, "
    "evaluation turns). Each training turn prints its values (A^S, A^H, A^L) in its header; "
    '"advantage values" hides them. Invalid turns are red, actions the environment answered with a '
    'no-op ("Nothing happens.") are marked no-op, the turns of a loop are marked loop. Failure '
    "modes: loop (one action 3+ times in a row, or a cycle of 2–3 actions played twice in a row), "
    "no-op (a well-formed action answered with a no-op), timeout (a failure cut by the step limit "
    "or max_turns), malformed (a turn the parser rejected).</p>"
)


def render_html(data: dict[str, Any]) -> str:
    """The report page of a :func:`~hiper.viz.data.load_view_data` payload."""
    script = _asset("viewer.js")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    csp = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        f"script-src 'sha256-{digest}'"
    )
    runs = data["runs"]
    many = len(runs) > 1
    has_metrics = any(r["metrics"] for r in runs)
    n = len(data["trajectories"])
    tables = "".join(_report_table(r.get("report"), r["name"] if many else None) for r in runs)
    config_html = "".join(
        f"<details><summary>config.yaml{escape(' of ' + r['name']) if many else ''}</summary>"
        f'<pre class="config">{escape(r["config"])}</pre></details>'
        for r in runs
        if r.get("config")
    )
    if config_html:
        config_html = "<h2>Configuration</h2>" + config_html
    title = escape(f"hiper · {data['title']}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{_asset("viewer.css")}</style></head>
<body>
<header><h1>{title}</h1>
<div class="sub">{escape(data["kind"])} · {escape(data["source"])} · {n} trajectories</div>
</header>
{tables}
{_CURVES if has_metrics else ""}
<h2>Trajectories</h2>
{_FILTERS}
{_LEGEND}
<div class="browser">
<div><table id="traj-table"><thead><tr><th>it</th><th>split</th><th>task</th>
<th>outcome</th><th>modes</th><th>turns</th><th>score</th></tr></thead><tbody id="traj-rows"></tbody></table>
<div class="pager"><button id="prev">‹ previous</button><span id="page"></span>
<button id="next">next ›</button></div></div>
<div id="detail"><p class="sub">Pick a trajectory.</p></div>
</div>
{config_html}
<script type="application/json" id="hiper-data">{safe_json(data)}</script>
<script>{script}</script>
</body></html>
"""


def build_report(
    path: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    max_trajectories: int | None = None,
) -> Path:
    """Write the report of the run or evaluation folder ``path`` to ``out/index.html``
    (default ``<path>/report/``), atomically; returns the file's path. Several folders (a list):
    one page comparing them, by default in ``<first folder>/report-compare/``."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    data = load_view_data(paths, max_trajectories=max_trajectories)
    src = Path(paths[0])
    folder = src.parent if src.is_file() else src
    default = "report" if len(paths) == 1 else "report-compare"
    out_dir = Path(out) if out is not None else folder / default
    return atomic_write_text(out_dir / REPORT_NAME, render_html(data))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def make_server(
    directory: str | Path, host: str = "127.0.0.1", port: int = 8000
) -> http.server.ThreadingHTTPServer:
    """An HTTP server for the report folder ``directory``, bound to ``host`` (localhost by
    default: the report holds a run's data) and ``port`` (0: any free port)."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as e:  # the port is taken, or the address is not this machine's
        raise OSError(
            f"cannot serve on {host}:{port}: {e.strerror or e}; choose another port "
            "(0: any free port) or host",
        ) from None
