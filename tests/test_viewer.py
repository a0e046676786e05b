"""`hiper view`: the payload read from a real tiny run, the SVG curves, the HTML page, the server.

The browser checks (rendering, colouring, plots, script injection) are in test_viewer_browser.py.
"""

from __future__ import annotations

import json
import re
import threading
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hiper.cli import app
from hiper.runs.log import read_jsonl
from hiper.viz import build_report, load_view_data, make_server, render_html
from hiper.viz.data import TRAJ_FIELDS, TURN_FIELDS
from hiper.viz.plots import learning_curves, line_plot, nice_ticks
from hiper.viz.report import safe_json
from tests.helpers import INJECTED_OBSERVATION, INJECTED_RESPONSE


def _flat(text: str) -> str:
    """CLI error text without the box drawing and line wrapping of its panel."""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", text).split())


TF = {k: i for i, k in enumerate(TRAJ_FIELDS)}
UF = {k: i for i, k in enumerate(TURN_FIELDS)}


# -- pure pieces ---------------------------------------------------------------------------------


def test_safe_json_cannot_close_its_script_element_and_round_trips():
    nasty = ["</script><script>alert(1)</script>", "<!--", "a & b > c", "\u2028\u2029", "\ud800"]
    text = safe_json({"s": nasty})
    assert "<" not in text and ">" not in text and "&" not in text
    assert text.isascii()
    assert json.loads(text) == {"s": nasty}


def test_safe_json_rejects_non_finite_numbers():
    with pytest.raises(ValueError):
        safe_json({"x": float("nan")})


@pytest.mark.parametrize(
    ("lo", "hi", "ticks"),
    [
        (0.0, 1.0, [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]),
        (0.0, 0.37, [0.0, 0.1, 0.2, 0.3, 0.4]),
        (1.0, 24.0, [0.0, 5.0, 10.0, 15.0, 20.0, 25.0]),
        (-0.15, 0.6, [-0.2, 0.0, 0.2, 0.4, 0.6]),
        (3.0, 3.0, [2.6, 2.8, 3.0, 3.2, 3.4]),
    ],
)
def test_nice_ticks_hand_computed(lo, hi, ticks):
    assert nice_ticks(lo, hi) == pytest.approx(ticks)


def test_nice_ticks_rejects_non_finite_range():
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, float("inf"))


def test_line_plot_escapes_labels_and_skips_empty_or_non_finite_series():
    svg = line_plot(
        "a <b> title",
        {"<script>x</script>": [(0, 1.0), (1, float("nan")), (2, 0.5)], "empty": []},
    )
    assert svg.startswith('<svg class="plot" data-series="1"')
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "a &lt;b&gt; title" in svg
    assert svg.count("<circle") == 2  # the NaN point is dropped
    assert "no data" in line_plot("t", {"empty": []})


def test_learning_curves_picks_the_standard_panels():
    metrics = {
        "train/success": [[1, 0.2], [2, 0.4]],
        "eval/success": [[0, 0.1], [2, 0.3]],
        "eval/success/pick": [[0, 0.1]],
        "adv/low/std": [[1, 2.0]],
        "adv/high/std": [[1, 0.5]],
        "ppo/explained_var/low": [[1, 0.1]],
        "ppo/explained_var/high": [[1, 0.2]],
    }
    panels = dict(learning_curves(metrics))
    assert set(panels) == {
        "Success",
        "Success per task type",
        "Advantage variance per level",
        "Explained variance per value head",
    }
    assert 'data-series="2"' in panels["Success"]
    # variance = std^2: A^L 4.0, A^H 0.25 (shown in the points' hover titles)
    var = panels["Advantage variance per level"]
    assert "Var A^L (low): 4 at 1" in var and "Var A^H (high): 0.25 at 1" in var


# -- a real tiny run -----------------------------------------------------------------------------


