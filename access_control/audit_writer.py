"""Group commit for the access log: the events of reading requests, made durable together.

Every read is audited before its content is decrypted, so every read writes. On SQLite
that write needs the database's one write lock: with each request taking it in turn for
its own event, sixty parallel readers queued on the lock and on the GIL that the Python
code holding the lock needed (a convoy). Here one thread per process takes the events
that reading requests hand it, appends as many as are waiting (``max_batch``) in one
transaction and commits once. Each request waits until its own events are committed:
the promise stays "no event, no content". A request that writes records keeps appending
its events in its own transaction, with its write (``Guard``).

If a batch cannot be committed, each request of it is tried again on its own, so one bad
event fails only its own request (503 ``audit_unavailable``, nothing served). A request
that gave up waiting (``timeout``) answers 503 too; its event may still be committed
later: an 'allowed' event records the decision, not that content left.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime

from access_control.audit import AuditLog, EventDraft
from access_control.identity import Actor
from core.db import Database
from core.errors import AuditUnavailable

log = logging.getLogger("shouhu.audit")


@dataclass
class _Job:
    actor: Actor
    drafts: list[EventDraft]
    request_id: str
    at: datetime
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


_STOP = object()


class AuditWriter:
    def __init__(self, db: Database, audit: AuditLog, *, timeout: float, max_batch: int = 64):
        self.db, self.audit, self.timeout, self.max_batch = db, audit, timeout, max_batch
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def append(self, actor: Actor, drafts: list[EventDraft], *, request_id: str, at: datetime) -> None:
        """Append ``drafts`` (in order) and return once they are committed; else AuditUnavailable."""
        job = _Job(actor, list(drafts), request_id, at)
        self._start()
        self._queue.put(job)
        if not job.done.wait(self.timeout):
            raise AuditUnavailable()
        if job.error is not None:
            raise AuditUnavailable() from job.error

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Job] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Job]) -> None:
        try:
            self._commit(batch)
        except Exception as exc:  # noqa: BLE001 - every waiting request is told, none hangs
            if len(batch) == 1:
                batch[0].error = exc
                log.error("audit append failed: %s", type(exc).__name__)
            else:  # one bad event must not fail the others: each on its own
                for job in batch:
                    self._write([job])
                return
        for job in batch:
            job.done.set()

    def _commit(self, batch: list[_Job]) -> None:
        with self.db.session() as session:
            for job in batch:
                for draft in job.drafts:
                    self.audit.append(session, actor=job.actor, draft=draft, request_id=job.request_id, at=job.at)
            session.commit()

    def close(self) -> None:
        """Write what is queued, then stop the thread."""
        with self._lock:
            thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(_STOP)
            thread.join(timeout=self.timeout + 5)
