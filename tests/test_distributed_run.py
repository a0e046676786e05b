"""Whole runs across processes (issue 17): ``hiper train --nproc 2`` (torchrun, gloo on the CPU)
gives the one-process run's metrics, and a 2-process run killed in the middle of an iteration
resumes in one process exactly where the uninterrupted 2-process run went.

A run's episodes depend on ``rollout.shards``, never on the number of processes; the update is
the one-process update up to float summation order (``tests/test_distributed.py``). So what the
rollouts and evaluations measure must agree exactly, and the losses to float tolerance.
"""

from __future__ import annotations

import math
import signal
import subprocess
from pathlib import Path

from hiper.runs.checkpoints import list_checkpoints
from hiper.runs.log import read_jsonl
from tests.helpers import TINY, comparable, train_quickstart

#: 3 iterations of 4 tasks in 2 shards (2 episodes each), a checkpoint every iteration
ARGS = [*TINY, "iterations=3", "rollout.shards=2", "rollout.tasks_per_iteration=4"]
#: what the episodes decide: compared exactly
EXACT = ("train/", "eval/")


def train(run_dir: Path, *extra: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    return train_quickstart(run_dir, *ARGS, *extra, crash_at=crash_at)


def rows(run_dir: Path) -> list[dict]:
    return comparable(read_jsonl(run_dir / "metrics.jsonl"))


def assert_same_run(a: list[dict], b: list[dict]) -> int:
    """The same metrics: episode figures exactly, the rest to float tolerance (the gradients of
    2 ranks are summed in another order). Returns how many values differ at all."""
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b]
    inexact = 0
    for ra, rb in zip(a, b, strict=True):
        assert ra.keys() == rb.keys(), (ra["iteration"], set(ra) ^ set(rb))
        for k, x in ra.items():
            y = rb[k]
            if k.startswith(EXACT) or not isinstance(x, float):
                assert x == y, (ra["iteration"], k, x, y)
            else:
                assert math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6), (ra["iteration"], k, x, y)
                inexact += x != y
    return inexact


def test_two_processes_train_as_one_and_resume_in_one(tmp_path):
    two, one, killed = tmp_path / "two", tmp_path / "one", tmp_path / "killed"

    done = train(two, "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["iteration"] for r in rows(two)] == [0, 1, 2, 3]
    assert rows(two)[1]["train/turns"] > 0 and len(read_jsonl(two / "trajectories.jsonl")) > 0

    again = train(two, "--nproc", "2")  # rank 0's user error: its one line, no launcher noise
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"error: run directory {str(two)!r} already holds checkpoints; pass --resume to continue "
        "it or choose another run_dir"
    ]

    done = train(one)  # the same config in one process: the same run
    assert done.returncode == 0, done.stderr[-3000:]
    differ = assert_same_run(rows(one), rows(two))

    # killed (every rank) after iteration 3's episodes were played, before its update
    out = train(killed, "--nproc", "2", crash_at="rollout_done@3")
    assert out.returncode == 128 + signal.SIGKILL, (out.returncode, out.stderr[-2000:])
    assert out.stderr.strip().splitlines()[-1] == "error: process 0 of 2 was killed by SIGKILL"
    assert [p.name for p in list_checkpoints(killed)][-1] == "iter_000002"
    assert [r["iteration"] for r in rows(killed)] == [0, 1, 2]
    assert not (killed / "summary.json").exists()

    done = train(killed, "--resume")  # one process takes over the 2-process run
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(rows(killed), rows(two))
    print(f"1 vs 2 processes: {differ} values differ, all within float tolerance")

    # model.fsdp: the RL iterations sharded (FSDP2); generation, evaluation and checkpoints
    # gather the whole model. Its checkpoints are one process's, and the run changes hands
    # both ways: 2 sharded processes -> 1 process -> 2 sharded processes.
    fsdp = tmp_path / "fsdp"
    out = train(fsdp, "--nproc", "2", "model.fsdp=true", crash_at="rollout_done@2")
    assert out.returncode == 128 + signal.SIGKILL, (out.returncode, out.stderr[-2000:])
    sharded_save = list_checkpoints(fsdp)[-1] / "policy" / "model.safetensors"
    one_save = list_checkpoints(one)[-1] / "policy" / "model.safetensors"
    assert sharded_save.parent.parent.name == "iter_000001"
    assert safetensor_keys(sharded_save) == safetensor_keys(one_save)  # tied weights once
    # (the crash point counts this process's rollouts: iteration 2's, then 3's)
    out = train(fsdp, "model.fsdp=true", "--resume", crash_at="rollout_done@2")
    assert out.returncode == -signal.SIGKILL, (out.returncode, out.stderr[-2000:])
    assert [p.name for p in list_checkpoints(fsdp)][-1] == "iter_000002"
    done = train(fsdp, "--nproc", "2", "model.fsdp=true", "--resume")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "view tensor" not in done.stderr  # FSDP2's warning about the value head's output
    differ = assert_same_run(rows(fsdp), rows(one))
    print(f"FSDP2 vs 1 process: {differ} values differ, all within float tolerance")


