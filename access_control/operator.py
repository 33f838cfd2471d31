"""The operator's entries in the access log: what a ``shouhu`` command logs, and how."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from access_control.actions import Action
from access_control.audit import EventDraft
from access_control.guard import Guard
from access_control.identity import operator_actor
from core.db import new_id
from core.errors import AuditUnavailable, ShouhuError

if TYPE_CHECKING:
    from runtime import Runtime

OPERATOR_RULE = "cli:operator"
BOOTSTRAP_RULE = "cli:operator+bootstrap:first_admin"


class OperatorRefused(Exception):
    """An operator command the archive refused; the refusal is already logged.

    ``message`` is for the operator (user-facing, so Chinese); the command prints it and stops.
    """

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class Operator:
    """One operator command's entries in the access log, as the CLI's system actor.

    The actor is ``system:cli:<OS user>`` (the account that ran ``shouhu``); a command
    run for a user (``print --as``) is logged with that user as ``on_behalf_of``.

    Whoever runs ``shouhu`` holds the master key and the database, so an operator
    command is allowed by rule ``cli:operator``; what the archive refuses (an unknown
    user, the current KEK, nothing to shred) is logged 'denied', and what fails
    midway 'error', as the API logs its decisions. A change commits its 'allowed'
    event in the change's own transaction (``change``, or the ``on_start`` /
    ``on_commit`` hooks of ``core.keys``), so a crash leaves neither a change
    without its event nor an event without its change.

    ``warn`` is told (in Chinese) when a failure could not be logged.
    """

    def __init__(self, rt: Runtime, *, warn: Callable[[str], None]):
        self.rt = rt
        self.warn = warn
        self.actor = operator_actor()
        self.request_id = new_id("cli")

    @staticmethod
    def draft(action: Action, *, kind: str, rid: str = "", outcome: str = "allowed", reason: str = OPERATOR_RULE,
              details: Mapping[str, object] | None = None) -> EventDraft:
        return EventDraft(action=action, outcome=outcome, reason=reason, resource_kind=kind, resource_id=rid,
                          details=dict(details or {}))

    def append(self, session: Session, action: Action, **draft: object) -> None:
        """Add an event in the caller's transaction; the caller commits it with its change."""
        try:
            self.rt.audit.append(session, actor=self.actor, request_id=self.request_id, at=self.rt.clock(),
                                 draft=self.draft(action, **draft))  # type: ignore[arg-type]
        except SQLAlchemyError as exc:
            raise AuditUnavailable() from exc

    def record(self, action: Action, **draft: object) -> None:
        """An event in a transaction of its own (no other session of this command may be open)."""
        try:
            with self.rt.db.session() as s:
                self.append(s, action, **draft)
                s.commit()
        except SQLAlchemyError as exc:
            raise AuditUnavailable() from exc

    def username_hash(self, username: str) -> str:
        """A username that names no user, as failed sign-ins log it: a keyed hash, not the name."""
        return self.rt.ring.keyed_hash("login-throttle", username.strip().lower())

    def refuse(self, action: Action, message: str, *, kind: str, rid: str = "", reason: str) -> OperatorRefused:
        """Log a refusal in its own transaction; the caller raises what this returns."""
        self.record(action, kind=kind, rid=rid, outcome="denied", reason=reason)
        return OperatorRefused(message)

    def deny(self, g: Guard, action: Action, message: str, *, kind: str, rid: str = "", reason: str,
             details: Mapping[str, object] | None = None) -> OperatorRefused:
        """Inside ``change``: undo what the transaction did, log the refusal, commit it."""
        g.session.rollback()
        g.record(self.draft(action, kind=kind, rid=rid, outcome="denied", reason=reason, details=details))
        g.commit()
        return OperatorRefused(message)

    def failed(self, action: Action, exc: BaseException, *, kind: str, rid: str = "",
               details: Mapping[str, object] | None = None) -> None:
        """Log an 'error' event for an operation that stopped; never hides ``exc`` itself."""
        code = exc.code if isinstance(exc, ShouhuError) else type(exc).__name__
        try:
            self.record(action, kind=kind, rid=rid, outcome="error", reason=f"error:{code}", details=details)
        except AuditUnavailable:
            self.warn("访问日志无法写入，本次失败未能记录。")

    @contextmanager
    def change(self) -> Iterator[Guard]:
        """One transaction for a change and its event: ``g.record(...)``, the change, ``g.commit()``.

        Any exception before that commit rolls the change back and logs the recorded
        event again as 'error' (``Guard.fail``), in the same way as an API request.
        """
        with self.rt.db.session() as s:
            g = self.rt.guard(s, self.actor, request_id=self.request_id)
            try:
                yield g
            except BaseException as exc:
                g.fail(exc)
                raise
