"""Prompt builders: one plain user-message string per turn (chat templates are applied elsewhere).

Prompts are *step-independent* (HAE.md §1): instead of a growing conversation, every turn gets a
fresh prompt with the task, the number of steps taken, the last ``history_len`` observation/action
pairs, the current observation, the current subgoal, the admissible actions and the output format.

There is one template family per environment family (``household``: ALFWorld-style text household;
``webshop``: online shopping with ``search[...]`` / ``click[...]``) and two output formats:
``plan_execute`` (``<switch>``, ``<subgoal>``, ``<action>``) and the flat ``react`` format of the
baselines (``<think>``, ``<action>``). Step 0 uses a first-turn variant: no history, subgoal "None",
and the instruction that the first turn must SWITCH to set a subgoal.

All wording lives in the module-level constants below; :func:`build_prompt` only assembles sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["FAMILIES", "FORMATS", "PromptContext", "build_prompt"]

FAMILIES: tuple[str, ...] = ("household", "webshop")
FORMATS: tuple[str, ...] = ("plan_execute", "react")

# --- who the agent is, per environment family ------------------------------------------------

HOUSEHOLD_INTRO = (
    "You are an expert agent operating in a household. The home is described to you in text: "
    "each observation tells you what you see or what your last command did, and you act by "
    "typing short commands such as 'go to countertop 1', 'open drawer 2' or "
    "'take mug 1 from cabinet 3'."
)

WEBSHOP_INTRO = (
    "You are an expert agent shopping online. You move through a web store by searching with "
    "search[your query] and by clicking products, buttons and product options with "
    "click[name]. Your goal is to find and buy the item that best matches the instruction, "
    "with the requested options and within the price limit."
)

# --- sections shared by every prompt ------------------------------------------------------------

TASK_SECTION = "Your task: {task}"

STEPS_SECTION = "You have taken {step} step(s) so far."

FIRST_STEPS_SECTION = "You have not taken any steps yet; this is the start of the episode."

HISTORY_HEADER = "Your last {count} step(s), oldest first:"

HISTORY_ITEM = "[Step {index}] Observation: {observation}\n[Step {index}] Action: {action}"

OBSERVATION_SECTION = "Current observation: {observation}"

SUBGOAL_SECTION = "Current subgoal: {subgoal}"

NO_SUBGOAL = "None"

ADMISSIBLE_HEADER = "Admissible actions (choose exactly one):"

ADMISSIBLE_ITEM = "- {action}"

# --- what the <action> block must contain ------------------------------------------------------

ACTION_RULE_WITH_LIST = {
    "household": "exactly one of the admissible actions listed above, copied verbatim.",
    "webshop": (
        "exactly one of the admissible actions listed above, copied verbatim; for "
        "search[<your query>] write your own keywords in place of <your query> (search is only "
        "available on the search page)."
    ),
}

ACTION_RULE_WITHOUT_LIST = {
    "household": "exactly one household command, such as 'go to desk 1', written verbatim.",
    "webshop": (
        "exactly one action, either search[your query] or click[an item shown on the current "
        "page], written verbatim."
    ),
}

# --- output formats ----------------------------------------------------------------------------

PLAN_EXECUTE_RULES = """\
Answer with exactly these three blocks, in this order, and write nothing before, between or after \
them except line breaks:
<switch>KEEP or SWITCH</switch>
<subgoal>your subgoal</subgoal>
<action>your action</action>
Rules:
- <switch>: KEEP continues with the current subgoal; SWITCH drops it and starts a new one. \
Choose SWITCH when the current subgoal is done, cannot be done, or is None.
- <subgoal>: after KEEP, copy the current subgoal exactly as shown above, word for word. \
After SWITCH, write a new, short subgoal that you can complete within a few actions.
- <action>: {action_rule}
- Write in English only."""

PLAN_EXECUTE_FIRST_TURN_RULE = (
    "This is your first turn, so there is no subgoal yet: you must write SWITCH and set your "
    "first subgoal."
)

REACT_RULES = """\
Answer with exactly these two blocks, in this order, and write nothing before, between or after \
them except line breaks:
<think>your reasoning</think>
<action>your action</action>
Rules:
- <think>: reason step by step about what you have seen and what to do next.
- <action>: {action_rule}
- Write in English only."""

_INTROS = {"household": HOUSEHOLD_INTRO, "webshop": WEBSHOP_INTRO}


@dataclass(frozen=True, slots=True)
class PromptContext:
    """Everything a prompt shows for one turn.

    ``history`` holds (observation, action) pairs, oldest first; it may be the full episode
    history, :func:`build_prompt` keeps only the last ``history_len`` pairs. ``step`` is the number
    of steps already taken (0 on the first turn). ``subgoal`` is the subgoal currently in force
    (``None`` before the first one is set).
    """

    task: str
    observation: str
    history: Sequence[tuple[str, str]]
    step: int
    subgoal: str | None
    admissible: Sequence[str] = ()


def build_prompt(
    ctx: PromptContext,
    family: Literal["household", "webshop"],
    format: Literal["plan_execute", "react"] = "plan_execute",
    history_len: int = 2,
    instructions: bool = True,
) -> str:
    """Build the user message for one turn. Raises ``ValueError`` on bad arguments.

    ``instructions=False`` leaves out the text that only explains the game (the introduction, the
    answer-format rules and the first-turn rule) and keeps everything that changes from turn to
    turn: task, step count, history, observation, subgoal, admissible actions. It is meant for
    models trained from scratch (the tiny quickstart model learns the format from demonstrations
    and cannot read instructions); it cuts a household prompt by ~40 %."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected one of {FORMATS}")
    if isinstance(ctx.step, bool) or not isinstance(ctx.step, int) or ctx.step < 0:
        raise ValueError(f"step must be a non-negative integer, got {ctx.step!r}")
    if isinstance(history_len, bool) or not isinstance(history_len, int) or history_len < 0:
        raise ValueError(f"history_len must be a non-negative integer, got {history_len!r}")

    if not isinstance(instructions, bool):
        raise ValueError(f"instructions must be true or false, got {instructions!r}")

    first_turn = ctx.step == 0
    sections = [_INTROS[family]] if instructions else []
    sections.append(TASK_SECTION.format(task=ctx.task))
    sections.append(FIRST_STEPS_SECTION if first_turn else STEPS_SECTION.format(step=ctx.step))

    if not first_turn:
        history = _recent_history(ctx.history, history_len)
        if history:
            first_index = max(ctx.step - len(history), 0) + 1
            items = [
                HISTORY_ITEM.format(index=first_index + i, observation=obs, action=act)
                for i, (obs, act) in enumerate(history)
            ]
            sections.append("\n".join([HISTORY_HEADER.format(count=len(history)), *items]))

    sections.append(OBSERVATION_SECTION.format(observation=ctx.observation))
    if format == "plan_execute":
        subgoal = NO_SUBGOAL if first_turn or ctx.subgoal is None else ctx.subgoal
        sections.append(SUBGOAL_SECTION.format(subgoal=subgoal))

    admissible = list(ctx.admissible)
    if admissible:
        items = [ADMISSIBLE_ITEM.format(action=action) for action in admissible]
        sections.append("\n".join([ADMISSIBLE_HEADER, *items]))
        action_rule = ACTION_RULE_WITH_LIST[family]
    else:
        action_rule = ACTION_RULE_WITHOUT_LIST[family]

    if not instructions:
        return "\n\n".join(sections)
    if format == "plan_execute":
        sections.append(PLAN_EXECUTE_RULES.format(action_rule=action_rule))
        if first_turn:
            sections.append(PLAN_EXECUTE_FIRST_TURN_RULE)
    else:
        sections.append(REACT_RULES.format(action_rule=action_rule))
    return "\n\n".join(sections)


def _recent_history(history: Sequence[tuple[str, str]], history_len: int) -> list[tuple[str, str]]:
    if history_len == 0:
        return []
    recent = list(history)[-history_len:]
    for pair in recent:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise ValueError(f"history entries must be (observation, action) pairs, got {pair!r}")
    return [(str(obs), str(act)) for obs, act in recent]
