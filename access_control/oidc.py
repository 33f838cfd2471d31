"""OpenID Connect sign-in (authorization code with PKCE) through Authlib, and identity links.

Shouhu is a client of one provider (the deployment's unified identity platform), set by
``oidc_issuer``, ``oidc_client_id`` and the client secret. A signed-in external identity
(issuer + the ``oidc_claim`` claim's value) is matched against the identity links an
administrator asked for and a security administrator approved; a user is never created,
nor given a role, from a token.

The id_token is checked here, not trusted from the TLS channel alone: its signature against
the provider's published keys (JWKS), its issuer, its audience, its expiry (read against the
injected clock) and the nonce of this sign-in. The provider refuses a replayed code and a
token request without the PKCE verifier; Shouhu refuses a callback without the state,
nonce and verifier it set in the browser.
"""

from __future__ import annotations

import builtins
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from access_control.actions import Action
from access_control.audit import AuditLog, EventDraft
from access_control.guard import Guard
from access_control.identity import IdentityLink, TotpFactor, User, actor_for, decide_pending, issue_token
from access_control.policy import Resource
from access_control.users import ANONYMOUS, SignInStep, record_sign_in, two_person_requests
from core.crypto import KeyRing
from core.db import begin_write, new_id
from core.errors import AuditUnavailable, Conflict, InvalidInput, OidcSignInFailed
from core.settings import Settings

if TYPE_CHECKING:
    from authlib.integrations.requests_client import OAuth2Session
    from joserfc.jwk import KeySet

# requests, Authlib and joserfc (~0.35 s to import) are imported by the client on its first use: a
# deployment without a provider, and every `shouhu` command, never loads them.

HTTP_TIMEOUT = 5.0
CLOCK_SKEW_SECONDS = 60  # an id_token "issued at" a little in the future is accepted


class OidcRefused(Exception):
    """A sign-in the OIDC checks refused; ``rule`` is what the log records (never the token)."""

    def __init__(self, rule: str):
        super().__init__(rule)
        self.rule = rule


@dataclass(frozen=True)
class Authorization:
    """Where to send the browser, and what the callback must find again (kept in a cookie)."""

    url: str
    state: str
    nonce: str
    verifier: str


def subject_hash(ring: KeyRing, issuer: str, subject: str) -> str:
    return ring.keyed_hash("oidc-subject", f"{issuer}\n{subject}", hex_chars=64)


def subject_hint(subject: str) -> str:
    """What a list shows of an external subject: its first and last two characters."""
    return f"{subject[:2]}…{subject[-2:]}" if len(subject) > 4 else "…"


