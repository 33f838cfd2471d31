"""core.clock: the system clock is aware UTC; a ManualClock moves only when told, and a thread
waiting on it wakes when the test moves it past the deadline (or its event is set), not by real time."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from core.clock import CallableClock, Clock, ManualClock, SystemClock, as_clock, utcnow

T0 = datetime(2031, 5, 20, 8, 0, tzinfo=UTC)


def test_system_clock_is_aware_utc():
    clock = SystemClock()
    assert isinstance(clock, Clock)
    for now in (clock(), clock.now(), utcnow()):
        assert now.tzinfo is not None and now.utcoffset() == timedelta(0)
    assert clock.monotonic() <= clock.monotonic()


def test_manual_clock_moves_only_when_told():
    clock = ManualClock(T0)
    assert clock() == clock.now() == T0 and clock.monotonic() == 0.0
    assert clock.advance(seconds=90) == T0 + timedelta(seconds=90)
    clock.advance(timedelta(minutes=1))
    clock.advance(0.5)
    assert clock.now() == T0 + timedelta(seconds=150.5) and clock.monotonic() == 150.5
    clock.set(T0 + timedelta(days=1))
    assert clock.now() == T0 + timedelta(days=1)
    with pytest.raises(ValueError):
        clock.advance(seconds=-1)
    with pytest.raises(ValueError):
        clock.set(T0)
    with pytest.raises(ValueError):
        ManualClock(datetime(2031, 5, 20, 8, 0))  # naive


def sleeping_waiter(seconds: float) -> tuple[ManualClock, threading.Event, threading.Thread, list[bool]]:
    """A thread asleep in ``clock.wait(stop, seconds)`` on a manual clock; ``woke`` gets what the wait returned."""
    clock, stop = ManualClock(T0), threading.Event()
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(clock.wait(stop, seconds)))
    waiter.start()
    assert clock.wait_for_sleepers(1)
    return clock, stop, waiter, woke


def test_a_waiter_wakes_when_the_clock_passes_its_deadline():
    clock, stop, waiter, woke = sleeping_waiter(10)
    clock.advance(seconds=9)
    assert clock.sleepers() == 1 and not woke  # not yet: 1 s of its 10 left
    clock.advance(seconds=1)
    waiter.join(10)
    assert woke == [False] and clock.sleepers() == 0


def test_a_waiter_wakes_when_its_event_is_set():
    clock, stop, waiter, woke = sleeping_waiter(3600)
    stop.set()
    waiter.join(10)
    assert woke == [True] and clock.now() == T0


def test_wait_for_sleepers_gives_up_after_its_timeout():
    assert not ManualClock(T0).wait_for_sleepers(1, timeout=0.05)


def test_as_clock_keeps_a_plain_callables_time():
    assert isinstance(as_clock(None), SystemClock)
    manual = ManualClock(T0)
    assert as_clock(manual) is manual
    pinned = as_clock(lambda: T0)
    assert isinstance(pinned, CallableClock) and pinned() == pinned.now() == T0
    assert pinned.wait(threading.Event(), 0) is False  # real waits


def test_runtime_clock_takes_a_clock_or_a_callable(rt):
    assert isinstance(rt.clock, Clock)
    rt.clock = lambda: T0
    assert rt.clock() == T0 and isinstance(rt.clock, CallableClock)
    manual = ManualClock(T0)
    rt.clock = manual
    assert rt.clock is manual
