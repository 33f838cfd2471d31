"""FastAPI dependencies, in one place: the session, the caller, the request's guard.

Routers take these through ``Annotated`` aliases; tests swap them with
``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from access_control.guard import Guard
from access_control.identity import Actor, resolve_token
from core.errors import PasswordChangeRequired, Unauthorized

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` from /api/v1/auth/token")


def get_runtime(request: Request) -> Any:
    """The process-wide services built by ``runtime.Runtime`` (set on app.state)."""
    return request.app.state.runtime


RuntimeDep = Annotated[Any, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.db.session() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# What a user with a temporary password may still call (see policy.TEMPORARY_PASSWORD_ACTIONS).
TEMPORARY_PASSWORD_ROUTES = frozenset({("GET", "/api/v1/me"), ("POST", "/api/v1/me/password"),
                                       ("POST", "/api/v1/auth/logout")})


def get_actor(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized()
    actor = resolve_token(session, runtime.ring, creds.credentials, now=runtime.clock())
    # End the token lookup's transaction: on SQLite it holds the database's write lock, which the
    # request's own work should take only when it starts (and not while it waits, e.g. in the
    # issuing queue of archive.documents).
    session.rollback()
    if actor is None:
        raise Unauthorized()
    if actor.must_change_password:
        # Before the route runs (and before its body is validated): 403 everywhere but the
        # password change itself. Policy refuses the same actions, for callers other than routes.
        route = request.scope.get("route")
        if (request.method, getattr(route, "path", "")) not in TEMPORARY_PASSWORD_ROUTES:
            raise PasswordChangeRequired()
    return actor


CurrentActor = Annotated[Actor, Depends(get_actor)]


def get_guard(request: Request, runtime: RuntimeDep, session: SessionDep, actor: CurrentActor) -> Iterator[Guard]:
    guard = Guard(
        session=session,
        actor=actor,
        request_id=request.state.request_id,
        now=runtime.clock(),
        policy=runtime.policy,
        audit=runtime.audit,
    )
    try:
        yield guard
    except Exception as exc:
        guard.fail(exc)
        raise


GuardDep = Annotated[Guard, Depends(get_guard)]


def bearer_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    if creds is None:
        raise Unauthorized()
    return creds.credentials


BearerToken = Annotated[str, Depends(bearer_token)]
