"""The trainer scores responses under the distribution that sampled them.

Rollouts at T = 0.4 on the household world with a tiny model: the trainer's recomputed old
log-probs equal the engine's to 1e-4, a batch built from the sampler's log-probs (no second policy
forward) equals one built by recomputing them, and the first PPO step starts at ratio 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hiper.algos.shaping import ShapingConfig
from hiper.config import ConfigError
from hiper.engines.hf import HFEngine, chat_prompt_ids
from hiper.envs.pool import EnvPool
from hiper.models.policy import load_policy
from hiper.protocol.masks import TokenAligner
from hiper.rollout import RolloutConfig, Task, rollout
from hiper.train.config import load_train_config
from hiper.train.ppo import PPOConfig, make_optimizer, ppo_update
from hiper.train.prepare import prepare_batch
from tests.conftest import PROJECT_ROOT

T = 0.4


@pytest.fixture(scope="module")
def sampled(tiny_model_dir: Path):
    """A separate-critic HAE policy and 4 household episodes it sampled at T = 0.4."""
    policy = load_policy(
        tiny_model_dir, critic="separate", heads=("high", "low", "term"), reference=True
    )
    engine = HFEngine(policy.lm, policy.tokenizer, max_new_tokens=24, temperature=T)
    pool = EnvPool("household", 4, options={"max_steps": 4})
    try:
        calls = iter(range(1000))
        trajs = rollout(
            pool,
            lambda p: engine.generate(p, seed=next(calls)),
            lambda text: chat_prompt_ids(policy.tokenizer, text),
            [Task(seed=s) for s in range(4)],
            "household",
            RolloutConfig(max_turns=4, history_len=1, instructions=False),
        )
    finally:
        pool.close()
    return policy, trajs


def _prepare(policy, trajs, **kw):
    from hiper.algos.base import get_estimator

    cfg = get_estimator("hae").config(switch_advantage="segment_return")
    return prepare_batch(
        policy, TokenAligner(policy.tokenizer), trajs, "hae", cfg, ShapingConfig(), 8, **kw
    )


def test_trainer_old_logprobs_equal_the_engines_at_temperature(sampled):
    policy, trajs = sampled
    engine_lp = np.concatenate([t.logprobs for tr in trajs for t in tr.turns])
    re = _prepare(policy, trajs, temperature=T, recompute_old_logprobs=True)
    assert re.batch.temperature == T
    np.testing.assert_allclose(re.batch.old_logprobs.numpy(), engine_lp, atol=1e-4)
    # untempered scores belong to another distribution: the bug this guards against
    plain = _prepare(policy, trajs, temperature=1.0, recompute_old_logprobs=True)
    assert np.abs(plain.batch.old_logprobs.numpy() - engine_lp).max() > 1e-2


def test_sampler_logprobs_give_the_same_batch_as_a_recompute(sampled):
    policy, trajs = sampled
    re = _prepare(policy, trajs, temperature=T, recompute_old_logprobs=True)
    fast = _prepare(policy, trajs, temperature=T)
    a, b = re.batch, fast.batch
    np.testing.assert_allclose(b.old_logprobs.numpy(), a.old_logprobs.numpy(), atol=1e-4)
    assert torch.equal(a.ref_logprobs, b.ref_logprobs)
    assert torch.equal(a.old_values, b.old_values)
    np.testing.assert_allclose(b.advantages.numpy(), a.advantages.numpy(), atol=1e-4)
    assert torch.equal(a.vt_target, b.vt_target) or np.allclose(a.vt_target, b.vt_target, atol=1e-4)


def test_first_ppo_step_starts_on_policy_at_temperature(sampled):
    import copy

    policy, trajs = sampled
    model = copy.deepcopy(policy)
    prep = _prepare(model, trajs, temperature=T)
    cfg = PPOConfig(actor_lr=0.0, critic_lr=0.0, kl_coef=0.01)
    m = ppo_update(model, make_optimizer(model, cfg), prep.batch, cfg)
    # one whole-batch step: new = old = reference, so ratio 1 and KL 0 exactly where they belong
    assert abs(m["ratio_mean"] - 1.0) < 1e-4
    assert abs(m["approx_kl"]) < 1e-5 and abs(m["kl"]) < 1e-5


def test_training_refuses_nucleus_sampling():
    path = str(PROJECT_ROOT / "configs" / "quickstart.yaml")
    with pytest.raises(ConfigError, match=r"rollout.top_p"):
        load_train_config(path, ["rollout.top_p=0.9"])
