"""Pages for sealed records, the access log and administration (web/sealed.py, web/audit.py, web/admin.py).

- ``test_pages_render_for_their_roles_*``: every page answers 200 for its roles and a
  403/404 error page for the others; no inline script, style or event handler anywhere.
- ``test_sealed_flow_*``: a custodian seals a minor with a document through the seal form,
  a court applies, the custodian decides, the court reads the granted record (stamped,
  entered in the register) and the reply letter, the custodian revokes; each form shows
  Chinese messages next to invalid fields and keeps what was typed.
- ``test_subject_lookup_*``: the auditor finds the events about a person by ID number,
  which appears in no URL and nowhere in the audit tables.
- ``test_verify_*``: verify against the latest checkpoint, an uploaded checkpoint file,
  and tampered files that fail with the first bad position.
- ``test_admin_*``: create a user (temporary password shown once), reset, disable.
- ``test_post_without_csrf_*``: refused, nothing written.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from datetime import timedelta
from html import unescape
from typing import Any

import pytest
from fastapi.testclient import TestClient

from runtime import Runtime
from tests.conftest import (
    DEMO_PASSWORD,
    household_body,
    login,
    make_id_number,
    minor_body,
    record_fields,
    run_sql,
    web_login,
)

API = "/api/v1"
BASE = "https://testserver"
CUST, COURT, CW, SUP, AUDITOR, ADMIN = (
    "custodian.city", "court.haizhou", "caseworker.haizhou", "supervisor.city", "auditor.city", "admin")
VILLAGE, GN = "village.haizhou", "caseworker.guannan"
DEMO_USERS = [CUST, COURT, CW, VILLAGE, SUP, AUDITOR, ADMIN, GN]
LEGAL_BASIS = "cpl_286_judicial"  # picked from the list (access_control.legal_bases)
SEAL_BASIS = "cpl_286_1"
UNSEAL_BASIS = "spp_rules_485"
SEAL_CASE = "(2026)苏0706刑初17号"
APPLY_CASE = "(2026)苏0706刑初88号"
PURPOSE = "审理案件需要核实被告人有无前科"
SEALED_NAME = "封晓默"

INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I), "inline script"),
    (re.compile(r"<style", re.I), "style element"),
    (re.compile(r"\sstyle\s*=", re.I), "style attribute"),
    (re.compile(r"\son[a-z]+\s*=", re.I), "event handler attribute"),
    (re.compile(r"javascript:|js:|hx-on", re.I), "script URL or hx-on"),
]


class Browser:
    """One signed-in user with their own cookie jar, posting forms with the session's CSRF token."""

    def __init__(self, app: Any, username: str | None = None):
        self.client = TestClient(app, base_url=BASE)
        self.csrf = ""
        if username:
            self.login(username)

    def login(self, username: str, password: str = DEMO_PASSWORD) -> None:
        r = web_login(self.client, username, password, follow_redirects=False)
        assert r.status_code == 303, r.text
        cookie = r.headers["set-cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
        home = self.client.get("/")
        assert home.status_code == 200, home.text
        self.csrf = csrf_of(home.text)

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kw: Any) -> Any:
        body = dict(data or {})
        if csrf:
            body["csrf_token"] = self.csrf
        kw.setdefault("follow_redirects", False)
        return self.client.post(path, data=body, **kw)

    def close(self) -> None:
        self.client.close()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no CSRF field on the page"
    return m.group(1)


def text_of(html: str) -> str:
    return unescape(re.sub(r"<[^>]+>", " ", html))


def field_error(html: str, name: str) -> str:
    """The message shown next to one field (``<p class="error" id="e-NAME">``)."""
    m = re.search(rf'<p class="error" id="e-{re.escape(name)}">([^<]*)</p>', html)
    assert m, f"no error shown next to {name}"
    return unescape(m.group(1))


def input_value(html: str, name: str) -> str:
    m = re.search(rf'<input id="f-{re.escape(name)}" name="{re.escape(name)}"[^>]*value="([^"]*)"', html)
    assert m, f"no input {name}"
    return unescape(m.group(1))


def selected_value(html: str, name: str) -> str:
    m = re.search(rf'<select id="f-{re.escape(name)}" name="{re.escape(name)}".*?</select>', html, re.S)
    assert m, f"no select {name}"
    chosen = re.search(r'<option value="([^"]*)" selected>', m.group(0))
    return unescape(chosen.group(1)) if chosen else ""


