"""Character spans of parsed blocks -> token spans, without decoding tokens one by one in Python.

For byte-level BPE tokenizers (GPT-2/Qwen family) every vocabulary entry decodes to a fixed number of
bytes, so a per-vocabulary byte-length table, one gather and one cumulative sum give the byte end of
every response token for a whole batch at once; block boundaries (converted from characters to bytes)
are then located with ``searchsorted``. Rows where that identity cannot hold (other tokenizer
families, invalid UTF-8 such as a response cut mid-character) take an exact fallback that decodes
prefixes of the row and measures how much of the response text each prefix reproduces.

Assignment rule: a token belongs to a block when strictly more than half of its bytes (characters on
the fallback path) lie inside the block, tags included. Blocks are disjoint, so each token belongs to
at most one block and every block is a contiguous token range. Tokens in no block (whitespace
between blocks, EOS, garbage of a malformed turn) are "other".
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain

import numpy as np

from hiper.types import Decision

BLOCKS = ("switch", "subgoal", "action", "think")
BLOCK_INDEX = {b: i for i, b in enumerate(BLOCKS)}
# label of a token: 0 = other, 1 + BLOCK_INDEX[block] otherwise
OTHER = 0
_ROW = np.int64(1) << 40
_ABSENT = (-1, -1)  # row stride on the global offset axis (> any response length in bytes)


@dataclass(frozen=True)
class TokenSpans:
    """Token-level view of a batch of N responses, flattened row after row.

    ``spans[i, k] = (start, end)``: the half-open token range of block ``BLOCKS[k]`` in response i
    ((0, 0) when absent). ``ends`` holds, per token, the end offset of that token in its row
    (bytes on the fast path, characters on rows flagged in ``exact``); ``block_ends[i, k]`` is the end
    of block k of row i in the same unit (-1 when absent). ``offsets[i]:offsets[i+1]`` are row i's
    tokens in the flat arrays.
    """

    offsets: np.ndarray  # int64 [N+1]
    spans: np.ndarray  # int64 [N, len(BLOCKS), 2]
    ends: np.ndarray  # int64 [total]: per-row local end offset of each token
    block_ends: np.ndarray  # int64 [N, len(BLOCKS)]
    exact: np.ndarray  # bool [N]: row took the exact fallback

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def as_dicts(self) -> list[dict[str, tuple[int, int]]]:
        """Per-row {block: (start, end)} for the blocks present (for records and the viewer)."""
        out = []
        for row in self.spans.tolist():
            out.append({BLOCKS[k]: (s, e) for k, (s, e) in enumerate(row) if e > s})
        return out

    @cached_property
    def labels(self) -> np.ndarray:
        """int8 [total]: 0 for other tokens, 1 + block index for tokens of a block."""
        return token_labels(self.offsets, self.spans)

    @cached_property
    def row_of(self) -> np.ndarray:
        """int64 [total]: the row each token belongs to."""
        return np.repeat(np.arange(len(self.offsets) - 1, dtype=np.int64), self.lengths)


def token_labels(offsets: np.ndarray, spans: np.ndarray) -> np.ndarray:
    """Per-token block labels from disjoint block ranges, with one difference array + cumsum."""
    total = int(offsets[-1])
    n, nb = spans.shape[:2]
    present = spans[..., 1] > spans[..., 0]
    lo = offsets[:-1, None]
    k = np.broadcast_to(np.arange(1, nb + 1, dtype=np.float64), (n, nb))[present]
    up = np.bincount((lo + spans[..., 0])[present], weights=k, minlength=total + 1)
    down = np.bincount((lo + spans[..., 1])[present], weights=k, minlength=total + 1)
    return np.cumsum(up[:total] - down[:total]).astype(np.int8)


_BYTE_PIECE = re.compile(r"^<0x[0-9A-Fa-f]{2}>$")


def decoder_kind(tokenizer) -> str | None:
    """``"byte_level"`` (GPT-2/Qwen), ``"metaspace"`` (SentencePiece-style: "▁" for spaces, byte
    fallback pieces, one leading space stripped) or None (no per-token length table applies)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    dec = json.loads(backend.to_str()).get("decoder") or {}
    parts = dec.get("decoders", []) if dec.get("type") == "Sequence" else [dec]
    types = {d.get("type") for d in parts}
    if "ByteLevel" in types:
        return "byte_level"
    replaces_marker = any(
        d.get("type") == "Replace" and (d.get("pattern") or {}).get("String") == "▁" for d in parts
    )
    if "Metaspace" in types or replaces_marker:
        return "metaspace"
    return None


