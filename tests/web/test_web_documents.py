"""The documents pages: a form generated from each kind's schema, preview, issue, download,
correction, Chinese messages next to invalid fields, jurisdiction and CSRF.

Everything goes through the pages with a signed-in browser session (HTTPS test
client, so the Secure cookie is sent back). Rendering is real; the whole file
renders five PDFs per database.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from datetime import date
from html.parser import HTMLParser
from typing import Annotated, Any, Literal

import pypdf
import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field

import web.documents as web_documents
from archive.demo import HAIZHOU_VILLAGE
from doc_templates.kinds import KINDS
from main import create_app
from runtime import Runtime
from tests.conftest import household_body, login, minor_body, record_fields, run_sql, web_login
from web.app import CSP
from web.documents import FormView, form_spec, with_unchecked

GUANNAN_VILLAGE = "320724001001"
ISSUER = {
    "household_file": "caseworker.haizhou", "minor_file": "caseworker.haizhou",
    "referral_notice": "caseworker.haizhou", "guardianship_designation": "caseworker.haizhou",
    "rescue_escort_record": "caseworker.haizhou", "dropout_notice": "school.haizhou",
    "sealed_query_reply": "custodian.city", "inspection_report": "supervisor.city",
    "access_audit_report": "auditor.city",
}
# Kinds a user issues besides those above (a school also writes referral letters to civil affairs).
ALSO_ISSUES = {"school.haizhou": ["referral_notice"]}


# helpers ------------------------------------------------------------------------------------


@pytest.fixture
def browser(app: Any) -> Iterator[TestClient]:
    with TestClient(app, base_url="https://testserver") as c:
        yield c


def sign_in(c: TestClient, username: str) -> None:
    c.cookies.clear()
    r = web_login(c, username, follow_redirects=False)
    assert r.status_code == 303, r.text
    assert "shouhu_session" in c.cookies


def assert_clean_page(r: Any) -> None:
    """An HTML page under the strict CSP: no inline script, style or event handler."""
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    html = r.text
    for tag in re.findall(r"<script\b[^>]*>", html, flags=re.I):
        assert re.search(r"\bsrc=\"/static/", tag), tag
    assert not re.search(r"<script\b[^>]*>\s*[^<\s]", html, flags=re.I), "inline script"
    assert not re.search(r"<style\b", html, flags=re.I)
    assert not re.search(r"\sstyle\s*=", html, flags=re.I)
    assert not re.search(r"\son[a-z]+\s*=", html, flags=re.I)
    assert "hx-on" not in html and "javascript:" not in html.lower() and "js:" not in html


class Forms(HTMLParser):
    """The successful controls of each form on a page, as a browser would submit them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.forms: dict[str, dict[str, str]] = {}
        self._form: dict[str, str] | None = None
        self._textarea: str | None = None
        self._select: str | None = None
        self._first_option: str | None = None
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and a.get("method") == "post":
            self._form = self.forms.setdefault(a["action"], {})
        if self._form is None:
            return
        if tag == "input" and "name" in a:
            if a.get("type") == "checkbox":
                if "checked" in a:
                    self._form[a["name"]] = a.get("value", "on")
            else:
                self._form[a["name"]] = a.get("value", "")
        elif tag == "textarea":
            self._textarea = a["name"]
            self._form[a["name"]] = ""
        elif tag == "select":
            self._select = a["name"]
            self._form[a["name"]] = ""
        elif tag == "option" and self._select is not None and "selected" in a:
            self._form[self._select] = a.get("value", "")

    def handle_data(self, data: str) -> None:
        if self._form is not None and self._textarea is not None:
            self._form[self._textarea] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None


def form_of(html: str, action: str) -> dict[str, str]:
    forms = Forms(html).forms
    assert action in forms, sorted(forms)
    return dict(forms[action])


def error_at(html: str, name: str) -> str:
    """The message shown next to the control ``name``."""
    m = re.search(rf'<p class="error" id="e-{re.escape(name)}">([^<]*)</p>', html)
    assert m, f"no message next to {name}"
    return m.group(1)


