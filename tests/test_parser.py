"""Tests for the one response parser (hiper.protocol.parser)."""

from __future__ import annotations

import itertools
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hiper.protocol import TAGS, normalize_subgoal, parse
from hiper.protocol.parser import FORMAT_BLOCKS
from hiper.types import KEEP, SWITCH, Decision

OPEN = {name: f"<{name}>" for name in ("switch", "subgoal", "action", "think")}
CLOSE = {name: f"</{name}>" for name in ("switch", "subgoal", "action", "think")}


def pe(switch: str = "KEEP", subgoal: str = "find the mug", action: str = "go to desk 1") -> str:
    return f"<switch>{switch}</switch>\n<subgoal>{subgoal}</subgoal>\n<action>{action}</action>"


def check_spans(text: str, d: Decision) -> None:
    """Every recorded span is in bounds, delimited by its tags, non-overlapping, and matches the field."""
    for name, (start, end) in d.spans.items():
        assert 0 <= start < end <= len(text)
        block = text[start:end]
        assert block.startswith(OPEN[name])
        assert block.endswith(CLOSE[name])
        assert len(block) >= len(OPEN[name]) + len(CLOSE[name])
    ordered = sorted(d.spans.values())
    for (_, end_a), (start_b, _) in itertools.pairwise(ordered):
        assert end_a <= start_b
    for name in ("subgoal", "action", "think"):
        value = getattr(d, name)
        if name in d.spans:
            start, end = d.spans[name]
            assert value == text[start + len(OPEN[name]) : end - len(CLOSE[name])].strip()
        else:
            assert value is None
    if "switch" not in d.spans:
        assert d.switch is None
    assert d.switch in (None, KEEP, SWITCH)
    assert set(d.spans) <= set(FORMAT_BLOCKS[d.format])
    assert d.valid == (d.reason == "")


# --- valid responses and exact spans -------------------------------------------------------------


def test_valid_plan_execute_exact_spans() -> None:
    text = "<switch>SWITCH</switch><subgoal>find the mug</subgoal><action>go to desk 1</action>"
    d = parse(text)
    assert d.valid and d.reason == ""
    assert d.format == "plan_execute"
    assert (d.switch, d.subgoal, d.action, d.think) == (
        SWITCH,
        "find the mug",
        "go to desk 1",
        None,
    )
    assert d.is_switch
    assert d.spans == {"switch": (0, 23), "subgoal": (23, 54), "action": (54, 83)}
    assert text[0:23] == "<switch>SWITCH</switch>"
    assert text[23:54] == "<subgoal>find the mug</subgoal>"
    assert text[54:83] == "<action>go to desk 1</action>"
    check_spans(text, d)


def test_spans_with_whitespace_around_and_between_blocks() -> None:
    text = "  \n<switch> keep </switch>\n\n<subgoal>  a b  </subgoal>\t<action>\nlook\n</action>\n "
    d = parse(text)
    assert d.valid, d.reason
    assert (d.switch, d.subgoal, d.action) == (KEEP, "a b", "look")
    s, e = d.spans["switch"]
    assert text[s:e] == "<switch> keep </switch>"
    s, e = d.spans["subgoal"]
    assert text[s:e] == "<subgoal>  a b  </subgoal>"
    s, e = d.spans["action"]
    assert text[s:e] == "<action>\nlook\n</action>"
    assert d.spans["switch"][0] == 3
    check_spans(text, d)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("KEEP", KEEP),
        ("keep", KEEP),
        (" Keep\n", KEEP),
        ("SWITCH", SWITCH),
        ("switch", SWITCH),
        (" Switch ", SWITCH),
        ("sWiTcH", SWITCH),
    ],
)
def test_switch_normalisation(raw: str, expected: str) -> None:
    d = parse(pe(switch=raw))
    assert d.valid, d.reason
    assert d.switch == expected


def test_valid_react_exact_spans() -> None:
    text = "<think>The mug is on the desk.</think>\n<action>go to desk 1</action>"
    d = parse(text, "react")
    assert d.valid, d.reason
    assert d.format == "react"
    assert (d.think, d.action, d.switch, d.subgoal) == (
        "The mug is on the desk.",
        "go to desk 1",
        None,
        None,
    )
    assert d.spans == {"think": (0, 38), "action": (39, 68)}
    assert text[0:38] == "<think>The mug is on the desk.</think>"
    assert text[39:68] == "<action>go to desk 1</action>"


def test_react_empty_think_is_allowed() -> None:
    d = parse("<think></think><action>look</action>", "react")
    assert d.valid and d.think == "" and d.action == "look"


def test_uppercase_tags_are_plain_text() -> None:
    d = parse("<SWITCH>KEEP</SWITCH><subgoal>a</subgoal><action>b</action>")
    assert not d.valid
    assert d.reason == "missing <switch> block"


