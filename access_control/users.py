"""User administration and login, shared by the API and the CLI."""

from __future__ import annotations

import builtins
import contextlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session
from zxcvbn import zxcvbn

from access_control.actions import Action, Role
from access_control.audit import AuditLog, EventDraft
from access_control.guard import Guard
from access_control.identity import (
    Actor,
    IdentityLink,
    Org,
    OrgType,
    Passwords,
    RoleGrant,
    SignIn,
    Throttle,
    Token,
    TotpFactor,
    User,
    actor_for,
    create_user,
    decide_pending,
    generate_password,
    issue_token,
    revoke_all_tokens,
    token_hash,
)
from access_control.mfa import SecondFactor
from access_control.policy import (
    Resource,
    RoleProblem,
    holds_admin,
    role_assignment_problem,
    roles_needing_approval,
)
from core.crypto import KeyRing
from core.db import begin_write, new_id
from core.errors import (
    AuditUnavailable,
    Conflict,
    InvalidInput,
    LoginBusy,
    LoginFailed,
    LoginThrottled,
    PasswordSignInDisabled,
    SecondFactorFailed,
)

Username = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    username: Username
    name: str = Field(min_length=1, max_length=64, description="显示名")
    org_id: str = Field(min_length=1, max_length=40)
    roles: list[Role] = Field(
        min_length=1, max_length=6,
        description="Roles the org type allows (docs/security.md); admin, security_admin, auditor and custodian are "
        "each held alone and wait for a security administrator's approval (the answer is then 202 with the pending "
        "grant).",
    )
    password: str | None = Field(
        None, max_length=256, description="Leave out to get a generated temporary password"
    )


class RolesChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: list[Role] = Field(min_length=1, max_length=6, description="The user's roles after the change")


class OrgPublic(BaseModel):
    id: str
    name: str
    type: str
    region_code: str
    doc_prefix: str | None = None


class RoleGrantPublic(BaseModel):
    id: str
    user_id: str
    username: str
    kind: str = Field(description="create (a new account) or change (of an existing user's roles)")
    roles: list[str] = Field(description="The user's roles once approved")
    added: list[str] = Field(description="The roles that need the second administrator")
    status: str = Field(description="pending, approved or rejected")
    requested_by: str = Field(description="Who asked (a username, or system:cli:<OS user>)")
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None


class UserPublic(BaseModel):
    id: str
    username: str
    name: str
    org: OrgPublic
    roles: list[str]
    region_code: str
    disabled: bool
    must_change_password: bool
    pending_approval: bool = Field(False, description="Created with a role a second administrator has not yet "
                                                      "approved: cannot sign in until then")
    pending_grant: RoleGrantPublic | None = None
    created_at: datetime


class UserCreated(UserPublic):
    temporary_password: str | None = None


class TemporaryPassword(BaseModel):
    temporary_password: str


def org_public(org: Org) -> OrgPublic:
    return OrgPublic(id=org.id, name=org.name, type=org.type, region_code=org.region_code,
                     doc_prefix=org.doc_prefix)


def grant_public(session: Session, grant: RoleGrant, user: User | None = None) -> RoleGrantPublic:
    user = user or session.get(User, grant.user_id)
    return RoleGrantPublic(
        id=grant.id, user_id=grant.user_id, username=user.username if user else "", kind=grant.kind,
        roles=list(grant.roles), added=list(grant.added), status=grant.status, requested_by=grant.requested_by_name,
        requested_at=grant.requested_at, decided_by=grant.decided_by_name, decided_at=grant.decided_at,
    )


def pending_grant(session: Session, user_id: str) -> RoleGrant | None:
    return session.scalar(select(RoleGrant).where(RoleGrant.user_id == user_id, RoleGrant.status == "pending"))


def user_public(session: Session, user: User, grant: RoleGrant | None | bool = True) -> UserPublic:
    """``grant``: the user's pending grant if known (None: none), or True to look it up."""
    org = session.get(Org, user.org_id)
    if org is None:
        raise RuntimeError("a user's organisation row is missing")
    if grant is True:
        grant = pending_grant(session, user.id)
    return UserPublic(
        id=user.id, username=user.username, name=user.display_name, org=org_public(org),
        roles=list(user.roles), region_code=user.region_code, disabled=user.disabled,
        must_change_password=user.must_change_password, pending_approval=bool(user.pending_approval),
        pending_grant=grant_public(session, grant, user) if isinstance(grant, RoleGrant) else None,
        created_at=user.created_at,
    )


