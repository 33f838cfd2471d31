"""The public check of a document's verification code: authentic or not, and nothing personal."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from access_control.actions import Action
from access_control.audit import AuditLog, EventDraft
from access_control.identity import Actor, Org, OrgType
from archive.documents import normalize_code
from archive.models import Document, DocumentVersion
from core.db import Database
from core.errors import AuditUnavailable, NotFound
from doc_templates import kinds as doc_kinds

PUBLIC = Actor(user_id="public", username="public", display_name="", org_id="", org_name="",
               org_type=OrgType.OTHER, roles=(), region_code="")


class DocumentVerificationService:
    def __init__(self, *, db: Database, audit: AuditLog):
        self.db = db
        self.audit = audit

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
                kind = doc_kinds.get(doc.kind)
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

