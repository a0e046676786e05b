"""Tests for the prompt builders (hiper.protocol.prompts)."""

from __future__ import annotations

import pytest

from hiper.protocol import PromptContext, build_prompt, parse
from hiper.protocol.prompts import FAMILIES, FORMATS

HISTORY = [(f"observation number {i}", f"action number {i}") for i in range(1, 6)]


def ctx(**overrides: object) -> PromptContext:
    fields: dict[str, object] = {
        "task": "put a clean mug in the coffee machine",
        "observation": "You are in the kitchen. You see a sink 1 and a countertop 1.",
        "history": HISTORY,
        "step": 5,
        "subgoal": "find a mug",
        "admissible": ("go to sink 1", "go to countertop 1", "look"),
    }
    fields.update(overrides)
    return PromptContext(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_common_sections(family: str, fmt: str) -> None:
    prompt = build_prompt(ctx(), family, fmt)  # type: ignore[arg-type]
    assert isinstance(prompt, str)
    assert "put a clean mug in the coffee machine" in prompt
    assert "You are in the kitchen. You see a sink 1 and a countertop 1." in prompt
    assert "5 step(s)" in prompt
    assert "<action>" in prompt and "</action>" in prompt


def test_family_intros_differ() -> None:
    household = build_prompt(ctx(), "household")
    webshop = build_prompt(ctx(), "webshop")
    assert household.startswith("You are an expert agent operating in a household")
    assert "search[" in webshop and "click[" in webshop
    assert "household" not in webshop


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("history_len", [1, 2, 3])
def test_history_is_bounded(fmt: str, history_len: int) -> None:
    prompt = build_prompt(ctx(), "household", fmt, history_len=history_len)  # type: ignore[arg-type]
    kept = HISTORY[-history_len:]
    dropped = HISTORY[:-history_len]
    for obs, act in kept:
        assert obs in prompt and act in prompt
    for obs, act in dropped:
        assert obs not in prompt and act not in prompt
    # the kept pairs appear oldest first and are numbered by their step
    positions = [prompt.index(obs) for obs, _ in kept]
    assert positions == sorted(positions)
    assert f"[Step 5] Action: {HISTORY[-1][1]}" in prompt
    assert f"[Step {6 - history_len}] Observation: {kept[0][0]}" in prompt


def test_default_history_len_is_two() -> None:
    prompt = build_prompt(ctx(), "household")
    assert "observation number 3" not in prompt
    assert "observation number 4" in prompt and "observation number 5" in prompt


def test_history_len_zero_has_no_history() -> None:
    prompt = build_prompt(ctx(), "household", history_len=0)
    assert "observation number" not in prompt and "[Step" not in prompt


def test_short_history_is_shown_whole() -> None:
    prompt = build_prompt(ctx(history=HISTORY[:1], step=1), "webshop", history_len=2)
    assert "[Step 1] Observation: observation number 1" in prompt
    assert "[Step 1] Action: action number 1" in prompt


def test_subgoal_shown() -> None:
    prompt = build_prompt(ctx(subgoal="clean the mug in the sink"), "household")
    assert "Current subgoal: clean the mug in the sink" in prompt


def test_missing_subgoal_after_first_turn_shows_none() -> None:
    prompt = build_prompt(ctx(subgoal=None), "household")
    assert "Current subgoal: None" in prompt
    assert "first turn" not in prompt


@pytest.mark.parametrize("family", FAMILIES)
def test_first_turn_variant(family: str) -> None:
    prompt = build_prompt(
        ctx(step=0, history=HISTORY, subgoal="stale subgoal"),
        family,  # type: ignore[arg-type]
    )
    assert "Current subgoal: None" in prompt
    assert "stale subgoal" not in prompt
    assert "observation number" not in prompt and "[Step" not in prompt
    assert "first turn" in prompt and "must write SWITCH" in prompt
    later = build_prompt(ctx(step=3), family)  # type: ignore[arg-type]
    assert "first turn" not in later


def test_plan_execute_format_rules() -> None:
    prompt = build_prompt(ctx(), "household")
    for tag in ("<switch>", "</switch>", "<subgoal>", "</subgoal>", "<action>", "</action>"):
        assert tag in prompt
    assert prompt.index("<switch>") < prompt.index("<subgoal>") < prompt.index("<action>")
    assert "KEEP" in prompt and "SWITCH" in prompt
    assert "copy the current subgoal exactly" in prompt
    assert "few actions" in prompt
    assert "verbatim" in prompt
    assert "<think>" not in prompt


def test_admissible_listed() -> None:
    prompt = build_prompt(ctx(), "household")
    assert "Admissible actions" in prompt
    for action in ("go to sink 1", "go to countertop 1", "look"):
        assert f"- {action}\n" in prompt + "\n"
    assert prompt.index("- go to sink 1") < prompt.index("- look")


@pytest.mark.parametrize("family", FAMILIES)
def test_admissible_section_omitted_when_empty(family: str) -> None:
    prompt = build_prompt(ctx(admissible=()), family)  # type: ignore[arg-type]
    assert "Admissible actions" not in prompt
    assert "admissible actions listed above" not in prompt


@pytest.mark.parametrize("family", FAMILIES)
def test_react_prompt(family: str) -> None:
    prompt = build_prompt(ctx(), family, "react")  # type: ignore[arg-type]
    assert "<think>" in prompt and "</think>" in prompt
    assert prompt.index("<think>") < prompt.rindex("<action>")
    assert "<switch>" not in prompt and "<subgoal>" not in prompt
    assert "subgoal" not in prompt.lower()
    assert "KEEP" not in prompt and "SWITCH" not in prompt
    assert "- look" in prompt


def test_react_first_turn() -> None:
    prompt = build_prompt(ctx(step=0), "webshop", "react")
    assert "subgoal" not in prompt.lower()
    assert "observation number" not in prompt


def test_prompt_text_with_braces_is_kept_verbatim() -> None:
    prompt = build_prompt(
        ctx(task="buy {red} shoes", observation="page {0} [SEP] {x}"), "webshop", history_len=0
    )
    assert "buy {red} shoes" in prompt and "page {0} [SEP] {x}" in prompt


def test_prompt_itself_is_not_a_valid_response() -> None:
    # sanity: echoing the prompt back must not parse as a valid turn
    assert not parse(build_prompt(ctx(), "household")).valid


@pytest.mark.parametrize(
    ("kwargs", "ctx_overrides", "needle"),
    [
        ({"family": "kitchen"}, {}, "'kitchen'"),
        ({"family": "household", "format": "json"}, {}, "'json'"),
        ({"family": "household", "history_len": -1}, {}, "-1"),
        ({"family": "webshop", "history_len": 1.5}, {}, "1.5"),
        ({"family": "household"}, {"step": -3}, "-3"),
        ({"family": "household"}, {"history": [("only one",)]}, "only one"),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, object], ctx_overrides: dict, needle: str) -> None:
    with pytest.raises(ValueError) as info:
        build_prompt(ctx(**ctx_overrides), **kwargs)  # type: ignore[arg-type]
    assert needle in str(info.value)


def test_bad_family_message_lists_allowed_values() -> None:
    with pytest.raises(ValueError, match="household") as info:
        build_prompt(ctx(), "kitchen")  # type: ignore[arg-type]
    assert "webshop" in str(info.value)
    with pytest.raises(ValueError, match="plan_execute") as info:
        build_prompt(ctx(), "household", "json")  # type: ignore[arg-type]
    assert "react" in str(info.value)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("step", [0, 5])
def test_without_instructions_keeps_exactly_the_turn_specific_sections(
    family: str, fmt: str, step: int
) -> None:
    full = build_prompt(ctx(step=step), family, fmt)  # type: ignore[arg-type]
    bare = build_prompt(ctx(step=step), family, fmt, instructions=False)  # type: ignore[arg-type]
    assert not bare.startswith("You are an expert agent")
    assert "Rules:" not in bare and "Answer with exactly" not in bare
    assert "This is your first turn" not in bare
    # every section of the bare prompt appears, in the same order, in the full one
    sections = bare.split("\n\n")
    assert sections[0] == "Your task: put a clean mug in the coffee machine"
    assert all(s in full for s in sections)
    positions = [full.index(s) for s in sections]
    assert positions == sorted(positions)
    assert "Admissible actions (choose exactly one):\n- go to sink 1" in bare
    assert ("Current subgoal:" in bare) == (fmt == "plan_execute")
    assert ("action number 5" in bare) == (step > 0)
    assert len(bare) < 0.6 * len(full)


def test_instructions_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="instructions must be true or false"):
        build_prompt(ctx(), "household", instructions="no")  # type: ignore[arg-type]
