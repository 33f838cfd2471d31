"""SQLAlchemy 2 engine and sessions: SQLite (WAL, embedded default) or PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, DateTime, Engine, MetaData, create_engine, event, inspect
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

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


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An opaque id: a type prefix and 20 random base32 characters (100 bits)."""
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return prefix + "_" + "".join(secrets.choice(alphabet) for _ in range(20))


# As many connections as the server has request threads (anyio's default is 40), so a
# request waits for a lock it needs, never for a free connection.
POOL = {"pool_size": 5, "max_overflow": 35, "pool_timeout": 120}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine; on SQLite with WAL, full sync, foreign keys and immediate write locks."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 60, "check_same_thread": False}, **{**POOL, **kwargs}
        )

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control from pysqlite so that we can BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged commit survives a crash
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Every request writes at least its audit event: take the write lock up
            # front so two transactions never deadlock upgrading a read lock.
            # ``Database.reader()`` connections only read: a plain (deferred) BEGIN
            # never waits for the write lock, so they may run while this very
            # thread's request transaction holds it.
            read_only = conn.get_execution_options().get(READ_ONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **{**POOL, **kwargs})


class Database:
    """Engine plus session factory for one settings object."""

    def __init__(self, settings: Settings, **engine_kwargs: Any) -> None:
        self.url = settings.effective_database_url
        self.engine = make_engine(self.url, **engine_kwargs)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Long reads (log verification, exports) see a snapshot without the write lock.
        self.read_sessions = sessionmaker(
            self.engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
        )

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
        session = self.sessions()
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

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
