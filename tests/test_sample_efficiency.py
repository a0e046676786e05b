"""benchmarks/sample_efficiency.py: the analysis on hand-made curves, and its smoke profile end to end."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def se():
    path = PROJECT_ROOT / "benchmarks" / "sample_efficiency.py"
    spec = importlib.util.spec_from_file_location("sample_efficiency", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_steps_to_threshold(se):
    curve = [[0, 0.1], [100, 0.45], [200, 0.5], [300, 0.9], [400, 0.7]]
    assert se.steps_to(curve, 0.5) == 200.0
    assert se.steps_to(curve, 0.8) == 300.0
    assert se.steps_to(curve, 0.95) is None


def test_summary_hand_computed(se):
    runs = {
        "chain4": {
            # HiPER: seed 0 reaches 80 % at 200 steps, seed 1 at 400 -> mean 300
            "hiper_segment_return": {
                "0": {"curve": [[0, 0.2], [200, 0.8], [400, 0.9]]},
                "1": {"curve": [[0, 0.2], [200, 0.6], [400, 0.8]]},
            },
            # flat baselines: PPO reaches 80 % at 400 (both seeds), GRPO never
            "ppo_flat": {
                "0": {"curve": [[0, 0.2], [200, 0.5], [400, 0.8]]},
                "1": {"curve": [[0, 0.2], [200, 0.5], [400, 0.85]]},
            },
            "grpo": {
                "0": {"curve": [[0, 0.2], [200, 0.3], [400, 0.4]]},
                "1": {"curve": [[0, 0.2], [200, 0.3], [400, 0.6]]},
            },
        }
    }
    table = se.summarise({"runs": runs})["chain4"]
    h, p, g = table["hiper_segment_return"], table["ppo_flat"], table["grpo"]
    assert h["final_mean"] == pytest.approx(0.85) and h["final_std"] == pytest.approx(0.05)
    assert h["steps_to_80"] == 300.0 and h["reached_80"] == "2/2"
    assert p["steps_to_80"] == 400.0 and p["steps_to_50"] == 200.0
    assert g["steps_to_80"] is None and g["reached_80"] == "0/2"
    assert g["steps_to_50"] == 400.0 and g["reached_50"] == "1/2"
    # best flat baseline to 80 %: 400 steps; HiPER 300 -> 1.33x fewer steps
    assert h["ratio_80"] == pytest.approx(400 / 300)
    # to 50 %: best flat 200 (PPO), HiPER 200 on both seeds -> 1.0x
    assert h["steps_to_50"] == 200.0 and h["ratio_50"] == pytest.approx(1.0)
    assert "ratio_80" not in p  # ratios are HiPER's only
    assert h["seeds"] == 2 and h["start_mean"] == pytest.approx(0.2)
    assert h["progress_mean"] == pytest.approx(0.85)  # no progress recorded: success stands in
    md = se.markdown({"noise": {}}, {"chain4": table})
    row = "| chain4 | hiper_segment_return | 20.0 % | 85.0 ± 5.0 % | 85.0 % | 200 (2/2) | 300 (2/2) | 1.33x |"
    assert row in md
    assert "Partial" not in md


def test_summary_reads_subtask_progress(se):
    # points are [steps, success, subtask progress]: progress moves while success is still 0
    runs = {"chain6": {"grpo": {"0": {"curve": [[0, 0.0, 0.1], [300, 0.0, 0.4]]}}}}
    row = se.summarise({"runs": runs})["chain6"]["grpo"]
    assert row["final_mean"] == 0.0 and row["progress_mean"] == pytest.approx(0.4)
    assert row["steps_to_50"] is None and row["reached_50"] == "0/1"


def test_smoke_profile_end_to_end_resume_and_workers(se, tmp_path):
    """The whole study at toy scale: shared SFT, two methods, curves, noise, table, plots; then
    a second call that finds everything done, a refused profile change, a partial report, and
    the missing run redone by a worker process."""
    import dataclasses

    import torch

    p, out = se.PROFILES["smoke"], tmp_path / "out"
    res = se.study(p, out)
    assert (out / "table.md").is_file() and (out / "curves_chain2.png").is_file()
    assert (out / "curves_chain2.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "results.json").read_text())
    for name in ("hiper_segment_return", "grpo"):
        curve = saved["runs"]["chain2"][name]["0"]["curve"]
        assert curve[0][0] == 0 and curve[-1][0] >= p.budget_steps
        # [steps, success, progress]: progress counts subtasks, so it is never below success
        assert all(0.0 <= v <= pr <= 1.0 for _, v, pr in curve)
        trace = saved["runs"]["chain2"][name]["0"]["train"]
        assert trace and trace[-1]["steps"] == curve[-1][0]
        assert ("low" in trace[0]) == (name == "hiper_segment_return")  # HAE's critic heads
        assert 0 <= trace[0]["train_success"] <= trace[0]["train_subtask_progress"] <= 1
        assert trace[0]["train_segment_length"] >= 1
    noise = saved["noise"]["chain2"]["hiper_segment_return"]
    assert noise["turns"] > 0 and noise["adv_var"] >= 0 and len(noise["batch"]) == 16
    assert res["table"]["chain2"]["grpo"]["reached_80"].endswith("/1")
    assert res["missing"] == [] and res["planned"] == 2 and res["sft"]["examples"] > 0
    assert not (out / "work").exists()  # checkpoints of the runs are cleaned up
    assert se.Profile.from_dict(json.loads((out / "profile.json").read_text())) == p

    # everything done: a second call trains nothing and rewrites no result
    keys = se.all_runs(p)
    stamps = {k: k.result_path(out).stat().st_mtime_ns for k in keys}
    again = se.study(p, out)
    assert {k: k.result_path(out).stat().st_mtime_ns for k in keys} == stamps
    assert again["table"] == res["table"]
    with pytest.raises(SystemExit, match="another profile"):
        se.study(dataclasses.replace(p, budget_steps=16), out)

    # a lost run: the report says what is missing and tabulates the rest
    grpo = se.RunKey("chain2", "grpo", 0)
    first = json.loads(grpo.result_path(out).read_text())
    grpo.result_path(out).unlink()
    partial = se.report(out, p)
    assert partial["missing"] == ["chain2/grpo/0"] and "grpo" not in partial["table"]["chain2"]
    assert "**Partial:** 1 of 2 runs not done: chain2/grpo/0" in (out / "table.md").read_text()

    # redone by a worker process (the parallel path), from the same seeds: the same episodes
    redo = se.study(p, out, workers=2, threads=torch.get_num_threads())
    assert redo["failed"] == [] and redo["missing"] == []
    assert grpo.log_path(out).is_file()
    second = json.loads(grpo.result_path(out).read_text())
    assert second["noise"]["batch"] == first["noise"]["batch"]
    assert second["curve"][0] == first["curve"][0]  # the SFT start, evaluated again


def test_cli_refuses_bad_requests(se, tmp_path):
    script = str(PROJECT_ROOT / "benchmarks" / "sample_efficiency.py")

    def run(*args):
        return subprocess.run(
            [sys.executable, script, *args], capture_output=True, text=True, timeout=120
        )

    r = run("--out", str(tmp_path / "none"), "--report")
    assert r.returncode != 0 and "holds no study" in r.stderr
    r = run("--out", str(tmp_path / "x"), "--eval-split", "eval_in_distribution")
    assert r.returncode == 2 and "--eval-split belongs to a profile" in r.stderr
    r = run("--quick", "--profile", "full", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "--quick is --profile quick" in r.stderr
    se.open_study(tmp_path / "z", se.PROFILES["smoke"])
    r = run("--out", str(tmp_path / "z"), "--methods", "grpo,gipgo")
    assert r.returncode == 2 and "--methods: ['gipgo'] not in the study's profile" in r.stderr
    with pytest.raises(ValueError, match="unknown method"):
        se.Profile.from_dict({**se.dataclasses.asdict(se.PROFILES["smoke"]), "methods": ["ppo"]})
    with pytest.raises(ValueError, match="a run is SETTING/METHOD/SEED"):
        se.RunKey.parse("chain4/grpo")