def test_lora_model_shards_as_one_process(tmp_path):
    """model.fsdp with a LoRA policy: peft's wrappers call the sharded transformers model, so
    generation and the update run sharded, and the checkpoint's adapter is one process's."""
    import torch
    from safetensors.torch import load_file

    lora = ["model.lora={r: 4, alpha: 8.0, dropout: 0.0, target_modules: all-linear}"]
    runs = {"fsdp": ["--nproc", "2", "model.fsdp=true"], "one": []}
    for name, extra in runs.items():
        done = train(tmp_path / name, *lora, "iterations=1", *extra)
        assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(rows(tmp_path / "fsdp"), rows(tmp_path / "one"))
    adapters = [
        load_file(list_checkpoints(tmp_path / name)[-1] / "policy" / "adapter_model.safetensors")
        for name in runs
    ]
    assert adapters[0].keys() == adapters[1].keys() and len(adapters[0]) > 0
    for k, x in adapters[0].items():
        assert torch.allclose(x, adapters[1][k], atol=1e-6), k


def safetensor_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return sorted(f.keys())


def test_shards_must_split_between_the_processes(tmp_path):
    out = train(tmp_path / "run", "--nproc", "2", "rollout.shards=3")
    assert out.returncode == 2
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: rollout.shards=3 cannot be split between 2 processes")
    assert "multiple of 2" in line
    assert not (tmp_path / "run").exists()  # nothing was started


def test_ray_environment_workers_under_two_processes(tmp_path):
    """``env.backend: ray`` under torchrun: each rank starts its own pool of 3 actors (6 on this
    2-core machine: they reserve no core, so none waits for one) and the run is the in-process
    one-process run, episode for episode."""
    small = ["iterations=1", "env.workers=3"]
    done = train(tmp_path / "ray", *small, "env.backend=ray", "--nproc", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    done = train(tmp_path / "inprocess", *small)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(rows(tmp_path / "ray"), rows(tmp_path / "inprocess"))
    assert rows(tmp_path / "ray")[1]["train/lost_episodes"] == 0


def test_steps_too_small_to_split_are_named():
    from hiper.train.loop import idle_ranks
    from tests.helpers import config

    steps = ["sft.batch_rows=16", "sft.micro_batch_rows=16", "ppo.micro_batch_rows=16"]
    cfg = config(Path("unused"), *steps, "ppo.mini_batch_rows=64")
    assert idle_ranks(cfg, 1) == []
    (line,) = idle_ranks(cfg, 2)  # ppo: 64-row mini-batches in 4 micro-batches split fine
    assert line.startswith("sft.batch_rows=16 in micro-batches of 16 rows is fewer")
    assert line.endswith("set sft.micro_batch_rows to at most 8")
    assert len(idle_ranks(cfg, 8)) == 2  # and 4 PPO micro-batches for 8 processes
