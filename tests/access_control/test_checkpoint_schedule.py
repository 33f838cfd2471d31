"""The timed checkpoint schedule signs checkpoints on its own in a running app.

The interval comes from settings (``audit_checkpoint_interval_seconds=1``) and
the time from the runtime's clock: a ManualClock here, which the test advances
instead of sleeping, so the signed ``at`` is known and a tick happens exactly
when the test moves the clock. The app runs with its lifespan (TestClient as a
context manager), which starts and stops the schedule; nothing is signed on
demand.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_control.actions import Action
from access_control.audit import EventDraft, format_time
from access_control.identity import system_actor
from core.clock import ManualClock
from main import create_app
from runtime import Runtime
from tests.audit_support import audit_size
from tests.conftest import Backend, login, make_settings, seed_world

NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
INTERVAL = 1  # seconds on the clock between two ticks


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def scheduled_rt(backend: Backend, data_dir: Any, clock: ManualClock) -> Iterator[Runtime]:
    backend.reset()
    settings = make_settings(data_dir, backend.database_url(data_dir), audit_checkpoint_interval_seconds=INTERVAL)
    rt = Runtime.open(settings, require_schema=False, clock=clock)
    rt.initialize()
    seed_world(rt)
    try:
        yield rt
    finally:
        rt.close()


def checkpoints(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.read_session() as s:
        return rt.audit.checkpoints(s)



def tick(clock: ManualClock, times: int = 1) -> None:
    """Let the schedule tick ``times``: move the clock one interval, then wait (real time, bounded)
    until its thread has done the tick and waits on the clock again."""
    for _ in range(times):
        assert clock.wait_for_sleepers(1), "the schedule is not waiting on the clock"
        clock.advance(seconds=INTERVAL)
        assert clock.wait_for_sleepers(1), "the schedule did not come back from its tick"


def test_schedule_signs_a_checkpoint_when_the_log_grew(scheduled_rt, clock):
    rt = scheduled_rt
    assert checkpoints(rt) == []
    with TestClient(create_app(runtime=rt)) as client:
        headers = login(client, "caseworker.haizhou")  # appends a login event
        size = audit_size(rt)
        assert size >= 1
        assert clock.wait_for_sleepers(1)
        assert checkpoints(rt) == []  # nothing before the first tick
        tick(clock)
        first = checkpoints(rt)
        assert [cp["size"] for cp in first] == [size]
        # The runtime's clock, as settings wired it: one interval after the start.
        assert first[0]["at"] == format_time(NOW + timedelta(seconds=INTERVAL))

        # Nothing new in the log: the next ticks sign nothing.
        tick(clock, times=3)
        assert checkpoints(rt) == first

        # The log grows: the schedule signs the new size by itself, at its next tick.
        assert client.get("/api/v1/me", headers=headers).status_code == 200
        grown = audit_size(rt)
        assert grown > size
        tick(clock)
        assert checkpoints(rt)[-1]["size"] == grown, checkpoints(rt)
        # The public endpoint publishes what the schedule signed.
        r = client.get("/api/v1/audit/checkpoints", headers=headers)
        assert r.status_code == 200, r.text
        assert [cp["size"] for cp in r.json()["items"]] == [size, grown]
    with rt.db.read_session() as s:
        result = rt.audit.verify(s)
    assert result.ok and result.checkpoints_checked == 2, result.as_dict()


def test_schedule_stops_with_the_app(scheduled_rt, clock):
    rt = scheduled_rt
    with TestClient(create_app(runtime=rt)) as client:
        login(client, "caseworker.haizhou")
        tick(clock)
        assert len(checkpoints(rt)) == 1
    assert clock.sleepers() == 0  # the schedule's thread has ended
    # After shutdown the log may grow, but no checkpoint is signed any more.
    with rt.db.session() as s:
        rt.audit.append(s, actor=system_actor("test"), request_id="req_after", at=NOW,
                        draft=EventDraft(action=Action.AUDIT_VERIFY, outcome="allowed", reason="test"))
        s.commit()
    clock.advance(seconds=10 * INTERVAL)
    assert len(checkpoints(rt)) == 1

