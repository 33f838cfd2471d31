"""Helpers for the audit runtime tests: reading the log, blocking it, serving, workers.

``AuditBlocker`` makes ``audit_events`` refuse INSERTs from a connection of its
own (not the application's pool), the way an operator's mistake or a full disk
would look to the application: a trigger on SQLite, a trigger function that
raises on PostgreSQL (tests connect as a superuser, so REVOKE would not bite).

``read_minors`` runs in a spawned process: it builds its own ``Runtime`` from
plain settings values and reads minors through the service, as the API does.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import select, text

from core.settings import Settings
from tests.cli_support import SHOUHU, Server
from tests.cli_support import serving as cli_serving

EVENT_COLUMNS = ("seq", "actor", "actor_id", "action", "outcome", "resource_kind", "resource_id",
                 "reason", "request_id")


# Reading the log ----------------------------------------------------------------------


def log_size(engine: Any) -> int:
    """The head row's size; it must agree with the number of event rows."""
    with engine.connect() as conn:
        size = conn.execute(text("SELECT size FROM audit_head WHERE id = 1")).scalar_one()
        rows = conn.execute(text("SELECT count(*) FROM audit_events")).scalar_one()
    assert size == rows, f"audit_head says {size} events, the table holds {rows}"
    return int(size)


def audit_size(rt: Any) -> int:
    """The log's size as the service reads it (``AuditLog.size``, a read session)."""
    from access_control.audit import AuditLog

    with rt.db.read_session() as s:
        return AuditLog.size(s)


def last_seq(rt: Any) -> int:
    """The highest event seq stored (0 for an empty log), read with plain SQL."""
    with rt.db.engine.connect() as conn:
        return int(conn.execute(text("SELECT coalesce(max(seq), 0) FROM audit_events")).scalar_one())


def events_after(engine: Any, seq: int) -> list[dict[str, Any]]:
    cols = ", ".join(EVENT_COLUMNS)
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT {cols} FROM audit_events WHERE seq > :s ORDER BY seq"), {"s": seq}
        ).mappings().all()
    return [dict(r) for r in rows]


def count_events(engine: Any, action: str, outcome: str | None = None) -> int:
    sql = "SELECT count(*) FROM audit_events WHERE action = :a"
    params: dict[str, Any] = {"a": action}
    if outcome is not None:
        sql += " AND outcome = :o"
        params["o"] = outcome
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


# Making the log unwritable from outside ------------------------------------------------

_PG_FUNCTION = "shouhu_test_block_audit"


class AuditBlocker:
    """Blocks and unblocks INSERTs into ``audit_events`` from a connection of its own."""

    def __init__(self, settings: Settings):
        self.url = settings.effective_database_url
        self.sqlite = settings.is_sqlite
        self.blocked = False

    def _sqlite(self, sql: str) -> None:
        path = self.url.split("///", 1)[1]
        conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()

    def _pg(self, *statements: str) -> None:
        url = self.url.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(url, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)

    def block(self) -> None:
        if self.sqlite:
            self._sqlite("CREATE TRIGGER block_audit BEFORE INSERT ON audit_events "
                         "BEGIN SELECT RAISE(ABORT, 'blocked'); END")
        else:
            self._pg(
                f"CREATE OR REPLACE FUNCTION {_PG_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'blocked'; END $$",
                f"CREATE TRIGGER block_audit BEFORE INSERT ON audit_events "
                f"FOR EACH ROW EXECUTE FUNCTION {_PG_FUNCTION}()",
            )
        self.blocked = True

    def unblock(self) -> None:
        if self.sqlite:
            self._sqlite("DROP TRIGGER IF EXISTS block_audit")
        else:
            self._pg("DROP TRIGGER IF EXISTS block_audit ON audit_events",
                     f"DROP FUNCTION IF EXISTS {_PG_FUNCTION}()")
        self.blocked = False


@contextmanager
def audit_blocker(settings: Settings) -> Iterator[AuditBlocker]:
    """An ``AuditBlocker`` that is always unblocked on the way out (the PG database is shared)."""
    blocker = AuditBlocker(settings)
    try:
        yield blocker
    finally:
        blocker.unblock()


