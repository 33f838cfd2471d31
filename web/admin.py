"""The administrator's pages: users (create, disable, reset password), organisations,
key rotation status. No case content: administrators see accounts and keys only.

A temporary password is shown once, in the answer to the form that made it; it is
stored nowhere but as a password hash (the page is served with ``no-store``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select

from access_control.actions import Action, Role
from access_control.deps import get_runtime
from access_control.guard import Guard
from access_control.identity import Org, OrgType, User
from access_control.policy import Resource
from access_control.users import UserCreate
from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from core.keys import status as key_status
from web.pages import ROLE_NAMES, done, failed, form_to_nested, render, validate
from web.session import CsrfChecked, FormDep, PageGuard

router = APIRouter(include_in_schema=False)

ORG_TYPE_NAMES = {
    OrgType.CIVIL_AFFAIRS: "民政部门", OrgType.VILLAGE_COMMITTEE: "村（居）民委员会",
    OrgType.TOWNSHIP_OFFICE: "乡镇人民政府（街道办事处）", OrgType.RESCUE_CENTRE: "未成年人救助保护机构",
    OrgType.LEADING_GROUP_OFFICE: "未成年人保护工作领导小组办公室", OrgType.COURT: "人民法院",
    OrgType.PROCURATORATE: "人民检察院", OrgType.POLICE: "公安机关", OrgType.JUSTICE: "司法行政部门",
    OrgType.DISCIPLINE_INSPECTION: "纪检监察机关",
    OrgType.EDUCATION: "教育部门", OrgType.SCHOOL: "学校", OrgType.HOSPITAL: "医疗机构", OrgType.IT: "信息技术部门",
    OrgType.OTHER: "其他",
}
KEY_STATES = {"active": "使用中", "retired": "已退役"}


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return render(request, template, status_code=status_code, org_type_names=ORG_TYPE_NAMES,
                  key_states=KEY_STATES, **context)


def orgs_in_scope(g: Guard) -> list[Org]:
    """The organisations below the administrator's region node (as GET /api/v1/orgs)."""
    g.authorize(Action.ORG_LIST, Resource("org", None, g.actor.region_code), commit=True)
    return list(g.session.scalars(g.scoped(select(Org), Org.region_code).order_by(Org.region_code, Org.name)))


# users ------------------------------------------------------------------------------------


@router.get("/admin", response_class=HTMLResponse)
def users(request: Request, g: PageGuard) -> HTMLResponse:
    rt = get_runtime(request)
    items = rt.users.list(g, org_id=None)
    return page(request, "admin/users.html.j2", title="用户管理", items=items,
                may_manage=g.decide(Action.USER_DISABLE, Resource("user")).allowed,
                pending=sum(1 for u in items if u.pending_grant is not None))


def _new_user_page(request: Request, g: Guard, *, status_code: int = 200, values: dict[str, Any] | None = None,
                   errors: dict[str, str] | None = None) -> HTMLResponse:
    orgs = orgs_in_scope(g)
    return page(request, "admin/user_new.html.j2", status_code=status_code, title="新建用户",
                orgs=[(o.id, f"{o.name}（{o.region_code}）") for o in orgs],
                roles=[(r.value, ROLE_NAMES.get(r.value, r.value)) for r in Role],
                values=values or {"roles": []}, errors=errors or {})


def _require_create(g: Guard) -> None:
    resource = Resource("user", None, g.actor.region_code, existing=False)
    g.require(Action.USER_CREATE, resource)


@router.get("/admin/users/new", response_class=HTMLResponse)
def new_user(request: Request, g: PageGuard) -> HTMLResponse:
    _require_create(g)
    return _new_user_page(request, g)


@router.post("/admin/users/new", response_class=HTMLResponse, dependencies=[CsrfChecked])
def create_user(request: Request, g: PageGuard, form: FormDep) -> HTMLResponse:
    rt = get_runtime(request)
    _require_create(g)
    data = form_to_nested(form)
    values: dict[str, Any] = {k: data[k] for k in ("username", "name", "org_id") if k in data}
    values["roles"] = [r for r in data.get("roles", []) if isinstance(r, str)]
    try:
        body = validate(UserCreate, {**values, "roles": values["roles"]})
        if not isinstance(body, UserCreate):
            raise TypeError("validate() returned no UserCreate")
        created = rt.users.create(g, body)
    except (InvalidInput, Conflict, Forbidden, NotFound) as exc:
        errors = failed(g, exc)
        # "roles.0" (an unknown role) belongs to the roles group
        for name in [n for n in errors if n.startswith("roles.")]:
            errors.setdefault("roles", errors.pop(name))
        return _new_user_page(request, g, status_code=exc.status, values=values, errors=errors)
    return page(request, "admin/password.html.j2", title="用户已创建" if created.pending_grant is None
                else "用户已创建，待第二名管理员批准", user=created, password=created.temporary_password, created=True,
                status_code=202 if created.pending_grant is not None else 200)


