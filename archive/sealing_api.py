"""Routes for sealed juvenile records: sealing, applications, decisions, grants, replies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status

from access_control.deps import GuardDep, SealedRequestServiceDep, SealingServiceDep
from access_control.sealed import Decision, Revocation, SealedRequestCreate
from archive.documents import DocumentIssued
from archive.documents_api import PDF, pdf_response
from archive.sealing import SealBody, UnsealBody

router = APIRouter(prefix="/api/v1", tags=["sealed records"])

Status = Literal["pending", "overdue", "approved", "expired", "denied", "revoked"]


@router.post("/records/{record_id}/seal", summary="Seal a minor (and its case documents) or one document")
def seal(g: GuardDep, sealing: SealingServiceDep, record_id: str, body: SealBody) -> dict[str, Any]:
    return sealing.seal(g, record_id, body)


@router.post("/records/{record_id}/unseal", summary="Unseal, for a statutory cause")
def unseal(g: GuardDep, sealing: SealingServiceDep, record_id: str, body: UnsealBody) -> dict[str, Any]:
    return sealing.unseal(g, record_id, body)


@router.post("/sealed-requests", status_code=status.HTTP_201_CREATED,
             summary="Apply to see sealed records (court, procuratorate, police)")
def apply(g: GuardDep, desk: SealedRequestServiceDep, body: SealedRequestCreate) -> dict[str, Any]:
    return desk.apply(g, body)


@router.get("/sealed-requests", summary="The caller's applications (all of them for a custodian)")
def list_requests(g: GuardDep, desk: SealedRequestServiceDep,
                  status: Annotated[Status | None, Query()] = None) -> dict[str, Any]:  # noqa: A002
    return desk.list(g, status=status)


@router.get("/sealed-requests/{request_id}")
def read_request(g: GuardDep, desk: SealedRequestServiceDep, request_id: str) -> dict[str, Any]:
    return desk.get(g, request_id)


@router.post("/sealed-requests/{request_id}/decision", summary="Approve or deny, with a reason (custodian)")
def decide(g: GuardDep, desk: SealedRequestServiceDep, request_id: str, body: Decision) -> dict[str, Any]:
    return desk.decide(g, request_id, body)


@router.post("/sealed-requests/{request_id}/revoke", summary="End a grant early (custodian)")
def revoke(g: GuardDep, desk: SealedRequestServiceDep, request_id: str, body: Revocation) -> dict[str, Any]:
    return desk.revoke(g, request_id, body)


@router.get("/sealed-requests/{request_id}/records",
            summary="What the grant covers; read each PDF through /documents/{id}/pdf while it lasts")
def granted_records(g: GuardDep, sealing: SealingServiceDep, request_id: str) -> dict[str, Any]:
    return sealing.granted(g, request_id)


@router.post("/sealed-requests/{request_id}/reply", status_code=status.HTTP_201_CREATED,
             response_model=DocumentIssued, summary="Issue the 查询告知函, the reply to a query (custodian)")
def issue_reply(g: GuardDep, sealing: SealingServiceDep, request_id: str) -> DocumentIssued:
    return sealing.reply(g, request_id)


@router.get("/sealed-requests/{request_id}/reply", response_class=Response, responses=PDF,
            summary="The reply letter, for its requester")
def read_reply(g: GuardDep, sealing: SealingServiceDep, request_id: str) -> Response:
    data, v = sealing.reply_pdf(g, request_id)
    return pdf_response(data, f"{v.document_id}-v{v.version}.pdf", sha256=v.sha256)


@router.get("/disclosures", summary="The disclosure register: every stamped copy, to whom, when, its hash")
def disclosures(g: GuardDep, sealing: SealingServiceDep,
                request_id: Annotated[str | None, Query(max_length=40)] = None) -> dict[str, Any]:
    return sealing.disclosures(g, request_id=request_id)
