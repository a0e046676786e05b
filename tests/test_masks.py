"""Token spans of parsed blocks: hand-built shared-token cases, and agreement with slow references
on real locally-trained tokenizers (byte-level BPE with Qwen2 pre-tokenisation, SentencePiece-style
BPE with byte fallback, WordPiece)."""

from __future__ import annotations

import random

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from hiper.models.tokenizers import train_tokenizer
from hiper.protocol import parse
from hiper.protocol.masks import BLOCKS, TokenAligner, byte_length_table, value_positions

# GPT-2 byte <-> printable-character map (spelled out so the test does not depend on the library's)
_PRINTABLE = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
)


def _byte_to_char() -> dict[int, str]:
    cs = _PRINTABLE[:]
    extra = 0
    for b in range(256):
        if b not in _PRINTABLE:
            cs.append(256 + extra)
            extra += 1
    return dict(
        zip(_PRINTABLE + [b for b in range(256) if b not in _PRINTABLE], map(chr, cs), strict=True)
    )


B2C = _byte_to_char()
C2B = {c: b for b, c in B2C.items()}


def spell(text: str) -> str:
    return "".join(B2C[b] for b in text.encode("utf-8"))


def hand_tokenizer(pieces: list[str]) -> tuple[PreTrainedTokenizerFast, list[int]]:
    """A byte-level tokenizer whose vocabulary holds exactly ``pieces`` (plus single bytes)."""
    vocab = {B2C[b]: b for b in range(256)}
    ids = []
    for p in pieces:
        ids.append(vocab.setdefault(spell(p), len(vocab)))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.decoder = decoders.ByteLevel()
    eos = len(vocab)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    fast.add_special_tokens({"eos_token": "<|im_end|>"})
    assert fast.convert_tokens_to_ids("<|im_end|>") == eos
    return fast, ids


CORPUS = [
    "<switch>SWITCH</switch>\n<subgoal>find the apple</subgoal>\n<action>go to countertop 1</action>",
    "<switch>KEEP</switch>\n<subgoal>find the apple</subgoal>\n<action>take apple 1 from countertop 1</action>",
    "<switch>SWITCH</switch>\n<subgoal>heat the apple</subgoal>\n<action>heat apple 1 with microwave 1</action>",
    "<switch>KEEP</switch><subgoal>put it in the fridge</subgoal><action>move apple 1 to fridge 1</action>",
    "<think>I should open the drawer first.</think>\n<action>open drawer 2</action>",
    "You are in the middle of a room. Looking quickly around you, you see a cabinet 1, a desk 2.",
    "search[red shoes size 9] click[b0a1c2] buy now < prev next >",
    "café — naïve résumé 日本語 emoji 🙂 done",
] * 20


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    out = {}
    for family in ("byte_level_bpe", "sentencepiece_bpe", "wordpiece"):
        tok = train_tokenizer(CORPUS, family, vocab_size=600)
        path = tmp_path_factory.mktemp(family)
        tok.save_pretrained(path)
        out[family] = AutoTokenizer.from_pretrained(path)  # the real hub loading path
    return out


def test_shared_tokens_follow_the_majority_rule():
    # token 2 "</switch>\n<sub": 9 switch bytes + 1 gap + 4 subgoal bytes -> switch
    # token 5 "goal>\n<action>go": 5 subgoal bytes + 1 gap + 10 action bytes -> action
    pieces = [
        "<switch>",
        "KEEP",
        "</switch>\n<sub",
        "goal>find",
        " it</sub",
        "goal>\n<action>go",
        "</action>",
    ]
    tok, ids = hand_tokenizer(pieces)
    text = tok.decode(ids, skip_special_tokens=True)
    assert text == "".join(pieces)
    d = parse(text)
    assert d.valid and d.switch == "KEEP" and d.subgoal == "find it" and d.action == "go"
    ts = TokenAligner(tok).align([[*ids, tok.eos_token_id]], [text], [d])
    assert not ts.exact[0]
    assert ts.as_dicts()[0] == {"switch": (0, 3), "subgoal": (3, 5), "action": (5, 7)}
    # V^L: the prefix must hold all of "</subgoal>", whose last byte is in token 5
    assert value_positions(ts)["after_subgoal"].tolist() == [6]
    # EOS (a skipped special token, 0 bytes) is "other"
    assert ts.labels.tolist() == [1, 1, 1, 2, 2, 3, 3, 0]