@router.post("/admin/users/{user_id}/disable", dependencies=[CsrfChecked])
def disable_user(request: Request, g: PageGuard, user_id: str) -> Response:
    rt = get_runtime(request)
    rt.users.disable(g, user_id)
    return RedirectResponse(done("/admin", "disabled"), status_code=303)


@router.post("/admin/users/{user_id}/end-sessions", dependencies=[CsrfChecked])
def end_user_sessions(request: Request, g: PageGuard, user_id: str) -> Response:
    rt = get_runtime(request)
    rt.sessions.end_all_of(g, user_id)
    return RedirectResponse(done("/admin", "sessions_ended"), status_code=303)


@router.post("/admin/users/{user_id}/reset-password", response_class=HTMLResponse, dependencies=[CsrfChecked])
def reset_password(request: Request, g: PageGuard, user_id: str) -> HTMLResponse:
    rt = get_runtime(request)
    temporary = rt.users.reset_password(g, user_id)
    user = g.session.get(User, user_id)
    return page(request, "admin/password.html.j2", title="密码已重置",
                user={"username": user.username if user else user_id, "name": user.display_name if user else ""},
                password=temporary.temporary_password, created=False)


# the two-person rule -------------------------------------------------------------------------

GRANT_STATUS = {"pending": "待批准", "approved": "已批准", "rejected": "已驳回"}


@router.get("/admin/grants", response_class=HTMLResponse)
def grants(request: Request, g: PageGuard, status: str = "pending") -> HTMLResponse:
    rt = get_runtime(request)
    status = status if status in GRANT_STATUS else "pending"
    items = rt.users.list_grants(g, status=status)
    return page(request, "admin/grants.html.j2", title="授权审批", items=items, status=status,
                grant_status=GRANT_STATUS,
                may_approve=g.decide(Action.ROLE_GRANT_APPROVE, Resource("role_grant")).allowed)


@router.post("/admin/grants/{grant_id}/{verdict}", response_class=HTMLResponse, dependencies=[CsrfChecked])
def decide_grant(request: Request, g: PageGuard, grant_id: str, verdict: str) -> Response:
    rt = get_runtime(request)
    if verdict not in ("approve", "reject"):
        raise NotFound()
    try:
        rt.users.decide_grant(g, grant_id, approve=verdict == "approve")
    except (Forbidden, Conflict, InvalidInput) as exc:
        # Refused (e.g. the administrator who asked may not approve): say why on the list.
        failed(g, exc)
        items = rt.users.list_grants(g, status="pending")
        return page(request, "admin/grants.html.j2", status_code=exc.status, title="授权审批", items=items,
                    status="pending", grant_status=GRANT_STATUS, error=exc.message)
    return RedirectResponse(done("/admin/grants", "approved" if verdict == "approve" else "rejected"),
                            status_code=303)


# organisations and keys -------------------------------------------------------------------


@router.get("/admin/orgs", response_class=HTMLResponse)
def orgs(request: Request, g: PageGuard) -> HTMLResponse:
    rows = orgs_in_scope(g)
    counts = dict(g.session.execute(select(User.org_id, func.count()).group_by(User.org_id)).all())
    return page(request, "admin/orgs.html.j2", title="单位", items=rows, counts=counts)


@router.get("/admin/keys", response_class=HTMLResponse)
def keys(request: Request, g: PageGuard) -> HTMLResponse:
    rt = get_runtime(request)
    # No action reads key status alone; it is an administrator's page (as on the home page).
    g.authorize(Action.USER_LIST, Resource("user", None, g.actor.region_code), commit=True)
    items = key_status(rt.db)
    return page(request, "admin/keys.html.j2", title="密钥轮换状态", items=items,
                total=sum(k["data_keys"] for k in items))
