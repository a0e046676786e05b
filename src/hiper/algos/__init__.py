"""Advantage estimators: registered pure functions over the padded (trajectory x turn) layout."""

from hiper.algos import gae, gigpo, grpo, hae, reinforce_pp, rloo  # noqa: F401  (registration)
from hiper.algos.base import (
    ESTIMATORS,
    TurnAdvantages,
    Values,
    ValueTarget,
    estimate,
    get_estimator,
)
from hiper.algos.layout import TurnLayout, build_layout

__all__ = [
    "ESTIMATORS",
    "TurnAdvantages",
    "TurnLayout",
    "ValueTarget",
    "Values",
    "build_layout",
    "estimate",
    "get_estimator",
]
