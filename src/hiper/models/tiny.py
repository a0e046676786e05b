"""Tiny, locally built Qwen2-style causal LMs for tests, smoke runs and CPU benchmarks.

Nothing is downloaded: :func:`build_tiny_model` fits a byte-level BPE tokenizer (ChatML template,
eos ``<|im_end|>``, pad ``<|endoftext|>``; see :mod:`hiper.models.tokenizers`) to a corpus, builds a
randomly initialised ``Qwen2ForCausalLM`` and writes both with ``save_pretrained``. The folder then
loads with the ordinary ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``
exactly like a hub checkpoint, so everything downstream runs the real hub code path.

:func:`household_corpus` renders expert Plan–Execute demonstrations of the built-in ``household``
environment (all six task types and chains of 1..6 subtasks) into ChatML conversations (the prompt
of every turn from :func:`hiper.protocol.build_prompt` and the expert's response), which is what a
tokenizer for this domain should fit.

>>> from hiper.models.tiny import build_tiny_model, household_corpus
>>> path = build_tiny_model("/tmp/tiny", household_corpus())  # doctest: +SKIP
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

__all__ = ["build_tiny_model", "chatml_turn", "household_corpus"]

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"


def chatml_turn(user_text: str, response: str | None = None) -> str:
    """``user_text`` (and ``response``) framed exactly as the ChatML template renders them."""
    text = f"{IM_START}user\n{user_text}{IM_END}\n{IM_START}assistant\n"
    if response is not None:
        text += f"{response}{IM_END}\n"
    return text


def household_corpus(
    n_episodes: int = 200, seed: int = 0, *, history_len: int = 2, noise: float = 0.1
) -> list[str]:
    """One ChatML text per turn of ``n_episodes`` household expert demonstrations.

    Episodes cycle through the six task types and ``chain1`` .. ``chain6`` on the ``train`` split;
    task seeds are drawn from ``random.Random(seed)``. With probability ``noise`` a turn takes a
    random admissible action (the expert recovers; see :func:`~hiper.envs.household.expert_demo`),
    so the corpus also shows off-plan actions and observations. Each text is the Plan–Execute
    prompt (:func:`hiper.protocol.build_prompt`, ``family="household"``) wrapped in the
    ``<|im_start|>user\\n…<|im_end|>`` framing, followed by the expert response
    (``<switch>…</switch>\\n<subgoal>…</subgoal>\\n<action>…</action>``) and ``<|im_end|>``.
    Deterministic for the same arguments.
    """
    from hiper.envs import make_env
    from hiper.envs.household import MAX_CHAIN_DEPTH, TASK_TYPES, expert_demo
    from hiper.envs.household.tasks import task_id
    from hiper.protocol import PromptContext, build_prompt

    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 0:
        raise ValueError(f"n_episodes must be a non-negative integer, got {n_episodes!r}")
    kinds = [*TASK_TYPES, *(f"chain{k}" for k in range(1, MAX_CHAIN_DEPTH + 1))]
    rng = random.Random(seed)
    env = make_env("household")
    texts: list[str] = []
    for i in range(n_episodes):
        tid = task_id("train", kinds[i % len(kinds)], rng.randrange(1_000_000))
        demo = expert_demo(env, tid, noise=noise, rng=rng.randrange(2**31))
        history: list[tuple[str, str]] = []
        subgoal: str | None = None
        for t, step in enumerate(demo.steps):
            ctx = PromptContext(
                task=demo.task,
                observation=step.observation,
                history=history,
                step=t,
                subgoal=subgoal,
                admissible=step.admissible,
            )
            prompt = build_prompt(ctx, "household", "plan_execute", history_len=history_len)
            texts.append(chatml_turn(prompt, step.turn.text()))
            history.append((step.observation, step.turn.action))
            subgoal = step.turn.subgoal
    env.close()
    return texts


def build_tiny_model(
    out_dir: str | Path,
    corpus: Iterable[str],
    *,
    vocab_size: int = 1024,
    hidden_size: int = 128,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 4096,
) -> Path:
    """Fit a tokenizer to ``corpus``, build a random ``Qwen2ForCausalLM``, save both to ``out_dir``.

    The tokenizer is :func:`~hiper.models.tokenizers.train_tokenizer` (``byte_level_bpe``,
    ``vocab_size`` pieces including the three ChatML specials). The model's vocabulary is
    ``len(tokenizer)`` rounded up to a multiple of 64 (as real checkpoints pad it), embeddings are
    tied, ``intermediate_size`` defaults to ``4 * hidden_size`` and ``num_kv_heads`` to
    ``num_heads // 2`` when that divides evenly (grouped-query attention like Qwen2), else
    ``num_heads``. Weights come from ``torch.manual_seed(seed)`` (the caller's global RNG state is
    restored afterwards). The generation config carries eos ``<|im_end|>`` and pad
    ``<|endoftext|>``. The same arguments give byte-identical files. Returns ``Path(out_dir)``.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from hiper.models.tokenizers import train_tokenizer

    for name, value in (
        ("hidden_size", hidden_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    if (hidden_size // num_heads) % 2:
        raise ValueError(f"head dim {hidden_size // num_heads} must be even for rotary embeddings")
    if num_kv_heads is None:
        num_kv_heads = num_heads // 2 if num_heads % 2 == 0 else num_heads
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} is not divisible by num_kv_heads {num_kv_heads}")

    texts = list(corpus)
    if not texts:
        raise ValueError("corpus is empty; a tokenizer needs some text to fit")
    tokenizer = train_tokenizer(texts, "byte_level_bpe", vocab_size=vocab_size)
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    bos_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model_vocab = -(-len(tokenizer) // 64) * 64

    config = Qwen2Config(
        vocab_size=model_vocab,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        use_cache=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=pad_id
    )
    model.eval()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
