"""The second factor (TOTP, RFC 6238) as the deployment default requires it: admin, security
administrator, auditor and custodian.

- A privileged user without a factor may only enrol: a custodian cannot decide a sealed request
  (403 ``second_factor_enrolment_required``) until enrolled, then can with the same session.
- The token flow's second step refuses a wrong, a reused (same 30-second step) and a stale code,
  and an expired challenge; a recovery code works once.
- The pages: the privileged user is sent to the enrolment page (a QR code, inline SVG), and the
  sign-in asks for the code on a page of its own.
- No secret, code, recovery code or token reaches the access log or the server log.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from core.clock import ManualClock
from tests.access_control.test_sealed import apply, decide
from tests.conftest import DEMO_PASSWORD, MFA_ROLES, bearer, make_id_number, make_settings, run_sql, sign_in, web_login

API = "/api/v1"
START = datetime(2026, 12, 7, 8, 0, 5, tzinfo=UTC)


@pytest.fixture
def settings(backend: Any, data_dir: Any) -> Any:
    """The production default: privileged roles need a second factor."""
    backend.reset()
    return make_settings(data_dir, backend.database_url(data_dir), mfa_required_roles=MFA_ROLES)


@pytest.fixture
def clock(rt: Any) -> ManualClock:
    manual = ManualClock(START)
    rt.clock = manual
    return manual


class Secrets:
    """Everything secret the test saw, to look for in the logs afterwards."""

    def __init__(self) -> None:
        self.values: set[str] = set()

    def add(self, *values: str) -> None:
        self.values.update(v for v in values if v)


def code_at(secret: str, when: datetime) -> str:
    return str(pyotp.TOTP(secret).at(when))


def enrol(client: TestClient, headers: dict[str, str], clock: ManualClock, seen: Secrets) -> tuple[str, list[str]]:
    """Enrol a TOTP factor for the caller: (secret, recovery codes)."""
    r = client.post(f"{API}/me/mfa/totp", headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    secret = body["secret"]
    assert body["otpauth_uri"].startswith("otpauth://totp/") and f"secret={secret}" in body["otpauth_uri"]
    assert body["qr_svg"].startswith("<svg") and "<path" in body["qr_svg"]
    r = client.post(f"{API}/me/mfa/totp/confirm", headers=headers, json={"code": code_at(secret, clock())})
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    seen.add(secret, *codes, code_at(secret, clock()))
    return secret, codes


def challenge(client: TestClient, username: str, seen: Secrets) -> str:
    r = sign_in(client, username)
    assert r.status_code == 200, r.text
    assert r.json()["mfa_required"] is True and "access_token" not in r.json()
    seen.add(r.json()["mfa_token"])
    return str(r.json()["mfa_token"])


def second_step(client: TestClient, mfa_token: str, code: str, seen: Secrets) -> Any:
    seen.add(code)
    r = client.post(f"{API}/auth/token/mfa", json={"mfa_token": mfa_token, "code": code})
    if r.status_code == 200:
        seen.add(r.json()["access_token"])
    return r


def reasons(rt: Any, action: str) -> list[tuple[str, str]]:
    return [(o, r) for o, r in run_sql(rt, "SELECT outcome, reason FROM audit_events WHERE action = :a ORDER BY seq",
                                       a=action)]


def test_custodian_cannot_decide_a_sealed_request_until_enrolled(rt, client, clock):
    seen = Secrets()
    court = bearer(sign_in(client, "court.haizhou").json()["access_token"])  # a requester: no factor needed
    rid = apply(client, court, "测试申请对象", make_id_number())
    r = sign_in(client, "custodian.city")
    assert r.status_code == 200 and "access_token" in r.json()  # no factor yet: a session that may only enrol
    custodian = bearer(r.json()["access_token"])
    seen.add(r.json()["access_token"])

    refused = decide(client, custodian, rid, "deny", "申请材料不全")
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "second_factor_enrolment_required" and "动态口令" in error["message"]
    assert client.get(f"{API}/sealed-requests", headers=custodian).status_code == 403
    assert client.get(f"{API}/me", headers=custodian).status_code == 200
    assert run_sql(rt, "SELECT status FROM sealed_requests WHERE id = :i", i=rid)[0][0] == "pending"
    assert ("denied", "second_factor:enrolment_required") in reasons(rt, "auth:token:use")

    secret, _ = enrol(client, custodian, clock, seen)
    # The secret is sealed, never stored in the clear.
    stored = run_sql(rt, "SELECT secret_envelope, confirmed_at FROM totp_factors")
    assert len(stored) == 1 and stored[0][1] is not None and secret.encode() not in bytes(stored[0][0])
    # Enrolled: the same session decides now.
    assert decide(client, custodian, rid, "deny", "申请材料不全").status_code == 200
    # And the next sign-in asks for the code.
    clock.advance(30)
    token = challenge(client, "custodian.city", seen)
    r = second_step(client, token, code_at(secret, clock()), seen)
    assert r.status_code == 200, r.text
    assert client.get(f"{API}/sealed-requests", headers=bearer(r.json()["access_token"])).status_code == 200
    assert [x for x in reasons(rt, "identity:second_factor:confirm")] == [("allowed", "role:everyone")]


def test_wrong_reused_and_stale_codes_and_expired_challenges_are_refused(rt, client, clock):
    seen = Secrets()
    admin = bearer(sign_in(client, "auditor.city").json()["access_token"])
    secret, _ = enrol(client, admin, clock, seen)
    clock.advance(30)

    now_code = code_at(secret, clock())
    wrong = next(c for c in ("135792", "246813", "975310") if c not in {code_at(secret, clock() + timedelta(
        seconds=30 * d)) for d in (-1, 0, 1)})
    token = challenge(client, "auditor.city", seen)
    r = second_step(client, token, wrong, seen)
    assert r.status_code == 401 and r.json()["error"]["code"] == "second_factor_invalid"
    # The right code, in the same challenge: accepted once.
    assert second_step(client, token, now_code, seen).status_code == 200
    # The challenge works once.
    assert second_step(client, token, now_code, seen).status_code == 401
    # The same code again, in a new sign-in within its step: reused.
    token = challenge(client, "auditor.city", seen)
    r = second_step(client, token, now_code, seen)
    assert r.status_code == 401 and r.json()["error"]["code"] == "second_factor_invalid"
    # A code three steps old: stale.
    clock.advance(30 * 3)
    r = second_step(client, token, code_at(secret, clock() - timedelta(seconds=90)), seen)
    assert r.status_code == 401
    # The challenge expires after mfa_challenge_seconds.
    clock.advance(rt.settings.mfa_challenge_seconds + 1)
    r = second_step(client, token, code_at(secret, clock()), seen)
    assert r.status_code == 401
    token = challenge(client, "auditor.city", seen)
    assert second_step(client, token, code_at(secret, clock()), seen).status_code == 200

    got = reasons(rt, "auth:second_factor:verify")
    assert got == [("denied", "second_factor:wrong_code"), ("allowed", "login:second_factor_ok:totp"),
                   ("denied", "second_factor:bad_challenge"),  # the used challenge
                   ("denied", "second_factor:reused_code"), ("denied", "second_factor:stale_code"),
                   ("denied", "second_factor:bad_challenge"),  # the expired one
                   ("allowed", "login:second_factor_ok:totp")], got
    _assert_nothing_secret_logged(rt, seen)


def test_wrong_codes_lock_the_account_like_wrong_passwords(rt, client, clock):
    seen = Secrets()
    headers = bearer(sign_in(client, "admin").json()["access_token"])
    secret, _ = enrol(client, headers, clock, seen)
    clock.advance(30)
    valid = {code_at(secret, clock() + timedelta(seconds=30 * d)) for d in (-1, 0, 1)}
    wrong = [c for c in (f"{n:06d}" for n in range(100000, 100020)) if c not in valid]
    token = challenge(client, "admin", seen)
    limit = rt.settings.login_max_failures
    statuses = [second_step(client, token, wrong[i], seen).status_code for i in range(limit + 1)]
    assert statuses[:-1] == [401] * limit and statuses[-1] == 429
    assert second_step(client, token, code_at(secret, clock()), seen).status_code == 429


def test_a_recovery_code_works_once(rt, client, clock):
    seen = Secrets()
    headers = bearer(sign_in(client, "security.admin").json()["access_token"])
    _, codes = enrol(client, headers, clock, seen)
    hashes = [h for (h,) in run_sql(rt, "SELECT code_hash FROM recovery_codes")]
    assert len(hashes) == 10 and all(h.startswith("$argon2id$") for h in hashes)
    assert not any(c.replace("-", "") in h for c in codes for h in hashes)

    token = challenge(client, "security.admin", seen)
    r = second_step(client, token, codes[0].upper(), seen)  # as typed from paper: case and dash do not matter
    assert r.status_code == 200, r.text
    token = challenge(client, "security.admin", seen)
    assert second_step(client, token, codes[0], seen).status_code == 401
    assert second_step(client, token, codes[1], seen).status_code == 200
    assert run_sql(rt, "SELECT COUNT(*) FROM recovery_codes WHERE used_at IS NOT NULL")[0][0] == 2
    got = reasons(rt, "auth:second_factor:verify")
    assert got == [("allowed", "login:second_factor_ok:recovery"), ("denied", "second_factor:wrong_code"),
                   ("allowed", "login:second_factor_ok:recovery")]
    history = run_sql(rt, "SELECT method, success FROM sign_ins ORDER BY at, id")
    assert ("password+recovery", True) in [(m, bool(s)) for m, s in history]
    _assert_nothing_secret_logged(rt, seen)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_pages_enrol_then_ask_for_the_code(rt, app, clock):
    collect = _Collect()
    root = logging.getLogger()
    root.addHandler(collect)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        _pages_enrol_then_ask_for_the_code(rt, app, clock, collect)
    finally:
        root.removeHandler(collect)
        root.setLevel(old_level)


def _pages_enrol_then_ask_for_the_code(rt: Any, app: Any, clock: ManualClock, collect: _Collect) -> None:
    seen = Secrets()
    client = TestClient(app, base_url="https://testserver")
    r = web_login(client, "custodian.city", follow_redirects=False)
    assert r.status_code == 303
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 303 and home.headers["location"] == "/mfa"
    page = client.get("/mfa")
    assert page.status_code == 200 and "开始绑定" in page.text and "须使用动态口令" in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    started = client.post("/mfa/start", data={"csrf_token": csrf})
    assert started.status_code == 200 and "<svg" in started.text
    assert started.headers["cache-control"] == "no-store"
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', started.text).group(1)
    done = client.post("/mfa/confirm", data={"csrf_token": csrf, "code": code_at(secret, clock())})
    assert done.status_code == 200 and "恢复码" in done.text
    codes = re.findall(r"<li>([a-z2-9]{5}-[a-z2-9]{5})</li>", done.text)
    assert len(codes) == 10
    seen.add(secret, *codes)
    assert client.get("/", follow_redirects=False).status_code == 200

    # A new sign-in: the password, then the code on a page of its own.
    clock.advance(30)
    other = TestClient(app, base_url="https://testserver")
    r = web_login(other, "custodian.city", DEMO_PASSWORD, next="/sealed", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login/mfa")
    assert "shouhu_session" not in r.headers.get("set-cookie", "")
    form = other.get(r.headers["location"])
    assert form.status_code == 200 and "动态口令" in form.text
    login_csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.text).group(1)
    bad = other.post("/login/mfa", data={"code": "12345x", "next": "/sealed", "csrf_token": login_csrf},
                     follow_redirects=False)
    assert bad.status_code == 401 and "动态口令或恢复码不正确" in bad.text
    code = code_at(secret, clock())
    seen.add(code)
    ok = other.post("/login/mfa", data={"code": code, "next": "/sealed", "csrf_token": login_csrf},
                    follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "/sealed"
    assert "shouhu_session=" in ok.headers["set-cookie"]
    assert other.get("/sealed").status_code == 200
    logged = "\n".join(collect.lines)
    assert not [s for s in seen.values if s in logged]
    _assert_nothing_secret_logged(rt, seen)


def _assert_nothing_secret_logged(rt: Any, seen: Secrets) -> None:
    """No secret, code, recovery code or token in the access log, the sign-in history or the log files."""
    events = json.dumps([list(map(str, row)) for row in run_sql(rt, "SELECT * FROM audit_events")], ensure_ascii=False)
    # Six digits also occur in times and hashes: the codes are looked for in what an event says.
    said = json.dumps([list(map(str, row)) for row in run_sql(rt, "SELECT reason, details FROM audit_events")],
                      ensure_ascii=False)
    history = json.dumps([list(map(str, row)) for row in run_sql(rt, "SELECT * FROM sign_ins")], ensure_ascii=False)
    files = "".join(p.read_text(errors="replace") for p in rt.settings.log_dir.glob("**/*") if p.is_file()) \
        if rt.settings.log_dir.exists() else ""
    assert len(seen.values) > 3
    for value in seen.values:
        variants = {value, value.replace("-", ""), value.upper()}
        if re.fullmatch(r"\d{6}", value):
            assert not re.search(rf"(?<!\d){value}(?!\d)", said), f"a code reached the audit: {value}"
            continue
        for where, text in (("audit", events), ("sign-ins", history), ("log files", files)):
            assert not any(v in text for v in variants), f"a secret value reached the {where}: {value}"


def test_the_operator_resets_a_lost_second_factor(rt, client, clock, monkeypatch):
    from tests.cli_support import InProcess

    seen = Secrets()
    headers = bearer(sign_in(client, "custodian.city").json()["access_token"])
    enrol(client, headers, clock, seen)
    assert sign_in(client, "custodian.city").json()["mfa_required"] is True
    run = InProcess(rt.settings, monkeypatch)
    out = run("users", "reset-second-factor", "custodian.city").output
    assert "重新绑定" in out
    assert run_sql(rt, "SELECT COUNT(*) FROM totp_factors")[0][0] == 0
    assert run_sql(rt, "SELECT COUNT(*) FROM recovery_codes")[0][0] == 0
    assert client.get(f"{API}/me", headers=headers).status_code == 401  # its sessions ended
    r = sign_in(client, "custodian.city")
    assert "access_token" in r.json()  # enrols again: a session that may only enrol
    assert client.get(f"{API}/sealed-requests", headers=bearer(r.json()["access_token"])).status_code == 403
    assert ("allowed", "cli:operator") in reasons(rt, "identity:second_factor:reset")
