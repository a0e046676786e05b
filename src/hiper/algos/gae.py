"""Flat turn-level GAE: the PPO baseline (one critic head, V(s_t) read at response position 0)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiper.algos.base import (
    STATE_VALUE,
    TurnAdvantages,
    Values,
    ValueTarget,
    adv_stats,
    check_unit,
    maybe_standardize,
    register,
)
from hiper.algos.layout import TurnLayout


@dataclass(frozen=True)
class GAEConfig:
    gamma: float = 1.0
    lam: float = 0.95
    truncation_bootstrap: bool = True  # bootstrap a cut episode from V(s_T); False: treat as 0
    norm_adv: bool = True

    def __post_init__(self) -> None:
        check_unit("gamma", self.gamma)
        check_unit("lam", self.lam)


def bootstrap_value(layout: TurnLayout, values: Values, on: bool, name: str) -> np.ndarray:
    """[B] value after each trajectory's last turn: V(s_T) for truncated episodes, else 0."""
    if not on or not layout.truncated.any():
        return np.zeros(layout.shape[0])
    final = values.need("final", name)
    return np.where(layout.truncated, final, 0.0)


def shift_left(x: np.ndarray) -> np.ndarray:
    """x[:, t+1] at column t (0 past the end)."""
    out = np.zeros_like(x)
    out[:, :-1] = x[:, 1:]
    return out


def turn_gae(
    rewards: np.ndarray,
    v: np.ndarray,
    v_next: np.ndarray,
    done: np.ndarray,
    cut: np.ndarray,
    gamma: float,
    lam: float,
) -> np.ndarray:
    """Generic backward GAE over the turn axis, vectorised over trajectories.

    delta_t = r_t + gamma (1 - done_t) v_next_t - v_t;  A_t = delta_t + gamma lam (1 - cut_t) A_{t+1}.
    ``cut`` marks turns after which credit must not flow back (segment or episode ends).
    """
    delta = rewards + gamma * np.where(done, 0.0, v_next) - v
    carry = gamma * lam * ~cut
    adv = np.zeros_like(delta)
    nxt = np.zeros(delta.shape[0])
    for t in range(delta.shape[1] - 1, -1, -1):
        nxt = delta[:, t] + carry[:, t] * nxt
        adv[:, t] = nxt
    return adv


@register("gae", GAEConfig, reads=STATE_VALUE)
def gae(layout: TurnLayout, rewards: np.ndarray, values: Values, cfg: GAEConfig) -> TurnAdvantages:
    m = layout.mask
    v = np.where(m, values.need("high", "gae"), 0.0)
    last = layout.last
    boot = bootstrap_value(layout, values, cfg.truncation_bootstrap, "gae")
    v_next = np.where(last, boot[:, None], shift_left(v))
    done = last & layout.terminated[:, None]
    adv = np.where(m, turn_gae(rewards, v, v_next, done, last | ~m, cfg.gamma, cfg.lam), 0.0)
    ret = np.where(m, adv + v, 0.0)
    stats = adv_stats("turn", adv, m)
    return TurnAdvantages.flat(
        maybe_standardize(adv, m, cfg.norm_adv),
        m,
        targets=(ValueTarget("high", "start", ret, m),),
        stats=stats,
    )
