"""Builders shared by the tests: Plan–Execute trajectories from compact specs, tiny run configs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from hiper.protocol import parse
from hiper.types import Trajectory, Turn


def response(switch: str, subgoal: str, action: str) -> str:
    return f"<switch>{switch}</switch>\n<subgoal>{subgoal}</subgoal>\n<action>{action}</action>"


def trajectory(
    switches: list[str],
    rewards: list[float],
    terminated: bool = True,
    task_id: str = "task",
    subgoals: list[str] | None = None,
    observations: list[str] | None = None,
    switch_probs: list[float] | None = None,
    texts: list[str] | None = None,
    success: bool = False,
) -> Trajectory:
    """A trajectory whose turn t writes ``switches[t]`` ("KEEP"/"SWITCH") and gets ``rewards[t]``."""
    n = len(switches)
    subgoals = subgoals or [f"goal {i}" for i in range(n)]
    turns = []
    for t in range(n):
        text = texts[t] if texts else response(switches[t], subgoals[t], f"act {t}")
        d = parse(text)
        turns.append(
            Turn(
                observation=observations[t] if observations else f"{task_id} obs {t}",
                response_text=text,
                decision=d,
                reward=rewards[t],
                terminated=terminated and t == n - 1,
                truncated=(not terminated) and t == n - 1,
                switch_prob=switch_probs[t] if switch_probs else None,
            )
        )
    return Trajectory(task_id=task_id, turns=turns, success=success)


def random_trajectories(rng: np.random.Generator, n: int, max_len: int = 9) -> list[Trajectory]:
    out = []
    for i in range(n):
        length = int(rng.integers(1, max_len + 1))
        switches = ["SWITCH" if rng.random() < 0.4 else "KEEP" for _ in range(length)]
        rewards = [float(x) for x in rng.normal(size=length).round(3)]
        out.append(
            trajectory(
                switches,
                rewards,
                terminated=bool(rng.random() < 0.6),
                task_id=f"t{i % 3}",
                switch_probs=[float(p) for p in rng.uniform(0.05, 0.95, size=length)],
            )
        )
    return out


def comparable(rows: list[dict]) -> list[dict]:
    """Metrics rows without wall-clock figures (what a resumed run must reproduce exactly)."""
    return [
        {
            k: v
            for k, v in r.items()
            if not k.startswith(("time/", "throughput/", "memory/")) and k != "wall_time"
        }
        for r in rows
    ]


#: Overrides of configs/quickstart.yaml that make a whole run (tiny model, SFT, PPO, evaluation)
#: take seconds.
TINY = [
    "model.tiny.vocab_size=600",
    "model.tiny.hidden_size=32",
    "model.tiny.num_layers=1",
    "model.tiny.num_heads=2",
    "model.tiny.corpus_episodes=12",
    "env.workers=2",
    "rollout.tasks_per_iteration=2",
    "rollout.group_size=1",
    "rollout.task_pool=null",
    "rollout.pool_screen=0",
    "env.eval_split=eval_out_of_distribution",
    "rollout.max_turns=3",
    "rollout.max_new_tokens=12",
    "sft.episodes=2",
    "sft.batch_rows=8",
    "sft.critic_steps=2",
    "sft.critic_episodes=2",
    "eval.extra_splits=[]",
    "eval.tasks=2",
    "eval.every=1",
    "ppo.micro_batch_rows=4",
    "logging.tensorboard=false",
]


def config(run_dir: Path, *extra: str):
    """The quickstart config with :data:`TINY` and ``extra`` overrides, run in ``run_dir``."""
    from hiper.train.config import load_train_config
    from tests.conftest import PROJECT_ROOT

    return load_train_config(
        str(PROJECT_ROOT / "configs" / "quickstart.yaml"), [f"run_dir={run_dir}", *TINY, *extra]
    )


#: Model output and an observation that would run script if a page rendered them as markup.
INJECTED_RESPONSE = '<img src=x onerror="window.__xss = 1; alert(1)">'
INJECTED_OBSERVATION = "<script>window.__xss = 2</script><b>bold?</b>"


def run_hiper(
    argv: list[str], timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``hiper ARGV`` in a real process (this checkout's sources first on its path; ``env``
    added to the environment), its output captured as text: for what only a real process shows
    (stderr not a terminal, exit codes, SIGKILL, torchrun)."""
    from tests.conftest import PROJECT_ROOT

    src = os.pathsep.join([str(PROJECT_ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "hiper.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": src, **(env or {})},
    )


def train_quickstart(
    run_dir: Path, *overrides: str, crash_at: str | None = None
) -> subprocess.CompletedProcess:
    """``hiper train configs/quickstart.yaml run_dir=RUN_DIR OVERRIDES`` in one thread per
    process (the thread count is part of what a seed reproduces), killed at ``crash_at``
    (``HIPER_CRASH_AT``) when given."""
    from tests.conftest import PROJECT_ROOT

    env = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    if crash_at:
        env["HIPER_CRASH_AT"] = crash_at
    quickstart = str(PROJECT_ROOT / "configs" / "quickstart.yaml")
    return run_hiper(["train", quickstart, f"run_dir={run_dir}", *overrides], 600, env)
