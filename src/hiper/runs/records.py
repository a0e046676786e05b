"""Trajectories as JSON records (``trajectories.jsonl``, the viewer) and the JSON conversion rule.

:func:`trajectory_to_dict` / :func:`trajectory_from_dict` round-trip a
:class:`~hiper.types.Trajectory` exactly through JSON text, for every typed field:

* numpy arrays (``prompt_ids``, ``response_ids``, ``logprobs``) become
  ``{"dtype": "int64", "shape": [n], "data": [...]}`` and come back with the same dtype, shape and
  bit-identical values (float32 values survive the trip through a Python float exactly);
* non-finite floats in typed float fields (``reward``, ``score``, ``switch_prob``, float array
  elements) are written as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` and restored,
  so the text is strict JSON; ``switch_prob=None`` stays ``None`` (``null``);
* ``Decision.spans`` / ``Turn.token_spans`` (``dict[str, tuple[int, int]]``) become
  ``{name: [start, end]}`` and come back as tuples; ``admissible`` comes back as a tuple;
* strings are kept as they are: unicode, control characters, ``<script>``, lone surrogates
  (:func:`dumps_json` escapes what UTF-8 cannot carry).

``info`` dicts (trajectory and turn) are untyped, so they go through :func:`to_jsonable`, one fixed
rule: JSON-native values (``dict`` with ``str`` keys, ``list``, ``str``, ``int``, finite ``float``,
``bool``, ``None``) are kept and round-trip exactly; numpy scalars / arrays and torch tensors become
Python numbers / nested lists; tuples become lists, sets sorted lists; non-finite floats become
``null``; non-string dict keys become their JSON text (``1 -> "1"``); dataclasses become dicts of
their fields, enums their value, paths and other objects ``str(x)``, bytes UTF-8 text (invalid
bytes replaced). The round trip of such a value gives its converted form.

Per-turn extras a trainer computes for the viewer (advantages, shaped rewards, ...) are merged
into the recorded turn ``info`` (``extras=`` of :func:`trajectory_to_dict`), so they come back as
``Turn.info["adv_action"]`` etc.; an extra with the same name as an ``info`` key replaces it in
the record.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np

from hiper.types import Decision, Trajectory, Turn

__all__ = [
    "RECORD_VERSION",
    "dumps_json",
    "to_jsonable",
    "trajectory_from_dict",
    "trajectory_to_dict",
    "turn_from_dict",
    "turn_to_dict",
]

#: Version of the trajectory record layout (key ``"version"`` of each record).
RECORD_VERSION = 1

_NONFINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_ARRAY_FIELDS = ("prompt_ids", "response_ids", "logprobs")
_ARRAY_KINDS = "biuf"  # bool, signed int, unsigned int, float


# ---------------------------------------------------------------------------------------------
# The JSON conversion rule


def to_jsonable(x: Any) -> Any:
    """``x`` converted to JSON-native values by the rule in the module docstring.

    JSON-native input is returned unchanged in value (containers are copied). A container that
    contains itself is cut at the cycle (the inner reference becomes ``"<cycle>"``).
    """
    return _jsonable(x, set())


def _jsonable(x: Any, stack: set[int]) -> Any:
    if x is None or isinstance(x, bool):
        return x
    if isinstance(x, str):
        return x if type(x) is str else str.__str__(x)
    if isinstance(x, enum.Enum):
        return _jsonable(x.value, stack)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.generic):
        return _jsonable(x.item(), stack)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist(), stack)
    if _is_tensor(x):
        return _jsonable(x.detach().cpu().tolist(), stack)
    if isinstance(x, bytes | bytearray | memoryview):
        return bytes(x).decode("utf-8", errors="replace")
    if isinstance(x, PathLike):
        return str(x)
    if isinstance(x, Mapping | list | tuple | set | frozenset) or (
        dataclasses.is_dataclass(x) and not isinstance(x, type)
    ):
        if id(x) in stack:
            return "<cycle>"
        stack.add(id(x))
        try:
            if isinstance(x, Mapping):
                return {_key(k): _jsonable(v, stack) for k, v in x.items()}
            if isinstance(x, list | tuple):
                return [_jsonable(v, stack) for v in x]
            if isinstance(x, set | frozenset):
                items = [_jsonable(v, stack) for v in x]
                return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
            return {f.name: _jsonable(getattr(x, f.name), stack) for f in dataclasses.fields(x)}
        finally:
            stack.discard(id(x))
    return str(x)


def _key(k: Any) -> str:
    if isinstance(k, str):
        return k if type(k) is str else str.__str__(k)
    return json.dumps(to_jsonable(k), sort_keys=True)


def _is_tensor(x: Any) -> bool:
    return hasattr(x, "detach") and hasattr(x, "tolist") and hasattr(x, "cpu")


def dumps_json(obj: Any) -> str:
    """One line of strict JSON (no NaN, no newline) for ``obj``.

    ``obj`` is written as is when it is JSON-native; otherwise it is converted with
    :func:`to_jsonable` first. Non-ASCII text is kept readable; a string UTF-8 cannot encode
    (a lone surrogate) makes the whole line ASCII-escaped, so any Python string round-trips.
    U+2028/U+2029 are escaped so line-oriented tools never split a record.
    """
    try:
        text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = json.dumps(
            to_jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":")
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(
            json.loads(text), ensure_ascii=True, allow_nan=False, separators=(",", ":")
        )
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


# ---------------------------------------------------------------------------------------------
# Typed fields


def _enc_float(x: Any) -> Any:
    if x is None:
        return None
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, int | np.integer):
        return int(x)
    f = float(x)
    if math.isfinite(f):
        return f
    return "NaN" if math.isnan(f) else ("Infinity" if f > 0 else "-Infinity")


def _dec_float(x: Any, what: str) -> Any:
    if isinstance(x, str):
        try:
            return _NONFINITE_TEXT[x]
        except KeyError:
            raise ValueError(f"{what}: expected a number, got the string {x!r}") from None
    return x


def _enc_array(a: Any, what: str) -> dict[str, Any] | None:
    if a is None:
        return None
    arr = np.asarray(a)
    if arr.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(
            f"{what}: cannot record an array of dtype {arr.dtype} (expected bool, int or float)"
        )
    flat = arr.reshape(-1)
    if arr.dtype.kind == "f" and not np.isfinite(flat).all():
        data = [_enc_float(v) for v in flat.tolist()]
    else:
        data = flat.tolist()
    return {"dtype": arr.dtype.name, "shape": list(arr.shape), "data": data}


def _dec_array(d: Any, what: str) -> np.ndarray | None:
    if d is None:
        return None
    if not isinstance(d, Mapping) or "dtype" not in d or "data" not in d:
        raise ValueError(f"{what}: expected {{'dtype', 'shape', 'data'}}, got {type(d).__name__}")
    dtype = np.dtype(d["dtype"])
    data = d["data"]
    if dtype.kind == "f":
        data = [_dec_float(v, what) for v in data]
    arr = np.array(data, dtype=dtype)
    shape = d.get("shape")
    return arr.reshape(shape) if shape is not None else arr


def _enc_spans(spans: Mapping[str, Sequence[int]] | None) -> dict[str, list[int]] | None:
    if spans is None:
        return None
    return {str(k): [int(v) for v in span] for k, span in spans.items()}


def _dec_spans(d: Mapping[str, Sequence[int]] | None) -> dict[str, tuple[int, ...]] | None:
    if d is None:
        return None
    return {k: tuple(int(v) for v in span) for k, span in d.items()}


def _decision_to_dict(dec: Decision) -> dict[str, Any]:
    return {
        "format": dec.format,
        "switch": dec.switch,
        "subgoal": dec.subgoal,
        "action": dec.action,
        "valid": bool(dec.valid),
        "reason": dec.reason,
        "think": dec.think,
        "spans": _enc_spans(dec.spans),
    }


def _decision_from_dict(d: Mapping[str, Any]) -> Decision:
    return Decision(
        format=d["format"],
        switch=d.get("switch"),
        subgoal=d.get("subgoal"),
        action=d.get("action"),
        valid=bool(d["valid"]),
        reason=d.get("reason", ""),
        think=d.get("think"),
        spans=_dec_spans(d.get("spans")) or {},
    )


# ---------------------------------------------------------------------------------------------
# Turns and trajectories


def turn_to_dict(
    turn: Turn, *, with_tokens: bool = True, extras: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-native dict for one turn; ``extras`` are merged into its ``info`` (they win)."""
    info = to_jsonable(turn.info) if turn.info else {}
    if not isinstance(info, dict):
        raise TypeError(f"Turn.info must be a dict, got {type(turn.info).__name__}")
    if extras:
        info.update(to_jsonable(dict(extras)))
    d: dict[str, Any] = {
        "observation": turn.observation,
        "response_text": turn.response_text,
        "decision": _decision_to_dict(turn.decision),
        "reward": _enc_float(turn.reward),
        "terminated": bool(turn.terminated),
        "truncated": bool(turn.truncated),
        "switch_prob": _enc_float(turn.switch_prob),
        "subgoal": turn.subgoal,
        "token_spans": _enc_spans(turn.token_spans),
        "admissible": [str(a) for a in turn.admissible],
        "info": info,
    }
    if with_tokens:
        for name in _ARRAY_FIELDS:
            d[name] = _enc_array(getattr(turn, name), f"Turn.{name}")
    return d


