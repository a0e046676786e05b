"""Tiny, locally built Qwen2-style causal LMs for tests, smoke runs and CPU benchmarks.

Nothing is downloaded: :func:`build_tiny_model` fits a byte-level BPE tokenizer (ChatML template,
eos ``<|im_end|>``, pad ``<|endoftext|>``; see :mod:`hiper.models.tokenizers`) to a corpus, builds a
randomly initialised ``Qwen2ForCausalLM`` and writes both with ``save_pretrained``. The folder then
loads with the ordinary ``AutoModelForCausalLM.from_pretrained`` / ``AutoTokenizer.from_pretrained``
exactly like a hub checkpoint, so everything downstream runs the real hub code path.

The corpus is the caller's: training fits it to :func:`hiper.demos.household_corpus` (expert
demonstrations rendered as ChatML conversations), which is what a tokenizer for this domain should
fit. This package imports nothing else of hiper.

>>> from hiper.demos import household_corpus
>>> path = build_tiny_model("/tmp/tiny", household_corpus())  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["build_tiny_model"]


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
