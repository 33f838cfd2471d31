"""OpenID Connect sign-in against a real provider on loopback (tests/oidc_provider.py).

- A linked identity signs in (authorization code + PKCE); an unlinked one is refused: users are
  never created from a token.
- Refused: a token from an unknown issuer, for another audience, expired; a replayed code; a
  callback without the PKCE verifier (and the provider refuses a token request without one).
- Local passwords can be switched off per role.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fastapi.testclient import TestClient

from main import create_app
from runtime import Runtime
from tests.conftest import bearer, make_settings, run_sql, sign_in
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider, settings_for

BASE = "https://testserver"


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as p:
        yield p


@pytest.fixture
def settings(backend: Any, data_dir: Any, provider: Provider) -> Any:
    backend.reset()
    provider.reset()
    return make_settings(data_dir, backend.database_url(data_dir), **settings_for(provider))


def link(client: TestClient, tokens: Any, rt: Any, username: str, subject: str, issuer: str) -> None:
    """An administrator asks, the security administrator approves."""
    uid = run_sql(rt, "SELECT id FROM users WHERE username = :u", u=username)[0][0]
    r = client.post(f"/api/v1/users/{uid}/identities", headers=tokens["admin"], json={"issuer": issuer,
                                                                                     "subject": subject})
    assert r.status_code == 202, r.text
    r = client.post(f"/api/v1/identity-links/{r.json()['id']}/approve", headers=tokens["security.admin"])
    assert r.status_code == 200, r.text


def begin(browser: TestClient) -> str:
    """Open the sign-in at Shouhu: the provider's authorization URL (the state cookie is in the jar)."""
    r = browser.get("/login/oidc", follow_redirects=False)
    assert r.status_code == 303, r.text
    url = r.headers["location"]
    q = parse_qs(urlsplit(url).query)
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) >= 43
    assert q["client_id"] == [CLIENT_ID] and q["nonce"][0] and q["state"][0]
    assert "code_verifier" not in url
    return url


def at_provider(url: str) -> str:
    """The provider signs its user in at once: the callback's path and query it redirects to."""
    r = requests.get(url, allow_redirects=False, timeout=10)
    assert r.status_code == 302, r.text
    target = urlsplit(r.headers["location"])
    assert target.path == "/login/oidc/callback"
    return f"{target.path}?{target.query}"


def reasons(rt: Any) -> list[tuple[str, str]]:
    rows = run_sql(rt, "SELECT outcome, reason, details FROM audit_events WHERE action = 'auth:token:create' "
                       "ORDER BY seq")
    return [(o, r) for o, r, d in rows if "oidc" in str(d)]


def test_a_linked_identity_signs_in_and_an_unlinked_one_is_refused(rt, app, client, tokens, provider):
    browser = TestClient(app, base_url=BASE)
    # Not linked yet: refused, and no account appears.
    users_before = run_sql(rt, "SELECT COUNT(*) FROM users")[0][0]
    r = browser.get(at_provider(begin(browser)))
    assert r.status_code == 401 and "尚未关联" in r.text
    assert run_sql(rt, "SELECT COUNT(*) FROM users")[0][0] == users_before

    link(client, tokens, rt, "caseworker.haizhou", provider.subject, provider.base_url)
    callback = at_provider(begin(browser))
    r = browser.get(callback)
    assert r.status_code == 200, r.text
    assert 'http-equiv="refresh"' in r.text and "shouhu_session=" in r.headers["set-cookie"]
    home = browser.get("/")
    assert home.status_code == 200 and "海州区民政专干" in home.text
    assert reasons(rt) == [("denied", "oidc:not_linked"), ("allowed", "login:oidc_ok")]
    history = run_sql(rt, "SELECT method, success FROM sign_ins ORDER BY at, id")
    assert ("oidc", True) in [(m, bool(s)) for m, s in history]
    # The subject is kept hashed.
    assert provider.subject not in str(run_sql(rt, "SELECT * FROM identity_links"))
    # The provider was sent the verifier with the code.
    assert provider.token_requests[-1].get("code_verifier")
    # Neither the code, the state, the client secret nor the session reaches the log.
    logged = str(run_sql(rt, "SELECT * FROM audit_events")) + str(run_sql(rt, "SELECT * FROM sign_ins"))
    query = parse_qs(urlsplit(callback).query)
    session = r.headers["set-cookie"].split("shouhu_session=", 1)[1].split(";", 1)[0]
    for secret in (query["code"][0], query["state"][0], CLIENT_SECRET, session):
        assert secret not in logged


