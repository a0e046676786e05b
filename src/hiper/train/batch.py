"""The PPO training batch: one row per turn, ragged (no padding) until micro-batching.

:class:`TrainBatch` holds **CPU torch tensors**, stored *ragged*: all rows' token ids concatenated
into one flat tensor with offsets, and all rows' response-token quantities (advantages, loss mask,
old and reference log-probs) concatenated the same way. Padding happens only when
:func:`micro_batches` cuts a micro-batch, so memory is proportional to the real token count.

Alignment (the one convention every consumer uses)
    Row ``i`` is ``input_ids = prompt_ids + response_ids`` with ``prompt_len[i]`` prompt tokens.
    Response token ``j`` of row ``i`` sits at absolute index ``prompt_len[i] + j``; its log-prob is
    ``ForwardOut.logprobs[:, prompt_len[i] + j]`` (the log-prob of a token given its prefix). In the
    flat response arrays it is entry ``resp_offsets[i] + j``.
    A value target at response position ``p`` (HAE.md §3: the value of the prefix *before* ``p``) is
    stored at absolute position ``prompt_len[i] + p - 1`` and read as
    ``ForwardOut.values[i, prompt_len[i] + p - 1, head]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from hiper.algos.tokens import TokenAdvantages, TurnValueTargets
from hiper.train.distributed import SINGLE, Dist, is_sharded
from hiper.types import Turn

__all__ = [
    "MicroBatch",
    "TrainBatch",
    "build_sequence_batch",
    "build_train_batch",
    "fill_from_forward",
    "first_response_column",
    "micro_batches",
    "select_rows",
]


@dataclass
class TrainBatch:
    """A PPO batch of N rows (turns); every tensor is on the CPU.

    Sequences (flat over rows):
        ``input_ids`` int64 [S], ``seq_offsets`` int64 [N+1] (row i is
        ``input_ids[seq_offsets[i]:seq_offsets[i+1]]``), ``prompt_len`` int64 [N].
    Response tokens (flat over rows, R = total response tokens):
        ``resp_offsets`` int64 [N+1]; ``advantages`` float32 [R]; ``loss_mask`` bool [R];
        ``old_logprobs`` / ``ref_logprobs`` float32 [R] or None until :func:`fill_from_forward`.
    Value targets (M of them, all heads together):
        ``vt_row`` int64 [M] (row), ``vt_pos`` int64 [M] (absolute position
        ``prompt_len + p - 1``), ``vt_head`` int64 [M] (index into ``heads``), ``vt_target``
        float32 [M], ``old_values`` float32 [M] or None until :func:`fill_from_forward`.
    ``temperature``: the sampling temperature of the responses. Old, new and reference log-probs
    are all taken of ``softmax(logits / temperature)``, the distribution that sampled them, so the
    PPO ratio and the KL compare like with like.
    """

    heads: tuple[str, ...]
    input_ids: Tensor
    seq_offsets: Tensor
    prompt_len: Tensor
    resp_offsets: Tensor
    advantages: Tensor
    loss_mask: Tensor
    vt_row: Tensor
    vt_pos: Tensor
    vt_head: Tensor
    vt_target: Tensor
    old_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    old_values: Tensor | None = None
    meta: dict = field(default_factory=dict)
    temperature: float = 1.0

    @property
    def num_rows(self) -> int:
        return int(self.prompt_len.numel())

    @property
    def seq_len(self) -> Tensor:
        """int64 [N]: prompt + response length of every row."""
        return self.seq_offsets[1:] - self.seq_offsets[:-1]

    @property
    def response_len(self) -> Tensor:
        return self.resp_offsets[1:] - self.resp_offsets[:-1]

    @property
    def num_tokens(self) -> int:
        """Masked (trained) response tokens."""
        return int(self.loss_mask.sum())

    def head_counts(self) -> Tensor:
        """int64 [len(heads)]: value targets per head."""
        return torch.bincount(self.vt_head, minlength=len(self.heads))

    def row(self, i: int) -> dict[str, Tensor]:
        """Row ``i`` unflattened (for inspection and tests)."""
        s0, s1 = int(self.seq_offsets[i]), int(self.seq_offsets[i + 1])
        r0, r1 = int(self.resp_offsets[i]), int(self.resp_offsets[i + 1])
        out = {
            "input_ids": self.input_ids[s0:s1],
            "prompt_len": self.prompt_len[i],
            "advantages": self.advantages[r0:r1],
            "loss_mask": self.loss_mask[r0:r1],
        }
        if self.old_logprobs is not None:
            out["old_logprobs"] = self.old_logprobs[r0:r1]
        if self.ref_logprobs is not None:
            out["ref_logprobs"] = self.ref_logprobs[r0:r1]
        return out


# ---------------------------------------------------------------------------------------------
# construction


def _ids(x, what: str, i: int) -> np.ndarray:
    if x is None:
        raise ValueError(f"turn {i} has no {what}; the rollout must record token ids")
    a = np.asarray(x)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"turn {i}: {what} must be a 1-D array of integer token ids")
    return a.astype(np.int64, copy=False)


def _offsets(lengths: np.ndarray) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=out[1:])
    return out


def build_sequence_batch(
    prompts: Sequence[Sequence[int] | np.ndarray],
    responses: Sequence[Sequence[int] | np.ndarray],
    heads: tuple[str, ...] = (),
) -> TrainBatch:
    """A batch of prompt/response rows with every response token trained and advantage 0
    (used by SFT, and as the skeleton :func:`build_train_batch` fills in)."""
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
    p = [_ids(x, "prompt_ids", i) for i, x in enumerate(prompts)]
    r = [_ids(x, "response_ids", i) for i, x in enumerate(responses)]
    plen = np.fromiter((len(x) for x in p), np.int64, len(p))
    rlen = np.fromiter((len(x) for x in r), np.int64, len(r))
    if (plen < 1).any():
        i = int(np.argmin(plen))
        raise ValueError(
            f"row {i} has an empty prompt; every row needs at least one prompt token (the "
            "log-prob of response token 0 and the value at position 0 are read after it)"
        )
    seqs = [np.concatenate([a, b]) for a, b in zip(p, r, strict=True)]
    flat = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    total_r = int(rlen.sum())
    empty_l = torch.zeros(0, dtype=torch.int64)
    return TrainBatch(
        heads=tuple(heads),
        input_ids=torch.from_numpy(flat.astype(np.int64)),
        seq_offsets=torch.from_numpy(_offsets(plen + rlen)),
        prompt_len=torch.from_numpy(plen),
        resp_offsets=torch.from_numpy(_offsets(rlen)),
        advantages=torch.zeros(total_r, dtype=torch.float32),
        loss_mask=torch.ones(total_r, dtype=torch.bool),
        vt_row=empty_l,
        vt_pos=empty_l.clone(),
        vt_head=empty_l.clone(),
        vt_target=torch.zeros(0, dtype=torch.float32),
    )


def build_train_batch(
    turns: Sequence[Turn],
    token_adv: TokenAdvantages,
    value_targets: Mapping[str, TurnValueTargets],
    heads: tuple[str, ...],
) -> TrainBatch:
    """Assemble the batch from the layout's real turns (row-major order, as
    :func:`hiper.algos.tokens.token_advantages` and ``turn_value_targets`` produced them).

    ``token_adv`` gives the advantage and loss mask of every response token (row i's tokens are
    ``offsets[i]:offsets[i+1]``); ``value_targets[head]`` gives (row, response position ``p``,
    target) triples, converted here to absolute positions ``prompt_len + p - 1``.
    """
    heads = tuple(heads)
    n = len(turns)
    offs = np.asarray(token_adv.offsets, np.int64)
    if len(offs) != n + 1:
        raise ValueError(
            f"token advantages cover {len(offs) - 1} rows but {n} turns were given; pass exactly "
            "the layout's real turns in row-major order"
        )
    batch = build_sequence_batch(
        [t.prompt_ids for t in turns], [t.response_ids for t in turns], heads
    )
    rlen = batch.response_len.numpy()
    if not np.array_equal(np.diff(offs), rlen):
        bad = int(np.flatnonzero(np.diff(offs) != rlen)[0])
        raise ValueError(
            f"row {bad}: token advantages have {int(np.diff(offs)[bad])} tokens but the turn has "
            f"{int(rlen[bad])} response ids"
        )
    adv = np.asarray(token_adv.advantages, np.float32)
    mask = np.asarray(token_adv.loss_mask, bool)
    if adv.shape != (offs[-1],) or mask.shape != (offs[-1],):
        raise ValueError("token advantages / loss mask must be flat arrays of offsets[-1] tokens")
    if not np.isfinite(adv[mask]).all():
        raise ValueError("token advantages contain NaN or inf on trained tokens")
    batch.advantages = torch.from_numpy(np.where(mask, adv, 0.0).astype(np.float32))
    batch.loss_mask = torch.from_numpy(mask.copy())

    unknown = sorted(set(value_targets) - set(heads))
    if unknown:
        raise ValueError(f"value targets for head(s) {unknown} not in the model's heads {heads}")
    plen = batch.prompt_len.numpy()
    rows_l, pos_l, head_l, tgt_l = [], [], [], []
    for h, name in enumerate(heads):
        vt = value_targets.get(name)
        if vt is None:
            continue
        rows = np.asarray(vt.rows, np.int64)
        pos = np.asarray(vt.positions, np.int64)
        tgt = np.asarray(vt.targets, np.float32)
        if not (rows.shape == pos.shape == tgt.shape):
            raise ValueError(f"head {name!r}: rows, positions and targets differ in length")
        if rows.size and (rows.min() < 0 or rows.max() >= n):
            raise ValueError(f"head {name!r}: value-target rows must lie in [0, {n})")
        if ((pos < 0) | (pos > rlen[rows])).any():
            raise ValueError(
                f"head {name!r}: response positions must lie in [0, response length] of their row"
            )
        if not np.isfinite(tgt).all():
            raise ValueError(f"head {name!r}: value targets contain NaN or inf")
        rows_l.append(rows)
        pos_l.append(plen[rows] + pos - 1)
        head_l.append(np.full(rows.size, h, np.int64))
        tgt_l.append(tgt)
    if rows_l:
        batch.vt_row = torch.from_numpy(np.concatenate(rows_l))
        batch.vt_pos = torch.from_numpy(np.concatenate(pos_l))
        batch.vt_head = torch.from_numpy(np.concatenate(head_l))
        batch.vt_target = torch.from_numpy(np.concatenate(tgt_l))
    return batch


# ---------------------------------------------------------------------------------------------
# row selection


def _ragged_index(offsets: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
    """Flat indices of the given rows' segments (in ``rows`` order) and the new offsets."""
    starts = offsets[rows]
    lens = offsets[rows + 1] - starts
    new_off = torch.zeros(rows.numel() + 1, dtype=torch.int64)
    torch.cumsum(lens, 0, out=new_off[1:])
    total = int(new_off[-1])
    seg = torch.repeat_interleave(torch.arange(rows.numel()), lens, output_size=total)
    idx = starts[seg] + (torch.arange(total) - new_off[:-1][seg])
    return idx, new_off


