"""Text to blind tokens: nothing readable ever reaches an index.

Text is normalised (NFKC, traditional to simplified script, lower case) and cut
into runs. Chinese runs become overlapping character bigrams, so any name of
two or more characters and any phrase is found (dictionary segmentation alone
misses a third of three-character names: FINDINGS.md); they also go through a
fast segmenter (rjieba) for word tokens used in ranking. ID numbers and phone
numbers are whole tokens; Latin letters and digits become words. Every token is
then replaced by a keyed hash: HMAC with the search subkey, truncated to 64
bits (16 hex digits). Runs are separated by a marker token, so a phrase never
matches across punctuation.

Collisions: two distinct tokens share a 64-bit digest with probability 2^-64;
with V distinct tokens in an archive the expected number of colliding pairs is
V^2 / 2^65, about 3e-6 for V = 10^7. A collision can only add a false hit,
which the snippet step (made from the decrypted text) shows for what it is.

The key never becomes an attribute of anything an index stores: backends get
finished hex strings (Whoosh pickles its analyzers into the index).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import opencc

SEPARATOR = "z"  # not a hex digit: cannot collide with a token
ID_NUMBER = re.compile(r"(?<![0-9])[0-9]{17}[0-9x](?![0-9x])")
PHONE = re.compile(r"(?<![0-9])(?:1[3-9][0-9]{9}|0[0-9]{2,3}-?[0-9]{7,8})(?![0-9])")
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
RUN = re.compile(rf"[{_CJK}]+|[a-z0-9]+")

_t2s = opencc.OpenCC("t2s")


def _cut_for_search(run: str) -> list[str]:
    """rjieba's search-mode words; rjieba loads its dictionary on import (~0.2 s), so a process that
    never tokenizes (most CLI commands) never imports it."""
    import rjieba

    return rjieba.cut_for_search(run)


def normalize(text: str) -> str:
    """NFKC, traditional to simplified script, lower case."""
    converted: str = _t2s.convert(unicodedata.normalize("NFKC", text))
    return converted.lower()


@dataclass
class Tokens:
    """What an index holds for one text: positional bigram/whole tokens and ranking words."""

    grams: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)

    def extend(self, other: Tokens) -> None:
        if self.grams and other.grams:
            self.grams.append(SEPARATOR)
        self.grams += other.grams
        self.words += other.words


@dataclass
class BlindQuery:
    """A query as the index sees it: every phrase must match; words only rank."""

    phrases: list[list[str]]
    words: list[str]


def _plain_runs(text: str) -> list[tuple[str, str]]:
    """(kind, text) runs: ``whole`` for ID and phone numbers, ``cjk``, ``word``."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in sorted([*ID_NUMBER.finditer(text), *PHONE.finditer(text)], key=lambda m: m.start()):
        if m.start() < pos:
            continue
        out += [("cjk" if r[0] >= "\u3400" else "word", r) for r in RUN.findall(text[pos : m.start()])]
        out.append(("whole", m.group().replace("-", "")))
        pos = m.end()
    out += [("cjk" if r[0] >= "\u3400" else "word", r) for r in RUN.findall(text[pos:])]
    return out


def _bigrams(run: str) -> list[str]:
    return [run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)]


class Analyzer:
    """Turns text and queries into blind tokens with one secret (the search subkey)."""

    def __init__(self, keyed_hash: Callable[[str], str], *,
                 portable: Callable[[], Callable[[str], str]] | None = None):
        """``portable`` makes a picklable copy of ``keyed_hash`` for worker processes (reindex)."""
        # Memoized: the same few thousand tokens recur across a whole corpus.
        self._hash = functools.lru_cache(maxsize=1 << 18)(keyed_hash)
        self._portable = portable

    def portable_hash(self) -> Callable[[str], str]:
        """A picklable keyed hash giving the same tokens, to build this analyzer in another process."""
        if self._portable is None:
            raise RuntimeError("this analyzer has no portable keyed hash")
        return self._portable()

    def text_tokens(self, parts: Iterable[str]) -> Tokens:
        """The tokens of a record: one run per field, separated, so no phrase spans two fields."""
        out = Tokens()
        for p in parts:
            out.extend(self.tokens(p))
        return out

    def _blind(self, kind: str, token: str) -> str:
        return self._hash(f"{kind}:{token}")

    def tokens(self, text: str) -> Tokens:
        out = Tokens()
        grams, words = out.grams, out.words
        for kind, run in _plain_runs(normalize(text)):
            if grams:
                grams.append(SEPARATOR)
            if kind == "cjk":
                grams += [self._blind("g", b) for b in _bigrams(run)]
                words += [self._blind("w", w) for w in _cut_for_search(run) if len(w) > 1]
            elif kind == "whole":
                grams.append(self._blind("n", run))
            else:
                grams.append(self._blind("w", run))
                words.append(self._blind("w", run))
        return out

    def query(self, q: str) -> BlindQuery:
        """Each run of the query is a phrase that must appear; a term of one CJK char matches
        that character only where it stands alone (names are two or more)."""
        phrases: list[list[str]] = []
        words: list[str] = []
        for kind, run in _plain_runs(normalize(q)):
            if kind == "cjk":
                phrases.append([self._blind("g", b) for b in _bigrams(run)])
                words += [self._blind("w", w) for w in _cut_for_search(run) if len(w) > 1]
            elif kind == "whole":
                phrases.append([self._blind("n", run)])
            else:
                phrases.append([self._blind("w", run)])
                words.append(self._blind("w", run))
        return BlindQuery(phrases=phrases, words=words)

    def check_value(self) -> str:
        """Kept beside an index: a different key would silently find nothing."""
        return self._blind("check", "shouhu search key check")
