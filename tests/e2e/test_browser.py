"""End to end in real Chromium against a real ``shouhu serve``.

The server runs on http://127.0.0.1 (a secure context: Chromium keeps the
Secure session cookie) over a SQLite data dir made by ``shouhu init`` and
``shouhu demo --households 20``. Chromium is Debian's ``/usr/bin/chromium``,
driven through Playwright's sync API (Playwright's own browser download is not
used).

- The story: a caseworker creates a household and a minor through the forms,
  previews a referral notice (a PDF in a new tab), issues it and downloads it
  (its sha256 is the stored one); the custodian seals the minor, a court
  applies, the custodian approves, the court reads the stamped record; the
  auditor finds all of it in the access log, which verifies.
- Every page of every role, screenshotted at 1366x768.
- Security, in the browser and with plain HTTP: CSRF, other regions' records,
  the Content-Security-Policy (header, nothing inline, no violation reported by
  Chromium on any page visited), signing out, the cookie's flags, the idle
  time-out.
- Forms: a Chinese message next to each invalid field, the typed values kept.

Screenshots go to a temporary folder. ``E2E_SCREENSHOTS=docs/screenshots``
(``make screenshots``) writes them into the docs, with their README.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import sqlite3
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, Route, WebError, sync_playwright
from playwright.sync_api import Response as PageResponse
from pypdf import PdfReader

from archive.schemas import id_check_char
from tests.cli_support import Server, cli_env, run_cli, serving
from tests.cli_support import login as api_login
from tests.conftest import DEMO_PASSWORD, web_login

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--lang=zh-CN"]
VIEWPORT = {"width": 1366, "height": 768}
REPO = Path(__file__).resolve().parents[2]
LOCAL_TZ = ZoneInfo("Asia/Shanghai")
HAIZHOU_VILLAGE = "320706001001"
GUANNAN_VILLAGE = "320724001001"
COOKIE = "shouhu_session"
MAX_SHOT_BYTES = 300_000
CJK = re.compile(r"[\u4e00-\u9fff]")
CSRF_REFUSED = "表单已过期或来源不明"
BROWSER_OWN = ("chrome-extension:", "chrome:", "devtools:", "about:", "data:", "blob:")
CSP_DIRECTIVES = ("default-src 'self'", "script-src 'self'", "style-src 'self'", "object-src 'none'",
                  "frame-ancestors 'none'")

# Run in every page: anything the CSP would forbid (and so break) in the page as served.
INLINE_CHECK = """() => {
  const bad = [];
  for (const s of document.scripts) if (!s.src) bad.push('inline <script>');
  if (document.querySelector('style')) bad.push('<style> element');
  for (const el of document.querySelectorAll('*')) {
    for (const a of el.attributes) {
      if (a.name === 'style') bad.push('style= on <' + el.localName + '>');
      if (a.name.startsWith('on') || a.name.startsWith('hx-on')) bad.push(a.name + '= on <' + el.localName + '>');
      if (/^\\s*javascript:/i.test(a.value)) bad.push('javascript: in ' + a.name + ' on <' + el.localName + '>');
    }
  }
  return bad;
}"""
TABLE_ROWS = """(selector) => [...document.querySelectorAll(selector + ' tbody tr')]
  .map(tr => [...tr.cells].map(td => td.innerText.trim()))"""


def new_id_number(county: str = "320706", birth: str = "20140615", female: bool = True) -> str:
    seq = secrets.randbelow(450) * 2 + 100 + (0 if female else 1)
    first17 = f"{county}{birth}{seq:03d}"
    return first17 + id_check_char(first17)


def with_wrong_check_char(id_number: str) -> str:
    return id_number[:17] + next(c for c in "0123456789X" if c != id_number[17])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pdf_text(data: bytes) -> str:
    """The text of every page, without whitespace (CJK extraction breaks lines anywhere)."""
    reader = PdfReader(io.BytesIO(data))
    return re.sub(r"\s+", "", "".join(page.extract_text() or "" for page in reader.pages))


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def path_of(url: str) -> str:
    return urlsplit(url).path


# What Chromium says, across every page ------------------------------------------------------------


@dataclass
class Watch:
    """Console CSP violations, uncaught script errors and HTML answers without the CSP, in
    every page and popup of the contexts it is attached to."""

    csp: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)
    missing_csp: list[str] = field(default_factory=list)
    failed_assets: list[str] = field(default_factory=list)
    documents: int = 0
    checked: set[str] = field(default_factory=set)  # paths whose DOM was checked for inline code

    def attach(self, ctx: BrowserContext) -> None:
        ctx.on("console", self._console)
        ctx.on("weberror", self._error)
        ctx.on("response", self._response)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.location.get("url", "").startswith(BROWSER_OWN):
            return
        if "Content Security Policy" in msg.text or "Content-Security-Policy" in msg.text:
            self.csp.append(f"{msg.location.get('url')}: {msg.text}")

    def _error(self, error: WebError) -> None:
        self.script_errors.append(str(error.error))

    def _response(self, response: PageResponse) -> None:
        if response.url.startswith(BROWSER_OWN):  # e.g. Chromium's PDF viewer, an extension page
            return
        if response.request.resource_type != "document":
            if response.status >= 400:  # a style sheet, script or icon the pages ask for and do not get
                self.failed_assets.append(f"{response.status} {response.url}")
            return
        if not response.headers.get("content-type", "").startswith("text/html"):
            return
        self.documents += 1
        csp = response.headers.get("content-security-policy", "")
        if not all(d in csp for d in CSP_DIRECTIVES) or "unsafe-inline" in csp or "unsafe-eval" in csp:
            self.missing_csp.append(f"{response.status} {response.url}: {csp!r}")

    def assert_clean(self) -> None:
        assert not self.csp, "CSP violations:\n" + "\n".join(self.csp)
        assert not self.script_errors, "script errors:\n" + "\n".join(self.script_errors)
        assert not self.missing_csp, "HTML answers without the CSP:\n" + "\n".join(self.missing_csp)
        assert not self.failed_assets, "assets not served:\n" + "\n".join(self.failed_assets)


# Screenshots --------------------------------------------------------------------------------------

# role-page -> what it shows (the README of docs/screenshots).
CAPTIONS: dict[str, str] = {
    "guest-login": "登录页",
    "guest-login-failed": "登录失败：用户名或密码错误",
    "caseworker-home": "专干首页：辖区困境未成年人分类统计图表",
    "caseworker-households": "家庭档案列表",
    "caseworker-household-new": "新建家庭档案（已填写）",
    "caseworker-household-new-errors": "新建家庭档案：身份证号码有误，提示显示在该字段旁，已填内容保留",
    "caseworker-household": "家庭档案页：成员、未成年人、走访记录",
    "caseworker-household-edit": "修改家庭档案",
    "caseworker-minor-new": "登记未成年人（已填写）",
    "caseworker-minor-new-errors": "登记未成年人：出生日期晚于今天，提示显示在该字段旁，已填内容保留",
    "caseworker-minor": "未成年人页",
    "caseworker-minor-edit": "修改未成年人信息",
    "caseworker-minors": "未成年人列表（身份证号码脱敏）",
    "caseworker-document-choose": "签发公文：选择公文种类",
    "caseworker-document-new": "签发转介通知书：按档案自动填写的表单",
    "caseworker-document-preview": "转介通知书草稿预览（新标签页中的 PDF）",
    "caseworker-document": "已签发的公文：文号、核验码、SHA-256、版本",
    "caseworker-documents": "公文列表",
    "caseworker-search": "检索：htmx 载入的结果与高亮摘要",
    "caseworker-statistics": "督查统计",
    "caseworker-not-found": "其他辖区的记录：与不存在的记录相同的 404 页面",
    "caseworker-csrf-refused": "缺少 CSRF 令牌的表单提交被拒绝",
    "village-home": "村（居）专干首页",
    "village-households": "村（居）专干的家庭档案列表（仅本村）",
    "village-minors": "村（居）专干的未成年人列表",
    "village-documents": "村（居）专干的公文列表",
    "village-search": "村（居）专干的检索页",
    "village-statistics": "村（居）专干的督查统计",
    "supervisor-home": "督导首页：全市统计",
    "supervisor-households": "督导的家庭档案列表（只读）",
    "supervisor-household": "督导查看家庭档案（只读，无修改按钮）",
    "supervisor-minors": "督导的未成年人列表",
    "supervisor-documents": "督导的公文列表",
    "supervisor-document-choose": "督导可签发的公文",
    "supervisor-document-new": "督查通报：按统计数据自动填写",
    "supervisor-document": "督导签发的督查通报",
    "supervisor-document-corrected": "更正后的督查通报：第2版，第1版仍可查阅",
    "supervisor-search": "督导的检索页",
    "supervisor-statistics": "督查统计：按县区与类别",
    "court-home": "法院用户首页：本人的封存记录查询申请",
    "court-sealed": "我的封存记录查询申请",
    "court-sealed-new": "申请查询封存记录（已填写）",
    "court-sealed-request-pending": "申请已提交，待审批",
    "court-sealed-request-approved": "申请已批准：授权查阅的记录",
    "court-sealed-record": "授权查阅的记录：每页加注查询人、申请编号、案号与保密提示的 PDF",
    "court-sealed-seal": "法院封存犯罪记录",
    "court-search": "法院用户的检索页",
    "custodian-home": "封存记录保管人首页",
    "custodian-sealed-seal-done": "封存未成年人记录及其相关公文",
    "custodian-sealed": "封存记录查询申请待办（含审批期限）",
    "custodian-sealed-request": "审批封存记录查询申请",
    "custodian-sealed-request-approved": "已批准的申请（可撤销、可出具告知函）",
    "custodian-sealed-disclosures": "封存记录提供登记（原件与提供件的 SHA-256）",
    "custodian-documents": "保管人的公文列表",
    "custodian-search": "保管人的检索页",
    "auditor-home": "审计员首页：日志规模与检查点",
    "auditor-audit": "访问日志：异常提示与事件",
    "auditor-audit-filtered": "访问日志按操作人与操作筛选",
    "auditor-audit-subject": "按身份证号查询涉及某人的全部事件",
    "auditor-audit-verify": "校验访问日志：日志完整",
    "auditor-audit-export": "导出访问日志与签名公钥",
    "auditor-documents": "审计员的公文列表",
    "auditor-sealed-disclosures": "审计员查看封存记录提供登记",
    "admin-home": "系统管理员首页：用户、密钥与待审批申请数",
    "admin-admin": "用户管理",
    "admin-users-new": "新建用户",
    "admin-user-created": "用户已创建：临时密码只显示一次",
    "admin-orgs": "单位",
    "admin-keys": "密钥轮换状态",
}
ROLE_TITLES = {"guest": "未登录", "caseworker": "专干（caseworker.haizhou）",
               "village": "村（居）专干（village.haizhou）", "supervisor": "督导（supervisor.city）",
               "court": "法院（court.haizhou）",
               "custodian": "封存记录保管人（custodian.city）", "auditor": "审计员（auditor.city）",
               "admin": "系统管理员（admin）"}


class Shots:
    """Viewport screenshots (1366x768 PNG) named ``<role>-<page>.png``."""

    def __init__(self, folder: Path, publish: bool):
        self.folder = folder
        self.publish = publish
        self.taken: list[str] = []
        folder.mkdir(parents=True, exist_ok=True)

    def take(self, page: Page, name: str) -> None:
        assert re.fullmatch(r"[a-z]+-[a-z0-9-]+", name), name
        assert name in CAPTIONS, f"add a caption for {name}"
        path = self.folder / f"{name}.png"
        page.screenshot(path=path)
        assert png_size(path) == (VIEWPORT["width"], VIEWPORT["height"]), name
        assert path.stat().st_size < MAX_SHOT_BYTES, (name, path.stat().st_size)
        self.taken.append(name)

    def pdf_drawn(self, page: Page) -> None:
        """Chromium's PDF viewer draws the first page some time after the load, with no event to wait
        for; only a published screenshot needs it drawn (`make screenshots`)."""
        if self.publish:
            page.wait_for_timeout(2500)

    def write_readme(self) -> None:
        if not self.publish:
            return
        present = sorted(p.stem for p in self.folder.glob("*.png"))
        lines = ["# Screenshots", "",
                 "Every page of every demo role at 1366×768, taken by the browser tests",
                 "(`tests/e2e/test_browser.py`) in Chromium against a real `shouhu serve` with the demo data.",
                 "Regenerate them with `make screenshots`.", ""]
        for role, title in ROLE_TITLES.items():
            names = [n for n in CAPTIONS if n.startswith(role + "-") and n in present]
            if not names:
                continue
            lines += [f"## {title}", "", "| screenshot | page |", "|---|---|"]
            lines += [f"| [{n}.png]({n}.png) | {CAPTIONS[n]} |" for n in names]
            lines.append("")
        (self.folder / "README.md").write_text("\n".join(lines), encoding="utf-8")


# The browser, the server, the people --------------------------------------------------------------


@dataclass
class E2E:
    server: Server
    browser: Browser
    data_dir: Path
    watch: Watch
    shots: Shots
    client: httpx.Client
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)

    def visitor(self, role: str, username: str | None = None) -> Visitor:
        """A new visitor for ``role``; signed in as ``username`` if given."""
        v = Visitor(self, role)
        if username is not None:
            v.sign_in(username)
        return v

    def api(self, username: str) -> tuple[httpx.Client, dict[str, str]]:
        """A plain HTTP client and a bearer token for ``username``."""
        if username not in self.tokens:
            self.tokens[username] = api_login(self.client, username)
        return self.client, self.tokens[username]

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=90, follow_redirects=False)


class Visitor:
    """One person in a browser context of their own (cookies, pages) at 1366x768."""

    def __init__(self, e2e: E2E, role: str):
        self.e2e = e2e
        self.role = role
        self.ctx = e2e.browser.new_context(base_url=e2e.server.base_url, viewport=VIEWPORT, locale="zh-CN",
                                           timezone_id="Asia/Shanghai", accept_downloads=True)
        self.ctx.set_default_timeout(60_000)
        e2e.watch.attach(self.ctx)
        self.page = self.ctx.new_page()

    def sign_in(self, username: str) -> None:
        self.open("/login")
        self.page.fill("#username", username)
        self.page.fill("#password", DEMO_PASSWORD)
        r = self.submit("form[action='/login'] button[type=submit]")
        assert r.status == 200 and path_of(self.page.url) == "/", (r.status, self.page.url)
        assert self.page.locator("header form[action='/logout']").count() == 1

    def open(self, path: str, status: int = 200) -> PageResponse:
        r = self.page.goto(path)
        assert r is not None, path
        assert r.status == status, (path, r.status, self.page.locator("main").inner_text()[:300])
        self.check()
        return r

    def submit(self, selector: str, status: int | None = None) -> PageResponse:
        """Click a button that submits a form, wait for the next page, check it."""
        with self.page.expect_navigation() as nav:
            self.page.click(selector)
        r = nav.value
        assert r is not None, selector
        if status is not None:
            assert r.status == status, (selector, r.status, self.page.locator("main").inner_text()[:300])
        self.check()
        return r

    def follow(self, selector: str) -> PageResponse:
        """Click a link to another page."""
        return self.submit(selector, status=200)

    def check(self) -> None:
        """The page as served has nothing inline for the CSP to forbid, and fits 1366 px without a
        horizontal scroll bar."""
        self.page.wait_for_load_state()
        bad = self.page.evaluate(INLINE_CHECK)
        assert not bad, (self.page.url, bad)
        if self.page.url.endswith(".pdf") or "/pdf" in self.page.url or "/documents/preview" in self.page.url:
            return  # Chromium's PDF viewer
        width = self.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], (self.page.url, "wider than the window", width)
        self.e2e.watch.checked.add(path_of(self.page.url))

    def shot(self, name: str, page: Page | None = None, *, top: bool = True) -> None:
        """A screenshot of the viewport, scrolled to the top unless ``top`` is false."""
        page = page or self.page
        if top and page is self.page:
            page.evaluate("window.scrollTo(0, 0)")
        self.e2e.shots.take(page, f"{self.role}-{name}")

    def text(self, selector: str = "main") -> str:
        return self.page.locator(selector).inner_text()

    def fact(self, label: str) -> str:
        """The value of a ``<dl class="facts">`` entry."""
        return self.page.locator(f"dl.facts dt:text-is('{label}') + dd").first.inner_text().strip()

    def rows(self, table: str = "table.grid") -> list[list[str]]:
        return self.page.evaluate(TABLE_ROWS, table)

    def cookie(self) -> str | None:
        return next((c["value"] for c in self.ctx.cookies() if c["name"] == COOKIE), None)

    def close(self) -> None:
        self.ctx.close()
        self.e2e.watch.assert_clean()


@contextmanager
def captured(ctx: BrowserContext, pattern: str) -> Iterator[dict[str, Any]]:
    """The bytes and headers of answers to ``pattern`` exactly as the browser gets them
    (Chromium's PDF viewer keeps a navigated PDF's body from the page)."""
    got: dict[str, Any] = {}

    def handle(route: Route) -> None:
        response = route.fetch()
        got.update(status=response.status, headers=response.headers, body=response.body())
        route.fulfill(response=response)

    ctx.route(pattern, handle)
    try:
        yield got
    finally:
        ctx.unroute(pattern, handle)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    root = tmp_path_factory.mktemp("e2e")
    env = cli_env(root / "var", SHOUHU_RENDER_WORKERS="1", SHOUHU_DEMO_MODE="true")
    run_cli(env, "init")
    run_cli(env, "demo", "--households", "20")
    target = os.environ.get("E2E_SCREENSHOTS")
    folder = (REPO / target) if target and not Path(target).is_absolute() else Path(target or root / "screenshots")
    shots = Shots(folder, publish=bool(target))
    with serving(env, root / "serve.log") as server, server.client() as client, sync_playwright() as pw:
        # Chinese browser UI (date fields as yyyy/mm/dd, the file chooser) when chromium-l10n is installed.
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                     env={**os.environ, "LANG": "C.UTF-8", "LANGUAGE": "zh_CN:zh"})
        try:
            e2e = E2E(server=server, browser=browser, data_dir=root / "var", watch=Watch(), shots=shots,
                      client=client)
            yield e2e
        finally:
            browser.close()
    e2e.watch.assert_clean()  # every page of every test in the module
    shots.write_readme()


# The story: casework, sealing, audit ---------------------------------------------------------------


@dataclass
class Story:
    id_number: str
    minor_name: str = "林小雨"
    address: str = "7组21号"
    household_id: str = ""
    minor_id: str = ""
    doc_id: str = ""
    doc_number: str = ""
    search_hits: list[str] = field(default_factory=list)
    preview: dict[str, Any] = field(default_factory=dict)
    downloaded: bytes = b""
    download_name: str = ""
    shown_sha: str = ""
    header_sha: str = ""
    fetched_sha: str = ""
    api_sha: str = ""
    # sealing
    case_number: str = "（2026）苏0706刑初88号"
    sealed_notice: str = ""
    caseworker_after_seal: dict[str, int] = field(default_factory=dict)
    request_id: str = ""
    status_pending: str = ""
    status_approved: str = ""
    granted: list[list[str]] = field(default_factory=list)
    stamped: dict[str, Any] = field(default_factory=dict)
    register: list[list[str]] = field(default_factory=list)
    # audit
    issued_rows: list[list[str]] = field(default_factory=list)
    sealed_rows: list[list[str]] = field(default_factory=list)
    court_rows: list[list[str]] = field(default_factory=list)
    subject_rows: list[list[str]] = field(default_factory=list)
    subject_url: str = ""
    verify_notice: str = ""


@pytest.fixture(scope="module")
def story() -> Story:
    return Story(id_number=new_id_number())


@pytest.fixture(scope="module")
def casework(e2e: E2E, story: Story) -> Story:
    """A caseworker: household and minor through the forms, a referral notice previewed,
    issued and downloaded."""
    guest = e2e.visitor("guest")
    guest.open("/login")
    guest.shot("login")
    guest.page.fill("#username", "zhang.san")
    guest.page.fill("#password", "not-the-password")
    guest.submit("form[action='/login'] button[type=submit]", status=401)
    assert CJK.search(guest.text(".alert"))
    guest.shot("login-failed")
    guest.close()

    cw = e2e.visitor("caseworker", "caseworker.haizhou")
    cw.shot("home")
    cw.open("/households")
    cw.shot("households")

    # A household through the form.
    cw.follow("a.button.primary[href='/households/new']")
    cw.page.select_option("#f-region_code", HAIZHOU_VILLAGE)
    cw.page.fill("#f-address", story.address)
    cw.page.fill("#f-notes", "父母长期外出务工，由祖母照料。")
    member = {"name": "林建国", "relation": "父亲", "id_number": new_id_number(birth="19850312", female=False),
              "phone": "13912345678", "situation": "外出务工"}
    for key, value in member.items():
        cw.page.fill(f"[id='f-members.0.{key}']", value)
    cw.page.fill("[id='f-members.1.name']", "王秀英")
    cw.page.fill("[id='f-members.1.relation']", "祖母")
    cw.shot("household-new")
    cw.submit("form[action='/households/new'] button.primary", status=200)
    assert re.fullmatch(r"/households/hh_\w+", path_of(cw.page.url)), cw.page.url
    story.household_id = path_of(cw.page.url).rsplit("/", 1)[1]
    assert member["id_number"] in cw.text()

    # A minor of that household, through the form.
    cw.follow(f"a[href='/minors/new?household_id={story.household_id}']")
    cw.page.fill("#f-name", story.minor_name)
    cw.page.fill("#f-id_number", story.id_number)
    cw.page.fill("#f-birth_date", "2014-06-15")
    cw.page.select_option("#f-sex", "female")
    cw.page.check("#f-cat-1")
    cw.page.fill("#f-cat_found_1", "2026-03-02")
    cw.page.check("#f-cat-3")
    cw.page.fill("#f-school", "海州区新安小学")
    cw.page.fill("#f-guardian", "王秀英（祖母）")
    cw.page.fill("#f-phone", "13812345678")
    cw.shot("minor-new")
    cw.submit("form[action='/minors/new'] button.primary", status=200)
    assert re.fullmatch(r"/minors/mn_\w+", path_of(cw.page.url)), cw.page.url
    story.minor_id = path_of(cw.page.url).rsplit("/", 1)[1]
    assert cw.fact("身份证号码") == story.id_number
    cw.shot("minor")

    # A home visit, then the household page with everything on it.
    cw.open(f"/households/{story.household_id}")
    cw.page.fill("#f-findings", "入户走访，祖母身体尚可，孩子按时上学。")
    cw.submit(f"form[action='/households/{story.household_id}/visits'] button[type=submit]", status=200)
    assert "孩子按时上学" in cw.text("#visits")
    cw.shot("household")

    # Search finds the new minor (htmx swaps the results in).
    cw.open("/search")
    cw.page.fill("#f-q", story.minor_name)
    cw.page.click("form.search-form button[type=submit]")
    cw.page.wait_for_selector(f"#results a[href='/minors/{story.minor_id}']")
    cw.check()
    story.search_hits = cw.page.locator("#results a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    # The name was posted: the address bar (and so the browser's history) still says /search.
    assert cw.page.url.endswith("/search") and story.minor_name not in unquote(cw.page.url)
    cw.shot("search")

    # The referral notice: prefilled from the minor, previewed in a new tab, issued.
    cw.open(f"/minors/{story.minor_id}")
    cw.follow("a.button.primary[href*='kind=referral_notice']")
    assert parse_qs(urlsplit(cw.page.url).query) == {"kind": ["referral_notice"], "subject_id": [story.minor_id]}
    assert cw.page.input_value("[id='f-fields.minor_name']") == story.minor_name
    cw.page.fill("[id='f-fields.recipient']", "连云港市海州区教育局")
    cw.page.fill("[id='f-fields.situation']",
                 "该儿童父母长期外出务工，由年迈祖母照料，近期多次缺课，需学校与社区共同关注。")
    cw.page.fill("[id='f-fields.requests.0']", "请学校落实关爱帮扶措施，发现异常及时告知。")
    cw.page.fill("[id='f-fields.contact']", "李华")
    cw.page.fill("[id='f-fields.contact_phone']", "0518-85821234")
    cw.shot("document-new")
    with captured(cw.ctx, "**/documents/preview") as preview, cw.page.expect_popup() as popup_info:
        cw.page.click("button[formaction='/documents/preview']")
    popup = popup_info.value
    popup.wait_for_load_state()
    cw.e2e.shots.pdf_drawn(popup)
    assert path_of(popup.url) == "/documents/preview"
    cw.shot("document-preview", page=popup)
    popup.close()
    story.preview = preview
    cw.submit("form.doc-form button.primary[type=submit]", status=200)
    assert re.fullmatch(r"/documents/doc_\w+", path_of(cw.page.url)), cw.page.url
    story.doc_id = path_of(cw.page.url).rsplit("/", 1)[1]
    assert "公文已签发" in cw.text(".notice")
    story.doc_number = cw.fact("文号")
    story.shown_sha = cw.fact("SHA-256")
    cw.shot("document")

    # The issued PDF: downloaded by the browser, and its hash as served.
    with cw.page.expect_download() as download_info:
        cw.page.click("a[download]:has-text('下载 PDF')")
    download = download_info.value
    story.download_name = download.suggested_filename
    story.downloaded = Path(download.path()).read_bytes()
    r = cw.page.request.get(f"/documents/{story.doc_id}/pdf")
    assert r.ok, r.status
    story.header_sha = r.headers["x-content-sha256"]
    story.fetched_sha = sha256(r.body())
    client, token = e2e.api("caseworker.haizhou")
    doc = client.get(f"/api/v1/documents/{story.doc_id}", headers=token).json()
    story.api_sha = next(v["sha256"] for v in doc["versions"] if v["version"] == doc["version"])

    cw.open("/documents")
    assert story.doc_number in cw.text()
    cw.shot("documents")
    cw.close()
    return story


def test_caseworker_creates_records_previews_issues_and_downloads_a_referral(casework: Story) -> None:
    s = casework
    assert s.household_id and s.minor_id and s.doc_id
    assert f"/minors/{s.minor_id}" in s.search_hits
    # The preview opened in a new tab is a draft PDF of this minor.
    assert s.preview["status"] == 200
    assert s.preview["headers"]["content-type"] == "application/pdf"
    assert s.preview["body"].startswith(b"%PDF-")
    preview_text = pdf_text(s.preview["body"])
    assert s.minor_name in preview_text and "草稿" in preview_text
    # The issued PDF: the bytes downloaded are the bytes stored.
    assert s.downloaded.startswith(b"%PDF-") and s.download_name.endswith(".pdf")
    assert re.fullmatch(r"[0-9a-f]{64}", s.shown_sha)
    assert sha256(s.downloaded) == s.shown_sha == s.header_sha == s.fetched_sha == s.api_sha
    issued_text = pdf_text(s.downloaded)
    assert s.minor_name in issued_text and "草稿" not in issued_text
    assert s.doc_number.replace(" ", "") in issued_text


@pytest.fixture(scope="module")
def sealing(e2e: E2E, casework: Story) -> Story:
    """The custodian seals the minor; a court applies; the custodian approves; the court
    reads the stamped record."""
    s = casework
    custodian = e2e.visitor("custodian", "custodian.city")
    custodian.open("/sealed")
    custodian.follow("a.button[href='/sealed/seal']")
    custodian.page.fill("#f-record_id", s.minor_id)
    custodian.page.select_option("#f-legal_basis", "cpl_286_1")  # picked from the list of statutory bases
    custodian.page.fill("#f-case_number", "（2026）苏0706刑初12号")
    custodian.submit("form[action='/sealed/seal'] button.primary", status=200)
    s.sealed_notice = custodian.text(".notice")
    custodian.shot("sealed-seal-done")

    # Sealed: gone for the caseworker, page and API alike.
    client, token = e2e.api("caseworker.haizhou")
    s.caseworker_after_seal = {
        "minor": client.get(f"/api/v1/minors/{s.minor_id}", headers=token).status_code,
        "document": client.get(f"/api/v1/documents/{s.doc_id}", headers=token).status_code,
    }

    court = e2e.visitor("court", "court.haizhou")
    court.open("/sealed")
    court.follow("a.button.primary[href='/sealed/new']")
    court.page.fill("#f-case_number", s.case_number)
    court.page.select_option("#f-legal_basis", "cpl_286_judicial")
    court.page.fill("#f-purpose", "审理案件需要，查询被告人未成年时的犯罪记录。")
    court.page.fill("[id='f-subject.name']", s.minor_name)
    court.page.fill("[id='f-subject.id_number']", s.id_number)
    court.shot("sealed-new")
    court.submit("form[action='/sealed/new'] button.primary", status=200)
    assert re.fullmatch(r"/sealed/\w+", path_of(court.page.url)), court.page.url
    s.request_id = path_of(court.page.url).rsplit("/", 1)[1]
    s.status_pending = court.fact("状态")
    court.shot("sealed-request-pending")
    court.open("/sealed")
    court.shot("sealed")

    custodian.open("/sealed")
    assert s.request_id in custodian.text()
    custodian.shot("sealed")
    custodian.follow(f"a[href='/sealed/{s.request_id}']")
    custodian.shot("sealed-request")
    custodian.page.check("input[name=decision][value=approve]")
    custodian.page.fill("#f-reason", "司法机关为办案需要依法查询，予以批准。")
    custodian.submit(f"form[action='/sealed/{s.request_id}/decision'] button.primary", status=200)
    assert "审批决定已记录" in custodian.text(".notice")
    custodian.shot("sealed-request-approved")

    custodian.open("/")
    custodian.shot("home")
    court.open("/")
    court.shot("home")
    court.open(f"/sealed/{s.request_id}")
    s.status_approved = court.fact("状态")
    s.granted = court.rows()
    court.shot("sealed-request-approved")
    with captured(court.ctx, "**/sealed/*/records/*/pdf") as stamped:
        court.page.click(f"a[href='/sealed/{s.request_id}/records/{s.doc_id}/pdf']")
        court.page.wait_for_url(f"**/sealed/{s.request_id}/records/{s.doc_id}/pdf")
    court.e2e.shots.pdf_drawn(court.page)
    court.shot("sealed-record")
    s.stamped = stamped
    court.close()

    custodian.open(f"/sealed/disclosures?request_id={s.request_id}")
    s.register = custodian.rows()
    custodian.shot("sealed-disclosures")
    custodian.close()
    return s


def test_custodian_seals_court_applies_custodian_approves_court_reads_the_stamped_record(sealing: Story) -> None:
    s = sealing
    assert s.minor_id in s.sealed_notice and s.doc_id in s.sealed_notice
    assert s.caseworker_after_seal == {"minor": 404, "document": 404}
    assert (s.status_pending, s.status_approved) == ("待审批", "已批准")
    assert [row[1] for row in s.granted] == [s.doc_number]
    # The court reads the referral notice, stamped on every page for this application.
    assert s.stamped["status"] == 200 and s.stamped["body"].startswith(b"%PDF-")
    text = pdf_text(s.stamped["body"])
    for part in ("封存记录", "依法提供", "查询人", s.request_id, "案号", s.case_number, "第二百八十六条",
                 "不得泄露", s.minor_name):
        assert part in text, part
    pages = PdfReader(io.BytesIO(s.stamped["body"])).pages
    assert all(s.request_id in re.sub(r"\s+", "", p.extract_text() or "") for p in pages)
    # The copy the court received is the one in the disclosure register.
    assert len(s.register) == 1
    assert s.register[0][1] == s.request_id and s.register[0][2] == s.doc_id
    assert s.register[0][-1] == sha256(s.stamped["body"]) == s.stamped["headers"]["x-content-sha256"]


@pytest.fixture(scope="module")
def auditing(e2e: E2E, sealing: Story) -> Story:
    """The auditor looks for all of it in the access log and verifies the log."""
    s = sealing
    au = e2e.visitor("auditor", "auditor.city")
    au.shot("home")
    au.open("/audit")
    au.shot("audit")

    def events(actor: str, action: str = "") -> list[list[str]]:
        au.open("/audit")
        au.page.fill("#f-actor", actor)
        au.page.select_option("#f-action", action)
        au.submit("form[action='/audit'] button.primary", status=200)
        return au.rows("table.events")

    s.issued_rows = events("caseworker.haizhou", "documents:document:issue")
    au.shot("audit-filtered")
    s.sealed_rows = events("custodian.city", "sealed:record:seal")
    s.court_rows = events("court.haizhou")

    au.open("/audit/subject")
    au.page.fill("#f-id_number", s.id_number)
    au.submit("form[action='/audit/subject'] button.primary", status=200)
    s.subject_url = au.page.url
    s.subject_rows = au.rows("table.events")
    au.shot("audit-subject")

    au.open("/audit/verify")
    au.submit("form[action='/audit/checkpoints'] button", status=200)
    assert "已签署检查点" in au.text(".notice")
    au.submit("form[action='/audit/verify'] button.primary", status=200)
    s.verify_notice = au.text(".verify-ok")
    au.shot("audit-verify")
    au.close()
    return s


def test_auditor_finds_it_all_in_the_log_and_verification_passes(auditing: Story) -> None:
    s = auditing
    # Columns: seq, time, actor (and roles), action, resource, outcome, rule, details.
    assert any(s.doc_id in row[4] and row[5] == "允许" for row in s.issued_rows), s.issued_rows
    assert all(row[2].startswith("caseworker.haizhou") and row[3] == "documents:document:issue"
               for row in s.issued_rows)
    assert any(s.minor_id in row[4] for row in s.sealed_rows), s.sealed_rows
    court_actions = {row[3] for row in s.court_rows}
    assert {"sealed:request:create", "sealed:grant:read", "documents:pdf:read"} <= court_actions, court_actions
    # Who touched this person: everyone, by the ID number (sent by POST, never in the URL).
    assert s.id_number not in s.subject_url
    touched = {(row[2].split("\n")[0], row[3]) for row in s.subject_rows}
    for expected in [("caseworker.haizhou", "archive:minor:create"), ("caseworker.haizhou", "documents:document:issue"),
                     ("custodian.city", "sealed:record:seal"), ("court.haizhou", "sealed:request:create"),
                     ("custodian.city", "sealed:request:decide"), ("court.haizhou", "documents:pdf:read")]:
        assert expected in touched, (expected, sorted(touched))
    assert "日志完整" in s.verify_notice and "未发现篡改" in s.verify_notice
    assert re.search(r"核对了 [1-9]\d* 个检查点", s.verify_notice), s.verify_notice


# Every page of every role ---------------------------------------------------------------------------

NAV_PAGES = {"/": "home", "/households": "households", "/minors": "minors", "/documents": "documents",
             "/search": "search", "/statistics": "statistics", "/sealed": "sealed", "/audit": "audit",
             "/admin": "admin"}


def every_nav_page(v: Visitor) -> list[str]:
    """Open each page of the role's navigation; screenshot those not taken yet."""
    v.open("/")
    hrefs = v.page.locator("header nav a").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert hrefs and hrefs[0] == "/", hrefs
    for href in hrefs:
        v.open(href)
        assert v.page.locator("header nav a.current").get_attribute("href") == href
        name = f"{v.role}-{NAV_PAGES[href]}"
        if name not in v.e2e.shots.taken:
            v.shot(NAV_PAGES[href])
    return hrefs


