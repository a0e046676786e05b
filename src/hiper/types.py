"""The one schema that flows through hiper: rollout -> estimators -> trainer -> viewer.

A :class:`Turn` is one agent decision: the prompt it saw, the tokens it sampled (token-in/token-out,
never re-tokenised), the old log-probabilities of those tokens, the parsed :class:`Decision`, and what
the environment answered. Turns are grouped into a :class:`Trajectory` (one episode).

Estimators never read these objects turn by turn: :func:`hiper.algos.layout.build_layout` packs a list
of trajectories into a padded (trajectory x turn) :class:`~hiper.algos.layout.TurnLayout` once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SWITCH = "SWITCH"
KEEP = "KEEP"

BlockName = Literal["switch", "subgoal", "action", "think"]
Format = Literal["plan_execute", "react"]


@dataclass(frozen=True, slots=True)
class Decision:
    """What the one parser (:func:`hiper.protocol.parse`) read from a response.

    ``spans`` maps each block found (``switch``, ``subgoal``, ``action``, ``think``) to the half-open
    *character* span of the block in the response text, tags included. A block that is absent has no
    entry. ``valid`` is the single definition of validity used by both the environment side (what is
    executed, which subgoal the next prompt shows) and the trainer side (spans, switch flags);
    ``reason`` says why a turn is invalid ("" when valid).
    """

    format: Format
    switch: str | None  # "KEEP" | "SWITCH" | None (missing or garbled)
    subgoal: str | None
    action: str | None
    valid: bool
    reason: str = ""
    think: str | None = None
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def is_switch(self) -> bool:
        return self.switch == SWITCH


@dataclass(slots=True)
class Turn:
    """One step of one episode, recorded in full."""

    observation: str  # the environment observation the agent acted on (GiGPO anchor state)
    response_text: str  # decode(response_ids, skip_special_tokens=True)
    decision: Decision
    reward: float = 0.0  # raw environment reward for this step
    terminated: bool = False  # true episode end (success or failure)
    truncated: bool = False  # time limit / worker loss: the episode was cut, not finished
    prompt_ids: np.ndarray | None = None  # int token ids of the prompt
    response_ids: np.ndarray | None = None  # int token ids the engine sampled
    logprobs: np.ndarray | None = None  # old log-probs of response_ids under the behaviour policy
    switch_prob: float | None = None  # beta_t = pi(SWITCH | s_t, o_{t-1}) at the switch token
    subgoal: str | None = None  # the current subgoal after this turn (o_t)
    token_spans: dict[str, tuple[int, int]] | None = None  # block -> [start, end) token span
    admissible: tuple[str, ...] = ()
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Trajectory:
    """One episode. ``group_id`` groups the n rollouts of the same task for group estimators."""

    task_id: str
    turns: list[Turn]
    task_type: str = ""
    group_id: str | None = None
    success: bool = False
    score: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.group_id is None:
            self.group_id = self.task_id

    @property
    def terminated(self) -> bool:
        return bool(self.turns) and self.turns[-1].terminated

    @property
    def truncated(self) -> bool:
        """An episode that did not terminate was cut: truncated, whatever the reason."""
        return bool(self.turns) and not self.turns[-1].terminated

    def __len__(self) -> int:
        return len(self.turns)