def byte_length_table(tokenizer, skip_special_tokens: bool = True) -> np.ndarray | None:
    """int64 [vocab]: bytes each token id decodes to, or None when no such table applies.

    Byte-level vocabularies spell each byte as one printable character, so an entry's byte length
    is its length in characters. SentencePiece-style entries decode "▁" to a space and a byte
    fallback piece ``<0xNN>`` to one byte (the decoder's strip of one leading space is applied per
    row by :class:`TokenAligner`). Added tokens decode to their literal content (special ones to
    nothing when ``skip_special_tokens``).
    """
    kind = decoder_kind(tokenizer)
    if kind is None:
        return None
    vocab = tokenizer.get_vocab()
    size = max(max(vocab.values()) + 1, len(tokenizer))
    table = np.zeros(size, np.int64)
    for tok, i in vocab.items():
        if kind == "byte_level":
            table[i] = len(tok)
        else:
            table[i] = 1 if _BYTE_PIECE.match(tok) else len(tok.replace("▁", " ").encode("utf-8"))
    for i, added in tokenizer.added_tokens_decoder.items():
        special = added.special or i in tokenizer.all_special_ids
        table[i] = 0 if (special and skip_special_tokens) else len(added.content.encode("utf-8"))
    return table


def _leading_marker(tokenizer, size: int) -> np.ndarray:
    """bool [vocab]: SentencePiece pieces that start with "▁" (their space is stripped at the start)."""
    out = np.zeros(size, bool)
    added = set(tokenizer.added_tokens_decoder)
    for tok, i in tokenizer.get_vocab().items():
        if i not in added and tok.startswith("▁"):
            out[i] = True
    return out


class TokenAligner:
    """Maps block character spans to token spans for one tokenizer.

    The response text must be ``tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)``,
    as the engine produces it. ``exact=True`` forces the fallback for every row (the reference).
    """

    def __init__(self, tokenizer, skip_special_tokens: bool = True, exact: bool = False):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.table = None if exact else byte_length_table(tokenizer, skip_special_tokens)
        self.leading = None
        if self.table is not None and decoder_kind(tokenizer) == "metaspace":
            self.leading = _leading_marker(tokenizer, len(self.table))

    def align(
        self,
        ids: Sequence[np.ndarray | Sequence[int]],
        texts: Sequence[str],
        decisions: Sequence[Decision],
    ) -> TokenSpans:
        n = len(ids)
        if not (len(texts) == len(decisions) == n):
            raise ValueError(
                f"align needs one text and one decision per response: got {n} id rows, "
                f"{len(texts)} texts, {len(decisions)} decisions"
            )
        lengths = np.fromiter((len(r) for r in ids), np.int64, n)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(ids).astype(np.int64, copy=False) if n else np.zeros(0, np.int64)
        if flat.ndim != 1:
            raise ValueError("each row of token ids must be one-dimensional")
        row_of = np.repeat(np.arange(n, dtype=np.int64), lengths)
        if self.table is not None and flat.size:
            if flat.min() < 0:
                raise ValueError(f"token ids must be >= 0, got {flat.min()}")
            if flat.max() >= len(self.table):
                # ids past the tokenizer (padded embedding rows) decode to nothing
                grow = int(flat.max()) + 1 - len(self.table)
                self.table = np.pad(self.table, (0, grow))
                if self.leading is not None:
                    self.leading = np.pad(self.leading, (0, grow))
            nbytes = self.table[flat]
            cum = np.cumsum(nbytes)
            before = np.concatenate(([0], cum))[offsets]  # bytes before each row, and the total
            row_total = np.diff(before)
            ends = cum - before[:-1][row_of]
            if self.leading is not None:
                ends, row_total = _strip_leading_space(
                    ends, row_total, nbytes, self.leading[flat], offsets, row_of
                )
        else:
            ends = np.zeros(flat.size, np.int64)
            row_total = None
        # character spans of every block, gathered column by column (absent: -1)
        nb = len(BLOCKS)
        bstart = np.full((n, nb), -1, np.int64)
        bend = np.full((n, nb), -1, np.int64)
        for k, name in enumerate(BLOCKS):
            pairs = [d.spans.get(name, _ABSENT) for d in decisions]
            if any(p is not _ABSENT for p in pairs):
                cols = np.fromiter(chain.from_iterable(pairs), np.int64, 2 * n).reshape(n, 2)
                bstart[:, k], bend[:, k] = cols[:, 0], cols[:, 1]
        is_ascii = np.fromiter(map(str.isascii, texts), bool, n)
        if row_total is None:
            exact = np.ones(n, bool)
        else:
            # ASCII rows: characters are bytes; other rows: compare UTF-8 sizes, catch U+FFFD
            exact = is_ascii & (np.fromiter(map(len, texts), np.int64, n) != row_total)
            for i in np.flatnonzero(~is_ascii).tolist():
                text = texts[i]
                exact[i] = "\ufffd" in text or len(_utf8(text)) != row_total[i]
                if not exact[i]:  # move this row's block spans from characters to bytes
                    starts, stops = bstart[i].tolist(), bend[i].tolist()
                    bstart[i] = [len(_utf8(text[:c])) if c >= 0 else -1 for c in starts]
                    bend[i] = [len(_utf8(text[:c])) if c >= 0 else -1 for c in stops]
        for i in np.flatnonzero(exact).tolist():
            ends[offsets[i] : offsets[i + 1]] = self._char_ends(
                flat[offsets[i] : offsets[i + 1]], texts[i]
            )
        spans = _block_token_spans(ends, row_of, offsets, bstart, bend)
        return TokenSpans(offsets, spans, ends, bend, exact)

    def _char_ends(self, ids: np.ndarray, text: str) -> np.ndarray:
        """Exact per-token end offsets (characters of ``text``) by decoding every prefix once."""
        if ids.size == 0:
            return np.zeros(0, np.int64)
        prefixes = self.tokenizer.batch_decode(
            [ids[: j + 1].tolist() for j in range(ids.size)],
            skip_special_tokens=self.skip_special_tokens,
            clean_up_tokenization_spaces=False,
        )
        out = np.empty(ids.size, np.int64)
        best = 0
        for j, p in enumerate(prefixes):
            # how much of ``text`` this prefix reproduces (monotone: never moves backwards)
            k = _common_prefix_len(p, text)
            best = max(best, k)
            out[j] = best
        out[-1] = max(out[-1], len(text))
        return out


