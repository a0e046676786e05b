"""Command execution: the mutable state of one episode and the ALFWorld-style command grammar.

The state is plain dicts and sets. After every command :class:`World` recomputes the admissible
commands: exactly the commands that do something in the current state, sorted in natural order
(``cabinet 2`` before ``cabinet 10``). Any other text, including the empty string, unicode junk or
a 100 kB paste, gets ``Nothing happens.`` and changes nothing but the step counter.

Grammar (lowercase; whitespace is normalised)::

    go to R | open R | close R | take O from R | move O to R (alias: put O in/on R)
    clean O with R | heat O with R | cool O with R | use L | examine R | examine O
    look | inventory

Rules: the agent is in the middle of the room until its first ``go to``; it must be at a
receptacle to open, close, take from, put into or examine it; closed receptacles hide their
contents; the agent holds at most one object; cleaning needs a sinkbasin, heating a microwave,
cooling a fridge (the appliance may stay closed); lamps cannot be taken and ``use`` toggles them.
"""

from __future__ import annotations

from hiper.envs.household.tasks import CLEAN, COOL, HEAT, LOOK, TWO, Scenario, Subtask
from hiper.envs.household.world import OBJECTS, a_list, natkey

__all__ = ["MAX_COMMAND_CHARS", "NOTHING", "World", "normalize"]

NOTHING = "Nothing happens."
MAX_COMMAND_CHARS = 200  # longer text cannot be a command

_PUT_PREPS = (" in/on ", " into ", " onto ", " in ", " on ")


def normalize(action: object) -> str:
    """Lowercase, whitespace-collapsed command text ("" for anything that cannot be a command)."""
    if not isinstance(action, str) or len(action) > 4 * MAX_COMMAND_CHARS:
        return ""
    text = " ".join(action.lower().split())
    if len(text) > MAX_COMMAND_CHARS:
        return ""
    if text.startswith("put "):  # ALFWorld <= 0.3 spelling of "move O to R"
        for prep in _PUT_PREPS:
            obj, sep, rec = text[4:].partition(prep)
            if sep and obj and rec:
                return f"move {obj} to {rec}"
    return text


