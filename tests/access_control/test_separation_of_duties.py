"""三员分立: the system administrator, the security administrator and the auditor are three people.

- No person holds two of admin / security_admin / auditor: every combination is refused, on a new
  account and on an existing one, whoever holds it already.
- Every self-grant is refused: the administrator asks but never approves; the security
  administrator approves but never their own grant; the auditor does neither.
"""

from __future__ import annotations

import itertools

from access_control.policy import EXCLUSIVE_ROLES, TWO_PERSON_ROLES, role_assignment_problem
from tests.conftest import run_sql

THREE = ("admin", "security_admin", "auditor")
HOLDERS = {"admin": "admin", "security_admin": "security.admin", "auditor": "auditor.city"}


def _user_id(rt, username: str) -> str:
    return run_sql(rt, "SELECT id FROM users WHERE username = :u", u=username)[0][0]


def _org_id(rt, username: str) -> str:
    return run_sql(rt, "SELECT org_id FROM users WHERE username = :u", u=username)[0][0]


def test_the_three_are_exclusive_and_need_a_second_person():
    assert {"admin", "security_admin", "auditor"} <= {r.value for r in EXCLUSIVE_ROLES}
    assert {"admin", "security_admin", "auditor"} <= {r.value for r in TWO_PERSON_ROLES}
    for k in (2, 3):
        for combo in itertools.combinations(THREE, k):
            for org_type in ("it", "leading_group_office", "discipline_inspection"):
                problem = role_assignment_problem(org_type, combo)
                assert problem is not None and problem.rule == "roles:exclusive", (combo, org_type)


def test_no_person_holds_two_of_the_three(rt, client, tokens):
    admin = tokens["admin"]
    for k in (2, 3):
        for n, combo in enumerate(itertools.combinations(THREE, k)):
            # A new account with the combination, in each org that holds one of them.
            for where in ("admin", "auditor.city"):
                r = client.post("/api/v1/users", headers=admin, json={
                    "username": f"two.hats.{k}.{n}.{where[:3]}", "name": "身兼两职", "org_id": _org_id(rt, where),
                    "roles": list(combo)})
                assert r.status_code == 422, (combo, r.text)
                assert r.json()["error"]["details"]["fields"][0]["field"] == "roles"
            # An existing holder of each of the three, given the combination.
            for holder in HOLDERS.values():
                r = client.put(f"/api/v1/users/{_user_id(rt, holder)}/roles", headers=admin,
                               json={"roles": list(combo)})
                assert r.status_code == 422, (holder, combo, r.text)
    reasons = {row[0] for row in run_sql(rt, "SELECT reason FROM audit_events WHERE outcome = 'denied' AND action "
                                             "IN ('identity:user:create', 'identity:user:change_roles')")}
    assert reasons == {"roles:exclusive"}
    # Nobody gained anything.
    for role, holder in HOLDERS.items():
        assert run_sql(rt, "SELECT roles FROM users WHERE username = :u", u=holder)[0][0] in ([role], f'["{role}"]')


