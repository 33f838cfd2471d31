"""Domain errors. Services raise these; one handler maps them to the API error shape.

The shape is ``{"error": {"code", "message", "details"}}``. Messages are
Simplified Chinese for people; codes are stable snake_case for programs.
No message or detail ever carries personal data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any


class ShouhuError(Exception):
    """The base of every domain error: each subclass names its status, code and message.

    ``class NotFound(ShouhuError, status=404, code="not_found", message="…")``:
    the keywords set the class attributes, so the table of errors reads as one.
    """

    status = 500
    code = "internal_error"
    message = "服务器内部错误。"
    retry_after: int | None = None  # seconds, sent as the Retry-After header

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None,
                          message: str | None = None, retry_after: int | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in (("status", status), ("code", code), ("message", message), ("retry_after", retry_after)):
            if value is not None:
                setattr(cls, name, value)

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        self.message = message or type(self).message
        self.details = details or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class RetryLater(ShouhuError):
    """An error that says when to try again: the Retry-After header and one detail.

    ``detail`` names the detail that carries the seconds (the login errors and the
    verification limit were published with different names, kept for clients).
    """

    detail = "retry_after"

    def __init__(self, retry_after: int | None = None, message: str | None = None):
        seconds = type(self).retry_after if retry_after is None else retry_after
        super().__init__(message, details={self.detail: seconds})
        self.retry_after = seconds


class Unauthorized(ShouhuError, status=401, code="unauthorized", message="未登录或登录已失效，请重新登录。"):
    pass


class LoginFailed(ShouhuError, status=401, code="invalid_credentials", message="用户名或密码错误。"):
    pass


class LoginThrottled(RetryLater, status=429, code="too_many_attempts", message="登录失败次数过多，请稍后再试。",
                     retry_after=60):
    pass


class LoginBusy(RetryLater, status=503, code="login_busy", message="登录请求过多，请稍后再试。", retry_after=2):
    """Too many password checks at once: refused rather than queued (each costs memory)."""


class PasswordChangeRequired(ShouhuError, status=403, code="password_change_required",
                             message="请先修改初始密码或重置后的临时密码，然后才能继续使用。"):
    """A temporary password (new account or reset) allows nothing but changing it."""


class SecondFactorEnrolmentRequired(ShouhuError, status=403, code="second_factor_enrolment_required",
                                    message="您的角色须使用动态口令（双因素认证）：请先绑定动态口令，然后才能继续使用。"):
    """A privileged user without a second factor may do nothing but enrol one."""


class PasswordSignInDisabled(ShouhuError, status=403, code="password_sign_in_disabled",
                             message="您的角色不能使用本系统密码登录，请通过统一身份认证平台登录。"):
    """Local passwords are switched off for one of the user's roles (``password_login_disabled_roles``)."""


class OidcSignInFailed(ShouhuError, status=401, code="oidc_sign_in_failed",
                       message="统一身份认证登录失败，或该身份尚未关联本系统账号，请联系管理员。"):
    """An OIDC sign-in refused: the id_token's checks, an unlinked identity, a disabled account."""


class SecondFactorFailed(ShouhuError, status=401, code="second_factor_invalid",
                         message="动态口令或恢复码不正确、已使用或已过期，请重新输入。"):
    """A wrong, reused or stale one-time code, a used recovery code, or an expired challenge."""


class Forbidden(ShouhuError, status=403, code="forbidden", message="无权执行此操作。"):
    """Refused by policy; ``rule`` names the rule, never the record's content."""

    def __init__(self, rule: str, message: str | None = None):
        super().__init__(message, details={"rule": rule})
        self.rule = rule


class NotFound(ShouhuError, status=404, code="not_found", message="记录不存在或无权查看。"):
    pass


class Gone(ShouhuError, status=410, code="record_shredded", message="该记录的密钥已销毁，内容已不可恢复。"):
    pass


class Conflict(ShouhuError, status=409, code="conflict", message="与已有记录冲突。"):
    pass


class InvalidInput(ShouhuError, status=422, code="invalid_input", message="提交的数据有误，请检查标出的字段。"):
    """422 naming the fields: ``fields`` is a list of ``{"field", "location", "message"}``.

    ``location`` is where the field was sent (``body``, ``query``, ``path``), as in
    request validation errors; it defaults to ``body``.
    """

    def __init__(self, fields: list[dict[str, str]], message: str | None = None):
        fields = [
            {"field": f["field"], "location": f.get("location", "body"), "message": f["message"]}
            for f in fields
        ]
        super().__init__(message, details={"fields": fields})

    @classmethod
    def one(cls, field: str, message: str, *, location: str = "body") -> InvalidInput:
        return cls([{"field": field, "location": location, "message": message}])


class PayloadTooLarge(ShouhuError, status=413, code="payload_too_large", message="提交的数据过大。"):
    pass


class AuditUnavailable(ShouhuError, status=503, code="audit_unavailable",
                       message="访问日志暂时无法写入，为保护数据，本次请求未返回任何内容。", retry_after=2):
    """The audit log cannot be written: no content is returned (fail closed)."""