class World:
    """The mutable state of one episode (see the module docstring for the rules)."""

    __slots__ = (
        "_adm",
        "_ops",
        "at",
        "clean",
        "contents",
        "cool",
        "holding",
        "hot",
        "lamp_at",
        "lamps_on",
        "layout",
        "loc",
        "observed",
        "open",
        "otype",
        "placed_at",
        "progress",
        "scenario",
        "since",
        "t",
    )

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.layout = scenario.layout
        self.otype = scenario.otype
        self.contents: dict[str, list[str]] = {r: [] for r in self.layout.receptacles}
        self.loc: dict[str, str] = {}
        for obj, rec in scenario.placement:
            self.contents[rec].append(obj)
            self.loc[obj] = rec
        self.lamp_at = {o: r for o, r in scenario.placement if OBJECTS[self.otype[o]].lamp}
        self.open: set[str] = set()
        self.observed: set[str] = set()  # receptacles whose contents the agent has seen
        self.clean: set[str] = set()
        self.hot: set[str] = set()
        self.cool: set[str] = set()
        self.lamps_on: set[str] = set()
        self.placed_at: dict[str, int] = dict.fromkeys(self.loc, 0)
        self.at: str | None = None  # None: the middle of the room
        self.holding: str | None = None
        self.t = 0  # commands executed so far
        self.progress = 0  # subtasks done
        self.since = 0  # value of t when the current subtask became current
        self._adm: tuple[str, ...] = ()
        self._ops: dict[str, tuple[str, ...]] = {}
        self._refresh()

    def copy(self) -> World:
        """An independent copy (immutable scenario data is shared)."""
        new = World.__new__(World)
        new.scenario, new.layout, new.otype = self.scenario, self.layout, self.otype
        new.lamp_at = self.lamp_at
        new.contents = {r: list(v) for r, v in self.contents.items()}
        new.loc = dict(self.loc)
        new.open, new.observed = set(self.open), set(self.observed)
        new.clean, new.hot, new.cool = set(self.clean), set(self.hot), set(self.cool)
        new.lamps_on = set(self.lamps_on)
        new.placed_at = dict(self.placed_at)
        new.at, new.holding, new.t = self.at, self.holding, self.t
        new.progress, new.since = self.progress, self.since
        new._adm, new._ops = self._adm, self._ops
        return new

    # ------------------------------------------------------------------ queries

    @property
    def admissible(self) -> tuple[str, ...]:
        return self._adm

    @property
    def done(self) -> bool:
        return self.progress >= len(self.scenario.subtasks)

    @property
    def current(self) -> Subtask | None:
        subs = self.scenario.subtasks
        return subs[self.progress] if self.progress < len(subs) else None

    def visible(self, rec: str) -> bool:
        return rec not in self.layout.openable or rec in self.open

    def describe(self, rec: str) -> str:
        if rec in self.layout.openable:
            if rec not in self.open:
                return f"The {rec} is closed."
            return f"The {rec} is open. In it, you see {a_list(self.contents[rec])}."
        return f"On the {rec}, you see {a_list(self.contents[rec])}."

    def examine_object(self, obj: str) -> str:
        if obj in self.lamp_at:
            return f"The {obj} is {'on' if obj in self.lamps_on else 'off'}."
        states = [
            s
            for s, group in (("clean", self.clean), ("hot", self.hot), ("cool", self.cool))
            if obj in group
        ]
        if not states:
            return f"There's nothing special about {obj}."
        return f"This is a {', '.join(states)} {obj}."

    # ------------------------------------------------------------------ commands

    def execute(self, action: object) -> str:
        """Run one command and return the observation; advances ``t`` whatever the command."""
        self.t += 1
        cmd = normalize(action)
        op = self._ops.get(cmd)
        if op is None:
            rec = self.layout.goto_cmd.get(cmd)
            if rec is None or rec == self.at:
                return NOTHING
            op = ("go", rec)
        observation = getattr(self, "_do_" + op[0])(*op[1:])
        self._refresh()
        return observation

    def _see(self, rec: str) -> None:
        if self.visible(rec):
            self.observed.add(rec)

    def _do_go(self, rec: str) -> str:
        self.at = rec
        self._see(rec)
        return f"You arrive at {rec}. {self.describe(rec)}"

    def _do_open(self, rec: str) -> str:
        self.open.add(rec)
        self.observed.add(rec)
        return f"You open the {rec}. {self.describe(rec)}"

    def _do_close(self, rec: str) -> str:
        self.open.discard(rec)
        return f"You close the {rec}."

    def _do_take(self, obj: str, rec: str) -> str:
        self.contents[rec].remove(obj)
        self.loc[obj] = ""
        self.holding = obj
        return f"You pick up the {obj} from the {rec}."

    def _do_move(self, obj: str, rec: str) -> str:
        self.contents[rec].append(obj)
        self.loc[obj] = rec
        self.placed_at[obj] = self.t
        self.holding = None
        return f"You move the {obj} to the {rec}."

    def _do_clean(self, obj: str, rec: str) -> str:
        self.clean.add(obj)
        return f"You clean the {obj} using the {rec}."

    def _do_heat(self, obj: str, rec: str) -> str:
        self.hot.add(obj)
        self.cool.discard(obj)
        return f"You heat the {obj} using the {rec}."

    def _do_cool(self, obj: str, rec: str) -> str:
        self.cool.add(obj)
        self.hot.discard(obj)
        return f"You cool the {obj} using the {rec}."

    def _do_use(self, lamp: str) -> str:
        if lamp in self.lamps_on:
            self.lamps_on.discard(lamp)
            return f"You turn off the {lamp}."
        self.lamps_on.add(lamp)
        return f"You turn on the {lamp}."

    def _do_examine_r(self, rec: str) -> str:
        self._see(rec)
        return self.describe(rec)

    def _do_examine_o(self, obj: str) -> str:
        return self.examine_object(obj)

    def _do_look(self) -> str:
        if self.at is None:
            return self.layout.intro
        self._see(self.at)
        return f"You are facing the {self.at}. {self.describe(self.at)}"

    def _do_inventory(self) -> str:
        if self.holding is None:
            return "You are not carrying anything."
        return f"You are carrying: a {self.holding}."

    def _refresh(self) -> None:
        """Recompute the admissible commands and their operations."""
        ops: dict[str, tuple[str, ...]] = {"look": ("look",), "inventory": ("inventory",)}
        held = self.holding
        at = self.at
        if held is not None:
            ops[f"examine {held}"] = ("examine_o", held)
        if at is not None:
            ops[f"examine {at}"] = ("examine_r", at)
            if at in self.layout.openable:
                if at in self.open:
                    ops[f"close {at}"] = ("close", at)
                else:
                    ops[f"open {at}"] = ("open", at)
            if self.visible(at):
                for obj in self.contents[at]:
                    if obj in self.lamp_at:
                        ops[f"use {obj}"] = ("use", obj)
                    elif held is None:
                        ops[f"take {obj} from {at}"] = ("take", obj, at)
                if held is not None:
                    ops[f"move {held} to {at}"] = ("move", held, at)
            if held is not None:
                kind = OBJECTS[self.otype[held]]
                rt = self.layout.rtype[at]
                if rt == "sinkbasin" and kind.clean:
                    ops[f"clean {held} with {at}"] = ("clean", held, at)
                elif rt == "microwave" and kind.heat:
                    ops[f"heat {held} with {at}"] = ("heat", held, at)
                elif rt == "fridge" and kind.cool:
                    ops[f"cool {held} with {at}"] = ("cool", held, at)
        gotos = self.layout.goto_sorted
        if at is not None:
            skip = self.layout.goto[at]
            gotos = [g for g in gotos if g != skip]
        self._ops = ops
        self._adm = tuple(sorted([*gotos, *ops], key=natkey))

    # ------------------------------------------------------------------ goals

    def satisfied(self, sub: Subtask) -> bool:
        """Whether ``sub`` holds now, counting only objects placed after it became current."""
        if sub.kind == LOOK:
            held = self.holding
            if held is None or self.otype[held] != sub.obj:
                return False
            return any(
                self.lamp_at[lamp] == self.at
                for lamp in self.lamps_on
                if self.otype[lamp] == sub.lamp
            )
        need = 2 if sub.kind == TWO else 1
        flags = self.clean if sub.kind == CLEAN else self.hot if sub.kind == HEAT else None
        if sub.kind == COOL:
            flags = self.cool
        for rec in self.layout.by_type.get(sub.recep or "", ()):
            count = 0
            for obj in self.contents[rec]:
                if (
                    self.otype[obj] == sub.obj
                    and self.placed_at[obj] > self.since
                    and (flags is None or obj in flags)
                ):
                    count += 1
                    if count >= need:
                        return True
        return False

    def advance(self) -> bool:
        """After a command: mark the current subtask done if it holds. True if one was done."""
        sub = self.current
        if sub is not None and self.satisfied(sub):
            self.progress += 1
            self.since = self.t
            return True
        return False
