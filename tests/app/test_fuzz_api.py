"""Schemathesis over every API operation, as every demo role and anonymously: no 5xx.

The app runs in-process (ASGI) on the test database of each backend. Every role
signs in through ``/api/v1/auth/token``; each operation then gets schemathesis's
deterministic edge cases (each sent once per backend, by the roles the operation
lets in taking turns) and a bounded, seeded number of random requests per role,
valid and invalid ones (each role's on one of the two backends, in turns), with
path ids half of the time taken from real records (a household, a minor, a sealed
application), so requests reach past the 404. The one check is the product's
promise: no answer is a 5xx. Every 5xx found is collected (operation, role, status,
request) and reported together.

Left out, and why:
- the positive cases of the routes that render a PDF (issue, preview, correct,
  reply): rendering takes a quarter of a second a page, and their bodies are
  checked by ``test_documents*``; their invalid cases are still sent;
- ``POST /auth/logout`` (it would end the very session the fuzz signs with), and
  ``/users/{id}/disable`` and ``/reset-password`` on the demo users (they would
  lock a role out midway); with random ids they are still sent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import DEMO_PASSWORD, household_body, make_id_number, minor_body

ROLES = {
    "caseworker": "caseworker.haizhou",
    "supervisor": "supervisor.city",
    "requester": "court.haizhou",
    "custodian": "custodian.city",
    "auditor": "auditor.city",
    "admin": "admin",
    "anonymous": None,
}
# Examples per operation, role and mode: bounded so the whole fuzz runs in a minute or two a backend.
EXAMPLES = int(os.environ.get("SHOUHU_FUZZ_EXAMPLES", "4"))
SEED = 13
SHARDS = 4  # the operations are split into shards that parallel workers share
RENDERS = {("POST", "/api/v1/documents"), ("POST", "/api/v1/documents/preview"),
           ("POST", "/api/v1/documents/{document_id}/versions"),
           ("POST", "/api/v1/sealed-requests/{request_id}/reply")}
NEVER = {("POST", "/api/v1/auth/logout")}


@pytest.fixture
def world(client: TestClient, tokens: Any) -> dict[str, str]:
    """Real ids to put into paths: a household, a minor, a pending application."""
    cw = tokens["caseworker.haizhou"]
    hid = client.post("/api/v1/households", json=household_body(), headers=cw).json()["id"]
    mid = client.post("/api/v1/minors", json=minor_body(hid), headers=cw).json()["id"]
    r = client.post("/api/v1/sealed-requests", headers=tokens["court.haizhou"], json={
        "case_number": "（2026）苏0706刑初88号", "legal_basis": "cpl_286_judicial", "purpose": "审理案件需要",
        "subject": {"name": "测试童", "id_number": make_id_number(birth="20090101")}})
    assert r.status_code == 201, r.text
    return {"household_id": hid, "minor_id": mid, "record_id": mid, "request_id": r.json()["id"]}


def operations(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), op.path) not in NEVER:
            yield op


class Fuzz:
    """Sends generated cases through one in-process client and keeps every 5xx."""

    def __init__(self, app: Any, world: dict[str, str], headers: dict[str, dict[str, str]]):
        # Requests go through a client of our own that answers a crash as the server would (500)
        # rather than raising; schemathesis's ASGI transport would start the app's lifespan again.
        self.client = TestClient(app, raise_server_exceptions=False)
        self.world = world
        self.headers = headers
        self.sent = 0
        self.failures: dict[tuple[str, str, str], str] = {}

    def send(self, key: tuple[str, str], case: Any, role: str, *, known: bool) -> int:
        if known and case.path_parameters:
            for name in list(case.path_parameters):
                if name in self.world:
                    case.path_parameters[name] = self.world[name]
        if key in (("POST", "/api/v1/users/{user_id}/disable"), ("POST", "/api/v1/users/{user_id}/reset-password")):
            case.path_parameters["user_id"] = "u_" + str(case.path_parameters.get("user_id"))[:30]
        kwargs = case.as_transport_kwargs(base_url="http://testserver")
        kwargs.pop("timeout", None)
        prepared = requests.Request(**kwargs).prepare()
        body = prepared.body.encode() if isinstance(prepared.body, str) else prepared.body
        headers = dict(prepared.headers)
        headers.pop("Authorization", None)
        headers.update(self.headers[role])  # a role's requests are its own, whatever was generated
        response = self.client.request(prepared.method or "GET", prepared.url or "", content=body, headers=headers)
        self.sent += 1
        if response.status_code >= 500:
            self.failures.setdefault(
                (*key, str(response.status_code)),
                f"{key[0]} {key[1]} as {role}: {response.status_code} {response.text[:160]!r}\n"
                f"    request: {prepared.method} {prepared.url} {(body or b'')[:400]!r}")
        return response.status_code


def fuzzing(fuzz: Fuzz, key: tuple[str, str], strategy: Any, role: str, examples: int) -> None:
    @seed(SEED)
    @hsettings(max_examples=examples, deadline=None, database=None,
               phases=[Phase.explicit, Phase.generate],  # no shrinking: report what was sent
               suppress_health_check=list(HealthCheck))
    @given(case=strategy, known=st.booleans())
    def run(case: Any, known: bool) -> None:
        fuzz.send(key, case, role, known=known)

    run()


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_operation_answers_5xx_for_any_role(app: Any, client: TestClient, world: dict[str, str],
                                               shard: int, backend: Any) -> None:
    turn = 0 if backend.name == "sqlite" else 1
    schema = schemathesis.openapi.from_dict(app.openapi())
    headers: dict[str, dict[str, str]] = {}
    for role, username in ROLES.items():
        if username is None:
            headers[role] = {}
            continue
        r = client.post("/api/v1/auth/token", data={"username": username, "password": DEMO_PASSWORD})
        assert r.status_code == 200, r.text
        headers[role] = {"Authorization": f"Bearer {r.json()['access_token']}"}
    fuzz = Fuzz(app, world, headers)

    for op in list(operations(schema))[shard::SHARDS]:
        key = (op.method.upper(), op.path)
        modes = [GenerationMode.NEGATIVE] if key in RENDERS else [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        # The coverage phase: schemathesis's deterministic edge cases (nulls, missing and extra fields,
        # wrong types, boundaries, bad formats), sent as each role the operation lets past its role
        # check, with real ids in the path.
        cases = list(schema.iter_coverage_cases(
            op, generation_modes=modes, generation_config=schema.config.generation_for(operation=op, phase="coverage"),
            extra_data_source=None, error_feedback=None, session=None))
        # The first case goes to every role, which tells the roles refused at the role check from
        # those let in; every further case is sent once, by the roles let in taking turns (they share
        # the code past the role check, not always the scope or the rule; the turns start at another
        # role on each backend, so the two backends send each case as different roles).
        refused: set[str] = set()
        allowed: list[str] = []
        for role in headers:
            if not cases:
                break
            if fuzz.send(key, cases[0], role, known=True) in (401, 403):
                refused.add(role)
            elif role != "anonymous":
                allowed.append(role)
        for i, case in enumerate(cases[1:] if allowed else []):
            fuzz.send(key, case, allowed[(i + turn) % len(allowed)], known=True)
        # The fuzzing phase: seeded random cases, valid and invalid, as every role and anonymously
        # (each role's on one of the two backends, the roles taking turns); a role refused at the
        # role check gets one of each (only body validation runs before it).
        for role in list(headers)[turn::2]:
            for mode in modes:
                try:
                    fuzzing(fuzz, key, op.as_strategy(generation_mode=mode), role,
                            1 if role in refused else EXAMPLES)
                except Unsatisfiable:  # nothing to make invalid (e.g. GET /healthz in negative mode)
                    continue
    print(f"fuzz: {fuzz.sent} requests")
    assert fuzz.sent > 0
    assert not fuzz.failures, f"{len(fuzz.failures)} kinds of 5xx:\n" + "\n".join(fuzz.failures.values())


# What the fuzz found, kept as plain regression tests ------------------------------------


def test_a_nul_character_anywhere_is_422_naming_the_field(client: TestClient, tokens: Any) -> None:
    """PostgreSQL text cannot hold U+0000: a NUL in a login name, a filter or a body field once
    reached the driver and answered 500 (SQLite stored it). Now it is refused up front, named."""
    cw, admin = tokens["caseworker.haizhou"], tokens["admin"]
    r = client.post("/api/v1/auth/token", data={"username": "a\x00b", "password": "x"})
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "username", r.text
    r = client.get("/api/v1/documents", params={"subject_id": "mn_\x00"}, headers=cw)
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0] == {
        "field": "subject_id", "location": "query", "message": "含有不可见的控制字符"}, r.text
    r = client.post("/api/v1/users", headers=admin, json={
        "username": "new.user", "name": "新用户", "org_id": "org_\x00", "password": "x" * 12, "roles": ["caseworker"]})
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "org_id", r.text
    r = client.patch("/api/v1/households/hh_x", headers=cw, json={"members": [{"name": "张\x00三"}]})
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "members.0.name", r.text
    r = client.get("/api/v1/households/hh_%00", headers=cw)
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "household_id", r.text
