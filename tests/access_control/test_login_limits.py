"""Sign-in cannot be raced or used to exhaust memory; passwords are judged for strength.

- Each attempt is counted before its password is checked, in one committed
  UPDATE ... RETURNING: 40 parallel wrong passwords against a real `shouhu serve`
  get at most ``login_max_failures`` checks, the rest 429 with Retry-After.
- Per client address beside per username; X-Forwarded-For counts only from a
  trusted proxy.
- At most ``password_hash_concurrency`` hashes at once; waiting longer than
  ``password_hash_wait_seconds`` is 503 with Retry-After, not a growing queue.
- A password change or reset ends every other session (API and pages).
- New passwords are judged by zxcvbn with the user's own names as known words.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from access_control.addresses import client_address
from core.clock import ManualClock
from main import create_app
from runtime import Runtime
from tests.cli_support import InProcess, cli_env, demo_archive_dir, serving
from tests.conftest import DEMO_PASSWORD, run_sql, seed_world, sign_in, web_login

T0 = datetime(2031, 5, 20, 8, 0, tzinfo=UTC)
USER = "caseworker.haizhou"


@contextmanager
def configured(settings: Any, *, peer: tuple[str, int] = ("testclient", 50000),
               **overrides: Any) -> Iterator[tuple[Runtime, TestClient]]:
    rt = Runtime.open(settings.model_copy(update=overrides), require_schema=False)
    rt.initialize()
    seed_world(rt)
    try:
        with TestClient(create_app(runtime=rt), client=peer) as c:
            yield rt, c
    finally:
        rt.close()



def bearer(r: Any) -> dict[str, str]:
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


# A real server, real threads ---------------------------------------------------------------


def parallel(n: int, call: Any) -> list[Any]:
    """``call(i)`` from ``n`` threads released together."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = call(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.fixture(scope="module")
def served_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return demo_archive_dir(tmp_path_factory, "login-limits", households=0)


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """The shared archive with its sign-in counters cleared (each test starts unthrottled)."""
    import sqlite3

    with sqlite3.connect(data_dir / "shouhu.db") as db:
        db.execute("DELETE FROM login_throttle")
    return cli_env(data_dir, SHOUHU_RENDER_WORKERS="0", SHOUHU_AUDIT_CHECKPOINT_INTERVAL_SECONDS="0", **extra)


def login_events(data_dir: Path, after: int) -> Counter[str]:
    import sqlite3

    with sqlite3.connect(data_dir / "shouhu.db") as db:
        rows = db.execute("SELECT reason FROM audit_events WHERE action = 'auth:token:create' AND seq > ?",
                          (after,)).fetchall()
    return Counter(r[0] for r in rows)


def log_end(data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "shouhu.db") as db:
        return int(db.execute("SELECT coalesce(max(seq), 0) FROM audit_events").fetchone()[0])


@pytest.mark.slow
def test_forty_parallel_wrong_passwords_get_at_most_the_limit_checked(served_archive, tmp_path):
    env = server_env(served_archive, SHOUHU_LOGIN_MAX_FAILURES_PER_ADDRESS="1000")
    limit = 5  # the default SHOUHU_LOGIN_MAX_FAILURES
    before = log_end(served_archive)
    with serving(env, tmp_path / "server.out") as server, httpx.Client(base_url=server.base_url, timeout=90) as http:
        answers = parallel(40, lambda i: http.post("/api/v1/auth/token",
                                                   data={"username": USER, "password": f"wrong-password-{i}"}))
        statuses = Counter(r.status_code for r in answers)
        print(f"40 parallel wrong passwords for one account: {dict(statuses)}")
        assert set(statuses) <= {401, 429}, statuses
        assert statuses[401] <= limit and statuses[429] >= 40 - limit, statuses
        for r in answers:
            if r.status_code == 429:
                assert r.json()["error"]["code"] == "too_many_attempts"
                assert int(r.headers["retry-after"]) > 0
        # Now even the right password is refused, with the time to wait.
        right = sign_in(http, USER)
        assert right.status_code == 429 and int(right.headers["retry-after"]) > 0
    reasons = login_events(served_archive, before)
    # Every attempt is logged; only those within the limit were checked at all.
    assert reasons["login:bad_credentials"] == statuses[401] <= limit
    assert reasons["login:locked"] == statuses[429] + 1
    # The account's counter saw them all (one row, keyed by hash: no name stored).
    import sqlite3

    with sqlite3.connect(served_archive / "shouhu.db") as db:
        rows = db.execute("SELECT key_hash, failures FROM login_throttle").fetchall()
    assert all(USER not in k for k, _ in rows)
    assert max(f for _, f in rows) >= 41