def test_every_page_of_every_role(e2e: E2E, auditing: Story) -> None:
    s = auditing
    navs: dict[str, list[str]] = {}

    cw = e2e.visitor("caseworker", "caseworker.haizhou")
    navs["caseworker"] = every_nav_page(cw)
    cw.open("/households")
    household_href = cw.page.locator("table a[href^='/households/hh_']").first.get_attribute("href")
    cw.open(f"{household_href}/edit")
    cw.shot("household-edit")
    cw.open("/minors")
    minor_href = cw.page.locator("table a[href^='/minors/mn_']").first.get_attribute("href")
    cw.open(f"{minor_href}/edit")
    cw.shot("minor-edit")
    cw.open("/documents/new")
    cw.shot("document-choose")
    cw.close()

    village = e2e.visitor("village", "village.haizhou")
    navs["village"] = every_nav_page(village)
    village.close()

    sv = e2e.visitor("supervisor", "supervisor.city")
    navs["supervisor"] = every_nav_page(sv)
    sv.open(household_href)
    assert not sv.page.locator(f"a[href='{household_href}/edit']").count()  # read-only
    sv.shot("household")
    sv.open("/documents/new")
    sv.shot("document-choose")
    sv.open("/documents/new?kind=inspection_report")
    sv.shot("document-new")
    sv.open("/documents/new?kind=inspection_report&example=1")
    sv.submit("form.doc-form button.primary[type=submit]", status=200)
    assert "公文已签发" in sv.text(".notice") and "督查通报" in sv.text()
    sv.shot("document")
    # A correction: version 2, version 1 still listed.
    report = path_of(sv.page.url)
    sv.page.click("details.doc-correct summary")
    sv.page.fill("#f-reason", "统计时段有误，予以更正。")
    sv.page.fill("[id='f-fields.period']", "2026年第三季度（更正）")
    sv.submit(f"form[action='{report}/versions'] button[type=submit]", status=200)
    assert "第2版" in sv.text() and f"{report}/pdf?version=1" in sv.page.content()
    sv.shot("document-corrected")
    sv.close()

    court = e2e.visitor("court", "court.haizhou")
    navs["court"] = every_nav_page(court)
    court.open("/sealed/seal")
    court.shot("sealed-seal")
    court.close()

    custodian = e2e.visitor("custodian", "custodian.city")
    navs["custodian"] = every_nav_page(custodian)
    custodian.close()

    au = e2e.visitor("auditor", "auditor.city")
    navs["auditor"] = every_nav_page(au)
    au.open("/audit/export")
    au.shot("audit-export")
    au.open("/sealed/disclosures")
    assert s.request_id in au.text()
    au.shot("sealed-disclosures")
    au.close()

    admin = e2e.visitor("admin", "admin")
    navs["admin"] = every_nav_page(admin)
    admin.follow("a.button[href='/admin/users/new']")
    admin.page.fill("#f-username", "caseworker.e2e")
    admin.page.fill("#f-name", "测试专干")
    org = admin.page.locator("#f-org_id option:has-text('海州区民政局')").first.get_attribute("value")
    admin.page.select_option("#f-org_id", org)
    admin.page.check("input[name='roles[]'][value=caseworker]")
    admin.shot("users-new")
    admin.submit("form[action='/admin/users/new'] button.primary", status=200)
    assert admin.page.locator(".temp-password").inner_text().strip()
    admin.shot("user-created")
    admin.open("/admin/orgs")
    admin.shot("orgs")
    admin.open("/admin/keys")
    admin.shot("keys")
    admin.close()

    # Each role's navigation is its own: no case content for the auditor and the administrator.
    assert navs["auditor"] == ["/", "/documents", "/audit"]
    assert navs["admin"] == ["/", "/admin"]
    assert "/sealed" not in navs["caseworker"] and "/audit" not in navs["court"]
    missing = [n for n in CAPTIONS if n not in e2e.shots.taken and not n.startswith(("caseworker-household-new-",
                                                                                    "caseworker-minor-new-",
                                                                                    "caseworker-not-found",
                                                                                    "caseworker-csrf"))]
    assert not missing, f"pages without a screenshot: {missing}"


