"""Evaluation on an environment's fixed task manifest, reported like the paper's tables:
mean +- std over sampling seeds of success (and score), overall and per task type.

:func:`load_eval_policy` loads what an evaluation needs of a model, on any device and in any
dtype: the policy alone (no frozen reference copy, no value heads, no critic backbone);
:func:`locate_model` says where a ``--model`` path leads (run folder, checkpoint, iteration)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hiper.engines.hf import HFEngine, chat_prompt_ids
from hiper.envs.base import load_manifest, make_env
from hiper.envs.pool import EnvPool
from hiper.models.named import NAMED_MODELS, resolve_model_path
from hiper.rollout import RolloutConfig, Task, rollout
from hiper.seeds import eval_generate_seed
from hiper.types import Trajectory


@dataclass
class EvalReport:
    env: str
    split: str
    tasks: int
    seeds: list[int]
    greedy: bool
    temperature: float
    runs: list[list[Trajectory]] = field(default_factory=list)

    def _per_seed(self, key) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for trajs in self.runs:
            groups: dict[str, list[float]] = {"all": []}
            for tr in trajs:
                v = float(key(tr))
                groups["all"].append(v)
                if tr.task_type:
                    groups.setdefault(tr.task_type, []).append(v)
            for k, vs in groups.items():
                out.setdefault(k, []).append(float(np.mean(vs)) if vs else 0.0)
        return out

    def table(self) -> dict[str, dict[str, float]]:
        """{task type or "all": {success_mean, success_std, score_mean, score_std, episodes}}."""
        succ = self._per_seed(lambda tr: tr.success)
        score = self._per_seed(lambda tr: tr.score)
        counts: dict[str, int] = {"all": len(self.runs[0]) if self.runs else 0}
        for tr in self.runs[0] if self.runs else []:
            if tr.task_type:
                counts[tr.task_type] = counts.get(tr.task_type, 0) + 1
        return {
            k: {
                "success_mean": float(np.mean(v)),
                "success_std": float(np.std(v)),
                "score_mean": float(np.mean(score[k])),
                "score_std": float(np.std(score[k])),
                "episodes": counts.get(k, 0),  # tasks per seed (episodes = this x seeds)
            }
            for k, v in succ.items()
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "split": self.split,
            "tasks": self.tasks,
            "seeds": self.seeds,
            "greedy": self.greedy,
            "temperature": self.temperature,
            "results": self.table(),
        }


def manifest_task_ids(
    env: str, manifest: str, limit: int | None = None, options: dict[str, Any] | None = None
) -> list[str]:
    """The manifest's task ids; when ``options`` restrict ``task_types``, only tasks of those
    types (read from a reset of each task), then the first ``limit``."""
    ids = list(load_manifest(env, manifest).task_ids)
    types = (options or {}).get("task_types")
    if types:
        probe = make_env(env, **options)
        ids = [t for t in ids if probe.reset(task_id=t).info.get("task_type") in set(types)]
        probe.close()
    return ids[:limit] if limit else ids


def evaluate_policy(
    policy,
    env: str,
    task_ids: list[str],
    *,
    options: dict[str, Any] | None = None,
    split: str = "",
    seeds: int = 1,
    greedy: bool = True,
    temperature: float = 0.4,
    max_turns: int = 50,
    max_new_tokens: int = 64,
    history_len: int = 2,
    format: str = "plan_execute",
    instructions: bool = True,
    workers: int = 16,
    backend: str = "inprocess",
    pool: EnvPool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Play every task of ``task_ids`` once per seed with ``policy`` (a ``PolicyModel``; only
    its ``lm`` and ``tokenizer`` are used, see :func:`load_eval_policy`).

    ``progress(done, total)``: called with ``(0, total)`` first, then each time an episode ends
    (``total = len(task_ids) * seeds``)."""
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    options = dict(options or {})
    probe = make_env(env, **options)
    family = probe.family  # which prompt template family the environment uses
    probe.close()
    engine = HFEngine(
        policy.lm, policy.tokenizer, max_new_tokens=max_new_tokens, temperature=temperature
    )
    own = pool is None
    pool = pool or EnvPool(
        env, min(workers, max(len(task_ids) * seeds, 1)), backend=backend, options=options
    )
    report = EvalReport(env, split, len(task_ids), list(range(seeds)), greedy, temperature)
    total = len(task_ids) * seeds
    done = 0

    def episode_done() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    try:
        policy.eval()
        # all (seed, task) episodes in one rollout: waves of up to ``pool.n`` episodes share
        # each generate call (seed after seed, a 4-task pool was generated 4 prompts at a time)
        calls = iter(range(10**9))
        trajs = rollout(
            pool,
            lambda p: engine.generate(p, greedy=greedy, seed=eval_generate_seed(next(calls))),
            lambda text: chat_prompt_ids(policy.tokenizer, text),
            [Task(task_id=t) for _ in range(seeds) for t in task_ids],
            family,
            RolloutConfig(
                max_turns=max_turns,
                history_len=history_len,
                format=format,
                instructions=instructions,
            ),
            on_episode_done=episode_done,
        )
        n = len(task_ids)
        report.runs.extend(trajs[s * n : (s + 1) * n] for s in range(seeds))  # seed s's episodes
    finally:
        if own:
            pool.close()
    return report


