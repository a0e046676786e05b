"""The household vocabulary and the room layouts.

A *layout* is a room: a set of receptacle instances (``cabinet 3``, ``fridge 1``...) in a fixed
"room order" (the order in which the opening observation lists them). Layouts come from *room
templates* in two disjoint families, and each template's layouts are numbered:

``seen`` templates: kitchen, bedroom, livingroom, bathroom
    Layouts ``0 .. LAYOUTS_PER_TEMPLATE - 1`` are the *training rooms* (splits ``train`` and
    ``eval_in_distribution``). Layouts ``LAYOUTS_PER_TEMPLATE .. LAYOUTS_PER_TEMPLATE +
    HELD_OUT_LAYOUTS - 1`` are *held-out rooms* (split ``eval_out_of_distribution``): built from
    the same template, so from the same receptacle and object types, but each has a receptacle set
    (which instances exist, i.e. how many cabinets, drawers, shelves...) that no training room of
    its template has, hence also a room order no training room has, and no two held-out rooms of a
    template share a receptacle set. Like ALFWorld's ``valid_unseen``: new rooms, known words.
``unseen`` templates: diningkitchen, study, bathsuite, lounge (split ``eval_novel_objects``)
    Every one of them has at least one receptacle type that no ``seen`` template has
    (diningtable, armchair, safe, coffeetable, ottoman, bathtubbasin, handtowelholder, cart) and
    their object pools add object types no ``seen`` template has (butterknife, ladle, kettle,
    glassbottle, watch, statue, vase, candle, tissuebox). So no ``unseen`` room can ever be
    generated for the training split, and these words never occur in training. (Before household
    manifest version 2 this family was the ``eval_out_of_distribution`` split.)

Everything here is pure and deterministic: :func:`get_layout` derives a layout from
``(template, number)`` alone and caches it. Adding held-out layouts did not change layouts
``0 .. LAYOUTS_PER_TEMPLATE - 1``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache

__all__ = [
    "FAMILIES",
    "HELD_OUT_LAYOUTS",
    "LAMP_SURFACES",
    "LAYOUTS_PER_TEMPLATE",
    "OBJECTS",
    "RECEPTACLES",
    "TEMPLATES",
    "Layout",
    "ObjectKind",
    "ReceptacleKind",
    "Template",
    "a_list",
    "build_layout",
    "get_layout",
    "natkey",
]

#: Layouts 0..63 of every template: the training rooms of a ``seen`` template (and the rooms of
#: ``eval_novel_objects`` for an ``unseen`` one).
LAYOUTS_PER_TEMPLATE = 64
#: Layouts 64..79 of every ``seen`` template: held-out rooms (``eval_out_of_distribution``), each
#: with a receptacle set that none of the template's layouts 0..63 has. (``unseen`` templates have
#: none: study and bathsuite have too few receptacle sets left.)
HELD_OUT_LAYOUTS = 16


@dataclass(frozen=True, slots=True)
class ReceptacleKind:
    openable: bool  # starts closed; must be opened to see, take from or put into
    prep: str  # "in" or "on", used in task sentences and subgoals
    target: bool = True  # may be the destination of a task


RECEPTACLES: dict[str, ReceptacleKind] = {
    # seen and unseen
    "countertop": ReceptacleKind(False, "on"),
    "cabinet": ReceptacleKind(True, "in"),
    "drawer": ReceptacleKind(True, "in"),
    "fridge": ReceptacleKind(True, "in"),
    "microwave": ReceptacleKind(True, "in"),
    "sinkbasin": ReceptacleKind(False, "in"),
    "stoveburner": ReceptacleKind(False, "on"),
    "coffeemachine": ReceptacleKind(False, "on"),
    "garbagecan": ReceptacleKind(False, "in"),
    "shelf": ReceptacleKind(False, "on"),
    "desk": ReceptacleKind(False, "on"),
    "sidetable": ReceptacleKind(False, "on"),
    "dresser": ReceptacleKind(False, "on"),
    "bed": ReceptacleKind(False, "on"),
    "sofa": ReceptacleKind(False, "on"),
    "toilet": ReceptacleKind(False, "on"),
    "towelholder": ReceptacleKind(False, "on", target=False),
    # unseen only
    "diningtable": ReceptacleKind(False, "on"),
    "cart": ReceptacleKind(False, "on"),
    "armchair": ReceptacleKind(False, "on"),
    "coffeetable": ReceptacleKind(False, "on"),
    "safe": ReceptacleKind(True, "in"),
    "ottoman": ReceptacleKind(False, "on"),
    "bathtubbasin": ReceptacleKind(False, "in"),
    "handtowelholder": ReceptacleKind(False, "on", target=False),
}

#: Receptacle types a careful searcher checks first for a lamp.
LAMP_SURFACES: frozenset[str] = frozenset({"desk", "sidetable", "dresser", "coffeetable"})


@dataclass(frozen=True, slots=True)
class ObjectKind:
    clean: bool  # can be cleaned with a sinkbasin
    heat: bool  # can be heated with a microwave
    cool: bool  # can be cooled with a fridge
    spawn: tuple[str, ...]  # receptacle types it may start in (and be asked to go to)
    lamp: bool = False  # a lamp: not takeable, "use" turns it on and off


def _o(flags: str, *spawn: str) -> ObjectKind:
    return ObjectKind("c" in flags, "h" in flags, "k" in flags, spawn)


_FOOD = ("countertop", "fridge", "diningtable", "cart")
_DISH = ("countertop", "cabinet", "shelf", "diningtable")
_CUTLERY = ("countertop", "drawer", "diningtable")
_SMALL = ("desk", "drawer", "shelf", "sidetable", "dresser", "safe", "coffeetable")

OBJECTS: dict[str, ObjectKind] = {
    # kitchen (flags: c = cleanable, h = heatable, k = coolable)
    "apple": _o("chk", *_FOOD, "garbagecan"),
    "potato": _o("chk", *_FOOD, "garbagecan"),
    "tomato": _o("chk", *_FOOD, "sinkbasin"),
    "egg": _o("hk", *_FOOD, "garbagecan"),
    "bread": _o("hk", *_FOOD),
    "lettuce": _o("ck", *_FOOD),
    "mug": _o("chk", *_DISH, "coffeemachine", "sinkbasin", "desk"),
    "cup": _o("chk", *_DISH, "sinkbasin", "microwave"),
    "bowl": _o("chk", *_DISH, "fridge", "desk"),
    "plate": _o("chk", *_DISH, "fridge"),
    "pan": _o("ck", "stoveburner", "cabinet", "countertop"),
    "pot": _o("ck", "stoveburner", "cabinet", "countertop", "diningtable"),
    "knife": _o("c", *_CUTLERY, "sinkbasin"),
    "fork": _o("c", *_CUTLERY),
    "spoon": _o("c", *_CUTLERY, "sinkbasin"),
    "spatula": _o("c", *_CUTLERY),
    "saltshaker": _o("", *_DISH),
    "peppershaker": _o("", *_DISH),
    "dishsponge": _o("c", "countertop", "sinkbasin", "cabinet", "drawer", "bathtubbasin"),
    "soapbottle": _o("", "countertop", "cabinet", "shelf", "toilet", "garbagecan"),
    "winebottle": _o("k", "countertop", "cabinet", "fridge", "diningtable"),
    # bedroom / living room
    "book": _o("", "desk", "shelf", "bed", "sidetable", "sofa", "coffeetable", "armchair"),
    "pen": _o("", *_SMALL),
    "pencil": _o("", *_SMALL),
    "cd": _o("", *_SMALL, "cabinet"),
    "cellphone": _o("", "desk", "bed", "sofa", "drawer", "sidetable", "armchair"),
    "keychain": _o("", *_SMALL, "cabinet"),
    "creditcard": _o("", *_SMALL, "armchair"),
    "alarmclock": _o("", "desk", "shelf", "sidetable", "dresser"),
    "pillow": _o("", "bed", "sofa", "armchair", "ottoman"),
    "laptop": _o("", "desk", "bed", "sofa", "coffeetable"),
    "remotecontrol": _o("", "sofa", "sidetable", "coffeetable", "dresser", "armchair", "cabinet"),
    "newspaper": _o("", "sofa", "sidetable", "coffeetable", "dresser", "ottoman", "garbagecan"),
    "box": _o("", "shelf", "dresser", "desk", "sofa", "cabinet", "ottoman"),
    # bathroom
    "soapbar": _o("c", "countertop", "sinkbasin", "toilet", "cabinet", "bathtubbasin"),
    "cloth": _o("c", "countertop", "cabinet", "drawer", "bathtubbasin", "sinkbasin"),
    "toiletpaper": _o("", "toilet", "cabinet", "countertop", "shelf", "drawer"),
    "spraybottle": _o("", "toilet", "cabinet", "countertop", "shelf", "garbagecan"),
    "towel": _o("", "towelholder", "countertop", "cabinet"),
    "handtowel": _o("", "towelholder", "handtowelholder", "countertop", "drawer"),
    # unseen only
    "butterknife": _o("c", *_CUTLERY, "cart"),
    "ladle": _o("c", *_CUTLERY, "cabinet"),
    "kettle": _o("ck", "stoveburner", "countertop", "cabinet", "diningtable"),
    "glassbottle": _o("k", "countertop", "fridge", "cabinet", "diningtable", "cart"),
    "watch": _o("", *_SMALL, "armchair"),
    "statue": _o("", "shelf", "coffeetable", "desk", "sidetable", "dresser"),
    "vase": _o("", "shelf", "coffeetable", "sidetable", "dresser", "diningtable"),
    "candle": _o("", "countertop", "toilet", "cabinet", "shelf", "bathtubbasin", "coffeetable"),
    "tissuebox": _o("", "coffeetable", "sidetable", "dresser", "toilet", "shelf", "drawer"),
    # lamps
    "desklamp": ObjectKind(False, False, False, (), lamp=True),
}


@dataclass(frozen=True, slots=True)
class Template:
    name: str
    family: str  # "seen" | "unseen"
    receptacles: tuple[tuple[str, int, int], ...]  # (type, min count, max count)
    objects: tuple[str, ...]  # object types that may appear
    lamp_on: tuple[str, ...] = ()  # receptacle types a desklamp may stand on (empty: no lamp)


_KITCHEN_OBJECTS = (
    "apple", "potato", "tomato", "egg", "bread", "lettuce", "mug", "cup", "bowl", "plate", "pan",
    "pot", "knife", "fork", "spoon", "spatula", "saltshaker", "peppershaker", "dishsponge",
    "soapbottle", "winebottle",
)  # fmt: skip
_ROOM_OBJECTS = (
    "book", "pen", "pencil", "cd", "cellphone", "keychain", "creditcard", "alarmclock", "pillow",
    "laptop", "remotecontrol", "newspaper", "box",
)  # fmt: skip
_BATH_OBJECTS = (
    "soapbar", "cloth", "toiletpaper", "spraybottle", "soapbottle", "dishsponge", "towel",
    "handtowel",
)  # fmt: skip

TEMPLATES: dict[str, Template] = {
    t.name: t
    for t in (
        Template(
            "kitchen",
            "seen",
            (
                ("countertop", 1, 3), ("cabinet", 3, 8), ("drawer", 2, 5), ("fridge", 1, 1),
                ("microwave", 1, 1), ("sinkbasin", 1, 1), ("stoveburner", 2, 4),
                ("coffeemachine", 1, 1), ("garbagecan", 1, 1), ("shelf", 0, 2),
            ),
            _KITCHEN_OBJECTS,
        ),
        Template(
            "bedroom",
            "seen",
            (
                ("bed", 1, 1), ("desk", 1, 2), ("drawer", 2, 6), ("dresser", 1, 1),
                ("shelf", 1, 4), ("sidetable", 1, 2), ("garbagecan", 1, 1),
            ),
            (*_ROOM_OBJECTS, "mug", "bowl"),
            ("desk", "sidetable"),
        ),
        Template(
            "livingroom",
            "seen",
            (
                ("sofa", 1, 1), ("sidetable", 1, 3), ("drawer", 1, 4), ("cabinet", 1, 4),
                ("shelf", 1, 3), ("dresser", 0, 1), ("garbagecan", 1, 1),
            ),
            _ROOM_OBJECTS,
            ("sidetable", "dresser"),
        ),
        Template(
            "bathroom",
            "seen",
            (
                ("sinkbasin", 1, 2), ("cabinet", 1, 4), ("countertop", 1, 1), ("toilet", 1, 1),
                ("towelholder", 1, 1), ("garbagecan", 1, 1), ("drawer", 1, 3), ("shelf", 0, 2),
            ),
            _BATH_OBJECTS,
        ),
        Template(
            "diningkitchen",
            "unseen",
            (
                ("countertop", 1, 2), ("cabinet", 2, 9), ("drawer", 1, 6), ("fridge", 1, 1),
                ("microwave", 1, 1), ("sinkbasin", 1, 1), ("stoveburner", 4, 4),
                ("diningtable", 1, 2), ("cart", 0, 1), ("garbagecan", 1, 1),
            ),
            (*_KITCHEN_OBJECTS, "butterknife", "ladle", "kettle", "glassbottle", "vase"),
        ),
        Template(
            "study",
            "unseen",
            (
                ("desk", 1, 1), ("armchair", 1, 1), ("safe", 1, 1), ("coffeetable", 1, 1),
                ("sidetable", 1, 2), ("shelf", 2, 5), ("drawer", 2, 5), ("garbagecan", 1, 1),
            ),
            (
                "book", "pen", "pencil", "cd", "cellphone", "keychain", "creditcard",
                "alarmclock", "laptop", "watch", "statue", "vase", "mug",
            ),
            ("desk", "sidetable", "coffeetable"),
        ),
        Template(
            "bathsuite",
            "unseen",
            (
                ("sinkbasin", 2, 2), ("bathtubbasin", 1, 1), ("cabinet", 2, 6),
                ("countertop", 1, 2), ("toilet", 1, 1), ("towelholder", 1, 1),
                ("handtowelholder", 1, 1), ("garbagecan", 1, 1), ("drawer", 1, 3),
            ),
            (*_BATH_OBJECTS, "candle", "tissuebox"),
        ),
        Template(
            "lounge",
            "unseen",
            (
                ("sofa", 1, 1), ("armchair", 1, 2), ("coffeetable", 1, 1), ("ottoman", 1, 1),
                ("sidetable", 1, 2), ("dresser", 1, 1), ("cabinet", 1, 4), ("drawer", 1, 4),
                ("shelf", 1, 3), ("garbagecan", 1, 1),
            ),
            (*_ROOM_OBJECTS, "watch", "statue", "vase", "tissuebox", "candle"),
            ("sidetable", "coffeetable", "dresser"),
        ),
    )
}  # fmt: skip

#: Template names per family, in a fixed order.
FAMILIES: dict[str, tuple[str, ...]] = {
    family: tuple(name for name, t in TEMPLATES.items() if t.family == family)
    for family in ("seen", "unseen")
}


_NATKEYS: dict[str, tuple[tuple[int, str], ...]] = {}


def natkey(text: str) -> tuple[tuple[int, str], ...]:
    """Sort key that orders ``cabinet 2`` before ``cabinet 10`` (cached; all inputs are short)."""
    key = _NATKEYS.get(text)
    if key is None:
        key = tuple((int(w), "") if w.isdigit() else (-1, w) for w in text.split())
        if len(_NATKEYS) < 200_000:
            _NATKEYS[text] = key
    return key


def a_list(names: list[str] | tuple[str, ...]) -> str:
    """``a apple 1, a mug 2, and a pen 1`` (ALFWorld style); ``nothing`` when empty."""
    if not names:
        return "nothing"
    if len(names) == 1:
        return f"a {names[0]}"
    return ", ".join(f"a {n}" for n in names[:-1]) + f", and a {names[-1]}"


@dataclass(frozen=True, slots=True, eq=False)
class Layout:
    """One room: receptacle instances, their types, and the strings derived from them."""

    template: str
    family: str
    number: int
    receptacles: tuple[str, ...]  # room order
    rtype: dict[str, str]  # instance -> type
    by_type: dict[str, tuple[str, ...]]  # type -> instances, natural order
    openable: frozenset[str]
    intro: str  # "You are in the middle of a room. Looking quickly around you, you see ..."
    goto: dict[str, str]  # instance -> "go to <instance>"
    goto_cmd: dict[str, str]  # "go to <instance>" -> instance
    goto_sorted: tuple[str, ...]  # every "go to" command, natural order

    @property
    def signature(self) -> tuple[str, ...]:
        """What identifies the room: its receptacles in room order."""
        return self.receptacles

    @property
    def held_out(self) -> bool:
        """A held-out room (number ≥ :data:`LAYOUTS_PER_TEMPLATE`): no training room has its
        receptacle set."""
        return self.number >= LAYOUTS_PER_TEMPLATE


@cache
def get_layout(template: str, number: int) -> Layout:
    """Layout ``number`` of room template ``template``: a training room when
    0 ≤ number < LAYOUTS_PER_TEMPLATE, a held-out room (``seen`` templates only) when
    LAYOUTS_PER_TEMPLATE ≤ number < LAYOUTS_PER_TEMPLATE + HELD_OUT_LAYOUTS."""
    spec = TEMPLATES[template]
    end = LAYOUTS_PER_TEMPLATE + (HELD_OUT_LAYOUTS if spec.family == "seen" else 0)
    if not isinstance(number, int) or not 0 <= number < end:
        raise ValueError(
            f"layout number of template {template!r} must be an integer in [0, {end}), "
            f"got {number!r}"
        )
    if number >= LAYOUTS_PER_TEMPLATE:
        return _held_out_layouts(template)[number - LAYOUTS_PER_TEMPLATE]
    rng = random.Random(f"household-layout/{template}/{number}")
    names = _draw_receptacles(rng, spec)
    rng.shuffle(names)
    return build_layout(names, template, spec.family, number)


def _draw_receptacles(rng: random.Random, spec: Template) -> list[str]:
    """Receptacle instances with counts drawn from the template's ranges, in template order."""
    names: list[str] = []
    for rt, lo, hi in spec.receptacles:
        names.extend(f"{rt} {i}" for i in range(1, rng.randint(lo, hi) + 1))
    return names


