"""The timed checkpoint schedule signs checkpoints on its own in a running app.

The interval comes from settings (``audit_checkpoint_interval_seconds=1``) and
the time from the runtime's clock (a fixed one here, so the signed ``at`` is
known). The app runs with its lifespan (TestClient as a context manager), which
starts and stops the schedule; nothing is signed on demand.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from audit_support import audit_size
from conftest import Backend, login, make_settings, seed_world
from fastapi.testclient import TestClient

from access_control.actions import Action
from access_control.audit import EventDraft, format_time
from access_control.identity import system_actor
from main import create_app
from runtime import Runtime

NOW = datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
WAIT = 6.0  # seconds: a 1 s schedule has ticked several times by then


@pytest.fixture
def scheduled_rt(backend: Backend, data_dir: Any) -> Iterator[Runtime]:
    backend.reset()
    settings = make_settings(data_dir, backend.database_url(data_dir), audit_checkpoint_interval_seconds=1)
    rt = Runtime.open(settings, require_schema=False, clock=lambda: NOW)
    rt.initialize()
    seed_world(rt)
    try:
        yield rt
    finally:
        rt.close()


def checkpoints(rt: Runtime) -> list[dict[str, Any]]:
    with rt.db.read_session() as s:
        return rt.audit.checkpoints(s)



def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def test_schedule_signs_a_checkpoint_when_the_log_grew(scheduled_rt):
    rt = scheduled_rt
    assert checkpoints(rt) == []
    with TestClient(create_app(runtime=rt)) as client:
        headers = login(client, "caseworker.haizhou")  # appends a login event
        size = audit_size(rt)
        assert size >= 1
        assert wait_for(lambda: any(cp["size"] >= size for cp in checkpoints(rt))), checkpoints(rt)
        first = checkpoints(rt)
        assert [cp["size"] for cp in first] == [size]
        assert first[0]["at"] == format_time(NOW)  # the runtime's clock, as settings wired it

        # Nothing new in the log: the next ticks sign nothing.
        time.sleep(2.5)
        assert checkpoints(rt) == first

        # The log grows: the schedule signs the new size by itself.
        assert client.get("/api/v1/me", headers=headers).status_code == 200
        grown = audit_size(rt)
        assert grown > size
        assert wait_for(lambda: checkpoints(rt)[-1]["size"] == grown), checkpoints(rt)
        # The public endpoint publishes what the schedule signed.
        r = client.get("/api/v1/audit/checkpoints", headers=headers)
        assert r.status_code == 200, r.text
        assert [cp["size"] for cp in r.json()["items"]] == [size, grown]
    with rt.db.read_session() as s:
        result = rt.audit.verify(s)
    assert result.ok and result.checkpoints_checked == 2, result.as_dict()


def test_schedule_stops_with_the_app(scheduled_rt):
    rt = scheduled_rt
    with TestClient(create_app(runtime=rt)) as client:
        login(client, "caseworker.haizhou")
        assert wait_for(lambda: len(checkpoints(rt)) == 1)
    # After shutdown the log may grow, but no checkpoint is signed any more.
    with rt.db.session() as s:
        rt.audit.append(s, actor=system_actor("test"), request_id="req_after", at=NOW,
                        draft=EventDraft(action=Action.AUDIT_VERIFY, outcome="allowed", reason="test"))
        s.commit()
    time.sleep(2.5)
    assert len(checkpoints(rt)) == 1

