"""Batch printing (``shouhu print``): every household or minor of a region subtree as one PDF.

Without ``issue`` the pages are archive print copies (存档打印件), rendered in one pass:
not numbered, not stored. With ``issue`` each subject's document is issued by
``DocumentIssuingService.issue_one``, the very function a single issue uses, all in one
transaction, and the combined PDF is the stored documents' pages, in order. With render
workers (``SHOUHU_RENDER_WORKERS``), the documents are rendered and signed beforehand in chunks
over all workers (``RenderPool.issue_many``) for the numbers they will get; each is still its own
file, signed on its own, and a number taken meanwhile by another process is rendered again here.
"""

from __future__ import annotations

import dataclasses
import io
import logging
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from access_control.actions import Action
from access_control.audit import EventDraft
from access_control.guard import Guard
from access_control.identity import Org
from access_control.policy import Resource
from access_control.regions import Region, RegionTree
from archive import numbering
from archive.document_issuing import DocumentIssuingService
from archive.documents import LOCAL_TZ, DocumentBasis, DocumentIssued, Subject, issued_answer, new_code
from archive.models import Household, Minor
from core.db import new_id
from core.errors import InvalidInput
from doc_templates import kinds as doc_kinds
from doc_templates.render import DocumentMeta, Renderer
from doc_templates.signing import SignerKey


