"""Index the audit subject rows by event, so verification streams them in order

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_audit_event_subjects_seq", "audit_event_subjects", ["seq"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_event_subjects_seq", table_name="audit_event_subjects")
