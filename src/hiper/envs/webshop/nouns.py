"""Noun tokens of product titles, for the type reward — the one approximation of the official rules.

The official ``get_type_reward`` keeps the tokens that spaCy (``en_core_web_sm``/``_lg``) tags
``NOUN`` or ``PROPN``. The tokens here are exactly spaCy's: :func:`spacy_tokens` runs spaCy's
English tokenizer (``spacy.blank("en")``, the same rule-based tokenizer ``en_core_web_sm`` uses;
it needs no model files), so "60ML", "2pcs", "Pro/12.9", "E27,Gold" and "C.O." stay one token
and "Y2K" becomes "Y2" "K", as in the official environment. The tagger is the approximation: the
spaCy models are not on the package index, so hiper tags with NLTK's averaged-perceptron tagger
(``taggers/averaged_perceptron_tagger_eng``, the JSON format of NLTK >= 3.9). Penn tags
``NN``/``NNS`` count as ``NOUN`` and ``NNP``/``NNPS`` as ``PROPN``; tokens without a letter or
digit are never nouns. Nouns are lower-cased, in title order, repeats kept (the official title
score counts repeats in its denominator).

The tagger files are found under ``<nltk_data>/taggers/averaged_perceptron_tagger_eng/`` where
``nltk_data`` is the ``nltk_data`` option, else each entry of ``$NLTK_DATA``, else NLTK's default
data paths. The files are read directly (no change to NLTK's global search path).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

__all__ = [
    "NOUN_TAGS",
    "TAGGER_FILES",
    "TAGGER_SUBDIR",
    "NounTagger",
    "TaggerNotFoundError",
    "find_tagger_dir",
    "spacy_tokens",
]

TAGGER_SUBDIR = Path("taggers") / "averaged_perceptron_tagger_eng"
TAGGER_FILES = (
    "averaged_perceptron_tagger_eng.weights.json",
    "averaged_perceptron_tagger_eng.tagdict.json",
    "averaged_perceptron_tagger_eng.classes.json",
)
#: Penn Treebank tags counted as spaCy NOUN (NN, NNS) or PROPN (NNP, NNPS).
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})


class TaggerNotFoundError(ValueError):
    """The NLTK perceptron tagger files are missing or unreadable (a ValueError, like data errors)."""


@lru_cache(maxsize=1)
def _english_tokenizer():
    import spacy

    return spacy.blank("en").tokenizer


def spacy_tokens(text: str) -> list[str]:
    """The tokens of spaCy's English tokenizer (whitespace tokens left out)."""
    return [t.text for t in _english_tokenizer()(text) if not t.is_space]


def _candidate_roots(nltk_data: str | os.PathLike[str] | None) -> list[Path]:
    if nltk_data is not None:
        return [Path(nltk_data)]
    roots = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p.strip()]
    try:
        import nltk.data

        roots += [Path(p) for p in nltk.data.path if isinstance(p, str | os.PathLike)]
    except Exception:  # pragma: no cover - nltk missing is reported when the tagger loads
        pass
    return roots


def find_tagger_dir(nltk_data: str | os.PathLike[str] | None = None) -> Path:
    """The directory holding the tagger's three JSON files (see the module docstring)."""
    roots = _candidate_roots(nltk_data)
    for root in roots:
        folder = root / TAGGER_SUBDIR
        if all((folder / name).is_file() for name in TAGGER_FILES):
            return folder
    if nltk_data is not None:
        folder = Path(nltk_data) / TAGGER_SUBDIR
        missing = [n for n in TAGGER_FILES if not (folder / n).is_file()]
        raise TaggerNotFoundError(
            f"NLTK perceptron tagger not found: {folder} lacks {missing} (nltk_data={nltk_data!s}; "
            "the type reward needs NLTK's averaged_perceptron_tagger_eng in the JSON format of "
            "NLTK >= 3.9)"
        )
    tried = ", ".join(str(r / TAGGER_SUBDIR) for r in roots) or "(no candidate folders)"
    raise TaggerNotFoundError(
        "NLTK perceptron tagger not found: pass the webshop option nltk_data=<folder> or set "
        f"NLTK_DATA to a folder holding {TAGGER_SUBDIR}/ (the type reward needs it); tried: {tried}"
    )


class NounTagger:
    """``tagger(text)`` -> the lower-cased noun tokens of ``text`` (cached per text)."""

    def __init__(self, tagger_dir: str | os.PathLike[str]) -> None:
        folder = Path(tagger_dir)
        self.tagger_dir = folder
        params = []
        for name in TAGGER_FILES:
            path = folder / name
            try:
                with path.open(encoding="utf-8") as f:
                    params.append(json.load(f))
            except FileNotFoundError:
                raise TaggerNotFoundError(f"NLTK tagger file missing: {path}") from None
            except (OSError, ValueError) as e:
                raise TaggerNotFoundError(f"NLTK tagger file unreadable: {path}: {e}") from None
        weights, tagdict, classes = params
        if not (
            isinstance(weights, dict) and isinstance(tagdict, dict) and isinstance(classes, list)
        ):
            raise TaggerNotFoundError(
                f"NLTK tagger files in {folder} are malformed: expected weights and tagdict objects "
                "and a classes list"
            )
        try:
            from nltk.tag.perceptron import PerceptronTagger
        except ImportError as e:  # pragma: no cover - a dependency of hiper
            raise ImportError("the webshop environment needs the 'nltk' package (>= 3.9)") from e

        tagger = PerceptronTagger(load=False)
        tagger.model.weights = weights
        tagger.tagdict = tagdict
        tagger.classes = tagger.model.classes = set(classes)
        self._tagger = tagger
        self._cached = lru_cache(maxsize=65_536)(self._nouns)

    def tag(self, text: str) -> list[tuple[str, str]]:
        """(token, Penn tag) pairs of ``text``."""
        tokens = spacy_tokens(text)
        return self._tagger.tag(tokens) if tokens else []

    def _nouns(self, text: str) -> tuple[str, ...]:
        return tuple(
            token.lower()
            for token, tag in self.tag(text)
            if tag in NOUN_TAGS and any(c.isalnum() for c in token)
        )

    def __call__(self, text: str) -> Sequence[str]:
        return self._cached(text)


@lru_cache(maxsize=8)
def load_noun_tagger(tagger_dir: Path) -> NounTagger:
    """A process-wide cached :class:`NounTagger` for ``tagger_dir``."""
    return NounTagger(tagger_dir)
