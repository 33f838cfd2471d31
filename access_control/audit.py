"""Append-only, hash-chained, Merkle-checkpointed access log.

Every decision (allowed, denied or error) becomes one event. An event's
canonical form (sorted-key compact UTF-8 JSON, ``docs/audit-format.md``)
includes the previous event's hash; its own hash is the RFC 6962 leaf hash
``H(0x00 || canonical)``. The same hashes therefore form a chain (so the first
bad position can be named) and the leaves of a Merkle tree (so signed
checkpoints, inclusion proofs and consistency proofs work as in certificate
transparency). ``H`` is SHA-256, or SM3 for archives on the SM suite.

Appends are serialized through the single ``audit_head`` row: ``SELECT ... FOR
UPDATE`` on PostgreSQL, the database write lock (``BEGIN IMMEDIATE``) on SQLite.
The tables refuse UPDATE and DELETE by trigger; Shouhu has no code path that
alters an event.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

from sqlalchemy import JSON, BigInteger, ForeignKey, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from access_control import merkle
from access_control.actions import Action
from access_control.identity import Actor
from core.crypto import SigningKey, verify_signature
from core.db import Base, Database, UTCDateTime, begin_write
from core.redact import safe_identifier

FORMAT_VERSION = 1
# Version 2 adds ``on_behalf_of``; only events that name one use it, so every event
# without it (all events written before it existed among them) hashes as before.
FORMAT_VERSION_ON_BEHALF = 2
GENESIS_HASH = "0" * 64
HASH_ALGS = ("sha256", "sm3")
CHECKPOINT_PREFIX = "shouhu-audit-checkpoint/v1"
OUTCOMES = ("allowed", "denied", "error")
BATCH = 5000


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
    # The user an operator acted for (``shouhu print --as``); NULL for everything else,
    # and for every event written before format version 2 existed (migration 0012).
    on_behalf_of: Mapped[str | None] = mapped_column(String(80), index=True)


class AuditEventSubject(Base):
    """Index from a subject's keyed hash to the events about it (derived, checked by verify)."""

    __tablename__ = "audit_event_subjects"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(ForeignKey("audit_events.seq"), primary_key=True, index=True)


class AuditHead(Base):
    """One row: the log's size and last hash. Locking it serializes appends."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    head_hash: Mapped[str] = mapped_column(String(64))
    hash_alg: Mapped[str] = mapped_column(String(16))


class AuditCheckpoint(Base):
    """A signed tree head. ``frontier`` lets the next checkpoint continue in O(new events)."""

    __tablename__ = "audit_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[str] = mapped_column(String(64))
    head_hash: Mapped[str] = mapped_column(String(64))
    hash_alg: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    key_id: Mapped[str] = mapped_column(String(32))
    signature: Mapped[str] = mapped_column(String(128))
    frontier: Mapped[list[str]] = mapped_column(JSON)


# Canonical form ----------------------------------------------------------------


def format_time(at: datetime) -> str:
    """RFC 3339 UTC with microseconds, the one form used in canonical events."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


CANONICAL_KEYS = (
    "v", "seq", "at", "actor_id", "actor", "org_id", "roles", "action", "resource_kind",
    "resource_id", "outcome", "reason", "request_id", "subjects", "details", "prev_hash",
)
# Version 2 events (those acting for someone) carry one more key.
CANONICAL_KEYS_V2 = (*CANONICAL_KEYS, "on_behalf_of")