@cache
def _held_out_layouts(template: str) -> tuple[Layout, ...]:
    """The ``seen`` template's :data:`HELD_OUT_LAYOUTS` held-out rooms, in number order.

    Held-out room ``n`` draws receptacle counts from the template's ranges (seeded by
    ``(template, n)``) until the resulting receptacle set is neither one of the training rooms'
    (layouts ``0 .. LAYOUTS_PER_TEMPLATE - 1``) nor an earlier held-out room's, then shuffles it
    into its room order. Every template has more unused receptacle sets than held-out rooms
    (bathroom, the tightest: 72 possible, 39 used by training rooms)."""
    spec = TEMPLATES[template]
    taken = {frozenset(get_layout(template, n).receptacles) for n in range(LAYOUTS_PER_TEMPLATE)}
    layouts: list[Layout] = []
    for number in range(LAYOUTS_PER_TEMPLATE, LAYOUTS_PER_TEMPLATE + HELD_OUT_LAYOUTS):
        rng = random.Random(f"household-layout/{template}/{number}")
        for _attempt in range(10_000):
            names = _draw_receptacles(rng, spec)
            if frozenset(names) not in taken:
                break
        else:  # pragma: no cover - every template has enough unused receptacle sets
            raise RuntimeError(f"template {template!r} has no unused receptacle set left")
        taken.add(frozenset(names))
        rng.shuffle(names)
        layouts.append(build_layout(names, template, spec.family, number))
    return tuple(layouts)