# A real ``shouhu serve`` --------------------------------------------------------------


def server_env(settings: Settings) -> dict[str, str]:
    """The environment for a ``shouhu`` subprocess on the same archive as ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUHU_")}
    assert settings.master_key is not None
    env.update(
        SHOUHU_DATA_DIR=str(settings.data_dir),
        SHOUHU_MASTER_KEY=settings.master_key.get_secret_value(),
        SHOUHU_ARGON2_TIME_COST=str(settings.argon2_time_cost),
        SHOUHU_ARGON2_MEMORY_KIB=str(settings.argon2_memory_kib),
        SHOUHU_ARGON2_PARALLELISM=str(settings.argon2_parallelism),
        SHOUHU_AUDIT_CHECKPOINT_INTERVAL_SECONDS="0",
        SHOUHU_MFA_REQUIRED_ROLES=settings.mfa_required_roles,
        PYTHONUNBUFFERED="1",
    )
    if settings.database_url:
        env["SHOUHU_DATABASE_URL"] = settings.database_url
    return env


REPO = Path(__file__).resolve().parents[1]


def run_shouhu(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``shouhu`` command against the archive of ``settings``, its result whatever it is."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUHU_")}
    assert settings.master_key is not None
    env.update(SHOUHU_DATA_DIR=str(settings.data_dir), SHOUHU_MASTER_KEY=settings.master_key.get_secret_value(),
               SHOUHU_CIPHER_SUITE=settings.cipher_suite, COLUMNS="500")
    if settings.database_url:
        env["SHOUHU_DATABASE_URL"] = settings.database_url
    # The working tree's code, whatever the editable install's package list says.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([SHOUHU, *args], env=env, cwd=settings.data_dir.parent, capture_output=True, text=True,
                          timeout=120, check=False)


@contextmanager
def serving(settings: Settings, output_path: Path, *, ready_timeout: float = 60) -> Iterator[Server]:
    """``shouhu serve`` on ``settings``' archive, on a free port of 127.0.0.1; always stopped on the way out."""
    with cli_serving(server_env(settings), output_path, ready_timeout=ready_timeout) as server:
        yield server


# Concurrent readers (run in spawned processes) ----------------------------------------


def settings_values(settings: Settings) -> dict[str, Any]:
    """Plain, picklable values that rebuild ``settings`` in another process."""
    assert settings.master_key is not None
    return {
        "data_dir": str(settings.data_dir),
        "database_url": settings.database_url,
        "master_key": settings.master_key.get_secret_value(),
        "argon2_time_cost": settings.argon2_time_cost,
        "argon2_memory_kib": settings.argon2_memory_kib,
        "argon2_parallelism": settings.argon2_parallelism,
        "audit_checkpoint_interval_seconds": 0,
        "mfa_required_roles": settings.mfa_required_roles,
    }


def read_minors(values: dict[str, Any], username: str, minor_ids: list[str], expected_names: list[str],
                count: int, barrier: Any, results: Any, worker: int) -> None:
    """Read ``count`` minors as ``username`` through the service, each read audited."""
    done = 0
    try:
        from access_control.identity import User, actor_for
        from runtime import Runtime

        rt = Runtime.open(Settings(**values))
        try:
            with rt.db.session() as s:
                user = s.scalars(select(User).where(User.username == username)).one()
                actor = actor_for(s, user)
            barrier.wait(timeout=120)
            for i in range(count):
                k = (i + worker) % len(minor_ids)
                with rt.db.session() as s:
                    minor = rt.archive.read_minor(rt.guard(s, actor, request_id=f"req_w{worker}_{i}"),
                                                  minor_ids[k])
                if minor.name != expected_names[k]:
                    raise AssertionError(f"worker {worker} read {minor.id} with the wrong content")
                done += 1
        finally:
            rt.close()
    except BaseException as exc:  # report to the parent, which fails the test
        results.put((worker, done, f"{type(exc).__name__}: {exc}"))
        return
    results.put((worker, done, None))