def test_pages_print_without_navigation_or_forms(e2e: E2E, casework: Story) -> None:
    """Printed (Chromium's print to PDF, A4), a list and a record page keep their content and drop
    the navigation, the sign-out link, the filters and the forms."""
    cw = e2e.visitor("caseworker", "caseworker.haizhou")
    for path, content in (("/households", "家庭档案"), (f"/households/{casework.household_id}", "走访记录")):
        cw.open(path)
        cw.page.emulate_media(media="print")
        hidden = cw.page.evaluate("""() => ['header.top nav', '.who', 'form', '.filters']
            .flatMap(sel => [...document.querySelectorAll(sel)])
            .filter(el => el.checkVisibility()).map(el => el.outerHTML.slice(0, 80))""")
        assert hidden == [], (path, hidden)
        pdf = cw.page.pdf(format="A4", print_background=False)
        # NFKC: the extracted text spells some characters as Kangxi radicals (⼈ for 人).
        text = unicodedata.normalize("NFKC", "".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf)).pages))
        assert content in text and "退出" not in text and "督查统计" not in text, (path, text[:300])
        cw.page.emulate_media(media="screen")
    cw.close()


# Forms: messages next to fields, typed values kept ------------------------------------------------


def field_error(v: Visitor, field_id: str) -> str:
    """The message shown with a field: in its own ``.field`` box (or table cell), named by
    the field's aria-describedby."""
    box = v.page.locator(f".field:has([id='{field_id}']), td:has([id='{field_id}'])").first
    message = box.locator("p.error")
    assert message.count() == 1, f"no message next to {field_id}"
    described = v.page.locator(f"[id='{field_id}']").get_attribute("aria-describedby")
    assert described == message.get_attribute("id"), (described, message.get_attribute("id"))
    assert v.page.locator(f"[id='{field_id}']").get_attribute("aria-invalid") == "true"
    return message.inner_text().strip()


