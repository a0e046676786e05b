"""Value pre-training on the demonstrations' known returns (hiper.train.critic_pretrain)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hiper.models.policy import load_policy
from hiper.train.critic_pretrain import demonstration_returns, pretrain_critic
from hiper.train.sft import SFTExample, expert_examples

HEADS = ("high", "low", "term")


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
        format="plan_execute",
        gamma=0.95,
        success_reward=10.0,
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
