"""Sealed juvenile records: applications, decisions, time-boxed grants (DOMAIN.md).

A requester from an entitled organisation (court, procuratorate, police by
default) applies in writing with case number, legal basis, purpose and the
subject's name and ID number. A custodian decides within the deadline; nobody
decides their own application or one from their own organisation. An approval
grants the subject's sealed records until ``expires_at``; a grant can be
revoked. Nothing a requester sees depends on whether the subject has a sealed
record: the application, its status and the reply read the same either way.

What a requester types is kept out of plain sight: the case number (checked for
the form of a court, procuratorate or police number), the purpose and the
subject sit in the application's sealed payload; the legal basis is a code from
``access_control.legal_bases``. Rows and events keep the case number's keyed hash
(``case_number_hash``, also among an event's ``subjects``) and the basis's code.

Which records a subject has is the archive's business: ``find_records`` is a required
constructor argument, given by the archive layer (access_control never imports archive).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Boolean, ForeignKey, LargeBinary, String, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from access_control import legal_bases
from access_control.actions import Action
from access_control.guard import Guard
from access_control.legal_bases import ApplyBasis
from access_control.policy import SEALED_REQUEST_PARTIES, Resource, is_custodian, org_type_entitled
from core.crypto import KeyRing
from core.db import Base, UTCDateTime, new_id
from core.errors import Conflict, Forbidden, NotFound
from core.fields import CaseNumber, IdNumber, Name, Text, Timestamp, case_number_key, normalize_id_number
from core.keys import Vault
from core.settings import Settings


class SealedRequest(Base):
    __tablename__ = "sealed_requests"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    requester_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    requester_org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    entitled: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | approved | denied | revoked
    # A code of access_control.legal_bases (the requester picks it from the list; "legacy" for a
    # free-text basis written before 0013, whose text now sits in the payload).
    legal_basis: Mapped[str] = mapped_column(String(200))
    # The keyed hash of the case number (``case_number_key`` form, "case_number" purpose); the
    # number itself is in the payload.
    case_number_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    # Before 0013 the case number was kept here in plain text. Never written now; emptied by
    # ``archive.sealed_upgrade`` (run by ``shouhu init``), which moves it into the payload.
    case_number: Mapped[str | None] = mapped_column(String(80))
    subject_hash: Mapped[str] = mapped_column(String(64), index=True)
    # case number, purpose and the subject's name and ID number, sealed with the request's data key
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    dek_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    due_by: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(40))
    # The decision and revocation reasons (free text that may name people), sealed with the
    # request's data key: {"decision": ..., "revocation": ...} (migration 0009).
    reasons: Mapped[bytes | None] = mapped_column(LargeBinary)
    # Before 0009 the reasons were kept here in plain text. Never written now; read only for
    # rows decided before 0009, and emptied when such a request is next written (revoked).
    decision_reason: Mapped[str | None] = mapped_column(String(300))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reply_document_id: Mapped[str | None] = mapped_column(String(40))


class SealedGrant(Base):
    """One record an approved request may read, while the request's grant lasts."""

    __tablename__ = "sealed_grants"

    request_id: Mapped[str] = mapped_column(ForeignKey("sealed_requests.id"), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(40), primary_key=True, index=True)
    record_kind: Mapped[str] = mapped_column(String(20))


class SubjectIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: Name = Field(title="被查询人姓名")
    id_number: IdNumber = Field(title="被查询人公民身份号码")


class SealedRequestCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    case_number: CaseNumber = Field(
        title="案号", description="A court, procuratorate or police case number, e.g. （2026）苏0706刑初88号 or "
        "连海检刑诉〔2026〕12号; stored encrypted, logged as a keyed hash")
    legal_basis: ApplyBasis = Field(title="法律依据", description="From the list: " + legal_bases.describe("apply"))
    purpose: Text = Field(min_length=1, title="查询用途", description="Free text, stored encrypted")
    subject: SubjectIn


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    decision: Literal["approve", "deny"]
    reason: str = Field(min_length=1, max_length=300, title="理由")
    expires_at: Timestamp | None = Field(
        None, description="When the grant ends, RFC 3339 with offset (default: the configured term)")