@pytest.mark.slow
def test_per_address_limit_on_a_real_server_and_forwarded_for_is_not_believed(served_archive, tmp_path):
    env = server_env(served_archive, SHOUHU_LOGIN_MAX_FAILURES_PER_ADDRESS="6")
    with serving(env, tmp_path / "server.out") as server, httpx.Client(base_url=server.base_url, timeout=90) as http:
        # Password spraying: one wrong guess per account, each claiming another address.
        for i in range(6):
            r = http.post("/api/v1/auth/token", data={"username": f"spray.{i}", "password": "Spring2031!"},
                          headers={"X-Forwarded-For": f"203.0.113.{i}"})
            assert r.status_code == 401, r.text
        # The address (loopback) is locked, whatever it claims, even with a right password.
        r = http.post("/api/v1/auth/token", data={"username": "supervisor.city", "password": DEMO_PASSWORD},
                      headers={"X-Forwarded-For": "198.51.100.77"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0, r.text


@pytest.mark.slow
def test_hashing_is_bounded_under_a_flood_with_real_argon2_cost(served_archive, tmp_path):
    """40 parallel sign-ins (distinct unknown names) with the default 64 MiB argon2id: at most two
    hashes at a time, the rest refused quickly (503 + Retry-After) instead of 40 x 64 MiB."""
    env = server_env(served_archive, SHOUHU_LOGIN_MAX_FAILURES_PER_ADDRESS="1000")
    for name in ("SHOUHU_ARGON2_TIME_COST", "SHOUHU_ARGON2_MEMORY_KIB"):
        env.pop(name)
    with serving(env, tmp_path / "server.out") as server, httpx.Client(base_url=server.base_url, timeout=90) as http:
        status = Path(f"/proc/{server.proc.pid}/status")

        def hwm() -> int:
            return int(re.search(r"VmHWM:\s+(\d+) kB", status.read_text()).group(1))  # type: ignore[union-attr]

        sign_in(http, "warm.up", "wrong-password-0")  # one hash: the baseline includes one
        base = hwm()
        answers = parallel(40, lambda i: http.post("/api/v1/auth/token",
                                                   data={"username": f"flood.{i}", "password": "wrong-password"}))
        peak = hwm()
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {401, 503}, statuses
    for r in answers:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "login_busy" and int(r.headers["retry-after"]) >= 1
    grown_mib = (peak - base) / 1024
    print(f"server VmHWM {base / 1024:.0f} MiB -> {peak / 1024:.0f} MiB (+{grown_mib:.0f} MiB), answers {statuses}")
    # Two 64 MiB hashes at a time (plus allocator slack), not forty.
    assert grown_mib < 2 * 64 + 96, grown_mib


# In process: exact limits on a pinned clock --------------------------------------------------


def test_lockout_answers_429_with_the_seconds_left(settings):
    with configured(settings) as (rt, client):
        clock = ManualClock(T0)
        rt.clock = clock
        limit, lockout = rt.settings.login_max_failures, rt.settings.login_lockout_seconds
        for _ in range(limit):
            assert sign_in(client, USER, "wrong-password-1").status_code == 401
        r = sign_in(client, USER)
        assert r.status_code == 429 and r.headers["retry-after"] == str(lockout)
        assert r.json()["error"]["details"] == {"retry_after": lockout}
        clock.advance(seconds=100)
        assert sign_in(client, USER).headers["retry-after"] == str(lockout - 100)
        clock.set(T0 + timedelta(seconds=lockout))
        assert sign_in(client, USER).status_code == 200


def test_per_address_limit_spares_the_accounts_and_trusts_only_listed_proxies(settings):
    with configured(settings, peer=("10.0.0.1", 4000), login_max_failures_per_address=4,
                    trusted_proxies="10.0.0.1") as (rt, proxy):
        rt.clock = ManualClock(T0)
        # Behind the trusted proxy, the forwarded address is the client.
        for i in range(4):
            r = sign_in(proxy, f"spray.{i}", "Spring2031!", headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.5"})
            assert r.status_code == 401
        r = sign_in(proxy, USER, headers={"X-Forwarded-For": "203.0.113.5"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_attempts"
        # Another client behind the same proxy is not affected, and the account was not charged.
        assert sign_in(proxy, USER, headers={"X-Forwarded-For": "203.0.113.6"}).status_code == 200
        # A client the proxy did not vouch for (no header): the proxy's own address counts.
        assert sign_in(proxy, USER).status_code == 200
        rows = run_sql(rt, "SELECT key_hash FROM login_throttle")
        assert all("203.0.113" not in r[0] for r in rows)  # keyed hashes only
        events = run_sql(rt, "SELECT details FROM audit_events WHERE reason = 'login:locked'")
        assert "address" in str(events[-1][0]) and "203.0.113" not in str(events)


def test_client_address_ignores_forwarded_for_from_untrusted_peers():
    class Req:
        def __init__(self, peer: str, forwarded: list[str]):
            self.client = type("C", (), {"host": peer})()
            self.headers = type("H", (), {"getlist": lambda _self, _name: forwarded})()

    assert client_address(Req("192.0.2.1", ["203.0.113.5"]), "") == "192.0.2.1"
    assert client_address(Req("192.0.2.1", ["203.0.113.5"]), "10.0.0.0/8") == "192.0.2.1"
    assert client_address(Req("10.1.2.3", ["203.0.113.5, 10.9.9.9"]), "10.0.0.0/8") == "203.0.113.5"
    assert client_address(Req("10.1.2.3", ["evil, 203.0.113.5"]), "10.0.0.0/8") == "203.0.113.5"
    assert client_address(Req("10.1.2.3", ["203.0.113.5, not-an-ip"]), "10.0.0.0/8") == "10.1.2.3"
    assert client_address(Req("10.1.2.3", []), "10.0.0.0/8") == "10.1.2.3"


def test_a_busy_hasher_refuses_at_once_without_counting_a_failure(settings):
    with configured(settings, password_hash_concurrency=1, password_hash_wait_seconds=0.05) as (rt, client):
        rt.clock = ManualClock(T0)
        slots = rt.passwords._slots
        assert slots.acquire(timeout=1)  # every hashing slot taken
        try:
            r = sign_in(client, USER)
        finally:
            slots.release()
        assert r.status_code == 503 and r.json()["error"]["code"] == "login_busy"
        assert int(r.headers["retry-after"]) >= 1
        (reason,) = run_sql(rt, "SELECT reason FROM audit_events ORDER BY seq DESC LIMIT 1")[0]
        assert reason == "login:busy"
        # Not a failure: the full allowance of wrong passwords remains.
        for _ in range(rt.settings.login_max_failures - 1):
            assert sign_in(client, USER, "wrong-password-1").status_code == 401
        assert sign_in(client, USER).status_code == 200


# Sessions end on a password change or reset --------------------------------------------------


def page_session(client: TestClient, username: str, password: str = DEMO_PASSWORD) -> dict[str, str]:
    r = web_login(client, username, password, follow_redirects=False)
    assert r.status_code == 303, r.text
    return {"Cookie": "shouhu_session=" + re.search(r"shouhu_session=([^;]+)", r.headers["set-cookie"]).group(1)}


def signed_in_page(client: TestClient, cookie: dict[str, str]) -> bool:
    r = client.get("/households", headers=cookie, follow_redirects=False)
    assert r.status_code in (200, 303), r.text
    return r.status_code == 200


def test_a_password_change_ends_every_other_session(client):
    a, b = bearer(sign_in(client, USER)), bearer(sign_in(client, USER))
    page = page_session(client, USER)
    assert signed_in_page(client, page)
    r = client.post("/api/v1/me/password", headers=a,
                    json={"current_password": DEMO_PASSWORD, "new_password": "Haizhou-changed-2031"})
    assert r.status_code == 204, r.text
    assert client.get("/api/v1/me", headers=a).status_code == 200  # the changing session continues
    assert client.get("/api/v1/me", headers=b).status_code == 401
    assert not signed_in_page(client, page)

    # From the pages: the page session continues, the others end.
    one, two = page_session(client, USER, "Haizhou-changed-2031"), page_session(client, USER, "Haizhou-changed-2031")
    api = bearer(sign_in(client, USER, "Haizhou-changed-2031"))
    form = client.get("/password", headers=one)
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    done = client.post("/password", headers=one, data={"csrf_token": csrf, "current_password": "Haizhou-changed-2031",
                                                       "new_password": "Haizhou-again-2032",
                                                       "new_password2": "Haizhou-again-2032"})
    assert done.status_code == 200 and "密码已修改" in done.text
    assert signed_in_page(client, one)
    assert not signed_in_page(client, two)
    assert client.get("/api/v1/me", headers=api).status_code == 401
    (details,) = run_sql(rt_of(client), "SELECT details FROM audit_events WHERE action = "
                                        "'identity:user:change_own_password' ORDER BY seq DESC LIMIT 1")[0]
    assert client.get("/api/v1/me", headers=a).status_code == 401  # the earlier API session too
    # Ended: the second page session, the API token and the earlier API session.
    assert (json.loads(details) if isinstance(details, str) else details) == {"sessions_ended": 3}


def rt_of(client: TestClient) -> Runtime:
    return client.app.state.runtime  # type: ignore[attr-defined]


def test_a_reset_ends_every_session_including_the_pages(client, tokens):
    api = bearer(sign_in(client, "village.haizhou"))
    page = page_session(client, "village.haizhou")
    users = client.get("/api/v1/users", headers=tokens["admin"]).json()["items"]
    uid = next(u["id"] for u in users if u["username"] == "village.haizhou")
    assert client.post(f"/api/v1/users/{uid}/reset-password", headers=tokens["admin"]).status_code == 200
    assert client.get("/api/v1/me", headers=api).status_code == 401
    assert not signed_in_page(client, page)


# Strength ------------------------------------------------------------------------------------


def test_weak_passwords_are_refused_naming_the_field(rt, client, tokens, monkeypatch):
    admin = tokens["admin"]
    org = run_sql(rt, "SELECT org_id FROM users WHERE username = :u", u=USER)[0][0]

    def create(username: str, password: str, name: str = "新专干") -> Any:
        return client.post("/api/v1/users", headers=admin, json={"username": username, "name": name, "org_id": org,
                                                                  "roles": ["caseworker"], "password": password})

    # Long enough, varied enough characters, and still weak: length alone let it through.
    for username, password in (("weak.one", "abcdeabcdeab"), ("zhang.wei", "zhang.wei2026"),
                               ("weak.two", "password1234"), ("weak.three", "qwertyuiop12")):
        r = create(username, password)
        assert r.status_code == 422, (password, r.text)
        assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["password"]
        assert password not in r.text
    # The same password is fine for someone whose name it does not contain: context counts.
    assert create("li.si", "zhang.wei2026", "李四").status_code == 201
    # Changing one's own: new_password.
    token = bearer(sign_in(client, USER))
    r = client.post("/api/v1/me/password", headers=token,
                    json={"current_password": DEMO_PASSWORD, "new_password": "caseworker.haizhou1"})
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["new_password"]
    # The CLI applies the same judgement.
    args = ["users", "add", "zhang.san", "--name", "张三", "--org", "连云港市海州区民政局", "--role", "caseworker",
            "--password-stdin"]
    result = InProcess(rt.settings, monkeypatch)(*args, ok=False, stdin="zhang.san.2026\n")
    assert "过于简单" in " ".join(result.output.split())
    assert not run_sql(rt, "SELECT id FROM users WHERE username = 'zhang.san'")
