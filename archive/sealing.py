"""Sealing, unsealing and releasing juvenile criminal records (DOMAIN.md, "Sealed records").

Sealing re-encrypts a record under a fresh data key of the ``sealed-dek``
purpose, with the sealed flag in the associated data, and destroys the old key:
the ordinary read path can no longer open it, and the record disappears from
every list, count, search and duplicate check (its ID-number hash moves off the
minor into ``sealed_records``). Unsealing needs a statutory cause and reverses
it. While a grant lasts, its requester reads each granted document as a PDF
stamped on every page; each stamped copy goes into the disclosure register.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from access_control import legal_bases
from access_control.actions import Action
from access_control.audit import EventDraft
from access_control.guard import Guard
from access_control.identity import Org, User
from access_control.legal_bases import SealBasis, UnsealBasis
from access_control.policy import Resource, is_custodian
from access_control.sealed import SealedGrant, SealedRequest, SealedRequestService
from archive import persons as people
from archive.blobstore import BlobStore
from archive.document_issuing import DocumentIssuingService
from archive.document_reading import DocumentReadingService
from archive.documents import DocumentIssued, DocumentRequest
from archive.models import Disclosure, Document, DocumentPerson, DocumentVersion, Minor, SealedRecord
from archive.pki import CertificateAuthority
from core.crypto import sha256_hex
from core.db import new_id
from core.errors import Conflict, NotFound
from core.fields import CaseNumber
from core.keys import Vault
from core.outbox import enqueue
from doc_templates import kinds as doc_kinds
from doc_templates.pool import RenderPool

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
# A reply is issued once per application (``reply_document_id``): the release it lists is copy one.
REPLY_COPY_NUMBER = "000001"
CONFIDENTIALITY = ("依据《中华人民共和国刑事诉讼法》第二百八十六条，本件为依法提供的封存记录，"
                   "仅限申请事项使用，不得泄露、复制或转交他人。")


class SealBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    legal_basis: SealBasis = Field(title="法律依据", description="From the list: " + legal_bases.describe("seal"))
    case_number: CaseNumber = Field(
        title="案号", description="The case that orders the sealing, e.g. （2026）苏0706刑初88号; stored encrypted, "
        "logged as a keyed hash")


# The statutory causes for unsealing (Procuratorate Criminal Procedure Rules art. 485; the 2022
# Implementing Measures): a crime the combined sentence of which exceeds five years' imprisonment.
UNSEAL_CAUSES: dict[str, str] = {
    "new_crime": "实施新的犯罪，与封存记录之罪数罪并罚后被决定执行五年有期徒刑以上刑罚",
    "undiscovered_crime": "发现漏罪，与封存记录之罪数罪并罚后被决定执行五年有期徒刑以上刑罚",
    "retrial": "经审判监督程序改判五年有期徒刑以上刑罚",
    "other_statutory": "法律规定的其他解除封存情形",
}
UnsealCause = Literal["new_crime", "undiscovered_crime", "retrial", "other_statutory"]
if set(get_args(UnsealCause)) != set(UNSEAL_CAUSES):
    raise RuntimeError("UnsealCause and UNSEAL_CAUSES name different causes")


class UnsealBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    cause: UnsealCause = Field(
        title="解除封存的法定事由",
        description="; ".join(f"`{k}`: {v}" for k, v in UNSEAL_CAUSES.items()))
    legal_basis: UnsealBasis = Field(title="法律依据", description="From the list: " + legal_bases.describe("unseal"))
    reason: str | None = Field(None, min_length=1, max_length=300, title="说明",
                               description="Free text; stored encrypted, the log keeps only its keyed hash")


def sealed_records_of(session: Session, subject_hash: str) -> list[tuple[str, str]]:
    """The sealed documents of the person with this ID-number hash (what a grant names):
    those sealed for the person, and every document that names the person's sealed record.
    The sealed desk is built with it (``SealedRequestService(find_records=...)``)."""
    return [("document", i) for i in people.sealed_documents_of(session, subject_hash)]


class SealedRelease:
    """Stamps a granted sealed document for its requester and enters the copy in the register.

    A required collaborator of ``DocumentReadingService``: no reading service exists that could hand
    out a sealed document's PDF without it."""

    def __init__(self, *, pool: RenderPool, desk: SealedRequestService, pki: CertificateAuthority):
        self.pool = pool
        self.desk = desk
        self.pki = pki

    def release(self, g: Guard, doc: Document, version: DocumentVersion, grant: SealedRequest, pdf: bytes) -> bytes:
        """``pdf`` (the version's checked bytes) stamped on every page and signed by the custodian's
        organisation (whose custodian granted the request); the copy is registered."""
        requester = g.session.get(User, grant.requester_id)
        org = g.session.get(Org, grant.requester_org_id)
        at = g.now.astimezone(LOCAL_TZ)
        lines = [
            f"封存记录 依法提供  查询人：{requester.display_name if requester else g.actor.display_name}"
            f"（{org.name if org else g.actor.org_name}）  申请编号：{grant.id}",
            f"提供时间：{at.year}年{at.month}月{at.day}日 {at:%H:%M}  案号：{self.desk.case_number(g.session, grant)}",
            CONFIDENTIALITY,
        ]
        custodian = g.session.get(User, grant.decided_by) if grant.decided_by else None
        if custodian is None:
            raise RuntimeError("an approved sealed-record request has no deciding custodian")
        # The stamp rewrites the file, which breaks the issuer's signature: the copy handed out is
        # signed by the custodian's organisation instead (no database lock is held here).
        signer = self.pki.signer(custodian.org_id, now=g.now)
        stamped = self.pool.stamp(pdf, lines, signer=signer, at=g.now)
        g.begin_write()  # a read (GET) that records the copy it hands out
        g.session.add(Disclosure(
            id=new_id("dsc"), request_id=grant.id, document_id=doc.id, version=version.version,
            requester_id=grant.requester_id, requester_org_id=grant.requester_org_id, released_at=g.now,
            source_sha256=version.sha256, stamped_sha256=sha256_hex(stamped), signer_serial=signer.serial))
        g.commit()
        return stamped