def test_exact_ties_go_to_no_block_and_small_blocks_can_vanish():
    # "h>\n<s": 2 switch bytes, 1 gap, 2 subgoal bytes -> no strict majority -> other
    pieces = ["<switch>KEEP</switc", "h>\n<s", "ubgoal>x</subgoal>", "<action>a</action>"]
    tok, ids = hand_tokenizer(pieces)
    text = "".join(pieces)
    ts = TokenAligner(tok).align([ids], [text], [parse(text)])
    assert ts.as_dicts()[0] == {"switch": (0, 1), "subgoal": (2, 3), "action": (3, 4)}
    assert ts.labels.tolist() == [1, 0, 2, 3]


def test_fast_path_matches_exact_path_on_every_family(tokenizers):
    rng = random.Random(0)
    texts = []
    for _ in range(60):
        parts = [rng.choice(CORPUS) for _ in range(rng.randint(1, 3))]
        text = rng.choice(["", " ", "\n"]).join(parts)
        if rng.random() < 0.3:  # damage it
            cut = rng.randrange(len(text))
            text = (
                text[:cut]
                + rng.choice(["<action>", "</subgoal>", "", " é ", "<switch>"])
                + text[cut:]
            )
        texts.append(text)
    for family, tok in tokenizers.items():
        ids = [tok.encode(t, add_special_tokens=False) for t in texts]
        decoded = [tok.decode(i, skip_special_tokens=True) for i in ids]
        decisions = [parse(t) for t in decoded]
        fast = TokenAligner(tok).align(ids, decoded, decisions)
        exact = TokenAligner(tok, exact=True).align(ids, decoded, decisions)
        assert exact.exact.all()
        if family == "wordpiece":  # decode inserts spaces between pieces: no length table
            assert byte_length_table(tok) is None and fast.exact.all()
        else:  # byte-level and SentencePiece-style both have a per-token length table
            assert byte_length_table(tok) is not None
            assert not fast.exact.any(), f"{family}: valid UTF-8 rows must take the fast path"
        ascii_rows = np.array([t.isascii() for t in decoded])
        same = (fast.spans == exact.spans).all(axis=(1, 2))
        # bytes and characters coincide on ASCII rows, so both rules must agree exactly there
        assert same[ascii_rows].all(), family
        vf, ve = value_positions(fast), value_positions(exact)
        assert (vf["after_subgoal"][ascii_rows] == ve["after_subgoal"][ascii_rows]).all()


def _reference_byte_spans(tok, ids, text, decision):
    """Per-token Python reference for byte-level tokenizers: exact byte spans of each token."""
    table = byte_length_table(tok)
    ends = np.cumsum([table[i] for i in ids])
    starts = np.concatenate(([0], ends[:-1]))
    out = {}
    for name, (cs, ce) in decision.spans.items():
        bs, be = len(text[:cs].encode()), len(text[:ce].encode())
        inside = [
            j
            for j, (s, e) in enumerate(zip(starts, ends, strict=True))
            if 2 * max(0, min(e, be) - max(s, bs)) > (e - s)
        ]
        if inside:
            assert inside == list(range(inside[0], inside[-1] + 1))  # contiguous
            out[name] = (inside[0], inside[-1] + 1)
    return out


def test_byte_level_fast_path_matches_per_token_reference_with_unicode(tokenizers):
    tok = tokenizers["byte_level_bpe"]
    rng = random.Random(1)
    words = ["apple", "é", "日本", "🙂", "—", "go to", "desk 1", " ", "\n"]
    texts = []
    for _ in range(80):
        sg = "".join(rng.choice(words) for _ in range(rng.randint(1, 6)))
        ac = "".join(rng.choice(words) for _ in range(rng.randint(1, 4)))
        sep = rng.choice(["", "\n", " "])
        texts.append(
            f"<switch>{rng.choice(['KEEP', 'SWITCH'])}</switch>{sep}<subgoal>{sg}</subgoal>{sep}<action>{ac}</action>"
        )
    ids = [[*tok.encode(t, add_special_tokens=False), tok.eos_token_id] for t in texts]
    decoded = [tok.decode(i, skip_special_tokens=True) for i in ids]
    assert decoded == texts
    decisions = [parse(t) for t in decoded]
    ts = TokenAligner(tok).align(ids, decoded, decisions)
    assert not ts.exact.any()
    for i, d in enumerate(ts.as_dicts()):
        assert d == _reference_byte_spans(tok, ids[i], decoded[i], decisions[i])