@pytest.mark.parametrize(("change", "rule"), [
    ({"iss": "https://idp.elsewhere.example"}, "oidc:unknown_issuer"),
    ({"aud": "another-client"}, "oidc:wrong_audience"),
    ({"exp_seconds": -120}, "oidc:expired"),
])
def test_bad_id_tokens_are_refused(rt, app, client, tokens, provider, change, rule):
    link(client, tokens, rt, "caseworker.haizhou", provider.subject, provider.base_url)
    browser = TestClient(app, base_url=BASE)
    for name, value in change.items():
        setattr(provider, name, value)
    r = browser.get(at_provider(begin(browser)))
    assert r.status_code == 401, r.text
    assert "shouhu_session=" not in r.headers.get("set-cookie", "")
    assert browser.get("/", follow_redirects=False).status_code == 303
    assert reasons(rt) == [("denied", rule)]


def test_a_replayed_code_and_a_missing_verifier_are_refused(rt, app, client, tokens, provider):
    link(client, tokens, rt, "caseworker.haizhou", provider.subject, provider.base_url)
    browser = TestClient(app, base_url=BASE)
    callback = at_provider(begin(browser))
    assert browser.get(callback).status_code == 200
    # The same code again, in a new sign-in of the same browser (its own state): the provider refuses it.
    fresh = begin(browser)
    state = parse_qs(urlsplit(fresh).query)["state"][0]
    code = parse_qs(urlsplit(callback).query)["code"][0]
    r = browser.get("/login/oidc/callback", params={"code": code, "state": state})
    assert r.status_code == 401
    # A callback without this browser's state, nonce and verifier: refused before the provider is asked.
    other = TestClient(app, base_url=BASE)
    asked = len(provider.token_requests)
    r = other.get(at_provider(begin(browser)))
    assert r.status_code == 401 and len(provider.token_requests) == asked
    assert reasons(rt) == [("allowed", "login:oidc_ok"), ("denied", "oidc:token_refused"),
                           ("denied", "oidc:missing_pkce_verifier")]
    # And the provider itself refuses a token request without the verifier.
    url = begin(browser)
    code = parse_qs(urlsplit(at_provider(url)).query)["code"][0]
    r = requests.post(f"{provider.base_url}/token", auth=(CLIENT_ID, CLIENT_SECRET), timeout=10,
                      data={"grant_type": "authorization_code", "code": code,
                            "redirect_uri": f"{BASE}/login/oidc/callback"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_passwords_can_be_switched_off_per_role(rt, client):
    assert sign_in(client, "caseworker.haizhou").status_code == 200
    rt.settings = rt.settings.model_copy(update={"password_login_disabled_roles": "caseworker"})
    r = sign_in(client, "caseworker.haizhou")
    assert r.status_code == 403 and r.json()["error"]["code"] == "password_sign_in_disabled"
    wrong = sign_in(client, "caseworker.haizhou", "not-the-password")
    assert wrong.status_code == 401  # a wrong password says nothing about the role
    supervisor = sign_in(client, "supervisor.city")
    assert supervisor.status_code == 200
    assert client.get("/api/v1/me", headers=bearer(supervisor.json()["access_token"])).status_code == 200
    rows = run_sql(rt, "SELECT reason FROM audit_events WHERE action = 'auth:token:create' ORDER BY seq")
    assert ("login:password_disabled_for_role",) in [tuple(r) for r in rows]


def test_behind_a_proxy_the_provider_sends_the_browser_back_to_the_public_address(rt):
    """The redirect URI is built from SHOUHU_PUBLIC_URL when it is set, not from the address the
    request reached the server at (a reverse proxy's)."""
    public = Runtime.open(rt.settings.model_copy(update={"public_url": "https://shouhu.example.gov.cn/"}))
    try:
        with TestClient(create_app(runtime=public), base_url="http://10.0.0.5:8000") as browser:
            url = begin(browser)
    finally:
        public.close()
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["https://shouhu.example.gov.cn/login/oidc/callback"]
    with TestClient(create_app(runtime=rt), base_url="http://10.0.0.5:8000") as browser:
        url = begin(browser)
    assert parse_qs(urlsplit(url).query)["redirect_uri"] == ["http://10.0.0.5:8000/login/oidc/callback"]
