"""Users, organisations, passwords (argon2id), bearer tokens and login throttling.

Tokens are 256-bit random strings handed out once; the database keeps only their
keyed hash, expiry and revocation time.
"""

from __future__ import annotations

import base64
import getpass
import math
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CursorResult,
    ForeignKey,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    and_,
    case,
    delete,
    false,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from access_control.actions import Role
from core.crypto import KeyRing
from core.db import Base, UTCDateTime, new_id
from core.errors import LoginBusy
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
    DISCIPLINE_INSPECTION = "discipline_inspection"  # 纪检监察机关
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
    # Created with a role that needs a second administrator's approval, not approved yet:
    # the account cannot sign in (it holds no role until then).
    pending_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TwoPersonRequest:
    """The columns of a request another person decides (a role grant, an identity link): its status
    and who asked and decided, as principals (compared by the two-person rule) and as names."""

    status: Mapped[str] = mapped_column(String(16), index=True)  # pending, approved, rejected
    requested_by: Mapped[str] = mapped_column(String(80))
    requested_by_name: Mapped[str] = mapped_column(String(80))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by: Mapped[str | None] = mapped_column(String(80))
    decided_by_name: Mapped[str | None] = mapped_column(String(80))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


def decide_pending(session: Session, model: type[TwoPersonRequest], row_id: str, *, approve: bool, decider: Actor,
                   now: datetime) -> bool:
    """Move one pending request to approved or rejected with one conditional UPDATE (so two deciders
    at once cannot both act on it); False if it was no longer pending. The caller commits."""
    t = cast(Table, getattr(model, "__table__"))  # noqa: B009 - the mixin itself has no table
    result = session.execute(update(t).where(t.c.id == row_id, t.c.status == "pending").values(
        status="approved" if approve else "rejected", decided_by=decider.principal,
        decided_by_name=decider.username, decided_at=literal(now, UTCDateTime())))
    return cast(CursorResult[Any], result).rowcount == 1


class RoleGrant(TwoPersonRequest, Base):
    """A grant of admin, auditor or custodian waiting for (or decided by) a second administrator.

    ``roles`` are the user's roles once approved; ``added`` the privileged roles the grant
    adds. ``requested_by`` / ``decided_by`` are principals (a user id, or ``system:cli:<OS
    user>`` for the operator), which the two-person rule compares.
    """

    __tablename__ = "role_grants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "create" (a new account) or "change"
    roles: Mapped[list[str]] = mapped_column(JSON)
    added: Mapped[list[str]] = mapped_column(JSON)


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
    # How the session was opened ("password", "password+totp", "password+recovery") and from which client
    # address: the user's list of their own sessions shows both.
    method: Mapped[str | None] = mapped_column(String(24))
    address: Mapped[str | None] = mapped_column(String(64))


class TotpFactor(Base):
    """A user's TOTP second factor (RFC 6238). The secret is sealed under a data key of its own
    (``Vault``, payload kind ``totp_factor``); ``last_step`` is the last time step a code was
    accepted for, so no code works twice."""

    __tablename__ = "totp_factors"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    dek_id: Mapped[str] = mapped_column(String(40))
    secret_envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_step: Mapped[int | None] = mapped_column(BigInteger)


class RecoveryCode(Base):
    """One of a user's recovery codes, hashed with argon2id like a password; each works once."""

    __tablename__ = "recovery_codes"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class IdentityLink(TwoPersonRequest, Base):
    """An external identity (an OIDC issuer and the configured claim's value) linked to an account.

    Asked for by an administrator, effective once a security administrator approves it (the
    two-person rule, as for role grants). The claim's value is kept only as a keyed hash
    (``subject_hash``: it may be a staff or ID number) with a masked hint for the lists."""

    __tablename__ = "identity_links"
    __table_args__ = (UniqueConstraint("issuer", "subject_hash"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    issuer: Mapped[str] = mapped_column(String(255))
    subject_hash: Mapped[str] = mapped_column(String(64))
    subject_hint: Mapped[str] = mapped_column(String(16))


class SignIn(Base):
    """One sign-in attempt of a known user, for the user's own history (time, address, method,
    outcome). The access log holds the same attempts as events; this table is what the user reads."""

    __tablename__ = "sign_ins"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    address: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(24))
    success: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(64))


class LoginThrottle(Base):
    """Sign-in attempts per username or per client address (keyed hashes: unknown names are
    throttled too, and no name or address is stored)."""

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
    # A temporary password (new account, reset): nothing but changing it is allowed.
    must_change_password: bool = False
    # A confirmed second factor (TOTP): policy lets a privileged user without one only enrol.
    second_factor: bool = False

    @property
    def principal(self) -> str:
        """Who this is for the two-person rule: the user id, or the operator's full name."""
        return self.username if self.user_id == "system" else self.user_id


# A stand-in for operations run from the command line by the operator.
def system_actor(name: str = "cli") -> Actor:
    return Actor(
        user_id="system", username=f"system:{name}", display_name="系统", org_id="system",
        org_name="系统", org_type=OrgType.IT, roles=(), region_code="",
    )