class SealingService:
    def __init__(self, *, vault: Vault, blobs: BlobStore, issuing: DocumentIssuingService,
                 reading: DocumentReadingService,
                 desk: SealedRequestService):
        self.vault = vault
        self.blobs = blobs
        self.issuing = issuing
        self.reading = reading
        self.desk = desk

    # sealing -------------------------------------------------------------------------------

    def _target(self, g: Guard, record_id: str, action: Action) -> Minor | Document:
        """A minor or document by id; unknown ids are logged and answered 404."""
        g.require(action, Resource("record", record_id[:64]))
        row: Minor | Document | None = g.session.get(Minor, record_id) or g.session.get(Document, record_id)
        if row is None:
            g.not_found(action, "record", record_id)
        return row

    def seal(self, g: Guard, record_id: str, body: SealBody) -> dict[str, Any]:
        row = self._target(g, record_id, Action.RECORD_SEAL)
        kind = "minor" if isinstance(row, Minor) else "document"
        subject_hash = self._subject_hash(g, row)
        case_hash = self.desk.case_hash(body.case_number)
        details = {"case_number_hash": case_hash, "legal_basis": body.legal_basis}
        subjects = [h for h in (subject_hash, case_hash) if h]
        if row.sealed and not self._may_know_sealed(g, row):
            # "Sealed already" would tell the caller that a record it may not see exists:
            # refused (and logged) as sealed content without a grant, a 404 like an unknown id.
            g.authorize(Action.RECORD_SEAL, Resource(kind, row.id, row.region_code, sealed=True),
                        subjects=subjects, details=details)
        g.authorize(Action.RECORD_SEAL, Resource(kind, row.id, row.region_code),
                    subjects=subjects, details=details)
        if row.sealed:
            raise Conflict("该记录已封存。", details={"field": "record_id"})
        old_blobs: list[str] = []
        sealed_ids: list[str] = []
        sealed_with = None
        if isinstance(row, Minor):
            self._reseal_minor(g, row, sealed=True)
            row.id_hash = None  # the person vanishes from duplicate checks and lookups
            self._register(g, row.id, "minor", subject_hash, row.region_code, body)
            sealed_ids.append(row.id)
            # Written first: on PostgreSQL an issue naming the minor that has not committed yet
            # holds the minor's row (archive.document_issuing's _still), so it is either found below or refused.
            g.session.flush()
            # Every document that names the minor: about it, listing it, or writing its ID number.
            docs = list(g.session.scalars(people.naming(row.id, subject_hash, sealed=False)))
            sealed_with = row.id
        else:
            docs = [row]
        for doc in docs:
            old_blobs += self._reseal_document(g, doc, sealed=True)
            self._register(g, doc.id, "document", subject_hash, doc.region_code, body, sealed_with=sealed_with)
            sealed_ids.append(doc.id)
        for rid in sealed_ids:
            enqueue(g.session, "minor" if rid == row.id and kind == "minor" else "document", rid)
        g.session.flush()
        g.commit()
        for key in old_blobs:  # only once the new ciphertexts are committed
            self.blobs.delete(key)
        return {"record_id": row.id, "record_kind": kind, "sealed": sealed_ids, "sealed_at": g.now}

    def unseal(self, g: Guard, record_id: str, body: UnsealBody) -> dict[str, Any]:
        row = self._target(g, record_id, Action.RECORD_UNSEAL)
        kind = "minor" if isinstance(row, Minor) else "document"
        reg = g.session.get(SealedRecord, row.id)
        subjects = [h for h in (reg.subject_hash, reg.case_number_hash) if h] if reg else []
        details: dict[str, Any] = {"cause": body.cause, "legal_basis": body.legal_basis,
                                   "case_number_hash": reg.case_number_hash if reg else None}
        if body.reason:
            details["reason_hash"] = self.desk.reason_hash(body.reason)
        if row.sealed and not self._may_know_sealed(g, row):
            g.authorize(Action.RECORD_UNSEAL, Resource(kind, row.id, row.region_code, sealed=True),
                        subjects=subjects, details=details)  # as in ``seal``: a 404 like an unknown id
        g.authorize(Action.RECORD_UNSEAL, Resource(kind, row.id, row.region_code), subjects=subjects,
                    details=details)
        if not row.sealed or reg is None or reg.state != "sealed":
            raise Conflict("该记录未封存。", details={"field": "record_id"})
        old_blobs: list[str] = []
        unsealed: list[str] = []
        if isinstance(row, Minor):
            self._reseal_minor(g, row, sealed=False)
            # The hash comes back even if the number was registered again meanwhile: both records
            # carry it, and the duplicate check refuses a third (archive.records).
            row.id_hash = reg.subject_hash
            self._unregister(g, reg, body)
            unsealed.append(row.id)
            g.session.flush()
            # Documents sealed with a minor come back once no person they name is sealed; one
            # sealed on its own (``sealed_with`` empty) stays until it is unsealed itself.
            docs = []
            for doc in g.session.scalars(people.naming(row.id, reg.subject_hash, sealed=True)):
                doc_reg = g.session.get(SealedRecord, doc.id)
                if doc_reg is not None and doc_reg.sealed_with is not None and not people.holders(g.session, doc.id):
                    docs.append(doc)
        else:
            if people.holders(g.session, row.id):
                raise Conflict("该公文载有仍处于封存状态的未成年人，不能单独解除封存。", details={"field": "record_id"})
            docs = [row]
        for doc in docs:
            doc_reg = g.session.get(SealedRecord, doc.id)
            old_blobs += self._reseal_document(g, doc, sealed=False)
            if doc_reg is not None:
                self._unregister(g, doc_reg, body)
            unsealed.append(doc.id)
        for rid in unsealed:
            enqueue(g.session, "minor" if rid == row.id and kind == "minor" else "document", rid)
        g.session.flush()
        g.commit()
        for key in old_blobs:
            self.blobs.delete(key)
        return {"record_id": row.id, "record_kind": kind, "unsealed": unsealed, "unsealed_at": g.now,
                "cause": body.cause}

    def catch_up(self, g: Guard) -> list[str]:
        """Seal every unsealed document that names a sealed minor; the ids sealed. Idempotent.

        Sealing reaches such documents as it happens; this finds those it could not reach:
        documents issued before migration 0011 recorded whom they name (the migration filled
        their persons in from plain columns), and a document that wrote a sealed person's ID
        number. ``shouhu init`` (``Runtime.initialize``) runs it after migrating, with the key
        ring the migration lacks. Each is sealed with the minor's legal basis and case number,
        one event each, by the guard's actor (``system:init``).
        """
        rows = g.session.execute(
            select(DocumentPerson.document_id, SealedRecord.record_id)
            .join(Document, Document.id == DocumentPerson.document_id)
            .join(SealedRecord, and_(SealedRecord.record_kind == "minor", SealedRecord.state == "sealed",
                                     or_(SealedRecord.record_id == DocumentPerson.minor_id,
                                         SealedRecord.subject_hash == DocumentPerson.id_hash)))
            .where(Document.sealed.is_(False))
            .order_by(DocumentPerson.document_id, SealedRecord.sealed_at, SealedRecord.record_id)).all()
        first: dict[str, str] = {}
        for doc_id, minor_id in rows:
            first.setdefault(doc_id, minor_id)
        if not first:
            return []
        old_blobs: list[str] = []
        for doc_id, minor_id in first.items():
            doc, reg = g.session.get(Document, doc_id), g.session.get(SealedRecord, minor_id)
            if doc is None or reg is None:
                raise RuntimeError("a sealed document or its sealed record row is missing")
            case_number = self.seal_case(g.session, reg).get("case_number")  # None: ``_store_case`` stores none
            body = SealBody.model_construct(legal_basis=reg.legal_basis, case_number=case_number)  # type: ignore[arg-type]
            old_blobs += self._reseal_document(g, doc, sealed=True)
            self._register(g, doc.id, "document", reg.subject_hash, doc.region_code, body, sealed_with=minor_id)
            # The minor's case, as every event about a case carries it: code and keyed hash.
            g.record(EventDraft(action=Action.RECORD_SEAL, outcome="allowed", reason="seal:names_sealed_minor",
                                resource_kind="document", resource_id=doc.id,
                                subjects=[h for h in (reg.subject_hash, reg.case_number_hash) if h],
                                details={"case_number_hash": reg.case_number_hash, "legal_basis": reg.legal_basis,
                                         "sealed_with": minor_id}))
            enqueue(g.session, "document", doc.id)
        g.session.flush()
        g.commit()
        for key in old_blobs:
            self.blobs.delete(key)
        return list(first)

    @staticmethod
    def _may_know_sealed(g: Guard, row: Minor | Document) -> bool:
        """Whether the caller may know that this sealed record exists: a custodian (who keeps the
        sealed archive), or the requester whose live grant names it."""
        if is_custodian(g.actor):
            return True
        return isinstance(row, Document) and SealedRequestService.active_grant(
            g.session, user_id=g.actor.user_id, record_id=row.id, now=g.now) is not None

    def _subject_hash(self, g: Guard, row: Minor | Document) -> str | None:
        if isinstance(row, Minor):
            return row.id_hash
        if row.subject_kind == "minor" and row.subject_id:
            minor = g.session.get(Minor, row.subject_id)
            if minor is not None and minor.id_hash:
                return minor.id_hash
            reg = g.session.get(SealedRecord, row.subject_id)
            if reg is not None:
                return reg.subject_hash
        return next(iter(row.subject_hashes or []), None)

    def _register(self, g: Guard, record_id: str, kind: str, subject_hash: str | None, region: str,
                  body: SealBody, *, sealed_with: str | None = None) -> None:
        reg = g.session.get(SealedRecord, record_id)
        if reg is None:
            reg = SealedRecord(record_id=record_id)
            g.session.add(reg)
        reg.record_kind, reg.subject_hash, reg.region_code = kind, subject_hash, region
        reg.sealed_with = sealed_with
        reg.sealed_by, reg.sealed_at, reg.state = g.actor.user_id, g.now, "sealed"
        self._store_case(g.session, reg, body)
        if reg.unseal_dek_id:  # a note of an earlier unsealing goes for good
            self.vault.shred_key(g.session, reg.unseal_dek_id)
        reg.unsealed_at = reg.unsealed_by = reg.unseal_basis = reg.unseal_cause = None
        reg.unseal_note = reg.unseal_dek_id = None

    def _unregister(self, g: Guard, reg: SealedRecord, body: UnsealBody) -> None:
        reg.state, reg.unsealed_at, reg.unsealed_by = "unsealed", g.now, g.actor.user_id
        reg.unseal_basis, reg.unseal_cause = body.legal_basis, body.cause
        if reg.unseal_dek_id:
            self.vault.shred_key(g.session, reg.unseal_dek_id)
        reg.unseal_note = reg.unseal_dek_id = None
        if body.reason:  # free text that may name people: sealed under a data key of its own
            dek_id, dek = self.vault.new_data_key(g.session, owner_kind="sealed_record", owner_id=reg.record_id)
            reg.unseal_note = self.vault.seal_json(dek, dek_id, {"reason": body.reason}, kind="unseal_note",
                                                   record_id=reg.record_id, version=1)
            reg.unseal_dek_id = dek_id

    def _store_case(self, session: Session, reg: SealedRecord, body: SealBody) -> None:
        """The sealing's legal basis (a code) in plain; its case number sealed under a data key of
        the register entry's own, and its keyed hash for lookups. An earlier sealing's key goes."""
        reg.legal_basis, reg.case_number = body.legal_basis, None
        if reg.case_dek_id:
            self.vault.shred_key(session, reg.case_dek_id)
        reg.case_note = reg.case_dek_id = reg.case_number_hash = None
        if not body.case_number:  # sealing along a minor whose case number is no longer known
            return
        dek_id, dek = self.vault.new_data_key(session, owner_kind="sealed_record", owner_id=reg.record_id)
        reg.case_note = self.vault.seal_json(dek, dek_id, {"case_number": body.case_number}, kind="seal_case",
                                             record_id=reg.record_id, version=1)
        reg.case_dek_id = dek_id
        reg.case_number_hash = self.desk.case_hash(body.case_number)

    def seal_case(self, session: Session, reg: SealedRecord) -> dict[str, Any]:
        """The case number (and, before 0013, the free-text basis) a record was sealed under."""
        if reg.case_note is None or reg.case_dek_id is None:
            return {"case_number": reg.case_number}
        return dict(self.vault.open_json(session, reg.case_note, reg.case_dek_id, kind="seal_case",
                                         record_id=reg.record_id, version=1))

    def unseal_reason(self, session: Session, reg: SealedRecord) -> str | None:
        """The free-text explanation given when the record was unsealed, if any."""
        if reg.unseal_note is None or reg.unseal_dek_id is None:
            return None
        data = self.vault.open_json(session, reg.unseal_note, reg.unseal_dek_id, kind="unseal_note",
                                    record_id=reg.record_id, version=1)
        return data.get("reason")

    def _reseal_minor(self, g: Guard, row: Minor, *, sealed: bool) -> None:
        data = self.vault.open_json(g.session, row.payload, row.dek_id, kind="minor", record_id=row.id,
                                    version=row.version, sealed=row.sealed)
        old = row.dek_id
        dek_id, dek = self.vault.new_data_key(g.session, owner_kind="minor", owner_id=row.id, sealed=sealed)
        row.payload = self.vault.seal_json(dek, dek_id, data, kind="minor", record_id=row.id, version=row.version,
                                           sealed=sealed)
        row.dek_id, row.sealed = dek_id, sealed
        self.vault.shred_key(g.session, old)

    def _reseal_document(self, g: Guard, doc: Document, *, sealed: bool) -> list[str]:
        """Re-encrypt every version under a new key; returns the blob keys to delete after commit."""
        old_dek = doc.dek_id
        dek_id, dek = self.vault.new_data_key(g.session, owner_kind="document", owner_id=doc.id, sealed=sealed)
        suffix = "sealed" if sealed else "open"
        stale: list[str] = []
        for v in g.session.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)):
            pdf = self.reading.open_version(g, doc, v)
            fields = self.vault.open_json(g.session, v.fields_payload, old_dek, kind="document_fields",
                                          record_id=doc.id, version=v.version, sealed=doc.sealed)
            new_key = f"documents/{doc.id}/v{v.version}-{suffix}-{new_id('b')[2:]}"
            self.blobs.put(new_key, self.vault.seal_bytes(dek, dek_id, pdf, kind="document", record_id=doc.id,
                                                          version=v.version, sealed=sealed))
            g.on_rollback(partial(self.blobs.delete, new_key))
            stale.append(v.blob_key)
            v.blob_key = new_key
            v.fields_payload = self.vault.seal_json(dek, dek_id, fields, kind="document_fields", record_id=doc.id,
                                                    version=v.version, sealed=sealed)
        doc.dek_id, doc.sealed = dek_id, sealed
        self.vault.shred_key(g.session, old_dek)
        return stale

    # replies ---------------------------------------------------------------------------------

    def reply(self, g: Guard, rid: str) -> DocumentIssued:
        """Issue the 查询告知函 (``sealed_query_reply``) for a decided application.

        Which answer is decided here, from the application alone:
        - an entitled requester whose application was refused (or whose grant was revoked)
          gets the refusal letter with the custodian's reasons, never a false "no record";
        - an approved application whose grant names records gets the release: the records
          listed, a copy number and the confidentiality duty;
        - every other application (an unentitled requester, whatever the archive holds; an
          approved one that found nothing) gets "截至…，未发现…有犯罪记录", the same words
          whether the person has a sealed record or none.
        """
        req = self.desk._load(g, rid, Action.SEALED_REPLY, read=False)
        status = self.desk.status(req, g.now)
        if status in ("pending", "overdue"):
            raise Conflict("申请尚未审批，不能出具告知函。", details={"field": "status"})
        if req.reply_document_id:
            raise Conflict("该申请已出具告知函。", details={"field": "reply_document_id"})
        data = self.vault.open_json(g.session, req.payload, req.dek_id, kind="sealed_request", record_id=req.id,
                                    version=1)
        org = g.session.get(Org, req.requester_org_id)
        fields: dict[str, Any] = {
            "recipient": (org.name if org else "查询单位")[:60],
            "request_reference": req.id,
            "subject_name": data["subject"]["name"],
            "subject_id_number": data["subject"]["id_number"],
            "query_date": req.created_at.astimezone(LOCAL_TZ).date().isoformat(),
            "as_of": g.now.astimezone(LOCAL_TZ).date().isoformat(),
        }
        case_number = req.case_number or data.get("case_number")  # a pre-0013 row: the column
        released = self._released(g, req) if req.status == "approved" and req.entitled else []
        if req.entitled and req.status in ("denied", "revoked"):
            reasons = self.desk.reasons(g.session, req)
            why = (reasons["revocation"] if req.status == "revoked" else None) or reasons["decision"]
            fields.update(result="refused", case_number=case_number, reasons=(why or "不符合查询条件。")[:300])
        elif released:
            fields.update(result="records_provided", case_number=case_number, records=released,
                          copy_number=REPLY_COPY_NUMBER)
        else:
            fields["result"] = "no_record"
        g.commit()  # the decision to reply was logged above; issuing logs its own event
        issued = self.issuing.issue(g, DocumentRequest(kind="sealed_query_reply", subject_id=req.id, fields=fields))
        g.begin_write()  # the issue committed: the request's session reads again until told to write
        decided = g.session.get(SealedRequest, rid)
        if decided is None:
            raise RuntimeError("the sealed-record request row is gone")
        decided.reply_document_id = issued.id
        g.commit()
        return issued

    @staticmethod
    def _released(g: Guard, req: SealedRequest) -> list[dict[str, str]]:
        """The sealed documents an approved application's grant names: title and number of each."""
        rows = g.session.execute(
            select(Document.kind, Document.doc_number).join(SealedGrant, SealedGrant.record_id == Document.id)
            .where(SealedGrant.request_id == req.id).order_by(Document.doc_number, Document.id).limit(20)).all()
        out = []
        for kind_name, number in rows:
            kind = doc_kinds.get(kind_name)
            out.append({"title": (kind.title if kind else kind_name)[:60], "doc_number": number[:60]})
        return out

    def reply_pdf(self, g: Guard, rid: str) -> tuple[bytes, DocumentVersion]:
        req = self.desk._load(g, rid, Action.SEALED_REPLY_READ, read=False)
        if not req.reply_document_id:
            raise NotFound("尚未出具告知函。")  # logged in place of the 'allowed' event (Guard.fail)
        g.commit()
        doc = g.session.get(Document, req.reply_document_id)
        if doc is None:
            raise RuntimeError("the reply document row is missing")
        v = g.session.get(DocumentVersion, (doc.id, doc.current_version))
        if v is None:
            raise RuntimeError("the reply document's current version is missing")
        return self.reading.open_version(g, doc, v), v

    def granted(self, g: Guard, rid: str) -> dict[str, Any]:
        records = self.desk.granted_records(g, rid)
        req = g.session.get(SealedRequest, rid)
        items = []
        for kind, rec_id in records:
            doc = g.session.get(Document, rec_id) if kind == "document" else None
            if doc is None or not doc.sealed:
                continue
            items.append({"record_kind": kind, "id": doc.id, "kind": doc.kind, "doc_number": doc.doc_number,
                          "version": doc.current_version, "pdf": f"/api/v1/documents/{doc.id}/pdf"})
        return {"request_id": rid, "expires_at": req.expires_at if req else None, "items": items}

    def disclosures(self, g: Guard, *, request_id: str | None) -> dict[str, Any]:
        g.authorize(Action.DISCLOSURE_LIST, Resource("disclosure"), filters={"request_id": request_id}, commit=True)
        q = select(Disclosure).order_by(Disclosure.released_at, Disclosure.id)
        if request_id:
            q = q.where(Disclosure.request_id == request_id)
        return {"items": [
            {"id": d.id, "request_id": d.request_id, "document_id": d.document_id, "version": d.version,
             "requester_id": d.requester_id, "requester_org_id": d.requester_org_id, "released_at": d.released_at,
             "source_sha256": d.source_sha256, "stamped_sha256": d.stamped_sha256}
            for d in g.session.scalars(q.limit(1000))]}

