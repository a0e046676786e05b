"""From rollout trajectories to a filled PPO batch: one forward pass, estimator, token assignment.

1. Align every response's blocks to tokens (:class:`hiper.protocol.masks.TokenAligner`).
2. One no-grad forward over all turns (plus the final state of each truncated episode) gives the
   reference log-probs and every value the estimator reads, at its position. The old log-probs
   are the sampler's own (recorded at rollout time, at the rollout temperature): the policy has
   not changed since it sampled, so a second policy forward would only recompute them
   (``recompute_old_logprobs=True`` does, e.g. when the sampler ran in another precision).
3. beta_t = pi(SWITCH | s_t, o_{t-1}) from the old log-probs of the switch block.
4. Reward shaping, the registered estimator, per-token advantages and value targets.
5. The PPO batch reuses the forward's log-probs and looks its old values up, so no second pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hiper.algos import Values, build_layout, estimate
from hiper.algos.base import TurnAdvantages, get_estimator
from hiper.algos.layout import TurnLayout
from hiper.algos.shaping import ShapingConfig, shape_rewards
from hiper.algos.tokens import token_advantages, turn_value_targets
from hiper.protocol.masks import BLOCK_INDEX, TokenAligner, TokenSpans, value_positions
from hiper.train.batch import TrainBatch, build_sequence_batch, build_train_batch, fill_from_forward
from hiper.train.distributed import SINGLE, Dist
from hiper.types import SWITCH, Trajectory, Turn


@dataclass
class Prepared:
    batch: TrainBatch
    layout: TurnLayout
    advantages: TurnAdvantages
    spans: TokenSpans
    turns: list[Turn]
    rewards: np.ndarray


def prepare_batch(
    policy,
    aligner: TokenAligner,
    trajectories: list[Trajectory],
    estimator: str,
    estimator_config,
    shaping: ShapingConfig,
    micro_batch_rows: int | None = None,
    *,
    temperature: float = 1.0,
    recompute_old_logprobs: bool = False,
    dist: Dist = SINGLE,
) -> Prepared:
    """The PPO batch of ``trajectories``, sampled at ``temperature`` (log-probs of the policy,
    the old one and the reference are all taken at that temperature). ``dist``: every rank
    passes the same trajectories and runs its share of the forward (:func:`fill_from_forward`);
    every rank gets the single-process result."""
    turns = [t for tr in trajectories for t in tr.turns]
    n = len(turns)
    spans = aligner.align(
        [t.response_ids for t in turns],
        [t.response_text for t in turns],
        [t.decision for t in turns],
    )
    for t, d in zip(turns, spans.as_dicts(), strict=True):
        t.token_spans = d
    positions = value_positions(spans)
    heads = tuple(policy.heads)
    probes = get_estimator(estimator).value_reads(estimator_config)  # what it declared
    finals = [
        (b, tr.info["final_prompt_ids"])
        for b, tr in enumerate(trajectories)
        if probes and tr.info.get("final_prompt_ids") is not None and not tr.terminated
    ]
    probe = build_sequence_batch(
        [t.prompt_ids for t in turns] + [ids for _, ids in finals],
        [t.response_ids for t in turns] + [np.zeros(0, np.int64) for _ in finals],
        heads,
    )
    probe.temperature = float(temperature)
    # turns without recorded log-probs (built by hand, or loaded from a log) are re-scored
    recompute = recompute_old_logprobs or any(t.logprobs is None for t in turns)
    if not recompute:
        # the finals rows have no response tokens, so the flat arrays line up
        sampled = [np.asarray(t.logprobs, np.float32) for t in turns]
        for i, (t, lp) in enumerate(zip(turns, sampled, strict=True)):
            if lp.shape != t.response_ids.shape:
                raise ValueError(
                    f"turn {i} has {lp.size} sampled log-probs for {t.response_ids.size} response "
                    "tokens; pass recompute_old_logprobs=True for turns sampled without log-probs"
                )
        probe.old_logprobs = torch.from_numpy(
            np.concatenate(sampled) if sampled else np.zeros(0, np.float32)
        )
    plen = probe.prompt_len.numpy()
    if probes:
        k = len(probes)
        rows = np.repeat(np.arange(n), k)
        pos = np.concatenate([positions[r.position][:, None] for r in probes], axis=1)
        pos = pos.reshape(-1)
        head = np.tile([heads.index(r.head) for r in probes], n)
        f_rows = np.arange(n, n + len(finals))
        probe.vt_row = torch.from_numpy(np.concatenate([rows, f_rows]))
        probe.vt_pos = torch.from_numpy(np.concatenate([plen[rows] + pos - 1, plen[f_rows] - 1]))
        probe.vt_head = torch.from_numpy(
            # a truncated episode's final state: the state value (the first read), for the bootstrap
            np.concatenate([head, np.full(len(finals), heads.index(probes[0].head))])
        )
        probe.vt_target = torch.zeros(probe.vt_row.numel(), dtype=torch.float32)
    fill_from_forward(
        probe, policy, micro_batch_rows, values=bool(probes), logprobs=recompute, dist=dist
    )
    old_lp = probe.old_logprobs.numpy().astype(np.float64)

    # beta_t from the switch block's log-probs: P(SWITCH) if sampled, else 1 - P(KEEP)
    cs = np.concatenate(([0.0], np.cumsum(old_lp)))
    sw = spans.spans[:, BLOCK_INDEX["switch"]]
    base = spans.offsets[:-1]
    p_choice = np.exp(cs[base + sw[:, 1]] - cs[base + sw[:, 0]])
    for t, has, p in zip(turns, sw[:, 1] > sw[:, 0], p_choice, strict=True):
        if not has or t.decision.switch is None:
            t.switch_prob = 0.0
        else:
            t.switch_prob = float(p if t.decision.switch == SWITCH else 1.0 - p)

    layout = build_layout(trajectories)
    values = Values()
    if probes:
        ov = probe.old_values.numpy().astype(np.float64)
        per_turn = ov[: n * len(probes)].reshape(n, len(probes))
        arrays = {}
        for j, name in enumerate(r.name for r in probes):
            a = np.zeros(layout.shape)
            a[layout.mask] = per_turn[:, j]
            arrays[name] = a
        final = np.zeros(layout.shape[0])
        for (b, _), v in zip(finals, ov[n * len(probes) :], strict=True):
            final[b] = v
        values = Values(final=final, **arrays)
    rewards = shape_rewards(layout, shaping)
    adv = estimate(estimator, layout, rewards, values, estimator_config)
    tok = token_advantages(layout, adv, spans)
    targets = turn_value_targets(layout, adv, positions, spans) if probes else {}
    batch = build_train_batch(turns, tok, targets, heads)
    batch.temperature = probe.temperature
    batch.old_logprobs = probe.old_logprobs[: batch.resp_offsets[-1].item()].clone()
    if probe.ref_logprobs is not None:
        batch.ref_logprobs = probe.ref_logprobs[: batch.resp_offsets[-1].item()].clone()
    if probes and batch.vt_row.numel():
        batch.old_values = _lookup(probe, batch)
    return Prepared(batch, layout, adv, spans, turns, rewards)


def _lookup(probe: TrainBatch, batch: TrainBatch) -> torch.Tensor:
    """Old values of ``batch``'s targets, read from the probe forward at the same (row, pos, head)."""
    span = int(max(probe.vt_pos.max().item(), batch.vt_pos.max().item())) + 1
    nh = len(probe.heads)

    def key(b: TrainBatch) -> np.ndarray:
        return (b.vt_row.numpy() * span + b.vt_pos.numpy()) * nh + b.vt_head.numpy()

    pk = key(probe)
    order = np.argsort(pk, kind="stable")
    want = key(batch)
    idx = np.searchsorted(pk[order], want)
    idx = np.minimum(idx, len(order) - 1)
    if not (pk[order][idx] == want).all():
        raise RuntimeError("a value target was not among the probed positions (internal error)")
    return probe.old_values[torch.from_numpy(order[idx])].clone()
