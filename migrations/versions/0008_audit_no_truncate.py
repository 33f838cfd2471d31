"""Refuse TRUNCATE on the audit tables (PostgreSQL)

UPDATE and DELETE were refused row by row since 0002, but TRUNCATE fires no row
triggers: one statement could empty the log. SQLite has no TRUNCATE (its
``DELETE FROM t`` is refused by the 0002 triggers).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

APPEND_ONLY = ("audit_events", "audit_event_subjects", "audit_checkpoints")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION shouhu_audit_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
