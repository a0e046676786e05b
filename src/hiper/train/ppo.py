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
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from hiper import seeds
from hiper.train.batch import (
    TrainBatch,
    first_response_column,
    micro_batches,
    model_device,
    pad_token_id,
    select_rows,
)
from hiper.train.distributed import SINGLE, Dist, is_sharded
from hiper.train.losses import (
    entropy_bonus,
    kl_k3,
    masked_sum_mean,
    policy_loss,
    value_loss_terms,
)

__all__ = [
    "Normalizers",
    "PPOConfig",
    "critic_update",
    "explained_variance",
    "make_optimizer",
    "ppo_loss",
    "ppo_update",
    "value_loss",
]


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


@dataclass(frozen=True)
class Normalizers:
    """The counts a mini-batch's loss terms are divided by (HAE.md §6): trained response tokens
    (the policy gradient), response tokens (KL, entropy) and value targets per head.
    Every micro-batch divides by its mini-batch's counts, so the gradients accumulated over the
    micro-batches are exactly the gradient of the mini-batch loss."""

    tokens: torch.Tensor
    response: torch.Tensor
    per_head: torch.Tensor

    @classmethod
    def of(cls, mb: TrainBatch, device) -> Normalizers:
        return cls(
            tokens=torch.tensor(float(max(mb.num_tokens, 1)), device=device),
            response=torch.tensor(float(max(int(mb.response_len.sum()), 1)), device=device),
            per_head=mb.head_counts().to(device=device, dtype=torch.float32).clamp(min=1),
        )


def value_loss(values: torch.Tensor, micro, norm: Normalizers, cfg: PPOConfig, heads: int):
    """Per head: the (clipped) value loss of the micro-batch's targets and the fraction of them
    the clip engaged on, each divided by the mini-batch's target count of that head."""
    v = _f32(values[micro.vt_b, micro.vt_pos, micro.vt_head])
    old_v = micro.old_values if micro.old_values is not None else v.detach()
    terms = value_loss_terms(v, old_v, micro.vt_target, cfg.value_clip)
    per_head = terms.new_zeros(heads).index_add(0, micro.vt_head, terms) / norm.per_head
    clipped = terms.new_zeros(heads)
    if cfg.value_clip is not None:
        hit = ((v - old_v).abs() > cfg.value_clip).to(terms.dtype)
        clipped = clipped.index_add(0, micro.vt_head, hit) / norm.per_head
    return per_head, clipped


def ppo_loss(model, micro, norm: Normalizers, cfg: PPOConfig, batch, values: bool = False):
    """One micro-batch's share of the mini-batch loss (module docstring) and its statistics
    (detached): ``pg_loss``, the policy-loss statistics, ``kl``, ``entropy``, ``value_loss`` and
    per head ``value_loss/<head>``, ``value_clip_frac/<head>``, and ``loss``. ``values``: run the
    critic even without value targets (FSDP2: every rank runs the same modules), its output
    joining the loss times zero."""
    want_v = micro.vt_b.numel() > 0
    out = model(
        micro.input_ids,
        micro.attention_mask,
        with_values=want_v or values,
        with_entropy=True,
        temperature=batch.temperature,
        # every term reads response tokens only: skip the prompts' logits
        logprobs_from=first_response_column(micro.response_mask),
    )
    logp = _f32(out.logprobs)
    # KL and entropy cover every response token (KEEP copies and turn 0's switch are not
    # trained by the policy gradient, but must not drift either)
    resp_mask = micro.response_mask
    loss, stats = policy_loss(
        logp,
        micro.old_logprobs,
        micro.advantages,
        micro.loss_mask,
        clip_low=cfg.clip_ratio,
        clip_high=cfg.clip_high,
        dual_clip=cfg.dual_clip,
        normalizer=norm.tokens,
    )
    stats = {"pg_loss": loss, **stats}
    if micro.ref_logprobs is not None:
        stats["kl"] = masked_sum_mean(kl_k3(logp, micro.ref_logprobs), resp_mask, norm.response)
        if cfg.kl_coef > 0:
            loss = loss + cfg.kl_coef * stats["kl"]
    if out.entropy is None and cfg.entropy_coef > 0:
        raise ValueError("entropy_coef > 0 but the model returned no entropy")
    if out.entropy is not None:
        stats["entropy"] = entropy_bonus(_f32(out.entropy), resp_mask, norm.response)
        if cfg.entropy_coef > 0:
            loss = loss - cfg.entropy_coef * stats["entropy"]
    if want_v:
        if out.values is None:
            raise ValueError("the model returned no values but targets exist")
        per_head, clipped = value_loss(out.values, micro, norm, cfg, len(batch.heads))
        stats["value_loss"] = per_head.sum()
        loss = loss + cfg.vf_coef * stats["value_loss"]
        for h, name in enumerate(batch.heads):
            stats[f"value_loss/{name}"] = per_head[h]
            stats[f"value_clip_frac/{name}"] = clipped[h]
    elif values and out.values is not None:
        loss = loss + 0.0 * out.values.sum()
    stats["loss"] = loss
    return loss, {k: v.detach() for k, v in stats.items()}


