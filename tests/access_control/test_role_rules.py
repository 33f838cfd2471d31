"""Administrators cannot make themselves (or anyone) readers.

- Roles are bound to organisation types (the table in docs/security.md, which
  must be the one in access_control/policy.py); admin, security_admin, auditor and custodian
  are each held alone. Every combination an administrator could ask for (all
  subsets of roles x all org types) is refused (422 naming ``roles``), created
  pending (two-person rule) or created, exactly as the table says.
- A grant of admin, security_admin, auditor or custodian waits for a security administrator: not
  the one who asked, not the user it is for; through the API, the pages and the
  CLI, with the bootstrap exception for an archive's first administrator.
- A temporary password allows nothing but changing it: every API route but
  three answers 403 ``password_change_required``; every page leads to /password.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from access_control.actions import Role
from access_control.identity import Org, OrgType, create_user, os_user
from access_control.policy import ROLE_ORG_TYPES
from core.db import new_id
from runtime import Runtime
from tests.cli_support import InProcess
from tests.conftest import DEMO_PASSWORD, bearer, run_sql, sign_in, web_login
from tests.web.test_web_sealed_audit_admin import browsers as browsers  # the fixture

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ROLES = sorted(r.value for r in Role)
PRIVILEGED = {"admin", "security_admin", "auditor", "custodian"}
OPERATOR = f"system:cli:{os_user()}"


def documented_table() -> dict[str, set[str]]:
    """The role -> org types table as docs/security.md shows it."""
    text = DOCS.read_text(encoding="utf-8")
    start = text.index("| role | organisation types that may hold it |")
    table: dict[str, set[str]] = {}
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        role, types = (c.strip() for c in line.strip("|").split("|"))
        table[role.strip("`")] = set(re.findall(r"`([a-z_]+)`", types))
    return table


def expected(org_type: str, roles: tuple[str, ...], table: dict[str, set[str]]) -> str:
    if PRIVILEGED & set(roles) and len(roles) > 1:
        return "refused"
    if any(org_type not in table[r] for r in roles):
        return "refused"
    return "pending" if PRIVILEGED & set(roles) else "created"




def orgs_of_every_type(rt: Runtime) -> dict[str, str]:
    """One organisation of each type in Haizhou: org type -> id."""
    out = {}
    with rt.db.session() as s:
        for t in OrgType:
            org = Org(id=new_id("org"), name=f"测试{t.value}", type=t.value, region_code="320706")
            s.add(org)
            out[t.value] = org.id
        s.commit()
    return out


def second_admin(rt: Runtime, username: str = "admin.second") -> None:
    """A second security administrator (the one who approves grants), made directly (the demo has one)."""
    with rt.db.session() as s:
        org = s.scalar(select(Org).where(Org.type == "it").limit(1))
        create_user(s, rt.passwords, username=username, display_name="第二安全保密管理员", org=org,
                    roles=["security_admin"], password=DEMO_PASSWORD, now=rt.clock())
        s.commit()


def test_the_documented_table_is_the_enforced_one():
    table = documented_table()
    assert set(table) == set(ROLES)
    assert {r.value: set(types) for r, types in ROLE_ORG_TYPES.items()} == table
    assert all(t in {o.value for o in OrgType} for types in table.values() for t in types)


def test_every_role_combination_an_admin_could_create(rt, client, tokens):
    """All non-empty subsets of roles x all org types: refused, pending or created, as documented."""
    table = documented_table()
    orgs = orgs_of_every_type(rt)
    admin = tokens["admin"]
    problems: list[str] = []
    outcomes = {"refused": 0, "pending": 0, "created": 0}
    for n, (org_type, roles) in enumerate(
            (t, combo) for t in sorted(orgs) for k in range(1, len(ROLES) + 1)
            for combo in itertools.combinations(ROLES, k)):
        username = f"combo.{n}"
        want = expected(org_type, roles, table)
        outcomes[want] += 1
        r = client.post("/api/v1/users", headers=admin,
                        json={"username": username, "name": "组合测试", "org_id": orgs[org_type], "roles": list(roles)})
        label = f"{org_type} {'+'.join(roles)}: want {want}, got {r.status_code}"
        rows = run_sql(rt, "SELECT roles, pending_approval FROM users WHERE username = :u", u=username)
        if want == "refused":
            fields = [f["field"] for f in r.json().get("error", {}).get("details", {}).get("fields", [])]
            if r.status_code != 422 or fields != ["roles"] or rows:
                problems.append(f"{label} {r.text[:200]}")
        elif want == "pending":
            body = r.json()
            grant = body.get("pending_grant") or {}
            stored = json.loads(rows[0][0]) if rows and isinstance(rows[0][0], str) else (rows[0][0] if rows else None)
            if (r.status_code != 202 or body.get("roles") != [] or body.get("pending_approval") is not True
                    or grant.get("status") != "pending" or sorted(grant.get("roles", [])) != sorted(roles)
                    or sorted(grant.get("added", [])) != sorted(PRIVILEGED & set(roles)) or stored != []):
                problems.append(f"{label} {r.text[:300]}")
            elif sign_in(client, username, body["temporary_password"]).status_code != 401:
                problems.append(f"{label}: a pending account signed in")
        else:
            body = r.json()
            if r.status_code != 201 or sorted(body.get("roles", [])) != sorted(roles) or body.get("pending_grant"):
                problems.append(f"{label} {r.text[:300]}")
            else:
                t = sign_in(client, username, body["temporary_password"])
                me = client.get("/api/v1/me", headers=bearer(t.json()["access_token"])) if t.status_code == 200 else t
                if me.status_code != 200 or sorted(me.json()["roles"]) != sorted(roles):
                    problems.append(f"{label}: signs in as {me.status_code} {me.text[:200]}")
    assert not problems, "\n".join(problems)
    # The table is not trivial either way.
    assert outcomes["refused"] > 800 and outcomes["pending"] == 6 and outcomes["created"] >= 10, outcomes
    # Each refusal is a logged decision naming the rule.
    reasons = {r[0] for r in run_sql(rt, "SELECT reason FROM audit_events WHERE action = 'identity:user:create' "
                                         "AND outcome = 'denied'")}
    assert reasons == {"roles:org_type", "roles:exclusive"}


def test_the_reported_attacks_are_refused(rt, client, tokens):
    """The hostile review's three: a county-reading caseworker, an approving custodian, and all three
    privileged roles, each in the IT department, by the administrator."""
    admin = tokens["admin"]
    it = run_sql(rt, "SELECT org_id FROM users WHERE username = 'admin'")[0][0]
    for roles in (["caseworker"], ["custodian"], ["admin", "auditor", "custodian"]):
        r = client.post("/api/v1/users", headers=admin,
                        json={"username": "it.reader", "name": "信息中心", "org_id": it, "roles": roles})
        assert r.status_code == 422, r.text
        assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["roles"]
    assert not run_sql(rt, "SELECT id FROM users WHERE username = 'it.reader'")
    # Nor by changing an existing user: the admin cannot add a reading role to itself.
    me = client.get("/api/v1/me", headers=admin).json()["id"]
    r = client.put(f"/api/v1/users/{me}/roles", headers=admin, json={"roles": ["admin", "caseworker"]})
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "roles"
    r = client.put(f"/api/v1/users/{me}/roles", headers=admin, json={"roles": ["caseworker"]})
    assert r.status_code == 422  # an IT org holds no caseworker
    assert client.get("/api/v1/me", headers=admin).json()["roles"] == ["admin"]


def test_two_person_rule_through_the_api(rt, client, tokens):
    admin = tokens["admin"]
    orgs = {o["name"]: o["id"] for o in client.get("/api/v1/orgs", headers=admin).json()["items"]}
    procuratorate = orgs["连云港市人民检察院"]
    r = client.post("/api/v1/users", headers=admin, json={"username": "new.custodian", "name": "新保管人",
                                                           "org_id": procuratorate, "roles": ["custodian"],
                                                           "password": "Proc-custodian-2031"})
    assert r.status_code == 202, r.text
    user, grant = r.json()["id"], r.json()["pending_grant"]
    assert grant["requested_by"] == "admin" and grant["kind"] == "create"
    # Pending: cannot sign in, answered exactly like a wrong password.
    right, wrong = sign_in(client, "new.custodian", "Proc-custodian-2031"), sign_in(client, "new.custodian", "x" * 12)
    assert right.status_code == wrong.status_code == 401 and right.json() == wrong.json()
    listed = client.get("/api/v1/role-grants", params={"status": "pending"}, headers=admin).json()["items"]
    assert [g["id"] for g in listed] == [grant["id"]]

    # The administrator who asked may not approve: no administrator approves (三员分立).
    r = client.post(f"/api/v1/role-grants/{grant['id']}/approve", headers=admin)
    assert r.status_code == 403
    assert r.json()["error"]["details"]["rule"] == "role:none_grants:identity:role_grant:approve"
    assert sign_in(client, "new.custodian", "Proc-custodian-2031").status_code == 401
    # A security administrator may.
    second_admin(rt)
    other = bearer(sign_in(client, "admin.second").json()["access_token"])
    r = client.post(f"/api/v1/role-grants/{grant['id']}/approve", headers=other)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and r.json()["decided_by"] == "admin.second"
    token = sign_in(client, "new.custodian", "Proc-custodian-2031")
    assert token.status_code == 200
    assert client.get("/api/v1/me", headers=bearer(token.json()["access_token"])).json()["roles"] == ["custodian"]
    again = client.post(f"/api/v1/role-grants/{grant['id']}/approve", headers=other)
    assert again.status_code == 409

    # Adding a privileged role to an existing user: nothing changes until approved.
    court = run_sql(rt, "SELECT id FROM users WHERE username = 'court.haizhou'")[0][0]
    r = client.put(f"/api/v1/users/{court}/roles", headers=admin, json={"roles": ["custodian"]})
    assert r.status_code == 202, r.text
    change = r.json()["pending_grant"]
    assert r.json()["roles"] == ["requester"] and change["added"] == ["custodian"]
    court_token = bearer(sign_in(client, "court.haizhou").json()["access_token"])
    assert client.get("/api/v1/me", headers=court_token).json()["roles"] == ["requester"]
    r = client.put(f"/api/v1/users/{court}/roles", headers=admin, json={"roles": ["requester"]})
    assert r.status_code == 409  # one pending grant at a time
    # The user a grant is for may not approve it either (a security administrator becoming auditor).
    leading = orgs["连云港市未成年人保护工作领导小组办公室"]
    second = run_sql(rt, "SELECT id FROM users WHERE username = 'admin.second'")[0][0]
    run_sql(rt, "UPDATE users SET org_id = :o WHERE id = :u", o=leading, u=second)  # moved to the leading office
    r = client.put(f"/api/v1/users/{second}/roles", headers=admin, json={"roles": ["auditor"]})
    assert r.status_code == 202, r.text
    own = r.json()["pending_grant"]["id"]
    r = client.post(f"/api/v1/role-grants/{own}/approve", headers=other)
    assert r.status_code == 403 and r.json()["error"]["details"]["rule"] == "two_person:own_grant"
    # Reject: the court requester stays a requester; a rejected new account stays disabled.
    r = client.post(f"/api/v1/role-grants/{change['id']}/reject", headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    assert client.get("/api/v1/me", headers=court_token).json()["roles"] == ["requester"]
    r = client.post("/api/v1/users", headers=admin, json={"username": "refused.admin", "name": "待驳回",
                                                           "org_id": run_sql(rt, "SELECT org_id FROM users WHERE "
                                                                                 "username = 'admin'")[0][0],
                                                           "roles": ["admin"], "password": "Refused-admin-2031"})
    assert r.status_code == 202
    rej = client.post(f"/api/v1/role-grants/{r.json()['pending_grant']['id']}/reject", headers=other)
    assert rej.status_code == 200
    after = client.get(f"/api/v1/users/{r.json()['id']}", headers=admin).json()
    assert after["disabled"] is True and after["roles"] == [] and after["pending_approval"] is False
    assert sign_in(client, "refused.admin", "Refused-admin-2031").status_code == 401

    # Both the requests and the decisions are in the log.
    events = run_sql(rt, "SELECT action, outcome, actor, resource_id, reason FROM audit_events "
                         "WHERE action LIKE 'identity:role_grant:%' ORDER BY seq")
    got = [(a, o, who, rid) for a, o, who, rid, _ in events if rid == grant["id"]]
    assert got == [("identity:role_grant:request", "allowed", "admin", grant["id"]),
                   ("identity:role_grant:approve", "denied", "admin", grant["id"]),
                   ("identity:role_grant:approve", "allowed", "admin.second", grant["id"]),
                   ("identity:role_grant:approve", "error", "admin.second", grant["id"])]
    assert user


def test_two_person_rule_and_bootstrap_through_the_cli(rt, client, tokens, monkeypatch):
    run = InProcess(rt.settings, monkeypatch, width=400)  # tables unabridged

    def shouhu(*args: str, ok: bool = True, stdin: str | None = None) -> str:
        return " ".join(run(*args, ok=ok, stdin=stdin).output.split())

    it_org = "连云港市民政局信息中心"
    # Against the table: refused and logged.
    out = shouhu("users", "add", "it.caseworker", "--name", "信息中心专干", "--org", it_org, "--role", "caseworker",
                 ok=False)
    assert "不能担任" in out
    (reason,) = run_sql(rt, "SELECT reason FROM audit_events ORDER BY seq DESC LIMIT 1")[0]
    assert reason == "roles:org_type"

    # With an administrator in place, a new one waits; its requester (this OS account) cannot approve.
    out = shouhu("users", "add", "second.admin", "--name", "第二管理员", "--org", it_org, "--role", "admin",
                 "--password-stdin", stdin="Second-admin-2031\n")
    grant = re.search(r"授权 (grt_[a-z2-9]{20})", out)
    assert grant, out
    gid = grant.group(1)
    assert sign_in(client, "second.admin", "Second-admin-2031").status_code == 401
    out = shouhu("users", "approve", gid, ok=False)
    assert "不能批准自己提出的授权申请" in out
    assert "second.admin" in shouhu("users", "grants")
    # The API's security administrator is another person: it approves.
    r = client.post(f"/api/v1/role-grants/{gid}/approve", headers=tokens["security.admin"])
    assert r.status_code == 200, r.text
    assert sign_in(client, "second.admin", "Second-admin-2031").status_code == 200
    # And the operator approves what an API administrator asked for.
    proc = run_sql(rt, "SELECT id FROM orgs WHERE name = '连云港市人民检察院'")[0][0]
    r = client.post("/api/v1/users", headers=tokens["admin"], json={"username": "cli.approved", "name": "由命令行批准",
                                                                     "org_id": proc, "roles": ["custodian"]})
    assert r.status_code == 202
    shouhu("users", "approve", r.json()["pending_grant"]["id"])
    assert r.json()["pending_grant"]["id"] not in shouhu("users", "grants")
    rows = run_sql(rt, "SELECT actor, outcome, reason FROM audit_events WHERE action = 'identity:role_grant:approve' "
                       "ORDER BY seq")
    assert [tuple(x) for x in rows] == [(OPERATOR, "denied", "two_person:own_request"),
                                        ("security.admin", "allowed",
                                         "role:security_admin+region:within_jurisdiction"),
                                        (OPERATOR, "allowed", "cli:operator")]
    # set-roles: adding auditor to a supervisor waits; removing needs nothing.
    out = shouhu("users", "set-roles", "supervisor.city", "--role", "auditor", ok=False)
    assert "不能担任" in out  # civil affairs holds no auditor

    # Bootstrap: on an archive without an enabled administrator the first one is effective at once.
    run_sql(rt, "UPDATE users SET disabled = :t WHERE username IN ('admin', 'second.admin')", t=True)
    out = shouhu("users", "add", "first.admin", "--name", "首位管理员", "--org", it_org, "--role", "admin",
                 "--password-stdin", stdin="First-admin-2031\n")
    assert "第一名系统管理员" in out
    (reason,) = run_sql(rt, "SELECT reason FROM audit_events WHERE action = 'identity:user:create' "
                            "ORDER BY seq DESC LIMIT 1")[0]
    assert reason == "cli:operator+bootstrap:first_admin"
    assert sign_in(client, "first.admin", "First-admin-2031").status_code == 200
    # ... and only the first.
    out = shouhu("users", "add", "third.admin", "--name", "第三管理员", "--org", it_org, "--role", "admin")
    assert "须由安全保密管理员批准" in out


def test_pages_show_pending_grants_and_refuse_self_approval(rt, app, client, tokens, browsers):
    admin = tokens["admin"]
    proc = run_sql(rt, "SELECT id FROM orgs WHERE name = '连云港市人民检察院'")[0][0]
    r = client.post("/api/v1/users", headers=admin, json={"username": "page.custodian", "name": "页面保管人",
                                                           "org_id": proc, "roles": ["custodian"]})
    gid = r.json()["pending_grant"]["id"]
    b = browsers("admin")
    page = b.get("/admin/grants")
    assert page.status_code == 200 and "page.custodian" in page.text and gid in page.text
    r = b.post(f"/admin/grants/{gid}/approve", {})
    assert r.status_code == 403 and "role=\"alert\"" in r.text  # no administrator approves
    second_admin(rt)
    r = browsers("admin.second").post(f"/admin/grants/{gid}/approve", {})
    assert r.status_code == 303, r.text  # approved, then post/redirect/get
    assert run_sql(rt, "SELECT status FROM role_grants WHERE id = :g", g=gid)[0][0] == "approved"
    # The page's form for a new user: a privileged role is created pending and says so.
    r = b.post("/admin/users/new", {"username": "page.auditor", "name": "页面审计员", "org_id": run_sql(
        rt, "SELECT id FROM orgs WHERE name = '连云港市未成年人保护工作领导小组办公室'")[0][0], "roles[]": "auditor"})
    assert r.status_code == 202 and "安全保密管理员" in r.text
    r = b.post("/admin/users/new", {"username": "page.reader", "name": "信息中心读者", "org_id": run_sql(
        rt, "SELECT org_id FROM users WHERE username = 'admin'")[0][0], "roles[]": "caseworker"})
    assert r.status_code == 422 and "不能担任" in r.text


# Temporary passwords ---------------------------------------------------------------------------

ALLOWED_WITH_TEMPORARY = {("GET", "/api/v1/me"), ("POST", "/api/v1/me/password"), ("POST", "/api/v1/auth/logout")}


def temporary_user(client: TestClient, tokens: Any, username: str = "caseworker.guannan") -> tuple[str, str]:
    users = client.get("/api/v1/users", headers=tokens["admin"]).json()["items"]
    uid = next(u["id"] for u in users if u["username"] == username)
    r = client.post(f"/api/v1/users/{uid}/reset-password", headers=tokens["admin"])
    assert r.status_code == 200, r.text
    return uid, r.json()["temporary_password"]


def test_a_temporary_password_allows_nothing_but_changing_it(app, rt, client, tokens):
    _, temporary = temporary_user(client, tokens)
    token = bearer(sign_in(client, "caseworker.guannan", temporary).json()["access_token"])
    schema = app.openapi()
    checked = 0
    problems = []
    for path, item in schema["paths"].items():
        for method in item:
            if not path.startswith("/api/v1/") or (method.upper(), path) in ALLOWED_WITH_TEMPORARY:
                continue
            if not item[method].get("security"):
                continue  # public (sign-in, document verification): no user at all
            url = re.sub(r"\{[^}]+\}", "x_unknown", path)
            r = client.request(method.upper(), url, headers=token, json={})
            checked += 1
            if r.status_code != 403 or r.json()["error"]["code"] != "password_change_required":
                problems.append(f"{method.upper()} {path}: {r.status_code} {r.text[:120]}")
    assert checked > 40
    assert not problems, "\n".join(problems)
    # Each refusal is a decision like any other: one 'denied' event per request, naming the route.
    refusals = run_sql(rt, "SELECT outcome, reason, details FROM audit_events WHERE action = 'auth:token:use'")
    assert len(refusals) == checked
    assert {(o, r) for o, r, _ in refusals} == {("denied", "password:change_required")}
    routes = [(d if isinstance(d, dict) else json.loads(d))["route"] for _, _, d in refusals]
    assert all(re.fullmatch(r"(GET|POST|PUT|PATCH|DELETE) /api/v1/\S+", r) for r in routes), routes[:3]
    # The three it may use.
    assert client.get("/api/v1/me", headers=token).json()["must_change_password"] is True
    r = client.post("/api/v1/me/password", headers=token,
                    json={"current_password": temporary, "new_password": "Guannan-new-2031"})
    assert r.status_code == 204, r.text
    assert client.get("/api/v1/households", headers=token).status_code == 200
    # The policy refuses it as well, for callers other than routes (e.g. `shouhu print --as`).
    from access_control.actions import Action
    from access_control.identity import Actor

    temp_actor = Actor(user_id="u", username="u", display_name="", org_id="o", org_name="", org_type="civil_affairs",
                       roles=("caseworker",), region_code="320724", must_change_password=True)
    decision = rt.policy.decide(temp_actor, Action.HOUSEHOLD_LIST)
    assert not decision.allowed and decision.rule == "password:change_required"
    assert rt.policy.decide(temp_actor, Action.USER_CHANGE_OWN_PASSWORD).allowed


def test_pages_send_a_temporary_password_to_the_change_form(app, rt, client, tokens):
    _, temporary = temporary_user(client, tokens)
    with TestClient(app) as browser:
        r = web_login(browser, "caseworker.guannan", temporary, follow_redirects=False)
        assert r.status_code == 303
        cookie = re.search(r"shouhu_session=([^;]+)", r.headers["set-cookie"]).group(1)
        headers = {"Cookie": f"shouhu_session={cookie}"}
        for path in ("/", "/households", "/minors", "/search", "/statistics"):
            r = browser.get(path, headers=headers, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/password", path
        page = browser.get("/password", headers=headers)
        assert page.status_code == 200 and "临时密码" in page.text
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        weak = browser.post("/password", headers=headers, data={
            "csrf_token": csrf, "current_password": temporary, "new_password": "abcdeabcdeab",
            "new_password2": "abcdeabcdeab"})
        assert weak.status_code == 422 and "过于简单" in weak.text
        done = browser.post("/password", headers=headers, data={
            "csrf_token": csrf, "current_password": temporary, "new_password": "Guannan-page-2031",
            "new_password2": "Guannan-page-2031"})
        assert done.status_code == 200 and "密码已修改" in done.text
        assert browser.get("/households", headers=headers, follow_redirects=False).status_code == 200


@pytest.mark.parametrize("role_names", [("admin", "auditor"), ("custodian", "requester"), ("auditor", "supervisor")])
def test_exclusive_roles_stand_alone_in_any_org(rt, client, tokens, role_names):
    orgs = orgs_of_every_type(rt)
    for org_type, org_id in orgs.items():
        r = client.post("/api/v1/users", headers=tokens["admin"],
                        json={"username": f"x.{org_type}", "name": "互斥", "org_id": org_id, "roles": list(role_names)})
        assert r.status_code == 422, (org_type, r.text)


def test_doctor_names_users_whose_roles_break_the_rules(rt, monkeypatch):
    """Users made before the rules (or directly in the database) are found by `shouhu doctor`."""
    run = InProcess(rt.settings, monkeypatch, width=400)

    def roles_line() -> str:
        out = run("doctor", ok=None).output
        return next(line for line in out.splitlines() if "角色与单位类型" in line)

    assert "均符合规则" in roles_line()
    with rt.db.session() as s:
        it = s.scalar(select(Org).where(Org.type == "it").limit(1))
        create_user(s, rt.passwords, username="legacy.reader", display_name="旧账号", org=it, roles=["caseworker"],
                    password=DEMO_PASSWORD, now=rt.clock())
        s.commit()
    line = roles_line()
    assert "1 个用户" in line and "legacy.reader" in line
