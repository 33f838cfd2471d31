"""Sign-in, tokens and passwords: what a caller sees and what the database keeps.

Time rules (token expiry, lock-out) run on a pinned clock: ``rt.clock`` is the
one clock the app reads, so the tests move it instead of sleeping.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from conftest import DEMO_PASSWORD, bearer, run_sql, sign_in
from fastapi.testclient import TestClient
from sqlalchemy import select

from access_control.identity import Token
from runtime import Runtime

T0 = datetime(2031, 5, 20, 8, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def pin_clock(rt: Runtime, start: datetime = T0) -> Clock:
    clock = Clock(start)
    rt.clock = clock
    return clock



def token_of(client: TestClient, username: str, password: str = DEMO_PASSWORD) -> str:
    r = sign_in(client, username, password)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])



def me(client: TestClient, token: str) -> Any:
    return client.get("/api/v1/me", headers=bearer(token))


def assert_unauthorized(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"


def test_login_gives_a_bearer_token_for_me(client, rt):
    r = sign_in(client, "caseworker.haizhou")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == rt.settings.token_ttl_seconds
    assert r.headers["cache-control"] == "no-store"
    got = me(client, body["access_token"])
    assert got.status_code == 200, got.text
    who = got.json()
    assert who["username"] == "caseworker.haizhou"
    assert who["roles"] == ["caseworker"] and who["region_code"] == "320706"
    assert who["org"]["name"] == "连云港市海州区民政局" and who["org"]["type"] == "civil_affairs"
    assert who["must_change_password"] is False
    # Usernames are not case-sensitive.
    assert sign_in(client, "  CaseWorker.Haizhou ").status_code == 200


def test_wrong_password_and_unknown_user_get_the_same_answer(client):
    wrong = sign_in(client, "caseworker.haizhou", "not-the-password")
    unknown = sign_in(client, "nobody.here", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert wrong.json()["error"]["code"] == "invalid_credentials"
    assert "not-the-password" not in wrong.text and "nobody.here" not in unknown.text


def test_bad_tokens_are_refused(client):
    token = token_of(client, "caseworker.haizhou")
    for bad in (
        "",
        "shu_",
        token[:-1],
        token[:-1] + ("A" if token[-1] != "A" else "B"),
        token + "x",
        token.upper(),
    ):
        assert_unauthorized(client.get("/api/v1/me", headers={"Authorization": f"Bearer {bad}"}))
    assert_unauthorized(client.get("/api/v1/me", headers={"Authorization": f"Basic {token}"}))
    assert_unauthorized(client.get("/api/v1/me"))
    assert me(client, token).status_code == 200


def test_too_many_failures_lock_the_account_even_with_the_right_password(client, rt):
    clock = pin_clock(rt)
    limit = rt.settings.login_max_failures
    for _ in range(limit):
        r = sign_in(client, "caseworker.haizhou", "wrong-password")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    r = sign_in(client, "caseworker.haizhou")
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "too_many_attempts"
    clock.advance(seconds=rt.settings.login_lockout_seconds - 1)
    assert sign_in(client, "caseworker.haizhou").status_code == 429
    # Other accounts are not affected.
    assert sign_in(client, "caseworker.guannan").status_code == 200
    # The lock lifts when its time is over.
    clock.advance(seconds=1)
    assert sign_in(client, "caseworker.haizhou").status_code == 200


def test_unknown_usernames_lock_like_known_ones(client, rt):
    """Lock-out does not tell whether an account exists."""
    pin_clock(rt)
    for _ in range(rt.settings.login_max_failures):
        assert sign_in(client, "ghost.user", "wrong-password").status_code == 401
        assert sign_in(client, "caseworker.guannan", "wrong-password").status_code == 401
    ghost, known = sign_in(client, "ghost.user", "x"), sign_in(client, "caseworker.guannan", "x")
    assert ghost.status_code == known.status_code == 429
    assert ghost.json() == known.json()


def test_failures_count_within_the_window_and_success_resets_them(client, rt):
    clock = pin_clock(rt)
    limit = rt.settings.login_max_failures
    for _ in range(limit - 1):
        assert sign_in(client, "village.haizhou", "wrong-password").status_code == 401
    assert sign_in(client, "village.haizhou").status_code == 200  # resets the count
    for _ in range(limit - 1):
        assert sign_in(client, "village.haizhou", "wrong-password").status_code == 401
    # Failures older than the window do not count.
    clock.advance(seconds=rt.settings.login_window_seconds + 1)
    assert sign_in(client, "village.haizhou", "wrong-password").status_code == 401
    assert sign_in(client, "village.haizhou").status_code == 200


def test_token_expires_after_its_lifetime(client, rt):
    clock = pin_clock(rt)
    token = token_of(client, "supervisor.city")
    ttl = rt.settings.token_ttl_seconds
    with rt.db.session() as s:
        (expires_at,) = s.execute(select(Token.expires_at)).one()
    assert expires_at == T0 + timedelta(seconds=ttl)
    assert me(client, token).status_code == 200
    clock.advance(seconds=ttl - 1)
    assert me(client, token).status_code == 200
    clock.advance(seconds=1)
    assert_unauthorized(me(client, token))
    # A fresh sign-in works at the new time.
    assert me(client, token_of(client, "supervisor.city")).status_code == 200


def test_logout_revokes_only_the_token_used(client):
    first = token_of(client, "caseworker.haizhou")
    second = token_of(client, "caseworker.haizhou")
    r = client.post("/api/v1/auth/logout", headers=bearer(first))
    assert r.status_code == 204, r.text
    assert_unauthorized(me(client, first))
    assert me(client, second).status_code == 200
    assert_unauthorized(client.post("/api/v1/auth/logout", headers=bearer(first)))
    assert_unauthorized(client.post("/api/v1/auth/logout"))


def test_disabled_user_is_locked_out(client, tokens):
    token = token_of(client, "court.haizhou")
    users = client.get("/api/v1/users", headers=tokens["admin"]).json()["items"]
    uid = next(u["id"] for u in users if u["username"] == "court.haizhou")
    r = client.post(f"/api/v1/users/{uid}/disable", headers=tokens["admin"])
    assert r.status_code == 200 and r.json()["disabled"] is True, r.text
    assert_unauthorized(me(client, token))
    # Signing in is refused exactly like a wrong password.
    right, wrong = sign_in(client, "court.haizhou"), sign_in(client, "court.haizhou", "wrong-pass")
    assert right.status_code == wrong.status_code == 401
    assert right.json() == wrong.json()


def new_user(client: TestClient, admin: dict[str, str], username: str, **extra: Any) -> Any:
    orgs = client.get("/api/v1/orgs", headers=admin).json()["items"]
    org = next(o for o in orgs if o["region_code"] == "320706" and o["type"] == "civil_affairs")
    return client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "username": username,
            "name": "新专干",
            "org_id": org["id"],
            "roles": ["caseworker"],
            **extra,
        },
    )


def test_new_user_signs_in_with_a_temporary_password_and_must_change_it(client, tokens, rt):
    r = new_user(client, tokens["admin"], "new.caseworker")
    assert r.status_code == 201, r.text
    created = r.json()
    temporary = created["temporary_password"]
    assert temporary and len(temporary) >= rt.settings.min_password_length
    assert created["must_change_password"] is True and created["region_code"] == "320706"
    # Stored as an argon2id hash only.
    (stored,) = run_sql(rt, "SELECT password_hash FROM users WHERE username = 'new.caseworker'")[0]
    assert stored.startswith("$argon2id$") and temporary not in stored

    token = token_of(client, "new.caseworker", temporary)
    assert me(client, token).json()["must_change_password"] is True

    def change(current: str, new: str) -> Any:
        return client.post(
            "/api/v1/me/password",
            headers=bearer(token),
            json={"current_password": current, "new_password": new},
        )

    r = change("wrong-current-password", "Anew-long-password-1")
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["current_password"]
    r = change(temporary, "short")
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["new_password"]
    assert "short" not in r.text
    r = change(temporary, "aaaaaaaaaaaaaaaa")
    assert r.status_code == 422  # long but too simple
    assert me(client, token).json()["must_change_password"] is True

    r = change(temporary, "Anew-long-password-1")
    assert r.status_code == 204, r.text
    assert me(client, token).json()["must_change_password"] is False
    assert sign_in(client, "new.caseworker", temporary).status_code == 401
    assert token_of(client, "new.caseworker", "Anew-long-password-1")


def test_admin_may_set_the_first_password_but_not_a_weak_one(client, tokens):
    r = new_user(client, tokens["admin"], "weak.user", password="short")
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["password"]
    assert "short" not in r.text
    r = new_user(client, tokens["admin"], "set.user", password="Chosen-password-2031")
    assert r.status_code == 201, r.text
    assert r.json()["temporary_password"] is None and r.json()["must_change_password"] is False
    assert me(client, token_of(client, "set.user", "Chosen-password-2031")).status_code == 200
    r = new_user(client, tokens["admin"], "set.user", password="Chosen-password-2031")
    assert r.status_code == 409 and r.json()["error"]["details"] == {"field": "username"}


def test_password_reset_revokes_tokens_and_forces_a_change(client, tokens):
    old_token = token_of(client, "village.haizhou")
    users = client.get("/api/v1/users", headers=tokens["admin"]).json()["items"]
    uid = next(u["id"] for u in users if u["username"] == "village.haizhou")
    r = client.post(f"/api/v1/users/{uid}/reset-password", headers=tokens["admin"])
    assert r.status_code == 200, r.text
    temporary = r.json()["temporary_password"]
    assert_unauthorized(me(client, old_token))
    assert sign_in(client, "village.haizhou").status_code == 401
    token = token_of(client, "village.haizhou", temporary)
    assert me(client, token).json()["must_change_password"] is True


def test_tokens_are_stored_only_as_keyed_hashes(client, rt):
    issued = [token_of(client, name) for name in ("caseworker.haizhou", "auditor.city", "admin")]
    client.post("/api/v1/auth/logout", headers=bearer(issued[0]))
    rows = run_sql(rt, "SELECT * FROM tokens")
    assert len(rows) == 3
    dump = "\n".join(repr(tuple(r)) for r in rows)
    hashes = {r[0] for r in run_sql(rt, "SELECT token_hash FROM tokens")}
    for token in issued:
        assert token not in dump
        assert token[4:] not in dump  # nor without its prefix
        # Keyed: not a plain digest anyone could compute from a leaked token list.
        assert hashlib.sha256(token.encode()).hexdigest() not in hashes
    # Nor anywhere else the service writes.
    for table in ("audit_events", "users", "login_throttle"):
        other = "\n".join(repr(tuple(r)) for r in run_sql(rt, f"SELECT * FROM {table}"))
        for token in issued:
            assert token[4:] not in other, table
