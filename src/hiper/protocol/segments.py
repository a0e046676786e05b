"""Segment semantics of the Plan–Execute protocol, shared by the environment side and the trainer.

Turn 0 is always a boundary. Afterwards a turn starts a new segment exactly when the parser read
``SWITCH`` from its switch block; a missing or garbled switch counts as KEEP. A boundary that wrote a
non-empty subgoal replaces the current subgoal; otherwise the current subgoal carries over.
"""

from __future__ import annotations

from hiper.types import SWITCH, Decision


def is_boundary(decision: Decision, t: int) -> bool:
    """q_t: whether turn ``t`` starts a new segment."""
    return t == 0 or decision.switch == SWITCH


def next_subgoal(current: str | None, decision: Decision, t: int) -> str | None:
    """o_t: the subgoal in force after turn ``t`` (what the next prompt shows)."""
    if is_boundary(decision, t) and decision.subgoal:
        return decision.subgoal
    return current
