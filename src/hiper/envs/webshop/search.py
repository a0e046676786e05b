"""Product search: Lucene-style BM25 over each product's indexed text, in numpy.

The official environment searches a Lucene index (built with pyserini's defaults) whose ``contents``
field is ``" ".join([title, description, first bullet point, option text]).lower()`` (see
:func:`hiper.envs.webshop.data.product_contents`) and returns the top 50 hits. This module rebuilds
that ranking in Python:

* **Analyzer** (:func:`analyze`, for documents and queries alike), after pyserini's default English
  analyzer: Unicode word segmentation (:data:`WORD_PATTERN`, the rules of UAX #29 that Lucene's
  ``StandardTokenizer`` follows: letters and digits join; ``.``, ``'`` and ``:`` join two
  letters; ``.``, ``,``, ``;`` and ``'`` join two digits; every CJK ideograph and hiragana
  character is a token of its own; an emoji (a character with the Unicode property
  ``Extended_Pictographic``, e.g. ``❤ ✅ 🌸 ® ™``, with its variation selector, skin-tone modifier
  or zero-width-joined parts; or a pair of regional indicators, a flag) is a token; everything
  else separates), the English possessive ``'s`` removed, lower-casing, Lucene's 33 English stop
  words (:data:`STOP_WORDS`) removed, then the Porter stemmer (NLTK's ``MARTIN_EXTENSIONS`` mode:
  Porter's own published version, which Lucene's ``PorterStemFilter`` implements). Emoji and
  ideographs count in a document's length like words.
* **Scoring** (:class:`BM25Index`), Lucene's ``BM25Similarity`` with ``k1 = 0.9``, ``b = 0.4``:
  ``idf = ln(1 + (N - df + 0.5) / (df + 0.5))`` and, per matching query term (a repeated query term
  counts once per occurrence), ``idf · tf / (tf + k1 · (1 - b + b · dl / avgdl))``. As in Lucene,
  document lengths are stored lossily in one byte (``SmallFloat.intToByte4``; exact below 24
  tokens), the per-term arithmetic is single precision and term scores are summed in double
  precision; ``avgdl`` uses the exact token count.
* **Ranking**: documents matching at least one query term, by score (descending) then by
  document id (ascending), as pyserini returns hits of equal score: the catalog's ids are the
  products' asins, so ties break by asin, not by file order. Deterministic.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import regex

__all__ = [
    "DEFAULT_B",
    "DEFAULT_K1",
    "SEARCH_RETURN_N",
    "STOP_WORDS",
    "WORD_PATTERN",
    "BM25Index",
    "analyze",
    "decode_length",
    "encode_length",
    "tokenize",
]

DEFAULT_K1 = 0.9
DEFAULT_B = 0.4
#: How many hits a search returns (the official ``SEARCH_RETURN_N``).
SEARCH_RETURN_N = 50

#: Lucene's English stop words (``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``).
_STOP_WORDS = (
    "a an and are as at be but by for if in into is it no not of on or such that the their then "
    "there these they this to was will with"
)
STOP_WORDS = frozenset(_STOP_WORDS.split())

#: A CJK ideograph or a hiragana character: one token each (UAX #29 keeps them apart).
_IDEOGRAPH = r"[\p{Ideographic}\p{Script=Hiragana}]"
#: A word character that is not one of those.
_WORD_CHAR = rf"(?:(?!{_IDEOGRAPH})\w)"
_LETTER = rf"(?:(?!{_IDEOGRAPH})[^\W\d_])"
#: An emoji: an Extended_Pictographic character with its variation selector, skin-tone modifiers
#: and zero-width-joined parts, or a flag (two regional indicators).
_EMOJI = (
    r"\p{Extended_Pictographic}(?:\uFE0F|\p{Emoji_Modifier}|\u200D\p{Extended_Pictographic})*"
    r"|\p{Regional_Indicator}{2}"
)
#: One token: an emoji, one ideograph, or a run of word characters joined by a single
#: ``. ' ’ ‘ : ·`` between two letters or a single ``. , ; ' ’ ‘`` between two digits (UAX #29
#: rules WB6/7 and WB11/12).
WORD_PATTERN = regex.compile(
    rf"{_EMOJI}|{_IDEOGRAPH}|{_WORD_CHAR}+"
    rf"(?:(?:(?<={_LETTER})[.:·'’‘](?={_LETTER})|(?<=\d)[.,;'’‘](?=\d)){_WORD_CHAR}+)*"
)
_POSSESSIVE_APOSTROPHES = frozenset("'’＇")


def _is_token(token: str) -> bool:
    """A word with a letter or digit, an ideograph or an emoji (a lone ``_`` is none)."""
    return any(c.isalnum() for c in token) or not any(c.isalnum() or c == "_" for c in token)


def tokenize(text: str) -> list[str]:
    """Word segmentation only (no lower-casing, stop words or stemming)."""
    return [t for t in WORD_PATTERN.findall(text) if _is_token(t)]


@lru_cache(maxsize=1)
def _stemmer():
    try:
        from nltk.stem.porter import PorterStemmer
    except ImportError as e:  # pragma: no cover - a dependency of hiper
        raise ImportError("webshop search needs the 'nltk' package (Porter stemmer)") from e

    return PorterStemmer(mode=PorterStemmer.MARTIN_EXTENSIONS)


@lru_cache(maxsize=200_000)
def _stem(token: str) -> str:
    return _stemmer().stem(token, to_lowercase=False)


def analyze(text: str) -> list[str]:
    """The index terms of ``text``: tokenize, drop possessive 's, lower-case, drop stop words, stem."""
    terms = []
    for token in WORD_PATTERN.findall(text):
        if len(token) > 2 and token[-2] in _POSSESSIVE_APOSTROPHES and token[-1] in "sS":
            token = token[:-2]
        token = token.lower()
        if token in STOP_WORDS or not _is_token(token):
            continue
        terms.append(_stem(token))
    return terms