def test_every_self_grant_is_refused(rt, client, tokens):
    admin, security, auditor = (tokens[HOLDERS[r]] for r in THREE)
    me = {r: _user_id(rt, HOLDERS[r]) for r in THREE}

    # The auditor and the security administrator change no roles, their own included.
    for who, headers in (("auditor", auditor), ("security_admin", security)):
        for role in THREE:
            r = client.put(f"/api/v1/users/{me[who]}/roles", headers=headers, json={"roles": [role]})
            assert r.status_code == 403, (who, role, r.text)
            assert r.json()["error"]["details"]["rule"] == "role:none_grants:identity:user:change_roles"

    # The administrator may ask for a role for themselves; it waits, and they cannot approve it.
    r = client.put(f"/api/v1/users/{me['admin']}/roles", headers=admin, json={"roles": ["security_admin"]})
    assert r.status_code == 202, r.text
    own = r.json()["pending_grant"]["id"]
    r = client.post(f"/api/v1/role-grants/{own}/approve", headers=admin)
    assert r.status_code == 403
    assert r.json()["error"]["details"]["rule"] == "role:none_grants:identity:role_grant:approve"
    assert client.get("/api/v1/me", headers=admin).json()["roles"] == ["admin"]
    # The auditor approves nothing either.
    r = client.post(f"/api/v1/role-grants/{own}/approve", headers=auditor)
    assert r.status_code == 403
    # The administrator withdraws it.
    assert client.post(f"/api/v1/role-grants/{own}/reject", headers=admin).status_code == 200

    # A grant for the security administrator (asked by the administrator) is not theirs to approve.
    for role in ("admin",):  # the only other of the three its IT org may hold
        r = client.put(f"/api/v1/users/{me['security_admin']}/roles", headers=admin, json={"roles": [role]})
        assert r.status_code == 202, r.text
        grant = r.json()["pending_grant"]["id"]
        r = client.post(f"/api/v1/role-grants/{grant}/approve", headers=security)
        assert r.status_code == 403 and r.json()["error"]["details"]["rule"] == "two_person:own_grant"
        assert client.post(f"/api/v1/role-grants/{grant}/reject", headers=admin).status_code == 200
    # An auditor's move to an administrator's seat: its own grant, approved only by the security administrator.
    r = client.put(f"/api/v1/users/{me['auditor']}/roles", headers=admin, json={"roles": ["admin"]})
    assert r.status_code == 422  # the leading group's office holds no administrator
    # Every refusal is in the log.
    denied = run_sql(rt, "SELECT actor, reason FROM audit_events WHERE action = 'identity:role_grant:approve' "
                         "AND outcome = 'denied' ORDER BY seq")
    assert [tuple(x) for x in denied] == [
        ("admin", "role:none_grants:identity:role_grant:approve"),
        ("auditor.city", "role:none_grants:identity:role_grant:approve"),
        ("security.admin", "two_person:own_grant"),
    ]


def test_the_security_administrator_approves_and_reads_no_log(rt, client, tokens):
    security = tokens["security.admin"]
    proc = run_sql(rt, "SELECT org_id FROM users WHERE username = 'custodian.city'")[0][0]
    r = client.post("/api/v1/users", headers=tokens["admin"], json={
        "username": "new.keeper", "name": "新保管人", "org_id": proc, "roles": ["custodian"]})
    assert r.status_code == 202
    r = client.post(f"/api/v1/role-grants/{r.json()['pending_grant']['id']}/approve", headers=security)
    assert r.status_code == 200 and r.json()["decided_by"] == "security.admin"
    assert client.get("/api/v1/audit/events", headers=security).status_code == 403
    assert client.get("/api/v1/audit/events", headers=tokens["admin"]).status_code == 403
    assert client.get("/api/v1/audit/events", headers=tokens["auditor.city"]).status_code == 200
    # The security administrator creates no user; the administrator does.
    r = client.post("/api/v1/users", headers=security, json={
        "username": "by.security", "name": "不应创建", "org_id": proc, "roles": ["requester"]})
    assert r.status_code == 403


def test_the_grants_page_offers_approval_to_the_security_administrator_only(rt, app, client, tokens):
    from fastapi.testclient import TestClient

    from tests.conftest import web_login

    proc = run_sql(rt, "SELECT org_id FROM users WHERE username = 'custodian.city'")[0][0]
    r = client.post("/api/v1/users", headers=tokens["admin"], json={
        "username": "page.keeper", "name": "页面保管人", "org_id": proc, "roles": ["custodian"]})
    gid = r.json()["pending_grant"]["id"]
    pages = {}
    for username in ("admin", "security.admin"):
        browser = TestClient(app, base_url="https://testserver")
        assert web_login(browser, username, follow_redirects=False).status_code == 303
        pages[username] = browser.get("/admin/grants").text
    assert f"/admin/grants/{gid}/approve" not in pages["admin"] and f"/admin/grants/{gid}/reject" in pages["admin"]
    assert f"/admin/grants/{gid}/approve" in pages["security.admin"]
