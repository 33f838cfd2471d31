"""Role grants (the two-person rule), pending accounts, and ``on_behalf_of`` in the access log

``role_grants`` holds each grant of admin, auditor or custodian until a second
administrator approves or rejects it; ``users.pending_approval`` marks an account
created with such a role, which cannot sign in until then. ``audit_events.on_behalf_of``
names the user an operator command acted for (``shouhu print --as``); it is NULL in
every existing event, which therefore hashes exactly as before (format version 1).

The audit table gains its column with a plain ADD COLUMN (no table copy on SQLite):
copying the table would drop its append-only triggers.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "role_grants",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("added", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.Column("requested_by_name", sa.String(length=80), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=80), nullable=True),
        sa.Column("decided_by_name", sa.String(length=80), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_role_grants_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_role_grants")),
    )
    op.create_index(op.f("ix_role_grants_user_id"), "role_grants", ["user_id"], unique=False)
    op.create_index(op.f("ix_role_grants_status"), "role_grants", ["status"], unique=False)
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_approval", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("audit_events", sa.Column("on_behalf_of", sa.String(length=80), nullable=True))
    op.create_index(op.f("ix_audit_events_on_behalf_of"), "audit_events", ["on_behalf_of"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_audit_events_on_behalf_of"), table_name="audit_events")
    op.drop_column("audit_events", "on_behalf_of")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("pending_approval")
    op.drop_index(op.f("ix_role_grants_status"), table_name="role_grants")
    op.drop_index(op.f("ix_role_grants_user_id"), table_name="role_grants")
    op.drop_table("role_grants")