def select_rows(batch: TrainBatch, rows: Sequence[int] | Tensor) -> TrainBatch:
    """The batch restricted to ``rows`` (in that order; each row at most once, so nothing is
    ever counted twice)."""
    rows = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
    n = batch.num_rows
    if rows.numel() and (rows.min() < 0 or rows.max() >= n):
        raise ValueError(f"rows must lie in [0, {n})")
    if rows.unique().numel() != rows.numel():
        raise ValueError("rows must not repeat: a repeated turn would count twice")
    new_of_old = torch.full((n,), -1, dtype=torch.int64)
    new_of_old[rows] = torch.arange(rows.numel())
    seq_idx, seq_off = _ragged_index(batch.seq_offsets, rows)
    resp_idx, resp_off = _ragged_index(batch.resp_offsets, rows)
    vt_new = new_of_old[batch.vt_row]
    keep = vt_new >= 0
    return replace(
        batch,
        input_ids=batch.input_ids[seq_idx],
        seq_offsets=seq_off,
        prompt_len=batch.prompt_len[rows],
        resp_offsets=resp_off,
        advantages=batch.advantages[resp_idx],
        loss_mask=batch.loss_mask[resp_idx],
        old_logprobs=None if batch.old_logprobs is None else batch.old_logprobs[resp_idx],
        ref_logprobs=None if batch.ref_logprobs is None else batch.ref_logprobs[resp_idx],
        vt_row=vt_new[keep],
        vt_pos=batch.vt_pos[keep],
        vt_head=batch.vt_head[keep],
        vt_target=batch.vt_target[keep],
        old_values=None if batch.old_values is None else batch.old_values[keep],
        meta=dict(batch.meta),
    )


