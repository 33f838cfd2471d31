"""The access log at run time: one event per decision, fail closed, concurrency, flags, duties.

- ``test_every_route_*``: a table names every route of the OpenAPI document and the
  kinds of call made on it (allowed, refused by role, outside the region, missing,
  invalid before any decision, error after it). The walk makes each call and
  checks that the log grew by exactly the expected events: action, outcome,
  resource id, rule, actor and the request's own X-Request-ID.
- ``test_*_fail_closed_*``: with INSERTs into ``audit_events`` refused from another
  connection, reads answer 503 ``audit_unavailable`` without content, and nothing
  written before is lost; in-process and against a real ``shouhu serve``.
- ``test_concurrent_*``: 4 processes x 500 audited reads leave exactly 2,000 read
  events and a log that verifies.
- ``test_anomaly_*``, ``test_normal_*``: pinned clocks produce each flag kind with
  its actor and count; ordinary working-hours activity raises none.
- ``test_auditor_reads_the_log_*``, ``test_no_route_*``, ``test_database_triggers_*``:
  separation of duties (auditors see the log and no case content, admins no log), and
  nothing, API or SQL, changes or deletes an event.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import re
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from access_control.actions import Action
from access_control.identity import User, actor_for
from archive import schemas
from archive.prefill import PARTICULARS
from core.settings import Settings
from main import create_app
from runtime import Runtime
from tests.audit_support import (
    audit_blocker,
    count_events,
    events_after,
    log_size,
    read_minors,
    serving,
    settings_values,
)
from tests.conftest import (
    DEMO_PASSWORD,
    Tokens,
    bearer,
    household_body,
    make_id_number,
    make_settings,
    minor_body,
    record_fields,
    run_sql,
    seeded_runtime,
)

API = "/api/v1"
CW, GN, VILLAGE = "caseworker.haizhou", "caseworker.guannan", "village.haizhou"
SUP, ADMIN, AUDITOR = "supervisor.city", "admin", "auditor.city"
CANARY_NAME = "窦金丝雀"  # a name that appears nowhere but in the record it is planted in


def verifies(rt: Runtime) -> bool:
    with rt.db.read_session() as s:
        result = rt.audit.verify(s)
    assert result.ok, result.as_dict()
    return True


def openapi_routes(app: Any) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in app.openapi()["paths"].items() for method in ops}


# 1. One event per decision ------------------------------------------------------------

R = tuple[str, str]

HEALTH, READY = ("GET", "/healthz"), ("GET", "/readyz")
LOGIN, LOGOUT = ("POST", f"{API}/auth/token"), ("POST", f"{API}/auth/logout")
ME, PASSWORD = ("GET", f"{API}/me"), ("POST", f"{API}/me/password")
REGIONS, ORGS = ("GET", f"{API}/regions"), ("GET", f"{API}/orgs")
USER_CREATE, USER_LIST = ("POST", f"{API}/users"), ("GET", f"{API}/users")
USER_READ = ("GET", f"{API}/users/{{user_id}}")
USER_DISABLE = ("POST", f"{API}/users/{{user_id}}/disable")
USER_RESET = ("POST", f"{API}/users/{{user_id}}/reset-password")
USER_ROLES = ("PUT", f"{API}/users/{{user_id}}/roles")
GRANTS = ("GET", f"{API}/role-grants")
GRANT_APPROVE = ("POST", f"{API}/role-grants/{{grant_id}}/approve")
GRANT_REJECT = ("POST", f"{API}/role-grants/{{grant_id}}/reject")
EVENTS, SEARCH = ("GET", f"{API}/audit/events"), ("POST", f"{API}/audit/events/search")
VERIFY, VERIFY_CP = ("GET", f"{API}/audit/verify"), ("POST", f"{API}/audit/verify")
CPS, CP_CREATE = ("GET", f"{API}/audit/checkpoints"), ("POST", f"{API}/audit/checkpoints")
PUBLIC_KEY = ("GET", f"{API}/audit/public-key")
INCLUSION = ("GET", f"{API}/audit/proofs/inclusion")
CONSISTENCY = ("GET", f"{API}/audit/proofs/consistency")
EXPORT, ANOMALIES = ("GET", f"{API}/audit/export"), ("GET", f"{API}/audit/anomalies")
HH_CREATE, HH_LIST = ("POST", f"{API}/households"), ("GET", f"{API}/households")
HH_READ = ("GET", f"{API}/households/{{household_id}}")
HH_UPDATE = ("PATCH", f"{API}/households/{{household_id}}")
MN_CREATE, MN_LIST = ("POST", f"{API}/minors"), ("GET", f"{API}/minors")
MN_READ = ("GET", f"{API}/minors/{{minor_id}}")
MN_UPDATE = ("PATCH", f"{API}/minors/{{minor_id}}")
DOC_KINDS = ("GET", f"{API}/document-kinds")
DOC_PREFILL = ("GET", f"{API}/document-kinds/{{kind}}/prefill")
DOC_PREVIEW, DOC_ISSUE = ("POST", f"{API}/documents/preview"), ("POST", f"{API}/documents")
DOC_LIST, DOC_READ = ("GET", f"{API}/documents"), ("GET", f"{API}/documents/{{document_id}}")
DOC_PDF = ("GET", f"{API}/documents/{{document_id}}/pdf")
DOC_CORRECT = ("POST", f"{API}/documents/{{document_id}}/versions")
DOC_VERIFY, DOC_VERIFY_COPY = ("GET", f"{API}/verify/{{code}}"), ("POST", f"{API}/verify/{{code}}")
VISIT_CREATE = ("POST", f"{API}/households/{{household_id}}/visits")
VISIT_LIST = ("GET", f"{API}/households/{{household_id}}/visits")
STATS, FIND = ("GET", f"{API}/statistics/minors"), ("GET", f"{API}/search")
SEAL, UNSEAL = ("POST", f"{API}/records/{{record_id}}/seal"), ("POST", f"{API}/records/{{record_id}}/unseal")
SQ_CREATE, SQ_LIST = ("POST", f"{API}/sealed-requests"), ("GET", f"{API}/sealed-requests")
SQ_READ = ("GET", f"{API}/sealed-requests/{{request_id}}")
SQ_DECIDE = ("POST", f"{API}/sealed-requests/{{request_id}}/decision")
SQ_REVOKE = ("POST", f"{API}/sealed-requests/{{request_id}}/revoke")
SQ_RECORDS = ("GET", f"{API}/sealed-requests/{{request_id}}/records")
SQ_REPLY = ("POST", f"{API}/sealed-requests/{{request_id}}/reply")
SQ_REPLY_READ = ("GET", f"{API}/sealed-requests/{{request_id}}/reply")
DISCLOSURES = ("GET", f"{API}/disclosures")
CA_CERT, CRL = ("GET", f"{API}/pki/ca.pem"), ("GET", f"{API}/pki/crl")
SEAL_IMAGE_SET = ("PUT", f"{API}/orgs/{{org_id}}/seal-image")
SEAL_IMAGE_REMOVE = ("DELETE", f"{API}/orgs/{{org_id}}/seal-image")
LOGIN_MFA = ("POST", f"{API}/auth/token/mfa")
MFA_START, MFA_CONFIRM = ("POST", f"{API}/me/mfa/totp"), ("POST", f"{API}/me/mfa/totp/confirm")
LINK_REQUEST = ("POST", f"{API}/users/{{user_id}}/identities")
LINKS = ("GET", f"{API}/identity-links")
LINK_APPROVE = ("POST", f"{API}/identity-links/{{link_id}}/approve")
LINK_REJECT = ("POST", f"{API}/identity-links/{{link_id}}/reject")
MY_SESSIONS, MY_SIGN_INS = ("GET", f"{API}/me/sessions"), ("GET", f"{API}/me/sign-ins")
END_SESSION = ("DELETE", f"{API}/me/sessions/{{session_id}}")
END_USER_SESSIONS = ("POST", f"{API}/users/{{user_id}}/end-sessions")

# Every route, and the kinds of call the walk must make on it:
#   undecided: no decision, no event (health checks);
#   allowed: one 'allowed' event;  failed: a refused credential, one 'denied' event;
#   role: the role never allows it, 403 and one 'denied' event;
#   region: outside the caller's jurisdiction, one 'denied' event;
#   missing: no such record, 404 and one 'denied' event;
#   error: fails after an allowed decision, one 'error' event in its place;
#   sealed: a sealed record read without a grant, 404 and one 'denied' event;
#   invalid: refused by validation before any decision, 422 and no event;
#   rule: the role allows it but a rule refuses it (the role table, the two-person rule),
#         one 'denied' event naming the rule.
# A route added to the application must be added here (the walk fails otherwise).
CASE = {"allowed", "role", "region", "invalid"}
RECORD = {"allowed", "role", "region", "missing"}
ROUTES: dict[R, set[str]] = {
    HEALTH: {"undecided"},
    READY: {"undecided"},
    CA_CERT: {"undecided"},  # the deployment's public certificate and revocation list: no record read
    CRL: {"undecided"},
    LOGIN: {"allowed", "failed", "invalid"},
    LOGOUT: {"allowed"},
    ME: {"allowed"},
    PASSWORD: {"allowed", "failed", "invalid"},
    REGIONS: {"allowed"},
    ORGS: {"allowed", "role"},
    USER_CREATE: {"allowed", "role", "error", "invalid", "rule"},
    USER_LIST: {"allowed", "role", "invalid"},
    USER_READ: {"allowed", "role", "missing"},
    USER_DISABLE: {"allowed", "role", "missing"},
    USER_RESET: {"allowed", "role", "missing"},
    USER_ROLES: {"allowed", "role", "missing", "rule", "invalid"},
    GRANTS: {"allowed", "role", "invalid"},
    GRANT_APPROVE: {"allowed", "role", "missing", "rule"},
    GRANT_REJECT: {"allowed", "role", "missing"},
    EVENTS: {"allowed", "role", "invalid"},
    SEARCH: {"allowed", "role", "invalid"},
    VERIFY: {"allowed", "role"},
    VERIFY_CP: {"allowed", "role", "invalid"},
    CPS: {"allowed"},
    CP_CREATE: {"allowed", "role"},
    PUBLIC_KEY: {"allowed"},
    INCLUSION: {"allowed", "role", "invalid"},
    CONSISTENCY: {"allowed", "role", "invalid"},
    EXPORT: {"allowed", "role", "invalid"},
    ANOMALIES: {"allowed", "role", "invalid"},
    HH_CREATE: CASE,
    HH_LIST: CASE,
    HH_READ: RECORD,
    HH_UPDATE: RECORD | {"error", "invalid"},
    MN_CREATE: CASE | {"error"},
    MN_LIST: CASE,
    MN_READ: RECORD,
    MN_UPDATE: RECORD | {"error", "invalid"},
    DOC_KINDS: {"allowed"},
    DOC_PREFILL: CASE,
    DOC_PREVIEW: CASE,
    DOC_ISSUE: CASE,
    DOC_LIST: CASE,
    DOC_READ: RECORD | {"sealed"},
    DOC_PDF: RECORD | {"sealed"},
    DOC_CORRECT: RECORD | {"error", "invalid"},
    DOC_VERIFY: {"allowed", "missing", "invalid"},
    DOC_VERIFY_COPY: {"allowed", "missing"},
    VISIT_CREATE: RECORD | {"invalid"},
    VISIT_LIST: RECORD,
    STATS: CASE,
    FIND: CASE,
    SEAL: RECORD | {"error", "invalid"},
    UNSEAL: {"allowed", "role", "missing", "error", "invalid"},
    SQ_CREATE: {"allowed", "role", "invalid"},
    SQ_LIST: {"allowed", "role", "invalid"},
    SQ_READ: {"allowed", "role", "missing"},
    SQ_DECIDE: {"allowed", "role", "missing", "error", "invalid"},
    SQ_REVOKE: {"allowed", "role", "missing", "error", "invalid"},
    SQ_RECORDS: {"allowed", "role", "missing", "error"},
    SQ_REPLY: {"allowed", "role", "missing", "error"},
    SQ_REPLY_READ: {"allowed", "role", "missing", "error"},
    DISCLOSURES: {"allowed", "role", "invalid"},
    SEAL_IMAGE_SET: {"allowed", "role", "missing", "error"},
    SEAL_IMAGE_REMOVE: {"allowed", "role", "missing"},
    LOGIN_MFA: {"allowed", "failed", "invalid"},
    MFA_START: {"allowed"},
    MFA_CONFIRM: {"allowed", "failed", "invalid"},
    LINK_REQUEST: {"allowed", "role", "missing", "invalid"},
    LINKS: {"allowed", "role", "invalid"},
    LINK_APPROVE: {"allowed", "role", "missing", "rule"},
    LINK_REJECT: {"allowed", "role", "missing"},
    MY_SESSIONS: {"allowed"},
    MY_SIGN_INS: {"allowed"},
    END_SESSION: {"allowed", "missing"},
    END_USER_SESSIONS: {"allowed", "role", "missing"},
}

NEW_HH = re.compile(r"hh_[a-z2-9]{20}")


def png_image() -> bytes:
    """A small opaque PNG, as an org's seal image."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (120, 120), (200, 0, 0)).save(out, format="PNG")
    return out.getvalue()


