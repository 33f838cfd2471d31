"""Who may do what, where: every demo role x every case-file route x every region position.

The expectation table below is written out by hand, one row per route and one
column per position of the record relative to the caller's region node:

- ``own``: the caller's own node; ``child``: a node directly below it;
- ``sibling``: another child of the caller's parent; ``parent``: the node above;
- ``unknown``: no such record (an id or region that does not exist).

Positions a caller does not have (the city has no parent or sibling, a village
no child) are skipped. Each test builds one world of records (a household and
a minor in every node any caller needs) and then walks its caller's cells,
collecting every failing cell, named by role, route and position.

Besides the status, each cell checks the body (403 names the rule; a hidden
record is the same 404 as a missing one), the store (a refused write changes
nothing) and the access log (each decision leaves exactly one event).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response

from access_control.identity import Actor, Org, OrgType, create_user
from archive import schemas
from core.db import new_id
from runtime import Runtime
from tests.audit_support import last_seq
from tests.conftest import household_body, minor_body, run_sql

# Expected outcomes ---------------------------------------------------------------


@dataclass(frozen=True)
class Ok:
    """200 (reads, updates, lists) or 201 (creates), with the record in the answer."""


@dataclass(frozen=True)
class Hidden:
    """404 not_found, the very body a record that does not exist gets."""


@dataclass(frozen=True)
class Forbidden:
    """403 forbidden; details.rule names the rule."""

    rule: str


@dataclass(frozen=True)
class Invalid:
    """422 invalid_input naming ``field``."""

    field: str


Outcome = Ok | Hidden | Forbidden | Invalid

OK, HIDDEN = Ok(), Hidden()
OUTSIDE = Forbidden("region:outside_jurisdiction")
# A minor under a household the caller may not see gets the answer a minor
# under a household that does not exist gets: the household id is refused.
NO_HOUSEHOLD = Invalid("household_id")
UNKNOWN_REGION = Invalid("region")


def no_grant(action: str) -> Forbidden:
    return Forbidden(f"role:none_grants:{action}")


POSITIONS = ("own", "child", "sibling", "parent", "unknown")

# Case-file routes, in the order the cells run: reads and lists before writes,
# so lists see exactly the records of the world.
ROUTES = {
    "GET household": "archive:household:read",
    "GET minor": "archive:minor:read",
    "GET /households?region=": "archive:household:list",
    "GET /minors?region=": "archive:minor:list",
    "PATCH household": "archive:household:update",
    "PATCH minor": "archive:minor:update",
    "POST minor (under a household)": "archive:minor:create",
    "POST household (in a region)": "archive:household:create",
}


def row(
    own: Outcome, child: Outcome, sibling: Outcome, parent: Outcome, unknown: Outcome | None
) -> dict[str, Outcome]:
    cells = {"own": own, "child": child, "sibling": sibling, "parent": parent}
    if unknown is not None:
        cells["unknown"] = unknown
    return cells


CASEWORKER: dict[str, dict[str, Outcome]] = {
    "GET household": row(OK, OK, HIDDEN, HIDDEN, HIDDEN),
    "GET minor": row(OK, OK, HIDDEN, HIDDEN, HIDDEN),
    "GET /households?region=": row(OK, OK, HIDDEN, HIDDEN, UNKNOWN_REGION),
    "GET /minors?region=": row(OK, OK, HIDDEN, HIDDEN, UNKNOWN_REGION),
    "PATCH household": row(OK, OK, HIDDEN, HIDDEN, HIDDEN),
    "PATCH minor": row(OK, OK, HIDDEN, HIDDEN, HIDDEN),
    "POST minor (under a household)": row(OK, OK, NO_HOUSEHOLD, NO_HOUSEHOLD, NO_HOUSEHOLD),
    # Nothing exists yet, so refusing reveals nothing: a plain 403.
    "POST household (in a region)": row(OK, OK, OUTSIDE, OUTSIDE, None),
}


def _write_refused(action: str) -> dict[str, Outcome]:
    refusal = no_grant(action)
    return row(refusal, refusal, refusal, refusal, refusal)


SUPERVISOR: dict[str, dict[str, Outcome]] = {
    "GET household": row(OK, OK, HIDDEN, HIDDEN, HIDDEN),
    "GET minor": row(OK, OK, HIDDEN, HIDDEN, HIDDEN),
    "GET /households?region=": row(OK, OK, HIDDEN, HIDDEN, UNKNOWN_REGION),
    "GET /minors?region=": row(OK, OK, HIDDEN, HIDDEN, UNKNOWN_REGION),
    "PATCH household": _write_refused("archive:household:update"),
    "PATCH minor": _write_refused("archive:minor:update"),
    "POST minor (under a household)": _write_refused("archive:minor:create"),
    "POST household (in a region)": row(*[no_grant("archive:household:create")] * 4, None),
}

# Admin, requester, custodian, auditor: no case-file permission at all. The
# refusal is the same whether or not the record exists or is in their region.
NO_CASE_FILES: dict[str, dict[str, Outcome]] = {
    route: row(
        *[no_grant(action)] * 4, None if route.startswith("POST household") else no_grant(action)
    )
    for route, action in ROUTES.items()
}

EXPECTED: dict[str, dict[str, dict[str, Outcome]]] = {
    "admin": NO_CASE_FILES,
    "caseworker.haizhou": CASEWORKER,
    "caseworker.guannan": CASEWORKER,
    "village.haizhou": CASEWORKER,
    "supervisor.city": SUPERVISOR,
    "court.haizhou": NO_CASE_FILES,
    "custodian.city": NO_CASE_FILES,
    "auditor.city": NO_CASE_FILES,
}

# Where each demo user's positions are in the demo region tree.
CITY = {"own": "320700", "child": "320706"}
NODES: dict[str, dict[str, str]] = {
    "admin": CITY,
    "caseworker.haizhou": {
        "own": "320706",
        "child": "320706001000",
        "sibling": "320724",
        "parent": "320700",
    },
    "caseworker.guannan": {
        "own": "320724",
        "child": "320724001000",
        "sibling": "320706",
        "parent": "320700",
    },
    "village.haizhou": {"own": "320706001001", "sibling": "320706001002", "parent": "320706001000"},
    "supervisor.city": CITY,
    "court.haizhou": {
        "own": "320706",
        "child": "320706001000",
        "sibling": "320724",
        "parent": "320700",
    },
    "custodian.city": CITY,
    "auditor.city": CITY,
}
WORLD_REGIONS = sorted({code for nodes in NODES.values() for code in nodes.values()})
UNKNOWN_ID = {"household": "hh_doesnotexist234567", "minor": "mn_doesnotexist234567"}
UNKNOWN_REGION_CODE = "320799001001"  # well formed, not in the tree

# The loader that builds the world: a caseworker at city level, like archive/demo.py's.
CITY_LOADER = Actor(
    user_id="system",
    username="system:test-world",
    display_name="测试数据",
    org_id="system",
    org_name="系统",
    org_type=OrgType.CIVIL_AFFAIRS,  # a caseworker's org type (policy.ORG_TYPE_LIMITS)
    roles=("caseworker",),
    region_code="320700",
)


@dataclass(frozen=True)
class Records:
    household: str
    minor: str


def build_world(rt: Runtime) -> dict[str, Records]:
    """A household with one minor in every region node some caller's position names."""
    world: dict[str, Records] = {}
    for code in WORLD_REGIONS:
        with rt.db.session() as s:
            hh = rt.archive.create_household(
                rt.guard(s, CITY_LOADER), schemas.HouseholdCreate(**household_body(code))
            )
        with rt.db.session() as s:
            minor = rt.archive.create_minor(
                rt.guard(s, CITY_LOADER), schemas.MinorCreate(**minor_body(hh.id))
            )
        world[code] = Records(hh.id, minor.id)
    return world


