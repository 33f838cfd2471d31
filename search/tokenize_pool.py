"""Tokenizing in worker processes, so a reindex of a large archive uses every core.

Turning text into blind tokens (normalising, bigrams, rjieba, keyed hashes) is
pure Python and most of a reindex's time: about 3 ms for a case document of
850 characters, 5 minutes for 100,000 of them on one core. The indexer reads and
decrypts records in its own process and hands each batch's text to spawned
workers, which hold the search subkey (sent through the pipe that starts them,
never written anywhere) and return tokens; the text travels only through those
pipes, in memory. A worker checks that its key gives the index's key-check
value before it tokenizes anything.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from types import TracebackType

from core.workers import exit_with_parent
from search.analyzer import Analyzer, Tokens

_analyzer: Analyzer | None = None


def _start(parent: int, keyed_hash: Callable[[str], str], check: str) -> None:
    global _analyzer
    exit_with_parent(parent)
    analyzer = Analyzer(keyed_hash)
    if analyzer.check_value() != check:
        raise RuntimeError("the worker's search key differs from the index's")
    _analyzer = analyzer


def _tokenize(texts: list[list[str]]) -> list[tuple[list[str], list[str]]]:
    if _analyzer is None:
        raise RuntimeError("worker not started")
    out = []
    for parts in texts:
        t = _analyzer.text_tokens(parts)
        out.append((t.grams, t.words))
    return out


class TokenizerPool:
    """``workers`` spawned processes that turn records' text into the analyzer's tokens."""

    def __init__(self, analyzer: Analyzer, workers: int) -> None:
        if workers < 1:
            raise ValueError("a tokenizer pool needs at least one worker")
        self.workers = workers
        self._executor = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_start, initargs=(os.getpid(), analyzer.portable_hash(), analyzer.check_value()))

    def submit(self, texts: Sequence[list[str]]) -> list[Future[list[tuple[list[str], list[str]]]]]:
        """Starts tokenizing one batch (each item: a record's fields), split across the workers."""
        step = max(1, -(-len(texts) // self.workers))
        return [self._executor.submit(_tokenize, list(texts[i:i + step])) for i in range(0, len(texts), step)]

    @staticmethod
    def collect(futures: Sequence[Future[list[tuple[list[str], list[str]]]]]) -> list[Tokens]:
        """The tokens of a submitted batch, in order (waits for them)."""
        return [Tokens(grams, words) for f in futures for grams, words in f.result()]

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> TokenizerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
