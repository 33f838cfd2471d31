"""External identities (OpenID Connect) linked to accounts

``identity_links``: an issuer and the keyed hash of the configured claim's value, the
account it names, and the two-person rule's request and decision.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "identity_links",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("user_id", sa.String(length=40), nullable=False),
        sa.Column("issuer", sa.String(length=255), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("subject_hint", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=80), nullable=False),
        sa.Column("requested_by_name", sa.String(length=80), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_by", sa.String(length=80), nullable=True),
        sa.Column("decided_by_name", sa.String(length=80), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_identity_links_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_identity_links")),
        sa.UniqueConstraint("issuer", "subject_hash", name=op.f("uq_identity_links_issuer_subject_hash")),
    )
    op.create_index(op.f("ix_identity_links_user_id"), "identity_links", ["user_id"], unique=False)
    op.create_index(op.f("ix_identity_links_status"), "identity_links", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_identity_links_status"), table_name="identity_links")
    op.drop_index(op.f("ix_identity_links_user_id"), table_name="identity_links")
    op.drop_table("identity_links")
