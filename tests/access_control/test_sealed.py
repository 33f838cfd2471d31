"""Sealed juvenile records (DOMAIN.md, "Sealed juvenile records"; docs/sealed-records.md).

- ``test_whole_flow_*``: seal a minor and its documents, apply, deny with a reason,
  apply again, approve, list the grant, read the PDF stamped on every page, expire
  (pinned clock) and revoke; every step in the audit log with case number, legal
  basis and the decision.
- ``test_role_by_route_*``: every demo role and the extra users (a second court
  requester, a custodian and a requester+custodian in the court, an unentitled
  school requester) on every sealed route and the sealed document's routes. Only
  the granted requester reads sealed content; self and same-org decisions are
  403, approving an unentitled unit 409; a revoked grant reads nothing.
- ``test_indistinguishable_*``: person A has a sealed record, person B none (same
  name). Applications about them answer alike in status, body and size, and the
  reply letters read the same (未发现……有犯罪记录). 200 paired applications are
  timed; the figures are printed and written to /tmp/shouhu-sealed-timing-*.txt.
- ``test_sealed_record_absent_from_*``: lists and their filters, the household view,
  document lists, statistics and the home-page dashboards (exactly as before the
  sealed minor existed), search (found before sealing, not after), prefill, the
  duplicate check and ``shouhu print`` leave a sealed record out for caseworkers
  and supervisors of its own region.
- ``test_audit_and_disclosure_register_*``: each application, decision, release and
  refusal is one event with case number and legal basis; the disclosure register
  holds the sha256 of exactly the bytes the requester received.
- ``test_sealing_reencrypts_*``: sealing re-encrypts under ``sealed-dek`` keys and
  shreds the old ones; the ordinary path cannot open a sealed payload; unsealing
  restores it unchanged.
- ``test_reasons_*``: decision, revocation and unseal reasons are stored sealed, the
  log keeps their keyed hash; a reason written in plain text before migration 0009
  still reads, and moves into the envelope when the request is revoked.
- ``test_seal_and_unseal_*``: sealing or unsealing what the caller may not know of
  answers exactly as for an unknown id; unsealing needs a cause from the list.
- configuration and the rest: a non-default decision deadline, a configured
  entitled org type, sealing one document, and the "records provided" reply.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import random
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pypdf
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from access_control.actions import Action
from access_control.identity import Org, OrgType, create_user
from archive.blobstore import BlobNotFound
from archive.models import Document, DocumentVersion, Minor, SealedRecord
from archive.prefill import PARTICULARS
from archive.sealing import CONFIDENTIALITY, UNSEAL_CAUSES
from core.db import new_id
from core.errors import Gone, IntegrityFailure
from core.keys import SEALED_DEK
from doc_templates.kinds import KINDS
from main import create_app
from runtime import Runtime
from tests.cli_support import cli_env, run_cli
from tests.conftest import (
    DEMO_PASSWORD,
    Tokens,
    household_body,
    make_id_number,
    minor_body,
    run_sql,
    seeded_runtime,
    web_login,
)

API = "/api/v1"
CUST, COURT, CW, VILLAGE = "custodian.city", "court.haizhou", "caseworker.haizhou", "village.haizhou"
SUP, AUDITOR, ADMIN, GN = "supervisor.city", "auditor.city", "admin", "caseworker.guannan"
CLERK, COURT_CUST, COURT_BOTH, SCHOOL = "court.clerk", "court.custodian", "court.both", "school.requester"
DEMO_USERS = [CUST, COURT, CW, VILLAGE, SUP, AUDITOR, ADMIN, GN]
EXTRA_USERS = [CLERK, COURT_CUST, COURT_BOTH, SCHOOL]
EVERYONE = DEMO_USERS + EXTRA_USERS
COURT_ORG = "连云港市海州区人民法院"
SCHOOL_ORG = "连云港市海州区实验中学（演示）"

SEALED_NAME = "封晓默"  # appears nowhere but in the sealed record (and applications about that person)
SIBLING_NAME = "同户童"
LEGAL_BASIS = "cpl_286_judicial"  # an application's basis (access_control.legal_bases)
SEAL_BASIS = "cpl_286_1"
SEAL_CASE = "(2026)苏0706刑初17号"
APPLY_CASE = "(2026)苏0706刑初88号"
PURPOSE = "审理案件需要核实被告人有无前科"
UNSEAL_BASIS = "spp_rules_485"
T0 = datetime(2026, 11, 30, 2, 0, 0, 123456, tzinfo=UTC)  # 10:00 in Lianyungang; microseconds fix JSON sizes


class Clock:
    """The one clock the app reads, moved by hand."""

    def __init__(self, start: datetime):
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def pin_clock(rt: Runtime) -> Clock:
    clock = Clock(T0)
    rt.clock = clock
    return clock


def add_extra_users(rt: Runtime) -> None:
    """A second court requester, a custodian and a requester+custodian in the court, a school requester."""
    with rt.db.session() as s:
        court = s.scalar(select(Org).where(Org.name == COURT_ORG))
        assert court is not None
        school = Org(id=new_id("org"), name=SCHOOL_ORG, type=OrgType.SCHOOL, region_code="320706", doc_prefix=None)
        s.add(school)
        s.flush()
        for username, display, org, roles in (
            (CLERK, "海州区法院书记员", court, ["requester"]),
            (COURT_CUST, "海州区法院档案保管人", court, ["custodian"]),
            (COURT_BOTH, "海州区法院兼职保管人", court, ["requester", "custodian"]),
            (SCHOOL, "实验中学教务员", school, ["requester"]),
        ):
            create_user(s, rt.passwords, username=username, display_name=display, org=org, roles=roles,
                        password=DEMO_PASSWORD, now=rt.clock())
        s.commit()


@dataclass
class Case:
    household: str
    minor: str  # sealed (unless asked otherwise)
    sibling: str  # same household, never sealed
    doc: str  # a referral notice about the minor (two pages), sealed with it
    doc_sha256: str
    doc_code: str
    sibling_doc: str
    id_number: str
    sibling_id_number: str


def make_case(client: TestClient, tokens: Tokens, *, seal_by: str | None = COURT,
              between: Callable[[], None] | None = None) -> Case:
    """A household with a sibling (and a document about it); then, after ``between``, the minor to seal."""
    r = client.post(f"{API}/households", json=household_body(), headers=tokens[CW])
    assert r.status_code == 201, r.text
    hh = r.json()["id"]
    idn, sib_idn = make_id_number(birth="20090101"), make_id_number(birth="20150301")
    # The example without the child's particulars: the record fills them in.
    example = {k: v for k, v in KINDS["referral_notice"].example.items() if k not in PARTICULARS["referral_notice"]}

    def minor_with_document(name: str, id_number: str, birth: str) -> tuple[str, dict[str, Any]]:
        r = client.post(f"{API}/minors", json=minor_body(hh, name=name, id_number=id_number, birth_date=birth),
                        headers=tokens[CW])
        assert r.status_code == 201, r.text
        mn = r.json()["id"]
        r = client.post(f"{API}/documents", json={"kind": "referral_notice", "subject_id": mn, "fields": example},
                        headers=tokens[CW])
        assert r.status_code == 201, r.text
        return mn, r.json()

    sib, sib_doc = minor_with_document(SIBLING_NAME, sib_idn, "2015-03-01")
    if between is not None:
        between()
    mn, doc = minor_with_document(SEALED_NAME, idn, "2009-01-01")
    case = Case(hh, mn, sib, doc["id"], doc["sha256"], doc["verification_code"], sib_doc["id"], idn, sib_idn)
    if seal_by:
        seal(client, tokens[seal_by], case)
    return case


def seal(client: TestClient, headers: dict[str, str], case: Case) -> None:
    r = client.post(f"{API}/records/{case.minor}/seal", json={"legal_basis": SEAL_BASIS, "case_number": SEAL_CASE},
                    headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["record_kind"] == "minor"
    assert set(r.json()["sealed"]) == {case.minor, case.doc}  # the minor and its document; the sibling's stays


def application(name: str, id_number: str, case_number: str = APPLY_CASE) -> dict[str, Any]:
    return {"case_number": case_number, "legal_basis": LEGAL_BASIS, "purpose": PURPOSE,
            "subject": {"name": name, "id_number": id_number}}


def apply(client: TestClient, headers: dict[str, str], name: str, id_number: str, case_number: str = APPLY_CASE) -> str:
    r = client.post(f"{API}/sealed-requests", json=application(name, id_number, case_number), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def decide(client: TestClient, headers: dict[str, str], rid: str, decision: str, reason: str,
           expires_at: datetime | None = None) -> Any:
    body: dict[str, Any] = {"decision": decision, "reason": reason}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    return client.post(f"{API}/sealed-requests/{rid}/decision", json=body, headers=headers)


def approved(client: TestClient, requester: dict[str, str], custodian: dict[str, str], id_number: str) -> str:
    """An application for SEALED_NAME with ``id_number``, approved by the custodian: its id."""
    rid = apply(client, requester, SEALED_NAME, id_number)
    assert decide(client, custodian, rid, "approve", APPROVE_REASON).status_code == 200
    return rid


def pdf_pages(data: bytes) -> list[str]:
    """The text of each page, whitespace removed (lines wrap anywhere in CJK text)."""
    return [re.sub(r"\s+", "", page.extract_text() or "") for page in pypdf.PdfReader(io.BytesIO(data)).pages]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def events(rt: Runtime, where: str = "1 = 1", **params: Any) -> list[dict[str, Any]]:
    rows = run_sql(rt, "SELECT seq, actor, action, outcome, reason, resource_id, subjects, details "
                       f"FROM audit_events WHERE {where} ORDER BY seq", **params)
    out = []
    for row in rows:
        ev = dict(row._mapping)
        for key in ("subjects", "details"):
            if isinstance(ev[key], str):
                ev[key] = json.loads(ev[key])
        out.append(ev)
    return out


def local_stamp_time(at: datetime) -> str:
    from zoneinfo import ZoneInfo

    t = at.astimezone(ZoneInfo("Asia/Shanghai"))
    return f"{t.year}年{t.month}月{t.day}日{t:%H:%M}"


# 1. The whole flow ------------------------------------------------------------------------


def test_whole_flow_seal_apply_deny_approve_read_expire_revoke(client, rt):
    clock = pin_clock(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=COURT)  # courts may seal
    court, cust = tokens[COURT], tokens[CUST]

    # Apply; the custodian denies with a reason; the denied application reads nothing.
    r = client.post(f"{API}/sealed-requests", json=application(SEALED_NAME, case.id_number), headers=court)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["status"] == "pending"
    assert datetime.fromisoformat(first["due_by"]) == T0 + timedelta(days=rt.settings.sealed_decision_days)
    r = client.get(f"{API}/sealed-requests", params={"status": "pending"}, headers=cust)
    assert [i["id"] for i in r.json()["items"]] == [first["id"]]
    r = decide(client, cust, first["id"], "deny", "未附立案决定书，申请材料不全")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "denied" and r.json()["reason"] == "未附立案决定书，申请材料不全"
    assert client.get(f"{API}/sealed-requests/{first['id']}", headers=court).json()["status"] == "denied"
    assert client.get(f"{API}/sealed-requests/{first['id']}/records", headers=court).status_code == 404
    assert client.get(f"{API}/documents/{case.doc}/pdf", headers=court).status_code == 404

    # Apply again; approved for two days.
    second = apply(client, court, SEALED_NAME, case.id_number)
    until = T0 + timedelta(days=2)
    r = decide(client, cust, second, "approve", "附立案决定书，符合法定情形", expires_at=until)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved" and datetime.fromisoformat(r.json()["expires_at"]) == until

    r = client.get(f"{API}/sealed-requests/{second}/records", headers=court)
    assert r.status_code == 200, r.text
    listed = r.json()["items"]
    assert [(i["id"], i["kind"], i["pdf"]) for i in listed] == [
        (case.doc, "referral_notice", f"{API}/documents/{case.doc}/pdf")]
    assert client.get(f"{API}/documents/{case.doc}", headers=court).json()["id"] == case.doc

    # The PDF: the original pages, each stamped with requester, org, request id, time, case number, notice.
    r = client.get(f"{API}/documents/{case.doc}/pdf", headers=court)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    released = r.content
    assert r.headers["X-Content-SHA256"] == sha256(released) != case.doc_sha256  # names the stamped bytes
    pages = pdf_pages(released)
    assert len(pages) >= 2
    notice = re.sub(r"\s+", "", CONFIDENTIALITY)
    for number, text in enumerate(pages, 1):
        for want in ("海州区法院查询人", COURT_ORG, f"申请编号：{second}", f"提供时间：{local_stamp_time(T0)}",
                     f"案号：{APPLY_CASE}", notice):
            assert want in text, f"page {number} lacks {want!r}"
    assert "关于转介困境未成年人的函" in pages[0]  # the record itself is there under the stamp

    # Past expires_at (and past the 8-hour token life: sign in again) nothing is read.
    clock.advance(days=2, seconds=1)
    tokens = Tokens(client)
    court, cust = tokens[COURT], tokens[CUST]
    assert client.get(f"{API}/sealed-requests/{second}/records", headers=court).status_code == 404
    assert client.get(f"{API}/documents/{case.doc}/pdf", headers=court).status_code == 404
    assert client.get(f"{API}/documents/{case.doc}", headers=court).status_code == 404
    assert client.get(f"{API}/sealed-requests/{second}", headers=court).json()["status"] == "expired"
    r = client.get(f"{API}/sealed-requests", params={"status": "expired"}, headers=court)
    assert [i["id"] for i in r.json()["items"]] == [second]
    assert client.post(f"{API}/sealed-requests/{second}/revoke", json={"reason": "到期"},
                       headers=cust).status_code == 409  # only a live grant can be revoked

    # A third application, approved for the default term, then revoked: access ends at once.
    third = apply(client, court, SEALED_NAME, case.id_number, case_number="(2026)苏0706刑初89号")
    r = decide(client, cust, third, "approve", "符合法定情形")
    assert datetime.fromisoformat(r.json()["expires_at"]) == clock.now + timedelta(days=rt.settings.sealed_grant_days)
    assert client.get(f"{API}/documents/{case.doc}/pdf", headers=court).status_code == 200
    r = client.post(f"{API}/sealed-requests/{third}/revoke", json={"reason": "案件已审结"}, headers=cust)
    assert r.status_code == 200 and r.json()["status"] == "revoked", r.text
    assert client.get(f"{API}/sealed-requests/{third}/records", headers=court).status_code == 404
    assert client.get(f"{API}/documents/{case.doc}/pdf", headers=court).status_code == 404
    assert client.post(f"{API}/sealed-requests/{third}/revoke", json={"reason": "again"},
                       headers=cust).status_code == 409
    r = client.get(f"{API}/sealed-requests", params={"status": "revoked"}, headers=court)
    assert [i["id"] for i in r.json()["items"]] == [third]

    # The audit log tells the whole story, each event with case number and legal basis.
    seal = events(rt, "action = :a", a=Action.RECORD_SEAL.value)
    assert [(e["actor"], e["outcome"], e["resource_id"]) for e in seal] == [(COURT, "allowed", case.minor)]
    assert seal[0]["details"] == {"case_number_hash": _case_hash(rt, SEAL_CASE), "legal_basis": SEAL_BASIS}
    cases = {first["id"]: APPLY_CASE, second: APPLY_CASE, third: "(2026)苏0706刑初89号"}

    def story(action: Action) -> list[tuple[str, str, str, str]]:
        evs = events(rt, "action = :a", a=action.value)
        for e in evs:
            assert e["details"]["case_number_hash"] == _case_hash(rt, cases[e["resource_id"]]), e
            assert e["details"]["legal_basis"] == LEGAL_BASIS, e
        return [(e["resource_id"], e["actor"], e["outcome"], e["reason"]) for e in evs]

    assert story(Action.SEALED_APPLY) == [(rid, COURT, "allowed", "role:requester") for rid in cases]
    assert story(Action.SEALED_DECIDE) == [(rid, CUST, "allowed", "role:custodian") for rid in cases]
    decisions = [e["details"]["decision"] for e in events(rt, "action = :a", a=Action.SEALED_DECIDE.value)]
    assert decisions == ["deny", "approve", "approve"]
    assert story(Action.SEALED_REVOKE) == [
        (second, CUST, "error", "error:conflict"),  # expired already
        (third, CUST, "allowed", "role:custodian"),
        (third, CUST, "error", "error:conflict"),  # revoked already
    ]
    assert story(Action.SEALED_RECORDS) == [
        (first["id"], COURT, "error", "error:not_found"),  # denied: nothing to list
        (second, COURT, "allowed", "role:requester+owner"),
        (second, COURT, "error", "error:not_found"),  # expired
        (third, COURT, "error", "error:not_found"),  # revoked
    ]
    reads = events(rt, "action = :a AND resource_id = :d", a=Action.DOCUMENT_DOWNLOAD.value, d=case.doc)
    # A read without a grant is logged as one of an id that does not exist (test_sealed_same_answer.py).
    assert [(e["actor"], e["outcome"], e["reason"]) for e in reads] == [
        (COURT, "denied", "record:not_found"),
        (COURT, "allowed", f"sealed:grant:{second}"),
        (COURT, "denied", "record:not_found"),
        (COURT, "allowed", f"sealed:grant:{third}"),
        (COURT, "denied", "record:not_found"),
    ]
    for e in reads:
        if e["outcome"] == "allowed":  # a release names its grant's case and legal basis
            assert e["details"]["case_number_hash"] == _case_hash(rt, cases[e["reason"].rsplit(":", 1)[1]])
            assert e["details"]["legal_basis"] == LEGAL_BASIS


# 2. Role x route ------------------------------------------------------------------------------


def test_role_by_route_only_the_granted_requester_reads_sealed_content(client, rt):
    pin_clock(rt)
    add_extra_users(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    granted = apply(client, tokens[COURT], SEALED_NAME, case.id_number)
    own = apply(client, tokens[COURT_BOTH], SEALED_NAME, case.id_number)
    unentitled = apply(client, tokens[SCHOOL], SEALED_NAME, case.id_number)

    # Nobody decides their own application or one from their own organisation.
    r = decide(client, tokens[COURT_BOTH], own, "approve", "本人审批")
    assert (r.status_code, r.json()["error"]["details"]["rule"]) == (403, "sealed:own_request"), r.text
    for who in (COURT_CUST, COURT_BOTH):
        r = decide(client, tokens[who], granted, "approve", "同单位审批")
        assert (r.status_code, r.json()["error"]["details"]["rule"]) == (403, "sealed:same_org"), r.text
    # An unentitled unit's application can only be denied.
    r = decide(client, tokens[CUST], unentitled, "approve", "同意")
    assert r.status_code == 409 and r.json()["error"]["details"]["rule"] == "sealed:requester_not_entitled"
    assert decide(client, tokens[CUST], unentitled, "deny", "申请单位无权查询").status_code == 200
    assert client.get(f"{API}/sealed-requests/{own}", headers=tokens[COURT_BOTH]).json()["status"] == "pending"
    assert decide(client, tokens[CUST], granted, "approve", "符合法定情形").status_code == 200
    assert client.post(f"{API}/sealed-requests/{granted}/reply", headers=tokens[CUST]).status_code == 201

    example = KINDS["referral_notice"].example
    nowhere = "doc_nonexistent0000000"
    all_404 = dict.fromkeys(EVERYONE, 404)
    no_role = {u: 403 for u in (CW, VILLAGE, SUP, AUDITOR, ADMIN, GN)}
    custodians = {CUST: 200, COURT_CUST: 200, COURT_BOTH: 200}
    # (label, method, url, json body, expected status per user; a twin url answered the same, if any)
    table: list[tuple[str, str, str, Any, dict[str, int], str | None]] = [
        ("document metadata", "GET", f"{API}/documents/{case.doc}", None,
         {**all_404, COURT: 200, ADMIN: 403}, f"{API}/documents/{nowhere}"),
        ("document pdf", "GET", f"{API}/documents/{case.doc}/pdf", None,
         {**all_404, COURT: 200, ADMIN: 403}, f"{API}/documents/{nowhere}/pdf"),
        ("document correction", "POST", f"{API}/documents/{case.doc}/versions",
         {"fields": example, "reason": "更正"},
         {**all_404, COURT: 403, CLERK: 403, SCHOOL: 403, ADMIN: 403}, f"{API}/documents/{nowhere}/versions"),
        ("minor", "GET", f"{API}/minors/{case.minor}", None,
         {**dict.fromkeys(EVERYONE, 403), CW: 404, VILLAGE: 404, SUP: 404, GN: 404},
         f"{API}/minors/mn_nonexistent000000000"),
        ("request", "GET", f"{API}/sealed-requests/{granted}", None,
         {**no_role, **custodians, COURT: 200, CLERK: 404, SCHOOL: 404}, None),
        ("requests", "GET", f"{API}/sealed-requests", None,
         {**no_role, **custodians, COURT: 200, CLERK: 200, SCHOOL: 200}, None),
        ("granted records", "GET", f"{API}/sealed-requests/{granted}/records", None,
         {**no_role, CUST: 403, COURT_CUST: 403, COURT_BOTH: 404, COURT: 200, CLERK: 404, SCHOOL: 404},
         f"{API}/sealed-requests/sq_nonexistent0000000/records"),
        ("decision", "POST", f"{API}/sealed-requests/{granted}/decision", {"decision": "deny", "reason": "x"},
         {**no_role, CUST: 409, COURT_CUST: 403, COURT_BOTH: 403, COURT: 403, CLERK: 403, SCHOOL: 403}, None),
        ("revoke (of a denied request)", "POST", f"{API}/sealed-requests/{unentitled}/revoke", {"reason": "x"},
         {**no_role, CUST: 409, COURT_CUST: 409, COURT_BOTH: 409, COURT: 403, CLERK: 403, SCHOOL: 403}, None),
        ("reply issue (issued already)", "POST", f"{API}/sealed-requests/{granted}/reply", None,
         {**no_role, CUST: 409, COURT_CUST: 409, COURT_BOTH: 409, COURT: 403, CLERK: 403, SCHOOL: 403}, None),
        ("reply read", "GET", f"{API}/sealed-requests/{granted}/reply", None,
         {**no_role, **custodians, COURT: 200, CLERK: 404, SCHOOL: 404}, None),
        ("disclosures", "GET", f"{API}/disclosures", None,
         {**dict.fromkeys(EVERYONE, 403), CUST: 200, COURT_CUST: 200, COURT_BOTH: 200, AUDITOR: 200}, None),
        # Only those who may know of the sealed record (custodians; the court, whose grant names it)
        # hear that it is sealed already; any other court user gets the 404 of an unknown id.
        ("seal (sealed already)", "POST", f"{API}/records/{case.doc}/seal",
         {"legal_basis": SEAL_BASIS, "case_number": SEAL_CASE},
         {**dict.fromkeys(EVERYONE, 403), CUST: 409, COURT_CUST: 409, COURT_BOTH: 409, COURT: 409, CLERK: 404},
         f"{API}/records/{nowhere}/seal"),
        ("unseal (of a record never sealed)", "POST", f"{API}/records/{case.sibling}/unseal",
         {"cause": "undiscovered_crime", "legal_basis": UNSEAL_BASIS},
         {**dict.fromkeys(EVERYONE, 403), CUST: 409, COURT_CUST: 409, COURT_BOTH: 409}, None),
        ("apply", "POST", f"{API}/sealed-requests", application(SEALED_NAME, case.id_number),
         {**dict.fromkeys(EVERYONE, 403), COURT: 201, CLERK: 201, COURT_BOTH: 201, SCHOOL: 201}, None),
    ]
    wrong = []
    for label, method, url, body, expected, twin in table:
        assert set(expected) == set(EVERYONE), label
        for who in EVERYONE:
            r = client.request(method, url, json=body, headers=tokens[who])
            if r.status_code != expected[who]:
                wrong.append((label, who, expected[who], r.status_code, r.text[:200]))
            if r.status_code in (403, 404) and twin is not None:
                # Refused exactly as for a record that does not exist.
                t = client.request(method, twin, json=body, headers=tokens[who])
                if (t.status_code, t.json()) != (r.status_code, r.json()):
                    wrong.append((label, who, "as for a missing record", r.text[:200], t.text[:200]))
    assert wrong == []

    # Lists: a requester sees its own applications only; custodians see all.
    def listed(who: str) -> set[str]:
        return {i["id"] for i in client.get(f"{API}/sealed-requests", headers=tokens[who]).json()["items"]}

    assert {granted, own, unentitled} <= listed(CUST) and listed(CUST) == listed(COURT_CUST)
    assert granted in listed(COURT) and not {own, unentitled} & listed(COURT)
    assert not {granted, own, unentitled} & listed(CLERK)

    # The public verification of the sealed document's code finds nothing.
    assert client.get(f"{API}/verify/{case.doc_code}").status_code == 404

    # Revoked: the granted requester reads nothing either.
    r = client.post(f"{API}/sealed-requests/{granted}/revoke", json={"reason": "撤销"}, headers=tokens[CUST])
    assert r.status_code == 200, r.text
    for url in (f"{API}/sealed-requests/{granted}/records", f"{API}/documents/{case.doc}/pdf",
                f"{API}/documents/{case.doc}"):
        assert client.get(url, headers=tokens[COURT]).status_code == 404, url


# 3. Indistinguishability ------------------------------------------------------------------------

_IDS = re.compile(r"(?:sq|doc|usr|org|dsc|dk)_[a-z0-9]{20}(?![a-z0-9])")
_TIMES = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})")


def normalized(text: str, *, names: tuple[str, ...], id_numbers: tuple[str, ...]) -> str:
    """Ids, dates, document numbers, verification codes and the subject's name/ID number taken out."""
    text = re.sub(r"\s+", "", text)
    for value in (*id_numbers, *names):
        text = text.replace(value, "<subject>")
    text = _IDS.sub("<id>", text)
    text = re.sub(r"(?<![0-9a-f])[0-9a-f]{64}(?![0-9a-f])", "<sha256>", text)
    text = _TIMES.sub("<time>", text)
    text = re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", text)
    text = re.sub(r"\d{4}年\d{1,2}月\d{1,2}日", "<date>", text)
    text = re.sub(r"〔\d{4}〕\d+号", "〔<year>〕<n>号", text)
    text = re.sub(r"(?<![0-9A-Z])[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}(?![0-9A-Z])", "<code>", text)
    return re.sub(r"/verify/[0-9A-Z]{12}", "/verify/<code>", text)