def canonical_fields(ev: AuditEvent | Mapping[str, Any]) -> dict[str, Any]:
    # One isinstance per event, not per field: an ABC check on a row mapping 16 times
    # an event cost more than the hashing (verify and checkpoint call this per event).
    get: Callable[[str], Any] = ev.get if isinstance(ev, Mapping) else partial(getattr, ev)

    at = get("at")
    on_behalf_of = get("on_behalf_of")
    fields = {
        "v": FORMAT_VERSION_ON_BEHALF if on_behalf_of else FORMAT_VERSION,
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
    if on_behalf_of:
        fields["on_behalf_of"] = on_behalf_of
    return fields


def canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def canonical_bytes(ev: AuditEvent | Mapping[str, Any]) -> bytes:
    return canonical_json(canonical_fields(ev)).encode("utf-8")


def event_hash(alg: str, ev: AuditEvent | Mapping[str, Any]) -> str:
    return merkle.leaf_hash(merkle.hasher(alg), canonical_bytes(ev)).hex()


def checkpoint_message(*, hash_alg: str, size: int, root: str, head_hash: str, at: str) -> bytes:
    """The exact bytes an audit checkpoint signature covers."""
    return f"{CHECKPOINT_PREFIX}\n{hash_alg}\n{size}\n{root}\n{head_hash}\n{at}\n".encode("ascii")


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
    # Set by the guard of an operator command acting for a user: that user's username.
    on_behalf_of: str | None = None


@dataclass
class VerifyResult:
    ok: bool
    length: int
    head_hash: str
    first_bad_seq: int | None = None
    problem: str | None = None
    checkpoints_checked: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "length": self.length, "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq, "problem": self.problem,
            "checkpoints_checked": self.checkpoints_checked,
        }


class AuditTampered(Exception):
    """The log does not verify; no checkpoint is signed over it."""


