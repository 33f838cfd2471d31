"""Every error, on every path, has the one shape API.md fixes.

``{"error": {"code": "snake_case", "message": "中文句子", "details": {...}}}``

The operations are read from the app's own OpenAPI document, so a new route is
covered the day it is added (after datasette's ``tests/app/test_error_shape.py``).
For each operation: no token is a 401 (public paths aside), unknown ids are a
404 for a caller who may act on such records and never anything but 403/404 for
anyone, and wrong methods and unknown paths under /api/ are errors in the same
shape (elsewhere an unknown path is the pages' HTML 404 page). No answer is ever
a 500.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from httpx2 import Response

from tests.conftest import DEMO_PASSWORD

# Paths that need no token (API.md: sign-in, the public verification and what checks a signature, health).
PUBLIC = {"/api/v1/auth/token", "/api/v1/auth/token/mfa", "/api/v1/verify/{code}", "/healthz", "/readyz",
          "/api/v1/pki/ca.pem", "/api/v1/pki/crl"}
DEMO_USERS = (
    "admin",
    "security.admin",
    "caseworker.haizhou",
    "caseworker.guannan",
    "village.haizhou",
    "supervisor.city",
    "court.haizhou",
    "custodian.city",
    "auditor.city",
)
METHODS = ("get", "post", "put", "patch", "delete")
# Ids no record has: plain, very long, non-ASCII.
UNKNOWN_IDS = ("unknown_0000000000000000000", "x" * 300, "不存在的编号")
# A valid body for operations whose body has required fields, so that an
# unknown id, not the body, decides the answer. Others get ``{}``.
BODIES: dict[tuple[str, str], dict[str, Any] | bytes] = {
    ("post", "/api/v1/documents/{document_id}/versions"): {"fields": {}, "reason": "更正笔误"},
    ("post", "/api/v1/households/{household_id}/visits"): {
        "visited_on": "2026-03-01", "visitor": "王明", "findings": "入户走访，家中无人。"},
    ("post", "/api/v1/records/{record_id}/seal"): {
        "legal_basis": "cpl_286_1", "case_number": "（2026）苏0706刑初1号"},
    ("post", "/api/v1/records/{record_id}/unseal"): {"cause": "undiscovered_crime", "legal_basis": "spp_rules_485"},
    ("post", "/api/v1/sealed-requests/{request_id}/decision"): {"decision": "deny", "reason": "不符合查询条件"},
    ("post", "/api/v1/sealed-requests/{request_id}/revoke"): {"reason": "案件已办结"},
    ("post", "/api/v1/users/{user_id}/identities"): {"issuer": "https://idp.example.gov.cn", "subject": "staff-0001"},
    ("put", "/api/v1/users/{user_id}/roles"): {"roles": ["caseworker"]},
    # A raw PNG body (bytes are sent as they are, with their media type).
    ("put", "/api/v1/orgs/{org_id}/seal-image"): b"\x89PNG\r\n\x1a\n" + b"\x00" * 64,
}
# Required query parameters other than the ones a test is about, with valid values.
REQUIRED_QUERY: dict[str, dict[str, str]] = {
    "/api/v1/search": {"q": "王"},
}
CJK = re.compile(r"[\u4e00-\u9fff]")


def operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    schema = client.app.openapi()  # type: ignore[attr-defined]
    ops = [
        (method, path, op) for path, item in schema["paths"].items() for method, op in item.items() if method in METHODS
    ]
    assert len(ops) >= 15, "the OpenAPI document lost its routes"
    return ops


def fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def template_regex(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")


def served_by_another(paths: dict[str, Any], method: str, url: str, own: str) -> bool:
    """Whether some other template answers ``method url`` (``GET /documents/preview``
    is ``GET /documents/{document_id}``), so a 405 is not to be expected."""
    return any(method in item and template_regex(other).match(url) for other, item in paths.items() if other != own)


def body_for(method: str, path: str, op: dict[str, Any]) -> dict[str, Any] | bytes | None:
    if "requestBody" not in op:
        return None
    return BODIES.get((method, path), {})


def call(
    client: TestClient,
    method: str,
    url: str,
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> Response:
    kwargs: dict[str, Any] = {"headers": headers or {}}
    if isinstance(json, bytes):
        kwargs["content"] = json
        kwargs["headers"] = {**kwargs["headers"], "Content-Type": "image/png"}
    elif json is not None:
        kwargs["json"] = json
    return client.request(method.upper(), url, **kwargs)


def shape_problems(r: Response, status: int | set[int], code: str | None = None) -> list[str]:
    """What is wrong with ``r`` as an error of ``status`` in the API's one shape."""
    allowed = {status} if isinstance(status, int) else status
    if r.status_code == 500:
        return [f"500: {r.text[:300]}"]
    if r.status_code not in allowed:
        return [f"status {r.status_code}, expected {sorted(allowed)}: {r.text[:300]}"]
    if not r.headers.get("content-type", "").startswith("application/json"):
        return [f"content-type {r.headers.get('content-type')!r}"]
    body = r.json()
    if not isinstance(body, dict) or set(body) != {"error"}:
        return [f"body is not {{'error': ...}}: {body}"]
    err = body["error"]
    if not isinstance(err, dict) or set(err) != {"code", "message", "details"}:
        return [f"error keys {sorted(err) if isinstance(err, dict) else err}"]
    problems = []
    if not isinstance(err["code"], str) or not re.fullmatch(r"[a-z][a-z0-9_]*", err["code"]):
        problems.append(f"code {err['code']!r} is not snake_case")
    if code is not None and err["code"] != code:
        problems.append(f"code {err['code']!r}, expected {code!r}")
    if not isinstance(err["message"], str) or not CJK.search(err["message"]):
        problems.append(f"message {err['message']!r} is not a Chinese sentence")
    if not isinstance(err["details"], dict):
        problems.append(f"details {err['details']!r} is not an object")
    return problems