def test_forms_show_a_message_next_to_each_invalid_field_and_keep_what_was_typed(e2e: E2E) -> None:
    cw = e2e.visitor("caseworker", "caseworker.haizhou")

    # The household form with a bad ID number.
    cw.open("/households/new")
    bad_id = with_wrong_check_char(new_id_number(birth="19800101", female=False))
    typed = {"#f-address": "9组3号", "#f-notes": "母亲离家，父亲务工。",
             "[id='f-members.0.name']": "赵大勇", "[id='f-members.0.relation']": "父亲",
             "[id='f-members.0.id_number']": bad_id, "[id='f-members.0.phone']": "13700000000"}
    cw.page.select_option("#f-region_code", HAIZHOU_VILLAGE)
    for selector, value in typed.items():
        cw.page.fill(selector, value)
    cw.submit("form[action='/households/new'] button.primary", status=422)
    assert path_of(cw.page.url) == "/households/new"
    assert "提交的数据有误" in cw.text(".alert")
    message = field_error(cw, "f-members.0.id_number")
    assert CJK.search(message) and "身份证" in message, message
    for selector, value in typed.items():
        assert cw.page.input_value(selector) == value, selector
    assert cw.page.input_value("#f-region_code") == HAIZHOU_VILLAGE
    cw.page.locator("[id='f-members.0.id_number']").scroll_into_view_if_needed()
    cw.shot("household-new-errors", top=False)

    # The minor form with a birth date in the future.
    cw.open("/households")
    household_id = cw.page.locator("table a[href^='/households/hh_']").first.get_attribute("href").rsplit("/", 1)[1]
    cw.open(f"/minors/new?household_id={household_id}")
    tomorrow = (datetime.now(LOCAL_TZ).date() + timedelta(days=1)).isoformat()
    typed = {"#f-name": "周小北", "#f-id_number": "", "#f-birth_date": tomorrow, "#f-school": "新安小学",
             "#f-guardian": "周大海"}
    for selector, value in typed.items():
        cw.page.fill(selector, value)
    cw.page.select_option("#f-sex", "male")
    cw.page.check("#f-cat-2")
    cw.submit("form[action='/minors/new'] button.primary", status=422)
    message = field_error(cw, "f-birth_date")
    assert CJK.search(message), message
    for selector, value in typed.items():
        assert cw.page.input_value(selector) == value, selector
    assert cw.page.input_value("#f-sex") == "male" and cw.page.is_checked("#f-cat-2")
    assert not cw.page.is_checked("#f-cat-1")
    assert cw.page.locator(".error").count() == 1, cw.page.locator(".error").all_inner_texts()
    cw.page.locator("#f-birth_date").scroll_into_view_if_needed()
    cw.shot("minor-new-errors", top=False)
    cw.close()


