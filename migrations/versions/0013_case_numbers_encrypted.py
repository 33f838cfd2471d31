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

A downgrade past 0013 puts an empty string (never the number) into the plain columns
the older schema requires, and keeps the new columns, so upgrading again loses nothing.

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


def _missing(table: str, *columns: sa.Column) -> list[sa.Column]:
    """Columns not there yet: a downgrade keeps them (see there), so an upgrade after it adds none."""
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}
    return [c for c in columns if c.name not in have]


def _has_index(table: str, name: str) -> bool:
    return any(ix["name"] == name for ix in sa.inspect(op.get_bind()).get_indexes(table))


def upgrade() -> None:
    new_requests = _missing("sealed_requests", sa.Column("case_number_hash", sa.String(length=64), nullable=True))
    new_records = _missing("sealed_records", sa.Column("case_number_hash", sa.String(length=64), nullable=True),
                           sa.Column("case_note", sa.LargeBinary(), nullable=True),
                           sa.Column("case_dek_id", sa.String(length=40), nullable=True))
    with op.batch_alter_table("sealed_requests", schema=None) as batch_op:
        for column in new_requests:
            batch_op.add_column(column)
        batch_op.alter_column("case_number", existing_type=sa.String(length=80), nullable=True)
        if not _has_index("sealed_requests", "ix_sealed_requests_case_number_hash"):
            batch_op.create_index(batch_op.f("ix_sealed_requests_case_number_hash"), ["case_number_hash"],
                                  unique=False)
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        for column in new_records:
            batch_op.add_column(column)
        batch_op.alter_column("case_number", existing_type=sa.String(length=80), nullable=True)
        if not _has_index("sealed_records", "ix_sealed_records_case_number_hash"):
            batch_op.create_index(batch_op.f("ix_sealed_records_case_number_hash"), ["case_number_hash"],
                                  unique=False)


def downgrade() -> None:
    # Rows written since hold their case number only in encrypted form. The older schema wants a
    # plain value: they get an empty one (never the number: a downgrade writes nothing personal
    # back in plain text), and the new columns stay, unused by the older code, so that nothing
    # is lost: upgraded again, ``archive.sealed_upgrade`` treats an empty number as absent.
    for table in ("sealed_requests", "sealed_records"):
        op.execute(f"UPDATE {table} SET case_number = '' WHERE case_number IS NULL")  # noqa: S608
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("case_number", existing_type=sa.String(length=80), nullable=False)
