"""Official documents: what issuing, reading, batch printing and verifying share.

The work is split by job, each service taking only the collaborators it needs:

- ``archive.document_issuing.DocumentIssuingService``: preview, issue, correct, prefill;
  its ``issue_one`` numbers, seals and stores one document, for a single issue
  and for every document of a batch alike;
- ``archive.document_reading.DocumentReadingService``: a document, its PDF, its fields,
  the list;
- ``archive.document_batch.DocumentBatchService``: many subjects printed as one PDF
  (``shouhu print``), optionally issued;
- ``archive.document_verification.DocumentVerificationService``: the public check of a
  verification code.

This module holds the request and answer schemas, the verification codes, and
``DocumentBasis``: the kind, the subject, the fields and the printed meta, as
every service resolves and validates them. Who may read or issue a kind is
decided in ``access_control.policy``.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import String, literal, select

from access_control.actions import Action
from access_control.guard import Guard
from access_control.identity import Org
from access_control.policy import Resource, document_kind_readers, issues_as_school, kind_issuer_org_types
from access_control.regions import RegionTree
from access_control.sealed import SealedGrant, SealedRequest, case_details
from archive import persons as people
from archive import prefill
from archive.models import Document, DocumentVersion, Household, Minor
from archive.persons import Person
from archive.records import CaseFileService
from core.crypto import KeyRing
from core.errors import Conflict, InvalidInput, NotFound, field_errors
from core.fields import id_check_char
from core.redact import loggable
from doc_templates import kinds as doc_kinds
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
    """A verification code; drawn again if it holds ten digits in a row (see ``core.db.new_id``)."""
    while True:
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        if loggable(code):
            return code


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


def issued_answer(doc: Document, v: DocumentVersion) -> DocumentIssued:
    """The answer to an issue or a correction."""
    return DocumentIssued(id=doc.id, kind=doc.kind, doc_number=doc.doc_number, version=v.version,
                          sha256=v.sha256, verification_code=display_code(v.verification_code),
                          issued_at=v.issued_at)


def load_document(g: Guard, doc_id: str, action: Action, *, read: bool
                  ) -> tuple[Document, doc_kinds.DocKind, SealedRequest | None]:
    """A document the caller may act on; a sealed one only through the caller's active grant.

    An unknown id and a sealed document the caller has no grant for take one path: the
    same statement (the row's kind and sealed flag and the caller's live grant to it, in
    one query of plain columns), the same policy question (a sealed record without a
    grant), the same refusal event (no subject, no kind), so neither the answer, nor the
    log, nor the time tells them apart. A document that may be read is then loaded.
    """
    g.require(action, Resource("document", doc_id[:64]))
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
    kind = doc_kinds.get(kind_name) if kind_name is not None else None
    if action not in (Action.DOCUMENT_READ, Action.DOCUMENT_DOWNLOAD):
        grant_of = None  # a grant lets its requester read, nothing else
    if kind is None or sealed:
        probe = Resource("document", doc_id[:64], sealed=True, grant=grant_of if kind is not None else None)
        if not g.decide(action, probe).allowed:
            g.not_found(action, "document", doc_id)
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
    roles = kind.issuer_roles if action == Action.DOCUMENT_CORRECT else document_kind_readers(kind)
    # A correction renders a PDF before it commits: its event waits for the commit.
    g.authorize(action, Resource("document", doc.id, doc.region_code, required_roles=roles,
                                 issuer_org_id=doc.issuer_org_id),
                subjects=list(doc.subject_hashes or []), details={"kind": doc.kind}, commit=read,
                defer=action == Action.DOCUMENT_CORRECT)
    return doc, kind, None


class DocumentBasis:
    """The kind, the subject, the fields and the meta of a document, resolved and validated
    the same way by every document service."""

    def __init__(self, *, ring: KeyRing, regions: RegionTree, archive: CaseFileService, public_url: str | None):
        self.ring = ring
        self.regions = regions
        self.archive = archive
        # None: no public address (Settings.printed_public_url), so every issued PDF is a specimen.
        self.public_url = public_url

    @staticmethod
    def kind_or_422(name: str) -> doc_kinds.DocKind:
        kind = doc_kinds.get(name)
        if kind is None:
            raise InvalidInput.one("kind", "未知的公文种类")
        return kind

    @staticmethod
    def validate_fields(kind: doc_kinds.DocKind, fields: dict[str, Any]) -> BaseModel:
        try:
            return kind.validate(fields)
        except ValidationError as exc:
            raise InvalidInput(field_errors(exc.errors(), prefix=("fields",), location="body")) from None

    def id_hashes(self, fields: dict[str, Any]) -> set[str]:
        """Keyed hashes of every valid ID number written in the fields (audit subjects)."""
        out = set()
        for _path, text in _strings(fields):
            for m in _ID_NUMBER.findall(text.upper()):
                if id_check_char(m[:17]) == m[17]:
                    out.add(self.ring.keyed_hash("id_number", m))
        return out

    def subject(self, g: Guard, kind: doc_kinds.DocKind, subject_id: str | None, action: Action) -> Subject:
        if kind.subject in ("household", "minor"):
            row: Household | Minor | None = None
            if subject_id:
                row = (g.session.get(Household, subject_id) if kind.subject == "household"
                       else g.session.get(Minor, subject_id))
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
            listed = self.listed_minors(g, row.id)
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
    def listed_minors(g: Guard, household_id: str) -> list[Minor]:
        """The minors a household file lists: the household's unsealed minors, at most six."""
        return list(g.session.scalars(select(Minor).where(Minor.household_id == household_id,
                                                          Minor.sealed.is_(False)).order_by(Minor.id).limit(6)))

    def record(self, g: Guard, subject: Subject) -> prefill.Record:
        """The subject's record, decrypted: the caller has authorized (and logged) the read."""
        today = g.now.astimezone(LOCAL_TZ).date()
        if subject.kind == "household":
            hh = g.session.get(Household, subject.id)
            if hh is None:
                raise RuntimeError("the authorized household row is gone")
            minors = [g.session.get(Minor, mid) for mid in subject.listed]
            return prefill.Record(household_id=hh.id, region_name=self.regions.full_name(hh.region_code),
                            household=self.archive.household_view(g, hh).model_dump(mode="json"), today=today,
                            minors=[self.archive.minor_view(g, m).model_dump(mode="json") for m in minors if m])
        mn = g.session.get(Minor, subject.id)
        if mn is None:
            raise RuntimeError("the authorized minor row is gone")
        hh = g.session.get(Household, mn.household_id)
        if hh is None:
            raise RuntimeError("a minor's household row is missing")
        return prefill.Record(household_id=hh.id, region_name=self.regions.full_name(hh.region_code),
                        household=self.archive.household_view(g, hh).model_dump(mode="json"), today=today,
                        minor=self.archive.minor_view(g, mn).model_dump(mode="json"))

    @staticmethod
    def prevalidate(kind: doc_kinds.DocKind, fields: dict[str, Any]) -> None:
        """Refuse invalid fields before anything is looked up; particulars may be left out."""
        try:
            kind.validate(fields)
        except ValidationError as exc:
            own = prefill.PARTICULARS.get(kind.kind, {})
            errors = [e for e in exc.errors() if not (e["type"] == "missing" and e["loc"] and e["loc"][0] in own)]
            if errors:
                raise InvalidInput(field_errors(errors, prefix=("fields",), location="body")) from None

    @staticmethod
    def refuse_placeholders(fields: dict[str, Any], message: str = "尚未填写：请填写后再发文") -> None:
        """Refuse a field still reading ``（待填写）`` (prefill.TO_FILL): a document is issued complete
        or not at all. (Archive print copies and batch-printed forms keep it, for completing by hand.)"""
        left = [path for path, text in _strings(fields) if prefill.TO_FILL in text]
        if left:
            raise InvalidInput([{"field": f"fields.{path}", "location": "body", "message": message} for path in left],
                               "公文中仍有“（待填写）”的内容，不能出具。")

    def validated(self, g: Guard, kind: doc_kinds.DocKind, subject: Subject, fields: dict[str, Any]) -> BaseModel:
        """The fields, validated, with the subject's particulars from its record (prefill.PARTICULARS).

        A particular left out is filled in; one sent that differs from the record is a 422
        naming it. The record is read here: the caller's decision is logged before this.
        """
        table = prefill.PARTICULARS.get(kind.kind)
        if not table or subject.kind not in ("household", "minor"):
            return self.validate_fields(kind, fields)
        own = prefill.particulars(kind.kind, self.record(g, subject))
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

    def persons(self, g: Guard, subject: Subject, fields: BaseModel) -> set[Person]:
        """Everyone the document names: the subject's minors, and every ID number in its fields
        (the household's members' among them), joined to a minor's record where one carries it."""
        out = set(subject.persons)
        known = {h for _m, h in out if h}
        return out | people.resolve(g.session, (set(subject.hashes) | self.id_hashes(fields.model_dump(mode="json")))
                                    - known)

    @staticmethod
    def check_glyphs(fields: BaseModel, meta: DocumentMeta) -> None:
        try:
            Renderer.check_glyphs(fields.model_dump(mode="json"), meta)
        except MissingGlyphs as exc:
            raise InvalidInput([
                {"field": f"fields.{path}" if not path.startswith("meta.") else path[5:], "location": "body",
                 "message": "含有字库中没有的字符（" + "、".join(f"U+{ord(c):04X}" for c in chars) + "），无法排版"}
                for path, chars in exc.fields.items()
            ]) from None

    def meta(self, g: Guard, kind: doc_kinds.DocKind, org: Org, doc_number: str, code: str | None, *,
             seal_image: str | None = None) -> DocumentMeta:
        return DocumentMeta(
            kind=kind.kind, kind_title=kind.title, issuer=org.name, doc_number=doc_number,
            issued_on=g.now.astimezone(LOCAL_TZ).date(), created_at=g.now,
            verification_code=display_code(code) if code else None,
            verify_url=f"{self.public_url}/verify/{code}" if code and self.public_url else None,
            mark="draft" if code is None else "specimen" if self.public_url is None else None,
            # A seal image is printed only on a signed document that is no specimen.
            seal_image=seal_image if code and self.public_url else None,
        )

    @staticmethod
    def org(g: Guard) -> Org:
        org = g.session.get(Org, g.actor.org_id)
        if org is None:
            raise Conflict("发文单位不存在。")
        return org

    @staticmethod
    def gate(g: Guard, action: Action, kind: doc_kinds.DocKind, *, roles: frozenset[str]) -> None:
        """Refuse by role, and by the issuing organisation's type (policy.kind_issuer_org_types), before
        anything about a subject is looked up."""
        probe = Resource("document", None, None, existing=False, required_roles=roles,
                         required_org_types=kind_issuer_org_types(kind))
        g.require(action, probe, details={"kind": kind.kind})

    def fill(self, g: Guard, kind: doc_kinds.DocKind, subject: Subject) -> dict[str, Any]:
        """Fields for ``kind`` filled in from the subject's record (the caller has logged the read)."""
        if subject.kind not in ("household", "minor"):
            return {}
        return prefill.prefill(kind.kind, self.record(g, subject), staff=g.actor.display_name,
                               issuer=self.org(g).name, issuer_is_school=issues_as_school(g.actor))


def _strings(value: Any, path: str = "") -> list[tuple[str, str]]:
    from doc_templates.fonts import texts

    return list(texts(value, path))
