"""The case-work pages: households, minors, visits, search and statistics.

Signed in through the sign-in form with the session cookie, on SQLite and
PostgreSQL. Pages go through the services (policy + audit), show Chinese
messages next to each rejected field with what was typed, refuse forms without
the CSRF token, answer other regions' records with the HTML 404 page, and carry
no inline script or style.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import web.casework
from access_control.actions import Action
from access_control.audit import AuditEvent
from archive.models import Household, Minor, MinorCategory, Visit
from runtime import Runtime
from tests.conftest import DEMO_PASSWORD, make_id_number, record_fields, web_login
from web.casework import safe_snippet

HAIZHOU_VILLAGE = "320706001001"
GUANNAN_VILLAGE = "320724001001"


# A small HTML reader: forms' values, error messages, and anything the CSP forbids ---------------


class Page(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.inputs: dict[str, str] = {}
        self.checked: set[tuple[str, str]] = set()
        self.textareas: dict[str, str] = {}
        self.selected: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.links: list[str] = []
        self.hx: list[dict[str, str]] = []
        self.violations: list[str] = []
        self.has_html = False
        self._text_into: tuple[dict[str, str], str] | None = None
        self._select: str | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        for name, value in a.items():
            if name == "style":
                self.violations.append(f"style= on <{tag}>")
            if name.startswith("on") or name.startswith(("hx-on", "data-hx-on")):
                self.violations.append(f"{name}= on <{tag}>")
            if value.strip().lower().startswith(("javascript:", "js:")):
                self.violations.append(f"{name}={value[:20]} on <{tag}>")
        if tag == "html":
            self.has_html = True
        if tag == "style":
            self.violations.append("<style> element")
        if tag == "script" and not a.get("src"):
            self.violations.append("<script> without src")
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if any(k.startswith("hx-") for k in a):
            self.hx.append(a)
        if tag == "input" and "name" in a:
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self.checked.add((a["name"], a.get("value", "")))
            else:
                self.inputs[a["name"]] = a.get("value", "")
        elif tag == "textarea" and "name" in a:
            self.textareas[a["name"]] = ""
            self._text_into = (self.textareas, a["name"])
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select and "selected" in a:
            self.selected[self._select] = a.get("value", "")
        elif tag == "p" and "error" in a.get("class", "").split() and a.get("id", "").startswith("e-"):
            self.errors[a["id"][2:]] = ""
            self._text_into = (self.errors, a["id"][2:])

    def handle_endtag(self, tag: str) -> None:
        if tag in ("textarea", "p"):
            self._text_into = None
        if tag == "select":
            self._select = None

    def handle_data(self, data: str) -> None:
        if self._text_into is not None:
            store, key = self._text_into
            store[key] += data


def clean(r: Any) -> Page:
    """The answer is an HTML page with the CSP and nothing inline for it to forbid."""
    assert r.headers["content-type"].startswith("text/html"), r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    page = Page(r.text)
    assert not page.violations, page.violations
    return page


# Signing in through the form ----------------------------------------------------------------


@pytest.fixture
def sign_in(app: Any) -> Iterator[Callable[[str], TestClient]]:
    opened: list[TestClient] = []

    def open_as(username: str) -> TestClient:
        c = TestClient(app, base_url="https://testserver")
        opened.append(c)
        r = web_login(c, username, follow_redirects=False)
        assert r.status_code == 303, r.text
        assert c.cookies.get("shouhu_session")
        return c

    yield open_as
    for c in opened:
        c.close()


def csrf_of(c: TestClient, path: str = "/households") -> str:
    r = c.get(path)
    assert r.status_code == 200, r.text
    m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert m, "no CSRF token on the page"
    return m.group(1)


def count(rt: Runtime, model: Any) -> int:
    with rt.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def events(rt: Runtime, action: Action, resource_id: str | None = None) -> list[tuple[str, str]]:
    """(actor, outcome) of the audit events of ``action`` (on ``resource_id``)."""
    with rt.db.session() as s:
        q = select(AuditEvent.actor, AuditEvent.outcome).where(AuditEvent.action == action.value)
        if resource_id is not None:
            q = q.where(AuditEvent.resource_id == resource_id)
        return [(a, o) for a, o in s.execute(q.order_by(AuditEvent.seq))]


def household_form(token: str, **overrides: str) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "region_code": HAIZHOU_VILLAGE,
        "address": "幸福路3组12号",
        "notes": "祖母照料，住房简陋",
        "members.0.name": "王建国",
        "members.0.relation": "父亲",
        "members.0.id_number": make_id_number("320706", "19850101"),
        "members.0.situation": "外出务工",
        # row 1 left blank on purpose: blank rows are ignored
        "members.2.name": "李秀英",
        "members.2.relation": "祖母",
        "members.2.phone": "0518-85551234",
    }
    form.update(overrides)
    return form


def minor_form(token: str, household_id: str, **overrides: Any) -> dict[str, Any]:
    form: dict[str, Any] = {
        "csrf_token": token,
        "household_id": household_id,
        "name": "王子涵",
        "id_number": make_id_number("320706", "20150301"),
        "birth_date": "2015-03-01",
        "sex": "male",
        "categories[]": ["3", "5"],
        "cat_found_3": "2024-09-01",
        "cat_found_5": "",
        "school": "幸福村小学",
        "guardian": "李秀英（祖母）",
        "phone": "13800000000",
        "notes": "成绩中等，性格内向",
    }
    form.update(overrides)
    return form


def new_household(c: TestClient, **overrides: str) -> str:
    r = c.post("/households/new", data=household_form(csrf_of(c), **overrides), follow_redirects=False)
    assert r.status_code == 303, r.text
    m = re.fullmatch(r"/households/(hh_[A-Za-z0-9_]+)\?done=saved", r.headers["location"])
    assert m, r.headers["location"]
    return m.group(1)


def new_minor(c: TestClient, household_id: str, **overrides: Any) -> str:
    r = c.post("/minors/new", data=minor_form(csrf_of(c), household_id, **overrides), follow_redirects=False)
    assert r.status_code == 303, r.text
    m = re.fullmatch(r"/minors/(mn_[A-Za-z0-9_]+)\?done=saved", r.headers["location"])
    assert m, r.headers["location"]
    return m.group(1)


# Pages render -------------------------------------------------------------------------------


def test_every_page_renders_for_caseworker_and_supervisor(sign_in: Any, rt: Runtime) -> None:
    cw = sign_in("caseworker.haizhou")
    hid = new_household(cw)
    mid = new_minor(cw, hid)
    rt.indexer.drain()
    sup = sign_in("supervisor.city")

    read_pages = [
        "/households", f"/households?region={HAIZHOU_VILLAGE}", f"/households/{hid}",
        "/minors", "/minors?region=320706&category=3", "/minors?category=", f"/minors/{mid}",
        "/search",
        "/statistics", "/statistics?region=320706", "/statistics?region=320706001000", "/",
    ]
    write_pages = ["/households/new", f"/households/{hid}/edit", f"/minors/new?household_id={hid}",
                   f"/minors/{mid}/edit"]
    for who, c in (("caseworker", cw), ("supervisor", sup)):
        for path in read_pages:
            r = c.get(path)
            assert r.status_code == 200, (who, path, r.status_code, r.text[:300])
            page = clean(r)
            assert page.has_html and "守护" in r.text
            nav = [href for href in page.links if href in ("/households", "/minors", "/search", "/statistics")]
            assert set(nav) == {"/households", "/minors", "/search", "/statistics"}, (who, path, nav)
        for path in write_pages:
            r = c.get(path)
            clean(r)
            if who == "caseworker":
                assert r.status_code == 200, (path, r.text[:300])
                assert 'name="csrf_token"' in r.text
            else:  # supervisors read and report; they do not write case files
                assert r.status_code == 403, (path, r.status_code)
                assert "无权访问" in r.text

    # What each sees on the records' pages.
    cw_home, sup_home = cw.get(f"/households/{hid}").text, sup.get(f"/households/{hid}").text
    assert "王建国" in cw_home and "李秀英" in cw_home and f"/minors/{mid}" in cw_home
    assert f"/households/{hid}/edit" in cw_home and f"/minors/new?household_id={hid}" in cw_home
    assert f"/documents/new?kind=household_file&amp;subject_id={hid}" in cw_home
    assert 'action="/households/' + hid + '/visits"' in cw_home
    assert f"/minors/{mid}" in sup_home and "王建国" in sup_home
    assert "/edit" not in sup_home and "/visits\"" not in sup_home and "kind=household_file" not in sup_home
    cw_minor = cw.get(f"/minors/{mid}").text
    assert f"/documents/new?kind=referral_notice&amp;subject_id={mid}" in cw_minor
    assert f"/households/{hid}" in cw_minor and f"/minors/{mid}/edit" in cw_minor
    assert "2024年9月1日" in cw_minor and "幸福村小学" in cw_minor
    # Lists mask ID numbers; the record's own page shows the number.
    minor_id_number = re.search(r'<dd class="mono">(\d{17}[\dX])</dd>', cw_minor).group(1)  # type: ignore[union-attr]
    assert minor_id_number not in cw.get("/minors").text
    assert minor_id_number[:6] + "********" + minor_id_number[-4:] in cw.get("/minors").text

    # Statistics: the chart, the table, and the inspection report for the supervisor only.
    sup_stats = sup.get("/statistics").text
    assert "<svg" in sup_stats and "海州区" in sup_stats and "灌南县" in sup_stats
    assert "/documents/new?kind=inspection_report&amp;subject_id=320700" in sup_stats
    assert "/statistics?region=320706" in sup_stats
    cw_stats = cw.get("/statistics?region=320706").text
    assert "kind=inspection_report" not in cw_stats and "青山镇" in cw_stats
    assert "/minors?region=320706001000&amp;category=3" in cw_stats
    page = Page(cw.get("/statistics?region=320706001000").text)
    assert page.selected["region"] == "320706001000"


def test_lists_filter_and_page(sign_in: Any, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    cw = sign_in("caseworker.haizhou")
    monkeypatch.setattr(web.casework, "PAGE_SIZE", 2)
    ids = [new_household(cw, address=f"幸福路{i}号") for i in range(3)]
    other = new_household(cw, region_code="320706002001", address="东湖路8号")
    for hid in ids:
        new_minor(cw, hid, **{"id_number": "", "categories[]": ["3"]})
    new_minor(cw, other, **{"id_number": "", "categories[]": ["1"]})

    first = Page(cw.get("/households").text)
    nxt = [href for href in first.links if "cursor=" in href]
    assert len(nxt) == 1
    second = cw.get(nxt[0])
    assert second.status_code == 200
    seen = {h for p in (first, Page(second.text)) for h in p.links if h.startswith("/households/hh_")}
    assert seen == {f"/households/{h}" for h in [*ids, other]}
    assert "/households" in Page(second.text).links  # back to the first page

    village = cw.get(f"/households?region={HAIZHOU_VILLAGE}")
    assert "东湖路8号" not in village.text and Page(village.text).selected["region"] == HAIZHOU_VILLAGE
    village_pages = [village.text]
    while m := re.search(r'href="(/households\?region=\d+&amp;cursor=[^"]+)"', village_pages[-1]):
        village_pages.append(cw.get(m.group(1).replace("&amp;", "&")).text)
    assert sum(t.count('href="/households/hh_') for t in village_pages) == 3

    cat1 = cw.get("/minors?category=1")
    assert cat1.text.count('href="/minors/mn_') == 1 and Page(cat1.text).selected["category"] == "1"
    cat3 = Page(cw.get("/minors?category=3").text)
    assert any("category=3" in h and "cursor=" in h for h in cat3.links)
    assert cw.get("/minors?category=9").status_code == 422
    assert cw.get("/minors?cursor=%%%").status_code == 422


# Creating and editing through the forms -----------------------------------------------------------


def test_household_minor_and_visit_forms_store_records(sign_in: Any, rt: Runtime) -> None:
    cw = sign_in("caseworker.haizhou")
    form = Page(cw.get("/households/new").text)
    assert {f"members.{i}.name" for i in range(6)} <= set(form.inputs)
    options = re.findall(r'<option value="(\d+)"', cw.get("/households/new").text)
    assert HAIZHOU_VILLAGE in options and "320706001000" in options
    assert "320706" not in options and not any(o.startswith("320724") for o in options)

    hid = new_household(cw)
    assert events(rt, Action.HOUSEHOLD_CREATE, hid) == [("caseworker.haizhou", "allowed")]
    with rt.db.session() as s:
        row = s.get(Household, hid)
        assert row is not None and row.region_code == HAIZHOU_VILLAGE and row.version == 1
        assert len(row.subject_hashes) == 1  # one member gave an ID number
        assert b"\xe5\xb9\xb8\xe7\xa6\x8f\xe8\xb7\xaf" not in bytes(row.payload)  # the address is encrypted
    page = cw.get(f"/households/{hid}").text
    assert "幸福路3组12号" in page and "李秀英" in page and "0518-85551234" in page and "祖母" in page
    assert page.count("<tr><td>") == 2  # two members; the blank row was ignored

    new_page = cw.get(f"/minors/new?household_id={hid}")
    assert new_page.status_code == 200 and "幸福路3组12号" in new_page.text
    mid = new_minor(cw, hid)
    with rt.db.session() as s:
        minor = s.get(Minor, mid)
        assert minor is not None and minor.household_id == hid and minor.region_code == HAIZHOU_VILLAGE
        cats = {c.category: c for c in s.scalars(select(MinorCategory).where(MinorCategory.minor_id == mid))}
        assert set(cats) == {3, 5}
        assert cats[3].found_on == date(2024, 9, 1) and cats[5].ended_on is None
    assert f'href="/minors/{mid}"' in cw.get(f"/households/{hid}").text

    # Edit the household: the form comes filled in; a cleared note is cleared.
    edit = Page(cw.get(f"/households/{hid}/edit").text)
    assert edit.inputs["address"] == "幸福路3组12号" and edit.inputs["members.1.name"] == "李秀英"
    assert edit.inputs["expected_version"] == "1"
    data = {k: v for k, v in edit.inputs.items()}
    data.update({"address": "幸福路3组14号", "members.1.phone": "", "members.5.name": "王小军",
                 "members.5.relation": "哥哥"})
    data["notes"] = ""
    r = cw.post(f"/households/{hid}/edit", data=data, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/households/{hid}?done=saved"
    page = cw.get(r.headers["location"]).text
    assert '<p class="notice done-note" role="status">已保存。</p>' in page
    assert "已保存" not in cw.get(f"/households/{hid}").text  # said once, after the save
    assert "幸福路3组14号" in page and "王小军" in page and "0518-85551234" not in page
    assert "住房简陋" not in page
    # The same form again (stale version) is refused with a message, and changes nothing.
    r = cw.post(f"/households/{hid}/edit", data={**data, "address": "别处"})
    assert r.status_code == 409 and "记录已被他人修改" in r.text
    assert Page(r.text).inputs["address"] == "别处" and f"/households/{hid}/edit" in Page(r.text).links
    assert "别处" not in cw.get(f"/households/{hid}").text

    # Edit the minor: category 5 ends today, 2 starts; other fields change.
    edit = Page(cw.get(f"/minors/{mid}/edit").text)
    assert edit.inputs["name"] == "王子涵" and ("categories[]", "3") in edit.checked
    assert ("categories[]", "5") in edit.checked and edit.inputs["cat_found_3"] == "2024-09-01"
    assert Page(cw.get(f"/minors/{mid}/edit").text).selected["sex"] == "male"
    data = {**edit.inputs, "categories[]": ["3", "2"], "cat_found_2": "2025-01-10", "school": "",
            "sex": "male", "notes": "已转介社工跟进"}
    r = cw.post(f"/minors/{mid}/edit", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text
    with rt.db.session() as s:
        cats = {(c.category, c.ended_on is None) for c in
                s.scalars(select(MinorCategory).where(MinorCategory.minor_id == mid))}
        assert cats == {(3, True), (5, False), (2, True)}
        assert s.get(Minor, mid).version == 2  # type: ignore[union-attr]
    page = cw.get(f"/minors/{mid}").text
    assert "已转介社工跟进" in page and "幸福村小学" not in page and "已结束" in page

    # A home visit.
    token = csrf_of(cw, f"/households/{hid}")
    r = cw.post(f"/households/{hid}/visits", follow_redirects=False, data={
        "csrf_token": token, "visited_on": "2025-03-02", "visitor": "海州区民政专干",
        "findings": "儿童状况良好，祖母身体欠佳", "follow_up": "联系村委会协助"})
    assert r.status_code == 303 and r.headers["location"] == f"/households/{hid}?done=saved#visits"
    assert count(rt, Visit) == 1
    page = cw.get(f"/households/{hid}").text
    assert "儿童状况良好，祖母身体欠佳" in page and "2025年3月2日" in page


# Messages next to each field, with what was typed --------------------------------------------------


def test_household_form_messages_keep_typed_values(sign_in: Any, rt: Runtime) -> None:
    cw = sign_in("caseworker.haizhou")
    token = csrf_of(cw)
    bad_id = make_id_number("320706", "19850101")
    bad_id = bad_id[:17] + ("0" if bad_id[17] != "0" else "1")
    long_notes = "很" * 2001
    r = cw.post("/households/new", data=household_form(token, **{
        "notes": long_notes, "members.0.id_number": bad_id, "members.2.name": "",
        "members.3.name": "张三", "members.3.relation": "叔叔", "members.3.phone": "不是电话"}))
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {
        "notes": "长度不能超过2000个字符",
        "members.0.id_number": "身份证号码校验位不正确",
        "members.2.name": "必填字段",  # a row with a relation but no name
        "members.3.phone": "格式不正确",
    }
    assert "提交的数据有误" in r.text
    assert page.inputs["members.0.id_number"] == bad_id and page.inputs["members.0.name"] == "王建国"
    assert page.inputs["members.2.relation"] == "祖母" and page.inputs["members.3.phone"] == "不是电话"
    assert page.textareas["notes"].strip("\n") == long_notes and page.inputs["address"] == "幸福路3组12号"
    assert page.selected["region_code"] == HAIZHOU_VILLAGE
    assert 'aria-invalid="true" aria-describedby="e-notes"' in r.text

    r = cw.post("/households/new", data=household_form(token, region_code="320706009009"))
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"region_code": "未知的行政区划代码"}
    assert page.inputs["address"] == "幸福路3组12号" and page.inputs["members.2.name"] == "李秀英"

    r = cw.post("/households/new", data=household_form(token, region_code="", address=" "))
    assert r.status_code == 422
    assert Page(r.text).errors == {"region_code": "必填字段", "address": "必填字段"}

    # Another county's village: refused by policy (logged), not stored.
    r = cw.post("/households/new", data=household_form(token, region_code=GUANNAN_VILLAGE))
    assert r.status_code == 403
    assert count(rt, Household) == 0

    # The edit form: a cleared address and too-long notes.
    hid = new_household(cw)
    edit = Page(cw.get(f"/households/{hid}/edit").text)
    r = cw.post(f"/households/{hid}/edit", data={**edit.inputs, "address": "", "notes": long_notes,
                                                 "members.0.name": ""})
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"address": "必填字段", "notes": "长度不能超过2000个字符", "members.0.name": "必填字段"}
    assert page.textareas["notes"].strip("\n") == long_notes and page.inputs["members.0.relation"] == "父亲"
    assert "幸福路3组12号" in cw.get(f"/households/{hid}").text


def test_minor_form_messages_keep_typed_values(sign_in: Any, rt: Runtime) -> None:
    cw = sign_in("caseworker.haizhou")
    hid = new_household(cw)
    token = csrf_of(cw)
    good_id = make_id_number("320706", "20150301")
    bad_id = good_id[:17] + ("0" if good_id[17] != "0" else "1")

    r = cw.post("/minors/new", data=minor_form(token, hid, **{
        "name": "", "id_number": bad_id, "categories[]": [], "phone": "12", "notes": "多" * 2001}))
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"name": "必填字段", "id_number": "身份证号码校验位不正确", "categories": "至少需要1项",
                           "phone": "格式不正确", "notes": "长度不能超过2000个字符"}
    assert page.inputs["id_number"] == bad_id and page.inputs["school"] == "幸福村小学"
    assert page.inputs["birth_date"] == "2015-03-01" and page.selected["sex"] == "male"
    assert page.inputs["household_id"] == hid and page.textareas["notes"].strip("\n") == "多" * 2001

    future = (date.today() + timedelta(days=30)).isoformat()
    r = cw.post("/minors/new", data=minor_form(token, hid, **{"birth_date": future, "id_number": ""}))
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"birth_date": "出生日期不能晚于今天"}
    assert page.inputs["birth_date"] == future and page.inputs["name"] == "王子涵"
    assert ("categories[]", "3") in page.checked and ("categories[]", "5") in page.checked
    assert page.inputs["cat_found_3"] == "2024-09-01"

    r = cw.post("/minors/new", data=minor_form(token, hid, **{"birth_date": "2016-03-01", "id_number": good_id}))
    assert r.status_code == 422
    assert Page(r.text).errors == {"id_number": "身份证号码中的出生日期与出生日期不一致"}

    r = cw.post("/minors/new", data=minor_form(token, hid, **{"cat_found_3": "2024-13-01", "sex": "other"}))
    assert r.status_code == 422
    page = Page(r.text)
    assert page.errors == {"cat_found_3": "日期格式应为 YYYY-MM-DD", "sex": "取值应为：'male'、'female'"}

    r = cw.post("/minors/new", data=minor_form(token, "hh_nonexistent"))
    assert r.status_code == 422 and "未找到所属家庭档案" in r.text
    assert count(rt, Minor) == 0

    # A duplicate ID number: 409 next to the field, with a link to the existing record.
    mid = new_minor(cw, hid, id_number=good_id)
    r = cw.post("/minors/new", data=minor_form(token, hid, id_number=good_id, name="王二"))
    assert r.status_code == 409
    page = clean(r)
    assert page.errors == {"id_number": "该身份证号码已登记。"} and page.inputs["name"] == "王二"
    assert f"/minors/{mid}" in page.links
    assert count(rt, Minor) == 1
    # The refused create is in the log as an error, like the API's.
    assert events(rt, Action.MINOR_CREATE)[-1] == ("caseworker.haizhou", "error")

    # The edit form.
    edit = Page(cw.get(f"/minors/{mid}/edit").text)
    data = {**edit.inputs, "sex": "male", "categories[]": ["3"], "name": "", "birth_date": future}
    r = cw.post(f"/minors/{mid}/edit", data=data)
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"name": "必填字段"}  # the schema first, then the cross-field checks
    r = cw.post(f"/minors/{mid}/edit", data={**data, "name": "王子晗", "id_number": ""})
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"birth_date": "出生日期不能晚于今天"} and page.inputs["name"] == "王子晗"
    r = cw.post(f"/minors/{mid}/edit", data={**data, "name": "王子晗", "categories[]": []})
    assert r.status_code == 422 and Page(r.text).errors["categories"] == "至少需要1项"
    assert "王子涵" in cw.get(f"/minors/{mid}").text


def test_visit_form_messages_keep_typed_values(sign_in: Any, rt: Runtime) -> None:
    cw = sign_in("caseworker.haizhou")
    hid = new_household(cw)
    token = csrf_of(cw, f"/households/{hid}")
    r = cw.post(f"/households/{hid}/visits", data={"csrf_token": token, "visited_on": "2025-03-02",
                                                   "visitor": "张专干", "findings": " "})
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"findings": "必填字段"} and page.inputs["visitor"] == "张专干"
    assert "王建国" in r.text  # the household page around the form
    future = (date.today() + timedelta(days=3)).isoformat()
    r = cw.post(f"/households/{hid}/visits", data={"csrf_token": token, "visited_on": future,
                                                   "visitor": "张专干", "findings": "情况良好"})
    assert r.status_code == 422
    page = clean(r)
    assert page.errors == {"visited_on": "走访日期不能晚于今天"}
    assert page.textareas["findings"].strip("\n") == "情况良好" and page.inputs["visited_on"] == future
    assert count(rt, Visit) == 0


# Jurisdiction, CSRF ---------------------------------------------------------------------------------


def test_other_regions_records_are_the_html_404_page(sign_in: Any, rt: Runtime) -> None:
    guannan = sign_in("caseworker.guannan")
    hid = new_household(guannan, region_code=GUANNAN_VILLAGE, **{"members.0.id_number": ""})
    mid = new_minor(guannan, hid, id_number="")
    haizhou = sign_in("caseworker.haizhou")
    for path in (f"/households/{hid}", f"/households/{hid}/edit", f"/minors/{mid}", f"/minors/{mid}/edit",
                 f"/minors/new?household_id={hid}", "/households/hh_does_not_exist", "/minors?region=320724",
                 "/households?region=320724001000", "/statistics?region=320724"):
        r = haizhou.get(path)
        assert r.status_code == 404, (path, r.status_code)
        page = clean(r)
        assert page.has_html and "未找到" in r.text and "记录不存在或无权查看" in r.text
        assert "幸福路3组12号" not in r.text and "王子涵" not in r.text
    # Each look was logged as a refusal.
    assert ("caseworker.haizhou", "denied") in events(rt, Action.HOUSEHOLD_READ, hid)
    assert ("caseworker.haizhou", "denied") in events(rt, Action.MINOR_READ, mid)
    token = csrf_of(haizhou)
    r = haizhou.post(f"/households/{hid}/visits", data={"csrf_token": token, "visited_on": "2025-01-02",
                                                        "visitor": "张", "findings": "x"})
    assert r.status_code == 404 and "未找到" in r.text
    r = haizhou.post(f"/households/{hid}/edit", data={"csrf_token": token, "address": "改"})
    assert r.status_code == 404
    assert count(rt, Visit) == 0
    assert "幸福路3组12号" in guannan.get(f"/households/{hid}").text
    # The lists hold only one's own region.
    assert f"/households/{hid}" not in haizhou.get("/households").text
    assert f"/minors/{mid}" not in haizhou.get("/minors").text


def test_posts_without_the_csrf_token_are_refused(sign_in: Any, rt: Runtime) -> None:
    cw = sign_in("caseworker.haizhou")
    hid = new_household(cw)
    mid = new_minor(cw, hid)
    before = count(rt, Household), count(rt, Minor), count(rt, Visit)
    token = csrf_of(cw)
    form = household_form(token)
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("/households/new", {k: v for k, v in form.items() if k != "csrf_token"}),
        ("/households/new", {**form, "csrf_token": "0" * 32}),
        (f"/households/{hid}/edit", {"address": "被篡改", "expected_version": "1"}),
        ("/minors/new", {k: v for k, v in minor_form("", hid).items() if k != "csrf_token"}),
        (f"/minors/{mid}/edit", {"name": "被篡改", "birth_date": "2015-03-01", "sex": "male", "categories[]": "3"}),
        (f"/households/{hid}/visits", {"visited_on": "2025-01-02", "visitor": "张", "findings": "x"}),
    ]
    for path, data in attempts:
        r = cw.post(path, data=data, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
        page = clean(r)
        assert page.has_html and "表单已过期或来源不明" in r.text
    assert (count(rt, Household), count(rt, Minor), count(rt, Visit)) == before
    assert "被篡改" not in cw.get(f"/households/{hid}").text + cw.get(f"/minors/{mid}").text
    # Another session's token does not do either.
    other = sign_in("caseworker.haizhou")
    r = other.post("/households/new", data=household_form(token), follow_redirects=False)
    assert r.status_code == 403 and count(rt, Household) == before[0]
    # Signed out, a form post goes to the sign-in page and stores nothing.
    anon = TestClient(cw.app, base_url="https://testserver")
    r = anon.post("/households/new", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    anon.close()
    assert count(rt, Household) == before[0]


def test_sign_in_form_needs_its_csrf_token_and_stays_on_this_site(app: Any) -> None:
    c = TestClient(app, base_url="https://testserver")
    try:
        # Without the form's token, or with a token that belongs to another browser's cookie: refused.
        r = c.post("/login", data={"username": "caseworker.haizhou", "password": DEMO_PASSWORD}, follow_redirects=False)
        assert r.status_code == 403 and "shouhu_session" not in c.cookies
        assert "登录页面已过期" in r.text and 'value="caseworker.haizhou"' in r.text
        other = TestClient(app, base_url="https://testserver")
        token = re.search(r'name="csrf_token" value="([^"]+)"', other.get("/login").text).group(1)  # type: ignore[union-attr]
        other.close()
        c.get("/login")  # this browser's own cookie, but the other browser's token
        r = c.post("/login", data={"username": "caseworker.haizhou", "password": DEMO_PASSWORD, "csrf_token": token},
                   follow_redirects=False)
        assert r.status_code == 403 and "shouhu_session" not in c.cookies
        cookie = r.headers["set-cookie"]
        assert "shouhu_login=" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()

        # After signing in, only a path on this site; query values only where id-shaped.
        for typed, lands in (("/\\evil.example/x", "/"), ("//evil.example", "/"), ("https://evil.example/", "/"),
                             ("/\t/evil.example", "/"),
                             ("/minors?region=320706&category=3", "/minors?region=320706&category=3"),
                             ("/search?q=王子涵", "/search"), ("/minors?household_id=320706201411297374", "/minors")):
            c.cookies.clear()
            r = web_login(c, "caseworker.haizhou", next=typed, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == lands, (typed, r.headers["location"])

        # Sent to sign in: the address to come back to carries no search term or ID number.
        c.cookies.clear()
        r = c.get("/minors", params={"region": "320706", "household_id": "320706201411297374"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?next=/minors%3Fregion%3D320706"
        r = c.get("/login", params={"next": "/\\evil.example"})
        assert 'name="next" value="/"' in r.text
    finally:
        c.close()


# Search -------------------------------------------------------------------------------------------


def test_search_full_page_and_htmx_results(sign_in: Any, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    cw = sign_in("caseworker.haizhou")
    hid = new_household(cw, address="<script>alert(1)</script>幸福路5号", **{"members.0.name": "王<b>建国"})
    mid = new_minor(cw, hid)
    new_minor(cw, hid, name="王子轩", id_number="")
    rt.indexer.drain()

    page = cw.get("/search")
    form = clean(page)
    hx = next(a for a in form.hx if a.get("hx-post") == "/search/results")
    assert hx["hx-target"] == "#results" and "hx-push-url" not in hx
    assert 'action="/search"' in page.text and 'method="post"' in page.text
    token = form.inputs["csrf_token"]

    def search(path: str = "/search", htmx: bool = False, **fields: str) -> Any:
        return cw.post(path, data={"csrf_token": token, **fields}, headers={"HX-Request": "true"} if htmx else {})

    # Search terms never travel in a URL: a query string is ignored, and no answer names one.
    r = cw.get("/search", params={"q": "幸福路"})
    assert r.status_code == 200 and "<mark>" not in r.text and "共找到" not in r.text
    assert cw.post("/search", data={"q": "幸福路"}).status_code == 403  # no CSRF token

    # Without JavaScript: the whole page, with marked snippets.
    r = search(q="幸福路")
    assert r.status_code == 200
    clean(r)
    assert f'href="/households/{hid}"' in r.text and "<mark>幸福路</mark>" in r.text
    assert "<script>alert" not in r.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in r.text
    assert Page(r.text).inputs["q"] == "幸福路"
    assert "幸福路" not in r.headers.get("location", "") and "HX-Push-Url" not in r.headers

    r = search(q="王子涵", kind="minor", category="3")
    assert f'href="/minors/{mid}"' in r.text and "<mark>" in r.text
    sel = Page(r.text).selected
    assert sel["kind"] == "minor" and sel["category"] == "3"
    r = search(q="王子涵", kind="household")
    assert f'href="/minors/{mid}"' not in r.text

    # With htmx: the results alone, and nothing pushed into the address bar.
    r = search("/search/results", htmx=True, q="王子涵")
    assert r.status_code == 200
    frag = clean(r)
    assert not frag.has_html and f'href="/minors/{mid}"' in r.text
    assert "HX-Push-Url" not in r.headers
    # The same post without htmx is the whole page.
    full = search("/search/results", q="王子涵")
    assert Page(full.text).has_html and f'href="/minors/{mid}"' in full.text

    # Pages of hits: small forms that post the query again with the cursor, by htmx or plainly.
    monkeypatch.setattr(web.casework, "PAGE_SIZE", 1)
    r = search("/search/results", htmx=True, q="王子")
    frag = clean(r)
    nxt = [a for a in frag.hx if a.get("hx-post") == "/search/results"]
    assert nxt and nxt[0]["hx-target"] == "#results"
    cursor = re.search(r'name="cursor" value="([^"]+)"', r.text)
    assert cursor and 'name="q" value="王子"' in r.text
    r2 = search(q="王子", cursor=cursor.group(1))
    assert r2.status_code == 200 and "第一页" in r2.text
    assert {h for h in Page(r2.text).links if h.startswith("/minors/")} != \
        {h for h in Page(r.text).links if h.startswith("/minors/")}

    # Messages: an empty query, an unknown kind.
    r = search(q=" ")
    assert r.status_code == 422 and "请输入要查找的内容" in r.text
    r = search("/search/results", htmx=True, q="王", kind="nonsense")
    assert r.status_code == 200 and "未知的种类" in r.text

    # Other regions' records are not found.
    guannan = sign_in("caseworker.guannan")
    gid = new_household(guannan, region_code=GUANNAN_VILLAGE, address="灌南独有路1号", **{"members.0.id_number": ""})
    rt.indexer.drain()
    g_token = csrf_of(guannan, "/search")
    assert f"/households/{gid}" in guannan.post("/search", data={"csrf_token": g_token, "q": "灌南独有路"}).text
    assert f"/households/{gid}" not in search(q="灌南独有路").text


def test_snippets_pass_only_text_and_mark() -> None:
    assert str(safe_snippet("…王<mark>子涵</mark> &lt;b&gt;")) == "…王<mark>子涵</mark> &lt;b&gt;"
    assert str(safe_snippet("<mark>a</mark><script>x</script>")) == \
        "&lt;mark&gt;a&lt;/mark&gt;&lt;script&gt;x&lt;/script&gt;"
    assert str(safe_snippet('<mark onclick="x">a</mark>')).startswith("&lt;mark onclick=")
    assert str(safe_snippet("<mark>a")) == "&lt;mark&gt;a"


def test_today_is_the_local_date(sign_in: Any, rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """At 04:00 in China (20:00 UTC the day before), today's visit is not in the future."""
    utc_day = datetime.now(UTC).date() - timedelta(days=2)
    monkeypatch.setattr(rt, "clock", lambda: datetime.combine(utc_day, time(20, 0), UTC))
    local_day = (utc_day + timedelta(days=1)).isoformat()
    cw = sign_in("caseworker.haizhou")
    hid = new_household(cw)
    page = Page(cw.get(f"/households/{hid}").text)
    assert page.inputs["visited_on"] == local_day
    r = cw.post(f"/households/{hid}/visits", follow_redirects=False, data={
        "csrf_token": csrf_of(cw), "visited_on": local_day, "visitor": "张专干", "findings": "凌晨走访"})
    assert r.status_code == 303, r.text
    mid = new_minor(cw, hid, **{"cat_found_5": ""})
    with rt.db.session() as s:
        found = s.scalar(select(MinorCategory.found_on).where(MinorCategory.minor_id == mid,
                                                              MinorCategory.category == 5))
    assert found is not None and found.isoformat() == local_day


