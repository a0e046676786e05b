"""Supervised warm-up on expert Plan–Execute demonstrations.

:func:`expert_examples` tokenizes an environment's expert transcripts (:mod:`hiper.demos`; any env
with ``expert_turn()``) into :class:`SFTExample` rows whose prompt is exactly what the agent would
see at rollout time (the rollout's own prompt + the tokenizer's chat template) and whose response
is the expert's turn text followed by EOS. :func:`sft_update` takes
one optimiser step on the mean negative log-likelihood of the response tokens (prompt tokens are
masked out).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hiper.runs.checkpoints import Checkpoint, restore_state, save_checkpoint
from hiper.runs.faults import crash_point
from hiper.train.batch import (
    build_sequence_batch,
    first_response_column,
    micro_batches,
    model_device,
    pad_token_id,
)
from hiper.train.distributed import SINGLE, Dist, is_sharded
from hiper.train.losses import masked_sum_mean

__all__ = [
    "SFTExample",
    "chat_prompt_ids",
    "expert_examples",
    "sft_loss",
    "sft_lr_factor",
    "sft_update",
]


@dataclass(frozen=True)
class SFTExample:
    """One demonstration turn: prompt token ids (chat template applied) and target response ids."""

    prompt_ids: np.ndarray
    response_ids: np.ndarray
    prompt: str = ""  # the user message (for inspection)
    response: str = ""  # the target text (without EOS)
    # where the turn sits in its demonstration: turns to the episode's end (0 on the last turn)
    # and whether the episode was won, so the return from here is known exactly
    turns_left: int = 0
    won: bool = False


def sft_loss(logprobs: Tensor, response_mask: Tensor, normalizer: float | Tensor | None = None):
    """Mean negative log-likelihood of the response tokens:
    ``-sum_{response tokens} logprobs / normalizer`` (``normalizer`` defaults to the number of
    response tokens). ``logprobs[b, i]`` is the log-prob of token i given its prefix
    (``ForwardOut.logprobs``); prompt and padding positions are excluded by ``response_mask``."""
    return -masked_sum_mean(logprobs, response_mask, normalizer)


def sft_update(
    model,
    optimizer: torch.optim.Optimizer,
    examples: Sequence[SFTExample],
    micro_batch_rows: Any = None,
    *,
    grad_clip: float | None = 1.0,
    max_tokens: int | None = None,
    dist: Dist = SINGLE,
) -> dict[str, float]:
    """One optimiser step on ``examples``: gradient accumulated over micro-batches of
    ``micro_batch_rows`` rows (None: all at once), each micro-batch's NLL divided by the token count
    of *all* examples (so the step is that of the mean NLL), grad-norm clipped to ``grad_clip``.

    ``micro_batch_rows`` may also be a config object with ``micro_batch_rows`` (and optionally
    ``grad_clip``) attributes. Returns ``loss`` (mean NLL before the step), ``tokens``,
    ``grad_norm`` (before clipping), ``rows``.

    ``dist``: data parallelism (:mod:`hiper.train.distributed`): every rank passes the same
    ``examples``, backpropagates its share of the micro-batches; gradients and the loss are
    summed across ranks before clipping, so every rank takes the step one process would.
    """
    if hasattr(micro_batch_rows, "micro_batch_rows"):
        cfg = micro_batch_rows
        micro_batch_rows = cfg.micro_batch_rows
        grad_clip = getattr(cfg, "grad_clip", grad_clip)
    if not examples:
        raise ValueError("sft_update needs at least one example")
    batch = build_sequence_batch(
        [e.prompt_ids for e in examples], [e.response_ids for e in examples]
    )
    device = model_device(model)
    n_tok = max(int(batch.loss_mask.sum()), 1)
    norm = torch.tensor(float(n_tok), device=device)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    was_training = model.training
    model.train()
    total = 0.0
    try:
        optimizer.zero_grad(set_to_none=True)
        micros = micro_batches(batch, micro_batch_rows, max_tokens, pad_token_id(model))
        fsdp = dist.world_size > 1 and is_sharded(model)
        for mb, keep in dist.my_work(micros, equal=fsdp):
            mb = mb.to(device)
            out = model(
                mb.input_ids,
                mb.attention_mask,
                with_values=False,
                with_entropy=False,
                logprobs_from=first_response_column(mb.response_mask),  # no prompt logits
            )
            lp = out.logprobs if out.logprobs.dtype == torch.float64 else out.logprobs.float()
            loss = sft_loss(lp, mb.loss_mask, norm)
            if not keep:  # FSDP2's padding: run like the others, count for nothing
                loss = loss * 0.0
            loss.backward()
            total += float(loss.detach())
        if dist.world_size > 1:
            dist.all_reduce_grads(params)
            total = dist.all_reduce_sum({"loss": total}).get("loss", 0.0)
        if grad_clip is not None:
            gn = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        else:
            grads = [p.grad.detach().norm() for p in params if p.grad is not None]
            gn = float(torch.linalg.vector_norm(torch.stack(grads))) if grads else 0.0
        if math.isfinite(gn):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    finally:
        model.train(was_training)
    return {"loss": total, "tokens": float(n_tok), "grad_norm": gn, "rows": float(len(examples))}


def sft_lr_factor(step: int, total: int, warmup: int) -> float:
    """Learning-rate multiplier for optimiser step ``step`` (0-based) of ``total``: linear warm-up
    over ``warmup`` steps to 1, then cosine decay to 0.1 at the last step."""
    if step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup - 1, 1)
    progress = min((step - warmup) / span, 1.0)
    return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))


def chat_prompt_ids(tokenizer, prompt: str) -> np.ndarray:
    """``prompt`` as one user message through the chat template, with the generation prompt."""
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=False,
    )
    if isinstance(ids, Mapping) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def train_sft(
    policy,
    examples: Sequence[SFTExample],
    cfg,
    progress: Callable[[int, int, float], None] | None = None,
    *,
    checkpoints: str | os.PathLike | None = None,
    resume: Checkpoint | None = None,
    dist: Dist = SINGLE,
) -> list[float]:
    """Supervised fine-tuning of ``policy``'s actor on ``examples`` with an ``SFTConfig``
    (``cfg``): ``cfg.epochs`` passes, each in an order shuffled by ``random.Random(cfg.seed)``,
    steps of ``cfg.batch_rows`` examples (micro-batches of ``cfg.micro_batch_rows``), AdamW at
    ``cfg.lr`` with :func:`sft_lr_factor` (linear warm-up over ``cfg.warmup_steps``, cosine decay).
    ``progress(step, total, loss)`` is called after every step. Returns every step's loss.

    With ``checkpoints`` (a folder), every ``cfg.checkpoint_every`` steps but the last the policy,
    optimizer, schedule, RNG states and losses so far are saved there
    (:func:`~hiper.runs.checkpoints.save_checkpoint`, the step as the iteration). ``resume``, one
    of those checkpoints, continues from its step: ``policy`` must have been loaded from its
    ``policy_dir``; the result is the uninterrupted run's, loss for loss and weight for weight.
    ``dist``: every step is split between the ranks (:func:`sft_update`); only rank 0 writes the
    checkpoints.
    """
    opt = torch.optim.AdamW(policy.actor_parameters(), lr=cfg.lr)
    steps = _sft_steps(len(examples), cfg)
    total = len(steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: sft_lr_factor(step, total, cfg.warmup_steps)
    )
    losses: list[float] = []
    if resume is not None:
        restore_state(resume, opt, sched, policy=policy)
        losses = [float(x) for x in resume.extra["losses"]]
    policy.train()
    every = getattr(cfg, "checkpoint_every", 0)
    for k in range(len(losses), total):
        batch = [examples[j] for j in steps[k]]
        out = sft_update(policy, opt, batch, cfg.micro_batch_rows, dist=dist)
        sched.step()
        losses.append(out["loss"])
        if progress is not None:
            progress(k + 1, total, out["loss"])
        due = checkpoints is not None and every and (k + 1) % every == 0 and k + 1 < total
        if due and dist.is_main:
            save_checkpoint(
                checkpoints, k + 1, policy=policy, optimizer=opt, scheduler=sched,
                extra={"losses": losses}, keep=1,
            )  # fmt: skip
        crash_point("sft_step")
    return losses


def _sft_steps(n: int, cfg) -> list[list[int]]:
    """The example indices of every SFT step, all epochs (each epoch's order shuffled)."""
    rng = random.Random(cfg.seed)
    steps = []
    for _ in range(cfg.epochs):
        order = list(range(n))
        rng.shuffle(order)
        steps += [order[i : i + cfg.batch_rows] for i in range(0, n, cfg.batch_rows)]
    return steps


def expert_examples(
    env_name: str,
    n_episodes: int,
    noise: float,
    seed: int,
    tokenizer,
    history_len: int = 2,
    options: Mapping[str, Any] | None = None,
    instructions: bool = True,
    format: str = "plan_execute",
) -> list[SFTExample]:
    """Demonstrations from ``n_episodes`` expert episodes of ``env_name`` (episode i plays
    ``reset(seed=seed + i)``; ``options`` are the environment's options), made by
    :func:`hiper.demos.expert_transcripts` with its noise model at rate ``noise`` (random source
    ``random.Random(seed)``).

    Every turn yields one example: the prompt the agent would see there (chat template applied)
    and, as target, the expert's turn plus EOS, in the prompt ``format`` (Plan–Execute blocks, or
    ``<think>subgoal</think><action>action</action>`` for the flat ``react`` baselines). Each
    example knows how many turns its episode had left and whether the episode was won.
    """
    from hiper.demos import expert_transcripts
    from hiper.rollout import RolloutConfig, Task

    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 0:
        raise ValueError(f"n_episodes must be a non-negative integer, got {n_episodes!r}")
    cfg = RolloutConfig(history_len=history_len, format=format, instructions=instructions)
    tasks = [Task(seed=seed + episode) for episode in range(n_episodes)]
    demos = expert_transcripts(env_name, tasks, noise=noise, rng=seed, cfg=cfg, options=options)
    eos = [] if tokenizer.eos_token_id is None else [int(tokenizer.eos_token_id)]
    out: list[SFTExample] = []
    for demo in demos:
        for k, turn in enumerate(demo.turns):
            response = list(tokenizer.encode(turn.target, add_special_tokens=False)) + eos
            out.append(
                SFTExample(
                    chat_prompt_ids(tokenizer, turn.prompt),
                    np.asarray(response, dtype=np.int64),
                    turn.prompt,
                    turn.target,
                    turns_left=len(demo.turns) - 1 - k,
                    won=demo.won,
                )
            )
    return out