class IntegrityFailure(ShouhuError, status=500, code="decryption_failed",
                       message="记录校验失败，无法解密。已记录此错误，请联系管理员。"):
    """A stored ciphertext failed authentication: never shown as data.

    The message says the error was recorded: a guarded read or write that raises this
    leaves an 'error' event in the access log (``Guard.fail``), even after the read's
    'allowed' event was committed.
    """


class Busy(ShouhuError, status=503, code="busy", message="服务繁忙，请稍后重试。", retry_after=2):
    """A lock, a connection or a turn could not be had in time: try again shortly."""


class RateLimited(RetryLater, status=429, code="rate_limited", message="请求过于频繁，请稍后再试。"):
    """Too many requests from one client address within the window."""

    detail = "retry_after_seconds"


class ServiceUnavailable(ShouhuError, status=503, code="unavailable", message="服务暂不可用。"):
    pass


# Chinese messages for pydantic's error types. The rejected value is never echoed.
_MESSAGES: dict[str, str] = {
    "missing": "必填字段",
    "extra_forbidden": "不允许的字段",
    "string_type": "应为文本",
    "string_too_short": "长度不能少于{min_length}个字符",
    "string_too_long": "长度不能超过{max_length}个字符",
    "string_pattern_mismatch": "格式不正确",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "int_from_float": "应为整数",
    "bool_type": "应为是或否",
    "bool_parsing": "应为是或否",
    "date_type": "日期格式应为 YYYY-MM-DD",
    "date_parsing": "日期格式应为 YYYY-MM-DD",
    "date_from_datetime_parsing": "日期格式应为 YYYY-MM-DD",
    "date_from_datetime_inexact": "日期格式应为 YYYY-MM-DD",
    "timezone_aware": "时间应带时区偏移，如 2026-12-06T08:00:00+08:00",
    "datetime_type": "时间格式应为 RFC 3339，如 2026-12-06T08:00:00+08:00",
    "datetime_parsing": "时间格式应为 RFC 3339，如 2026-12-06T08:00:00+08:00",
    "datetime_from_date_parsing": "时间格式应为 RFC 3339，如 2026-12-06T08:00:00+08:00",
    "datetime_object_invalid": "时间无效",
    "date_from_datetime_parsing_error": "日期格式应为 YYYY-MM-DD",
    "literal_error": "取值应为：{expected}",
    "enum": "取值应为：{expected}",
    "greater_than_equal": "不能小于{ge}",
    "less_than_equal": "不能大于{le}",
    "list_type": "应为列表",
    "too_short": "至少需要{min_length}项",
    "too_long": "最多{max_length}项",
    "model_type": "应为对象",
    "model_attributes_type": "应为对象",
    "dict_type": "应为对象",
    "json_invalid": "请求体不是有效的JSON",
    "json_type": "请求体不是有效的JSON",
    "union_tag_invalid": "取值无效",
}


_NULL_MESSAGE = "不能为空"
_FIELD = re.compile(r"[a-z_][a-z0-9_]*")
_TYPE_TAGS = {"int", "str", "date", "literal", "list", "dict", "bool", "float", "none"}


def field_errors(
    errors: Iterable[Mapping[str, Any]], *, prefix: tuple[str, ...] = (), location: str | None = None
) -> list[dict[str, str]]:
    """Pydantic errors as ``{"field", "location", "message"}`` with Chinese messages.

    Request validation errors carry their location first (``body``, ``query``);
    for errors from validating a nested value pass ``location`` and ``prefix``
    (e.g. ``("fields",)``) instead.
    """
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for err in errors:
        loc = [str(p) for p in err.get("loc", ())]
        if location is None:
            where, loc = (loc[0] if loc else "body"), loc[1:]
        else:
            where = location
        loc = [*prefix, *loc]
        # Unions report one error per branch ("constrained-int", "function-after[...]"):
        # keep field names and list indexes only, and the first branch's message.
        parts = [p for p in loc if p.isdigit() or (_FIELD.fullmatch(p) and p not in _TYPE_TAGS)]
        if err.get("type") in ("json_invalid", "json_type"):
            parts = []
        field = ".".join(parts) or where
        if field in seen:
            continue
        seen.add(field)
        etype = err.get("type", "")
        ctx = err.get("ctx") or {}
        if "input" in err and err["input"] is None and etype not in ("missing", "value_error"):
            message = _NULL_MESSAGE  # an explicit null where a value is required
        elif etype == "value_error":
            message = str(ctx.get("error", "")) or "取值无效"
        else:
            template = _MESSAGES.get(etype, "取值无效")
            if "expected" in ctx:
                ctx = {**ctx, "expected": str(ctx["expected"]).replace(" or ", "、").replace("', '", "'、'")}
            try:
                message = template.format(**{k: v for k, v in ctx.items()})
            except (KeyError, IndexError):
                message = template
        out.append({"field": field, "location": where, "message": message})
    return out
