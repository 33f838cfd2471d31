"""The auditor's desk: query, verify, checkpoint, prove and export the access log.

Every call is itself an audited decision. Reading the log commits its own event
first (fail closed), like every other read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import aliased

from access_control import anomalies
from access_control.actions import Action
from access_control.audit import (
    AuditEvent,
    AuditEventSubject,
    AuditLog,
    AuditTampered,
    export_csv_header,
    export_csv_row,
    export_jsonl_line,
    format_time,
)
from access_control.guard import Guard
from access_control.policy import Resource
from access_control.sealed import case_number_hash
from core.crypto import KeyRing
from core.db import Database
from core.errors import InvalidInput, ServiceUnavailable
from core.pagination import decode_int_cursor, keyset_page
from core.settings import Settings

MAX_PAGE = 200


@dataclass(frozen=True)
class EventFilter:
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    subject: str | None = None  # a plain ID number; matched by its keyed hash
    case_number: str | None = None  # a plain case number; matched by its keyed hash
    resource: str | None = None


def event_public(ev: AuditEvent) -> dict[str, Any]:
    return {
        "seq": ev.seq, "at": format_time(ev.at), "actor": ev.actor, "actor_id": ev.actor_id, "org": ev.org_id,
        "roles": ev.roles.split(",") if ev.roles else [], "action": ev.action,
        "resource": f"{ev.resource_kind}:{ev.resource_id}" if ev.resource_kind else "",
        "resource_kind": ev.resource_kind, "resource_id": ev.resource_id, "outcome": ev.outcome,
        "reason": ev.reason, "request_id": ev.request_id, "subjects": list(ev.subjects or []),
        "details": dict(ev.details or {}), "prev_hash": ev.prev_hash, "hash": ev.hash,
        "on_behalf_of": ev.on_behalf_of,
    }


class AuditService:
    def __init__(self, *, log: AuditLog, ring: KeyRing, db: Database, settings: Settings):
        self.log = log
        self.ring = ring
        self.db = db
        self.settings = settings

    def subject_hash(self, id_number: str) -> str:
        return self.ring.keyed_hash("id_number", id_number.strip().upper())

    def events(self, g: Guard, f: EventFilter, *, limit: int, cursor: str | None) -> dict[str, Any]:
        before = decode_int_cursor(cursor)
        subject = self.subject_hash(f.subject) if f.subject else None
        case = case_number_hash(self.ring, f.case_number) if f.case_number else None
        hashes = [h for h in (subject, case) if h]
        g.authorize(
            Action.AUDIT_EVENTS_READ, Resource("audit_log"), subjects=hashes,
            filters={"actor": f.actor, "action": f.action, "outcome": f.outcome, "resource": f.resource},
            details={**({"by_subject": True} if subject else {}), **({"by_case_number": True} if case else {})},
            commit=True,
        )
        q = select(AuditEvent)
        for h in hashes:  # both index rows must exist: an alias each
            index = aliased(AuditEventSubject)
            q = q.join(index, index.seq == AuditEvent.seq).where(index.subject == h)
        if f.actor:
            # What a user did includes what an operator did on their behalf (``print --as``).
            q = q.where(or_(AuditEvent.actor == f.actor, AuditEvent.on_behalf_of == f.actor))
        if f.action:
            q = q.where(AuditEvent.action == f.action)
        if f.outcome:
            q = q.where(AuditEvent.outcome == f.outcome)
        if f.resource:
            q = q.where(AuditEvent.resource_id == f.resource)
        if f.start:
            q = q.where(AuditEvent.at >= f.start)
        if f.end:
            q = q.where(AuditEvent.at < f.end)
        rows, next_cursor = keyset_page(g.session, q, AuditEvent.seq, after=before, limit=limit, descending=True)
        return {"items": [event_public(r) for r in rows], "next_cursor": next_cursor}

    def verify(self, g: Guard, *, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
        g.authorize(Action.AUDIT_VERIFY, Resource("audit_log"),
                    details={"against_checkpoint": checkpoint["size"] if checkpoint else None}, commit=True)
        with self.db.read_session() as s:
            result = self.log.verify(s, checkpoints=[checkpoint] if checkpoint else [])
        return result.as_dict()

    def checkpoints(self, g: Guard) -> dict[str, Any]:
        g.authorize(Action.AUDIT_CHECKPOINT_READ, Resource("audit_log"), commit=True)
        return {"items": self.log.checkpoints(g.session), "public_key": self.public_key()}

    def create_checkpoint(self, g: Guard) -> dict[str, Any]:
        g.authorize(Action.AUDIT_CHECKPOINT_CREATE, Resource("audit_log"))
        g.commit()  # the request is logged, and included in the checkpoint it asks for
        try:
            return self.log.sign_checkpoint(self.db, now=g.now)
        except AuditTampered as exc:
            raise ServiceUnavailable("访问日志校验未通过，拒绝签署检查点。请运行日志校验。",
                                     details={"reason": str(exc)}) from None

    def public_key(self) -> dict[str, Any]:
        signer = self.log.signer
        if signer is None:
            raise RuntimeError("no audit signing key loaded")
        return {"algorithm": "Ed25519", "key_id": signer.key_id, "public_key": signer.public_key.hex(),
                "pem": signer.public_pem()}

    def _size(self, g: Guard, size: int | None, field: str) -> int:
        current = AuditLog.size(g.session)
        if size is None:
            return current
        if not 1 <= size <= current:
            raise InvalidInput.one(field, f"应在 1 到 {current} 之间", location="query")
        return size

    def inclusion(self, g: Guard, *, seq: int, size: int | None) -> dict[str, Any]:
        g.authorize(Action.AUDIT_PROOF_READ, Resource("audit_event", str(seq)), commit=True)
        tree = self._size(g, size, "size")
        if not 1 <= seq <= tree:
            raise InvalidInput.one("seq", f"应在 1 到 {tree} 之间", location="query")
        with self.db.read_session() as s:
            return self.log.inclusion(s, seq=seq, size=tree)

    def consistency(self, g: Guard, *, first: int, second: int | None) -> dict[str, Any]:
        g.authorize(Action.AUDIT_PROOF_READ, Resource("audit_log"), commit=True)
        second = self._size(g, second, "second")
        if not 1 <= first <= second:
            raise InvalidInput.one("first", f"应在 1 到 {second} 之间", location="query")
        with self.db.read_session() as s:
            return self.log.consistency(s, first=first, second=second)

    def export(self, g: Guard, *, fmt: str, start: datetime | None, end: datetime | None,
               upto: int | None) -> Iterator[bytes]:
        """Authorize and log now; the returned iterator streams from a session of its own."""
        limit = upto if upto is not None else AuditLog.size(g.session)
        g.authorize(Action.AUDIT_EVENTS_EXPORT, Resource("audit_log"),
                    details={"format": fmt, "upto": limit}, commit=True)
        table = AuditEvent.__table__
        where = []
        if start:
            where.append(table.c.at >= start)
        if end:
            where.append(table.c.at < end)

        def stream() -> Iterator[bytes]:
            if fmt == "csv":
                yield export_csv_header()
            with self.db.read_session() as s:
                for ev in AuditLog.iter_events(s, upto=limit, where=where):
                    yield export_csv_row(ev) if fmt == "csv" else export_jsonl_line(ev)

        return stream()

    def anomalies(self, g: Guard, *, start: datetime | None, end: datetime | None) -> dict[str, Any]:
        g.authorize(Action.AUDIT_ANOMALIES_READ, Resource("audit_log"), commit=True)
        end = end or g.now
        start = start or end - timedelta(days=7)
        with self.db.read_session() as s:
            flags = anomalies.detect(s, anomalies.Thresholds.from_settings(self.settings), start=start, end=end)
        return {"from": format_time(start), "to": format_time(end), "items": flags}
