"""Value pre-training on episodes whose returns are known exactly: demonstrations, and the
starting policy's own episodes.

A critic that starts from zero explains nothing for the first PPO iterations, exactly when the
advantages it feeds matter most. The SFT demonstrations are whole episodes with a known outcome, so
the Monte-Carlo return from every turn is known: ``G_t = R * gamma^(turns left)`` with ``R`` the
success reward of a won episode (0 for an episode cut by the step limit). Every value head is
regressed on it at the position where the estimator reads it (HAE.md §3: V^H and V^term before the
response, V^L after the subgoal), so the heads learn to read the state (task, progress, step count)
before RL starts; PPO's own value targets then only recalibrate them to the policy's returns.

The demonstrations teach the heads to read progress, but the expert always wins while the SFT policy
mostly fails, so their returns are biased for the policy PPO starts from. Episodes played by that
policy (``sft.critic_episodes``, on the training tasks at the rollout temperature) carry the returns
the first PPO batches will have: which tasks it wins, in how many turns. Their Monte-Carlo returns
``G_t = sum_k gamma^k r_{t+k}`` of the shaped rewards (:func:`episode_returns`) are the same targets
the demonstrations get, exactly, for the policy being evaluated.

Only the critic's parameters move (the separate critic backbone and the heads; with a shared
critic only the heads, so the policy is untouched).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from hiper.algos.groups import discounted_returns
from hiper.algos.layout import build_layout
from hiper.algos.shaping import ShapingConfig, shape_rewards
from hiper.protocol import parse
from hiper.protocol.masks import TokenAligner, value_positions
from hiper.train.batch import (
    build_sequence_batch,
    micro_batches,
    model_device,
    pad_token_id,
    select_rows,
)
from hiper.train.ppo import explained_variance
from hiper.train.sft import SFTExample
from hiper.types import Trajectory

__all__ = [
    "demonstration_returns",
    "episode_examples",
    "episode_returns",
    "pretrain_critic",
]


def demonstration_returns(
    examples: Sequence[SFTExample], gamma: float, success_reward: float
) -> np.ndarray:
    """``G_t`` of every example: ``success_reward * gamma ** turns_left`` if its episode was won,
    else 0 (expert turns are well-formed, so no format penalty applies)."""
    left = np.fromiter((e.turns_left for e in examples), np.float64, len(examples))
    won = np.fromiter((e.won for e in examples), bool, len(examples))
    return np.where(won, success_reward * gamma**left, 0.0)


def episode_returns(
    trajectories: Sequence[Trajectory], shaping: ShapingConfig, gamma: float
) -> np.ndarray:
    """Flat ``G_t`` of every turn of every trajectory (trajectory order, then turn order): the
    discounted sum of the shaped rewards from turn t to the episode's end. An episode cut by the
    step limit ends there (its return is what it earned, as for a cut demonstration)."""
    layout = build_layout(trajectories)
    return discounted_returns(shape_rewards(layout, shaping), layout.mask, gamma)[layout.mask]


def episode_examples(trajectories: Sequence[Trajectory]) -> list[SFTExample]:
    """The turns of played episodes as value-regression examples (trajectory order, then turn
    order, like :func:`episode_returns`)."""
    return [
        SFTExample(
            np.asarray(turn.prompt_ids),
            np.asarray(turn.response_ids),
            response=turn.response_text,
            turns_left=len(tr.turns) - 1 - t,
            won=bool(tr.success),
        )
        for tr in trajectories
        for t, turn in enumerate(tr.turns)
    ]


def pretrain_critic(
    policy,
    examples: Sequence[SFTExample],
    returns: np.ndarray,
    head_positions: Mapping[str, str],
    *,
    format: str,
    steps: int,
    lr: float,
    batch_rows: int = 32,
    micro_batch_rows: int | None = 16,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> dict[str, float]:
    """``steps`` AdamW steps of 0.5 * squared error between every head of ``policy`` and the
    examples' ``returns`` (one per example), on batches of ``batch_rows`` examples drawn without
    replacement (reshuffled each pass), each head read where the estimator reads it
    (``head_positions``, from :meth:`hiper.algos.base.EstimatorSpec.head_positions`). Returns the
    first and last losses and, per head, the explained variance on the last ~10 % of the examples
    (held out from the steps)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not examples:
        raise ValueError("critic pre-training needs at least one demonstration")
    heads = tuple(policy.heads)
    unknown = [h for h in heads if h not in head_positions]
    if unknown:
        raise ValueError(f"no known reading position for value head(s) {unknown}")
    returns = np.asarray(returns, np.float32)
    if returns.shape != (len(examples),):
        raise ValueError(f"need one return per example: {returns.shape} for {len(examples)}")
    decisions = [parse(e.response, format) for e in examples]
    spans = TokenAligner(policy.tokenizer).align(
        [e.response_ids for e in examples], [e.response for e in examples], decisions
    )
    positions = value_positions(spans)
    batch = build_sequence_batch(
        [e.prompt_ids for e in examples], [e.response_ids for e in examples], heads
    )
    n, k = len(examples), len(heads)
    plen = batch.prompt_len.numpy()
    batch.vt_row = torch.from_numpy(np.repeat(np.arange(n), k))
    pos = np.stack([positions[head_positions[h]] for h in heads], axis=1).reshape(-1)
    batch.vt_pos = torch.from_numpy(plen[batch.vt_row.numpy()] + pos - 1)
    batch.vt_head = torch.from_numpy(np.tile(np.arange(k), n))
    batch.vt_target = torch.from_numpy(np.repeat(returns, k))

    held = max(1, n // 10) if n >= 20 else 0
    train_rows = list(range(n - held))
    params = [p for p in policy.critic_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    device = model_device(policy)
    pad = pad_token_id(policy)
    rng = random.Random(seed)
    order: list[int] = []
    losses: list[float] = []
    policy.train()
    for step in range(steps):
        if len(order) < batch_rows:
            more = train_rows[:]
            rng.shuffle(more)
            order += more
        rows, order = order[:batch_rows], order[batch_rows:]
        mb = select_rows(batch, rows)
        total = max(mb.vt_row.numel(), 1)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for micro in micro_batches(mb, micro_batch_rows, None, pad):
            v = policy.values(micro.input_ids.to(device), micro.attention_mask.to(device))
            v = v[micro.vt_b.to(device), micro.vt_pos.to(device), micro.vt_head.to(device)]
            loss = 0.5 * ((v.float() - micro.vt_target.to(device)) ** 2).sum() / total
            loss.backward()
            step_loss += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(step_loss)
        if progress is not None:
            progress(step + 1, steps, step_loss)
    out = {"critic_pretrain/loss_first": losses[0], "critic_pretrain/loss_last": losses[-1]}
    if held:
        out.update(_held_out_ev(policy, select_rows(batch, list(range(n - held, n))), heads))
    return out


@torch.no_grad()
def _held_out_ev(policy, batch, heads: tuple[str, ...]) -> dict[str, float]:
    device = model_device(policy)
    preds = torch.zeros(batch.vt_row.numel())
    was = policy.training
    policy.eval()
    try:
        for micro in micro_batches(batch, 16, None, pad_token_id(policy)):
            v = policy.values(micro.input_ids.to(device), micro.attention_mask.to(device))
            v = v[micro.vt_b.to(device), micro.vt_pos.to(device), micro.vt_head.to(device)]
            preds[micro.vt_index] = v.float().cpu()
    finally:
        policy.train(was)
    return {
        f"critic_pretrain/explained_var/{h}": explained_variance(
            preds[batch.vt_head == i], batch.vt_target[batch.vt_head == i]
        )
        for i, h in enumerate(heads)
    }