def build_layout(
    names: list[str] | tuple[str, ...],
    template: str = "custom",
    family: str = "custom",
    number: int = 0,
) -> Layout:
    """A layout from receptacle instance names in room order (``["countertop 1", "fridge 1"]``)."""
    rtype: dict[str, str] = {}
    for name in names:
        kind, _, digits = name.rpartition(" ")
        if kind not in RECEPTACLES or not digits.isdigit() or name in rtype:
            raise ValueError(f"bad or repeated receptacle name {name!r}; expected e.g. 'cabinet 3'")
        rtype[name] = kind
    by_type = {
        kind: tuple(sorted((n for n in names if rtype[n] == kind), key=natkey))
        for kind in dict.fromkeys(rtype.values())
    }
    openable = frozenset(n for n in names if RECEPTACLES[rtype[n]].openable)
    intro = (
        "You are in the middle of a room. Looking quickly around you, you see "
        f"{a_list(list(names))}."
    )
    goto = {n: f"go to {n}" for n in names}
    goto_cmd = {cmd: n for n, cmd in goto.items()}
    goto_sorted = tuple(sorted(goto_cmd, key=natkey))
    return Layout(
        template,
        family,
        number,
        tuple(names),
        rtype,
        by_type,
        openable,
        intro,
        goto,
        goto_cmd,
        goto_sorted,
    )