class DocumentBatchService:
    def __init__(self, *, basis: DocumentBasis, issuing: DocumentIssuingService, regions: RegionTree):
        self.basis = basis
        self.issuing = issuing
        self.regions = regions

    def print_batch(self, g: Guard, kind_name: str, *, region: str, issue: bool,
                    renderer: Renderer, progress: Any = None) -> tuple[bytes, list[DocumentIssued]]:
        """Every subject of ``kind`` in ``region``'s subtree as one PDF.

        Without ``issue`` the pages are archive print copies (存档打印件), rendered in one
        pass: not numbered, not stored. With ``issue`` each is issued as an official document
        (``DocumentIssuingService.issue_one``), all in one transaction, and the combined PDF holds
        the very pages stored. Forms take file numbers of their own series (archive.numbering),
        so a batch of them leaves the issuer's 发文字号 where they were.
        """
        b = self.basis
        kind = b.kind_or_422(kind_name)
        if kind.subject not in ("household", "minor"):
            raise InvalidInput.one("kind", "只能批量打印家庭或未成年人档案类公文")
        b.gate(g, Action.DOCUMENT_PRINT, kind, roles=kind.issuer_roles)
        if region not in self.regions:
            raise InvalidInput.one("region", "未知的行政区划代码")
        g.authorize(Action.DOCUMENT_PRINT, Resource("region", region, region, required_roles=kind.issuer_roles),
                    details={"kind": kind.kind})
        model = Household if kind.subject == "household" else Minor
        node = self.regions.get(region)
        if node is None:
            raise RuntimeError("a region checked above is not in the tree")
        rows: list[Household | Minor] = list(g.session.scalars(
            select(model).join(Region, Region.code == model.region_code)
            .where(Region.path.startswith(node.path, autoescape=True), model.sealed.is_(False))
            .order_by(model.region_code, model.id)))
        if not rows:  # the renderer refuses an empty set: say so, not a traceback
            raise InvalidInput.one("region", "该区域内没有可打印的档案")
        # An issuer that cannot number is refused as a single issue is, before any record is read.
        org = self.issuing.issuer(g, kind) if issue else b.org(g)
        subjects = [b.subject(g, kind, r.id, Action.DOCUMENT_PRINT) for r in rows]
        # The read of every record is logged (and durable) before any is decrypted.
        g.record(EventDraft(action=Action.DOCUMENT_PRINT, outcome="allowed", reason="print:records_read",
                            resource_kind="region", resource_id=region,
                            subjects=sorted({h for s in subjects for h in s.hashes}),
                            details={"kind": kind.kind, "count": len(rows), "issue": issue}))
        g.commit()
        if not issue:
            items: list[tuple[doc_kinds.DocKind, BaseModel, DocumentMeta]] = []
            for subject in subjects:
                fields = b.validate_fields(kind, b.fill(g, kind, subject))
                meta = dataclasses.replace(b.meta(g, kind, org, "存档打印件（未编号）", None), mark=None)
                b.check_glyphs(fields, meta)
                items.append((kind, fields, meta))
            combined, _parts = renderer.render_set(items, progress=progress, parts=False)
            return combined, []
        issued: list[DocumentIssued] = []
        pdfs: list[bytes] = []
        # Read while no lock is held (the events above are committed): the issuer's key (made on its
        # first use, in a transaction of its own) and seal image.
        signer = self.issuing.signer(g, org.id)
        seal = self.issuing.seal_image(g, org)
        prepared = [self._prepare(g, kind, subject) for subject in subjects]
        rendered = self._prerender(g, kind, org, prepared, signer, seal)
        for done, ((subject, fields, code), pre) in enumerate(zip(prepared, rendered, strict=True), start=1):
            doc, version, pdf = self.issuing.issue_one(
                g, kind, subject, fields, b.persons(g, subject, fields), doc_id=new_id("doc"), code=code,
                signer=signer, seal_image=seal, rendered=pre,
                render=lambda meta, fields=fields: renderer.pdf(kind, fields, meta, signer=signer,  # type: ignore[misc]
                                                                at=meta.created_at))
            g.record(EventDraft(action=Action.DOCUMENT_ISSUE, outcome="allowed", reason="print:batch_issue",
                                resource_kind="document", resource_id=doc.id, subjects=list(doc.subject_hashes),
                                details={"kind": kind.kind}))
            issued.append(issued_answer(doc, version))
            pdfs.append(pdf)
            if progress:
                progress(done, len(subjects))
        g.commit()
        return _concatenate(pdfs), issued

    def _prepare(self, g: Guard, kind: doc_kinds.DocKind, subject: Subject) -> tuple[Subject, BaseModel, str]:
        """One subject's fields, filled in from its record and checked printable, and its verification code."""
        b = self.basis
        fields = b.validate_fields(kind, b.fill(g, kind, subject))
        self.issuing.check_printable(g, kind, self.issuing.issuer(g, kind), fields)
        return subject, fields, new_code()

    def _prerender(self, g: Guard, kind: doc_kinds.DocKind, org: Org,
                   prepared: list[tuple[Subject, BaseModel, str]], signer: SignerKey, seal: str | None
                   ) -> list[tuple[str, bytes] | None]:
        """Every document rendered and signed beforehand in the render workers (chunks over all of
        them, RenderPool.issue_many) for the numbers it will get if no one else issues meanwhile: the
        next serials, in order. ``issue_one`` keeps a PDF whose number is the one allocated and renders
        anew in this process otherwise. Without workers (or for one document) nothing is rendered here."""
        pool = self.issuing.pool
        if pool.workers == 0 or len(prepared) < 2:
            return [None] * len(prepared)
        year = g.now.astimezone(LOCAL_TZ).year
        first, _number = numbering.peek(g.session, issuer=org, kind=kind, year=year)
        numbers = [numbering.number(org, kind, year, first + i) for i in range(len(prepared))]
        meta = self.basis.meta
        items = [(kind.kind, fields.model_dump(mode="json"), meta(g, kind, org, number, code, seal_image=seal))
                 for number, (_subject, fields, code) in zip(numbers, prepared, strict=True)]
        g.release()  # render and sign without holding the database, as a single issue does
        return list(zip(numbers, pool.issue_many(items, signer=signer), strict=True))


def _concatenate(pdfs: list[bytes]) -> bytes:
    """The pages of ``pdfs``, in order, as one PDF (each document's bytes are those stored)."""
    from pypdf import PdfReader, PdfWriter

    # pypdf warns about WeasyPrint's (valid) cross-reference layout; nothing to act on.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    writer = PdfWriter()
    for pdf in pdfs:
        writer.append(PdfReader(io.BytesIO(pdf)))
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
