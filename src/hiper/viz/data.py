"""What the viewer shows, read from a run or an evaluation folder into one compact JSON payload.

A folder is recognised by its files: ``trajectories.jsonl`` (:class:`hiper.runs.log.
TrajectoryLog` records), ``metrics.jsonl`` (per-iteration metrics), ``config.yaml`` (a training
run) and ``report.json`` (``hiper eval --out``). At least one of the first two must be there.

The payload is built for a browser that must open and filter 10,000 trajectories quickly:

* every string (observations, responses, subgoals, task ids, ...) is stored once in a string
  table ``strings`` and referenced by index: a real run repeats the same observations and
  responses thousands of times;
* a trajectory is a list in the order of :data:`TRAJ_FIELDS` (strings as indices) and a turn a
  list in the order of :data:`TURN_FIELDS`.

Several folders can be read into one payload (``hiper view RUN_A RUN_B``): ``runs`` describes each
(its name, metrics, config, report) and every trajectory names its run by index.

Failure modes are computed here, per trajectory (:func:`failure_modes`), so the page only filters:

* ``success``: the episode was won;
* ``loop``: the executed actions repeat a cycle (:func:`find_loop`): the same action
  :data:`LOOP_REPEATS` (3) or more times in a row, or a cycle of 2 to :data:`LOOP_MAX_PERIOD` (3)
  actions played twice in a row (``a b a b``, ``a b c a b c``); actions are compared lowercased and
  whitespace-collapsed, and a turn without an action breaks a repetition;
* ``noop``: a well-formed action the environment answered with a no-op
  (:func:`is_noop_answer`: "Nothing happens." in the household and ALFWorld games, "Invalid action:
  ..." in WebShop);
* ``timeout``: a failed episode whose last turn was truncated (the environment's step limit or the
  rollout's ``max_turns``) rather than terminated;
* ``malformed``: at least one turn the parser marked invalid.

A trajectory may carry several tags (a looping episode usually also times out).

Token arrays, prompts and log-probs are left out: the viewer shows text, decisions, rewards and
the advantage each block of a response received (HAE assigns one advantage per block and turn:
A^S to the switch tokens, A^H to the subgoal tokens, A^L to the action tokens; HAE.md §5).
Everything from the model or the environment stays plain data here; the page renders it as text.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from hiper.runs.log import METRICS_FILE, TRAJECTORIES_FILE, iter_jsonl, read_jsonl
from hiper.viz.plots import learning_curves

__all__ = [
    "BLOCKS",
    "FAILURE_MODES",
    "LOOP_MAX_PERIOD",
    "LOOP_REPEATS",
    "TRAJ_FIELDS",
    "TURN_FIELDS",
    "StringTable",
    "failure_modes",
    "find_loop",
    "is_noop_answer",
    "load_view_data",
    "run_names",
    "std_companions",
]

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
    "run",
    "tags",
    "loop",
)
#: The per-trajectory tags (``tags``: a list of these, in this order); ``loop``: the looping
#: turns ``[start, end, period]`` of :func:`find_loop`, or null.
FAILURE_MODES = ("success", "loop", "noop", "timeout", "malformed")
LOOP_REPEATS = 3
LOOP_MAX_PERIOD = 3
#: Environment answers that mean "the action did nothing" (compared lowercased and stripped):
#: exact answers, and prefixes.
NOOP_ANSWERS = ("nothing happens.",)
NOOP_PREFIXES = ("invalid action:",)
#: Layout of one turn list in the payload. ``switch``: 0 none, 1 KEEP, 2 SWITCH; ``spans``: the
#: [start, end) character span of each of :data:`BLOCKS` in the response, or null; ``adv_*``:
#: the advantage the trainer gave that block (null when none: evaluation turns, a KEEP turn's
#: copied subgoal, turn 0's switch); ``noop``: 1 when the environment answered the turn's action
#: with a no-op (:func:`is_noop_answer`), else 0.
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
    "noop",
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


def is_noop_answer(observation: Any) -> bool:
    """Whether an environment answer means the action did nothing: "Nothing happens." (household,
    ALFWorld) or "Invalid action: ..." (WebShop), compared lowercased and stripped."""
    if not isinstance(observation, str):
        return False
    text = " ".join(observation.split()).lower()
    return text in NOOP_ANSWERS or text.startswith(NOOP_PREFIXES)


def _norm_action(action: Any) -> str | None:
    if not isinstance(action, str):
        return None
    a = " ".join(action.split()).lower()
    return a or None


def find_loop(actions: Iterable[Any]) -> tuple[int, int, int] | None:
    """The first loop in a sequence of executed actions, as ``(start, end, period)`` (turns
    ``start .. end-1`` repeat a cycle of ``period`` actions), or None.

    A loop is the same action :data:`LOOP_REPEATS` or more times in a row (period 1), or a cycle
    of 2 to :data:`LOOP_MAX_PERIOD` actions played at least twice in a row (``a b a b``); the span
    is extended as far as the repetition goes. Actions are compared lowercased and
    whitespace-collapsed; a missing or empty action (an unparsable turn) matches nothing. The
    earliest start wins, then the shortest period.
    """
    acts = [_norm_action(a) for a in actions]
    n = len(acts)
    best: tuple[int, int, int] | None = None
    for p in range(1, LOOP_MAX_PERIOD + 1):
        need = LOOP_REPEATS if p == 1 else 2 * p
        i = 0
        while i + p < n:
            if acts[i] is None or acts[i] != acts[i + p]:
                i += 1
                continue
            j = i
            while j + p < n and acts[j] is not None and acts[j] == acts[j + p]:
                j += 1
            # acts[i .. j+p) is p-periodic
            if j + p - i >= need and (p == 1 or len(set(acts[i : i + p])) > 1):
                cand = (i, j + p, p)
                if best is None or cand[0] < best[0]:
                    best = cand
                break  # the earliest loop of this period
            i = j + 1
    return best


def _answers(rec: Mapping[str, Any], turns: list[Mapping[str, Any]]) -> list[Any]:
    """What the environment answered to each turn's action: the next turn's observation, and the
    final observation after the last turn."""
    info = rec.get("info") if isinstance(rec.get("info"), Mapping) else {}
    return [t.get("observation") for t in turns[1:]] + [info.get("final_observation")]


def _valid(t: Mapping[str, Any]) -> bool:
    dec = t.get("decision") if isinstance(t.get("decision"), Mapping) else {}
    return dec.get("valid", False) is True


def _action(t: Mapping[str, Any]) -> Any:
    dec = t.get("decision") if isinstance(t.get("decision"), Mapping) else {}
    return dec.get("action")


def failure_modes(rec: Mapping[str, Any]) -> tuple[list[str], tuple[int, int, int] | None]:
    """The tags of one trajectory record (a subset of :data:`FAILURE_MODES`, in that order; see
    the module docstring for each definition) and its loop (:func:`find_loop`) or None."""
    turns = [t for t in rec.get("turns") or [] if isinstance(t, Mapping)]
    success = rec.get("success") is True
    loop = find_loop(_action(t) for t in turns)
    noop = any(
        _valid(t) and is_noop_answer(a) for t, a in zip(turns, _answers(rec, turns), strict=True)
    )
    last = turns[-1] if turns else {}
    last_info = last.get("info") if isinstance(last.get("info"), Mapping) else {}
    timeout = not success and (
        last.get("truncated") is True or last_info.get("truncation") in ("time_limit", "max_turns")
    )
    malformed = any(not _valid(t) for t in turns)
    flags = {
        "success": success,
        "loop": loop is not None,
        "noop": noop,
        "timeout": timeout,
        "malformed": malformed,
    }
    return [k for k in FAILURE_MODES if flags[k]], loop


def _turn(t: Mapping[str, Any], answer: Any, st: StringTable) -> list[Any]:
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
        1 if is_noop_answer(answer) else 0,
    ]


def _trajectory(rec: Mapping[str, Any], run: int, st: StringTable) -> list[Any] | None:
    turns = rec.get("turns")
    if not isinstance(turns, list):
        return None
    turns = [t for t in turns if isinstance(t, Mapping)]
    info = rec.get("info") if isinstance(rec.get("info"), Mapping) else {}
    it = rec.get("iteration")
    tags, loop = failure_modes(rec)
    return [
        it if isinstance(it, int) and not isinstance(it, bool) else -1,
        st.add(rec.get("split") or "?"),
        st.add(rec.get("task_id")),
        st.add(rec.get("task_type") or "?"),
        st.add(info.get("task")),
        1 if rec.get("success") is True else 0,
        _num(rec.get("score")),
        [_turn(t, a, st) for t, a in zip(turns, _answers(rec, turns), strict=True)],
        st.add(info.get("final_observation")),
        run,
        tags,
        list(loop) if loop else None,
    ]


def _metrics(rows: Iterable[Any]) -> dict[str, list[list[float]]]:
    """``{name: [[iteration, value], ...]}`` of every numeric metric (non-finite values dropped),
    sorted by iteration."""
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
    return {k: sorted(v, key=lambda p: p[0]) for k, v in sorted(series.items())}


def std_companions(metrics: Mapping[str, Any]) -> dict[str, str]:
    """``{metric: its "<metric>_std" companion}`` for every metric logged with one (e.g.
    ``eval/success`` -> ``eval/success_std``): the page draws them as error bars."""
    return {k: f"{k}_std" for k in metrics if f"{k}_std" in metrics}


def run_names(paths: Iterable[str | Path]) -> list[str]:
    """Short, distinct names for run folders: the folder name, with as many parent folders as it
    takes to tell them apart (``a/run``, ``b/run``); never a full path (reports get shared)."""
    parts = [Path(p).resolve().parts for p in paths]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(pp[-d:]) for pp, d in zip(parts, depth, strict=True)]
        dup = {n for n in names if names.count(n) > 1}
        grow = [i for i, n in enumerate(names) if n in dup and depth[i] < len(parts[i]) - 1]
        if not grow:
            return names
        for i in grow:
            depth[i] += 1


def _check_max(max_trajectories: Any) -> None:
    if max_trajectories is not None and (
        isinstance(max_trajectories, bool)
        or not isinstance(max_trajectories, int)
        or max_trajectories < 1
    ):
        raise ValueError(f"max_trajectories must be a positive integer, got {max_trajectories!r}")


def _folder(path: str | Path) -> tuple[Path, Path]:
    """``(folder, trajectories file)`` of a run or evaluation folder (or a trajectories file)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such run or evaluation folder: {str(p)!r}")
    folder, traj_file = (p.parent, p) if p.is_file() else (p, p / TRAJECTORIES_FILE)
    if not traj_file.is_file() and not (folder / METRICS_FILE).is_file():
        raise FileNotFoundError(
            f"{str(p)!r} is not a hiper run or evaluation folder: expected {TRAJECTORIES_FILE} "
            f"and/or {METRICS_FILE} in it (written by `hiper train` or `hiper eval --out`)"
        )
    return folder, traj_file