# Running one cell ------------------------------------------------------------------


def request(
    client: TestClient,
    headers: dict[str, str],
    route: str,
    position: str,
    region: str | None,
    records: Records | None,
) -> Response:
    hh = records.household if records else UNKNOWN_ID["household"]
    mn = records.minor if records else UNKNOWN_ID["minor"]
    code = region or UNKNOWN_REGION_CODE
    if route == "GET household":
        return client.get(f"/api/v1/households/{hh}", headers=headers)
    if route == "GET minor":
        return client.get(f"/api/v1/minors/{mn}", headers=headers)
    if route == "GET /households?region=":
        return client.get(
            "/api/v1/households", params={"region": code, "limit": 200}, headers=headers
        )
    if route == "GET /minors?region=":
        return client.get("/api/v1/minors", params={"region": code, "limit": 200}, headers=headers)
    if route == "PATCH household":
        return client.patch(
            f"/api/v1/households/{hh}", json={"notes": "已入户走访"}, headers=headers
        )
    if route == "PATCH minor":
        return client.patch(f"/api/v1/minors/{mn}", json={"school": "幸福小学"}, headers=headers)
    if route == "POST minor (under a household)":
        return client.post("/api/v1/minors", json=minor_body(hh), headers=headers)
    if route == "POST household (in a region)":
        return client.post("/api/v1/households", json=household_body(code), headers=headers)
    raise AssertionError(f"no request for route {route!r}")


