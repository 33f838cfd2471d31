"""Routes for the access log: events, verification, checkpoints, proofs, export, anomalies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from access_control.audit_service import MAX_PAGE, EventFilter
from access_control.deps import AuditServiceDep, GuardDep
from core.fields import Timestamp
from core.pagination import MAX_CURSOR

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])

From = Annotated[Timestamp | None, Query(alias="from", description="RFC 3339 with offset; events at or after")]
To = Annotated[Timestamp | None, Query(description="RFC 3339 with offset; events before")]
CursorQuery = Annotated[str | None, Query(max_length=MAX_CURSOR, description="next_cursor of the previous page")]


class EventSearch(BaseModel):
    """The same filters as GET /events, in a body, so an ID number never sits in a URL."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    actor: str | None = Field(None, max_length=80)
    action: str | None = Field(None, max_length=64)
    outcome: Literal["allowed", "denied", "error"] | None = None
    start: Timestamp | None = Field(None, alias="from", description="RFC 3339 with offset")
    end: Timestamp | None = Field(None, alias="to", description="RFC 3339 with offset")
    subject: str | None = Field(None, max_length=32, description="A plain ID number, matched by keyed hash")
    case_number: str | None = Field(None, max_length=80, description="A plain case number, matched by keyed hash")
    resource: str | None = Field(None, max_length=64)
    limit: int = Field(50, ge=1, le=MAX_PAGE)
    cursor: str | None = Field(None, max_length=MAX_CURSOR)


class CheckpointIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    size: int = Field(ge=0)
    root: str = Field(pattern=r"^[0-9a-f]{64}$")
    head_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash_alg: Literal["sha256", "sm3"] = "sha256"
    at: str = Field(max_length=40)
    key_id: str | None = Field(None, max_length=32)
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


class VerifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint: CheckpointIn


@router.get("/events", summary="Events, newest first. Prefer POST /events/search for `subject`.")
def events(
    g: GuardDep,
    audit_desk: AuditServiceDep,
    actor: Annotated[str | None, Query(max_length=80)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    outcome: Annotated[Literal["allowed", "denied", "error"] | None, Query()] = None,
    start: From = None,
    to: To = None,
    subject: Annotated[str | None, Query(max_length=32, description="Plain ID number (keyed-hash match)")] = None,
    case_number: Annotated[str | None, Query(max_length=80, description="Plain case number (keyed-hash match)")
                           ] = None,
    resource: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: CursorQuery = None,
) -> dict[str, Any]:
    f = EventFilter(actor=actor, action=action, outcome=outcome, start=start, end=to, subject=subject,
                    case_number=case_number, resource=resource)
    return audit_desk.events(g, f, limit=limit, cursor=cursor)


@router.post("/events/search", summary="Events matching the filters in the body (newest first)")
def search_events(g: GuardDep, audit_desk: AuditServiceDep, body: EventSearch) -> dict[str, Any]:
    f = EventFilter(actor=body.actor, action=body.action, outcome=body.outcome, start=body.start, end=body.end,
                    subject=body.subject, case_number=body.case_number, resource=body.resource)
    return audit_desk.events(g, f, limit=body.limit, cursor=body.cursor)


@router.get("/verify", summary="Re-hash the whole log and check every stored checkpoint")
def verify(g: GuardDep, audit_desk: AuditServiceDep) -> dict[str, Any]:
    return audit_desk.verify(g)


@router.post("/verify", summary="Verify the log against a checkpoint saved outside Shouhu")
def verify_against(g: GuardDep, audit_desk: AuditServiceDep, body: VerifyRequest) -> dict[str, Any]:
    return audit_desk.verify(g, checkpoint=body.checkpoint.model_dump())


@router.get("/checkpoints", summary="Signed tree heads, with the public key that signs them")
def checkpoints(g: GuardDep, audit_desk: AuditServiceDep) -> dict[str, Any]:
    return audit_desk.checkpoints(g)


@router.post("/checkpoints", status_code=status.HTTP_201_CREATED, summary="Sign a checkpoint now")
def create_checkpoint(g: GuardDep, audit_desk: AuditServiceDep) -> dict[str, Any]:
    return audit_desk.create_checkpoint(g)


@router.get("/public-key", summary="The Ed25519 key that signs checkpoints")
def public_key(g: GuardDep, audit_desk: AuditServiceDep) -> dict[str, Any]:
    audit_desk.checkpoints(g)  # same rule and audit event as reading checkpoints
    return audit_desk.public_key()


@router.get("/proofs/inclusion", summary="RFC 6962 inclusion proof of event `seq` in the tree of `size`")
def inclusion(
    g: GuardDep,
    audit_desk: AuditServiceDep,
    seq: Annotated[int, Query(ge=1)],
    size: Annotated[int | None, Query(ge=1, description="Default: the current log size")] = None,
) -> dict[str, Any]:
    return audit_desk.inclusion(g, seq=seq, size=size)


@router.get("/proofs/consistency", summary="RFC 6962 consistency proof between two tree sizes")
def consistency(
    g: GuardDep,
    audit_desk: AuditServiceDep,
    first: Annotated[int, Query(ge=1)],
    second: Annotated[int | None, Query(ge=1, description="Default: the current log size")] = None,
) -> dict[str, Any]:
    return audit_desk.consistency(g, first=first, second=second)


@router.get("/export", summary="The events in canonical form (docs/audit-format.md)")
def export(
    g: GuardDep,
    audit_desk: AuditServiceDep,
    format: Annotated[Literal["jsonl", "csv"], Query()] = "jsonl",  # noqa: A002 - the API's name
    start: From = None,
    to: To = None,
    upto: Annotated[int | None, Query(ge=0, description="Last seq to include (e.g. a checkpoint size)")] = None,
) -> StreamingResponse:
    stream = audit_desk.export(g, fmt=format, start=start, end=to, upto=upto)
    media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
    return StreamingResponse(stream, media_type=media,
                             headers={"Content-Disposition": f'attachment; filename="shouhu-audit.{format}"'})


@router.get("/anomalies", summary="Flags: bulk reads, off-hours reads, repeated denials, cross-region")
def anomalies(g: GuardDep, audit_desk: AuditServiceDep, start: From = None, to: To = None) -> dict[str, Any]:
    return audit_desk.anomalies(g, start=start, end=to)
