"""Sessions: users see their live sessions and sign-in history and end sessions; administrators end a
user's sessions; page sessions end when idle and at the absolute time-out (settings, read against the
injected clock: the test moves it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from core.clock import ManualClock
from tests.conftest import bearer, run_sql, sign_in, web_login

API = "/api/v1"


def test_users_see_their_sessions_and_history_and_end_one(rt, client):
    assert sign_in(client, "caseworker.haizhou", "not-the-password").status_code == 401
    first = bearer(sign_in(client, "caseworker.haizhou").json()["access_token"])
    second = bearer(sign_in(client, "caseworker.haizhou").json()["access_token"])
    r = client.get(f"{API}/me/sessions", headers=first)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 2 and sorted(i["current"] for i in items) == [False, True]
    assert {i["method"] for i in items} == {"password"} and all(i["address"] for i in items)
    history = client.get(f"{API}/me/sign-ins", headers=first).json()["items"]
    assert [(h["method"], h["success"]) for h in history] == [("password", True), ("password", True),
                                                              ("password", False)]
    assert all(h["address"] for h in history)

    other = next(i["id"] for i in items if not i["current"])
    assert client.delete(f"{API}/me/sessions/{other}", headers=first).status_code == 204
    assert client.get(f"{API}/me", headers=second).status_code == 401
    assert [i["current"] for i in client.get(f"{API}/me/sessions", headers=first).json()["items"]] == [True]
    # Another user's session is not yours to see or end.
    sup = bearer(sign_in(client, "supervisor.city").json()["access_token"])
    mine = client.get(f"{API}/me/sessions", headers=first).json()["items"][0]["id"]
    assert client.delete(f"{API}/me/sessions/{mine}", headers=sup).status_code == 404
    assert client.get(f"{API}/me", headers=first).status_code == 200


def test_administrators_end_a_users_sessions(rt, client, tokens):
    uid = run_sql(rt, "SELECT id FROM users WHERE username = 'caseworker.haizhou'")[0][0]
    cw = bearer(sign_in(client, "caseworker.haizhou").json()["access_token"])
    other = bearer(sign_in(client, "supervisor.city").json()["access_token"])
    assert client.post(f"{API}/users/{uid}/end-sessions", headers=other).status_code == 403
    r = client.post(f"{API}/users/{uid}/end-sessions", headers=tokens["admin"])
    assert r.status_code == 200 and r.json()["ended"] == 1
    assert client.get(f"{API}/me", headers=cw).status_code == 401
    cw = bearer(sign_in(client, "caseworker.haizhou").json()["access_token"])
    r = client.post(f"{API}/users/{uid}/end-sessions", headers=tokens["security.admin"])
    assert r.status_code == 200 and r.json()["ended"] == 1
    assert client.get(f"{API}/me", headers=cw).status_code == 401
    events = run_sql(rt, "SELECT actor, outcome FROM audit_events WHERE action = 'identity:user:end_sessions' "
                         "ORDER BY seq")
    assert [tuple(e) for e in events] == [("supervisor.city", "denied"), ("admin", "allowed"),
                                          ("security.admin", "allowed")]


def _page_client(app: Any, username: str) -> TestClient:
    browser = TestClient(app, base_url="https://testserver")
    assert web_login(browser, username, follow_redirects=False).status_code == 303
    return browser


def test_page_sessions_end_when_idle_and_at_the_absolute_time_out(rt, app):
    clock = ManualClock(datetime(2026, 12, 7, 8, 0, tzinfo=UTC))
    rt.clock = clock
    rt.settings = rt.settings.model_copy(update={"session_idle_minutes": 30, "session_absolute_hours": 1})
    browser = _page_client(app, "caseworker.haizhou")
    # Used every 29 minutes: never idle, but over an hour after sign-in it ends all the same.
    for _ in range(2):
        clock.advance(minutes=29)
        assert browser.get("/", follow_redirects=False).status_code == 200
    clock.advance(minutes=29)
    r = browser.get("/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # Idle for longer than the idle time-out: ends.
    browser = _page_client(app, "caseworker.haizhou")
    clock.advance(minutes=31)
    assert browser.get("/", follow_redirects=False).status_code == 303
    assert run_sql(rt, "SELECT COUNT(*) FROM tokens WHERE kind = 'web' AND revoked_at IS NULL")[0][0] == 0


def test_the_sessions_page_lists_and_ends_sessions(rt, app, client):
    other = bearer(sign_in(client, "caseworker.haizhou").json()["access_token"])
    browser = _page_client(app, "caseworker.haizhou")
    page = browser.get("/sessions")
    assert page.status_code == 200 and "当前会话" in page.text and "最近的登录记录" in page.text
    assert "接口令牌" in page.text and "成功" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    target = re.search(r'action="(/sessions/[^"]+/end)"', page.text).group(1)
    r = browser.post(target, data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/sessions?done=ended"
    assert client.get(f"{API}/me", headers=other).status_code == 401
    assert browser.get("/sessions").status_code == 200
    # An administrator's page ends a user's sessions.
    admin = _page_client(app, "admin")
    users = admin.get("/admin")
    uid = run_sql(rt, "SELECT id FROM users WHERE username = 'caseworker.haizhou'")[0][0]
    assert f"/admin/users/{uid}/end-sessions" in users.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', users.text).group(1)
    r = admin.post(f"/admin/users/{uid}/end-sessions", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    assert browser.get("/", follow_redirects=False).status_code == 303
