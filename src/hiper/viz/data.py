"""What the viewer shows, read from a run or an evaluation folder into one compact JSON payload.

A folder is recognised by its files: ``trajectories.jsonl`` (:class:`hiper.runs.log.
TrajectoryLog` records), ``metrics.jsonl`` (per-iteration metrics), ``config.yaml`` (a training
run) and ``report.json`` (``hiper eval --out``). At least one of the first two must be there.

The payload is built for a browser that must open and filter 10,000 trajectories quickly:

* every string (observations, responses, subgoals, task ids, ...) is stored once in a string
  table ``strings`` and referenced by index: a real run repeats the same observations and
  responses thousands of times;
* a trajectory is a list ``[iteration, split, task_id, task_type, goal, success, score, turns,
  final_observation]`` (strings as indices) and a turn a list in the order of :data:`TURN_FIELDS`.

Token arrays, prompts and log-probs are left out: the viewer shows text, decisions, rewards and
the advantage each block of a response received (HAE assigns one advantage per block and turn:
A^S to the switch tokens, A^H to the subgoal tokens, A^L to the action tokens; HAE.md §5).
Everything from the model or the environment stays plain data here; the page renders it as text.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from hiper.runs.log import METRICS_FILE, TRAJECTORIES_FILE, iter_jsonl, read_jsonl

__all__ = ["BLOCKS", "TRAJ_FIELDS", "TURN_FIELDS", "StringTable", "load_view_data"]

REPORT_FILE = "report.json"
CONFIG_FILE = "config.yaml"

#: Layout of one trajectory list in the payload.
TRAJ_FIELDS = (
    "iteration",
    "split",
    "task_id",
    "task_type",
    "goal",
    "success",
    "score",
    "turns",
    "final_observation",
)
#: Layout of one turn list in the payload. ``switch``: 0 none, 1 KEEP, 2 SWITCH; ``spans``: the
#: [start, end) character span of each of :data:`BLOCKS` in the response, or null; ``adv_*``:
#: the advantage the trainer gave that block (null when none: evaluation turns, a KEEP turn's
#: copied subgoal, turn 0's switch).
TURN_FIELDS = (
    "observation",
    "response",
    "switch",
    "subgoal",
    "action",
    "valid",
    "reason",
    "reward",
    "spans",
    "adv_switch",
    "adv_subgoal",
    "adv_action",
    "shaped_reward",
    "current_subgoal",
    "switch_prob",
)
BLOCKS = ("think", "switch", "subgoal", "action")
_SWITCH_CODE = {"KEEP": 1, "SWITCH": 2}


class StringTable:
    """Interns strings: :meth:`add` returns the index of ``text`` in :attr:`strings`."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, text: Any) -> int:
        s = "" if text is None else text if isinstance(text, str) else str(text)
        i = self._index.get(s)
        if i is None:
            i = self._index[s] = len(self.strings)
            self.strings.append(s)
        return i


