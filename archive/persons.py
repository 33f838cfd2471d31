"""Who a document names: the ``document_persons`` rows, and the queries sealing asks of them.

A person is ``(minor_id, id_hash)``: a minor's record, the keyed hash of an ID number, or
both. Rows are added at issue and at each correction and never removed, so a person
named only by an old (still readable) version still counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Select, and_, false, or_, select
from sqlalchemy.orm import Session

from archive.models import Document, DocumentPerson, Minor, SealedRecord

Person = tuple[str | None, str | None]


def resolve(session: Session, hashes: Iterable[str]) -> set[Person]:
    """Persons for ID-number hashes: with the (unsealed) minors' records that carry them, if any."""
    wanted = set(hashes)
    if not wanted:
        return set()
    found = {(mid, h) for mid, h in session.execute(select(Minor.id, Minor.id_hash).where(Minor.id_hash.in_(wanted)))}
    return found | {(None, h) for h in wanted - {h for _m, h in found}}


def record(session: Session, doc: Document, persons: Iterable[Person]) -> None:
    """Add the persons not yet recorded for ``doc``; its ``subject_hashes`` (the audit subjects of
    every read) gain their hashes."""
    have = {(m, h) for m, h in session.execute(select(DocumentPerson.minor_id, DocumentPerson.id_hash)
                                               .where(DocumentPerson.document_id == doc.id))}
    new = {p for p in persons if p != (None, None)} - have
    session.add_all(DocumentPerson(document_id=doc.id, minor_id=m, id_hash=h) for m, h in sorted(new, key=str))
    hashes = {h for _m, h in new if h}
    if hashes - set(doc.subject_hashes or []):
        doc.subject_hashes = sorted(set(doc.subject_hashes or []) | hashes)


def naming(minor_id: str, id_hash: str | None, *, sealed: bool) -> Select[Document]:
    """Documents (sealed or not) that name this minor, by record or by its ID-number hash."""
    who = DocumentPerson.minor_id == minor_id
    if id_hash:
        who = or_(who, DocumentPerson.id_hash == id_hash)
    named = select(DocumentPerson.document_id).where(who)
    return (select(Document)
            .where(Document.sealed.is_(sealed),
                   or_(Document.id.in_(named), and_(Document.subject_kind == "minor", Document.subject_id == minor_id)))
            .order_by(Document.id))


def holders(session: Session, doc_id: str) -> list[str]:
    """The sealed minors a document names: while there is one, the document stays sealed."""
    rows = session.execute(select(DocumentPerson.minor_id, DocumentPerson.id_hash)
                           .where(DocumentPerson.document_id == doc_id)).all()
    ids = {m for m, _h in rows if m}
    hashes = {h for _m, h in rows if h}
    doc = session.get(Document, doc_id)
    if doc is not None and doc.subject_kind == "minor" and doc.subject_id:
        ids.add(doc.subject_id)
    cond = or_(SealedRecord.record_id.in_(ids) if ids else false(),
               SealedRecord.subject_hash.in_(hashes) if hashes else false())
    return list(session.scalars(select(SealedRecord.record_id).where(
        SealedRecord.record_kind == "minor", SealedRecord.state == "sealed", cond).order_by(SealedRecord.record_id)))


def sealed_documents_of(session: Session, subject_hash: str) -> list[str]:
    """The sealed documents a grant about the person with this ID-number hash names: those
    sealed for that person on their own, and every document that names the person's sealed
    record (a household file sealed with it, a letter that writes the ID number)."""
    minors = list(session.scalars(select(SealedRecord.record_id).where(
        SealedRecord.record_kind == "minor", SealedRecord.state == "sealed",
        SealedRecord.subject_hash == subject_hash)))
    # Sealed on its own for this person; one sealed with a minor is granted through that minor below.
    own = and_(SealedRecord.subject_hash == subject_hash, SealedRecord.sealed_with.is_(None))
    if minors:
        named = select(DocumentPerson.document_id).where(or_(DocumentPerson.minor_id.in_(minors),
                                                             DocumentPerson.id_hash == subject_hash))
        own = or_(own, SealedRecord.record_id.in_(named))
    return list(session.scalars(select(SealedRecord.record_id).where(
        SealedRecord.record_kind == "document", SealedRecord.state == "sealed", own).order_by(SealedRecord.record_id)))
