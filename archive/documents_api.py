"""Routes for official documents and their public verification."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi import APIRouter, Body, Depends, Query, Request, Response, status

from access_control.actions import Action
from access_control.deps import (
    DocumentIssuingServiceDep,
    DocumentReadingServiceDep,
    GuardDep,
    RuntimeDep,
    SealImagesDep,
    get_runtime,
)
from access_control.policy import Resource
from archive.documents import DocumentIssued, DocumentPublic, DocumentRequest, VersionRequest
from core.crypto import Sha256Stream, pem, sha256_hex
from core.errors import Busy, PayloadTooLarge, RateLimited
from core.ratelimit import client_key
from doc_templates import kinds as doc_kinds

router = APIRouter(prefix="/api/v1", tags=["documents"])
public = APIRouter(prefix="/api/v1", tags=["verification (public)"])

PDF: dict[int | str, dict[str, Any]] = {200: {"content": {"application/pdf": {}}, "description": "PDF bytes"}}


def pdf_response(data: bytes, filename: str, *, sha256: str | None = None) -> Response:
    headers = {"Content-Disposition": f'inline; filename="{filename}"'}
    if sha256:
        headers["X-Content-SHA256"] = sha256
    return Response(content=data, media_type="application/pdf", headers=headers)


@router.get("/document-kinds", summary="Every kind: title, subject, JSON schema of its fields, an example")
def document_kinds(g: GuardDep) -> dict[str, Any]:
    g.authorize(Action.DOCUMENT_KINDS_LIST, Resource("document_kind"), commit=True)
    return {"items": [k.describe() for k in doc_kinds.KINDS.values()]}


@router.get("/document-kinds/{kind}/prefill", summary="Fields for a kind filled in from the subject's record")
def prefill(
    g: GuardDep, issuing: DocumentIssuingServiceDep, kind: str,
    subject_id: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    return issuing.prefill(g, kind, subject_id)


@router.post("/documents/preview", response_class=Response, responses=PDF,
             summary="Render a draft (stamped 草稿, not numbered, not stored)")
def preview(g: GuardDep, issuing: DocumentIssuingServiceDep, body: DocumentRequest) -> Response:
    data = issuing.preview(g, body)
    return pdf_response(data, "preview.pdf")


@router.post("/documents", status_code=status.HTTP_201_CREATED, response_model=DocumentIssued,
             summary="Issue a document: validate, number, render, seal, store")
def issue(g: GuardDep, issuing: DocumentIssuingServiceDep, body: DocumentRequest) -> DocumentIssued:
    return issuing.issue(g, body)


@router.get("/documents", summary="Documents the caller may read")
def list_documents(
    g: GuardDep,
    reading: DocumentReadingServiceDep,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    subject_id: Annotated[str | None, Query(max_length=40)] = None,
    region: Annotated[str | None, Query(pattern=r"^(\d{6}|\d{12})$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    return reading.page(g, kind=kind, subject_id=subject_id, region=region, limit=limit, cursor=cursor)


@router.get("/documents/{document_id}", response_model=DocumentPublic)
def read_document(g: GuardDep, reading: DocumentReadingServiceDep, document_id: str) -> DocumentPublic:
    return reading.read(g, document_id)


@router.get("/documents/{document_id}/pdf", response_class=Response, responses=PDF,
            summary="The issued PDF; its sha256 equals the stored one")
def document_pdf(
    g: GuardDep, reading: DocumentReadingServiceDep, document_id: str,
    version: Annotated[int | None, Query(ge=1, description="Default: the current version")] = None,
) -> Response:
    data, v = reading.pdf(g, document_id, version)
    # A sealed record's release is a stamped copy: the header names the bytes sent, not the stored ones.
    return pdf_response(data, f"{document_id}-v{v.version}.pdf", sha256=sha256_hex(data))


@router.post("/documents/{document_id}/versions", status_code=status.HTTP_201_CREATED,
             response_model=DocumentIssued, summary="A correction: a new immutable version")
def new_version(g: GuardDep, issuing: DocumentIssuingServiceDep, document_id: str,
                body: VersionRequest) -> DocumentIssued:
    return issuing.new_version(g, document_id, body)


# Public verifications ----------------------------------------------------------------------
#
# Anyone may verify, so a flood of verifications must not take what signed-in users need:
# each client address is rate-limited, and the database work runs in threads of its own
# limiter (``verify_threads``), with at most VERIFY_QUEUE requests waiting for a turn (then
# 503). The event loop only counts, hashes and waits.

VERIFY_QUEUE = 100
VERIFY_MAX_BYTES = 20_000_000  # an issued PDF is well under 1 MB; a batch print is not verified as one
_verify_turns: RunVar[anyio.CapacityLimiter] = RunVar("shouhu_verify_turns")


async def verify_rate_limit(request: Request) -> None:
    """429 with Retry-After past ``verify_rate_limit`` requests per window from one address."""
    runtime = get_runtime(request)
    wait = runtime.verify_limits.hit(client_key(request.client.host if request.client else None),
                                     runtime.clock().timestamp())
    if wait is not None:
        raise RateLimited(wait)


async def _verify_in_turn(request: Request, code: str, sha256: str | None, pdf: bytes | None = None
                          ) -> dict[str, Any]:
    runtime = get_runtime(request)
    try:
        turns = _verify_turns.get()
    except LookupError:
        turns = anyio.CapacityLimiter(runtime.settings.verify_threads)
        _verify_turns.set(turns)
    if turns.statistics().tasks_waiting >= VERIFY_QUEUE:
        raise Busy()
    work = partial(runtime.document_verification.verify, code[:40], sha256=sha256, request_id=request.state.request_id,
                   now=runtime.clock(), pdf=pdf)
    result: dict[str, Any] = await anyio.to_thread.run_sync(work, limiter=turns)
    return result


@public.get("/verify/{code}", dependencies=[Depends(verify_rate_limit)],
            summary="Is a document with this verification code authentic? Nothing personal.")
async def verify(
    request: Request, code: str,
    sha256: Annotated[str | None, Query(pattern=r"^[0-9a-fA-F]{64}$", description="sha256 of your copy")] = None,
) -> dict[str, Any]:
    return await _verify_in_turn(request, code, sha256)


@public.post("/verify/{code}", dependencies=[Depends(verify_rate_limit)],
             summary="Upload your copy (application/pdf): does it match the issued bytes, is its signature valid?")
async def verify_copy(request: Request, code: str) -> dict[str, Any]:
    digest, pdf = await read_copy(request)
    return await _verify_in_turn(request, code, digest, pdf)


async def read_copy(request: Request) -> tuple[str, bytes]:
    """An uploaded copy, hashed as it streams in and refused (413) past ``VERIFY_MAX_BYTES``: its
    signature can only be checked on the whole file, so at most that much is held."""
    digest = Sha256Stream()
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > VERIFY_MAX_BYTES:
            raise PayloadTooLarge(f"文件不能超过 {VERIFY_MAX_BYTES // 1_000_000} MB。")
        digest.update(chunk)
        parts.append(chunk)
    return digest.hexdigest(), b"".join(parts)


# The deployment's PKI (public): what a verifier trusts and what it revokes ----------------------


@public.get("/pki/ca.pem", response_class=Response, dependencies=[Depends(verify_rate_limit)],
            responses={200: {"content": {"application/x-pem-file": {}}}},
            summary="The deployment's CA certificate (PEM): trust it to check a signed document offline")
def ca_certificate(runtime: RuntimeDep) -> Response:
    return Response(content=pem(runtime.pki.ca_certificate()), media_type="application/x-pem-file",
                    headers={"Content-Disposition": 'attachment; filename="shouhu-ca.pem"'})


@public.get("/pki/crl", response_class=Response, dependencies=[Depends(verify_rate_limit)],
            responses={200: {"content": {"application/pkix-crl": {}}}},
            summary="The CA's certificate revocation list (DER), signed now, valid for 7 days")
def revocation_list(runtime: RuntimeDep) -> Response:
    return Response(content=runtime.pki.crl(now=runtime.clock()), media_type="application/pkix-crl",
                    headers={"Content-Disposition": 'attachment; filename="shouhu.crl"'})


# Seal images (admin) ------------------------------------------------------------------------


@router.put("/orgs/{org_id}/seal-image", status_code=status.HTTP_204_NO_CONTENT, tags=["identity"],
            summary="Register an org's seal image (PNG, at most 512 KB, 100-1200 px a side), printed only on "
                    "digitally signed documents")
def put_seal_image(g: GuardDep, seals: SealImagesDep, org_id: str,
                   image: Annotated[bytes, Body(media_type="image/png")]) -> Response:
    seals.register_for(g, org_id, image)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/orgs/{org_id}/seal-image", status_code=status.HTTP_204_NO_CONTENT, tags=["identity"],
               summary="Stop printing an org's seal image (nothing to do when none is registered)")
def delete_seal_image(g: GuardDep, seals: SealImagesDep, org_id: str) -> Response:
    seals.remove_for(g, org_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
