"""``HouseholdEnv``: the built-in ALFWorld-style text household as a :class:`~hiper.envs.TextEnv`."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hiper.envs.base import EnvStep, ExpertTurn
from hiper.envs.household.engine import World
from hiper.envs.household.expert import decide
from hiper.envs.household.tasks import (
    MAX_CHAIN_DEPTH,
    SPLITS,
    TASK_TYPES,
    Scenario,
    make_scenario,
    task_id,
)

__all__ = ["HouseholdEnv", "HouseholdOptions"]

_UNSET: Any = object()


@dataclass(frozen=True)
class HouseholdOptions:
    """Options of the ``household`` environment (validated on construction)."""

    task_types: tuple[str, ...] = TASK_TYPES
    """Task types that ``reset(seed=...)`` draws from (the six ALFWorld types by default)."""
    chain_depth: int | None = None
    """None: single tasks of ``task_types``; k in 1..6: chain tasks of k subtasks (drawn from
    all six types, so ``task_types`` must stay at its default)."""
    max_steps: int = 50
    """Step limit per subtask: an episode is truncated after ``max_steps × subtasks`` steps
    (``max_steps`` for the six types, ``k × max_steps`` for a chain of depth k)."""
    split: str = "train"
    """train | eval_in_distribution (the training rooms, new tasks) | eval_out_of_distribution
    (held-out rooms of the training templates: new receptacle sets and order, every receptacle
    and object type known from train) | eval_novel_objects (unseen room templates with
    receptacle and object types train never shows). See :mod:`hiper.envs.household.tasks`."""

    def __post_init__(self) -> None:
        types = self.task_types
        if isinstance(types, str):
            types = tuple(t.strip() for t in types.split(",") if t.strip())
        if not isinstance(types, tuple | list) or not all(isinstance(t, str) for t in types):
            raise ValueError(f"task_types must be a tuple of task type names, got {types!r}")
        types = tuple(types)
        if not types:
            raise ValueError(f"task_types must not be empty; choose from {TASK_TYPES}")
        unknown = [t for t in types if t not in TASK_TYPES]
        if unknown:
            raise ValueError(
                f"unknown task type(s) {unknown} in task_types; expected some of {TASK_TYPES}"
            )
        if len(set(types)) != len(types):
            raise ValueError(f"task_types has duplicates: {types}")
        object.__setattr__(self, "task_types", types)
        depth = self.chain_depth
        if depth is not None:
            if isinstance(depth, bool) or not isinstance(depth, int):
                raise ValueError(f"chain_depth must be None or an integer, got {depth!r}")
            if not 1 <= depth <= MAX_CHAIN_DEPTH:
                raise ValueError(f"chain_depth must be in 1..{MAX_CHAIN_DEPTH}, got {depth}")
            if set(types) != set(TASK_TYPES):
                raise ValueError(
                    "task_types cannot be restricted together with chain_depth: chain subtasks are "
                    "drawn from all six task types"
                )
        steps = self.max_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {steps!r}")
        if self.split not in SPLITS:
            raise ValueError(
                f"unknown split {self.split!r}; expected one of {SPLITS} (train; "
                "eval_in_distribution: training rooms; eval_out_of_distribution: held-out rooms, "
                "known words; eval_novel_objects: unseen templates with novel receptacle and "
                "object types)"
            )


class HouseholdEnv:
    """A procedurally generated household; see the package docstring for the rules."""

    family = "household"

    def __init__(self, options: HouseholdOptions | None = None) -> None:
        self.options = options if options is not None else HouseholdOptions()
        self._world: World | None = None
        self._scenario: Scenario | None = None
        self._limit = 0
        self._over = False
        self._expert_subgoal: str | None = None
        self._auto = random.Random()

    # ------------------------------------------------------------------ TextEnv

    @property
    def manifest_key(self) -> str:
        """Name of this configuration's manifests: ``household`` or ``household-chain<k>``."""
        depth = self.options.chain_depth
        return "household" if depth is None else f"household-chain{depth}"

    def task_id_for_seed(self, seed: int) -> str:
        """The task id ``reset(seed=seed)`` plays under the configured options."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        opts = self.options
        if opts.chain_depth is not None:
            return task_id(opts.split, f"chain{opts.chain_depth}", seed)
        kind = opts.task_types[seed % len(opts.task_types)]
        return task_id(opts.split, kind, seed // len(opts.task_types))

    def reset(self, task_id: str | None = None, seed: int | None = None) -> EnvStep:
        """Start task ``task_id`` (any household id; it wins over ``seed``), else the task of
        ``seed`` (seeds cycle through ``task_types``), else a random seed."""
        if task_id is None:
            if seed is None:
                seed = self._auto.randrange(2**31)
            task_id = self.task_id_for_seed(seed)
        scenario = make_scenario(task_id)
        self._scenario = scenario
        self._world = World(scenario)
        self._limit = self.options.max_steps * len(scenario.subtasks)
        self._over = False
        self._expert_subgoal = None
        observation = f"{scenario.layout.intro}\n\nYour task is to: {scenario.task}"
        return EnvStep(observation, self._world.admissible, info=self._info(False))

    def step(self, action: str) -> EnvStep:
        w = self._world
        if w is None:
            raise RuntimeError("call reset() before step()")
        if self._over:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        observation = w.execute(action)
        won = False
        if w.advance():
            won = w.done
            if not won:
                n = len(w.scenario.subtasks)
                observation += f" You have completed part {w.progress} of {n} of your task."
        info = self._info(won)
        truncated = not won and w.t >= self._limit
        if truncated:
            info["truncation"] = "time_limit"
        self._over = won or truncated
        return EnvStep(
            observation,
            w.admissible,
            reward=1.0 if won else 0.0,
            terminated=won,
            truncated=truncated,
            info=info,
        )

    def close(self) -> None:
        self._world = None

    def _info(self, won: bool) -> dict[str, Any]:
        s = self._scenario
        w = self._world
        assert s is not None and w is not None
        return {
            "won": won,
            "score": 1.0 if won else 0.0,
            "task_type": s.task_type,
            "task_id": s.task_id,
            "task": s.task,
            "step": w.t,
            "max_steps": self._limit,
            "subtasks_done": w.progress,
            "subtasks": len(s.subtasks),
        }

    # ------------------------------------------------------------------ extras

    @property
    def world(self) -> World:
        if self._world is None:
            raise RuntimeError("call reset() first")
        return self._world

    @property
    def task(self) -> str:
        return self.world.scenario.task

    @property
    def admissible(self) -> tuple[str, ...]:
        return self.world.admissible

    def expert_turn(self, subgoal: str | None = _UNSET) -> ExpertTurn:
        """The expert's next Plan–Execute decision in the current state.

        ``subgoal`` is the subgoal currently in force (e.g. an agent's, when the expert takes over);
        by default the subgoal of the last turn this method returned. The turn is KEEP when the
        expert's phase subgoal equals it verbatim, else SWITCH.
        """
        if self._over:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        current = self._expert_subgoal if subgoal is _UNSET else subgoal
        new, action = decide(self.world)
        switch = "KEEP" if current is not None and new == current else "SWITCH"
        self._expert_subgoal = new
        return ExpertTurn(switch, new, action)

    def clone(self) -> HouseholdEnv:
        """An independent copy of this episode (for look-ahead)."""
        new = HouseholdEnv(self.options)
        new._scenario = self._scenario
        new._world = self.world.copy()
        new._limit, new._over = self._limit, self._over
        new._expert_subgoal = self._expert_subgoal
        return new
