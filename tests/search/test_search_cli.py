"""The search index under the real ``shouhu`` command: a kill -9 loses nothing, reindex reruns safely.

- Crash: ``shouhu serve`` (SQLite, tantivy) takes households, minors and
  referral notices from several threads and is killed with SIGKILL mid-way.
  Restarted, its indexer drains the outbox; then every record the clients got
  a 201 for, and every record in the database, is in the index exactly once,
  and each acknowledged one is found by its phrase through the search API. A
  second run holds the index's writer lock from another process until the kill,
  so every acknowledged record is still only in the outbox when the server dies.
- ``shouhu reindex``, run twice on a demo archive between server runs, brings back
  exactly the hits the outbox-built index gave; on SQLite with tantivy and on a
  PostgreSQL database of its own with the postgres backend. (Under a running
  server: test_reindex_online.py.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import date, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest

from archive.schemas import id_check_char
from search.indexer import PARALLEL_MIN
from tests import conftest
from tests.cli_support import cli_env, fresh_postgres_database, login, output, run_cli, serving, sqlite_rows
from tests.conftest import current_generation, record_fields

pytestmark = pytest.mark.slow

HAIZHOU_VILLAGE = "320706001001"
CHARS = "春夏秋冬梅兰竹菊松柏桃李杏桂荷莲山川河海湖泉石玉金银铜铁风云雷雨"



def search_ids(http: httpx.Client, headers: dict[str, str], q: str) -> tuple[int, list[str]]:
    """Every hit of ``q`` (all pages); the total is the same on each page and equals the hits."""
    ids: list[str] = []
    cursor = None
    totals = set()
    while True:
        params: dict[str, Any] = {"q": q, "limit": 200, **({"cursor": cursor} if cursor else {})}
        r = http.get("/api/v1/search", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        totals.add(body["total"])
        ids += [h["id"] for h in body["hits"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(totals) == 1 and totals == {len(ids)}, (q, totals, len(ids))
    return totals.pop(), ids


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 90) -> None:
    conftest.wait_for(what, ok, timeout, poll=0.2)


# Crash ---------------------------------------------------------------------------------------------


class Writers:
    """Threads that create records through the API until the server dies; they keep every 201."""

    def __init__(self, base_url: str, headers: dict[str, str]):
        self.base_url, self.headers = base_url, headers
        self.acked: list[tuple[str, str, str]] = []  # (kind, id, phrase)
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.seq = count()
        self.stop = threading.Event()

    def phrase(self) -> tuple[int, str]:
        with self.lock:
            n = next(self.seq)
        return n, "崩溃测试" + CHARS[n // len(CHARS) // len(CHARS) % len(CHARS)] + CHARS[n // len(CHARS) % len(CHARS)] \
            + CHARS[n % len(CHARS)]

    def post(self, http: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            r = http.post(path, json=body, headers=self.headers)
        except httpx.TransportError as exc:  # the server died under us
            self.errors.append(type(exc).__name__)
            self.stop.set()
            return None
        assert r.status_code == 201, r.text
        return r.json()

    def ack(self, kind: str, rid: str, phrase: str) -> None:
        with self.lock:
            self.acked.append((kind, rid, phrase))

    def run(self, with_documents: bool) -> None:
        with httpx.Client(base_url=self.base_url, timeout=60) as http:
            while not self.stop.is_set():
                n, p = self.phrase()
                hh = self.post(http, "/api/v1/households", {
                    "region_code": HAIZHOU_VILLAGE, "address": "3组12号", "notes": f"家庭{p}"})
                if hh is None:
                    return
                self.ack("household", hh["id"], f"家庭{p}")
                birth = date(2012, 1, 1) + timedelta(days=n)
                first17 = f"320706{birth:%Y%m%d}{n % 1000:03d}"
                mn = self.post(http, "/api/v1/minors", {
                    "household_id": hh["id"], "name": "赵雨桐", "id_number": first17 + id_check_char(first17),
                    "birth_date": birth.isoformat(), "sex": "female", "categories": [3], "notes": f"儿童{p}"})
                if mn is None:
                    return
                self.ack("minor", mn["id"], f"儿童{p}")
                if with_documents:
                    # The minor's particulars (name, sex, age, address) come from its record.
                    fields = {
                        "recipient": "连云港市海州区教育局", "found_on": "2026-11-18",
                        "situation": f"该生父母长期在外务工，通报{p}，由祖母照料。",
                        "requests": ["请协助开展学业帮扶。"], "contact": "张晓东", "contact_phone": "0518-85800000"}
                    fields = record_fields("referral_notice", **fields)  # the kind's other fields from its example
                    doc = self.post(http, "/api/v1/documents",
                                    {"kind": "referral_notice", "subject_id": mn["id"], "fields": fields})
                    if doc is None:
                        return
                    self.ack("document", doc["id"], f"通报{p}")



def index_has(root: Path) -> Callable[[str], int]:
    """How many documents of the tantivy index carry this id (read-only, no writer)."""
    import tantivy

    ix = tantivy.Index.open(str(current_generation(root)))
    searcher = ix.searcher()

    def count_of(rid: str) -> int:
        return int(searcher.search(tantivy.Query.term_query(ix.schema, "id", rid), limit=1, count=True).count or 0)

    return count_of


@pytest.mark.parametrize("index_state", ["keeping-up", "locked"])
def test_kill_9_mid_write_loses_no_acknowledged_record(tmp_path, index_state):
    """``locked``: another process holds the index's writer lock for the whole first run, so every
    record acknowledged before the kill is committed but not yet indexed: the outbox alone brings
    them back. ``keeping-up``: the indexer runs alongside the writers, and the kill lands wherever."""
    data_dir = tmp_path / "var"
    env = cli_env(data_dir)
    run_cli(env, "init")
    run_cli(env, "demo", "--households", "5")
    tables = (("household", "households"), ("minor", "minors"), ("document", "documents"))
    demo_ids = {r[0] for _, table in tables for r in sqlite_rows(data_dir, f"SELECT id FROM {table}")}  # noqa: S608

    lock_holder = None
    if index_state == "locked":
        import tantivy

        run_cli(env, "reindex")  # the index folder, with the demo records; the outbox empty
        # The schema is read from the folder; holding a writer takes tantivy's writer lock.
        lock_holder = tantivy.Index.open(str(current_generation(data_dir / "index" / "tantivy"))).writer(
            heap_size=15_000_000)
    with serving(env, tmp_path / "serve-1.out") as server:
        with server.client() as http:
            headers = login(http, "caseworker.haizhou")
        writers = Writers(server.base_url, headers)
        threads = [threading.Thread(target=writers.run, args=(i == 0,), name=f"writer-{i}") for i in range(3)]
        for t in threads:
            t.start()
        def enough() -> bool:  # renders take longer than the other writes: wait for a few documents too
            kinds = [k for k, _, _ in list(writers.acked)]
            return (len(kinds) >= 40 and kinds.count("document") >= 3) or writers.stop.is_set()

        wait_for("40 acknowledged records, 3 of them documents", enough, 120)
        server.proc.kill()  # SIGKILL: no shutdown, no flush, mid-request
        server.proc.wait(timeout=15)
        writers.stop.set()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    acked = list(writers.acked)
    assert len(acked) >= 40 and {k for k, _, _ in acked} == {"household", "minor", "document"}
    left = sqlite_rows(data_dir, "SELECT count(*) FROM search_outbox")[0][0]
    in_db = {kind: {r[0] for r in sqlite_rows(data_dir, f"SELECT id FROM {table}")}  # noqa: S608
             for kind, table in tables}
    assert all(rid in in_db[kind] for kind, rid, _ in acked)  # committed before the 201
    if lock_holder is not None:
        assert left >= len(acked), (left, len(acked))  # nothing acknowledged was indexed yet
        del lock_holder  # the writer lock goes with the writer
    print(f"\ncrash: {len(acked)} acknowledged, {sum(map(len, in_db.values()))} records in the database, "
          f"{left} outbox rows left at the kill, client errors {sorted(set(writers.errors))}")

    with serving(env, tmp_path / "serve-2.out") as server, server.client() as http:
        wait_for("the outbox to drain",
                 lambda: sqlite_rows(data_dir, "SELECT count(*) FROM search_outbox")[0][0] == 0)
        headers = login(http, "caseworker.haizhou")
        missing = [(kind, rid, p) for kind, rid, p in acked if rid not in search_ids(http, headers, p)[1]]
        assert missing == []
        # Records committed while their 201 was lost in the kill are there too.
        acked_ids = {rid for _, rid, _ in acked}
        unacked = [(kind, rid) for kind, ids in in_db.items() for rid in ids - acked_ids - demo_ids]
        print(f"crash: {len(unacked)} records committed without a 201 reaching the client")
        for kind, rid in unacked:
            if kind == "document":
                continue  # read only as a PDF; checked in the index below
            r = http.get(f"/api/v1/{kind}s/{rid}", headers=headers)
            assert r.status_code == 200, r.text
            notes = r.json().get("notes") or ""
            if "崩溃测试" in notes:
                assert rid in search_ids(http, headers, notes)[1]
    # Every record of the database is in the index, exactly once.
    count_of = index_has(data_dir / "index" / "tantivy")
    counts = {rid: count_of(rid) for ids in in_db.values() for rid in ids}
    assert set(counts.values()) == {1}, {rid: c for rid, c in counts.items() if c != 1}
    log = (data_dir / "logs" / "shouhu.log").read_text()
    assert "unhandled" not in log
    # The locked run's indexer said why it could not index (without the records' content).
    assert ("search indexer: SearchUnavailable" in log) == (index_state == "locked")


# An index built with another key ---------------------------------------------------------------------


def test_an_index_of_another_key_answers_503_until_reindex_rebuilds_it(tmp_path):
    """The server starts and serves everything else; searches answer 503 in the one error shape and
    readiness names the index; `shouhu reindex` replaces the index and searching works again."""
    data_dir = tmp_path / "var"
    env = cli_env(data_dir)
    run_cli(env, "init")
    run_cli(env, "demo", "--households", "3")
    run_cli(env, "reindex")
    meta = current_generation(data_dir / "index" / "tantivy") / "shouhu-index.json"
    stored = json.loads(meta.read_text())
    meta.write_text(json.dumps({**stored, "key_check": "0" * len(stored["key_check"])}))  # "another key"

    with serving(env, tmp_path / "serve-broken.out", ready_path="/healthz") as server, server.client() as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503 and "search" in ready.text, ready.text
        headers = login(http, "caseworker.haizhou")
        r = http.get("/api/v1/search", params={"q": "幸福村"}, headers=headers)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert set(error) == {"code", "message", "details"} and error["code"]
        assert "幸福村" not in r.text
        assert http.get("/api/v1/households", params={"limit": 1}, headers=headers).status_code == 200

    rebuilt = run_cli(env, "reindex")
    assert "已删除并重建" in output(rebuilt)
    assert not meta.exists()  # the unusable generation is gone; the new one has the archive's key
    meta = current_generation(data_dir / "index" / "tantivy") / "shouhu-index.json"
    assert json.loads(meta.read_text())["key_check"] == stored["key_check"]
    with serving(env, tmp_path / "serve-rebuilt.out") as server, server.client() as http:
        headers = login(http, "caseworker.haizhou")
        minor = http.get("/api/v1/minors", params={"limit": 1}, headers=headers).json()["items"][0]
        assert minor["id"] in search_ids(http, headers, minor["name"])[1]
        assert http.get("/readyz").status_code == 200


# Reindex ---------------------------------------------------------------------------------------------


Scalar = Callable[[str], int]  # runs a SELECT count(*) on the archive's database


def snapshot(env: dict[str, str], tmp_path: Path, label: str, scalar: Scalar) -> dict[str, tuple[int, list[str]]]:
    """Every hit of a set of queries (names, ID numbers, places), as supervisor.city sees them
    once the server's indexer has drained the outbox."""
    with serving(env, tmp_path / f"serve-{label}.out") as server, server.client() as http:
        wait_for("the outbox to drain", lambda: scalar("SELECT count(*) FROM search_outbox") == 0)
        city = login(http, "supervisor.city")
        r = http.get("/api/v1/minors", params={"limit": 200}, headers=city)
        assert r.status_code == 200, r.text
        minors = r.json()["items"]
        queries = sorted({m["name"] for m in minors} | {m["id_number"] for m in minors[:10]}
                         | {"幸福村", "外出务工", "連雲港", "海州区", "祖母"})
        out = {q: search_ids(http, city, q) for q in queries}
        out = {q: (total, sorted(ids)) for q, (total, ids) in out.items()}
        for m in minors:  # every minor is found by its name (the snapshot is not vacuous)
            assert m["id"] in out[m["name"]][1], m["name"]
        return out


