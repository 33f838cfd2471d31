"""Issuing, correcting, reading and verifying official documents.

Issue: policy -> fields validated -> subject resolved in the caller's
jurisdiction -> glyph check -> the next number peeked -> the reading
transaction ended -> PDF rendered in the worker pool, holding no database lock
-> number allocated (gapless, in the storing transaction; rendered again if
another process took the peeked one) -> sealed with the document's data key ->
blob stored -> rows and audit event committed together. A failure anywhere
rolls the transaction back, so no number is burnt and the blob is removed.
One issuer's issues queue in the process before they touch the database.
Issued bytes never change: a correction is a new version that points to the
old one, with a new verification code.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import String, literal, select
from sqlalchemy.exc import SQLAlchemyError

from access_control.actions import Action
from access_control.audit import AuditLog, EventDraft
from access_control.guard import Guard
from access_control.identity import Actor, Org, OrgType
from access_control.policy import Resource
from access_control.regions import Region, RegionTree
from access_control.sealed import SealedGrant, SealedRequest, case_details
from archive import numbering
from archive import persons as people
from archive import prefill as P
from archive.blobstore import BlobNotFound, BlobStore
from archive.models import Document, DocumentVersion, Household, Minor
from archive.persons import Person
from archive.records import Archive, decode_cursor, encode_cursor
from core.crypto import KeyRing, sha256_hex
from core.db import Database, new_id
from core.errors import AuditUnavailable, Conflict, IntegrityFailure, InvalidInput, NotFound, field_errors
from core.fields import id_check_char
from core.keys import Vault
from core.outbox import enqueue
from doc_templates import kinds as K
from doc_templates.pool import RenderPool
from doc_templates.render import DocumentMeta, MissingGlyphs, Renderer

CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
CODE_LENGTH = 12  # 60 bits: unguessable, short enough to type from paper
LOCAL_TZ = ZoneInfo("Asia/Shanghai")
_ID_NUMBER = re.compile(r"(?<![0-9])[0-9]{17}[0-9X](?![0-9X])")


class DocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(min_length=1, max_length=40)
    subject_id: str | None = Field(None, max_length=40)
    fields: dict[str, Any]


class VersionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fields: dict[str, Any]
    reason: str = Field(min_length=1, max_length=300, description="更正原因")


class DocumentIssued(BaseModel):
    id: str
    kind: str
    doc_number: str
    version: int
    sha256: str
    verification_code: str
    issued_at: datetime


class VersionPublic(BaseModel):
    version: int
    sha256: str
    size: int
    verification_code: str
    supersedes: int | None
    issued_at: datetime
    issued_on: date


class DocumentPublic(BaseModel):
    id: str
    kind: str
    title: str
    doc_number: str
    subject_kind: str
    subject_id: str | None
    region_code: str
    issuer: dict[str, str]
    version: int
    versions: list[VersionPublic]
    created_at: datetime


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def display_code(code: str) -> str:
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))


def normalize_code(code: str) -> str:
    return code.replace("-", "").replace(" ", "").upper().translate(str.maketrans("ILO", "110"))


@dataclass(frozen=True)
class Subject:
    kind: str
    id: str | None
    region_code: str
    hashes: tuple[str, ...]
    # The minors' records a document about it names (the minor; a household's listed minors).
    persons: tuple[Person, ...] = ()
    # (id, version) of every record its particulars are read from: unchanged until the issue stores.
    rows: tuple[tuple[str, int], ...] = ()
    listed: tuple[str, ...] = ()  # a household's minors, as its household file lists them


class DocumentService:
    def __init__(self, *, vault: Vault, ring: KeyRing, regions: RegionTree, blobs: BlobStore, pool: RenderPool,
                 base_url: str, db: Database, audit: AuditLog, archive: Archive):
        self.archive = archive
        # Set by archive.sealing: stamps a sealed document for its granted requester.
        self.releaser: Callable[[Guard, Document, DocumentVersion, SealedRequest], bytes] | None = None
        self.vault = vault
        self.ring = ring
        self.regions = regions
        self.blobs = blobs
        self.pool = pool
        self.base_url = base_url.rstrip("/")
        self.db = db
        self.audit = audit
        self._queues: dict[str, threading.Lock] = {}
        self._queues_lock = threading.Lock()

    # helpers ----------------------------------------------------------------------

    @staticmethod
    def kind_or_422(name: str) -> K.DocKind:
        kind = K.get(name)
        if kind is None:
            raise InvalidInput.one("kind", "未知的公文种类")
        return kind

    @staticmethod
    def readers(kind: K.DocKind) -> frozenset[str]:
        """Who may read a kind: its issuers, and supervisors for case documents."""
        extra = {"supervisor"} if kind.subject in ("household", "minor", "region") else set()
        return kind.issuer_roles | extra

    @staticmethod
    def validate_fields(kind: K.DocKind, fields: dict[str, Any]) -> BaseModel:
        try:
            return kind.validate(fields)
        except ValidationError as exc:
            raise InvalidInput(field_errors(exc.errors(), prefix=("fields",), location="body")) from None

    def _id_hashes(self, fields: dict[str, Any]) -> set[str]:
        """Keyed hashes of every valid ID number written in the fields (audit subjects)."""
        out = set()
        for _path, text in _strings(fields):
            for m in _ID_NUMBER.findall(text.upper()):
                if id_check_char(m[:17]) == m[17]:
                    out.add(self.ring.keyed_hash("id_number", m))
        return out

    def _subject(self, g: Guard, kind: K.DocKind, subject_id: str | None, action: Action) -> Subject:
        if kind.subject in ("household", "minor"):
            model = Household if kind.subject == "household" else Minor
            row = g.session.get(model, subject_id) if subject_id else None
            if row is None or row.sealed:
                raise InvalidInput.one("subject_id", "未找到该档案")
            decision = g.decide(action, Resource(kind.subject, row.id, row.region_code))
            if not decision.allowed:
                try:
                    g.authorize(action, Resource(kind.subject, row.id, row.region_code))
                except NotFound:
                    raise InvalidInput.one("subject_id", "未找到该档案") from None
            if isinstance(row, Minor):
                hh = g.session.get(Household, row.household_id)
                return Subject("minor", row.id, row.region_code, (row.id_hash,) if row.id_hash else (),
                               persons=((row.id, row.id_hash),),
                               rows=((row.id, row.version), *(((hh.id, hh.version),) if hh else ())))
            listed = self._listed_minors(g, row.id)
            hashes = sorted(set(row.subject_hashes or []) | {m.id_hash for m in listed if m.id_hash})
            return Subject("household", row.id, row.region_code, tuple(hashes),
                           persons=tuple((m.id, m.id_hash) for m in listed),
                           rows=((row.id, row.version), *((m.id, m.version) for m in listed)),
                           listed=tuple(m.id for m in listed))
        if kind.subject == "region":
            code = subject_id or g.actor.region_code
            if code not in self.regions:
                raise InvalidInput.one("subject_id", "未知的行政区划代码")
            return Subject("region", code, code, ())
        return Subject(kind.subject, subject_id, g.actor.region_code, ())

    @staticmethod
    def _listed_minors(g: Guard, household_id: str) -> list[Minor]:
        """The minors a household file lists: the household's unsealed minors, at most six."""
        return list(g.session.scalars(select(Minor).where(Minor.household_id == household_id,
                                                          Minor.sealed.is_(False)).order_by(Minor.id).limit(6)))

    def _record(self, g: Guard, subject: Subject) -> P.Record:
        """The subject's record, decrypted: the caller has authorized (and logged) the read."""
        today = g.now.astimezone(LOCAL_TZ).date()
        if subject.kind == "household":
            hh = g.session.get(Household, subject.id)
            if hh is None:
                raise RuntimeError("the authorized household row is gone")
            minors = [g.session.get(Minor, mid) for mid in subject.listed]
            return P.Record(household_id=hh.id, region_name=self.regions.full_name(hh.region_code),
                            household=self.archive.household_view(g, hh).model_dump(mode="json"), today=today,
                            minors=[self.archive.minor_view(g, m).model_dump(mode="json") for m in minors if m])
        mn = g.session.get(Minor, subject.id)
        if mn is None:
            raise RuntimeError("the authorized minor row is gone")
        hh = g.session.get(Household, mn.household_id)
        if hh is None:
            raise RuntimeError("a minor's household row is missing")
        return P.Record(household_id=hh.id, region_name=self.regions.full_name(hh.region_code),
                        household=self.archive.household_view(g, hh).model_dump(mode="json"), today=today,
                        minor=self.archive.minor_view(g, mn).model_dump(mode="json"))

    @staticmethod
    def _prevalidate(kind: K.DocKind, fields: dict[str, Any]) -> None:
        """Refuse invalid fields before anything is looked up; particulars may be left out."""
        try:
            kind.validate(fields)
        except ValidationError as exc:
            own = P.PARTICULARS.get(kind.kind, {})
            errors = [e for e in exc.errors() if not (e["type"] == "missing" and e["loc"] and e["loc"][0] in own)]
            if errors:
                raise InvalidInput(field_errors(errors, prefix=("fields",), location="body")) from None

    def _validated(self, g: Guard, kind: K.DocKind, subject: Subject, fields: dict[str, Any]) -> BaseModel:
        """The fields, validated, with the subject's particulars from its record (prefill.PARTICULARS).

        A particular left out is filled in; one sent that differs from the record is a 422
        naming it. The record is read here: the caller's decision is logged before this.
        """
        table = P.PARTICULARS.get(kind.kind)
        if not table or subject.kind not in ("household", "minor"):
            return self.validate_fields(kind, fields)
        own = P.particulars(kind.kind, self._record(g, subject))
        model = self.validate_fields(kind, {**own, **fields})
        try:
            recorded = kind.validate({**model.model_dump(mode="json"), **own}).model_dump(mode="json")
        except ValidationError as exc:  # the record holds what this kind cannot print
            raise InvalidInput(field_errors(exc.errors(), prefix=("fields",), location="body"),
                               "档案中的信息无法填入本公文，请先核对档案。") from None
        sent = model.model_dump(mode="json")
        wrong = [name for name in table if sent.get(name) != recorded.get(name)]
        if wrong:
            raise InvalidInput([{"field": f"fields.{name}", "location": "body",
                                 "message": "与档案记载不一致：本项取自档案，可留空由系统填写，如有误请先更正档案"}
                                for name in wrong])
        return model

    def _persons(self, g: Guard, subject: Subject, fields: BaseModel) -> set[Person]:
        """Everyone the document names: the subject's minors, and every ID number in its fields
        (the household's members' among them), joined to a minor's record where one carries it."""
        out = set(subject.persons)
        known = {h for _m, h in out if h}
        return out | people.resolve(g.session, (set(subject.hashes) | self._id_hashes(fields.model_dump(mode="json")))
                                    - known)

    def _check_glyphs(self, fields: BaseModel, meta: DocumentMeta) -> None:
        try:
            Renderer.check_glyphs(fields.model_dump(mode="json"), meta)
        except MissingGlyphs as exc:
            raise InvalidInput([
                {"field": f"fields.{path}" if not path.startswith("meta.") else path[5:], "location": "body",
                 "message": "含有字库中没有的字符（" + "、".join(f"U+{ord(c):04X}" for c in chars) + "），无法排版"}
                for path, chars in exc.fields.items()
            ]) from None

    def _meta(self, g: Guard, kind: K.DocKind, org: Org, doc_number: str, code: str | None) -> DocumentMeta:
        return DocumentMeta(
            kind=kind.kind, kind_title=kind.title, issuer=org.name, doc_number=doc_number,
            issued_on=g.now.astimezone(LOCAL_TZ).date(), created_at=g.now,
            verification_code=display_code(code) if code else None,
            verify_url=f"{self.base_url}/api/v1/verify/{code}" if code else None,
            draft=code is None,
        )

    def _org(self, g: Guard) -> Org:
        org = g.session.get(Org, g.actor.org_id)
        if org is None:
            raise Conflict("发文单位不存在。")
        return org

    def _gate(self, g: Guard, action: Action, kind: K.DocKind, *, roles: frozenset[str]) -> None:
        """Refuse by role (and by kind) before anything about a subject is looked up."""
        probe = Resource("document", None, None, existing=False, required_roles=roles)
        if not g.decide(action, probe).allowed:
            g.authorize(action, probe, details={"kind": kind.kind})

    # preview ----------------------------------------------------------------------------

    def preview(self, g: Guard, req: DocumentRequest) -> bytes:
        kind = self.kind_or_422(req.kind)
        self._gate(g, Action.DOCUMENT_PREVIEW, kind, roles=kind.issuer_roles)
        self._prevalidate(kind, req.fields)  # refused input is no decision
        subject = self._subject(g, kind, req.subject_id, Action.DOCUMENT_PREVIEW)
        meta = self._meta(g, kind, self._org(g), "（草稿 未编号）", None)
        # Logged (and durable) before the record's particulars are read.
        g.authorize(Action.DOCUMENT_PREVIEW,
                    Resource("document", None, subject.region_code, existing=False, required_roles=kind.issuer_roles),
                    subjects=sorted(set(subject.hashes) | self._id_hashes(req.fields)),
                    details={"kind": kind.kind}, commit=True)
        fields = self._validated(g, kind, subject, req.fields)
        self._check_glyphs(fields, meta)
        return self.pool.pdf(kind.kind, fields.model_dump(mode="json"), meta)

    # issue ------------------------------------------------------------------------------

    def issue(self, g: Guard, req: DocumentRequest) -> DocumentIssued:
        kind = self.kind_or_422(req.kind)
        self._gate(g, Action.DOCUMENT_ISSUE, kind, roles=kind.issuer_roles)
        self._prevalidate(kind, req.fields)  # refused input is no decision
        # One issuer's issues queue here, before any statement: they wait without a database
        # connection or lock, in order, and the number peeked below is the one allocated.
        with self._issuer_queue(g.actor.org_id):
            subject = self._subject(g, kind, req.subject_id, Action.DOCUMENT_ISSUE)
            org = self._org(g)
            if not org.doc_prefix:
                raise Conflict("本单位尚未设置发文字号代字，无法编号。", details={"field": "issuer"})
            year = g.now.astimezone(LOCAL_TZ).year
            doc_id = new_id("doc")
            # Decided before the record's particulars are read; a refusal after it (a field that
            # contradicts the record) leaves the decision in the log as an error.
            g.authorize(Action.DOCUMENT_ISSUE,
                        Resource("document", doc_id, subject.region_code, existing=False,
                                 required_roles=kind.issuer_roles),
                        subjects=sorted(set(subject.hashes) | self._id_hashes(req.fields)), details={"kind": kind.kind},
                        defer=True)
            fields = self._validated(g, kind, subject, req.fields)
            named = self._persons(g, subject, fields)
            self._check_glyphs(fields, self._meta(g, kind, org, numbering.format_number(org.doc_prefix, year, 1),
                                                  None))
            _serial, predicted = numbering.peek(g.session, issuer=org, year=year)
            code = new_code()
            meta = self._meta(g, kind, org, predicted, code)
            g.release()  # render without holding the database
            pdf = self.pool.pdf(kind.kind, fields.model_dump(mode="json"), meta)
            if not self._still(g, subject):
                raise Conflict("档案在出具期间已变更，请重试。", details={"field": "subject_id"})
            serial, number = numbering.allocate(g.session, issuer=org, year=year)
            if number != predicted:  # another process issued meanwhile: render again, under the lock
                meta = self._meta(g, kind, org, number, code)
                pdf = self.pool.pdf(kind.kind, fields.model_dump(mode="json"), meta)
            dek_id, dek = self.vault.new_data_key(g.session, owner_kind="document", owner_id=doc_id)
            doc = Document(
                id=doc_id, kind=kind.kind, subject_kind=subject.kind, subject_id=subject.id,
                region_code=subject.region_code, issuer_org_id=org.id, doc_number=number, number_year=year,
                number_serial=serial, current_version=1, dek_id=dek_id, subject_hashes=[], sealed=False,
                created_by=g.actor.user_id, created_at=g.now,
            )
            g.session.add(doc)
            g.session.flush()
            people.record(g.session, doc, named)
            version = self._store_version(g, doc, fields, dek, code=code, meta=meta, pdf=pdf, version=1,
                                          supersedes=None, reason=None)
            enqueue(g.session, "document", doc.id)
            g.commit()
        return self._issued(doc, version)

    def _still(self, g: Guard, subject: Subject) -> bool:
        """Whether a household or minor is still where it was, unsealed and unchanged, and a
        household still lists the same minors (checked again after rendering, which ran outside
        any transaction). No decision is taken here: the issue's own, deferred, is the only one.

        The minors are read ``FOR SHARE`` on PostgreSQL: a sealing that has not committed yet
        waits for this issue, then finds the new document among those that name the minor.
        """
        if subject.kind not in ("household", "minor"):
            return True
        row = g.session.get(Household if subject.kind == "household" else Minor, subject.id)
        if row is None or row.sealed or row.region_code != subject.region_code:
            return False
        if subject.kind == "household" and tuple(m.id for m in self._listed_minors(g, row.id)) != subject.listed:
            return False
        minor_ids = [i for i, _v in subject.rows if i.startswith("mn_")]
        locked = {m.id: m for m in g.session.scalars(select(Minor).where(Minor.id.in_(minor_ids))
                                                      .with_for_update(read=True)
                                                      .execution_options(populate_existing=True))}
        for rid, version in subject.rows:
            current = locked.get(rid) if rid.startswith("mn_") else g.session.get(Household, rid)
            if current is None or current.version != version or current.sealed:
                return False
        return True

    @contextmanager
    def _issuer_queue(self, org_id: str) -> Iterator[None]:
        """One issuer's issues and corrections, one after the other in this process."""
        with self._queues_lock:
            lock = self._queues.setdefault(org_id, threading.Lock())
        with lock:
            yield

    def _store_version(self, g: Guard, doc: Document, fields: BaseModel, dek: bytes, *, code: str,
                       meta: DocumentMeta, pdf: bytes, version: int, supersedes: int | None, reason: str | None
                       ) -> DocumentVersion:
        """Store a rendered version (its blob and row) in the current transaction."""
        blob_key = f"documents/{doc.id}/v{version}"
        sealed_pdf = self.vault.seal_bytes(dek, doc.dek_id, pdf, kind="document", record_id=doc.id, version=version)
        payload = self.vault.seal_json(dek, doc.dek_id, {"fields": fields.model_dump(mode="json"), "reason": reason},
                                       kind="document_fields", record_id=doc.id, version=version)
        row = DocumentVersion(
            document_id=doc.id, version=version, sha256=sha256_hex(pdf), size=len(pdf), blob_key=blob_key,
            fields_payload=payload, verification_code=code, supersedes=supersedes, issued_by=g.actor.user_id,
            issued_at=g.now, issued_on=meta.issued_on,
        )
        g.session.add(row)
        g.session.flush()
        # If the put or the commit that follows fails, the blob must not outlive it (registered
        # first: a put that fails after the file is in place, e.g. on fsync, leaves it behind).
        g.on_rollback(lambda: self.blobs.delete(blob_key))
        self.blobs.put(blob_key, sealed_pdf)
        return row

    @staticmethod
    def _issued(doc: Document, v: DocumentVersion) -> DocumentIssued:
        return DocumentIssued(id=doc.id, kind=doc.kind, doc_number=doc.doc_number, version=v.version,
                              sha256=v.sha256, verification_code=display_code(v.verification_code),
                              issued_at=v.issued_at)

    # read -----------------------------------------------------------------------------

    def _load(self, g: Guard, doc_id: str, action: Action, *, read: bool
              ) -> tuple[Document, K.DocKind, SealedRequest | None]:
        """A document the caller may act on; a sealed one only through the caller's active grant.

        An unknown id and a sealed document the caller has no grant for take one path: the
        same statement (the row's kind and sealed flag and the caller's live grant to it, in
        one query of plain columns), the same policy question (a sealed record without a
        grant), the same refusal event (no subject, no kind), so neither the answer, nor the
        log, nor the time tells them apart. A document that may be read is then loaded.
        """
        if not g.decide(action).allowed:
            g.authorize(action, Resource("document", doc_id[:64]))
        # One row whether or not the id exists (the asked id, left-joined to the documents), so
        # the database does the same work for both: the row lookup and the grant lookup.
        asked = select(literal(doc_id[:64], String(64)).label("id")).subquery("asked")
        grant_id = (select(SealedRequest.id).join(SealedGrant, SealedGrant.request_id == SealedRequest.id)
                    .where(SealedGrant.record_id == asked.c.id, SealedRequest.requester_id == g.actor.user_id,
                           SealedRequest.status == "approved", SealedRequest.expires_at > g.now)
                    .order_by(SealedRequest.expires_at.desc()).limit(1).correlate(asked).scalar_subquery())
        # Plain columns, no ORM object: a refusal costs the same whether or not a document came back.
        found = g.session.execute(select(Document.kind, Document.sealed, grant_id).select_from(asked)
                                  .outerjoin(Document, Document.id == asked.c.id)).one()
        kind_name, sealed, grant_of = found
        kind = K.get(kind_name) if kind_name is not None else None
        if action not in (Action.DOCUMENT_READ, Action.DOCUMENT_DOWNLOAD):
            grant_of = None  # a grant lets its requester read, nothing else
        if kind is None or sealed:
            probe = Resource("document", doc_id[:64], sealed=True, grant=grant_of if kind is not None else None)
            if not g.decide(action, probe).allowed:
                g.record(EventDraft(action=action, outcome="denied", reason="record:not_found",
                                    resource_kind="document", resource_id=doc_id[:64]))
                g.commit()
                raise NotFound()
        doc = g.session.get(Document, doc_id)
        if doc is None or kind is None:
            raise RuntimeError("the authorized document row or its kind is gone")
        if doc.sealed:
            grant = g.session.get(SealedRequest, grant_of)
            if grant is None:
                raise RuntimeError("the sealed-record grant row is gone")
            # The grant's case: the basis's code and the case number's keyed hash, never the number.
            g.authorize(action, Resource("document", doc.id, doc.region_code, sealed=True, grant=grant.id),
                        subjects=list(doc.subject_hashes or []) + ([grant.case_number_hash]
                                                                   if grant.case_number_hash else []),
                        details={"kind": doc.kind, **case_details(grant)}, commit=read)
            return doc, kind, grant
        roles = kind.issuer_roles if action == Action.DOCUMENT_CORRECT else self.readers(kind)
        # A correction renders a PDF before it commits: its event waits for the commit.
        g.authorize(action, Resource("document", doc.id, doc.region_code, required_roles=roles),
                    subjects=list(doc.subject_hashes or []), details={"kind": doc.kind}, commit=read,
                    defer=action == Action.DOCUMENT_CORRECT)
        return doc, kind, None

    def _versions(self, g: Guard, doc: Document) -> list[DocumentVersion]:
        return list(g.session.scalars(
            select(DocumentVersion).where(DocumentVersion.document_id == doc.id).order_by(DocumentVersion.version)))

    def _public(self, g: Guard, doc: Document, kind: K.DocKind) -> DocumentPublic:
        org = g.session.get(Org, doc.issuer_org_id)
        return DocumentPublic(
            id=doc.id, kind=doc.kind, title=kind.title, doc_number=doc.doc_number, subject_kind=doc.subject_kind,
            subject_id=doc.subject_id, region_code=doc.region_code,
            issuer={"org_id": doc.issuer_org_id, "name": org.name if org else ""},
            version=doc.current_version, created_at=doc.created_at,
            versions=[VersionPublic(version=v.version, sha256=v.sha256, size=v.size,
                                    verification_code=display_code(v.verification_code), supersedes=v.supersedes,
                                    issued_at=v.issued_at, issued_on=v.issued_on) for v in self._versions(g, doc)],
        )

    def read(self, g: Guard, doc_id: str) -> DocumentPublic:
        doc, kind, _grant = self._load(g, doc_id, Action.DOCUMENT_READ, read=True)
        return self._public(g, doc, kind)

    def pdf(self, g: Guard, doc_id: str, version: int | None = None) -> tuple[bytes, DocumentVersion]:
        doc, _kind, grant = self._load(g, doc_id, Action.DOCUMENT_DOWNLOAD, read=True)
        v = g.session.get(DocumentVersion, (doc.id, version or doc.current_version))
        if v is None:
            raise NotFound("该版本不存在。")
        if grant is not None and self.releaser is not None:
            return self.releaser(g, doc, v, grant), v
        return self.open_version(g, doc, v), v

    def open_version(self, g: Guard, doc: Document, v: DocumentVersion) -> bytes:
        """The stored PDF bytes, decrypted and checked against the recorded sha256."""
        try:
            envelope = self.blobs.get(v.blob_key)
        except BlobNotFound:
            raise IntegrityFailure("文件缺失，无法读取。") from None
        pdf = self.vault.open_bytes(g.session, envelope, doc.dek_id, kind="document", record_id=doc.id,
                                    version=v.version, sealed=doc.sealed)
        if sha256_hex(pdf) != v.sha256:
            raise IntegrityFailure()
        return pdf

    def fields_of(self, g: Guard, doc: Document, v: DocumentVersion) -> dict[str, Any]:
        data = self.vault.open_json(g.session, v.fields_payload, doc.dek_id, kind="document_fields",
                                    record_id=doc.id, version=v.version, sealed=doc.sealed)
        return dict(data["fields"])

    # corrections -----------------------------------------------------------------------

    def new_version(self, g: Guard, doc_id: str, req: VersionRequest) -> DocumentIssued:
        # Only the issuer may correct: corrections queue with its issues (the caller's org).
        with self._issuer_queue(g.actor.org_id):
            doc, kind, _grant = self._load(g, doc_id, Action.DOCUMENT_CORRECT, read=False)
            if doc.sealed:
                raise NotFound()
            self._prevalidate(kind, req.fields)
            org = g.session.get(Org, doc.issuer_org_id)
            if org is None:
                raise RuntimeError("a document's issuing organisation row is missing")
            if org.id != g.actor.org_id:
                raise Conflict("只有发文单位可以更正本公文。", details={"field": "issuer"})
            subject = self._subject(g, kind, doc.subject_id, Action.DOCUMENT_CORRECT) \
                if doc.subject_kind in ("household", "minor") else Subject(doc.subject_kind, doc.subject_id,
                                                                            doc.region_code, ())
            fields = self._validated(g, kind, subject, req.fields)
            named = self._persons(g, subject, fields)
            self._check_glyphs(fields, self._meta(g, kind, org, doc.doc_number, None))
            code = new_code()
            meta = self._meta(g, kind, org, doc.doc_number, code)
            g.release()  # render without holding the database
            pdf = self.pool.pdf(kind.kind, fields.model_dump(mode="json"), meta)
            # Corrections from other processes queue on the document row; each numbers its version
            # after the one committed before it.
            g.session.refresh(doc, with_for_update=True)
            if doc.sealed:
                raise NotFound()
            if not self._still(g, subject):
                raise Conflict("档案在出具期间已变更，请重试。", details={"field": "subject_id"})
            version = self._store_version(g, doc, fields, self.vault.data_key(g.session, doc.dek_id), code=code,
                                          meta=meta, pdf=pdf, version=doc.current_version + 1,
                                          supersedes=doc.current_version, reason=req.reason)
            doc.current_version = version.version
            people.record(g.session, doc, named)
            enqueue(g.session, "document", doc.id)
            g.commit()
        return self._issued(doc, version)

    # lists and prefill -----------------------------------------------------------------

    def list(self, g: Guard, *, kind: str | None, subject_id: str | None, region: str | None, limit: int,
             cursor: str | None) -> dict[str, Any]:
        if not g.decide(Action.DOCUMENT_LIST).allowed:
            g.authorize(Action.DOCUMENT_LIST, Resource("document"))
        if region is not None:
            if region not in self.regions:
                raise InvalidInput.one("region", "未知的行政区划代码", location="query")
            if not g.decide(Action.DOCUMENT_LIST, Resource("region", region, region)).allowed:
                g.authorize(Action.DOCUMENT_LIST, Resource("region", region, region))
        after = decode_cursor(cursor)
        readable = [k.kind for k in K.KINDS.values() if set(g.actor.roles) & self.readers(k)]
        q = (select(Document).join(Region, Region.code == Document.region_code)
             .where(Region.path.startswith(g.policy.scope_path(g.actor), autoescape=True),
                    Document.sealed.is_(False), Document.kind.in_(readable)))
        if region:
            node = self.regions.get(region)
            if node is None:
                raise RuntimeError("a region checked above is not in the tree")
            q = q.where(Region.path.startswith(node.path, autoescape=True))
        if kind:
            q = q.where(Document.kind == kind)
        if subject_id:
            q = q.where(Document.subject_id == subject_id)
        if after:
            q = q.where(Document.id > after)
        rows = list(g.session.scalars(q.order_by(Document.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
        g.authorize(Action.DOCUMENT_LIST, Resource("document", None, region or g.actor.region_code),
                    subjects=[h for r in rows for h in (r.subject_hashes or [])],
                    filters={"kind": kind, "subject_id": subject_id}, details={"count": len(rows)}, commit=True)
        items = [self._public(g, r, K.KINDS[r.kind]) for r in rows]
        return {"items": items, "next_cursor": encode_cursor(rows[-1].id) if more and rows else None}

    def prefill(self, g: Guard, kind_name: str, subject_id: str | None) -> dict[str, Any]:
        """Fields for ``kind`` filled in from the subject's record (an audited read)."""
        kind = K.get(kind_name)
        if kind is None:  # the kind is part of the path here: an unknown one is not found
            raise NotFound("未知的公文种类。")
        self._gate(g, Action.DOCUMENT_PREFILL, kind, roles=kind.issuer_roles)
        subject = self._subject(g, kind, subject_id, Action.DOCUMENT_PREFILL)
        g.authorize(Action.DOCUMENT_PREFILL,
                    Resource(subject.kind, subject.id, subject.region_code, required_roles=kind.issuer_roles),
                    subjects=list(subject.hashes), details={"kind": kind.kind}, commit=True)
        return {"kind": kind.kind, "subject_id": subject.id, "fields": self._fill(g, kind, subject)}

    def _fill(self, g: Guard, kind: K.DocKind, subject: Subject) -> dict[str, Any]:
        if subject.kind not in ("household", "minor"):
            return {}
        return P.prefill(kind.kind, self._record(g, subject), staff=g.actor.display_name)

    def print_batch(self, g: Guard, kind_name: str, *, region: str, issue: bool,
                    renderer: Renderer, progress: Any = None) -> tuple[bytes, list[DocumentIssued]]:
        """Every subject of ``kind`` in ``region``'s subtree as one PDF, rendered in one pass.

        Without ``issue`` the pages are archive print copies (存档打印件): not numbered,
        not stored. With ``issue`` each is issued as an official document, numbered and
        stored in one transaction, and the combined PDF holds the very pages stored.
        """
        kind = self.kind_or_422(kind_name)
        if kind.subject not in ("household", "minor"):
            raise InvalidInput.one("kind", "只能批量打印家庭或未成年人档案类公文")
        self._gate(g, Action.DOCUMENT_PRINT, kind, roles=kind.issuer_roles)
        if region not in self.regions:
            raise InvalidInput.one("region", "未知的行政区划代码")
        g.authorize(Action.DOCUMENT_PRINT, Resource("region", region, region, required_roles=kind.issuer_roles),
                    details={"kind": kind.kind})
        model = Household if kind.subject == "household" else Minor
        node = self.regions.get(region)
        assert node is not None
        rows = list(g.session.scalars(
            select(model).join(Region, Region.code == model.region_code)
            .where(Region.path.startswith(node.path, autoescape=True), model.sealed.is_(False))
            .order_by(model.region_code, model.id)))
        if not rows:  # the renderer refuses an empty set: say so, not a traceback
            raise InvalidInput.one("region", "该区域内没有可打印的档案")
        org = self._org(g)
        year = g.now.astimezone(LOCAL_TZ).year
        subjects = [self._subject(g, kind, r.id, Action.DOCUMENT_PRINT) for r in rows]
        # The read of every record is logged (and durable) before any is decrypted.
        g.record(EventDraft(action=Action.DOCUMENT_PRINT, outcome="allowed", reason="print:records_read",
                            resource_kind="region", resource_id=region,
                            subjects=sorted({h for s in subjects for h in s.hashes}),
                            details={"kind": kind.kind, "count": len(rows), "issue": issue}))
        g.commit()
        items: list[tuple[K.DocKind, BaseModel, DocumentMeta]] = []
        pending: list[tuple[Document, BaseModel, str, bytes]] = []
        for subject in subjects:
            fields = self.validate_fields(kind, self._fill(g, kind, subject))
            if issue:
                doc_id = new_id("doc")
                serial, number = numbering.allocate(g.session, issuer=org, year=year)
                dek_id, dek = self.vault.new_data_key(g.session, owner_kind="document", owner_id=doc_id)
                code = new_code()
                doc = Document(
                    id=doc_id, kind=kind.kind, subject_kind=subject.kind, subject_id=subject.id,
                    region_code=subject.region_code, issuer_org_id=org.id, doc_number=number, number_year=year,
                    number_serial=serial, current_version=1, dek_id=dek_id, subject_hashes=[],
                    sealed=False, created_by=g.actor.user_id, created_at=g.now)
                g.session.add(doc)
                g.session.flush()
                people.record(g.session, doc, self._persons(g, subject, fields))
                meta = self._meta(g, kind, org, number, code)
                pending.append((doc, fields, code, dek))
            else:
                meta = self._meta(g, kind, org, "存档打印件（未编号）", None)
                meta = dataclasses.replace(meta, draft=False)
            self._check_glyphs(fields, meta)
            items.append((kind, fields, meta))
        combined, parts = renderer.render_set(items, progress=progress, parts=issue)
        issued: list[DocumentIssued] = []
        for (doc, fields, code, dek), pdf in zip(pending, parts, strict=True):
            blob_key = f"documents/{doc.id}/v1"
            payload = self.vault.seal_json(dek, doc.dek_id, {"fields": fields.model_dump(mode="json"), "reason": None},
                                           kind="document_fields", record_id=doc.id, version=1)
            v = DocumentVersion(
                document_id=doc.id, version=1, sha256=sha256_hex(pdf), size=len(pdf), blob_key=blob_key,
                fields_payload=payload, verification_code=code, supersedes=None, issued_by=g.actor.user_id,
                issued_at=g.now, issued_on=g.now.astimezone(LOCAL_TZ).date())
            g.session.add(v)
            g.on_rollback(lambda key=blob_key: self.blobs.delete(key))  # before the put: see _store_version
            self.blobs.put(blob_key, self.vault.seal_bytes(dek, doc.dek_id, pdf, kind="document", record_id=doc.id,
                                                           version=1))
            g.record(EventDraft(action=Action.DOCUMENT_ISSUE, outcome="allowed", reason="print:batch_issue",
                                resource_kind="document", resource_id=doc.id, subjects=list(doc.subject_hashes),
                                details={"kind": kind.kind}))
            issued.append(self._issued(doc, v))
            enqueue(g.session, "document", doc.id)
        if issue:
            g.commit()
        return combined, issued

    # verification (public) --------------------------------------------------------------

    def verify(self, code: str, *, sha256: str | None, request_id: str, now: datetime) -> dict[str, Any]:
        """What anyone holding a copy may learn: authentic or not, and nothing personal.

        The lookup is a read (no lock); the answer is built in memory, then the verification
        is logged in a short write transaction of its own, and nothing is answered unless that
        commits (fail closed).
        """
        code = normalize_code(code)
        answer: dict[str, Any] | None = None
        with self.db.read_session() as s:
            v = s.scalar(select(DocumentVersion).where(DocumentVersion.verification_code == code))
            doc = s.get(Document, v.document_id) if v else None
            known = doc is not None and not doc.sealed and v is not None
            matches = None if sha256 is None or v is None else sha256.lower() == v.sha256
            if known:
                if doc is None or v is None:
                    raise RuntimeError("a known document without its row or version")
                org = s.get(Org, doc.issuer_org_id)
                kind = K.get(doc.kind)
                answer = {
                    "authentic": True if matches is None else matches,
                    "kind": doc.kind, "title": kind.title if kind else doc.kind,
                    "issuer": org.name if org else "", "doc_number": doc.doc_number, "version": v.version,
                    "current": v.version == doc.current_version, "issued_at": v.issued_at,
                    "issued_on": v.issued_on, "sha256": v.sha256,
                    **({"sha256_matches": matches} if matches is not None else {}),
                }
            outcome = "allowed" if known else "denied"
            resource_id = doc.id if doc is not None and known else ""
        with self.db.session() as s:
            try:  # nothing is answered unless the verification is logged (fail closed)
                self.audit.append(s, actor=PUBLIC, request_id=request_id, at=now, draft=EventDraft(
                    action=Action.DOCUMENT_VERIFY, outcome=outcome,
                    reason="verify:code_known" if outcome == "allowed" else "verify:code_unknown",
                    resource_kind="document", resource_id=resource_id,
                    details={} if matches is None else {"sha256_matches": matches}))
                s.commit()
            except SQLAlchemyError as exc:
                s.rollback()
                raise AuditUnavailable() from exc
        if answer is None:
            raise NotFound("核验码无效：未找到对应的公文。", details={"authentic": False})
        return answer


PUBLIC = Actor(user_id="public", username="public", display_name="", org_id="", org_name="",
               org_type=OrgType.OTHER, roles=(), region_code="")


def _strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    from doc_templates.fonts import texts

    return list(texts(value, path))