# Security ---------------------------------------------------------------------------------------


def web_sign_in(http: httpx.Client, username: str) -> tuple[str, str]:
    """Sign in through the form with plain HTTP: (the session cookie, its Set-Cookie line)."""
    r = web_login(http, username)
    assert r.status_code == 303 and r.headers["location"] == "/", r.text
    line = next(c for c in r.headers.get_list("set-cookie") if c.startswith(f"{COOKIE}="))
    return line.split(";", 1)[0].split("=", 1)[1], line


def csrf_token(http: httpx.Client, cookie: str, path: str = "/households/new") -> str:
    r = http.get(path, headers={"Cookie": f"{COOKIE}={cookie}"})
    assert r.status_code == 200, r.status_code
    m = re.search(r'name="csrf_token" value="([^"]+)"', r.text)
    assert m
    return m.group(1)


def household_ids(e2e: E2E, username: str = "caseworker.haizhou") -> set[str]:
    client, token = e2e.api(username)
    r = client.get("/api/v1/households", params={"limit": 200}, headers=token)
    assert r.status_code == 200 and not r.json()["next_cursor"], r.text
    return {h["id"] for h in r.json()["items"]}


def test_form_posts_without_the_csrf_token_are_refused(e2e: E2E) -> None:
    before = household_ids(e2e)
    # In the browser: the token taken out of the form (or replaced) before it is sent.
    cw = e2e.visitor("caseworker", "caseworker.haizhou")
    for tamper in ("el => el.remove()", "el => { el.value = '0'.repeat(32); }"):
        cw.open("/households/new")
        cw.page.select_option("#f-region_code", HAIZHOU_VILLAGE)
        cw.page.fill("#f-address", "被拒绝的表单1号")
        cw.page.locator("form[action='/households/new'] input[name=csrf_token]").evaluate(tamper)
        cw.submit("form[action='/households/new'] button.primary", status=403)
        assert CSRF_REFUSED in cw.text()
    cw.shot("csrf-refused")
    cw.close()

    # With plain HTTP: no token, a wrong token, another session's token; then the right one.
    with e2e.http() as http:
        cookie, _ = web_sign_in(http, "caseworker.haizhou")
        other, _ = web_sign_in(http, "caseworker.haizhou")
        form = {"region_code": HAIZHOU_VILLAGE, "address": "被拒绝的表单2号"}
        headers = {"Cookie": f"{COOKIE}={cookie}"}
        for extra in ({}, {"csrf_token": "0" * 32}, {"csrf_token": csrf_token(http, other)}, {"csrf_token": ""}):
            r = http.post("/households/new", data={**form, **extra}, headers=headers)
            assert r.status_code == 403, (extra, r.status_code)
            assert r.headers["content-type"].startswith("text/html") and CSRF_REFUSED in r.text
        r = http.post("/households/new", data={**form, "csrf_token": "x"}, headers={**headers, "X-CSRF-Token": "y"})
        assert r.status_code == 403
        assert household_ids(e2e) == before  # nothing stored
        r = http.post("/households/new", data={**form, "csrf_token": csrf_token(http, cookie)}, headers=headers)
        assert r.status_code == 303 and r.headers["location"].startswith("/households/hh_"), r.text
    assert len(household_ids(e2e) - before) == 1


