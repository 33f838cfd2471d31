"""FastAPI dependencies, in one place: the runtime and its services, the session, the caller,
the request's guard.

Routers take these through ``Annotated`` aliases; tests swap them with
``app.dependency_overrides``. Each service has a typed alias of its own (``DocumentReadingServiceDep``
and the rest), so a route's service calls are type-checked. The service classes are imported for
the type checker only: access_control does not import the archive or search at run time, and
FastAPI, which resolves a parameter's annotation in the route's own module, sees ``Any``
with the ``Depends``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from access_control.actions import Action
from access_control.audit import EventDraft
from access_control.guard import Guard
from access_control.identity import Actor, resolve_token
from access_control.policy import PASSWORD_CHANGE_RULE, SECOND_FACTOR_RULE
from core.errors import AuditUnavailable, PasswordChangeRequired, SecondFactorEnrolmentRequired, Unauthorized

if TYPE_CHECKING:
    from access_control.audit_service import AuditService
    from access_control.sealed import SealedRequestService
    from access_control.users import UserService
    from archive.document_issuing import DocumentIssuingService
    from archive.document_reading import DocumentReadingService
    from archive.records import CaseFileService
    from archive.seal_images import SealImages
    from archive.sealing import SealingService
    from archive.visits import VisitService
    from runtime import Runtime
    from search.query import SearchService

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <token>` from /api/v1/auth/token")


def get_runtime(request: Request) -> Runtime:
    """The process-wide services built by ``runtime.Runtime`` (set on app.state)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def runtime_dependency(request: Request) -> Runtime:
    """``get_runtime`` as a dependency: on the event loop (it only reads app.state), saving
    every request a trip to a thread."""
    return get_runtime(request)


if TYPE_CHECKING:
    RuntimeDep = Annotated[Runtime, Depends(runtime_dependency)]
else:  # FastAPI resolves a parameter's annotation in its function's module, which need not import Runtime
    RuntimeDep = Annotated[Any, Depends(runtime_dependency)]


# One dependency per service. Each only reads an attribute the runtime built at start-up, so
# it runs on the event loop (tests/test_no_stall.py); search, opened on first use, does not.


def _attribute(name: str) -> Callable[..., Awaitable[Any]]:
    """The dependency that hands a route ``runtime.<name>``."""

    async def dependency(runtime: RuntimeDep) -> Any:
        return getattr(runtime, name)

    return dependency


archive_service = _attribute("archive")
visits_service = _attribute("visits")
document_issuing = _attribute("document_issuing")
document_reading = _attribute("document_reading")
sealed_desk = _attribute("sealed")
sealing_service = _attribute("sealing")
user_admin = _attribute("users")
audit_desk = _attribute("audit_desk")
seal_images = _attribute("seal_images")


def search_service(runtime: RuntimeDep) -> SearchService:
    """The search service; the first call opens the index (file or database I/O: in a thread)."""
    return runtime.search


if TYPE_CHECKING:
    CaseFileServiceDep = Annotated[CaseFileService, Depends(archive_service)]
    VisitServiceDep = Annotated[VisitService, Depends(visits_service)]
    DocumentIssuingServiceDep = Annotated[DocumentIssuingService, Depends(document_issuing)]
    DocumentReadingServiceDep = Annotated[DocumentReadingService, Depends(document_reading)]
    SealedRequestServiceDep = Annotated[SealedRequestService, Depends(sealed_desk)]
    SealingServiceDep = Annotated[SealingService, Depends(sealing_service)]
    UserServiceDep = Annotated[UserService, Depends(user_admin)]
    AuditServiceDep = Annotated[AuditService, Depends(audit_desk)]
    SearchServiceDep = Annotated[SearchService, Depends(search_service)]
    SealImagesDep = Annotated[SealImages, Depends(seal_images)]
else:  # at run time FastAPI needs only the Depends; see the module docstring
    def _any(dependency: Callable[..., Any]) -> Any:
        return Annotated[Any, Depends(dependency)]

    CaseFileServiceDep, VisitServiceDep, SearchServiceDep = map(_any, (archive_service, visits_service, search_service))
    DocumentIssuingServiceDep, DocumentReadingServiceDep = map(_any, (document_issuing, document_reading))
    SealedRequestServiceDep, SealingServiceDep = map(_any, (sealed_desk, sealing_service))
    UserServiceDep, AuditServiceDep, SealImagesDep = map(_any, (user_admin, audit_desk, seal_images))