@dataclass
class Timing:
    label: str
    a: list[float]
    b: list[float]

    def figures(self) -> dict[str, Any]:
        d = [x - y for x, y in zip(self.a, self.b, strict=True)]
        n = len(d)
        ordered = sorted(d)
        k = _sign_test_rank(n, 0.05)
        sd = statistics.stdev(d)
        u, p_mw = _mann_whitney(self.a, self.b)
        return {
            "label": self.label, "pairs": n,
            "mean_a_ms": 1e3 * statistics.fmean(self.a), "mean_b_ms": 1e3 * statistics.fmean(self.b),
            "median_a_ms": 1e3 * statistics.median(self.a), "median_b_ms": 1e3 * statistics.median(self.b),
            "mean_diff_ms": 1e3 * statistics.fmean(d),
            "mean_diff_ci95_ms": (1e3 * (statistics.fmean(d) - 1.96 * sd / math.sqrt(n)),
                                  1e3 * (statistics.fmean(d) + 1.96 * sd / math.sqrt(n))),
            "median_diff_ms": 1e3 * statistics.median(d),
            "median_diff_ci95_ms": (1e3 * ordered[k - 1], 1e3 * ordered[n - k]),
            "mann_whitney_u": u, "mann_whitney_p": p_mw,
            "sign_flip_p": _sign_flip_p(d, rounds=10_000),
            "median_all_ms": 1e3 * statistics.median(self.a + self.b),
        }


