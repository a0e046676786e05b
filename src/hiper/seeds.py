"""Every seed a run derives, in one place.

A run's random draws all follow from ``seed`` (the config's) and the iteration, so a killed and
resumed run repeats an uninterrupted one exactly. The constants are arbitrary but fixed: changing
one changes every run's draws (and the figures measured with them).
"""

from __future__ import annotations

__all__ = [
    "CRITIC_EPOCHS_OFFSET",
    "eval_generate_seed",
    "generate_seed",
    "rollout_seed",
    "screening_seed",
    "shard_seed",
    "shuffle_seed",
    "task_seed_base",
]


def task_seed_base(seed: int) -> int:
    """The run's first training-task seed: its training tasks are ``base + 0, 1, 2, ...``
    (runs of different seeds play disjoint tasks)."""
    return seed * 1_000_000


def rollout_seed(seed: int, iteration: int) -> int:
    """The sampling seed of iteration ``iteration``'s rollout (0: the episodes the SFT policy
    plays for value pre-training)."""
    return seed * 7919 + iteration


def screening_seed(seed: int, wave: int) -> int:
    """The sampling seed of the pool screening's ``wave``-th rollout (apart from iterations')."""
    return seed * 7919 + 50_000 + wave


def generate_seed(rollout: int, call: int) -> int:
    """The seed of the ``call``-th generate call of the rollout seeded ``rollout``."""
    return rollout * 100_003 + call


def shard_seed(rollout: int, shard: int) -> int:
    """The sampling seed of shard ``shard`` of the rollout seeded ``rollout``
    (``rollout.shards``); shard 0 keeps the rollout's own seed, so one shard is the unsharded
    rollout."""
    return rollout + shard * 1_000_000_007


def eval_generate_seed(call: int) -> int:
    """The seed of an evaluation's ``call``-th generate call (every evaluation samples alike)."""
    return 10_000 + call


#: The extra value-only epochs after iteration i's update shuffle as iteration ``i + this``.
CRITIC_EPOCHS_OFFSET = 7_777


def shuffle_seed(seed: int, iteration: int) -> int:
    """The row shuffle of iteration ``iteration``'s PPO update (``ppo.seed``); the extra
    value-only epochs after it (``ppo.critic_epochs``) use ``iteration + CRITIC_EPOCHS_OFFSET``."""
    return seed * 1_000_003 + iteration