def stored_version(rt: Runtime, table: str, record_id: str) -> int:
    (version,) = run_sql(rt, f"SELECT version FROM {table} WHERE id = :i", i=record_id)[0]
    return int(version)


def count_rows(rt: Runtime, table: str) -> int:
    return int(run_sql(rt, f"SELECT count(*) FROM {table}")[0][0])


def user_id(rt: Runtime, username: str) -> str:
    return str(run_sql(rt, "SELECT id FROM users WHERE username = :u", u=username)[0][0])


def events_since(rt: Runtime, actor_id: str, seq: int) -> list[tuple[str, str, str]]:
    rows = run_sql(
        rt,
        "SELECT action, outcome, reason FROM audit_events "
        "WHERE actor_id = :a AND seq > :s ORDER BY seq",
        a=actor_id,
        s=seq,
    )
    return [(r[0], r[1], r[2]) for r in rows]



def check_ok(
    rt: Runtime,
    route: str,
    r: Response,
    region: str,
    records: Records,
    world: dict[str, Records],
    scope: str,
) -> list[str]:
    body = r.json()
    problems: list[str] = []
    if route.startswith("GET /"):
        if r.status_code != 200:
            return [f"status {r.status_code}, expected 200: {r.text[:300]}"]
        kind = "household" if "households" in route else "minor"
        got = {item["id"] for item in body["items"]}
        want = {
            getattr(rec, kind) for code, rec in world.items() if rt.regions.is_within(code, region)
        }
        if got != want:
            problems.append(f"listed {sorted(got)}, expected exactly {sorted(want)}")
        outside = [
            i["region_code"]
            for i in body["items"]
            if not rt.regions.is_within(i["region_code"], scope)
        ]
        if outside:
            problems.append(f"listed records outside the caller's region: {outside}")
        return problems
    if route.startswith("POST"):
        if r.status_code != 201:
            return [f"status {r.status_code}, expected 201: {r.text[:300]}"]
        if route.startswith("POST household") and body["region_code"] != region:
            problems.append(f"created in {body['region_code']}, expected {region}")
        if route.startswith("POST minor") and (body["household_id"], body["region_code"]) != (
            records.household,
            region,
        ):
            problems.append(f"minor created under {body['household_id']} in {body['region_code']}")
        return problems
    if r.status_code != 200:
        return [f"status {r.status_code}, expected 200: {r.text[:300]}"]
    kind = "household" if "household" in route else "minor"
    expected_id = getattr(records, kind)
    if body["id"] != expected_id:
        problems.append(f"answered record {body['id']}, expected {expected_id}")
    if route.startswith("PATCH"):
        version = stored_version(rt, f"{kind}s", expected_id)
        if body["version"] != 2 or version != 2:
            problems.append(
                f"after the update: answered version {body['version']}, stored {version}"
            )
    return problems


