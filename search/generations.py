"""Index generations: ``shouhu reindex`` builds a new index aside and switches to it atomically.

An engine's index lives in numbered generations. A rebuild (one at a time) writes a new
generation while the server keeps serving and indexing the current one, then makes the new
one current in one atomic step. The server's indexer follows on its next pass: it opens the new
generation, drains the outbox into it, and only then moves searches over (``LiveIndex.publish``).
Searches never see an index that lacks a change the old one had.

Coordination is by locks and one pointer, so it holds for any number of processes and survives a
kill -9 of any of them (the kernel or PostgreSQL drops a dead process's locks):

- ``FolderStore`` (tantivy, Whoosh): ``<root>/gen-NNNNNN/`` folders, and ``<root>/CURRENT`` naming
  the live one (written to a temporary file, fsynced, ``os.replace``d, folder fsynced). Beside them,
  flock(2) locks: ``rebuild.lock`` (held by the one rebuild running), ``indexer.lock`` (held for
  its lifetime by the one process that drains the outbox into this index), and ``gen-NNNNNN.lock``
  (shared by every process that has that generation open, the builder included). A generation is
  deleted only by whoever takes its lock exclusively, and never while it is current. Before this
  module an index lived in ``<root>`` itself: that is generation 0 until the first rebuild.
- ``PostgresStore``: the live table is always ``search_docs``. A rebuild fills
  ``search_docs_build`` and one transaction renames it into place, with its key check and
  generation number (``search_meta``); searches on other nodes wait for that lock and then read the
  new table, by name. A session advisory lock marks the rebuild running.

No change is lost: while a rebuild runs, the indexer still indexes every outbox row into the
current generation but keeps the rows (``settled`` is false). The rebuild reads the archive after
taking its lock, replays the outbox into the new generation just before the switch, and whatever
lands after that is drained into the new generation by the server before it serves it. A row is
deleted only once it was indexed into the generation that is current with no rebuild running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text

from core.db import Database
from search.analyzer import BlindQuery
from search.backends import (
    BUILD_TABLE,
    LIVE_TABLE,
    META_FILE,
    Filters,
    IndexDoc,
    PostgresBackend,
    Scope,
    SearchBackend,
    SearchUnavailable,
    TantivyBackend,
    WhooshBackend,
)

CURRENT = "CURRENT"
REBUILD_LOCK = "rebuild.lock"
INDEXER_LOCK = "indexer.lock"
SWITCH_LOCK = "switch.lock"
GENERATION = re.compile(r"^gen-(\d{6})$")
GENERATION_LOCK = re.compile(r"^gen-(\d{6})\.lock$")
CONTROL_FILES = {CURRENT, REBUILD_LOCK, INDEXER_LOCK, SWITCH_LOCK}
PG_REBUILD_LOCK = 7_406_330_002  # "shouhu search rebuild" (the indexer's is ...001)
REFUSE_AFTER = 2.0  # s a rebuild waits for its lock: indexers hold it shared for moments only


class GenerationGone(SearchUnavailable):
    """The generation was retired between reading the pointer and opening it: read it again."""


def generation_name(number: int) -> str:
    return f"gen-{number:06d}"


class Rebuild(Protocol):
    """A new generation being built by this process; nothing reads it before ``switch``."""

    generation: int
    backend: SearchBackend

    def switch(self) -> None: ...
    def abandon(self) -> None: ...
    def release(self) -> None: ...


class IndexStore(Protocol):
    engine: str

    def current(self) -> int: ...
    def open(self, generation: int) -> tuple[SearchBackend, Callable[[], None]]: ...
    def usable(self) -> bool: ...
    def settled(self, generation: int) -> bool: ...
    def claim(self) -> bool: ...
    def claimed(self) -> bool: ...
    def release_claim(self) -> None: ...
    def begin_rebuild(self) -> Rebuild: ...
    def reap(self) -> list[int]: ...


# flock(2) helpers -------------------------------------------------------------------------------


def _flock(path: Path, mode: int, *, wait: bool) -> int | None:
    """An fd holding ``mode`` on ``path`` (created 0600), or None if busy and not ``wait``.

    A lock file may be unlinked by whoever holds it exclusively (``reap``): a lock taken on an
    unlinked file is worthless, so it is dropped and the path opened again."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _unlock(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the only fd of the open file releases its flock


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """Every file of a generation on disk before the pointer names it."""
    for p in folder.rglob("*"):
        if p.is_file() and not p.name.endswith(".lock"):
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


# tantivy and Whoosh: generations in folders ---------------------------------------------------


