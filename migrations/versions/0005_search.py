"""Search: the transactional outbox, and the PostgreSQL blind-token table

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("record_kind", sa.String(length=20), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_search_outbox")),
    )
    op.create_index(op.f("ix_search_outbox_record_id"), "search_outbox", ["record_id"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        # Blind tokens only: hex strings with positions. No readable text is stored here.
        op.execute(
            "CREATE TABLE search_docs ("
            " id varchar(40) PRIMARY KEY, record_kind varchar(20) NOT NULL, kind varchar(40) NOT NULL,"
            " regions text[] NOT NULL, categories integer[] NOT NULL, day date NOT NULL,"
            " sealed boolean NOT NULL, grams tsvector NOT NULL, words tsvector NOT NULL)"
        )
        op.execute("CREATE INDEX ix_search_docs_grams ON search_docs USING gin (grams)")
        op.execute("CREATE INDEX ix_search_docs_regions ON search_docs USING gin (regions)")
        op.execute("CREATE TABLE search_meta (name varchar(40) PRIMARY KEY, value text NOT NULL)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE IF EXISTS search_meta")
        op.execute("DROP TABLE IF EXISTS search_docs")
    op.drop_index(op.f("ix_search_outbox_record_id"), table_name="search_outbox")
    op.drop_table("search_outbox")
