"""Group commit of the events of reading requests (access_control.audit_writer).

- Events handed in while the writer waits for the database lock are committed together,
  in one transaction, and every caller returns only once its own event is durable.
- One event that cannot be written fails its own request only.
- Through the guard: a reading request's event is durable when ``authorize(commit=True)``
  returns (no event, no content), and a log that cannot be written refuses the read.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from audit_support import audit_blocker, audit_size
from sqlalchemy import event, select

from access_control.actions import Action
from access_control.audit import AuditEvent, AuditHead, EventDraft
from access_control.audit_writer import AuditWriter
from access_control.identity import User, actor_for
from access_control.policy import Resource
from core.errors import AuditUnavailable
from runtime import Runtime


def caseworker(rt: Runtime):
    with rt.db.session() as s:
        return actor_for(s, s.scalar(select(User).where(User.username == "caseworker.haizhou")))


@contextmanager
def log_locked(rt: Runtime) -> Iterator[None]:
    """Another transaction holds the log's head row (on SQLite: the write lock) until the block ends."""
    with rt.db.engine.connect() as conn, conn.begin():
        conn.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update())
        yield


def wait_until_queued(writer: AuditWriter, n: int) -> None:
    """Until ``n`` jobs wait in the writer's queue."""
    import time

    deadline = time.monotonic() + 30
    while writer._queue.qsize() != n:
        assert time.monotonic() < deadline, "requests never reached the writer"
        time.sleep(0.01)


def watch_batches(writer: AuditWriter) -> tuple[list[int], threading.Event]:
    """The size of each batch the writer commits, and an event set when it starts the first."""
    sizes: list[int] = []
    started = threading.Event()
    commit = writer._commit

    def counted(batch):
        sizes.append(len(batch))
        started.set()
        return commit(batch)

    writer._commit = counted
    return sizes, started


def commits(rt: Runtime) -> list[int]:
    seen: list[int] = []
    event.listen(rt.db.engine, "commit", lambda conn: seen.append(threading.get_ident()))
    return seen



def test_events_waiting_for_the_lock_are_committed_together_and_each_caller_waits_for_its_own(rt):
    actor = caseworker(rt)
    writer = AuditWriter(rt.db, rt.audit, timeout=30)
    before = audit_size(rt)
    seen = commits(rt)
    sizes, started = watch_batches(writer)
    drafts = [EventDraft(action=Action.HOUSEHOLD_READ, outcome="allowed", reason="test", resource_kind="household",
                         resource_id=f"hh_{i:020d}") for i in range(20)]
    try:
        with ThreadPoolExecutor(20) as pool:
            with log_locked(rt):
                # The first is taken by the writer, which then waits for the lock; the others queue.
                futures = [pool.submit(writer.append, actor, [drafts[0]], request_id="req_0", at=rt.clock())]
                assert started.wait(30)
                futures += [pool.submit(writer.append, actor, [d], request_id=f"req_{i}", at=rt.clock())
                            for i, d in enumerate(drafts) if i]
                wait_until_queued(writer, 19)
                assert not any(f.done() for f in futures)  # nobody returns before its event is durable
            for f in futures:
                f.result(timeout=30)
    finally:
        writer.close()
    assert audit_size(rt) == before + 20
    writer_commits = [t for t in seen if t == writer._thread.ident]
    assert sizes == [1, 19] and len(writer_commits) == 2  # the first alone (it waited for the lock), then 19
    with rt.db.read_session() as s:
        assert rt.audit.verify(s).ok
        ids = set(s.scalars(select(AuditEvent.request_id).where(AuditEvent.seq > before)))
    assert ids == {f"req_{i}" for i in range(20)}


def test_one_event_that_cannot_be_written_fails_only_its_own_request(rt):
    actor = caseworker(rt)
    writer = AuditWriter(rt.db, rt.audit, timeout=30)
    before = audit_size(rt)
    good = [EventDraft(action=Action.MINOR_READ, outcome="allowed", reason="test") for _ in range(5)]
    sizes, started = watch_batches(writer)
    bad = EventDraft(action=Action.MINOR_READ, outcome="allowed", reason="test", details={"x": {1, 2}})  # not JSON
    try:
        with ThreadPoolExecutor(6) as pool:
            with log_locked(rt):
                futures = [pool.submit(writer.append, actor, [good[0]], request_id="req_good", at=rt.clock())]
                assert started.wait(30)
                futures += [pool.submit(writer.append, actor, [d], request_id="req_good", at=rt.clock())
                            for d in good[1:]]
                wait_until_queued(writer, 4)
                failing = pool.submit(writer.append, actor, [bad], request_id="req_bad", at=rt.clock())
                wait_until_queued(writer, 5)
            for f in futures:
                f.result(timeout=30)
            with pytest.raises(AuditUnavailable):
                failing.result(timeout=30)
    finally:
        writer.close()
    assert sizes == [1, 5, 1, 1, 1, 1, 1]  # the batch of five failed, then each was tried alone
    assert audit_size(rt) == before + 5
    with rt.db.read_session() as s:
        assert rt.audit.verify(s).ok


def test_a_reading_requests_event_is_durable_before_authorize_returns(rt, settings):
    actor = caseworker(rt)
    writer = AuditWriter(rt.db, rt.audit, timeout=30)  # the runtime has one on PostgreSQL only
    assert (rt.audit_writer is not None) == (rt.db.dialect == "postgresql")
    before = audit_size(rt)
    with rt.db.request_session(write=False) as s:
        g = rt.guard(s, actor)
        g.writer = writer
        g.authorize(Action.REGION_LIST, Resource("region"), commit=True)
        assert audit_size(rt) == before + 1  # committed by the writer, seen from another connection
        assert [d.outcome for d in g._committed] == ["allowed"]
    with audit_blocker(settings) as blocker, rt.db.request_session(write=False) as s:
        blocker.block()
        g = rt.guard(s, actor)
        g.writer = writer
        with pytest.raises(AuditUnavailable):
            g.authorize(Action.REGION_LIST, Resource("region"), commit=True)
    writer.close()
    assert audit_size(rt) == before + 1