def _sign_test_rank(n: int, alpha: float) -> int:
    """k such that [d_(k), d_(n-k+1)] covers the median with probability >= 1 - alpha."""
    cdf, k = 0.0, 0
    while True:
        nxt = cdf + math.comb(n, k) / 2**n
        if nxt > alpha / 2:
            return max(k, 1)
        cdf, k = nxt, k + 1


def _mann_whitney(a: list[float], b: list[float]) -> tuple[float, float]:
    """U of ``a`` and the two-sided p-value (normal approximation with tie correction)."""
    pooled = sorted([(x, 0) for x in a] + [(y, 1) for y in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        for m in range(i, j + 1):
            ranks[m] = (i + j) / 2 + 1
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    n1, n2 = len(a), len(b)
    r1 = sum(r for r, (_, g) in zip(ranks, pooled, strict=True) if g == 0)
    u = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))))
    z = (u - n1 * n2 / 2) / sigma if sigma else 0.0
    return u, math.erfc(abs(z) / math.sqrt(2))


def _sign_flip_p(d: list[float], *, rounds: int) -> float:
    """Randomization test of the paired differences: the order within each pair was random,
    so under "the subject does not matter" every sign pattern is as likely as the observed one."""
    rng = random.Random(286)
    observed = abs(sum(d))
    hits = sum(1 for _ in range(rounds) if abs(sum(x if rng.random() < 0.5 else -x for x in d)) >= observed)
    return (hits + 1) / (rounds + 1)


