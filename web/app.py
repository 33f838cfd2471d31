"""The pages people use: sign-in, the home page of each role, and the feature pages.

Feature pages live in their own modules (web/casework.py, web/documents.py,
web/sealed.py, web/audit.py, web/admin.py) and are included here.
"""

from __future__ import annotations

import base64
import hmac
import importlib
import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select

from access_control.actions import Action
from access_control.addresses import client_address
from access_control.audit import AuditLog
from access_control.deps import get_runtime
from access_control.identity import User
from access_control.oidc import OidcRefused, oidc_login
from access_control.policy import Resource, home_panel
from access_control.sealed import SealedRequest
from access_control.users import complete_second_factor
from access_control.users import login as password_login
from core.errors import (
    LoginBusy,
    LoginFailed,
    LoginThrottled,
    OidcSignInFailed,
    PasswordSignInDisabled,
    SecondFactorFailed,
)
from core.keys import status as key_status
from web.admin import KEY_STATES
from web.pages import HERE, done, render
from web.sealed import STATUS_NAMES
from web.session import (
    CHALLENGE_COOKIE,
    CsrfChecked,
    LoginRequired,
    PageGuard,
    PageSession,
    PasswordChangeFirst,
    SecondFactorFirst,
    clear_challenge_cookie,
    clear_cookie,
    local_target,
    login_csrf,
    login_csrf_ok,
    login_nonce,
    login_url,
    logout,
    set_challenge_cookie,
    set_cookie,
    set_login_cookie,
)

router = APIRouter(include_in_schema=False)

FEATURES = ("web.casework", "web.documents", "web.sealed", "web.audit", "web.admin", "web.account", "web.verify")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'; connect-src 'self'")


