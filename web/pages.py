"""Shared pieces of the pages: the template environment, navigation, form helpers.

Pages call the same services as the API with a Guard of the signed-in user,
so policy and audit apply unchanged. Templates are Jinja2 with autoescape;
there is no inline script or style anywhere (the Content-Security-Policy
forbids both), so templates use classes only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData

from access_control.guard import Guard
from access_control.identity import Actor
from access_control.policy import sees_page
from core.categories import label as category_label
from core.categories import minor_category_tags
from core.errors import InvalidInput, ShouhuError, field_errors
from doc_templates.kinds import CATEGORY_LABELS, CATEGORY_SHORT

HERE = Path(__file__).resolve().parent
LOCAL_TZ = ZoneInfo("Asia/Shanghai")

# (path, label); who sees each entry is access_control.policy.PAGE_ROLES
NAV: list[tuple[str, str]] = [
    ("/", "首页"),
    ("/households", "家庭档案"),
    ("/minors", "未成年人"),
    ("/documents", "公文"),
    ("/search", "检索"),
    ("/statistics", "督查统计"),
    ("/sealed", "封存记录查询"),
    ("/audit", "访问日志"),
    ("/admin", "系统管理"),
]

ROLE_NAMES = {"caseworker": "专干", "supervisor": "督导", "requester": "查询申请人", "custodian": "封存记录保管人",
              "auditor": "审计员", "admin": "系统管理员",
              "security_admin": "安全保密管理员"}
SEX_NAMES = {"male": "男", "female": "女"}


def local_time(value: datetime | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(LOCAL_TZ).strftime("%Y-%m-%d %H:%M")


def cn_date(value: date | str | None) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    return f"{value.year}年{value.month}月{value.day}日"


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    # Templates are read once, below, and never checked on disk again: the public verification
    # page renders on the event loop (web.verify) and must do no file I/O there.
    auto_reload=False,
    cache_size=-1,
)
env.filters.update(local_time=local_time, cn_date=cn_date)
env.globals.update(category_labels=CATEGORY_LABELS, category_short=CATEGORY_SHORT, role_names=ROLE_NAMES,
                   sex_names=SEX_NAMES, minor_category_tags=minor_category_tags, category_label=category_label)
for _name in env.list_templates(extensions=["j2"]):
    env.get_template(_name)


def nav_for(actor: Actor | None) -> list[tuple[str, str]]:
    if actor is None:
        return []
    return [(path, label) for path, label in NAV if sees_page(actor, path)]


# What a page says after the action that led to it (``?done=saved`` on the redirect): a fixed
# table, so the address never carries text of its own.
DONE = {
    "saved": "已保存。",
    "signed_out": "已退出登录。",
    "applied": "申请已提交。保管单位将在下方“审批期限”之前作出决定，决定后即可在本页查看结果。",
    "decided": "审批决定已记录。",
    "revoked": "授权已撤销。",
    "replied": "查询告知函已出具。",
    "approved": "已批准，角色已生效。",
    "rejected": "已驳回。",
    "disabled": "账号已停用，其登录会话均已失效。",
    "sessions_ended": "该用户的全部登录会话已结束，须重新登录。",
}


def done(url: str, what: str) -> str:
    """``url`` with the note of what was just done (a key of ``DONE``)."""
    path, mark, fragment = url.partition("#")
    return f"{path}{'&' if '?' in path else '?'}done={what}{mark}{fragment}"


def render(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    actor: Actor | None = getattr(request.state, "actor", None)
    html = env.get_template(template).render(
        request=request, actor=actor, nav=nav_for(actor), csrf=getattr(request.state, "csrf", ""),
        path=request.url.path, done_note=DONE.get(request.query_params.get("done", "")), **context,
    )
    return HTMLResponse(html, status_code=status_code)


def form_to_nested(form: FormData | Mapping[str, Any], *, skip: tuple[str, ...] = ("csrf_token",)) -> dict[str, Any]:
    """``members.0.name=…`` style names into nested dicts and lists; empty strings dropped,
    empty list rows dropped, ``x[]`` names collected into lists."""
    out: dict[str, Any] = {}
    items = form.multi_items() if isinstance(form, FormData) else list(form.items())
    for key, value in items:
        if key in skip or not isinstance(value, str):
            continue
        value = value.strip()
        if key.endswith("[]"):
            if value:
                out.setdefault(key[:-2], []).append(value)
            continue
        if value == "":
            continue
        parts = key.split(".")
        node: Any = out
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            nxt: Any = None if last else ([] if parts[i + 1].isdigit() else {})
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append(None)
                if last:
                    node[idx] = value
                else:
                    node[idx] = node[idx] if node[idx] is not None else nxt
                    node = node[idx]
            else:
                if last:
                    node[part] = value
                else:
                    node = node.setdefault(part, nxt)
    compact: dict[str, Any] = _compact(out)
    return compact


def _compact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value if v not in (None, {}, [])]
    return value


def errors_by_field(exc: ShouhuError | ValidationError, prefix: str = "") -> dict[str, str]:
    """Field path -> Chinese message, for showing next to each field."""
    if isinstance(exc, ValidationError):
        fields = field_errors(exc.errors(), location="body")
    else:
        fields = exc.details.get("fields", []) if isinstance(exc, InvalidInput) else []
        if not fields and "field" in exc.details:
            fields = [{"field": exc.details["field"], "message": exc.message}]
    out: dict[str, str] = {}
    for f in fields:
        name = f["field"]
        if prefix and name.startswith(prefix):
            name = name[len(prefix):]
        out.setdefault(name, f["message"])
    return out


def failed(g: Guard, exc: ShouhuError | ValidationError) -> dict[str, str]:
    """Log a refused attempt as the API would (the guard's 'allowed' events become 'error'
    events) and name the fields it was about, for showing next to them (``_form`` if none)."""
    g.fail(exc)
    errors = errors_by_field(exc)
    if not errors:
        errors = {"_form": exc.message if isinstance(exc, ShouhuError) else "提交的数据有误。"}
    return errors


def validate(model: type[BaseModel], data: dict[str, Any]) -> BaseModel:
    """Validate form data; a failure is an InvalidInput naming the fields."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(field_errors(exc.errors(), location="body")) from None