# Role grants: shared by the API, the pages and `shouhu users` -------------------------------


def roles_problem(org: Org, roles: list[str]) -> RoleProblem | None:
    """Why ``roles`` may not be given to a user of ``org`` (the table in access_control.policy)."""
    return role_assignment_problem(org.type, roles)


def open_grant(session: Session, *, user: User, roles: list[str], added: list[str], kind: str, requester: Actor,
               now: datetime) -> RoleGrant:
    """A pending grant of ``roles`` to ``user`` (the caller commits it with its event)."""
    grant = RoleGrant(
        id=new_id("grt"), user_id=user.id, kind=kind, roles=sorted(roles), added=sorted(added), status="pending",
        requested_by=requester.principal, requested_by_name=requester.username, requested_at=now,
    )
    session.add(grant)
    return grant


def decide_grant(session: Session, grant: RoleGrant, *, approve: bool, decider: Actor, now: datetime) -> bool:
    """Approve or reject a pending grant (the caller commits). False if it was no longer pending.

    The status changes only from 'pending' (one conditional UPDATE), so two administrators
    deciding at once cannot both act on it.
    """
    if not decide_pending(session, RoleGrant, grant.id, approve=approve, decider=decider, now=now):
        return False
    session.refresh(grant)
    user = session.get(User, grant.user_id)
    if user is None:
        raise RuntimeError("a role grant's user row is missing")
    if approve:
        user.roles = list(grant.roles)
        user.pending_approval = False
    elif grant.kind == "create":
        # A refused account never becomes usable: it stays, disabled, for the record.
        user.pending_approval = False
        user.disabled = True
    return True


def active_admin_exists(session: Session) -> bool:
    """True if some enabled, approved user holds the admin role (the bootstrap test)."""
    rows = session.scalars(select(User.roles).where(User.disabled.is_(False), User.pending_approval.is_(False)))
    return any(holds_admin(roles) for roles in rows)


def two_person_requests(g: Guard, model: type[RoleGrant] | type[IdentityLink], *, action: Action, kind: str,
                        status: str | None) -> builtins.list[Any]:
    """Requests of ``model`` (role grants, identity links) with their users, those in the caller's reach,
    newest first (at most 500), the listing logged: (request, user) rows."""
    g.authorize(action, Resource(kind, None, g.actor.region_code), filters={"status": status}, commit=True)
    q = g.scoped(select(model, User).join(User, User.id == model.user_id), User.region_code)
    if status:
        q = q.where(model.status == status)
    return builtins.list(g.session.execute(q.order_by(model.requested_at.desc(), model.id).limit(500)).all())