def test_unicode_content_is_kept() -> None:
    d = parse(pe(subgoal="café – naïve résumé", action="put apple 1 in/on fridge 1"))
    assert d.valid, d.reason
    assert d.subgoal == "café – naïve résumé"
    assert d.action == "put apple 1 in/on fridge 1"


# --- every invalid reason ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fmt", "reason"),
    [
        ("", "plan_execute", "missing <switch> block"),
        ("<subgoal>a</subgoal><action>b</action>", "plan_execute", "missing <switch> block"),
        ("<switch>KEEP</switch><action>b</action>", "plan_execute", "missing <subgoal> block"),
        ("<switch>KEEP</switch><subgoal>a</subgoal>", "plan_execute", "missing <action> block"),
        ("<action>b</action>", "react", "missing <think> block"),
        ("<think>a</think>", "react", "missing <action> block"),
        ("<switch>KEEP<subgoal>a</subgoal><action>b</action>", "plan_execute", "unclosed <switch>"),
        ("<switch>KEEP</switch><subgoal>a<action>b</action>", "plan_execute", "unclosed <subgoal>"),
        ("<switch>KEEP</switch><subgoal>a</subgoal><action>b", "plan_execute", "unclosed <action>"),
        ("<think>a<action>b</action>", "react", "unclosed <think>"),
        (
            "<switch>KEEP</switch><subgoal>a</subgoal><action>b</action><action>c</action>",
            "plan_execute",
            "repeated <action> block",
        ),
        (
            "<switch>KEEP</switch><switch>SWITCH</switch><subgoal>a</subgoal><action>b</action>",
            "plan_execute",
            "repeated <switch> block",
        ),
        (
            "<think>a</think><action>b</action><think>c</think>",
            "react",
            "repeated <think> block",
        ),
        (
            "<switch>KEEP<action>b</action></switch><subgoal>a</subgoal>",
            "plan_execute",
            "nested tag inside <switch>",
        ),
        (
            "<switch>KEEP</switch><subgoal>a <think>x</think></subgoal><action>b</action>",
            "plan_execute",
            "nested tag inside <subgoal>",
        ),
        (
            "<switch>KEEP</switch><subgoal>a</subgoal><action>b<action>c</action>",
            "plan_execute",
            "nested tag inside <action>",
        ),
        (
            "<switch>KEEP</switch><subgoal>a</subgoal><action>b</action><think>x</think>",
            "plan_execute",
            "unexpected <think> block",
        ),
        (
            "<think>a</think><switch>KEEP</switch><action>b</action>",
            "react",
            "unexpected <switch> block",
        ),
        (
            "<subgoal>a</subgoal><switch>KEEP</switch><action>b</action>",
            "plan_execute",
            "blocks out of order",
        ),
        (
            "<switch>KEEP</switch><action>b</action><subgoal>a</subgoal>",
            "plan_execute",
            "blocks out of order",
        ),
        ("<action>b</action><think>a</think>", "react", "blocks out of order"),
        (
            "Sure! <switch>KEEP</switch><subgoal>a</subgoal><action>b</action>",
            "plan_execute",
            "text outside blocks",
        ),
        (
            "<switch>KEEP</switch> and <subgoal>a</subgoal><action>b</action>",
            "plan_execute",
            "text outside blocks",
        ),
        (
            "<switch>KEEP</switch><subgoal>a</subgoal><action>b</action>\nDone.",
            "plan_execute",
            "text outside blocks",
        ),
        (
            "<switch>KEEP</switch><subgoal>a</subgoal><action>b</action>\x00",
            "plan_execute",
            "text outside blocks",
        ),
        (
            "<switch>KEEP</switch><subgoal>a</subgoal><action>b</action></action>",
            "plan_execute",
            "stray </action> tag",
        ),
        (pe(switch="MAYBE"), "plan_execute", "switch must be KEEP or SWITCH, got 'MAYBE'"),
        (pe(switch=""), "plan_execute", "switch must be KEEP or SWITCH, got ''"),
        (
            pe(switch="KEEP SWITCH"),
            "plan_execute",
            "switch must be KEEP or SWITCH, got 'KEEP SWITCH'",
        ),
        (pe(subgoal="  "), "plan_execute", "empty subgoal"),
        (pe(action="\n"), "plan_execute", "empty action"),
        ("<think>a</think><action> </action>", "react", "empty action"),
        (pe(action="去厨房"), "plan_execute", "CJK characters in response"),
        (pe(subgoal="find the mug。"), "plan_execute", "CJK characters in response"),
        (pe(subgoal="マグカップ"), "plan_execute", "CJK characters in response"),
        (pe(subgoal="머그컵"), "plan_execute", "CJK characters in response"),
        (pe(action="look！"), "plan_execute", "CJK characters in response"),
        ("<think>好的</think><action>look</action>", "react", "CJK characters in response"),
    ],
)
def test_invalid_reasons(text: str, fmt: str, reason: str) -> None:
    d = parse(text, fmt)  # type: ignore[arg-type]
    assert not d.valid
    assert d.reason == reason
    check_spans(text, d)


