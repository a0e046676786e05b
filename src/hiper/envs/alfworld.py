"""ALFWorld: the text household games, played through the real ``textworld`` / ``alfworld`` packages.

Each task is one official ``game.tw-pddl`` file of the ALFWorld release (``json_2.1.1``)::

    json_2.1.1/{train,valid_seen,valid_unseen}/<task>-<Obj>-<MRecep>-<Recep>-<scene>/trial_*/game.tw-pddl

A game file is JSON holding the PDDL domain and problem, a text grammar (the goal sentence is baked
in) and a winning ``walkthrough``. It is played the way ``alfworld``'s own ``AlfredTWEnv`` plays it:
textworld's PDDL backend (``textworld.envs.PddlEnv``, the backend ``textworld.start`` picks for a
``.tw-pddl`` file; it drives a private copy of fast-downward's library) wrapped in ``alfworld``'s
``AlfredDemangler``, which turns the PDDL object ids into the names players see ("mug 1",
"countertop 2"). ``AlfredTWEnv`` itself is not used: it only collects games that have a
``traj_data.json`` beside them, which this data set does not ship.

* Splits: ``train`` -> ``train/``, ``eval_in_distribution`` -> ``valid_seen/``,
  ``eval_out_of_distribution`` -> ``valid_unseen/``.
* Task ids: the game's folder relative to the split folder,
  e.g. ``pick_and_place_simple-Mug-None-Shelf-1/trial_T20190906_190942_706186``; the task type is
  the prefix of the first component (one of :data:`TASK_TYPES`).
* Observations are the game's own text; the first one drops textworld's
  ``-= Welcome to TextWorld, ALFRED! =-`` banner, so it starts with "You are in the middle of a
  room" and ends with "Your task is to: ...". Actions the game does not know get the game's answer
  ("Nothing happens.") and are never an exception.
* ``info``: ``won``, ``score`` (1.0 / 0.0), ``task_type``, ``task_id``, ``task`` (the goal sentence
  without "Your task is to: "), ``gamefile``, ``steps``, ``max_steps``; ``truncation`` ("time_limit")
  when the step limit cut the episode. ``EnvStep.admissible`` is the game's admissible command list
  without "help" (as verl-agent-style setups do).
* Expert: :meth:`AlfworldEnv.expert_turn` returns the next walkthrough action as a Plan–Execute
  :class:`~hiper.envs.base.ExpertTurn`; the walkthrough is cut into phases, each ending with one key
  action (take / move / clean / heat / cool / use), and each phase gets a subgoal ("find and take
  the mug", "clean the mug", "put the mug in the shelf"): ``SWITCH`` on a phase's first action,
  ``KEEP`` after.

``textworld`` and ``alfworld`` are optional dependencies: this module (data helpers, manifests,
options) imports without them; playing a game needs them.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from hiper.envs.base import TASK_TYPES, EnvStep, ExpertTurn, Manifest, register_env

__all__ = [
    "EVAL_SPLITS",
    "SPLIT_FOLDERS",
    "TASK_TYPES",
    "AlfworldDataError",
    "AlfworldEnv",
    "AlfworldOptions",
    "Phase",
    "build_manifest",
    "default_cache_dir",
    "ensure_alfworld_data",
    "list_task_ids",
    "read_game",
    "resolve_split_dir",
    "task_type_of",
    "walkthrough_phases",
    "write_manifests",
]

AlfworldSplit = Literal["train", "eval_in_distribution", "eval_out_of_distribution"]

#: hiper split name -> folder of the official release.
SPLIT_FOLDERS: dict[str, str] = {
    "train": "train",
    "eval_in_distribution": "valid_seen",
    "eval_out_of_distribution": "valid_unseen",
}
EVAL_SPLITS: tuple[str, ...] = ("eval_in_distribution", "eval_out_of_distribution")


DATA_FOLDER = "json_2.1.1"
GAME_FILE = "game.tw-pddl"
GAME_KEYS: tuple[str, ...] = ("pddl_domain", "grammar", "pddl_problem", "walkthrough")
TASK_PREFIX = "Your task is to: "
ENDED_OBSERVATION = "The episode has ended; call reset() to start a new one."

_BANNER = re.compile(r"\A\s*-=[^\n]*=-\s*")
_TASK_LINE = re.compile(r"^" + re.escape(TASK_PREFIX) + r"(.*)$", re.MULTILINE)


class AlfworldDataError(ValueError):
    """The ALFWorld data is missing or malformed (the message names the path and what was expected)."""


# ---------------------------------------------------------------------------------------------
# Options


@dataclass(frozen=True)
class AlfworldOptions:
    """Options of the ``alfworld`` environment.

    ``data_dir``: the folder holding ``json_2.1.1/`` (as ``alfworld-download`` lays it out under
    ``$ALFWORLD_DATA``), or ``json_2.1.1`` itself, or the release tarball ``json_2.1.1.tar.gz``
    (extracted once into :func:`default_cache_dir`). ``None``: ``$ALFWORLD_DATA``.
    ``split``: ``train`` / ``eval_in_distribution`` (valid_seen) / ``eval_out_of_distribution``
    (valid_unseen). ``max_steps``: actions per episode before it is truncated.
    """

    data_dir: str | None = None
    split: AlfworldSplit = "train"
    max_steps: int = 50

    def __post_init__(self) -> None:
        if self.data_dir is not None:
            if isinstance(self.data_dir, os.PathLike):
                object.__setattr__(self, "data_dir", os.fspath(self.data_dir))
            if not isinstance(self.data_dir, str) or not self.data_dir:
                raise TypeError(
                    f"alfworld option data_dir must be a non-empty path string or None, "
                    f"got {self.data_dir!r}"
                )
        if self.split not in SPLIT_FOLDERS:
            raise ValueError(
                f"alfworld option split must be one of {sorted(SPLIT_FOLDERS)}, got {self.split!r}"
            )
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int):
            raise TypeError(f"alfworld option max_steps must be an int, got {self.max_steps!r}")
        if self.max_steps < 1:
            raise ValueError(f"alfworld option max_steps must be >= 1, got {self.max_steps}")


# ---------------------------------------------------------------------------------------------
# Data: cache, layout, game files


def default_cache_dir() -> Path:
    """``$HIPER_CACHE/alfworld`` when ``HIPER_CACHE`` is set, else ``~/.cache/hiper/alfworld``."""
    root = os.environ.get("HIPER_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "hiper"
    return base / "alfworld"


def _split_folder(split: str) -> str:
    """A hiper split name or an official folder name -> the official folder name."""
    if split in SPLIT_FOLDERS:
        return SPLIT_FOLDERS[split]
    if split in (*SPLIT_FOLDERS.values(), "valid_train"):
        return split
    raise ValueError(
        f"unknown ALFWorld split {split!r}; expected one of {sorted(SPLIT_FOLDERS)} "
        f"or a release folder (train, valid_seen, valid_unseen, valid_train)"
    )


def ensure_alfworld_data(
    tarball: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    splits: Sequence[str] = ("train", "valid_seen", "valid_unseen"),
) -> Path:
    """Extract the requested split folders of the release tarball into a cache, once.

    Returns ``<cache_dir>/json_2.1.1`` (usable as ``AlfworldOptions.data_dir``). Only the folders
    ``json_2.1.1/<split>/`` named in ``splits`` (hiper or release names) are extracted, and only
    those not already in the cache. Extraction goes to a temporary folder inside ``cache_dir`` and
    each split folder is then renamed into place, so a split folder is either complete or absent,
    also when several processes race. ``cache_dir`` defaults to :func:`default_cache_dir`.
    """
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = cache / DATA_FOLDER
    folders = list(dict.fromkeys(_split_folder(s) for s in splits))
    missing = [f for f in folders if not (root / f).is_dir()]
    if not missing:
        return root
    tarball = Path(tarball).expanduser()
    if not tarball.is_file():
        raise AlfworldDataError(
            f"ALFWorld tarball {tarball} does not exist (expected the release archive "
            f"{DATA_FOLDER}.tar.gz holding {DATA_FOLDER}/<split>/<task>/<trial>/{GAME_FILE})"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
    try:
        wanted = set(missing)
        try:
            with tarfile.open(tarball, "r:*") as archive:
                for member in archive:
                    if not member.isfile():
                        continue
                    parts = PurePosixPath(member.name).parts
                    if (
                        len(parts) < 3
                        or parts[0] != DATA_FOLDER
                        or parts[1] not in wanted
                        or any(p in ("", ".", "..") for p in parts)
                    ):
                        continue
                    dest = tmp.joinpath(*parts)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    source = archive.extractfile(member)
                    if source is None:
                        continue
                    with source, open(dest, "wb") as out:
                        shutil.copyfileobj(source, out)
        except (tarfile.TarError, OSError, EOFError) as e:
            raise AlfworldDataError(f"cannot read ALFWorld tarball {tarball}: {e}") from e
        root.mkdir(parents=True, exist_ok=True)
        for folder in missing:
            src = tmp / DATA_FOLDER / folder
            if not src.is_dir():
                raise AlfworldDataError(
                    f"ALFWorld tarball {tarball} has no {DATA_FOLDER}/{folder}/ folder "
                    f"(expected {DATA_FOLDER}/{folder}/<task>/<trial>/{GAME_FILE})"
                )
            try:
                os.rename(src, root / folder)
            except OSError:
                if not (root / folder).is_dir():  # not a lost race: a real error
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _resolve_data_root(data_dir: str | os.PathLike[str] | None, folder: str) -> Path:
    if data_dir is None:
        data_dir = os.environ.get("ALFWORLD_DATA")
        if not data_dir:
            raise AlfworldDataError(
                "no ALFWorld data: pass data_dir=... or set $ALFWORLD_DATA to the folder holding "
                f"{DATA_FOLDER}/ (or to the release tarball {DATA_FOLDER}.tar.gz)"
            )
    path = Path(os.path.expandvars(os.fspath(data_dir))).expanduser()
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return ensure_alfworld_data(path, splits=(folder,))
    if not path.exists():
        raise AlfworldDataError(
            f"ALFWorld data directory {path} does not exist (expected a folder holding "
            f"{DATA_FOLDER}/{folder}/, or {DATA_FOLDER} itself)"
        )
    if not path.is_dir():
        raise AlfworldDataError(
            f"ALFWorld data path {path} is not a directory (expected a folder holding "
            f"{DATA_FOLDER}/{folder}/, {DATA_FOLDER} itself, or the release tarball)"
        )
    if (path / DATA_FOLDER).is_dir():
        return path / DATA_FOLDER
    return path


def resolve_split_dir(data_dir: str | os.PathLike[str] | None, split: str) -> Path:
    """The folder of ``split``'s games (``.../json_2.1.1/<release folder>``), checked to exist."""
    folder = _split_folder(split)
    root = _resolve_data_root(data_dir, folder)
    split_dir = root / folder
    if not split_dir.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise AlfworldDataError(
            f"ALFWorld split folder {split_dir} does not exist (split {split!r} lives in "
            f"{DATA_FOLDER}/{folder}/; {root} holds {present or 'no folders'})"
        )
    return split_dir


