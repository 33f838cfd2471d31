"""Users, organisations, passwords (argon2id), bearer tokens and login throttling.

Tokens are 256-bit random strings handed out once; the database keeps only their
keyed hash, expiry and revocation time.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import JSON, Boolean, ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from access_control.actions import Role
from core.crypto import KeyRing
from core.db import Base, UTCDateTime, new_id
from core.settings import Settings


class OrgType(StrEnum):
    CIVIL_AFFAIRS = "civil_affairs"  # 民政局
    VILLAGE_COMMITTEE = "village_committee"  # 村/居委会
    TOWNSHIP_OFFICE = "township_office"  # 乡镇/街道办
    RESCUE_CENTRE = "rescue_centre"  # 未成年人救助保护中心
    LEADING_GROUP_OFFICE = "leading_group_office"  # 领导小组办公室
    COURT = "court"
    PROCURATORATE = "procuratorate"
    POLICE = "police"
    JUSTICE = "justice"
    EDUCATION = "education"
    SCHOOL = "school"
    HOSPITAL = "hospital"
    IT = "it"
    OTHER = "other"


class Org(Base):
    __tablename__ = "orgs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(32))
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"), index=True)
    # Issuer abbreviation for document numbers, e.g. 连民发 in 连民发〔2026〕12号.
    doc_prefix: Mapped[str | None] = mapped_column(String(16))


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(64))
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    region_code: Mapped[str] = mapped_column(ForeignKey("regions.code"))
    roles: Mapped[list[str]] = mapped_column(JSON)
    password_hash: Mapped[str] = mapped_column(String(255))
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # "api" (bearer) or "web" (the pages' session cookie, which also ends when idle)
    kind: Mapped[str] = mapped_column(String(8), default="api", server_default="api")
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LoginThrottle(Base):
    """Failed logins per username (keyed hash, so unknown names are throttled too)."""

    __tablename__ = "login_throttle"

    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())


@dataclass(frozen=True)
class Actor:
    """Who is asking: the authenticated user as policy and audit see it."""

    user_id: str
    username: str
    display_name: str
    org_id: str
    org_name: str
    org_type: str
    roles: tuple[str, ...]
    region_code: str

    def has_role(self, role: Role) -> bool:
        return role.value in self.roles


# A stand-in for operations run from the command line by the operator.
def system_actor(name: str = "cli") -> Actor:
    return Actor(
        user_id="system", username=f"system:{name}", display_name="系统", org_id="system",
        org_name="系统", org_type=OrgType.IT, roles=(), region_code="",
    )


class Passwords:
    """argon2id hashing with parameters from settings."""

    def __init__(self, settings: Settings):
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # A real hash to verify against when the user does not exist, so that
        # unknown and known usernames take the same time.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


def new_token_text() -> str:
    return "shu_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def token_hash(ring: KeyRing, token: str) -> str:
    return ring.keyed_hash("token", token, hex_chars=64)


def issue_token(session: Session, ring: KeyRing, user: User, *, now: datetime, ttl: int,
                kind: str = "api") -> tuple[str, Token]:
    text = new_token_text()
    row = Token(
        id=new_id("tok"),
        token_hash=token_hash(ring, text),
        user_id=user.id,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        kind=kind,
        last_used_at=now,
    )
    session.add(row)
    return text, row


def actor_for(session: Session, user: User) -> Actor:
    org = session.get(Org, user.org_id)
    assert org is not None
    return Actor(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        org_id=org.id,
        org_name=org.name,
        org_type=org.type,
        roles=tuple(user.roles),
        region_code=user.region_code,
    )


def resolve_token(session: Session, ring: KeyRing, token: str, *, now: datetime, kind: str = "api",
                  idle_seconds: int | None = None) -> Actor | None:
    """The actor a token stands for, or None if unknown, of another kind, expired, idle too
    long (web sessions), revoked or disabled."""
    row = session.scalar(select(Token).where(Token.token_hash == token_hash(ring, token)))
    if row is None or row.kind != kind or row.revoked_at is not None or row.expires_at <= now:
        return None
    if idle_seconds is not None:
        if row.last_used_at is not None and (now - row.last_used_at).total_seconds() > idle_seconds:
            row.revoked_at = now  # idle time-out ends the session for good
            return None
        row.last_used_at = now
    user = session.get(User, row.user_id)
    if user is None or user.disabled:
        return None
    return actor_for(session, user)


def revoke_token(session: Session, ring: KeyRing, token: str, *, now: datetime) -> bool:
    row = session.scalar(select(Token).where(Token.token_hash == token_hash(ring, token)))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now
    return True


def revoke_all_tokens(session: Session, user_id: str, *, now: datetime) -> None:
    for row in session.scalars(select(Token).where(Token.user_id == user_id, Token.revoked_at.is_(None))):
        row.revoked_at = now


class Throttle:
    """Lock a username out after too many failures within a window."""

    def __init__(self, settings: Settings, ring: KeyRing):
        self._s = settings
        self._ring = ring

    def _key(self, username: str) -> str:
        return self._ring.keyed_hash("login-throttle", username.strip().lower())

    def locked(self, session: Session, username: str, *, now: datetime) -> bool:
        row = session.get(LoginThrottle, self._key(username))
        return bool(row and row.locked_until and row.locked_until > now)

    def failure(self, session: Session, username: str, *, now: datetime) -> None:
        key = self._key(username)
        row = session.get(LoginThrottle, key)
        window = timedelta(seconds=self._s.login_window_seconds)
        if row is None:
            row = LoginThrottle(key_hash=key, failures=0, window_started_at=now)
            session.add(row)
        if now - row.window_started_at > window:
            row.failures, row.window_started_at = 0, now
        row.failures += 1
        if row.failures >= self._s.login_max_failures:
            row.locked_until = now + timedelta(seconds=self._s.login_lockout_seconds)
            row.failures, row.window_started_at = 0, now

    def success(self, session: Session, username: str) -> None:
        row = session.get(LoginThrottle, self._key(username))
        if row is not None:
            session.delete(row)


def create_user(
    session: Session,
    passwords: Passwords,
    *,
    username: str,
    display_name: str,
    org: Org,
    roles: list[Role] | list[str],
    password: str,
    now: datetime,
    region_code: str | None = None,
    must_change_password: bool = False,
) -> User:
    user = User(
        id=new_id("usr"),
        username=username,
        display_name=display_name,
        org_id=org.id,
        region_code=region_code or org.region_code,
        roles=[Role(r).value for r in roles],
        password_hash=passwords.hash(password),
        must_change_password=must_change_password,
        disabled=False,
        created_at=now,
        password_changed_at=now,
    )
    session.add(user)
    return user


def generate_password() -> str:
    """A temporary password: 16 characters from an unambiguous alphabet."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(16))
