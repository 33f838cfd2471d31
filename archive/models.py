"""Case-file tables. Personal fields live only in ``payload`` (an envelope sealed
with the record's own data key); the plain columns hold what policy, lists and
statistics need: region, categories and their dates, timestamps, keyed hashes.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from core.db import Base, UTCDateTime


class Household(Base):
    __tablename__ = "households"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    version: Mapped[int] = mapped_column(default=1)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    dek_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    # Keyed hashes of members' ID numbers, for "who touched this person" audits.
    subject_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    # Optimistic concurrency: an UPDATE only applies to the version it read.
    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class Minor(Base):
    __tablename__ = "minors"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    household_id: Mapped[str] = mapped_column(ForeignKey("households.id"), index=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    version: Mapped[int] = mapped_column(default=1)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    dek_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    # Keyed hash of the ID number: exact lookup and duplicate check, never the number. Not unique:
    # an ID number registered again while its first record was sealed is on both once that is
    # unsealed; the duplicate check (archive.records) refuses a new one in code (migration 0011).
    # While a minor is sealed its hash sits in ``sealed_records.subject_hash`` instead.
    id_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class MinorCategory(Base):
    """One of the five categories, with the date it was found and the date it ended."""

    __tablename__ = "minor_categories"

    minor_id: Mapped[str] = mapped_column(ForeignKey("minors.id"), primary_key=True)
    category: Mapped[int] = mapped_column(primary_key=True)
    found_on: Mapped[date] = mapped_column(Date, primary_key=True)
    ended_on: Mapped[date | None] = mapped_column(Date)
    # Category 5 only: which of its three situations (core.categories.SUBTYPES); null on older rows.
    subtype: Mapped[str | None] = mapped_column(String(20))


class Document(Base):
    """An issued official document. Its versions are immutable; the current one is printed."""

    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_id: Mapped[str | None] = mapped_column(String(40), index=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    issuer_org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    # A 发文字号 (series "doc") or a form's 档案编号 (its own series per kind; archive.numbering).
    doc_number: Mapped[str] = mapped_column(String(60))
    number_series: Mapped[str] = mapped_column(String(40), default="doc", server_default="doc")
    number_year: Mapped[int] = mapped_column()
    number_serial: Mapped[int] = mapped_column()
    current_version: Mapped[int] = mapped_column(default=1)
    dek_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    # Keyed hashes of the ID numbers the document is about (audit subjects).
    subject_hashes: Mapped[list[str]] = mapped_column(JSON, default=list)
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())

    # Named: the convention's name would pass PostgreSQL's 63 characters.
    __table_args__ = (UniqueConstraint("issuer_org_id", "number_series", "number_year", "number_serial",
                                       name="uq_documents_issuer_org_id_series_year_serial"),)


class DocumentPerson(Base):
    """A person a document names, from its fields as issued or corrected (every version's).

    ``minor_id`` is a minor's record the document is about or lists; ``id_hash`` the keyed
    hash of an ID number written in it (or the minor's). Either may be empty, not both.
    Sealing a minor seals every document that names it (archive.sealing); the rows are
    never removed, so a person named only by an old version still counts (migration 0011).
    """

    __tablename__ = "document_persons"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"), index=True)
    minor_id: Mapped[str | None] = mapped_column(String(40), index=True)
    id_hash: Mapped[str | None] = mapped_column(String(64), index=True)


class DocumentVersion(Base):
    __tablename__ = "document_versions"

    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"), primary_key=True)
    version: Mapped[int] = mapped_column(primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column()
    blob_key: Mapped[str] = mapped_column(String(120))
    # The validated fields (and correction reason), sealed with the document's data key.
    fields_payload: Mapped[bytes] = mapped_column(LargeBinary)
    verification_code: Mapped[str] = mapped_column(String(16), unique=True)
    supersedes: Mapped[int | None] = mapped_column()
    issued_by: Mapped[str] = mapped_column(String(40))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    issued_on: Mapped[date] = mapped_column(Date)
    # The PAdES signature on the stored bytes (archive.pki): the signing certificate's serial and
    # the signing time. NULL for versions issued before documents were signed (migration 0014).
    signer_serial: Mapped[str | None] = mapped_column(String(64), index=True)
    signed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class NumberCounter(Base):
    """The last serial used per issuer, series and year; locked while a number is allocated.

    Series ``doc`` counts the issuer's 发文字号; each form kind counts its file numbers apart.
    """

    __tablename__ = "doc_number_counters"

    issuer_org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), primary_key=True)
    series: Mapped[str] = mapped_column(String(40), primary_key=True, default="doc", server_default="doc")
    year: Mapped[int] = mapped_column(primary_key=True)
    last_serial: Mapped[int] = mapped_column(default=0)


class SealedRecord(Base):
    """A sealed juvenile record (a minor and its case documents, or one document).

    ``subject_hash`` is the keyed hash of the minor's ID number, kept here rather
    than on the minor, so duplicate checks and lookups never see a sealed person.
    """

    __tablename__ = "sealed_records"

    record_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    record_kind: Mapped[str] = mapped_column(String(20))
    subject_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    legal_basis: Mapped[str] = mapped_column(String(200))  # a code of access_control.legal_bases
    # The case number's keyed hash ("case_number" purpose); the number itself is in ``case_note``,
    # sealed under a data key of its own (migration 0013).
    case_number_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    case_note: Mapped[bytes | None] = mapped_column(LargeBinary)
    case_dek_id: Mapped[str | None] = mapped_column(String(40))
    # Before 0013 the case number was kept here in plain text; emptied by archive.sealed_upgrade.
    case_number: Mapped[str | None] = mapped_column(String(80))
    sealed_by: Mapped[str] = mapped_column(String(40))
    sealed_at: Mapped[datetime] = mapped_column(UTCDateTime())
    state: Mapped[str] = mapped_column(String(16))  # sealed | unsealed
    unsealed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    unsealed_by: Mapped[str | None] = mapped_column(String(40))
    unseal_basis: Mapped[str | None] = mapped_column(String(200))  # a code of access_control.legal_bases
    unseal_cause: Mapped[str | None] = mapped_column(String(32))  # archive.sealing.UNSEAL_CAUSES
    # The free-text explanation of an unsealing, sealed with a data key of its own (migration 0009).
    unseal_note: Mapped[bytes | None] = mapped_column(LargeBinary)
    unseal_dek_id: Mapped[str | None] = mapped_column(String(40))
    # A document sealed because it names a sealed minor: that minor (the first to reach it).
    # None for a minor, or a document sealed on its own. Unsealing the minors a document
    # names unseals it only if it was reached this way and no person it names is still sealed.
    sealed_with: Mapped[str | None] = mapped_column(String(40))


class Disclosure(Base):
    """The disclosure register: every stamped copy of a sealed record, to whom, when, its hash."""

    __tablename__ = "disclosures"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    request_id: Mapped[str] = mapped_column(ForeignKey("sealed_requests.id"), index=True)
    document_id: Mapped[str] = mapped_column(ForeignKey("documents.id"), index=True)
    version: Mapped[int] = mapped_column()
    requester_id: Mapped[str] = mapped_column(String(40))
    requester_org_id: Mapped[str] = mapped_column(String(40))
    released_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source_sha256: Mapped[str] = mapped_column(String(64))
    stamped_sha256: Mapped[str] = mapped_column(String(64))
    # The stamped copy is signed by the custodian's organisation: its certificate's serial.
    signer_serial: Mapped[str | None] = mapped_column(String(64))


class Visit(Base):
    """A home visit: when, and (sealed) who visited and what was found."""

    __tablename__ = "visits"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    household_id: Mapped[str] = mapped_column(ForeignKey("households.id"), index=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    visited_on: Mapped[date] = mapped_column(Date)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    dek_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
