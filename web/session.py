"""Sign-in for the pages: a session cookie, CSRF tokens, idle time-out.

The cookie holds a token of kind ``web`` (stored, like API tokens, only as a
keyed hash). It is HttpOnly, SameSite=Strict and Secure (browsers treat
http://127.0.0.1 and localhost as secure). A session unused for
``SHOUHU_SESSION_IDLE_MINUTES`` ends. Every form carries a CSRF token derived
from the session (HMAC with its own subkey); htmx sends it as a header.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from access_control.deps import SAFE_METHODS, get_runtime
from access_control.guard import Guard
from access_control.identity import Actor, resolve_token, revoke_token
from core.errors import ShouhuError
from core.redact import safe_identifier

COOKIE = "shouhu_session"
LOGIN_COOKIE = "shouhu_login"  # the sign-in form's CSRF cookie (there is no session yet)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class LoginRequired(Exception):
    """No valid session: the page answers with a redirect to the sign-in page."""

    def __init__(self, next_url: str):
        self.next_url = next_url


class PasswordChangeFirst(Exception):
    """A temporary password: every page but the password change (and sign-out) redirects there."""


class SecondFactorFirst(Exception):
    """A privileged user without a second factor: every page but enrolment (and sign-out) redirects there."""


# Pages a user with a temporary password may still open.
TEMPORARY_PASSWORD_PAGES = frozenset({"/password", "/logout"})
# Pages a privileged user without a second factor may still open.
SECOND_FACTOR_PAGES = frozenset({"/mfa", "/mfa/start", "/mfa/confirm", "/password", "/logout"})
CHALLENGE_COOKIE = "shouhu_mfa"  # the second sign-in step's challenge token (kind "mfa"), for /login/mfa only


class CsrfFailed(ShouhuError):
    status = 403
    code = "csrf_failed"
    message = "表单已过期或来源不明，请刷新页面后重试。"


def csrf_for(runtime: Any, session_token: str) -> str:
    return str(runtime.ring.keyed_hash("csrf", session_token, hex_chars=32))


def login_nonce(request: Request) -> str:
    """The sign-in form's random cookie value (a new one if the browser has none)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)


def login_csrf(runtime: Any, nonce: str) -> str:
    """The sign-in form's CSRF token: an HMAC of its cookie.

    There is no session yet to derive it from; without it another site could sign a
    victim's browser in under the attacker's account (login CSRF) and collect what
    the victim then types.
    """
    return str(runtime.ring.keyed_hash("login-csrf", nonce, hex_chars=32))


def set_login_cookie(response: Any, runtime: Any, nonce: str) -> None:
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=3600, httponly=True, secure=runtime.settings.cookie_secure,
                        samesite="strict", path="/login")


def login_csrf_ok(runtime: Any, request: Request, sent: str) -> bool:
    nonce = request.cookies.get(LOGIN_COOKIE)
    return bool(nonce and sent) and hmac.compare_digest(sent, login_csrf(runtime, str(nonce)))


def local_target(url: str | None) -> str:
    """Where to go after signing in: a path on this site, else ``/``.

    ``//host`` and ``/\\host`` (which browsers read as ``//host``) lead elsewhere and are
    refused. Query values are kept only where id-shaped, so a search term or an ID
    number never rides along in the sign-in redirect.
    """
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url \
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "/"
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        return "/"
    keep = [(k, v) for k, v in parse_qsl(parts.query) if safe_identifier(k) == k and safe_identifier(v) == v]
    return parts.path + (f"?{urlencode(keep)}" if keep else "")


def set_challenge_cookie(response: Any, runtime: Any, challenge: str) -> None:
    response.set_cookie(CHALLENGE_COOKIE, challenge, max_age=runtime.settings.mfa_challenge_seconds, httponly=True,
                        secure=runtime.settings.cookie_secure, samesite="strict", path="/login")


def clear_challenge_cookie(response: Any, runtime: Any) -> None:
    response.delete_cookie(CHALLENGE_COOKIE, path="/login", httponly=True, secure=runtime.settings.cookie_secure,
                           samesite="strict")


def set_cookie(response: Any, runtime: Any, token: str) -> None:
    s = runtime.settings
    response.set_cookie(COOKIE, token, max_age=s.token_ttl_seconds, httponly=True, secure=s.cookie_secure,
                        samesite="strict", path="/")


def clear_cookie(response: Any, runtime: Any) -> None:
    response.delete_cookie(COOKIE, path="/", httponly=True, secure=runtime.settings.cookie_secure, samesite="strict")


def page_session(request: Request) -> Iterator[Session]:
    """As ``access_control.deps.get_session``: reading for GET, writing for form posts."""
    runtime = get_runtime(request)
    with runtime.db.request_session(write=request.method not in SAFE_METHODS) as session:
        yield session


PageSession = Annotated[Session, Depends(page_session)]


def page_actor(request: Request) -> Actor:
    runtime = get_runtime(request)
    token = request.cookies.get(COOKIE)
    if token:
        # A short write of its own: the idle clock (or the time-out) is recorded either way,
        # before the page's own work begins.
        with runtime.db.session() as session:
            actor = resolve_token(session, runtime.ring, token, now=runtime.clock(), kind="web",
                                  idle_seconds=runtime.settings.session_idle_minutes * 60,
                                  absolute_seconds=runtime.settings.session_absolute_hours * 3600)
            session.commit()
        if actor is not None:
            request.state.csrf = csrf_for(runtime, token)
            request.state.actor = actor
            if actor.must_change_password and request.url.path not in TEMPORARY_PASSWORD_PAGES:
                raise PasswordChangeFirst()
            if runtime.policy.must_enrol_second_factor(actor) and request.url.path not in SECOND_FACTOR_PAGES:
                raise SecondFactorFirst()
            return actor
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(target)


PageActor = Annotated[Actor, Depends(page_actor)]


def page_guard(request: Request, session: PageSession, actor: PageActor) -> Iterator[Guard]:
    runtime = get_runtime(request)
    guard = Guard(session=session, actor=actor, request_id=request.state.request_id, now=runtime.clock(),
                  policy=runtime.policy, audit=runtime.audit, writer=runtime.audit_writer)
    try:
        yield guard
    except Exception as exc:
        guard.fail(exc)
        raise


PageGuard = Annotated[Guard, Depends(page_guard)]


async def read_form(request: Request) -> AsyncIterator[FormData]:
    """The submitted form (parsed once; the CSRF check reads the same copy).

    Uploaded files are spooled to temporary files: closed once the request is done.
    """
    form = await request.form()
    try:
        yield form
    finally:
        await form.close()


# Page routes are plain (sync) functions run in the thread pool: they take the parsed
# form through this dependency instead of awaiting it themselves.
FormDep = Annotated[FormData, Depends(read_form)]


async def check_csrf(request: Request, _actor: PageActor, form: FormDep) -> None:
    """Every state-changing page request must carry the session's CSRF token.

    Depends on the signed-in actor: route-level dependencies run before the
    route's own parameters, and the expected token is only known once the
    session cookie has been resolved.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = getattr(request.state, "csrf", None)
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise CsrfFailed()


CsrfChecked = Depends(check_csrf)


def logout(request: Request, runtime: Any, session: Session) -> None:
    token = request.cookies.get(COOKIE)
    if token:
        revoke_token(session, runtime.ring, token, now=runtime.clock())
        session.commit()


def login_url(next_url: str | None) -> str:
    target = local_target(next_url)
    return "/login" + (f"?next={quote(target, safe='/')}" if target != "/" else "")