# ---------------------------------------------------------------------------------------------
# micro-batches


@dataclass
class MicroBatch:
    """A right-padded slice of B rows of a :class:`TrainBatch`, aligned to absolute positions.

    ``input_ids`` / ``attention_mask`` int64 [B, L] (padding: ``pad_id`` with mask 0);
    ``response_mask`` bool [B, L] (every response token), ``loss_mask`` bool [B, L] (trained
    tokens), ``advantages`` float32 [B, L], ``old_logprobs`` / ``ref_logprobs`` float32 [B, L] or
    None (zero outside the response). Value targets: ``vt_b`` (row in this micro-batch), ``vt_pos``
    (absolute position), ``vt_head``, ``vt_target``, ``old_values`` ([M'] each).
    ``rows`` are the batch rows, ``resp_index`` the flat response indices of the batch in the order
    of ``response_mask.nonzero()`` (row-major), ``vt_index`` the indices of the value targets.
    """

    rows: Tensor
    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    loss_mask: Tensor
    advantages: Tensor
    old_logprobs: Tensor | None
    ref_logprobs: Tensor | None
    vt_b: Tensor
    vt_pos: Tensor
    vt_head: Tensor
    vt_target: Tensor
    old_values: Tensor | None
    resp_index: Tensor
    vt_index: Tensor

    def to(self, device: torch.device | str) -> MicroBatch:
        kw = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            kw[name] = v.to(device) if isinstance(v, Tensor) else v
        return MicroBatch(**kw)