class UserService:
    def __init__(self, *, passwords: Passwords, min_password_length: int, min_password_score: int = 3):
        self.passwords = passwords
        self.min_password_length = min_password_length
        self.min_password_score = min_password_score

    def check_password(self, password: str, field: str = "password", *, context: Iterable[str] = ()) -> None:
        """Refuse (422 naming ``field``) a password that is short or easy to guess.

        Strength is zxcvbn's estimate, with the user's own username and name (and their
        parts) as known words, so ``li.si2026`` is weak for li.si. Only the first 72
        characters are judged (the library's own limit: its cost grows fast with length).
        """
        if len(password) < self.min_password_length:
            raise InvalidInput.one(field, f"密码至少{self.min_password_length}个字符")
        words = {w for c in context if c for w in [c, *re.split(r"[^0-9A-Za-z\u4e00-\u9fff]+", c)] if len(w) >= 2}
        result = zxcvbn(password[:72], user_inputs=sorted(words))
        if len(set(password)) < 5 or result["score"] < self.min_password_score:
            raise InvalidInput.one(field, "密码过于简单或容易被猜到（如重复或连续的字符、常见词、用户名或姓名），"
                                          "请换一个更长、更难猜的密码")

    def _visible_user(self, g: Guard, user_id: str, action: Action, *, authorize: bool = True) -> User:
        # The role refusal comes first, so it cannot tell whether the user exists.
        g.require(action, Resource("user", user_id[:64]))
        user = g.session.get(User, user_id)
        if user is None:
            g.not_found(action, "user", user_id)
        if authorize:
            g.authorize(action, Resource("user", user.id, user.region_code))
        else:
            g.require(action, Resource("user", user.id, user.region_code))
        return user

    def _refuse_roles(self, g: Guard, action: Action, problem: RoleProblem, *, resource_id: str,
                      details: dict[str, object]) -> InvalidInput:
        """Log a refusal by the role table (the rule, not the sentence) and name ``roles``."""
        g.record(EventDraft(action=action, outcome="denied", reason=problem.rule, resource_kind="user",
                            resource_id=resource_id, details=details))
        g.commit()
        return InvalidInput.one("roles", problem.message)

    def create(self, g: Guard, data: UserCreate) -> UserCreated:
        """A new user; with a role that needs a second administrator, the account is created
        pending (no roles, cannot sign in) with a grant that waits for approval."""
        org = g.session.get(Org, data.org_id)
        if org is None:
            raise InvalidInput.one("org_id", "未找到该单位")
        if data.password is not None:
            self.check_password(data.password, context=(data.username, data.name))
        roles = sorted({r.value for r in data.roles})
        details: dict[str, object] = {"org_id": org.id, "roles": roles}
        resource = Resource("user", data.username, org.region_code, existing=False)
        g.require(Action.USER_CREATE, resource, details=details)
        if problem := roles_problem(org, roles):
            raise self._refuse_roles(g, Action.USER_CREATE, problem, resource_id=data.username, details=details)
        g.authorize(Action.USER_CREATE, resource, details=details)
        if g.session.scalar(select(User.id).where(User.username == data.username)):
            raise Conflict("用户名已存在。", details={"field": "username"})
        added = roles_needing_approval([], roles)
        password = data.password or generate_password()
        user = create_user(
            g.session, self.passwords, username=data.username, display_name=data.name, org=org,
            roles=[] if added else roles, password=password, now=g.now,
            must_change_password=data.password is None, pending_approval=bool(added),
        )
        try:
            g.session.flush()
        except IntegrityError:
            raise Conflict("用户名已存在。", details={"field": "username"}) from None
        grant = self._request_grant(g, user, roles, added, "create", org.region_code) if added else None
        out = UserCreated(**user_public(g.session, user, grant).model_dump(),
                          temporary_password=None if data.password else password)
        g.commit()
        return out

    @staticmethod
    def _request_grant(g: Guard, user: User, roles: list[str], added: list[str], kind: str, region: str) -> RoleGrant:
        """Open the grant a second administrator must approve, and log the request."""
        grant = open_grant(g.session, user=user, roles=roles, added=added, kind=kind, requester=g.actor, now=g.now)
        g.authorize(Action.ROLE_GRANT_REQUEST, Resource("role_grant", grant.id, region),
                    details={"user_id": user.id, "roles": roles, "added": added})
        return grant

    def change_roles(self, g: Guard, user_id: str, data: RolesChange) -> UserPublic:
        """Set a user's roles; adding admin, security_admin, auditor or custodian waits for a security
        administrator (the answer's ``pending_grant``), anything else takes effect at once."""
        action = Action.USER_CHANGE_ROLES
        user = self._visible_user(g, user_id, action, authorize=False)
        org = g.session.get(Org, user.org_id)
        if org is None:
            raise RuntimeError("a user's organisation row is missing")
        roles = sorted({r.value for r in data.roles})
        details: dict[str, object] = {"roles": roles, "before": sorted(user.roles)}
        if problem := roles_problem(org, roles):
            raise self._refuse_roles(g, action, problem, resource_id=user.id, details=details)
        g.authorize(action, Resource("user", user.id, user.region_code), details=details)
        if pending_grant(g.session, user.id) is not None or user.pending_approval:
            raise Conflict("该用户有待批准的授权，请先批准或驳回。", details={"field": "roles"})
        added = roles_needing_approval(user.roles, roles)
        grant = self._request_grant(g, user, roles, added, "change", user.region_code) if added else None
        if not added:
            user.roles = roles
        out = user_public(g.session, user, grant)
        g.commit()
        return out

    def list(self, g: Guard, *, org_id: str | None) -> list[UserPublic]:
        g.authorize(Action.USER_LIST, Resource("user", None, g.actor.region_code), commit=True)
        q = g.scoped(select(User), User.region_code)
        if org_id:
            q = q.where(User.org_id == org_id)
        users = list(g.session.scalars(q.order_by(User.username)))
        grants = {gr.user_id: gr for gr in g.session.scalars(
            select(RoleGrant).where(RoleGrant.status == "pending", RoleGrant.user_id.in_([u.id for u in users])))}
        return [user_public(g.session, u, grants.get(u.id)) for u in users]

    def read(self, g: Guard, user_id: str) -> UserPublic:
        user = self._visible_user(g, user_id, Action.USER_READ)
        out = user_public(g.session, user)
        g.commit()
        return out

    def disable(self, g: Guard, user_id: str) -> UserPublic:
        user = self._visible_user(g, user_id, Action.USER_DISABLE)
        user.disabled = True
        revoke_all_tokens(g.session, user.id, now=g.now)
        out = user_public(g.session, user)
        g.commit()
        return out

    def reset_password(self, g: Guard, user_id: str) -> TemporaryPassword:
        user = self._visible_user(g, user_id, Action.USER_RESET_PASSWORD)
        password = generate_password()
        user.password_hash = self.passwords.hash(password)
        user.must_change_password = True
        user.password_changed_at = g.now
        revoke_all_tokens(g.session, user.id, now=g.now)
        g.commit()
        return TemporaryPassword(temporary_password=password)

    def change_own_password(self, g: Guard, current: str, new: str, *, keep_token_hash: str | None = None) -> int:
        """Change the caller's password; every other session of theirs ends (the one that
        changed it, ``keep_token_hash``, continues). Returns how many sessions ended."""
        user = g.session.get(User, g.actor.user_id)
        if user is None:
            raise RuntimeError("the signed-in user's row is gone")
        self.check_password(new, "new_password", context=(user.username, user.display_name))
        if not self.passwords.verify(user.password_hash, current):
            # A refused credential check is a decision too: log it like a failed sign-in.
            g.record(EventDraft(action=Action.USER_CHANGE_OWN_PASSWORD, outcome="denied",
                                reason="password:wrong_current", resource_kind="user",
                                resource_id=user.id))
            g.commit()
            raise InvalidInput.one("current_password", "当前密码不正确")
        if new == current:
            raise InvalidInput.one("new_password", "新密码不能与当前密码相同")
        ended = revoke_all_tokens(g.session, user.id, now=g.now, keep=keep_token_hash)
        g.authorize(Action.USER_CHANGE_OWN_PASSWORD, Resource("user", user.id), details={"sessions_ended": ended})
        user.password_hash = self.passwords.hash(new)
        user.must_change_password = False
        user.password_changed_at = g.now
        g.commit()
        return ended

    # the two-person rule ---------------------------------------------------------------

    def _visible_grant(self, g: Guard, grant_id: str, action: Action) -> tuple[RoleGrant, User]:
        g.require(action, Resource("role_grant", grant_id[:64]))
        grant = g.session.get(RoleGrant, grant_id)
        user = g.session.get(User, grant.user_id) if grant is not None else None
        if grant is None or user is None:
            g.not_found(action, "role_grant", grant_id)
        return grant, user

    def list_grants(self, g: Guard, *, status: str | None) -> builtins.list[RoleGrantPublic]:
        rows = two_person_requests(g, RoleGrant, action=Action.ROLE_GRANT_LIST, kind="role_grant", status=status)
        return [grant_public(g.session, grant, user) for grant, user in rows]

    def decide_grant(self, g: Guard, grant_id: str, *, approve: bool) -> RoleGrantPublic:
        """Approve (not the administrator who asked, nor the user it is for) or reject a grant."""
        action = Action.ROLE_GRANT_APPROVE if approve else Action.ROLE_GRANT_REJECT
        grant, user = self._visible_grant(g, grant_id, action)
        details: dict[str, object] = {"user_id": user.id, "roles": list(grant.roles), "added": list(grant.added),
                                      "requested_by": grant.requested_by_name}
        g.authorize(action, Resource("role_grant", grant.id, user.region_code, grant_requested_by=grant.requested_by,
                                     grant_user_id=grant.user_id), details=details)
        org = g.session.get(Org, user.org_id)
        if org is None:
            raise RuntimeError("a user's organisation row is missing")
        if approve and (problem := roles_problem(org, list(grant.roles))):
            raise InvalidInput.one("roles", problem.message)  # the table changed since the request
        if not decide_grant(g.session, grant, approve=approve, decider=g.actor, now=g.now):
            raise Conflict("该授权申请已处理。", details={"status": grant.status})
        out = grant_public(g.session, grant, user)
        g.commit()
        return out


