"""GiGPO (Feng et al. 2025): group-in-group advantages for multi-turn agents, critic-free.

- Episode level: ``A^E`` = a trajectory's outcome (sum of its turn rewards), normalised within its
  rollout group (``layout.group``), on every turn of the trajectory.
- Step level: ``A^S`` = the discounted return ``G_t = sum_{j >= t} gamma^(j - t) r_j`` from each
  turn, normalised within its *anchor-state group*: all turns of one rollout group that acted on the
  same observation text (same ``(layout.group, layout.state_id)``), whatever the step index or the
  trajectory. A singleton anchor group has no peers and gets ``A^S = 0``.
- ``A = A^E + omega * A^S``.

``norm="mean_std"`` divides by the unbiased group std (+ eps), ``norm="mean"`` only centres; the
same choice applies to both levels (see :mod:`hiper.algos.groups` for the conventions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hiper.algos.base import TurnAdvantages, Values, adv_stats, check_unit, register
from hiper.algos.groups import discounted_returns, normalize_in_groups
from hiper.algos.grpo import trajectory_outcomes
from hiper.algos.layout import TurnLayout

_NORMS = ("mean_std", "mean")


@dataclass(frozen=True)
class GiGPOConfig:
    gamma: float = 0.95
    omega: float = 1.0
    norm: Literal["mean_std", "mean"] = "mean_std"

    def __post_init__(self) -> None:
        check_unit("gamma", self.gamma)
        if not self.omega >= 0.0:
            raise ValueError(f"omega must be >= 0, got {self.omega}")
        if self.norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {self.norm!r}")


@register("gigpo", GiGPOConfig, groups=True)
def gigpo(
    layout: TurnLayout, rewards: np.ndarray, values: Values, cfg: GiGPOConfig
) -> TurnAdvantages:
    use_std = cfg.norm == "mean_std"
    mask = layout.mask

    outcome, real = trajectory_outcomes(layout, rewards)
    ep = np.zeros(layout.shape[0])
    ep[real] = normalize_in_groups(outcome[real], layout.group[real], use_std)
    episode = np.where(mask, ep[:, None], 0.0)

    ret = discounted_returns(rewards, mask, cfg.gamma)
    groups = np.broadcast_to(layout.group[:, None], layout.shape)
    anchors = np.stack([groups[mask], layout.state_id[mask]], axis=1)
    step = np.zeros(layout.shape)
    step[mask] = normalize_in_groups(ret[mask], anchors, use_std)

    adv = episode + cfg.omega * step
    stats = adv_stats("gigpo", adv, mask)
    stats.update(adv_stats("gigpo_episode", episode, mask))
    stats.update(adv_stats("gigpo_step", step, mask))
    return TurnAdvantages.flat(adv, mask, stats=stats)
