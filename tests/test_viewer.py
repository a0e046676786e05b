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
from hiper.runs.log import MetricsLogger, TrajectoryLog, read_jsonl
from hiper.viz import build_report, load_view_data, make_server, render_html
from hiper.viz.data import (
    FAILURE_MODES,
    TRAJ_FIELDS,
    TURN_FIELDS,
    failure_modes,
    find_loop,
    is_noop_answer,
    run_names,
    std_companions,
)
from hiper.viz.plots import learning_curves
from hiper.viz.report import safe_json
from tests.helpers import INJECTED_OBSERVATION, INJECTED_RESPONSE, response, trajectory


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


def test_learning_curves_picks_the_standard_panels():
    metrics = {
        "train/success": [[1, 0.2], [2, 0.4]],
        "eval/success": [[0, 0.1], [2, 0.3]],
        "eval/success_std": [[0, 0.05], [2, 0.1]],
        "eval/success/pick": [[0, 0.1]],
        "adv/low/std": [[1, 2.0]],
        "adv/high/std": [[1, 0.5]],
        "ppo/explained_var/low": [[1, 0.1]],
        "ppo/explained_var/high": [[1, 0.2]],
    }
    panels = {p["title"]: p["series"] for p in learning_curves(metrics)}
    assert set(panels) == {
        "Success",
        "Success per task type (held-out evaluation)",
        "Advantage variance per level",
        "Explained variance per value head",
    }
    # train and eval keep their keys (one colour each in every chart); the std is not a series
    assert [(s["metric"], s["key"]) for s in panels["Success"]] == [
        ("train/success", "train"),
        ("eval/success", "eval"),
    ]
    assert [s["label"] for s in panels["Success per task type (held-out evaluation)"]] == ["pick"]
    # variance = std^2, squared by the page
    var = {
        s["label"]: (s["metric"], s["transform"]) for s in panels["Advantage variance per level"]
    }
    assert var == {
        "Var A^L (low)": ("adv/low/std", "square"),
        "Var A^H (high)": ("adv/high/std", "square"),
    }
    # several runs: a panel shows a metric any of them logged
    two = learning_curves([{"train/success": []}, {"ppo/kl": []}])
    assert [p["title"] for p in two] == ["Success", "KL to the reference, entropy"]


def test_std_companions_pair_each_metric_with_its_std():
    metrics = {"eval/success": [], "eval/success_std": [], "x_std": [], "adv/low/std": []}
    assert std_companions(metrics) == {"eval/success": "eval/success_std"}


# -- failure modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("actions", "loop"),
    [
        (["a", "a", "a"], (0, 3, 1)),
        (["a", "a"], None),
        (["x", "a", "a", "a", "a", "b"], (1, 5, 1)),
        (["a", "b", "a", "b"], (0, 4, 2)),
        (["a", "b", "a"], None),
        (["x", "a", "b", "c", "a", "b", "c"], (1, 7, 3)),
        (["a", "a", "b", "a", "a", "b"], (0, 6, 3)),
        (["Go  to A", "go to a", "GO TO A"], (0, 3, 1)),  # compared normalised
        (["a", None, "a", "a"], None),  # a turn without an action breaks a repetition
        (["", "", ""], None),
        (["a", "b", "c", "d", "a", "b", "c", "d"], None),  # a cycle of 4 is not a loop
    ],
)
def test_find_loop_hand_computed(actions, loop):
    assert find_loop(actions) == loop


def test_noop_answers():
    assert is_noop_answer("Nothing happens.") and is_noop_answer("  nothing  happens. ")
    assert is_noop_answer("Invalid action: no such button. [SEP] page")
    assert not is_noop_answer("You arrive at fridge 1. Nothing happens here.")
    assert not is_noop_answer(None)


def _acts(actions: list[str], **kw):
    """A trajectory playing ``actions`` (SWITCH first, then KEEP); ``bad``: turn indices whose
    response is unparsable."""
    bad = kw.pop("bad", ())
    texts = [
        "garbage" if k in bad else response("SWITCH" if k == 0 else "KEEP", "g", a)
        for k, a in enumerate(actions)
    ]
    final = kw.pop("final", "done")
    tr = trajectory(["KEEP"] * len(actions), [0.0] * len(actions), texts=texts, **kw)
    tr.info = {"task": f"goal of {tr.task_id}", "final_observation": final}
    return tr


def mode_trajectories():
    """One hand-made trajectory per failure mode, each with exactly that tag."""
    return {
        "loop": _acts(["go to a", "go to b", "go to b", "go to b", "look"], task_id="t/loop"),
        "noop": _acts(
            ["open x", "take y"], task_id="t/noop", observations=["start", "Nothing happens."]
        ),
        "timeout": _acts(["go to a", "go to b", "go to c"], terminated=False, task_id="t/timeout"),
        # the environment answers the unparsable turn (empty action) with a no-op: still only
        # malformed, a no-op counts for well-formed actions
        "malformed": _acts(
            ["go to a", "x"], bad=(1,), task_id="t/malformed", final="Nothing happens."
        ),
        "success": _acts(["go to a", "take y"], task_id="t/success", success=True),
    }