# Login -------------------------------------------------------------------------

ANONYMOUS = Actor(user_id="anonymous", username="anonymous", display_name="", org_id="",
                  org_name="", org_type=OrgType.OTHER, roles=(), region_code="")


@dataclass(frozen=True)
class SignInStep:
    """The password step's answer: a session ``token``, or (a user with a second factor) a
    short-lived ``challenge`` to complete with a one-time code (``complete_second_factor``)."""

    token: str | None = None
    challenge: str | None = None


def record_sign_in(session: Session, *, user_id: str, now: datetime, address: str | None, method: str,
                   success: bool, reason: str) -> None:
    """One line of the user's own sign-in history (the caller commits it with the event)."""
    session.add(SignIn(id=new_id("si"), user_id=user_id, at=now, address=address[:64] if address else None,
                       method=method, success=success, reason=reason[:64]))


def login(
    session: Session,
    *,
    ring: KeyRing,
    passwords: Passwords,
    throttle: Throttle,
    audit: AuditLog,
    username: str,
    password: str,
    request_id: str,
    now: datetime,
    ttl: int,
    kind: str = "api",
    address: str | None = None,
    challenge_ttl: int = 300,
    password_allowed: Callable[[list[str]], bool] | None = None,
) -> SignInStep:
    """Check a password and hand out a bearer token, or a second-factor challenge; every
    attempt is logged.

    The attempt is counted (per username, and per client ``address``) and committed
    before the password is checked, so parallel attempts cannot all pass the limit;
    one over it is refused (429 with Retry-After) without any hashing. A user with a
    confirmed second factor gets a challenge token (kind ``mfa``, ``challenge_ttl``
    seconds) instead of a session.
    """
    username = username.strip().lower()
    name_hash = ring.keyed_hash("login-throttle", username)
    try:
        admission = throttle.admit(session, username, address, now=now)
        user = session.scalar(select(User).where(User.username == username))
        stored, user_id = (user.password_hash, user.id) if user else (None, None)
        session.commit()  # and hold no database lock during the deliberately slow hash
    except SQLAlchemyError as exc:
        session.rollback()
        raise AuditUnavailable() from exc
    begin_write(session)  # what follows the hash writes (the outcome, the event, a token)

    def log_and_commit(outcome: str, reason: str, details: dict[str, object] | None = None) -> None:
        # No token leaves unless its login event is durable (fail closed).
        found = session.get(User, user_id) if user_id else None
        try:
            if found is not None and reason != "login:password_ok+second_factor_pending":
                record_sign_in(session, user_id=found.id, now=now, address=address, method="password",
                               success=outcome == "allowed", reason=reason)
            audit.append(
                session, actor=actor_for(session, found) if found else ANONYMOUS, request_id=request_id, at=now,
                draft=EventDraft(action=Action.AUTH_LOGIN, outcome=outcome, reason=reason,
                                 resource_kind="user", resource_id=user_id or "",
                                 details={**(details or {}), **({} if found else {"username_hash": name_hash})}),
            )
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise AuditUnavailable() from exc

    if not admission.allowed:
        log_and_commit("denied", "login:locked", {"limit": admission.limit, "retry_after": admission.retry_after})
        raise LoginThrottled(admission.retry_after)
    try:
        ok = passwords.verify(stored, password)
    except LoginBusy:
        throttle.undo(session, admission)  # not checked: not a failure
        log_and_commit("denied", "login:busy")
        raise
    user = session.get(User, user_id) if user_id else None
    if not ok or user is None or user.disabled or user.pending_approval:
        throttle.failure(session, admission, now=now)
        reason = "login:bad_credentials"
        if ok and user is not None:
            reason = "login:disabled" if user.disabled else "login:pending_approval"
        log_and_commit("denied", reason)
        raise LoginFailed()
    throttle.success(session, admission)
    if password_allowed is not None and not password_allowed(list(user.roles)):
        # The right password, for a role that signs in through the unified platform only.
        log_and_commit("denied", "login:password_disabled_for_role")
        raise PasswordSignInDisabled()
    if passwords.needs_rehash(user.password_hash):
        with contextlib.suppress(LoginBusy):  # rehash at a quieter sign-in
            user.password_hash = passwords.hash(password)
    if session.scalar(select(TotpFactor.user_id).where(TotpFactor.user_id == user.id,
                                                      TotpFactor.confirmed_at.is_not(None))) is not None:
        challenge, _ = issue_token(session, ring, user, now=now, ttl=challenge_ttl, kind="mfa", method="password",
                                   address=address)
        log_and_commit("allowed", "login:password_ok+second_factor_pending")
        return SignInStep(challenge=challenge)
    token, _ = issue_token(session, ring, user, now=now, ttl=ttl, kind=kind, method="password", address=address)
    log_and_commit("allowed", "login:password_ok")
    return SignInStep(token=token)


