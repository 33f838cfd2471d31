"""SQLAlchemy 2 engine and sessions: SQLite (WAL, embedded default) or PostgreSQL."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event, inspect
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

from core.redact import loggable
from core.settings import Settings

READ_ONLY_OPTION = "shouhu_read_only"

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def new_id(prefix: str) -> str:
    """An opaque id: a type prefix and 20 random base32 characters (just under 100 bits).

    Drawn again in the rare case (about 1 in 100,000) that it holds ten digits in a row: the log
    takes such a run for an ID or phone number and keeps a marker instead of the id.
    """
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    while True:
        value = prefix + "_" + "".join(secrets.choice(alphabet) for _ in range(20))
        if loggable(value):
            return value


@contextmanager
def _closing(session: Session) -> Iterator[Session]:
    """``session``, rolled back if the block fails and closed either way."""
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class WriteTurns:
    """First come, first served turns at SQLite's one write lock, for the threads of a process.

    SQLite's own busy handler retries by sleeping with back-off, which is neither fair nor
    prompt: under load an unlucky writer starves past any timeout while others take the lock
    over and over. Writers of one process queue here instead and are handed the turn as the
    previous writer commits or rolls back; SQLite's busy timeout is left for other processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def acquire(self, timeout: float) -> bool:
        with self._lock:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._waiting.append(turn)
        if turn.wait(timeout):
            return True
        with self._lock:
            if turn.is_set():  # handed over just as the wait ended
                return True
            self._waiting.remove(turn)
            return False

    def release(self) -> None:
        with self._lock:
            if self._waiting:
                self._waiting.popleft().set()  # the turn passes on; still held
            else:
                self._held = False


_TURNS: dict[str, WriteTurns] = {}
_TURNS_LOCK = threading.Lock()


def write_turns(path: str) -> WriteTurns:
    """The queue for one database file (engines of one process on the same file share it)."""
    key = os.path.realpath(path)
    with _TURNS_LOCK:
        return _TURNS.setdefault(key, WriteTurns())


class WriteTurnTimeout(OperationalError):
    """A writer of this process did not get its turn at SQLite's write lock in time."""

    def __init__(self) -> None:
        super().__init__("BEGIN IMMEDIATE", None, TimeoutError("no write turn within the lock timeout"))


class _SqliteConnection(sqlite3.Connection):
    """pysqlite's connection, giving back the write turn once a transaction has ended."""

    turns: WriteTurns | None = None
    holds_turn = False

    def take_turn(self, timeout: float) -> None:
        if not self.holds_turn and self.turns is not None:
            if not self.turns.acquire(timeout):
                raise WriteTurnTimeout()
            self.holds_turn = True

    def give_turn(self) -> None:
        if self.holds_turn and self.turns is not None:
            self.holds_turn = False
            self.turns.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            if self.in_transaction is False:
                self.give_turn()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_turn()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_turn()


# Requests and connections. At most ``request_threads`` requests are in the works at once
# (main.Admission) and each holds at most two connections (its request session, which may keep
# one between two of its steps, and a short nested read: the key ring, a search, the audit
# desk); public verifications and background threads (indexer, checkpoints) hold one each.
# With this many no request waits for a connection that a request waiting for it holds.
def pool_options(request_threads: int, lock_timeout: float) -> dict[str, Any]:
    return {"pool_size": 10, "max_overflow": 2 * request_threads + 10, "pool_timeout": lock_timeout}