def os_user() -> str:
    """The operating-system account running this process, as an id-safe name (never empty)."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        name = f"uid{os.getuid()}"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:32]
    return safe or f"uid{os.getuid()}"


def operator_actor() -> Actor:
    """Whoever runs ``shouhu``: ``system:cli:<OS user>`` in the log."""
    return system_actor(f"cli:{os_user()}")


class Passwords:
    """argon2id hashing with parameters from settings, at most N at a time.

    Each hash takes ``argon2_memory_kib`` of memory: at most ``password_hash_concurrency``
    run at once, and a check that cannot start within ``password_hash_wait_seconds`` is
    refused (``LoginBusy``), so a flood of sign-ins cannot grow memory without bound.
    """

    def __init__(self, settings: Settings):
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        self._slots = threading.BoundedSemaphore(settings.password_hash_concurrency)
        self._wait = settings.password_hash_wait_seconds
        # A real hash to verify against when the user does not exist, so that
        # unknown and known usernames take the same time.
        self._dummy = self._hasher.hash(secrets.token_urlsafe(16))

    @contextmanager
    def _slot(self) -> Iterator[None]:
        if not self._slots.acquire(timeout=self._wait):
            raise LoginBusy(retry_after=max(1, math.ceil(self._wait)))
        try:
            yield
        finally:
            self._slots.release()

    def hash(self, password: str) -> str:
        with self._slot():
            return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        with self._slot():
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
                kind: str = "api", method: str | None = None, address: str | None = None) -> tuple[str, Token]:
    text = new_token_text()
    row = Token(
        id=new_id("tok"),
        token_hash=token_hash(ring, text),
        user_id=user.id,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
        kind=kind,
        last_used_at=now,
        method=method,
        address=address[:64] if address else None,
    )
    session.add(row)
    return text, row


def actor_for(session: Session, user: User) -> Actor:
    org = session.get(Org, user.org_id)
    if org is None:
        raise RuntimeError("a user's organisation row is missing")
    return Actor(
        user_id=user.id,
        username=user.username,
        display_name=user.display_name,
        org_id=org.id,
        org_name=org.name,
        org_type=org.type,
        roles=tuple(user.roles),
        region_code=user.region_code,
        must_change_password=bool(user.must_change_password),
        second_factor=session.scalar(select(TotpFactor.user_id).where(
            TotpFactor.user_id == user.id, TotpFactor.confirmed_at.is_not(None))) is not None,
    )


def resolve_token(session: Session, ring: KeyRing, token: str, *, now: datetime, kind: str = "api",
                  idle_seconds: int | None = None, absolute_seconds: int | None = None) -> Actor | None:
    """The actor a token stands for, or None if unknown, of another kind, expired, idle too
    long or older than ``absolute_seconds`` (web sessions), revoked or disabled."""
    row = session.scalar(select(Token).where(Token.token_hash == token_hash(ring, token)))
    if row is None or row.kind != kind or row.revoked_at is not None or row.expires_at <= now:
        return None
    if absolute_seconds is not None and (now - row.created_at).total_seconds() > absolute_seconds:
        row.revoked_at = now  # the absolute time-out: however active, sign in again
        return None
    if idle_seconds is not None:
        if row.last_used_at is not None and (now - row.last_used_at).total_seconds() > idle_seconds:
            row.revoked_at = now  # idle time-out ends the session for good
            return None
        row.last_used_at = now
    user = session.get(User, row.user_id)
    if user is None or user.disabled or user.pending_approval:
        return None
    return actor_for(session, user)


def revoke_token(session: Session, ring: KeyRing, token: str, *, now: datetime) -> bool:
    row = session.scalar(select(Token).where(Token.token_hash == token_hash(ring, token)))
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = now
    return True


def revoke_all_tokens(session: Session, user_id: str, *, now: datetime, keep: str | None = None) -> int:
    """End every live session (API tokens and web sessions) of a user, except the one whose
    token hash is ``keep`` (the session that changed the password). Returns how many."""
    q = select(Token).where(Token.user_id == user_id, Token.revoked_at.is_(None))
    if keep is not None:
        q = q.where(Token.token_hash != keep)
    ended = 0
    for row in session.scalars(q):
        row.revoked_at = now
        ended += 1
    return ended


@dataclass(frozen=True)
class Admission:
    """A sign-in attempt counted before its password is checked."""

    allowed: bool
    retry_after: int  # seconds, when refused
    account_key: str
    address_key: str | None
    account_count: int
    address_count: int
    limit: str = ""  # what refused it: "address" or "username"


class Throttle:
    """Failed sign-ins per username and per client address, counted before the password check.

    Each attempt first increments its username's (and its address's) counter in one
    ``UPDATE ... RETURNING`` committed at once, and is checked only if the counters are
    within their limits: parallel attempts cannot all pass the check, since each sees the
    count including the others. A success resets the username's counter and takes back
    its own count from the address; a failure that reaches a limit locks that key out for
    ``login_lockout_seconds``. Keys are keyed hashes, so unknown names lock like known ones
    and no address is stored in plain text.
    """

    def __init__(self, settings: Settings, ring: KeyRing):
        self._s = settings
        self._ring = ring

    def _key(self, username: str) -> str:
        return self._ring.keyed_hash("login-throttle", username.strip().lower())

    def _address_key(self, address: str) -> str:
        return self._ring.keyed_hash("login-throttle-address", address)

    def _bump(self, session: Session, key: str, *, now: datetime) -> tuple[int, datetime | None, datetime]:
        """Count one attempt for ``key``; returns (attempts in the window, lock end, window start)."""
        t = cast(Table, LoginThrottle.__table__)
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(t).values(key_hash=key, failures=0, window_started_at=now, locked_until=None)
                        .on_conflict_do_nothing(index_elements=["key_hash"]))
        lock_over = and_(t.c.locked_until.is_not(None), t.c.locked_until <= now)
        fresh = or_(lock_over, t.c.window_started_at < now - timedelta(seconds=self._s.login_window_seconds))
        at = literal(now, UTCDateTime())
        row = session.execute(
            update(t).where(t.c.key_hash == key).values(
                failures=case((fresh, 1), else_=t.c.failures + 1),
                window_started_at=case((fresh, at), else_=t.c.window_started_at),
                locked_until=case((lock_over, literal(None, UTCDateTime())), else_=t.c.locked_until),
            ).returning(t.c.failures, t.c.locked_until, t.c.window_started_at)
        ).one()
        return int(row[0]), row[1], row[2]

    def _retry_after(self, locked_until: datetime | None, window_started: datetime, now: datetime) -> int:
        end = locked_until if locked_until is not None and locked_until > now else (
            window_started + timedelta(seconds=self._s.login_window_seconds))
        return max(1, math.ceil((end - now).total_seconds()))

    def admit(self, session: Session, username: str, address: str | None, *, now: datetime) -> Admission:
        """Count this attempt (the caller commits at once) and say whether it may be checked."""
        account_key = self._key(username)
        address_key = self._address_key(address) if address else None
        address_count = 0
        if address_key is not None:
            address_count, lock, start = self._bump(session, address_key, now=now)
            if (lock is not None and lock > now) or address_count > self._s.login_max_failures_per_address:
                # Refused by address alone: the account is not charged, so that one noisy
                # address cannot lock every account out.
                return Admission(False, self._retry_after(lock, start, now), account_key, address_key, 0,
                                 address_count, "address")
        count, lock, start = self._bump(session, account_key, now=now)
        if (lock is not None and lock > now) or count > self._s.login_max_failures:
            return Admission(False, self._retry_after(lock, start, now), account_key, address_key, count,
                             address_count, "username")
        return Admission(True, 0, account_key, address_key, count, address_count)

    def failure(self, session: Session, admission: Admission, *, now: datetime) -> None:
        """The checked password was wrong: lock any key whose count reached its limit."""
        until = now + timedelta(seconds=self._s.login_lockout_seconds)
        t = cast(Table, LoginThrottle.__table__)
        for key, count, limit in ((admission.account_key, admission.account_count, self._s.login_max_failures),
                                  (admission.address_key, admission.address_count,
                                   self._s.login_max_failures_per_address)):
            if key is not None and count >= limit:
                session.execute(update(t).where(t.c.key_hash == key).values(locked_until=literal(until, UTCDateTime())))

    def success(self, session: Session, admission: Admission) -> None:
        """The password was right: the username starts afresh; the address gets its count back."""
        t = cast(Table, LoginThrottle.__table__)
        session.execute(delete(t).where(t.c.key_hash == admission.account_key))
        if admission.address_key is not None:
            self._give_back(session, admission.address_key)

    def undo(self, session: Session, admission: Admission) -> None:
        """The password could not be checked at all (busy): take back both counts."""
        self._give_back(session, admission.account_key)
        if admission.address_key is not None:
            self._give_back(session, admission.address_key)

    @staticmethod
    def _give_back(session: Session, key: str) -> None:
        t = cast(Table, LoginThrottle.__table__)
        session.execute(update(t).where(t.c.key_hash == key, t.c.failures > 0).values(failures=t.c.failures - 1))


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
    pending_approval: bool = False,
) -> User:
    """A new user row (the caller commits). No rule is checked here: the administrators'
    paths (``access_control.users``, ``shouhu users``) check roles against the org type and
    the two-person rule first; the demo and tests build their worlds with it directly."""
    user = User(
        id=new_id("usr"),
        username=username,
        display_name=display_name,
        org_id=org.id,
        region_code=region_code or org.region_code,
        roles=[Role(r).value for r in roles],
        password_hash=passwords.hash(password),
        must_change_password=must_change_password,
        pending_approval=pending_approval,
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