def write_modes_run(folder: Path, *, seed: float = 0.0) -> Path:
    """A run folder: the :func:`mode_trajectories` (iteration 1, training) and an evaluation of
    them (iteration 0), with metrics (including ``eval/success_std``, a metric no standard
    panel shows, ``custom/metric``, and one named with HTML) over 4 iterations."""
    trs = list(mode_trajectories().values())
    extras = [[{"adv_action": 0.5, "adv_switch": -0.25} for _ in tr.turns] for tr in trs]
    with TrajectoryLog(folder, with_tokens=False) as log:
        log.append(0, "eval", trs)
        log.append(1, "train", trs, extras=extras)
    with MetricsLogger(folder, tensorboard=False) as m:
        for it in range(4):
            row = {"train/success": 0.1 * it + seed, "custom/metric": 10.0 * it + seed}
            row[f"custom/{INJECTED_RESPONSE}"] = 1.0  # a metric name is text, never markup
            if it % 2 == 0:
                row.update({"eval/success": 0.2 + 0.1 * it, "eval/success_std": 0.05})
            m.log(it, row)
    return folder


def test_failure_mode_tags_of_hand_made_trajectories(tmp_path: Path):
    from hiper.runs.records import trajectory_to_dict

    for mode, tr in mode_trajectories().items():
        tags, loop = failure_modes(trajectory_to_dict(tr, with_tokens=False))
        assert tags == [mode], mode
        assert (loop is not None) == (mode == "loop")
    assert failure_modes(trajectory_to_dict(mode_trajectories()["loop"]))[1] == (1, 4, 1)
    # timeout also when the rollout's max_turns cut it (the turn info says so)
    rec = trajectory_to_dict(mode_trajectories()["timeout"], with_tokens=False)
    rec["turns"][-1]["truncated"] = False
    rec["turns"][-1]["info"]["truncation"] = "max_turns"
    assert failure_modes(rec)[0] == ["timeout"]
    # in the payload: tags, the loop and the no-op turns
    data = load_view_data(write_modes_run(tmp_path / "run"))
    assert data["failure_modes"] == list(FAILURE_MODES)
    S = data["strings"]
    by_id = {S[t[TF["task_id"]]]: t for t in data["trajectories"] if S[t[TF["split"]]] == "train"}
    assert {k: v[TF["tags"]] for k, v in by_id.items()} == {
        f"t/{m}": [m] for m in mode_trajectories()
    }
    assert by_id["t/loop"][TF["loop"]] == [1, 4, 1]
    assert [u[UF["noop"]] for u in by_id["t/noop"][TF["turns"]]] == [1, 0]
    assert [u[UF["noop"]] for u in by_id["t/malformed"][TF["turns"]]] == [0, 1]


# -- metrics and several runs --------------------------------------------------------------------


def test_metric_payload_has_every_metric_and_std_companions(tmp_path: Path):
    run = write_modes_run(tmp_path / "run")
    data = load_view_data(run)
    (r,) = data["runs"]
    logged = {k for row in read_jsonl(run / "metrics.jsonl") for k in row} - {
        "iteration",
        "wall_time",
    }
    assert set(r["metrics"]) == logged
    assert r["metrics"]["custom/metric"] == [[0, 0.0], [1, 10.0], [2, 20.0], [3, 30.0]]
    assert r["metrics"]["eval/success"] == [[0, 0.2], [2, pytest.approx(0.4)]]
    assert r["metric_std"] == {"eval/success": "eval/success_std"}
    assert data["panels"] == learning_curves(r["metrics"])


def test_several_runs_in_one_payload(tmp_path: Path):
    a = write_modes_run(tmp_path / "a" / "run")
    b = write_modes_run(tmp_path / "b" / "run", seed=0.5)
    data = load_view_data([a, b])
    assert data["kind"] == "comparison" and data["title"] == "2 runs compared"
    assert [r["name"] for r in data["runs"]] == ["a/run", "b/run"]
    assert str(tmp_path) not in json.dumps(data)  # no full paths in a shared report
    assert data["runs"][1]["metrics"]["custom/metric"][0] == [0, 0.5]
    n = len(data["trajectories"]) // 2
    assert [t[TF["run"]] for t in data["trajectories"]] == [0] * n + [1] * n
    assert len(data["strings"]) == len(set(data["strings"]))  # one string table for all runs
    assert run_names(["x/run", "y/other"]) == ["run", "other"]
    assert run_names(["p/x/run", "q/x/run"]) == ["p/x/run", "q/x/run"]
    with pytest.raises(ValueError, match="given twice"):
        load_view_data([a, tmp_path / "a" / "run"])
    # the CLI: several folders make one comparison page, --out still works
    result = CliRunner().invoke(app, ["view", str(a), str(b)])
    assert result.exit_code == 0, result.output
    html = (a / "report-compare" / "index.html").read_text()
    assert "2 runs compared" in html and "a/run · b/run" in html
    result = CliRunner().invoke(app, ["view", str(a), str(b), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0 and (tmp_path / "o" / "index.html").is_file()
    result = CliRunner().invoke(app, ["view", str(a), str(tmp_path / "missing")])
    assert result.exit_code != 0 and "no such run" in _flat(result.output)


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
    (run,) = data["runs"]
    logged = {k for row in read_jsonl(viewer_run / "metrics.jsonl") for k in row}
    numeric = {
        k
        for row in read_jsonl(viewer_run / "metrics.jsonl")
        for k, v in row.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v == v
    }
    assert set(run["metrics"]) == numeric - {"iteration", "wall_time"}  # every metric, not 8
    assert {"train/success", "eval/success", "ppo/kl"} <= set(run["metrics"]) <= logged
    assert run["metric_std"].get("eval/success") == "eval/success_std"
    assert run["config"] and "estimator" in run["config"]


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
    assert len(data["panels"]) >= 5  # the curves are drawn by the page script


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
    assert 'class="eval-table"' in html and "evaluation" in html
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
