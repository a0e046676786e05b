"""``WebShopEnv``: WebShop's text shop as a :class:`~hiper.envs.TextEnv`."""

from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass
from typing import Any

from hiper.envs.base import EnvStep, ExpertTurn
from hiper.envs.webshop.data import GOAL_KINDS, Catalog, Goal, Product, load_goals
from hiper.envs.webshop.nouns import NounTagger, find_tagger_dir, load_noun_tagger
from hiper.envs.webshop.oracle import decide
from hiper.envs.webshop.pages import SEP, BrowserState, Click, View, render
from hiper.envs.webshop.reward import Reward, compute_reward, token_set_ratio

__all__ = [
    "EVAL_GOALS",
    "MAX_ACTION_CHARS",
    "SEARCH_PLACEHOLDER",
    "SPLITS",
    "WebShopEnv",
    "WebShopOptions",
    "parse_action",
    "split_task_ids",
]

SPLITS: tuple[str, ...] = ("train", "eval")
#: Goals 0..499 of the shuffled list are the evaluation split (the standard test goals); the rest
#: are for training.
EVAL_GOALS = 500
#: The admissible entry standing for "any search": replace ``<your query>`` with keywords.
SEARCH_PLACEHOLDER = "search[<your query>]"
#: Longer actions are rejected as invalid (no model writes a 2,000-character action on purpose).
MAX_ACTION_CHARS = 2000

_ACTION = re.compile(r"(search|click)\[(.*)\]", re.DOTALL)
_UNSET: Any = object()


