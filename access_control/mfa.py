"""The second factor: TOTP codes (RFC 6238, pyotp) and single-use recovery codes.

The TOTP secret is sealed under a data key of its own (``core.keys.Vault``, payload kind
``totp_factor``) and opened only to check a code. A code is accepted for the current 30-second
step or one step either side (clock drift); the accepted step is stored, and a code for that step
or an earlier one is refused, so no code works twice. Ten recovery codes are handed out once at
enrolment and stored as argon2id hashes, like passwords; each works once.

No secret, code or recovery code is ever written to the access log or the server log: events
carry the outcome and a rule (``second_factor:wrong_code``, ``second_factor:reused_code``...).
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import pyotp
import segno
from sqlalchemy import CursorResult, Table, delete, literal, or_, select, update
from sqlalchemy.orm import Session

from access_control.actions import Action
from access_control.audit import EventDraft
from access_control.guard import Guard
from access_control.identity import Passwords, RecoveryCode, TotpFactor, User
from access_control.policy import Resource
from core.db import UTCDateTime, new_id
from core.errors import Conflict, InvalidInput, NotFound
from core.keys import Vault

STEP_SECONDS = 30
DRIFT_STEPS = 1  # a code of the step before or after the current one is accepted (clock drift)
STALE_STEPS = 20  # how far back a refused code is told apart as "stale" (for the log's rule only)
RECOVERY_CODE_COUNT = 10
_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_PAYLOAD = "totp_factor"


@dataclass(frozen=True)
class Enrolment:
    """What the user's authenticator app needs: shown once, never stored in the clear."""

    secret: str
    otpauth_uri: str
    qr_svg: str


def step_of(now: datetime) -> int:
    return int(now.timestamp()) // STEP_SECONDS


def normalise_recovery_code(code: str) -> str:
    return re.sub(r"[\s-]", "", code).lower()


def looks_like_totp(code: str) -> bool:
    return re.fullmatch(r"\d{6}", code.strip()) is not None


def new_recovery_code() -> str:
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