@dataclass(frozen=True)
class E:
    """An expected event. ``reason`` is a prefix; ``actor`` defaults to the caller."""

    action: str
    outcome: str
    resource_id: str | re.Pattern[str]
    reason: str | None = None
    actor: str | None = None


class Walk:
    """Makes one call, checks the status and exactly the events it added to the log."""

    def __init__(self, client: TestClient, rt: Runtime, tokens: Tokens):
        self.client, self.rt, self.tokens = client, rt, tokens
        self.done: dict[R, set[str]] = defaultdict(set)

    def __call__(self, route: R, kind: str, who: str | dict[str, str] | None, *, status: int,
                 events: list[E] | tuple[()] = (), url: str | None = None, **kw: Any) -> httpx.Response:
        assert route in ROUTES, f"{route} is not in the route table"
        assert kind in ROUTES[route], f"{route}: '{kind}' calls are not expected in the table"
        headers = {**(self.tokens[who] if isinstance(who, str) else (who or {})), **kw.pop("headers", {})}
        method, template = route
        target = url or template
        where = f"{method} {target} ({kind}) as {who if isinstance(who, str) else 'token'}"
        before = log_size(self.rt.db.engine)
        r = self.client.request(method, target, headers=headers, **kw)
        assert r.status_code == status, f"{where}: {r.status_code} {r.text}"
        got = events_after(self.rt.db.engine, before)
        assert len(got) == len(events), f"{where}: expected {len(events)} event(s), got {got}"
        for want, ev in zip(events, got, strict=True):
            actor = want.actor or who
            assert isinstance(actor, str)
            rid = want.resource_id
            assert ev["action"] == want.action and ev["outcome"] == want.outcome, f"{where}: {ev}"
            if isinstance(rid, re.Pattern):
                assert rid.fullmatch(ev["resource_id"]), f"{where}: resource id {ev}"
            else:
                assert ev["resource_id"] == rid, f"{where}: resource id {ev}"
            assert want.reason is None or ev["reason"].startswith(want.reason), f"{where}: reason {ev}"
            assert ev["actor"] == actor, f"{where}: actor {ev}"
            assert ev["request_id"] == r.headers["x-request-id"], f"{where}: request id {ev}"
        self.done[route].add(kind)
        return r



def _walk_sign_in_routes(walk: Walk, rt: Runtime, users: dict[str, str]) -> None:
    """The second factor, identity links and sessions (issue 19)."""
    import pyotp

    from core.clock import ManualClock

    deny = "role:none_grants:"
    clock = ManualClock(rt.clock())
    rt.clock = clock
    sup = users[SUP]
    # The supervisor enrols a second factor (anyone may; the privileged roles must).
    r = walk(MFA_START, "allowed", SUP, status=200, events=[E(Action.MFA_ENROL, "allowed", sup, "role:everyone")])
    secret = r.json()["secret"]
    walk(MFA_CONFIRM, "invalid", SUP, status=422, json={"code": "abc"})
    now_code = pyotp.TOTP(secret).at(clock())
    wrong = next(c for c in ("135792", "246813") if c not in {pyotp.TOTP(secret).at(clock() + timedelta(seconds=d))
                                                             for d in (-30, 0, 30)})
    walk(MFA_CONFIRM, "failed", SUP, status=422, json={"code": wrong},
         events=[E(Action.MFA_CONFIRM, "denied", sup, "second_factor:wrong_code")])
    walk(MFA_CONFIRM, "allowed", SUP, status=200, json={"code": now_code},
         events=[E(Action.MFA_CONFIRM, "allowed", sup, "role:everyone")])
    clock.advance(30)
    r = walk.client.post(f"{API}/auth/token", data={"username": SUP, "password": DEMO_PASSWORD})
    challenge = r.json()["mfa_token"]
    walk(LOGIN_MFA, "invalid", None, status=422, json={"mfa_token": challenge})
    walk(LOGIN_MFA, "failed", None, status=401, json={"mfa_token": "shu_nothing", "code": "123456"},
         events=[E(Action.AUTH_SECOND_FACTOR, "denied", "", "second_factor:bad_challenge", actor="anonymous")])
    code = pyotp.TOTP(secret).at(clock())
    r = walk(LOGIN_MFA, "allowed", None, status=200, json={"mfa_token": challenge, "code": code},
             events=[E(Action.AUTH_SECOND_FACTOR, "allowed", sup, "login:second_factor_ok:totp", actor=SUP)])
    fresh = bearer(r.json()["access_token"])

    # Sessions: one's own list and history, ending one; an administrator ends a user's.
    r = walk(MY_SESSIONS, "allowed", fresh, status=200, events=[E(Action.SESSION_LIST, "allowed", sup, "role:everyone",
                                                                   actor=SUP)])
    mine = [i for i in r.json()["items"] if i["current"]]
    assert len(mine) == 1 and mine[0]["method"] == "password+totp"
    walk(MY_SIGN_INS, "allowed", fresh, status=200, events=[E(Action.SESSION_LIST, "allowed", sup, "role:everyone",
                                                                   actor=SUP)])
    others = [i["id"] for i in r.json()["items"] if not i["current"]]
    walk(END_SESSION, "missing", fresh, status=404, url=f"{API}/me/sessions/tok_nothing",
         events=[E(Action.SESSION_REVOKE, "denied", "tok_nothing", "record:not_found", actor=SUP)])
    if others:
        walk(END_SESSION, "allowed", fresh, status=204, url=f"{API}/me/sessions/{others[0]}",
             events=[E(Action.SESSION_REVOKE, "allowed", others[0], "role:everyone", actor=SUP)])
    else:
        walk(END_SESSION, "allowed", fresh, status=204, url=f"{API}/me/sessions/{mine[0]['id']}",
             events=[E(Action.SESSION_REVOKE, "allowed", mine[0]["id"], "role:everyone", actor=SUP)])
    ends = END_USER_SESSIONS[1].replace("{user_id}", users[VILLAGE])
    walk(END_USER_SESSIONS, "role", CW, status=403, url=ends,
         events=[E(Action.USER_END_SESSIONS, "denied", users[VILLAGE], deny)])
    walk(END_USER_SESSIONS, "missing", ADMIN, status=404, url=END_USER_SESSIONS[1].replace("{user_id}", "usr_nobody"),
         events=[E(Action.USER_END_SESSIONS, "denied", "usr_nobody", "record:not_found")])
    walk(END_USER_SESSIONS, "allowed", ADMIN, status=200, url=ends,
         events=[E(Action.USER_END_SESSIONS, "allowed", users[VILLAGE], "role:admin")])

    # Identity links: the administrator asks, the security administrator approves.
    rt.settings = rt.settings.model_copy(update={"oidc_issuer": "https://idp.example.gov.cn"})
    link = {"issuer": "https://idp.example.gov.cn", "subject": "staff-0001"}
    ask = LINK_REQUEST[1].replace("{user_id}", users[CW])
    walk(LINK_REQUEST, "invalid", ADMIN, status=422, url=ask, json={**link, "issuer": "https://other.example"})
    walk(LINK_REQUEST, "role", CW, status=403, url=ask, json=link,
         events=[E(Action.IDENTITY_LINK_REQUEST, "denied", users[CW], deny)])
    walk(LINK_REQUEST, "missing", ADMIN, status=404, url=LINK_REQUEST[1].replace("{user_id}", "usr_nobody"), json=link,
         events=[E(Action.IDENTITY_LINK_REQUEST, "denied", "usr_nobody", "record:not_found")])
    r = walk(LINK_REQUEST, "allowed", ADMIN, status=202, url=ask, json=link,
             events=[E(Action.IDENTITY_LINK_REQUEST, "allowed", re.compile(r"idl_[a-z2-9]{20}"), "role:admin")])
    lid = r.json()["id"]
    assert r.json()["subject_hint"] == "st…01" and "staff-0001" not in r.text
    walk(LINKS, "allowed", "security.admin", status=200, events=[E(Action.IDENTITY_LINK_LIST, "allowed", "")])
    walk(LINKS, "role", CW, status=403, events=[E(Action.IDENTITY_LINK_LIST, "denied", "", deny)])
    walk(LINKS, "invalid", ADMIN, status=422, url=f"{API}/identity-links?status=bogus")
    approve = LINK_APPROVE[1].replace("{link_id}", lid)
    walk(LINK_APPROVE, "role", ADMIN, status=403, url=approve,
         events=[E(Action.IDENTITY_LINK_APPROVE, "denied", lid, deny)])
    walk(LINK_APPROVE, "missing", "security.admin", status=404, url=LINK_APPROVE[1].replace("{link_id}", "idl_no"),
         events=[E(Action.IDENTITY_LINK_APPROVE, "denied", "idl_no", "record:not_found")])
    walk(LINK_APPROVE, "allowed", "security.admin", status=200, url=approve,
         events=[E(Action.IDENTITY_LINK_APPROVE, "allowed", lid, "role:security_admin")])
    # A link for the security administrator themselves: not theirs to approve.
    r = walk.client.post(LINK_REQUEST[1].replace("{user_id}", users["security.admin"]), headers=walk.tokens[ADMIN],
                         json={**link, "subject": "staff-0002"})
    own = r.json()["id"]
    walk(LINK_APPROVE, "rule", "security.admin", status=403, url=LINK_APPROVE[1].replace("{link_id}", own),
         events=[E(Action.IDENTITY_LINK_APPROVE, "denied", own, "two_person:own_grant")])
    reject = LINK_REJECT[1].replace("{link_id}", own)
    walk(LINK_REJECT, "role", CW, status=403, url=reject, events=[E(Action.IDENTITY_LINK_REJECT, "denied", own, deny)])
    walk(LINK_REJECT, "missing", ADMIN, status=404, url=LINK_REJECT[1].replace("{link_id}", "idl_no"),
         events=[E(Action.IDENTITY_LINK_REJECT, "denied", "idl_no", "record:not_found")])
    walk(LINK_REJECT, "allowed", ADMIN, status=200, url=reject,
         events=[E(Action.IDENTITY_LINK_REJECT, "allowed", own, "role:admin")])


