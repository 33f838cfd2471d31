"""The public check of a document's verification code: authentic or not, and nothing personal.

The answer reports the stored version's signature (signer org, certificate serial, signing
time, valid or revoked) from the rows written when it was signed; the stored PDF is never
decrypted for an anonymous caller. A copy a person holds may be sent: its sha256 is compared
with the stored one and, when its bytes are sent, its signature is validated with pyHanko
against the deployment's CA (doc_templates.signing.check), offline.
"""

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
from archive.pki import CertificateAuthority, CertificatePublic
from core.db import Database
from core.errors import AuditUnavailable, NotFound
from doc_templates import kinds as doc_kinds
from doc_templates import signing

PUBLIC = Actor(user_id="public", username="public", display_name="", org_id="", org_name="",
               org_type=OrgType.OTHER, roles=(), region_code="")


class DocumentVerificationService:
    def __init__(self, *, db: Database, audit: AuditLog, pki: CertificateAuthority):
        self.db = db
        self.audit = audit
        self.pki = pki
        self._ca: bytes | None = None

    def _ca_der(self) -> bytes:
        if self._ca is None:
            self._ca = self.pki.ca_certificate()
        return self._ca

    def verify(self, code: str, *, sha256: str | None, request_id: str, now: datetime,
               pdf: bytes | None = None) -> dict[str, Any]:
        """What anyone holding a copy may learn: authentic or not, and nothing personal.

        ``pdf``: the copy's bytes, when sent (``sha256`` is then theirs): its signature is
        checked too, and ``authentic`` needs both the hash and a valid, unrevoked signature.

        The lookup is a read (no lock); the answer is built in memory, then the verification
        is logged in a short write transaction of its own, and nothing is answered unless that
        commits (fail closed).
        """
        code = normalize_code(code)
        answer: dict[str, Any] | None = None
        copy = signing.check(pdf, self._ca_der()) if pdf is not None else None
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
                stored = self.pki.by_serial(s, v.signer_serial) if v.signer_serial else None
                signature = _signature(stored, v.signed_at)
                copy_valid = None
                if copy is not None:
                    held = self.pki.by_serial(s, copy.serial) if copy.serial else None
                    copy_valid = bool(copy.ok and held is not None and held.status == "valid"
                                      and copy.serial == v.signer_serial)
                    matches = bool(matches)
                authentic = (True if matches is None else matches) and signature["status"] != "revoked" \
                    and copy_valid is not False
                answer = {
                    "authentic": authentic, "signature": signature,
                    "kind": doc.kind, "title": kind.title if kind else doc.kind,
                    "issuer": org.name if org else "", "doc_number": doc.doc_number, "version": v.version,
                    "current": v.version == doc.current_version, "issued_at": v.issued_at,
                    "issued_on": v.issued_on, "sha256": v.sha256,
                    **({"sha256_matches": matches} if matches is not None else {}),
                    **({"signature_valid": copy_valid} if copy_valid is not None else {}),
                }
            outcome = "allowed" if known else "denied"
            resource_id = doc.id if doc is not None and known else ""
        with self.db.session() as s:
            try:  # nothing is answered unless the verification is logged (fail closed)
                self.audit.append(s, actor=PUBLIC, request_id=request_id, at=now, draft=EventDraft(
                    action=Action.DOCUMENT_VERIFY, outcome=outcome,
                    reason="verify:code_known" if outcome == "allowed" else "verify:code_unknown",
                    resource_kind="document", resource_id=resource_id,
                    details={**({} if matches is None else {"sha256_matches": matches}),
                             **({} if answer is None or "signature_valid" not in answer
                                else {"signature_valid": answer["signature_valid"]})}))
                s.commit()
            except SQLAlchemyError as exc:
                s.rollback()
                raise AuditUnavailable() from exc
        if answer is None:
            raise NotFound("核验码无效：未找到对应的公文。", details={"authentic": False})
        return answer



def _signature(cert: CertificatePublic | None, signed_at: datetime | None) -> dict[str, Any]:
    """The stored version's signature as /verify reports it: nothing about the content."""
    if cert is None:
        return {"status": "unsigned"}
    return {"status": cert.status, "signer": cert.org_name, "certificate_serial": cert.serial,
            "signed_at": signed_at, **({"revoked_at": cert.revoked_at} if cert.revoked_at else {})}
