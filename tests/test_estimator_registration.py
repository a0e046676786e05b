"""Adding an estimator touches one file: everything the pipeline needs (the model's value heads,
the critic's reads in the batch forward, value pre-training, the PPO value loss, the metrics) is
derived from what the estimator declares when it registers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hiper.algos.base import (
    ESTIMATORS,
    EstimatorSpec,
    TurnAdvantages,
    ValueRead,
    ValueTarget,
    get_estimator,
)
from hiper.algos.gae import shift_left
from hiper.algos.hae import HAEConfig
from hiper.runs.log import read_jsonl
from hiper.train.loop import Trainer
from tests.helpers import config


@dataclass(frozen=True)
class OneStepConfig:
    gamma: float = 0.9


def one_step_td(layout, rewards, values, cfg: OneStepConfig) -> TurnAdvantages:
    """A = r_t + gamma V(s_{t+1}) - V(s_t) with V read from a head named "state" (0 after the
    episode's last turn); the head learns the one-step targets r_t + gamma V(s_{t+1})."""
    m = layout.mask
    v = np.where(m, values.need("high", "one_step_td"), 0.0)
    target = rewards + cfg.gamma * np.where(layout.last, 0.0, shift_left(v))
    adv = np.where(m, target - v, 0.0)
    return TurnAdvantages.flat(adv, m, (ValueTarget("state", "start", target, m),))


READS = (ValueRead("high", "state", "start"),)  # Values.high, from the head "state"


@pytest.fixture
def registered(monkeypatch):
    """Registered for this test only (the registry is restored after it)."""
    spec = EstimatorSpec("one_step_td", one_step_td, OneStepConfig, READS)
    monkeypatch.setitem(ESTIMATORS, "one_step_td", spec)
    return spec


def test_heads_and_positions_come_from_the_declared_reads(registered):
    assert registered.needs_values and registered.heads() == ("state",)
    assert registered.head_positions() == {"state": "start"}
    hae = get_estimator("hae")
    assert hae.heads(HAEConfig(switch_advantage="gain")) == ("high", "low")
    assert hae.heads(HAEConfig(switch_advantage="segment_return")) == ("high", "low", "term")
    assert hae.head_positions(HAEConfig(switch_advantage="segment_return")) == {
        "high": "start",
        "low": "after_subgoal",
        "term": "start",
    }
    grpo = get_estimator("grpo")
    assert not grpo.needs_values and grpo.value_reads() == ()


def test_an_estimator_registered_in_a_test_file_trains_end_to_end(registered, tmp_path):
    cfg = config(tmp_path / "run", "iterations=2", "algo.estimator=one_step_td", "algo.config={}")
    trainer = Trainer(cfg)
    trainer.run()
    assert trainer.policy.heads == ("state",)
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[0]["critic_pretrain/loss_last"] >= 0  # pre-trained where the head is read
    for r in rows[1:]:
        assert r["ppo/value_loss/state"] >= 0 and "ppo/explained_var/state" in r
        assert r["ppo/grad_norm/critic"] > 0  # the head "state" learned its targets