def test_route_table_names_every_route_of_the_openapi_document(app):
    routes = openapi_routes(app)
    assert routes - set(ROUTES) == set(), "routes missing from the audit walk's table"
    assert set(ROUTES) - routes == set(), "the table names routes the application does not have"


def test_every_route_writes_one_event_per_decision(app, client, tokens, rt):
    assert openapi_routes(app) == set(ROUTES)
    walk = Walk(client, rt, tokens)
    users = dict(run_sql(rt, "SELECT username, id FROM users"))
    deny = "role:none_grants:"
    outside = "region:outside_jurisdiction"

    # Health checks decide nothing and write nothing.
    walk(HEALTH, "undecided", None, status=200)
    walk(READY, "undecided", None, status=200)
    walk(CA_CERT, "undecided", None, status=200)
    walk(CRL, "undecided", None, status=200)

    # Sign-in: one event per attempt, a token only with an 'allowed' one.
    r = walk(LOGIN, "allowed", None, status=200, data={"username": CW, "password": DEMO_PASSWORD},
             events=[E(Action.AUTH_LOGIN, "allowed", users[CW], "login:password_ok", actor=CW)])
    fresh = bearer(r.json()["access_token"])
    r = walk(LOGIN, "failed", None, status=401, data={"username": SUP, "password": "not-the-password"},
             events=[E(Action.AUTH_LOGIN, "denied", users[SUP], "login:bad_credentials", actor=SUP)])
    assert "access_token" not in r.text
    walk(LOGIN, "failed", None, status=401, data={"username": "no.such.user", "password": "whatever-123"},
         events=[E(Action.AUTH_LOGIN, "denied", "", "login:bad_credentials", actor="anonymous")])
    walk(LOGIN, "invalid", None, status=422, data={"username": CW})

    walk(ME, "allowed", CW, status=200, events=[E(Action.ME_READ, "allowed", users[CW], "role:everyone")])
    walk(REGIONS, "allowed", CW, status=200, events=[E(Action.REGION_LIST, "allowed", "320706", "role:everyone")])
    walk(LOGOUT, "allowed", fresh, status=204, events=[E(Action.AUTH_LOGOUT, "allowed", "", "role:everyone", actor=CW)])
    assert client.get(f"{API}/me", headers=fresh).status_code == 401

    walk(ORGS, "allowed", ADMIN, status=200, events=[E(Action.ORG_LIST, "allowed", "", "role:admin")])
    walk(ORGS, "role", CW, status=403, events=[E(Action.ORG_LIST, "denied", "", deny)])

    # An org's seal image: the admin's; refused by role before any org is looked up.
    org_id = run_sql(rt, "SELECT id FROM orgs WHERE name = '连云港市海州区民政局'")[0][0]
    png = {"content": png_image(), "headers": {"Content-Type": "image/png"}}
    for route, action, ok in ((SEAL_IMAGE_SET, Action.ORG_SEAL_SET, png),
                              (SEAL_IMAGE_REMOVE, Action.ORG_SEAL_REMOVE, {})):
        here = route[1].replace("{org_id}", org_id)
        walk(route, "role", CW, status=403, url=here, events=[E(action, "denied", "", deny)], **ok)
        walk(route, "missing", ADMIN, status=404, url=route[1].replace("{org_id}", "org_nothing"),
             events=[E(action, "denied", "org_nothing", "record:not_found")], **ok)
        walk(route, "allowed", ADMIN, status=204, url=here,
             events=[E(action, "allowed", org_id, "role:admin+region:within_jurisdiction")], **ok)
    # The image is checked once the decision is made: the 'allowed' event becomes an 'error' one.
    walk(SEAL_IMAGE_SET, "error", ADMIN, status=422, url=SEAL_IMAGE_SET[1].replace("{org_id}", org_id),
         content=b"GIF89a", headers={"Content-Type": "image/png"},
         events=[E(Action.ORG_SEAL_SET, "error", org_id, "error:invalid_input")])

    # Users: the admin's routes.
    org_id = run_sql(rt, "SELECT org_id FROM users WHERE username = :u", u=CW)[0][0]
    person = {"username": "walk.person", "name": "走查用户", "org_id": org_id, "roles": ["caseworker"],
              "password": "Walk-password-123"}
    r = walk(USER_CREATE, "allowed", ADMIN, status=201, json=person,
             events=[E(Action.USER_CREATE, "allowed", "walk.person", "role:admin")])
    wp = r.json()["id"]
    walk(USER_CREATE, "error", ADMIN, status=409, json=person,
         events=[E(Action.USER_CREATE, "error", "walk.person", "error:conflict")])
    walk(USER_CREATE, "role", CW, status=403, json={**person, "username": "walk.other"},
         events=[E(Action.USER_CREATE, "denied", "walk.other", deny)])
    walk(USER_CREATE, "invalid", ADMIN, status=422, json={**person, "username": "Not Valid!"})
    # Against the role table: one 'denied' event naming the rule, 422 naming roles.
    walk(USER_CREATE, "rule", ADMIN, status=422, json={**person, "username": "walk.reader", "roles": ["auditor"]},
         events=[E(Action.USER_CREATE, "denied", "walk.reader", "roles:org_type")])
    # A privileged role: the account is created pending, with its grant request (two events).
    it_org = run_sql(rt, "SELECT org_id FROM users WHERE username = :u", u=ADMIN)[0][0]
    r = walk(USER_CREATE, "allowed", ADMIN, status=202,
             json={**person, "username": "walk.admin", "org_id": it_org, "roles": ["admin"]},
             events=[E(Action.USER_CREATE, "allowed", "walk.admin", "role:admin"),
                     E(Action.ROLE_GRANT_REQUEST, "allowed", re.compile(r"grt_[a-z2-9]{20}"), "role:admin")])
    grant = r.json()["pending_grant"]["id"]
    walk(USER_LIST, "allowed", ADMIN, status=200, events=[E(Action.USER_LIST, "allowed", "")])
    walk(USER_LIST, "role", CW, status=403, events=[E(Action.USER_LIST, "denied", "", deny)])
    walk(USER_LIST, "invalid", ADMIN, status=422, url=f"{API}/users?org_id={'x' * 41}")

    # The new user signs in and changes its own password (a wrong current one is refused and logged).
    r = walk(LOGIN, "allowed", None, status=200,
             data={"username": "walk.person", "password": "Walk-password-123"},
             events=[E(Action.AUTH_LOGIN, "allowed", wp, actor="walk.person")])
    wp_headers = bearer(r.json()["access_token"])
    change = Action.USER_CHANGE_OWN_PASSWORD
    walk(PASSWORD, "invalid", wp_headers, status=422,
         json={"current_password": "Walk-password-123", "new_password": "short"})
    walk(PASSWORD, "failed", wp_headers, status=422,
         json={"current_password": "Wrong-password-9", "new_password": "Another-pass-456"},
         events=[E(change, "denied", wp, "password:wrong_current", actor="walk.person")])
    walk(PASSWORD, "allowed", wp_headers, status=204,
         json={"current_password": "Walk-password-123", "new_password": "Another-pass-456"},
         events=[E(change, "allowed", wp, "role:everyone", actor="walk.person")])

    for route, action in ((USER_READ, Action.USER_READ), (USER_RESET, Action.USER_RESET_PASSWORD),
                          (USER_DISABLE, Action.USER_DISABLE)):
        here = route[1].replace("{user_id}", wp)
        walk(route, "role", CW, status=403, url=here, events=[E(action, "denied", wp, deny)])
        walk(route, "missing", ADMIN, status=404, url=route[1].replace("{user_id}", "usr_nobody"),
             events=[E(action, "denied", "usr_nobody", "record:not_found")])
        walk(route, "allowed", ADMIN, status=200, url=here,
             events=[E(action, "allowed", wp, "role:admin+region:within_jurisdiction")])

    # Roles and the two-person rule.
    here = USER_ROLES[1].replace("{user_id}", wp)
    walk(USER_ROLES, "allowed", ADMIN, status=200, url=here, json={"roles": ["caseworker", "supervisor"]},
         events=[E(Action.USER_CHANGE_ROLES, "allowed", wp, "role:admin+region:within_jurisdiction")])
    walk(USER_ROLES, "role", CW, status=403, url=here, json={"roles": ["caseworker"]},
         events=[E(Action.USER_CHANGE_ROLES, "denied", wp, deny)])
    walk(USER_ROLES, "missing", ADMIN, status=404, url=USER_ROLES[1].replace("{user_id}", "usr_nobody"),
         json={"roles": ["caseworker"]},
             events=[E(Action.USER_CHANGE_ROLES, "denied", "usr_nobody", "record:not_found")])
    walk(USER_ROLES, "rule", ADMIN, status=422, url=here, json={"roles": ["caseworker", "custodian"]},
         events=[E(Action.USER_CHANGE_ROLES, "denied", wp, "roles:exclusive")])
    walk(USER_ROLES, "invalid", ADMIN, status=422, url=here, json={"roles": []})
    walk(GRANTS, "allowed", ADMIN, status=200, events=[E(Action.ROLE_GRANT_LIST, "allowed", "")])
    walk(GRANTS, "role", CW, status=403, events=[E(Action.ROLE_GRANT_LIST, "denied", "", deny)])
    walk(GRANTS, "invalid", ADMIN, status=422, url=f"{API}/role-grants?status=bogus")
    approve = GRANT_APPROVE[1].replace("{grant_id}", grant)
    # 三员分立: the administrator who asked approves nothing; the security administrator does.
    walk(GRANT_APPROVE, "rule", ADMIN, status=403, url=approve,
         events=[E(Action.ROLE_GRANT_APPROVE, "denied", grant, "role:none_grants:identity:role_grant:approve")])
    walk(GRANT_APPROVE, "role", CW, status=403, url=approve,
         events=[E(Action.ROLE_GRANT_APPROVE, "denied", grant, deny)])
    walk(GRANT_APPROVE, "missing", "security.admin", status=404,
         url=GRANT_APPROVE[1].replace("{grant_id}", "grt_nobody"),
         events=[E(Action.ROLE_GRANT_APPROVE, "denied", "grt_nobody", "record:not_found")])
    walk(GRANT_APPROVE, "allowed", "security.admin", status=200, url=approve,
         events=[E(Action.ROLE_GRANT_APPROVE, "allowed", grant, "role:security_admin+region:within_jurisdiction")])
    r = client.post(f"{API}/users", headers=tokens[ADMIN],
                    json={**person, "username": "walk.admin2", "org_id": it_org, "roles": ["admin"]})
    assert r.status_code == 202, r.text
    reject = GRANT_REJECT[1].replace("{grant_id}", r.json()["pending_grant"]["id"])
    walk(GRANT_REJECT, "role", CW, status=403, url=reject,
         events=[E(Action.ROLE_GRANT_REJECT, "denied", r.json()["pending_grant"]["id"], deny)])
    walk(GRANT_REJECT, "missing", ADMIN, status=404, url=GRANT_REJECT[1].replace("{grant_id}", "grt_nobody"),
         events=[E(Action.ROLE_GRANT_REJECT, "denied", "grt_nobody", "record:not_found")])
    walk(GRANT_REJECT, "allowed", ADMIN, status=200, url=reject,
         events=[E(Action.ROLE_GRANT_REJECT, "allowed", r.json()["pending_grant"]["id"])])

    # The access log: the auditor's routes (and the two everyone may read).
    ev_read = Action.AUDIT_EVENTS_READ
    walk(EVENTS, "allowed", AUDITOR, status=200, params={"limit": 5}, events=[E(ev_read, "allowed", "")])
    walk(EVENTS, "role", CW, status=403, events=[E(ev_read, "denied", "", deny)])
    walk(EVENTS, "invalid", AUDITOR, status=422, params={"limit": 0})
    walk(SEARCH, "allowed", AUDITOR, status=200, json={"action": "auth:token:create"},
         events=[E(ev_read, "allowed", "", "role:auditor")])
    walk(SEARCH, "role", CW, status=403, json={}, events=[E(ev_read, "denied", "", deny)])
    walk(SEARCH, "invalid", AUDITOR, status=422, json={"bogus": 1})
    r = walk(VERIFY, "allowed", AUDITOR, status=200, events=[E(Action.AUDIT_VERIFY, "allowed", "")])
    assert r.json()["ok"] is True
    walk(VERIFY, "role", CW, status=403, events=[E(Action.AUDIT_VERIFY, "denied", "", deny)])
    r = walk(CP_CREATE, "allowed", AUDITOR, status=201, events=[E(Action.AUDIT_CHECKPOINT_CREATE, "allowed", "")])
    cp = r.json()
    assert cp["size"] == log_size(rt.db.engine)  # the request's own event is in the checkpoint
    walk(CP_CREATE, "role", CW, status=403, events=[E(Action.AUDIT_CHECKPOINT_CREATE, "denied", "", deny)])
    walk(CPS, "allowed", CW, status=200, events=[E(Action.AUDIT_CHECKPOINT_READ, "allowed", "", "role:everyone")])
    walk(PUBLIC_KEY, "allowed", CW, status=200,
         events=[E(Action.AUDIT_CHECKPOINT_READ, "allowed", "", "role:everyone")])
    r = walk(VERIFY_CP, "allowed", AUDITOR, status=200, json={"checkpoint": cp},
             events=[E(Action.AUDIT_VERIFY, "allowed", "")])
    assert r.json()["ok"] is True and r.json()["checkpoints_checked"] >= 2
    walk(VERIFY_CP, "role", CW, status=403, json={"checkpoint": cp},
         events=[E(Action.AUDIT_VERIFY, "denied", "", deny)])
    walk(VERIFY_CP, "invalid", AUDITOR, status=422, json={"checkpoint": {**cp, "size": -1}})
    proof = Action.AUDIT_PROOF_READ
    walk(INCLUSION, "allowed", AUDITOR, status=200, params={"seq": 1}, events=[E(proof, "allowed", "1")])
    walk(INCLUSION, "role", CW, status=403, params={"seq": 1}, events=[E(proof, "denied", "1", deny)])
    walk(INCLUSION, "invalid", AUDITOR, status=422, params={"seq": 0})
    walk(CONSISTENCY, "allowed", AUDITOR, status=200, params={"first": 1}, events=[E(proof, "allowed", "")])
    walk(CONSISTENCY, "role", CW, status=403, params={"first": 1}, events=[E(proof, "denied", "", deny)])
    walk(CONSISTENCY, "invalid", AUDITOR, status=422, params={"first": 0})
    r = walk(EXPORT, "allowed", AUDITOR, status=200, events=[E(Action.AUDIT_EVENTS_EXPORT, "allowed", "")])
    assert len(r.content.splitlines()) == log_size(rt.db.engine) - 1  # everything before its own event
    walk(EXPORT, "role", CW, status=403, events=[E(Action.AUDIT_EVENTS_EXPORT, "denied", "", deny)])
    walk(EXPORT, "invalid", AUDITOR, status=422, params={"format": "xml"})
    walk(ANOMALIES, "allowed", AUDITOR, status=200, events=[E(Action.AUDIT_ANOMALIES_READ, "allowed", "")])
    walk(ANOMALIES, "role", CW, status=403, events=[E(Action.AUDIT_ANOMALIES_READ, "denied", "", deny)])
    walk(ANOMALIES, "invalid", AUDITOR, status=422, params={"from": "not-a-time"})

    # Households.
    households_before = run_sql(rt, "SELECT count(*) FROM households")[0][0]
    r = walk(HH_CREATE, "allowed", CW, status=201, json=household_body(),
             events=[E(Action.HOUSEHOLD_CREATE, "allowed", NEW_HH, "role:caseworker+region:within_jurisdiction")])
    hh = r.json()["id"]
    assert run_sql(rt, "SELECT resource_id FROM audit_events WHERE action = :a ORDER BY seq DESC",
                   a=Action.HOUSEHOLD_CREATE.value)[0][0] == hh
    walk(HH_CREATE, "role", AUDITOR, status=403, json=household_body(),
         events=[E(Action.HOUSEHOLD_CREATE, "denied", NEW_HH, deny)])
    walk(HH_CREATE, "role", SUP, status=403, json=household_body(),
         events=[E(Action.HOUSEHOLD_CREATE, "denied", NEW_HH, deny)])
    walk(HH_CREATE, "region", GN, status=403, json=household_body(),
         events=[E(Action.HOUSEHOLD_CREATE, "denied", NEW_HH, outside)])
    walk(HH_CREATE, "invalid", CW, status=422, json={})
    walk(HH_CREATE, "invalid", CW, status=422, json=household_body("320799001001"))  # unknown region
    assert run_sql(rt, "SELECT count(*) FROM households")[0][0] == households_before + 1

    walk(HH_LIST, "allowed", CW, status=200, events=[E(Action.HOUSEHOLD_LIST, "allowed", "")])
    walk(HH_LIST, "allowed", CW, status=200, params={"region": "320706001001"},
         events=[E(Action.HOUSEHOLD_LIST, "allowed", "")])
    walk(HH_LIST, "role", AUDITOR, status=403, events=[E(Action.HOUSEHOLD_LIST, "denied", "", deny)])
    walk(HH_LIST, "region", GN, status=404, params={"region": "320706"},
         events=[E(Action.HOUSEHOLD_LIST, "denied", "320706", outside)])
    walk(HH_LIST, "invalid", CW, status=422, params={"limit": 0})
    walk(HH_LIST, "invalid", CW, status=422, params={"region": "320799"})  # unknown region

    here = f"{API}/households/{hh}"
    nowhere = f"{API}/households/hh_nothing"
    walk(HH_READ, "allowed", CW, status=200, url=here, events=[E(Action.HOUSEHOLD_READ, "allowed", hh)])
    walk(HH_READ, "allowed", SUP, status=200, url=here, events=[E(Action.HOUSEHOLD_READ, "allowed", hh)])
    walk(HH_READ, "role", AUDITOR, status=403, url=here, events=[E(Action.HOUSEHOLD_READ, "denied", hh, deny)])
    walk(HH_READ, "role", AUDITOR, status=403, url=nowhere,
         events=[E(Action.HOUSEHOLD_READ, "denied", "hh_nothing", deny)])
    walk(HH_READ, "region", GN, status=404, url=here, events=[E(Action.HOUSEHOLD_READ, "denied", hh, outside)])
    walk(HH_READ, "missing", CW, status=404, url=nowhere,
         events=[E(Action.HOUSEHOLD_READ, "denied", "hh_nothing", "record:not_found")])

    upd = Action.HOUSEHOLD_UPDATE
    walk(HH_UPDATE, "allowed", CW, status=200, url=here, json={"notes": "走查更新"},
         events=[E(upd, "allowed", hh)])
    walk(HH_UPDATE, "error", CW, status=409, url=here, json={"notes": "过期", "expected_version": 1},
         events=[E(upd, "error", hh, "error:conflict")])
    walk(HH_UPDATE, "role", SUP, status=403, url=here, json={"notes": "x"}, events=[E(upd, "denied", hh, deny)])
    walk(HH_UPDATE, "region", GN, status=404, url=here, json={"notes": "x"},
         events=[E(upd, "denied", hh, outside)])
    walk(HH_UPDATE, "missing", CW, status=404, url=nowhere, json={"notes": "x"},
         events=[E(upd, "denied", "hh_nothing", "record:not_found")])
    walk(HH_UPDATE, "invalid", CW, status=422, url=here, json={"bogus": 1})

    # Minors: creating one is decided on its household's region, and logged as the new minor
    # (its id is the resource, the household in the details), so a minor's history starts there.
    body = minor_body(hh, name=CANARY_NAME)
    new_mn = re.compile(r"mn_[a-z2-9]{20}")
    before = log_size(rt.db.engine)
    r = walk(MN_CREATE, "allowed", CW, status=201, json=body, events=[E(Action.MINOR_CREATE, "allowed", new_mn)])
    mn = r.json()["id"]
    ((kind, rid, details),) = run_sql(rt, "SELECT resource_kind, resource_id, details FROM audit_events "
                                          "WHERE seq > :s", s=before)
    assert (kind, rid) == ("minor", mn)
    assert (json.loads(details) if isinstance(details, str) else details) == {"household_id": hh}
    walk(MN_CREATE, "error", CW, status=409, json=body,
         events=[E(Action.MINOR_CREATE, "error", new_mn, "error:conflict")])
    walk(MN_CREATE, "role", AUDITOR, status=403, json=minor_body(hh),
         events=[E(Action.MINOR_CREATE, "denied", "", deny)])
    r = walk(MN_CREATE, "region", GN, status=422, json=minor_body(hh),
             events=[E(Action.MINOR_CREATE, "denied", new_mn, outside)])
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["household_id"]
    walk(MN_CREATE, "invalid", CW, status=422, json={})
    walk(MN_CREATE, "invalid", CW, status=422, json=minor_body("hh_nothing"))  # no such household

    walk(MN_LIST, "allowed", CW, status=200, events=[E(Action.MINOR_LIST, "allowed", "")])
    walk(MN_LIST, "role", AUDITOR, status=403, events=[E(Action.MINOR_LIST, "denied", "", deny)])
    walk(MN_LIST, "region", GN, status=404, params={"region": "320706001001"},
         events=[E(Action.MINOR_LIST, "denied", "320706001001", outside)])
    walk(MN_LIST, "invalid", CW, status=422, params={"category": 9})
    walk(MN_LIST, "invalid", CW, status=422, params={"cursor": "!!!"})

    here = f"{API}/minors/{mn}"
    nowhere = f"{API}/minors/mn_nothing"
    r = walk(MN_READ, "allowed", CW, status=200, url=here, events=[E(Action.MINOR_READ, "allowed", mn)])
    assert r.json()["name"] == CANARY_NAME
    r = walk(MN_READ, "role", AUDITOR, status=403, url=here, events=[E(Action.MINOR_READ, "denied", mn, deny)])
    assert CANARY_NAME not in r.text
    r = walk(MN_READ, "region", GN, status=404, url=here, events=[E(Action.MINOR_READ, "denied", mn, outside)])
    assert CANARY_NAME not in r.text
    walk(MN_READ, "missing", CW, status=404, url=nowhere,
         events=[E(Action.MINOR_READ, "denied", "mn_nothing", "record:not_found")])

    upd = Action.MINOR_UPDATE
    walk(MN_UPDATE, "allowed", CW, status=200, url=here, json={"school": "幸福小学"}, events=[E(upd, "allowed", mn)])
    walk(MN_UPDATE, "error", CW, status=409, url=here, json={"school": "x", "expected_version": 1},
         events=[E(upd, "error", mn, "error:conflict")])
    walk(MN_UPDATE, "role", SUP, status=403, url=here, json={"school": "x"}, events=[E(upd, "denied", mn, deny)])
    walk(MN_UPDATE, "region", GN, status=404, url=here, json={"school": "x"},
         events=[E(upd, "denied", mn, outside)])
    walk(MN_UPDATE, "missing", CW, status=404, url=nowhere, json={"school": "x"},
         events=[E(upd, "denied", "mn_nothing", "record:not_found")])
    walk(MN_UPDATE, "invalid", CW, status=422, url=here, json={"sex": "unknown"})

    # Official documents (a referral notice about the minor).
    kinds = walk(DOC_KINDS, "allowed", AUDITOR, status=200,
                 events=[E(Action.DOCUMENT_KINDS_LIST, "allowed", "", "role:everyone")]).json()["items"]
    example = next(k["example"] for k in kinds if k["kind"] == "referral_notice")
    example = {k: v for k, v in example.items() if k not in PARTICULARS["referral_notice"]}  # from the record
    request = {"kind": "referral_notice", "subject_id": mn, "fields": example}
    here = f"{API}/document-kinds/referral_notice/prefill"
    r = walk(DOC_PREFILL, "allowed", CW, status=200, url=here, params={"subject_id": mn},
             events=[E(Action.DOCUMENT_PREFILL, "allowed", mn, "role:caseworker+region:within_jurisdiction")])
    assert CANARY_NAME in r.text
    walk(DOC_PREFILL, "role", ADMIN, status=403, url=here, params={"subject_id": mn},
         events=[E(Action.DOCUMENT_PREFILL, "denied", "", deny)])
    walk(DOC_PREFILL, "role", AUDITOR, status=403, url=here, params={"subject_id": mn},
         events=[E(Action.DOCUMENT_PREFILL, "denied", "", "role:not_for_document")])
    r = walk(DOC_PREFILL, "region", GN, status=422, url=here, params={"subject_id": mn},
             events=[E(Action.DOCUMENT_PREFILL, "denied", mn, outside)])
    assert CANARY_NAME not in r.text
    walk(DOC_PREFILL, "invalid", CW, status=422, url=here, params={"subject_id": "mn_nothing"})
    walk(DOC_PREFILL, "invalid", CW, status=404, url=f"{API}/document-kinds/no_such_kind/prefill")

    walk(DOC_PREVIEW, "allowed", CW, status=200, json=request, events=[E(Action.DOCUMENT_PREVIEW, "allowed", "")])
    walk(DOC_PREVIEW, "role", ADMIN, status=403, json=request, events=[E(Action.DOCUMENT_PREVIEW, "denied", "", deny)])
    walk(DOC_PREVIEW, "region", GN, status=422, json=request,
         events=[E(Action.DOCUMENT_PREVIEW, "denied", mn, outside)])
    walk(DOC_PREVIEW, "invalid", CW, status=422, json={**request, "kind": "no_such_kind"})
    walk(DOC_PREVIEW, "invalid", CW, status=422, json={**request, "fields": {}})

    r = walk(DOC_ISSUE, "allowed", CW, status=201, json=request,
             events=[E(Action.DOCUMENT_ISSUE, "allowed", re.compile(r"doc_[a-z2-9]{20}"))])
    doc, code = r.json()["id"], r.json()["verification_code"]
    assert events_after(rt.db.engine, log_size(rt.db.engine) - 1)[0]["resource_id"] == doc
    walk(DOC_ISSUE, "role", ADMIN, status=403, json=request, events=[E(Action.DOCUMENT_ISSUE, "denied", "", deny)])
    walk(DOC_ISSUE, "region", GN, status=422, json=request, events=[E(Action.DOCUMENT_ISSUE, "denied", mn, outside)])
    walk(DOC_ISSUE, "invalid", CW, status=422, json={"kind": "referral_notice"})
    assert run_sql(rt, "SELECT count(*) FROM documents")[0][0] == 1

    walk(DOC_LIST, "allowed", CW, status=200, events=[E(Action.DOCUMENT_LIST, "allowed", "")])
    walk(DOC_LIST, "role", ADMIN, status=403, events=[E(Action.DOCUMENT_LIST, "denied", "", deny)])
    walk(DOC_LIST, "region", GN, status=404, params={"region": "320706"},
         events=[E(Action.DOCUMENT_LIST, "denied", "320706", outside)])
    walk(DOC_LIST, "invalid", CW, status=422, params={"limit": 0})

    nowhere = "doc_nothing"
    for route, action in ((DOC_READ, Action.DOCUMENT_READ), (DOC_PDF, Action.DOCUMENT_DOWNLOAD)):
        here = route[1].replace("{document_id}", doc)
        walk(route, "allowed", CW, status=200, url=here, events=[E(action, "allowed", doc)])
        walk(route, "role", ADMIN, status=403, url=here, events=[E(action, "denied", doc, deny)])
        walk(route, "region", GN, status=404, url=here, events=[E(action, "denied", doc, outside)])
        walk(route, "missing", CW, status=404, url=route[1].replace("{document_id}", nowhere),
             events=[E(action, "denied", nowhere, "record:not_found")])
    pdf = client.get(f"{API}/documents/{doc}/pdf", headers=tokens[CW]).content

    here = f"{API}/documents/{doc}/versions"
    correction = {"fields": {**example, "contact": "李更正"}, "reason": "联系人更正"}
    fix = Action.DOCUMENT_CORRECT
    walk(DOC_CORRECT, "role", ADMIN, status=403, url=here, json=correction, events=[E(fix, "denied", doc, deny)])
    walk(DOC_CORRECT, "region", GN, status=404, url=here, json=correction, events=[E(fix, "denied", doc, outside)])
    walk(DOC_CORRECT, "missing", CW, status=404, url=f"{API}/documents/{nowhere}/versions", json=correction,
         events=[E(fix, "denied", nowhere, "record:not_found")])
    walk(DOC_CORRECT, "error", VILLAGE, status=409, url=here, json=correction,  # not the issuing org
         events=[E(fix, "error", doc, "error:conflict")])
    walk(DOC_CORRECT, "invalid", CW, status=422, url=here, json={"fields": example, "reason": ""})
    walk(DOC_CORRECT, "allowed", CW, status=201, url=here, json=correction, events=[E(fix, "allowed", doc)])

    # Public verification: no sign-in, logged as the actor 'public'.
    check = Action.DOCUMENT_VERIFY
    r = walk(DOC_VERIFY, "allowed", None, status=200, url=f"{API}/verify/{code}",
             events=[E(check, "allowed", doc, "verify:code_known", actor="public")])
    assert r.json()["current"] is False  # corrected since
    walk(DOC_VERIFY, "missing", None, status=404, url=f"{API}/verify/0000-0000-0000",
         events=[E(check, "denied", "", "verify:code_unknown", actor="public")])
    walk(DOC_VERIFY, "invalid", None, status=422, url=f"{API}/verify/{code}", params={"sha256": "xyz"})
    r = walk(DOC_VERIFY_COPY, "allowed", None, status=200, url=f"{API}/verify/{code}", content=pdf,
             headers={"Content-Type": "application/pdf"},
             events=[E(check, "allowed", doc, "verify:code_known", actor="public")])
    assert r.json()["authentic"] is True
    walk(DOC_VERIFY_COPY, "missing", None, status=404, url=f"{API}/verify/0000-0000-0000", content=pdf,
         events=[E(check, "denied", "", "verify:code_unknown", actor="public")])

    # Home visits, statistics and search.
    here, nowhere = f"{API}/households/{hh}/visits", f"{API}/households/hh_nothing/visits"
    visit = {"visited_on": "2026-01-15", "visitor": "李走访", "findings": "家中情况稳定，祖母照料较好。"}
    walk(VISIT_CREATE, "allowed", CW, status=201, url=here, json=visit, events=[E(Action.VISIT_CREATE, "allowed", hh)])
    walk(VISIT_CREATE, "role", SUP, status=403, url=here, json=visit,
         events=[E(Action.VISIT_CREATE, "denied", hh, deny)])
    walk(VISIT_CREATE, "region", GN, status=404, url=here, json=visit,
         events=[E(Action.VISIT_CREATE, "denied", hh, outside)])
    walk(VISIT_CREATE, "missing", CW, status=404, url=nowhere, json=visit,
         events=[E(Action.VISIT_CREATE, "denied", "hh_nothing", "record:not_found")])
    walk(VISIT_CREATE, "invalid", CW, status=422, url=here, json={**visit, "findings": ""})
    r = walk(VISIT_LIST, "allowed", SUP, status=200, url=here, events=[E(Action.VISIT_LIST, "allowed", hh)])
    assert [v["visitor"] for v in r.json()["items"]] == ["李走访"]
    walk(VISIT_LIST, "role", AUDITOR, status=403, url=here, events=[E(Action.VISIT_LIST, "denied", hh, deny)])
    walk(VISIT_LIST, "region", GN, status=404, url=here, events=[E(Action.VISIT_LIST, "denied", hh, outside)])
    walk(VISIT_LIST, "missing", CW, status=404, url=nowhere,
         events=[E(Action.VISIT_LIST, "denied", "hh_nothing", "record:not_found")])

    stats = Action.STATS_READ
    walk(STATS, "allowed", CW, status=200,
         events=[E(stats, "allowed", "320706", "role:caseworker+region:within_jurisdiction")])
    walk(STATS, "role", AUDITOR, status=403, events=[E(stats, "denied", "320700", deny)])
    walk(STATS, "region", GN, status=404, params={"region": "320706"}, events=[E(stats, "denied", "320706", outside)])
    walk(STATS, "invalid", CW, status=422, params={"region": "3207"})
    walk(FIND, "allowed", CW, status=200, params={"q": CANARY_NAME}, events=[E(Action.SEARCH, "allowed", "", "role:")])
    walk(FIND, "role", AUDITOR, status=403, params={"q": "x"}, events=[E(Action.SEARCH, "denied", "", deny)])
    walk(FIND, "region", GN, status=404, params={"q": "x", "region": "320706"},
         events=[E(Action.SEARCH, "denied", "320706", outside)])
    walk(FIND, "invalid", CW, status=422)

    # Sealed records: the minor and its documents sealed, applied for, decided, read, replied to, unsealed.
    cust, court = "custodian.city", "court.haizhou"
    basis = "cpl_286_judicial"
    seal = {"legal_basis": "cpl_286_1", "case_number": "(2026)苏0706刑初1号"}
    r = client.post(f"{API}/households", json=household_body("320724001001"), headers=tokens[GN])
    gn_mn = client.post(f"{API}/minors", json=minor_body(r.json()["id"], id_number=make_id_number("320724")),
                        headers=tokens[GN]).json()["id"]
    here = f"{API}/records/{mn}/seal"
    walk(SEAL, "role", CW, status=403, url=here, json=seal, events=[E(Action.RECORD_SEAL, "denied", mn, deny)])
    walk(SEAL, "region", court, status=404, url=f"{API}/records/{gn_mn}/seal", json=seal,
         events=[E(Action.RECORD_SEAL, "denied", gn_mn, outside)])
    walk(SEAL, "missing", cust, status=404, url=f"{API}/records/mn_nothing/seal", json=seal,
         events=[E(Action.RECORD_SEAL, "denied", "mn_nothing", "record:not_found")])
    walk(SEAL, "invalid", cust, status=422, url=here, json={"legal_basis": "cpl_286_1"})
    r = walk(SEAL, "allowed", cust, status=200, url=here, json=seal,
             events=[E(Action.RECORD_SEAL, "allowed", mn, "role:custodian+region:within_jurisdiction")])
    assert set(r.json()["sealed"]) == {mn, doc}
    walk(SEAL, "error", cust, status=409, url=here, json=seal,
         events=[E(Action.RECORD_SEAL, "error", mn, "error:conflict")])

    sq = re.compile(r"sq_[a-z2-9]{20}")
    application = {"case_number": "(2026)苏0706刑初2号", "legal_basis": basis, "purpose": "审理案件需要",
                   "subject": {"name": CANARY_NAME, "id_number": body["id_number"]}}
    r = walk(SQ_CREATE, "allowed", court, status=201, json=application,
             events=[E(Action.SEALED_APPLY, "allowed", sq, "role:requester")])
    denied = r.json()["id"]
    walk(SQ_CREATE, "role", CW, status=403, json=application, events=[E(Action.SEALED_APPLY, "denied", sq, deny)])
    walk(SQ_CREATE, "invalid", court, status=422, json={**application, "purpose": ""})
    granted = walk(SQ_CREATE, "allowed", court, status=201, json=application,
                   events=[E(Action.SEALED_APPLY, "allowed", sq, "role:requester")]).json()["id"]
    walk(SQ_LIST, "allowed", court, status=200, events=[E(Action.SEALED_LIST, "allowed", "", "role:requester")])
    walk(SQ_LIST, "role", CW, status=403, events=[E(Action.SEALED_LIST, "denied", "", deny)])
    walk(SQ_LIST, "invalid", cust, status=422, params={"status": "lost"})

    def sq_url(rid: str, tail: str = "") -> str:
        return f"{API}/sealed-requests/{rid}{tail}"

    walk(SQ_READ, "allowed", court, status=200, url=sq_url(denied),
         events=[E(Action.SEALED_READ, "allowed", denied, "role:requester+owner")])
    walk(SQ_READ, "allowed", cust, status=200, url=sq_url(denied),
         events=[E(Action.SEALED_READ, "allowed", denied, "role:custodian")])
    walk(SQ_READ, "role", CW, status=403, url=sq_url(denied), events=[E(Action.SEALED_READ, "denied", denied, deny)])
    walk(SQ_READ, "missing", court, status=404, url=sq_url("sq_nothing"),
         events=[E(Action.SEALED_READ, "denied", "sq_nothing", "record:not_found")])

    no, yes = {"decision": "deny", "reason": "不符合法定情形"}, {"decision": "approve", "reason": "符合法定情形"}
    walk(SQ_DECIDE, "role", court, status=403, url=sq_url(denied, "/decision"), json=no,
         events=[E(Action.SEALED_DECIDE, "denied", denied, deny)])
    walk(SQ_DECIDE, "invalid", cust, status=422, url=sq_url(denied, "/decision"), json={**no, "decision": "maybe"})
    walk(SQ_DECIDE, "missing", cust, status=404, url=sq_url("sq_nothing", "/decision"), json=no,
         events=[E(Action.SEALED_DECIDE, "denied", "sq_nothing", "record:not_found")])
    walk(SQ_DECIDE, "allowed", cust, status=200, url=sq_url(denied, "/decision"), json=no,
         events=[E(Action.SEALED_DECIDE, "allowed", denied, "role:custodian")])
    walk(SQ_DECIDE, "error", cust, status=409, url=sq_url(denied, "/decision"), json=yes,
         events=[E(Action.SEALED_DECIDE, "error", denied, "error:conflict")])
    walk(SQ_DECIDE, "allowed", cust, status=200, url=sq_url(granted, "/decision"), json=yes,
         events=[E(Action.SEALED_DECIDE, "allowed", granted, "role:custodian")])

    grant = Action.SEALED_RECORDS
    walk(SQ_RECORDS, "error", court, status=404, url=sq_url(denied, "/records"),
         events=[E(grant, "error", denied, "error:not_found")])
    walk(SQ_RECORDS, "role", cust, status=403, url=sq_url(granted, "/records"),
         events=[E(grant, "denied", granted, deny)])
    walk(SQ_RECORDS, "missing", court, status=404, url=sq_url("sq_nothing", "/records"),
         events=[E(grant, "denied", "sq_nothing", "record:not_found")])
    r = walk(SQ_RECORDS, "allowed", court, status=200, url=sq_url(granted, "/records"),
             events=[E(grant, "allowed", granted, "role:requester+owner")])
    assert [i["id"] for i in r.json()["items"]] == [doc]
    for route, action in ((DOC_READ, Action.DOCUMENT_READ), (DOC_PDF, Action.DOCUMENT_DOWNLOAD)):
        here = route[1].replace("{document_id}", doc)
        for who in (CW, cust, SUP):
            # Logged as a read of an id that does not exist (test_sealed_same_answer.py).
            walk(route, "sealed", who, status=404, url=here, events=[E(action, "denied", doc, "record:not_found")])
        walk(route, "allowed", court, status=200, url=here,
             events=[E(action, "allowed", doc, f"sealed:grant:{granted}")])
    walk(DOC_VERIFY, "missing", None, status=404, url=f"{API}/verify/{code}",
         events=[E(check, "denied", "", "verify:code_unknown", actor="public")])

    walk(SQ_REVOKE, "role", court, status=403, url=sq_url(granted, "/revoke"), json={"reason": "撤销"},
         events=[E(Action.SEALED_REVOKE, "denied", granted, deny)])
    walk(SQ_REVOKE, "invalid", cust, status=422, url=sq_url(granted, "/revoke"), json={})
    walk(SQ_REVOKE, "missing", cust, status=404, url=sq_url("sq_nothing", "/revoke"), json={"reason": "撤销"},
         events=[E(Action.SEALED_REVOKE, "denied", "sq_nothing", "record:not_found")])
    walk(SQ_REVOKE, "error", cust, status=409, url=sq_url(denied, "/revoke"), json={"reason": "撤销"},
         events=[E(Action.SEALED_REVOKE, "error", denied, "error:conflict")])

    reply, read_reply = Action.SEALED_REPLY, Action.SEALED_REPLY_READ
    walk(SQ_REPLY_READ, "error", court, status=404, url=sq_url(denied, "/reply"),  # not issued yet
         events=[E(read_reply, "error", denied, "error:not_found")])
    walk(SQ_REPLY, "role", court, status=403, url=sq_url(denied, "/reply"), events=[E(reply, "denied", denied, deny)])
    walk(SQ_REPLY, "missing", cust, status=404, url=sq_url("sq_nothing", "/reply"),
         events=[E(reply, "denied", "sq_nothing", "record:not_found")])
    # Two decisions, one event each: the reply, and issuing the letter as an official document.
    walk(SQ_REPLY, "allowed", cust, status=201, url=sq_url(denied, "/reply"),
         events=[E(reply, "allowed", denied, "role:custodian"),
                 E(Action.DOCUMENT_ISSUE, "allowed", re.compile(r"doc_[a-z2-9]{20}"), "role:custodian")])
    walk(SQ_REPLY, "error", cust, status=409, url=sq_url(denied, "/reply"),
         events=[E(reply, "error", denied, "error:conflict")])
    r = walk(SQ_REPLY_READ, "allowed", court, status=200, url=sq_url(denied, "/reply"),
             events=[E(read_reply, "allowed", denied, "role:requester+owner")])
    assert r.headers["content-type"] == "application/pdf"
    walk(SQ_REPLY_READ, "role", CW, status=403, url=sq_url(denied, "/reply"),
         events=[E(read_reply, "denied", denied, deny)])
    walk(SQ_REPLY_READ, "missing", court, status=404, url=sq_url("sq_nothing", "/reply"),
         events=[E(read_reply, "denied", "sq_nothing", "record:not_found")])

    walk(SQ_REVOKE, "allowed", cust, status=200, url=sq_url(granted, "/revoke"), json={"reason": "案件已审结"},
         events=[E(Action.SEALED_REVOKE, "allowed", granted, "role:custodian")])
    r = walk(DISCLOSURES, "allowed", AUDITOR, status=200,
             events=[E(Action.DISCLOSURE_LIST, "allowed", "", "role:auditor")])
    assert [(i["request_id"], i["document_id"]) for i in r.json()["items"]] == [(granted, doc)]
    walk(DISCLOSURES, "role", CW, status=403, events=[E(Action.DISCLOSURE_LIST, "denied", "", deny)])
    walk(DISCLOSURES, "invalid", AUDITOR, status=422, params={"request_id": "x" * 41})

    here, unseal = f"{API}/records/{mn}/unseal", {"cause": "undiscovered_crime", "legal_basis": "spp_rules_485"}
    walk(UNSEAL, "role", court, status=403, url=here, json=unseal, events=[E(Action.RECORD_UNSEAL, "denied", mn, deny)])
    walk(UNSEAL, "missing", cust, status=404, url=f"{API}/records/mn_nothing/unseal", json=unseal,
         events=[E(Action.RECORD_UNSEAL, "denied", "mn_nothing", "record:not_found")])
    walk(UNSEAL, "invalid", cust, status=422, url=here, json={})
    walk(UNSEAL, "error", cust, status=409, url=f"{API}/records/{gn_mn}/unseal", json=unseal,  # never sealed
         events=[E(Action.RECORD_UNSEAL, "error", gn_mn, "error:conflict")])
    walk(UNSEAL, "allowed", cust, status=200, url=here, json=unseal,
         events=[E(Action.RECORD_UNSEAL, "allowed", mn, "role:custodian+region:within_jurisdiction")])
    r = walk(MN_READ, "allowed", CW, status=200, url=f"{API}/minors/{mn}", events=[E(Action.MINOR_READ, "allowed", mn)])
    assert r.json()["name"] == CANARY_NAME  # readable again, unchanged

    _walk_sign_in_routes(walk, rt, users)

    missing = {route: sorted(kinds - walk.done[route]) for route, kinds in ROUTES.items()
               if kinds - walk.done[route]}
    assert missing == {}, f"the walk did not make these calls: {missing}"
    assert verifies(rt)


