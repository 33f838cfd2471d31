"""Public verification is rate-limited per client address; /docs is served from this origin.

The limiter counts on the runtime's clock: the tests move it instead of sleeping.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.ratelimit import RateLimiter, client_key
from main import create_app
from runtime import Runtime
from tests.conftest import make_settings, seed_world

CODE = "0000-0000-0000"


@pytest.fixture
def limited(backend, data_dir):
    backend.reset()
    settings = make_settings(data_dir, backend.database_url(data_dir), verify_rate_limit=3,
                             verify_rate_window_seconds=60)
    rt = Runtime.open(settings, require_schema=False)
    rt.initialize()
    seed_world(rt)
    now = [rt.clock()]
    rt.clock = lambda: now[0]
    try:
        yield rt, now
    finally:
        rt.close()


def _client(rt: Runtime, host: str) -> TestClient:
    return TestClient(create_app(runtime=rt), client=(host, 40000))


def _verify(c: TestClient, i: int) -> Any:
    if i % 2:
        return c.post(f"/api/v1/verify/{CODE}", content=b"%PDF-1.7")
    return c.get(f"/api/v1/verify/{CODE}")


def test_verifications_past_the_limit_are_429_with_retry_after(limited):
    rt, now = limited
    with _client(rt, "203.0.113.7") as c, _client(rt, "203.0.113.8") as other:
        assert [_verify(c, i).status_code for i in range(3)] == [404, 404, 404]  # GET and POST count alike
        r = _verify(c, 3)
        assert r.status_code == 429
        assert r.json()["error"]["code"] == "rate_limited" and r.json()["error"]["message"]
        assert int(r.headers["Retry-After"]) == r.json()["error"]["details"]["retry_after_seconds"] == 60
        assert _verify(c, 4).status_code == 429
        # Another address is counted apart.
        assert _verify(other, 0).status_code == 404
        # Time moves on (the runtime's clock): the window has passed.
        now[0] += timedelta(seconds=30)
        assert int(_verify(c, 0).headers["Retry-After"]) == 30
        now[0] += timedelta(seconds=31)
        assert _verify(c, 0).status_code == 404


def test_refused_verifications_reach_neither_the_database_nor_the_log(limited):
    """A flood past the limit costs no audit event (it would let anyone fill the log)."""
    from access_control.audit import AuditLog

    rt, _ = limited
    with rt.db.read_session() as s:
        before = AuditLog.size(s)
    with _client(rt, "198.51.100.1") as c:
        statuses = [_verify(c, i).status_code for i in range(10)]
    assert statuses == [404] * 3 + [429] * 7
    with rt.db.read_session() as s:
        assert AuditLog.size(s) == before + 3


def test_ipv6_addresses_count_by_their_64_block():
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert client_key(None) == "-"


def test_the_limiter_forgets_the_oldest_client_when_full():
    limiter = RateLimiter(limit=1, window=60, max_keys=2)
    assert limiter.hit("a", 0) is None and limiter.hit("b", 0) is None
    assert limiter.hit("a", 1) == 59
    assert limiter.hit("c", 1) is None  # "b" (seen longest ago) is forgotten
    assert limiter.hit("b", 2) is None


# /docs -----------------------------------------------------------------------------------

EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def test_docs_page_uses_only_local_assets_under_a_strict_csp(client):
    r = client.get("/docs")
    assert r.status_code == 200 and "swagger-ui" in r.text
    csp = r.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "http" not in csp
    assert not EXTERNAL.search(r.text), "the page loads something from another origin"
    assert "<script>" not in r.text  # no inline script: the CSP would block it
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
    assert {"/static/swagger/swagger-ui-bundle.js", "/static/swagger/init.js",
            "/static/swagger/swagger-ui.css"} <= set(assets)
    for path in assets:
        asset = client.get(path)
        assert asset.status_code == 200 and asset.content, path
    init = client.get("/static/swagger/init.js").text
    assert "/openapi.json" in init and "validatorUrl: null" in init
    # The licence of the vendored files is shipped beside them.
    assert "Apache License" in client.get("/static/swagger/LICENSE").text
    # FastAPI's CDN pages are gone.
    assert client.get("/redoc").status_code == 404
    assert client.get("/docs/oauth2-redirect").status_code == 404
