"""RLOO: REINFORCE with a leave-one-out baseline inside each rollout group.

``A_i = R_i - mean_{j != i, j in g} R_j = n / (n - 1) * (R_i - mean_g)`` with ``R_i`` the sum of the
trajectory's turn rewards, broadcast to every real turn. A singleton group has no other member to
form a baseline from and gets 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiper.algos.base import TurnAdvantages, Values, adv_stats, register
from hiper.algos.groups import group_mean_std
from hiper.algos.grpo import trajectory_outcomes
from hiper.algos.layout import TurnLayout


@dataclass(frozen=True)
class RLOOConfig:
    pass


@register("rloo", RLOOConfig, groups=True)
def rloo(
    layout: TurnLayout, rewards: np.ndarray, values: Values, cfg: RLOOConfig
) -> TurnAdvantages:
    outcome, real = trajectory_outcomes(layout, rewards)
    r = outcome[real]
    mean, _, count = group_mean_std(r, layout.group[real])
    scale = np.divide(count, count - 1, out=np.zeros(count.shape), where=count > 1)
    traj_adv = np.zeros(layout.shape[0])
    traj_adv[real] = scale * (r - mean)
    adv = np.where(layout.mask, traj_adv[:, None], 0.0)
    return TurnAdvantages.flat(adv, layout.mask, stats=adv_stats("rloo", adv, layout.mask))
