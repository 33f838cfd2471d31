"""Sealed records: reasons encrypted, unsealing names its statutory cause

``sealed_requests.reasons`` holds the decision and revocation reasons sealed
with the request's own data key. The plain ``decision_reason`` column stays for
rows decided before this revision (the migration has no key to encrypt them
with): it is read for those rows only, never written again, and emptied when
such a request is next written. ``sealed_records`` gains the statutory cause of
an unsealing and its free-text note, sealed under a data key of its own.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sealed_requests", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasons", sa.LargeBinary(), nullable=True))
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unseal_cause", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("unseal_note", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("unseal_dek_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.drop_column("unseal_dek_id")
        batch_op.drop_column("unseal_note")
        batch_op.drop_column("unseal_cause")
    with op.batch_alter_table("sealed_requests", schema=None) as batch_op:
        batch_op.drop_column("reasons")
