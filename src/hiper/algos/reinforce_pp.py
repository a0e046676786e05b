"""REINFORCE++: discounted per-turn return-to-go, standardised over every real turn of the batch.

``G_t = sum_{j >= t} gamma^(j - t) r_j`` within the trajectory (no critic, no group baseline); the
batch-wide standardisation (:func:`~hiper.algos.layout.masked_standardize`, population std) plays
the role of the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiper.algos.base import TurnAdvantages, Values, adv_stats, check_unit, register
from hiper.algos.groups import discounted_returns
from hiper.algos.layout import TurnLayout, masked_standardize


@dataclass(frozen=True)
class ReinforcePPConfig:
    gamma: float = 1.0

    def __post_init__(self) -> None:
        check_unit("gamma", self.gamma)


@register("reinforce_pp", ReinforcePPConfig)
def reinforce_pp(
    layout: TurnLayout, rewards: np.ndarray, values: Values, cfg: ReinforcePPConfig
) -> TurnAdvantages:
    ret = discounted_returns(rewards, layout.mask, cfg.gamma)
    adv = masked_standardize(ret, layout.mask)
    stats = adv_stats("reinforce_pp", adv, layout.mask)
    stats.update(adv_stats("reinforce_pp_return", ret, layout.mask))
    return TurnAdvantages.flat(adv, layout.mask, stats=stats)
