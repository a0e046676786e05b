"""Estimator interface: registered pure functions ``(layout, rewards, values, config) -> TurnAdvantages``.

Everything is an array over the padded (trajectory x turn) layout; nothing here touches text,
tokens or torch. :func:`hiper.algos.tokens.token_advantages` later spreads the per-turn advantages
onto response tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from hiper.algos.layout import TurnLayout, masked_standardize

Position = Literal["start", "after_subgoal"]


@dataclass(frozen=True)
class Values:
    """Critic outputs on the layout, each [B, T] (padding entries are ignored).

    - ``high``: V^H(s_t), the high head at response position 0 (also the flat critic's V(s_t)).
    - ``low``: V^L(s_t, o_t), the low head right after ``</subgoal>``.
    - ``prev``: the value HAE's switch advantage subtracts: V^P(s_t, o_{t-1}), the low head at
      position 0 (``gain``), or V^term(s_t), the term head (``segment_return``); hae.py declares
      which (:data:`hiper.algos.hae.hae_reads`).
    - ``final``: [B] V^H of the state after each trajectory's last turn, for truncation bootstrap.
    """

    high: np.ndarray | None = None
    low: np.ndarray | None = None
    prev: np.ndarray | None = None
    final: np.ndarray | None = None

    def need(self, name: str, estimator: str) -> np.ndarray:
        v = getattr(self, name)
        if v is None:
            raise ValueError(f"estimator {estimator!r} needs values.{name}, but it was not given")
        return np.asarray(v, dtype=np.float64)


@dataclass(frozen=True)
class ValueTarget:
    """A regression target for one value head, read at one response position per turn."""

    head: str  # "high" | "low" | "term"
    position: Position
    target: np.ndarray  # float64 [B,T]
    weight: np.ndarray  # bool [B,T]: turns that carry this target


@dataclass(frozen=True)
class TurnAdvantages:
    """Per-turn advantages for each kind of response token, [B, T] each.

    ``action`` is used for the action block *and* every token outside the switch/subgoal blocks
    (whitespace, EOS, or the garbage of a malformed turn, so invalid-turn penalties reach it).
    ``subgoal`` / ``switch`` apply to those blocks where ``subgoal_on`` / ``switch_on`` are set;
    elsewhere those tokens are not trained (e.g. a KEEP turn's copied subgoal).
    """

    action: np.ndarray
    subgoal: np.ndarray
    subgoal_on: np.ndarray
    switch: np.ndarray
    switch_on: np.ndarray
    targets: tuple[ValueTarget, ...] = ()
    stats: dict[str, float] = field(default_factory=dict)

    @classmethod
    def flat(
        cls,
        adv: np.ndarray,
        mask: np.ndarray,
        targets: tuple[ValueTarget, ...] = (),
        stats: dict[str, float] | None = None,
    ) -> TurnAdvantages:
        """One advantage per turn for every token of the response (flat baselines)."""
        adv = np.where(mask, adv, 0.0)
        return cls(adv, adv, mask, adv, mask, targets, stats or {})


Estimator = Callable[[TurnLayout, np.ndarray, Values, Any], TurnAdvantages]


@dataclass(frozen=True)
class ValueRead:
    """A value the estimator reads on every turn: the :class:`Values` field it fills (``name``),
    from which critic head, at which response position."""

    name: str  # "high" | "low" | "prev"
    head: str
    position: Position


#: The flat critic: V(s_t), head "high" at the response's first position.
STATE_VALUE = (ValueRead("high", "high", "start"),)
#: The model's heads when the estimator reads none (every policy carries at least one head).
NO_CRITIC_HEADS = ("high",)

Reads = tuple[ValueRead, ...] | Callable[[Any], tuple[ValueRead, ...]]


@dataclass(frozen=True)
class EstimatorSpec:
    """A registered estimator: its function, its config dataclass and the values it reads.
    The first read is the state value V(s_t); the final state of a truncated episode is read
    with its head for the bootstrap (``Values.final``). ``groups``: its advantages compare the
    rollouts of one task with each other (a training config needs ``rollout.group_size >= 2``)."""

    name: str
    fn: Estimator
    config: type
    reads: Reads = ()
    groups: bool = False

    def value_reads(self, config: Any = None) -> tuple[ValueRead, ...]:
        """The reads under ``config`` (default: the config class's defaults)."""
        if not callable(self.reads):
            return tuple(self.reads)
        return tuple(self.reads(self.config() if config is None else config))

    @property
    def needs_values(self) -> bool:
        return bool(self.value_reads())

    def heads(self, config: Any = None) -> tuple[str, ...]:
        """The critic heads the model needs: every head read, in order of first use."""
        return tuple(dict.fromkeys(r.head for r in self.value_reads(config))) or NO_CRITIC_HEADS

    def head_positions(self, config: Any = None) -> dict[str, Position]:
        """Where each head is read (its first read's position)."""
        out: dict[str, Position] = {}
        for r in self.value_reads(config):
            out.setdefault(r.head, r.position)
        return out


ESTIMATORS: dict[str, EstimatorSpec] = {}


def register(
    name: str, config: type, reads: Reads = (), groups: bool = False
) -> Callable[[Estimator], Estimator]:
    """Register ``fn`` under ``name`` with its config dataclass and the values it reads
    (``reads``: a tuple of :class:`ValueRead`, or a function of the config returning one; empty
    for a critic-free estimator). Everything else (the model's heads, the critic's forward, the
    value pre-training positions) is derived from that declaration. ``groups=True``: a group
    baseline (singleton groups get advantage 0), so training refuses ``rollout.group_size < 2``."""

    def deco(fn: Estimator) -> Estimator:
        if name in ESTIMATORS:
            raise ValueError(f"estimator {name!r} is already registered")
        ESTIMATORS[name] = EstimatorSpec(name, fn, config, reads, groups)
        return fn

    return deco


def get_estimator(name: str) -> EstimatorSpec:
    import hiper.algos  # noqa: F401  (registers the built-in estimators)

    try:
        return ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown estimator {name!r}; expected one of {sorted(ESTIMATORS)}"
        ) from None


def estimate(
    name: str,
    layout: TurnLayout,
    rewards: np.ndarray | None = None,
    values: Values | None = None,
    config: Any = None,
) -> TurnAdvantages:
    """Run a registered estimator (``rewards`` defaults to the raw rewards of the layout)."""
    spec = get_estimator(name)
    cfg = spec.config() if config is None else config
    if not isinstance(cfg, spec.config):
        raise TypeError(
            f"estimator {name!r} takes a {spec.config.__name__}, got {type(cfg).__name__}"
        )
    r = layout.reward if rewards is None else np.asarray(rewards, dtype=np.float64)
    if r.shape != layout.shape:
        raise ValueError(f"rewards have shape {r.shape}, expected the layout's {layout.shape}")
    return spec.fn(layout, np.where(layout.mask, r, 0.0), values or Values(), cfg)


def adv_stats(name: str, adv: np.ndarray, where: np.ndarray) -> dict[str, float]:
    sel = adv[where]
    if sel.size == 0:
        return {f"adv/{name}/mean": 0.0, f"adv/{name}/std": 0.0}
    return {f"adv/{name}/mean": float(sel.mean()), f"adv/{name}/std": float(sel.std())}


def maybe_standardize(adv: np.ndarray, where: np.ndarray, on: bool) -> np.ndarray:
    return masked_standardize(adv, where) if on else np.where(where, adv, 0.0)


def check_unit(name: str, x: float) -> None:
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {x}")