def ppo_update(
    model,
    optimizer: torch.optim.Optimizer,
    batch: TrainBatch,
    cfg: PPOConfig,
    *,
    iteration: int = 0,
    dist: Dist = SINGLE,
) -> dict[str, float]:
    """``cfg.ppo_epochs`` epochs of mini-batch PPO steps on ``batch`` (old/reference log-probs
    and old values filled by :func:`~hiper.train.prepare.prepare_batch`), then
    ``cfg.critic_epochs`` value-only epochs (:func:`critic_update`). ``iteration`` varies the
    row shuffle. Metrics (means over the optimiser steps): those of :func:`ppo_loss`,
    ``grad_norm/<group>`` (``actor``, ``critic``; before clipping), ``explained_var/<head>``
    (old values vs targets over the whole batch), ``tokens`` (trained tokens per epoch),
    ``value_targets``, ``steps``, ``skipped_steps``; with critic epochs ``critic_value_loss``
    and ``critic_steps``.

    ``dist``: data parallelism (:mod:`hiper.train.distributed`). Every rank passes the same
    ``batch``; each mini-batch's micro-batches are split between the ranks, gradients and step
    statistics are summed across them before clipping, so every rank takes the same steps and
    gets the same metrics as one process would."""
    _check_batch(model, batch, cfg)
    device, pad_id = model_device(model), pad_token_id(model)
    gen = torch.Generator().manual_seed(seeds.shuffle_seed(cfg.seed, iteration))
    sums: dict[str, float] = defaultdict(float)
    steps = skipped = 0
    fsdp = dist.world_size > 1 and is_sharded(model)
    values = fsdp and batch.vt_row.numel() > 0
    optimizer.zero_grad(set_to_none=True)
    with _training(model):
        for mb in _mini_batches(batch, cfg, cfg.ppo_epochs, gen):
            if mb.num_tokens == 0 and mb.vt_row.numel() == 0:
                continue  # nothing to learn from (no trained token, no value target)
            norm, step = Normalizers.of(mb, device), {}
            micros = micro_batches(mb, cfg.micro_batch_rows, cfg.micro_batch_tokens, pad_id)
            for micro, keep in dist.my_work(micros, equal=fsdp):
                loss, stats = ppo_loss(model, micro.to(device), norm, cfg, batch, values)
                if not keep:  # FSDP2's padding: run like the others, count for nothing
                    loss, stats = loss * 0.0, {}
                loss.backward()
                for k, v in stats.items():
                    step[k] = step[k] + v if k in step else v
            if dist.world_size > 1:
                step = dist.all_reduce_sum(step)
            norms = _clip_and_step(optimizer, cfg.grad_clip, dist=dist)
            steps, skipped = steps + 1, skipped + (not all(map(math.isfinite, norms.values())))
            for k, v in {**{f"grad_norm/{g}": n for g, n in norms.items()}, **step}.items():
                sums[k] += float(v)
    metrics = {k: v / max(steps, 1) for k, v in sums.items()}
    if batch.vt_row.numel() > 0 and cfg.critic_epochs > 0:
        extra = critic_update(
            model,
            optimizer,
            batch,
            cfg,
            iteration=iteration + seeds.CRITIC_EPOCHS_OFFSET,
            dist=dist,
        )
        metrics.update(critic_value_loss=extra["value_loss"], critic_steps=extra["steps"])
    return {**metrics, **_batch_metrics(batch, steps, skipped)}


def critic_update(
    model,
    optimizer: torch.optim.Optimizer,
    batch: TrainBatch,
    cfg: PPOConfig,
    *,
    iteration: int = 0,
    epochs: int | None = None,
    dist: Dist = SINGLE,
) -> dict[str, float]:
    """``epochs`` (default ``cfg.critic_epochs``) epochs of mini-batch steps on the value loss
    alone, with the same targets, normalisers and value clip as :func:`ppo_update`: the
    critic's warm-up (config ``critic_warmup``) and the extra value epochs. Only the critic's
    parameters move: the critic runs alone (:meth:`~hiper.models.policy.PolicyModel.values`)
    and the actor group's gradients are dropped, so a shared backbone (an actor parameter) and
    the policy stay unchanged. Metrics: ``value_loss`` (mean over the steps) and
    ``value_loss/<head>``, ``grad_norm/<group>``, ``explained_var/<head>``, ``steps``,
    ``skipped_steps``, ``tokens``, ``value_targets``. ``dist``: as in :func:`ppo_update`."""
    device, pad_id = model_device(model), pad_token_id(model)
    gen = torch.Generator().manual_seed(seeds.shuffle_seed(cfg.seed, iteration))
    epochs = cfg.critic_epochs if epochs is None else epochs
    fsdp = dist.world_size > 1 and is_sharded(model)
    sums: dict[str, float] = defaultdict(float)
    steps = skipped = 0
    optimizer.zero_grad(set_to_none=True)
    with _training(model):
        for mb in _mini_batches(batch, cfg, epochs, gen):
            if mb.vt_row.numel() == 0:
                continue
            norm, per_head = Normalizers.of(mb, device), 0.0
            micros = micro_batches(mb, cfg.micro_batch_rows, cfg.micro_batch_tokens, pad_id)
            for micro, keep in dist.my_work(micros, equal=fsdp):
                if micro.vt_b.numel() > 0 or fsdp:  # FSDP2: every rank runs the critic
                    micro = micro.to(device)
                    values = model.values(micro.input_ids, micro.attention_mask)
                    head_loss = value_loss(values, micro, norm, cfg, len(batch.heads))[0]
                    loss = cfg.vf_coef * head_loss.sum()
                    if fsdp:  # the critic takes part in every backward; padding counts 0
                        loss = (loss + 0.0 * values.sum()) * float(keep)
                        head_loss = head_loss * float(keep)
                    loss.backward()
                    per_head = per_head + head_loss.detach()
            if dist.world_size > 1:
                per_head = _sum_heads(dist, per_head, len(batch.heads))
            norms = _clip_and_step(optimizer, cfg.grad_clip, frozen="actor", dist=dist)
            steps, skipped = steps + 1, skipped + (not all(map(math.isfinite, norms.values())))
            sums["value_loss"] += float(per_head.sum())
            for h, name in enumerate(batch.heads):
                sums[f"value_loss/{name}"] += float(per_head[h])
            for g, n in norms.items():
                sums[f"grad_norm/{g}"] += n
    metrics = {k: v / max(steps, 1) for k, v in sums.items()}
    return {**metrics, **_batch_metrics(batch, steps, skipped)}