class FolderStore:
    """Generations of an embedded index under ``root`` (``<index dir>/<engine>``)."""

    def __init__(self, engine: str, root: Path, *, key_check: str):
        if engine not in ("tantivy", "whoosh"):
            raise SearchUnavailable(f"unknown search backend {engine}")
        self.engine = engine
        self.root = root
        self.key_check = key_check
        self._claim: int | None = None
        self._claim_lock = threading.Lock()

    def folder(self, generation: int) -> Path:
        return self.root if generation == 0 else self.root / generation_name(generation)

    def _lock_path(self, generation: int) -> Path:
        return self.root / f"{generation_name(generation)}.lock"

    def _backend(self, folder: Path) -> SearchBackend:
        if self.engine == "tantivy":
            return TantivyBackend(folder, key_check=self.key_check)
        return WhooshBackend(folder, key_check=self.key_check)

    def _read_current(self) -> int | None:
        try:
            name = (self.root / CURRENT).read_text().strip()
        except FileNotFoundError:
            # An index from before generations sits in the root itself: generation 0.
            return 0 if (self.root / META_FILE).exists() else None
        m = GENERATION.match(name)
        if m is None:
            raise SearchUnavailable(f"{self.root / CURRENT} names no index generation: run `shouhu reindex`")
        return int(m.group(1))

    def _ensure_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def current(self) -> int:
        """The live generation; a new archive's first (empty) one is created here."""
        found = self._read_current()
        if found is not None:
            return found
        self._ensure_root()
        fd = _flock(self.root / SWITCH_LOCK, fcntl.LOCK_EX, wait=True)
        try:
            found = self._read_current()
            if found is None:
                found = self._next_number(0)
                self.folder(found).mkdir(mode=0o700)
                self._point(found)
            return found
        finally:
            _unlock(fd)

    def _numbers(self) -> set[int]:
        out: set[int] = set()
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                m = GENERATION.match(entry.name) or GENERATION_LOCK.match(entry.name)
                if m:
                    out.add(int(m.group(1)))
        return out

    def _next_number(self, current: int) -> int:
        return max({current, *self._numbers()}) + 1

    def _point(self, generation: int) -> None:
        """Make ``generation`` current: a new pointer file replaces the old one in one rename."""
        tmp = self.root / f"{CURRENT}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (generation_name(generation) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.root / CURRENT)
        _fsync_dir(self.root)

    def open(self, generation: int) -> tuple[SearchBackend, Callable[[], None]]:
        """The generation's backend and the release of this process's reader lock on it."""
        self._ensure_root()
        fd = _flock(self._lock_path(generation), fcntl.LOCK_SH, wait=True)
        try:
            folder = self.folder(generation)
            present = (folder / META_FILE).exists() if generation == 0 else folder.is_dir()
            if not present:
                raise GenerationGone(f"index generation {generation} was retired")
            backend = self._backend(folder)
        except BaseException:
            _unlock(fd)
            raise
        return backend, lambda: _unlock(fd)

    def usable(self) -> bool:
        """Whether the current generation opens with this key (a probe; nothing is kept open)."""
        try:
            backend, release = self.open(self.current())
        except SearchUnavailable:
            return False
        backend.close()
        release()
        return True

    def rebuilding(self) -> bool:
        self._ensure_root()
        fd = _flock(self.root / REBUILD_LOCK, fcntl.LOCK_SH, wait=False)
        _unlock(fd)
        return fd is None

    def settled(self, generation: int) -> bool:
        """No rebuild running, and ``generation`` is current: what was indexed into it stays.

        In this order: a rebuild points ``CURRENT`` at its generation before it lets go of its lock."""
        return not self.rebuilding() and self._read_current() == generation

    def claim(self) -> bool:
        """Become the one process that drains the outbox into this index (kept until released)."""
        with self._claim_lock:
            if self._claim is None:
                self._ensure_root()
                self._claim = _flock(self.root / INDEXER_LOCK, fcntl.LOCK_EX, wait=False)
            return self._claim is not None

    def claimed(self) -> bool:
        """Whether this process is the indexer (its searches then follow what the indexer publishes)."""
        return self._claim is not None

    def release_claim(self) -> None:
        with self._claim_lock:
            _unlock(self._claim)
            self._claim = None

    def begin_rebuild(self) -> FolderRebuild:
        self._ensure_root()
        # An indexer checking `settled` holds the lock shared for a moment: retry briefly.
        deadline = time.monotonic() + REFUSE_AFTER
        while (lock := _flock(self.root / REBUILD_LOCK, fcntl.LOCK_EX, wait=False)) is None:
            if time.monotonic() > deadline:
                raise SearchUnavailable("another `shouhu reindex` is rebuilding this index")
            time.sleep(0.05)
        reader = None
        try:
            current = self.current()
            self.reap()  # what an interrupted rebuild left, and generations nobody reads any more
            number = self._next_number(current)
            reader = _flock(self._lock_path(number), fcntl.LOCK_SH, wait=True)
            folder = self.folder(number)
            if folder.exists():  # pragma: no cover - reap removed every unlocked one
                shutil.rmtree(folder)
            folder.mkdir(mode=0o700)
            return FolderRebuild(self, number, self._backend(folder), lock, reader)
        except BaseException:
            _unlock(reader)
            _unlock(lock)
            raise

    def reap(self) -> list[int]:
        """Delete every generation but the current one that no process has open; returns them."""
        current = self._read_current()
        if current is None:
            return []
        candidates = self._numbers() - {current}
        if current != 0 and (self.root / META_FILE).exists():
            candidates.add(0)
        removed = []
        for number in sorted(candidates):
            path = self._lock_path(number)
            fd = _flock(path, fcntl.LOCK_EX, wait=False)
            if fd is None:
                continue  # open in some process (or being built)
            try:
                if self._read_current() == number:  # pragma: no cover - generations only move forward
                    continue
                if number == 0:
                    self._remove_root_generation()
                else:
                    shutil.rmtree(self.folder(number), ignore_errors=True)
                path.unlink(missing_ok=True)
                removed.append(number)
            finally:
                _unlock(fd)
        return removed

    def _remove_root_generation(self) -> None:
        """Generation 0 is the files an index kept in the root before generations."""
        for entry in os.scandir(self.root):
            if entry.is_file(follow_symlinks=False) and entry.name not in CONTROL_FILES \
                    and not GENERATION_LOCK.match(entry.name) and not entry.name.startswith(f"{CURRENT}."):
                os.unlink(entry.path)


