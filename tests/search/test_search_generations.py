"""Reindex without downtime, in process: a rebuild goes into a new generation while the server's
index keeps answering and indexing, and nothing changed during the rebuild is lost by the switch.

Two runtimes on one archive play the two processes: ``rt`` is ``shouhu serve`` (its app started, its
indexer thread stopped so that each drain happens at a known moment) and ``op`` is ``shouhu reindex``.
Changes land at the awkward moments: after the rebuild read the archive, and after it replayed the
outbox just before its switch. tantivy and Whoosh on both databases; the postgres engine on PostgreSQL.
The same under real processes (``shouhu serve`` answering searches while ``shouhu reindex`` runs) is
in test_reindex_online.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from main import create_app
from runtime import Runtime
from search.analyzer import Analyzer
from search.backends import Filters, Scope, SearchUnavailable, open_backend
from search.generations import FolderStore, LiveIndex
from tests.conftest import household_body, login, run_sql, seed_world

PAIRS = [("sqlite", "tantivy"), ("sqlite", "whoosh"),
         ("postgres", "tantivy"), ("postgres", "whoosh"), ("postgres", "postgres")]
every_engine = pytest.mark.parametrize(("backend", "engine"), PAIRS, indirect=["backend"], scope="session",
                                       ids=[f"{db}-{engine}" for db, engine in PAIRS])
embedded = pytest.mark.parametrize(("backend", "engine"), [p for p in PAIRS if p[1] != "postgres"],
                                   indirect=["backend"], scope="session",
                                   ids=[f"{db}-{engine}" for db, engine in PAIRS if engine != "postgres"])
CITY = Scope(region="320700")


def clean_postgres_search(rt: Runtime) -> None:
    if rt.db.dialect == "postgresql":
        run_sql(rt, "DROP TABLE IF EXISTS search_docs_build")
        run_sql(rt, "DELETE FROM search_docs")
        run_sql(rt, "DELETE FROM search_meta")


@pytest.fixture
def engine_settings(settings: Any, engine: str) -> Any:
    return settings.model_copy(update={"search_backend": engine})


@pytest.fixture
def server(engine_settings: Any) -> Iterator[tuple[Runtime, TestClient]]:
    """`shouhu serve`: the app on the test archive; its indexer drains only when the test says."""
    rt = Runtime.open(engine_settings, require_schema=False)
    rt.initialize()
    seed_world(rt)
    clean_postgres_search(rt)
    try:
        with TestClient(create_app(runtime=rt)) as client:
            rt.indexer.stop()
            yield rt, client
    finally:
        rt.close()
        clean_postgres_search(rt)


@pytest.fixture
def op(engine_settings: Any, server: tuple[Runtime, TestClient]) -> Iterator[Runtime]:
    """`shouhu reindex`: a second runtime on the same archive and index."""
    other = Runtime.open(engine_settings)
    try:
        yield other
    finally:
        other.close()


def found(rt: Runtime, q: str) -> set[str]:
    total, hits = rt.search_backend.search(rt.analyzer.query(q), CITY, Filters(), limit=50, offset=0)
    assert total == len(hits)
    return {i for i, _ in hits}


def household(client: TestClient, headers: dict[str, str], notes: str) -> str:
    r = client.post("/api/v1/households", json=household_body(notes=notes), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def outbox(rt: Runtime) -> int:
    return int(run_sql(rt, "SELECT count(*) FROM search_outbox")[0][0])


def generation(rt: Runtime) -> int:
    """The live generation as stored: the CURRENT file, or search_meta on the postgres engine."""
    if rt.settings.search_backend == "postgres":
        rows = run_sql(rt, "SELECT value FROM search_meta WHERE name = 'generation'")
        return int(rows[0][0]) if rows else 0
    root = rt.settings.effective_search_index_dir / rt.settings.search_backend
    return int((root / "CURRENT").read_text().strip().removeprefix("gen-"))


def generation_folders(rt: Runtime) -> list[str]:
    root = rt.settings.effective_search_index_dir / rt.settings.search_backend
    return sorted(p.name for p in root.iterdir() if p.is_dir())


@every_engine
def test_changes_made_during_a_rebuild_are_in_the_new_generation(server, op, monkeypatch):
    rt, client = server
    cw = login(client, "caseworker.haizhou")
    before = household(client, cw, "重建之前甲乙丙")
    edited = household(client, cw, "旧的说法丁戊己")
    hidden = household(client, cw, "只由重建收录庚辛")
    run_sql(rt, "DELETE FROM search_outbox WHERE record_id = :i", i=hidden)  # never reaches the live index
    rt.indexer.drain()
    assert found(rt, "重建之前甲乙丙") == {before} and found(rt, "只由重建收录庚辛") == set()
    first = generation(rt)

    during: list[str] = []

    def mid_build(done: int, total: int) -> None:
        """After the rebuild read the archive (one batch here): a new record and an edit."""
        if during:
            return
        during.append(household(client, cw, "重建期间壬癸子"))
        r = client.patch(f"/api/v1/households/{edited}", json={"notes": "新的说法丑寅卯"}, headers=cw)
        assert r.status_code == 200, r.text
        rt.indexer.drain()
        # The server's index answers throughout, and is kept current while the rebuild runs.
        assert found(rt, "重建之前甲乙丙") == {before}
        assert found(rt, "重建期间壬癸子") == {during[0]}
        assert found(rt, "新的说法丑寅卯") == {edited} and found(rt, "旧的说法丁戊己") == set()
        assert outbox(rt) == 2  # indexed, and kept for the generation being built

    late: list[str] = []
    replay = op.indexer.replay

    def replay_then_a_change(target: Any) -> int:
        n = replay(target)
        late.append(household(client, cw, "切换前一刻辰巳午"))  # after the replay, before the switch
        rt.indexer.drain()
        assert found(rt, "切换前一刻辰巳午") == {late[0]}
        return n

    monkeypatch.setattr(op.indexer, "replay", replay_then_a_change)
    assert op.indexer.reindex(progress=mid_build, workers=1) == 3  # the records when it began
    assert during and late
    assert generation(rt) > first
    if rt.settings.search_backend != "postgres":
        # The server still answers from the old generation until its indexer follows the switch
        # (the postgres engine's table is renamed in place: every node reads the new one at once).
        assert found(rt, "重建之前甲乙丙") == {before} and found(rt, "只由重建收录庚辛") == set()
        assert len(generation_folders(rt)) == 2  # the old one is open in the server: not deleted

    rt.indexer.drain()
    assert found(rt, "只由重建收录庚辛") == {hidden}  # only the rebuild indexed it: the new generation serves
    assert found(rt, "重建之前甲乙丙") == {before}
    assert found(rt, "重建期间壬癸子") == {during[0]}
    assert found(rt, "切换前一刻辰巳午") == {late[0]}
    assert found(rt, "新的说法丑寅卯") == {edited} and found(rt, "旧的说法丁戊己") == set()
    assert outbox(rt) == 0
    assert rt.live_index.generation == generation(rt)
    if rt.settings.search_backend != "postgres":  # the old generation is gone once nobody reads it
        assert generation_folders(rt) == [f"gen-{generation(rt):06d}"]
    else:
        assert run_sql(rt, "SELECT to_regclass('search_docs_build')")[0][0] is None


@every_engine
def test_a_rebuild_stopped_midway_leaves_the_index_as_it_was(server, op):
    rt, client = server
    cw = login(client, "caseworker.haizhou")
    before = household(client, cw, "重建之前甲乙丙")
    rt.indexer.drain()
    first = generation(rt)
    during: list[str] = []

    def stop(done: int, total: int) -> None:
        during.append(household(client, cw, "重建期间壬癸子"))
        rt.indexer.drain()
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"):
        op.indexer.reindex(progress=stop, workers=1)
    assert generation(rt) == first
    if rt.settings.search_backend != "postgres":
        assert generation_folders(rt) == [f"gen-{first:06d}"]  # the half-built one is thrown away
    else:
        assert run_sql(rt, "SELECT to_regclass('search_docs_build')")[0][0] is None
    assert found(rt, "重建之前甲乙丙") == {before} and found(rt, "重建期间壬癸子") == set(during)
    assert outbox(rt) == 1  # kept while the rebuild ran; released by the next pass
    rt.indexer.drain()
    assert outbox(rt) == 0


@every_engine
def test_one_rebuild_at_a_time(server, op):
    rt, _client = server
    rt.indexer.drain()
    with pytest.raises(RuntimeError, match="abandoned"), rt.live_index.rebuild():
        with pytest.raises(SearchUnavailable, match="another"):
            op.indexer.reindex(workers=1)
        raise RuntimeError("abandoned")
    assert op.indexer.reindex(workers=1) == 0


@embedded
def test_a_generation_built_with_another_key_is_not_followed(server, op):
    """Defense in depth: `shouhu reindex` cannot run with another master key (the key ring refuses
    it: test_reindex_online.py), and a server does not switch to a generation it cannot read."""
    rt, client = server
    cw = login(client, "caseworker.haizhou")
    before = household(client, cw, "重建之前甲乙丙")
    rt.indexer.drain()
    other = Analyzer(lambda token: rt.ring.keyed_hash("search-other", token, hex_chars=16))
    root = rt.settings.effective_search_index_dir / rt.settings.search_backend
    with LiveIndex(FolderStore(rt.settings.search_backend, root, key_check=other.check_value())).rebuild():
        pass
    with pytest.raises(SearchUnavailable, match="another key"):
        rt.indexer.drain()
    assert found(rt, "重建之前甲乙丙") == {before}  # still answered, from the generation it had
    op.indexer.reindex(workers=1)  # a rebuild with the archive's key replaces it
    rt.indexer.drain()
    assert found(rt, "重建之前甲乙丙") == {before}
    assert len(generation_folders(rt)) == 1


@embedded
def test_an_index_from_before_generations_serves_until_the_first_rebuild(engine_settings, engine):
    """An index kept in <index dir>/<engine> itself (no CURRENT) is generation 0."""
    rt = Runtime.open(engine_settings, require_schema=False)
    try:
        rt.initialize()
        seed_world(rt)
        index_dir = engine_settings.effective_search_index_dir
        legacy = open_backend(engine, folder=index_dir, db=rt.db, key_check=rt.analyzer.check_value())
        from search.indexer import Pending

        legacy.upsert([Pending("hh_legacy", "household", "household", ["320700", "320706"], [],
                               rt.clock().date(), False, ["旧版索引里的记录"]).done(
                                   rt.analyzer.text_tokens(["旧版索引里的记录"]))])
        legacy.close()
        assert found(rt, "旧版索引里的记录") == {"hh_legacy"}
        assert rt.live_index.generation == 0
        rt.indexer.reindex(workers=1)  # the archive has no such record: the rebuilt index drops it
        assert found(rt, "旧版索引里的记录") == set()
        root = index_dir / engine
        assert (root / "CURRENT").read_text().strip() == "gen-000001"
        assert sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.endswith(".lock")) == ["CURRENT"]
    finally:
        rt.close()


@embedded
def test_a_second_server_on_the_same_index_follows_the_switch(server, op, engine_settings):
    """A second process on the index folder (say `uvicorn --workers 2`) is not the indexer: it searches
    the current generation, and moves to a new one at its next search after the switch."""
    rt, client = server
    cw = login(client, "caseworker.haizhou")
    hidden = household(client, cw, "只由重建收录庚辛")
    run_sql(rt, "DELETE FROM search_outbox WHERE record_id = :i", i=hidden)
    rt.indexer.drain()  # rt is the indexer
    second = Runtime.open(engine_settings)
    try:
        second.indexer.drain()  # not elected: it leaves the outbox and the index alone
        assert found(second, "只由重建收录庚辛") == set()
        first = second.live_index.generation
        op.indexer.reindex(workers=1)
        assert found(second, "只由重建收录庚辛") == {hidden}  # followed CURRENT at once
        assert second.live_index.generation == generation(rt) != first
        assert len(generation_folders(rt)) == 2  # the indexer still serves the old one
        rt.indexer.drain()
        assert found(rt, "只由重建收录庚辛") == {hidden}
        assert generation_folders(rt) == [f"gen-{generation(rt):06d}"]  # nobody has the old one open
    finally:
        second.close()
