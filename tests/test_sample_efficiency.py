"""benchmarks/sample_efficiency.py: the analysis on hand-made curves, and its smoke profile end to end."""

from __future__ import annotations

import importlib.util
import json
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
    md = se.markdown({"noise": {}}, {"chain4": table})
    assert "| chain4 | hiper_segment_return | 85.0 ± 5.0 % | 200 (2/2) | 300 (2/2) | 1.33x |" in md


def test_smoke_profile_end_to_end(se, tmp_path):
    """The whole study at toy scale: shared SFT, two methods, curves, noise, table, plots."""
    res = se.study(se.PROFILES["smoke"], tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "table.md").is_file() and (out / "curves_chain2.png").is_file()
    assert (out / "curves_chain2.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "results.json").read_text())
    for name in ("hiper_segment_return", "grpo"):
        curve = saved["runs"]["chain2"][name]["0"]["curve"]
        assert curve[0][0] == 0 and curve[-1][0] >= se.PROFILES["smoke"].budget_steps
        assert all(0.0 <= v <= 1.0 for _, v in curve)
        trace = saved["runs"]["chain2"][name]["0"]["train"]
        assert trace and trace[-1]["steps"] == curve[-1][0]
        assert ("low" in trace[0]) == (name == "hiper_segment_return")  # HAE's critic heads
    noise = saved["noise"]["chain2"]["hiper_segment_return"]
    assert noise["turns"] > 0 and noise["adv_var"] >= 0
    assert res["table"]["chain2"]["grpo"]["reached_80"].endswith("/1")
    assert not (out / "work").exists()  # checkpoints of the runs are cleaned up