def textarea_value(html: str, name: str) -> str:
    m = re.search(rf'<textarea id="f-{re.escape(name)}" name="{re.escape(name)}"[^>]*>([^<]*)</textarea>', html)
    assert m, f"no textarea {name}"
    return unescape(m.group(1))


def assert_clean(r: Any) -> None:
    """No inline script, style or event handler; the strict CSP is sent."""
    for pattern, what in INLINE:
        found = pattern.search(r.text)
        assert found is None, f"{what} on {r.request.url}: {found.group(0)!r}"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["cache-control"] == "no-store"


@pytest.fixture
def browsers(app: Any) -> Iterator[Any]:
    made: list[Browser] = []

    def make(username: str | None = None) -> Browser:
        b = Browser(app, username)
        made.append(b)
        return b

    yield make
    for b in made:
        b.close()


@pytest.fixture
def api(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url=BASE) as c:
        yield c



def make_minor_with_document(api: TestClient) -> tuple[str, str, str]:
    """A minor (to be sealed) with one referral notice; returns (minor id, document id, ID number)."""
    cw = login(api, CW)
    r = api.post(f"{API}/households", json=household_body(), headers=cw)
    assert r.status_code == 201, r.text
    idn = make_id_number(birth="20090101")
    r = api.post(f"{API}/minors", json=minor_body(r.json()["id"], name=SEALED_NAME, id_number=idn,
                                                  birth_date="2009-01-01"), headers=cw)
    assert r.status_code == 201, r.text
    minor = r.json()["id"]
    r = api.post(f"{API}/documents", json={"kind": "referral_notice", "subject_id": minor,
                                           "fields": record_fields("referral_notice")}, headers=cw)
    assert r.status_code == 201, r.text
    return minor, r.json()["id"], idn


def audit_dump(rt: Runtime) -> str:
    """Every stored audit row, as text."""
    rows = run_sql(rt, "SELECT * FROM audit_events") + run_sql(rt, "SELECT * FROM audit_event_subjects")
    return "\n".join(repr(tuple(row)) for row in rows)


def apply_via_page(court: Browser, idn: str, name: str = SEALED_NAME) -> str:
    r = court.post("/sealed/new", {"case_number": APPLY_CASE, "legal_basis": LEGAL_BASIS, "purpose": PURPOSE,
                                   "subject.name": name, "subject.id_number": idn})
    assert r.status_code == 303, r.text
    m = re.fullmatch(r"/sealed/(sq_[A-Za-z0-9_]+)\?done=applied", r.headers["location"])
    assert m, r.headers["location"]
    # The court is told when the decision is due (the deadline below), not to come back "after" it.
    page = court.get(r.headers["location"]).text
    assert "在下方“审批期限”之前作出决定" in page and "<dt>审批期限</dt>" in page
    return m.group(1)


# every page, every role --------------------------------------------------------------------


PAGES = {
    "/sealed": {COURT, CUST},
    "/sealed/new": {COURT},
    "/sealed/seal": {CUST, COURT},  # courts seal records too (policy: requester of a court)
    "/sealed/disclosures": {CUST, AUDITOR},
    "/audit": {AUDITOR},
    "/audit/subject": {AUDITOR},
    "/audit/verify": {AUDITOR},
    "/audit/export": {AUDITOR},
    "/admin": {ADMIN},
    "/admin/users/new": {ADMIN},
    "/admin/orgs": {ADMIN},
    "/admin/keys": {ADMIN},
}


