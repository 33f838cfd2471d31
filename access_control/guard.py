"""The per-request gate: decide by policy, write the audit event, fail closed.

Services call ``guard.authorize(action, resource)`` before touching a record. Three
more verbs cover what callers need besides: ``require`` refuses (logged, raised) what
policy refuses and logs nothing when it allows, for a check made before the record is
read (its event follows with the record); ``not_found`` is the audited refusal of an id
that names no visible record; ``scoped`` limits a query to the actor's jurisdiction.
A refusal is written to the log and committed before the error is raised; an
allowed read is committed before any content is decrypted (``commit=True``);
an allowed write commits its event with the write itself. If anything after
``authorize`` fails, ``fail`` rolls the transaction back and logs the decision
again as an error, so every decision leaves exactly one event. A read whose
content then fails to decrypt (``IntegrityFailure``) already has its 'allowed'
event committed; ``fail`` adds an 'error' event for it, so the log shows that
nothing was served.

Every event is appended in a write transaction. A request that reads (GET) keeps its
session reading: its events wait in the guard until ``commit`` hands them to the
process's ``AuditWriter``, which appends the events of many reading requests in one
short transaction and returns once they are durable, before any content is decrypted.
A request that writes appends its events in its own transaction (``record`` begins one),
committed with its write; after that commit the session goes back to reading (core.db),
so a request never holds the write lock while it decrypts or builds its answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, NoReturn, TypeVar

from sqlalchemy import Select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from access_control.actions import Action
from access_control.audit import AuditLog, EventDraft
from access_control.audit_writer import AuditWriter
from access_control.identity import Actor
from access_control.policy import PASSWORD_CHANGE_RULE, SECOND_FACTOR_RULE, Decision, Policy, Resource
from access_control.regions import Region
from core.db import begin_write, is_reading
from core.errors import (
    AuditUnavailable,
    Forbidden,
    IntegrityFailure,
    NotFound,
    PasswordChangeRequired,
    SecondFactorEnrolmentRequired,
    ShouhuError,
)
from core.redact import safe_identifier

_Q = TypeVar("_Q", bound=Select[*tuple[Any, ...]])


def _typed(filters: dict[str, Any]) -> dict[str, Any]:
    """Client-typed filter values as they may be logged: strings only if id-shaped, empty ones left out."""
    return {k: safe_identifier(v) if isinstance(v, str) else v
            for k, v in filters.items() if v is not None and v != ""}


@dataclass
class Guard:
    session: Session
    actor: Actor
    request_id: str
    now: datetime
    policy: Policy
    audit: AuditLog
    # An operator command acting for ``actor`` (``shouhu print --as``): policy decides as
    # ``actor``, the log names the operator as the actor and ``actor`` as ``on_behalf_of``.
    operator: Actor | None = None
    # The process's group commit for the events of reading requests (None: every event is
    # appended in this guard's own session).
    writer: AuditWriter | None = None
    _pending: list[EventDraft] = field(default_factory=list)
    # Events of a request that has written nothing, for ``writer`` at ``commit``.
    _queued: list[EventDraft] = field(default_factory=list)
    _undo: list[Callable[[], None]] = field(default_factory=list)
    _deferred: list[EventDraft] = field(default_factory=list)
    # The 'allowed' events of the last commit: a read commits its event before decrypting.
    _committed: list[EventDraft] = field(default_factory=list)

    def on_rollback(self, undo: Callable[[], None]) -> None:
        """Run ``undo`` if the current transaction does not commit (e.g. remove a written blob)."""
        self._undo.append(undo)

    def _rolled_back(self) -> None:
        undo, self._undo = self._undo, []
        for fn in reversed(undo):
            fn()

    def decide(self, action: Action, resource: Resource | None = None) -> Decision:
        """The decision alone, without logging (for building scoped queries)."""
        return self.policy.decide(self.actor, action, resource)

    def require(
        self,
        action: Action,
        resource: Resource | None = None,
        *,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Refuse unless policy allows: a refusal is logged and raised as by ``authorize``; an
        allowed decision is not logged (the caller logs it, with the record, once it has read it)."""
        if not self.decide(action, resource).allowed:
            self.authorize(action, resource, details=details)

    def not_found(self, action: Action, kind: str, record_id: str) -> NoReturn:
        """Log that ``record_id`` names no record the actor may see, commit, and answer 404."""
        self.record(EventDraft(action=action, outcome="denied", reason="record:not_found",
                               resource_kind=kind, resource_id=record_id[:64]))
        self.commit()
        raise NotFound()

    def scoped(self, query: _Q, region_code: Any) -> _Q:
        """``query`` limited to rows whose ``region_code`` column lies in the actor's jurisdiction
        (its own region node and the nodes below it)."""
        path = self.policy.scope_path(self.actor)
        return query.join(Region, Region.code == region_code).where(Region.path.startswith(path, autoescape=True))

    def authorize(
        self,
        action: Action,
        resource: Resource | None = None,
        *,
        subjects: list[str] | tuple[str, ...] = (),
        details: dict[str, Any] | None = None,
        filters: dict[str, Any] | None = None,
        commit: bool = False,
        defer: bool = False,
    ) -> Decision:
        """Decide and log; raise on refusal; with ``commit`` make the event durable now.

        ``defer`` (allowed writes that do slow work, like rendering a PDF): the event
        is appended at ``commit``, in the same transaction as the write, so the log's
        head row is not locked for everyone while the slow work runs. A failure
        before the commit still leaves its one ``error`` event.

        ``filters`` are what the client typed into a query (a household id, a kind, an
        actor): they go into the event's details only where id-shaped, so an ID number
        or a name typed into a filter never lands in the permanent log.
        """
        decision = self.policy.decide(self.actor, action, resource)
        draft = EventDraft(
            action=action,
            outcome="allowed" if decision.allowed else "denied",
            reason=decision.rule,
            resource_kind=resource.kind if resource else "",
            resource_id=(resource.id or "") if resource else "",
            subjects=list(subjects),
            details={**_typed(filters or {}), **(details or {})},
        )
        if decision.allowed and defer:
            self._deferred.append(draft)
            return decision
        self.record(draft)
        if not decision.allowed:
            self.commit()
            if decision.hidden:
                raise NotFound()
            if decision.rule == PASSWORD_CHANGE_RULE:
                raise PasswordChangeRequired()
            if decision.rule == SECOND_FACTOR_RULE:
                raise SecondFactorEnrolmentRequired()
            raise Forbidden(decision.rule, decision.message)
        if commit:
            self.commit()
        return decision

    def begin_write(self) -> None:
        """What follows is a write transaction: for a request that reads (GET) yet must record
        something besides its audit events (a disclosure in the register). Elsewhere a no-op."""
        begin_write(self.session)
        self._append_queued()  # events waiting for the writer go with the write instead

    def release(self) -> None:
        """End the transaction so far (only reads) before slow work, such as rendering a PDF.

        On SQLite every transaction holds the database's write lock from its first
        statement: without this, one render would stall every other request. Deferred
        events stay deferred (appended at ``commit``); loaded rows expire and are read
        again by the next statement, in a new transaction.
        """
        if self._pending or self._undo:
            raise RuntimeError("release() after a write")
        self.session.rollback()
        # What follows the slow work is the write (a request that committed earlier, e.g. a
        # reply that then issues its letter, has gone back to reading: begin writing again).
        begin_write(self.session)

    def _reading(self) -> bool:
        """Whether this request has written nothing so far (its events can go to the writer)."""
        return self.writer is not None and not self._pending and is_reading(self.session)

    def record(self, draft: EventDraft) -> None:
        """Log an event: for a request that has written nothing, kept for the writer until
        ``commit``; otherwise appended in the current (write) transaction."""
        if self.operator is not None:
            draft.on_behalf_of = self.actor.username
        if self._reading():
            self._queued.append(draft)
            return
        self._append_queued()
        self._append(draft)

    def _append_queued(self) -> None:
        queued, self._queued = self._queued, []
        for draft in queued:
            self._append(draft)

    def _append(self, draft: EventDraft) -> None:
        """Append an event in the current transaction (a write transaction: a request session
        that was reading commits its read and begins writing)."""
        try:
            begin_write(self.session)
            self.audit.append(
                self.session, actor=self.operator or self.actor, draft=draft, request_id=self.request_id,
                at=self.now,
            )
        except SQLAlchemyError as exc:
            self.session.rollback()
            self._pending.clear()
            self._rolled_back()
            raise AuditUnavailable() from exc
        self._pending.append(draft)

    def commit(self) -> None:
        """Commit the transaction; if it cannot be committed, nothing is served."""
        deferred, self._deferred = self._deferred, []
        for draft in deferred:
            self.record(draft)
        if self._queued and self._reading():
            self._commit_queued()
            return
        self._append_queued()
        try:
            self.session.commit()
        except SQLAlchemyError as exc:
            self.session.rollback()
            self._pending.clear()
            self._rolled_back()
            raise AuditUnavailable() from exc
        self._committed = [d for d in self._pending if d.outcome == "allowed"]
        self._pending.clear()
        self._undo.clear()

    def _commit_queued(self) -> None:
        """The events of a request that wrote nothing, made durable by the writer."""
        queued, self._queued = self._queued, []
        writer = self.writer
        if writer is None:  # pragma: no cover - _reading() checked it
            raise RuntimeError("no audit writer")
        try:
            writer.append(self.operator or self.actor, queued, request_id=self.request_id, at=self.now)
        except AuditUnavailable:
            self._rolled_back()
            raise
        self.session.commit()  # ends the read transaction (it wrote nothing)
        self._committed = [d for d in queued if d.outcome == "allowed"]
        self._undo.clear()

    def fail(self, exc: BaseException) -> None:
        """After an error, replace uncommitted 'allowed' events by 'error' events.

        A decryption failure after a read's 'allowed' event was committed (fail closed:
        the event is durable before any content is opened) gets an 'error' event of its
        own for the same decision: the client was given no content.
        """
        pending, self._pending = self._pending + self._queued + self._deferred, []
        self._deferred, self._queued = [], []
        committed, self._committed = self._committed, []
        if not pending and isinstance(exc, IntegrityFailure):
            pending = [replace(d, subjects=list(d.subjects), details=dict(d.details)) for d in committed]
        self.session.rollback()
        self._rolled_back()
        if not pending or isinstance(exc, AuditUnavailable):
            return
        code = exc.code if isinstance(exc, ShouhuError) else type(exc).__name__
        for draft in pending:
            draft.outcome = "error"
            draft.reason = f"error:{code}"
            self.record(draft)
        self.commit()
