"""``hiper eval`` on any device and dtype (issue 18): the policy alone is loaded (no KL reference
copy, no critic), the report names the model, its checkpoint and the resolved config, and the
third-party loaders stay quiet."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from hiper import __version__
from hiper.cli import _eval_device, app
from hiper.eval import (
    evaluate_policy,
    load_eval_policy,
    locate_model,
    manifest_task_ids,
    resolve_model,
)
from hiper.models.policy import load_policy
from tests.helpers import run_hiper

#: Two manifest tasks, one sampling seed: seconds on the tiny model.
QUICK = ["--tasks", "2", "--seeds", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny training run (quickstart config with a separate critic and a frozen KL
    reference): tiny model, SFT, one PPO iteration; checkpoints iter_000000 and iter_000001."""
    from hiper.train.loop import Trainer
    from tests.helpers import config

    run_dir = tmp_path_factory.mktemp("eval_cli") / "run"
    cfg = config(run_dir, "iterations=1")
    assert cfg.model.critic == "separate" and cfg.model.lora is None  # what the test relies on
    Trainer(cfg).run()
    return run_dir


def _eval_json(*args: str) -> dict:
    result = CliRunner().invoke(app, ["eval", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _check_results(report: dict) -> None:
    for row in report["results"].values():
        for key in ("success_mean", "success_std", "score_mean", "score_std"):
            assert isinstance(row[key], float) and math.isfinite(row[key]), row
        assert 0.0 <= row["success_mean"] <= 1.0


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_eval_a_run_on_cpu_in_each_dtype(tiny_run: Path, dtype: str):
    report = _eval_json("--model", str(tiny_run), *QUICK, "--device", "cpu", "--dtype", dtype)
    _check_results(report)
    assert report["results"]["all"]["episodes"] == 2
    ckpt = tiny_run / "checkpoints" / "iter_000001"
    assert report["model"] == {
        "given": str(tiny_run),
        "resolved": str((ckpt / "policy").resolve()),
        "run_dir": str(tiny_run.resolve()),
        "checkpoint": str(ckpt.resolve()),
        "iteration": 1,
    }
    cfg = report["config"]
    assert cfg["device"] == "cpu" and cfg["dtype"] == dtype
    assert cfg["env"] == "household" and cfg["split"] == "eval_out_of_distribution"
    assert cfg["manifest"] == "eval_out_of_distribution" and cfg["manifest_version"] >= 1
    assert cfg["tasks"] == 2 and cfg["task_limit"] == 2 and cfg["seeds"] == 1
    assert cfg["greedy"] is False and cfg["temperature"] == 0.4
    # the prompt settings come from the run's config.yaml (the tiny overrides)
    assert (cfg["max_turns"], cfg["max_new_tokens"], cfg["history_len"]) == (3, 12, 1)
    assert cfg["format"] == "plan_execute" and cfg["instructions"] is False
    assert cfg["options"]["split"] == "eval_out_of_distribution"
    assert report["hiper_version"] == __version__
    # the fields the viewer and earlier readers use are still there
    assert report["seeds"] == [0] and report["tasks"] == 2 and report["prompt"]["max_turns"] == 3
    assert set(report["timing"]) == {"load_s", "eval_s"}


def test_eval_defaults_to_the_runs_device_and_dtype(tiny_run: Path, tmp_path: Path):
    report = _eval_json("--model", str(tiny_run), *QUICK, "--greedy", "--out", str(tmp_path / "e"))
    assert (report["config"]["device"], report["config"]["dtype"]) == ("cpu", "float32")
    assert json.loads((tmp_path / "e" / "report.json").read_text()) == report
    plain = _eval_json("--model", str(tiny_run / "base_model"), *QUICK, "--greedy")
    assert plain["model"]["run_dir"] is None and plain["model"]["iteration"] is None
    assert plain["model"]["checkpoint"] is None
    assert (plain["config"]["device"], plain["config"]["dtype"]) == ("cpu", "float32")


def test_eval_a_checkpoint_folder_of_a_run(tiny_run: Path):
    ckpt = tiny_run / "checkpoints" / "iter_000000"
    report = _eval_json("--model", str(ckpt), *QUICK, "--greedy")
    assert report["model"]["iteration"] == 0
    assert report["model"]["resolved"] == str((ckpt / "policy").resolve())
    assert report["model"]["run_dir"] == str(tiny_run.resolve())
    assert report["config"]["history_len"] == 1  # the run's config, found from its checkpoint


def _fake_run(device: str, dtype: str):
    return SimpleNamespace(model=SimpleNamespace(device=device, dtype=dtype))


def test_default_device_and_dtype_rules():
    assert _eval_device(None, None, None) == ("cpu", "float32", None)
    assert _eval_device(None, None, _fake_run("cpu", "bfloat16")) == ("cpu", "bfloat16", None)
    assert _eval_device("cpu", None, _fake_run("cpu", "bfloat16"))[:2] == ("cpu", "bfloat16")
    assert _eval_device(None, "float16", _fake_run("cpu", "bfloat16"))[:2] == ("cpu", "float16")
    if not torch.cuda.is_available():  # a GPU run evaluated here: cpu in float32, with a note
        device, dtype, note = _eval_device(None, None, _fake_run("cuda", "bfloat16"))
        assert (device, dtype) == ("cpu", "float32")
        assert note is not None and "'cuda' is not available" in note
        assert _eval_device("cpu", None, _fake_run("cuda", "bfloat16")) == ("cpu", "float32", None)
    else:  # on the run's device, the run's dtype; elsewhere float32
        assert _eval_device(None, None, _fake_run("cuda", "bfloat16"))[:2] == ("cuda", "bfloat16")
        assert _eval_device("cpu", None, _fake_run("cuda", "bfloat16"))[:2] == ("cpu", "float32")


def _n_params(policy) -> int:
    """Every parameter the policy holds, its unregistered reference copy included."""
    return sum(p.numel() for p in policy.parameters()) + sum(
        p.numel() for ref in policy._ref for p in ref.parameters()
    )


def test_evaluation_loads_only_the_policy_with_the_same_results(tiny_run: Path):
    full = load_policy(resolve_model(tiny_run))  # what `hiper eval` loaded before issue 18
    assert full.critic_backbone is not None and full._ref and full.value_head is not None
    policy = load_eval_policy(tiny_run, device="cpu", dtype="float32")
    assert policy.critic == "separate"  # the mode it was trained with, but no critic loaded
    assert policy.critic_backbone is None and policy.value_head is None
    assert not policy._ref and not policy.has_reference and not policy.has_values
    lm = sum(p.numel() for p in policy.lm.parameters())
    assert _n_params(policy) == lm
    # full: policy + frozen reference copy + separate critic backbone (same size) + heads
    assert _n_params(full) == 3 * lm + sum(p.numel() for p in full.value_head.parameters())
    names = [n for n, _ in policy.named_parameters()]
    assert all(n.startswith("lm.") for n in names)
    for a, b in zip(policy.lm.state_dict().values(), full.lm.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="values=False"):
        policy.save(tiny_run.parent / "nope")
    assert not (tiny_run.parent / "nope").exists()

    # greedy evaluation: the same episodes, token for token, as with the full load
    kw = dict(
        options={"max_steps": 3, "task_types": ["pick_and_place_simple"]},
        max_turns=3,
        max_new_tokens=12,
        history_len=1,
        instructions=False,
        greedy=True,
        seeds=1,
    )
    ids = manifest_task_ids("household", "eval_out_of_distribution", 3, kw["options"])
    a = evaluate_policy(full, "household", ids, **kw)
    b = evaluate_policy(policy, "household", ids, **kw)
    turns = [[(t.response_text, t.reward) for t in tr.turns] for tr in a.runs[0]]
    assert turns == [[(t.response_text, t.reward) for t in tr.turns] for tr in b.runs[0]]
    assert all(tr.turns for tr in a.runs[0])
    for ta, tb in zip(a.runs[0], b.runs[0], strict=True):
        for x, y in zip(ta.turns, tb.turns, strict=True):
            assert list(x.response_ids) == list(y.response_ids)
    assert a.table() == b.table()


def test_locate_model_names_the_checkpoint(tiny_run: Path):
    source = locate_model(tiny_run / "checkpoints")
    assert source.iteration == 1 and source.run_dir == tiny_run.resolve()
    assert resolve_model(tiny_run) == source.resolved


def test_bad_device_and_dtype_are_one_line(tiny_run: Path):
    for args, expected in [
        (["--dtype", "fp8"], "error: Invalid value for --dtype: unknown dtype 'fp8'; expected one "
         "of float32, bfloat16, float16"),
        (["--device", "tpu9"], "error: Invalid value for --device: device must be a torch device "
         "such as cpu, cuda, cuda:1 or mps, got 'tpu9'"),
    ]:  # fmt: skip
        result = CliRunner().invoke(app, ["eval", "--model", str(tiny_run), *args])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == expected
    if not torch.cuda.is_available():
        result = CliRunner().invoke(app, ["eval", "--model", str(tiny_run), "--device", "cuda"])
        assert result.exit_code == 2, result.output
        expected = "error: --device: 'cuda' is not available on this machine; use cpu"
        assert result.stderr.strip() == expected


def test_eval_prints_no_third_party_noise(tiny_run: Path):
    """The real ``hiper`` process, stderr not a terminal: no progress bar at all (neither Hugging
    Face's "Loading weights" nor the evaluation's), no warnings; stdout is the JSON alone."""
    argv = ["eval", "--model", str(tiny_run), *QUICK, "--dtype", "bfloat16", "--json"]
    proc = run_hiper(argv)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    _check_results(json.loads(proc.stdout))