def check_refused(
    expected: Hidden | Forbidden | Invalid, r: Response, not_found_body: dict[str, Any]
) -> list[str]:
    status = {Hidden: 404, Forbidden: 403, Invalid: 422}[type(expected)]
    if r.status_code != status:
        return [f"status {r.status_code}, expected {status}: {r.text[:300]}"]
    body = r.json()
    if isinstance(expected, Hidden):
        return (
            [] if body == not_found_body else [f"404 body {body} differs from a missing record's"]
        )
    if isinstance(expected, Forbidden):
        err = body["error"]
        if err["code"] != "forbidden" or err["details"] != {"rule": expected.rule}:
            return [f"403 body {body}, expected rule {expected.rule!r}"]
        return []
    fields = [f["field"] for f in body["error"]["details"]["fields"]]
    return (
        [] if fields == [expected.field] else [f"422 names {fields}, expected [{expected.field!r}]"]
    )


def check_audit(expected: Outcome, events: list[tuple[str, str, str]], action: str) -> list[str]:
    if isinstance(expected, Invalid):
        return []  # rejected input is not a policy decision
    if len(events) != 1:
        return [f"{len(events)} audit events, expected exactly one: {events}"]
    ev_action, outcome, reason = events[0]
    want_outcome = "allowed" if isinstance(expected, Ok) else "denied"
    problems = []
    if (ev_action, outcome) != (action, want_outcome):
        problems.append(f"audit event {events[0]}, expected {action} {want_outcome}")
    if isinstance(expected, Forbidden) and reason != expected.rule:
        problems.append(f"audit reason {reason!r}, expected {expected.rule!r}")
    return problems


def check_unchanged(
    rt: Runtime, route: str, records: Records | None, before: dict[str, int]
) -> list[str]:
    """A refused write leaves the store as it was."""
    problems = []
    if route.startswith("PATCH") and records is not None:
        kind = "household" if "household" in route else "minor"
        version = stored_version(rt, f"{kind}s", getattr(records, kind))
        if version != 1:
            problems.append(f"refused update still changed the stored version to {version}")
    for table, count in before.items():
        if count_rows(rt, table) != count:
            problems.append(f"refused request changed the number of {table}")
    return problems


# The tests ---------------------------------------------------------------------------


def test_positions_match_the_region_tree(rt, client, tokens):
    """The NODES table says what the docstring says, for each demo user."""
    tree = rt.regions
    for username, nodes in NODES.items():
        me = client.get("/api/v1/me", headers=tokens[username]).json()
        own = tree.get(nodes["own"])
        assert own is not None and me["region_code"] == own.code, username
        children = tree.children(own.code)
        if "child" in nodes:
            assert tree.get(nodes["child"]).parent_code == own.code, username
        else:
            assert children == [], f"{username} has a child node the table leaves out"
        if own.parent_code is None:
            assert "parent" not in nodes and "sibling" not in nodes, username
            continue
        assert nodes["parent"] == own.parent_code, username
        sibling = tree.get(nodes["sibling"])
        assert sibling.parent_code == own.parent_code and sibling.code != own.code, username
    assert set(EXPECTED) == set(NODES)
    for table in EXPECTED.values():
        assert set(table) == set(ROUTES)


