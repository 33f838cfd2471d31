"""Sealed records: case numbers encrypted and hashed, legal bases as codes

``sealed_requests`` gains ``case_number_hash`` (the case number's keyed hash; the
number itself moves into the request's sealed payload). ``sealed_records`` gains
``case_number_hash`` and ``case_note``/``case_dek_id`` (the number sealed under a
data key of its own). The plain ``case_number`` columns become nullable: new rows
never write them. ``legal_basis`` (and ``unseal_basis``) now hold a code of
``access_control.legal_bases``.

This migration has no master key, so it cannot encrypt what earlier versions
stored in plain text. ``archive.sealed_upgrade.run`` does, with the key ring:
``shouhu init`` (which also applies this migration) calls it after upgrading. It
moves each plain case number (and a free-text legal basis, as ``legacy``) into the
row's envelope and empties the plain column; rerunning it finds nothing to do.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sealed_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("case_number_hash", sa.String(length=64), nullable=True))
        batch_op.alter_column("case_number", existing_type=sa.String(length=80), nullable=True)
        batch_op.create_index(batch_op.f("ix_sealed_requests_case_number_hash"), ["case_number_hash"], unique=False)
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("case_number_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("case_note", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("case_dek_id", sa.String(length=40), nullable=True))
        batch_op.alter_column("case_number", existing_type=sa.String(length=80), nullable=True)
        batch_op.create_index(batch_op.f("ix_sealed_records_case_number_hash"), ["case_number_hash"], unique=False)


def downgrade() -> None:
    # Rows written since hold no plain case number: a downgrade would leave the NOT NULL column
    # without a value for them, so it refuses rather than invent one.
    bind = op.get_bind()
    for table in ("sealed_requests", "sealed_records"):
        if bind.execute(sa.text(f"SELECT 1 FROM {table} WHERE case_number IS NULL LIMIT 1")).first():  # noqa: S608
            raise RuntimeError(f"{table} holds case numbers only in encrypted form; cannot downgrade past 0013")
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_records_case_number_hash"))
        batch_op.alter_column("case_number", existing_type=sa.String(length=80), nullable=False)
        batch_op.drop_column("case_dek_id")
        batch_op.drop_column("case_note")
        batch_op.drop_column("case_number_hash")
    with op.batch_alter_table("sealed_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_requests_case_number_hash"))
        batch_op.alter_column("case_number", existing_type=sa.String(length=80), nullable=False)
        batch_op.drop_column("case_number_hash")