def test_pages_render_for_their_roles_and_refuse_others(app: Any, api: TestClient, browsers: Any) -> None:
    court = browsers(COURT)
    rid = apply_via_page(court, make_id_number(birth="20080202"))
    people = {u: (court if u == COURT else browsers(u)) for u in DEMO_USERS}
    for path, allowed in PAGES.items():
        for user, b in people.items():
            r = b.get(path)
            assert_clean(r)
            if user in allowed:
                assert r.status_code == 200, (path, user, r.text)
                assert "<h1>" in r.text
            else:
                assert r.status_code == 403, (path, user, r.status_code)  # a page, not a record: no secret
                assert "无权访问" in r.text
    # an application: its requester and custodians; another requester of the same court gets 404
    for user, b in people.items():
        r = b.get(f"/sealed/{rid}")
        assert_clean(r)
        assert r.status_code == (200 if user in (COURT, CUST) else 403), (user, r.status_code)
    assert people[CUST].get("/sealed/sq_doesnotexist").status_code == 404
    # the export downloads and the checkpoint files are the auditor's
    for path in ("/audit/export.jsonl", "/audit/export.csv"):
        assert people[AUDITOR].get(path).status_code == 200
        assert people[CW].get(path).status_code == 403
    # signed out: to the sign-in page, with the way back
    anon = browsers()
    r = anon.get("/audit", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/audit"
    # the navigation shows each role its own entries
    assert 'href="/sealed"' in people[COURT].get("/").text
    assert 'href="/audit"' in people[AUDITOR].get("/").text and 'href="/sealed"' not in people[AUDITOR].get("/").text
    assert 'href="/admin"' in people[ADMIN].get("/").text


# sealed records, end to end ------------------------------------------------------------------


def test_sealed_flow_through_the_pages(app: Any, rt: Runtime, api: TestClient, browsers: Any) -> None:
    minor, doc, idn = make_minor_with_document(api)
    cust, court, auditor = browsers(CUST), browsers(COURT), browsers(AUDITOR)

    # the seal form: errors next to the fields, typed values kept
    r = cust.post("/sealed/seal", {"record_id": minor, "legal_basis": "", "case_number": SEAL_CASE})
    assert r.status_code == 422
    assert field_error(r.text, "legal_basis") == "必填字段"
    assert input_value(r.text, "record_id") == minor and input_value(r.text, "case_number") == SEAL_CASE
    r = cust.post("/sealed/seal", {"record_id": "", "legal_basis": "", "case_number": SEAL_CASE})
    assert field_error(r.text, "record_id") == "必填字段" and field_error(r.text, "legal_basis") == "必填字段"
    r = cust.post("/sealed/seal", {"record_id": "mn_nosuchrecord", "legal_basis": SEAL_BASIS,
                                   "case_number": SEAL_CASE})
    assert r.status_code == 422
    assert field_error(r.text, "record_id") == "记录不存在或无权查看。"
    assert selected_value(r.text, "legal_basis") == SEAL_BASIS
    # the basis is picked from the list; a case number must look like one
    r = cust.post("/sealed/seal", {"record_id": minor, "legal_basis": "刑诉法第286条", "case_number": "张三的案子"})
    assert r.status_code == 422
    assert field_error(r.text, "legal_basis").startswith("取值应为") and field_error(r.text, "case_number").startswith(
        "案号格式不正确")
    # sealing the minor seals its document too
    r = cust.post("/sealed/seal", {"record_id": minor, "legal_basis": SEAL_BASIS, "case_number": SEAL_CASE})
    assert r.status_code == 200, r.text
    assert "已封存记录" in r.text and doc in r.text
    r = cust.post("/sealed/seal", {"record_id": minor, "legal_basis": SEAL_BASIS, "case_number": SEAL_CASE})
    assert r.status_code == 409 and "该记录已封存。" in field_error(r.text, "record_id")
    # a court user may seal, but may not know of the sealed minor: told what an unknown id is told
    r = court.post("/sealed/seal", {"record_id": minor, "legal_basis": SEAL_BASIS, "case_number": SEAL_CASE})
    unknown = court.post("/sealed/seal", {"record_id": "mn_nosuchrecord", "legal_basis": SEAL_BASIS,
                                          "case_number": SEAL_CASE})
    assert r.status_code == unknown.status_code == 422
    assert field_error(r.text, "record_id") == field_error(unknown.text, "record_id") == "记录不存在或无权查看。"

    # the application form: Chinese messages next to the fields, typed values kept
    r = court.get("/sealed/new")
    assert r.status_code == 200 and "申请查询封存记录" in r.text
    assert '<select id="f-legal_basis" name="legal_basis"' in r.text  # picked from the list, never typed
    assert '<option value="cpl_286_judicial">《中华人民共和国刑事诉讼法》第二百八十六条第二款' in r.text
    r = court.post("/sealed/new", {"case_number": "", "legal_basis": LEGAL_BASIS, "purpose": PURPOSE,
                                   "subject.name": SEALED_NAME, "subject.id_number": idn[:-1] + "0" + "1"})
    assert r.status_code == 422
    assert field_error(r.text, "case_number") == "必填字段"
    assert "身份证号码" in field_error(r.text, "subject.id_number")
    assert input_value(r.text, "subject.name") == SEALED_NAME
    assert selected_value(r.text, "legal_basis") == LEGAL_BASIS
    assert textarea_value(r.text, "purpose") == PURPOSE
    assert "提交的数据有误" in r.text
    rid = apply_via_page(court, idn)
    r = court.get(f"/sealed/{rid}?done=applied")
    assert r.status_code == 200
    assert "待审批" in r.text and "申请已提交" in r.text and "审批期限" in r.text and "剩余 7 天" in r.text
    r = court.get("/sealed")
    assert rid in r.text and APPLY_CASE in r.text and "待审批" in r.text

    # the custodian's queue, filtered; an overdue application is highlighted
    late = apply_via_page(court, make_id_number(birth="20080303"))
    run_sql(rt, "UPDATE sealed_requests SET due_by = created_at - INTERVAL '1 day' WHERE id = :id"
            if rt.db.engine.dialect.name == "postgresql" else
            "UPDATE sealed_requests SET due_by = datetime(created_at, '-1 day') WHERE id = :id", id=late)
    r = cust.get("/sealed")
    assert r.status_code == 200 and rid in r.text and late in r.text
    row = re.search(rf'<tr class="row-overdue">\s*<td><a href="/sealed/{late}">', r.text)
    assert row, "the overdue application is not highlighted"
    assert "已逾期" in r.text and "已超期" in r.text
    r = cust.get("/sealed?status=overdue")
    assert late in r.text and rid not in r.text
    r = cust.get("/sealed?status=pending")
    assert rid in r.text

    # the decision form: errors next to the fields, the choice kept
    r = cust.get(f"/sealed/{rid}")
    assert r.status_code == 200 and "审批" in r.text and idn in r.text and "海州区法院查询人" in r.text
    r = cust.post(f"/sealed/{rid}/decision", {"decision": "approve", "reason": "", "expires_at": "2026-13-40"})
    assert r.status_code == 422
    assert field_error(r.text, "expires_at") == "日期格式应为 YYYY-MM-DD"
    assert re.search(r'value="approve" checked', r.text)
    r = cust.post(f"/sealed/{rid}/decision", {"decision": "approve", "reason": ""})
    assert r.status_code == 422 and field_error(r.text, "reason") == "必填字段"
    r = cust.post(f"/sealed/{rid}/decision", {"reason": "依法审查"})
    assert r.status_code == 422 and field_error(r.text, "decision") == "必填字段"
    assert textarea_value(r.text, "reason") == "依法审查"
    r = cust.post(f"/sealed/{rid}/decision", {"decision": "approve", "reason": "依法审查", "expires_at": "2000-01-01"})
    assert r.status_code == 409 and field_error(r.text, "expires_at") == "授权到期时间应晚于现在。"
    # a requester cannot decide
    r = court.post(f"/sealed/{rid}/decision", {"decision": "approve", "reason": "自己批准"})
    assert r.status_code == 403 and "无权访问" in r.text
    r = cust.post(f"/sealed/{rid}/decision", {"decision": "approve", "reason": "符合法定查询条件"})
    assert r.status_code == 303 and r.headers["location"] == f"/sealed/{rid}?done=decided"
    r = cust.get(r.headers["location"])
    assert "已批准" in r.text and "审批决定已记录" in r.text and "撤销授权" in r.text and "出具告知函" in r.text
    r = cust.post(f"/sealed/{rid}/decision", {"decision": "deny", "reason": "再次审批"})
    assert r.status_code == 409  # already decided: no form any more, the message on the page
    assert "该申请已经处理。" in r.text

    # the requester sees the grant and reads the granted record, stamped
    r = court.get(f"/sealed/{rid}")
    assert "已批准" in r.text and "授权查阅的记录" in r.text
    link = f"/sealed/{rid}/records/{doc}/pdf"
    assert f'href="{link}"' in r.text
    r = court.get(link)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert r.content.startswith(b"%PDF")
    stamped = hashlib.sha256(r.content).hexdigest()
    assert r.headers["x-content-sha256"] == stamped
    assert cust.get(link).status_code == 404  # the custodian reads no sealed content
    r = cust.get(f"/sealed/disclosures?request_id={rid}")
    assert r.status_code == 200 and stamped in r.text and "海州区法院查询人" in r.text
    r = auditor.get("/sealed/disclosures")
    assert r.status_code == 200 and stamped in r.text

    # the reply letter
    assert court.get(f"/sealed/{rid}/reply.pdf").status_code == 404  # not yet issued
    assert court.post(f"/sealed/{rid}/reply").status_code == 403
    r = cust.post(f"/sealed/{rid}/reply")
    assert r.status_code == 303 and r.headers["location"] == f"/sealed/{rid}?done=replied"
    r = cust.post(f"/sealed/{rid}/reply")
    assert r.status_code == 409 and "该申请已出具告知函。" in r.text
    r = court.get(f"/sealed/{rid}")
    assert f'href="/sealed/{rid}/reply.pdf"' in r.text
    r = court.get(f"/sealed/{rid}/reply.pdf")
    assert r.status_code == 200 and r.content.startswith(b"%PDF")

    # revoking: a reason is required; afterwards the records answer 404
    r = cust.post(f"/sealed/{rid}/revoke", {"reason": ""})
    assert r.status_code == 422 and field_error(r.text, "reason") == "必填字段"
    r = cust.post(f"/sealed/{rid}/revoke", {"reason": "案件已审结"})
    assert r.status_code == 303
    assert "已撤销" in court.get(f"/sealed/{rid}").text
    assert "案件已审结" in text_of(cust.get(f"/sealed/{rid}").text)  # the revocation reason, shown
    assert "授权查阅的记录" not in court.get(f"/sealed/{rid}").text
    assert court.get(link).status_code == 404

    # unsealing needs a statutory cause, chosen from the list, and a legal basis
    r = cust.get("/sealed/seal")
    assert '<select id="f-unseal.cause" name="unseal.cause"' in r.text
    assert '<option value="undiscovered_crime">发现漏罪' in r.text
    r = cust.post("/sealed/unseal", {"unseal.record_id": minor, "unseal.legal_basis": ""})
    assert r.status_code == 422 and field_error(r.text, "unseal.legal_basis") == "必填字段"
    assert field_error(r.text, "unseal.cause") == "必填字段"
    assert input_value(r.text, "unseal.record_id") == minor
    r = cust.post("/sealed/unseal", {"unseal.record_id": minor, "unseal.cause": "just_because",
                                     "unseal.legal_basis": UNSEAL_BASIS, "unseal.reason": "说明文字"})
    assert r.status_code == 422 and field_error(r.text, "unseal.cause").startswith("取值应为")
    assert textarea_value(r.text, "unseal.reason") == "说明文字"
    r = cust.post("/sealed/unseal", {"unseal.record_id": minor, "unseal.cause": "undiscovered_crime",
                                     "unseal.legal_basis": UNSEAL_BASIS, "unseal.reason": "说明文字"})
    assert r.status_code == 200 and "已解除封存记录" in r.text and "事由：发现漏罪" in r.text

    # every step is in the log, and no page put the ID number in a URL or the log
    assert idn not in audit_dump(rt)
    actions = {row[0] for row in run_sql(rt, "SELECT action FROM audit_events")}
    assert {"sealed:record:seal", "sealed:request:create", "sealed:request:decide", "documents:pdf:read",
            "sealed:reply:issue", "sealed:request:revoke", "sealed:record:unseal"} <= actions
    errors = run_sql(rt, "SELECT reason FROM audit_events WHERE action = 'sealed:request:decide' "
                         "AND outcome = 'error'")
    assert errors, "a refused decision leaves an error event, as through the API"


def test_own_organisation_decision_shows_the_rule(app: Any, rt: Runtime, api: TestClient, browsers: Any) -> None:
    """A custodian of the applying court: the refusal is shown on the form, not as a crash."""
    from sqlalchemy import select

    from access_control.identity import Org, create_user

    with rt.db.session() as s:
        court_org = s.scalar(select(Org).where(Org.name == "连云港市海州区人民法院"))
        assert court_org is not None
        create_user(s, rt.passwords, username="court.custodian", display_name="海州区法院档案保管人", org=court_org,
                    roles=["custodian"], password=DEMO_PASSWORD, now=rt.clock())
        s.commit()
    rid = apply_via_page(browsers(COURT), make_id_number(birth="20080404"))
    b = browsers("court.custodian")
    r = b.post(f"/sealed/{rid}/decision", {"decision": "deny", "reason": "不予批准"})
    assert r.status_code == 403
    assert "不能审批本单位提出的申请。" in r.text and textarea_value(r.text, "reason") == "不予批准"


# the access log ------------------------------------------------------------------------------


def test_subject_lookup_by_id_number_without_it_in_urls_or_log(app: Any, rt: Runtime, browsers: Any) -> None:
    court, auditor = browsers(COURT), browsers(AUDITOR)
    idn = make_id_number(birth="20080505")
    other = make_id_number(birth="20080606")
    rid = apply_via_page(court, idn)
    other_rid = apply_via_page(court, other)
    assert court.get(f"/sealed/{rid}").status_code == 200

    r = auditor.get("/audit/subject")
    assert r.status_code == 200 and 'method="post" action="/audit/subject"' in r.text
    r = auditor.post("/audit/subject", {"id_number": idn.lower()})
    assert r.status_code == 200
    assert "?" not in str(r.url) and idn not in str(r.url)
    found = text_of(r.text)
    assert "sealed:request:create" in found and "sealed:request:read" in found
    assert rid in r.text and other_rid not in r.text
    # invalid numbers: a message next to the field, the typed value kept
    r = auditor.post("/audit/subject", {"id_number": "12345"})
    assert r.status_code == 422
    assert "身份证号码应为18位" in field_error(r.text, "id_number") and input_value(r.text, "id_number") == "12345"
    r = auditor.post("/audit/subject", {"id_number": ""})
    assert r.status_code == 422 and field_error(r.text, "id_number") == "必填字段"
    # the lookup itself is logged, by keyed hash only
    lookups = run_sql(rt, "SELECT details FROM audit_events WHERE action = 'audit:events:read'")
    assert any("by_subject" in str(row[0]) for row in lookups)
    dump = audit_dump(rt)
    assert idn not in dump and idn.lower() not in dump and other not in dump
    # other roles: refused
    assert browsers(CW).post("/audit/subject", {"id_number": idn}).status_code == 403


def test_event_list_filters_pagination_and_flags(app: Any, rt: Runtime, browsers: Any) -> None:
    auditor, cw = browsers(AUDITOR), browsers(CW)
    for _ in range(5):  # SHOUHU_AUDIT_DENIAL_THRESHOLD: 5 refusals within 15 minutes raise a flag
        assert cw.get("/audit").status_code == 403
    for _ in range(50):
        assert auditor.get("/audit/verify").status_code == 200  # enough events for two pages
    r = auditor.get("/audit?outcome=denied")
    assert r.status_code == 200
    outcomes = re.findall(r'<tr class="ev ev-(\w+)">', r.text)
    assert outcomes and set(outcomes) == {"denied"}
    r = auditor.get(f"/audit?actor={CW}&outcome=denied")
    assert len(re.findall(r'<tr class="ev ev-denied">', r.text)) == 5
    r = auditor.get("/audit?action=audit:checkpoint:read")
    assert set(re.findall(r'<td class="mono">([a-z_]+:[a-z_]+:[a-z_]+)</td>', r.text)) == {"audit:checkpoint:read"}
    # pagination: the next page continues where the first stopped
    r = auditor.get("/audit")
    first = [int(s) for s in re.findall(r'<td class="num">(\d+)</td>\s*<td>', r.text)]
    assert len(first) == 50
    m = re.search(r'href="(/audit\?cursor=[^"]+)">更早的事件', r.text)
    assert m
    r = auditor.get(unescape(m.group(1)))
    second = [int(s) for s in re.findall(r'<td class="num">(\d+)</td>\s*<td>', r.text)]
    assert second and max(second) < min(first)
    assert "最新事件" in r.text
    # dates: a bad one is named next to its field, the typed value kept
    r = auditor.get("/audit?from=2026-02-30&to=2026-01-01")
    assert r.status_code == 422
    assert field_error(r.text, "from") == "日期格式应为 YYYY-MM-DD" and input_value(r.text, "from") == "2026-02-30"
    today = rt.clock().date()
    r = auditor.get(f"/audit?from={today - timedelta(days=1)}&to={today + timedelta(days=1)}")
    assert r.status_code == 200 and 'class="ev ev-' in r.text
    r = auditor.get(f"/audit?from={today}&to={today - timedelta(days=2)}")
    assert r.status_code == 422 and field_error(r.text, "to") == "结束日期不能早于开始日期"
    # the anomaly flags: repeated denials of the caseworker
    r = auditor.get("/audit")
    assert "异常提示" in r.text
    assert re.search(r'class="flag flag-repeated_denials">\s*<strong>多次被拒绝</strong>：caseworker\.haizhou', r.text)


def test_verify_latest_uploaded_and_tampered_checkpoints(app: Any, rt: Runtime, browsers: Any) -> None:
    auditor = browsers(AUDITOR)
    r = auditor.get("/audit/verify")
    assert r.status_code == 200 and "尚无检查点" in r.text
    # Without a signed checkpoint the chain proves little (it can be rewritten whole): a warning, not green.
    r = auditor.post("/audit/verify")
    assert r.status_code == 200 and "verify-warn" in r.text and "没有核对任何已签署的检查点" in r.text
    assert "verify-ok" not in r.text and "日志完整" not in r.text
    r = auditor.post("/audit/checkpoints")
    assert r.status_code == 200 and "已签署检查点" in r.text
    size = int(re.search(r'href="/audit/checkpoints/(\d+)\.json"', r.text).group(1))
    r = auditor.post("/audit/verify")
    assert r.status_code == 200 and "日志完整" in r.text and "verify-ok" in r.text
    assert f"最近的检查点（{size} 条）" in r.text

    r = auditor.get(f"/audit/checkpoints/{size}.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    saved = r.json()
    assert saved["size"] == size and len(saved["signature"]) == 128

    def upload(data: bytes, filename: str = "checkpoint.json") -> Any:
        return auditor.post("/audit/verify/upload", files={"checkpoint": (filename, data, "application/json")})

    r = upload(json.dumps(saved).encode())
    assert r.status_code == 200, r.text
    assert "日志完整" in r.text and "上传的检查点 checkpoint.json" in r.text
    # the API's request body shape works too
    assert "日志完整" in upload(json.dumps({"checkpoint": saved}).encode()).text

    # a tampered checkpoint: another root
    bad = dict(saved, root="0" * 64)
    r = upload(json.dumps(bad).encode(), "tampered.json")
    assert r.status_code == 200
    assert "校验未通过" in r.text and "verify-bad" in r.text
    assert f"从第 <strong>{size}</strong> 条事件起出现问题" in r.text
    assert f"前 {size} 条事件的默克尔树根与签名检查点不符" in r.text
    # a forged signature
    forged = dict(saved, signature="ab" * 64)
    r = upload(json.dumps(forged).encode())
    assert "校验未通过" in r.text and f"规模为 {size} 的检查点签名验证失败" in r.text
    # a checkpoint from a longer log (the log was truncated after it)
    longer = dict(saved, size=size + 1000)
    r = upload(json.dumps(longer).encode())
    assert "校验未通过" in r.text and "日志被截短" in r.text

    # files that are no checkpoint: the message next to the file field
    r = upload(b"{not json")
    assert r.status_code == 422 and field_error(r.text, "checkpoint") == "文件不是有效的 JSON"
    r = upload(json.dumps({"size": 3}).encode())
    assert r.status_code == 422 and "root" in field_error(r.text, "checkpoint")
    r = auditor.post("/audit/verify/upload")
    assert r.status_code == 422 and "请选择检查点文件" in field_error(r.text, "checkpoint")

    # the log itself tampered (triggers dropped as an attacker would): the first bad event is named
    if rt.db.engine.dialect.name == "sqlite":
        triggers = [row[0] for row in run_sql(
            rt, "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit_events'")]
        for name in triggers:
            run_sql(rt, f'DROP TRIGGER "{name}"')
        run_sql(rt, "UPDATE audit_events SET reason = 'forged' WHERE seq = 2")
        r = upload(json.dumps(saved).encode())
        assert "校验未通过" in r.text and "从第 <strong>2</strong> 条事件起出现问题" in r.text
        assert "事件内容与其哈希不符" in r.text


def test_export_downloads_and_public_key(app: Any, rt: Runtime, browsers: Any) -> None:
    auditor = browsers(AUDITOR)
    assert auditor.post("/audit/checkpoints").status_code == 200
    r = auditor.get("/audit/export")
    assert r.status_code == 200
    key = rt.audit_desk.public_key()
    assert key["public_key"] in r.text and "BEGIN PUBLIC KEY" in r.text
    m = re.search(r'href="/audit/export\.jsonl\?upto=(\d+)"', r.text)
    assert m
    upto = int(m.group(1))
    r = auditor.get(f"/audit/export.jsonl?upto={upto}")
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    lines = r.content.decode().splitlines()
    assert len(lines) == upto and [json.loads(x)["seq"] for x in lines] == list(range(1, upto + 1))
    r = auditor.get("/audit/export.csv")
    rows = list(csv.reader(io.StringIO(r.content.decode())))
    assert rows[0][:3] == ["seq", "at", "actor_id"] and len(rows) > upto


# administration ----------------------------------------------------------------------------


def test_admin_creates_resets_and_disables_users(app: Any, rt: Runtime, browsers: Any) -> None:
    admin = browsers(ADMIN)
    r = admin.get("/admin")
    assert r.status_code == 200 and CW in r.text and "重置密码" in r.text
    r = admin.get("/admin/users/new")
    assert r.status_code == 200
    org_id = re.search(r'<option value="(org_[^"]+)">连云港市海州区民政局', r.text).group(1)
    # invalid: Chinese messages next to the fields, typed values and choices kept
    r = admin.post("/admin/users/new", {"username": "Bad Name", "name": "新专干", "org_id": org_id})
    assert r.status_code == 422
    assert field_error(r.text, "username") == "格式不正确"
    assert field_error(r.text, "roles") == "至少需要1项"
    assert input_value(r.text, "username") == "Bad Name" and input_value(r.text, "name") == "新专干"
    assert re.search(rf'<option value="{org_id}" selected>', r.text)
    r = admin.post("/admin/users/new", {"username": "caseworker.haizhou", "name": "重名", "org_id": org_id,
                                        "roles[]": "caseworker"})
    assert r.status_code == 409 and field_error(r.text, "username") == "用户名已存在。"
    assert re.search(r'name="roles\[\]" value="caseworker" checked', r.text)
    # created: the temporary password is shown once
    r = admin.post("/admin/users/new", {"username": "cw.new", "name": "新专干", "org_id": org_id,
                                        "roles[]": ["caseworker", "supervisor"]})
    assert r.status_code == 200, r.text
    password = unescape(re.search(r'<strong class="mono temp-password">([^<]+)</strong>', r.text).group(1))
    assert "只显示这一次" in r.text and "专干" in r.text and "督导" in r.text
    assert password not in admin.get("/admin").text
    newbie = browsers()
    newbie.login("cw.new", password)
    assert "新专干" in newbie.get("/").text
    # reset: a new temporary password, the old one and the old session end
    uid = run_sql(rt, "SELECT id FROM users WHERE username = 'cw.new'")[0][0]
    r = admin.post(f"/admin/users/{uid}/reset-password")
    assert r.status_code == 200 and "密码已重置" in r.text
    fresh = unescape(re.search(r'<strong class="mono temp-password">([^<]+)</strong>', r.text).group(1))
    assert fresh != password
    assert newbie.get("/", follow_redirects=False).status_code == 303
    r = web_login(browsers().client, "cw.new", password, follow_redirects=False)
    assert r.status_code == 401
    browsers().login("cw.new", fresh)
    # disable
    r = admin.post(f"/admin/users/{uid}/disable")
    assert r.status_code == 303 and r.headers["location"] == "/admin?done=disabled"
    r = admin.get(r.headers["location"])
    assert "账号已停用" in r.text and "已停用" in r.text
    r = web_login(browsers().client, "cw.new", fresh, follow_redirects=False)
    assert r.status_code == 401
    # orgs and keys, no case content
    r = admin.get("/admin/orgs")
    assert "连云港市海州区人民法院" in r.text and "人民法院" in r.text
    r = admin.get("/admin/keys")
    assert "kek-0001" in r.text and "使用中" in r.text
    # other roles cannot post either
    assert browsers(AUDITOR).post(f"/admin/users/{uid}/reset-password").status_code == 403
    # the temporary passwords are not in the log
    dump = audit_dump(rt)
    assert password not in dump and fresh not in dump


# CSRF -----------------------------------------------------------------------------------------


def test_post_without_csrf_is_refused(app: Any, rt: Runtime, browsers: Any) -> None:
    court, admin, auditor = browsers(COURT), browsers(ADMIN), browsers(AUDITOR)
    body = {"case_number": APPLY_CASE, "legal_basis": LEGAL_BASIS, "purpose": PURPOSE,
            "subject.name": SEALED_NAME, "subject.id_number": make_id_number(birth="20080707")}
    r = court.post("/sealed/new", body, csrf=False)
    assert r.status_code == 403 and "表单已过期或来源不明" in r.text
    r = court.post("/sealed/new", {**body, "csrf_token": "0" * 32}, csrf=False)
    assert r.status_code == 403
    r = court.post("/sealed/new", {**body, "csrf_token": admin.csrf}, csrf=False)  # another session's token
    assert r.status_code == 403
    assert run_sql(rt, "SELECT count(*) FROM sealed_requests")[0][0] == 0
    r = admin.post("/admin/users/new", {"username": "x.user", "name": "某", "org_id": "org_x",
                                        "roles[]": "caseworker"}, csrf=False)
    assert r.status_code == 403
    assert run_sql(rt, "SELECT count(*) FROM users WHERE username = 'x.user'")[0][0] == 0
    r = auditor.post("/audit/checkpoints", csrf=False)
    assert r.status_code == 403
    assert run_sql(rt, "SELECT count(*) FROM audit_checkpoints")[0][0] == 0
    # the htmx header works as well as the form field
    r = court.client.post("/sealed/new", data=body, headers={"X-CSRF-Token": court.csrf}, follow_redirects=False)
    assert r.status_code == 303
