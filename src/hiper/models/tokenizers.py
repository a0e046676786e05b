"""Train small tokenizers locally on a corpus, in the layouts real model families use.

Nothing is downloaded: these are real ``tokenizers`` models wrapped as ``PreTrainedTokenizerFast``,
saved with ``save_pretrained`` and loaded back with ``AutoTokenizer.from_pretrained`` exactly like a
hub tokenizer. Three families:

- ``byte_level_bpe``: GPT-2/Qwen2-style byte-level BPE with Qwen2's pre-tokenisation pattern and
  ChatML special tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``) plus a ChatML template.
- ``sentencepiece_bpe``: Llama/Mistral-style BPE over "▁"-marked words (Metaspace) with byte fallback.
- ``wordpiece``: BERT-style WordPiece with "##" continuation pieces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

Family = Literal["byte_level_bpe", "sentencepiece_bpe", "wordpiece"]
FAMILIES: tuple[str, ...] = ("byte_level_bpe", "sentencepiece_bpe", "wordpiece")

# Qwen2's split pattern: contractions, letter runs with one leading non-letter, single digits,
# punctuation runs with trailing newlines, newline runs, and whitespace.
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(
    corpus: Iterable[str], family: Family = "byte_level_bpe", vocab_size: int = 2000
) -> PreTrainedTokenizerFast:
    """Fit a tokenizer of ``family`` to ``corpus`` (deterministic for the same corpus)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tokenizer family {family!r}; expected one of {FAMILIES}")
    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (bytes + specials), got {vocab_size}")
    if family == "byte_level_bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=CHATML_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer)
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>"],
            chat_template=CHATML_TEMPLATE,
        )
    if family == "sentencepiece_bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        tok.normalizer = normalizers.Sequence(
            [normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]
        )
        tok.decoder = decoders.Sequence(
            [
                decoders.Replace("▁", " "),
                decoders.ByteFallback(),
                decoders.Fuse(),
                decoders.Strip(" ", 1, 0),
            ]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size - 256,
            special_tokens=["<unk>", "<s>", "</s>"],
            show_progress=False,
        )
        tok.train_from_iterator(corpus, trainer)
        # byte-fallback pieces live in the model vocabulary (not as added tokens), as in Llama
        learned = json.loads(tok.to_str())["model"]
        vocab = dict(learned["vocab"])
        for i in range(256):
            vocab.setdefault(f"<0x{i:02X}>", len(vocab))
        merges = [
            tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]
        ]
        tok.model = models.BPE(
            vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
            pad_token="</s>",
        )
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[SEP]"], show_progress=False
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="[SEP]"
    )
