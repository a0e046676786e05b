"""``HFEngine``: batched token-in/token-out sampling with Hugging Face ``generate``.

Prompts are token id lists (see :func:`chat_prompt_ids`); they are left-padded into one batch
(built here, independent of ``tokenizer.padding_side``) with an attention mask, so every row sees
exactly its own prompt. Each :class:`Generation` holds the sampled ids (up to and including the
first stop token), the decoded text, ``finish`` (``"stop"`` or ``"length"``) and the log-probability
of every sampled id under the distribution it was actually sampled from.

That distribution is pure temperature + top-p: the model's own ``generation_config`` sampling
settings (``top_k``, ``repetition_penalty``, ``min_p``, ... which chat checkpoints often set) are
overridden, because the trainer re-scores responses with a plain forward pass and any extra
processor would make rollouts silently off-policy. Temperature and nucleus filtering are applied
by a logits processor of this module (with ``transformers``' own ``TemperatureLogitsWarper`` and
``TopPLogitsWarper``), which also records the log-softmax of the final scores and, one step
later, gathers the id that was sampled from them. So only one ``[B, vocab]`` float32 tensor is
kept at a time instead of ``output_scores``' ``[steps, B, vocab]``. Greedy decoding reports the
log-softmax of the raw logits.

``seed`` makes sampling reproducible (the global torch RNG is forked, seeded and restored, so the
caller's RNG stream is untouched); the model is put in eval mode for the call and its previous
mode restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

__all__ = ["Generation", "HFEngine", "chat_prompt_ids"]


@dataclass
class Generation:
    """One sampled response: ``ids`` (int64, including the stop token when one was produced),
    ``logprobs`` (float32, one per id), ``text`` (``decode(ids, skip_special_tokens=True)``) and
    ``finish`` (``"stop"``: a stop token ended it; ``"length"``: ``max_new_tokens`` did)."""

    ids: np.ndarray
    logprobs: np.ndarray
    text: str
    finish: Literal["stop", "length"]


def chat_prompt_ids(tokenizer: Any, user_text: str, *, system: str | None = None) -> list[int]:
    """Token ids of a one-message chat (``user_text``, optionally after a ``system`` message)
    rendered with the tokenizer's chat template, ending with the assistant generation prompt."""
    messages = [{"role": "user", "content": user_text}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    out = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(out, Mapping) or hasattr(out, "keys"):
        out = out["input_ids"]
    return [int(i) for i in out]


class _SamplingRecorder(LogitsProcessor):
    """Applies temperature/top-p and records log-probs of the ids sampled from the result.

    ``generate`` calls a logits processor once per new token with ``input_ids`` ending in the
    previous step's sampled id, so step ``k``'s id is gathered from step ``k``'s log-softmax when
    step ``k + 1`` starts; :meth:`collect` handles the final step.
    """

    def __init__(self, temperature: float, top_p: float, greedy: bool) -> None:
        self.warpers: list[LogitsProcessor] = []
        if not greedy:
            if temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(temperature))
            if top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(top_p, min_tokens_to_keep=1))
        self.last: torch.Tensor | None = None
        self.gathered: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.last is not None:
            self.gathered.append(self.last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        self.last = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def collect(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """``[B, n]`` log-probs of the ``n`` ids ``generate`` returned (extra steps it undid are
        dropped)."""
        n = new_tokens.shape[1]
        steps = list(self.gathered[:n])
        if len(steps) < n and self.last is not None:
            steps.append(self.last.gather(-1, new_tokens[:, len(steps) : len(steps) + 1])[:, 0])
        if len(steps) != n:
            raise RuntimeError(f"recorded {len(steps)} sampling steps for {n} generated tokens")
        if not steps:
            return new_tokens.new_zeros(new_tokens.shape, dtype=torch.float32)
        return torch.stack(steps, dim=1)


class HFEngine:
    """Sample responses from a Hugging Face causal LM (or a ``peft`` model wrapping one).

    ``stop_token_ids`` default to the tokenizer's eos id plus the model generation config's eos
    ids. ``max_batch_size`` (None: everything at once) splits large prompt lists into several
    ``generate`` calls.
    """

    def __init__(
        self,
        lm: torch.nn.Module,
        tokenizer: Any,
        *,
        max_new_tokens: int = 512,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_token_ids: Iterable[int] | None = None,
        max_batch_size: int | None = None,
    ) -> None:
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if not isinstance(temperature, int | float) or temperature <= 0:
            raise ValueError(
                f"temperature must be > 0 (use greedy=True for argmax), got {temperature!r}"
            )
        if not isinstance(top_p, int | float) or not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
        if max_batch_size is not None and max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}")
        self.lm = lm
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_batch_size = max_batch_size
        if stop_token_ids is None:
            stop_token_ids = _default_stop_ids(lm, tokenizer)
        self.stop_token_ids: tuple[int, ...] = tuple(dict.fromkeys(int(i) for i in stop_token_ids))
        if not self.stop_token_ids:
            raise ValueError(
                "no stop token ids: the tokenizer has no eos token; pass stop_token_ids"
            )
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_token_id: int = int(pad) if pad is not None else self.stop_token_ids[0]

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def generate(
        self, prompts: Sequence[Sequence[int]], *, greedy: bool = False, seed: int | None = None
    ) -> list[Generation]:
        """One :class:`Generation` per prompt (token id lists), in order."""
        rows = [_as_ids(p, i) for i, p in enumerate(prompts)]
        if not rows:
            return []
        step = self.max_batch_size or len(rows)
        was_training = self.lm.training
        self.lm.eval()
        try:
            with torch.inference_mode(), _seeded(seed, self.device):
                out: list[Generation] = []
                for start in range(0, len(rows), step):
                    out += self._generate_batch(rows[start : start + step], greedy)
                return out
        finally:
            self.lm.train(was_training)

    # ------------------------------------------------------------------ internals

    def _generate_batch(self, rows: list[list[int]], greedy: bool) -> list[Generation]:
        device = self.device
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, width - len(r) :] = 1
        recorder = _SamplingRecorder(self.temperature, self.top_p, greedy)
        out = self.lm.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            logits_processor=LogitsProcessorList([recorder]),
            max_new_tokens=self.max_new_tokens,
            eos_token_id=list(self.stop_token_ids),
            pad_token_id=self.pad_token_id,
            return_dict_in_generate=True,
            use_cache=True,
            # every process generates for its own episodes; transformers would otherwise keep
            # the ranks of an FSDP-sharded model in step, which hiper's callers do not need (they
            # gather the weights first: hiper.train.distributed.full_parameters)
            synced_gpus=False,
            **_neutral_sampling(greedy),
        )
        new = out.sequences[:, width:]
        logprobs = recorder.collect(new).float().cpu().numpy()
        new = new.cpu().numpy().astype(np.int64)
        stops = np.isin(new, np.asarray(self.stop_token_ids, dtype=np.int64))
        gens = []
        for i in range(len(rows)):
            hits = np.flatnonzero(stops[i])
            if hits.size:
                n, finish = int(hits[0]) + 1, "stop"
            else:
                n, finish = new.shape[1], "length"
            ids = new[i, :n].copy()
            text = self.tokenizer.decode(ids.tolist(), skip_special_tokens=True)
            gens.append(Generation(ids, logprobs[i, :n].astype(np.float32), text, finish))
        return gens