def _load_run(
    path: str | Path,
    name: str,
    index: int,
    st: StringTable,
    max_trajectories: int | None,
    title: str | None,
) -> tuple[dict[str, Any], list[list[Any]]]:
    folder, traj_file = _folder(path)
    metrics_file = folder / METRICS_FILE
    trajs: list[list[Any]] = []
    skipped = 0
    if traj_file.is_file():
        for rec in iter_jsonl(traj_file):
            t = _trajectory(rec, index, st) if isinstance(rec, Mapping) else None
            if t is None:
                skipped += 1
            else:
                trajs.append(t)
    if skipped:
        warnings.warn(
            f"{skipped} line(s) of {traj_file} are not trajectory records; left out", stacklevel=3
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
            warnings.warn(f"{folder / REPORT_FILE} is not valid JSON ({e}); left out", stacklevel=3)
    kind = "run" if metrics_file.is_file() or config is not None else "evaluation"
    label = title
    if label is None and config is not None:
        try:
            cfg = yaml.safe_load(config)
            label = f"{cfg['algo']['estimator']} on {cfg['env']['name']}"
        except (yaml.YAMLError, KeyError, TypeError):
            label = None
    metrics = _metrics(read_jsonl(metrics_file)) if metrics_file.is_file() else {}
    run = {
        "name": name,
        "title": label or name,
        "kind": kind,
        "trajectories": len(trajs),
        "trajectories_total": total,
        "metrics": metrics,
        "metric_std": std_companions(metrics),
        "config": config,
        "report": report,
    }
    return run, trajs


def load_view_data(
    path: str | Path | Sequence[str | Path],
    *,
    max_trajectories: int | None = None,
    title: str | None = None,
) -> dict[str, Any]:
    """The viewer payload of a run or evaluation folder (or of a ``trajectories.jsonl`` file), or
    of several, compared (a list of them: the first one's trajectories come first).

    ``max_trajectories`` keeps the *last* N trajectories of each log (the newest iterations).
    Raises FileNotFoundError naming what was expected when a path holds neither log, ValueError
    when a folder is given twice.
    """
    paths = [path] if isinstance(path, str | Path) else list(path)
    if not paths:
        raise ValueError("no run or evaluation folder given")
    _check_max(max_trajectories)
    folders = [_folder(p)[0].resolve() for p in paths]
    for i, f in enumerate(folders):
        if f in folders[:i]:
            raise ValueError(f"{str(paths[i])!r} is given twice; name each run folder once")
    names = run_names(folders)
    st = StringTable()
    runs, trajs = [], []
    for i, (p, n) in enumerate(zip(paths, names, strict=True)):
        run, tr = _load_run(p, n, i, st, max_trajectories, title if len(paths) == 1 else None)
        runs.append(run)
        trajs.extend(tr)
    first = runs[0]
    return {
        "title": first["title"] if len(runs) == 1 else f"{len(runs)} runs compared",
        "kind": first["kind"] if len(runs) == 1 else "comparison",
        "source": " · ".join(r["name"] for r in runs),  # not full paths: reports get shared
        "traj_fields": list(TRAJ_FIELDS),
        "turn_fields": list(TURN_FIELDS),
        "blocks": list(BLOCKS),
        "failure_modes": list(FAILURE_MODES),
        "strings": st.strings,
        "trajectories": trajs,
        "trajectories_total": sum(r["trajectories_total"] for r in runs),
        "runs": runs,
        "panels": learning_curves([r["metrics"] for r in runs]),
    }