def test_long_garbled_switch_is_truncated_in_reason() -> None:
    d = parse(pe(switch="x" * 500))
    assert d.reason.startswith("switch must be KEEP or SWITCH, got 'xxx")
    assert len(d.reason) < 100


def test_first_problem_is_reported() -> None:
    # missing switch AND empty action AND CJK: the structural problem comes first
    assert parse("<subgoal>去</subgoal><action></action>").reason == "missing <switch> block"
    # bad switch AND empty action: the switch comes first
    assert parse(pe(switch="maybe", action="")).reason.startswith("switch must be")


# --- fields are still extracted from invalid turns ------------------------------------------------


def test_action_extracted_when_switch_is_garbled() -> None:
    d = parse(pe(switch="PERHAPS", subgoal="open the fridge", action="open fridge 1"))
    assert not d.valid
    assert d.switch is None
    assert d.subgoal == "open the fridge"
    assert d.action == "open fridge 1"
    assert set(d.spans) == {"switch", "subgoal", "action"}


def test_action_extracted_when_switch_missing() -> None:
    d = parse("<subgoal>open the fridge</subgoal><action>open fridge 1</action>")
    assert d.reason == "missing <switch> block"
    assert (d.switch, d.subgoal, d.action) == (None, "open the fridge", "open fridge 1")


def test_fields_extracted_from_out_of_order_and_outside_text() -> None:
    d = parse("ok <action>look</action><subgoal>a</subgoal><switch>SWITCH</switch>")
    assert d.reason == "blocks out of order"
    assert (d.switch, d.subgoal, d.action) == (SWITCH, "a", "look")


def test_nested_block_innermost_wins_and_spans_do_not_overlap() -> None:
    text = "<switch>KEEP<action>go north</action></switch><subgoal>a</subgoal>"
    d = parse(text)
    assert d.reason == "nested tag inside <switch>"
    assert "switch" not in d.spans and d.switch is None
    assert d.action == "go north"
    s, e = d.spans["action"]
    assert text[s:e] == "<action>go north</action>"
    check_spans(text, d)


def test_crossing_blocks_keep_the_earlier_one() -> None:
    text = "<switch>KEEP<subgoal>a</switch> b</subgoal><action>c</action>"
    d = parse(text)
    assert d.reason == "nested tag inside <switch>"
    assert "switch" in d.spans and "subgoal" not in d.spans
    assert d.subgoal is None and d.action == "c"
    check_spans(text, d)


def test_repeated_block_records_the_first() -> None:
    text = pe(action="look") + "<action>inventory</action>"
    d = parse(text)
    assert d.reason == "repeated <action> block"
    assert d.action == "look"
    s, e = d.spans["action"]
    assert text[s:e] == "<action>look</action>"


def test_unclosed_block_has_no_span() -> None:
    d = parse("<switch>SWITCH</switch><subgoal>a</subgoal><action>look")
    assert d.reason == "unclosed <action>"
    assert d.action is None and "action" not in d.spans
    assert d.switch == SWITCH and d.subgoal == "a"


def test_lone_surrogate_and_nul() -> None:
    text = pe(subgoal="a\ud800b\x00c")
    d = parse(text)
    assert d.valid, d.reason
    assert d.subgoal == "a\ud800b\x00c"
    d = parse("\udfff<switch>\ud800</switch>")
    assert not d.valid


def test_bad_format_and_type_raise() -> None:
    with pytest.raises(ValueError, match="'json'"):
        parse("x", "json")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        parse(b"<action>x</action>")  # type: ignore[arg-type]


# --- linear time -------------------------------------------------------------------------------