def test_every_operation_needs_a_token(client):
    failures = []
    bad_headers = [
        None,
        {"Authorization": "Bearer not-a-real-token"},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic YWRtaW46dGVzdA=="},
        {"Authorization": f"Bearer shu_{'A' * 43}"},
    ]
    for method, path, op in operations(client):
        if path in PUBLIC:
            continue
        for headers in bad_headers:
            r = call(client, method, fill(path, UNKNOWN_IDS[0]), headers, body_for(method, path, op))
            failures += [f"{method.upper()} {path} with {headers}: {p}" for p in shape_problems(r, 401, "unauthorized")]
    assert not failures, "\n".join(failures)


def test_public_operations_answer_without_a_token(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    # Sign-in without a form is invalid input, not a 401.
    r = client.post("/api/v1/auth/token")
    assert not shape_problems(r, 422, "invalid_input"), r.text
    assert {f["field"] for f in r.json()["error"]["details"]["fields"]} == {"username", "password"}
    r = client.post("/api/v1/auth/token", data={"username": "nobody", "password": "wrong-password"})
    assert not shape_problems(r, 401, "invalid_credentials"), r.text


def test_unknown_ids_are_404_for_those_who_may_act_and_never_more(client, tokens):
    """No caller learns anything from an unknown id: 404, or the role's plain 403."""
    failures = []
    checked = 0
    for method, path, op in operations(client):
        if "{" not in path:
            continue
        for unknown in UNKNOWN_IDS:
            url = fill(path, unknown)
            body = body_for(method, path, op)
            if path in PUBLIC:
                failures += [
                    f"{method.upper()} {path} public: {p}"
                    for p in shape_problems(call(client, method, url, None, body), 404)
                ]
                continue
            statuses = {}
            for username in DEMO_USERS:
                r = call(client, method, url, tokens[username], body)
                statuses[username] = r.status_code
                problems = shape_problems(r, {403, 404})
                if r.status_code == 404:
                    problems += shape_problems(r, 404, "not_found")
                if r.status_code == 403:
                    rule = r.json()["error"]["details"].get("rule", "")
                    if not rule.startswith("role:"):
                        problems.append(f"403 for an unknown id by rule {rule!r}, not by role")
                failures += [f"{method.upper()} {path} ({unknown[:20]}) as {username}: {p}" for p in problems]
            if 404 not in statuses.values():
                failures.append(
                    f"{method.upper()} {path}: no demo user gets a 404 for an unknown "
                    f"id ({statuses}); add a valid body to BODIES if it is a 422"
                )
            checked += 1
    assert checked >= 6
    assert not failures, "\n".join(failures)


def test_wrong_methods_are_405_in_the_error_shape(client, tokens):
    schema = client.app.openapi()  # type: ignore[attr-defined]
    failures = []
    for path, item in schema["paths"].items():
        for method in METHODS:
            url = fill(path, UNKNOWN_IDS[0])
            if method in item or served_by_another(schema["paths"], method, url, path):
                continue
            for headers in (None, tokens["caseworker.haizhou"]):
                r = call(client, method, url, headers, {} if method != "get" else None)
                problems = shape_problems(r, 405, "method_not_allowed")
                if r.status_code == 405 and not r.headers.get("allow"):
                    problems.append("405 without an Allow header")
                failures += [f"{method.upper()} {path}: {p}" for p in problems]
    assert not failures, "\n".join(failures)


def test_unknown_paths_are_404_in_the_error_shape(client, tokens):
    """Under /api/ (and the health checks) an unknown path is the JSON error; elsewhere
    it is the pages' HTML 404 page, never a 500."""
    failures = []
    paths = [
        "/api/v1/nope",
        "/api/v2/households",
        "/api/v1/households/x/y/z",
        "/api/v1/minors/abc/parents",
        "/api/v1/",
        "/api/v1/%E4%B8%AD%E6%96%87",
        "/healthz/extra",
        "/api/v1/users/x/delete",
    ]
    for path in paths:
        for headers in (None, tokens["caseworker.haizhou"]):
            for method in ("get", "post"):
                r = call(client, method, path, headers)
                failures += [f"{method.upper()} {path}: {p}" for p in shape_problems(r, 404, "not_found")]
    for path in ("/nope", "/households/x/y/z", "/%E4%B8%AD%E6%96%87"):
        for headers in (None, tokens["caseworker.haizhou"]):
            for method in ("get", "post"):
                r = call(client, method, path, headers)
                failures += [f"{method.upper()} {path}: {p}" for p in html_404_problems(r)]
    assert not failures, "\n".join(failures)


def html_404_problems(r: Response) -> list[str]:
    """What is wrong with ``r`` as the pages' 404: an HTML page in Chinese, no JSON."""
    if r.status_code != 404:
        return [f"status {r.status_code}, expected 404: {r.text[:300]}"]
    if not r.headers.get("content-type", "").startswith("text/html"):
        return [f"content-type {r.headers.get('content-type')!r}, expected the HTML page"]
    problems = []
    if "<html" not in r.text or "未找到" not in r.text:
        problems.append(f"not the 404 page: {r.text[:300]}")
    if "script-src 'self'" not in r.headers.get("content-security-policy", ""):
        problems.append("the 404 page has no Content-Security-Policy")
    return problems


def test_bad_query_parameters_are_422_naming_the_parameter(client, tokens):
    """Every list operation's ``limit`` and ``cursor`` are checked the same way."""
    failures = []
    checked = 0
    for method, path, op in operations(client):
        names = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        if "limit" not in names:
            continue
        checked += 1
        required = {p["name"] for p in op.get("parameters", []) if p["in"] == "query" and p.get("required")}
        if required - set(REQUIRED_QUERY.get(path, {})):
            failures.append(f"{method.upper()} {path}: add valid values for its required query parameters "
                            f"{sorted(required - set(REQUIRED_QUERY.get(path, {})))} to REQUIRED_QUERY")
            continue
        for params, field in (
            ({"limit": 0}, "limit"),
            ({"limit": 100000}, "limit"),
            ({"limit": "lots"}, "limit"),
            ({"cursor": "%%%"}, "cursor"),
        ):
            params = {**REQUIRED_QUERY.get(path, {}), **params}
            r = client.request(method.upper(), path, params=params, headers=tokens["caseworker.haizhou"])
            problems = shape_problems(r, 422, "invalid_input")
            if not problems:
                fields = r.json()["error"]["details"]["fields"]
                if [(f["field"], f["location"]) for f in fields] != [(field, "query")]:
                    problems.append(f"fields {fields}, expected {field} in the query")
            failures += [f"{method.upper()} {path} {params}: {p}" for p in problems]
    assert checked >= 2
    assert not failures, "\n".join(failures)


def test_error_responses_carry_no_stack_or_internal_detail(client, tokens):
    """Errors say what went wrong for people; no exception names or SQL."""
    samples = [
        client.get("/api/v1/households/unknown", headers=tokens["caseworker.haizhou"]),
        client.get("/api/v1/households/unknown", headers=tokens["auditor.city"]),
        client.get("/api/v1/me"),
        client.post(
            "/api/v1/households",
            content=b"{",
            headers={"content-type": "application/json", **tokens["caseworker.haizhou"]},
        ),
        client.post("/api/v1/auth/token", data={"username": "admin", "password": DEMO_PASSWORD + "x"}),
    ]
    for r in samples:
        assert not shape_problems(r, {401, 403, 404, 422}), r.text
        for marker in ("Traceback", "sqlalchemy", "psycopg", "sqlite", "Exception", 'File "'):
            assert marker not in r.text, (marker, r.text)