# ---------------------------------------------------------------------------------------------
# Lucene's one-byte document length (org.apache.lucene.util.SmallFloat.intToByte4/byte4ToInt)

_MAX_INT4 = 231  # longToInt4(Integer.MAX_VALUE)
_NUM_FREE_VALUES = 255 - _MAX_INT4  # 24 lengths are stored exactly


def _long_to_int4(i: int) -> int:
    bits = i.bit_length()
    if bits < 4:
        return i
    shift = bits - 4
    return ((i >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(i: int) -> int:
    bits = i & 0x07
    shift = (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


def encode_length(length: int) -> int:
    """A document length (in tokens) as Lucene's norm byte (0..255)."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    if length < _NUM_FREE_VALUES:
        return length
    return _NUM_FREE_VALUES + _long_to_int4(length - _NUM_FREE_VALUES)


def decode_length(byte: int) -> int:
    """The document length Lucene's scorer sees for a norm byte."""
    if byte < _NUM_FREE_VALUES:
        return byte
    return _NUM_FREE_VALUES + _int4_to_long(byte - _NUM_FREE_VALUES)


_LENGTH_TABLE = np.array([decode_length(i) for i in range(256)], dtype=np.float32)


class BM25Index:
    """An in-memory BM25 index over ``documents`` (raw text, analyzed with :func:`analyze`).

    ``search(query, k)`` returns up to ``k`` ``(document index, score)`` pairs; ``scores(query)``
    the score of every document (0 where no query term occurs). ``doc_ids`` (one string per
    document, e.g. the asins) break ties between equal scores, ascending; without them the
    document index does. ``quantize_lengths=False`` uses exact document lengths instead of
    Lucene's one-byte encoding.
    """

    def __init__(
        self,
        documents: Sequence[str],
        k1: float = DEFAULT_K1,
        b: float = DEFAULT_B,
        quantize_lengths: bool = True,
        doc_ids: Sequence[str] | None = None,
    ) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"need k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        if doc_ids is not None and len(doc_ids) != len(documents):
            raise ValueError(f"{len(doc_ids)} doc_ids for {len(documents)} documents")
        # each document's place in the tie order (its id's rank, ascending)
        order = sorted(range(len(documents)), key=lambda d: doc_ids[d]) if doc_ids else None
        self._tie_rank = np.arange(len(documents), dtype=np.int64)
        if order is not None:
            self._tie_rank[np.asarray(order, dtype=np.int64)] = np.arange(len(documents))
        self.k1, self.b = float(k1), float(b)
        self.num_docs = len(documents)
        vocab: dict[str, int] = {}
        postings: list[tuple[list[int], list[int]]] = []
        lengths = np.zeros(self.num_docs, dtype=np.int64)
        for d, text in enumerate(documents):
            terms = analyze(text)
            lengths[d] = len(terms)
            for term, tf in Counter(terms).items():
                tid = vocab.setdefault(term, len(vocab))
                if tid == len(postings):
                    postings.append(([], []))
                postings[tid][0].append(d)
                postings[tid][1].append(tf)
        self.vocabulary = vocab
        # Postings stored flat, term by term (CSR): documents, term frequencies, and each posting's
        # score for a query term occurring once.
        sizes = np.array([len(p[0]) for p in postings], dtype=np.int64)
        self._ptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._doc_ids = np.fromiter(
            (d for p in postings for d in p[0]), dtype=np.int64, count=int(sizes.sum())
        )
        self._tfs = np.fromiter(
            (t for p in postings for t in p[1]), dtype=np.float32, count=int(sizes.sum())
        )
        # Lucene: (float) Math.log(1 + (docCount - docFreq + 0.5D) / (docFreq + 0.5D))
        self._idf = np.log(1.0 + (self.num_docs - sizes + 0.5) / (sizes + 0.5)).astype(np.float32)
        self.lengths = lengths
        n = max(self.num_docs, 1)
        self.avgdl = float(np.float32(lengths.sum() / n)) if lengths.sum() else 1.0
        f32 = np.float32
        k1_32, b_32, avgdl_32 = f32(self.k1), f32(self.b), f32(self.avgdl)
        if quantize_lengths:
            # Lucene: cache[i] = 1f / (k1 * ((1 - b) + b * LENGTH_TABLE[i] / avgdl)), in float.
            table = f32(1) / (k1_32 * ((f32(1) - b_32) + b_32 * _LENGTH_TABLE / avgdl_32))
            norm_bytes = np.array([encode_length(int(x)) for x in lengths], dtype=np.int64)
            self._norm_inverse = table[norm_bytes] if self.num_docs else np.zeros(0, f32)
        else:
            dl = lengths.astype(np.float32)
            self._norm_inverse = f32(1) / (k1_32 * ((f32(1) - b_32) + b_32 * dl / avgdl_32))
        term_of_posting = np.repeat(np.arange(len(sizes)), sizes)
        self._tf_norm = f32(1) + self._tfs * self._norm_inverse[self._doc_ids]
        weight = self._idf[term_of_posting]
        self._unit_scores = weight - weight / self._tf_norm

    def idf(self, term: str) -> float:
        """Lucene's idf of an (analyzed) term; 0.0 for a term in no document."""
        tid = self.vocabulary.get(term)
        return 0.0 if tid is None else float(self._idf[tid])

    def _accumulate(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        docs, parts = [], []
        for term, count in Counter(analyze(query)).items():
            tid = self.vocabulary.get(term)
            if tid is None:
                continue
            lo, hi = self._ptr[tid], self._ptr[tid + 1]
            docs.append(self._doc_ids[lo:hi])
            if count == 1:
                parts.append(self._unit_scores[lo:hi])
            else:  # Lucene: weight = boost * idf, score = weight - weight / (1 + tf * normInverse)
                weight = np.float32(count) * self._idf[tid]
                parts.append(weight - weight / self._tf_norm[lo:hi])
        if not docs:
            return np.zeros(self.num_docs, np.float32), np.zeros(self.num_docs, bool)
        all_docs = np.concatenate(docs)
        # Term scores are float; their sum is accumulated in double, then rounded to float.
        scores = np.bincount(all_docs, np.concatenate(parts).astype(np.float64), self.num_docs)
        matched = np.bincount(all_docs, minlength=self.num_docs) > 0
        return scores.astype(np.float32), matched

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score (float32) of every document for ``query``."""
        return self._accumulate(query)[0]

    def search(self, query: str, k: int = SEARCH_RETURN_N) -> list[tuple[int, float]]:
        """The top ``k`` documents matching ``query``: by score, then by document id."""
        scores, matched = self._accumulate(query)
        candidates = np.flatnonzero(matched)
        if candidates.size == 0 or k <= 0:
            return []
        order = np.lexsort((self._tie_rank[candidates], -scores[candidates]))[:k]
        top = candidates[order]
        return [(int(d), float(scores[d])) for d in top]