# 2. Fail closed ----------------------------------------------------------------------------


def _plant(client: Any, headers: dict[str, str]) -> tuple[str, str, str]:
    """A household and a minor named CANARY_NAME; returns (household id, minor id, id number)."""
    r = client.post(f"{API}/households", json=household_body(), headers=headers)
    assert r.status_code == 201, r.text
    hh = r.json()["id"]
    idn = make_id_number()
    r = client.post(f"{API}/minors", json=minor_body(hh, name=CANARY_NAME, id_number=idn), headers=headers)
    assert r.status_code == 201, r.text
    return hh, r.json()["id"], idn


def _no_content(r: Any, *secrets: str) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "audit_unavailable"
    for secret in (CANARY_NAME, *secrets):
        assert secret.encode("utf-8") not in r.content


def test_reads_fail_closed_when_the_log_is_unwritable(client, tokens, rt, settings):
    cw, aud = tokens[CW], tokens[AUDITOR]
    gn = tokens[GN]
    hh, mn, idn = _plant(client, cw)
    before = client.get(f"{API}/minors/{mn}", headers=cw).json()
    assert before["name"] == CANARY_NAME
    # An issued document whose fields name the canary too.
    fields = record_fields("referral_notice", minor_name=CANARY_NAME)  # the record's name, sent as it is
    request = {"kind": "referral_notice", "subject_id": mn, "fields": fields}
    r = client.post(f"{API}/documents", json=request, headers=cw)
    assert r.status_code == 201, r.text
    doc, code = r.json()["id"], r.json()["verification_code"]
    pdf = client.get(f"{API}/documents/{doc}/pdf", headers=cw).content
    stored = run_sql(rt, "SELECT id, payload, version FROM minors ORDER BY id")
    documents = run_sql(rt, "SELECT id, current_version FROM documents")
    counters = run_sql(rt, "SELECT issuer_org_id, year, last_serial FROM doc_number_counters")
    size = log_size(rt.db.engine)

    with audit_blocker(settings) as blocker:
        blocker.block()
        reads = [
            ("GET", f"{API}/minors/{mn}", cw), ("GET", f"{API}/households/{hh}", cw),
            ("GET", f"{API}/minors", cw), ("GET", f"{API}/households", cw),
            ("GET", f"{API}/minors?household_id={hh}", cw), ("GET", f"{API}/me", cw),
            ("GET", f"{API}/minors/{mn}", gn),  # even a refusal needs its event
            ("GET", f"{API}/minors/{mn}", aud),
            ("GET", f"{API}/audit/events", aud), ("GET", f"{API}/audit/export", aud),
            ("GET", f"{API}/audit/verify", aud),
            ("GET", f"{API}/documents/{doc}", cw), ("GET", f"{API}/documents/{doc}/pdf", cw),
            ("GET", f"{API}/documents", cw),
            ("GET", f"{API}/document-kinds/referral_notice/prefill?subject_id={mn}", cw),
            ("GET", f"{API}/verify/{code}", {}),  # public, but logged all the same
        ]
        for method, url, headers in reads:
            r = client.request(method, url, headers=headers)
            _no_content(r, idn)
            assert b"%PDF" not in r.content and pdf[-200:] not in r.content
        _no_content(client.post(f"{API}/verify/{code}", content=pdf, headers={"Content-Type": "application/pdf"}))
        # Writes are refused and leave nothing behind.
        _no_content(client.post(f"{API}/households", json=household_body(notes=CANARY_NAME), headers=cw))
        _no_content(client.patch(f"{API}/minors/{mn}", json={"notes": "不应保存"}, headers=cw))
        _no_content(client.post(f"{API}/minors", json=minor_body(hh), headers=cw))
        _no_content(client.post(f"{API}/documents", json=request, headers=cw))
        _no_content(client.post(f"{API}/documents/preview", json=request, headers=cw))
        _no_content(client.post(f"{API}/documents/{doc}/versions", json={"fields": fields, "reason": "更正"},
                                headers=cw))
        # No token leaves without its sign-in event.
        r = client.post(f"{API}/auth/token", data={"username": CW, "password": DEMO_PASSWORD})
        _no_content(r)
        assert "access_token" not in r.text
        assert log_size(rt.db.engine) == size
        assert run_sql(rt, "SELECT id, payload, version FROM minors ORDER BY id") == stored
        assert run_sql(rt, "SELECT count(*) FROM households")[0][0] == 1
        assert run_sql(rt, "SELECT id, current_version FROM documents") == documents
        assert run_sql(rt, "SELECT issuer_org_id, year, last_serial FROM doc_number_counters") == counters
        assert run_sql(rt, "SELECT count(*) FROM tokens WHERE revoked_at IS NULL")[0][0] == 3

        blocker.unblock()
        after = client.get(f"{API}/minors/{mn}", headers=cw)
        assert after.status_code == 200 and after.json() == before
    assert log_size(rt.db.engine) == size + 1
    r = client.get(f"{API}/audit/verify", headers=aud)
    assert r.status_code == 200 and r.json()["ok"] is True and r.json()["length"] == size + 2
    assert verifies(rt)