class AuditLog:
    def __init__(self, hash_alg: str = "sha256", signer: SigningKey | None = None):
        if hash_alg not in HASH_ALGS:
            raise ValueError(hash_alg)
        self.hash_alg = hash_alg
        self.signer = signer

    # writing -------------------------------------------------------------------

    def ensure_head(self, session: Session) -> None:
        """Create the head row for a new log (``shouhu init``)."""
        if session.get(AuditHead, 1) is None:
            session.add(AuditHead(id=1, size=0, head_hash=GENESIS_HASH, hash_alg=self.hash_alg))

    def append(
        self, session: Session, *, actor: Actor, draft: EventDraft, request_id: str, at: datetime
    ) -> AuditEvent:
        """Add one event in the caller's transaction; the caller commits.

        A request session that is reading (a GET, or after a commit) begins writing here: an
        audit append is a write wherever it happens."""
        if draft.outcome not in OUTCOMES:
            raise ValueError(draft.outcome)
        begin_write(session)
        head = session.scalars(
            select(AuditHead).where(AuditHead.id == 1).with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        subjects = sorted(set(draft.subjects))
        ev = AuditEvent(
            seq=head.size + 1,
            at=at.astimezone(UTC),
            actor_id=actor.user_id,
            actor=actor.username,
            org_id=actor.org_id,
            roles=",".join(sorted(actor.roles)),
            action=draft.action.value,
            resource_kind=draft.resource_kind,
            resource_id=safe_identifier(draft.resource_id[:64]),
            outcome=draft.outcome,
            reason=draft.reason[:160],
            request_id=request_id,
            subjects=subjects,
            details=draft.details,
            prev_hash=head.head_hash,
            on_behalf_of=draft.on_behalf_of or None,
        )
        ev.hash = event_hash(head.hash_alg, ev)
        session.add(ev)
        session.flush()  # the event row must exist before its subject rows
        session.add_all(AuditEventSubject(subject=s, seq=ev.seq) for s in subjects)
        head.size, head.head_hash = ev.seq, ev.hash
        return ev

    # reading -------------------------------------------------------------------

    @staticmethod
    def head(session: Session) -> AuditHead:
        head = session.get(AuditHead, 1)
        if head is None:
            raise AuditTampered("the audit log has no head row; run `shouhu init`")
        return head

    @staticmethod
    def iter_events(
        session: Session, *, after: int = 0, upto: int | None = None, where: Iterable[Any] = ()
    ) -> Iterator[Mapping[str, Any]]:
        """Event rows (plain mappings, not ORM objects) in seq order, read in batches."""
        table = AuditEvent.__table__
        last = after
        while True:
            q = select(table).where(table.c.seq > last, *where).order_by(table.c.seq).limit(BATCH)
            if upto is not None:
                q = q.where(table.c.seq <= upto)
            rows = session.execute(q).mappings().all()
            if not rows:
                return
            yield from cast(Sequence[Mapping[str, Any]], rows)  # RowMapping: keys are the column names
            last = rows[-1]["seq"]

    @staticmethod
    def leaf_hashes(session: Session, size: int) -> list[bytes]:
        """Stored leaf hashes 1..size (for proofs; proofs are checked against signed roots)."""
        out: list[bytes] = []
        last = 0
        while last < size:
            rows = session.execute(
                select(AuditEvent.seq, AuditEvent.hash).where(AuditEvent.seq > last, AuditEvent.seq <= size)
                .order_by(AuditEvent.seq).limit(50_000)
            ).all()
            if not rows:
                break
            out += [bytes.fromhex(h) for _, h in rows]
            last = rows[-1][0]
        if len(out) != size:
            raise AuditTampered(f"the log holds {len(out)} events where {size} were expected")
        return out

    # verification ----------------------------------------------------------------

    def verify(
        self,
        session: Session,
        *,
        checkpoints: Iterable[Mapping[str, Any]] = (),
        public_key: bytes | None = None,
    ) -> VerifyResult:
        """Re-hash every event, follow the chain, and check every checkpoint's root.

        ``checkpoints`` are extra signed tree heads kept outside the database (a
        saved checkpoint file); the stored ones are always checked too.
        """
        head = self.head(session)
        alg = head.hash_alg
        h = merkle.hasher(alg)
        stored = [self.checkpoint_dict(c) for c in session.scalars(select(AuditCheckpoint))]
        wanted: dict[int, list[Mapping[str, Any]]] = {}
        for cp in [*stored, *checkpoints]:
            wanted.setdefault(int(cp["size"]), []).append(cp)
        pub = public_key or (self.signer.public_key if self.signer else None)
        checked = 0
        compact = merkle.CompactRange(h)
        prev = GENESIS_HASH
        expected = 1
        subjects = self._subjects_in_order(session)
        pending = next(subjects, None)

        def bad(seq: int, problem: str) -> VerifyResult:
            return VerifyResult(False, compact.size, prev, first_bad_seq=seq, problem=problem,
                                checkpoints_checked=checked)

        for ev in self.iter_events(session):
            seq = ev["seq"]
            if seq != expected:
                return bad(expected, f"event {expected} is missing (next stored event is {seq})")
            if ev["prev_hash"] != prev:
                return bad(seq, "prev_hash does not match the previous event's hash")
            if event_hash(alg, ev) != ev["hash"]:
                return bad(seq, "the event's content does not match its hash")
            indexed: set[str] = set()
            while pending is not None and pending[0] <= seq:
                if pending[0] < seq:  # only possible for an index row of an event that is not there
                    return bad(pending[0], "the subject index names an event that does not exist")
                indexed.add(pending[1])
                pending = next(subjects, None)
            if indexed != set(ev["subjects"] or []):
                return bad(seq, "the subject index does not match the event")
            compact.append(bytes.fromhex(ev["hash"]))
            prev = ev["hash"]
            for cp in wanted.get(seq, []):
                problem = self._check_checkpoint(cp, compact.root().hex(), prev, alg, pub)
                if problem:
                    return bad(seq, problem)
                checked += 1
            expected += 1
        size = compact.size
        longer = [s for s in wanted if s > size]
        if longer:
            return bad(size + 1, f"a checkpoint covers {max(longer)} events but the log holds only {size}")
        if pending is not None:
            return bad(pending[0], "the subject index names an event that does not exist")
        if head.size != size or head.head_hash != prev:
            return bad(min(head.size, size) + 1, "the head row does not match the last event")
        return VerifyResult(True, size, prev, checkpoints_checked=checked)

    @staticmethod
    def _subjects_in_order(session: Session, window: int = 50_000) -> Iterator[tuple[int, str]]:
        """(seq, subject) rows in seq order, a window of events at a time (constant memory)."""
        t = AuditEventSubject
        top = session.scalar(select(func.max(t.seq))) or 0
        for lo in range(0, top, window):
            rows = session.execute(
                select(t.seq, t.subject).where(t.seq > lo, t.seq <= lo + window).order_by(t.seq, t.subject)
            ).all()
            yield from ((seq, subject) for seq, subject in rows)

    @staticmethod
    def _check_checkpoint(cp: Mapping[str, Any], root: str, head_hash: str, alg: str,
                          public_key: bytes | None) -> str | None:
        if cp.get("hash_alg", alg) != alg:
            return "a checkpoint uses another hash algorithm"
        if cp["root"] != root:
            return f"the Merkle root of the first {cp['size']} events differs from the signed checkpoint"
        if cp.get("head_hash", head_hash) != head_hash:
            return f"the hash of event {cp['size']} differs from the signed checkpoint"
        if public_key is None:
            return None
        message = checkpoint_message(hash_alg=alg, size=int(cp["size"]), root=cp["root"],
                                     head_hash=cp["head_hash"], at=cp["at"])
        try:
            signature = bytes.fromhex(cp["signature"])
        except ValueError:
            return "a checkpoint signature is malformed"
        if not verify_signature(public_key, message, signature):
            return f"the signature of the checkpoint at {cp['size']} does not verify"
        return None

    # checkpoints --------------------------------------------------------------------

    @staticmethod
    def checkpoint_dict(cp: AuditCheckpoint) -> dict[str, Any]:
        return {
            "size": cp.size, "root": cp.root, "head_hash": cp.head_hash, "hash_alg": cp.hash_alg,
            "at": format_time(cp.at), "key_id": cp.key_id, "signature": cp.signature,
        }

    def sign_checkpoint(self, db: Database, *, now: datetime) -> dict[str, Any]:
        """Sign the current tree head and store it; the re-hash runs without the write lock.

        Only inserting the checkpoint row takes a (short) write transaction, so on
        SQLite the requests that append events are not held up by a long re-hash.
        """
        with db.read_session() as rs:
            cp = self._prepare(rs, now=now)
        if isinstance(cp, dict):
            return cp
        with db.session() as s:
            existing = s.get(AuditCheckpoint, cp.size)
            if existing is not None:  # another process signed the same size meanwhile
                return self.checkpoint_dict(existing)
            s.add(cp)
            s.commit()
            return self.checkpoint_dict(cp)

    def checkpoint(self, session: Session, *, now: datetime) -> dict[str, Any]:
        """Sign the current tree head in the caller's transaction (the caller commits)."""
        cp = self._prepare(session, now=now)
        if isinstance(cp, dict):
            return cp
        session.add(cp)
        session.flush()
        return self.checkpoint_dict(cp)

    def _prepare(self, session: Session, *, now: datetime) -> AuditCheckpoint | dict[str, Any]:
        """A new signed checkpoint row (not added), or the existing one if nothing was appended.

        Re-hashes every event since the last checkpoint before signing, so a
        checkpoint never vouches for altered events.
        """
        if self.signer is None:
            raise AuditTampered("no audit signing key is configured")
        head = self.head(session)
        alg = head.hash_alg
        h = merkle.hasher(alg)
        size = head.size
        last = session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size.desc()).limit(1)).first()
        if last is not None and last.size == size:
            return self.checkpoint_dict(last)
        compact = merkle.CompactRange(h)
        prev = GENESIS_HASH
        start = 0
        if last is not None:
            try:
                compact = merkle.CompactRange(h, size=last.size, frontier=[bytes.fromhex(x) for x in last.frontier])
            except ValueError:
                raise AuditTampered("the last checkpoint's frontier is malformed") from None
            if compact.root().hex() != last.root or self._check_checkpoint(
                self.checkpoint_dict(last), last.root, last.head_hash, alg, self.signer.public_key
            ):
                raise AuditTampered("the last checkpoint does not verify")
            start, prev = last.size, last.head_hash
        for ev in self.iter_events(session, after=start, upto=size):
            if ev["seq"] != compact.size + 1 or ev["prev_hash"] != prev or event_hash(alg, ev) != ev["hash"]:
                raise AuditTampered(f"event {compact.size + 1} does not verify")
            compact.append(bytes.fromhex(ev["hash"]))
            prev = ev["hash"]
        if compact.size != size:
            raise AuditTampered(f"event {compact.size + 1} is missing")
        at = format_time(now)
        root = compact.root().hex()
        signature = self.signer.sign(
            checkpoint_message(hash_alg=alg, size=size, root=root, head_hash=prev, at=at)
        ).hex()
        return AuditCheckpoint(size=size, root=root, head_hash=prev, hash_alg=alg, at=now,
                               key_id=self.signer.key_id, signature=signature,
                               frontier=[x.hex() for x in compact.frontier])

    @staticmethod
    def checkpoints(session: Session) -> list[dict[str, Any]]:
        return [AuditLog.checkpoint_dict(c)
                for c in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.size))]

    # proofs ------------------------------------------------------------------------------

    def inclusion(self, session: Session, *, seq: int, size: int) -> dict[str, Any]:
        alg = self.head(session).hash_alg
        h = merkle.hasher(alg)
        leaves = self.leaf_hashes(session, size)
        proof = merkle.inclusion_proof(h, leaves, seq - 1)
        return {"seq": seq, "leaf_index": seq - 1, "tree_size": size, "hash_alg": alg,
                "leaf_hash": leaves[seq - 1].hex(), "root": merkle.root_from_leaf_hashes(h, leaves).hex(),
                "proof": [p.hex() for p in proof]}

    def consistency(self, session: Session, *, first: int, second: int) -> dict[str, Any]:
        alg = self.head(session).hash_alg
        h = merkle.hasher(alg)
        leaves = self.leaf_hashes(session, second)
        return {"first": first, "second": second, "hash_alg": alg,
                "first_root": merkle.root_from_leaf_hashes(h, leaves[:first]).hex(),
                "second_root": merkle.root_from_leaf_hashes(h, leaves).hex(),
                "proof": [p.hex() for p in merkle.consistency_proof(h, leaves, first)]}

    @staticmethod
    def size(session: Session) -> int:
        return int(session.scalar(select(func.coalesce(func.max(AuditHead.size), 0))) or 0)


# Export -----------------------------------------------------------------------------

CSV_COLUMNS = ("seq", "at", "actor_id", "actor", "org_id", "roles", "action", "resource_kind", "resource_id",
               "outcome", "reason", "request_id", "subjects", "details", "prev_hash", "hash", "on_behalf_of")


def export_jsonl_line(ev: Mapping[str, Any]) -> bytes:
    """One line of the JSONL export: exactly the canonical bytes the leaf hash covers."""
    return canonical_bytes(ev) + b"\n"


def export_csv_header() -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(CSV_COLUMNS)
    return buf.getvalue().encode("utf-8")


def export_csv_row(ev: Mapping[str, Any]) -> bytes:
    fields = canonical_fields(ev)
    values = [
        str(fields["seq"]), fields["at"], fields["actor_id"], fields["actor"], fields["org_id"], fields["roles"],
        fields["action"], fields["resource_kind"], fields["resource_id"], fields["outcome"], fields["reason"],
        fields["request_id"], canonical_json(fields["subjects"]), canonical_json(fields["details"]),
        fields["prev_hash"], ev["hash"], fields.get("on_behalf_of", ""),
    ]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(values)
    return buf.getvalue().encode("utf-8")