def test_another_regions_record_url_gets_the_404_page(e2e: E2E) -> None:
    # A household and a minor of Guannan County, by its own caseworker.
    client, guannan = e2e.api("caseworker.guannan")
    r = client.post("/api/v1/households", headers=guannan, json={
        "region_code": GUANNAN_VILLAGE, "address": "2组5号",
        "members": [{"name": "孙立军", "relation": "父亲", "situation": "服刑"}]})
    assert r.status_code == 201, r.text
    other_household = r.json()["id"]
    r = client.post("/api/v1/minors", headers=guannan, json={
        "household_id": other_household, "name": "孙小雪", "id_number": new_id_number(county="320724"),
        "birth_date": "2014-06-15", "sex": "female", "categories": [2]})
    assert r.status_code == 201, r.text
    other_minor = r.json()["id"]
    cw = e2e.visitor("caseworker", "caseworker.haizhou")
    unknown_household, unknown_minor = "hh_doesnotexist000000000", "mn_doesnotexist000000000"
    for other, unknown in [
        (f"/households/{other_household}", f"/households/{unknown_household}"),
        (f"/households/{other_household}/edit", f"/households/{unknown_household}/edit"),
        (f"/minors/new?household_id={other_household}", f"/minors/new?household_id={unknown_household}"),
        (f"/minors/{other_minor}", f"/minors/{unknown_minor}"),
        (f"/minors/{other_minor}/edit", f"/minors/{unknown_minor}/edit"),
        (f"/documents/new?kind=minor_file&subject_id={other_minor}",
         f"/documents/new?kind=minor_file&subject_id={unknown_minor}"),
    ]:
        # The same answer as for a record that does not exist: the 404 page, or for the
        # document form (which names the record it was asked for) the same message.
        status = 422 if other.startswith("/documents/") else 404
        cw.open(unknown, status=status)
        expected = cw.text().replace(unknown_minor, "?")
        cw.open(other, status=status)
        assert cw.text().replace(other_minor, "?") == expected, other
        if status == 404:
            assert cw.page.locator("h1").inner_text() == "未找到", other
    cw.open(f"/households/{other_household}", status=404)
    cw.shot("not-found")
    cookie = cw.cookie()
    cw.close()
    with e2e.http() as http:
        r = http.get(f"/minors/{other_minor}", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert "未找到" in r.text and other_minor not in r.text


PAGES_BY_USER = {
    "caseworker.haizhou": ["/", "/households", "/households/new", "/minors", "/documents", "/documents/new",
                           "/documents/new?kind=referral_notice", "/search", "/statistics"],
    "supervisor.city": ["/", "/households", "/minors", "/documents", "/statistics", "/search"],
    "court.haizhou": ["/", "/sealed", "/sealed/new", "/sealed/seal", "/search"],
    "custodian.city": ["/", "/sealed", "/sealed/seal", "/sealed/disclosures", "/documents", "/search"],
    "auditor.city": ["/", "/audit", "/audit/subject", "/audit/verify", "/audit/export", "/documents",
                     "/sealed/disclosures"],
    "admin": ["/", "/admin", "/admin/users/new", "/admin/grants", "/admin/orgs", "/admin/keys", "/password",
              "/mfa", "/sessions"],
    "security.admin": ["/", "/admin", "/admin/grants", "/sessions"],
}


def test_pages_carry_the_csp_and_no_inline_script_over_plain_http(e2e: E2E) -> None:
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=|javascript:", re.I)
    with e2e.http() as http:
        r = http.get("/login")
        pages = [("-", "/login", r)]
        pages.append(("-", "/nope", http.get("/nope")))
        for username, paths in PAGES_BY_USER.items():
            cookie, _ = web_sign_in(http, username)
            for path in paths:
                pages.append((username, path, http.get(path, headers={"Cookie": f"{COOKIE}={cookie}"})))
    for username, path, r in pages:
        assert r.status_code in (200, 404), (username, path, r.status_code)
        assert r.headers["content-type"].startswith("text/html"), (username, path)
        csp = r.headers["content-security-policy"]
        assert all(d in csp for d in CSP_DIRECTIVES) and "unsafe" not in csp, (username, path, csp)
        assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store", (username, path)
        found = inline.findall(r.text)
        assert not found, (username, path, found)
        scripts = re.findall(r'<script\b[^>]*\bsrc="([^"]+)"', r.text)
        assert all(src.startswith("/static/") for src in scripts), (username, path, scripts)


def test_chromium_reports_csp_violations_to_the_watch(e2e: E2E) -> None:
    """The console check is not vacuous: inline code added to a page is refused and reported."""
    watch = Watch()
    ctx = e2e.browser.new_context(base_url=e2e.server.base_url, viewport=VIEWPORT)
    watch.attach(ctx)
    page = ctx.new_page()
    page.goto("/login")
    page.evaluate("""() => {
      const s = document.createElement('script'); s.textContent = 'window.inlineRan = true'; document.head.append(s);
      const st = document.createElement('style'); st.textContent = 'body { color: red }'; document.head.append(st);
    }""")
    page.wait_for_timeout(500)
    assert page.evaluate("window.inlineRan") is None
    ctx.close()
    assert any("script-src" in m for m in watch.csp) and any("style-src" in m for m in watch.csp), watch.csp


def test_the_session_cookie_is_httponly_secure_and_samesite_strict(e2e: E2E) -> None:
    cw = e2e.visitor("caseworker", "caseworker.haizhou")
    (cookie,) = [c for c in cw.ctx.cookies() if c["name"] == COOKIE]
    assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"], cookie["path"]) == (True, True, "Strict", "/")
    assert COOKIE not in cw.page.evaluate("document.cookie")  # out of reach of scripts
    cw.close()
    with e2e.http() as http:
        _, line = web_sign_in(http, "caseworker.haizhou")
    attributes = {a.strip().split("=", 1)[0].lower(): a.strip().partition("=")[2] for a in line.split(";")[1:]}
    assert "httponly" in attributes and "secure" in attributes, line
    assert attributes["samesite"].lower() == "strict" and attributes["path"] == "/", line


def test_signing_out_ends_the_session(e2e: E2E) -> None:
    cw = e2e.visitor("caseworker", "caseworker.guannan")
    cookie = cw.cookie()
    assert cookie
    cw.submit("header form[action='/logout'] button", status=200)
    assert path_of(cw.page.url) == "/login"
    assert cw.cookie() is None
    cw.page.goto("/households")
    assert path_of(cw.page.url) == "/login" and parse_qs(urlsplit(cw.page.url).query) == {"next": ["/households"]}
    cw.close()
    # The old cookie, sent again by hand, opens nothing.
    with e2e.http() as http:
        for path in ("/", "/households", "/minors"):
            r = http.get(path, headers={"Cookie": f"{COOKIE}={cookie}"})
            assert r.status_code == 303 and r.headers["location"].startswith("/login"), (path, r.status_code)
        r = http.post("/households/new", data={"address": "x"}, headers={"Cookie": f"{COOKIE}={cookie}"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def backdate_session(data_dir: Path, username: str, minutes: int) -> None:
    """Make the user's newest page session look unused for ``minutes`` (the server's own
    clock then decides)."""
    then = (datetime.now(UTC) - timedelta(minutes=minutes)).replace(tzinfo=None).isoformat(" ")
    db = sqlite3.connect(data_dir / "shouhu.db", timeout=30)
    try:
        with db:
            cur = db.execute(
                "UPDATE tokens SET last_used_at = ? WHERE id = (SELECT t.id FROM tokens t"
                " JOIN users u ON u.id = t.user_id WHERE u.username = ? AND t.kind = 'web' AND t.revoked_at IS NULL"
                " ORDER BY t.created_at DESC LIMIT 1)",
                (then, username))
            assert cur.rowcount == 1
    finally:
        db.close()


def test_an_idle_session_ends_in_the_browser(e2e: E2E) -> None:
    """The server's default idle limit is 30 minutes: a session last used 29 minutes ago goes
    on, one last used 31 minutes ago has ended."""
    v = e2e.visitor("village", "village.haizhou")
    backdate_session(e2e.data_dir, "village.haizhou", 29)
    v.open("/households")
    assert path_of(v.page.url) == "/households"
    cookie = v.cookie()
    backdate_session(e2e.data_dir, "village.haizhou", 31)
    v.page.goto("/minors")
    assert path_of(v.page.url) == "/login" and parse_qs(urlsplit(v.page.url).query) == {"next": ["/minors"]}
    v.close()
    with e2e.http() as http:
        r = http.get("/", headers={"Cookie": f"{COOKIE}={cookie}"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_an_idle_session_ends_at_the_http_level_with_a_pinned_clock(app: Any, rt: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite and PostgreSQL: using the session keeps it alive; idle for longer than
    SHOUHU_SESSION_IDLE_MINUTES ends it for good, even if the clock goes back."""
    now = [rt.clock()]
    monkeypatch.setattr(rt, "clock", lambda: now[0])
    idle = timedelta(minutes=rt.settings.session_idle_minutes)
    c = TestClient(app, base_url="https://testserver")
    try:
        r = web_login(c, "caseworker.haizhou", follow_redirects=False)
        assert r.status_code == 303
        for _ in range(3):  # 3 x (idle - 1 minute): longer than the limit, but never idle that long
            now[0] += idle - timedelta(minutes=1)
            assert c.get("/households", follow_redirects=False).status_code == 200
        now[0] += idle + timedelta(seconds=1)
        r = c.get("/households", follow_redirects=False)
        assert (r.status_code, r.headers["location"]) == (303, "/login?next=/households")
        now[0] -= idle
        assert c.get("/", follow_redirects=False).status_code == 303
    finally:
        c.close()


def test_no_csp_violation_or_script_error_on_the_pages_of_the_story(e2e: E2E, auditing: Story) -> None:
    """Everything Chromium reported so far (at least the story's pages; each person's
    context is checked again when it closes, and the whole module when the server stops)."""
    e2e.watch.assert_clean()
    assert e2e.watch.documents >= 40, e2e.watch.documents
    assert len(e2e.watch.checked) >= 20, sorted(e2e.watch.checked)

