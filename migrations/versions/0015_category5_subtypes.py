"""Category 5's sub-type: a poor family, serious illness or disability, or involvement in a case

``minor_categories`` gains ``subtype`` (``core.categories.SUBTYPES``; only on category 5
rows, null elsewhere and on rows written before, whose labels then never say 涉案).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("minor_categories", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subtype", sa.String(length=20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("minor_categories", schema=None) as batch_op:
        batch_op.drop_column("subtype")
