"""Expert demonstrations, played through the agent's own view of an episode.

:func:`expert_transcripts` is the one generator of expert data: the SFT examples
(:func:`hiper.train.sft.expert_examples`) and the tiny model's tokenizer corpus
(:func:`household_corpus`) are both made from its transcripts. Each turn's prompt comes from the
same :class:`~hiper.rollout.AgentView` the rollout uses, so a demonstration shows the model exactly
what it will see when it plays.

One noise model (:func:`noise_action`): with probability ``noise`` the action *executed* at a turn
is not the expert's — half of the time it repeats the previous executed action (a policy's
commonest mistake; in the household and ALFWorld usually a no-op answered "Nothing happens."),
otherwise a uniformly random admissible action. The turn's target stays the expert's, so no model
is ever taught a random action; the episode goes on from the perturbed state, where the expert's
next turns show how to recover. An expert that cannot go on (``expert_turn`` raises, e.g. an
exhausted ALFWorld walkthrough) ends its episode early.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hiper.envs import make_env
from hiper.rollout import AgentView, RolloutConfig, Task

__all__ = [
    "DemoTurn",
    "Transcript",
    "chatml_turn",
    "expert_transcripts",
    "household_corpus",
    "noise_action",
]


@dataclass(frozen=True)
class DemoTurn:
    """One turn of a demonstration: the agent's prompt, the expert's turn, what was executed."""

    prompt: str  # the user message the agent would see here
    target: str  # the expert's turn, rendered in the transcript's format
    subgoal: str  # the expert's subgoal (the one in force on the next turn)
    action: str  # the expert's action
    executed: str  # the action sent to the environment (differs from ``action`` on a noise turn)
    observation: str
    admissible: tuple[str, ...]
    reward: float = 0.0
    terminated: bool = False
    truncated: bool = False


@dataclass
class Transcript:
    """One demonstrated episode: its task, its turns and how it ended."""

    task_id: str
    task: str
    task_type: str
    turns: list[DemoTurn] = field(default_factory=list)
    won: bool = False
    final_observation: str = ""


def noise_action(rng: random.Random, admissible: Sequence[str], history: Sequence[tuple[str, str]]):
    """A perturbed action: repeat the last executed action, or a random admissible one."""
    if history and (not admissible or rng.random() < 0.5):
        return history[-1][1]
    return rng.choice(admissible) if admissible else ""


def expert_transcripts(
    env_name: str,
    tasks: Sequence[Task],
    *,
    noise: float = 0.0,
    rng: random.Random | int | None = None,
    cfg: RolloutConfig | None = None,
    options: Mapping[str, Any] | None = None,
) -> Iterator[Transcript]:
    """Play each of ``tasks`` (a task id or a seed, as the rollout's :class:`~hiper.rollout.Task`)
    with ``env_name``'s expert (any environment with ``expert_turn()``), perturbed by the module's
    noise model with probability ``noise`` per turn (``rng``: its random source, a seed or None).

    Prompts follow ``cfg`` (a :class:`~hiper.rollout.RolloutConfig`, default one: format, history length, instructions; ``max_turns`` is not applied:
    the environment's own step limit ends an episode). In the flat ``react`` format the target is
    the expert's subgoal as the thought and its action, and prompts carry no subgoal. Yields one
    :class:`Transcript` per task, lazily; the environment is closed at the end.
    """
    if not isinstance(noise, int | float) or not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a probability in [0, 1], got {noise!r}")
    if not isinstance(rng, random.Random):
        rng = random.Random(rng)
    env = make_env(env_name, **dict(options or {}))
    if not hasattr(env, "expert_turn"):
        env.close()
        raise ValueError(f"environment {env_name!r} has no expert (expert_turn)")
    cfg = cfg or RolloutConfig()
    plan_execute = cfg.format == "plan_execute"
    try:
        for task in tasks:
            res = env.reset(task_id=task.task_id, seed=task.seed)
            info = res.info
            view = AgentView(str(info.get("task", "")))
            out = Transcript(
                str(info.get("task_id", "")), view.task, str(info.get("task_type", ""))
            )
            while not res.done:
                try:
                    turn = env.expert_turn()
                except RuntimeError:
                    break
                prompt = view.prompt(res.observation, res.admissible, env.family, cfg)
                executed = turn.action
                if noise and rng.random() < noise:
                    executed = noise_action(rng, res.admissible, view.history)
                observation, admissible = res.observation, tuple(res.admissible)
                view.advance(observation, executed, turn.subgoal if plan_execute else None)
                res = env.step(executed)
                out.turns.append(
                    DemoTurn(
                        prompt,
                        turn.text(cfg.format),
                        turn.subgoal,
                        turn.action,
                        executed,
                        observation,
                        admissible,
                        float(res.reward),
                        bool(res.terminated),
                        bool(res.truncated),
                    )
                )
            out.won = bool(res.info.get("won", False))
            out.final_observation = res.observation
            yield out
    finally:
        env.close()


IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


def chatml_turn(user_text: str, response: str | None = None) -> str:
    """``user_text`` (and ``response``) framed exactly as the ChatML template renders them."""
    text = f"{IM_START}user\n{user_text}{IM_END}\n{IM_START}assistant\n"
    if response is not None:
        text += f"{response}{IM_END}\n"
    return text


def household_corpus(
    n_episodes: int = 200, seed: int = 0, *, history_len: int = 2, noise: float = 0.1
) -> list[str]:
    """The tiny model's tokenizer corpus: one ChatML text (prompt and expert turn, framed as
    :func:`chatml_turn`) per turn of ``n_episodes`` noisy household demonstrations.

    Episodes cycle through the six task types and ``chain1`` .. ``chain6`` on the ``train`` split,
    task seeds drawn from ``random.Random(seed)``, so the corpus shows every kind of task, long
    chains included. Deterministic for the same arguments.
    """
    from hiper.envs.household import MAX_CHAIN_DEPTH, TASK_TYPES
    from hiper.envs.household.tasks import task_id

    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 0:
        raise ValueError(f"n_episodes must be a non-negative integer, got {n_episodes!r}")
    kinds = [*TASK_TYPES, *(f"chain{k}" for k in range(1, MAX_CHAIN_DEPTH + 1))]
    rng = random.Random(seed)
    tasks = [
        Task(task_id("train", kinds[i % len(kinds)], rng.randrange(1_000_000)))
        for i in range(n_episodes)
    ]
    cfg = RolloutConfig(history_len=history_len)
    demos = expert_transcripts("household", tasks, noise=noise, rng=rng, cfg=cfg)
    return [chatml_turn(t.prompt, t.target) for demo in demos for t in demo.turns]
