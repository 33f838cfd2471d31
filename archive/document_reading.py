"""Reading official documents: one document and its versions, its PDF, its fields, the list.

A sealed document is read only through the caller's active grant (documents.load_document);
its PDF is then released only through the required ``releaser`` (archive.sealing's
``SealedRelease``), which stamps it for the requester and registers the copy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from access_control.actions import Action
from access_control.guard import Guard
from access_control.identity import Org
from access_control.policy import Resource, may_read_document_kind, reads_own_documents_only
from access_control.regions import Region, RegionTree
from archive.blobstore import BlobNotFound, BlobStore
from archive.documents import DocumentPublic, VersionPublic, display_code, load_document
from archive.models import Document, DocumentVersion
from core.crypto import sha256_hex
from core.errors import IntegrityFailure, InvalidInput, NotFound
from core.keys import Vault
from core.pagination import decode_id_cursor, keyset_page
from doc_templates import kinds as doc_kinds

if TYPE_CHECKING:  # archive.sealing builds on this module
    from archive.sealing import SealedRelease


class DocumentReadingService:
    def __init__(self, *, vault: Vault, blobs: BlobStore, regions: RegionTree, releaser: SealedRelease):
        self.vault = vault
        self.blobs = blobs
        self.regions = regions
        self.releaser = releaser  # stamps a sealed document for its granted requester

    def _versions(self, g: Guard, doc: Document) -> list[DocumentVersion]:
        return list(g.session.scalars(
            select(DocumentVersion).where(DocumentVersion.document_id == doc.id).order_by(DocumentVersion.version)))

    def _public(self, g: Guard, doc: Document, kind: doc_kinds.DocKind) -> DocumentPublic:
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
        doc, kind, _grant = load_document(g, doc_id, Action.DOCUMENT_READ, read=True)
        return self._public(g, doc, kind)

    def pdf(self, g: Guard, doc_id: str, version: int | None = None) -> tuple[bytes, DocumentVersion]:
        doc, _kind, grant = load_document(g, doc_id, Action.DOCUMENT_DOWNLOAD, read=True)
        v = g.session.get(DocumentVersion, (doc.id, version or doc.current_version))
        if v is None:
            raise NotFound("该版本不存在。")
        pdf = self.open_version(g, doc, v)
        if grant is not None:  # sealed: never handed out but stamped
            return self.releaser.release(g, doc, v, grant, pdf), v
        return pdf, v

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

    def page(self, g: Guard, *, kind: str | None, subject_id: str | None, region: str | None, limit: int,
             cursor: str | None) -> dict[str, Any]:
        """One page of the documents the caller may read, oldest id first (an audited list)."""
        g.require(Action.DOCUMENT_LIST, Resource("document"))
        if region is not None:
            if region not in self.regions:
                raise InvalidInput.one("region", "未知的行政区划代码", location="query")
            g.require(Action.DOCUMENT_LIST, Resource("region", region, region))
        after = decode_id_cursor(cursor)
        readable = [k.kind for k in doc_kinds.KINDS.values() if may_read_document_kind(g.actor, k)]
        q = (select(Document).join(Region, Region.code == Document.region_code)
             .where(Region.path.startswith(g.policy.scope_path(g.actor), autoescape=True),
                    Document.sealed.is_(False), Document.kind.in_(readable)))
        if region:
            node = self.regions.get(region)
            if node is None:
                raise RuntimeError("a region checked above is not in the tree")
            q = q.where(Region.path.startswith(node.path, autoescape=True))
        if reads_own_documents_only(g.actor):
            q = q.where(Document.issuer_org_id == g.actor.org_id)
        if kind:
            q = q.where(Document.kind == kind)
        if subject_id:
            q = q.where(Document.subject_id == subject_id)
        rows, next_cursor = keyset_page(g.session, q, Document.id, after=after, limit=limit)
        g.authorize(Action.DOCUMENT_LIST, Resource("document", None, region or g.actor.region_code),
                    subjects=[h for r in rows for h in (r.subject_hashes or [])],
                    filters={"kind": kind, "subject_id": subject_id}, details={"count": len(rows)}, commit=True)
        items = [self._public(g, r, doc_kinds.KINDS[r.kind]) for r in rows]
        return {"items": items, "next_cursor": next_cursor}
