"""Hierarchical Advantage Estimation (HAE), as specified in docs/algorithms.md (HAE.md §2-§7).

Low level: GAE inside each subgoal segment, never across a boundary; the last turn of a segment
bootstraps from V^H at the next boundary. High level: GAE over segments as semi-MDP macro-steps with
discount gamma^{d_k}. Switch: the paper's ``gain`` (q_t - beta_t)(V^H_t - V^P_t) or the original
code's ``segment_return`` G_t - V^term_t. A time-limit cut is truncation, never termination.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hiper.algos.base import (
    TurnAdvantages,
    ValueRead,
    Values,
    ValueTarget,
    adv_stats,
    check_unit,
    maybe_standardize,
    register,
)
from hiper.algos.gae import bootstrap_value, shift_left, turn_gae
from hiper.algos.layout import TurnLayout

SWITCH_VARIANTS = ("gain", "segment_return")


@dataclass(frozen=True)
class HAEConfig:
    gamma: float = 1.0
    lam_low: float = 1.0
    lam_high: float = 0.95
    switch_advantage: Literal["gain", "segment_return"] = "gain"
    truncation_bootstrap: bool = True  # bootstrap a cut episode from V^H(s_T); False: from 0
    norm_adv: bool = True  # standardise each advantage type separately over the batch

    def __post_init__(self) -> None:
        check_unit("gamma", self.gamma)
        check_unit("lam_low", self.lam_low)
        check_unit("lam_high", self.lam_high)
        if self.switch_advantage not in SWITCH_VARIANTS:
            raise ValueError(
                f"switch_advantage must be one of {SWITCH_VARIANTS}, got {self.switch_advantage!r}"
            )


@dataclass(frozen=True)
class HAEParts:
    """Raw (unstandardised) HAE quantities on the layout, [B, T] each."""

    low: np.ndarray  # A^L_t
    low_return: np.ndarray  # R^L_t
    high: np.ndarray  # A^H_k at boundary turns b_k, 0 elsewhere
    high_return: np.ndarray  # R^H_k at boundary turns
    seg_return: np.ndarray  # G_t: in-segment discounted return + bootstrap at the segment end
    boundary: np.ndarray  # real boundary turns
    seg_end: np.ndarray  # real last turns of segments


def hae_parts(layout: TurnLayout, rewards: np.ndarray, values: Values, cfg: HAEConfig) -> HAEParts:
    m = layout.mask
    vh = np.where(m, values.need("high", "hae"), 0.0)
    vl = np.where(m, values.need("low", "hae"), 0.0)
    last = layout.last
    bnd = layout.boundary & m
    seg_end = m & (last | shift_left(bnd))
    boot = bootstrap_value(layout, values, cfg.truncation_bootstrap, "hae")
    # N_t: V^L_{t+1} inside a segment, V^H at the next boundary, the bootstrap after the last turn
    nxt = np.where(last, boot[:, None], np.where(seg_end, shift_left(vh), shift_left(vl)))
    done = last & layout.terminated[:, None]
    cut = seg_end | ~m
    r = np.where(m, rewards, 0.0)
    a_low = np.where(m, turn_gae(r, vl, nxt, done, cut, cfg.gamma, cfg.lam_low), 0.0)
    # G_t = r_t + gamma * (G_{t+1} inside the segment, (1 - d) N_t at its end)
    g = turn_gae(r, np.zeros_like(r), np.where(seg_end, nxt, 0.0), done, cut, cfg.gamma, 1.0)
    g = np.where(m, g, 0.0)
    # high level: delta^H_k = G_{b_k} - V^H_{b_k}; A^H_k = delta^H_k + gamma^{d_k} lam_H A^H_{k+1}
    a_high = np.zeros_like(r)
    carry = np.zeros(r.shape[0])
    dist = np.zeros(r.shape[0])
    for t in range(r.shape[1] - 1, -1, -1):
        dist = np.where(seg_end[:, t], 1.0, dist + 1.0)
        a = g[:, t] - vh[:, t] + cfg.gamma**dist * cfg.lam_high * carry
        a_high[:, t] = np.where(bnd[:, t], a, 0.0)
        carry = np.where(bnd[:, t], a, carry)
    return HAEParts(
        low=a_low,
        low_return=np.where(m, a_low + vl, 0.0),
        high=a_high,
        high_return=np.where(bnd, a_high + vh, 0.0),
        seg_return=g,
        boundary=bnd,
        seg_end=seg_end,
    )


def hae_reads(cfg: HAEConfig) -> tuple[ValueRead, ...]:
    """What HAE reads per turn: V^H(s_t) (high head, first position), V^L(s_t, o_t) (low head,
    right after ``</subgoal>``) and the value the switch advantage subtracts (``Values.prev``):
    V^P(s_t, o_{t-1}), the low head at the first position, for ``gain``; V^term(s_t), a head of
    its own, for ``segment_return``."""
    prev = ValueRead("prev", "low" if cfg.switch_advantage == "gain" else "term", "start")
    return (
        ValueRead("high", "high", "start"),
        ValueRead("low", "low", "after_subgoal"),
        prev,
    )


@register("hae", HAEConfig, reads=hae_reads)
def hae(layout: TurnLayout, rewards: np.ndarray, values: Values, cfg: HAEConfig) -> TurnAdvantages:
    m = layout.mask
    p = hae_parts(layout, rewards, values, cfg)
    decision = m.copy()
    decision[:, 0] = False  # turn 0 is always a boundary: its switch token is not a decision
    if cfg.switch_advantage == "gain":
        beta = layout.switch_prob
        missing = decision & ~np.isfinite(beta)
        if missing.any():
            raise ValueError(
                f"switch_advantage='gain' needs beta_t = pi(SWITCH) on every turn after the first "
                f"(Turn.switch_prob); {int(missing.sum())} turns have none"
            )
        vh = np.where(m, values.need("high", "hae"), 0.0)
        vp = np.where(m, values.need("prev", "hae"), 0.0)
        q = layout.boundary.astype(np.float64)
        a_switch = np.where(decision, (q - np.nan_to_num(beta)) * (vh - vp), 0.0)
        # V^P_t = V^low(s_t, o_{t-1}) equals V^L_t on KEEP turns, so it learns R^L there
        switch_target = ValueTarget("low", "start", p.low_return, decision & ~layout.boundary)
    else:
        vt = np.where(m, values.need("prev", "hae"), 0.0)
        a_switch = np.where(decision, p.seg_return - vt, 0.0)
        switch_target = ValueTarget("term", "start", p.seg_return, m)
    stats = {
        **adv_stats("low", p.low, m),
        **adv_stats("high", p.high, p.boundary),
        **adv_stats("switch", a_switch, decision),
    }
    return TurnAdvantages(
        action=maybe_standardize(p.low, m, cfg.norm_adv),
        subgoal=maybe_standardize(p.high, p.boundary, cfg.norm_adv),
        subgoal_on=p.boundary,
        switch=maybe_standardize(a_switch, decision, cfg.norm_adv),
        switch_on=decision,
        targets=(
            ValueTarget("high", "start", p.high_return, p.boundary),
            ValueTarget("low", "after_subgoal", p.low_return, m),
            switch_target,
        ),
        stats=stats,
    )
