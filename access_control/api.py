"""Routes for sign-in, the caller, regions, organisations and users."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from access_control.actions import Action
from access_control.deps import BearerToken, GuardDep, RuntimeDep, SessionDep
from access_control.identity import Org, User, revoke_token
from access_control.policy import Resource
from access_control.regions import Region
from access_control.users import (
    OrgPublic,
    TemporaryPassword,
    UserCreate,
    UserCreated,
    UserPublic,
    login,
    org_public,
)

router = APIRouter(prefix="/api/v1")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


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


@router.post("/auth/token", response_model=TokenResponse, tags=["auth"],
             summary="Sign in with username and password (OAuth2 password form)")
def create_token(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
) -> TokenResponse:
    token = login(
        session, ring=runtime.ring, passwords=runtime.passwords, throttle=runtime.throttle,
        audit=runtime.audit, username=form.username, password=form.password,
        request_id=request.state.request_id, now=runtime.clock(),
        ttl=runtime.settings.token_ttl_seconds,
    )
    return TokenResponse(access_token=token, expires_in=runtime.settings.token_ttl_seconds)


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
    assert user is not None
    a = g.actor
    return Me(id=a.user_id, username=a.username, name=a.display_name,
              org=MeOrg(id=a.org_id, name=a.org_name, type=a.org_type), roles=list(a.roles),
              region_code=a.region_code, must_change_password=user.must_change_password)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, tags=["identity"])
def change_password(g: GuardDep, runtime: RuntimeDep, body: PasswordChange) -> None:
    runtime.users.change_own_password(g, body.current_password, body.new_password)


@router.get("/regions", tags=["identity"],
            summary="The region tree below the caller's node (the whole tree for admins and auditors)")
def regions(g: GuardDep, runtime: RuntimeDep) -> dict[str, Any]:
    g.authorize(Action.REGION_LIST, Resource("region", g.actor.region_code), commit=True)
    return {"items": [runtime.regions.as_tree(code) for code in g.policy.region_list_roots(g.actor)]}


@router.get("/orgs", response_model=dict[str, list[OrgPublic]], tags=["identity"])
def orgs(g: GuardDep) -> dict[str, list[OrgPublic]]:
    g.authorize(Action.ORG_LIST, Resource("org", None, g.actor.region_code), commit=True)
    path = g.policy.scope_path(g.actor)
    rows = g.session.scalars(
        select(Org).join(Region, Region.code == Org.region_code)
        .where(Region.path.startswith(path, autoescape=True)).order_by(Org.region_code, Org.name)
    )
    return {"items": [org_public(o) for o in rows]}


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=UserCreated, tags=["users"])
def create_user(g: GuardDep, runtime: RuntimeDep, body: UserCreate) -> UserCreated:
    return runtime.users.create(g, body)


@router.get("/users", response_model=dict[str, list[UserPublic]], tags=["users"])
def list_users(g: GuardDep, runtime: RuntimeDep,
               org_id: Annotated[str | None, Query(max_length=40)] = None) -> dict[str, list[UserPublic]]:
    return {"items": runtime.users.list(g, org_id=org_id)}


@router.get("/users/{user_id}", response_model=UserPublic, tags=["users"])
def read_user(g: GuardDep, runtime: RuntimeDep, user_id: str) -> UserPublic:
    return runtime.users.read(g, user_id)


@router.post("/users/{user_id}/disable", response_model=UserPublic, tags=["users"])
def disable_user(g: GuardDep, runtime: RuntimeDep, user_id: str) -> UserPublic:
    return runtime.users.disable(g, user_id)


@router.post("/users/{user_id}/reset-password", response_model=TemporaryPassword, tags=["users"])
def reset_password(g: GuardDep, runtime: RuntimeDep, user_id: str) -> TemporaryPassword:
    return runtime.users.reset_password(g, user_id)
