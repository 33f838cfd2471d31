"""Search through the API and the service, on SQLite and PostgreSQL (default backend tantivy).

- Recall: on the demo archive plus a generated corpus of referral notices, every
  minor is found by full name, by ID number and by a two-character given name,
  and every notice by eight consecutive characters of its narrative; with
  tantivy, then the same archive reindexed into Whoosh (and, on PostgreSQL,
  into the postgres backend).
- Traditional-script queries find simplified text, and the other way round.
- Scope (Hypothesis): random users and random records in random regions, some
  sealed, some granted, some unsealed after a grant; hits and totals equal what
  each user can read, checked against the model and against the read API.
- One audit event per search, holding the query's keyed hash, never the query.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import count
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select

from access_control.identity import Org, User, actor_for, create_user
from archive import demo
from archive.schemas import id_check_char
from core.db import new_id
from core.settings import Settings
from main import create_app
from runtime import Runtime
from search.analyzer import normalize
from tests.conftest import clean_postgres_search_tables, household_body, login, minor_body, record_fields, run_sql

DEMO_HOUSEHOLDS = 60
NOTICES = 20
CITY = demo.CITY[0]
VILLAGES = [f"{c}{t:03d}{v:03d}" for c, _ in demo.COUNTIES for t in (1, 2) for v in (1, 2, 3)]
ALL_REGIONS = [CITY] + [c for c, _ in demo.COUNTIES] + [f"{c}{t:03d}000" for c, _ in demo.COUNTIES for t in (1, 2)] \
    + VILLAGES


def search(http: TestClient, headers: dict[str, str], q: str, **params: Any) -> dict[str, Any]:
    r = http.get("/api/v1/search", params={"q": q, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


Searcher = Callable[..., dict[str, Any]]  # (q, limit=, cursor=) -> the API's answer


def via_api(http: TestClient, headers: dict[str, str]) -> Searcher:
    return lambda q, **params: search(http, headers, q, **params)


def via_service(rt: Runtime, username: str) -> Searcher:
    """SearchService.search as the API calls it (a Guard for the user), without HTTP in between."""
    with rt.db.session() as s:
        actor = actor_for(s, s.scalars(select(User).where(User.username == username)).one())

    def run(q: str, *, limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
        with rt.db.session() as s:
            return rt.search.search(rt.guard(s, actor), q=q, kind=None, region=None, category=None,
                                    date_from=None, date_to=None, limit=limit, cursor=cursor)

    return run


def search_all(run: Searcher, q: str, **params: Any) -> tuple[int, list[str]]:
    """Every hit, page after page (200 a page); the total is the same on every page."""
    ids: list[str] = []
    cursor, totals = None, set()
    while True:
        body = run(q, limit=200, **({"cursor": cursor} if cursor else {}), **params)
        totals.add(body["total"])
        ids += [h["id"] for h in body["hits"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(totals) == 1, totals
    total = totals.pop()
    assert total == len(ids) == len(set(ids)), (q, total, len(ids))
    return total, ids


_ID_SEQ = count()


def unique_id_number(county: str) -> tuple[str, date]:
    """A valid ID number never used before in this process, and its birth date."""
    n = next(_ID_SEQ)
    birth = date(2012, 1, 1) + timedelta(days=n % 3000)
    first17 = f"{county}{birth:%Y%m%d}{(n // 3000) % 1000:03d}"
    return first17 + id_check_char(first17), birth


# Recall ------------------------------------------------------------------------------------------

PEOPLE = ["年迈的祖母", "年过七旬的祖父", "身体不好的外婆", "在镇上打零工的姑姑", "刚满十八岁的哥哥", "同村的远房舅舅"]
ABSENCE = ["长期在外省建筑工地务工", "因故意伤害罪正在监狱服刑", "三年前离家至今下落不明", "患尿毒症每周需要透析两次",
           "在广东东莞电子厂打工", "在强制隔离戒毒所接受戒毒"]
SIGNS = ["最近两个月多次无故缺课", "放学后常在村口水塘边逗留", "课堂上注意力难以集中", "近期体重明显下降",
         "夜里经常一个人在网吧上网", "身上多处有不明原因的淤青", "已连续十一天没有到校上课", "不愿与同学交流"]
FOUND = ["经村儿童主任入户走访发现", "由班主任向学校报告后核实", "经派出所民警巡逻时发现", "由邻居拨打热线反映",
         "经镇未成年人保护工作站排查发现"]
NEEDS = ["家中无人辅导作业", "冬季缺少御寒衣物", "每月生活费不足三百元", "住房漏雨急需修缮", "需要定期心理疏导",
         "需要办理临时救助", "午餐长期只吃方便面"]


def narrative(rng: random.Random, name: str) -> str:
    return (f"{name}的父亲{rng.choice(ABSENCE)}，母亲{rng.choice(ABSENCE)}，目前由{rng.choice(PEOPLE)}照料。"
            f"该未成年人{rng.choice(SIGNS)}，{rng.choice(SIGNS)}，{rng.choice(FOUND)}。"
            f"家庭情况：{rng.choice(NEEDS)}，{rng.choice(NEEDS)}。第{rng.randint(2, 97)}次随访记录编号"
            f"{rng.randint(1000, 9999)}号。")


def phrase_from(rng: random.Random, text: str, length: int = 8) -> str:
    """``length`` consecutive characters of one unbroken CJK run of ``text``."""
    runs = [r for r in re.findall(r"[\u4e00-\u9fff]+", text) if len(r) >= length]
    run = rng.choice(runs)
    start = rng.randrange(len(run) - length + 1)
    return run[start : start + length]


@dataclass
class Corpus:
    minors: list[dict[str, Any]]
    notices: list[tuple[str, str]]  # (document id, phrase of its narrative)


def build_corpus(http: TestClient, rt: Runtime) -> Corpus:
    city = login(http, "supervisor.city")
    minors: list[dict[str, Any]] = []
    cursor = None
    while True:
        r = http.get("/api/v1/minors", params={"limit": 200, **({"cursor": cursor} if cursor else {})}, headers=city)
        assert r.status_code == 200, r.text
        minors += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
    assert len(minors) > DEMO_HOUSEHOLDS
    rng = random.Random(20261128)
    cw = login(http, "caseworker.haizhou")
    minors += rare_named_minors(http, cw)
    haizhou = [m for m in minors if m["region_code"].startswith("320706")]
    today = date.today()
    notices = []
    for i in range(NOTICES):
        m = haizhou[i % len(haizhou)]
        text = narrative(rng, m["name"])
        fields = {  # the child's sex, age and address come from the record
            "recipient": "连云港市海州区教育局", "minor_name": m["name"],
            "found_on": (today - timedelta(days=i)).isoformat(),
            "reply_by": (today - timedelta(days=i) + timedelta(days=15)).isoformat(),
            "situation": text, "requests": ["请学校安排教师开展学业帮扶和心理疏导。"], "contact": "张晓东",
            "contact_phone": "0518-85800000",
        }
        fields = record_fields("referral_notice", **fields)  # the kind's other fields from its example
        r = http.post("/api/v1/documents", json={"kind": "referral_notice", "subject_id": m["id"], "fields": fields},
                      headers=cw)
        assert r.status_code == 201, r.text
        notices.append((r.json()["id"], phrase_from(rng, text)))
    return Corpus(minors, notices)


# Names the demo never makes: rare characters from the basic block and CJK extensions A (㛃 U+36C3,
# 䶮 U+4DAE), B (𠇗 U+201D7) and E (𬌗 U+2C317), compound surnames, one- and three-character given
# names. Each is found by its full name, and by its given name where that has two characters (the
# index holds bigrams: a one-character query finds nothing, rare or not).
RARE_NAMES = ["王喆", "李堃", "张玥", "陈㛃妍", "刘䶮华", "赵𠇗琳", "孙𬌗宇", "堃喆", "欧阳子涵", "司马玥", "诸葛堃",
              "上官婉儿", "慕容𬌗㛃", "欧阳玥堃琳"]


def rare_named_minors(http: TestClient, cw: dict[str, str]) -> list[dict[str, Any]]:
    r = http.post("/api/v1/households", json=household_body(), headers=cw)
    assert r.status_code == 201, r.text
    household_id = r.json()["id"]
    out = []
    for name in RARE_NAMES:
        id_number, birth = unique_id_number("320706")
        r = http.post("/api/v1/minors", headers=cw, json=minor_body(
            household_id, name=name, id_number=id_number, birth_date=birth.isoformat()))
        assert r.status_code == 201, (name, r.text)
        out.append(r.json())
    return out


def given_name(name: str) -> str:
    return name[2:] if name[:2] in ("欧阳", "司马", "诸葛", "上官") else name[1:]


def recall(city: Searcher, corpus: Corpus, label: str) -> None:
    """Every minor by name, ID number and two-character given name; every notice by a phrase
    (searching as supervisor.city, who may read every unsealed record of the city)."""
    checks: dict[str, list[tuple[str, str]]] = {
        "minors by full name": [(m["name"], m["id"]) for m in corpus.minors],
        "minors by ID number": [(m["id_number"], m["id"]) for m in corpus.minors if m["id_number"]],
        "minors by two-character given name": [(m["name"][1:], m["id"]) for m in corpus.minors
                                               if len(m["name"]) == 3],
        "rare-character and compound-surname minors by two-character given name": [
            (given_name(m["name"]), m["id"]) for m in corpus.minors
            if m["name"] in RARE_NAMES and len(given_name(m["name"])) == 2],
        "referral notices by 8 characters of the narrative": [(p, d) for d, p in corpus.notices],
    }
    missing: dict[str, list[tuple[str, str]]] = {}
    lines = []
    started = time.monotonic()
    for what, items in checks.items():
        missing[what] = [(q, rid) for q, rid in items if rid not in search_all(city, q)[1]]
        lines.append(f"{what} {len(items) - len(missing[what])}/{len(items)}")
    print(f"\nsearch recall [{label}]: " + "; ".join(lines), f"({time.monotonic() - started:.1f} s)")
    assert all(checks.values())
    assert not any(missing.values()), missing
    # An ID number is one whole token: it finds its minor and nothing else.
    m = next(m for m in corpus.minors if m["id_number"])
    assert search_all(city, m["id_number"])[1] == [m["id"]]



@pytest.fixture
def demo_rt(settings: Settings) -> Iterator[Runtime]:
    """The demo archive (regions, orgs, users and households), indexed through the outbox."""
    rt = Runtime.open(settings, require_schema=False)
    rt.initialize()
    demo.load(rt, households=DEMO_HOUSEHOLDS)
    try:
        yield rt
    finally:
        rt.close()


def test_recall_on_the_demo_archive_and_generated_notices(demo_rt, settings):
    """tantivy through the API; then the same archive reindexed into Whoosh (and on PostgreSQL into
    the postgres backend), searched through the service (the API adds ~50 ms a request here)."""
    rt = demo_rt
    with TestClient(create_app(runtime=rt)) as http:
        corpus = build_corpus(http, rt)
        rt.indexer.drain()
        assert rt.indexer.pending() == 0
        records = DEMO_HOUSEHOLDS + 1 + len(corpus.minors) + len(corpus.notices)  # + the rare names' household
        assert rt.search_backend.count() == records
        recall(via_api(http, login(http, "supervisor.city")), corpus, f"{rt.db.dialect}, tantivy, API")

    others = ["whoosh"] + (["postgres"] if rt.db.dialect == "postgresql" else [])
    for engine in others:
        other = Runtime.open(settings.model_copy(update={"search_backend": engine}))
        try:
            if engine == "postgres":
                clean_postgres_search_tables(other)
            assert other.indexer.reindex() == records
            assert other.search_backend.count() == records
            recall(via_service(other, "supervisor.city"), corpus, f"{rt.db.dialect}, {engine}, service")
        finally:
            if engine == "postgres":
                clean_postgres_search_tables(other)
            other.close()


# Traditional script --------------------------------------------------------------------------------


def test_traditional_script_queries_find_simplified_text_and_back(client, tokens, rt):
    cw = tokens["caseworker.haizhou"]
    r = client.post("/api/v1/households", json=household_body(notes="父亲在连云港港口码头打工，母親在臺灣工廠上班"),
                    headers=cw)
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    idn, birth = unique_id_number("320706")
    r = client.post("/api/v1/minors", json=minor_body(hid, name="钱语嫣", id_number=idn, birth_date=birth.isoformat(),
                                                      notes="寄宿在连云港市区的姑姑家"), headers=cw)
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    rt.indexer.drain()

    assert set(search_all(via_api(client, cw), "連雲港港口碼頭")[1]) == {hid}
    assert set(search_all(via_api(client, cw), "連雲港市區的姑姑")[1]) == {mid}
    assert set(search_all(via_api(client, cw), "錢語嫣")[1]) == {mid}
    assert set(search_all(via_api(client, cw), "母亲在台湾工厂")[1]) == {hid}   # stored traditional, asked simplified
    assert set(search_all(via_api(client, cw), "母親在臺灣工廠")[1]) == {hid}
    body = search(client, cw, "連雲港港口碼頭")
    assert "<mark>连云港港口码头</mark>" in body["hits"][0]["snippet"]
    # Outside the region the same query finds nothing.
    assert search_all(via_api(client, tokens["caseworker.guannan"]), "連雲港港口碼頭") == (0, [])


# Audit ------------------------------------------------------------------------------------------------


def audit_rows(rt: Runtime) -> list[Any]:
    return run_sql(rt, "SELECT * FROM audit_events ORDER BY seq")


def test_one_audit_event_per_search_with_the_query_hash_never_the_query(client, tokens, rt):
    cw = tokens["caseworker.haizhou"]
    auditor = tokens["auditor.city"]
    r = client.post("/api/v1/households", json=household_body(notes="鸜鹆童年纪事"), headers=cw)
    assert r.status_code == 201, r.text
    rt.indexer.drain()

    queries = ["鸜鹆童年", "鸜鹆童年 紀事", "齉齉鱻不存在"]
    for q in queries:
        before = len(audit_rows(rt))
        body = search(client, cw, q, limit=5)
        rows = audit_rows(rt)
        assert len(rows) == before + 1, [r.action for r in rows[before:]]
        ev = rows[-1]
        details = ev.details if isinstance(ev.details, dict) else json.loads(ev.details)
        assert (ev.action, ev.outcome) == ("search:index:query", "allowed")
        assert details["query"] == rt.ring.keyed_hash("search-query", normalize(q))
        assert details["total"] == body["total"] and details["page"] == len(body["hits"])
    assert details["total"] == 0
    # The same words in either script are one query: the same keyed hash.
    search(client, cw, "鸜鹆童年 纪事")
    ev = audit_rows(rt)[-1]
    assert (ev.details if isinstance(ev.details, dict) else json.loads(ev.details))["query"] == \
        rt.ring.keyed_hash("search-query", normalize("鸜鹆童年 紀事"))

    # A refused search is one event too.
    before = len(audit_rows(rt))
    r = client.get("/api/v1/search", params={"q": "鸜鹆童年"}, headers=auditor)
    assert r.status_code == 403
    rows = audit_rows(rt)
    assert len(rows) == before + 1 and (rows[-1].action, rows[-1].outcome) == ("search:index:query", "denied")

    # No query, in any form, anywhere in the log.
    dump = "\n".join(repr(tuple(row)) for row in audit_rows(rt))
    dump_escaped = dump.encode("ascii", "backslashreplace").decode()
    for q in queries + ["鸜鹆", "纪事", "紀事"]:
        for form in (q, json.dumps(q)[1:-1]):
            assert form not in dump
            assert form not in dump_escaped


# Scope ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserSpec:
    role: str
    region: str
    org_type: str = ""


@dataclass
class Made:
    """A record made for one example, and what is true of it."""

    id: str
    kind: str  # minor | household | referral_notice
    region: str
    sealed: bool = False
    grantee: str | None = None  # username holding an active grant to it


MARK_A = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥春夏秋冬东南西北"
MARK_B = "梅兰竹菊松柏桃李杏桂荷莲山川河海湖泉石玉金银铜铁"


class World:
    """One archive for every example of a property test: users made on demand, new records each time."""

    def __init__(self, rt: Runtime, http: TestClient):
        self.rt, self.http = rt, http
        self.headers: dict[str, dict[str, str]] = {}
        self.usernames: dict[UserSpec, str] = {}
        self.orgs: dict[tuple[str, str], str] = {}
        self.examples = count()
        self.writer = self.user(UserSpec("caseworker", CITY, "civil_affairs"))
        self.custodian = login(http, "custodian.city")

    def user(self, spec: UserSpec) -> str:
        if spec not in self.usernames:
            n = len(self.usernames)
            username = f"prop.{spec.role}.{n}"
            with self.rt.db.session() as s:
                key = (spec.org_type, spec.region)
                if key not in self.orgs:
                    org = Org(id=new_id("org"), name=f"测试单位{len(self.orgs)}", type=spec.org_type,
                              region_code=spec.region, doc_prefix=f"测{len(self.orgs)}发")
                    s.add(org)
                    s.flush()
                    self.orgs[key] = org.id
                org = s.get(Org, self.orgs[key])
                create_user(s, self.rt.passwords, username=username, display_name=f"测试用户{n}", org=org,
                            roles=[spec.role], password=self.rt.settings.demo_password.get_secret_value(),
                            now=self.rt.clock())
                s.commit()
            self.usernames[spec] = username
            self.headers[username] = login(self.http, username)
        return self.usernames[spec]

    def post(self, headers: dict[str, str], path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.http.post(path, json=body, headers=headers)
        assert r.status_code in (200, 201), (path, r.text)
        return r.json()

    def marker(self) -> str:
        n = next(self.examples)
        return "标记" + MARK_A[n // len(MARK_B) % len(MARK_A)] + MARK_B[n % len(MARK_B)]

    def household(self, region: str, notes: str) -> str:
        return self.post(self.headers[self.writer], "/api/v1/households", household_body(region, notes=notes))["id"]

    def minor(self, hid: str, region: str, notes: str | None) -> dict[str, Any]:
        idn, birth = unique_id_number(region[:6])
        return self.post(self.headers[self.writer], "/api/v1/minors", minor_body(
            hid, name="孙浩然", id_number=idn, birth_date=birth.isoformat(), notes=notes))

    def seal(self, rid: str) -> None:
        self.post(self.custodian, f"/api/v1/records/{rid}/seal",
                  {"legal_basis": "cpl_286_1", "case_number": f"（2026）苏0706刑初{sum(map(ord, rid))}号"})

    def unseal(self, rid: str) -> None:
        self.post(self.custodian, f"/api/v1/records/{rid}/unseal",
                  {"cause": "undiscovered_crime", "legal_basis": "spp_rules_485"})

    def grant(self, requester: str, minor: dict[str, Any]) -> None:
        req = self.post(self.headers[requester], "/api/v1/sealed-requests", {
            "case_number": "（2026）苏0706刑初1号", "legal_basis": "cpl_286_judicial",
            "purpose": "办案需要", "subject": {"name": minor["name"], "id_number": minor["id_number"]}})
        self.post(self.custodian, f"/api/v1/sealed-requests/{req['id']}/decision",
                  {"decision": "approve", "reason": "符合法定条件"})

    def make(self, spec: dict[str, Any], marker: str, requester: str | None) -> Made:
        region = spec["region"]
        if spec["kind"] == "household":
            return Made(self.household(region, f"家庭备注{marker}"), "household", region)
        hid = self.household(region, "父母外出务工")
        if spec["kind"] == "minor":
            m = self.minor(hid, region, f"备注{marker}")
            made = Made(m["id"], "minor", region)
            if spec["sealed"]:
                self.seal(m["id"])
                made.sealed = True
            return made
        subject = self.minor(hid, region, None)
        fields = {
            "recipient": "连云港市教育局", "minor_name": subject["name"], "found_on": "2026-11-18",
            "situation": f"该生父母长期在外务工，{marker}，由祖母照料。", "requests": ["请协助开展学业帮扶。"],
            "contact": "张晓东", "contact_phone": "0518-85800000"}
        fields = record_fields("referral_notice", **fields)  # the kind's other fields from its example
        doc = self.post(self.headers[self.writer], "/api/v1/documents",
                        {"kind": "referral_notice", "subject_id": subject["id"], "fields": fields})
        made = Made(doc["id"], "referral_notice", region)
        if spec["sealed"]:
            self.seal(doc["id"])
            made.sealed = True
            if spec["granted"] and requester is not None:
                self.grant(requester, subject)
                made.grantee = requester
            if spec["unseal_after"]:
                self.unseal(doc["id"])
                made.sealed = False
        return made

    def readable(self, spec: UserSpec, username: str, rec: Made) -> bool:
        """The model: what policy says this user may read (independent of the search code)."""
        if rec.sealed:
            return rec.kind == "referral_notice" and rec.grantee == username
        if spec.role not in ("caseworker", "supervisor"):
            return False  # requesters and custodians read no case records or referral notices by region
        return self.rt.regions.is_within(rec.region, spec.region)

    def can_read(self, username: str, rec: Made) -> bool:
        """The read API's answer."""
        path = {"minor": "minors", "household": "households"}.get(rec.kind, "documents")
        r = self.http.get(f"/api/v1/{path}/{rec.id}", headers=self.headers[username])
        assert r.status_code in (200, 403, 404), r.text
        return r.status_code == 200


