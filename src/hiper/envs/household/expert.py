"""The expert planner: Plan–Execute demonstrations that win every household task.

:func:`decide` maps the current state to ``(subgoal, action)``. It only uses what the agent has
observed: the contents of receptacles it has seen (``World.observed``; nothing but the agent
changes the room, so what it saw is still true) plus common sense about where things are kept
(:data:`~hiper.envs.household.world.OBJECTS` spawn types, lamps on desks and tables). Unseen
objects are searched for: likely receptacles first, open surfaces before closed containers,
opening closed ones on the way.

Each subtask decomposes into phases, each with one subgoal:

* ``find and take a mug`` (``find and take another pen`` for the second of two),
* ``clean the mug with sinkbasin 1`` / ``heat ... with microwave 1`` / ``cool ... with fridge 1``,
* ``put the mug in cabinet 1`` (``put the second pen in drawer 2``),
* ``find a desklamp`` then ``look at the book under the desklamp 1`` (look tasks),
* ``put down the pen`` when holding something the current phase does not need.

:func:`decide` is a pure function of the state, so the expert can take over at any point of an
episode. KEEP/SWITCH is derived from whether the phase subgoal changed (see
``HouseholdEnv.expert_turn``).
"""

from __future__ import annotations

from collections.abc import Iterable

from hiper.envs.household.engine import World
from hiper.envs.household.tasks import APPLIANCE, COOL, HEAT, LOOK, TWO, VERB, Subtask
from hiper.envs.household.world import LAMP_SURFACES, OBJECTS, RECEPTACLES, natkey

__all__ = ["decide"]


def decide(w: World) -> tuple[str, str]:
    """The expert's ``(subgoal, action)`` in state ``w`` (the episode must not be over)."""
    sub = w.current
    if sub is None:
        raise RuntimeError("the task is already done; there is nothing left to decide")
    held = w.holding
    if sub.kind == LOOK:
        if held is None:
            return _find(w, sub, f"find and take a {sub.obj}", None)
        if w.otype[held] != sub.obj:
            return _put_down(w, held)
        lamps = [
            lamp
            for lamp, rec in sorted(w.lamp_at.items())
            if w.otype[lamp] == sub.lamp and rec in w.observed
        ]
        if not lamps:
            return _search(w, f"find a {sub.lamp}", LAMP_SURFACES, None)
        lamp = lamps[0]
        rec = w.lamp_at[lamp]
        subgoal = f"look at the {sub.obj} under the {lamp}"
        if w.at != rec:
            return subgoal, f"go to {rec}"
        return subgoal, ("look" if lamp in w.lamps_on else f"use {lamp}")

    target, placed = _target(w, sub)
    if held is not None and w.otype[held] == sub.obj:
        if sub.kind in APPLIANCE:
            flags = w.hot if sub.kind == HEAT else w.cool if sub.kind == COOL else w.clean
            if held not in flags:
                app = w.layout.by_type[APPLIANCE[sub.kind]][0]
                verb = VERB[sub.kind]
                subgoal = f"{verb} the {sub.obj} with {app}"
                if w.at != app:
                    return subgoal, f"go to {app}"
                return subgoal, f"{verb} {held} with {app}"
        which = "second " if sub.kind == TWO and placed else ""
        subgoal = f"put the {which}{sub.obj} {RECEPTACLES[sub.recep or ''].prep} {target}"
        if w.at != target:
            return subgoal, f"go to {target}"
        if not w.visible(target):
            return subgoal, f"open {target}"
        return subgoal, f"move {held} to {target}"
    if held is not None:
        return _put_down(w, held)
    article = "another" if sub.kind == TWO and placed else "a"
    return _find(w, sub, f"find and take {article} {sub.obj}", target if sub.kind == TWO else None)


def _target(w: World, sub: Subtask) -> tuple[str, int]:
    """The receptacle instance to fill, and how many objects already count there (TWO only)."""
    instances = w.layout.by_type[sub.recep or ""]
    if sub.kind != TWO:
        return instances[0], 0
    best, best_count = instances[0], 0
    for rec in instances:
        count = sum(
            1 for o in w.contents[rec] if w.otype[o] == sub.obj and w.placed_at[o] > w.since
        )
        if count > best_count:
            best, best_count = rec, count
    return best, best_count


def _find(w: World, sub: Subtask, subgoal: str, keep_in: str | None) -> tuple[str, str]:
    """Take a known object of type ``sub.obj`` (not one already counted in ``keep_in``), or search."""
    best: tuple | None = None
    for obj, rec in w.loc.items():
        if w.otype[obj] != sub.obj or rec not in w.observed:
            continue
        if rec == keep_in and w.placed_at[obj] > w.since:
            continue
        key = (rec != w.at, natkey(rec), natkey(obj))
        if best is None or key < best[0]:
            best = (key, obj, rec)
    if best is None:
        return _search(w, subgoal, OBJECTS[sub.obj].spawn, sub.recep)
    _, obj, rec = best
    if w.at != rec:
        return subgoal, f"go to {rec}"
    if not w.visible(rec):
        return subgoal, f"open {rec}"
    return subgoal, f"take {obj} from {rec}"


def _search(w: World, subgoal: str, likely: Iterable[str], unlikely: str | None) -> tuple[str, str]:
    """Visit the next receptacle not yet seen: likely types first, surfaces before containers."""
    likely = set(likely)
    rtype = w.layout.rtype

    def key(rec: str) -> tuple:
        t = rtype[rec]
        return (
            t not in likely or t == unlikely,
            rec in w.layout.openable,
            rec != w.at,
            natkey(rec),
        )

    unseen = [r for r in w.layout.receptacles if r not in w.observed]
    if not unseen:
        return subgoal, "look"
    rec = min(unseen, key=key)
    if w.at != rec:
        return subgoal, f"go to {rec}"
    if not w.visible(rec):
        return subgoal, f"open {rec}"
    return subgoal, f"examine {rec}"


def _put_down(w: World, held: str) -> tuple[str, str]:
    subgoal = f"put down the {w.otype[held]}"
    if w.at is not None and w.visible(w.at):
        return subgoal, f"move {held} to {w.at}"
    surface = min((r for r in w.layout.receptacles if r not in w.layout.openable), key=natkey)
    return subgoal, f"go to {surface}"
