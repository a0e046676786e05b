"""Task types, task ids, scenario generation and task sentences.

A task id ``household/<split>/<kind>/<seed>`` fully determines an episode: ``kind`` is one of the
six ALFWorld task types (:data:`TASK_TYPES`) or ``chain<k>`` (1 ≤ k ≤ :data:`MAX_CHAIN_DEPTH`).
A string derived from the id (:func:`generator_seed`; the id itself for ``train`` and
``eval_in_distribution``) seeds the generator, so the same seed under two splits or two kinds
gives unrelated episodes.

Splits (:data:`SPLITS`) differ in the rooms they draw from (:data:`SPLIT_FAMILY` and
:data:`SPLIT_LAYOUTS`; see :mod:`.world`):

``train``
    the training rooms (layouts 0..63) of the ``seen`` templates.
``eval_in_distribution``
    the same rooms as ``train``; new placements and goals (ALFWorld's ``valid_seen``).
``eval_out_of_distribution``
    held-out rooms (layouts 64..79) of the ``seen`` templates: receptacle sets, counts and order
    no training room has, built only from the training vocabulary: every receptacle and object
    type it shows also occurs in ``train`` (ALFWorld's ``valid_unseen``: unseen scenes, known
    object classes). Since household manifest version 2; before, this name meant what is now
    ``eval_novel_objects``.
``eval_novel_objects``
    the ``unseen`` templates, whose rooms always hold receptacle types, and whose object pools
    hold object types, that ``train`` never shows: a test of words the agent never saw. Its
    episodes are exactly the version-1 ``eval_out_of_distribution`` episodes:
    ``household/eval_novel_objects/<kind>/<seed>`` is seeded with the old id
    ``household/eval_out_of_distribution/<kind>/<seed>``.

Every task is a sequence of :class:`Subtask` (one for the six types, k for ``chain<k>``). A chain
is a list of ordinary subtasks in one room with distinct object types, to be done in order: a
subtask only counts once every earlier one is done (see :func:`satisfied`), so the horizon grows
with k and each subtask decomposes into the natural phases "find X / transform X / put X in R".
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hiper.envs.base import TASK_TYPES
from hiper.envs.household.world import (
    FAMILIES,
    HELD_OUT_LAYOUTS,
    LAYOUTS_PER_TEMPLATE,
    OBJECTS,
    RECEPTACLES,
    TEMPLATES,
    Layout,
    build_layout,
    get_layout,
)

__all__ = [
    "MAX_CHAIN_DEPTH",
    "SPLITS",
    "SPLIT_FAMILY",
    "SPLIT_LAYOUTS",
    "TASK_TYPES",
    "Scenario",
    "Subtask",
    "custom_scenario",
    "generator_seed",
    "make_scenario",
    "parse_task_id",
    "plural",
    "task_id",
]

SIMPLE, LOOK, CLEAN, HEAT, COOL, TWO = TASK_TYPES

SPLITS: tuple[str, ...] = (
    "train",
    "eval_in_distribution",
    "eval_out_of_distribution",
    "eval_novel_objects",
)
#: The template family each split draws its rooms from.
SPLIT_FAMILY: dict[str, str] = {
    "train": "seen",
    "eval_in_distribution": "seen",
    "eval_out_of_distribution": "seen",
    "eval_novel_objects": "unseen",
}
_TRAINING_ROOMS = range(LAYOUTS_PER_TEMPLATE)
_HELD_OUT_ROOMS = range(LAYOUTS_PER_TEMPLATE, LAYOUTS_PER_TEMPLATE + HELD_OUT_LAYOUTS)
#: The layout numbers each split draws from (of every template of its family).
SPLIT_LAYOUTS: dict[str, range] = {
    "train": _TRAINING_ROOMS,
    "eval_in_distribution": _TRAINING_ROOMS,
    "eval_out_of_distribution": _HELD_OUT_ROOMS,
    "eval_novel_objects": _TRAINING_ROOMS,
}
#: The split name in the generator seed, where it is not the split itself: eval_novel_objects
#: replays the version-1 eval_out_of_distribution episodes, and the new eval_out_of_distribution
#: gets its own seed string so that its episodes are not correlated with those.
_SEED_SPLIT: dict[str, str] = {
    "eval_out_of_distribution": "eval_out_of_distribution-v2",
    "eval_novel_objects": "eval_out_of_distribution",
}
MAX_CHAIN_DEPTH = 6

#: The appliance each transforming task type needs, and the object flag it sets.
APPLIANCE: dict[str, str] = {CLEAN: "sinkbasin", HEAT: "microwave", COOL: "fridge"}
VERB: dict[str, str] = {CLEAN: "clean", HEAT: "heat", COOL: "cool"}
ADJECTIVE: dict[str, str] = {CLEAN: "clean", HEAT: "hot", COOL: "cool"}

_IRREGULAR = {"knife": "knives", "butterknife": "butterknives", "box": "boxes", "cd": "cds"}


def plural(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith(("o", "s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _article(noun: str) -> str:
    return "an" if noun[0] in "aeiou" else "a"


@dataclass(frozen=True, slots=True)
class Subtask:
    """One goal: ``kind`` on objects of type ``obj``, destination type ``recep`` (None for LOOK)."""

    kind: str
    obj: str
    recep: str | None = None
    lamp: str = "desklamp"

    def sentence(self) -> str:
        """ALFWorld-style goal sentence: ``put a clean mug in cabinet.``"""
        prep = RECEPTACLES[self.recep].prep if self.recep else ""
        if self.kind == SIMPLE:
            return f"put a {self.obj} {prep} {self.recep}."
        if self.kind == LOOK:
            return f"look at {self.obj} under the {self.lamp}."
        if self.kind == TWO:
            return f"put two {self.obj} {prep} {self.recep}."
        return f"put a {ADJECTIVE[self.kind]} {self.obj} {prep} {self.recep}."

    def clause(self) -> str:
        """The subtask as a clause of a chain sentence: ``clean a mug and put it in the cabinet``."""
        prep = RECEPTACLES[self.recep].prep if self.recep else ""
        a = _article(self.obj)
        if self.kind == SIMPLE:
            return f"put {a} {self.obj} {prep} the {self.recep}"
        if self.kind == LOOK:
            return f"look at {a} {self.obj} under the {self.lamp}"
        if self.kind == TWO:
            return f"put two {plural(self.obj)} {prep} the {self.recep}"
        return f"{VERB[self.kind]} {a} {self.obj} and put it {prep} the {self.recep}"


@dataclass(frozen=True, slots=True, eq=False)
class Scenario:
    """Everything a task id determines: room, objects and where they start, the goal."""

    task_id: str
    split: str
    task_type: str  # one of TASK_TYPES, or "chain<k>"
    layout: Layout
    subtasks: tuple[Subtask, ...]
    task: str  # the goal sentence shown to the agent
    otype: dict[str, str]  # object instance -> object type
    placement: tuple[tuple[str, str], ...]  # (object, receptacle) in the order they were placed


def task_id(split: str, kind: str, seed: int) -> str:
    return f"household/{split}/{kind}/{seed}"


def generator_seed(tid: str) -> str:
    """The string that seeds task ``tid``'s generator: the id itself, except that the split part
    is ``eval_out_of_distribution`` for ``eval_novel_objects`` (the version-1 episodes of that
    name) and ``eval_out_of_distribution-v2`` for ``eval_out_of_distribution``."""
    split, kind, seed, _depth = parse_task_id(tid)
    return _seed_string(tid, split, kind, seed)


def _seed_string(tid: str, split: str, kind: str, seed: int) -> str:
    return tid if split not in _SEED_SPLIT else task_id(_SEED_SPLIT[split], kind, seed)


def parse_task_id(tid: str) -> tuple[str, str, int, int]:
    """``(split, kind, seed, depth)``; ``depth`` is 0 for the six task types. ValueError if bad."""
    parts = tid.split("/") if isinstance(tid, str) else []
    expected = "household/<split>/<task type or chain1..chain6>/<seed>"
    if len(parts) != 4 or parts[0] != "household":
        raise ValueError(f"bad household task id {tid!r}; expected {expected}")
    _, split, kind, seed_text = parts
    if split not in SPLITS:
        raise ValueError(f"bad split {split!r} in task id {tid!r}; expected one of {SPLITS}")
    depth = 0
    if kind not in TASK_TYPES:
        digits = kind.removeprefix("chain")
        if not (kind.startswith("chain") and digits.isdigit() and digits == str(int(digits))):
            raise ValueError(
                f"bad task kind {kind!r} in task id {tid!r}; expected one of {TASK_TYPES} "
                f"or chain1..chain{MAX_CHAIN_DEPTH}"
            )
        depth = int(digits)
        if not 1 <= depth <= MAX_CHAIN_DEPTH:
            raise ValueError(f"chain depth must be in 1..{MAX_CHAIN_DEPTH}, got {kind!r}")
    if not (seed_text.isascii() and seed_text.isdigit() and seed_text == str(int(seed_text))):
        raise ValueError(f"bad seed {seed_text!r} in task id {tid!r}; expected an integer ≥ 0")
    return split, kind, int(seed_text), depth


def _supported(template: str, layout: Layout) -> tuple[str, ...]:
    kinds = [SIMPLE, TWO]
    if any(t in layout.by_type for t in TEMPLATES[template].lamp_on):
        kinds.append(LOOK)
    kinds.extend(k for k, appliance in APPLIANCE.items() if appliance in layout.by_type)
    return tuple(k for k in TASK_TYPES if k in kinds)


def _draw_subtask(
    rng: random.Random, kind: str, template: str, layout: Layout, used: set[str]
) -> Subtask | None:
    candidates: list[tuple[str, str | None]] = []
    appliance = APPLIANCE.get(kind)
    for obj in TEMPLATES[template].objects:
        if obj in used:
            continue
        spec = OBJECTS[obj]
        present = [t for t in spec.spawn if t in layout.by_type]
        if not present:
            continue
        if kind == LOOK:
            candidates.append((obj, None))
            continue
        if (kind == CLEAN and not spec.clean) or (kind == HEAT and not spec.heat):
            continue
        if kind == COOL and not spec.cool:
            continue
        for recep in present:
            if RECEPTACLES[recep].target and recep != appliance and len(present) > 1:
                candidates.append((obj, recep))
    if not candidates:
        return None
    obj, recep = rng.choice(candidates)
    return Subtask(kind, obj, recep)


def make_scenario(tid: str) -> Scenario:
    """Generate the scenario of task id ``tid`` (deterministic)."""
    split, kind, seed, depth = parse_task_id(tid)
    rng = random.Random(_seed_string(tid, split, kind, seed))
    templates = FAMILIES[SPLIT_FAMILY[split]]
    numbers = SPLIT_LAYOUTS[split]
    for _attempt in range(100):
        template = rng.choice(templates)
        layout = get_layout(template, numbers.start + rng.randrange(len(numbers)))
        supported = _supported(template, layout)
        if depth == 0 and kind not in supported:
            continue
        subtasks: list[Subtask] = []
        used: set[str] = set()
        for _ in range(max(depth, 1)):
            sub_kind = rng.choice(supported) if depth else kind
            sub = _draw_subtask(rng, sub_kind, template, layout, used)
            if sub is None:
                break
            subtasks.append(sub)
            used.add(sub.obj)
        else:
            return _populate(rng, tid, split, kind, template, layout, tuple(subtasks))
    raise RuntimeError(f"could not generate task {tid!r}")  # pragma: no cover


def _populate(
    rng: random.Random,
    tid: str,
    split: str,
    kind: str,
    template: str,
    layout: Layout,
    subtasks: tuple[Subtask, ...],
) -> Scenario:
    counts: dict[str, int] = {}
    forbidden: dict[str, str] = {}
    for sub in subtasks:
        counts[sub.obj] = rng.randint(2, 3) if sub.kind == TWO else rng.randint(1, 2)
        if sub.recep is not None:
            forbidden[sub.obj] = sub.recep
    pool = [
        o
        for o in TEMPLATES[template].objects
        if o not in counts and any(t in layout.by_type for t in OBJECTS[o].spawn)
    ]
    for obj in rng.sample(pool, min(len(pool), rng.randint(4, 8))):
        counts[obj] = rng.randint(1, 2)

    instances = [(f"{obj} {i}", obj) for obj, n in counts.items() for i in range(1, n + 1)]
    rng.shuffle(instances)
    placement: list[tuple[str, str]] = []
    for name, obj in instances:
        allowed = [
            r
            for t in OBJECTS[obj].spawn
            if t != forbidden.get(obj)
            for r in layout.by_type.get(t, ())
        ]
        placement.append((name, rng.choice(allowed)))
    otype = dict(instances)
    surfaces = [r for t in TEMPLATES[template].lamp_on for r in layout.by_type.get(t, ())]
    if surfaces:
        placement.insert(rng.randrange(len(placement) + 1), ("desklamp 1", rng.choice(surfaces)))
        otype["desklamp 1"] = "desklamp"

    task = _chain_sentence(subtasks) if kind.startswith("chain") else subtasks[0].sentence()
    return Scenario(tid, split, kind, layout, subtasks, task, otype, tuple(placement))


def _chain_sentence(subtasks: tuple[Subtask, ...]) -> str:
    """``heat a potato and put it in the fridge.`` for one subtask, else
    ``first <clause>, then <clause>, then <clause>.``"""
    clauses = [s.clause() for s in subtasks]
    if len(clauses) == 1:
        return clauses[0] + "."
    return "first " + ", then ".join(clauses) + "."


def custom_scenario(
    receptacles: list[str] | tuple[str, ...],
    placement: list[tuple[str, str]] | tuple[tuple[str, str], ...],
    subtasks: list[Subtask] | tuple[Subtask, ...],
    task: str | None = None,
    tid: str = "household/custom",
) -> Scenario:
    """A hand-made scenario (tests, demos): receptacles in room order, ``(object, receptacle)``
    placements in listing order, and the subtasks (a chain when there are several)."""
    layout = build_layout(receptacles)
    otype: dict[str, str] = {}
    for obj, rec in placement:
        kind, _, digits = obj.rpartition(" ")
        if kind not in OBJECTS or not digits.isdigit() or obj in otype:
            raise ValueError(f"bad or repeated object name {obj!r}; expected e.g. 'apple 1'")
        if rec not in layout.rtype:
            raise ValueError(f"object {obj!r} placed in unknown receptacle {rec!r}")
        otype[obj] = kind
    subtasks = tuple(subtasks)
    if not subtasks:
        raise ValueError("a scenario needs at least one subtask")
    if task is None:
        task = subtasks[0].sentence() if len(subtasks) == 1 else _chain_sentence(subtasks)
    kind = subtasks[0].kind if len(subtasks) == 1 else f"chain{len(subtasks)}"
    return Scenario(tid, "custom", kind, layout, subtasks, task, otype, tuple(placement))
