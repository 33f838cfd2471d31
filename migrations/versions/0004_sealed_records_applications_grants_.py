"""sealed records, applications, grants, disclosures

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 19:16:51.149697
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "sealed_records",
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("record_kind", sa.String(length=20), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=True),
        sa.Column("region_code", sa.String(length=12), nullable=False),
        sa.Column("legal_basis", sa.String(length=200), nullable=False),
        sa.Column("case_number", sa.String(length=80), nullable=False),
        sa.Column("sealed_by", sa.String(length=40), nullable=False),
        sa.Column("sealed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("unsealed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("unsealed_by", sa.String(length=40), nullable=True),
        sa.Column("unseal_basis", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["region_code"], ["regions.code"], name=op.f("fk_sealed_records_region_code_regions")),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_sealed_records")),
    )
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sealed_records_subject_hash"), ["subject_hash"], unique=False)

    op.create_table(
        "sealed_requests",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("requester_id", sa.String(length=40), nullable=False),
        sa.Column("requester_org_id", sa.String(length=40), nullable=False),
        sa.Column("entitled", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("case_number", sa.String(length=80), nullable=False),
        sa.Column("legal_basis", sa.String(length=200), nullable=False),
        sa.Column("subject_hash", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("dek_id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_by", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_by", sa.String(length=40), nullable=True),
        sa.Column("decision_reason", sa.String(length=300), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reply_document_id", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["dek_id"], ["data_keys.id"], name=op.f("fk_sealed_requests_dek_id_data_keys")),
        sa.ForeignKeyConstraint(["requester_id"], ["users.id"], name=op.f("fk_sealed_requests_requester_id_users")),
        sa.ForeignKeyConstraint(
            ["requester_org_id"], ["orgs.id"], name=op.f("fk_sealed_requests_requester_org_id_orgs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sealed_requests")),
    )
    with op.batch_alter_table("sealed_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sealed_requests_due_by"), ["due_by"], unique=False)
        batch_op.create_index(batch_op.f("ix_sealed_requests_requester_id"), ["requester_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sealed_requests_requester_org_id"), ["requester_org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sealed_requests_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_sealed_requests_subject_hash"), ["subject_hash"], unique=False)

    op.create_table(
        "disclosures",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.String(length=40), nullable=False),
        sa.Column("requester_org_id", sa.String(length=40), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("stamped_sha256", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], name=op.f("fk_disclosures_document_id_documents")),
        sa.ForeignKeyConstraint(
            ["request_id"], ["sealed_requests.id"], name=op.f("fk_disclosures_request_id_sealed_requests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disclosures")),
    )
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_disclosures_document_id"), ["document_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_disclosures_request_id"), ["request_id"], unique=False)

    op.create_table(
        "sealed_grants",
        sa.Column("request_id", sa.String(length=40), nullable=False),
        sa.Column("record_id", sa.String(length=40), nullable=False),
        sa.Column("record_kind", sa.String(length=20), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"], ["sealed_requests.id"], name=op.f("fk_sealed_grants_request_id_sealed_requests")
        ),
        sa.PrimaryKeyConstraint("request_id", "record_id", name=op.f("pk_sealed_grants")),
    )
    with op.batch_alter_table("sealed_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sealed_grants_record_id"), ["record_id"], unique=False)

    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("purpose", sa.String(length=16), server_default="dek", nullable=False))


def downgrade() -> None:

    with op.batch_alter_table("data_keys", schema=None) as batch_op:
        batch_op.drop_column("purpose")

    with op.batch_alter_table("sealed_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_grants_record_id"))

    op.drop_table("sealed_grants")
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_disclosures_request_id"))
        batch_op.drop_index(batch_op.f("ix_disclosures_document_id"))

    op.drop_table("disclosures")
    with op.batch_alter_table("sealed_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_requests_subject_hash"))
        batch_op.drop_index(batch_op.f("ix_sealed_requests_status"))
        batch_op.drop_index(batch_op.f("ix_sealed_requests_requester_org_id"))
        batch_op.drop_index(batch_op.f("ix_sealed_requests_requester_id"))
        batch_op.drop_index(batch_op.f("ix_sealed_requests_due_by"))

    op.drop_table("sealed_requests")
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sealed_records_subject_hash"))

    op.drop_table("sealed_records")