@pytest.mark.parametrize("username", sorted(EXPECTED))
def test_case_file_routes(username, rt, client, tokens):
    world = build_world(rt)
    headers = tokens[username]
    actor_id = user_id(rt, username)
    scope = NODES[username]["own"]
    # A missing record's 404, as a caller with the grant sees it.
    not_found = client.get(
        f"/api/v1/households/{UNKNOWN_ID['household']}", headers=tokens["caseworker.haizhou"]
    )
    assert not_found.status_code == 404
    failures: list[str] = []
    cells = 0
    for route, action in ROUTES.items():
        for position in POSITIONS:
            expected = EXPECTED[username][route].get(position)
            if expected is None:
                continue  # e.g. creating a household in a region that does not exist
            if position != "unknown" and position not in NODES[username]:
                continue  # the city has no parent, a village no child
            region = NODES[username].get(position)
            records = world[region] if region else None
            cells += 1
            before = {t: count_rows(rt, t) for t in ("households", "minors", "minor_categories")}
            seq = last_seq(rt)
            r = request(client, headers, route, position, region, records)
            if isinstance(expected, Ok):
                assert region is not None and records is not None
                problems = check_ok(rt, route, r, region, records, world, scope)
            else:
                problems = check_refused(expected, r, not_found.json())
                problems += check_unchanged(rt, route, records, before)
            problems += check_audit(expected, events_since(rt, actor_id, seq), action)
            failures += [
                f"{username} | {route} | {position} ({region or 'none'}): {p}" for p in problems
            ]
    assert cells >= 20
    assert not failures, "\n".join(failures)


# Administration routes -----------------------------------------------------------------

ADMIN_ROUTES = {
    "GET /users": "identity:user:list",
    "POST /users": "identity:user:create",
    "GET /users/{id}": "identity:user:read",
    "POST /users/{id}/disable": "identity:user:disable",
    "POST /users/{id}/reset-password": "identity:user:reset_password",
    "PUT /users/{id}/roles": "identity:user:change_roles",
    "GET /role-grants": "identity:role_grant:list",
    "GET /orgs": "identity:org:list",
}
EVERYONE_ROUTES = ("GET /me", "GET /regions")
ADMIN_EXPECTED: dict[str, dict[str, Outcome]] = {
    username: (
        {route: OK for route in ADMIN_ROUTES}
        if username == "admin"
        else {route: no_grant(action) for route, action in ADMIN_ROUTES.items()}
    )
    for username in EXPECTED
}
for _table in ADMIN_EXPECTED.values():
    _table.update({route: OK for route in EVERYONE_ROUTES})


def admin_request(
    client: TestClient,
    headers: dict[str, str],
    route: str,
    target: str,
    org_id: str,
    new_username: str,
) -> Response:
    if route == "GET /users":
        return client.get("/api/v1/users", headers=headers)
    if route == "POST /users":
        return client.post(
            "/api/v1/users",
            headers=headers,
            json={
                "username": new_username,
                "name": "新用户",
                "org_id": org_id,
                "roles": ["caseworker"],
            },
        )
    if route == "GET /users/{id}":
        return client.get(f"/api/v1/users/{target}", headers=headers)
    if route == "POST /users/{id}/disable":
        return client.post(f"/api/v1/users/{target}/disable", headers=headers)
    if route == "POST /users/{id}/reset-password":
        return client.post(f"/api/v1/users/{target}/reset-password", headers=headers)
    if route == "PUT /users/{id}/roles":
        return client.put(f"/api/v1/users/{target}/roles", headers=headers, json={"roles": ["caseworker"]})
    if route == "GET /role-grants":
        return client.get("/api/v1/role-grants", headers=headers)
    if route == "GET /orgs":
        return client.get("/api/v1/orgs", headers=headers)
    if route == "GET /me":
        return client.get("/api/v1/me", headers=headers)
    if route == "GET /regions":
        return client.get("/api/v1/regions", headers=headers)
    raise AssertionError(route)


def users_snapshot(rt: Runtime) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in run_sql(
            rt,
            "SELECT id, username, password_hash, disabled, must_change_password FROM users "
            "ORDER BY id",
        )
    ]


