"""User administration and login, shared by the API and the CLI."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from access_control.actions import Action, Role
from access_control.audit import AuditLog, EventDraft
from access_control.guard import Guard
from access_control.identity import (
    Actor,
    Org,
    OrgType,
    Passwords,
    Throttle,
    User,
    actor_for,
    create_user,
    generate_password,
    issue_token,
    revoke_all_tokens,
)
from access_control.policy import Resource
from access_control.regions import Region
from core.crypto import KeyRing
from core.errors import (
    AuditUnavailable,
    Conflict,
    InvalidInput,
    LoginFailed,
    LoginThrottled,
    NotFound,
)

Username = Annotated[str, Field(min_length=3, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")]


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    username: Username
    name: str = Field(min_length=1, max_length=64, description="显示名")
    org_id: str = Field(min_length=1, max_length=40)
    roles: list[Role] = Field(min_length=1, max_length=6)
    password: str | None = Field(
        None, max_length=256, description="Leave out to get a generated temporary password"
    )


class OrgPublic(BaseModel):
    id: str
    name: str
    type: str
    region_code: str
    doc_prefix: str | None = None


class UserPublic(BaseModel):
    id: str
    username: str
    name: str
    org: OrgPublic
    roles: list[str]
    region_code: str
    disabled: bool
    must_change_password: bool
    created_at: datetime


class UserCreated(UserPublic):
    temporary_password: str | None = None


class TemporaryPassword(BaseModel):
    temporary_password: str


def org_public(org: Org) -> OrgPublic:
    return OrgPublic(id=org.id, name=org.name, type=org.type, region_code=org.region_code,
                     doc_prefix=org.doc_prefix)


def user_public(session: Session, user: User) -> UserPublic:
    org = session.get(Org, user.org_id)
    assert org is not None
    return UserPublic(
        id=user.id, username=user.username, name=user.display_name, org=org_public(org),
        roles=list(user.roles), region_code=user.region_code, disabled=user.disabled,
        must_change_password=user.must_change_password, created_at=user.created_at,
    )


class UserAdmin:
    def __init__(self, *, passwords: Passwords, min_password_length: int):
        self.passwords = passwords
        self.min_password_length = min_password_length

    def check_password(self, password: str, field: str = "password") -> None:
        if len(password) < self.min_password_length:
            raise InvalidInput.one(field, f"密码至少{self.min_password_length}个字符")
        if len(set(password)) < 5:
            raise InvalidInput.one(field, "密码过于简单")

    def _visible_user(self, g: Guard, user_id: str, action: Action) -> User:
        if not g.decide(action).allowed:
            # The role refusal comes first, so it cannot tell whether the user exists.
            g.authorize(action, Resource("user", user_id[:64]))
        user = g.session.get(User, user_id)
        if user is None:
            g.record(EventDraft(action=action, outcome="denied", reason="record:not_found",
                                resource_kind="user", resource_id=user_id[:64]))
            g.commit()
            raise NotFound()
        g.authorize(action, Resource("user", user.id, user.region_code))
        return user

    def create(self, g: Guard, data: UserCreate) -> UserCreated:
        org = g.session.get(Org, data.org_id)
        if org is None:
            raise InvalidInput.one("org_id", "未找到该单位")
        if data.password is not None:
            self.check_password(data.password)
        g.authorize(Action.USER_CREATE, Resource("user", data.username, org.region_code, existing=False),
                    details={"org_id": org.id, "roles": sorted(r.value for r in data.roles)})
        if g.session.scalar(select(User.id).where(User.username == data.username)):
            raise Conflict("用户名已存在。", details={"field": "username"})
        password = data.password or generate_password()
        user = create_user(
            g.session, self.passwords, username=data.username, display_name=data.name, org=org,
            roles=list(data.roles), password=password, now=g.now,
            must_change_password=data.password is None,
        )
        try:
            g.session.flush()
        except IntegrityError:
            raise Conflict("用户名已存在。", details={"field": "username"}) from None
        out = UserCreated(**user_public(g.session, user).model_dump(),
                          temporary_password=None if data.password else password)
        g.commit()
        return out

    def list(self, g: Guard, *, org_id: str | None) -> list[UserPublic]:
        g.authorize(Action.USER_LIST, Resource("user", None, g.actor.region_code), commit=True)
        path = g.policy.scope_path(g.actor)
        q = select(User).join(Region, Region.code == User.region_code).where(
            Region.path.startswith(path, autoescape=True)
        )
        if org_id:
            q = q.where(User.org_id == org_id)
        return [user_public(g.session, u) for u in g.session.scalars(q.order_by(User.username))]

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

    def change_own_password(self, g: Guard, current: str, new: str) -> None:
        user = g.session.get(User, g.actor.user_id)
        assert user is not None
        self.check_password(new, "new_password")
        if not self.passwords.verify(user.password_hash, current):
            # A refused credential check is a decision too: log it like a failed sign-in.
            g.record(EventDraft(action=Action.USER_CHANGE_OWN_PASSWORD, outcome="denied",
                                reason="password:wrong_current", resource_kind="user",
                                resource_id=user.id))
            g.commit()
            raise InvalidInput.one("current_password", "当前密码不正确")
        g.authorize(Action.USER_CHANGE_OWN_PASSWORD, Resource("user", user.id))
        user.password_hash = self.passwords.hash(new)
        user.must_change_password = False
        user.password_changed_at = g.now
        g.commit()


# Login -------------------------------------------------------------------------

ANONYMOUS = Actor(user_id="anonymous", username="anonymous", display_name="", org_id="",
                  org_name="", org_type=OrgType.OTHER, roles=(), region_code="")


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
) -> str:
    """Check a password and hand out a bearer token; every attempt is logged."""
    username = username.strip().lower()
    user = session.scalar(select(User).where(User.username == username))
    locked = throttle.locked(session, username, now=now)
    stored = user.password_hash if user else None
    session.rollback()  # hold no database lock during the deliberately slow hash
    ok = passwords.verify(stored, password) if not locked else False
    user = session.get(User, user.id) if user else None
    actor = actor_for(session, user) if user else ANONYMOUS
    name_hash = ring.keyed_hash("login-throttle", username)

    def log_and_commit(outcome: str, reason: str) -> None:
        # No token leaves unless its login event is durable (fail closed).
        try:
            audit.append(
                session, actor=actor, request_id=request_id, at=now,
                draft=EventDraft(action=Action.AUTH_LOGIN, outcome=outcome, reason=reason,
                                 resource_kind="user", resource_id=user.id if user else "",
                                 details={} if user else {"username_hash": name_hash}),
            )
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise AuditUnavailable() from exc

    if locked:
        log_and_commit("denied", "login:locked")
        raise LoginThrottled()
    if not ok or user is None or user.disabled:
        throttle.failure(session, username, now=now)
        log_and_commit("denied", "login:disabled" if (ok and user and user.disabled) else "login:bad_credentials")
        raise LoginFailed()
    throttle.success(session, username)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    token, _ = issue_token(session, ring, user, now=now, ttl=ttl, kind=kind)
    log_and_commit("allowed", "login:password_ok")
    return token