@dataclass
class FolderRebuild:
    store: FolderStore
    generation: int
    backend: SearchBackend
    _lock: int | None
    _reader: int | None
    switched: bool = False

    @property
    def folder(self) -> Path:
        return self.store.folder(self.generation)

    def switch(self) -> None:
        """Make the new generation current; it must be complete, on disk and open with the key."""
        self.backend.close()  # tantivy: waits for merges and lets go of the writer lock
        _fsync_tree(self.folder)
        probe = self.store._backend(self.folder)  # refuses a folder built with another key
        probe.close()
        fd = _flock(self.store.root / SWITCH_LOCK, fcntl.LOCK_EX, wait=True)
        try:
            self.store._point(self.generation)
            self.switched = True
        finally:
            _unlock(fd)

    def abandon(self) -> None:
        with contextlib.suppress(Exception):
            self.backend.close()
        if not self.switched:
            shutil.rmtree(self.folder, ignore_errors=True)

    def release(self) -> None:
        _unlock(self._reader)
        _unlock(self._lock)
        self._reader = self._lock = None


# PostgreSQL: a table built aside and renamed into place --------------------------------------


class PostgresStore:
    """The postgres backend's generations: ``search_docs`` is live, ``search_docs_build`` is next."""

    engine = "postgres"

    def __init__(self, db: Database, *, key_check: str):
        self.db = db
        self.key_check = key_check

    @staticmethod
    def _generation(conn: Any) -> int:
        value = conn.execute(text("SELECT value FROM search_meta WHERE name = 'generation'")).scalar()
        return int(value) if value is not None else 0

    def current(self) -> int:
        self._require_postgres()
        with self.db.engine.connect() as conn:
            return self._generation(conn)

    def _require_postgres(self) -> None:
        if self.db.dialect != "postgresql":
            raise SearchUnavailable("the postgres search backend needs SHOUHU_DATABASE_URL to be PostgreSQL")

    def open(self, generation: int) -> tuple[SearchBackend, Callable[[], None]]:
        # By name: after a switch the same statements reach the new table.
        return PostgresBackend(self.db, key_check=self.key_check), lambda: None

    def usable(self) -> bool:
        try:
            self.open(self.current())
        except SearchUnavailable:
            return False
        return True

    def settled(self, generation: int) -> bool:
        with self.db.engine.begin() as conn:
            # Shared with other indexers, refused while a rebuild holds it exclusively.
            free = conn.execute(text("SELECT pg_try_advisory_xact_lock_shared(:k)"), {"k": PG_REBUILD_LOCK}).scalar()
            return bool(free) and self._generation(conn) == generation

    def claim(self) -> bool:
        return True  # the indexer's advisory lock elects one process per drain

    def claimed(self) -> bool:
        return True  # nothing to follow: every node reads `search_docs` by name

    def release_claim(self) -> None:
        pass

    def begin_rebuild(self) -> PostgresRebuild:
        self._require_postgres()
        conn = self.db.engine.connect()
        try:
            # An indexer checking `settled` holds the lock shared for a moment: retry briefly.
            deadline = time.monotonic() + REFUSE_AFTER
            while not conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_REBUILD_LOCK}).scalar():
                if time.monotonic() > deadline:
                    raise SearchUnavailable("another `shouhu reindex` is rebuilding this index")
                time.sleep(0.05)
            conn.commit()
            with self.db.engine.begin() as c:
                c.execute(text(f"DROP TABLE IF EXISTS {BUILD_TABLE}"))
                c.execute(text(  # the columns of migration 0005's search_docs; its indexes come at the end
                    f"CREATE TABLE {BUILD_TABLE} ("
                    " id varchar(40) PRIMARY KEY, record_kind varchar(20) NOT NULL, kind varchar(40) NOT NULL,"
                    " regions text[] NOT NULL, categories integer[] NOT NULL, day date NOT NULL,"
                    " sealed boolean NOT NULL, grams tsvector NOT NULL, words tsvector NOT NULL)"))
                number = self._generation(c) + 1
            return PostgresRebuild(self, number, PostgresBackend(self.db, key_check=None, table=BUILD_TABLE), conn)
        except BaseException:
            _pg_unlock(conn)
            raise

    def reap(self) -> list[int]:
        return []