class SecondFactor:
    """Enrolment, confirmation and checks of a user's TOTP factor and recovery codes."""

    def __init__(self, *, vault: Vault, passwords: Passwords, issuer: str):
        self.vault = vault
        self.passwords = passwords
        self.issuer = issuer

    # the secret -----------------------------------------------------------------------

    def _seal(self, session: Session, user_id: str, secret: str) -> tuple[str, bytes]:
        dek_id, dek = self.vault.new_data_key(session, owner_kind=_PAYLOAD, owner_id=user_id)
        return dek_id, self.vault.seal_bytes(dek, dek_id, secret.encode("ascii"), kind=_PAYLOAD, record_id=user_id,
                                             version=1)

    def _secret(self, session: Session, factor: TotpFactor) -> str:
        return self.vault.open_bytes(session, factor.secret_envelope, factor.dek_id, kind=_PAYLOAD,
                                     record_id=factor.user_id, version=1).decode("ascii")

    def store_secret(self, session: Session, user: User, secret: str, *, now: datetime,
                     confirmed: bool = False) -> TotpFactor:
        """Seal ``secret`` as ``user``'s factor (replacing an unconfirmed one); the caller commits."""
        old = session.get(TotpFactor, user.id)
        dek_id, envelope = self._seal(session, user.id, secret)
        if old is not None:
            self.vault.shred_key(session, old.dek_id)
            session.delete(old)
            session.flush()
        factor = TotpFactor(user_id=user.id, dek_id=dek_id, secret_envelope=envelope, created_at=now,
                            confirmed_at=now if confirmed else None, last_step=None)
        session.add(factor)
        return factor

    # checks ---------------------------------------------------------------------------

    def check_code(self, session: Session, factor: TotpFactor, code: str, *, now: datetime) -> str | None:
        """Accept a TOTP ``code`` once: None, or the rule that refused it. The step is claimed with
        one conditional UPDATE, so two requests with the same code cannot both pass."""
        code = code.strip()
        if not looks_like_totp(code):
            return "second_factor:wrong_code"
        totp = pyotp.TOTP(self._secret(session, factor))
        current = step_of(now)
        step = next((s for s in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1)
                     if hmac.compare_digest(totp.at(s * STEP_SECONDS), code)), None)
        if step is None:
            old = any(hmac.compare_digest(totp.at(s * STEP_SECONDS), code)
                      for s in range(current - STALE_STEPS, current - DRIFT_STEPS))
            return "second_factor:stale_code" if old else "second_factor:wrong_code"
        t = cast(Table, TotpFactor.__table__)
        result = session.execute(update(t).where(
            t.c.user_id == factor.user_id, or_(t.c.last_step.is_(None), t.c.last_step < step)).values(last_step=step))
        if cast(CursorResult[Any], result).rowcount != 1:
            return "second_factor:reused_code"
        return None

    def use_recovery_code(self, session: Session, user_id: str, code: str, *, now: datetime) -> str | None:
        """Spend one unused recovery code: None, or the rule that refused it."""
        wanted = normalise_recovery_code(code)
        if not re.fullmatch(f"[{_RECOVERY_ALPHABET}]{{10}}", wanted):
            return "second_factor:wrong_code"
        for row in session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user_id,
                                                              RecoveryCode.used_at.is_(None))):
            if self.passwords.verify(row.code_hash, wanted):
                t = cast(Table, RecoveryCode.__table__)
                result = session.execute(update(t).where(t.c.id == row.id, t.c.used_at.is_(None))
                                         .values(used_at=literal(now, UTCDateTime())))
                return None if cast(CursorResult[Any], result).rowcount == 1 else "second_factor:used_recovery_code"
        return "second_factor:wrong_code"

    def verify(self, session: Session, user_id: str, code: str, *, now: datetime) -> tuple[str, str | None]:
        """Check a sign-in's second factor: (method, refusal rule or None). Six digits are a TOTP
        code; anything else is tried as a recovery code."""
        factor = session.get(TotpFactor, user_id)
        if factor is None or factor.confirmed_at is None:
            return "totp", "second_factor:not_enrolled"
        if looks_like_totp(code):
            return "totp", self.check_code(session, factor, code, now=now)
        return "recovery", self.use_recovery_code(session, user_id, code, now=now)

    # enrolment ------------------------------------------------------------------------

    def start(self, g: Guard) -> Enrolment:
        """A new secret for the caller (replacing an unconfirmed one): the QR code and the URI."""
        user = g.session.get(User, g.actor.user_id)
        if user is None:
            raise RuntimeError("the signed-in user's row is gone")
        existing = g.session.get(TotpFactor, user.id)
        if existing is not None and existing.confirmed_at is not None:
            raise Conflict("已绑定动态口令；如需更换，请联系管理员重置。", details={"field": "second_factor"})
        g.authorize(Action.MFA_ENROL, Resource("user", user.id))
        secret = pyotp.random_base32()
        self.store_secret(g.session, user, secret, now=g.now)
        g.commit()
        uri = pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=self.issuer)
        svg = segno.make(uri, error="m", micro=False).svg_inline(scale=4, border=2, title="动态口令绑定二维码")
        return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=svg)

    def confirm(self, g: Guard, code: str) -> list[str]:
        """Confirm the caller's new factor with a code from the app: ten recovery codes, shown once."""
        factor = g.session.get(TotpFactor, g.actor.user_id)
        if factor is None:
            raise NotFound("尚未开始绑定动态口令，请先获取二维码。")
        if factor.confirmed_at is not None:
            raise Conflict("已绑定动态口令。", details={"field": "second_factor"})
        refused = self.check_code(g.session, factor, code, now=g.now)
        if refused is not None:
            g.record(EventDraft(action=Action.MFA_CONFIRM, outcome="denied", reason=refused, resource_kind="user",
                                resource_id=g.actor.user_id))
            g.commit()
            raise InvalidInput.one("code", "动态口令不正确或已过期，请输入应用中当前显示的6位数字")
        factor.confirmed_at = g.now
        codes = self.replace_recovery_codes(g.session, g.actor.user_id, now=g.now)
        g.authorize(Action.MFA_CONFIRM, Resource("user", g.actor.user_id),
                    details={"recovery_codes": len(codes)})
        g.commit()
        return codes

    def replace_recovery_codes(self, session: Session, user_id: str, *, now: datetime) -> list[str]:
        """Ten new recovery codes for ``user_id`` (the old ones stop working); the caller commits."""
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        codes = [new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
        for code in codes:
            session.add(RecoveryCode(id=new_id("rc"), user_id=user_id, created_at=now,
                                     code_hash=self.passwords.hash(normalise_recovery_code(code))))
        return codes

    def remove(self, session: Session, user_id: str) -> bool:
        """Remove a user's factor and recovery codes (shredding the secret's data key); the caller
        commits. The user enrols again at the next sign-in. False if there was none."""
        factor = session.get(TotpFactor, user_id)
        session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
        if factor is None:
            return False
        self.vault.shred_key(session, factor.dek_id)
        session.delete(factor)
        return True
