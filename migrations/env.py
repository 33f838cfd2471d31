"""Alembic environment: one migration history for SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import access_control.audit  # noqa: F401  (register tables on Base.metadata)
import access_control.identity  # noqa: F401
import access_control.regions  # noqa: F401
import access_control.sealed  # noqa: F401
import archive.models  # noqa: F401
import core.keys  # noqa: F401
import core.outbox  # noqa: F401
from core.db import Base

config = context.config
target_metadata = Base.metadata


RAW_TABLES = {"search_docs", "search_meta"}  # PostgreSQL-only tables made with raw SQL (0005)


def include_object(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    return not (type_ == "table" and name in RAW_TABLES)


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        _migrate(conn)
    engine.dispose()


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `shouhu init`")
run()