def make_engine(url: str, *, lock_timeout: float = 5.0, request_threads: int = 40, **kwargs: Any) -> Engine:
    """An engine whose lock waits end after ``lock_timeout`` seconds.

    Transactions begin as reads or writes by the ``READ_ONLY_OPTION`` execution option
    (see ``Database.request_session``): on SQLite a write begins IMMEDIATE (it takes the
    write lock up front, so two transactions never deadlock upgrading a read lock) and a
    read begins deferred with ``query_only`` on; on PostgreSQL a read is READ ONLY. A read
    transaction that tries to write fails loudly instead of taking a lock.
    """
    options = {**pool_options(request_threads, lock_timeout), **kwargs}
    millis = max(1, int(lock_timeout * 1000))
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        turns = write_turns(path) if path and path != ":memory:" else None
        engine = create_engine(
            url, connect_args={"timeout": lock_timeout, "check_same_thread": False, "factory": _SqliteConnection},
            **options,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from pysqlite so that we can BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            dbapi_conn.turns = turns
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives a crash
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={millis}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # A plain (deferred) BEGIN never waits for the write lock, so reads run while
            # another transaction writes; query_only makes a write in it an error.
            read_only = bool(conn.get_execution_options().get(READ_ONLY_OPTION, False))
            info = conn.connection.info
            if info.get(READ_ONLY_OPTION) is not read_only:
                conn.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
                info[READ_ONLY_OPTION] = read_only
            if read_only:
                conn.exec_driver_sql("BEGIN")
                return
            dbapi_conn = conn.connection.dbapi_connection
            dbapi_conn.take_turn(lock_timeout)  # this process's writers queue in order
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # another process's: SQLite's busy timeout
            except BaseException:
                dbapi_conn.give_turn()
                raise

        return engine
    # Added to (not in place of) any `options` the URL gives.
    given = make_url(url).query.get("options")
    options_arg = " ".join([*([given] if isinstance(given, str) else list(given or ())), f"-c lock_timeout={millis}"])
    connect_args = {"options": options_arg, "connect_timeout": max(2, round(lock_timeout))}
    engine = create_engine(url, pool_pre_ping=True, connect_args=connect_args, **options)

    @event.listens_for(engine, "begin")
    def _pg_begin(conn: Any) -> None:
        if conn.get_execution_options().get(READ_ONLY_OPTION, False):
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


def is_busy(exc: BaseException) -> bool:
    """A lock or connection that could not be had in time (or a transaction to retry): a 503."""
    if isinstance(exc, SATimeoutError | WriteTurnTimeout):  # no pooled connection, no write turn in time
        return True
    if not isinstance(exc, OperationalError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED and their extended codes
    # lock_not_available (lock_timeout), query_canceled, serialization failure, deadlock
    return getattr(orig, "sqlstate", None) in ("55P03", "57014", "40001", "40P01")


_MODES = "shouhu_request_binds"


def _back_to_reading(session: Session) -> None:
    binds = session.info.get(_MODES)
    if binds is not None:
        session.bind = binds[1]


class WriteWhileReading(RuntimeError):
    """A request session was asked to write while reading: a programming error."""


def _no_writes_while_reading(session: Session, _flush_context: Any, _instances: Any) -> None:
    binds = session.info.get(_MODES)
    if binds is None or session.bind is binds[0]:
        return
    if session.new or session.deleted or any(session.is_modified(o) for o in session.dirty):
        raise WriteWhileReading(
            "a write in a request session that is reading (a GET, or after a commit): "
            "call Guard.begin_write() (core.db.begin_write) before changing records")


def is_reading(session: Session) -> bool:
    """Whether a request session is reading (a GET, or after a commit): it can hold no write."""
    binds = session.info.get(_MODES)
    return binds is not None and session.bind is binds[1]


def begin_write(session: Session) -> None:
    """Make the session's next statements run in a write transaction (SQLite: BEGIN IMMEDIATE).

    For a request session that is reading: its read transaction (which wrote nothing) is
    committed first, keeping what it loaded. Other sessions always write: nothing to do.
    """
    binds = session.info.get(_MODES)
    if binds is None or session.bind is binds[0]:
        return
    if session.in_transaction():
        session.commit()
    session.bind = binds[0]


class Database:
    """Engine plus session factory for one settings object."""

    def __init__(self, settings: Settings, **engine_kwargs: Any) -> None:
        self.url = settings.effective_database_url
        self.engine = make_engine(self.url, lock_timeout=settings.database_lock_timeout_seconds,
                                  request_threads=settings.request_threads, **engine_kwargs)
        self.read_engine = self.engine.execution_options(**{READ_ONLY_OPTION: True})
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Long reads (log verification, exports) see a snapshot without the write lock.
        self.read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        event.listen(self.sessions, "after_commit", _back_to_reading)
        event.listen(self.sessions, "before_flush", _no_writes_while_reading)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def reader(self) -> Iterator[Connection]:
        """A connection of its own for a short read that must never wait for a writer.

        On SQLite it begins a deferred read transaction (WAL readers never block);
        the key ring reads KEKs through it in the middle of a request transaction.
        Writing through it is a programming error.
        """
        with self.engine.connect() as conn:
            conn.execution_options(**{READ_ONLY_OPTION: True})
            yield conn

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that rolls back on error and always closes."""
        with _closing(self.sessions()) as session:
            yield session

    @contextmanager
    def request_session(self, *, write: bool) -> Iterator[Session]:
        """The session of one request: rolls back on error, always closes.

        It starts writing (``write``: the request changes records, and its reads and writes are
        one transaction) or reading. After every commit it goes back to reading, so that the
        request builds its answer without a lock or a write transaction open (on SQLite the
        next statement would otherwise take the write lock again and keep it until the
        session closes). ``begin_write`` switches it to writing again (the guard does so to
        append an audit event).
        """
        session = self.sessions(bind=self.engine if write else self.read_engine)
        session.info[_MODES] = (self.engine, self.read_engine)
        with _closing(session):
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only; on SQLite it never takes the write lock."""
        session = self.read_sessions()
        try:
            yield session
        finally:
            session.rollback()
            session.close()

    def has_schema(self) -> bool:
        return inspect(self.engine).has_table("alembic_version")

    def dispose(self) -> None:
        self.engine.dispose()
