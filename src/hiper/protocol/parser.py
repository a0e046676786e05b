"""The one response parser of hiper, shared by the environment side and the trainer side.

A response in the ``plan_execute`` format is exactly three blocks, in this order::

    <switch>KEEP|SWITCH</switch>
    <subgoal>...</subgoal>
    <action>...</action>

and a response in the flat ``react`` format (the baselines) is ``<think>...</think>`` followed by
``<action>...</action>``. Whitespace before, between and after the blocks is allowed; nothing else is.

:func:`parse` never raises on a ``str`` and runs in time linear in the length of the text: it only uses
``str.find`` scans plus one single-character-class regex search (no backtracking).

How a block is located
    The span of a block runs from the first occurrence of its open tag to the end of the first
    occurrence of its close tag after that. Only the blocks of the requested format are recorded
    in :attr:`Decision.spans` and in the decision's fields. When two such spans overlap (a tag was
    nested inside another block), the innermost block wins: a span containing another one is
    dropped, and of two crossing spans the later one is dropped. So recorded spans never overlap,
    and an action nested inside a garbled block can still be executed.

Fields
    ``switch`` / ``subgoal`` / ``action`` / ``think`` are filled from every recorded block, even when
    the turn is invalid; the content is ``.strip()``-ed, so an empty block gives ``""`` (a field is
    ``None`` exactly when its block has no span). ``switch`` is normalised to ``"KEEP"`` /
    ``"SWITCH"`` (ASCII, case-insensitive) and is ``None`` for anything else.

Validity (the first problem found is reported, checked in this order)
    1. every expected block present and closed ("missing <action> block", "unclosed <subgoal>");
    2. no known tag inside a block ("nested tag inside <switch>");
    3. no expected block written twice ("repeated <action> block");
    4. no block of the other format ("unexpected <think> block");
    5. blocks in the expected order ("blocks out of order");
    6. nothing but whitespace outside the blocks ("stray </action> tag", "text outside blocks");
    7. switch is KEEP or SWITCH ("switch must be KEEP or SWITCH, got 'MAYBE'");
    8. subgoal not empty (plan_execute only), then action not empty;
    9. no CJK character anywhere ("CJK characters in response"), as in the original HiPER code.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

from hiper.types import KEEP, SWITCH, Decision

__all__ = ["FORMAT_BLOCKS", "TAGS", "normalize_subgoal", "parse"]

_BLOCK_NAMES: tuple[str, ...] = ("switch", "subgoal", "action", "think")
_OPEN: dict[str, str] = {name: f"<{name}>" for name in _BLOCK_NAMES}
_CLOSE: dict[str, str] = {name: f"</{name}>" for name in _BLOCK_NAMES}

#: Every literal tag the protocol knows (lowercase only; ``<Action>`` is plain text).
TAGS: tuple[str, ...] = tuple(tag for name in _BLOCK_NAMES for tag in (_OPEN[name], _CLOSE[name]))

#: The blocks each format expects, in the order they must appear.
FORMAT_BLOCKS: dict[str, tuple[str, ...]] = {
    "plan_execute": ("switch", "subgoal", "action"),
    "react": ("think", "action"),
}

# CJK ideographs (unified, extensions, compatibility, radicals), CJK symbols and punctuation,
# Hiragana, Katakana, Bopomofo, Hangul (jamo, compatibility jamo, syllables), enclosed and
# compatibility CJK, vertical/compatibility forms, halfwidth and fullwidth forms, kana supplement.
_CJK = re.compile(
    r"[\u1100-\u11ff\u2e80-\u2fff\u3000-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff"
    r"\ufe30-\ufe4f\uff00-\uffef\U0001b000-\U0001b16f\U00020000-\U0003ffff]"
)

_SWITCH_VALUES = {"keep": KEEP, "switch": SWITCH}
_SHOWN_SWITCH_CHARS = 30


def parse(text: str, format: Literal["plan_execute", "react"] = "plan_execute") -> Decision:
    """Parse one response into a :class:`~hiper.types.Decision`; never raises on a ``str``.

    ``format`` selects the expected blocks (see the module docstring). An unknown format or a
    non-``str`` text is a programming error and raises ``ValueError`` / ``TypeError``.
    """
    expected = FORMAT_BLOCKS.get(format) if isinstance(format, str) else None
    if expected is None:
        raise ValueError(f"unknown format {format!r}; expected one of {tuple(FORMAT_BLOCKS)}")
    if not isinstance(text, str):
        raise TypeError(f"parse() expects a str, got {type(text).__name__}")

    reason = ""

    # 1. Locate each expected block: first open tag, first close tag after it.
    raw: dict[str, tuple[int, int]] = {}
    for name in expected:
        start = text.find(_OPEN[name])
        if start < 0:
            reason = reason or f"missing <{name}> block"
            continue
        close = text.find(_CLOSE[name], start + len(_OPEN[name]))
        if close < 0:
            reason = reason or f"unclosed <{name}>"
            continue
        raw[name] = (start, close + len(_CLOSE[name]))

    # 2. Nesting: a known tag inside a block's content (judged on the raw, unresolved spans).
    if not reason:
        for name, _span in sorted(raw.items(), key=lambda item: item[1][0]):
            if _has_tag(_inner(text, name, raw)):
                reason = f"nested tag inside <{name}>"
                break

    spans = _drop_overlaps(raw)

    # 3. Repetition: the open tag occurs again after the block.
    if not reason:
        for name in expected:
            if name in raw and text.find(_OPEN[name], raw[name][1]) >= 0:
                reason = f"repeated <{name}> block"
                break

    # 4. Blocks of the other format.
    if not reason:
        for name in _BLOCK_NAMES:
            if name not in expected and (_OPEN[name] in text or _CLOSE[name] in text):
                reason = f"unexpected <{name}> block"
                break

    # 5. Order.
    if not reason:
        starts = [spans[name][0] for name in expected if name in spans]
        if starts != sorted(starts):
            reason = "blocks out of order"

    # 6. Text outside the blocks.
    if not reason:
        reason = _outside_problem(text, spans)

    # Fields, from every recorded block.
    contents = {name: _inner(text, name, spans).strip() for name in spans}
    switch: str | None = None
    if "switch" in contents:
        value = contents["switch"]
        switch = _SWITCH_VALUES.get(value.lower()) if value.isascii() else None

    # 7-8. Content checks.
    if not reason and "switch" in contents and switch is None:
        shown = contents["switch"]
        if len(shown) > _SHOWN_SWITCH_CHARS:
            shown = shown[:_SHOWN_SWITCH_CHARS] + "..."
        reason = f"switch must be KEEP or SWITCH, got {shown!r}"
    if not reason and contents.get("subgoal") == "":
        reason = "empty subgoal"
    if not reason and contents.get("action") == "":
        reason = "empty action"

    # 9. CJK anywhere in the response.
    if not reason and _CJK.search(text) is not None:
        reason = "CJK characters in response"

    return Decision(
        format=format,
        switch=switch,
        subgoal=contents.get("subgoal"),
        action=contents.get("action"),
        valid=not reason,
        reason=reason,
        think=contents.get("think"),
        spans=spans,
    )


def normalize_subgoal(text: str | None) -> str:
    """Canonical form of a subgoal for comparing subgoals as text (never as token ids).

    NFKC, casefold, every whitespace run collapsed to one space, stripped, trailing dots removed.
    ``None`` gives ``""``.
    """
    if text is None:
        return ""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(folded.split()).rstrip(". ")


def _inner(text: str, name: str, spans: dict[str, tuple[int, int]]) -> str:
    start, end = spans[name]
    return text[start + len(_OPEN[name]) : end - len(_CLOSE[name])]


def _has_tag(segment: str) -> bool:
    return "<" in segment and any(tag in segment for tag in TAGS)


def _drop_overlaps(raw: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """Keep non-overlapping spans: containers are dropped first, then later crossing spans."""
    innermost = [
        (name, (start, end))
        for name, (start, end) in raw.items()
        if not any(other != name and start < s2 and e2 <= end for other, (s2, e2) in raw.items())
    ]
    innermost.sort(key=lambda item: item[1][0])
    kept: dict[str, tuple[int, int]] = {}
    last_end = 0
    for name, (start, end) in innermost:
        if start >= last_end:
            kept[name] = (start, end)
            last_end = end
    return kept


def _outside_problem(text: str, spans: dict[str, tuple[int, int]]) -> str:
    """ "" when only whitespace lies outside the spans, else a short description."""
    position = 0
    gaps: list[str] = []
    for start, end in sorted(spans.values()):
        gaps.append(text[position:start])
        position = end
    gaps.append(text[position:])
    for gap in gaps:
        if gap.strip():
            found = [(gap.find(tag), tag) for tag in TAGS if tag in gap]
            return f"stray {min(found)[1]} tag" if found else "text outside blocks"
    return ""