def _pg_unlock(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_REBUILD_LOCK})
        conn.commit()
    conn.close()


@dataclass
class PostgresRebuild:
    store: PostgresStore
    generation: int
    backend: SearchBackend
    _conn: Any
    switched: bool = False

    def switch(self) -> None:
        db = self.store.db
        with db.engine.begin() as c:  # built before the switch, so the exclusive lock below is short
            c.execute(text(f"CREATE INDEX ix_{BUILD_TABLE}_grams ON {BUILD_TABLE} USING gin (grams)"))
            c.execute(text(f"CREATE INDEX ix_{BUILD_TABLE}_regions ON {BUILD_TABLE} USING gin (regions)"))
            c.execute(text(f"ANALYZE {BUILD_TABLE}"))
        with db.engine.begin() as c:
            # Searches and the indexer wait for this lock, then resolve `search_docs` anew: the new table.
            c.execute(text(f"LOCK TABLE {LIVE_TABLE} IN ACCESS EXCLUSIVE MODE"))
            c.execute(text(f"ALTER TABLE {LIVE_TABLE} RENAME TO search_docs_retired"))
            c.execute(text(f"ALTER TABLE {BUILD_TABLE} RENAME TO {LIVE_TABLE}"))
            c.execute(text("DROP TABLE search_docs_retired"))
            for old, new in ((f"ix_{BUILD_TABLE}_grams", "ix_search_docs_grams"),
                             (f"ix_{BUILD_TABLE}_regions", "ix_search_docs_regions"),
                             (f"{BUILD_TABLE}_pkey", "search_docs_pkey")):
                c.execute(text(f"ALTER INDEX {old} RENAME TO {new}"))
            for name, value in (("key_check", self.store.key_check), ("generation", str(self.generation))):
                c.execute(text("INSERT INTO search_meta (name, value) VALUES (:n, :v) "
                               "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"), {"n": name, "v": value})
        self.switched = True

    def abandon(self) -> None:
        if not self.switched:
            with contextlib.suppress(Exception), self.store.db.engine.begin() as c:
                c.execute(text(f"DROP TABLE IF EXISTS {BUILD_TABLE}"))

    def release(self) -> None:
        if self._conn is not None:
            _pg_unlock(self._conn)
            self._conn = None


def open_store(name: str, *, folder: Path, db: Database, key_check: str) -> IndexStore:
    """The generations of engine ``name``: a folder under ``folder``, or the PostgreSQL tables."""
    if name == "postgres":
        return PostgresStore(db, key_check=key_check)
    return FolderStore(name, folder / name, key_check=key_check)


# The index a process serves ------------------------------------------------------------------


@dataclass
class _Open:
    number: int
    backend: SearchBackend
    release: Callable[[], None]
    users: int = 0


