"""Document signatures: the deployment's CA, org signing certificates, seal images

``signing_certificates`` holds the CA certificate and each organisation's signing
certificates (DER), their serials, and the private keys sealed under data keys of
their own (``archive.pki``). ``org_seal_images`` points to each organisation's seal
image, a sealed blob (``archive.seal_images``). ``document_versions`` gains the
serial of the certificate that signed the stored PDF and the signing time;
``disclosures`` the serial that signed a stamped sealed copy. Versions issued before
this migration stay unsigned (NULL): their bytes never change.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "signing_certificates",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=True),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("certificate", sa.LargeBinary(), nullable=False),
        sa.Column("key_envelope", sa.LargeBinary(), nullable=False),
        sa.Column("dek_id", sa.String(length=40), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("not_after", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_for", sa.String(length=40), nullable=True),
        sa.Column("replaced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revocation_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_signing_certificates_org_id_orgs")),
        sa.ForeignKeyConstraint(["dek_id"], ["data_keys.id"], name=op.f("fk_signing_certificates_dek_id_data_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_certificates")),
        sa.UniqueConstraint("serial", name=op.f("uq_signing_certificates_serial")),
        sa.UniqueConstraint("current_for", name=op.f("uq_signing_certificates_current_for")),
    )
    op.create_index(op.f("ix_signing_certificates_org_id"), "signing_certificates", ["org_id"], unique=False)
    op.create_table(
        "org_seal_images",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("org_id", sa.String(length=40), nullable=False),
        sa.Column("dek_id", sa.String(length=40), nullable=False),
        sa.Column("blob_key", sa.String(length=120), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("current_for", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["orgs.id"], name=op.f("fk_org_seal_images_org_id_orgs")),
        sa.ForeignKeyConstraint(["dek_id"], ["data_keys.id"], name=op.f("fk_org_seal_images_dek_id_data_keys")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_org_seal_images")),
        sa.UniqueConstraint("current_for", name=op.f("uq_org_seal_images_current_for")),
    )
    op.create_index(op.f("ix_org_seal_images_org_id"), "org_seal_images", ["org_id"], unique=False)
    with op.batch_alter_table("document_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signer_serial", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("signed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_document_versions_signer_serial"), ["signer_serial"], unique=False)
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signer_serial", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("disclosures", schema=None) as batch_op:
        batch_op.drop_column("signer_serial")
    with op.batch_alter_table("document_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_versions_signer_serial"))
        batch_op.drop_column("signed_at")
        batch_op.drop_column("signer_serial")
    op.drop_index(op.f("ix_org_seal_images_org_id"), table_name="org_seal_images")
    op.drop_table("org_seal_images")
    op.drop_index(op.f("ix_signing_certificates_org_id"), table_name="signing_certificates")
    op.drop_table("signing_certificates")