def complete_second_factor(
    session: Session,
    *,
    ring: KeyRing,
    throttle: Throttle,
    audit: AuditLog,
    second_factor: SecondFactor,
    challenge: str,
    code: str,
    request_id: str,
    now: datetime,
    ttl: int,
    kind: str = "api",
    address: str | None = None,
) -> str:
    """The second step of a sign-in: the challenge from ``login`` and a one-time code (or a
    recovery code) give the session token. The challenge works once; wrong codes count
    against the account like wrong passwords (429 past the limit). Every attempt is logged,
    never the code."""
    row = session.scalar(select(Token).where(Token.token_hash == token_hash(ring, challenge)))
    user = session.get(User, row.user_id) if row is not None else None
    if row is None or user is None or row.kind != "mfa" or row.revoked_at is not None or row.expires_at <= now \
            or user.disabled or user.pending_approval:
        # An unknown, used or expired challenge: logged like a failed sign-in, never with the token.
        try:
            begin_write(session)
            audit.append(session, actor=actor_for(session, user) if user is not None else ANONYMOUS,
                         request_id=request_id, at=now,
                         draft=EventDraft(action=Action.AUTH_SECOND_FACTOR, outcome="denied",
                                          reason="second_factor:bad_challenge", resource_kind="user",
                                          resource_id=user.id if user is not None else ""))
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise AuditUnavailable() from exc
        raise SecondFactorFailed()
    actor = actor_for(session, user)
    try:
        admission = throttle.admit(session, f"second-factor:{user.id}", None, now=now)
        session.commit()
    except SQLAlchemyError as exc:
        session.rollback()
        raise AuditUnavailable() from exc
    begin_write(session)

    first = row.method or "password"  # the first step: a password, or the unified platform (OIDC)

    def log_and_commit(outcome: str, reason: str, method: str) -> None:
        try:
            record_sign_in(session, user_id=user.id, now=now, address=address, method=f"{first}+{method}",
                           success=outcome == "allowed", reason=reason)
            audit.append(session, actor=actor, request_id=request_id, at=now, draft=EventDraft(
                action=Action.AUTH_SECOND_FACTOR, outcome=outcome, reason=reason, resource_kind="user",
                resource_id=user.id, details={"method": method}))
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise AuditUnavailable() from exc

    if not admission.allowed:
        log_and_commit("denied", "login:locked", "totp")
        raise LoginThrottled(admission.retry_after)
    method, refused = second_factor.verify(session, user.id, code, now=now)
    if refused is not None:
        session.rollback()
        begin_write(session)
        throttle.failure(session, admission, now=now)
        log_and_commit("denied", refused, method)
        raise SecondFactorFailed()
    throttle.success(session, admission)
    challenge_row = session.get(Token, row.id)
    if challenge_row is None or challenge_row.revoked_at is not None:
        raise SecondFactorFailed()
    challenge_row.revoked_at = now  # a challenge works once
    token, _ = issue_token(session, ring, user, now=now, ttl=ttl, kind=kind, method=f"{first}+{method}",
                           address=address)
    log_and_commit("allowed", f"login:second_factor_ok:{method}", method)
    return token