def _strip_leading_space(ends, row_total, nbytes, leading, offsets, row_of):
    """SentencePiece decoders drop one space at the start of the text: take it off the first
    non-empty token of each row when that token starts with "▁"."""
    nonempty = np.flatnonzero(nbytes > 0)
    if nonempty.size == 0:
        return ends, row_total
    first = nonempty[np.minimum(np.searchsorted(nonempty, offsets[:-1]), nonempty.size - 1)]
    has = (first >= offsets[:-1]) & (first < offsets[1:])
    strip = np.zeros(len(row_total), bool)
    strip[has] = leading[first[has]]
    if strip.any():
        tok = np.arange(len(ends))
        ends = ends - (strip[row_of] & (tok >= first[row_of]))
        row_total = row_total - strip
    return ends, row_total


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _common_prefix_len(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _block_token_spans(
    ends: np.ndarray,
    row_of: np.ndarray,
    offsets: np.ndarray,
    bstart: np.ndarray,
    bend: np.ndarray,
) -> np.ndarray:
    """Vectorised majority rule: [N, blocks, 2] token spans from per-token local end offsets."""
    n, nb = bstart.shape
    spans = np.zeros((n, nb, 2), np.int64)
    lo_row, hi_row = offsets[:-1], offsets[1:]
    # only blocks that exist, in rows that have tokens
    r, k = np.nonzero((bend >= 0) & (hi_row > lo_row)[:, None])
    if r.size == 0:
        return spans
    bs, be = bstart[r, k], bend[r, k]
    lo, hi = lo_row[r], hi_row[r]
    g_end = ends + row_of * _ROW  # globally non-decreasing
    starts_local = np.concatenate(([0], ends[:-1]))
    starts_local[lo_row[hi_row > lo_row]] = 0
    # first token ending after the block start; first token reaching the block end
    k0 = np.clip(np.searchsorted(g_end, bs + r * _ROW, side="right"), lo, hi - 1)
    k1 = np.clip(np.searchsorted(g_end, be + r * _ROW, side="left"), lo, hi - 1)

    def majority(j: np.ndarray) -> np.ndarray:
        s, e = starts_local[j], ends[j]
        return 2 * (np.minimum(e, be) - np.maximum(s, bs)) > (e - s)

    first = k0 + ~majority(k0)
    last = k1 + majority(k1)  # exclusive end
    ok = last > first
    spans[r, k, 0] = np.where(ok, first - lo, 0)
    spans[r, k, 1] = np.where(ok, last - lo, 0)
    return spans


def value_positions(ts: TokenSpans) -> dict[str, np.ndarray]:
    """Response positions p (value read at the token before p) for each per-turn value.

    ``start``: 0, before anything is generated (V^H, V^P, V^term). ``after_subgoal``: the first
    position whose prefix holds the whole closing ``</subgoal>`` tag (V^L); falls back to after
    ``</switch>``, else 0.
    """
    n = len(ts.offsets) - 1
    after = np.zeros(n, np.int64)
    lo = ts.offsets[:-1]
    hi = ts.offsets[1:]
    row = np.arange(n, dtype=np.int64)
    lengths = hi - lo
    row_of = np.repeat(row, lengths)
    g_end = ts.ends + row_of * _ROW
    for name in ("switch", "subgoal"):  # later wins
        be = ts.block_ends[:, BLOCK_INDEX[name]]
        ok = (be >= 0) & (lengths > 0)
        k = np.searchsorted(g_end, be + row * _ROW, side="left")  # token holding the last byte
        pos = np.minimum(k - lo + 1, lengths)
        after = np.where(ok, pos, after)
    return {"start": np.zeros(n, np.int64), "after_subgoal": after}
