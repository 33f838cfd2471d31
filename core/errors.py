"""Domain errors. Services raise these; one handler maps them to the API error shape.

The shape is ``{"error": {"code", "message", "details"}}``. Messages are
Simplified Chinese for people; codes are stable snake_case for programs.
No message or detail ever carries personal data.
"""

from __future__ import annotations

from typing import Any


class ShouhuError(Exception):
    status = 500
    code = "internal_error"
    message = "服务器内部错误。"

    def __init__(self, message: str | None = None, *, details: dict[str, Any] | None = None):
        self.message = message or type(self).message
        self.details = details or {}
        super().__init__(self.message)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class Unauthorized(ShouhuError):
    status = 401
    code = "unauthorized"
    message = "未登录或登录已失效，请重新登录。"


class LoginFailed(ShouhuError):
    status = 401
    code = "invalid_credentials"
    message = "用户名或密码错误。"


class LoginThrottled(ShouhuError):
    status = 429
    code = "too_many_attempts"
    message = "登录失败次数过多，请稍后再试。"


class Forbidden(ShouhuError):
    """Refused by policy; ``rule`` names the rule, never the record's content."""

    status = 403
    code = "forbidden"
    message = "无权执行此操作。"

    def __init__(self, rule: str, message: str | None = None):
        super().__init__(message, details={"rule": rule})
        self.rule = rule


class NotFound(ShouhuError):
    status = 404
    code = "not_found"
    message = "记录不存在或无权查看。"


class Gone(ShouhuError):
    status = 410
    code = "record_shredded"
    message = "该记录的密钥已销毁，内容已不可恢复。"


class Conflict(ShouhuError):
    status = 409
    code = "conflict"
    message = "与已有记录冲突。"


class InvalidInput(ShouhuError):
    """422 naming the fields: ``fields`` is a list of ``{"field", "location", "message"}``.

    ``location`` is where the field was sent (``body``, ``query``, ``path``), as in
    request validation errors; it defaults to ``body``.
    """

    status = 422
    code = "invalid_input"
    message = "提交的数据有误，请检查标出的字段。"

    def __init__(self, fields: list[dict[str, str]], message: str | None = None):
        fields = [
            {"field": f["field"], "location": f.get("location", "body"), "message": f["message"]}
            for f in fields
        ]
        super().__init__(message, details={"fields": fields})

    @classmethod
    def one(cls, field: str, message: str, *, location: str = "body") -> InvalidInput:
        return cls([{"field": field, "location": location, "message": message}])


class PayloadTooLarge(ShouhuError):
    status = 413
    code = "payload_too_large"
    message = "提交的数据过大。"


class AuditUnavailable(ShouhuError):
    """The audit log cannot be written: no content is returned (fail closed)."""

    status = 503
    code = "audit_unavailable"
    message = "访问日志暂时无法写入，为保护数据，本次请求未返回任何内容。"


class IntegrityFailure(ShouhuError):
    """A stored ciphertext failed authentication: never shown as data."""

    status = 500
    code = "decryption_failed"
    message = "记录校验失败，无法解密。已记录此错误，请联系管理员。"


class ServiceUnavailable(ShouhuError):
    status = 503
    code = "unavailable"
    message = "服务暂不可用。"