def flat(fields: dict[str, Any], prefix: str = "fields") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in fields.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(flat(value, name))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                out.update(flat(v, f"{name}.{i}") if isinstance(v, dict) else {f"{name}.{i}": str(v)})
        elif value is not None:
            out[name] = str(value)
    return out


def titles(schema: type[BaseModel]) -> set[str]:
    out = set()
    for info in schema.model_fields.values():
        out.add(str(info.title))
        for arg in _models(info.annotation):
            out |= titles(arg)
    return out


def _models(tp: Any) -> list[type[BaseModel]]:
    args = getattr(tp, "__args__", ())
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def make_minor(c: TestClient, username: str, region: str, name: str = "测试童") -> str:
    headers = login(c, username)
    r = c.post("/api/v1/households", json=household_body(region), headers=headers)
    assert r.status_code == 201, r.text
    r = c.post("/api/v1/minors", json=minor_body(r.json()["id"], name=name), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def pdf_text(data: bytes) -> str:
    return "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)


def count(rt: Any, table: str) -> int:
    return int(run_sql(rt, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 - fixed table names


REFERRAL = {
    "recipient": "连云港市海州区教育局",
    "situation": "该生父母长期在外务工，由祖母照料，近期多次未按时到校。",
    "fields.requests.0": "请学校安排教师开展一对一学业帮扶。",
    "category": "3",
    "reply_by": "2099-12-31",  # after any day the form's 发现日期 may be filled with
    "contact": "张晓东",
    "contact_phone": "0518-85800000",
}


def fill_referral(form: dict[str, str], **changes: str) -> dict[str, str]:
    data = dict(form)
    for key, value in {**REFERRAL, **changes}.items():
        data[key if key.startswith("fields.") else f"fields.{key}"] = value
    return data


# 1. the form is generated from each kind's schema ---------------------------------------------------


def test_schema_form_renders_for_every_kind_for_its_issuer(browser, rt):
    by_user: dict[str, list[str]] = {}
    for kind, user in ISSUER.items():
        by_user.setdefault(user, []).append(kind)
    assert set(ISSUER) == set(KINDS)
    for user, kinds in by_user.items():
        sign_in(browser, user)
        r = browser.get("/documents/new")
        assert r.status_code == 200
        assert_clean_page(r)
        for name, kind in KINDS.items():  # the chooser offers exactly the kinds this user's org issues
            offered = name in kinds or name in ALSO_ISSUES.get(user, [])
            assert (f"/documents/new?kind={name}\"" in r.text) == offered, (user, name)
        for name in kinds:
            kind = KINDS[name]
            r = browser.get(f"/documents/new?kind={name}")
            assert r.status_code == 200, (name, r.text[:500])
            assert_clean_page(r)
            for title in titles(kind.schema):  # labels are the fields' Chinese titles
                assert f">{title}<" in r.text, (name, title)
            form = form_of(r.text, "/documents/new")
            assert form["kind"] == name and form["csrf_token"]
            for spec in form_spec(kind.schema):
                if spec.widget in ("list", "rows"):
                    assert any(k.startswith(f"fields.{spec.name}.0") for k in form), (name, spec.name)
                else:
                    assert f"fields.{spec.name}" in form, (name, spec.name)
            # the preview button posts the same form to a new tab
            assert re.search(r'<button type="submit" formaction="/documents/preview" formtarget="_blank">', r.text)

    sign_in(browser, "caseworker.haizhou")
    html = browser.get("/documents/new?kind=referral_notice").text
    assert re.search(r'<textarea id="f-fields.situation" name="fields.situation" rows="8" maxlength="1500" required',
                     html)
    assert '<input id="f-fields.found_on" name="fields.found_on" type="date"' in html
    assert re.search(r'<input id="f-fields.minor_age" name="fields.minor_age" type="number" value="" min="0" '
                     r'max="17" required', html)
    assert re.search(r'<select id="f-fields.minor_sex" name="fields.minor_sex" required>\s*<option value="">请选择'
                     r'</option>\s*<option value="男">男</option><option value="女">女</option>', html)
    # list[str]: existing values + 2 blank; only the first is required (min_length=1)
    assert 'name="fields.requests.1"' in html and 'name="fields.requests.2"' not in html
    assert re.search(r'name="fields.requests.0"[^>]*required', html)
    assert not re.search(r'name="fields.requests.1"[^>]*required', html)
    assert not re.search(r'name="fields.remarks"[^>]*required', html)  # optional
    # list[BaseModel]: repeated fieldsets; a category is a select naming the five categories
    html = browser.get("/documents/new?kind=household_file").text
    assert 'name="fields.members.0.name"' in html and 'name="fields.minors.0.birth_date" type="date"' in html
    assert re.search(r'name="fields.members.0.name"[^>]*required', html)  # min_length=1: one row needed
    assert re.search(r'name="fields.members.1.name"[^>]*maxlength="32">', html)  # and a blank one, optional
    assert 'name="fields.members.2.name"' not in html
    assert re.search(r'<select id="f-fields.minors.0.categories.0"[^>]*>\s*<option value="">请选择</option>\s*'
                     r'<option value="1">1\. 流浪乞讨', html)
    # the options of a Literal are named by the field's description
    sign_in(browser, "custodian.city")
    html = browser.get("/documents/new?kind=sealed_query_reply").text
    assert '<option value="no_record">未发现犯罪记录</option>' in html
    sign_in(browser, "caseworker.haizhou")
    # defaults of the schema are filled in; the example only on request
    html = browser.get("/documents/new?kind=guardianship_designation").text
    assert '<option value="close_relative" selected>' in html and "王一诺" not in html
    # a kind this role may not issue
    r = browser.get("/documents/new?kind=inspection_report")
    assert r.status_code == 403 and "无权访问" in r.text
    assert run_sql(rt, "SELECT actor, outcome FROM audit_events WHERE action = 'documents:fields:prefill' "
                       "ORDER BY seq DESC LIMIT 1") == [("caseworker.haizhou", "denied")]
    # a role that issues nothing and reads no documents
    sign_in(browser, "court.haizhou")
    assert browser.get("/documents/new").status_code == 403
    assert browser.get("/documents").status_code == 403

    # the inspection report: statistics by child region, filled in from the archive
    sign_in(browser, "supervisor.city")
    minor_id = make_minor(browser, "caseworker.haizhou", HAIZHOU_VILLAGE)
    r = browser.get("/documents/new?kind=inspection_report&subject_id=320700")
    form = form_of(r.text, "/documents/new")
    regions = [form[f"fields.statistics.{i}.region"] for i in range(6)]
    assert regions == ["连云区", "海州区", "赣榆区", "东海县", "灌云县", "灌南县"]
    assert [form[f"fields.statistics.1.counts.{i}"] for i in range(5)] == ["0", "0", "1", "0", "0"]
    assert ">流浪乞讨等<" in r.text  # the five counts are labelled by category
    r = browser.get("/documents/new?kind=inspection_report&subject_id=320706")
    form = form_of(r.text, "/documents/new")
    assert form["subject_id"] == "320706"
    assert form["fields.statistics.0.region"] == rt.regions.get("320706001000").name
    # ... and issued through the page: the supervisor's office numbers it, the PDF carries the counts
    example = flat(KINDS["inspection_report"].example)
    filled = {k: v if v or k not in example else example[k] for k, v in form.items()}
    filled.update({k: v for k, v in example.items() if k not in filled and ".statistics." not in k})
    r = browser.post("/documents/new", data=filled, follow_redirects=False)
    assert r.status_code == 303, r.text[:3000]
    report_id = re.fullmatch(r"/documents/(doc_[^?/]+)\?issued=1", r.headers["location"]).group(1)  # type: ignore[union-attr]
    (report_number,), = run_sql(rt, "SELECT doc_number FROM documents WHERE id = :id", id=report_id)
    text = pdf_text(browser.get(f"/documents/{report_id}/pdf").content)
    assert report_number in text and "督查情况的通报" in text and rt.regions.get("320706001000").name in text

    # rows and nested lists filled in from the records
    sign_in(browser, "caseworker.haizhou")
    (household_id,), = run_sql(rt, "SELECT household_id FROM minors WHERE id = :id", id=minor_id)
    form = form_of(browser.get(f"/documents/new?kind=household_file&subject_id={household_id}").text,
                   "/documents/new")
    assert form["fields.members.0.name"] == "测试父" and form["fields.members.0.relation"] == "父亲"
    assert form["fields.minors.0.name"] == "测试童" and form["fields.minors.0.birth_date"] == "2015-03-01"
    assert form["fields.minors.0.categories.0"] == "3" and form["fields.minors.0.categories.1"] == ""
    form = form_of(browser.get(f"/documents/new?kind=minor_file&subject_id={minor_id}").text, "/documents/new")
    assert form["fields.categories.0.category"] == "3" and re.fullmatch(r"\d{4}-\d\d-\d\d",
                                                                          form["fields.categories.0.found_on"])
    assert form["fields.sex"] == "男" and form["fields.categories.1.category"] == ""


def test_a_form_sent_with_fields_left_to_fill_comes_back_with_them_marked(browser, rt):
    """The household file's form, filled in from the record, still reads （待填写） where the record
    cannot tell; sent as it is, the page comes back (422) with a message at each such field, what was
    typed kept, and nothing issued."""
    sign_in(browser, "caseworker.haizhou")
    minor_id = make_minor(browser, "caseworker.haizhou", HAIZHOU_VILLAGE)
    (household_id,), = run_sql(rt, "SELECT household_id FROM minors WHERE id = :id", id=minor_id)
    form = form_of(browser.get(f"/documents/new?kind=household_file&subject_id={household_id}").text,
                   "/documents/new")
    assert form["fields.assistance"] == "（待填写）" and form["fields.village_opinion"] == "（待填写）"
    form["fields.assistance"] = "低保"
    r = browser.post("/documents/new", data=form, follow_redirects=False)
    assert r.status_code == 422, r.text[:2000]
    assert "尚未填写" in error_at(r.text, "fields.village_opinion")
    assert form_of(r.text, "/documents/new")["fields.assistance"] == "低保"
    assert count(rt, "documents") == 0


@pytest.fixture
def demo_browser(rt: Any) -> Iterator[TestClient]:
    """The pages of the same archive served with SHOUHU_DEMO_MODE=true."""
    demo_rt = Runtime.open(rt.settings.model_copy(update={"demo_mode": True}))
    try:
        with TestClient(create_app(runtime=demo_rt), base_url="https://testserver") as c:
            yield c
    finally:
        demo_rt.close()


def test_sample_facts_are_offered_only_in_a_demonstration(browser, demo_browser):
    """测试用：填入示例 fills a real child's letter with invented facts: off by default (no link, and
    ``example=1`` refused naming it), on with SHOUHU_DEMO_MODE=true."""
    sign_in(browser, "caseworker.haizhou")
    html = browser.get("/documents/new?kind=guardianship_designation").text
    assert "填入示例" not in html and "example=1" not in html
    r = browser.get("/documents/new?kind=guardianship_designation&example=1")
    assert r.status_code == 422 and "示例内容仅在演示环境中可用" in r.text and "王一诺" not in r.text
    sign_in(demo_browser, "caseworker.haizhou")
    html = demo_browser.get("/documents/new?kind=guardianship_designation").text
    assert "填入示例" in html and "example=1" in html
    html = demo_browser.get("/documents/new?kind=guardianship_designation&example=1").text
    assert form_of(html, "/documents/new")["fields.minor_name"] == "王一诺"


class Probe(BaseModel):
    urgent: bool = Field(False, title="紧急")
    level: Literal["a", "b"] = Field(title="级别", description="a：一般；b：重要")
    due: date | None = Field(None, title="期限")
    notes: list[Annotated[str, Field(max_length=20)]] = Field(default_factory=list, max_length=3, title="备注")


def test_form_spec_covers_every_field_type():
    specs = {s.name: s for s in form_spec(Probe)}
    assert [(s.widget, s.input_type, s.required) for s in specs.values()] == [
        ("checkbox", "text", False), ("select", "text", True), ("date", "date", False), ("list", "text", False)]
    assert specs["level"].options == [("a", "一般"), ("b", "重要")]
    view = FormView({"notes.1": "太长了", "other": "别处的错误"})
    widgets = view.widgets(list(specs.values()), {"urgent": "true", "notes": ["x", "y"]})
    assert widgets[0]["checked"] is True
    assert [i["name"] for i in widgets[3]["items"]] == ["fields.notes.0", "fields.notes.1", "fields.notes.2"]
    assert widgets[3]["items"][1]["error"] == "太长了" and view.leftover() == {"other": "别处的错误"}
    assert with_unchecked(list(specs.values()), {"level": "a"}) == {"level": "a", "urgent": False}


# 2. referral notice: prefill, preview, issue, download, correct --------------------------------------


def test_caseworker_previews_issues_downloads_and_corrects_a_referral(browser, rt):
    minor_id = make_minor(browser, "caseworker.haizhou", HAIZHOU_VILLAGE, name="李小明")
    sign_in(browser, "caseworker.haizhou")

    r = browser.get(f"/documents/new?kind=referral_notice&subject_id={minor_id}")
    assert r.status_code == 200
    assert_clean_page(r)
    form = form_of(r.text, "/documents/new")
    assert form["subject_id"] == minor_id
    assert form["fields.minor_name"] == "李小明" and form["fields.minor_sex"] == "男"
    assert form["fields.minor_address"] == "3组12号" and form["fields.minor_age"].isdigit()
    data = fill_referral(form)

    # preview: a draft PDF, nothing stored
    r = browser.post("/documents/preview", data=data)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert "草稿" in pdf_text(r.content)
    assert count(rt, "documents") == 0
    assert run_sql(rt, "SELECT actor, outcome FROM audit_events WHERE action = 'documents:document:preview'") == [
        ("caseworker.haizhou", "allowed")]

    # issue: redirected to the document's page
    r = browser.post("/documents/new", data=data, follow_redirects=False)
    assert r.status_code == 303, r.text[:2000]
    m = re.fullmatch(r"/documents/(doc_[^?/]+)\?issued=1", r.headers["location"])
    assert m, r.headers["location"]
    doc_id = m.group(1)
    (number, sha, code), = run_sql(rt, "SELECT d.doc_number, v.sha256, v.verification_code FROM documents d "
                                       "JOIN document_versions v ON v.document_id = d.id WHERE d.id = :id", id=doc_id)
    assert number.startswith("海民发〔") and number.endswith("〕1号")

    r = browser.get(r.headers["location"])
    assert r.status_code == 200
    assert_clean_page(r)
    for text in (number, "困境未成年人转介函", "连云港市海州区民政局", sha,
                 "-".join(code[i:i + 4] for i in (0, 4, 8)), "公文已签发", f"/documents/{doc_id}/pdf?version=1"):
        assert text in r.text, text
    assert f'<a class="button primary" href="/documents/{doc_id}/pdf" target="_blank"' in r.text  # print

    # download: the stored bytes
    r = browser.get(f"/documents/{doc_id}/pdf?version=1")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    assert hashlib.sha256(r.content).hexdigest() == sha == r.headers["x-content-sha256"]
    assert r.headers["content-disposition"] == f'inline; filename="{doc_id}-v1.pdf"'
    assert "草稿" not in pdf_text(r.content)

    # the list links to it; the kind filter works
    r = browser.get("/documents")
    assert_clean_page(r)
    assert f'<a href="/documents/{doc_id}">{number}</a>' in r.text
    assert number not in browser.get("/documents?kind=dropout_notice").text
    assert number in browser.get("/documents?kind=referral_notice").text

    # correction: the form holds the issued fields; a reason is required
    page = browser.get(f"/documents/{doc_id}").text
    form = form_of(page, f"/documents/{doc_id}/versions")
    assert form["fields.situation"] == REFERRAL["situation"] and form["fields.minor_name"] == "李小明"
    form["fields.situation"] = "更正后的情况说明：该生已连续两周未到校。"
    r = browser.post(f"/documents/{doc_id}/versions", data=form)
    assert r.status_code == 422
    assert_clean_page(r)
    assert error_at(r.text, "reason") == "必填字段"
    assert form_of(r.text, f"/documents/{doc_id}/versions")["fields.situation"] == form["fields.situation"]
    assert count(rt, "document_versions") == 1

    form["reason"] = "情况说明有误"
    r = browser.post(f"/documents/{doc_id}/versions", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/documents/{doc_id}?corrected=2"
    assert run_sql(rt, "SELECT current_version FROM documents WHERE id = :id", id=doc_id)[0][0] == 2
    (sha2,), = run_sql(rt, "SELECT sha256 FROM document_versions WHERE document_id = :id AND version = 2", id=doc_id)
    page = browser.get(r.headers["location"]).text
    assert "已生成第2版" in page and "第2版" in page and "更正第1版" in page and sha2 in page
    r = browser.get(f"/documents/{doc_id}/pdf")
    assert hashlib.sha256(r.content).hexdigest() == sha2 == r.headers["x-content-sha256"]
    r = browser.get(f"/documents/{doc_id}/pdf?version=1")
    assert hashlib.sha256(r.content).hexdigest() == sha


# 3. invalid input: Chinese messages next to the fields, typed values kept -----------------------------


def test_invalid_fields_are_shown_next_to_each_field_with_the_typed_values(browser, rt):
    minor_id = make_minor(browser, "caseworker.haizhou", HAIZHOU_VILLAGE)
    sign_in(browser, "caseworker.haizhou")
    form = form_of(browser.get(f"/documents/new?kind=referral_notice&subject_id={minor_id}").text, "/documents/new")
    long_text = "情" * 2000
    data = fill_referral(form, situation=long_text, contact="", recipient="海州区教育局（测试）",
                         **{"fields.requests.0": "", "fields.copy_to.1": "幸福村村民委员会"})
    for url in ("/documents/new", "/documents/preview"):
        r = browser.post(url, data=data, follow_redirects=False)
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html"), url
        assert_clean_page(r)
        assert "提交的数据有误" in r.text
        assert error_at(r.text, "fields.situation") == "长度不能超过1500个字符"
        assert error_at(r.text, "fields.contact") == "必填字段"
        assert error_at(r.text, "fields.requests") == "必填字段"
        kept = form_of(r.text, "/documents/new")
        assert kept["fields.situation"] == long_text
        assert kept["fields.recipient"] == "海州区教育局（测试）"
        assert kept["fields.copy_to.0"] == "幸福村村民委员会"  # blank rows are dropped, the value is kept
        assert kept["fields.minor_name"] == "测试童" and kept["subject_id"] == minor_id

    # a wrong ID number in the guardianship designation, and a list entry over its limit
    form = form_of(browser.get(f"/documents/new?kind=guardianship_designation&subject_id={minor_id}").text,
                   "/documents/new")
    form.update({"fields.recipient": "王桂芳", "fields.original_situation": "父亲服刑，母亲下落不明。",
                 "fields.guardian_name": "王桂芳", "fields.guardian_relation": "祖母",
                 "fields.minor_id_number": "320706201807150028", "fields.guardian_id_number": "12345",
                 "fields.duties.0": "保障被监护人的生活。", "fields.duties.1": "责" * 301})
    r = browser.post("/documents/new", data=form)
    assert r.status_code == 422
    assert error_at(r.text, "fields.minor_id_number") == "身份证号码校验位不正确"
    assert error_at(r.text, "fields.guardian_id_number") == "长度不能少于15个字符"
    assert error_at(r.text, "fields.duties.1") == "长度不能超过300个字符"
    kept = form_of(r.text, "/documents/new")
    assert kept["fields.minor_id_number"] == "320706201807150028" and kept["fields.duties.1"] == "责" * 301
    assert 'aria-invalid="true" aria-describedby="e-fields.minor_id_number"' in r.text

    # a subject that does not exist
    r = browser.post("/documents/new", data=fill_referral(form_of(
        browser.get("/documents/new?kind=referral_notice").text, "/documents/new"),
        minor_name="王子涵", minor_sex="男", minor_age="11", minor_address="幸福村", found_on="2026-11-18")
        | {"subject_id": "mn_does_not_exist"})
    assert r.status_code == 422 and "未找到该档案" in r.text
    r = browser.get("/documents/new?kind=referral_notice&subject_id=mn_does_not_exist")
    assert r.status_code == 422 and '<p class="error" id="e-subject">未找到该档案</p>' in r.text

    assert count(rt, "documents") == 0 and count(rt, "doc_number_counters") == 0


# 4. jurisdiction and CSRF -------------------------------------------------------------------------------------


def test_other_regions_document_is_not_found_and_posts_need_the_csrf_token(browser, rt, monkeypatch):
    guannan_minor = make_minor(browser, "caseworker.guannan", GUANNAN_VILLAGE)
    headers = login(browser, "caseworker.guannan")
    ids = []
    for kind in ("referral_notice", "guardianship_designation"):
        body = {"kind": kind, "subject_id": guannan_minor, "fields": record_fields(kind)}
        r = browser.post("/api/v1/documents", json=body, headers=headers)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    doc_id = ids[0]

    # Haizhou's caseworker: the HTML 404 page, for the page and the PDF; absent from the list
    sign_in(browser, "caseworker.haizhou")
    for url in (f"/documents/{doc_id}", f"/documents/{doc_id}/pdf", f"/documents/{doc_id}/pdf?version=1"):
        r = browser.get(url)
        assert r.status_code == 404, url
        assert_clean_page(r)
        assert "未找到" in r.text and "记录不存在或无权查看" in r.text
    assert doc_id not in browser.get("/documents").text
    assert browser.get("/documents/doc_nonexistent").status_code == 404

    # the city supervisor reads it, but is not its issuer: no correction form
    sign_in(browser, "supervisor.city")
    r = browser.get(f"/documents/{doc_id}")
    assert r.status_code == 200
    assert f"/documents/{doc_id}/versions" not in r.text
    # the list, a page at a time
    monkeypatch.setattr(web_documents, "PAGE_SIZE", 1)
    first = browser.get("/documents")
    assert_clean_page(first)
    m = re.search(r'<a href="(/documents\?cursor=[^"]+)">下一页', first.text)
    assert m and "第一页" not in first.text
    second = browser.get(m.group(1).replace("&amp;", "&"))
    assert second.status_code == 200 and "第一页" in second.text and "下一页" not in second.text
    shown = [i for i in sorted(ids) if f'href="/documents/{i}"' in first.text + second.text]
    assert shown == sorted(ids) and sorted(ids)[0] in first.text
    assert ids[1] in browser.get("/documents?kind=guardianship_designation").text
    assert ids[1] not in browser.get("/documents?kind=referral_notice").text

    # the issuer: posts without (or with a wrong) CSRF token are refused and store nothing
    sign_in(browser, "caseworker.guannan")
    page = browser.get(f"/documents/{doc_id}").text
    correction = form_of(page, f"/documents/{doc_id}/versions") | {"reason": "更正"}
    issue = fill_referral(form_of(browser.get(f"/documents/new?kind=referral_notice&subject_id={guannan_minor}").text,
                                  "/documents/new"))
    docs, versions, counters = count(rt, "documents"), count(rt, "document_versions"), run_sql(
        rt, "SELECT last_serial FROM doc_number_counters")
    for token in (None, "0" * 32):
        for url, data in ((f"/documents/{doc_id}/versions", correction), ("/documents/new", issue),
                          ("/documents/preview", issue)):
            sent = {k: v for k, v in data.items() if k != "csrf_token"}
            if token:
                sent["csrf_token"] = token
            r = browser.post(url, data=sent, follow_redirects=False)
            assert r.status_code == 403, (url, r.status_code)
            assert r.headers["content-type"].startswith("text/html")
            assert "表单已过期或来源不明" in r.text
    assert count(rt, "documents") == docs and count(rt, "document_versions") == versions
    assert run_sql(rt, "SELECT last_serial FROM doc_number_counters") == counters
    assert run_sql(rt, "SELECT current_version FROM documents WHERE id = :id", id=doc_id)[0][0] == 1