def reindex_twice_gives_the_same_hits(env: dict[str, str], tmp_path: Path, scalar: Scalar, *,
                                      households: int = 30) -> int:
    """Returns how many records each rebuild indexed."""
    run_cli(env, "init")
    loaded = output(run_cli(env, "demo", "--households", str(households)))
    minors = int(loaded.split("户家庭，")[1].split("名未成年人")[0])
    assert scalar("SELECT count(*) FROM search_outbox") > 30  # `shouhu demo` leaves the indexing to the server
    before = snapshot(env, tmp_path, "outbox", scalar)  # built by the server's indexer from the outbox
    for attempt in (1, 2):
        proc = run_cli(env, "reindex")
        backend = env.get("SHOUHU_SEARCH_BACKEND", "tantivy")
        assert f"搜索索引已重建（{backend}）：{households + minors} 条记录" in output(proc), output(proc)
        assert scalar("SELECT count(*) FROM search_outbox") == 0
        after = snapshot(env, tmp_path, f"reindex-{attempt}", scalar)
        assert after == before
    # Each rebuild is logged as the operator's.
    assert scalar("SELECT count(*) FROM audit_events WHERE action = 'search:index:rebuild'") == 2
    return households + minors


def test_reindex_reruns_safely_on_sqlite_with_tantivy(tmp_path):
    """Large enough that the text is tokenized in two worker processes (PARALLEL_MIN records)."""
    data_dir = tmp_path / "var"
    env = cli_env(data_dir, SHOUHU_REINDEX_WORKERS="2")
    records = reindex_twice_gives_the_same_hits(env, tmp_path, lambda sql: int(sqlite_rows(data_dir, sql)[0][0]),
                                                households=200)
    assert records >= PARALLEL_MIN
    assert (current_generation(data_dir / "index" / "tantivy") / "meta.json").is_file()


def test_reindex_reruns_safely_on_postgresql_with_the_postgres_backend(tmp_path):
    with fresh_postgres_database() as url:
        env = cli_env(tmp_path / "var", SHOUHU_DATABASE_URL=url, SHOUHU_SEARCH_BACKEND="postgres")

        def scalar(sql: str) -> int:
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://", 1)) as conn:
                row = conn.execute(sql).fetchone()  # type: ignore[call-overload]
                assert row is not None
                return int(row[0])

        reindex_twice_gives_the_same_hits(env, tmp_path, scalar)
        assert scalar("SELECT count(*) FROM search_docs") > 30
    assert not (tmp_path / "var" / "index").exists()  # nothing embedded was built