def list_task_ids(split_dir: str | os.PathLike[str]) -> tuple[str, ...]:
    """Sorted task ids (``<task folder>/<trial folder>``) of the games under ``split_dir``."""
    split_dir = Path(split_dir)
    ids = sorted(
        p.parent.relative_to(split_dir).as_posix() for p in split_dir.glob(f"*/*/{GAME_FILE}")
    )
    if not ids:
        raise AlfworldDataError(
            f"no ALFWorld games under {split_dir} (expected <task>-<Obj>-<MRecep>-<Recep>-<scene>/"
            f"trial_*/{GAME_FILE} files)"
        )
    return tuple(ids)


def task_type_of(task_id: str) -> str:
    """The task type of a task id (or task folder name): the prefix before the first ``-``."""
    prefix = task_id.split("/", 1)[0].split("-", 1)[0]
    if prefix not in TASK_TYPES:
        raise AlfworldDataError(
            f"cannot read an ALFWorld task type from {task_id!r}: the folder name must start "
            f"with one of {list(TASK_TYPES)} followed by '-'"
        )
    return prefix


def read_game(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check one ``game.tw-pddl`` file (JSON with the PDDL, the grammar, a walkthrough)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise AlfworldDataError(f"ALFWorld game file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise AlfworldDataError(f"cannot read ALFWorld game file {path}: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise AlfworldDataError(
            f"ALFWorld game file {path} is not valid JSON ({e}); expected an object with keys "
            f"{list(GAME_KEYS)}"
        ) from e
    if not isinstance(data, dict):
        raise AlfworldDataError(
            f"ALFWorld game file {path} holds a JSON {type(data).__name__}, expected an object "
            f"with keys {list(GAME_KEYS)}"
        )
    missing = [k for k in GAME_KEYS if k not in data]
    if missing:
        raise AlfworldDataError(
            f"ALFWorld game file {path} lacks key(s) {missing}; expected keys {list(GAME_KEYS)}"
        )
    walkthrough = data["walkthrough"]
    if not isinstance(walkthrough, list) or not all(isinstance(a, str) for a in walkthrough):
        raise AlfworldDataError(
            f"ALFWorld game file {path}: 'walkthrough' must be a list of action strings"
        )
    for key in ("pddl_domain", "grammar", "pddl_problem"):
        if not isinstance(data[key], str):
            raise AlfworldDataError(f"ALFWorld game file {path}: {key!r} must be a string")
    return data


# ---------------------------------------------------------------------------------------------
# Manifests


def build_manifest(data_dir: str | os.PathLike[str] | None, split: str) -> Manifest:
    """The manifest of ``split`` (a hiper split name): every game's task id, sorted."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(
            f"unknown alfworld split {split!r}; expected one of {sorted(SPLIT_FOLDERS)}"
        )
    return Manifest("alfworld", split, 1, list_task_ids(resolve_split_dir(data_dir, split)))


def write_manifests(
    data_dir: str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str] | None = None,
    splits: Iterable[str] = EVAL_SPLITS,
) -> list[Path]:
    """Write ``alfworld-<split>.json`` for ``splits`` into ``out_dir`` (default: the package's
    ``manifests/`` folder); returns the paths written."""
    out = Path(out_dir) if out_dir is not None else Path(__file__).with_name("manifests")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for split in splits:
        path = out / f"alfworld-{split}.json"
        path.write_text(build_manifest(data_dir, split).to_json() + "\n", encoding="utf-8")
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# Walkthrough phases (the expert's subgoals)

#: Verbs that complete a phase of a walkthrough.
KEY_VERBS = frozenset({"take", "move", "put", "clean", "heat", "cool", "use", "slice"})
#: Receptacles one puts things *in* (the others: *on*).
_IN_RECEPTACLES = frozenset(
    {
        "bathtubbasin",
        "bowl",
        "box",
        "cabinet",
        "cup",
        "drawer",
        "fridge",
        "garbagecan",
        "laundryhamper",
        "microwave",
        "mug",
        "pan",
        "pot",
        "safe",
        "sinkbasin",
    }
)
_NUMBERED = re.compile(r"^(.*?)(?:\s+\d+)?$")


def _kind(name: str) -> str:
    """``"alarmclock 2"`` -> ``"alarmclock"``."""
    match = _NUMBERED.match(name.strip())
    return match.group(1) if match else name.strip()


@dataclass(frozen=True, slots=True)
class Phase:
    """A stretch of a walkthrough that ends with one key action, and its subgoal."""

    subgoal: str
    start: int  # index of the phase's first action in the walkthrough
    actions: tuple[str, ...]


def _subgoal(action: str, taken: set[str]) -> str:
    words = action.split()
    verb = words[0] if words else ""
    rest = " ".join(words[1:])
    if verb == "take":
        obj = _kind(rest.split(" from ", 1)[0])
        subgoal = f"find and take {'another' if obj in taken else 'the'} {obj}"
        taken.add(obj)
        return subgoal
    if verb in ("move", "put"):
        match = re.match(r"(.*?)\s+(?:to|in|on|in/on|into|onto)\s+(.*)$", rest)
        if match:
            obj, recep = _kind(match.group(1)), _kind(match.group(2))
            prep = "in" if recep in _IN_RECEPTACLES else "on"
            return f"put the {obj} {prep} the {recep}"
        return f"put the {_kind(rest)} down"
    if verb in ("clean", "heat", "cool", "slice"):
        return f"{verb} the {_kind(rest.split(' with ', 1)[0])}"
    if verb == "use":
        return f"find and use the {_kind(rest)}"
    return action


def walkthrough_phases(walkthrough: Sequence[str]) -> tuple[Phase, ...]:
    """Cut a walkthrough into phases, each ending with a key action (see :data:`KEY_VERBS`).

    ``["go to desk 1", "take mug 1 from desk 1", "go to sinkbasin 1", "clean mug 1 with sinkbasin
    1", "go to shelf 1", "move mug 1 to shelf 1"]`` -> "find and take the mug" (2 actions),
    "clean the mug" (2), "put the mug on the shelf" (2). Actions after the last key action join the
    last phase.
    """
    phases: list[Phase] = []
    taken: set[str] = set()
    start = 0
    for i, action in enumerate(walkthrough):
        verb = action.split(" ", 1)[0]
        if verb in KEY_VERBS:
            phases.append(Phase(_subgoal(action, taken), start, tuple(walkthrough[start : i + 1])))
            start = i + 1
    if start < len(walkthrough):
        tail = tuple(walkthrough[start:])
        if phases:
            last = phases[-1]
            phases[-1] = Phase(last.subgoal, last.start, last.actions + tail)
        else:
            phases.append(Phase("complete the task", start, tail))
    return tuple(phases)


# ---------------------------------------------------------------------------------------------
# The environment


def _textworld_modules() -> tuple[Any, Any]:
    """``(textworld, AlfredDemangler)``, with an install hint when they are missing."""
    try:
        import textworld
        import textworld.envs
        from alfworld.agents.environment.alfred_tw_env import AlfredDemangler
    except ImportError as e:
        raise ImportError(
            "the alfworld environment plays games with the 'textworld' and 'alfworld' packages "
            f"(missing: {e.name or e}); install hiper's alfworld extra, or: pip install --no-deps "
            "alfworld==0.4.2 textworld==1.7.0 tatsu==5.8.3 fast-downward-textworld jericho "
            "mementos termcolor (plus numpy, networkx, tqdm)"
        ) from e
    return textworld, AlfredDemangler


def _strip_banner(text: str) -> str:
    return _BANNER.sub("", text, count=1)


class AlfworldEnv:
    """One ALFWorld player: a textworld PDDL game with alfworld's object names (see module doc)."""

    family = "household"

    def __init__(self, options: AlfworldOptions | None = None) -> None:
        self.options = options if options is not None else AlfworldOptions()
        self.split_dir = resolve_split_dir(self.options.data_dir, self.options.split)
        self.task_ids: tuple[str, ...] = list_task_ids(self.split_dir)
        self._known = frozenset(self.task_ids)
        self._rng = random.Random(0)
        self._tw: Any = None  # the textworld environment, created on the first reset
        self._loaded: Path | None = None  # game file the textworld environment holds
        self._task_id: str | None = None
        self._walkthrough: tuple[str, ...] = ()
        self._phases: tuple[Phase, ...] = ()
        self._phase_of: tuple[int, ...] = ()
        self._wt_index = 0
        self._steps = 0
        self._done = False
        self._last: EnvStep | None = None
        self._info: dict[str, Any] = {}

    # -- tasks ------------------------------------------------------------------------------

    def game_path(self, task_id: str) -> Path:
        if task_id not in self._known:
            raise ValueError(
                f"unknown alfworld task id {task_id!r} for split {self.options.split!r} "
                f"(games under {self.split_dir}; e.g. {self.task_ids[0]!r})"
            )
        return self.split_dir / task_id / GAME_FILE

    def walkthrough(self, task_id: str | None = None) -> tuple[str, ...]:
        """The winning action list of ``task_id`` (default: the current task)."""
        if task_id is None:
            if self._task_id is None:
                raise RuntimeError("no current task: call reset() first or pass a task_id")
            return self._walkthrough
        return tuple(read_game(self.game_path(task_id))["walkthrough"])

    # -- episode ----------------------------------------------------------------------------

    def reset(self, task_id: str | None = None, seed: int | None = None) -> EnvStep:
        """Start ``task_id``; else a game chosen by ``seed``; else the env's own (seeded) RNG."""
        self._last = None  # until this reset succeeds, step() refuses to run
        if task_id is None:
            rng = random.Random(seed) if seed is not None else self._rng
            task_id = rng.choice(self.task_ids)
        path = self.game_path(task_id)
        game = read_game(path)
        task_type = task_type_of(task_id)
        state = self._reset_game(path, game)

        observation = _strip_banner(state.feedback or "")
        match = _TASK_LINE.search(observation)
        if match is None:
            raise AlfworldDataError(
                f"ALFWorld game {path}: the first observation has no '{TASK_PREFIX}...' line"
            )
        self._task_id = task_id
        self._walkthrough = tuple(game["walkthrough"])
        self._phases = walkthrough_phases(self._walkthrough)
        self._phase_of = tuple(k for k, phase in enumerate(self._phases) for _ in phase.actions)
        self._wt_index = 0
        self._steps = 0
        self._done = False
        self._info = {
            "won": False,
            "score": 0.0,
            "task_type": task_type,
            "task_id": task_id,
            "task": match.group(1).strip(),
            "gamefile": str(path),
            "steps": 0,
            "max_steps": self.options.max_steps,
        }
        self._last = EnvStep(
            observation=observation,
            admissible=self._admissible(state),
            info=dict(self._info),
        )
        return self._last

    def step(self, action: str) -> EnvStep:
        if self._tw is None or self._last is None:
            raise RuntimeError("call reset() before step()")
        if self._done:
            return EnvStep(
                observation=ENDED_OBSERVATION,
                admissible=(),
                reward=0.0,
                terminated=self._last.terminated,
                truncated=self._last.truncated,
                info=dict(self._last.info),
            )
        if not isinstance(action, str):
            action = str(action)
        state, _, _ = self._tw.step(action)
        self._steps += 1
        if (
            self._wt_index < len(self._walkthrough)
            and action.strip() == self._walkthrough[self._wt_index]
        ):
            self._wt_index += 1
        won = bool(state.get("won"))
        lost = bool(state.get("lost"))
        terminated = won or lost
        truncated = not terminated and self._steps >= self.options.max_steps
        info = dict(self._info, won=won, score=1.0 if won else 0.0, steps=self._steps)
        if truncated:
            info["truncation"] = "time_limit"
        self._done = terminated or truncated
        self._last = EnvStep(
            observation=state.feedback or "",
            admissible=self._admissible(state),
            reward=1.0 if won else 0.0,
            terminated=terminated,
            truncated=truncated,
            info=info,
        )
        return self._last

    def expert_turn(self) -> ExpertTurn:
        """The next walkthrough action with its phase's subgoal (valid along the walkthrough).

        The position advances when a step's action equals the next walkthrough action; actions
        that leave the walkthrough's path can make the remaining walkthrough inapplicable.
        """
        if self._last is None:
            raise RuntimeError("call reset() before expert_turn()")
        if self._done:
            raise RuntimeError("the episode has ended; call reset() first")
        i = self._wt_index
        if i >= len(self._walkthrough):
            raise RuntimeError(
                f"the walkthrough of {self._task_id} is exhausted ({len(self._walkthrough)} actions) "
                "but the game is not won"
            )
        phase = self._phases[self._phase_of[i]]
        return ExpertTurn(
            "SWITCH" if i == phase.start else "KEEP", phase.subgoal, self._walkthrough[i]
        )

    def close(self) -> None:
        # textworld's PddlEnv keeps its private copy of fast-downward's library loaded; it is
        # released with the process (unloading it by hand crashes the interpreter at exit).
        if self._tw is not None:
            self._tw.close()
        self._tw = None
        self._loaded = None
        self._last = None

    # -- internals --------------------------------------------------------------------------

    def _reset_game(self, path: Path, game: dict[str, Any]) -> Any:
        """Load ``game`` (the parsed ``path``) into the textworld environment and reset it.

        This is what ``textworld.start(path, infos, wrappers=[AlfredDemangler(), ...])`` does for a
        ``.tw-pddl`` file, except that the already-parsed game is handed to ``PddlEnv.load`` (it
        takes a path or the mapping), so the file is read once. One textworld environment (one
        fast-downward library copy) serves every game this env plays; a new game is ``load``-ed,
        the same game only ``reset``.
        """
        if self._tw is None:
            textworld, demangler = _textworld_modules()
            request = textworld.EnvInfos(won=True, lost=True, admissible_commands=True)
            # PddlEnv raises ImportError when fast-downward (textworld[pddl]) is missing
            self._tw = demangler(shuffle=False)(textworld.envs.PddlEnv(request))
        try:
            if self._loaded != path:
                self._loaded = None
                self._tw.load(game)
                self._loaded = path
            return self._tw.reset()
        except Exception as e:
            self._loaded = None
            raise AlfworldDataError(f"textworld could not load ALFWorld game {path}: {e!r}") from e

    @staticmethod
    def _admissible(state: Any) -> tuple[str, ...]:
        return tuple(c for c in state.get("admissible_commands") or () if c != "help")


@register_env("alfworld", AlfworldOptions)
def make_alfworld(options: AlfworldOptions) -> AlfworldEnv:
    return AlfworldEnv(options)
