"""A household environment whose worker process dies mid-episode on even task seeds (for the
test that episodes of lost workers leave the PPO update). Registered on import; the env pool's
workers import this module by name before building it."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass

from hiper.envs import ENVS, make_env, register_env

NAME = "household-crashy"


@dataclass(frozen=True)
class CrashyOptions:
    crash_at_step: int = 2  # the step on which an even-seeded episode kills its worker
    max_steps: int = 50
    task_types: tuple[str, ...] | None = None


class CrashyHousehold:
    def __init__(self, opts: CrashyOptions):
        options = {"max_steps": opts.max_steps}
        if opts.task_types is not None:
            options["task_types"] = list(opts.task_types)
        self.env = make_env("household", **options)
        self.family = self.env.family
        self.crash_at = opts.crash_at_step
        self.doomed, self.t = False, 0

    def reset(self, task_id=None, seed=None):
        self.doomed, self.t = seed is not None and seed % 2 == 0, 0
        return self.env.reset(task_id=task_id, seed=seed)

    def step(self, action):
        self.t += 1
        in_worker = multiprocessing.parent_process() is not None  # never the trainer itself
        if self.doomed and self.t == self.crash_at and in_worker:
            os._exit(3)  # the worker process dies: the pool reports the episode "worker_lost"
        return self.env.step(action)

    def __getattr__(self, name):  # the rest (expert_turn, task_id_for_seed, ...) is household's
        return getattr(self.env, name)

    def close(self):
        self.env.close()


if NAME not in ENVS:
    register_env(NAME, CrashyOptions)(CrashyHousehold)
