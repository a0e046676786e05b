"""RL on the real model: PPO with HAE on household from SmolLM2-135M-Instruct (zero-shot, LoRA),
through ``configs/smollm2/household.yaml`` (the paper's full prompts) cut to the smallest run that
exercises everything, once with the paper's critic (heads high/low on the shared policy backbone)
and once with a separate critic LM.

Each run completes 1 PPO iteration, is resumed from its checkpoint to a 2nd with the same config
(``iterations`` raised), and a copy of it killed after iteration 2's metrics line but before its
checkpoint resumes to the same metrics, as ``test_train_loop.test_killed_run_resumes_to_the_same_
metrics`` checks on the tiny model. The zero-shot 135M model mostly echoes the prompt (every turn
invalid): these tests check the machinery, not learning.

The model is the named model, prepared once into the cache (the ``smollm2`` fixture of
``tests/conftest.py``): the tests skip when it cannot be prepared, and fail under ``CI=true``.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from hiper.algos.base import get_estimator
from hiper.config import to_dict
from hiper.models.policy import load_policy
from hiper.runs.checkpoints import LATEST_FILE, load_checkpoint
from hiper.runs.log import read_jsonl
from hiper.runs.records import trajectory_from_dict
from hiper.train.batch import build_sequence_batch, micro_batches
from hiper.train.config import TrainConfig, load_train_config
from hiper.train.loop import Trainer, training_seeds
from tests.conftest import PROJECT_ROOT
from tests.helpers import comparable

PRESET = PROJECT_ROOT / "configs" / "smollm2" / "household.yaml"

#: The preset cut down: one task of at most 2 turns per iteration (2 rows of ~600 tokens), answers
#: of up to 48 tokens (a full answer is ~40), LoRA rank 4, zero-shot (no SFT), one row per
#: forward/backward, a one-turn evaluation of one task at the start and the end of a run.
SMALL = [
    "rollout.tasks_per_iteration=1",
    "rollout.group_size=1",
    "rollout.max_turns=2",
    "rollout.max_new_tokens=48",
    "env.workers=1",
    "model.lora={r: 4, alpha: 8.0, dropout: 0.0, target_modules: all-linear}",
    "sft.episodes=0",
    "eval.tasks=1",
    "eval.seeds=1",
    "eval.max_turns=1",
    "eval.every=0",
    "ppo.mini_batch_rows=null",
    "ppo.micro_batch_rows=1",
]

#: What every PPO iteration's metrics row holds, each a finite number.
PPO_KEYS = (
    "ppo/loss",
    "ppo/pg_loss",
    "ppo/kl",
    "ppo/entropy",
    "ppo/value_loss",
    "ppo/value_loss/high",
    "ppo/value_loss/low",
    "ppo/grad_norm/actor",
    "ppo/grad_norm/critic",
    "train/success",
    "train/invalid_rate",
    "train/turns",
)


def rl_config(run_dir: Path, critic: str, iterations: int) -> TrainConfig:
    return load_train_config(
        str(PRESET),
        [f"run_dir={run_dir}", *SMALL, f"model.critic={critic}", f"iterations={iterations}"],
    )


def split_lora(module: torch.nn.Module) -> tuple[dict, dict]:
    """(LoRA adapter tensors, base tensors under the base model's own names) of a peft model."""
    lora, base = {}, {}
    for name, p in module.state_dict().items():
        if "lora_" in name:
            lora[name] = p.detach().clone()
        else:
            base[name.removeprefix("base_model.model.").replace(".base_layer", "")] = p.detach()
    return lora, base


def assert_base_unchanged(module: torch.nn.Module, model_dir: Path, prefix: str = "") -> None:
    """Every weight of the prepared model equals ``module``'s (a LoRA-wrapped causal LM, or with
    ``prefix="model."`` a LoRA-wrapped backbone)."""
    from safetensors import safe_open

    _, base = split_lora(module)
    with safe_open(str(model_dir / "model.safetensors"), "pt") as weights:
        names = weights.keys()
        keys = [k for k in names if not k.startswith("lm_head.")]  # tied to the embedding
        assert len(keys) == 1 + 30 * 9 + 1  # embedding, 30 blocks, final norm
        for key in keys:
            assert torch.equal(base[key.removeprefix(prefix)], weights.get_tensor(key)), key


@torch.no_grad()
def outputs(policy, rows: list) -> list:
    """Log-probs and values of ``policy`` on the given (prompt, response) rows."""
    batch = build_sequence_batch([p for p, _ in rows], [r for _, r in rows], policy.heads)
    out = []
    for mb in micro_batches(batch, 1, pad_id=policy.tokenizer.pad_token_id):
        res = policy(mb.input_ids, mb.attention_mask)
        out.append((res.logprobs[mb.response_mask], res.values))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("critic", ["shared", "separate"])
def test_ppo_with_hae_on_smollm2_completes_and_resumes(smollm2: Path, tmp_path: Path, critic):
    run = tmp_path / "run"
    cfg = rl_config(run, critic, iterations=1)
    assert cfg.rollout.instructions and cfg.rollout.format == "plan_execute"
    assert cfg.algo.estimator == "hae" and get_estimator("hae").heads(
        cfg.algo.estimator_config
    ) == ("high", "low")

    # -- 1 iteration, to completion ----------------------------------------------------------
    trainer = Trainer(cfg)
    trainer.run()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["iteration"] for r in rows] == [0, 1]
    assert "eval/success" in rows[0] and "eval/success" in rows[1]
    assert all(math.isfinite(rows[1][key]) for key in PPO_KEYS), rows[1]
    assert 1 <= rows[1]["train/turns"] <= 2  # one episode, cut at 2 turns (or over before)
    assert rows[1]["ppo/grad_norm/actor"] > 0 and rows[1]["ppo/grad_norm/critic"] > 0
    assert rows[1]["ppo/kl"] < 1e-4  # the KL reference is the base (adapters disabled)

    # in memory after training: adapters and heads moved, the base weights did not
    policy = trainer.policy
    assert (policy.critic, policy.heads) == (critic, ("high", "low"))
    lora, _ = split_lora(policy.lm)
    lora_b = [v for k, v in lora.items() if "lora_B" in k]
    assert len(lora_b) == 30 * 7  # every linear layer of the 30 blocks
    assert all(v.abs().max() > 0 for v in lora_b)  # LoRA B starts at zero: every adapter moved
    assert_base_unchanged(policy.lm, smollm2)
    assert policy.value_head.weight.abs().max() > 0  # the heads start at zero
    if critic == "separate":
        # the heads start at zero, so the first step sends no gradient into the critic's
        # backbone: its adapters move from the second step on (checked below)
        critic_lora, _ = split_lora(policy.critic_backbone)
        assert all(torch.all(v == 0) for k, v in critic_lora.items() if "lora_B" in k)
        assert_base_unchanged(policy.critic_backbone, smollm2, prefix="model.")

    # the checkpoint holds adapters and heads, not a copy of the base, and loads back into a
    # policy that computes exactly what the trained one does (log-probs and values)
    ckpt = load_checkpoint(run)
    assert ckpt.iteration == 1
    saved = {p.name for p in ckpt.policy_dir.iterdir()}
    assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    loaded = load_policy(ckpt.policy_dir)
    assert (loaded.critic, loaded.heads, loaded.lora) == (critic, policy.heads, policy.lora)
    train = [ln for ln in read_jsonl(run / "trajectories.jsonl") if ln["split"] == "train"]
    turns = [t for ln in train for t in trajectory_from_dict(ln).turns]
    probe = [(t.prompt_ids, t.response_ids) for t in turns]
    policy.eval()
    for (lp, v), (lp2, v2) in zip(outputs(policy, probe), outputs(loaded, probe), strict=True):
        assert torch.equal(lp, lp2) and torch.equal(v, v2)
    del trainer, policy, loaded

    # -- resumed from the checkpoint to iteration 2, same config but `iterations` -------------
    cfg2 = rl_config(run, critic, iterations=2)
    Trainer(cfg2, resume=True).run()
    rows2 = read_jsonl(run / "metrics.jsonl")
    assert [r["iteration"] for r in rows2] == [0, 1, 2]
    assert comparable(rows2[:2]) == comparable(rows)  # the first run's rows stay as they were
    assert all(math.isfinite(rows2[2][key]) for key in PPO_KEYS), rows2[2]
    assert yaml.safe_load((run / "config.yaml").read_text()) == to_dict(cfg2)
    lines = [ln for ln in read_jsonl(run / "trajectories.jsonl") if ln["split"] == "train"]
    assert [ln["iteration"] for ln in lines] == [1, 2]
    seed = training_seeds(cfg2, 2)[0]  # the task an uninterrupted run plays at iteration 2
    assert lines[1]["task_id"] == f"household/train/pick_and_place_simple/{seed}"
    ckpt2 = load_checkpoint(run)
    assert ckpt2.iteration == 2
    # the optimizer state came back: Adam's step counts continue from the checkpoint's
    assert _adam_steps(ckpt2.optimizer_path) == _adam_steps(ckpt.optimizer_path) + 1
    resumed = load_policy(ckpt2.policy_dir)
    lora2 = split_lora(resumed.lm)[0]
    assert all(not torch.equal(lora2[k], lora[k]) for k in lora if "lora_B" in k)  # moved again
    if critic == "separate":  # now the heads are not zero: the critic's adapters moved too
        critic_lora2, _ = split_lora(resumed.critic_backbone)
        assert all(v.abs().max() > 0 for k, v in critic_lora2.items() if "lora_B" in k)
    del resumed

    # -- killed after iteration 2's metrics line, before its checkpoint: resumes to the same --
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    shutil.rmtree(killed / "checkpoints" / ckpt2.path.name)
    (killed / "checkpoints" / LATEST_FILE).write_text(ckpt.path.name + "\n")
    Trainer(rl_config(killed, critic, iterations=2), resume=True).run()
    assert comparable(read_jsonl(killed / "metrics.jsonl")) == comparable(rows2)
    assert (killed / "summary.json").read_text() == (run / "summary.json").read_text()


def _adam_steps(path: Path) -> float:
    state = torch.load(path, map_location="cpu", weights_only=True)["state"]
    steps = {float(s["step"]) for s in state.values()}
    assert len(steps) == 1, steps  # every parameter stepped together
    return steps.pop()