@pytest.mark.parametrize("username", sorted(ADMIN_EXPECTED))
def test_admin_routes(username, rt, client, tokens):
    headers = tokens[username]
    admin = tokens["admin"]
    # A civil affairs bureau: the org type allows the caseworkers made below (docs/security.md).
    org_id = next(o["id"] for o in client.get("/api/v1/orgs", headers=admin).json()["items"]
                  if o["type"] == "civil_affairs")
    # A user to act on, made by the admin for this test.
    target = client.post(
        "/api/v1/users",
        headers=admin,
        json={
            "username": "target.user",
            "name": "目标用户",
            "org_id": org_id,
            "roles": ["caseworker"],
        },
    ).json()["id"]
    failures: list[str] = []
    for route, expected in ADMIN_EXPECTED[username].items():
        targets = [("existing", target)]
        if "{id}" in route:
            targets.append(("unknown", "usr_doesnotexist2345678"))
        for position, target_id in targets:
            before = users_snapshot(rt)
            r = admin_request(client, headers, route, target_id, org_id, f"new.{position}.user")
            label = f"{username} | {route} | {position}"
            if isinstance(expected, Forbidden):
                problems = check_refused(expected, r, {})
                if users_snapshot(rt) != before:
                    problems.append("a refused request changed the users table")
            elif position == "unknown":
                problems = check_refused(
                    HIDDEN,
                    r,
                    {
                        "error": {
                            "code": "not_found",
                            "message": "记录不存在或无权查看。",
                            "details": {},
                        }
                    },
                )
            else:
                want = 201 if route.startswith("POST /users") and "{id}" not in route else 200
                problems = (
                    [] if r.status_code == want else [f"status {r.status_code}: {r.text[:300]}"]
                )
            failures += [f"{label}: {p}" for p in problems]
    assert not failures, "\n".join(failures)


def test_admin_sees_and_manages_users_only_in_its_region(rt, client, tokens):
    """A county admin: own county's users yes, a sibling county's are hidden."""
    admin = tokens["admin"]
    orgs = {
        o["region_code"] + ":" + o["type"]: o["id"]
        for o in client.get("/api/v1/orgs", headers=admin).json()["items"]
    }
    # A county administrator: in an IT org of the county (the role table), made directly here
    # (through the API it would wait for a second administrator's approval).
    with rt.db.session() as s:
        it = Org(id=new_id("org"), name="海州区民政局信息科（测试）", type=OrgType.IT, region_code="320706")
        s.add(it)
        s.flush()
        create_user(s, rt.passwords, username="admin.haizhou", display_name="海州区管理员", org=it, roles=["admin"],
                    password="Haizhou-admin-2026", now=rt.clock())
        s.commit()
    county_admin = client.post(
        "/api/v1/auth/token", data={"username": "admin.haizhou", "password": "Haizhou-admin-2026"}
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {county_admin}"}
    ids = {
        u["username"]: u["id"] for u in client.get("/api/v1/users", headers=admin).json()["items"]
    }
    before = users_snapshot(rt)

    listed = {u["username"] for u in client.get("/api/v1/users", headers=headers).json()["items"]}
    assert listed == {"admin.haizhou", "caseworker.haizhou", "village.haizhou", "school.haizhou", "court.haizhou"}
    assert client.get(f"/api/v1/users/{ids['village.haizhou']}", headers=headers).status_code == 200
    for route in ("", "/disable", "/reset-password"):
        for username in ("caseworker.guannan", "supervisor.city"):  # sibling, parent
            method = client.get if route == "" else client.post
            r = method(f"/api/v1/users/{ids[username]}{route}", headers=headers)
            assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", (
                route,
                username,
            )
    assert users_snapshot(rt) == before
    r = client.post(
        "/api/v1/users",
        headers=headers,
        json={
            "username": "new.guannan",
            "name": "灌南新用户",
            "org_id": orgs["320724:civil_affairs"],
            "roles": ["caseworker"],
        },
    )
    assert r.status_code == 403
    assert r.json()["error"]["details"] == {"rule": "region:outside_jurisdiction"}
    assert not run_sql(rt, "SELECT id FROM users WHERE username = 'new.guannan'")
    orgs_seen = {
        o["region_code"] for o in client.get("/api/v1/orgs", headers=headers).json()["items"]
    }
    assert orgs_seen and all(code.startswith("320706") for code in orgs_seen)
    # The caseworker in Guannan can still sign in: nothing was disabled or reset.
    assert client.get("/api/v1/me", headers=tokens["caseworker.guannan"]).status_code == 200