@pytest.fixture
def world(client: TestClient, rt: Runtime) -> World:
    """Made once per test: every Hypothesis example of the test shares it (and the runtime)."""
    return World(rt, client)


def _rec(kind: str, region: str, *, sealed: bool = False, granted: bool = False, unseal_after: bool = False
         ) -> dict[str, Any]:
    return {"kind": kind, "region": region, "sealed": sealed, "granted": granted, "unseal_after": unseal_after}


user_specs = st.builds(
    UserSpec,
    role=st.sampled_from(["caseworker", "supervisor", "custodian", "requester", "requester"]),
    region=st.sampled_from(ALL_REGIONS),
    org_type=st.sampled_from(["court", "procuratorate", "police"]),
).map(lambda u: UserSpec(u.role, u.region, u.org_type if u.role == "requester" else (
    "procuratorate" if u.role == "custodian" else "civil_affairs")))
record_specs = st.fixed_dictionaries({
    "kind": st.sampled_from(["minor", "minor", "household", "document"]),
    "region": st.sampled_from(VILLAGES),
    "sealed": st.booleans(),
    "granted": st.booleans(),
    "unseal_after": st.booleans(),
})


@hsettings(max_examples=25, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(users=st.lists(user_specs, min_size=1, max_size=3), records=st.lists(record_specs, min_size=1, max_size=4),
       kind=st.sampled_from([None, None, None, "minor", "household", "referral_notice"]))
# Always tried as well: a requester with grants (one of them to a record unsealed since), a township
# caseworker, a city supervisor and a custodian, over sealed and unsealed records inside and outside.
@example(users=[UserSpec("requester", "320706", "court"), UserSpec("caseworker", "320706001000", "civil_affairs")],
         records=[_rec("document", "320706001002", sealed=True, granted=True),
                  _rec("document", "320724002003", sealed=True, granted=True, unseal_after=True),
                  _rec("document", "320706001001", sealed=True), _rec("minor", "320706001003", sealed=True),
                  _rec("minor", "320706001001"), _rec("household", "320706002001"), _rec("document", "320706001003")],
         kind=None)
@example(users=[UserSpec("supervisor", "320700", "civil_affairs"), UserSpec("custodian", "320700", "procuratorate")],
         records=[_rec("document", "320703001001"), _rec("document", "320722002002", sealed=True, granted=True),
                  _rec("minor", "320724001001")],
         kind="referral_notice")
def test_search_never_shows_or_counts_what_the_caller_cannot_read(client, rt, world, users, records, kind):
    names = [world.user(u) for u in users]
    requester = next((n for u, n in zip(users, names, strict=True) if u.role == "requester"), None)
    marker = world.marker()
    made = [world.make(spec, marker, requester) for spec in records]
    rt.indexer.drain()

    for spec, username in zip(users, names, strict=True):
        expected = {m.id for m in made if world.readable(spec, username, m) and (kind is None or m.kind == kind)}
        # The model agrees with the read API, record by record.
        for m in made:
            assert world.can_read(username, m) == world.readable(spec, username, m), (spec, m)
        body = search(client, world.headers[username], marker, limit=50, **({"kind": kind} if kind else {}))
        hits = {h["id"] for h in body["hits"]}
        by_id = {m.id: m for m in made}
        for hid in hits:
            m = by_id[hid]
            if m.sealed:   # no sealed hit without a grant
                assert m.grantee == username, (spec, m)
            else:          # no hit outside the caller's region subtree
                assert rt.regions.is_within(m.region, spec.region), (spec, m)
        assert hits == expected, (spec, made)
        assert body["total"] == len(expected), (spec, made, body["total"])


def test_a_grant_stops_opening_a_record_once_it_is_unsealed(client, tokens, rt):
    """A grant names sealed records; once unsealed, the record is read by region and role, so a
    requester's search neither shows nor counts it (it once counted it without showing it)."""
    world = World(rt, client)
    court = tokens["court.haizhou"]
    world.headers["court.haizhou"] = court
    rec = world.make({"kind": "document", "region": "320706001001", "sealed": True, "granted": True,
                      "unseal_after": False}, "封存转介甲乙", "court.haizhou")
    rt.indexer.drain()
    assert search(client, court, "封存转介甲乙")["total"] == 1
    assert [h["id"] for h in search(client, court, "封存转介甲乙")["hits"]] == [rec.id]
    cw = tokens["caseworker.haizhou"]
    assert search(client, cw, "封存转介甲乙")["total"] == 0

    world.unseal(rec.id)
    rt.indexer.drain()
    assert client.get(f"/api/v1/documents/{rec.id}", headers=court).status_code == 404
    assert search(client, court, "封存转介甲乙") == {"total": 0, "hits": [], "next_cursor": None}
    assert [h["id"] for h in search(client, cw, "封存转介甲乙")["hits"]] == [rec.id]


def test_pages_follow_the_cursor_with_exact_totals(client, tokens, rt):
    cw = tokens["caseworker.haizhou"]
    ids = set()
    for i in range(7):
        r = client.post("/api/v1/households", json=household_body(notes=f"分页测试第{i}户"), headers=cw)
        assert r.status_code == 201, r.text
        ids.add(r.json()["id"])
    rt.indexer.drain()
    seen, cursor = [], None
    while True:
        body = search(client, cw, "分页测试", limit=3, **({"cursor": cursor} if cursor else {}))
        assert body["total"] == 7
        seen += [h["id"] for h in body["hits"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 7 and set(seen) == ids
    r = client.get("/api/v1/search", params={"q": "分页测试", "cursor": "bm90LWEtbnVtYmVy"}, headers=cw)
    assert r.status_code == 422
