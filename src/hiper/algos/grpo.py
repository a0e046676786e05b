"""GRPO: a trajectory's outcome, normalised within its rollout group, on every one of its turns.

The outcome of a trajectory is the sum of its turn rewards. Advantages are
``(R_i - mean_g) / (std_g + eps)`` with the unbiased group std (or only ``R_i - mean_g`` when
``norm_by_std`` is False); singleton groups get 0 (see :mod:`hiper.algos.groups`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiper.algos.base import TurnAdvantages, Values, adv_stats, register
from hiper.algos.groups import normalize_in_groups
from hiper.algos.layout import TurnLayout


@dataclass(frozen=True)
class GRPOConfig:
    norm_by_std: bool = True


def trajectory_outcomes(layout: TurnLayout, rewards: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(outcome [B] = sum of the real turn rewards, real [B] = rows that hold a trajectory)."""
    real = layout.mask.any(axis=1)
    outcome = np.where(layout.mask, rewards, 0.0).sum(axis=1)
    return outcome, real


@register("grpo", GRPOConfig, groups=True)
def grpo(
    layout: TurnLayout, rewards: np.ndarray, values: Values, cfg: GRPOConfig
) -> TurnAdvantages:
    outcome, real = trajectory_outcomes(layout, rewards)
    traj_adv = np.zeros(layout.shape[0])
    traj_adv[real] = normalize_in_groups(outcome[real], layout.group[real], cfg.norm_by_std)
    adv = np.where(layout.mask, traj_adv[:, None], 0.0)
    return TurnAdvantages.flat(adv, layout.mask, stats=adv_stats("grpo", adv, layout.mask))