def test_invalid_utf8_rows_take_the_exact_fallback(tokenizers):
    tok = tokenizers["byte_level_bpe"]
    good = "<switch>SWITCH</switch><subgoal>heat é</subgoal><action>go 日本</action>"
    ids = tok.encode(good, add_special_tokens=False)
    # cut inside the multi-byte "本": the decode shows U+FFFD, byte counts no longer match text
    cut = next(
        ids[:k]
        for k in range(len(ids), 0, -1)
        if "\ufffd" in tok.decode(ids[:k], skip_special_tokens=True)
    )
    text = tok.decode(cut, skip_special_tokens=True)
    assert "\ufffd" in text
    d = parse(text)
    ts = TokenAligner(tok).align([ids, cut], [good, text], [parse(good), d])
    assert ts.exact.tolist() == [False, True]
    ref = TokenAligner(tok, exact=True).align([cut], [text], [d])
    assert (ts.spans[1] == ref.spans[0]).all()
    assert ts.as_dicts()[1]["subgoal"] == ts.as_dicts()[0]["subgoal"]


def test_spans_cover_their_blocks_on_random_token_soup(tokenizers):
    """Random id sequences (any garbage a policy may emit) never break alignment invariants."""
    rng = np.random.default_rng(2)
    for tok in tokenizers.values():
        vocab = len(tok)
        ids = [rng.integers(0, vocab, size=rng.integers(0, 60)).tolist() for _ in range(40)]
        texts = [tok.decode(i, skip_special_tokens=True) for i in ids]
        decisions = [parse(t) for t in texts]
        ts = TokenAligner(tok).align(ids, texts, decisions)
        lens = ts.lengths
        for i in range(len(ids)):
            prev_end = 0
            for k, _ in enumerate(BLOCKS):
                s, e = ts.spans[i, k]
                assert 0 <= s <= e <= lens[i]
            order = sorted((s, e) for s, e in ts.spans[i].tolist() if e > s)
            for s, e in order:  # disjoint
                assert s >= prev_end
                prev_end = e
        vp = value_positions(ts)["after_subgoal"]
        assert ((vp >= 0) & (vp <= lens)).all()


def test_empty_and_mismatched_inputs():
    tok, ids = hand_tokenizer(["<action>a</action>"])
    ts = TokenAligner(tok).align([[]], [""], [parse("")])
    assert ts.spans.sum() == 0 and ts.lengths.tolist() == [0]
    assert value_positions(ts)["after_subgoal"].tolist() == [0]
    with pytest.raises(ValueError, match="one text and one decision"):
        TokenAligner(tok).align([ids], [], [])
    with pytest.raises(ValueError, match="token ids must be >= 0"):
        TokenAligner(tok).align([[-1]], ["x"], [parse("x")])
    # ids past the tokenizer's vocabulary (padded embedding rows) decode to nothing
    ts = TokenAligner(tok).align(
        [[*ids, 10**5]], ["<action>a</action>"], [parse("<action>a</action>")]
    )
    assert not ts.exact[0] and ts.as_dicts()[0] == {"action": (0, 1)}


def test_sentencepiece_fast_path_handles_the_stripped_leading_space(tokenizers):
    tok = tokenizers["sentencepiece_bpe"]
    texts = [
        "  <switch>KEEP</switch> <subgoal>go</subgoal><action>look</action>",  # leading spaces
        "<switch>SWITCH</switch>\n<subgoal>find é</subgoal>\n<action>go to desk 1</action>",
        "Kx<switch>KEEP</switch><subgoal>a</subgoal><action>b</action>",  # byte-fallback start
        " ",
    ]
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    decoded = [tok.decode(i, skip_special_tokens=True) for i in ids]
    decisions = [parse(t) for t in decoded]
    fast = TokenAligner(tok).align(ids, decoded, decisions)
    exact = TokenAligner(tok, exact=True).align(ids, decoded, decisions)
    assert not fast.exact[:3].any()
    ascii_rows = [i for i, t in enumerate(decoded) if t.isascii()]
    assert (fast.spans[ascii_rows] == exact.spans[ascii_rows]).all()
    # random token soup: every row that took the fast path agrees with the exact path
    rng = np.random.default_rng(5)
    soup = [rng.integers(0, len(tok), size=rng.integers(1, 40)).tolist() for _ in range(60)]
    texts = [tok.decode(i, skip_special_tokens=True) for i in soup]
    ds = [parse(t) for t in texts]
    f = TokenAligner(tok).align(soup, texts, ds)
    e = TokenAligner(tok, exact=True).align(soup, texts, ds)
    rows = [i for i in range(len(soup)) if not f.exact[i] and texts[i].isascii()]
    assert rows, "some soup rows should take the fast path"
    assert (f.spans[rows] == e.spans[rows]).all()
    for i in rows:  # per-token ends agree too (characters == bytes on ASCII rows)
        lo, hi = f.offsets[i], f.offsets[i + 1]
        assert (f.ends[lo:hi] == e.ends[lo:hi]).all()
