"""Documents record every person they name; minors.id_hash is no longer unique

``document_persons`` holds, per document, the minors' records it is about or lists
and the keyed hashes of the ID numbers written in it; sealing a minor seals every
document that names it. ``sealed_records.sealed_with`` says which sealed minor
brought a document into the sealed register (None: sealed on its own).

``minors.id_hash`` becomes a plain index: after an ID number was registered again
while its first record was sealed, both records keep the hash once the first is
unsealed, and the duplicate check refuses a third registration in code.

Backfill (a migration holds no key, so it reads plain columns only):
- a document about a minor names that minor (``subject_id``), with the minor's hash
  (``minors.id_hash``, or ``sealed_records.subject_hash`` while sealed);
- a document about a household (the household file) names every minor of that
  household now on record: a superset of the minors listed on the file, so sealing
  errs towards sealing;
- every hash in ``documents.subject_hashes`` (the ID numbers written in its fields at
  issue), joined to the minor that carries it where there is one;
- ``sealed_with`` for a sealed document whose subject minor was sealed in the same
  operation (same ``sealed_at``).
Names written in free text without an ID number cannot be recovered. ``shouhu init``
then seals, under the key ring, every unsealed document that names a sealed minor
(``archive.sealing.Sealing.catch_up``).

Revision ID: 0011
Revises: 0009
Create Date: 2026-12-08
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0009"
branch_labels = None
depends_on = None


def _json(value: Any) -> list[str]:
    if value is None:
        return []
    return list(json.loads(value) if isinstance(value, str) else value)


def upgrade() -> None:
    bind = op.get_bind()
    op.create_table(
        "document_persons",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_id", sa.String(length=40), nullable=False),
        sa.Column("minor_id", sa.String(length=40), nullable=True),
        sa.Column("id_hash", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"],
                                name=op.f("fk_document_persons_document_id_documents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_persons")),
    )
    with op.batch_alter_table("document_persons", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_document_persons_document_id"), ["document_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_document_persons_minor_id"), ["minor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_document_persons_id_hash"), ["id_hash"], unique=False)
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sealed_with", sa.String(length=40), nullable=True))
    # SQLite rebuilds the table to drop the constraint: runtime.migrate_database runs migrations
    # with foreign keys off there (minor_categories refers to minors) and checks them after.
    with op.batch_alter_table("minors", schema=None) as batch_op:
        batch_op.drop_constraint("uq_minors_id_hash", type_="unique")
        batch_op.create_index(batch_op.f("ix_minors_id_hash"), ["id_hash"], unique=False)
    _backfill(bind)


def _backfill(bind: Any) -> None:
    t = sa.table("document_persons", sa.column("document_id"), sa.column("minor_id"), sa.column("id_hash"))
    minor_hash: dict[str, str | None] = {}
    for mid, h, sealed_hash in bind.execute(sa.text(
            "SELECT m.id, m.id_hash, s.subject_hash FROM minors m "
            "LEFT JOIN sealed_records s ON s.record_id = m.id AND s.record_kind = 'minor'")):
        minor_hash[mid] = h or sealed_hash
    by_hash: dict[str, list[str]] = {}
    for mid, h in minor_hash.items():
        if h:
            by_hash.setdefault(h, []).append(mid)
    household_minors: dict[str, list[str]] = {}
    for mid, hid in bind.execute(sa.text("SELECT id, household_id FROM minors ORDER BY id")):
        household_minors.setdefault(hid, []).append(mid)
    rows: list[dict[str, Any]] = []
    new_hashes: dict[str, list[str]] = {}
    docs = bind.execute(sa.text("SELECT id, subject_kind, subject_id, subject_hashes FROM documents")).all()
    for doc_id, subject_kind, subject_id, subject_hashes in docs:
        named: set[tuple[str | None, str | None]] = set()
        if subject_kind == "minor" and subject_id:
            named.add((subject_id, minor_hash.get(subject_id)))
        elif subject_kind == "household" and subject_id:
            named |= {(m, minor_hash.get(m)) for m in household_minors.get(subject_id, [])}
        hashes = _json(subject_hashes)
        for h in hashes:
            if any(h == known for _m, known in named):
                continue
            named |= {(m, h) for m in by_hash.get(h, [])} or {(None, h)}
        rows += [{"document_id": doc_id, "minor_id": m, "id_hash": h} for m, h in sorted(named, key=str)]
        extra = sorted({h for _m, h in named if h} - set(hashes))
        if extra:  # reads of the document now carry the hashes of every minor it names
            new_hashes[doc_id] = sorted(set(hashes) | set(extra))
    if rows:
        op.bulk_insert(t, rows)
    documents = sa.table("documents", sa.column("id"), sa.column("subject_hashes", sa.JSON()))
    for doc_id, hashes in new_hashes.items():
        bind.execute(documents.update().where(documents.c.id == doc_id).values(subject_hashes=hashes))
    bind.execute(sa.text(
        "UPDATE sealed_records SET sealed_with = ("
        " SELECT d.subject_id FROM documents d JOIN sealed_records m"
        " ON m.record_id = d.subject_id AND m.record_kind = 'minor' AND m.state = 'sealed'"
        " AND m.sealed_at = sealed_records.sealed_at"
        " WHERE d.id = sealed_records.record_id AND d.subject_kind = 'minor')"
        " WHERE record_kind = 'document' AND state = 'sealed'"))


def downgrade() -> None:
    bind = op.get_bind()
    # One record per hash keeps it (the earliest registered), as the unique constraint demands.
    kept: set[str] = set()
    for mid, h in bind.execute(sa.text(
            "SELECT id, id_hash FROM minors WHERE id_hash IS NOT NULL ORDER BY created_at, id")).all():
        if h in kept:
            bind.execute(sa.text("UPDATE minors SET id_hash = NULL WHERE id = :i"), {"i": mid})
        kept.add(h)
    with op.batch_alter_table("minors", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_minors_id_hash"))
        batch_op.create_unique_constraint(batch_op.f("uq_minors_id_hash"), ["id_hash"])
    with op.batch_alter_table("sealed_records", schema=None) as batch_op:
        batch_op.drop_column("sealed_with")
    with op.batch_alter_table("document_persons", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_document_persons_id_hash"))
        batch_op.drop_index(batch_op.f("ix_document_persons_minor_id"))
        batch_op.drop_index(batch_op.f("ix_document_persons_document_id"))
    op.drop_table("document_persons")