def _num(x: Any) -> float | None:
    """A finite float, or None (missing, null, "NaN" text, non-numbers)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _spans(d: Any, text_len: int) -> list[list[int] | None] | None:
    if not isinstance(d, Mapping):
        return None
    out: list[list[int] | None] = []
    for name in BLOCKS:
        s = d.get(name)
        ok = (
            isinstance(s, list | tuple)
            and len(s) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in s)
            and 0 <= s[0] <= s[1] <= text_len
        )
        out.append([int(s[0]), int(s[1])] if ok else None)
    return out if any(out) else None


def _turn(t: Mapping[str, Any], st: StringTable) -> list[Any]:
    dec = t.get("decision") if isinstance(t.get("decision"), Mapping) else {}
    info = t.get("info") if isinstance(t.get("info"), Mapping) else {}
    response = t.get("response_text")
    response = response if isinstance(response, str) else ""
    return [
        st.add(t.get("observation")),
        st.add(response),
        _SWITCH_CODE.get(dec.get("switch"), 0),
        st.add(dec.get("subgoal")),
        st.add(dec.get("action")),
        1 if dec.get("valid", False) is True else 0,
        st.add(dec.get("reason")),
        _num(t.get("reward")),
        _spans(dec.get("spans"), len(response)),
        _num(info.get("adv_switch")),
        _num(info.get("adv_subgoal")),
        _num(info.get("adv_action")),
        _num(info.get("shaped_reward")),
        st.add(t.get("subgoal")),
        _num(t.get("switch_prob")),
    ]


def _trajectory(rec: Mapping[str, Any], st: StringTable) -> list[Any] | None:
    turns = rec.get("turns")
    if not isinstance(turns, list):
        return None
    info = rec.get("info") if isinstance(rec.get("info"), Mapping) else {}
    it = rec.get("iteration")
    return [
        it if isinstance(it, int) and not isinstance(it, bool) else -1,
        st.add(rec.get("split") or "?"),
        st.add(rec.get("task_id")),
        st.add(rec.get("task_type") or "?"),
        st.add(info.get("task")),
        1 if rec.get("success") is True else 0,
        _num(rec.get("score")),
        [_turn(t, st) for t in turns if isinstance(t, Mapping)],
        st.add(info.get("final_observation")),
    ]


def _metrics(rows: Iterable[Any]) -> dict[str, list[list[float]]]:
    """``{name: [[iteration, value], ...]}`` of every numeric metric (non-finite values dropped)."""
    series: dict[str, list[list[float]]] = {}
    for r in rows:
        if not isinstance(r, Mapping) or not isinstance(r.get("iteration"), int):
            continue
        for k, v in r.items():
            if k in ("iteration", "wall_time"):
                continue
            x = _num(v)
            if x is not None:
                series.setdefault(str(k), []).append([r["iteration"], x])
    return series


def load_view_data(
    path: str | Path, *, max_trajectories: int | None = None, title: str | None = None
) -> dict[str, Any]:
    """The viewer payload of a run or evaluation folder (or of a ``trajectories.jsonl`` file).

    ``max_trajectories`` keeps the *last* N trajectories of the log (the newest iterations).
    Raises FileNotFoundError naming what was expected when ``path`` holds neither log.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such run or evaluation folder: {str(p)!r}")
    if max_trajectories is not None and (
        isinstance(max_trajectories, bool)
        or not isinstance(max_trajectories, int)
        or max_trajectories < 1
    ):
        raise ValueError(f"max_trajectories must be a positive integer, got {max_trajectories!r}")
    folder, traj_file = (p.parent, p) if p.is_file() else (p, p / TRAJECTORIES_FILE)
    metrics_file = folder / METRICS_FILE
    if not traj_file.is_file() and not metrics_file.is_file():
        raise FileNotFoundError(
            f"{str(p)!r} is not a hiper run or evaluation folder: expected {TRAJECTORIES_FILE} "
            f"and/or {METRICS_FILE} in it (written by `hiper train` or `hiper eval --out`)"
        )
    st = StringTable()
    trajs: list[list[Any]] = []
    skipped = 0
    if traj_file.is_file():
        for rec in iter_jsonl(traj_file):
            t = _trajectory(rec, st) if isinstance(rec, Mapping) else None
            if t is None:
                skipped += 1
            else:
                trajs.append(t)
    if skipped:
        warnings.warn(
            f"{skipped} line(s) of {traj_file} are not trajectory records; left out", stacklevel=2
        )
    total = len(trajs)
    if max_trajectories is not None and total > max_trajectories:
        trajs = trajs[-max_trajectories:]
    config = (folder / CONFIG_FILE).read_text() if (folder / CONFIG_FILE).is_file() else None
    report = None
    if (folder / REPORT_FILE).is_file():
        try:
            report = json.loads((folder / REPORT_FILE).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            warnings.warn(f"{folder / REPORT_FILE} is not valid JSON ({e}); left out", stacklevel=2)
    kind = "run" if metrics_file.is_file() or config is not None else "evaluation"
    name = title
    if name is None and config is not None:
        try:
            cfg = yaml.safe_load(config)
            name = f"{cfg['algo']['estimator']} on {cfg['env']['name']}"
        except (yaml.YAMLError, KeyError, TypeError):
            name = None
    return {
        "title": name or folder.resolve().name,
        "kind": kind,
        "source": folder.resolve().name,  # not the full path: reports get shared
        "traj_fields": list(TRAJ_FIELDS),
        "turn_fields": list(TURN_FIELDS),
        "blocks": list(BLOCKS),
        "strings": st.strings,
        "trajectories": trajs,
        "trajectories_total": total,
        "metrics": _metrics(read_jsonl(metrics_file)) if metrics_file.is_file() else {},
        "config": config,
        "report": report,
    }