@pytest.mark.slow
def test_real_server_fails_closed_when_the_log_is_unwritable(rt, settings, tmp_path):
    with serving(settings, tmp_path / "server.log") as server, \
            httpx.Client(base_url=server.base_url, timeout=60) as http:

        def sign_in(username: str) -> httpx.Response:
            return http.post(f"{API}/auth/token", data={"username": username, "password": DEMO_PASSWORD})

        cw = bearer(sign_in(CW).json()["access_token"])
        aud = bearer(sign_in(AUDITOR).json()["access_token"])
        hh, mn, idn = _plant(http, cw)
        before = http.get(f"{API}/minors/{mn}", headers=cw).json()
        assert before["name"] == CANARY_NAME
        households = run_sql(rt, "SELECT id, payload, version FROM households ORDER BY id")
        size = log_size(rt.db.engine)

        with audit_blocker(settings) as blocker:
            blocker.block()
            for url in (f"{API}/minors/{mn}", f"{API}/minors", f"{API}/households/{hh}"):
                _no_content(http.get(url, headers=cw), idn)
            r = sign_in(CW)
            _no_content(r)
            assert "access_token" not in r.text
            r = http.post(f"{API}/households", json=household_body(notes=CANARY_NAME), headers=cw)
            _no_content(r)
            assert run_sql(rt, "SELECT id, payload, version FROM households ORDER BY id") == households
            assert log_size(rt.db.engine) == size

            blocker.unblock()
            r = http.get(f"{API}/minors/{mn}", headers=cw)
            assert r.status_code == 200 and r.json() == before
            assert sign_in(CW).status_code == 200
        r = http.get(f"{API}/audit/verify", headers=aud)
        assert r.status_code == 200 and r.json()["ok"] is True, r.text
        assert r.json()["length"] == size + 3
    assert CANARY_NAME not in server.output() and idn not in server.output()
    assert verifies(rt)


