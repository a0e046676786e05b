"""The PPO update (HAE.md §6): clipped surrogate + k3 KL + entropy bonus + clipped value loss.

Per mini-batch (rows of the :class:`~hiper.train.batch.TrainBatch`), with T the number of trained
response tokens of the mini-batch, R its number of response tokens (trained or not) and n_h its
number of value targets of head h::

    loss = pg_loss + kl_coef * kl - entropy_coef * entropy + vf_coef * sum_h value_loss_h
    pg_loss  = (1/T) sum_{trained tokens}   dual-clipped PPO surrogate   (losses.policy_loss)
    kl       = (1/R) sum_{response tokens}  k3(logp, ref_logp)           (losses.kl_k3)
    entropy  = (1/R) sum_{response tokens}  H_t                          (losses.entropy_bonus)
    value_loss_h = (1/n_h) sum_{targets of h} 0.5 max((v-t)^2, (clip(v, v_old +- c) - t)^2)

The KL and entropy terms cover the tokens the policy gradient leaves out (a KEEP turn's copied
subgoal, turn 0's switch): measured on this project's quickstart, leaving them unanchored let the
response format drift until 93 % of turns were malformed. Every micro-batch's terms are divided
by the *mini-batch* counts T, R and n_h, so the gradients
accumulated over micro-batches are exactly the gradient of the mini-batch loss. Then the gradient
norm of each optimiser group (actor, critic) is clipped to ``grad_clip`` on its own and the
optimiser steps (a step whose gradient norm is not finite is skipped and counted in
``skipped_steps``). One global norm would let the critic's gradient set the actor's step: on the
quickstart's first batch the value-loss gradient norm is ~45 against ~0.07 for the policy
gradient, so a shared clip shrank the policy's step ~650x.

The model runs in train mode during the update (``fill_from_forward`` computes the old log-probs
in eval mode; with zero dropout, the default of Qwen2 configs and of LoRA here, they coincide).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hiper.train.batch import (
    TrainBatch,
    first_response_column,
    micro_batches,
    model_device,
    pad_token_id,
    select_rows,
)
from hiper.train.losses import (
    entropy_bonus,
    kl_k3,
    masked_sum_mean,
    policy_loss,
    value_loss_terms,
)

__all__ = ["PPOConfig", "explained_variance", "make_optimizer", "ppo_update"]


def _pos(name: str, x, allow_zero: bool = True, allow_none: bool = False) -> None:
    if x is None and allow_none:
        return
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    if x < 0 or (x == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {x}")


def _count(name: str, x, allow_none: bool = False) -> None:
    if x is None and allow_none:
        return
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise ValueError(f"{name} must be a positive integer, got {x!r}")


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters (defaults: HAE.md §6). Validated on construction."""

    clip_ratio: float = 0.2  # epsilon (low side; also the high side unless clip_ratio_high is set)
    clip_ratio_high: float | None = None  # None: = clip_ratio
    dual_clip: float | None = 3.0  # None disables the dual clip; otherwise > 1
    kl_coef: float = 0.01  # k3 KL to the frozen reference, in the loss (not the reward)
    entropy_coef: float = 0.001
    value_clip: float | None = 0.5  # None: unclipped value loss
    vf_coef: float = 1.0
    grad_clip: float | None = 1.0  # max global grad norm; None: no clipping
    ppo_epochs: int = 1
    # extra epochs of value-loss-only steps after the PPO epochs (the critic's parameters alone:
    # a separate critic's backbone and the heads); a critic that lags the policy's returns feeds
    # HAE noise, and refitting it costs a critic forward/backward, not a policy one
    critic_epochs: int = 0
    mini_batch_rows: int | None = None  # None: the whole batch is one optimiser step
    micro_batch_rows: int | None = None  # None: the whole mini-batch in one forward
    micro_batch_tokens: int | None = None  # also cap rows x longest row per micro-batch
    actor_lr: float = 1e-6
    critic_lr: float = 1e-5
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    shuffle: bool = True  # shuffle rows before cutting mini-batches (each epoch)
    seed: int = 0
    # old log-probs: the sampler's own (the policy has not changed since it sampled), or a
    # second forward pass (True; for a sampler that runs in another precision or engine)
    recompute_old_logprobs: bool = False

    def __post_init__(self) -> None:
        _pos("clip_ratio", self.clip_ratio, allow_zero=False)
        _pos("clip_ratio_high", self.clip_ratio_high, allow_zero=False, allow_none=True)
        if self.clip_ratio >= 1:
            raise ValueError(f"clip_ratio must be < 1, got {self.clip_ratio}")
        if self.dual_clip is not None:
            _pos("dual_clip", self.dual_clip)
            if self.dual_clip <= 1:
                raise ValueError(f"dual_clip must be > 1 (or None), got {self.dual_clip}")
        for name in ("kl_coef", "entropy_coef", "vf_coef", "weight_decay"):
            _pos(name, getattr(self, name))
        _pos("value_clip", self.value_clip, allow_zero=False, allow_none=True)
        _pos("grad_clip", self.grad_clip, allow_zero=False, allow_none=True)
        _pos("actor_lr", self.actor_lr)
        _pos("critic_lr", self.critic_lr)
        _pos("adam_eps", self.adam_eps, allow_zero=False)
        _count("ppo_epochs", self.ppo_epochs)
        if isinstance(self.critic_epochs, bool) or not isinstance(self.critic_epochs, int):
            raise ValueError(f"critic_epochs must be an integer >= 0, got {self.critic_epochs!r}")
        if self.critic_epochs < 0:
            raise ValueError(f"critic_epochs must be an integer >= 0, got {self.critic_epochs!r}")
        _count("mini_batch_rows", self.mini_batch_rows, allow_none=True)
        _count("micro_batch_rows", self.micro_batch_rows, allow_none=True)
        _count("micro_batch_tokens", self.micro_batch_tokens, allow_none=True)
        b = tuple(self.adam_betas)
        if len(b) != 2 or not all(isinstance(x, int | float) and 0 <= x < 1 for x in b):
            raise ValueError(f"adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        object.__setattr__(self, "adam_betas", (float(b[0]), float(b[1])))
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    @property
    def clip_high(self) -> float:
        return self.clip_ratio if self.clip_ratio_high is None else self.clip_ratio_high


def make_optimizer(model: torch.nn.Module, cfg: PPOConfig) -> torch.optim.AdamW:
    """AdamW with two parameter groups: ``actor`` (lr ``actor_lr``) and ``critic`` (``critic_lr``).

    Uses ``model.actor_parameters()`` / ``model.critic_parameters()`` when the model has them
    (with ``critic="shared"`` the backbone is an actor parameter and only the value heads are
    critic parameters), otherwise every parameter is an actor parameter. Frozen parameters
    (``requires_grad`` False, e.g. a LoRA base) are left out; a parameter in both lists stays
    in the actor group.
    """
    if hasattr(model, "actor_parameters"):
        actor = list(model.actor_parameters())
        critic = list(model.critic_parameters()) if hasattr(model, "critic_parameters") else []
    else:
        actor, critic = list(model.parameters()), []
    seen: set[int] = set()
    groups = []
    for name, params, lr in (("actor", actor, cfg.actor_lr), ("critic", critic, cfg.critic_lr)):
        keep = []
        for p in params:
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                keep.append(p)
        if keep:
            groups.append({"params": keep, "lr": lr, "name": name})
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(
        groups,
        lr=cfg.actor_lr,
        betas=cfg.adam_betas,
        eps=cfg.adam_eps,
        weight_decay=cfg.weight_decay,
    )


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """``1 - Var(target - pred) / Var(target)`` (NaN when fewer than 2 targets or Var = 0)."""
    if target.numel() < 2:
        return float("nan")
    var = target.var(unbiased=False)
    if var <= 0:
        return float("nan")
    return float(1.0 - (target - pred).var(unbiased=False) / var)


def _f32(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (half-precision outputs are upcast; float64 stays float64)."""
    return x if x.dtype == torch.float64 else x.float()


def _clip_group(params: list[torch.Tensor], max_norm: float | None) -> float:
    """The gradient norm of one parameter group before clipping; clips it to ``max_norm``."""
    with_grad = [p for p in params if p.grad is not None]
    if not with_grad:
        return 0.0
    limit = math.inf if max_norm is None else max_norm  # inf: measure without clipping
    return float(torch.nn.utils.clip_grad_norm_(with_grad, limit))


def ppo_update(
    model,
    optimizer: torch.optim.Optimizer,
    batch: TrainBatch,
    cfg: PPOConfig,
    *,
    iteration: int = 0,
    train_actor: bool = True,
) -> dict[str, float]:
    """Run ``cfg.ppo_epochs`` epochs of mini-batch PPO steps on ``batch`` (filled by
    :func:`~hiper.train.batch.fill_from_forward`). ``iteration`` varies the row shuffle.
    ``train_actor=False`` (critic warm-up) optimises only the value loss and steps only the
    critic group: the policy, a shared backbone included, is left unchanged.

    Metrics (means over the optimiser steps): ``loss`` (the total loss above), ``pg_loss``,
    ``kl``, ``entropy``, ``clip_frac``, ``dual_clip_frac``, ``approx_kl``, ``ratio_mean``,
    ``value_loss`` (sum over heads) and ``value_loss/<head>``, ``value_clip_frac/<head>``,
    ``explained_var/<head>`` (old values vs targets over the whole batch),
    ``grad_norm/<group>`` (``actor``, ``critic``; before clipping), ``tokens`` (trained tokens
    per epoch), ``value_targets``, ``steps``, ``skipped_steps``.
    """
    if batch.old_logprobs is None:
        raise ValueError(
            "batch.old_logprobs is not set; call fill_from_forward(batch, model) first"
        )
    if cfg.kl_coef > 0 and batch.ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs batch.ref_logprobs; call fill_from_forward first")
    has_vt = batch.vt_row.numel() > 0
    if has_vt and cfg.value_clip is not None and batch.old_values is None:
        raise ValueError("clipped value loss needs batch.old_values; call fill_from_forward first")
    heads = batch.heads
    model_heads = tuple(getattr(model, "heads", heads))
    if has_vt and model_heads != heads:
        raise ValueError(f"batch heads {heads} differ from the model's heads {model_heads}")

    device = model_device(model)
    pad_id = pad_token_id(model)
    n = batch.num_rows
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration)
    nh = len(heads)

    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + float(value)

    steps = skipped = 0
    was_training = model.training
    model.train()
    try:
        for _epoch in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=gen) if cfg.shuffle else torch.arange(n)
            size = cfg.mini_batch_rows or n
            for start in range(0, n, size):
                mb = select_rows(batch, order[start : start + size])
                n_tok = torch.tensor(float(max(mb.num_tokens, 1)), device=device)
                # KL and entropy cover every response token (KEEP copies and turn 0's switch
                # are not trained by the policy gradient, but must not drift either)
                n_resp = torch.tensor(
                    float(max(int(mb.response_len[mb.real].sum()), 1)), device=device
                )
                counts = mb.head_counts().to(device=device, dtype=torch.float32)
                if mb.num_tokens == 0 and mb.vt_row.numel() == 0:
                    continue  # nothing to learn from (e.g. only padding rows)
                optimizer.zero_grad(set_to_none=True)
                step: dict[str, torch.Tensor] = {}

                def acc(key: str, value: torch.Tensor, step=step) -> None:
                    v = value.detach()
                    step[key] = step[key] + v if key in step else v

                for micro in micro_batches(
                    mb, cfg.micro_batch_rows, cfg.micro_batch_tokens, pad_id
                ):
                    micro = micro.to(device)
                    want_v = micro.vt_b.numel() > 0
                    out = model(
                        micro.input_ids,
                        micro.attention_mask,
                        with_values=want_v,
                        with_entropy=True,
                        temperature=batch.temperature,
                        # every term reads response tokens only: skip the prompts' logits
                        logprobs_from=first_response_column(micro.response_mask),
                    )
                    logp = _f32(out.logprobs)
                    mask = micro.loss_mask
                    resp_mask = micro.response_mask & mb.real[micro.rows].to(device)[:, None]
                    pg, st = policy_loss(
                        logp,
                        micro.old_logprobs,
                        micro.advantages,
                        mask,
                        clip_low=cfg.clip_ratio,
                        clip_high=cfg.clip_high,
                        dual_clip=cfg.dual_clip,
                        normalizer=n_tok,
                    )
                    loss = pg
                    acc("pg_loss", pg)
                    for k, v in st.items():
                        acc(k, v)
                    if micro.ref_logprobs is not None:
                        kl = masked_sum_mean(kl_k3(logp, micro.ref_logprobs), resp_mask, n_resp)
                        acc("kl", kl)
                        if cfg.kl_coef > 0:
                            loss = loss + cfg.kl_coef * kl
                    if out.entropy is not None:
                        ent = entropy_bonus(_f32(out.entropy), resp_mask, n_resp)
                        acc("entropy", ent)
                        if cfg.entropy_coef > 0:
                            loss = loss - cfg.entropy_coef * ent
                    elif cfg.entropy_coef > 0:
                        raise ValueError("entropy_coef > 0 but the model returned no entropy")
                    if want_v:
                        if out.values is None:
                            raise ValueError("the model returned no values but targets exist")
                        v = _f32(out.values[micro.vt_b, micro.vt_pos, micro.vt_head])
                        old_v = micro.old_values if micro.old_values is not None else v.detach()
                        terms = value_loss_terms(v, old_v, micro.vt_target, cfg.value_clip)
                        per_head = terms.new_zeros(nh).index_add(
                            0, micro.vt_head, terms
                        ) / counts.clamp(min=1)
                        vl = per_head.sum()
                        loss = loss + cfg.vf_coef * vl
                        acc("value_loss", vl)
                        if cfg.value_clip is not None:
                            clipped = ((v - old_v).abs() > cfg.value_clip).to(terms.dtype)
                            vcf = terms.new_zeros(nh).index_add(
                                0, micro.vt_head, clipped
                            ) / counts.clamp(min=1)
                        else:
                            vcf = terms.new_zeros(nh)
                        for h, name in enumerate(heads):
                            acc(f"value_loss/{name}", per_head[h])
                            acc(f"value_clip_frac/{name}", vcf[h])
                    if not train_actor:  # critic warm-up: only the value loss is optimised
                        loss = cfg.vf_coef * vl if want_v else None
                    if loss is not None:
                        acc("loss", loss)
                        loss.backward()

                if not train_actor:  # a shared backbone is an actor parameter: it stays put
                    for g in optimizer.param_groups:
                        if g.get("name", "actor") == "actor":
                            for p in g["params"]:
                                p.grad = None
                norms = {
                    g.get("name", str(i)): _clip_group(g["params"], cfg.grad_clip)
                    for i, g in enumerate(optimizer.param_groups)
                }
                if all(math.isfinite(v) for v in norms.values()):
                    optimizer.step()
                else:
                    skipped += 1
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                for name, v in norms.items():
                    add(f"grad_norm/{name}", v)
                for k, v in step.items():
                    add(k, float(v))
    finally:
        model.train(was_training)

    metrics = {k: v / max(steps, 1) for k, v in sums.items()}
    if has_vt and cfg.critic_epochs > 0:
        metrics.update(critic_update(model, optimizer, batch, cfg, iteration=iteration))
    metrics["steps"] = float(steps)
    metrics["skipped_steps"] = float(skipped)
    metrics["tokens"] = float(batch.num_tokens)
    metrics["value_targets"] = float(batch.vt_row.numel())
    if has_vt and batch.old_values is not None:
        for h, name in enumerate(heads):
            sel = batch.vt_head == h
            metrics[f"explained_var/{name}"] = explained_variance(
                batch.old_values[sel], batch.vt_target[sel]
            )
    return metrics


def critic_update(
    model,
    optimizer: torch.optim.Optimizer,
    batch: TrainBatch,
    cfg: PPOConfig,
    *,
    iteration: int = 0,
) -> dict[str, float]:
    """``cfg.critic_epochs`` epochs of mini-batch steps on the value loss alone, with the same
    targets and value clip as :func:`ppo_update`. Only the critic's parameters move: the critic
    runs alone (:meth:`~hiper.models.policy.PolicyModel.values`) and the actor group's gradients
    are dropped, so a shared backbone (an actor parameter) and the policy stay unchanged.
    Returns ``critic_value_loss`` (mean over the steps of the last epoch) and ``critic_steps``.
    """
    device = model_device(model)
    pad_id = pad_token_id(model)
    n = batch.num_rows
    nh = len(batch.heads)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + iteration + 7_777)
    size = cfg.mini_batch_rows or n
    steps, last = 0, []
    was_training = model.training
    model.train()
    try:
        for epoch in range(cfg.critic_epochs):
            order = torch.randperm(n, generator=gen) if cfg.shuffle else torch.arange(n)
            for start in range(0, n, size):
                mb = select_rows(batch, order[start : start + size])
                if mb.vt_row.numel() == 0:
                    continue
                counts = mb.head_counts().to(device=device, dtype=torch.float32)
                optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for micro in micro_batches(
                    mb, cfg.micro_batch_rows, cfg.micro_batch_tokens, pad_id
                ):
                    if micro.vt_b.numel() == 0:
                        continue
                    micro = micro.to(device)
                    values = model.values(micro.input_ids, micro.attention_mask)
                    v = _f32(values[micro.vt_b, micro.vt_pos, micro.vt_head])
                    old_v = micro.old_values if micro.old_values is not None else v.detach()
                    terms = value_loss_terms(v, old_v, micro.vt_target, cfg.value_clip)
                    per_head = terms.new_zeros(nh).index_add(0, micro.vt_head, terms)
                    loss = cfg.vf_coef * (per_head / counts.clamp(min=1)).sum()
                    loss.backward()
                    total += float(loss.detach())
                for g in optimizer.param_groups:  # the policy (a shared backbone too) stays put
                    if g.get("name", "actor") == "actor":
                        for p in g["params"]:
                            p.grad = None
                norms = [_clip_group(g["params"], cfg.grad_clip) for g in optimizer.param_groups]
                if all(math.isfinite(x) for x in norms):
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                steps += 1
                if epoch == cfg.critic_epochs - 1:
                    last.append(total)
    finally:
        model.train(was_training)
    return {
        "critic_value_loss": sum(last) / len(last) if last else 0.0,
        "critic_steps": float(steps),
    }
