"""Supervised warm-up on expert Plan–Execute demonstrations.

:func:`expert_examples` rolls out an environment's expert (any env with ``expert_turn()``:
``household``, ``alfworld``) and turns each step into an :class:`SFTExample` whose prompt is exactly
what the agent would see at rollout time (:func:`hiper.protocol.build_prompt` + the tokenizer's chat
template) and whose response is the expert's turn text followed by EOS. :func:`sft_update` takes
one optimiser step on the mean negative log-likelihood of the response tokens (prompt tokens are
masked out).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from hiper.protocol import PromptContext, build_prompt
from hiper.train.batch import (
    build_sequence_batch,
    first_response_column,
    micro_batches,
    model_device,
    pad_token_id,
)
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
) -> dict[str, float]:
    """One optimiser step on ``examples``: gradient accumulated over micro-batches of
    ``micro_batch_rows`` rows (None: all at once), each micro-batch's NLL divided by the token count
    of *all* examples (so the step is that of the mean NLL), grad-norm clipped to ``grad_clip``.

    ``micro_batch_rows`` may also be a config object with ``micro_batch_rows`` (and optionally
    ``grad_clip``) attributes. Returns ``loss`` (mean NLL before the step), ``tokens``,
    ``grad_norm`` (before clipping), ``rows``.
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
        for mb in micro_batches(batch, micro_batch_rows, max_tokens, pad_token_id(model)):
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
            loss.backward()
            total += float(loss.detach())
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
) -> list[float]:
    """Supervised fine-tuning of ``policy``'s actor on ``examples`` with an ``SFTConfig``
    (``cfg``): ``cfg.epochs`` passes, each in an order shuffled by ``random.Random(cfg.seed)``,
    steps of ``cfg.batch_rows`` examples (micro-batches of ``cfg.micro_batch_rows``), AdamW at
    ``cfg.lr`` with :func:`sft_lr_factor` (linear warm-up over ``cfg.warmup_steps``, cosine decay).
    ``progress(step, total, loss)`` is called after every step. Returns every step's loss."""
    opt = torch.optim.AdamW(policy.actor_parameters(), lr=cfg.lr)
    total = cfg.epochs * ((len(examples) + cfg.batch_rows - 1) // cfg.batch_rows)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: sft_lr_factor(step, total, cfg.warmup_steps)
    )
    rng = random.Random(cfg.seed)
    losses: list[float] = []
    policy.train()
    for _ in range(cfg.epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for i in range(0, len(order), cfg.batch_rows):
            batch = [examples[j] for j in order[i : i + cfg.batch_rows]]
            out = sft_update(policy, opt, batch, cfg.micro_batch_rows)
            sched.step()
            losses.append(out["loss"])
            if progress is not None:
                progress(len(losses), total, out["loss"])
    return losses


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
    ``reset(seed=seed + i)``; ``options`` are the environment's options).

    Every step yields one example: the prompt the agent would see (task, step count, the last
    ``history_len`` (observation, executed action) pairs, the observation, the subgoal in force,
    the admissible actions) and, as target, the expert's turn in that state plus EOS, in the
    prompt ``format``: Plan–Execute blocks, or for the flat ``react`` baselines the expert's subgoal
    as the thought and its action (``<think>subgoal</think><action>action</action>``; the prompt
    then carries no subgoal either).

    Noise: with probability ``noise`` the action *executed* at a step is not the expert's: half of
    the time it repeats the previous executed action (a policy's commonest mistake; in the
    household and ALFWorld it is usually a no-op answered "Nothing happens."), otherwise it is a
    uniformly random admissible action. The example of that step still targets the
    expert's turn, so the model is never taught a random action; the episode then continues from
    the perturbed state, where the expert's next turns show how to recover. The subgoal the next
    prompt shows is the one the agent holds, i.e. the expert's subgoal of the previous turn (the
    turn that was written). History shows the action actually executed. An expert that cannot go
    on from a perturbed state (``expert_turn`` raises, e.g. an exhausted ALFWorld walkthrough)
    ends that episode early.
    """
    from hiper.envs import make_env

    if not isinstance(noise, int | float) or not 0.0 <= noise <= 1.0:
        raise ValueError(f"noise must be a probability in [0, 1], got {noise!r}")
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 0:
        raise ValueError(f"n_episodes must be a non-negative integer, got {n_episodes!r}")
    env = make_env(env_name, **dict(options or {}))
    if not hasattr(env, "expert_turn"):
        raise ValueError(f"environment {env_name!r} has no expert (expert_turn)")
    eos = tokenizer.eos_token_id
    rng = random.Random(seed)
    out: list[SFTExample] = []
    try:
        for episode in range(n_episodes):
            first = len(out)
            res = env.reset(seed=seed + episode)
            task = res.info["task"]
            history: list[tuple[str, str]] = []
            subgoal: str | None = None
            step = 0
            while not res.done:
                try:
                    turn = env.expert_turn()
                except RuntimeError:
                    break
                prompt = build_prompt(
                    PromptContext(
                        task=task,
                        observation=res.observation,
                        history=history,
                        step=step,
                        subgoal=subgoal,
                        admissible=res.admissible,
                    ),
                    family=env.family,
                    format=format,
                    history_len=history_len,
                    instructions=instructions,
                )
                text = turn.text(format)
                resp = list(tokenizer.encode(text, add_special_tokens=False))
                if eos is not None:
                    resp.append(int(eos))
                out.append(
                    SFTExample(
                        chat_prompt_ids(tokenizer, prompt),
                        np.asarray(resp, dtype=np.int64),
                        prompt,
                        text,
                    )
                )
                action = turn.action
                if noise and rng.random() < noise:
                    action = _noise_action(rng, res.admissible, history)
                history.append((res.observation, action))
                subgoal = turn.subgoal
                res = env.step(action)
                step += 1
            won = bool(res.info.get("won", False))
            n = len(out) - first
            for k in range(first, len(out)):
                out[k] = replace(out[k], turns_left=n - 1 - (k - first), won=won)
    finally:
        env.close()
    return out


def _noise_action(rng: random.Random, admissible: Sequence[str], history: list[tuple[str, str]]):
    """A perturbed action: repeat the last executed action, or a random admissible one."""
    if history and (not admissible or rng.random() < 0.5):
        return history[-1][1]
    return rng.choice(admissible) if admissible else ""