@dataclass(frozen=True)
class ModelSource:
    """Where a ``--model`` path leads (:func:`locate_model`)."""

    given: str  # the path or name as given
    resolved: Path  # the folder the policy is loaded from
    run_dir: Path | None = None  # the run folder (its config.yaml) the model comes from
    checkpoint: Path | None = None  # the iter_* checkpoint folder, for a run or checkpoint
    iteration: int | None = None  # that checkpoint's iteration

    def to_dict(self) -> dict[str, Any]:
        def text(p: Path | None) -> str | None:
            return str(p) if p is not None else None

        return {
            "given": self.given,
            "resolved": str(self.resolved),
            "run_dir": text(self.run_dir),
            "checkpoint": text(self.checkpoint),
            "iteration": self.iteration,
        }


def run_folder(path: str | os.PathLike) -> Path | None:
    """The run folder that ``path`` is or belongs to: ``path`` itself when it holds a
    ``config.yaml``, else the run whose ``checkpoints`` folder or ``checkpoints/iter_*``
    checkpoint ``path`` is; None for anything else (a model folder, a named model)."""
    from hiper.runs.checkpoints import CHECKPOINTS_DIR, STATE_FILE

    p = Path(path)
    if (p / "config.yaml").is_file():
        return p
    if p.name == CHECKPOINTS_DIR and (p.parent / "config.yaml").is_file():
        return p.parent
    if (
        (p / STATE_FILE).is_file()
        and p.parent.name == CHECKPOINTS_DIR
        and (p.parent.parent / "config.yaml").is_file()
    ):
        return p.parent.parent
    return None


def locate_model(path: str | os.PathLike) -> ModelSource:
    """Where ``path`` leads: a model folder or saved policy (itself), a run folder or its
    ``checkpoints`` folder (the latest checkpoint's policy), one ``checkpoints/iter_*``
    checkpoint (its policy), or a named model (its prepared folder, prepared on first use;
    ``hiper models list``)."""
    from hiper.runs.checkpoints import (
        CHECKPOINTS_DIR,
        LATEST_FILE,
        STATE_FILE,
        load_checkpoint,
    )

    given = os.fspath(path)
    p = Path(resolve_model_path(path))
    if (
        (p / CHECKPOINTS_DIR).is_dir()
        or (p / STATE_FILE).is_file()
        or (p.name == CHECKPOINTS_DIR and (p / LATEST_FILE).is_file())
    ):
        ckpt = load_checkpoint(p)
        return ModelSource(
            given=given,
            resolved=Path(ckpt.policy_dir).resolve(),
            run_dir=_resolved(run_folder(ckpt.path)),
            checkpoint=ckpt.path.resolve(),
            iteration=ckpt.iteration,
        )
    if not p.exists():
        known = ", ".join(sorted(NAMED_MODELS))
        raise FileNotFoundError(f"model path {str(p)!r} does not exist (named models: {known})")
    return ModelSource(given=given, resolved=p.resolve(), run_dir=_resolved(run_folder(p)))


def _resolved(p: Path | None) -> Path | None:
    return p.resolve() if p is not None else None


def resolve_model(path: str | os.PathLike) -> Path:
    """The folder a policy is loaded from for ``path`` (see :func:`locate_model`)."""
    return locate_model(path).resolved


def load_eval_policy(
    model: str | os.PathLike,
    *,
    device: str = "cpu",
    dtype: str = "float32",
):
    """Load what evaluating ``model`` (any :func:`locate_model` path) needs, on ``device`` in
    ``dtype``: the policy alone. Neither the frozen reference copy (the KL anchor) nor the value
    heads or a separate critic backbone are loaded: :func:`evaluate_policy` only generates."""
    from hiper.models.policy import load_policy

    return load_policy(
        resolve_model(model), device=device, dtype=dtype, reference=False, values=False
    )