def _group_rows(
    lengths: list[int], max_rows: int | None, max_tokens: int | None
) -> Iterator[list[int]]:
    cur: list[int] = []
    longest = 0
    for i, n in enumerate(lengths):
        if cur:
            too_many = max_rows is not None and len(cur) + 1 > max_rows
            too_long = max_tokens is not None and (len(cur) + 1) * max(longest, n) > max_tokens
            if too_many or too_long:
                yield cur
                cur, longest = [], 0
        cur.append(i)
        longest = max(longest, n)
    if cur:
        yield cur


def _scatter(
    src: Tensor | None,
    idx: Tensor,
    row: Tensor,
    col: Tensor,
    shape: tuple[int, int],
    dtype: torch.dtype,
) -> Tensor | None:
    """Flat response values ``src[idx]`` placed at ``[row, col]`` of a zero [B, L] tensor."""
    if src is None:
        return None
    out = torch.zeros(shape, dtype=dtype)
    out[row, col] = src[idx].to(dtype)
    return out


def micro_batches(
    batch: TrainBatch,
    max_rows: int | None = None,
    max_tokens: int | None = None,
    pad_id: int = 0,
) -> Iterator[MicroBatch]:
    """Cut ``batch`` into right-padded micro-batches of consecutive rows.

    A micro-batch holds at most ``max_rows`` rows and at most ``max_tokens`` padded tokens
    (rows x longest row); a single row longer than ``max_tokens`` still forms its own micro-batch.
    Both None: one micro-batch with every row.
    """
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be >= 1, got {max_rows}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    seq_len = batch.seq_len
    resp_len = batch.response_len
    # value targets grouped by row once, so each micro-batch finds its own in O(its size)
    vt_order = torch.argsort(batch.vt_row, stable=True)
    vt_count = torch.bincount(batch.vt_row, minlength=batch.num_rows)
    vt_off = torch.zeros(batch.num_rows + 1, dtype=torch.int64)
    torch.cumsum(vt_count, 0, out=vt_off[1:])
    for group in _group_rows(seq_len.tolist(), max_rows, max_tokens):
        rows = torch.tensor(group, dtype=torch.int64)
        b = rows.numel()
        lens = seq_len[rows]
        width = int(lens.max())
        seq_idx, seq_off = _ragged_index(batch.seq_offsets, rows)
        seg = torch.repeat_interleave(torch.arange(b), lens)
        col = torch.arange(seq_idx.numel()) - seq_off[:-1][seg]
        ids = torch.full((b, width), int(pad_id), dtype=torch.int64)
        ids[seg, col] = batch.input_ids[seq_idx]
        att = torch.zeros((b, width), dtype=torch.int64)
        att[seg, col] = 1

        resp_idx, resp_off = _ragged_index(batch.resp_offsets, rows)
        rseg = torch.repeat_interleave(torch.arange(b), resp_len[rows])
        rcol = batch.prompt_len[rows][rseg] + (torch.arange(resp_idx.numel()) - resp_off[:-1][rseg])

        response_mask = torch.zeros((b, width), dtype=torch.bool)
        response_mask[rseg, rcol] = True

        vt_sorted, _ = _ragged_index(vt_off, rows)
        vt_index = vt_order[vt_sorted]
        vt_b = torch.repeat_interleave(torch.arange(b), vt_count[rows])
        yield MicroBatch(
            rows=rows,
            input_ids=ids,
            attention_mask=att,
            response_mask=response_mask,
            loss_mask=_scatter(batch.loss_mask, resp_idx, rseg, rcol, (b, width), torch.bool),
            advantages=_scatter(batch.advantages, resp_idx, rseg, rcol, (b, width), torch.float32),
            old_logprobs=_scatter(
                batch.old_logprobs, resp_idx, rseg, rcol, (b, width), torch.float32
            ),
            ref_logprobs=_scatter(
                batch.ref_logprobs, resp_idx, rseg, rcol, (b, width), torch.float32
            ),
            vt_b=vt_b,
            vt_pos=batch.vt_pos[vt_index],
            vt_head=batch.vt_head[vt_index],
            vt_target=batch.vt_target[vt_index],
            old_values=None if batch.old_values is None else batch.old_values[vt_index],
            resp_index=resp_idx,
            vt_index=vt_index,
        )


