"""The single indexer: drains the outbox into the search backend; ``shouhu reindex``.

Records are decrypted here (the indexer holds the vault) and turned into blind
tokens before anything reaches the backend. An outbox row is deleted only after
the backend has committed its document, so a crash at any point leaves rows to
redo, never a committed record missing from the index. Re-indexing a record is
idempotent (upsert by id), so redoing is harmless.

One process drains at a time: on PostgreSQL a session advisory lock elects it;
for an embedded index, the process holding its indexer lock (``search.generations``).

``reindex`` builds a new index generation aside while the server keeps serving and
indexing the current one, and switches to it atomically (``search.generations``).
While a rebuild runs, the indexer keeps the outbox rows it has indexed, so the new
generation gets every change made during the rebuild too.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from access_control.regions import RegionTree
from archive.models import Document, DocumentVersion, Household, Minor, MinorCategory
from core.db import Database
from core.errors import Gone, IntegrityFailure
from core.keys import DataKey, Vault
from core.outbox import SearchOutbox
from doc_templates import kinds as doc_kinds
from doc_templates.fonts import texts
from search.analyzer import Analyzer, Tokens
from search.backends import IndexDoc, SearchBackend, SearchUnavailable
from search.generations import LiveIndex
from search.tokenize_pool import TokenizerPool

log = logging.getLogger("shouhu.search")
ADVISORY_LOCK = 7_406_330_001  # "shouhu indexer"
BATCH = 200
PARALLEL_MIN = 2 * BATCH  # below this a reindex tokenizes in its own process (a worker starts in ~1 s)


class Sources:
    """Readable text of a record, for the indexer and for snippets (after an audited read)."""

    def __init__(self, *, vault: Vault, regions: RegionTree):
        self.vault = vault
        self.regions = regions

    def minor_text(self, s: Session, m: Minor) -> list[str]:
        data = self.vault.open_json(s, m.payload, m.dek_id, kind="minor", record_id=m.id, version=m.version,
                                    sealed=m.sealed)
        parts = [data.get("name"), data.get("id_number"), data.get("school"), data.get("guardian"),
                 data.get("phone"), data.get("notes")]
        hh = s.get(Household, m.household_id)
        if hh is not None and not hh.sealed:
            with suppress(Gone, IntegrityFailure):
                parts.append(self.household_data(s, hh).get("address"))
        parts.append(self.regions.full_name(m.region_code))
        return [p for p in parts if p]

    def household_data(self, s: Session, h: Household) -> dict[str, Any]:
        return self.vault.open_json(s, h.payload, h.dek_id, kind="household", record_id=h.id, version=h.version)

    def household_text(self, s: Session, h: Household) -> list[str]:
        data = self.household_data(s, h)
        parts = [data.get("address"), data.get("notes")]
        for mem in data.get("members", []):
            parts += [mem.get("name"), mem.get("relation"), mem.get("id_number"), mem.get("phone"),
                      mem.get("situation")]
        parts.append(self.regions.full_name(h.region_code))
        return [p for p in parts if p]

    def document_text(self, s: Session, d: Document) -> list[str]:
        v = s.get(DocumentVersion, (d.id, d.current_version))
        if v is None:
            return []
        data = self.vault.open_json(s, v.fields_payload, d.dek_id, kind="document_fields", record_id=d.id,
                                    version=v.version, sealed=d.sealed)
        kind = doc_kinds.get(d.kind)
        parts = [kind.title if kind else d.kind, d.doc_number]
        parts += [t for _path, t in texts(data.get("fields", {}))]
        return [p for p in parts if p]


@dataclass
class Prefetched:
    """A batch's rows, held so the session's (weak) identity map keeps them; open categories."""

    rows: list[Any]
    categories: dict[str, list[int]]


class Indexer:
    def __init__(self, *, db: Database, backend: LiveIndex, analyzer: Analyzer, sources: Sources,
                 regions: RegionTree, workers: int = 1):
        self.db = db
        self.workers = workers
        self.backend = backend
        self.analyzer = analyzer
        self.sources = sources
        self.regions = regions
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drain_lock = threading.Lock()
        # Outbox rows indexed into generation ``_kept_in`` but kept while a rebuild runs.
        self._kept: set[int] = set()
        self._kept_in: int | None = None

    # documents -------------------------------------------------------------------------

    def _regions(self, code: str) -> list[str]:
        node = self.regions.get(code)
        return [c for c in (node.path.strip("/").split("/") if node else [code]) if c]

    def prefetch(self, s: Session, records: Sequence[tuple[str, str]]) -> Prefetched:
        """Loads a batch's rows into the session in a few statements, so ``build`` needs no SQL of
        its own (``Session.get`` answers from the identity map while the result is held).

        Without it a reindex made about seven round trips per record (bench/bench_search.py).
        """
        wanted: dict[str, list[str]] = defaultdict(list)
        for kind, rid in records:
            wanted[kind].append(rid)
        minors = list(s.scalars(select(Minor).where(Minor.id.in_(wanted["minor"])))) if wanted["minor"] else []
        docs = (list(s.scalars(select(Document).where(Document.id.in_(wanted["document"]))))
                if wanted["document"] else [])
        household_ids = set(wanted["household"]) | {m.household_id for m in minors}
        households = (list(s.scalars(select(Household).where(Household.id.in_(household_ids))))
                      if household_ids else [])
        rows: list[Any] = [*minors, *docs, *households]
        if docs:
            rows += s.scalars(select(DocumentVersion).join(Document, DocumentVersion.document_id == Document.id)
                              .where(Document.id.in_([d.id for d in docs]),
                                     DocumentVersion.version == Document.current_version)).all()
        keyed: list[Minor | Document | Household] = [*minors, *docs, *households]
        dek_ids = {r.dek_id for r in keyed}
        if dek_ids:
            rows += s.scalars(select(DataKey).where(DataKey.id.in_(dek_ids))).all()
        minor_ids = {m.id for m in minors} | {d.subject_id for d in docs if d.subject_kind == "minor" and d.subject_id}
        cats: dict[str, list[int]] = {i: [] for i in minor_ids}
        if minor_ids:
            for mid, cat in s.execute(select(MinorCategory.minor_id, MinorCategory.category).where(
                    MinorCategory.minor_id.in_(minor_ids), MinorCategory.ended_on.is_(None))):
                cats[mid].append(cat)
        return Prefetched(rows=rows, categories={k: sorted(set(v)) for k, v in cats.items()})

    def _categories(self, s: Session, minor_id: str, batch: Prefetched | None) -> list[int]:
        if batch is not None and minor_id in batch.categories:
            return batch.categories[minor_id]
        return sorted({c.category for c in s.scalars(select(MinorCategory).where(
            MinorCategory.minor_id == minor_id, MinorCategory.ended_on.is_(None)))})

    def gather(self, s: Session, kind: str, record_id: str, *, batch: Prefetched | None = None) -> Pending | None:
        """A record's index entry with its readable text not yet tokenized; None if it stays out.

        ``batch``: what ``prefetch`` loaded for the batch this record is in (optional).
        """
        row: Any
        try:
            if kind == "minor":
                row = s.get(Minor, record_id)
                if row is None or not _live(s, row.dek_id):
                    return None
                return Pending(row.id, "minor", "minor", self._regions(row.region_code),
                               self._categories(s, row.id, batch), row.created_at.date(), row.sealed,
                               self.sources.minor_text(s, row))
            if kind == "household":
                row = s.get(Household, record_id)
                if row is None or not _live(s, row.dek_id):
                    return None
                return Pending(row.id, "household", "household", self._regions(row.region_code), [],
                               row.created_at.date(), row.sealed, self.sources.household_text(s, row))
            if kind == "document":
                row = s.get(Document, record_id)
                if row is None or not _live(s, row.dek_id):
                    return None
                parts = self.sources.document_text(s, row)
                v = s.get(DocumentVersion, (row.id, row.current_version))
                day: date = v.issued_on if v else row.created_at.date()
                cats: list[int] = []
                if row.subject_kind == "minor" and row.subject_id:
                    cats = self._categories(s, row.subject_id, batch)
                return Pending(row.id, "document", row.kind, self._regions(row.region_code), cats, day,
                               row.sealed, parts)
        except (Gone, IntegrityFailure):
            log.error("search: %s %s cannot be decrypted; left out of the index", kind, record_id)
            return None
        return None

    def build(self, s: Session, kind: str, record_id: str, *, batch: Prefetched | None = None) -> IndexDoc | None:
        """The index entry for a record, or None if it should not be in the index."""
        pending = self.gather(s, kind, record_id, batch=batch)
        return None if pending is None else pending.done(self.analyzer.text_tokens(pending.parts))

    # the outbox -------------------------------------------------------------------------

    def _entries(self, rows: Sequence[Any]) -> tuple[list[IndexDoc], list[str]]:
        """Read and decrypt the records of some outbox rows: their entries, and the ids to drop."""
        upserts, deletes = [], []
        with self.db.read_session() as s:
            todo = list(dict.fromkeys((r.record_kind, r.record_id) for r in rows))
            batch = self.prefetch(s, todo)
            for kind, rid in todo:
                doc = self.build(s, kind, rid, batch=batch)
                if doc is None:
                    deletes.append(rid)
                else:
                    upserts.append(doc)
        return upserts, deletes

    def _outbox_page(self, after: int) -> list[Any]:
        with self.db.read_session() as s:
            return list(s.execute(select(SearchOutbox.id, SearchOutbox.record_kind, SearchOutbox.record_id)
                                  .where(SearchOutbox.id > after).order_by(SearchOutbox.id).limit(BATCH)).all())

    def drain(self, *, limit: int | None = None) -> int:
        """Index everything waiting in the outbox. Returns how many rows were indexed.

        Into the index's current generation (following a rebuild's switch); once the outbox is
        drained, searches move to that generation. A row is deleted only when no rebuild is
        running and its generation is still current; otherwise it is kept (and not indexed again
        here) for the generation that comes next."""
        with self._drain_lock, self._elected() as elected:
            if not elected:
                return 0  # another process is the indexer
            generation = self.backend.follow()
            if generation != self._kept_in:
                self._kept, self._kept_in = set(), generation
            done, after = 0, 0
            while limit is None or done < limit:
                # Read and decrypt without the write lock; the index commits; then the
                # rows go in a short transaction of their own.
                rows = self._outbox_page(after)
                if not rows:
                    self.backend.publish(generation)
                    break
                after = rows[-1].id
                fresh = [r for r in rows if r.id not in self._kept]
                if fresh:
                    upserts, deletes = self._entries(fresh)
                    self.backend.upsert(upserts)
                    self.backend.delete(deletes)
                handled = [r.id for r in rows]
                if self.backend.settled(generation):
                    with self.db.session() as s:
                        s.execute(delete(SearchOutbox).where(SearchOutbox.id.in_(handled)))
                        s.commit()
                    self._kept.difference_update(handled)
                else:
                    self._kept.update(handled)
                done += len(fresh)
            return done

    @contextmanager
    def _elected(self) -> Iterator[bool]:
        """One process is the indexer: an embedded index's indexer lock (held for good once
        taken); on PostgreSQL, also a session advisory lock held while draining."""
        if not self.backend.claim():
            yield False
            return
        if self.db.dialect != "postgresql":
            yield True
            return
        with self.db.engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_LOCK}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK})
                    conn.commit()

    def pending(self) -> int:
        with self.db.read_session() as s:
            return len(s.scalars(select(SearchOutbox.id).limit(100_000)).all())

    def wake(self) -> None:
        self._wake.set()

    def start(self, interval: float = 1.0) -> None:
        """Drain in a background thread: now, after every wake-up, and every ``interval`` s."""
        def run() -> None:
            failing: str | None = None
            while not self._stop.is_set():
                try:
                    self.drain()
                    if failing is not None:
                        log.warning("search indexer: indexing again")
                    failing = None
                except Exception as exc:  # noqa: BLE001 - keep indexing; say where it failed
                    if type(exc).__name__ != failing:  # once, not every second
                        log.error("search indexer: %s", type(exc).__name__)
                    failing = type(exc).__name__
                self._wake.wait(interval)
                self._wake.clear()

        self._thread = threading.Thread(target=run, name="search-indexer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # rebuild -------------------------------------------------------------------------------

    def reindex(self, progress: Callable[[int, int], None] | None = None, *, workers: int | None = None) -> int:
        """Rebuild the whole index from the archive into a new generation and switch to it.

        The current generation keeps answering (and the server keeps indexing into it) until the
        switch; stopped midway, the rebuild leaves it untouched and its own generation is thrown
        away. Another rebuild of the same index at the same time is refused (SearchUnavailable).

        Records are read and decrypted here; with ``workers`` > 1 (default: the setting given to
        the indexer) and at least ``PARALLEL_MIN`` records, their text is tokenized in that many
        worker processes while the next batch is read.
        """
        with self.backend.rebuild() as build:
            # Read only now: what committed before the rebuild lock is in what follows, and
            # every later change keeps its outbox row until a generation after this one has it.
            with self.db.read_session() as s:
                ids = ([("household", i) for i in s.scalars(select(Household.id))]
                       + [("minor", i) for i in s.scalars(select(Minor.id))]
                       + [("document", i) for i in s.scalars(select(Document.id))])
            total = len(ids)

            def batches() -> Iterator[tuple[int, list[Pending]]]:
                for start in range(0, total, BATCH):
                    chunk = ids[start : start + BATCH]
                    with self.db.read_session() as s:  # closed before the batch is handed on
                        batch = self.prefetch(s, chunk)
                        pending = [p for k, i in chunk if (p := self.gather(s, k, i, batch=batch)) is not None]
                    yield len(chunk), pending

            n = self.workers if workers is None else workers
            index_batches(build.backend, self.analyzer, batches(), workers=n if total >= PARALLEL_MIN else 1,
                          total=total, progress=progress)
            self.replay(build.backend)
        # Switched. If no server indexes this index, drain the rest of the outbox here (the
        # server's indexer does it otherwise), then delete what nobody reads any more. The
        # rebuild is done either way: what is left in the outbox stays there for the indexer.
        try:
            self.drain()
        except SearchUnavailable as exc:
            log.warning("search: the outbox is left to the server's indexer: %s", type(exc).__name__)
        self.backend.store.reap()
        return total

    def replay(self, target: SearchBackend) -> int:
        """Index every record the outbox names into ``target`` (a generation being built), keeping
        the rows: the changes made while it was built. Returns how many rows it read."""
        after = seen = 0
        while rows := self._outbox_page(after):
            after = rows[-1].id
            upserts, deletes = self._entries(rows)
            target.upsert(upserts)
            target.delete(deletes)
            seen += len(rows)
        return seen


@dataclass
class Pending:
    """A record's index entry before its text becomes tokens (the text is readable: memory only)."""

    id: str
    record_kind: str
    kind: str
    regions: list[str]
    categories: list[int]
    day: date
    sealed: bool
    parts: list[str]

    def done(self, tokens: Tokens) -> IndexDoc:
        return IndexDoc(self.id, self.record_kind, self.kind, self.regions, self.categories, self.day,
                        self.sealed, tokens.grams, tokens.words)