# 3. Concurrency -------------------------------------------------------------------------------

# Four processes started together at a barrier, each appending one event per read to the one chain:
# 400 appends racing for the chain's head (500 and then 250 each before; the races are per append, and
# every one of the 400 finds the head taken by another process about as often).
WORKERS, READS = 4, 100


@pytest.mark.slow
def test_concurrent_processes_leave_one_event_per_read(rt, settings):
    with rt.db.session() as s:
        actor = actor_for(s, s.scalars(select(User).where(User.username == CW)).one())
    ids, names = [], []
    with rt.db.session() as s:
        g = rt.guard(s, actor)
        hh = rt.archive.create_household(g, schemas.HouseholdCreate.model_validate(household_body()))
    for i in range(5):
        name = f"{CANARY_NAME}{i}"
        with rt.db.session() as s:
            m = rt.archive.create_minor(rt.guard(s, actor),
                                        schemas.MinorCreate.model_validate(minor_body(hh.id, name=name)))
        ids.append(m.id)
        names.append(name)
    read = Action.MINOR_READ.value
    assert count_events(rt.db.engine, read) == 0
    size = log_size(rt.db.engine)

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=read_minors, args=(settings_values(settings), CW, ids, names, READS, barrier,
                                                   results, w)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    reports: list[tuple[int, int, str | None]] = []
    deadline = time.monotonic() + 540
    try:
        while len(reports) < WORKERS:
            try:
                reports.append(results.get(timeout=1))
            except queue.Empty:
                silent = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                assert not silent, f"a reader died without a report (exit codes {silent})"
                assert time.monotonic() < deadline, f"readers still running; reports so far: {reports}"
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
                p.join()
    assert sorted(reports) == [(w, READS, None) for w in range(WORKERS)]
    assert all(p.exitcode == 0 for p in procs)

    total = WORKERS * READS
    assert count_events(rt.db.engine, read) == total
    assert count_events(rt.db.engine, read, "allowed") == total
    assert log_size(rt.db.engine) == size + total
    per_minor = dict(run_sql(rt, "SELECT resource_id, count(*) FROM audit_events WHERE action = :a "
                                 "GROUP BY resource_id", a=read))
    assert per_minor == {mid: total // len(ids) for mid in ids}
    requests = run_sql(rt, "SELECT count(DISTINCT request_id) FROM audit_events WHERE action = :a", a=read)
    assert requests[0][0] == total
    assert verifies(rt)


# 4. Anomaly flags ------------------------------------------------------------------------------

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(day: int, hour: int, minute: int = 0) -> datetime:
    """A time in Shanghai in November 2026 (the 16th is a Monday, the 22nd a Sunday)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=SHANGHAI)


@pytest.fixture
def small_rt(settings: Settings) -> Iterator[Runtime]:
    """A runtime like ``rt`` whose anomaly thresholds are small: 5 records, 3 refusals."""
    assert settings.master_key is not None
    small = make_settings(settings.data_dir, settings.database_url, master_key=settings.master_key,
                          audit_bulk_read_threshold=5, audit_denial_threshold=3)
    with seeded_runtime(small) as runtime:
        yield runtime


class Clocked:
    """A client whose every call runs at a pinned time, signing in afresh at each new time."""

    def __init__(self, client: TestClient, rt: Runtime):
        self.client, self.rt = client, rt
        self._tokens: dict[tuple[str, datetime], dict[str, str]] = {}

    def __call__(self, at: datetime, who: str, method: str, url: str, **kw: Any) -> Any:
        self.rt.clock = lambda: at
        if (who, at) not in self._tokens:
            r = self.client.post(f"{API}/auth/token", data={"username": who, "password": DEMO_PASSWORD})
            assert r.status_code == 200, r.text
            self._tokens[(who, at)] = bearer(r.json()["access_token"])
        return self.client.request(method, url, headers=self._tokens[(who, at)], **kw)


def _flags(clocked: Clocked, start: datetime, end: datetime, *, at: datetime) -> list[dict[str, Any]]:
    r = clocked(at, AUDITOR, "GET", f"{API}/audit/anomalies",
                params={"from": start.isoformat(), "to": end.isoformat()})
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_anomaly_flags_name_the_actor_and_count(small_rt):
    rt = small_rt
    with TestClient(create_app(runtime=rt)) as client:
        call = Clocked(client, rt)
        # Monday: the caseworker records three minors (writes are no reads).
        setup = local(16, 9)
        hh = call(setup, CW, "POST", f"{API}/households", json=household_body()).json()["id"]
        minors = [call(setup, CW, "POST", f"{API}/minors", json=minor_body(hh)).json()["id"]
                  for _ in range(3)]
        assert len(set(minors)) == 3

        # Wednesday 10:00: three single reads and a list of three records within the hour.
        wed = local(18, 10)
        for i, mid in enumerate(minors):
            at = wed + timedelta(minutes=5 * i)
            assert call(at, CW, "GET", f"{API}/minors/{mid}").status_code == 200
        r = call(wed + timedelta(minutes=20), CW, "GET", f"{API}/minors", params={"household_id": hh})
        assert len(r.json()["items"]) == 3
        # The supervisor reads once at 23:00 on Wednesday and once on Sunday morning.
        assert call(local(18, 23), SUP, "GET", f"{API}/minors/{minors[0]}").status_code == 200
        assert call(local(22, 10), SUP, "GET", f"{API}/households/{hh}").status_code == 200
        # The auditor tries case files three times within minutes: refused by role.
        for i, mid in enumerate(minors):
            assert call(wed + timedelta(minutes=i), AUDITOR, "GET", f"{API}/minors/{mid}").status_code == 403
        # Guannan's caseworker tries two Haizhou records: hidden (404), but logged.
        for i in range(2):
            r = call(wed + timedelta(minutes=30 + i), GN, "GET", f"{API}/minors/{minors[i]}")
            assert r.status_code == 404
        # Thursday: the village caseworker reads two records (ordinary), then lists three more
        # within the hour: five records, exactly the threshold.
        thu = local(19, 10)
        assert call(thu, VILLAGE, "GET", f"{API}/minors/{minors[0]}").status_code == 200
        assert call(thu + timedelta(minutes=10), VILLAGE, "GET", f"{API}/households/{hh}").status_code == 200
        assert call(thu + timedelta(minutes=20), VILLAGE, "GET", f"{API}/minors",
                    params={"household_id": hh}).status_code == 200

        asked = local(24, 10)  # Tuesday after: the auditor's own reads fall outside the windows
        flags = _flags(call, local(17, 0), local(23, 0), at=asked)

        thursday = _flags(call, local(19, 0), local(20, 0), at=asked)
        normal = _flags(call, local(19, 0), local(19, 10, 15), at=asked)
        earlier = _flags(call, local(16, 0), local(17, 0), at=asked)

    got = {(f["kind"], f["actor"]): f for f in flags}
    assert set(got) == {("bulk_read", CW), ("off_hours", SUP), ("repeated_denials", AUDITOR),
                        ("cross_region", GN), ("bulk_read", VILLAGE)}, flags
    users = dict(run_sql(rt, "SELECT username, id FROM users"))
    for (_kind, actor), flag in got.items():
        assert flag["actor_id"] == users[actor]
    assert got[("bulk_read", CW)]["count"] == 6  # a list counts every record it returned
    assert len(got[("bulk_read", CW)]["seqs"]) == 4
    assert got[("bulk_read", VILLAGE)]["count"] == 5
    off = got[("off_hours", SUP)]
    assert off["count"] == 2
    assert off["from"] == "2026-11-18T15:00:00.000000Z" and off["to"] == "2026-11-22T02:00:00.000000Z"
    assert got[("repeated_denials", AUDITOR)]["count"] == 3
    assert got[("cross_region", GN)]["count"] == 2
    # The flags point at the events: the auditor can look each of them up.
    events = {e["seq"]: e for e in
              (run_sql(rt, "SELECT seq, action, outcome, reason FROM audit_events WHERE seq = :s", s=s)[0]._asdict()
               for f in flags for s in f["seqs"])}
    assert {events[s]["reason"] for s in got[("cross_region", GN)]["seqs"]} == {"region:outside_jurisdiction"}
    assert {events[s]["outcome"] for s in got[("repeated_denials", AUDITOR)]["seqs"]} == {"denied"}

    assert [(f["kind"], f["actor"]) for f in thursday] == [("bulk_read", VILLAGE)]
    assert normal == []  # the first two reads alone, in working hours: nothing to flag
    assert earlier == []  # Monday's writes and sign-ins are no reads
    assert verifies(rt)


def test_normal_working_hours_activity_raises_no_flag(small_rt):
    rt = small_rt
    with TestClient(create_app(runtime=rt)) as client:
        call = Clocked(client, rt)
        day = local(17, 9)  # a Tuesday
        hh = call(day, CW, "POST", f"{API}/households", json=household_body()).json()["id"]
        mid = call(day, CW, "POST", f"{API}/minors", json=minor_body(hh)).json()["id"]
        # Four reads an hour apart and two refusals per quarter hour, all between 08:00 and 18:00.
        for hour in (9, 11, 13, 17):
            assert call(local(17, hour, 30), CW, "GET", f"{API}/minors/{mid}").status_code == 200
            assert call(local(17, hour, 40), SUP, "GET", f"{API}/households/{hh}").status_code == 200
            assert call(local(17, hour, 45), AUDITOR, "GET", f"{API}/minors/{mid}").status_code == 403
            assert call(local(17, hour, 50), AUDITOR, "GET", f"{API}/households").status_code == 403
        assert call(local(17, 17, 59), SUP, "GET", f"{API}/minors").status_code == 200
        flags = _flags(call, local(17, 0), local(18, 0), at=local(18, 10))
        # The same reads an hour later, at 18:00 sharp, are after hours.
        assert call(local(18, 18), SUP, "GET", f"{API}/minors/{mid}").status_code == 200
        late = _flags(call, local(18, 12), local(19, 0), at=local(20, 10))
    assert flags == []
    assert [(f["kind"], f["actor"], f["count"]) for f in late] == [("off_hours", SUP, 1)]


# 5. Separation of duties ------------------------------------------------------------------------


def _concrete(path: str, ids: dict[str, str]) -> str:
    for name, value in ids.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, path
    return path


def test_auditor_reads_the_log_but_no_case_file_and_admin_not_the_log(app, client, tokens, rt):
    cw, aud, adm = tokens[CW], tokens[AUDITOR], tokens[ADMIN]
    hh, mn, idn = _plant(client, cw)

    # The auditor reads, searches, verifies and exports the log.
    r = client.get(f"{API}/audit/events", headers=aud, params={"limit": 200})
    assert r.status_code == 200 and r.json()["items"]
    r = client.post(f"{API}/audit/events/search", headers=aud, json={"subject": idn})
    assert r.status_code == 200 and r.json()["items"]
    # The minor's creation (logged as the minor), and this search itself (it names the subject).
    assert {(e["action"], e["resource_id"]) for e in r.json()["items"]} == {
        (Action.MINOR_CREATE, mn), (Action.AUDIT_EVENTS_READ, "")}
    assert CANARY_NAME not in r.text and idn not in r.text
    r = client.get(f"{API}/audit/verify", headers=aud)
    assert r.status_code == 200 and r.json()["ok"] is True
    r = client.get(f"{API}/audit/export", headers=aud, params={"format": "csv"})
    assert r.status_code == 200 and len(r.text.splitlines()) == log_size(rt.db.engine)  # header, all but itself
    assert CANARY_NAME not in r.text and idn not in r.text

    # ... and gets 403 (by role, before any lookup) on every case-file route, the minor's too.
    ids = {"household_id": hh, "minor_id": mn}
    bodies: dict[R, Any] = {HH_CREATE: household_body(), HH_UPDATE: {"notes": "x"},
                            MN_CREATE: minor_body(hh), MN_UPDATE: {"school": "x"},
                            VISIT_CREATE: {"visited_on": "2026-01-15", "visitor": "李走访", "findings": "x"}}
    routes = openapi_routes(app)
    case_routes = sorted(r for r in routes if "case files" in
                         app.openapi()["paths"][r[1]][r[0].lower()].get("tags", []))
    assert set(case_routes) == {HH_CREATE, HH_LIST, HH_READ, HH_UPDATE, MN_CREATE, MN_LIST, MN_READ, MN_UPDATE,
                                VISIT_CREATE, VISIT_LIST, STATS}
    for who, headers in ((AUDITOR, aud), (ADMIN, adm)):
        for method, path in case_routes:
            size = log_size(rt.db.engine)
            r = client.request(method, _concrete(path, ids), headers=headers, json=bodies.get((method, path)))
            assert r.status_code == 403, f"{who} {method} {path}: {r.status_code} {r.text}"
            assert r.json()["error"]["details"]["rule"].startswith("role:none_grants:archive:")
            assert CANARY_NAME not in r.text
            (ev,) = events_after(rt.db.engine, size)
            assert (ev["actor"], ev["outcome"]) == (who, "denied")

    # Documents about the minor are case content too: refused, by role or as if absent (the
    # auditor's document role covers only its own kind, the access audit report).
    fields = record_fields("referral_notice", minor_name=CANARY_NAME)  # the record's name, sent as it is
    request = {"kind": "referral_notice", "subject_id": mn, "fields": fields}
    r = client.post(f"{API}/documents", json=request, headers=cw)
    assert r.status_code == 201, r.text
    doc = r.json()["id"]
    for who, headers in ((AUDITOR, aud), (ADMIN, adm)):
        for method, url, kw, status in (
            ("GET", f"{API}/documents/{doc}", {}, 404 if who == AUDITOR else 403),
            ("GET", f"{API}/documents/{doc}/pdf", {}, 404 if who == AUDITOR else 403),
            ("GET", f"{API}/document-kinds/referral_notice/prefill", {"params": {"subject_id": mn}}, 403),
            ("POST", f"{API}/documents/preview", {"json": request}, 403),
            ("POST", f"{API}/documents", {"json": request}, 403),
            ("POST", f"{API}/documents/{doc}/versions", {"json": {"fields": fields, "reason": "x"}},
             404 if who == AUDITOR else 403),
        ):
            size = log_size(rt.db.engine)
            r = client.request(method, url, headers=headers, **kw)
            assert r.status_code == status, f"{who} {method} {url}: {r.status_code} {r.text}"
            assert CANARY_NAME not in r.text and b"%PDF" not in r.content
            (ev,) = events_after(rt.db.engine, size)
            assert (ev["actor"], ev["outcome"]) == (who, "denied")
    r = client.get(f"{API}/documents", headers=aud)
    assert r.status_code == 200 and r.json()["items"] == []
    assert run_sql(rt, "SELECT count(*) FROM documents")[0][0] == 1

    # The admin gets 403 on every audit route but the two everyone may read (no personal data).
    cp = client.post(f"{API}/audit/checkpoints", headers=aud).json()
    requests: dict[R, dict[str, Any]] = {
        EVENTS: {}, SEARCH: {"json": {}}, VERIFY: {}, VERIFY_CP: {"json": {"checkpoint": cp}},
        CP_CREATE: {}, INCLUSION: {"params": {"seq": 1}}, CONSISTENCY: {"params": {"first": 1}},
        EXPORT: {}, ANOMALIES: {},
    }
    public = {CPS, PUBLIC_KEY}
    audit_routes = {r for r in routes if r[1].startswith(f"{API}/audit/")}
    assert audit_routes == set(requests) | public
    for (method, path), kw in requests.items():
        size = log_size(rt.db.engine)
        r = client.request(method, path, headers=adm, **kw)
        assert r.status_code == 403, f"admin {method} {path}: {r.status_code} {r.text}"
        (ev,) = events_after(rt.db.engine, size)
        assert (ev["actor"], ev["outcome"]) == (ADMIN, "denied") and ev["reason"].startswith("role:none_grants")
    for method, path in public:
        assert client.request(method, path, headers=adm).status_code == 200
    assert verifies(rt)


def test_no_route_changes_or_deletes_audit_events(app, client, tokens, rt):
    for method, path in openapi_routes(app):
        if path.startswith(f"{API}/audit"):
            assert method in ("GET", "POST"), f"{method} {path} could change the log"
    # POSTs under /audit only read, verify or sign: none takes an event to change.
    posts = {path for method, path in openapi_routes(app) if method == "POST" and path.startswith(f"{API}/audit")}
    assert posts == {f"{API}/audit/events/search", f"{API}/audit/verify", f"{API}/audit/checkpoints"}
    aud = tokens[AUDITOR]
    size = log_size(rt.db.engine)
    for method in ("PUT", "PATCH", "DELETE"):
        for path in (f"{API}/audit/events", f"{API}/audit/events/1", f"{API}/audit/checkpoints"):
            r = client.request(method, path, headers=aud)
            # The list routes exist for reading only (405); no route names one event (404).
            expected = 404 if path.endswith("/1") else 405
            assert r.status_code == expected, f"{method} {path}: {r.status_code}"
    assert log_size(rt.db.engine) == size


@pytest.mark.parametrize("table", ["audit_events", "audit_event_subjects", "audit_checkpoints"])
def test_database_triggers_refuse_update_and_delete(client, tokens, rt, table):
    hh, _mn, _idn = _plant(client, tokens[CW])  # events with subjects
    assert client.post(f"{API}/audit/checkpoints", headers=tokens[AUDITOR]).status_code == 201
    assert run_sql(rt, f"SELECT count(*) FROM {table}")[0][0] > 0
    snapshot = run_sql(rt, f"SELECT * FROM {table} ORDER BY 1, 2")
    statements: dict[str, list[str]] = {
        "audit_events": ["UPDATE audit_events SET reason = 'rewritten' WHERE seq = 1",
                         "UPDATE audit_events SET outcome = 'allowed'",
                         "DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)",
                         "DELETE FROM audit_events"],
        "audit_event_subjects": ["UPDATE audit_event_subjects SET subject = 'x'",
                                 "DELETE FROM audit_event_subjects"],
        "audit_checkpoints": ["UPDATE audit_checkpoints SET key_id = 'forged'",
                              "DELETE FROM audit_checkpoints"],
    }
    if rt.db.dialect == "postgresql":  # one statement that fires no row trigger
        statements[table].append(f"TRUNCATE {table} CASCADE")
    for sql in statements[table]:
        with pytest.raises(DBAPIError, match="append-only"):
            run_sql(rt, sql)
    assert run_sql(rt, f"SELECT * FROM {table} ORDER BY 1, 2") == snapshot
    assert verifies(rt)
    assert hh
