"""The text-environment protocol, the environment registry and task manifests.

Every environment hiper trains on is a :class:`TextEnv`: ``reset`` to a task (by id, or by seed) and
``step`` with an action string, each returning an :class:`EnvStep`. An action the environment does
not understand is a no-op with an explanatory observation, never an exception: actions come from a
model and are untrusted.

Environments are created by name with typed options (:func:`make_env`); each registered environment
names an options dataclass whose fields are validated, so a typo or a wrong type is a clear error.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, Protocol, runtime_checkable

PromptFamily = Literal["household", "webshop"]

#: The six ALFWorld task types (shared by the real ALFWorld games and the household world).
TASK_TYPES: tuple[str, ...] = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)


@dataclass(slots=True)
class EnvStep:
    """What an environment returns from ``reset`` and ``step``.

    ``info`` always carries ``won`` (bool), ``score`` (float), ``task_type`` (str), ``task_id`` (str)
    and ``task`` (the task description shown in prompts); environments may add more.
    ``truncated`` is set when a time limit (or a lost worker) cut the episode; ``terminated`` only
    when the episode really ended (success or failure).
    """

    observation: str
    admissible: tuple[str, ...] = ()
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated


@dataclass(frozen=True, slots=True)
class ExpertTurn:
    """One expert decision in Plan–Execute form (an SFT demonstration turn)."""

    switch: Literal["KEEP", "SWITCH"]
    subgoal: str
    action: str

    def text(self, format: str = "plan_execute") -> str:
        """The turn as a response: Plan–Execute blocks, or for the flat ``react`` format the
        subgoal as the thought (``<think>subgoal</think>``) and the action."""
        if format == "react":
            return f"<think>{self.subgoal}</think>\n<action>{self.action}</action>"
        if format != "plan_execute":
            raise ValueError(f"unknown format {format!r}; expected 'plan_execute' or 'react'")
        return (
            f"<switch>{self.switch}</switch>\n<subgoal>{self.subgoal}</subgoal>\n"
            f"<action>{self.action}</action>"
        )


@runtime_checkable
class TextEnv(Protocol):
    family: PromptFamily  # which prompt template family fits this environment

    def reset(self, task_id: str | None = None, seed: int | None = None) -> EnvStep: ...

    def step(self, action: str) -> EnvStep: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class EnvSpec:
    name: str
    factory: Callable[..., TextEnv]
    options: type


ENVS: dict[str, EnvSpec] = {}


def register_env(
    name: str, options: type
) -> Callable[[Callable[..., TextEnv]], Callable[..., TextEnv]]:
    """Register ``factory(opts) -> TextEnv`` under ``name``; ``options`` is a dataclass type."""

    def deco(factory: Callable[..., TextEnv]) -> Callable[..., TextEnv]:
        if name in ENVS:
            raise ValueError(f"environment {name!r} is already registered")
        ENVS[name] = EnvSpec(name, factory, options)
        return factory

    return deco


def make_options(name: str, **options: Any) -> Any:
    """Build and validate the options dataclass of environment ``name``."""
    spec = get_env_spec(name)
    known = {f.name: f for f in dataclasses.fields(spec.options)}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(
            f"unknown option(s) {unknown} for environment {name!r}; expected some of {sorted(known)}"
        )
    return spec.options(**options)


def make_env(name: str, **options: Any) -> TextEnv:
    """Create environment ``name`` with validated options."""
    spec = get_env_spec(name)
    return spec.factory(make_options(name, **options))


def get_env_spec(name: str) -> EnvSpec:
    import hiper.envs  # noqa: F401  (registers the built-in environments)

    try:
        return ENVS[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; expected one of {sorted(ENVS)}") from None


# ---------------------------------------------------------------------------------------------
# Task manifests: fixed, versioned lists of task ids per evaluation split.


@dataclass(frozen=True)
class Manifest:
    env: str
    split: str
    version: int
    task_ids: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "env": self.env,
                "split": self.split,
                "version": self.version,
                "task_ids": list(self.task_ids),
            },
            indent=1,
        )


def load_manifest(env: str, split: str) -> Manifest:
    """The committed manifest ``hiper/envs/manifests/<env>-<split>.json``."""
    path = resources.files("hiper.envs").joinpath("manifests", f"{env}-{split}.json")
    if not path.is_file():
        available = sorted(
            p.name.removesuffix(".json")
            for p in resources.files("hiper.envs").joinpath("manifests").iterdir()
            if p.name.endswith(".json")
        )
        raise ValueError(
            f"no task manifest for env {env!r} split {split!r}; available: {available}"
        )
    data = json.loads(path.read_text())
    return Manifest(data["env"], data["split"], int(data["version"]), tuple(data["task_ids"]))