# Methods that only read (besides their audit events, which the guard appends in short write
# transactions of their own).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_session(request: Request, runtime: RuntimeDep) -> Iterator[Session]:
    """The request's session: reading for GET, writing for the methods that change records.

    Either way it goes back to reading after each commit, so no request holds a lock or a
    write transaction while it builds its answer.
    """
    with runtime.db.request_session(write=request.method not in SAFE_METHODS) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# What a user with a temporary password may still call (see policy.TEMPORARY_PASSWORD_ACTIONS).
TEMPORARY_PASSWORD_ROUTES = frozenset({("GET", "/api/v1/me"), ("POST", "/api/v1/me/password"),
                                       ("POST", "/api/v1/auth/logout")})
# What a privileged user without a second factor may still call (policy.SECOND_FACTOR_ENROL_ACTIONS).
SECOND_FACTOR_ENROL_ROUTES = TEMPORARY_PASSWORD_ROUTES | {("POST", "/api/v1/me/mfa/totp"),
                                                          ("POST", "/api/v1/me/mfa/totp/confirm")}


def get_actor(
    request: Request,
    runtime: RuntimeDep,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    if creds is None or creds.scheme.lower() != "bearer" or not creds.credentials:
        raise Unauthorized()
    # A read of its own, ended before the request's work begins: a write request takes the
    # write lock only when its own work starts (not while it waits, e.g. in the issuing queue
    # of archive.documents), and a refused token takes no lock at all.
    with runtime.db.read_session() as session:
        actor = resolve_token(session, runtime.ring, creds.credentials, now=runtime.clock())
    if actor is None:
        raise Unauthorized()
    if actor.must_change_password:
        # Before the route runs (and before its body is validated): 403 everywhere but the
        # password change itself. Policy refuses the same actions, for callers other than routes.
        route = getattr(request.scope.get("route"), "path", "")
        if (request.method, route) not in TEMPORARY_PASSWORD_ROUTES:
            refuse_temporary_password(runtime, actor, request_id=request.state.request_id,
                                      route=f"{request.method} {route}")
    if runtime.policy.must_enrol_second_factor(actor):
        route = getattr(request.scope.get("route"), "path", "")
        if (request.method, route) not in SECOND_FACTOR_ENROL_ROUTES:
            refuse_temporary_password(runtime, actor, request_id=request.state.request_id,
                                      route=f"{request.method} {route}", rule=SECOND_FACTOR_RULE)
    return actor


def refuse_temporary_password(runtime: Runtime, actor: Actor, *, request_id: str, route: str,
                              rule: str = PASSWORD_CHANGE_RULE) -> None:
    """Log the refusal of a request made with a temporary password (or, ``rule`` the second
    factor's, by a privileged user who has not enrolled one), then refuse it (403).

    Like every decision it leaves one event; the route's template (no ids, no values) says
    what was asked. If the event cannot be written the answer is 503, as for any read."""
    draft = EventDraft(action=Action.AUTH_TOKEN_USE, outcome="denied", reason=rule,
                       resource_kind="route", details={"route": route[:120]})
    try:
        with runtime.db.session() as session:
            runtime.audit.append(session, actor=actor, draft=draft, request_id=request_id, at=runtime.clock())
            session.commit()
    except SQLAlchemyError as exc:
        raise AuditUnavailable() from exc
    if rule == SECOND_FACTOR_RULE:
        raise SecondFactorEnrolmentRequired()
    raise PasswordChangeRequired()


CurrentActor = Annotated[Actor, Depends(get_actor)]


async def get_guard(request: Request, runtime: RuntimeDep, session: SessionDep,
                    actor: CurrentActor) -> AsyncIterator[Guard]:
    """The request's guard. Made on the event loop (no I/O); after an error its ``fail`` (which
    writes the 'error' events) runs in a thread of its own, never waiting for a request thread."""
    guard = Guard(
        session=session,
        actor=actor,
        request_id=request.state.request_id,
        now=runtime.clock(),
        policy=runtime.policy,
        audit=runtime.audit,
        writer=runtime.audit_writer,
    )
    try:
        yield guard
    except Exception as exc:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(guard.fail, exc, limiter=anyio.CapacityLimiter(1))
        raise


GuardDep = Annotated[Guard, Depends(get_guard)]


def bearer_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
    if creds is None:
        raise Unauthorized()
    return creds.credentials


BearerToken = Annotated[str, Depends(bearer_token)]
