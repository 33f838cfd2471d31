"""The one clock: every deadline, expiry and schedule reads the time through a ``Clock``.

``Runtime.clock`` holds the process's clock (``SystemClock`` in production). Calling a clock gives
the aware UTC time, so ``rt.clock()`` reads as before. Tests pass a ``ManualClock`` and move it with
``advance()`` instead of sleeping: a thread waiting on it (the checkpoint schedule) wakes when the
test has moved the clock past its deadline, not when real seconds have passed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable


def utcnow() -> datetime:
    """The current time, aware, in UTC (the real clock: code with time rules takes a Clock or ``now``)."""
    return datetime.now(UTC)


@runtime_checkable
class Clock(Protocol):
    """Wall time for what is recorded and compared with stored times, a monotonic count for
    intervals, and a wait that ends early when its event is set."""

    def __call__(self) -> datetime:
        """The same as ``now()``."""
        ...

    def now(self) -> datetime:
        """The current time, aware, in UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a counter that never goes back (for intervals, rate windows)."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Block until ``event`` is set or ``seconds`` have passed on this clock: whether it is set."""
        ...


class SystemClock:
    """The real clock."""

    def __call__(self) -> datetime:
        return datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(seconds)


class CallableClock(SystemClock):
    """A plain ``() -> datetime`` (a pinned time in a test) as a Clock: its time; real intervals and waits."""

    def __init__(self, read: Callable[[], datetime]):
        self._read = read

    def __call__(self) -> datetime:
        return self._read()

    def now(self) -> datetime:
        return self._read()


class ManualClock:
    """A clock that stands still until the test moves it (``advance``, ``set``).

    ``wait`` blocks until the event is set or the test has advanced the clock past the waiter's
    deadline; ``wait_for_sleepers`` lets the test know that a background thread has finished its
    tick and is waiting on the clock again.
    """

    # How often a waiter looks at its event: setting an Event cannot wake this clock's condition.
    _EVENT_POLL = 0.02

    def __init__(self, start: datetime | None = None):
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("ManualClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._elapsed = 0.0
        self._cond = threading.Condition()
        self._deadlines: dict[int, float] = {}  # waiting thread's token -> its deadline (elapsed seconds)
        self._tokens = iter(range(2**62))

    def __call__(self) -> datetime:
        return self.now()

    def now(self) -> datetime:
        with self._cond:
            return self._now

    def monotonic(self) -> float:
        with self._cond:
            return self._elapsed

    def advance(self, delta: timedelta | float = 0.0, **parts: float) -> datetime:
        """Move the clock forward by ``delta`` (seconds or a timedelta) plus ``timedelta(**parts)``."""
        step = (delta if isinstance(delta, timedelta) else timedelta(seconds=delta)) + timedelta(**parts)
        if step < timedelta(0):
            raise ValueError("a clock does not go back")
        with self._cond:
            self._now += step
            self._elapsed += step.total_seconds()
            self._cond.notify_all()
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not earlier than now)."""
        self.advance(when - self.now())

    def wait(self, event: threading.Event, seconds: float) -> bool:
        with self._cond:
            token = next(self._tokens)
            self._deadlines[token] = self._elapsed + seconds
            self._cond.notify_all()  # a new sleeper, for wait_for_sleepers
            try:
                while not event.is_set() and self._elapsed < self._deadlines[token]:
                    self._cond.wait(self._EVENT_POLL)
            finally:
                del self._deadlines[token]
        return event.is_set()

    def sleepers(self) -> int:
        """How many threads are waiting on this clock for a deadline not yet reached."""
        with self._cond:
            return sum(1 for d in self._deadlines.values() if d > self._elapsed)

    def wait_for_sleepers(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Block (real time, at most ``timeout`` s) until ``count`` threads wait on a deadline ahead."""
        with self._cond:
            return self._cond.wait_for(
                lambda: sum(1 for d in self._deadlines.values() if d > self._elapsed) >= count, timeout)


FrozenClock = ManualClock  # a ManualClock never advanced is a frozen one


def as_clock(clock: Clock | Callable[[], datetime] | None) -> Clock:
    """``clock`` as a Clock: None is the system clock, a plain callable keeps its time."""
    if clock is None:
        return SystemClock()
    if isinstance(clock, Clock):
        return clock
    return CallableClock(clock)