class OidcClient:
    """The provider's discovery document and keys (read once, refreshed on an unknown key),
    the authorization URL, and the code exchange with its id_token checks."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    @property
    def issuer(self) -> str:
        return (self.settings.oidc_issuer or "").rstrip("/")

    def _get(self, url: str) -> dict[str, Any]:
        import requests

        try:
            response = requests.get(url, timeout=HTTP_TIMEOUT)
            response.raise_for_status()
            return cast(dict[str, Any], response.json())
        except (requests.RequestException, ValueError) as exc:
            raise OidcRefused("oidc:provider_unreachable") from exc

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                meta = self._get(f"{self.issuer}/.well-known/openid-configuration")
                if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                    raise OidcRefused("oidc:discovery_issuer_mismatch")
                self._metadata = meta
            return self._metadata

    def keys(self, *, refresh: bool = False) -> KeySet:
        from joserfc.jwk import KeySet

        meta = self.metadata()
        with self._lock:
            if self._keys is None or refresh:
                self._keys = KeySet.import_key_set(cast(Any, self._get(str(meta["jwks_uri"]))))
            return self._keys

    def _session(self, redirect_uri: str) -> OAuth2Session:
        from authlib.integrations.requests_client import OAuth2Session

        return OAuth2Session(client_id=self.settings.oidc_client_id, client_secret=self.settings.oidc_secret(),
                             redirect_uri=redirect_uri, scope="openid", code_challenge_method="S256",
                             token_endpoint_auth_method="client_secret_basic")  # noqa: S106 - a method name

    def authorization(self, redirect_uri: str) -> Authorization:
        from authlib.common.security import generate_token

        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        with self._session(redirect_uri) as session:
            url, _ = session.create_authorization_url(str(self.metadata()["authorization_endpoint"]), state=state,
                                                      nonce=nonce, code_verifier=verifier)
        return Authorization(url=url, state=state, nonce=nonce, verifier=verifier)

    def exchange(self, *, code: str, redirect_uri: str, verifier: str, nonce: str, now: datetime) -> dict[str, Any]:
        """Trade the code for tokens and check the id_token: its claims, or OidcRefused."""
        import requests
        from authlib.integrations.base_client.errors import OAuthError

        if not verifier:
            raise OidcRefused("oidc:missing_pkce_verifier")
        try:
            with self._session(redirect_uri) as session:
                token = session.fetch_token(str(self.metadata()["token_endpoint"]), grant_type="authorization_code",
                                            code=code, code_verifier=verifier, timeout=HTTP_TIMEOUT)
        except OAuthError as exc:
            raise OidcRefused("oidc:token_refused") from exc
        except requests.RequestException as exc:
            raise OidcRefused("oidc:provider_unreachable") from exc
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcRefused("oidc:no_id_token")
        return self.check_id_token(id_token, nonce=nonce, now=now)

    def check_id_token(self, id_token: str, *, nonce: str, now: datetime) -> dict[str, Any]:
        from joserfc import jwt
        from joserfc.errors import JoseError

        try:
            decoded = jwt.decode(id_token, self.keys(), algorithms=["RS256", "ES256", "PS256"])
        except (JoseError, ValueError):
            try:  # the provider may have rotated its keys since they were read
                decoded = jwt.decode(id_token, self.keys(refresh=True), algorithms=["RS256", "ES256", "PS256"])
            except (JoseError, ValueError) as exc:
                raise OidcRefused("oidc:bad_signature") from exc
        claims = dict(decoded.claims)
        if str(claims.get("iss", "")).rstrip("/") != self.issuer:
            raise OidcRefused("oidc:unknown_issuer")
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if self.settings.oidc_client_id not in audiences:
            raise OidcRefused("oidc:wrong_audience")
        if len(audiences) > 1 and claims.get("azp") != self.settings.oidc_client_id:
            raise OidcRefused("oidc:wrong_audience")
        stamp = now.timestamp()
        exp, iat = claims.get("exp"), claims.get("iat")
        if not isinstance(exp, int | float) or exp <= stamp:
            raise OidcRefused("oidc:expired")
        if not isinstance(iat, int | float) or iat > stamp + CLOCK_SKEW_SECONDS:
            raise OidcRefused("oidc:issued_in_future")
        if not nonce or claims.get("nonce") != nonce:
            raise OidcRefused("oidc:nonce_mismatch")
        return claims


def linked_user(session: Any, ring: KeyRing, *, issuer: str, subject: str) -> User | None:
    """The account an approved link names for this external identity, if any."""
    link = session.scalar(select(IdentityLink).where(
        IdentityLink.issuer == issuer, IdentityLink.subject_hash == subject_hash(ring, issuer, subject),
        IdentityLink.status == "approved"))
    return session.get(User, link.user_id) if link is not None else None


# Links: an administrator asks, a security administrator approves ---------------------------


class IdentityLinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    issuer: str = Field(min_length=1, max_length=255, description="The provider's issuer URL")
    subject: str = Field(min_length=1, max_length=255, description="The value of the configured claim (`oidc_claim`)")


class IdentityLinkPublic(BaseModel):
    id: str
    user_id: str
    username: str
    issuer: str
    subject_hint: str = Field(description="The subject's first and last two characters; the value is kept hashed")
    status: str
    requested_by: str
    requested_at: datetime
    decided_by: str | None = None
    decided_at: datetime | None = None


def link_public(link: IdentityLink, user: User) -> IdentityLinkPublic:
    return IdentityLinkPublic(id=link.id, user_id=link.user_id, username=user.username, issuer=link.issuer,
                              subject_hint=link.subject_hint, status=link.status,
                              requested_by=link.requested_by_name, requested_at=link.requested_at,
                              decided_by=link.decided_by_name, decided_at=link.decided_at)


class IdentityLinks:
    """The service behind the identity-link routes."""

    def __init__(self, *, ring: KeyRing):
        self.ring = ring

    def request(self, g: Guard, user_id: str, data: IdentityLinkCreate, *,
                configured_issuer: str | None) -> IdentityLinkPublic:
        """Ask for a link of an identity at the configured provider (``configured_issuer``) to a user."""
        action = Action.IDENTITY_LINK_REQUEST
        g.require(action, Resource("user", user_id[:64]))
        user = g.session.get(User, user_id)
        if user is None:
            g.not_found(action, "user", user_id)
        issuer = data.issuer.rstrip("/")
        if not configured_issuer or issuer != configured_issuer.rstrip("/"):
            raise InvalidInput.one("issuer", "只能关联本系统配置的统一身份认证平台的身份")
        digest = subject_hash(self.ring, issuer, data.subject)
        existing = g.session.scalar(select(IdentityLink).where(IdentityLink.issuer == issuer,
                                                               IdentityLink.subject_hash == digest))
        if existing is not None and existing.status != "rejected":
            raise Conflict("该外部身份已关联或正在等待批准。", details={"field": "subject"})
        if existing is not None:
            g.session.execute(delete(IdentityLink).where(IdentityLink.id == existing.id))
        link = IdentityLink(id=new_id("idl"), user_id=user.id, issuer=issuer, subject_hash=digest,
                            subject_hint=subject_hint(data.subject), status="pending",
                            requested_by=g.actor.principal, requested_by_name=g.actor.username, requested_at=g.now)
        g.session.add(link)
        g.authorize(action, Resource("identity_link", link.id, user.region_code),
                    details={"user_id": user.id, "issuer": issuer})
        out = link_public(link, user)
        g.commit()
        return out

    def list(self, g: Guard, *, status: str | None) -> builtins.list[IdentityLinkPublic]:
        rows = two_person_requests(g, IdentityLink, action=Action.IDENTITY_LINK_LIST, kind="identity_link",
                                   status=status)
        return [link_public(link, user) for link, user in rows]

    def decide(self, g: Guard, link_id: str, *, approve: bool) -> IdentityLinkPublic:
        """Approve (a security administrator: not who asked, not the user) or reject a pending link."""
        action = Action.IDENTITY_LINK_APPROVE if approve else Action.IDENTITY_LINK_REJECT
        g.require(action, Resource("identity_link", link_id[:64]))
        link = g.session.get(IdentityLink, link_id)
        user = g.session.get(User, link.user_id) if link is not None else None
        if link is None or user is None:
            g.not_found(action, "identity_link", link_id)
        g.authorize(action, Resource("identity_link", link.id, user.region_code, grant_requested_by=link.requested_by,
                                     grant_user_id=link.user_id),
                    details={"user_id": user.id, "issuer": link.issuer, "requested_by": link.requested_by_name})
        if not decide_pending(g.session, IdentityLink, link.id, approve=approve, decider=g.actor, now=g.now):
            raise Conflict("该关联申请已处理。", details={"status": link.status})
        g.session.refresh(link)
        out = link_public(link, user)
        g.commit()
        return out


def oidc_login(
    session: Session,
    *,
    ring: KeyRing,
    audit: AuditLog,
    client: OidcClient,
    claim: str,
    code: str,
    verifier: str,
    nonce: str,
    redirect_uri: str,
    request_id: str,
    now: datetime,
    ttl: int,
    challenge_ttl: int,
    address: str | None,
    refused: str | None = None,
) -> SignInStep:
    """Sign in through the provider: a web session, or a second-factor challenge for a user with
    a factor. Every attempt is an ``auth:token:create`` event (``details.method`` ``oidc``); a
    refusal (``refused``: a rule found before the exchange) raises OidcSignInFailed once logged."""
    user: User | None = None

    def log(outcome: str, reason: str) -> None:
        try:
            if user is not None:
                record_sign_in(session, user_id=user.id, now=now, address=address, method="oidc",
                               success=outcome == "allowed", reason=reason)
            audit.append(session, actor=actor_for(session, user) if user is not None else ANONYMOUS,
                         request_id=request_id, at=now,
                         draft=EventDraft(action=Action.AUTH_LOGIN, outcome=outcome, reason=reason,
                                          resource_kind="user", resource_id=user.id if user else "",
                                          details={"method": "oidc"}))
            session.commit()
        except SQLAlchemyError as exc:
            session.rollback()
            raise AuditUnavailable() from exc

    if refused is None:
        try:
            claims = client.exchange(code=code, redirect_uri=redirect_uri, verifier=verifier, nonce=nonce, now=now)
            subject = claims.get(claim)
            if not isinstance(subject, str | int) or not str(subject):
                raise OidcRefused("oidc:claim_missing")
            user = linked_user(session, ring, issuer=client.issuer, subject=str(subject))
            if user is None:
                raise OidcRefused("oidc:not_linked")
            if user.disabled or user.pending_approval:
                raise OidcRefused("login:disabled")
        except OidcRefused as exc:
            refused = exc.rule
    # The callback is a GET: its session reads until now (the exchange held no lock); what follows writes.
    begin_write(session)
    if refused is not None or user is None:
        log("denied", refused or "oidc:not_linked")
        raise OidcSignInFailed()
    if session.scalar(select(TotpFactor.user_id).where(TotpFactor.user_id == user.id,
                                                      TotpFactor.confirmed_at.is_not(None))) is not None:
        challenge, _ = issue_token(session, ring, user, now=now, ttl=challenge_ttl, kind="mfa", method="oidc",
                                   address=address)
        log("allowed", "login:oidc_ok+second_factor_pending")
        return SignInStep(challenge=challenge)
    token, _ = issue_token(session, ring, user, now=now, ttl=ttl, kind="web", method="oidc", address=address)
    log("allowed", "login:oidc_ok")
    return SignInStep(token=token)
