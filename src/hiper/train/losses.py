"""Pure loss functions of the PPO update (HAE.md §6). Torch only; no model, no batch objects.

Every token-level function takes per-token tensors of one shape (``[B, L]`` in practice, any shape
works) and a boolean ``mask`` of the tokens that count. Aggregation is a *token-mean over the whole
mini-batch*: a masked sum divided by ``normalizer``, the number of masked tokens of the whole
mini-batch (not of the micro-batch at hand). Summing the losses of the micro-batches of a mini-batch
therefore gives exactly the loss of the mini-batch computed in one piece, so micro-batching never
changes the gradient. ``normalizer=None`` means "this call is the whole mini-batch":
``mask.sum()`` (at least 1).

Statistics are returned normalised the same way (divided by ``normalizer``), so they too can be
summed over micro-batches to obtain mini-batch means.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "K3_LOG_RATIO_CLAMP",
    "K3_VALUE_CLAMP",
    "LOG_RATIO_CLAMP",
    "entropy_bonus",
    "kl_k3",
    "masked_sum_mean",
    "policy_loss",
    "value_loss",
    "value_loss_terms",
]

#: log pi/pi_old is clamped to [-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP] before exp() in the surrogate
#: (keeps the ratio finite for tokens whose probability collapsed; such tokens are clipped anyway).
LOG_RATIO_CLAMP = 20.0
#: k3 KL: log(pi_ref/pi) is clamped to +-20 before exp(), the estimate to +-10 (common practice).
K3_LOG_RATIO_CLAMP = 20.0
K3_VALUE_CLAMP = 10.0


def _norm(mask: Tensor, normalizer: float | Tensor | None) -> Tensor | float:
    if normalizer is None:
        return mask.sum().clamp(min=1).to(torch.float32)
    if isinstance(normalizer, Tensor):
        return normalizer.clamp(min=1)
    return max(float(normalizer), 1.0)


def masked_sum_mean(x: Tensor, mask: Tensor, normalizer: float | Tensor | None = None) -> Tensor:
    """``sum(x * mask) / normalizer`` (``normalizer`` defaults to ``mask.sum()``, at least 1).

    Masked-out entries are zeroed with ``where`` (not multiplied), so NaN/inf there cannot leak.
    """
    m = mask.bool()
    return torch.where(m, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum() / _norm(
        m, normalizer
    )


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = 3.0,
    normalizer: float | Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate with dual clip, token-mean over the masked tokens.

    Per token, with ``r = exp(clamp(logp - old_logp, -20, 20))`` and advantage ``A``::

        l_1 = -A * r
        l_2 = -A * clip(r, 1 - clip_low, 1 + clip_high)
        l   = max(l_1, l_2)                         (the usual pessimistic PPO bound)
        l   = min(l, -dual_clip * A)   if A < 0     (dual clip: caps the loss of a negative-advantage
                                                     token whose ratio exploded at dual_clip * |A|)

    ``loss = sum_{masked} l / normalizer``. ``dual_clip=None`` disables the dual clip (it must
    otherwise be > 1).

    Stats (detached, divided by ``normalizer`` like the loss): ``clip_frac`` (tokens where the
    clipped term is the active one, ``l_2 > l_1``), ``dual_clip_frac`` (tokens where the dual clip
    engaged), ``approx_kl`` (mean of ``old_logp - logp``), ``ratio_mean`` (mean of ``r``).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (or None), got {dual_clip}")
    m = mask.bool()
    norm = _norm(m, normalizer)
    log_ratio = (logp - old_logp).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    l1 = -adv * ratio
    l2 = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(l1, l2)
    if dual_clip is not None:
        l3 = -adv * dual_clip
        dual = (adv < 0) & (clipped > l3)
        per_token = torch.where(adv < 0, torch.minimum(clipped, l3), clipped)
    else:
        dual = torch.zeros_like(m)
        per_token = clipped
    zero = torch.zeros((), dtype=per_token.dtype, device=per_token.device)
    loss = torch.where(m, per_token, zero).sum() / norm
    with torch.no_grad():
        fm = m.to(per_token.dtype)
        stats = {
            "clip_frac": ((l2 > l1).to(fm.dtype) * fm).sum() / norm,
            "dual_clip_frac": (dual.to(fm.dtype) * fm).sum() / norm,
            "approx_kl": torch.where(m, old_logp - logp, zero).sum() / norm,
            "ratio_mean": torch.where(m, ratio, zero).sum() / norm,
        }
    return loss, stats


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 ("low_var_kl") estimate of KL(pi || pi_ref) from samples of pi.

    With ``d = clamp(ref_logp - logp, -20, 20)``: ``k3 = exp(d) - d - 1``, clamped to [-10, 10]
    (the clamps follow common practice: they only bite for tokens whose probability under the
    policy and the reference differ by more than e^20, resp. whose estimate exceeds 10 nats).
    Unbiased for KL(pi || pi_ref), always >= 0, zero iff ``logp == ref_logp``. Aggregate it with
    :func:`masked_sum_mean`.
    """
    d = (ref_logp - logp).clamp(-K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    return (torch.exp(d) - d - 1.0).clamp(-K3_VALUE_CLAMP, K3_VALUE_CLAMP)


def entropy_bonus(
    entropy: Tensor, mask: Tensor, normalizer: float | Tensor | None = None
) -> Tensor:
    """Token-mean of the per-token policy entropy ``H_t = -sum_v pi(v|.) log pi(v|.)``:
    ``sum_{masked} H_t / normalizer``. The objective *subtracts* ``entropy_coef`` times this."""
    return masked_sum_mean(entropy, mask, normalizer)


def value_loss_terms(v: Tensor, old_v: Tensor, target: Tensor, clip: float | None = 0.5) -> Tensor:
    """Per-target clipped value loss ``0.5 * max((v - t)^2, (v_clip - t)^2)`` with
    ``v_clip = old_v + clamp(v - old_v, -clip, clip)`` (``clip=None``: plain ``0.5 * (v - t)^2``)."""
    unclipped = (v - target) ** 2
    if clip is None:
        return 0.5 * unclipped
    v_clip = old_v + (v - old_v).clamp(-clip, clip)
    return 0.5 * torch.maximum(unclipped, (v_clip - target) ** 2)


def value_loss(
    v: Tensor,
    old_v: Tensor,
    target: Tensor,
    clip: float | None = 0.5,
    head: Tensor | None = None,
    normalizer: Tensor | float | None = None,
) -> Tensor:
    """Clipped value loss, mean over the targets of each head, summed over heads.

    ``v``, ``old_v``, ``target`` are 1-D over M targets (one scalar per (row, position, head)).
    Per target, :func:`value_loss_terms`. Without ``head``, all targets are one head:
    ``sum_i l_i / normalizer`` (``normalizer`` defaults to M). With ``head`` (int64 [M], head index
    of each target), the loss is ``sum_h (sum_{i: head_i = h} l_i) / n_h`` where ``n_h`` is
    ``normalizer[h]`` (a tensor of per-head counts over the whole mini-batch; defaults to the counts
    in ``head``; heads with no targets contribute 0).
    """
    terms = value_loss_terms(v, old_v, target, clip)
    if head is None:
        if normalizer is None:
            return terms.sum() / max(terms.numel(), 1)
        return terms.sum() / _norm(terms, normalizer)
    head = head.long()
    nh = int(head.max().item()) + 1 if head.numel() else 1
    if normalizer is not None:
        counts = torch.as_tensor(normalizer, dtype=terms.dtype, device=terms.device)
        nh = max(nh, counts.numel())
    else:
        counts = torch.bincount(head, minlength=nh).to(terms.dtype)
    sums = torch.zeros(nh, dtype=terms.dtype, device=terms.device).index_add(0, head, terms)
    counts = torch.nn.functional.pad(counts, (0, nh - counts.numel()))
    return (sums / counts.clamp(min=1)).sum()
