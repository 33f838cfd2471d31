"""Tokenizing in worker processes (a full reindex on every core) gives exactly the in-process tokens.

- ``KeyRing.keyed_hasher`` is ``keyed_hash`` as a picklable callable, on both suites, and its repr
  hides the subkey.
- A ``TokenizerPool`` of spawned workers returns, batch by batch and in order, the tokens the
  parent's analyzer makes (rare characters, traditional script, ID and phone numbers, empty fields).
- A worker whose key does not give the index's key-check value refuses to start, so a wrong key can
  never fill an index with tokens nobody can query.
- ``index_batches`` upserts the same documents with and without the pool.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures.process import BrokenProcessPool
from datetime import date

import pytest

from core import crypto
from search.analyzer import Analyzer
from search.backends import IndexDoc
from search.indexer import Pending, index_batches
from search.tokenize_pool import TokenizerPool

TEXTS = [
    ["王子涵", "身份证号码320706201501011234，电话13912345678", "海州区新浦街道幸福村"],
    ["學校老師反映該生近期情緒低落", "", "张㛃建、龙𪚥、程頔、欧阳堃喆"],
    ["父母长期外出务工，每月通过电话与孩子联系一次。监护人联系电话：0518-85800000"],
    ["abc DEF 123", "！？……（）"],
]


def analyzer_for(ring: crypto.KeyRing) -> Analyzer:
    return Analyzer(lambda t: ring.keyed_hash("search", t, hex_chars=16),
                    portable=lambda: ring.keyed_hasher("search", hex_chars=16))


@pytest.mark.parametrize("suite", [crypto.AES_SUITE, crypto.SM_SUITE], ids=["aes", "sm"])
def test_keyed_hasher_is_keyed_hash_and_pickles_without_showing_its_key(suite):
    ring = crypto.KeyRing(os.urandom(32), suite=suite)
    hasher = ring.keyed_hasher("search", hex_chars=16)
    copy = pickle.loads(pickle.dumps(hasher))
    for value in ("g:王子", "n:320706201501011234", "", "w:abc"):
        assert hasher(value) == copy(value) == ring.keyed_hash("search", value, hex_chars=16)
    assert ring.keyed_hasher("id_number")("x") == ring.keyed_hash("id_number", "x")
    assert ring.hash_subkey("search").hex() not in repr(hasher)
    assert "hidden" in repr(hasher)


def test_the_pool_gives_the_in_process_tokens_in_order():
    ring = crypto.KeyRing(os.urandom(32), suite=crypto.AES_SUITE)
    analyzer = analyzer_for(ring)
    batches = [TEXTS, TEXTS[::-1], TEXTS[:1], TEXTS * 25]
    with TokenizerPool(analyzer, 2) as pool:
        submitted = [pool.submit(b) for b in batches]  # several in flight, collected in order
        got = [pool.collect(f) for f in submitted]
    for batch, tokens in zip(batches, got, strict=True):
        assert tokens == [analyzer.text_tokens(parts) for parts in batch]
    assert any(t.grams for t in got[0]) and any(t.words for t in got[0])


def test_a_worker_with_another_key_refuses_to_tokenize():
    ring, other = (crypto.KeyRing(os.urandom(32), suite=crypto.AES_SUITE) for _ in range(2))
    wrong = Analyzer(lambda t: ring.keyed_hash("search", t, hex_chars=16),
                     portable=lambda: other.keyed_hasher("search", hex_chars=16))
    with TokenizerPool(wrong, 1) as pool, pytest.raises(BrokenProcessPool):
        pool.collect(pool.submit(TEXTS))
    with pytest.raises(RuntimeError, match="portable"):
        Analyzer(lambda t: t).portable_hash()


class Collecting:
    """Records what ``index_batches`` upserts (the pipeline under test, not a backend's)."""

    def __init__(self) -> None:
        self.docs: list[IndexDoc] = []

    def upsert(self, docs: list[IndexDoc]) -> None:
        self.docs += docs


def test_index_batches_upserts_the_same_documents_with_and_without_workers():
    analyzer = analyzer_for(crypto.KeyRing(os.urandom(32), suite=crypto.AES_SUITE))
    pending = [Pending(f"mn_{i:03d}", "minor", "minor", ["320700", "320706"], [i % 5 + 1], date(2026, 1, 1 + i % 28),
                       i % 9 == 0, TEXTS[i % len(TEXTS)]) for i in range(90)]
    batches = [(30, pending[i:i + 30]) for i in range(0, 90, 30)]
    seen: dict[int, list[tuple[int, int]]] = {}
    results = {}
    for workers in (1, 2):
        backend = Collecting()
        seen[workers] = []
        assert index_batches(backend, analyzer, iter(batches), workers=workers, total=90,  # type: ignore[arg-type]
                             progress=lambda d, t, w=workers: seen[w].append((d, t))) == 90
        results[workers] = backend.docs
    assert results[1] == results[2]
    assert [d.id for d in results[2]] == [p.id for p in pending]
    assert seen[1] == seen[2] == [(30, 90), (60, 90), (90, 90)]