class Revocation(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    reason: str = Field(min_length=1, max_length=300, title="撤销理由")


REASON_HASH = "sealed-reason"  # the keyed-hash purpose of decision, revocation and unseal reasons
CASE_HASH = "case_number"  # the keyed-hash purpose of case numbers (audit details, subjects and filters)


def case_number_hash(ring: KeyRing, case_number: str) -> str:
    """The keyed hash of a case number in its ``case_number_key`` form: what events and the audit
    ``case_number`` filter carry instead of the number."""
    return ring.keyed_hash(CASE_HASH, case_number_key(case_number))


def case_details(req: SealedRequest) -> dict[str, Any]:
    """What an audit event says about an application's case: the basis's code, the number's keyed hash."""
    return {"case_number_hash": req.case_number_hash, "legal_basis": req.legal_basis}


def case_subjects(req: SealedRequest) -> list[str]:
    """The application's keyed hashes an event is indexed by: the person's and the case's."""
    return [h for h in (req.subject_hash, req.case_number_hash) if h]
FindRecords = Callable[[Session, str], list[tuple[str, str]]]


class SealedRequestService:
    def __init__(self, *, vault: Vault, ring: KeyRing, settings: Settings, find_records: FindRecords):
        self.vault = vault
        self.ring = ring
        self.decision_days = settings.sealed_decision_days
        self.grant_days = settings.sealed_grant_days
        self.entitled_types = frozenset(t.strip() for t in settings.sealed_entitled_org_types.split(",") if t.strip())
        self.find_records = find_records

    def subject_hash(self, id_number: str) -> str:
        return self.ring.keyed_hash("id_number", normalize_id_number(id_number))

    @staticmethod
    def status(req: SealedRequest, now: datetime) -> str:
        if req.status == "approved" and req.expires_at is not None and req.expires_at <= now:
            return "expired"
        if req.status == "pending" and req.due_by < now:
            return "overdue"
        return req.status

    def case_hash(self, case_number: str) -> str:
        """The keyed hash of a case number, as events and the ``case_number`` filter carry it."""
        return case_number_hash(self.ring, case_number)

    def _details(self, req: SealedRequest, **extra: Any) -> dict[str, Any]:
        return {**case_details(req), **extra}

    def case_number(self, session: Session, req: SealedRequest) -> str:
        """The application's case number, from its sealed payload (or a pre-0013 plain column)."""
        data = self.vault.open_json(session, req.payload, req.dek_id, kind="sealed_request", record_id=req.id,
                                    version=1)
        return str(req.case_number or data.get("case_number") or "")

    def reason_hash(self, reason: str) -> str:
        """The keyed hash an audit event keeps in place of a free-text reason."""
        return self.ring.keyed_hash(REASON_HASH, reason)

    def reasons(self, session: Session, req: SealedRequest) -> dict[str, str | None]:
        """The decision and revocation reasons: from the sealed envelope, or a pre-0009 plain column."""
        if req.reasons is None:
            return {"decision": req.decision_reason, "revocation": None}
        data = self.vault.open_json(session, req.reasons, req.dek_id, kind="sealed_request_reasons",
                                    record_id=req.id, version=1)
        return {"decision": data.get("decision"), "revocation": data.get("revocation")}

    def store_reasons(self, session: Session, req: SealedRequest, reasons: dict[str, str | None]) -> None:
        dek = self.vault.data_key(session, req.dek_id)
        req.reasons = self.vault.seal_json(dek, req.dek_id, reasons, kind="sealed_request_reasons",
                                           record_id=req.id, version=1)
        req.decision_reason = None  # a pre-0009 plain reason now lives in the envelope only

    def public(self, g: Guard, req: SealedRequest, *, full: bool) -> dict[str, Any]:
        """The request as its requester (or a custodian, ``full``) sees it."""
        data = self.vault.open_json(g.session, req.payload, req.dek_id, kind="sealed_request", record_id=req.id,
                                    version=1)
        reasons = self.reasons(g.session, req)
        out: dict[str, Any] = {
            "id": req.id, "status": self.status(req, g.now), "due_by": req.due_by, "created_at": req.created_at,
            "case_number": req.case_number or data.get("case_number"), "legal_basis": req.legal_basis,
            "legal_basis_label": legal_bases.label(req.legal_basis), "purpose": data["purpose"],
            "subject": data["subject"], "decided_at": req.decided_at, "reason": reasons["decision"],
            "revocation_reason": reasons["revocation"], "revoked_at": req.revoked_at, "expires_at": req.expires_at,
            "reply_document_id": req.reply_document_id,
        }
        if full:
            out["requester_id"] = req.requester_id
            out["requester_org_id"] = req.requester_org_id
            out["entitled"] = req.entitled
        return out

    # applying --------------------------------------------------------------------------

    def apply(self, g: Guard, body: SealedRequestCreate) -> dict[str, Any]:
        """File an application. Its answer never depends on what the archive holds."""
        rid = new_id("sq")
        subject_hash = self.subject_hash(body.subject.id_number)
        case_hash = self.case_hash(body.case_number)
        g.authorize(Action.SEALED_APPLY, Resource("sealed_request", rid, existing=False),
                    subjects=[subject_hash, case_hash],
                    details={"case_number_hash": case_hash, "legal_basis": body.legal_basis})
        dek_id, dek = self.vault.new_data_key(g.session, owner_kind="sealed_request", owner_id=rid)
        payload = {"case_number": body.case_number, "purpose": body.purpose, "subject": body.subject.model_dump()}
        req = SealedRequest(
            id=rid, requester_id=g.actor.user_id, requester_org_id=g.actor.org_id,
            entitled=org_type_entitled(g.actor, self.entitled_types), status="pending", case_number=None,
            case_number_hash=case_hash, legal_basis=body.legal_basis, subject_hash=subject_hash,
            payload=self.vault.seal_json(dek, dek_id, payload, kind="sealed_request", record_id=rid, version=1),
            dek_id=dek_id, created_at=g.now, due_by=g.now + timedelta(days=self.decision_days),
        )
        g.session.add(req)
        g.commit()
        return {"id": rid, "status": "pending", "due_by": req.due_by, "created_at": req.created_at}

    def _load(self, g: Guard, rid: str, action: Action, *, read: bool, own_only: bool = False,
              extra: dict[str, Any] | None = None) -> SealedRequest:
        """A request the caller may see: its requester, or (unless ``own_only``) a custodian; else 404."""
        g.require(action, Resource("sealed_request", rid[:64]))
        req = g.session.get(SealedRequest, rid)
        if req is None:
            g.not_found(action, "sealed_request", rid)
        parties = frozenset() if own_only else SEALED_REQUEST_PARTIES
        g.authorize(action, Resource("sealed_request", req.id, required_roles=parties, owner_id=req.requester_id),
                    subjects=case_subjects(req), details=self._details(req, **(extra or {})), commit=read)
        return req

    def get(self, g: Guard, rid: str) -> dict[str, Any]:
        req = self._load(g, rid, Action.SEALED_READ, read=True)
        return self.public(g, req, full=is_custodian(g.actor))

    def list(self, g: Guard, *, status: str | None) -> dict[str, Any]:
        custodian = is_custodian(g.actor)
        g.authorize(Action.SEALED_LIST, Resource("sealed_request"), filters={"status": status}, commit=True)
        q = select(SealedRequest)
        if not custodian:
            q = q.where(SealedRequest.requester_id == g.actor.user_id)
        if status == "overdue":
            q = q.where(SealedRequest.status == "pending", SealedRequest.due_by < g.now)
        elif status == "expired":
            q = q.where(SealedRequest.status == "approved", SealedRequest.expires_at <= g.now)
        elif status == "approved":
            q = q.where(SealedRequest.status == "approved",
                        or_(SealedRequest.expires_at.is_(None), SealedRequest.expires_at > g.now))
        elif status:
            q = q.where(SealedRequest.status == status)
        rows = g.session.scalars(q.order_by(SealedRequest.due_by, SealedRequest.id).limit(500))
        return {"items": [self.public(g, r, full=custodian) for r in rows], "next_cursor": None}

    # deciding ----------------------------------------------------------------------------

    def decide(self, g: Guard, rid: str, body: Decision) -> dict[str, Any]:
        # The event says what was decided; the free-text reason may name people, so the event keeps
        # its keyed hash and the request keeps it sealed.
        req = self._load(g, rid, Action.SEALED_DECIDE, read=False,
                         extra={"decision": body.decision, "reason_hash": self.reason_hash(body.reason)})
        if req.requester_id == g.actor.user_id:
            raise Forbidden("sealed:own_request", "不能审批本人提出的申请。")
        if req.requester_org_id == g.actor.org_id:
            raise Forbidden("sealed:same_org", "不能审批本单位提出的申请。")
        if req.status != "pending":
            raise Conflict("该申请已经处理。", details={"field": "decision", "status": req.status})
        if body.decision == "approve" and not req.entitled:
            raise Conflict("申请单位无权依法查询封存记录，只能不予批准。",
                           details={"field": "decision", "rule": "sealed:requester_not_entitled"})
        req.decided_at, req.decided_by = g.now, g.actor.user_id
        self.store_reasons(g.session, req, {"decision": body.reason, "revocation": None})
        if body.decision == "approve":
            expires = body.expires_at or g.now + timedelta(days=self.grant_days)
            if expires <= g.now:
                raise Conflict("授权到期时间应晚于现在。", details={"field": "expires_at"})
            req.status, req.expires_at = "approved", expires
            records = self.find_records(g.session, req.subject_hash)
            g.session.add_all(SealedGrant(request_id=req.id, record_id=rec_id, record_kind=kind)
                              for kind, rec_id in records)
        else:
            req.status = "denied"
        g.session.flush()
        public = self.public(g, req, full=True)  # built before the commit: it cannot fail after it
        g.commit()
        return public

    def revoke(self, g: Guard, rid: str, body: Revocation) -> dict[str, Any]:
        req = self._load(g, rid, Action.SEALED_REVOKE, read=False,
                         extra={"reason_hash": self.reason_hash(body.reason)})
        if req.status != "approved" or (req.expires_at is not None and req.expires_at <= g.now):
            raise Conflict("只能撤销仍然有效的授权。", details={"field": "status"})
        req.status, req.revoked_at = "revoked", g.now
        self.store_reasons(g.session, req, {**self.reasons(g.session, req), "revocation": body.reason})
        public = self.public(g, req, full=True)
        g.commit()
        return public

    # grants ----------------------------------------------------------------------------------

    def granted_records(self, g: Guard, rid: str) -> builtins.list[tuple[str, str]]:
        """(kind, id) of what an active grant covers; 404 once it has ended."""
        req = self._load(g, rid, Action.SEALED_RECORDS, read=False, own_only=True)
        if self.status(req, g.now) != "approved":
            raise NotFound("授权不存在或已失效。")  # logged in place of the 'allowed' event (Guard.fail)
        g.commit()
        rows = g.session.execute(select(SealedGrant.record_kind, SealedGrant.record_id)
                                 .where(SealedGrant.request_id == req.id).order_by(SealedGrant.record_id))
        return [(k, i) for k, i in rows]

    @staticmethod
    def active_grant(session: Session, *, user_id: str, record_id: str, now: datetime) -> SealedRequest | None:
        """The approved, unexpired, unrevoked request of ``user_id`` that covers ``record_id``."""
        return session.scalars(
            select(SealedRequest).join(SealedGrant, SealedGrant.request_id == SealedRequest.id)
            .where(SealedGrant.record_id == record_id, SealedRequest.requester_id == user_id,
                   SealedRequest.status == "approved", SealedRequest.expires_at > now)
            .order_by(SealedRequest.expires_at.desc())
        ).first()