def test_payload_of_a_real_run_matches_its_logs(viewer_run: Path):
    records = read_jsonl(viewer_run / "trajectories.jsonl")
    data = load_view_data(viewer_run)
    S = data["strings"]
    assert len(S) == len(set(S))  # interned: each string once
    assert data["kind"] == "run" and data["trajectories_total"] == len(records)
    assert len(data["trajectories"]) == len(records)
    trained = 0
    for rec, t in zip(records, data["trajectories"], strict=True):
        assert t[TF["iteration"]] == rec["iteration"]
        assert S[t[TF["split"]]] == rec["split"]
        assert S[t[TF["task_id"]]] == rec["task_id"]
        assert t[TF["success"]] == int(rec["success"])
        assert len(t[TF["turns"]]) == len(rec["turns"])
        for u, r in zip(t[TF["turns"]], rec["turns"], strict=True):
            assert S[u[UF["observation"]]] == r["observation"]
            assert S[u[UF["response"]]] == r["response_text"]
            assert u[UF["valid"]] == int(r["decision"]["valid"])
            assert u[UF["adv_action"]] == r["info"].get("adv_action")
            assert u[UF["adv_switch"]] == r["info"].get("adv_switch")
            if r["decision"]["spans"].get("action"):
                assert u[UF["spans"]][3] == r["decision"]["spans"]["action"]
            trained += u[UF["adv_action"]] is not None
    assert trained > 0  # training turns carry the advantages the trainer gave them
    assert {"train/success", "eval/success", "ppo/kl"} <= set(data["metrics"])
    assert data["config"] and "estimator" in data["config"]


def test_max_trajectories_keeps_the_newest(viewer_run: Path):
    data = load_view_data(viewer_run, max_trajectories=3)
    full = load_view_data(viewer_run)
    assert (
        len(data["trajectories"]) == 3 and data["trajectories_total"] == full["trajectories_total"]
    )
    last = [
        (t[TF["iteration"]], full["strings"][t[TF["task_id"]]]) for t in full["trajectories"][-3:]
    ]
    assert [
        (t[TF["iteration"]], data["strings"][t[TF["task_id"]]]) for t in data["trajectories"]
    ] == last
    with pytest.raises(ValueError, match="positive integer"):
        load_view_data(viewer_run, max_trajectories=0)


def test_bad_folders_get_clear_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no such run"):
        load_view_data(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"expected trajectories\.jsonl"):
        load_view_data(tmp_path)
    result = CliRunner().invoke(app, ["view", str(tmp_path)])
    assert result.exit_code != 0 and "not a hiper run" in _flat(result.output)


def test_report_page_is_self_contained_and_escapes_model_output(injected_run: Path, tmp_path):
    path = build_report(injected_run, tmp_path / "out")
    html = path.read_text()
    assert path == tmp_path / "out" / "index.html"
    # nothing is loaded from anywhere, and only the viewer's own script may run
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "default-src 'none'" in html and "script-src 'sha256-" in html
    # the injected markup only exists as escaped JSON text, never as markup
    assert INJECTED_RESPONSE not in html and "<img" not in html
    assert INJECTED_OBSERVATION not in html
    payload = html.split('<script type="application/json" id="hiper-data">')[1]
    data = json.loads(payload.split("</script>")[0])
    assert INJECTED_RESPONSE in data["strings"] and INJECTED_OBSERVATION in data["strings"]
    assert html.count('<svg class="plot"') >= 5


def test_render_html_is_deterministic(viewer_run: Path):
    data = load_view_data(viewer_run)
    assert render_html(data) == render_html(load_view_data(viewer_run))


def test_eval_out_folder_is_viewable(viewer_run: Path, tmp_path: Path):
    out = tmp_path / "ev"
    args = ["eval", "--model", str(viewer_run), "--tasks", "2", "--seeds", "2", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads((out / "report.json").read_text()) == report
    records = read_jsonl(out / "trajectories.jsonl")
    assert len(records) == 4 and {r["split"] for r in records} == {"eval seed 0", "eval seed 1"}
    assert all("prompt_ids" not in t for r in records for t in r["turns"])
    result = CliRunner().invoke(app, ["view", str(out)])
    assert result.exit_code == 0, result.output
    html = (out / "report" / "index.html").read_text()
    assert 'id="eval-table"' in html and "evaluation" in html
    # a second evaluation into the same folder is refused rather than mixed in
    again = CliRunner().invoke(app, [*args, "--json"])
    assert again.exit_code != 0 and "already exists" in _flat(again.output)


def test_server_binds_localhost_by_default_and_serves_the_report(viewer_run: Path, tmp_path):
    path = build_report(viewer_run, tmp_path / "r")
    server = make_server(path.parent, port=0)
    assert server.server_address[0] == "127.0.0.1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200
            assert resp.read().decode() == path.read_text()
    finally:
        server.shutdown()
        server.server_close()