# ---------------------------------------------------------------------------------------------
# old / reference log-probs and old values


def first_response_column(response_mask: Tensor) -> int:
    """The first column holding a response token in a right-padded [B, L] batch (the shortest
    prompt's length; L when there is none): what ``PolicyModel.forward(logprobs_from=...)``
    needs to score every response token and skip the prompts' logits."""
    cols = response_mask.any(dim=0).nonzero()
    return int(cols[0]) if cols.numel() else int(response_mask.shape[1])


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def pad_token_id(model) -> int:
    tok = getattr(model, "tokenizer", None)
    pid = getattr(tok, "pad_token_id", None) if tok is not None else None
    return 0 if pid is None else int(pid)


@torch.no_grad()
def fill_from_forward(
    batch: TrainBatch,
    model,
    micro_batch_size: int | None = None,
    *,
    reference: bool | None = None,
    values: bool = True,
    max_tokens: int | None = None,
    logprobs: bool = True,
    dist: Dist = SINGLE,
) -> TrainBatch:
    """Fill ``old_logprobs`` (response tokens, when ``logprobs``), ``ref_logprobs``
    (``model.reference_logprobs``, when ``reference``; None: when the model has one, per its
    ``has_reference``) and ``old_values`` (each value target's head at its position, when
    ``values`` and the batch has targets), micro-batched, without gradients, all at
    ``batch.temperature``. ``logprobs=False`` keeps the ``old_logprobs`` already set (the
    sampler's) and runs the policy only where values need it (a separate critic runs alone).
    The model runs in eval mode (its previous mode is restored). Returns ``batch`` (modified in
    place).

    ``dist`` (a :class:`~hiper.train.distributed.Dist`): every rank passes the same batch, runs
    its share of the micro-batches and the results are summed across ranks, so every rank ends
    with the single-process tensors bit for bit (each entry comes from one rank, zeros from the
    others)."""
    if not logprobs and batch.old_logprobs is None:
        raise ValueError("logprobs=False keeps the batch's old_logprobs, but none are set")
    if reference is None:
        reference = bool(getattr(model, "has_reference", True))
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        old = torch.zeros(batch.resp_offsets[-1].item(), dtype=torch.float32)
        ref = old.clone() if reference else None
        want_values = values and batch.vt_row.numel() > 0
        old_v = torch.zeros(batch.vt_row.numel(), dtype=torch.float32) if want_values else None
        micros = micro_batches(batch, micro_batch_size, max_tokens, pad_token_id(model))
        fsdp = dist.world_size > 1 and is_sharded(model)
        # keep False: FSDP2's padding, a forward run like the others' whose results are dropped
        for mb, keep in dist.my_work(micros, equal=fsdp):
            ids = mb.input_ids.to(device)
            att = mb.attention_mask.to(device)
            rm = mb.response_mask.to(device)
            first = first_response_column(mb.response_mask)  # no logits for the prompts
            if logprobs:
                out = model(
                    ids,
                    att,
                    with_values=want_values,
                    with_entropy=False,
                    temperature=batch.temperature,
                    logprobs_from=first,
                )
                if keep:
                    old[mb.resp_index] = out.logprobs[rm].float().cpu()
                values_out = out.values
            elif want_values:
                values_out = model.values(ids, att)
            if ref is not None:
                ref_lp = model.reference_logprobs(
                    ids, att, temperature=batch.temperature, logprobs_from=first
                )
                if keep:
                    ref[mb.resp_index] = ref_lp[rm].float().cpu()
            if old_v is not None and keep and mb.vt_index.numel():
                if values_out is None:
                    raise ValueError("the model returned no values but the batch has targets")
                v = values_out[mb.vt_b.to(device), mb.vt_pos.to(device), mb.vt_head.to(device)]
                old_v[mb.vt_index] = v.float().cpu()
        dist.sum_([old if logprobs else None, ref, old_v])
        if logprobs:
            batch.old_logprobs = old
        if ref is not None:
            batch.ref_logprobs = ref
        if old_v is not None:
            batch.old_values = old_v
    finally:
        model.train(was_training)
    return batch
