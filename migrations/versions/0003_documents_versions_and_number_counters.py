"""documents, versions and number counters

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 18:47:01.751249
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "doc_number_counters",
        sa.Column("issuer_org_id", sa.String(length=40), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("last_serial", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["issuer_org_id"], ["orgs.id"], name=op.f("fk_doc_number_counters_issuer_org_id_orgs")),
        sa.PrimaryKeyConstraint("issuer_org_id", "year", name=op.f("pk_doc_number_counters")),
    )
    op.create_table(
        "documents",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("subject_kind", sa.String(length=20), nullable=False),
        sa.Column("subject_id", sa.String(length=40), nullable=True),
        sa.Column("region_code", sa.String(length=12), nullable=False),
        sa.Column("issuer_org_id", sa.String(length=40), nullable=False),
        sa.Column("doc_number", sa.String(length=60), nullable=False),
        sa.Column("number_year", sa.Integer(), nullable=False),
        sa.Column("number_serial", sa.Integer(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("dek_id", sa.String(length=40), nullable=False),
        sa.Column("subject_hashes", sa.JSON(), nullable=False),
        sa.Column("sealed", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dek_id"], ["data_keys.id"], name=op.f("fk_documents_dek_id_data_keys")),
        sa.ForeignKeyConstraint(["issuer_org_id"], ["orgs.id"], name=op.f("fk_documents_issuer_org_id_orgs")),
        sa.ForeignKeyConstraint(["region_code"], ["regions.code"], name=op.f("fk_documents_region_code_regions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
        sa.UniqueConstraint(
            "issuer_org_id",
            "number_year",
            "number_serial",
            name=op.f("uq_documents_issuer_org_id_number_year_number_serial"),
        ),
    )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_documents_issuer_org_id"), ["issuer_org_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_documents_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_documents_region_code"), ["region_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_documents_subject_id"), ["subject_id"], unique=False)

    op.create_table(
        "document_versions",
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("blob_key", sa.String(length=120), nullable=False),
        sa.Column("fields_payload", sa.LargeBinary(), nullable=False),
        sa.Column("verification_code", sa.String(length=16), nullable=False),
        sa.Column("supersedes", sa.Integer(), nullable=True),
        sa.Column("issued_by", sa.String(length=40), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("issued_on", sa.Date(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name=op.f("fk_document_versions_document_id_documents")
        ),
        sa.PrimaryKeyConstraint("document_id", "version", name=op.f("pk_document_versions")),
        sa.UniqueConstraint("verification_code", name=op.f("uq_document_versions_verification_code")),
    )


def downgrade() -> None:

    op.drop_table("document_versions")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_documents_subject_id"))
        batch_op.drop_index(batch_op.f("ix_documents_region_code"))
        batch_op.drop_index(batch_op.f("ix_documents_kind"))
        batch_op.drop_index(batch_op.f("ix_documents_issuer_org_id"))

    op.drop_table("documents")
    op.drop_table("doc_number_counters")
