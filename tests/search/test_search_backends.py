"""One suite, run unchanged against every search backend: tantivy, Whoosh and PostgreSQL.

tantivy and Whoosh are embedded indexes and run beside both databases; the
PostgreSQL backend lives in the PostgreSQL database and runs there only (the
SQLite x postgres pair is never generated, so nothing is skipped). Documents go
through the real Analyzer with the archive's real keyed hash (``rt.analyzer``),
so the backends only ever see blind tokens.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from runtime import Runtime
from search.analyzer import Analyzer, Tokens
from search.backends import Filters, IndexDoc, Scope, SearchBackend, SearchUnavailable, open_backend
from tests.conftest import clean_postgres_search_tables

PAIRS = [("sqlite", "tantivy"), ("sqlite", "whoosh"),
         ("postgres", "tantivy"), ("postgres", "whoosh"), ("postgres", "postgres")]
# ``backend`` (conftest's database fixture) is parametrized here with the engine, so the
# postgres engine is only paired with the PostgreSQL database.
every_engine = pytest.mark.parametrize(("backend", "engine"), PAIRS, indirect=["backend"], scope="session",
                                       ids=[f"{db}-{engine}" for db, engine in PAIRS])

CITY = "320700"
HAIZHOU = "320706"
HAIZHOU_TOWN = "320706001000"
HAIZHOU_VILLAGE = "320706001001"
HAIZHOU_VILLAGE_2 = "320706001002"
HAIZHOU_TOWN_2_VILLAGE = "320706002001"
GUANNAN_VILLAGE = "320724001001"
EVERYTHING = Scope(region=CITY)

Opener = Callable[..., SearchBackend]



@pytest.fixture
def open_index(rt: Runtime, engine: str, tmp_path: Path) -> Iterator[Opener]:
    """Opens the engine under test: ``open_index()`` with rt's key, or with another analyzer's key."""
    if engine == "postgres":
        clean_postgres_search_tables(rt)
    opened: list[SearchBackend] = []

    def open_(analyzer: Analyzer | None = None) -> SearchBackend:
        a = analyzer or rt.analyzer
        b = open_backend(engine, folder=tmp_path / "index", db=rt.db, key_check=a.check_value())
        opened.append(b)
        return b

    yield open_
    for b in opened:
        b.close()
    if engine == "postgres":
        clean_postgres_search_tables(rt)


def regions_of(rt: Runtime, code: str) -> list[str]:
    node = rt.regions.get(code)
    assert node is not None, code
    return [c for c in node.path.strip("/").split("/") if c]


def make_doc(rt: Runtime, doc_id: str, *texts: str, kind: str = "minor", region: str = HAIZHOU_VILLAGE,
             categories: tuple[int, ...] = (), day: date = date(2026, 3, 1), sealed: bool = False,
             analyzer: Analyzer | None = None) -> IndexDoc:
    tokens = Tokens()
    for t in texts:  # one part per field, as the indexer does
        tokens.extend((analyzer or rt.analyzer).tokens(t))
    record_kind = kind if kind in ("minor", "household") else "document"
    return IndexDoc(doc_id, record_kind, kind, regions_of(rt, region), list(categories), day, sealed,
                    tokens.grams, tokens.words)


def find(rt: Runtime, b: SearchBackend, q: str, scope: Scope = EVERYTHING, f: Filters | None = None, *,
         limit: int = 100, offset: int = 0, analyzer: Analyzer | None = None) -> tuple[int, list[str]]:
    total, hits = b.search((analyzer or rt.analyzer).query(q), scope, f or Filters(), limit=limit, offset=offset)
    return total, [i for i, _ in hits]


def ids(rt: Runtime, b: SearchBackend, q: str, scope: Scope = EVERYTHING, f: Filters | None = None) -> set[str]:
    total, hits = find(rt, b, q, scope, f)
    assert total == len(hits), (q, total, hits)  # one page holds them all: the total is exact
    return set(hits)


# upsert, delete, clear, count -----------------------------------------------------------


@every_engine
def test_upsert_count_delete_clear(rt, open_index):
    b = open_index()
    assert b.count() == 0
    assert find(rt, b, "王子涵") == (0, [])
    b.upsert([make_doc(rt, "mn_a", "王子涵", "海州区新安街道幸福村3组12号"),
              make_doc(rt, "mn_b", "李浩宇", "灌南县东湖镇"),
              make_doc(rt, "doc_c", "关于王子涵的情况通报", kind="referral_notice")])
    assert b.count() == 3
    assert ids(rt, b, "王子涵") == {"mn_a", "doc_c"}
    assert ids(rt, b, "浩宇") == {"mn_b"}
    assert ids(rt, b, "幸福村") == {"mn_a"}

    b.delete(["mn_a"])
    assert b.count() == 2
    assert ids(rt, b, "王子涵") == {"doc_c"}
    b.delete(["mn_a", "no_such_id"])  # deleting what is not there is harmless
    assert b.count() == 2
    b.delete([])
    b.upsert([])

    b.clear()
    assert b.count() == 0
    assert find(rt, b, "浩宇") == (0, [])
    b.upsert([make_doc(rt, "mn_b", "李浩宇")])  # usable after a clear
    assert ids(rt, b, "浩宇") == {"mn_b"}


@every_engine
def test_reupsert_is_idempotent_and_replaces_content(rt, open_index):
    b = open_index()
    docs = [make_doc(rt, f"mn_{i}", f"张{n}", "幸福村") for i, n in enumerate(["一诺", "俊杰", "思远"])]
    b.upsert(docs)
    b.upsert(docs)
    b.upsert(docs[:1])
    assert b.count() == 3
    assert find(rt, b, "幸福村")[0] == 3
    assert ids(rt, b, "一诺") == {"mn_0"}

    # The same id with new text: the old text is gone, the new is found, still one document.
    b.upsert([make_doc(rt, "mn_0", "张雨桐", "东风村", sealed=False)])
    assert b.count() == 3
    assert ids(rt, b, "一诺") == set()
    assert ids(rt, b, "雨桐") == {"mn_0"}
    assert ids(rt, b, "幸福村") == {"mn_1", "mn_2"}
    # ... and new flags: re-upserted as sealed, it leaves the unsealed scope.
    b.upsert([make_doc(rt, "mn_0", "张雨桐", sealed=True)])
    assert ids(rt, b, "雨桐") == set()
    assert ids(rt, b, "雨桐", Scope(region=None, grants=["mn_0"])) == {"mn_0"}


@every_engine
def test_reopened_index_keeps_its_documents(rt, open_index):
    b = open_index()
    b.upsert([make_doc(rt, "mn_a", "王子涵")])
    b.close()
    again = open_index()
    assert again.count() == 1
    assert ids(rt, again, "子涵") == {"mn_a"}


# phrases, separators, normalisation ----------------------------------------------------------


@every_engine
def test_phrase_needs_adjacent_bigrams(rt, open_index):
    b = open_index()
    # Both bigrams of 子涵宇 (子涵, 涵宇) occur in mn_apart, but never next to each other.
    b.upsert([make_doc(rt, "mn_apart", "王子涵和刘涵宇是同学"),
              make_doc(rt, "mn_adjacent", "陈子涵宇")])
    assert ids(rt, b, "子涵宇") == {"mn_adjacent"}
    assert ids(rt, b, "子涵") == {"mn_apart", "mn_adjacent"}
    assert ids(rt, b, "涵宇") == {"mn_apart", "mn_adjacent"}
    assert ids(rt, b, "王子涵和刘") == {"mn_apart"}
    assert ids(rt, b, "王子涵刘") == set()
    # Several terms: each is a phrase and all must appear, anywhere.
    assert ids(rt, b, "王子涵 同学") == {"mn_apart"}
    assert ids(rt, b, "陈子涵 同学") == set()
    # One CJK character matches only where it stands alone (names are two or more).
    assert ids(rt, b, "涵") == set()


@every_engine
def test_separator_never_matches_across_runs_or_fields(rt, open_index):
    b = open_index()
    b.upsert([
        make_doc(rt, "mn_punct", "王子，涵宇"),                 # punctuation between the runs
        make_doc(rt, "mn_fields", "李明", "轩昂"),               # two fields: 李明 | 轩昂
        make_doc(rt, "mn_latin", "张三abc丰收"),                 # a Latin word between CJK runs
        make_doc(rt, "mn_number", "电话13912345678王五"),        # a phone number between runs
    ])
    assert ids(rt, b, "子涵") == set()
    assert ids(rt, b, "王子涵宇") == set()
    assert ids(rt, b, "王子") == {"mn_punct"}
    assert ids(rt, b, "王子，涵宇") == {"mn_punct"}      # the query splits the same way: two phrases
    assert ids(rt, b, "王子 涵宇") == {"mn_punct"}
    assert ids(rt, b, "明轩") == set()
    assert ids(rt, b, "李明轩昂") == set()
    assert ids(rt, b, "李明 轩昂") == {"mn_fields"}
    assert ids(rt, b, "三丰") == set()
    assert ids(rt, b, "abc") == {"mn_latin"}
    assert ids(rt, b, "张三ABC丰收") == {"mn_latin"}      # lower-cased, and the same runs
    assert ids(rt, b, "话王") == set()
    assert ids(rt, b, "13912345678") == {"mn_number"}
    assert ids(rt, b, "1391234") == set()                 # phone and ID numbers are whole tokens
    assert ids(rt, b, "电话") == {"mn_number"}


@every_engine
def test_traditional_script_and_full_width_forms_are_normalised(rt, open_index):
    b = open_index()
    b.upsert([make_doc(rt, "doc_t", "连云港市海州区", "ＡＢＣ１２３", kind="referral_notice"),
              make_doc(rt, "mn_id", "32070620150301001X")])
    assert ids(rt, b, "連雲港") == {"doc_t"}
    assert ids(rt, b, "海州區") == {"doc_t"}
    assert ids(rt, b, "abc123") == {"doc_t"}
    assert ids(rt, b, "32070620150301001x") == {"mn_id"}
    assert ids(rt, b, "32070620150301001X") == {"mn_id"}


# filters -------------------------------------------------------------------------------------


@every_engine
def test_filters_kind_region_category_dates(rt, open_index):
    b = open_index()
    b.upsert([
        make_doc(rt, "mn_1", "留守儿童甲", kind="minor", region=HAIZHOU_VILLAGE, categories=(3,),
                 day=date(2026, 1, 10)),
        make_doc(rt, "mn_2", "留守儿童乙", kind="minor", region=GUANNAN_VILLAGE, categories=(3, 5),
                 day=date(2026, 2, 20)),
        make_doc(rt, "hh_3", "留守儿童丙", kind="household", region=HAIZHOU_VILLAGE_2, day=date(2026, 3, 1)),
        make_doc(rt, "doc_4", "留守儿童丁", kind="referral_notice", region=HAIZHOU_TOWN_2_VILLAGE,
                 categories=(4,), day=date(2026, 3, 31)),
        make_doc(rt, "doc_5", "留守儿童戊", kind="dropout_notice", region=GUANNAN_VILLAGE, categories=(5,),
                 day=date(2025, 12, 31)),
    ])
    q = "留守儿童"
    assert ids(rt, b, q) == {"mn_1", "mn_2", "hh_3", "doc_4", "doc_5"}
    assert ids(rt, b, q, f=Filters(kind="minor")) == {"mn_1", "mn_2"}
    assert ids(rt, b, q, f=Filters(kind="household")) == {"hh_3"}
    assert ids(rt, b, q, f=Filters(kind="referral_notice")) == {"doc_4"}
    assert ids(rt, b, q, f=Filters(kind="guardianship_designation")) == set()
    assert ids(rt, b, q, f=Filters(region=HAIZHOU)) == {"mn_1", "hh_3", "doc_4"}
    assert ids(rt, b, q, f=Filters(region=HAIZHOU_TOWN)) == {"mn_1", "hh_3"}
    assert ids(rt, b, q, f=Filters(region=HAIZHOU_VILLAGE)) == {"mn_1"}
    assert ids(rt, b, q, f=Filters(region=CITY)) == {"mn_1", "mn_2", "hh_3", "doc_4", "doc_5"}
    assert ids(rt, b, q, f=Filters(category=3)) == {"mn_1", "mn_2"}
    assert ids(rt, b, q, f=Filters(category=5)) == {"mn_2", "doc_5"}
    assert ids(rt, b, q, f=Filters(category=1)) == set()
    # Date bounds are inclusive on both ends.
    assert ids(rt, b, q, f=Filters(date_from=date(2026, 2, 20))) == {"mn_2", "hh_3", "doc_4"}
    assert ids(rt, b, q, f=Filters(date_to=date(2026, 1, 10))) == {"mn_1", "doc_5"}
    assert ids(rt, b, q, f=Filters(date_from=date(2026, 1, 1), date_to=date(2026, 3, 1))) == {"mn_1", "mn_2", "hh_3"}
    assert ids(rt, b, q, f=Filters(date_from=date(2026, 3, 31), date_to=date(2026, 3, 31))) == {"doc_4"}
    assert ids(rt, b, q, f=Filters(date_from=date(2027, 1, 1))) == set()
    # Filters combine.
    assert ids(rt, b, q, f=Filters(kind="minor", region=HAIZHOU, category=3)) == {"mn_1"}
    assert ids(rt, b, q, f=Filters(region=GUANNAN_VILLAGE, category=5, date_to=date(2026, 1, 1))) == {"doc_5"}
    # A filter never widens the scope.
    haizhou = Scope(region=HAIZHOU)
    assert ids(rt, b, q, haizhou, Filters(region=GUANNAN_VILLAGE)) == set()
    assert ids(rt, b, q, haizhou, Filters(category=5)) == set()


# scope ---------------------------------------------------------------------------------------


@every_engine
def test_scope_region_subtree_sealed_grants_kinds(rt, open_index):
    b = open_index()
    b.upsert([
        make_doc(rt, "mn_v1", "困境儿童", region=HAIZHOU_VILLAGE),
        make_doc(rt, "mn_v2", "困境儿童", region=HAIZHOU_VILLAGE_2),
        make_doc(rt, "mn_t2", "困境儿童", region=HAIZHOU_TOWN_2_VILLAGE),
        make_doc(rt, "mn_gn", "困境儿童", region=GUANNAN_VILLAGE),
        make_doc(rt, "hh_v1", "困境儿童", kind="household", region=HAIZHOU_VILLAGE),
        make_doc(rt, "doc_v1", "困境儿童", kind="referral_notice", region=HAIZHOU_VILLAGE),
        make_doc(rt, "doc_sealed_v1", "困境儿童", kind="referral_notice", region=HAIZHOU_VILLAGE, sealed=True),
        make_doc(rt, "mn_sealed_v1", "困境儿童", region=HAIZHOU_VILLAGE, sealed=True),
        make_doc(rt, "doc_sealed_gn", "困境儿童", kind="dropout_notice", region=GUANNAN_VILLAGE, sealed=True),
    ])
    q = "困境儿童"
    unsealed = {"mn_v1", "mn_v2", "mn_t2", "mn_gn", "hh_v1", "doc_v1"}
    assert ids(rt, b, q, Scope(region=CITY)) == unsealed
    assert ids(rt, b, q, Scope(region=HAIZHOU)) == unsealed - {"mn_gn"}
    assert ids(rt, b, q, Scope(region=HAIZHOU_TOWN)) == {"mn_v1", "mn_v2", "hh_v1", "doc_v1"}
    assert ids(rt, b, q, Scope(region=HAIZHOU_VILLAGE)) == {"mn_v1", "hh_v1", "doc_v1"}
    assert ids(rt, b, q, Scope(region="320706001003")) == set()   # a village with nothing
    assert ids(rt, b, q, Scope(region="320724")) == {"mn_gn"}
    assert ids(rt, b, q, Scope(region="999999")) == set()         # an unknown region sees nothing
    # Sealed records: never through the region, only through a grant (wherever they are).
    grants = ["doc_sealed_gn", "doc_sealed_v1"]
    assert ids(rt, b, q, Scope(region=HAIZHOU_VILLAGE, grants=grants)) == {
        "mn_v1", "hh_v1", "doc_v1", "doc_sealed_v1", "doc_sealed_gn"}
    assert ids(rt, b, q, Scope(region=None, grants=["doc_sealed_gn"])) == {"doc_sealed_gn"}
    # A grant names sealed records: it never opens an unsealed record outside the region.
    assert ids(rt, b, q, Scope(region=None, grants=["mn_gn", "doc_v1"])) == set()
    assert ids(rt, b, q, Scope(region=HAIZHOU_VILLAGE, grants=["mn_gn"])) == {"mn_v1", "hh_v1", "doc_v1"}
    assert ids(rt, b, q, Scope(region=None)) == set()
    assert ids(rt, b, q, Scope(region=None, grants=["no_such_record"])) == set()
    # Kinds: None is any kind; a list limits the region part (not the grants); [] is none.
    assert ids(rt, b, q, Scope(region=HAIZHOU, kinds=["minor", "household"])) == {"mn_v1", "mn_v2", "mn_t2", "hh_v1"}
    assert ids(rt, b, q, Scope(region=HAIZHOU, kinds=["referral_notice"])) == {"doc_v1"}
    assert ids(rt, b, q, Scope(region=HAIZHOU, kinds=["dropout_notice"])) == set()
    assert ids(rt, b, q, Scope(region=HAIZHOU, kinds=[])) == set()
    assert ids(rt, b, q, Scope(region=CITY, kinds=[], grants=["doc_sealed_gn"])) == {"doc_sealed_gn"}
    # Filters narrow inside the scope, grants included.
    assert ids(rt, b, q, Scope(region=CITY, grants=grants), Filters(kind="dropout_notice")) == {"doc_sealed_gn"}
    assert ids(rt, b, q, Scope(region=CITY, grants=grants), Filters(region=GUANNAN_VILLAGE)) == {
        "mn_gn", "doc_sealed_gn"}


# pagination -----------------------------------------------------------------------------------


@every_engine
def test_pagination_offsets_and_exact_totals(rt, open_index):
    b = open_index()
    docs = [make_doc(rt, f"mn_{i:02d}", f"帮扶对象{'甲乙丙丁' * (i % 3 + 1)}",
                     region=HAIZHOU_VILLAGE if i % 4 else GUANNAN_VILLAGE, sealed=i % 7 == 6)
            for i in range(27)]
    b.upsert(docs)
    readable = {d.id for d in docs if not d.sealed}
    in_haizhou = {d.id for d in docs if not d.sealed and HAIZHOU in d.regions}
    for scope, expected in ((Scope(region=CITY), readable), (Scope(region=HAIZHOU), in_haizhou)):
        seen: list[str] = []
        for offset in range(0, 40, 10):
            total, page = find(rt, b, "帮扶对象", scope, limit=10, offset=offset)
            assert total == len(expected), (offset, total)
            assert len(page) == max(0, min(10, len(expected) - offset))
            seen += page
        assert len(seen) == len(set(seen)) and set(seen) == expected
        # Far past the end: no hits, and still the exact total.
        assert find(rt, b, "帮扶对象", scope, limit=5, offset=500) == (len(expected), [])
        assert find(rt, b, "帮扶对象", scope, limit=1)[0] == len(expected)
    assert find(rt, b, "不存在的词", limit=10, offset=20) == (0, [])



@every_engine
def test_exact_totals_across_segments_and_pages(rt, open_index):
    """Totals stay exact when the matches lie in several segments and fill more than a page.

    Written in several commits, as the indexer writes, so the embedded engines hold several
    segments. (Whoosh with ``optimize=False`` counted 33 of 178 matches of a phrase this way.)
    """
    b = open_index()
    docs = []
    for i in range(60):
        text = ("监护人联系电话已登记" if i % 3 else "通过电话与孩子联系一次") + f"，第{i}户"
        docs.append(make_doc(rt, f"mn_{i:02d}", text, sealed=i % 11 == 10))
    for start in range(0, len(docs), 7):
        b.upsert(docs[start:start + 7])
    expected = {d.id for i, d in enumerate(docs) if i % 3 and not d.sealed}
    for limit in (1, 5, 20, 100):
        total, page = find(rt, b, "联系电话", limit=limit)
        assert total == len(expected), (limit, total)
        assert set(page) <= expected and len(page) == min(limit, len(expected))
    total, page = find(rt, b, "联系电话", limit=20, offset=20)
    assert total == len(expected) and len(page) == min(20, len(expected) - 20)
    # Both words, not as a phrase: every unsealed document.
    assert find(rt, b, "联系 电话", limit=3)[0] == sum(1 for d in docs if not d.sealed)


# the key ------------------------------------------------------------------------------------------


@every_engine
def test_an_index_opened_with_another_key_is_refused(rt, open_index):
    b = open_index()
    b.upsert([make_doc(rt, "mn_a", "王子涵")])
    b.close()
    # The same secret, another derivation: every token and the check value differ.
    other = Analyzer(lambda token: rt.ring.keyed_hash("search-other", token, hex_chars=16))
    assert other.check_value() != rt.analyzer.check_value()
    assert other.tokens("王子涵").grams != rt.analyzer.tokens("王子涵").grams
    with pytest.raises(SearchUnavailable):
        open_index(other)
    # The right key still opens it, with its documents.
    again = open_index()
    assert ids(rt, again, "王子涵") == {"mn_a"}


# scope and filters, as a property -------------------------------------------------------------


PLACES = [HAIZHOU_VILLAGE, HAIZHOU_VILLAGE_2, HAIZHOU_TOWN_2_VILLAGE, GUANNAN_VILLAGE]
SCOPES = [CITY, HAIZHOU, HAIZHOU_TOWN, HAIZHOU_VILLAGE, HAIZHOU_TOWN_2_VILLAGE, "320724", GUANNAN_VILLAGE, None]
KINDS_ = ["minor", "household", "referral_notice", "dropout_notice"]
DAYS = [date(2026, 1, 5), date(2026, 3, 1), date(2026, 6, 30), date(2026, 11, 28)]

@pytest.fixture
def one_index(open_index: Opener) -> SearchBackend:
    """One index for all the examples of a Hypothesis test (each example empties it first)."""
    return open_index()


doc_specs = st.lists(st.fixed_dictionaries({
    "kind": st.sampled_from(KINDS_), "region": st.sampled_from(PLACES), "sealed": st.booleans(),
    "categories": st.lists(st.integers(1, 5), max_size=2, unique=True), "day": st.sampled_from(DAYS),
}), min_size=1, max_size=8)


@every_engine
@hsettings(max_examples=30, deadline=None, database=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(docs=doc_specs, region=st.sampled_from(SCOPES), granted=st.lists(st.integers(0, 7), max_size=3),
       kinds=st.one_of(st.none(), st.lists(st.sampled_from(KINDS_), max_size=2, unique=True)),
       f_kind=st.one_of(st.none(), st.sampled_from(KINDS_)),
       f_region=st.one_of(st.none(), st.sampled_from(SCOPES[:-1])),
       f_category=st.one_of(st.none(), st.integers(1, 5)),
       f_days=st.one_of(st.none(), st.tuples(st.sampled_from(DAYS), st.sampled_from(DAYS))))
def test_hits_and_totals_are_exactly_what_scope_and_filters_allow(rt, one_index, docs, region, granted, kinds,
                                                                 f_kind, f_region, f_category, f_days):
    """Random records and a random caller scope (region subtree, grants, kinds) and filters: the engine
    returns, and counts, exactly the records a plain model of the rules allows; nothing sealed without
    a grant, a grant opens only a sealed record, nothing outside the subtree."""
    # Hypothesis seeds the `random` module alike for every example, and Whoosh names its segments
    # with it: the same names again, over files of the example before. Real entropy, as in service.
    random.seed()
    b = one_index
    b.clear()
    made = [make_doc(rt, f"rec_{i}", f"共同标记词语{i}号", kind=d["kind"], region=d["region"],
                     categories=tuple(d["categories"]), day=d["day"], sealed=d["sealed"]) for i, d in enumerate(docs)]
    b.upsert(made)
    scope = Scope(region=region, grants=[f"rec_{i}" for i in granted if i < len(docs)], kinds=kinds)
    lo, hi = sorted(f_days) if f_days else (None, None)
    f = Filters(kind=f_kind, region=f_region, category=f_category, date_from=lo, date_to=hi)

    def allowed(i: int, d: dict) -> bool:
        where = regions_of(rt, d["region"])
        by_region = (region is not None and region in where and not d["sealed"]
                     and (kinds is None or d["kind"] in kinds))
        by_grant = f"rec_{i}" in scope.grants and d["sealed"]
        return (by_region or by_grant) and (f_kind is None or d["kind"] == f_kind) \
            and (f_region is None or f_region in where) and (f_category is None or f_category in d["categories"]) \
            and (lo is None or lo <= d["day"] <= hi)

    expected = {f"rec_{i}" for i, d in enumerate(docs) if allowed(i, d)}
    total, hits = find(rt, b, "共同标记词语", scope, f)
    assert (total, set(hits)) == (len(expected), expected)


def test_whoosh_opens_while_another_process_commits(rt, tmp_path, monkeypatch):
    """Whoosh lists its latest table of contents, then opens it; a commit in between (the server's
    indexer, while ``shouhu reindex`` probes the served index) removes the file it listed. Here a
    second writer commits at exactly that moment: opening must still succeed, on the new contents."""
    from whoosh.index import TOC

    from search.backends import WhooshBackend

    folder = tmp_path / "index"
    key = rt.analyzer.check_value()
    writer = WhooshBackend(folder, key_check=key)
    writer.upsert([make_doc(rt, "mn_a", "王子涵")])
    original = TOC._latest_generation.__func__
    raced: list[str] = []

    def latest_then_a_commit(cls, storage, indexname):
        listed = original(cls, storage, indexname)
        if not raced:
            raced.append("commit")
            writer.upsert([make_doc(rt, "mn_b", "李雨桐")])  # a new generation; the listed one is gone
        return listed

    monkeypatch.setattr(TOC, "_latest_generation", classmethod(latest_then_a_commit))
    reader = WhooshBackend(folder, key_check=key)
    assert raced == ["commit"]
    assert reader.count() == 2
    reader.close()
    writer.close()