def index_batches(backend: SearchBackend, analyzer: Analyzer, batches: Iterable[tuple[int, list[Pending]]], *,
                  workers: int, total: int, progress: Callable[[int, int], None] | None = None) -> int:
    """Tokenize and upsert batches of ``(records read, entries)``; returns the records counted.

    With ``workers`` > 1 the tokenizing runs in a ``TokenizerPool`` and up to ``workers`` batches
    are in flight, so reading the next batch, tokenizing and the backend's commits overlap.
    """
    done = 0

    def upsert(count: int, docs: list[IndexDoc]) -> None:
        nonlocal done
        backend.upsert(docs)
        done += count
        if progress:
            progress(done, total)

    if workers <= 1:
        for count, pending in batches:
            upsert(count, [p.done(analyzer.text_tokens(p.parts)) for p in pending])
        return done
    with TokenizerPool(analyzer, workers) as pool:
        inflight: deque[tuple[int, list[Pending], Any]] = deque()
        for count, pending in batches:
            inflight.append((count, pending, pool.submit([p.parts for p in pending])))
            if len(inflight) > workers:
                c, ps, futures = inflight.popleft()
                upsert(c, [p.done(t) for p, t in zip(ps, pool.collect(futures), strict=True)])
        while inflight:
            c, ps, futures = inflight.popleft()
            upsert(c, [p.done(t) for p, t in zip(ps, pool.collect(futures), strict=True)])
    return done


def _live(s: Session, dek_id: str) -> bool:
    key = s.get(DataKey, dek_id)  # from the identity map when prefetched
    return key is not None and key.wrapped is not None
