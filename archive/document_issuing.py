"""Issuing and correcting official documents: preview, issue, new versions, prefill.

Issue: policy -> fields validated -> subject resolved in the caller's
jurisdiction -> glyph check -> the next number peeked -> the reading
transaction ended -> PDF rendered and signed (PAdES, by the issuing org's key,
archive.pki) in the worker pool, holding no database lock -> number allocated
(gapless, in the storing transaction; rendered and signed again if another
process took the peeked one) -> sealed with the document's data key ->
blob stored -> rows and audit event committed together. The stored sha256 is that
of the signed file. A failure anywhere
rolls the transaction back, so no number is burnt and the blob is removed.
One issuer's issues queue in the process before they touch the database.
Issued bytes never change: a correction is a new version that points to the
old one, with a new verification code.

``issue_one`` does the numbering and storing for every issued document: the
single issue here and each document of a batch (archive.document_batch).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from access_control.actions import Action
from access_control.guard import Guard
from access_control.identity import Org
from access_control.policy import Resource
from archive import numbering
from archive import persons as people
from archive.blobstore import BlobStore
from archive.documents import (
    LOCAL_TZ,
    DocumentBasis,
    DocumentIssued,
    DocumentRequest,
    Subject,
    VersionRequest,
    issued_answer,
    load_document,
    new_code,
)
from archive.models import Document, DocumentVersion, Household, Minor
from archive.persons import Person
from archive.pki import CertificateAuthority
from archive.seal_images import SealImages
from core.crypto import sha256_hex
from core.db import new_id
from core.errors import Conflict, NotFound
from core.keys import Vault
from core.outbox import enqueue
from doc_templates import kinds as doc_kinds
from doc_templates.pool import RenderPool
from doc_templates.render import DocumentMeta
from doc_templates.signing import SignerKey

# A particular the record cannot give (prefill.TO_FILL filled in from it): the record comes first.
RECORD_INCOMPLETE = "档案中缺少本项，请先补充档案后再发文"


class DocumentIssuingService:
    def __init__(self, *, basis: DocumentBasis, vault: Vault, blobs: BlobStore, pool: RenderPool,
                 pki: CertificateAuthority, seal_images: SealImages):
        self.basis = basis
        self.vault = vault
        self.blobs = blobs
        self.pool = pool
        self.pki = pki
        self.seal_images = seal_images
        self._queues: dict[str, threading.Lock] = {}
        self._queues_lock = threading.Lock()

    # preview ----------------------------------------------------------------------------

    def preview(self, g: Guard, req: DocumentRequest) -> bytes:
        b = self.basis
        kind = b.kind_or_422(req.kind)
        b.gate(g, Action.DOCUMENT_PREVIEW, kind, roles=kind.issuer_roles)
        b.prevalidate(kind, req.fields)  # refused input is no decision
        subject = b.subject(g, kind, req.subject_id, Action.DOCUMENT_PREVIEW)
        meta = b.meta(g, kind, b.org(g), "（草稿 未编号）", None)
        # Logged (and durable) before the record's particulars are read.
        g.authorize(Action.DOCUMENT_PREVIEW,
                    Resource("document", None, subject.region_code, existing=False, required_roles=kind.issuer_roles),
                    subjects=sorted(set(subject.hashes) | b.id_hashes(req.fields)),
                    details={"kind": kind.kind}, commit=True)
        fields = b.validated(g, kind, subject, req.fields)
        b.check_glyphs(fields, meta)
        return self.pool.pdf(kind.kind, fields.model_dump(mode="json"), meta)

    # issue ------------------------------------------------------------------------------

    def signer(self, g: Guard, org_id: str) -> SignerKey:
        """The issuer's signing key. Call it holding no database lock (after ``g.release()``, with
        the org's id read before: a loaded row would be read again, in a write transaction): an
        org's first key is made in a short transaction of its own."""
        return self.pki.signer(org_id, now=g.now)

    def seal_image(self, g: Guard, org: Org) -> str | None:
        """The issuer's registered seal image (read in the caller's transaction, before rendering)."""
        return self.seal_images.data_uri(g.session, org.id)

    def issuer(self, g: Guard, kind: doc_kinds.DocKind) -> Org:
        """The caller's org, if it can number ``kind``; otherwise a 409 (before anything is read).
        A 发文字号 needs the org's prefix; a form's file number does not (archive.numbering)."""
        org = self.basis.org(g)
        if not numbering.can_number(org, kind):
            raise Conflict("本单位尚未设置发文字号代字，无法编号。", details={"field": "issuer"})
        return org

    def check_printable(self, g: Guard, kind: doc_kinds.DocKind, org: Org, fields: BaseModel) -> None:
        """Refuse fields (or an issuer's name) the fonts cannot print, with a number of the issuer's form."""
        year = g.now.astimezone(LOCAL_TZ).year
        self.basis.check_glyphs(fields, self.basis.meta(g, kind, org, numbering.number(org, kind, year, 1), None))

    def issue(self, g: Guard, req: DocumentRequest) -> DocumentIssued:
        b = self.basis
        kind = b.kind_or_422(req.kind)
        b.gate(g, Action.DOCUMENT_ISSUE, kind, roles=kind.issuer_roles)
        b.prevalidate(kind, req.fields)  # refused input is no decision
        b.refuse_placeholders(req.fields)
        # One issuer's issues queue here, before any statement: they wait without a database
        # connection or lock, in order, and the number peeked below is the one allocated.
        with self._issuer_queue(g.actor.org_id):
            subject = b.subject(g, kind, req.subject_id, Action.DOCUMENT_ISSUE)
            org = self.issuer(g, kind)
            year = g.now.astimezone(LOCAL_TZ).year
            doc_id = new_id("doc")
            # Decided before the record's particulars are read; a refusal after it (a field that
            # contradicts the record) leaves the decision in the log as an error.
            g.authorize(Action.DOCUMENT_ISSUE,
                        Resource("document", doc_id, subject.region_code, existing=False,
                                 required_roles=kind.issuer_roles),
                        subjects=sorted(set(subject.hashes) | b.id_hashes(req.fields)), details={"kind": kind.kind},
                        defer=True)
            fields = b.validated(g, kind, subject, req.fields)
            b.refuse_placeholders(fields.model_dump(mode="json"), RECORD_INCOMPLETE)
            named = b.persons(g, subject, fields)
            self.check_printable(g, kind, org, fields)
            _serial, predicted = numbering.peek(g.session, issuer=org, kind=kind, year=year)
            code = new_code()
            seal = self.seal_image(g, org)
            meta = b.meta(g, kind, org, predicted, code, seal_image=seal)
            org_id = org.id
            g.release()  # render and sign without holding the database
            signer = self.signer(g, org_id)
            pdf = self.pool.pdf(kind.kind, fields.model_dump(mode="json"), meta, signer=signer)
            if not self._still(g, subject):
                raise Conflict("档案在出具期间已变更，请重试。", details={"field": "subject_id"})
            doc, version, _pdf = self.issue_one(
                g, kind, subject, fields, named, doc_id=doc_id, code=code, rendered=(predicted, pdf),
                signer=signer, seal_image=seal,
                render=lambda m: self.pool.pdf(kind.kind, fields.model_dump(mode="json"), m, signer=signer))
            g.commit()
        return issued_answer(doc, version)

    def issue_one(self, g: Guard, kind: doc_kinds.DocKind, subject: Subject, fields: BaseModel, named: set[Person], *,
                  doc_id: str, code: str, render: Callable[[DocumentMeta], bytes], signer: SignerKey,
                  seal_image: str | None, rendered: tuple[str, bytes] | None = None
                  ) -> tuple[Document, DocumentVersion, bytes]:
        """Number, seal and store one document in the current transaction (the caller commits).

        The number (a 发文字号, or a form's file number from its own series) is allocated here
        (gapless: it is used only if the transaction commits). A
        PDF rendered beforehand for a predicted number (``rendered``: that number and the PDF)
        is kept if the number is the one allocated; otherwise ``render`` makes it now, under
        the numbering lock. Every issued document, single or batch, goes through here, and
        both PDFs are signed by ``signer`` (the issuer's key): ``render`` returns signed bytes.
        """
        org = self.issuer(g, kind)
        year = g.now.astimezone(LOCAL_TZ).year
        serial, number = numbering.allocate(g.session, issuer=org, kind=kind, year=year)
        meta = self.basis.meta(g, kind, org, number, code, seal_image=seal_image)
        # Nothing rendered yet, or another process issued meanwhile: render now, under the lock.
        pdf = rendered[1] if rendered is not None and rendered[0] == number else render(meta)
        dek_id, dek = self.vault.new_data_key(g.session, owner_kind="document", owner_id=doc_id)
        doc = Document(
            id=doc_id, kind=kind.kind, subject_kind=subject.kind, subject_id=subject.id,
            region_code=subject.region_code, issuer_org_id=org.id, doc_number=number,
            number_series=numbering.series(kind), number_year=year, number_serial=serial, current_version=1,
            dek_id=dek_id, subject_hashes=[], sealed=False, created_by=g.actor.user_id, created_at=g.now,
        )
        g.session.add(doc)
        g.session.flush()
        people.record(g.session, doc, named)
        version = self._store_version(g, doc, fields, dek, code=code, meta=meta, pdf=pdf, version=1,
                                      supersedes=None, reason=None, signer=signer)
        enqueue(g.session, "document", doc.id)
        return doc, version, pdf

    def _still(self, g: Guard, subject: Subject) -> bool:
        """Whether a household or minor is still where it was, unsealed and unchanged, and a
        household still lists the same minors (checked again after rendering, which ran outside
        any transaction). No decision is taken here: the issue's own, deferred, is the only one.

        The minors are read ``FOR SHARE`` on PostgreSQL: a sealing that has not committed yet
        waits for this issue, then finds the new document among those that name the minor.
        """
        if subject.kind not in ("household", "minor"):
            return True
        row: Household | Minor | None = (g.session.get(Household, subject.id) if subject.kind == "household"
                                         else g.session.get(Minor, subject.id))
        if row is None or row.sealed or row.region_code != subject.region_code:
            return False
        if subject.kind == "household" and tuple(m.id for m in self.basis.listed_minors(g, row.id)) != subject.listed:
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
                       meta: DocumentMeta, pdf: bytes, version: int, supersedes: int | None, reason: str | None,
                       signer: SignerKey) -> DocumentVersion:
        """Store a rendered, signed version (its blob and row) in the current transaction."""
        blob_key = f"documents/{doc.id}/v{version}"
        sealed_pdf = self.vault.seal_bytes(dek, doc.dek_id, pdf, kind="document", record_id=doc.id, version=version)
        payload = self.vault.seal_json(dek, doc.dek_id, {"fields": fields.model_dump(mode="json"), "reason": reason},
                                       kind="document_fields", record_id=doc.id, version=version)
        row = DocumentVersion(
            document_id=doc.id, version=version, sha256=sha256_hex(pdf), size=len(pdf), blob_key=blob_key,
            fields_payload=payload, verification_code=code, supersedes=supersedes, issued_by=g.actor.user_id,
            issued_at=g.now, issued_on=meta.issued_on, signer_serial=signer.serial, signed_at=meta.created_at,
        )
        g.session.add(row)
        g.session.flush()
        # If the put or the commit that follows fails, the blob must not outlive it (registered
        # first: a put that fails after the file is in place, e.g. on fsync, leaves it behind).
        g.on_rollback(lambda: self.blobs.delete(blob_key))
        self.blobs.put(blob_key, sealed_pdf)
        return row

    # corrections -----------------------------------------------------------------------

    def new_version(self, g: Guard, doc_id: str, req: VersionRequest) -> DocumentIssued:
        b = self.basis
        # Only the issuer may correct: corrections queue with its issues (the caller's org).
        with self._issuer_queue(g.actor.org_id):
            doc, kind, _grant = load_document(g, doc_id, Action.DOCUMENT_CORRECT, read=False)
            if doc.sealed:
                raise NotFound()
            b.prevalidate(kind, req.fields)
            b.refuse_placeholders(req.fields)
            org = g.session.get(Org, doc.issuer_org_id)
            if org is None:
                raise RuntimeError("a document's issuing organisation row is missing")
            if org.id != g.actor.org_id:
                raise Conflict("只有发文单位可以更正本公文。", details={"field": "issuer"})
            subject = b.subject(g, kind, doc.subject_id, Action.DOCUMENT_CORRECT) \
                if doc.subject_kind in ("household", "minor") else Subject(doc.subject_kind, doc.subject_id,
                                                                            doc.region_code, ())
            fields = b.validated(g, kind, subject, req.fields)
            b.refuse_placeholders(fields.model_dump(mode="json"), RECORD_INCOMPLETE)
            named = b.persons(g, subject, fields)
            b.check_glyphs(fields, b.meta(g, kind, org, doc.doc_number, None))
            code = new_code()
            meta = b.meta(g, kind, org, doc.doc_number, code, seal_image=self.seal_image(g, org))
            org_id = org.id
            g.release()  # render and sign without holding the database
            signer = self.signer(g, org_id)
            pdf = self.pool.pdf(kind.kind, fields.model_dump(mode="json"), meta, signer=signer)
            # Corrections from other processes queue on the document row; each numbers its version
            # after the one committed before it.
            g.session.refresh(doc, with_for_update=True)
            if doc.sealed:
                raise NotFound()
            if not self._still(g, subject):
                raise Conflict("档案在出具期间已变更，请重试。", details={"field": "subject_id"})
            version = self._store_version(g, doc, fields, self.vault.data_key(g.session, doc.dek_id), code=code,
                                          meta=meta, pdf=pdf, version=doc.current_version + 1,
                                          supersedes=doc.current_version, reason=req.reason, signer=signer)
            doc.current_version = version.version
            people.record(g.session, doc, named)
            enqueue(g.session, "document", doc.id)
            g.commit()
        return issued_answer(doc, version)

    # prefill -------------------------------------------------------------------------------

    def prefill(self, g: Guard, kind_name: str, subject_id: str | None) -> dict[str, Any]:
        """Fields for ``kind`` filled in from the subject's record (an audited read)."""
        b = self.basis
        kind = doc_kinds.get(kind_name)
        if kind is None:  # the kind is part of the path here: an unknown one is not found
            raise NotFound("未知的公文种类。")
        b.gate(g, Action.DOCUMENT_PREFILL, kind, roles=kind.issuer_roles)
        subject = b.subject(g, kind, subject_id, Action.DOCUMENT_PREFILL)
        g.authorize(Action.DOCUMENT_PREFILL,
                    Resource(subject.kind, subject.id, subject.region_code, required_roles=kind.issuer_roles),
                    subjects=list(subject.hashes), details={"kind": kind.kind}, commit=True)
        return {"kind": kind.kind, "subject_id": subject.id, "fields": b.fill(g, kind, subject)}
