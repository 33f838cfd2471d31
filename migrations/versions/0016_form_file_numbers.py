"""Forms are numbered apart: a number series per issuer, series and year

``doc_number_counters`` gains ``series`` (``doc`` for the issuer's 发文字号, a form
kind's name for its file numbers, 档案编号) in its primary key; ``documents`` gains
``number_series`` and its unique number becomes (issuer, series, year, serial).
Existing rows are all in series ``doc``, forms issued before included: their
numbers stay as printed, and new forms start their own series at 1.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

OLD_UNIQUE = "uq_documents_issuer_org_id_number_year_number_serial"
NEW_UNIQUE = "uq_documents_issuer_org_id_series_year_serial"  # the convention's name is too long for PostgreSQL
SERIES = {"server_default": "doc", "nullable": False}


def upgrade() -> None:
    with op.batch_alter_table("doc_number_counters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("series", sa.String(length=40), **SERIES))
        batch_op.drop_constraint("pk_doc_number_counters", type_="primary")
        batch_op.create_primary_key("pk_doc_number_counters", ["issuer_org_id", "series", "year"])
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number_series", sa.String(length=40), **SERIES))
        batch_op.drop_constraint(OLD_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(NEW_UNIQUE, ["issuer_org_id", "number_series", "number_year",
                                                       "number_serial"])


def downgrade() -> None:
    # Forms' serials would clash with the 发文字号 series in the one series of the old schema: they
    # move to negative serials (-1, -2, ... in id order), which the old numbering never allocates.
    # Their printed 档案编号 stays in doc_number.
    op.execute("UPDATE documents SET number_serial = -(SELECT COUNT(*) FROM documents AS d2 "
               "WHERE d2.number_series <> 'doc' AND d2.id <= documents.id) WHERE number_series <> 'doc'")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_constraint(NEW_UNIQUE, type_="unique")
        batch_op.create_unique_constraint(OLD_UNIQUE, ["issuer_org_id", "number_year", "number_serial"])
        batch_op.drop_column("number_series")
    op.execute("DELETE FROM doc_number_counters WHERE series <> 'doc'")
    with op.batch_alter_table("doc_number_counters", schema=None) as batch_op:
        batch_op.drop_constraint("pk_doc_number_counters", type_="primary")
        batch_op.create_primary_key("pk_doc_number_counters", ["issuer_org_id", "year"])
        batch_op.drop_column("series")