def turn_from_dict(d: Mapping[str, Any]) -> Turn:
    """The :class:`Turn` of :func:`turn_to_dict`; token arrays absent from the record are None."""
    return Turn(
        observation=d["observation"],
        response_text=d["response_text"],
        decision=_decision_from_dict(d["decision"]),
        reward=_dec_float(d.get("reward", 0.0), "Turn.reward"),
        terminated=bool(d.get("terminated", False)),
        truncated=bool(d.get("truncated", False)),
        prompt_ids=_dec_array(d.get("prompt_ids"), "Turn.prompt_ids"),
        response_ids=_dec_array(d.get("response_ids"), "Turn.response_ids"),
        logprobs=_dec_array(d.get("logprobs"), "Turn.logprobs"),
        switch_prob=_dec_float(d.get("switch_prob"), "Turn.switch_prob"),
        subgoal=d.get("subgoal"),
        token_spans=_dec_spans(d.get("token_spans")),
        admissible=tuple(d.get("admissible", ())),
        info=dict(d.get("info") or {}),
    )


def trajectory_to_dict(
    tr: Trajectory,
    *,
    with_tokens: bool = True,
    extras: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """A JSON-native dict for one trajectory (see the module docstring).

    ``with_tokens=False`` leaves out the token arrays (``prompt_ids``, ``response_ids``,
    ``logprobs``), by far the largest part; they come back as None. ``extras``: a mapping merged
    into the trajectory ``info``, or a sequence with one mapping (or None) per turn, merged into
    that turn's ``info``.
    """
    turn_extras: Sequence[Mapping[str, Any] | None] = [None] * len(tr.turns)
    info = to_jsonable(tr.info) if tr.info else {}
    if not isinstance(info, dict):
        raise TypeError(f"Trajectory.info must be a dict, got {type(tr.info).__name__}")
    if isinstance(extras, Mapping):
        info.update(to_jsonable(dict(extras)))
    elif extras is not None:
        if isinstance(extras, str | bytes) or not isinstance(extras, Sequence):
            raise TypeError(
                "extras must be a mapping (trajectory level) or a sequence of per-turn mappings, "
                f"got {type(extras).__name__}"
            )
        if len(extras) != len(tr.turns):
            raise ValueError(
                f"trajectory {tr.task_id!r} has {len(tr.turns)} turns but {len(extras)} per-turn "
                "extras were given"
            )
        turn_extras = extras
    return {
        "version": RECORD_VERSION,
        "task_id": tr.task_id,
        "task_type": tr.task_type,
        "group_id": tr.group_id,
        "success": bool(tr.success),
        "score": _enc_float(tr.score),
        "info": info,
        "turns": [
            turn_to_dict(t, with_tokens=with_tokens, extras=e)
            for t, e in zip(tr.turns, turn_extras, strict=True)
        ],
    }


def trajectory_from_dict(d: Mapping[str, Any]) -> Trajectory:
    """The :class:`Trajectory` of :func:`trajectory_to_dict` (keys it does not know, such as a
    log line's ``iteration`` and ``split``, are ignored)."""
    if not isinstance(d, Mapping):
        raise TypeError(f"a trajectory record must be a dict, got {type(d).__name__}")
    version = d.get("version", RECORD_VERSION)
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise ValueError(
            f"trajectory record version {version!r} is newer than this hiper reads "
            f"({RECORD_VERSION}); upgrade hiper"
        )
    try:
        turns = [turn_from_dict(t) for t in d["turns"]]
        return Trajectory(
            task_id=d["task_id"],
            turns=turns,
            task_type=d.get("task_type", ""),
            group_id=d.get("group_id"),
            success=bool(d.get("success", False)),
            score=_dec_float(d.get("score", 0.0), "Trajectory.score"),
            info=dict(d.get("info") or {}),
        )
    except KeyError as e:
        raise ValueError(f"not a trajectory record: missing key {e.args[0]!r}") from None
