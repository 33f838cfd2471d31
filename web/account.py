"""The signed-in user's own account: changing the password, enrolling a second factor.

A user with a temporary password (a new account, or after a reset) is sent here
from every other page until the password is changed. Changing it ends every
other session of the user (API tokens and page sessions); this one continues.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from access_control.actions import Action
from access_control.deps import get_runtime
from access_control.identity import token_hash
from access_control.policy import Resource
from core.errors import Conflict, InvalidInput, NotFound
from web.pages import errors_by_field, render
from web.session import COOKIE, CsrfChecked, FormDep, PageGuard

router = APIRouter(include_in_schema=False)


def _form(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
          done: bool = False) -> HTMLResponse:
    actor = request.state.actor
    return render(request, "account/password.html.j2", status_code=status_code, title="修改密码",
                  errors=errors or {}, done=done, forced=actor.must_change_password and not done)


@router.get("/password", response_class=HTMLResponse)
def password_form(request: Request, g: PageGuard) -> HTMLResponse:
    g.authorize(Action.ME_READ, Resource("user", g.actor.user_id), commit=True)
    return _form(request)


@router.post("/password", response_class=HTMLResponse, dependencies=[CsrfChecked])
def password_change(request: Request, g: PageGuard, form: FormDep) -> HTMLResponse:
    rt = get_runtime(request)
    current, new, again = (str(form.get(k) or "") for k in ("current_password", "new_password", "new_password2"))
    if len(current) > 256 or len(new) > 256:
        return _form(request, status_code=422, errors={"new_password": "密码不能超过256个字符"})
    if new != again:
        return _form(request, status_code=422, errors={"new_password2": "两次输入的新密码不一致"})
    try:
        rt.users.change_own_password(g, current, new,
                                     keep_token_hash=token_hash(rt.ring, request.cookies.get(COOKIE, "")))
    except InvalidInput as exc:
        g.fail(exc)
        return _form(request, status_code=422, errors=errors_by_field(exc))
    # The page's actor was read before the change: show the done page without the forced notice.
    return _form(request, done=True)


# the second factor ------------------------------------------------------------------------


def _mfa_page(request: Request, g: PageGuard, *, status_code: int = 200, **context: object) -> HTMLResponse:
    rt = get_runtime(request)
    forced = rt.policy.must_enrol_second_factor(g.actor)
    values: dict[str, object] = {"codes": None, "enrolment": None, "errors": {}, **context}
    return render(request, "account/mfa.html.j2", status_code=status_code, title="动态口令", forced=forced,
                  enrolled=g.actor.second_factor, **values)


@router.get("/mfa", response_class=HTMLResponse)
def mfa_page(request: Request, g: PageGuard) -> HTMLResponse:
    g.authorize(Action.ME_READ, Resource("user", g.actor.user_id), commit=True)
    return _mfa_page(request, g)


@router.post("/mfa/start", response_class=HTMLResponse, dependencies=[CsrfChecked])
def mfa_start(request: Request, g: PageGuard) -> HTMLResponse:
    rt = get_runtime(request)
    try:
        enrolment = rt.second_factor.start(g)
    except Conflict as exc:
        g.fail(exc)
        return _mfa_page(request, g, status_code=exc.status)
    response = _mfa_page(request, g, enrolment=enrolment)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/mfa/confirm", response_class=HTMLResponse, dependencies=[CsrfChecked])
def mfa_confirm(request: Request, g: PageGuard, form: FormDep) -> HTMLResponse:
    rt = get_runtime(request)
    code = str(form.get("code") or "").strip()[:6]
    try:
        if not code.isdigit() or len(code) != 6:
            raise InvalidInput.one("code", "请输入应用中显示的6位数字")
        codes = rt.second_factor.confirm(g, code)
    except (InvalidInput, NotFound, Conflict) as exc:
        g.fail(exc)
        return _mfa_page(request, g, status_code=exc.status,
                         errors=errors_by_field(exc) if isinstance(exc, InvalidInput) else {"code": exc.message})
    response = _mfa_page(request, g, codes=codes)
    response.headers["Cache-Control"] = "no-store"
    return response


# sessions ---------------------------------------------------------------------------------

METHOD_NAMES = {"password": "密码", "password+totp": "密码＋动态口令", "password+recovery": "密码＋恢复码",
                "oidc": "统一身份认证", "oidc+totp": "统一身份认证＋动态口令", "oidc+recovery": "统一身份认证＋恢复码"}


@router.get("/sessions", response_class=HTMLResponse)
def sessions_page(request: Request, g: PageGuard, done: str | None = None) -> HTMLResponse:
    rt = get_runtime(request)
    current = token_hash(rt.ring, request.cookies.get(COOKIE, ""))
    items = rt.sessions.own(g, current_hash=current)
    history = rt.sessions.history(g)
    return render(request, "account/sessions.html.j2", title="登录会话", items=items, history=history,
                  method_names=METHOD_NAMES, done=done == "ended")


@router.post("/sessions/{session_id}/end", dependencies=[CsrfChecked])
def end_session(request: Request, g: PageGuard, session_id: str) -> RedirectResponse:
    rt = get_runtime(request)
    rt.sessions.end(g, session_id)
    return RedirectResponse("/sessions?done=ended", status_code=303)
