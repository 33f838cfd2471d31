"""One check on every request: no NUL character in any string a client sends.

PostgreSQL text cannot hold U+0000, so a NUL in a login name, a query filter, a
path id or a body field reached the driver and failed as a 500 (SQLite stored
it). No Shouhu value may contain one, so every request is checked once, before
any route runs: a NUL is a 422 naming the field (``members.0.name``, a query
parameter, a path parameter), never echoing the value.

The check reads query and path parameters, and JSON and URL-encoded form bodies
(already read by then for the route's own parsing, and kept); other bodies are the
routes' business.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from core.errors import InvalidInput

MESSAGE = "含有不可见的控制字符"


def _path_of(value: Any, prefix: tuple[str, ...] = ()) -> tuple[str, ...] | None:
    """Where in a parsed JSON value the first string with a NUL is (a key counts as its field)."""
    if isinstance(value, str):
        return prefix if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in str(key):
                return prefix or ("body",)  # a key names no field of ours: its parent
            found = _path_of(item, (*prefix, str(key)))
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _path_of(item, (*prefix, str(i)))
            if found is not None:
                return found
    return None


def _refuse(field: str, location: str) -> InvalidInput:
    return InvalidInput.one(field if "\x00" not in field else location, MESSAGE, location=location)


async def refuse_nul(request: Request) -> None:
    """App-wide dependency: a NUL anywhere in the request's strings is a 422 naming the field."""
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise _refuse(name, "path")
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise _refuse(name, "query")
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        body = await request.body()
        if b"\\u0000" not in body.lower() and b"\x00" not in body:
            return
        try:
            parsed = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return  # the route answers 422 for a body that is not JSON
        where = _path_of(parsed)
        if where is not None:
            raise _refuse(".".join(where) or "body", "body")
    elif media == "application/x-www-form-urlencoded":
        form = await request.form()  # parsed (and kept) by the route's own form parameters already
        for name, value in form.multi_items():
            if "\x00" in name or (isinstance(value, str) and "\x00" in value):
                raise _refuse(name, "body")
