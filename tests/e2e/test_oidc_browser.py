"""OpenID Connect sign-in end to end in Chromium: a real `shouhu serve`, a real provider on loopback
(tests/oidc_provider.py), and a caseworker whose external identity an administrator linked and a
security administrator approved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.cli_support import cli_env, run_cli, serving
from tests.cli_support import login as api_login
from tests.e2e.test_browser import CHROMIUM, CHROMIUM_ARGS, VIEWPORT
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, running_provider


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with running_provider() as p:
        yield p


def test_a_caseworker_signs_in_through_the_unified_platform(tmp_path: Path, provider: Provider) -> None:
    env = cli_env(tmp_path / "var", SHOUHU_RENDER_WORKERS="0", SHOUHU_OIDC_ISSUER=provider.base_url,
                  SHOUHU_OIDC_CLIENT_ID=CLIENT_ID, SHOUHU_OIDC_CLIENT_SECRET=CLIENT_SECRET)
    run_cli(env, "init")
    run_cli(env, "demo", "--households", "0")
    with serving(env, tmp_path / "serve.log") as server, server.client() as http, sync_playwright() as pw:
        admin, security = api_login(http, "admin"), api_login(http, "security.admin")
        users = http.get("/api/v1/users", headers=admin).json()["items"]
        uid = next(u["id"] for u in users if u["username"] == "caseworker.haizhou")
        r = http.post(f"/api/v1/users/{uid}/identities", headers=admin,
                      json={"issuer": provider.base_url, "subject": provider.subject})
        assert r.status_code == 202, r.text
        assert http.post(f"/api/v1/identity-links/{r.json()['id']}/approve", headers=security).status_code == 200

        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(base_url=server.base_url, viewport=VIEWPORT, locale="zh-CN").new_page()
            page.goto("/login")
            page.get_by_role("link", name="通过统一身份认证平台登录").click()
            page.wait_for_url(f"{server.base_url}/", timeout=30_000)
            assert "海州区民政专干" in page.content()
            assert page.context.cookies() and any(c["name"] == "shouhu_session" for c in page.context.cookies())
        finally:
            browser.close()
        assert CLIENT_SECRET not in server.output()