class LiveIndex:
    """The search index of this process: the store's current generation, followed across rebuilds.

    A ``SearchBackend`` to its callers. In the indexer's process, searches use the generation the
    indexer last published: ``follow`` (at the start of each pass) moves writes to a new
    generation, ``publish`` (once the outbox is drained into it) moves searches. Any other process
    (a second server on the same index folder) follows ``CURRENT`` on its next search. A
    generation is closed once neither searches nor writes use it, and its folder deleted by the
    indexer once no process has it open.
    """

    def __init__(self, store: IndexStore):
        self.store = store
        self._lock = threading.Lock()
        self._open: dict[int, _Open] = {}
        self._serving: _Open | None = None
        self._writing: _Open | None = None

    @property
    def name(self) -> str:
        return self.store.engine

    def _get(self, number: int) -> _Open:
        g = self._open.get(number)
        if g is None:
            backend, release = self.store.open(number)
            g = self._open[number] = _Open(number, backend, release)
        return g

    def _current(self) -> _Open:
        for _ in range(5):
            try:
                return self._get(self.store.current())
            except GenerationGone:
                continue
        raise SearchUnavailable("the search index kept changing generation while being opened")

    def _serve(self) -> _Open:
        """The generation for a search (under ``_lock``)."""
        if self._serving is None:
            self._serving = self._current()
        elif not self.store.claimed():
            # A generation it cannot read (another key): keep answering from the one it has.
            with contextlib.suppress(SearchUnavailable):
                self._serving = self._current()
        return self._serving

    def _idle(self) -> list[_Open]:
        """Generations nothing here uses any more, forgotten (under ``_lock``): close them after."""
        idle = [g for g in self._open.values() if g is not self._serving and g is not self._writing and g.users == 0]
        for g in idle:
            del self._open[g.number]
        return idle

    @staticmethod
    def _close(gens: list[_Open]) -> None:
        for g in gens:
            with contextlib.suppress(Exception):
                g.backend.close()
            g.release()

    @contextmanager
    def _use(self) -> Iterator[SearchBackend]:
        with self._lock:
            g = self._serve()
            g.users += 1
        try:
            yield g.backend
        finally:
            with self._lock:
                g.users -= 1
                idle = self._idle()
            self._close(idle)

    def check(self) -> None:
        """Raises SearchUnavailable unless searches can be answered."""
        with self._use():
            pass

    @property
    def generation(self) -> int | None:
        """The generation searches use (None until the first one)."""
        g = self._serving
        return g.number if g is not None else None

    # SearchBackend ----------------------------------------------------------------------------

    def search(self, q: BlindQuery, scope: Scope, f: Filters, *, limit: int, offset: int
               ) -> tuple[int, list[tuple[str, float]]]:
        with self._use() as b:
            return b.search(q, scope, f, limit=limit, offset=offset)

    def count(self) -> int:
        with self._use() as b:
            return b.count()

    def files(self) -> list[Path]:
        with self._use() as b:
            return b.files()

    def _writer(self) -> SearchBackend:
        with self._lock:
            if self._writing is None:
                self._writing = self._current()
            return self._writing.backend

    def upsert(self, docs: Sequence[IndexDoc]) -> None:
        self._writer().upsert(docs)

    def delete(self, ids: Sequence[str]) -> None:
        self._writer().delete(ids)

    def clear(self) -> None:
        self._writer().clear()

    def close(self) -> None:
        with self._lock:
            opened = list(self._open.values())
            self._open.clear()
            self._serving = self._writing = None
        self._close(opened)
        self.store.release_claim()

    # the indexer's side ------------------------------------------------------------------------

    def claim(self) -> bool:
        return self.store.claim()

    def follow(self) -> int:
        """Write the store's current generation from now on; returns its number. Searches stay on
        theirs until ``publish``. Raises SearchUnavailable if it cannot be opened (another key):
        then nothing moves. Deletes the generations no process has open any more."""
        with self._lock:
            self._writing = self._current()
            number = self._writing.number
            idle = self._idle()
        self._close(idle)
        self.store.reap()
        return number

    def settled(self, generation: int) -> bool:
        return self.store.settled(generation)

    def publish(self, generation: int) -> None:
        """Searches move to ``generation`` (the one written, once caught up with the outbox)."""
        with self._lock:
            if self._writing is not None and self._writing.number == generation:
                self._serving = self._writing
            idle = self._idle()
        self._close(idle)
        if idle:
            self.store.reap()

    @contextmanager
    def rebuild(self) -> Iterator[Rebuild]:
        """A new generation, made current when the block ends without error, else thrown away."""
        build = self.store.begin_rebuild()
        try:
            yield build
            build.switch()
        except BaseException:
            build.abandon()
            raise
        finally:
            build.release()