def _check_batch(model, batch: TrainBatch, cfg: PPOConfig) -> None:
    if batch.old_logprobs is None:
        raise ValueError(
            "batch.old_logprobs is not set; call fill_from_forward(batch, model) first"
        )
    if cfg.kl_coef > 0 and batch.ref_logprobs is None:
        raise ValueError("kl_coef > 0 needs batch.ref_logprobs; call fill_from_forward first")
    has_vt = batch.vt_row.numel() > 0
    if has_vt and cfg.value_clip is not None and batch.old_values is None:
        raise ValueError("clipped value loss needs batch.old_values; call fill_from_forward first")
    model_heads = tuple(getattr(model, "heads", batch.heads))
    if has_vt and model_heads != batch.heads:
        raise ValueError(f"batch heads {batch.heads} differ from the model's heads {model_heads}")


def _mini_batches(batch: TrainBatch, cfg: PPOConfig, epochs: int, gen: torch.Generator):
    """``epochs`` passes over the rows, each shuffled by ``gen`` (unless ``cfg.shuffle`` is
    off) and cut into mini-batches of ``cfg.mini_batch_rows`` rows (all rows when None)."""
    n = batch.num_rows
    size = cfg.mini_batch_rows or n
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen) if cfg.shuffle else torch.arange(n)
        for start in range(0, n, size):
            yield select_rows(batch, order[start : start + size])


def _sum_heads(dist: Dist, per_head, heads: int) -> torch.Tensor:
    """The per-head value losses summed across ranks (a rank without targets has ``0.0``)."""
    mine = {str(h): per_head[h] for h in range(heads)} if torch.is_tensor(per_head) else {}
    total = dist.all_reduce_sum(mine)
    return torch.tensor([total.get(str(h), 0.0) for h in range(heads)], dtype=torch.float64)


def _clip_and_step(
    optimizer, max_norm: float | None, frozen: str | None = None, dist: Dist = SINGLE
) -> dict:
    """Clip each parameter group's gradient norm on its own (one global norm would let the
    critic's gradient set the actor's step), step unless a norm is not finite, zero the
    gradients. The ``frozen`` group's gradients are dropped first (it does not move). With
    several ranks the gradients are summed across them before the norms. Returns each group's
    norm before clipping."""
    for g in optimizer.param_groups:
        if frozen is not None and g.get("name", "actor") == frozen:
            for p in g["params"]:
                p.grad = None
    if dist.world_size > 1:
        dist.all_reduce_grads([p for g in optimizer.param_groups for p in g["params"]])
    norms = {
        g.get("name", str(i)): _clip_group(g["params"], max_norm)
        for i, g in enumerate(optimizer.param_groups)
    }
    if all(math.isfinite(v) for v in norms.values()):
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return norms


def _batch_metrics(batch: TrainBatch, steps: int, skipped: int) -> dict[str, float]:
    """Step counts, the batch's sizes and, per head, how much of the targets' variance the old
    values (the critic before this update) explain."""
    m = {
        "steps": float(steps),
        "skipped_steps": float(skipped),
        "tokens": float(batch.num_tokens),
        "value_targets": float(batch.vt_row.numel()),
    }
    if batch.vt_row.numel() > 0 and batch.old_values is not None:
        for h, name in enumerate(batch.heads):
            sel = batch.vt_head == h
            m[f"explained_var/{name}"] = explained_variance(
                batch.old_values[sel], batch.vt_target[sel]
            )
    return m


@contextmanager
def _training(model):
    """The model in train mode for the update, its previous mode restored after."""
    was_training = model.training
    model.train()
    try:
        yield
    finally:
        model.train(was_training)
