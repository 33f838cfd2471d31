"""A user's own sessions and sign-in history, and an administrator ending a user's sessions.

A session is a live token: an API bearer token or a page session (kind ``web``); the
second step's challenges (kind ``mfa``) are not sessions. Page sessions also end when idle
(``session_idle_minutes``) and at the absolute time-out (``session_absolute_hours``), both
read against the injected clock when the session is next used.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import select

from access_control.actions import Action
from access_control.guard import Guard
from access_control.identity import SignIn, Token, User, revoke_all_tokens
from access_control.policy import Resource
from core.settings import Settings

SESSION_KINDS = ("api", "web")


class SessionPublic(BaseModel):
    id: str
    kind: str = Field(description="api (a bearer token) or web (the pages)")
    method: str | None = Field(description="password, password+totp, password+recovery, oidc, oidc+totp ...")
    address: str | None = Field(description="The client address it was opened from")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime = Field(description="When it ends at the latest (the absolute time-out for pages)")
    current: bool = Field(description="The session making this request")


class SignInPublic(BaseModel):
    at: datetime
    address: str | None
    method: str
    success: bool


class SessionsEnded(BaseModel):
    ended: int


class Sessions:
    def __init__(self, *, settings: Settings):
        self.settings = settings

    def own(self, g: Guard, *, current_hash: str | None) -> list[SessionPublic]:
        """The caller's live sessions, newest first."""
        g.authorize(Action.SESSION_LIST, Resource("user", g.actor.user_id), commit=True)
        rows = g.session.scalars(select(Token).where(
            Token.user_id == g.actor.user_id, Token.revoked_at.is_(None), Token.expires_at > g.now,
            Token.kind.in_(SESSION_KINDS)).order_by(Token.created_at.desc(), Token.id))
        idle = timedelta(minutes=self.settings.session_idle_minutes)
        absolute = timedelta(hours=self.settings.session_absolute_hours)
        out = []
        for row in rows:
            ends = row.expires_at
            if row.kind == "web":
                if row.last_used_at is not None and g.now - row.last_used_at > idle:
                    continue  # timed out while idle: ends at its next use
                if g.now - row.created_at > absolute:
                    continue
                ends = min(ends, row.created_at + absolute)
            out.append(SessionPublic(id=row.id, kind=row.kind, method=row.method, address=row.address,
                                     created_at=row.created_at, last_used_at=row.last_used_at, expires_at=ends,
                                     current=row.token_hash == current_hash))
        return out

    def history(self, g: Guard, *, limit: int = 50) -> list[SignInPublic]:
        """The caller's last sign-in attempts (successful or not), newest first."""
        g.authorize(Action.SESSION_LIST, Resource("user", g.actor.user_id), commit=True)
        rows = g.session.scalars(select(SignIn).where(SignIn.user_id == g.actor.user_id)
                                 .order_by(SignIn.at.desc(), SignIn.id.desc()).limit(limit))
        return [SignInPublic(at=r.at, address=r.address, method=r.method, success=r.success) for r in rows]

    def end(self, g: Guard, session_id: str) -> None:
        """End one of the caller's own sessions (another user's is a 404, as if it did not exist)."""
        action = Action.SESSION_REVOKE
        row = g.session.get(Token, session_id)
        if row is None or row.user_id != g.actor.user_id or row.kind not in SESSION_KINDS:
            g.not_found(action, "session", session_id)
        g.authorize(action, Resource("session", row.id))
        if row.revoked_at is None:
            row.revoked_at = g.now
        g.commit()

    def end_all_of(self, g: Guard, user_id: str) -> SessionsEnded:
        """An administrator (or the security administrator) ends every session of a user."""
        action = Action.USER_END_SESSIONS
        g.require(action, Resource("user", user_id[:64]))
        user = g.session.get(User, user_id)
        if user is None:
            g.not_found(action, "user", user_id)
        ended = revoke_all_tokens(g.session, user.id, now=g.now)
        g.authorize(action, Resource("user", user.id, user.region_code), details={"sessions_ended": ended})
        g.commit()
        return SessionsEnded(ended=ended)