@dataclass(frozen=True)
class WebShopOptions:
    """Options of the ``webshop`` environment (validated on construction)."""

    data_dir: str | None = None
    """Folder with the official data files; default ``$WEBSHOP_DATA``."""
    nltk_data: str | None = None
    """Folder holding ``taggers/averaged_perceptron_tagger_eng/``; default ``$NLTK_DATA`` (then
    NLTK's default data paths)."""
    split: str = "train"
    """eval: goals 0..499 of the shuffled goal list; train: goals 500 and up."""
    goals: str = "synthetic"
    """synthetic (items_ins_v2_1000.json, 6,910 goals on the 1k data) | human (items_human_ins)."""
    max_steps: int = 15
    """Steps per episode; reaching it without buying truncates the episode."""

    def __post_init__(self) -> None:
        for name in ("data_dir", "nltk_data"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif value is not None and not isinstance(value, str):
                raise ValueError(f"{name} must be a path or None, got {value!r}")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; expected one of {SPLITS}")
        if self.goals not in GOAL_KINDS:
            raise ValueError(f"unknown goals {self.goals!r}; expected one of {GOAL_KINDS}")
        steps = self.max_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {steps!r}")


def split_task_ids(num_goals: int, split: str) -> range:
    """Goal indices of ``split`` for a goal list of ``num_goals`` goals."""
    if split == "eval":
        return range(min(EVAL_GOALS, num_goals))
    if split == "train":
        return range(min(EVAL_GOALS, num_goals), num_goals)
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _show(action: str, limit: int = 80) -> str:
    return repr(action if len(action) <= limit else action[:limit] + "…")


def parse_action(action: object) -> tuple[str, str] | str:
    """``(name, argument)`` of a well-formed ``search[...]`` / ``click[...]``, else an error text.

    The argument is stripped and lower-cased (the official environment lower-cases it too).
    """
    if not isinstance(action, str):
        return f"an action must be a string, got {type(action).__name__}"
    if len(action) > MAX_ACTION_CHARS:
        return f"the action is too long ({len(action):,} characters; at most {MAX_ACTION_CHARS:,})"
    text = action.strip()
    if not text:
        return "empty action; use search[keywords] or click[element]"
    m = _ACTION.fullmatch(text)
    if m is None:
        return f"{_show(text)} is not search[keywords] or click[element]"
    name, arg = m.group(1), m.group(2).strip().lower()
    if not arg:
        return f"{name}[...] needs {'keywords' if name == 'search' else 'an element to click'}"
    return name, arg


class WebShopEnv:
    """WebShop's text shop; see the package docstring for the rules."""

    family = "webshop"

    def __init__(self, options: WebShopOptions | None = None) -> None:
        self.options = options if options is not None else WebShopOptions()
        token_set_ratio()  # fail now, not at the first purchase, if thefuzz is missing
        self._catalog, self._goals = load_goals(self.options.data_dir, self.options.goals)  # type: ignore[arg-type]
        self._nouns: NounTagger = load_noun_tagger(find_tagger_dir(self.options.nltk_data))
        self._split_ids = split_task_ids(len(self._goals), self.options.split)
        self._rng = random.Random()
        self._goal: Goal | None = None
        self._state = BrowserState()
        self._view: View | None = None
        self._t = 0
        self._over = False
        self._searched: list[str] = []
        self._expert_subgoal: str | None = None
        self._last_reward: Reward | None = None

    # ------------------------------------------------------------------ TextEnv

    @property
    def manifest_key(self) -> str:
        """Name of this configuration's manifests: ``webshop`` or ``webshop-human``."""
        return "webshop" if self.options.goals == "synthetic" else "webshop-human"

    def task_id_for_seed(self, seed: int) -> str:
        """The task id ``reset(seed=seed)`` plays: the split's goals in order, cycling."""
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        ids = self._nonempty_split()
        return str(ids[seed % len(ids)])

    def reset(self, task_id: str | None = None, seed: int | None = None) -> EnvStep:
        """Start goal ``task_id`` (any goal index, as a string; it wins over ``seed``), else the
        goal of ``seed`` (see :meth:`task_id_for_seed`), else a random goal of the split."""
        if task_id is None:
            if seed is None:
                task_id = str(self._rng.choice(self._nonempty_split()))
            else:
                task_id = self.task_id_for_seed(seed)
        self._goal = self._goals[self._goal_index(task_id)]
        self._state = BrowserState()
        self._view = self._render()
        self._t = 0
        self._over = False
        self._searched = []
        self._expert_subgoal = None
        self._last_reward = None
        return EnvStep(self._view.observation, self.admissible, info=self._info(valid=True))

    def step(self, action: str) -> EnvStep:
        if self._goal is None or self._view is None:
            raise RuntimeError("call reset() before step()")
        if self._over:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        self._t += 1
        parsed = parse_action(action)
        error = self._check(*parsed) if isinstance(parsed, tuple) else parsed
        reward = 0.0
        if error is None:
            assert isinstance(parsed, tuple)
            name, arg = parsed
            if name == "search":
                self._search(arg)
            else:
                reward = self._click(self._view.clicks[arg])
            self._view = self._render()
            observation = self._view.observation
        else:
            observation = f"Invalid action: {error}.{SEP}{self._view.observation}"
        terminated = self._state.page == "done"
        info = self._info(valid=error is None)
        truncated = not terminated and self._t >= self.options.max_steps
        if truncated:
            info["truncation"] = "time_limit"
        self._over = terminated or truncated
        return EnvStep(
            observation,
            self.admissible,
            reward=reward,
            terminated=terminated,
            truncated=truncated,
            info=info,
        )

    def close(self) -> None:
        self._goal = None
        self._view = None

    # ------------------------------------------------------------------ mechanics

    def _nonempty_split(self) -> range:
        if not self._split_ids:
            raise ValueError(
                f"the {self.options.split} split of the {self.options.goals} goals is empty: there "
                f"are {len(self._goals)} goals and goals 0..{EVAL_GOALS - 1} form the eval split; "
                "use split='eval' or reset(task_id=...)"
            )
        return self._split_ids

    def _goal_index(self, task_id: object) -> int:
        if isinstance(task_id, int) and not isinstance(task_id, bool):
            task_id = str(task_id)
        if not isinstance(task_id, str) or not (
            task_id.strip().isascii() and task_id.strip().isdecimal()
        ):
            raise ValueError(
                f"a webshop task id is a goal index such as '0' or '512', got {task_id!r}"
            )
        index = int(task_id)
        if not 0 <= index < len(self._goals):
            raise ValueError(
                f"webshop task id {task_id!r} is out of range: there are {len(self._goals)} "
                f"{self.options.goals} goals (0..{len(self._goals) - 1})"
            )
        return index

    def _render(self) -> View:
        assert self._goal is not None
        return render(self._state, self._goal.instruction, self._catalog)

    def _check(self, name: str, arg: str) -> str | None:
        assert self._view is not None
        if name == "search":
            if not self._view.has_search_bar:
                return "search is only possible on the search page; click[back to search] first"
            return None
        if arg == "search":
            return "click[search] is not an action here; type search[keywords]"
        if arg not in self._view.clicks:
            return f"{_show(arg)} is not clickable on this page"
        return None

    def _search(self, keywords: str) -> None:
        self._searched.append(keywords)
        results = tuple(self._catalog.search(keywords))
        self._state = BrowserState(page="results", keywords=keywords, results=results)

    def _click(self, click: Click) -> float:
        s = self._state
        if click.kind == "back":
            self._state = BrowserState()
        elif click.kind == "next":
            s.page_no += 1
        elif click.kind == "prev":
            if s.page == "results":
                s.page_no -= 1
            elif s.page == "item":
                s.page, s.product, s.options = "results", None, {}
            else:  # sub-page -> its item page
                s.page, s.sub_page = "item", None
        elif click.kind == "product":
            s.page, s.product, s.options, s.sub_page = "item", click.product, {}, None
        elif click.kind == "option":
            assert click.group is not None and click.value is not None
            s.options[click.group] = click.value
        elif click.kind == "sub":
            s.page, s.sub_page = "sub", click.value
        elif click.kind == "buy":
            reward = self.score_purchase(self.product, s.options)
            self._last_reward = reward
            s.page, s.score = "done", reward.score
            return reward.score
        return 0.0

    def score_purchase(self, product: Product, options: dict[str, str]) -> Reward:
        """The score of buying ``product`` with ``options`` for the current goal."""
        if self._goal is None:
            raise RuntimeError("call reset() first")
        price = self._catalog.prices[self._catalog.by_asin[product.asin]]
        return compute_reward(product, self._goal, price, options, self._nouns)

    def _info(self, valid: bool) -> dict[str, Any]:
        g = self._goal
        assert g is not None
        r = self._last_reward
        info: dict[str, Any] = {
            "won": r is not None and r.score == 1.0,
            "score": 0.0 if r is None else r.score,
            "task_type": g.category,
            "task_id": g.task_id,
            "task": g.instruction,
            "step": self._t,
            "max_steps": self.options.max_steps,
            "page": self._state.page,
            "action_valid": valid,
        }
        if r is not None and self._state.product is not None:
            info["purchased"] = self._catalog.products[self._state.product].asin
            info["options"] = dict(self._state.options)
            info["reward_details"] = r.as_dict()
        return info

    # ------------------------------------------------------------------ extras

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def goals(self) -> tuple[Goal, ...]:
        """The whole shuffled goal list (index = task id)."""
        return self._goals

    @property
    def split_ids(self) -> range:
        """Goal indices of the configured split."""
        return self._split_ids

    @property
    def goal(self) -> Goal:
        if self._goal is None:
            raise RuntimeError("call reset() first")
        return self._goal

    @property
    def task(self) -> str:
        return self.goal.instruction

    @property
    def state(self) -> BrowserState:
        """The browser state (read it, do not modify it)."""
        return self._state

    @property
    def searches(self) -> tuple[str, ...]:
        """The keywords searched so far in this episode (lower-cased, in order)."""
        return tuple(self._searched)

    @property
    def product(self) -> Product:
        """The product whose page is open."""
        if self._state.product is None:
            raise RuntimeError("no product page is open")
        return self._catalog.products[self._state.product]

    @property
    def admissible(self) -> tuple[str, ...]:
        """``search[<your query>]`` on the search page, and ``click[x]`` per clickable."""
        if self._view is None or self._over or self._state.page == "done":
            return ()
        return self._view.admissible(SEARCH_PLACEHOLDER)

    @property
    def clickables(self) -> tuple[str, ...]:
        return () if self._view is None else tuple(self._view.clicks)

    def oracle_turn(self, subgoal: str | None = _UNSET) -> ExpertTurn:
        """The oracle's next Plan–Execute decision (see :mod:`hiper.envs.webshop.oracle`).

        ``subgoal`` is the subgoal currently in force (by default the oracle's last one); the turn
        is KEEP when the oracle's phase subgoal equals it verbatim, else SWITCH.
        """
        if self._goal is None:
            raise RuntimeError("call reset() first")
        if self._over:
            raise RuntimeError("the episode is over; call reset() to start a new one")
        current = self._expert_subgoal if subgoal is _UNSET else subgoal
        new, action = decide(self._state, self._goal, self._catalog, self._searched)
        switch = "KEEP" if current is not None and new == current else "SWITCH"
        self._expert_subgoal = new
        return ExpertTurn(switch, new, action)

    expert_turn = oracle_turn

    def clone(self) -> WebShopEnv:
        """An independent copy of this episode (for look-ahead); data are shared."""
        new = WebShopEnv.__new__(WebShopEnv)
        new.options = self.options
        new._catalog, new._goals, new._nouns = self._catalog, self._goals, self._nouns
        new._split_ids = self._split_ids
        new._rng = random.Random()
        new._rng.setstate(self._rng.getstate())
        new._goal = self._goal
        new._state = self._state.copy()
        new._view = self._view
        new._t, new._over = self._t, self._over
        new._searched = list(self._searched)
        new._expert_subgoal = self._expert_subgoal
        new._last_reward = self._last_reward
        return new
