"""Routes for sign-in, the caller, regions, organisations and users."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from access_control.actions import Action
from access_control.addresses import client_address
from access_control.deps import BearerToken, GuardDep, RuntimeDep, SessionDep, UserServiceDep
from access_control.identity import Org, User, revoke_token, token_hash
from access_control.oidc import IdentityLinkCreate, IdentityLinkPublic
from access_control.policy import Resource
from access_control.sessions import SessionPublic, SessionsEnded, SignInPublic
from access_control.users import (
    OrgPublic,
    RoleGrantPublic,
    RolesChange,
    TemporaryPassword,
    UserCreate,
    UserCreated,
    UserPublic,
    complete_second_factor,
    login,
    org_public,
)

router = APIRouter(prefix="/api/v1")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class SecondFactorNeeded(BaseModel):
    mfa_required: Literal[True] = True
    mfa_token: str = Field(description="Short-lived challenge: send it with a one-time code to /auth/token/mfa")
    expires_in: int


class SecondFactorAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mfa_token: str = Field(min_length=1, max_length=100)
    code: str = Field(min_length=6, max_length=32, description="The 6-digit TOTP code, or a recovery code")


class MeOrg(BaseModel):
    id: str
    name: str
    type: str


class Me(BaseModel):
    id: str
    username: str
    name: str
    org: MeOrg
    roles: list[str]
    region_code: str
    must_change_password: bool


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=256)
    new_password: str = Field(max_length=256)


@router.post("/auth/token", response_model=TokenResponse | SecondFactorNeeded, tags=["auth"],
             summary="Sign in with username and password (OAuth2 password form)",
             description="Failed attempts are counted per username and per client address before the password "
             "is checked; over the limit the answer is 429 `too_many_attempts` with `Retry-After`. When too many "
             "password checks run at once: 503 `login_busy` with `Retry-After`. A user with a second factor gets "
             "`{mfa_required: true, mfa_token}` instead of a token: complete with `POST /auth/token/mfa`.")
def create_token(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenResponse | SecondFactorNeeded:
    s = runtime.settings
    step = login(
        session, ring=runtime.ring, passwords=runtime.passwords, throttle=runtime.throttle,
        audit=runtime.audit, username=form.username, password=form.password,
        request_id=request.state.request_id, now=runtime.clock(), ttl=s.token_ttl_seconds,
        address=client_address(request, s.trusted_proxies), challenge_ttl=s.mfa_challenge_seconds,
        password_allowed=lambda roles: runtime.policy.password_sign_in_allowed(roles, s.password_login_disabled_roles),
    )
    if step.challenge is not None:
        return SecondFactorNeeded(mfa_token=step.challenge, expires_in=s.mfa_challenge_seconds)
    return TokenResponse(access_token=step.token or "", expires_in=s.token_ttl_seconds)


@router.post("/auth/token/mfa", response_model=TokenResponse, tags=["auth"],
             summary="Second step of a sign-in: the challenge and a one-time code (or a recovery code)",
             description="A wrong, reused (its 30-second step already used) or stale code, a used recovery code or an "
             "expired challenge: 401 `second_factor_invalid`. Wrong codes count against the account like wrong "
             "passwords (429 `too_many_attempts` past the limit). The challenge works once.")
def complete_token(request: Request, runtime: RuntimeDep, session: SessionDep,
                   body: SecondFactorAnswer) -> TokenResponse:
    s = runtime.settings
    token = complete_second_factor(
        session, ring=runtime.ring, throttle=runtime.throttle, audit=runtime.audit,
        second_factor=runtime.second_factor, challenge=body.mfa_token, code=body.code,
        request_id=request.state.request_id, now=runtime.clock(), ttl=s.token_ttl_seconds,
        address=client_address(request, s.trusted_proxies))
    return TokenResponse(access_token=token, expires_in=s.token_ttl_seconds)


class TotpEnrolment(BaseModel):
    secret: str = Field(description="Base32 secret, for typing into an app by hand; shown once")
    otpauth_uri: str
    qr_svg: str = Field(description="The otpauth URI as an inline SVG QR code")


class TotpConfirm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: str = Field(min_length=6, max_length=6, pattern=r"^[0-9]{6}$")


class RecoveryCodes(BaseModel):
    recovery_codes: list[str] = Field(description="Ten single-use codes, shown once: keep them offline")


@router.post("/me/mfa/totp", response_model=TotpEnrolment, tags=["identity"],
             summary="Start enrolling a TOTP second factor: a new secret and its QR code",
             description="Replaces an unconfirmed secret; 409 once a factor is confirmed. Allowed to a privileged "
             "user who has no second factor yet (everything else answers 403 `second_factor_enrolment_required`).")
def start_totp(g: GuardDep, runtime: RuntimeDep) -> TotpEnrolment:
    e = runtime.second_factor.start(g)
    return TotpEnrolment(secret=e.secret, otpauth_uri=e.otpauth_uri, qr_svg=e.qr_svg)


@router.post("/me/mfa/totp/confirm", response_model=RecoveryCodes, tags=["identity"],
             summary="Confirm the TOTP factor with a code from the app; answers the recovery codes once")
def confirm_totp(g: GuardDep, runtime: RuntimeDep, body: TotpConfirm) -> RecoveryCodes:
    return RecoveryCodes(recovery_codes=runtime.second_factor.confirm(g, body.code))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"],
             summary="Revoke the bearer token used for this request")
def logout(g: GuardDep, runtime: RuntimeDep, token: BearerToken) -> None:
    g.authorize(Action.AUTH_LOGOUT, Resource("token"))
    revoke_token(g.session, runtime.ring, token, now=g.now)
    g.commit()


@router.get("/me", response_model=Me, tags=["identity"])
def me(g: GuardDep) -> Me:
    g.authorize(Action.ME_READ, Resource("user", g.actor.user_id), commit=True)
    user = g.session.get(User, g.actor.user_id)
    if user is None:
        raise RuntimeError("the signed-in user's row is gone")
    a = g.actor
    return Me(id=a.user_id, username=a.username, name=a.display_name,
              org=MeOrg(id=a.org_id, name=a.org_name, type=a.org_type), roles=list(a.roles),
              region_code=a.region_code, must_change_password=user.must_change_password)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, tags=["identity"],
             summary="Change your own password; every other session of yours ends",
             description="The only call (besides /me and logout) a user with a temporary password may make. "
             "The new password is judged by zxcvbn with your username and name as known words (422 naming "
             "`new_password`). Your other API tokens and page sessions are revoked; this token continues.")
def change_password(g: GuardDep, runtime: RuntimeDep, users: UserServiceDep, body: PasswordChange,
                    token: BearerToken) -> None:
    users.change_own_password(g, body.current_password, body.new_password,
                              keep_token_hash=token_hash(runtime.ring, token))


@router.get("/regions", tags=["identity"],
            summary="The region tree below the caller's node (the whole tree for admins and auditors)")
def regions(g: GuardDep, runtime: RuntimeDep) -> dict[str, Any]:
    g.authorize(Action.REGION_LIST, Resource("region", g.actor.region_code), commit=True)
    return {"items": [runtime.regions.as_tree(code) for code in g.policy.region_list_roots(g.actor)]}


@router.get("/orgs", response_model=dict[str, list[OrgPublic]], tags=["identity"])
def orgs(g: GuardDep) -> dict[str, list[OrgPublic]]:
    g.authorize(Action.ORG_LIST, Resource("org", None, g.actor.region_code), commit=True)
    rows = g.session.scalars(g.scoped(select(Org), Org.region_code).order_by(Org.region_code, Org.name))
    return {"items": [org_public(o) for o in rows]}


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserCreated, tags=["users"],
             responses={202: {"model": UserCreated, "description": "Created pending: a role in the request "
                                                                   "(admin, auditor, custodian) waits for a second "
                                                                   "administrator (`pending_grant`)"}},
             summary="Create a user (roles must suit the org type; see docs/security.md)")
def create_user(g: GuardDep, users: UserServiceDep, body: UserCreate, response: Response) -> UserCreated:
    created = users.create(g, body)
    if created.pending_grant is not None:
        response.status_code = status.HTTP_202_ACCEPTED
    return created


@router.get("/users", response_model=dict[str, list[UserPublic]], tags=["users"])
def list_users(g: GuardDep, users: UserServiceDep,
               org_id: Annotated[str | None, Query(max_length=40)] = None) -> dict[str, list[UserPublic]]:
    return {"items": users.list(g, org_id=org_id)}


@router.get("/users/{user_id}", response_model=UserPublic, tags=["users"])
def read_user(g: GuardDep, users: UserServiceDep, user_id: str) -> UserPublic:
    return users.read(g, user_id)


@router.post("/users/{user_id}/disable", response_model=UserPublic, tags=["users"])
def disable_user(g: GuardDep, users: UserServiceDep, user_id: str) -> UserPublic:
    return users.disable(g, user_id)


@router.post("/users/{user_id}/reset-password", response_model=TemporaryPassword, tags=["users"])
def reset_password(g: GuardDep, users: UserServiceDep, user_id: str) -> TemporaryPassword:
    return users.reset_password(g, user_id)


@router.put("/users/{user_id}/roles", response_model=UserPublic, tags=["users"],
            responses={202: {"model": UserPublic,
                             "description": "Adding admin, security_admin, auditor or custodian waits for a "
                                            "security administrator (`pending_grant`)"}},
            summary="Set a user's roles (roles must suit the org type; see docs/security.md)")
def change_roles(g: GuardDep, users: UserServiceDep, user_id: str, body: RolesChange,
                 response: Response) -> UserPublic:
    out = users.change_roles(g, user_id, body)
    if out.pending_grant is not None:
        response.status_code = status.HTTP_202_ACCEPTED
    return out


@router.get("/role-grants", response_model=dict[str, list[RoleGrantPublic]], tags=["users"],
            summary="Grants of admin, security_admin, auditor or custodian, by status (the two-person rule)")
def list_role_grants(
    g: GuardDep, users: UserServiceDep,
    grant_status: Annotated[Literal["pending", "approved", "rejected"] | None, Query(alias="status")] = "pending",
) -> dict[str, list[RoleGrantPublic]]:
    return {"items": users.list_grants(g, status=grant_status)}


@router.post("/role-grants/{grant_id}/approve", response_model=RoleGrantPublic, tags=["users"],
             summary="Approve a pending grant: a security administrator, not the one who asked nor the user")
def approve_role_grant(g: GuardDep, users: UserServiceDep, grant_id: str) -> RoleGrantPublic:
    return users.decide_grant(g, grant_id, approve=True)


@router.post("/role-grants/{grant_id}/reject", response_model=RoleGrantPublic, tags=["users"],
             summary="Reject a pending grant (a new account it was for stays disabled)")
def reject_role_grant(g: GuardDep, users: UserServiceDep, grant_id: str) -> RoleGrantPublic:
    return users.decide_grant(g, grant_id, approve=False)


# External identities (OIDC) ---------------------------------------------------------------


@router.post("/users/{user_id}/identities", status_code=status.HTTP_202_ACCEPTED, response_model=IdentityLinkPublic,
             tags=["users"], summary="Ask to link an external (OIDC) identity to a user; a security administrator "
             "approves it (the two-person rule)")
def request_identity_link(g: GuardDep, runtime: RuntimeDep, user_id: str,
                          body: IdentityLinkCreate) -> IdentityLinkPublic:
    return runtime.identity_links.request(g, user_id, body, configured_issuer=runtime.settings.oidc_issuer)


@router.get("/identity-links", response_model=dict[str, list[IdentityLinkPublic]], tags=["users"],
            summary="Links of external identities to accounts, by status")
def list_identity_links(
    g: GuardDep, runtime: RuntimeDep,
    link_status: Annotated[Literal["pending", "approved", "rejected"] | None, Query(alias="status")] = "pending",
) -> dict[str, list[IdentityLinkPublic]]:
    return {"items": runtime.identity_links.list(g, status=link_status)}


@router.post("/identity-links/{link_id}/approve", response_model=IdentityLinkPublic, tags=["users"],
             summary="Approve a pending link: a security administrator, not the one who asked nor the user")
def approve_identity_link(g: GuardDep, runtime: RuntimeDep, link_id: str) -> IdentityLinkPublic:
    return runtime.identity_links.decide(g, link_id, approve=True)


@router.post("/identity-links/{link_id}/reject", response_model=IdentityLinkPublic, tags=["users"],
             summary="Reject a pending link")
def reject_identity_link(g: GuardDep, runtime: RuntimeDep, link_id: str) -> IdentityLinkPublic:
    return runtime.identity_links.decide(g, link_id, approve=False)


# Sessions -------------------------------------------------------------------------------


@router.get("/me/sessions", response_model=dict[str, list[SessionPublic]], tags=["identity"],
            summary="Your live sessions (API tokens and page sessions): when, from where, how")
def my_sessions(g: GuardDep, runtime: RuntimeDep, token: BearerToken) -> dict[str, list[SessionPublic]]:
    return {"items": runtime.sessions.own(g, current_hash=token_hash(runtime.ring, token))}


@router.delete("/me/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, tags=["identity"],
               summary="End one of your sessions")
def end_my_session(g: GuardDep, runtime: RuntimeDep, session_id: str) -> None:
    runtime.sessions.end(g, session_id)


@router.get("/me/sign-ins", response_model=dict[str, list[SignInPublic]], tags=["identity"],
            summary="Your last 50 sign-in attempts: time, address, method, success")
def my_sign_ins(g: GuardDep, runtime: RuntimeDep) -> dict[str, list[SignInPublic]]:
    return {"items": runtime.sessions.history(g)}


@router.post("/users/{user_id}/end-sessions", response_model=SessionsEnded, tags=["users"],
             summary="End every session of a user (administrator or security administrator)")
def end_user_sessions(g: GuardDep, runtime: RuntimeDep, user_id: str) -> SessionsEnded:
    return runtime.sessions.end_all_of(g, user_id)
