"""The whole pipeline end to end with a tiny model: household, real ALFWorld games, kill + resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hiper.config import ConfigError
from hiper.envs.base import TASK_TYPES
from hiper.runs.log import read_jsonl
from hiper.runs.records import trajectory_from_dict
from hiper.train.config import load_train_config
from hiper.train.loop import Trainer, screen_tasks, training_seeds
from tests.conftest import PROJECT_ROOT, shared_data_path
from tests.helpers import TINY, comparable, config


def test_household_pipeline_end_to_end(tmp_path):
    cfg = config(tmp_path / "run", "iterations=2")
    out = Trainer(cfg).run()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    assert rows[0]["sft/loss_last"] < rows[0]["sft/loss_first"]
    # the critic was pre-trained on the returns of 2 episodes the SFT policy played
    assert rows[0]["critic_pretrain/episodes"] == 2.0
    assert 0.0 <= rows[0]["critic_pretrain/policy_success"] <= 1.0
    assert rows[0]["critic_pretrain/loss_last"] >= 0.0
    for key in (
        "train/success",
        "train/invalid_rate",
        "ppo/kl",
        "ppo/entropy",
        "ppo/clip_frac",
        "ppo/explained_var/high",
        "ppo/explained_var/low",
        "adv/low/std",
        "adv/high/std",
        "eval/success",
        "time/rollout_s",
    ):
        assert key in rows[1], key
    # throughput and memory: SFT tokens/s once, generation/update tokens/s and the process's
    # peak memory every iteration (the peak never falls)
    assert rows[0]["throughput/sft_tokens_per_s"] > 0
    for r in rows[1:]:
        assert r["throughput/gen_tokens_per_s"] > 0 and r["throughput/update_tokens_per_s"] > 0
    assert 0.1 < rows[1]["memory/peak_gb"] <= rows[2]["memory/peak_gb"] < 64
    # the KL reference is the SFT model: the first PPO step starts at KL ~ 0
    assert rows[1]["ppo/kl"] < 1e-3
    assert (tmp_path / "run" / "sft_model" / "config.json").is_file()
    assert out["evals"][0][0] == 0 and len(out["evals"]) == 3
    # the summary's extra entries are evaluation splits only (TINY runs none besides the main one)
    assert set(out) == {
        "last",
        "evals",
        "eval_success_start",
        "eval_success_end",
        "eval_success_gain_pp",
    }
    lines = read_jsonl(tmp_path / "run" / "trajectories.jsonl")
    train = [ln for ln in lines if ln["split"] == "train"]
    assert len(train) == 4 and {ln["iteration"] for ln in train} == {1, 2}
    tr = trajectory_from_dict(train[0])
    assert "adv_action" in tr.turns[0].info and tr.turns[0].token_spans is not None
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(cfg).run()
    # `hiper eval` on the run directory reuses the run's prompt settings and env options, so it
    # reproduces the trainer's last (greedy) evaluation of the final checkpoint
    from typer.testing import CliRunner

    from hiper.cli import app

    once = ["--seeds", "1", "--greedy", "--tasks", "2", "--json"]
    res = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "run"), *once])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{") :])
    assert report["tasks"] == 2
    assert report["results"]["all"]["success_mean"] == rows[-1]["eval/success"]
    # a plain model folder has no config: the same prompt settings given as options reproduce it
    # (the quickstart's model is trained without instructions and sees one step of history)
    from hiper.eval import resolve_model

    plain = [
        "eval",
        "--model",
        str(resolve_model(str(tmp_path / "run"))),
        *once,
        "--no-instructions",
        "--format",
        "plan_execute",
        "--history-len",
        str(cfg.rollout.history_len),
        "--max-turns",
        str(cfg.rollout.max_turns),
        "--max-new-tokens",
        str(cfg.rollout.max_new_tokens),
        *[
            f"--option={k}={','.join(v) if isinstance(v, list) else v}"
            for k, v in cfg.env.options.items()
        ],
    ]
    res = CliRunner().invoke(app, plain)
    assert res.exit_code == 0, res.output
    again = json.loads(res.output[res.output.index("{") :])
    assert again["results"] == report["results"]
    assert again["prompt"] == report["prompt"]
    assert report["prompt"] == {
        "format": "plan_execute",
        "instructions": False,
        "history_len": cfg.rollout.history_len,
        "max_turns": cfg.rollout.max_turns,
        "max_new_tokens": cfg.rollout.max_new_tokens,
    }
    # without the flag a plain folder gets the full prompts (instructions on)
    res = CliRunner().invoke(app, [a for a in plain if a != "--no-instructions"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output[res.output.index("{") :])["prompt"]["instructions"] is True
    res = CliRunner().invoke(app, [*plain, "--format", "prose"])
    assert res.exit_code != 0 and "unknown format 'prose'" in res.output


def test_critic_warmup_leaves_the_policy_at_its_start(tmp_path):
    from hiper.eval import resolve_model
    from hiper.models.policy import load_policy

    cfg = config(tmp_path / "run", "iterations=1", "critic_warmup=1", "sft.episodes=0")
    Trainer(cfg).run()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[-1]["ppo/grad_norm/actor"] == 0.0 and rows[-1]["ppo/grad_norm/critic"] > 0
    start = load_policy(tmp_path / "run" / "base_model", heads=("high", "low"))  # HAE, gain
    end = load_policy(resolve_model(str(tmp_path / "run")))
    for (name, a), b in zip(
        start.lm.state_dict().items(), end.lm.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    with pytest.raises((ValueError, ConfigError), match="critic_warmup: must be >= 0"):
        config(tmp_path, "critic_warmup=-1")


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match=r"ppo.actor_lr: expected a number"):
        config(tmp_path, "ppo.actor_lr=fast")
    with pytest.raises(ConfigError, match=r"algo.estimator: unknown estimator 'ppo'"):
        config(tmp_path, "algo.estimator=ppo")
    with pytest.raises(ConfigError, match=r"algo.config"):
        config(tmp_path, "algo.config.lam_hi=0.5")


@pytest.mark.parametrize("estimator", ["gae", "grpo", "gigpo"])
def test_flat_baselines_run(tmp_path, estimator):
    extra = [
        "iterations=1",
        f"algo.estimator={estimator}",
        "algo.config={}",
        "rollout.format=react",  # SFT on ReAct demonstrations, then PPO with the flat prompt
        "eval.tasks=1",
    ]
    if estimator != "gae":
        extra.append("rollout.group_size=2")
    Trainer(config(tmp_path / "run", *extra)).run()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[0]["sft/examples"] > 0
    assert rows[-1]["iteration"] == 1 and "ppo/pg_loss" in rows[-1]


@pytest.mark.parametrize(
    "path", sorted((PROJECT_ROOT / "configs" / "baselines").glob("*.yaml")), ids=lambda p: p.stem
)
def test_baseline_presets_are_the_quickstart_but_for_estimator_and_prompt(path):
    """A baseline preset differs from configs/quickstart.yaml only in its estimator, the flat
    prompt and the group structure, with the same episodes per iteration."""
    from hiper.config import to_dict

    quick = to_dict(load_train_config(str(PROJECT_ROOT / "configs" / "quickstart.yaml")))
    base = to_dict(load_train_config(str(path)))
    r = base["rollout"]
    assert r["format"] == "react" and r["tasks_per_iteration"] * r["group_size"] == 16
    assert base["algo"]["estimator"] == path.stem.removeprefix("household-")
    for d in (quick, base):
        for key in ("run_dir", "algo"):
            d.pop(key)
        for key in ("format", "tasks_per_iteration", "group_size"):
            d["rollout"].pop(key)
    assert base == quick


def test_real_alfworld_games_for_a_few_iterations(tmp_path):
    pytest.importorskip("textworld")
    from hiper.envs.alfworld import ensure_alfworld_data

    data = ensure_alfworld_data(
        shared_data_path("alfworld", "json_2.1.1.tar.gz"), splits=("valid_seen", "valid_unseen")
    )
    cfg = config(
        tmp_path / "run",
        "iterations=2",
        "env.name=alfworld",
        f"env.options={{data_dir: '{data}'}}",
        "env.train_split=eval_in_distribution",
        "env.eval_split=eval_out_of_distribution",
        "eval.every=2",
        "sft.episodes=1",
    )
    Trainer(cfg).run()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    lines = [
        ln for ln in read_jsonl(tmp_path / "run" / "trajectories.jsonl") if ln["split"] == "train"
    ]
    tr = trajectory_from_dict(lines[0])
    assert tr.task_type in TASK_TYPES
    assert "You are in the middle of a room" in tr.turns[0].observation


def _cli(run_dir: Path, *extra: str) -> list[str]:
    args = [f"run_dir={run_dir}", *TINY, "iterations=4", "eval.every=2", *extra]
    return [
        sys.executable,
        "-m",
        "hiper.cli",
        "train",
        str(PROJECT_ROOT / "configs" / "quickstart.yaml"),
        *args,
    ]


def test_killed_run_resumes_to_the_same_metrics(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    ref = tmp_path / "ref"
    subprocess.run(
        _cli(ref), check=True, env=env, capture_output=True, cwd=PROJECT_ROOT, timeout=600
    )
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _cli(run), env=env, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    metrics = run / "metrics.jsonl"
    deadline = time.time() + 600
    while time.time() < deadline:  # wait until iteration 2 is under way, then kill -9
        if metrics.exists() and any(r["iteration"] >= 1 for r in read_jsonl(metrics)):
            time.sleep(0.5)
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = max((r["iteration"] for r in read_jsonl(metrics)), default=-1)
    assert killed_at < 4, "the run finished before it could be killed"
    subprocess.run(
        _cli(run, "--resume"),
        check=True,
        env=env,
        capture_output=True,
        cwd=PROJECT_ROOT,
        timeout=600,
    )
    a = comparable(read_jsonl(ref / "metrics.jsonl"))
    b = comparable(read_jsonl(metrics))
    assert [r["iteration"] for r in b] == [0, 1, 2, 3, 4]
    assert a == b
    assert (
        json.loads((run / "summary.json").read_text())["evals"]
        == json.loads((ref / "summary.json").read_text())["evals"]
    )


def test_webshop_pipeline_runs(tmp_path):
    data = shared_data_path("webshop")
    nltk = shared_data_path("nltk")
    cfg = config(
        tmp_path / "run",
        "iterations=1",
        "env.name=webshop",
        f"env.options={{data_dir: '{data}', nltk_data: '{nltk}', max_steps: 4}}",
        "env.eval_split=eval",
        "rollout.max_turns=4",
    )
    Trainer(cfg).run()
    lines = [
        ln for ln in read_jsonl(tmp_path / "run" / "trajectories.jsonl") if ln["split"] == "train"
    ]
    tr = trajectory_from_dict(lines[0])
    assert "[SEP]" in tr.turns[0].observation and tr.info["task"]
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1] and "eval/score" in rows[1]


def test_manifest_ids_follow_the_configured_task_types():
    from hiper.eval import manifest_task_ids

    all_ids = manifest_task_ids("household", "eval_out_of_distribution")
    opts = {"split": "eval_out_of_distribution", "task_types": ["look_at_obj_in_light"]}
    some = manifest_task_ids("household", "eval_out_of_distribution", None, opts)
    assert 0 < len(some) < len(all_ids) and set(some) <= set(all_ids)
    assert all("/look_at_obj_in_light/" in t for t in some)
    assert manifest_task_ids("household", "eval_out_of_distribution", 3, opts) == some[:3]


def test_episode_metrics_hand_computed():
    from hiper.train.loop import episode_metrics
    from hiper.types import KEEP, SWITCH, Decision, Trajectory, Turn

    def turn(switch, valid=True, **info):
        d = Decision("plan_execute", switch, "sg", "look", valid, "" if valid else "bad")
        return Turn("obs", "text", d, info=info)

    # chain of 2: 3 turns, one SWITCH after turn 0, ends with 1 of 2 subtasks done
    a = Trajectory(
        "t/a",
        [turn(None), turn(SWITCH), turn(KEEP, subtasks_done=1, subtasks=2)],
        task_type="chain2",
    )
    # chain of 2, won: 1 turn, 2 of 2 done; one invalid turn
    b = Trajectory(
        "t/b", [turn(None, valid=False, subtasks_done=2, subtasks=2)], "chain2", success=True
    )
    m = episode_metrics([a, b], "eval")
    assert m["eval/success"] == 0.5 and m["eval/success/chain2"] == 0.5
    assert m["eval/episode_length"] == 2.0
    assert m["eval/invalid_rate"] == pytest.approx(1 / 4)
    assert m["eval/switch_rate"] == 0.5  # decisions: turns 1 and 2 of a
    assert m["eval/segment_length"] == pytest.approx(4 / 3)  # 4 turns, segments 2 + 1
    assert m["eval/subtask_progress"] == pytest.approx((0.5 + 1.0) / 2)
    # an environment without subtasks (or one episode without the count): no progress figure
    c = Trajectory("t/c", [turn(None)], "pick")
    assert "eval/subtask_progress" not in episode_metrics([a, c], "eval")
    assert episode_metrics([], "eval") == {}


def test_task_pool_training_tasks_evaluation_and_extra_splits(tmp_path):
    """A fixed pool of 3 training tasks played in turn, evaluated with fresh sampling seeds as
    the main evaluation, and two more splits at the start and the end only."""
    cfg = config(
        tmp_path / "run",
        "iterations=2",
        "rollout.task_pool=3",
        "rollout.tasks_per_iteration=2",
        "rollout.group_size=2",
        "env.eval_split=training_tasks",
        "eval.tasks=null",
        "eval.every=0",
        "eval.extra_splits=[eval_in_distribution,eval_out_of_distribution]",
    )
    out = Trainer(cfg).run()
    lines = read_jsonl(tmp_path / "run" / "trajectories.jsonl")
    train = [ln["task_id"] for ln in lines if ln["split"] == "train"]
    evals = [ln for ln in lines if ln["split"] == "eval"]
    pool = [f"household/train/pick_and_place_simple/{s}" for s in range(3)]
    # iteration 1 plays pool tasks 0, 1; iteration 2 plays 2, 0 (in turn, modulo the pool)
    assert train == [pool[i] for i in (0, 0, 1, 1, 2, 2, 0, 0)]
    assert sorted({ln["task_id"] for ln in evals}) == pool  # the main evaluation is the pool
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    for split in ("eval_in_distribution", "eval_out_of_distribution"):
        assert [r["iteration"] for r in rows if f"{split}/success" in r] == [0, 2]
        assert out[split]["start"] == rows[0][f"{split}/success"]
    assert [r["iteration"] for r in rows if "eval/success" in r] == [0, 2]
    with pytest.raises(ConfigError, match="task_pool"):
        config(tmp_path / "x", "env.eval_split=training_tasks", "rollout.task_pool=null")


def test_screen_tasks_keeps_the_first_winners_in_seed_order():
    wins = {100: 0, 101: 2, 102: 0, 103: 1, 104: 5, 105: 1, 106: 0}
    calls: list[list[int]] = []

    def wins_of(seeds):
        calls.append(seeds)
        return [wins[s] for s in seeds]

    kept, tried = screen_tasks(100, wins_of, keep=2, per_call=2, limit=20)
    assert kept == [101, 103] and calls == [[100, 101], [102, 103]]
    assert tried == {100: 0, 101: 2, 102: 0, 103: 1}
    # a call may bring more winners than needed: only the first ones are kept
    calls.clear()
    kept, tried = screen_tasks(100, wins_of, keep=3, per_call=3, limit=20)
    assert kept == [101, 103, 104] and calls == [[100, 101, 102], [103, 104, 105]]
    assert tried[105] == 1
    # the limit caps the candidates tried, the last call included
    calls.clear()
    kept, tried = screen_tasks(100, wins_of, keep=4, per_call=3, limit=5)
    assert kept == [101, 103, 104] and calls == [[100, 101, 102], [103, 104]]
    assert list(tried) == [100, 101, 102, 103, 104]
    # min_wins=2: a task won once (103, 105) is passed over
    kept, tried = screen_tasks(100, wins_of, keep=2, per_call=2, limit=20, min_wins=2)
    assert kept == [101, 104] and list(tried) == [100, 101, 102, 103, 104, 105]


def test_training_seeds_of_a_screened_pool(tmp_path):
    cfg = config(tmp_path, "rollout.task_pool=3", "rollout.tasks_per_iteration=2")
    base = [cfg.seed * 1_000_000 + j for j in range(3)]
    assert training_seeds(cfg, None) == base
    assert training_seeds(cfg, None, [7, 9, 11]) == [7, 9, 11]
    # iteration i plays pool tasks (i-1)*k .. (i-1)*k+k-1 mod N, whatever the pool's seeds
    assert training_seeds(cfg, 2, [7, 9, 11]) == [11, 7]
    assert training_seeds(cfg, 2) == [base[2], base[0]]
    with pytest.raises(ConfigError, match=r"rollout.pool_screen: must be an integer >= 0, got -1"):
        config(tmp_path, "rollout.task_pool=3", "rollout.pool_screen=-1")
    with pytest.raises(ConfigError, match=r"set task_pool too"):
        config(tmp_path, "rollout.pool_screen=2")
    with pytest.raises(
        ConfigError, match=r"rollout.pool_min_wins: must be an integer in 1..pool_screen"
    ):
        config(tmp_path, "rollout.task_pool=3", "rollout.pool_screen=2", "rollout.pool_min_wins=3")
    with pytest.raises(ConfigError, match=r"rollout.pool_min_wins: must be an integer >= 1, got 0"):
        config(tmp_path, "rollout.pool_min_wins=0")


def test_pool_screening_refuses_a_policy_that_never_wins(tmp_path):
    """Two turns cannot win a household task (the expert needs 4 or more steps): screening tries
    MAX_CANDIDATES_PER_TASK candidates per pool task, then `hiper train` says what to change in
    one line (no traceback) and writes no pool."""
    from typer.testing import CliRunner

    from hiper.cli import app

    extra = ["rollout.task_pool=1", "rollout.pool_screen=2", "rollout.max_turns=2"]
    args = ["train", str(PROJECT_ROOT / "configs" / "quickstart.yaml"), f"run_dir={tmp_path}"]
    res = CliRunner().invoke(app, [*args, *TINY, *extra, "sft.critic_steps=0"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    line = next(ln for ln in res.output.splitlines() if "error:" in ln)
    assert "won only 0 of the first 8 training tasks 2+ times in 2 episodes" in " ".join(
        res.output.split()
    ), line
    assert "rollout.pool_screen=0" in " ".join(res.output.split())
    assert not (tmp_path / "pool.json").exists()


def test_a_screened_pool_is_read_back_on_resume(tmp_path):
    """The pool a run screened is in pool.json; a resumed run trains on it (and refuses to
    resume without it)."""
    run = tmp_path / "run"
    first = ["rollout.task_pool=2", "rollout.tasks_per_iteration=2", "eval.every=0"]
    Trainer(config(run, "iterations=1", *first)).run()
    resumed = config(run, "iterations=2", *first, "rollout.pool_screen=4")
    with pytest.raises(FileNotFoundError, match=r"pool.json' is missing: it holds the screened"):
        Trainer(resumed, resume=True).run()
    seeds = [cfg_seed * 1_000_000 + j for cfg_seed in [resumed.seed] for j in (5, 8)]
    (run / "pool.json").write_text(json.dumps({"seeds": seeds, "pool_screen": 4, "wins": {}}))
    Trainer(resumed, resume=True).run()
    lines = read_jsonl(run / "trajectories.jsonl")
    played = [ln["task_id"] for ln in lines if ln["split"] == "train" and ln["iteration"] == 2]
    assert played == [f"household/train/pick_and_place_simple/{s}" for s in seeds]
