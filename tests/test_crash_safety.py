"""Crash-safe run folders: a run killed (SIGKILL, via HIPER_CRASH_AT) at each moment where a
half-written folder could be left behind is rerun to exactly the metrics of an uninterrupted run;
a damaged latest checkpoint falls back to the newest intact one; one process per run folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hiper.runs.checkpoints import CheckpointError, list_checkpoints, load_checkpoint
from hiper.runs.faults import POINTS
from hiper.runs.lock import RunLock, RunLockedError
from hiper.runs.log import read_jsonl
from hiper.train.loop import LOST, drop_lost
from hiper.types import Trajectory, Turn
from tests.conftest import PROJECT_ROOT
from tests.helpers import TINY, comparable, train_quickstart

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
#: a whole run in a few seconds: 2 iterations, 6 SFT steps, a mid-SFT checkpoint every 2
ARGS = [*TINY, "iterations=2", "eval.every=1", "sft.episodes=4", "sft.checkpoint_every=2"]


def train(run_dir: Path, *extra: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    return train_quickstart(run_dir, *ARGS, *extra, crash_at=crash_at)


def said(out: subprocess.CompletedProcess) -> str:
    """What the run printed, with line wrapping undone."""
    return " ".join((out.stdout + out.stderr).split())


def metrics(run_dir: Path) -> list[dict]:
    return comparable(read_jsonl(run_dir / "metrics.jsonl"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("crash") / "reference"
    done = train(run)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [r["iteration"] for r in metrics(run)] == [0, 1, 2]
    assert metrics(run)[0]["sft/steps"] >= 4  # enough steps for a mid-SFT checkpoint to matter
    return run


def killed(run_dir: Path, point: str, *extra: str) -> None:
    out = train(run_dir, *extra, crash_at=point)
    assert out.returncode == -signal.SIGKILL, (point, out.returncode, out.stderr[-2000:])


def same_run(run_dir: Path, reference: Path) -> None:
    assert metrics(run_dir) == metrics(reference)
    a = json.loads((run_dir / "summary.json").read_text())
    assert a == json.loads((reference / "summary.json").read_text())
    assert not list(run_dir.glob(".tmp-*")) and not list(run_dir.glob("checkpoints/.tmp-*"))


def test_every_declared_point_is_reached_by_the_code():
    sources = "".join(p.read_text() for p in (PROJECT_ROOT / "src/hiper").rglob("*.py"))
    for point in POINTS:
        assert f'crash_point("{point}")' in sources, point


def test_kill_while_the_base_model_is_written(reference, tmp_path):
    run = tmp_path / "run"
    killed(run, "base_model")
    # the model was complete but not yet renamed: no base_model/, only a hidden temporary
    assert not (run / "base_model").exists() and list(run.glob(".tmp-base_model-*"))
    done = train(run)  # a plain rerun: the folder has no checkpoint, so it starts clean
    assert done.returncode == 0, done.stderr[-2000:]
    same_run(run, reference)


def test_kill_while_checkpoint_0_is_written_then_resume(reference, tmp_path):
    run = tmp_path / "run"
    killed(run, "checkpoint", "sft.checkpoint_every=0")  # the first checkpoint: iteration 0
    assert list(run.glob("checkpoints/.tmp-iter_000000-*")) and not list_checkpoints(run)
    assert [r["iteration"] for r in read_jsonl(run / "metrics.jsonl")] == [0]
    sft_written = (run / "sft_model" / "sft.json").stat().st_mtime_ns
    done = train(run, "--resume")  # no checkpoint yet: from iteration 0, reusing the SFT model
    assert done.returncode == 0, done.stderr[-2000:]
    assert "holds no checkpoint yet" in said(done)
    assert (run / "sft_model" / "sft.json").stat().st_mtime_ns == sft_written  # not redone
    same_run(run, reference)


def test_kill_after_iteration_0_is_logged_then_fresh_start(reference, tmp_path):
    run = tmp_path / "run"
    killed(run, "iteration_logged")
    assert [r["iteration"] for r in read_jsonl(run / "metrics.jsonl")] == [0]
    assert not list_checkpoints(run)
    done = train(run)  # a fresh start is allowed (nothing to resume) and drops the stale row
    assert done.returncode == 0, done.stderr[-2000:]
    same_run(run, reference)


def test_kill_mid_sft_resumes_the_sft(reference, tmp_path):
    run = tmp_path / "run"
    killed(run, "sft_step@3")  # after step 3; the last mid-SFT checkpoint is step 2's
    assert [p.name for p in list_checkpoints(run / "sft")] == ["iter_000002"]
    assert not (run / "sft_model").exists() and not (run / "metrics.jsonl").stat().st_size
    done = train(run, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "SFT resumes after step 2" in said(done)
    assert not (run / "sft").exists()  # removed once the SFT model is written
    same_run(run, reference)


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    weights = run / "checkpoints/iter_000002/policy/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk or a bad copy
    with pytest.raises(CheckpointError, match=r"model.safetensors is 1000 bytes, \d+ bytes when"):
        load_checkpoint(run)
    assert load_checkpoint(run, fallback=True).iteration == 1
    done = train(run, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming from iter_000001 instead" in said(done)
    same_run(run, reference)


def test_one_process_per_run_folder(tmp_path):
    run = tmp_path / "run"
    with RunLock(run):
        out = train(run)
        assert out.returncode != 0 and f"pid {os.getpid()}" in said(out)
        assert "in use by another hiper process" in said(out)
        assert not (run / "config.yaml").exists()  # refused before touching the folder
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            RunLock(run).acquire()
    # a holder killed with SIGKILL leaves no stale lock: the kernel drops it
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from hiper.runs.lock import RunLock; "
         f"RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=ENV, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
        RunLock(run).acquire()
    holder.kill()
    holder.wait()
    with RunLock(run):
        pass


def _episode(truncation: str | None) -> Trajectory:
    info = {"truncation": truncation} if truncation else {}
    turn = Turn("obs", "<action>look</action>", None, 0.0, False, truncation is not None, info=info)
    return Trajectory("t", [turn], "x")


def test_episodes_of_lost_workers_leave_the_update():
    trajs = [_episode(None), _episode("worker_lost"), _episode("max_turns"), _episode(None)]
    kept, lost = drop_lost(trajs, keep=False)
    assert len(kept) == 3 and lost == 1
    assert (
        all(t is u for t, u in zip(kept, [trajs[0], trajs[2], trajs[3]], strict=True))
        and "worker_lost" in LOST
    )
    kept, lost = drop_lost(trajs, keep=True)
    assert len(kept) == 4 and lost == 1


@pytest.mark.parametrize("keep", [False, True])
def test_a_run_learns_only_from_episodes_whose_worker_lived(tmp_path, keep):
    """Real subprocess workers that die mid-episode (tests/crashy_env.py: even task seeds, at
    step 2): those episodes leave the update and are counted; the run goes on. With
    rollout.keep_lost_episodes they enter the update as the truncated episodes they are."""
    import tests.crashy_env  # noqa: F401  (registers household-crashy)
    from hiper.train.loop import Trainer
    from tests.helpers import config

    cfg = config(
        tmp_path / "run",
        "iterations=2",
        "env.name=household-crashy",
        "env.options={}",
        "env.backend=subprocess",
        "rollout.task_pool=2",
        "env.eval_split=training_tasks",
        f"rollout.keep_lost_episodes={str(keep).lower()}",
    )
    Trainer(cfg).run()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    # the value pre-training's 2 episodes (sft.critic_episodes) are the pool's two tasks
    assert rows[0]["critic_pretrain/episodes"] == (2.0 if keep else 1.0)
    for r in rows[1:]:  # 2 tasks per iteration, seeds base + 0 (even: lost) and base + 1
        assert r["train/lost_episodes"] == 1.0
        # the surviving episode's 3 turns (max_turns), plus the lost one's 2 when kept
        assert r["train/turns"] == (5.0 if keep else 3.0)
