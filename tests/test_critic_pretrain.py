"""Value pre-training on the demonstrations' known returns (hiper.train.critic_pretrain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hiper.algos.base import get_estimator
from hiper.algos.hae import HAEConfig
from hiper.algos.shaping import ShapingConfig
from hiper.models.policy import load_policy
from hiper.protocol import parse
from hiper.train.critic_pretrain import (
    demonstration_returns,
    episode_examples,
    episode_returns,
    pretrain_critic,
)
from hiper.train.sft import SFTExample, expert_examples
from tests.helpers import trajectory

#: HAE with the original code's switch advantage reads three heads, each at its own position
SEGMENT_RETURN = get_estimator("hae").head_positions(HAEConfig(switch_advantage="segment_return"))
HEADS = tuple(SEGMENT_RETURN)


def _ex(turns_left: int, won: bool) -> SFTExample:
    return SFTExample(np.ones(2, np.int64), np.ones(2, np.int64), turns_left=turns_left, won=won)


def test_demonstration_returns_by_hand():
    ex = [_ex(2, True), _ex(1, True), _ex(0, True), _ex(1, False), _ex(0, False)]
    np.testing.assert_allclose(
        demonstration_returns(ex, 0.9, 10.0), [8.1, 9.0, 10.0, 0.0, 0.0], atol=1e-12
    )


def test_expert_examples_record_turns_left_and_outcome(tiny_model_dir: Path):
    policy = load_policy(tiny_model_dir, reference=False)
    opts = {"max_steps": 20, "task_types": ["pick_and_place_simple"]}
    ex = expert_examples("household", 3, 0.0, 0, policy.tokenizer, options=opts)
    # episodes are consecutive runs whose turns_left count down to 0; the noiseless expert wins
    ends = [i for i, e in enumerate(ex) if e.turns_left == 0]
    assert len(ends) == 3 and ends[-1] == len(ex) - 1
    start = 0
    for end in ends:
        assert [e.turns_left for e in ex[start : end + 1]] == list(range(end - start, -1, -1))
        start = end + 1
    assert all(e.won for e in ex)
    # a step limit of 1 cuts every episode before the win: all returns are 0
    cut = expert_examples(
        "household", 2, 0.0, 0, policy.tokenizer, options={**opts, "max_steps": 1}
    )
    assert cut and not any(e.won for e in cut)


@pytest.mark.parametrize("critic", ["separate", "shared"])
def test_pretraining_fits_the_returns_and_leaves_the_policy_alone(tiny_model_dir: Path, critic):
    torch.manual_seed(0)
    policy = load_policy(
        tiny_model_dir,
        critic=critic,
        heads=HEADS,
        reference=False,
        value_readout="prefix_mean",
        value_scale=10.0,
    )
    opts = {"max_steps": 20, "task_types": ["pick_and_place_simple"]}
    ex = expert_examples(
        "household",
        12,
        0.3,
        100,
        policy.tokenizer,
        history_len=1,
        instructions=False,
        options=opts,
    )
    lm_before = {k: v.clone() for k, v in policy.lm.state_dict().items()}
    heads_before = policy.value_head.weight.detach().clone()
    out = pretrain_critic(
        policy,
        ex,
        demonstration_returns(ex, 0.95, 10.0),
        SEGMENT_RETURN,
        format="plan_execute",
        steps=25,
        lr=3e-3,
        batch_rows=16,
    )
    assert out["critic_pretrain/loss_last"] < 0.5 * out["critic_pretrain/loss_first"]
    for h in HEADS:  # the heads predict held-out returns better than their mean does
        assert out[f"critic_pretrain/explained_var/{h}"] > 0.0, out
    assert not torch.equal(policy.value_head.weight, heads_before)
    for k, v in policy.lm.state_dict().items():  # the policy (a shared backbone too) is untouched
        assert torch.equal(v, lm_before[k]), k


def test_episode_returns_by_hand():
    # a won 3-turn episode (success reward 10 on its last turn, one malformed turn), a lost 2-turn
    # one cut by the step limit; gamma 0.9, invalid penalty 0.5
    won = trajectory(["SWITCH", "KEEP", "KEEP"], [0.0, 0.0, 1.0], success=True)
    bad = parse("no tags at all")
    won.turns[1].response_text, won.turns[1].decision = "no tags at all", bad
    lost = trajectory(["SWITCH", "SWITCH"], [0.0, 0.0], terminated=False)
    shaping = ShapingConfig(success_reward=10.0, invalid_penalty=0.5)
    g = episode_returns([won, lost], shaping, 0.9)
    # won: r = [0, -0.5, 10] -> G2 = 10, G1 = -0.5 + 9 = 8.5, G0 = 0.9 * 8.5 = 7.65
    np.testing.assert_allclose(g, [7.65, 8.5, 10.0, 0.0, 0.0], atol=1e-12)
    ex = episode_examples([won, lost])
    assert [(e.turns_left, e.won) for e in ex] == [
        (2, True),
        (1, True),
        (0, True),
        (1, False),
        (0, False),
    ]
    assert ex[1].response == "no tags at all"
    # on a won expert-like episode (no penalties) it agrees with the demonstrations' formula
    clean = trajectory(["SWITCH", "KEEP"], [0.0, 1.0], success=True)
    np.testing.assert_allclose(
        episode_returns([clean], shaping, 0.9),
        demonstration_returns(episode_examples([clean]), 0.9, 10.0),
    )


def test_pretraining_refuses_returns_that_do_not_match_the_examples(tiny_model_dir: Path):
    policy = load_policy(tiny_model_dir, heads=HEADS, reference=False)
    ex = [_ex(1, True), _ex(0, True)]
    with pytest.raises(ValueError, match="one return per example"):
        pretrain_critic(
            policy, ex, np.zeros(3), SEGMENT_RETURN, format="plan_execute", steps=1, lr=1e-3
        )
