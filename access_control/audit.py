"""Append-only, hash-chained access log.

Every decision (allowed, denied or error) becomes one event. Each event's
canonical form includes the previous event's hash; its own hash is the RFC 6962
leaf hash ``H(0x00 || canonical)``, so the same hashes form both a chain (the
first bad position is easy to name) and the leaves of a Merkle tree (for
signed checkpoints and proofs). ``docs/audit-format.md`` specifies the bytes.

Appends are serialized through the single ``audit_head`` row: ``SELECT ... FOR
UPDATE`` on PostgreSQL, the database write lock (``BEGIN IMMEDIATE``) on SQLite.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from access_control.actions import Action
from access_control.identity import Actor
from core.crypto import AES_SUITE, SM_SUITE, Suite
from core.db import Base, UTCDateTime

FORMAT_VERSION = 1
GENESIS_HASH = "0" * 64
HASH_ALGS: dict[str, Suite] = {"sha256": AES_SUITE, "sm3": SM_SUITE}


class AuditEvent(Base):
    __tablename__ = "audit_events"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    actor_id: Mapped[str] = mapped_column(String(40), index=True)
    actor: Mapped[str] = mapped_column(String(80))
    org_id: Mapped[str] = mapped_column(String(40))
    roles: Mapped[str] = mapped_column(String(120))
    action: Mapped[str] = mapped_column(String(64), index=True)
    resource_kind: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str] = mapped_column(String(160))
    request_id: Mapped[str] = mapped_column(String(64))
    subjects: Mapped[list[str]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


class AuditHead(Base):
    """One row: the log's size and last hash. Locking it serializes appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    hash_alg: Mapped[str] = mapped_column(String(16))


OUTCOMES = ("allowed", "denied", "error")


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with microseconds, the one form used in canonical events."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_fields(ev: AuditEvent | Mapping[str, Any]) -> dict[str, Any]:
    get = ev.get if isinstance(ev, Mapping) else (lambda k: getattr(ev, k))
    at = get("at")
    return {
        "v": FORMAT_VERSION,
        "seq": int(get("seq")),
        "at": at if isinstance(at, str) else format_time(at),
        "actor_id": get("actor_id"),
        "actor": get("actor"),
        "org_id": get("org_id"),
        "roles": get("roles"),
        "action": get("action"),
        "resource_kind": get("resource_kind"),
        "resource_id": get("resource_id"),
        "outcome": get("outcome"),
        "reason": get("reason"),
        "request_id": get("request_id"),
        "subjects": list(get("subjects") or []),
        "details": dict(get("details") or {}),
        "prev_hash": get("prev_hash"),
    }


def canonical_bytes(ev: AuditEvent | Mapping[str, Any]) -> bytes:
    return json.dumps(
        canonical_fields(ev), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    ).encode("utf-8")


def leaf_hash(suite: Suite, canonical: bytes) -> str:
    return suite.digest(b"\x00" + canonical).hex()


@dataclass
class EventDraft:
    """What a caller knows about a decision; the log adds seq, time and hashes."""

    action: Action
    outcome: str
    reason: str
    resource_kind: str = ""
    resource_id: str = ""
    subjects: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


class AuditLog:
    def __init__(self, hash_alg: str = "sha256"):
        if hash_alg not in HASH_ALGS:
            raise ValueError(hash_alg)
        self.hash_alg = hash_alg

    def ensure_head(self, session: Session) -> None:
        """Create the head row for a new log (``shouhu init``)."""
        if session.get(AuditHead, 1) is None:
            session.add(AuditHead(id=1, size=0, head_hash=GENESIS_HASH, hash_alg=self.hash_alg))

    def suite_for(self, session: Session) -> Suite:
        head = session.get(AuditHead, 1)
        return HASH_ALGS[head.hash_alg if head else self.hash_alg]

    def append(
        self,
        session: Session,
        *,
        actor: Actor,
        draft: EventDraft,
        request_id: str,
        at: datetime,
    ) -> AuditEvent:
        """Add one event in the caller's transaction; the caller commits."""
        if draft.outcome not in OUTCOMES:
            raise ValueError(draft.outcome)
        head = session.scalars(
            select(AuditHead).where(AuditHead.id == 1).with_for_update().execution_options(
                populate_existing=True
            )
        ).one()
        suite = HASH_ALGS[head.hash_alg]
        # Stored times are microsecond-exact so the canonical form re-hashes.
        at = at.astimezone(UTC)
        ev = AuditEvent(
            seq=head.size + 1,
            at=at,
            actor_id=actor.user_id,
            actor=actor.username,
            org_id=actor.org_id,
            roles=",".join(sorted(actor.roles)),
            action=draft.action.value,
            resource_kind=draft.resource_kind,
            resource_id=draft.resource_id,
            outcome=draft.outcome,
            reason=draft.reason[:160],
            request_id=request_id,
            subjects=sorted(set(draft.subjects)),
            details=draft.details,
            prev_hash=head.head_hash,
        )
        ev.hash = leaf_hash(suite, canonical_bytes(ev))
        session.add(ev)
        head.size, head.head_hash = ev.seq, ev.hash
        return ev

    @staticmethod
    def events(session: Session, *, after: int = 0, limit: int | None = None) -> Iterable[AuditEvent]:
        q = select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq)
        if limit:
            q = q.limit(limit)
        return session.scalars(q)