# The pages' decisions in the access log ------------------------------------------------------------


def request_events(rt: Runtime, request_id: str) -> list[tuple[str, str, str]]:
    with rt.db.session() as s:
        q = select(AuditEvent.action, AuditEvent.resource_id, AuditEvent.outcome).where(
            AuditEvent.request_id == request_id).order_by(AuditEvent.seq)
        return [(a, r, o) for a, r, o in s.execute(q)]


EMPTY_FORMS = {"/search", "/households/new"}


def test_every_page_read_leaves_one_event_per_decision(sign_in: Any, rt: Runtime, client: Any, tokens: Any) -> None:
    """Every page a role opens, on records inside and outside its region: each of the page's decisions
    is in the log exactly once, under the page's request id; a page about a record has that record's
    decision (allowed, or denied for a 404), and a 404 page has nothing else."""
    cw = sign_in("caseworker.haizhou")
    hid = new_household(cw)
    mid = new_minor(cw, hid)
    r = client.post("/api/v1/documents", headers=tokens["caseworker.haizhou"], json={
        "kind": "referral_notice", "subject_id": mid,
        "fields": record_fields("referral_notice")})
    assert r.status_code == 201, r.text
    doc = r.json()["id"]
    rt.indexer.drain()
    record_pages = [f"/households/{hid}", f"/households/{hid}/edit", f"/minors/{mid}", f"/minors/{mid}/edit",
                    f"/documents/{doc}", f"/documents/{doc}/pdf", f"/minors/new?household_id={hid}",
                    f"/documents/new?kind=referral_notice&subject_id={mid}"]
    other_pages = ["/", "/households", "/minors", "/documents", "/statistics", "/search", "/households/new"]
    checked = 0
    for username in ("caseworker.haizhou", "village.haizhou", "supervisor.city", "caseworker.guannan",
                     "court.haizhou", "auditor.city", "admin"):
        c = sign_in(username)
        for path in record_pages + other_pages:
            r = c.get(path, follow_redirects=False)
            if r.status_code == 303:  # a role without these pages is sent home, deciding nothing
                continue
            events = request_events(rt, r.headers["x-request-id"])
            decisions = [(a, rid) for a, rid, _ in events]
            if path in EMPTY_FORMS and r.status_code == 200:
                assert events == [], (username, path, events)  # an empty form reads nothing
                continue
            assert events, (username, path, r.status_code)
            assert len(set(decisions)) == len(decisions), (username, path, events)
            record = next((p for p in (hid, mid, doc) if p in path), None)
            if r.status_code in (404, 422):  # 422: a prefill's subject outside the region, as if unknown
                assert len(events) == 1 and events[0][2] == "denied", (username, path, events)
            elif r.status_code == 403:
                assert [o for _, _, o in events] == ["denied"], (username, path, events)
            else:
                assert r.status_code == 200, (username, path, r.status_code)
                assert all(o == "allowed" for _, _, o in events), (username, path, events)
                if record and "/new" not in path:
                    assert any(rid == record for _, rid, _ in events), (username, path, events)
            checked += 1
    assert checked > 60, checked
