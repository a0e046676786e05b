"""Reward shaping of the original HiPER runs (HAE.md §7). Everything off by default.

All penalties are given as non-negative magnitudes and subtracted from the reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hiper.algos.layout import TurnLayout


@dataclass(frozen=True)
class ShapingConfig:
    success_reward: float | None = None  # replace env rewards by this on the last turn of a success
    invalid_penalty: float = 0.0  # per invalid (malformed) turn
    keep_penalty: float = 0.0  # KEEP turns (never turn 0)
    keep_penalty_mode: Literal["fixed", "normalized"] = "fixed"
    consistency_penalty: float = 0.0  # KEEP turn whose subgoal differs from the previous turn's

    def __post_init__(self) -> None:
        for name in ("invalid_penalty", "keep_penalty", "consistency_penalty"):
            v = getattr(self, name)
            if v < 0:
                raise ValueError(f"{name} is a magnitude and must be >= 0, got {v}")
        if self.keep_penalty_mode not in ("fixed", "normalized"):
            raise ValueError(
                f"keep_penalty_mode must be 'fixed' or 'normalized', got {self.keep_penalty_mode!r}"
            )


def shape_rewards(layout: TurnLayout, cfg: ShapingConfig) -> np.ndarray:
    """[B, T] shaped rewards.

    ``normalized`` KEEP penalty (the original runs'): each KEEP turn pays ``keep_penalty / T``,
    T the trajectory's number of turns, so a trajectory pays ``keep_penalty * (#KEEP / T)`` in
    total. Consistency penalty: a KEEP turn whose subgoal text (normalised) differs from the text
    written on the turn before (``TurnLayout.keep_mismatch``).
    """
    m = layout.mask
    if cfg.success_reward is None:
        r = layout.reward.copy()
    else:
        r = np.where(layout.last & layout.success[:, None], cfg.success_reward, 0.0)
    r -= cfg.invalid_penalty * (m & ~layout.valid)
    keep = m & ~layout.boundary
    if cfg.keep_penalty:
        if cfg.keep_penalty_mode == "fixed":
            r -= cfg.keep_penalty * keep
        else:  # the original runs' rule: penalty / T on each KEEP turn, T the episode's turns
            r -= (cfg.keep_penalty / layout.length)[:, None] * keep
    r -= cfg.consistency_penalty * (keep & layout.keep_mismatch)
    return np.where(m, r, 0.0)
