"""The multi-turn rollout loop: environments x engine -> trajectories, recorded in full.

Prompts are step-independent (HAE.md §1): the task, the number of steps taken, the last
``history_len`` observation/action pairs, the current observation, the current subgoal and the
admissible actions. Each response goes through the one parser; the environment executes the parsed
action (an invalid turn still steps: a missing action is sent as the empty string, which every hiper
environment treats as a no-op). Finished environments are not stepped. Tasks are processed in waves
of the pool's size; a trajectory cut by ``max_turns`` is marked truncated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from hiper.envs.base import EnvStep
from hiper.protocol import PromptContext, build_prompt, parse
from hiper.protocol.segments import next_subgoal
from hiper.types import Trajectory, Turn


@dataclass(frozen=True)
class Task:
    """One episode to play: a task id or a seed (the environment's choice), and its group."""

    task_id: str | None = None
    seed: int | None = None
    group_id: str | None = None


@dataclass(frozen=True)
class RolloutConfig:
    max_turns: int = 50
    history_len: int = 2
    format: Literal["plan_execute", "react"] = "plan_execute"
    instructions: bool = True  # False: prompts without intro and format rules (build_prompt)

    def __post_init__(self) -> None:
        if self.max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {self.max_turns}")
        if self.history_len < 0:
            raise ValueError(f"history_len must be >= 0, got {self.history_len}")
        if self.format not in ("plan_execute", "react"):
            raise ValueError(f"format must be 'plan_execute' or 'react', got {self.format!r}")


@dataclass
class AgentView:
    """What an agent has seen of its episode: the inputs of its next prompt besides the current
    observation. The rollout and the expert demonstrations (:mod:`hiper.demos`) keep their
    episodes in this one record, so a demonstration's prompts are exactly the agent's."""

    task: str
    history: list[tuple[str, str]] = field(default_factory=list)  # (observation, executed action)
    subgoal: str | None = None  # the subgoal in force, written on the previous turn

    def prompt(self, observation: str, admissible, family: str, cfg: RolloutConfig) -> str:
        """The user message of the next turn, in ``cfg``'s format."""
        ctx = PromptContext(
            task=self.task,
            observation=observation,
            history=self.history,
            step=len(self.history),
            subgoal=self.subgoal,
            admissible=admissible,
        )
        return build_prompt(
            ctx,
            family=family,
            format=cfg.format,
            history_len=cfg.history_len,
            instructions=cfg.instructions,
        )

    def advance(self, observation: str, executed: str, subgoal: str | None) -> None:
        """One turn taken: ``observation`` was answered with ``executed``; ``subgoal`` now holds."""
        self.history.append((observation, executed))
        self.subgoal = subgoal


@dataclass
class _Episode:
    task: Task
    step: EnvStep
    view: AgentView
    turns: list[Turn] = field(default_factory=list)
    done: bool = False
    final_prompt_ids: list[int] | None = None  # the state after a time-limit cut (bootstrap)

    def prompt(self, family: str, cfg: RolloutConfig) -> str:
        return self.view.prompt(self.step.observation, self.step.admissible, family, cfg)


def rollout(
    pool,
    generate: Callable[[list[list[int]]], list],
    prompt_ids: Callable[[str], list[int]],
    tasks: Sequence[Task],
    family: str,
    cfg: RolloutConfig = RolloutConfig(),
    *,
    on_episode_done: Callable[[], None] | None = None,
) -> list[Trajectory]:
    """Play every task to the end; returns one trajectory per task, in order.

    ``generate(prompt_id_lists) -> [Generation]`` samples responses (see ``hiper.engines``);
    ``prompt_ids(user_text) -> ids`` applies the chat template. ``on_episode_done()`` is called
    each time an episode ends (a progress display).
    """
    out: list[Trajectory] = []
    for start in range(0, len(tasks), pool.n):
        wave = list(tasks[start : start + pool.n])
        out.extend(_play_wave(pool, generate, prompt_ids, wave, family, cfg, on_episode_done))
    return out


def _play_wave(
    pool,
    generate,
    prompt_ids,
    wave: list[Task],
    family: str,
    cfg: RolloutConfig,
    on_episode_done: Callable[[], None] | None = None,
):
    n = len(wave)
    task_ids = [t.task_id for t in wave] + [None] * (pool.n - n)
    seeds = [t.seed for t in wave] + [None] * (pool.n - n)
    if all(t is None for t in task_ids):
        task_ids = None
    first = pool.reset(task_ids=task_ids, seeds=seeds)  # spare slots of a short wave idle
    eps = [
        _Episode(task=t, step=first[i], view=AgentView(str(first[i].info.get("task", ""))))
        for i, t in enumerate(wave)
    ]
    while True:
        live = [i for i, e in enumerate(eps) if not e.done]
        if not live:
            break
        texts = [eps[i].prompt(family, cfg) for i in live]
        ids = [prompt_ids(t) for t in texts]
        gens = generate(ids)
        actions: list[str | None] = [None] * pool.n
        decisions = {}
        for k, i in enumerate(live):
            d = parse(gens[k].text, cfg.format)
            decisions[i] = d
            actions[i] = d.action or ""
        results = pool.step(actions)
        for k, i in enumerate(live):
            e, g, d, res = eps[i], gens[k], decisions[i], results[i]
            t = len(e.turns)
            subgoal = next_subgoal(e.view.subgoal, d, t) if cfg.format == "plan_execute" else None
            cut = not res.done and t + 1 >= cfg.max_turns
            info = dict(res.info)
            if cut:
                info["truncation"] = "max_turns"
            e.turns.append(
                Turn(
                    observation=e.step.observation,
                    response_text=g.text,
                    decision=d,
                    reward=float(res.reward),
                    terminated=bool(res.terminated),
                    truncated=bool(res.truncated or cut),
                    prompt_ids=np.asarray(ids[k], np.int64),
                    response_ids=np.asarray(g.ids, np.int64),
                    logprobs=np.asarray(g.logprobs, np.float32),
                    subgoal=subgoal,
                    admissible=tuple(e.step.admissible),
                    info=info,
                )
            )
            e.view.advance(e.step.observation, actions[i] or "", subgoal)
            e.step = res
            e.done = res.done or cut
            if (
                e.done
                and not res.terminated
                and info.get("truncation") in ("time_limit", "max_turns")
            ):
                e.final_prompt_ids = list(prompt_ids(e.prompt(family, cfg)))
            if e.done and on_episode_done is not None:
                on_episode_done()
    return [_trajectory(e, first[i]) for i, e in enumerate(eps)]


def _trajectory(e: _Episode, first: EnvStep) -> Trajectory:
    last = e.turns[-1].info if e.turns else first.info
    task_id = str(first.info.get("task_id", e.task.task_id or e.task.seed))
    return Trajectory(
        task_id=task_id,
        turns=e.turns,
        task_type=str(first.info.get("task_type", "")),
        group_id=e.task.group_id or task_id,
        success=bool(last.get("won", False)),
        score=float(last.get("score", 0.0)),
        info={
            "task": first.info.get("task", ""),
            "seed": e.task.seed,
            "final_prompt_ids": e.final_prompt_ids,
            "final_observation": e.step.observation,  # what the last action led to
        },
    )
