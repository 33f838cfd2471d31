"""One place maps every error to an answer: the JSON error shape (docs/api.md) or an error page."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.db import is_busy
from core.errors import Busy, ShouhuError, field_errors
from core.redact import safe_traceback
from web.app import error_page

log = logging.getLogger("shouhu")

# Answered in the JSON error shape; every other path is a page, answered with an error page.
JSON_PATHS = ("/api/", "/healthz", "/readyz", "/openapi.json", "/docs")


def wants_html(request: Request) -> bool:
    return not request.url.path.startswith(JSON_PATHS)


async def domain_error(request: Request, exc: ShouhuError) -> Response:
    if wants_html(request):
        response = error_page(request, exc.status, exc.message)
        response.headers.update(exc.headers())
        return response
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())


async def busy(request: Request, exc: Exception) -> Response:
    """A lock or a pooled connection not had in time is a 503 to retry, never a 500."""
    if not is_busy(exc):
        return await unexpected(request, exc)
    log.warning("%s busy %s", getattr(request.state, "request_id", "-"), safe_traceback(exc))
    return await domain_error(request, Busy())


async def validation_error(request: Request, exc: RequestValidationError) -> Response:
    if wants_html(request):
        return error_page(request, 422, "提交的数据有误，请返回检查后重试。")
    body = {"error": {"code": "invalid_input", "message": "提交的数据有误，请检查标出的字段。",
                      "details": {"fields": field_errors(exc.errors())}}}
    return JSONResponse(body, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    codes = {404: ("not_found", "请求的地址不存在。"), 405: ("method_not_allowed", "不支持该请求方法。")}
    code, message = codes.get(exc.status_code, ("http_error", "请求无法处理。"))
    if wants_html(request):
        return error_page(request, exc.status_code, message)
    return JSONResponse({"error": {"code": code, "message": message, "details": {}}},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def unexpected(request: Request, exc: Exception) -> Response:
    log.error("%s unhandled %s", getattr(request.state, "request_id", "-"), safe_traceback(exc))
    if wants_html(request):
        return error_page(request, 500, "服务器内部错误，请稍后重试。")
    return JSONResponse(
        {"error": {"code": "internal_error", "message": "服务器内部错误。", "details": {}}},
        status_code=500,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers: domain errors, bad input, unknown paths, busy, and anything else (500)."""
    app.add_exception_handler(ShouhuError, domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected)
    app.add_exception_handler(OperationalError, busy)
    app.add_exception_handler(SATimeoutError, busy)