def without_signature_block(text: str) -> str:
    """The text of a normalized reply without its signature block (issuer and date) and specimen marks.

    Where the block and the marks are drawn, and so where they fall in the extracted text, follows the
    body's length, which the random application number in it changes (its Latin letters are not all of
    one width): two replies can differ there whatever they say about the subject."""
    block = re.findall(r"[^。：）]{2,30}<date>(?=—|核验码|$)", text.replace("样本", ""))
    assert len(block) == 1, text
    return text.replace("样本", "").replace(block[0], "")


def test_indistinguishable_sealed_record_and_no_record(client, rt):
    pin_clock(rt)  # also fixes the width of every timestamp, so sizes compare exactly
    add_extra_users(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    a_id, b_id = case.id_number, make_id_number(birth="20090101")  # B: same name, no record at all
    assert a_id != b_id
    norm = {"names": (SEALED_NAME,), "id_numbers": (a_id, b_id)}
    cust = tokens[CUST]

    def same(ra: Any, rb: Any, what: str, *, size: bool = True) -> None:
        assert ra.status_code == rb.status_code, what
        assert normalized(ra.text, **norm) == normalized(rb.text, **norm), f"{what}:\n{ra.text}\n{rb.text}"
        if size:
            assert len(ra.content) == len(rb.content), what

    for requester in (SCHOOL, COURT):  # unentitled; entitled but without a grant
        h = tokens[requester]
        ra = client.post(f"{API}/sealed-requests", json=application(SEALED_NAME, a_id), headers=h)
        rb = client.post(f"{API}/sealed-requests", json=application(SEALED_NAME, b_id), headers=h)
        assert ra.status_code == 201
        same(ra, rb, f"{requester}: apply")
        qa, qb = ra.json()["id"], rb.json()["id"]
        same(client.get(f"{API}/sealed-requests/{qa}", headers=h), client.get(f"{API}/sealed-requests/{qb}", headers=h),
             f"{requester}: read")
        same(client.get(f"{API}/sealed-requests/{qa}/records", headers=h),
             client.get(f"{API}/sealed-requests/{qb}/records", headers=h), f"{requester}: records")
        same(client.get(f"{API}/sealed-requests/{qa}/reply", headers=h),
             client.get(f"{API}/sealed-requests/{qb}/reply", headers=h), f"{requester}: reply before issue")
        if requester == SCHOOL:
            same(decide(client, cust, qa, "approve", "同意"), decide(client, cust, qb, "approve", "同意"),
                 "approve unentitled")
        same(decide(client, cust, qa, "deny", "不符合查询条件"), decide(client, cust, qb, "deny", "不符合查询条件"),
             f"{requester}: deny")
        same(client.get(f"{API}/sealed-requests/{qa}", headers=h), client.get(f"{API}/sealed-requests/{qb}", headers=h),
             f"{requester}: read after decision")
        ia = client.post(f"{API}/sealed-requests/{qa}/reply", headers=cust)
        ib = client.post(f"{API}/sealed-requests/{qb}/reply", headers=cust)
        assert ia.status_code == 201, ia.text
        same(ia, ib, f"{requester}: reply issue", size=False)  # the serial of the number may gain a digit
        same(client.get(f"{API}/sealed-requests/{qa}", headers=h), client.get(f"{API}/sealed-requests/{qb}", headers=h),
             f"{requester}: read after reply")
        pa = client.get(f"{API}/sealed-requests/{qa}/reply", headers=h)
        pb = client.get(f"{API}/sealed-requests/{qb}/reply", headers=h)
        assert pa.status_code == pb.status_code == 200
        ta, tb = "".join(pdf_pages(pa.content)), "".join(pdf_pages(pb.content))
        assert without_signature_block(normalized(ta, **norm)) == without_signature_block(normalized(tb, **norm)), \
            f"{ta}\n{tb}"
        if requester == SCHOOL:  # may not see sealed records: "no record", sealed or not
            assert f"未发现{SEALED_NAME}（公民身份号码：{a_id}）有犯罪记录" in ta
            assert f"未发现{SEALED_NAME}（公民身份号码：{b_id}）有犯罪记录" in tb
        else:  # an entitled judicial organ refused: the refusal with its reasons, never "no record"
            assert "决定不予批准该查询申请。理由如下：不符合查询条件" in ta and "未发现" not in ta + tb
        assert "依法向你单位提供" not in ta + tb

    # Timing: 200 pairs of applications about A and B, the order within each pair at random.
    h = tokens[SCHOOL]
    for idn in (a_id, b_id) * 5:  # warm up
        client.post(f"{API}/sealed-requests", json=application(SEALED_NAME, idn), headers=h)
    rng = random.Random(20261130)
    apply_t: dict[str, list[float]] = {"A": [], "B": []}
    read_t: dict[str, list[float]] = {"A": [], "B": []}
    for _ in range(200):
        for who in rng.sample(["A", "B"], 2):
            body = application(SEALED_NAME, a_id if who == "A" else b_id)
            t0 = time.perf_counter()
            r = client.post(f"{API}/sealed-requests", json=body, headers=h)
            t1 = time.perf_counter()
            assert r.status_code == 201
            rid = r.json()["id"]
            t2 = time.perf_counter()
            r = client.get(f"{API}/sealed-requests/{rid}", headers=h)
            t3 = time.perf_counter()
            assert r.status_code == 200
            apply_t[who].append(t1 - t0)
            read_t[who].append(t3 - t2)
    backend = "sqlite" if rt.settings.is_sqlite else "postgres"
    report = [Timing(f"{backend}: POST /sealed-requests", apply_t["A"], apply_t["B"]).figures(),
              Timing(f"{backend}: GET /sealed-requests/{{id}}", read_t["A"], read_t["B"]).figures()]
    lines = []
    for f in report:
        lines.append(
            f"{f['label']} ({f['pairs']} pairs, A = sealed record, B = no record): "
            f"mean A {f['mean_a_ms']:.2f} ms, B {f['mean_b_ms']:.2f} ms; "
            f"median A {f['median_a_ms']:.2f} ms, B {f['median_b_ms']:.2f} ms; "
            f"paired difference A-B: mean {f['mean_diff_ms']:+.3f} ms "
            f"(95% CI {f['mean_diff_ci95_ms'][0]:+.3f} .. {f['mean_diff_ci95_ms'][1]:+.3f}), "
            f"median {f['median_diff_ms']:+.3f} ms "
            f"(95% CI {f['median_diff_ci95_ms'][0]:+.3f} .. {f['median_diff_ci95_ms'][1]:+.3f}); "
            f"Mann-Whitney U {f['mann_whitney_u']:.0f}, p = {f['mann_whitney_p']:.3f}; "
            f"sign-flip randomization p = {f['sign_flip_p']:.3f}")
    out = "\n".join(lines)
    print("\n" + out)
    Path(f"/tmp/shouhu-sealed-timing-{backend}.txt").write_text(out + "\n", encoding="utf-8")
    for f in report:
        # A failure needs both a significant effect at a strict level and one large enough to matter:
        # noise on a busy machine is not a systematic A/B effect, and the random order keeps it unbiased.
        material = abs(f["median_diff_ms"]) > max(2.0, 0.25 * f["median_all_ms"])
        assert not (f["sign_flip_p"] < 1e-3 and material), f


# 4. No list, filter, prefill, duplicate check or batch print shows a sealed record ------------------


def web_home(app: Any, username: str) -> str:
    """The user's home page (dashboard) through the pages' cookie sign-in; per-session tokens taken out."""
    with TestClient(app, base_url="https://testserver") as web:
        r = web_login(web, username)
        assert r.status_code == 200 and r.url.path == "/", r.text[:300]
        return re.sub(r"(csrf_token\" value=\"|X-CSRF-Token\": \")[^\"]+", r"\1<csrf>", r.text)


def test_sealed_record_absent_from_lists_counts_search_prefill_duplicates_and_batch_print(
        app, client, tokens, rt, tmp_path):
    baseline: dict[str, Any] = {}

    def snapshot() -> dict[str, Any]:
        """GET /statistics/minors at each level, and the home pages (dashboards) of a caseworker and a supervisor."""
        stats = [client.get(f"{API}/statistics/minors", params={"region": region}, headers=tokens[who]).json()
                 for who, region in ((CW, "320706"), (CW, "320706001001"), (VILLAGE, "320706001001"),
                                     (SUP, "320700"))]
        return {"stats": stats, "home": [web_home(app, who) for who in (CW, SUP)]}

    # The sibling alone: the counts and dashboards of a world where the minor to be sealed never existed.
    case = make_case(client, tokens, seal_by=None, between=lambda: baseline.update(snapshot()))
    before_seal = snapshot()
    assert before_seal["stats"] != baseline["stats"] and before_seal["home"] != baseline["home"]  # it counted
    rt.indexer.drain()

    def search(who: str, q: str) -> dict[str, Any]:
        r = client.get(f"{API}/search", params={"q": q}, headers=tokens[who])
        assert r.status_code == 200, r.text
        return dict(r.json())

    assert case.minor in {h["id"] for h in search(CW, SEALED_NAME)["hits"]}  # indexed, found while unsealed

    seal(client, tokens[CUST], case)
    rt.indexer.drain()
    hh = case.household
    after = snapshot()
    assert after["stats"] == baseline["stats"], "a sealed minor still counts"
    assert after["home"] == baseline["home"], "a sealed minor still shows on a dashboard"
    for who in (CW, VILLAGE, SUP):
        for q in (SEALED_NAME, case.id_number):
            found = search(who, q)
            assert found["total"] == 0 and found["hits"] == [], (who, q, found)
        assert case.sibling in {h["id"] for h in search(who, SIBLING_NAME)["hits"]}

    for who, region in ((CW, "320706"), (SUP, "320700"), (VILLAGE, "320706001001")):
        h = tokens[who]
        for params in ({}, {"region": region}, {"region": "320706001001"}, {"category": 3}, {"household_id": hh},
                       {"region": "320706001001", "category": 3, "household_id": hh}):
            r = client.get(f"{API}/minors", params=params, headers=h)
            assert r.status_code == 200, (who, params, r.text)
            assert [i["id"] for i in r.json()["items"]] == [case.sibling], (who, params)
            assert SEALED_NAME not in r.text and case.id_number not in r.text
        r = client.get(f"{API}/households/{hh}", headers=h)  # the household stays
        assert r.status_code == 200 and r.json()["id"] == hh
        assert SEALED_NAME not in r.text and case.id_number not in r.text
        assert hh in [i["id"] for i in client.get(f"{API}/households", headers=h).json()["items"]]
        r = client.get(f"{API}/documents", headers=h)
        assert [i["id"] for i in r.json()["items"]] == [case.sibling_doc], who
        assert client.get(f"{API}/documents", params={"subject_id": case.minor}, headers=h).json()["items"] == []
        r = client.get(f"{API}/documents", params={"subject_id": case.sibling}, headers=h)
        assert [i["id"] for i in r.json()["items"]] == [case.sibling_doc]
        # Read directly: exactly the answer for a minor that does not exist.
        r, t = (client.get(f"{API}/minors/{m}", headers=h) for m in (case.minor, "mn_nonexistent000000000"))
        assert (r.status_code, r.json()) == (t.status_code, t.json()) == (404, t.json())

    for who in (CW, VILLAGE):
        h = tokens[who]
        r = client.get(f"{API}/document-kinds/household_file/prefill", params={"subject_id": hh}, headers=h)
        assert r.status_code == 200, r.text
        assert SIBLING_NAME in r.text and SEALED_NAME not in r.text and case.id_number not in r.text
        r, t = (client.get(f"{API}/document-kinds/minor_file/prefill", params={"subject_id": m}, headers=h)
                for m in (case.minor, "mn_nonexistent000000000"))
        assert (r.status_code, r.json()) == (t.status_code, t.json()) == (422, t.json())

    # Batch print: the real `shouhu print` (rt.document_batch.print_batch) leaves the sealed minor out of every file.
    env = cli_env(rt.settings.data_dir, SHOUHU_MASTER_KEY=rt.settings.master_key.get_secret_value(),
                  **({"SHOUHU_DATABASE_URL": rt.settings.database_url} if rt.settings.database_url else {}))
    for kind in ("household_file", "minor_file"):
        out = tmp_path / f"{kind}.pdf"
        run_cli(env, "print", "--kind", kind, "--region", "320706001001", "--out", str(out), "--as", CW)
        text = "".join(pdf_pages(out.read_bytes()))
        assert SIBLING_NAME in text and SEALED_NAME not in text and case.id_number not in text, kind
    assert len(pypdf.PdfReader(out).pages) == 1  # one minor_file page: the sibling's

    # The duplicate check no longer sees the sealed person: registering the ID number again is a new record.
    r = client.post(f"{API}/minors", json=minor_body(hh, name="新登记童", id_number=case.id_number,
                                                     birth_date="2009-01-01"), headers=tokens[CW])
    assert r.status_code == 201, r.text
    assert r.json()["id"] != case.minor
    r = client.post(f"{API}/minors", json=minor_body(hh, name="重复童", id_number=case.sibling_id_number),
                    headers=tokens[CW])
    assert r.status_code == 409  # while an unsealed one is still a duplicate


# 5. Audit and the disclosure register ------------------------------------------------------------


def test_audit_and_disclosure_register_every_step_and_every_copy(client, rt):
    pin_clock(rt)
    add_extra_users(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    cases: dict[str, str] = {}

    def filed(who: str, case_number: str) -> str:
        rid = apply(client, tokens[who], SEALED_NAME, case.id_number, case_number)
        cases[rid] = case_number
        return rid

    granted = filed(COURT, "(2026)苏0706刑初101号")
    unentitled = filed(SCHOOL, "(2026)苏0706刑初102号")
    same_org = filed(CLERK, "(2026)苏0706刑初103号")
    # Refusals: a caseworker may not apply; others may not see, decide or list what is not theirs.
    r = client.post(f"{API}/sealed-requests", json=application(SEALED_NAME, case.id_number, "(2026)苏0706刑初104号"),
                    headers=tokens[CW])
    assert r.status_code == 403
    assert client.get(f"{API}/sealed-requests/{granted}", headers=tokens[CLERK]).status_code == 404
    assert decide(client, tokens[COURT_CUST], same_org, "approve", "同意").status_code == 403
    assert decide(client, tokens[CUST], unentitled, "approve", "同意").status_code == 409
    assert client.get(f"{API}/documents/{case.doc}/pdf", headers=tokens[COURT]).status_code == 404
    # Decisions and releases (two copies, each stamped and registered).
    assert decide(client, tokens[CUST], unentitled, "deny", "无权查询").status_code == 200
    assert decide(client, tokens[CUST], granted, "approve", "符合法定情形").status_code == 200
    received = []
    for _ in range(2):
        r = client.get(f"{API}/documents/{case.doc}/pdf", headers=tokens[COURT])
        assert r.status_code == 200
        received.append(r.content)

    sealed_actions = [a.value for a in (Action.SEALED_APPLY, Action.SEALED_READ, Action.SEALED_DECIDE,
                                        Action.SEALED_RECORDS,
                                        Action.SEALED_REVOKE, Action.SEALED_REPLY, Action.SEALED_REPLY_READ)]
    evs = [e for e in events(rt) if e["action"] in sealed_actions and e["resource_id"].startswith("sq_")]
    summary = [(e["action"], e["resource_id"], e["actor"], e["outcome"], e["reason"]) for e in evs]
    refused_apply = next(e for e in evs if e["outcome"] == "denied" and e["action"] == Action.SEALED_APPLY)
    assert summary == [
        (Action.SEALED_APPLY, granted, COURT, "allowed", "role:requester"),
        (Action.SEALED_APPLY, unentitled, SCHOOL, "allowed", "role:requester"),
        (Action.SEALED_APPLY, same_org, CLERK, "allowed", "role:requester"),
        (Action.SEALED_APPLY, refused_apply["resource_id"], CW, "denied", "role:none_grants:sealed:request:create"),
        (Action.SEALED_READ, granted, CLERK, "denied", "role:not_for_sealed_request"),
        (Action.SEALED_DECIDE, same_org, COURT_CUST, "error", "error:forbidden"),
        (Action.SEALED_DECIDE, unentitled, CUST, "error", "error:conflict"),
        (Action.SEALED_DECIDE, unentitled, CUST, "allowed", "role:custodian"),
        (Action.SEALED_DECIDE, granted, CUST, "allowed", "role:custodian"),
    ]
    cases[refused_apply["resource_id"]] = "(2026)苏0706刑初104号"
    for e in evs:
        assert e["details"]["case_number_hash"] == _case_hash(rt, cases[e["resource_id"]]), e
        assert e["details"]["legal_basis"] == LEGAL_BASIS, e
    assert [e["details"].get("decision") for e in evs if e["action"] == Action.SEALED_DECIDE] == [
        "approve", "approve", "deny", "approve"]

    releases = events(rt, "action = :a AND resource_id = :d", a=Action.DOCUMENT_DOWNLOAD.value, d=case.doc)
    assert [(e["outcome"], e["reason"]) for e in releases] == [
        ("denied", "record:not_found"), ("allowed", f"sealed:grant:{granted}"), ("allowed", f"sealed:grant:{granted}")]
    for e in releases[1:]:
        assert e["details"]["case_number_hash"] == _case_hash(rt, cases[granted])
        assert e["details"]["legal_basis"] == LEGAL_BASIS
    seal = events(rt, "action = :a", a=Action.RECORD_SEAL.value)
    assert [(e["outcome"], e["details"]) for e in seal] == [
        ("allowed", {"case_number_hash": _case_hash(rt, SEAL_CASE), "legal_basis": SEAL_BASIS})]

    # The subject is the keyed hash: an auditor finds the person's events by ID number, the log never holds it.
    r = client.post(f"{API}/audit/events/search", json={"subject": case.id_number, "limit": 200},
                    headers=tokens[AUDITOR])
    assert r.status_code == 200
    found = {(i["action"], i["resource_id"]) for i in r.json()["items"]}
    assert {(Action.RECORD_SEAL, case.minor), (Action.SEALED_APPLY, granted), (Action.SEALED_DECIDE, granted),
            (Action.DOCUMENT_DOWNLOAD, case.doc)} <= found
    dump = json.dumps([[str(v) for v in row] for row in run_sql(rt, "SELECT * FROM audit_events")],
                      ensure_ascii=False)
    assert case.id_number not in dump and SEALED_NAME not in dump

    # The disclosure register: every stamped copy, to whom, and the sha256 of the very bytes received.
    ids = dict(run_sql(rt, "SELECT username, id FROM users"))
    for who in (CUST, AUDITOR):
        r = client.get(f"{API}/disclosures", headers=tokens[who])
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        # Each copy is signed anew (ECDSA signatures differ): compare as sets, since with the clock
        # pinned every copy has the same release time and the register orders them by id after it.
        assert sorted(i["stamped_sha256"] for i in items) == sorted(sha256(b) for b in received)
        assert all(i["request_id"] == granted and i["document_id"] == case.doc and i["version"] == 1
                   and i["requester_id"] == ids[COURT] and i["source_sha256"] == case.doc_sha256 for i in items)
    r = client.get(f"{API}/disclosures", params={"request_id": unentitled}, headers=tokens[AUDITOR])
    assert r.json()["items"] == []
    for who in (COURT, CW, SUP, ADMIN):
        assert client.get(f"{API}/disclosures", headers=tokens[who]).status_code == 403
    assert events(rt, "action = :a AND outcome = 'allowed'", a=Action.DISCLOSURE_LIST.value)


# 6. Crypto -------------------------------------------------------------------------------------------


def _key(rt: Runtime, dek_id: str) -> tuple[str, bool, bool]:
    purpose, wrapped_null, shredded = run_sql(
        rt, "SELECT purpose, wrapped IS NULL, shredded_at IS NOT NULL FROM data_keys WHERE id = :i", i=dek_id)[0]
    return purpose, bool(wrapped_null), bool(shredded)


def test_sealing_reencrypts_under_sealed_keys_and_unsealing_restores(client, tokens, rt):
    case = make_case(client, tokens, seal_by=None)
    original_pdf = client.get(f"{API}/documents/{case.doc}/pdf", headers=tokens[CW]).content
    original_minor = client.get(f"{API}/minors/{case.minor}", headers=tokens[CW]).json()
    with rt.db.read_session() as s:
        mn = s.get(Minor, case.minor)
        assert mn is not None
        plain = rt.vault.open_json(s, mn.payload, mn.dek_id, kind="minor", record_id=mn.id, version=mn.version)
        old_minor_key, old_hash = mn.dek_id, mn.id_hash
        doc = s.get(Document, case.doc)
        assert doc is not None
        old_doc_key = doc.dek_id
        versions = select(DocumentVersion).where(DocumentVersion.document_id == doc.id)
        old_blobs = [v.blob_key for v in s.scalars(versions)]
    assert _key(rt, old_minor_key) == _key(rt, old_doc_key) == ("dek", False, False)

    r = client.post(f"{API}/records/{case.minor}/seal", json={"legal_basis": SEAL_BASIS, "case_number": SEAL_CASE},
                    headers=tokens[CUST])
    assert r.status_code == 200, r.text

    with rt.db.read_session() as s:
        mn = s.get(Minor, case.minor)
        doc = s.get(Document, case.doc)
        assert mn is not None and doc is not None
        assert mn.sealed and doc.sealed and mn.id_hash is None
        reg = s.get(SealedRecord, case.minor)
        assert reg is not None and reg.subject_hash == old_hash and reg.state == "sealed"
        # The old keys are shredded; the new ones carry the sealed purpose.
        assert mn.dek_id != old_minor_key and doc.dek_id != old_doc_key
        assert _key(rt, old_minor_key)[1:] == _key(rt, old_doc_key)[1:] == (True, True)
        assert _key(rt, mn.dek_id) == _key(rt, doc.dek_id) == (SEALED_DEK, False, False)
        with pytest.raises(Gone):
            rt.vault.data_key(s, old_minor_key)
        # The ordinary path cannot open a sealed payload, nor unwrap a sealed key.
        with pytest.raises(IntegrityFailure):
            rt.vault.open_json(s, mn.payload, mn.dek_id, kind="minor", record_id=mn.id, version=mn.version,
                               sealed=False)
        with pytest.raises(IntegrityFailure):
            rt.vault.data_key(s, mn.dek_id, sealed=False)
        with pytest.raises(IntegrityFailure):  # the right key but the ordinary associated data
            _open_with_ordinary_context(rt, s, mn)
        assert rt.vault.open_json(s, mn.payload, mn.dek_id, kind="minor", record_id=mn.id, version=mn.version,
                                  sealed=True) == plain
        # The document's blobs: the old ones are gone, the new ones open only on the sealed path.
        for key in old_blobs:
            with pytest.raises(BlobNotFound):
                rt.blobs.get(key)
        for v in s.scalars(select(DocumentVersion).where(DocumentVersion.document_id == doc.id)):
            assert v.blob_key not in old_blobs
            envelope = rt.blobs.get(v.blob_key)
            with pytest.raises(IntegrityFailure):
                rt.vault.open_bytes(s, envelope, doc.dek_id, kind="document", record_id=doc.id, version=v.version)
            with pytest.raises(IntegrityFailure):
                rt.vault.open_json(s, v.fields_payload, doc.dek_id, kind="document_fields", record_id=doc.id,
                                   version=v.version)
            opened = rt.vault.open_bytes(s, envelope, doc.dek_id, kind="document", record_id=doc.id,
                                         version=v.version, sealed=True)
            assert sha256(opened) == v.sha256
        sealed_minor_key, sealed_doc_key = mn.dek_id, doc.dek_id

    # Unsealing (custodian, statutory cause) reverses it: ordinary keys again, the content unchanged.
    r = client.post(f"{API}/records/{case.minor}/unseal", headers=tokens[CUST],
                    json={"cause": "undiscovered_crime", "legal_basis": UNSEAL_BASIS})
    assert r.status_code == 200, r.text
    assert set(r.json()["unsealed"]) == {case.minor, case.doc}
    with rt.db.read_session() as s:
        mn = s.get(Minor, case.minor)
        doc = s.get(Document, case.doc)
        assert mn is not None and doc is not None
        assert not mn.sealed and not doc.sealed and mn.id_hash == old_hash
        assert _key(rt, sealed_minor_key)[1:] == _key(rt, sealed_doc_key)[1:] == (True, True)
        assert _key(rt, mn.dek_id) == _key(rt, doc.dek_id) == ("dek", False, False)
        assert rt.vault.open_json(s, mn.payload, mn.dek_id, kind="minor", record_id=mn.id, version=mn.version) == plain
        with pytest.raises(IntegrityFailure):
            rt.vault.data_key(s, mn.dek_id, sealed=True)
    r = client.get(f"{API}/minors/{case.minor}", headers=tokens[CW])
    assert r.status_code == 200 and r.json() == original_minor
    r = client.get(f"{API}/documents/{case.doc}/pdf", headers=tokens[CW])
    assert r.status_code == 200 and r.content == original_pdf and sha256(r.content) == case.doc_sha256
    unseal = events(rt, "action = :a", a=Action.RECORD_UNSEAL.value)
    assert [(e["outcome"], e["details"]) for e in unseal] == [
        ("allowed", {"cause": "undiscovered_crime", "legal_basis": UNSEAL_BASIS,
                     "case_number_hash": _case_hash(rt, SEAL_CASE)})]


def _open_with_ordinary_context(rt: Runtime, s: Any, mn: Minor) -> Any:
    """The sealed data key, but the ordinary associated data: the envelope refuses."""
    from core import crypto

    dek = rt.vault.data_key(s, mn.dek_id, sealed=True)
    ctx = rt.vault.payload_context(kind="minor", record_id=mn.id, version=mn.version, sealed=False)
    try:
        return crypto.open_envelope(dek, mn.payload, context=ctx, key_id=mn.dek_id)
    except crypto.DecryptionError as exc:
        raise IntegrityFailure() from exc


# 7. Reasons sealed, no existence leak through sealing, causes, configuration ----------------------

DENY_REASON = "申请材料不全，未附立案决定书"
APPROVE_REASON = "附立案决定书，符合法定情形"
REVOKE_REASON = "案件已审结，授权提前终止"
UNSEAL_REASON = "又犯盗窃罪，数罪并罚决定执行六年有期徒刑"


def _case_hash(rt: Runtime, case_number: str) -> str:
    from access_control.sealed import case_number_hash

    return case_number_hash(rt.ring, case_number)


def _reason_hash(rt: Runtime, text: str) -> str:
    from access_control.sealed import REASON_HASH

    return rt.ring.keyed_hash(REASON_HASH, text)


def test_reasons_are_stored_sealed_and_the_log_keeps_their_keyed_hash(client, rt):
    pin_clock(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    court, cust = tokens[COURT], tokens[CUST]
    denied = apply(client, court, SEALED_NAME, case.id_number)
    assert decide(client, cust, denied, "deny", DENY_REASON).status_code == 200
    granted = approved(client, court, cust, case.id_number)
    assert decide(client, cust, granted, "deny", "再次审批").status_code == 409  # an 'error' event, hashed too
    r = client.post(f"{API}/sealed-requests/{granted}/revoke", json={"reason": REVOKE_REASON}, headers=cust)
    assert r.status_code == 200, r.text
    assert (r.json()["reason"], r.json()["revocation_reason"]) == (APPROVE_REASON, REVOKE_REASON)
    r = client.post(f"{API}/records/{case.minor}/unseal", headers=cust,
                    json={"cause": "new_crime", "legal_basis": UNSEAL_BASIS, "reason": UNSEAL_REASON})
    assert r.status_code == 200 and r.json()["cause"] == "new_crime", r.text

    # The requester reads the reasons back; the columns hold ciphertext only.
    shown = client.get(f"{API}/sealed-requests/{denied}", headers=court).json()
    assert (shown["reason"], shown["revocation_reason"]) == (DENY_REASON, None)
    shown = client.get(f"{API}/sealed-requests/{granted}", headers=court).json()
    assert (shown["status"], shown["reason"], shown["revocation_reason"]) == ("revoked", APPROVE_REASON, REVOKE_REASON)
    rows = run_sql(rt, "SELECT decision_reason, reasons FROM sealed_requests WHERE id IN (:a, :b)", a=denied, b=granted)
    assert len(rows) == 2
    for plain, sealed in rows:
        assert plain is None and sealed is not None
        for text in (DENY_REASON, APPROVE_REASON, REVOKE_REASON):
            assert text.encode() not in bytes(sealed)
    regs = run_sql(rt, "SELECT record_id, unseal_cause, unseal_basis, unseal_note FROM sealed_records ORDER BY 1")
    assert {r[0] for r in regs} == {case.minor, case.doc}
    assert all(r[1] == "new_crime" and r[2] == UNSEAL_BASIS and UNSEAL_REASON.encode() not in bytes(r[3])
               for r in regs)
    with rt.db.read_session() as s:
        for record_id in (case.minor, case.doc):
            reg = s.get(SealedRecord, record_id)
            assert reg is not None and rt.sealing.unseal_reason(s, reg) == UNSEAL_REASON

    # The log: the keyed hash of each reason (its own purpose), case number and legal basis; never the text.
    decided = events(rt, "action = :a", a=Action.SEALED_DECIDE.value)
    applied = {"case_number_hash": _case_hash(rt, APPLY_CASE), "legal_basis": LEGAL_BASIS}
    assert [(e["resource_id"], e["outcome"], e["details"]) for e in decided] == [
        (denied, "allowed", {**applied, "decision": "deny",
                             "reason_hash": _reason_hash(rt, DENY_REASON)}),
        (granted, "allowed", {**applied, "decision": "approve",
                              "reason_hash": _reason_hash(rt, APPROVE_REASON)}),
        (granted, "error", {**applied, "decision": "deny",
                            "reason_hash": _reason_hash(rt, "再次审批")}),
    ]
    assert _reason_hash(rt, DENY_REASON) != rt.ring.keyed_hash("id_number", DENY_REASON)  # a purpose of its own
    revoked = events(rt, "action = :a", a=Action.SEALED_REVOKE.value)
    assert [e["details"] for e in revoked] == [
        {**applied, "reason_hash": _reason_hash(rt, REVOKE_REASON)}]
    unsealed = events(rt, "action = :a", a=Action.RECORD_UNSEAL.value)
    assert [e["details"] for e in unsealed] == [
        {"cause": "new_crime", "legal_basis": UNSEAL_BASIS, "case_number_hash": _case_hash(rt, SEAL_CASE),
         "reason_hash": _reason_hash(rt, UNSEAL_REASON)}]
    dump = json.dumps([[str(v) for v in row] for row in run_sql(rt, "SELECT * FROM audit_events")],
                      ensure_ascii=False)
    for text in (DENY_REASON, APPROVE_REASON, REVOKE_REASON, UNSEAL_REASON, "再次审批"):
        assert text not in dump


def test_reasons_written_in_plain_text_before_0009_still_read_and_move_into_the_envelope(client, rt):
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    court, cust = tokens[COURT], tokens[CUST]
    rid = approved(client, court, cust, case.id_number)
    legacy = "旧版明文理由"  # as a request decided before migration 0009 holds it
    run_sql(rt, "UPDATE sealed_requests SET reasons = NULL, decision_reason = :r WHERE id = :i", r=legacy, i=rid)
    assert client.get(f"{API}/sealed-requests/{rid}", headers=court).json()["reason"] == legacy
    r = client.post(f"{API}/sealed-requests/{rid}/revoke", json={"reason": REVOKE_REASON}, headers=cust)
    assert r.status_code == 200, r.text
    assert (r.json()["reason"], r.json()["revocation_reason"]) == (legacy, REVOKE_REASON)
    ((plain, sealed),) = run_sql(rt, "SELECT decision_reason, reasons FROM sealed_requests WHERE id = :i", i=rid)
    assert plain is None and sealed is not None and legacy.encode() not in bytes(sealed)


def test_seal_and_unseal_of_a_record_the_caller_may_not_know_of_answer_as_for_an_unknown_id(client, rt):
    pin_clock(rt)
    add_extra_users(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    seal_body = {"legal_basis": SEAL_BASIS, "case_number": SEAL_CASE}
    unseal_body = {"cause": "undiscovered_crime", "legal_basis": UNSEAL_BASIS}
    nowhere = {"minor": "mn_nonexistent000000000", "document": "doc_nonexistent0000000"}

    def as_unknown(who: str, verb: str, body: dict[str, Any], record_id: str, kind: str) -> None:
        r = client.post(f"{API}/records/{record_id}/{verb}", json=body, headers=tokens[who])
        t = client.post(f"{API}/records/{nowhere[kind]}/{verb}", json=body, headers=tokens[who])
        assert (r.status_code, r.json()) == (t.status_code, t.json()) == (404, t.json()), (who, verb, kind, r.text)
        assert r.headers["content-length"] == t.headers["content-length"]

    # Court users may seal but may not see a sealed record: "sealed already" would say it exists.
    for who in (COURT, CLERK):
        as_unknown(who, "seal", seal_body, case.minor, "minor")
        as_unknown(who, "seal", seal_body, case.doc, "document")
    hidden = events(rt, "action = :a AND outcome = 'denied' AND resource_id IN (:m, :d)", a=Action.RECORD_SEAL.value,
                    m=case.minor, d=case.doc)
    assert {(e["actor"], e["reason"]) for e in hidden} == {(COURT, "sealed:no_grant"), (CLERK, "sealed:no_grant")}
    assert all(e["details"] == {"case_number_hash": _case_hash(rt, SEAL_CASE), "legal_basis": SEAL_BASIS}
               for e in hidden)
    # The custodian may know: told it is sealed already.
    r = client.post(f"{API}/records/{case.minor}/seal", json=seal_body, headers=tokens[CUST])
    assert r.status_code == 409 and r.json()["error"]["message"] == "该记录已封存。"

    # A record outside the custodian's region: sealing and unsealing are a 404 like an unknown id.
    r = client.post(f"{API}/households", json=household_body("320724001001"), headers=tokens[GN])
    gn_mn = client.post(f"{API}/minors", json=minor_body(r.json()["id"], id_number=make_id_number("320724")),
                        headers=tokens[GN]).json()["id"]
    assert client.post(f"{API}/records/{gn_mn}/seal", json=seal_body, headers=tokens[CUST]).status_code == 200
    for verb, body in (("unseal", unseal_body), ("seal", seal_body)):
        as_unknown(COURT_CUST, verb, body, gn_mn, "minor")  # a custodian of the Haizhou court
    as_unknown(COURT, "seal", seal_body, gn_mn, "minor")


def test_unsealing_needs_a_cause_from_the_list(client, tokens, rt):
    case = make_case(client, tokens, seal_by=CUST)
    url = f"{API}/records/{case.minor}/unseal"
    for body in ({"legal_basis": UNSEAL_BASIS}, {"cause": "", "legal_basis": UNSEAL_BASIS},
                 {"cause": "remorse", "legal_basis": UNSEAL_BASIS}, {"cause": None, "legal_basis": UNSEAL_BASIS}):
        r = client.post(url, json=body, headers=tokens[CUST])
        assert r.status_code == 422, (body, r.text)
        err = r.json()["error"]
        assert err["code"] == "invalid_input"
        assert [f["field"] for f in err["details"]["fields"]] == ["cause"], (body, err)
    r = client.post(url, json={"cause": "remorse", "legal_basis": UNSEAL_BASIS}, headers=tokens[CUST])
    message = r.json()["error"]["details"]["fields"][0]["message"]
    assert all(cause in message for cause in UNSEAL_CAUSES)
    r = client.post(url, json={"cause": "new_crime", "legal_basis": UNSEAL_BASIS, "reason": ""}, headers=tokens[CUST])
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "reason"
    assert not events(rt, "action = :a", a=Action.RECORD_UNSEAL.value)  # refused input is no decision
    # The OpenAPI document lists the causes.
    schema = client.get("/openapi.json").json()["components"]["schemas"]["UnsealBody"]
    assert schema["required"] == ["cause", "legal_basis"]
    assert schema["properties"]["cause"]["enum"] == list(UNSEAL_CAUSES)
    for cause in UNSEAL_CAUSES:
        r = client.post(url, json={"cause": cause, "legal_basis": UNSEAL_BASIS}, headers=tokens[CUST])
        assert r.status_code == 200 and r.json()["cause"] == cause, r.text
        assert client.post(f"{API}/records/{case.minor}/seal", json={"legal_basis": SEAL_BASIS,
                                                                     "case_number": SEAL_CASE},
                           headers=tokens[CUST]).status_code == 200


@contextmanager
def configured(settings: Any, **overrides: Any) -> Iterator[tuple[Runtime, TestClient]]:
    """A runtime and client on the test database with some settings changed."""
    with seeded_runtime(settings.model_copy(update=overrides)) as runtime, \
            TestClient(create_app(runtime=runtime)) as c:
        yield runtime, c


def test_a_configured_decision_deadline_sets_due_by_and_overdue(settings):
    with configured(settings, sealed_decision_days=3) as (rt, client):
        clock = pin_clock(rt)
        tokens = Tokens(client)
        rid = apply(client, tokens[COURT], SEALED_NAME, make_id_number(birth="20090101"))
        r = client.get(f"{API}/sealed-requests/{rid}", headers=tokens[COURT])
        assert datetime.fromisoformat(r.json()["due_by"]) == T0 + timedelta(days=3)
        clock.advance(days=3)
        tokens = Tokens(client)
        assert client.get(f"{API}/sealed-requests/{rid}", headers=tokens[COURT]).json()["status"] == "pending"
        clock.advance(seconds=1)
        tokens = Tokens(client)
        assert client.get(f"{API}/sealed-requests/{rid}", headers=tokens[COURT]).json()["status"] == "overdue"
        r = client.get(f"{API}/sealed-requests", params={"status": "overdue"}, headers=tokens[CUST])
        assert [i["id"] for i in r.json()["items"]] == [rid]


JUSTICE_ORG = "连云港市海州区司法局（演示）"
JUSTICE = "justice.requester"


def test_a_configured_entitled_org_type_may_apply_and_be_granted_others_get_no_record(settings):
    with configured(settings, sealed_entitled_org_types="court,procuratorate,police,justice") as (rt, client):
        pin_clock(rt)
        add_extra_users(rt)  # with the school requester, whose org type is not listed
        with rt.db.session() as s:
            org = Org(id=new_id("org"), name=JUSTICE_ORG, type=OrgType.JUSTICE, region_code="320706",
                      doc_prefix=None)
            s.add(org)
            s.flush()
            create_user(s, rt.passwords, username=JUSTICE, display_name="司法局查询人", org=org,
                        roles=["requester"], password=DEMO_PASSWORD, now=rt.clock())
            s.commit()
        tokens = Tokens(client)
        case = make_case(client, tokens, seal_by=CUST)
        cust = tokens[CUST]

        # The justice bureau, entitled by configuration: approved, reads the stamped record.
        rid = apply(client, tokens[JUSTICE], SEALED_NAME, case.id_number)
        assert client.get(f"{API}/sealed-requests/{rid}", headers=cust).json()["entitled"] is True
        assert decide(client, cust, rid, "approve", APPROVE_REASON).status_code == 200
        r = client.get(f"{API}/sealed-requests/{rid}/records", headers=tokens[JUSTICE])
        assert [i["id"] for i in r.json()["items"]] == [case.doc]
        r = client.get(f"{API}/documents/{case.doc}/pdf", headers=tokens[JUSTICE])
        assert r.status_code == 200 and JUSTICE_ORG in "".join(pdf_pages(r.content))

        # The school, not listed: only a denial, and the reply reads as for a person with no record.
        other_id = make_id_number(birth="20090101")
        qa = apply(client, tokens[SCHOOL], SEALED_NAME, case.id_number)
        qb = apply(client, tokens[SCHOOL], SEALED_NAME, other_id)
        r = decide(client, cust, qa, "approve", "同意")
        assert r.status_code == 409 and r.json()["error"]["details"]["rule"] == "sealed:requester_not_entitled"
        texts = []
        for q in (qa, qb):
            assert decide(client, cust, q, "deny", "申请单位无权查询").status_code == 200
            assert client.post(f"{API}/sealed-requests/{q}/reply", headers=cust).status_code == 201
            r = client.get(f"{API}/sealed-requests/{q}/reply", headers=tokens[SCHOOL])
            assert r.status_code == 200
            texts.append("".join(pdf_pages(r.content)))
        norm = {"names": (SEALED_NAME,), "id_numbers": (case.id_number, other_id)}
        assert normalized(texts[0], **norm) == normalized(texts[1], **norm)
        assert f"未发现{SEALED_NAME}（公民身份号码：{case.id_number}）有犯罪记录" in texts[0]


def test_sealing_one_document_hides_it_and_a_grant_releases_it_stamped(client, rt):
    pin_clock(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=None)
    cw, court, cust = tokens[CW], tokens[COURT], tokens[CUST]
    r = client.post(f"{API}/records/{case.doc}/seal", json={"legal_basis": SEAL_BASIS, "case_number": SEAL_CASE},
                    headers=cust)
    assert r.status_code == 200, r.text
    assert (r.json()["record_kind"], r.json()["sealed"]) == ("document", [case.doc])

    # The minor stays; the document is gone from lists and the ordinary read path.
    assert client.get(f"{API}/minors/{case.minor}", headers=cw).status_code == 200
    for params in ({}, {"subject_id": case.minor}):
        listed = client.get(f"{API}/documents", params=params, headers=cw).json()["items"]
        assert case.doc not in [i["id"] for i in listed], params
    assert case.sibling_doc in [i["id"] for i in client.get(f"{API}/documents", headers=cw).json()["items"]]
    for tail in ("", "/pdf"):
        r = client.get(f"{API}/documents/{case.doc}{tail}", headers=cw)
        t = client.get(f"{API}/documents/doc_nonexistent0000000{tail}", headers=cw)
        assert (r.status_code, r.json()) == (t.status_code, t.json()) == (404, t.json())
    with rt.db.read_session() as s:
        doc, mn = s.get(Document, case.doc), s.get(Minor, case.minor)
        assert doc is not None and doc.sealed and mn is not None and not mn.sealed and mn.id_hash

    # A grant about the minor's ID number names the document; the PDF comes stamped.
    rid = approved(client, court, cust, case.id_number)
    r = client.get(f"{API}/sealed-requests/{rid}/records", headers=court)
    assert [(i["id"], i["kind"]) for i in r.json()["items"]] == [(case.doc, "referral_notice")]
    r = client.get(f"{API}/documents/{case.doc}/pdf", headers=court)
    assert r.status_code == 200
    pages = pdf_pages(r.content)
    assert pages and all(f"申请编号：{rid}" in p and re.sub(r"\s+", "", CONFIDENTIALITY) in p for p in pages)
    assert client.get(f"{API}/documents/{case.doc}/pdf", headers=cw).status_code == 404  # still sealed to others


def test_a_records_provided_reply_says_so(client, rt):
    pin_clock(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    court, cust = tokens[COURT], tokens[CUST]
    rid = approved(client, court, cust, case.id_number)
    r = client.post(f"{API}/sealed-requests/{rid}/reply", headers=cust)
    assert r.status_code == 201, r.text
    assert r.json()["kind"] == "sealed_query_reply"
    r = client.get(f"{API}/sealed-requests/{rid}/reply", headers=court)
    assert r.status_code == 200
    text = "".join(pdf_pages(r.content))
    assert "关于犯罪记录查询结果的告知函" in text and "封存" not in text.split("告知函")[0]
    assert COURT_ORG in text  # the recipient
    assert f"你单位于{T0.year}年{T0.month}月{T0.day}日提出的查询申请（编号：{rid}）收悉。" in text
    assert (f"经审查，你单位关于{SEALED_NAME}（公民身份号码：{case.id_number}）的查询申请（案号：{APPLY_CASE}）"
            "符合法律规定。") in text
    assert "依法向你单位提供下列记录1件（本件份号：000001）" in text and "注意保密" in text
    assert "你单位对所获记录负有保密义务，不得泄露，不得用于所申请事项以外的用途。" in text
    assert "未发现" not in text and "有犯罪记录" not in text


def test_a_granted_sealed_pdf_cannot_be_read_unstamped(client, rt):
    """The stamp is part of the release path: a reading service cannot be built without its
    releaser, nor the sealed desk without what finds a subject's records, and a reading
    service built afresh, as any caller would build it, serves a granted sealed PDF stamped."""
    from access_control.identity import User, actor_for
    from access_control.sealed import SealedRequestService
    from archive.document_reading import DocumentReadingService
    from archive.sealing import SealedRelease, sealed_records_of

    with pytest.raises(TypeError):
        DocumentReadingService(vault=rt.vault, blobs=rt.blobs, regions=rt.regions)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        SealedRequestService(vault=rt.vault, ring=rt.ring, settings=rt.settings)  # type: ignore[call-arg]

    pin_clock(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    rid = apply(client, tokens[COURT], SEALED_NAME, case.id_number)
    assert decide(client, tokens[CUST], rid, "approve", APPROVE_REASON).status_code == 200

    desk = SealedRequestService(vault=rt.vault, ring=rt.ring, settings=rt.settings, find_records=sealed_records_of)
    reading = DocumentReadingService(vault=rt.vault, blobs=rt.blobs, regions=rt.regions,
                              releaser=SealedRelease(pool=rt.render_pool, desk=desk, pki=rt.pki))
    with rt.db.session() as s:
        actor = actor_for(s, s.scalars(select(User).where(User.username == COURT)).one())
    with rt.db.request_session(write=False) as s:
        pdf, _version = reading.pdf(rt.guard(s, actor), case.doc)
    pages = pdf_pages(pdf)
    assert sha256(pdf) != case.doc_sha256
    assert pages and all(f"申请编号：{rid}" in p and re.sub(r"\s+", "", CONFIDENTIALITY) in p for p in pages)