def install(app: FastAPI) -> None:
    """Mount the pages, their static files and their error handling on the app."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)
    for name in FEATURES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.include_router(module.router)

    @app.exception_handler(LoginRequired)
    async def to_login(_request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    @app.exception_handler(PasswordChangeFirst)
    async def to_password_change(_request: Request, _exc: PasswordChangeFirst) -> Response:
        return RedirectResponse("/password", status_code=303)

    @app.exception_handler(SecondFactorFirst)
    async def to_second_factor(_request: Request, _exc: SecondFactorFirst) -> Response:
        return RedirectResponse("/mfa", status_code=303)


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    titles = {401: "请先登录", 403: "无权访问", 404: "未找到", 409: "操作冲突", 410: "记录已销毁",
              413: "提交内容过大", 422: "输入有误", 503: "暂不可用"}
    return render(request, "error.html.j2", status_code=status, title=titles.get(status, "出错了"), message=message,
                  status=status)


# sign-in --------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:  # noqa: A002
    return _login_form(request, next=local_target(next))


def _login_form(request: Request, *, next: str, error: str | None = None, username: str = "",  # noqa: A002
                status_code: int = 200) -> HTMLResponse:
    runtime = get_runtime(request)
    nonce = login_nonce(request)
    response = render(request, "login.html.j2", status_code=status_code, next=next, error=error, username=username,
                      login_csrf=login_csrf(runtime, nonce),
                      oidc_name=runtime.settings.oidc_provider_name if runtime.settings.oidc_configured else None)
    set_login_cookie(response, runtime, nonce)
    return response


@router.post("/login", response_class=HTMLResponse)
def login_submit(
    request: Request,
    session: PageSession,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    next: Annotated[str, Form(max_length=300)] = "/",  # noqa: A002
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    runtime = get_runtime(request)
    target = local_target(next)
    if not login_csrf_ok(runtime, request, csrf_token):
        return _login_form(request, next=target, username=username, status_code=403,
                           error="登录页面已过期或来源不明，请重新输入用户名和密码。")
    try:
        step = password_login(
            session, ring=runtime.ring, passwords=runtime.passwords, throttle=runtime.throttle, audit=runtime.audit,
            username=username, password=password, request_id=request.state.request_id, now=runtime.clock(),
            ttl=runtime.settings.token_ttl_seconds, kind="web",
            address=client_address(request, runtime.settings.trusted_proxies),
            challenge_ttl=runtime.settings.mfa_challenge_seconds,
            password_allowed=lambda roles: runtime.policy.password_sign_in_allowed(
                roles, runtime.settings.password_login_disabled_roles))
    except (LoginFailed, LoginThrottled, LoginBusy, PasswordSignInDisabled) as exc:
        response = _login_form(request, next=target, error=exc.message, username=username, status_code=exc.status)
        response.headers.update(exc.headers())
        return response
    if step.challenge is not None:
        # The second step: the challenge waits in a cookie of the sign-in pages' own.
        redirect = RedirectResponse(f"/login/mfa?next={quote(target, safe='/')}", status_code=303)
        set_challenge_cookie(redirect, runtime, step.challenge)
        return redirect
    redirect = RedirectResponse(target, status_code=303)
    set_cookie(redirect, runtime, step.token or "")
    return redirect


def _challenge_form(request: Request, *, next: str, error: str | None = None,  # noqa: A002
                    status_code: int = 200) -> HTMLResponse:
    runtime = get_runtime(request)
    nonce = login_nonce(request)
    response = render(request, "login_mfa.html.j2", status_code=status_code, next=next, error=error,
                      login_csrf=login_csrf(runtime, nonce), title="动态口令验证")
    set_login_cookie(response, runtime, nonce)
    return response


@router.get("/login/mfa", response_class=HTMLResponse)
def challenge_page(request: Request, next: str | None = None) -> Response:  # noqa: A002
    if not request.cookies.get(CHALLENGE_COOKIE):
        return RedirectResponse(login_url(next), status_code=303)
    return _challenge_form(request, next=local_target(next))


@router.post("/login/mfa", response_class=HTMLResponse)
def challenge_submit(
    request: Request,
    session: PageSession,
    code: Annotated[str, Form(max_length=32)] = "",
    next: Annotated[str, Form(max_length=300)] = "/",  # noqa: A002
    csrf_token: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    runtime = get_runtime(request)
    target = local_target(next)
    challenge = request.cookies.get(CHALLENGE_COOKIE)
    if not challenge:
        return RedirectResponse(login_url(target), status_code=303)
    if not login_csrf_ok(runtime, request, csrf_token):
        return _challenge_form(request, next=target, status_code=403, error="页面已过期或来源不明，请重新输入。")
    try:
        token = complete_second_factor(
            session, ring=runtime.ring, throttle=runtime.throttle, audit=runtime.audit,
            second_factor=runtime.second_factor, challenge=challenge, code=code,
            request_id=request.state.request_id, now=runtime.clock(), ttl=runtime.settings.token_ttl_seconds,
            kind="web", address=client_address(request, runtime.settings.trusted_proxies))
    except (SecondFactorFailed, LoginThrottled) as exc:
        response = _challenge_form(request, next=target, error=exc.message, status_code=exc.status)
        response.headers.update(exc.headers())
        return response
    redirect = RedirectResponse(target, status_code=303)
    set_cookie(redirect, runtime, token)
    clear_challenge_cookie(redirect, runtime)
    return redirect


# OpenID Connect ----------------------------------------------------------------------------

OIDC_COOKIE = "shouhu_oidc"  # state, nonce and PKCE verifier of one sign-in, bound by an HMAC


def _oidc_cookie_value(runtime: Any, data: dict[str, str]) -> str:
    payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode()
    return f"{payload}.{runtime.ring.keyed_hash('oidc-cookie', payload, hex_chars=32)}"


def _oidc_cookie(runtime: Any, request: Request) -> dict[str, str] | None:
    value = request.cookies.get(OIDC_COOKIE, "")
    payload, _, mac = value.partition(".")
    if not payload or not hmac.compare_digest(mac, runtime.ring.keyed_hash("oidc-cookie", payload, hex_chars=32)):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, UnicodeDecodeError):
        return None
    return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else None


def _callback_url(request: Request) -> str:
    """Where the provider sends the browser back: at the public address when one is set (behind a
    reverse proxy the request's own address is the proxy's view, not the browser's)."""
    public = get_runtime(request).settings.public_url
    if public:
        return public.rstrip("/") + str(request.app.url_path_for("oidc_callback"))
    return str(request.url_for("oidc_callback"))


@router.get("/login/oidc")
def oidc_start(request: Request, next: str | None = None) -> Response:  # noqa: A002
    """Send the browser to the provider, keeping this sign-in's state, nonce and verifier."""
    runtime = get_runtime(request)
    target = local_target(next)
    if not runtime.settings.oidc_configured:
        return _login_form(request, next=target, status_code=404, error="本系统未配置统一身份认证平台。")
    try:
        auth = runtime.oidc.authorization(_callback_url(request))
    except OidcRefused:
        return _login_form(request, next=target, status_code=503, error="暂时无法连接统一身份认证平台，请稍后再试。")
    redirect = RedirectResponse(auth.url, status_code=303)
    value = _oidc_cookie_value(runtime, {"state": auth.state, "nonce": auth.nonce, "verifier": auth.verifier,
                                         "next": target})
    # Lax, not Strict: the provider's redirect back to the callback is a cross-site navigation.
    redirect.set_cookie(OIDC_COOKIE, value, max_age=600, httponly=True, secure=runtime.settings.cookie_secure,
                        samesite="lax", path="/login/oidc")
    return redirect


@router.get("/login/oidc/callback", name="oidc_callback", response_class=HTMLResponse)
def oidc_callback(request: Request, session: PageSession, code: str = "", state: str = "",
                  error: str = "") -> Response:
    runtime = get_runtime(request)
    s = runtime.settings
    kept = _oidc_cookie(runtime, request)
    target = local_target(kept.get("next") if kept else None)
    refused: str | None = None
    if not s.oidc_configured:
        refused = "oidc:not_configured"
    elif error:
        refused = "oidc:provider_error"
    elif kept is None or not kept.get("verifier"):
        refused = "oidc:missing_pkce_verifier"
    elif not state or not hmac.compare_digest(state, kept.get("state", "")):
        refused = "oidc:state_mismatch"
    elif not code:
        refused = "oidc:no_code"
    try:
        step = oidc_login(
            session, ring=runtime.ring, audit=runtime.audit, client=runtime.oidc, claim=s.oidc_claim, code=code[:512],
            verifier=(kept or {}).get("verifier", ""), nonce=(kept or {}).get("nonce", ""),
            redirect_uri=_callback_url(request), request_id=request.state.request_id, now=runtime.clock(),
            ttl=s.token_ttl_seconds, challenge_ttl=s.mfa_challenge_seconds,
            address=client_address(request, s.trusted_proxies), refused=refused)
    except OidcSignInFailed as exc:
        response = _login_form(request, next=target, error=exc.message, status_code=exc.status)
        response.delete_cookie(OIDC_COOKIE, path="/login/oidc", httponly=True, secure=s.cookie_secure, samesite="lax")
        return response
    # A page of our own that moves on: the session cookie is SameSite=Strict, and a redirect chain that
    # began at the provider would not send it to the next page.
    if step.challenge is not None:
        response = render(request, "login_continue.html.j2", target=f"/login/mfa?next={quote(target, safe='/')}",
                          title="继续登录")
        set_challenge_cookie(response, runtime, step.challenge)
    else:
        response = render(request, "login_continue.html.j2", target=target, title="继续登录")
        set_cookie(response, runtime, step.token or "")
    response.delete_cookie(OIDC_COOKIE, path="/login/oidc", httponly=True, secure=s.cookie_secure, samesite="lax")
    response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/logout", dependencies=[CsrfChecked])
def logout_submit(request: Request, session: PageSession, g: PageGuard) -> Response:
    runtime = get_runtime(request)
    g.authorize(Action.AUTH_LOGOUT, Resource("token"))
    g.commit()
    g.begin_write()  # the session reads again after the commit: revoking the token is a write
    logout(request, runtime, session)
    response = RedirectResponse(done("/login", "signed_out"), status_code=303)
    clear_cookie(response, runtime)
    return response


# home ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def home(request: Request, g: PageGuard) -> HTMLResponse:
    runtime = get_runtime(request)
    panel = home_panel(g.actor)
    context: dict[str, Any] = {"stats": None, "requests": None, "audit": None, "admin": None}
    if panel == "stats":
        context["stats"] = runtime.visits.statistics(g)
    elif panel == "requests":
        context["requests"] = runtime.sealed.list(g, status=None)["items"]
    elif panel == "audit":
        g.authorize(Action.AUDIT_CHECKPOINT_READ, Resource("audit_log"), commit=True)
        with runtime.db.read_session() as s:
            checkpoints = runtime.audit.checkpoints(s)
            context["audit"] = {"size": AuditLog.size(s), "checkpoint": checkpoints[-1] if checkpoints else None}
    elif panel == "accounts":
        g.authorize(Action.USER_LIST, Resource("user", None, g.actor.region_code), commit=True)
        context["admin"] = {
            "users": g.session.scalar(select(func.count()).select_from(User)),
            "keys": key_status(runtime.db),
            "pending": g.session.scalar(select(func.count()).select_from(SealedRequest)
                                        .where(SealedRequest.status == "pending")),
        }
    else:
        g.authorize(Action.ME_READ, Resource("user", g.actor.user_id), commit=True)
    return render(request, "home.html.j2", status_names=STATUS_NAMES, key_states=KEY_STATES, **context)