def _best_time(text: str, fmt: str = "plan_execute", repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        parse(text, fmt)  # type: ignore[arg-type]
        best = min(best, time.perf_counter() - t0)
    return best


def _garbage(n: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    alphabet = "<>/ \nabcdefghijklmnopqrstuvwxyz" + "".join(TAGS)
    pieces: list[str] = []
    size = 0
    while size < n:
        piece = rng.choice(TAGS) if rng.random() < 0.05 else rng.choice(alphabet)
        pieces.append(piece)
        size += len(piece)
    return "".join(pieces)[:n]


@pytest.mark.parametrize(
    "text",
    [
        _garbage(100_000, seed=1),
        _garbage(100_000, seed=2).replace(" ", "\n"),
        "<action>" * 12_500,
        "<action></action>" * 6_000,
        "<switch>" * 12_500 + "</switch>" * 10_000,
        "<switch>KEEP</switch><subgoal>" + "a" * 100_000 + "</subgoal><action>b</action>",
        "<" * 100_000,
    ],
    ids=[
        "garbage",
        "garbage2",
        "open-actions",
        "action-blocks",
        "switch-soup",
        "long-subgoal",
        "lt",
    ],
)
def test_100kb_parses_fast(text: str) -> None:
    for fmt in FORMAT_BLOCKS:
        assert _best_time(text, fmt) < 0.05
        check_spans(text, parse(text, fmt))  # type: ignore[arg-type]


def test_100kb_random_codepoints_fast() -> None:
    rng = random.Random(3)
    text = "".join(chr(rng.randrange(0, 0x110000)) for _ in range(100_000))
    assert _best_time(text) < 0.05
    assert not parse(text).valid


# --- properties --------------------------------------------------------------------------------

FRAGMENTS = st.sampled_from(
    [
        *TAGS,
        "<",
        ">",
        "/",
        "<act",
        "ion>",
        "</",
        "KEEP",
        "SWITCH",
        "keep",
        "go to desk 1",
        " ",
        "\n",
        "\t",
        "x",
        "去",
        "\x00",
        "\ud800",
        "\udfff",
        "é",
    ]
)
TAGGY_TEXT = st.lists(FRAGMENTS, max_size=40).map("".join)
ANY_TEXT = st.one_of(st.text(), TAGGY_TEXT, st.text(alphabet=st.characters(exclude_categories=())))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=ANY_TEXT, fmt=st.sampled_from(sorted(FORMAT_BLOCKS)))
def test_never_raises_and_spans_are_sane(text: str, fmt: str) -> None:
    d = parse(text, fmt)  # type: ignore[arg-type]
    assert isinstance(d, Decision)
    check_spans(text, d)
    if d.valid:
        assert set(d.spans) == set(FORMAT_BLOCKS[fmt])
        assert d.action
        if fmt == "plan_execute":
            assert d.switch in (KEEP, SWITCH) and d.subgoal


CONTENT = (
    st.text(
        alphabet=st.characters(
            exclude_categories=("Cs", "Cc"),
            exclude_characters="<",
            max_codepoint=0x10FF,  # below every CJK range
        ),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)


@settings(max_examples=300, deadline=None)
@given(
    switch=st.sampled_from([KEEP, SWITCH]),
    subgoal=CONTENT,
    action=CONTENT,
    sep=st.sampled_from(["", "\n", " \n", "\n\n"]),
)
def test_round_trip_plan_execute(switch: str, subgoal: str, action: str, sep: str) -> None:
    text = sep.join(
        [
            f"<switch>{switch}</switch>",
            f"<subgoal>{subgoal}</subgoal>",
            f"<action>{action}</action>",
        ]
    )
    d = parse(text)
    assert d.valid, d.reason
    assert (d.switch, d.subgoal, d.action) == (switch, subgoal, action)
    check_spans(text, d)


@settings(max_examples=200, deadline=None)
@given(think=CONTENT, action=CONTENT)
def test_round_trip_react(think: str, action: str) -> None:
    text = f"<think>{think}</think>\n<action>{action}</action>"
    d = parse(text, "react")
    assert d.valid, d.reason
    assert (d.think, d.action, d.switch, d.subgoal) == (think, action, None, None)


# --- normalize_subgoal ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        ("", ""),
        ("Find the mug.", "find the mug"),
        ("  find   the\tmug \n", "find the mug"),
        ("FIND THE MUG...", "find the mug"),
        ("find the mug .", "find the mug"),
        ("Ｆｉｎｄ the mug", "find the mug"),  # fullwidth letters fold under NFKC
        ("Straße", "strasse"),  # casefold, not lower
        ("find 1.5 cups", "find 1.5 cups"),
        ("café", "café"),
        ("cafe\u0301", "café"),  # combining accent composes under NFKC
    ],
)
def test_normalize_subgoal(raw: str | None, expected: str) -> None:
    assert normalize_subgoal(raw) == expected


def test_normalize_subgoal_keep_consistency() -> None:
    # whitespace after the subgoal text must not change the verdict (HAE.md §8 defect 3)
    a = parse(pe(subgoal="Go to the desk")).subgoal
    b = parse(pe(subgoal="go to   the desk.\n")).subgoal
    assert a != b
    assert normalize_subgoal(a) == normalize_subgoal(b)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_normalize_subgoal_idempotent(text: str) -> None:
    once = normalize_subgoal(text)
    assert normalize_subgoal(once) == once