def _neutral_sampling(greedy: bool) -> dict[str, Any]:
    """Generation settings that switch off every processor besides this module's own.

    Values left unset would be filled from the model's ``generation_config`` (chat checkpoints
    ship e.g. ``top_k=20, repetition_penalty=1.05``) or from ``transformers``' defaults
    (``top_k=50``). Greedy decoding adds no warpers, so only the penalties are switched off there.
    """
    settings: dict[str, Any] = {
        "do_sample": not greedy,
        "num_beams": 1,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
        "min_new_tokens": 0,
        "renormalize_logits": False,
    }
    if not greedy:
        settings.update(
            temperature=1.0, top_k=0, top_p=1.0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0
        )
    return settings


def _default_stop_ids(lm: torch.nn.Module, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None:
        ids.append(int(eos))
    config = getattr(lm, "generation_config", None)
    extra = getattr(config, "eos_token_id", None) if config is not None else None
    if isinstance(extra, int):
        ids.append(extra)
    elif extra is not None:
        ids += [int(i) for i in extra]
    return ids


def _as_ids(prompt: Sequence[int], index: int) -> list[int]:
    ids = [int(i) for i in (prompt.tolist() if isinstance(prompt, np.ndarray) else prompt)]
    if not ids:
        raise ValueError(f"prompt {index} is empty; every prompt needs at least one token")
    return ids


class _seeded:
    """Context: fork the torch RNG (CPU and the model's CUDA device) and seed it; no-op for None."""

    def __init__(self, seed: int | None, device: torch.device) -> None:
        self.seed = seed
        self.devices = [device] if device.type == "cuda" else []
        self._fork = None

    def __enter__(self) -> None:
        if self.seed is None:
            return
        self._fork = torch.random.fork_rng(devices=self.devices)
        self._fork.__enter__()
        torch.manual_seed(self.seed)

    def __exit__(self, *exc: object) -> None:
        if self._fork is not None:
            self._fork.__exit__(*exc)
            self._fork = None
