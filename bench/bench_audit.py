"""Audit log: audited vs unaudited reads, concurrent appends, verify and checkpoint at scale.

Reads. On each database (SQLite in a temporary data dir, PostgreSQL in a
database of its own, created and dropped here; both set up by
``bench_archive``'s helpers), the bench creates minors through the service and
reads them two ways, in ABBA-ordered chunks:

- audited: the real service path, ``rt.archive.read_minor(rt.guard(s, actor), id)``,
  which appends the hash-chained event (head row locked) and commits it before
  it decrypts anything;
- unaudited (bench-only baseline, ``unaudited_read_minor`` below): the same
  lookup, the same policy decisions, the same data-key unwrap, decryption and
  response, but no event appended and nothing committed.

The audited read is then run from 1, 2 and 4 worker processes at once (each
its own ``Runtime``), against the unaudited read run the same way, since every
append serializes on the single ``audit_head`` row.

Verification. A valid log of N events is generated in Python exactly as
``AuditLog.append`` builds events (``audit.event_hash``), bulk-inserted
(executemany on SQLite, COPY on PostgreSQL) with its subject index and head
row, checked by a real ``append`` and a small ``AuditLog.verify``; then a
scan, ``AuditLog.checkpoint`` from scratch, ``AuditLog.verify`` and an
incremental ``AuditLog.checkpoint`` after 1 % more events are timed over it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import multiprocessing as mp
import pickle
import random
import sqlite3
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text

from access_control import audit
from access_control.actions import Action, Role
from access_control.audit import AuditEvent, AuditLog, EventDraft
from access_control.guard import Guard
from access_control.policy import Resource
from archive import schemas
from archive.models import Minor
from bench import Meter, Result, peak_rss_mib, rate, reset_peak_rss, skipped
from bench.bench_archive import (
    LOADER,
    StatementCounter,
    Variant,
    _no_url,
    _run_pair,
    bench_runtime,
    bench_settings,
    make_minors,
    postgres_database,
    postgres_unreachable,
)
from core.errors import Forbidden, NotFound
from core.settings import Settings
from runtime import AUDIT_HASH_FOR_SUITE, Runtime

NOTES = [
    "ratio = time per operation ÷ the baseline's; >1 is slower. For the N-process rows the figure "
    "is the aggregate rate of all N processes, and the ratio audited ÷ unaudited at the same N.",
    "audited = the real service read: role check, minor row, policy decision, hash-chained audit "
    "event appended (audit_head row locked: BEGIN IMMEDIATE on SQLite, SELECT … FOR UPDATE on "
    "PostgreSQL), commit (fsync / WAL flush), then the data_keys row, unwrap, open, categories "
    "and the MinorPublic response.",
    "unaudited (bench-only baseline) = the same Guard, role check, minor row, policy decision, "
    "data_keys row, unwrap, open, categories and response, in the same session, but no event "
    "and no commit (the read transaction is rolled back when the session closes; on SQLite it "
    "still begins with BEGIN IMMEDIATE, as every service session does). The product has no "
    "switch to turn auditing off; this variant exists only in the bench.",
    "N processes: worker processes (spawned once per backend, each with its own Runtime on the "
    "same database) warm up, wait for a common start time, then read random minors for a fixed "
    "time; rate = all reads ÷ the longest worker's time; peak RSS is the largest worker's.",
    "audit log rows (setup, not in any ratio): generate = computing events and hashes in Python "
    "exactly as AuditLog.append does (audit.event_hash), once per run; bulk insert = events, "
    "subject index and head row, 5,000 events per transaction (executemany on a loader's own "
    "SQLite connection with synchronous=OFF and a 256 MiB page cache; COPY on PostgreSQL), the "
    "five plain indexes of audit_events dropped during the load and rebuilt from their own DDL "
    "after it (included in the time). "
    "Event 1,001 is appended by AuditLog.append itself and must equal the generated "
    "one byte for byte, and AuditLog.verify must pass on the first 1,002 events, before the rest "
    "is loaded.",
    "audit log rows (timed): scan = AuditLog.iter_events over the whole log, no hashing (the "
    "baseline); checkpoint from scratch = AuditLog.checkpoint with no earlier checkpoint (re-hash "
    "every event, chain, Merkle root, Ed25519 signature, commit); verify = AuditLog.verify in a "
    "read session (re-hash every event, chain, subject index, head row, Merkle root at the stored "
    "checkpoint); checkpoint +1 % = AuditLog.checkpoint after 1 % more events (the rate counts "
    "the new events only). The scratch checkpoint's note says how long an append (its head lock) "
    "started meanwhile had to wait. Before each timed block the bench hands freed heap back to "
    "the OS (gc, malloc_trim); 'RSS +N MiB' is how far the block's peak rose above the RSS at "
    "its start.",
    "SQLite runs with WAL and synchronous=FULL (an fsync per commit), as the service sets it up.",
]

LOG_SIZES = (100_000, 1_000_000)
QUICK_LOG_SIZES = (2_000, 20_000)
GENERATE_BATCH = 5_000  # events per generated batch (and per bulk-insert transaction)
PROBE_SEQ = 1_001  # the event appended by AuditLog.append itself, to check the generator


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--audit-backends", default="sqlite,postgres",
                       help="comma-separated: sqlite, postgres (default both)")
    group.add_argument("--audit-reads", type=int, default=None,
                       help="reads per backend and variant in one process (default 1000; --quick: 40)")
    group.add_argument("--audit-workers", default=None,
                       help="process counts for the concurrent reads (default 1,2,4; --quick: 2; empty: none)")
    group.add_argument("--audit-seconds", type=float, default=None,
                       help="seconds per concurrent run (default 6; --quick: 1)")
    group.add_argument("--audit-events", default=None,
                       help="comma-separated log sizes to verify (default 100000,1000000; "
                            "--quick: 2000,20000; empty: none)")


def _ints(text: str) -> list[int]:
    return [int(x.replace("_", "")) for x in text.split(",") if x.strip()]


def run(args: argparse.Namespace) -> list[Result]:
    quick = bool(getattr(args, "quick", False))
    backends = [b.strip() for b in getattr(args, "audit_backends", "sqlite,postgres").split(",") if b.strip()]
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            raise ValueError(f"unknown backend {backend!r}: use sqlite or postgres")
    reads = getattr(args, "audit_reads", None) or (40 if quick else 1000)
    counts = getattr(args, "audit_workers", None)
    workers = _ints(counts if counts is not None else ("2" if quick else "1,2,4"))
    seconds = getattr(args, "audit_seconds", None) or (1.0 if quick else 6.0)
    events = getattr(args, "audit_events", None)
    sizes = _ints(events) if events is not None else list(QUICK_LOG_SIZES if quick else LOG_SIZES)
    rows: list[Result] = []
    for backend in backends:
        rows += read_rows(backend, reads=reads, workers=workers, seconds=seconds, quick=quick)
    if sizes:
        with tempfile.TemporaryDirectory(prefix="shouhu-bench-events-") as tmp:
            source = EventSource(AUDIT_HASH_FOR_SUITE["aes"], Path(tmp))
            for size in sizes:
                for backend in backends:
                    rows += log_rows(backend, size, source)
            rows.append(generate_row(source))
    return rows


# Reads ---------------------------------------------------------------------------------


def unaudited_read_minor(rt: Runtime, g: Guard, minor_id: str) -> schemas.MinorPublic:
    """``CaseFileService.read_minor`` step for step, minus the audit event and its commit."""
    action = Action.MINOR_READ
    if not g.decide(action).allowed:  # the role check CaseFileService._load makes first
        raise Forbidden(g.decide(action).rule)
    row = g.session.get(Minor, minor_id)
    if row is None or row.sealed:
        raise NotFound()
    decision = g.decide(action, Resource("minor", row.id, row.region_code))
    if not decision.allowed:
        raise NotFound() if decision.hidden else Forbidden(decision.rule)
    rt.archive._subjects(row)  # the service computes the event's subjects here
    return rt.archive._minor_public(g, row, rt.archive._open(g, row))


def audited_read(rt: Runtime, minor_id: str) -> None:
    with rt.db.session() as s:
        rt.archive.read_minor(rt.guard(s, LOADER), minor_id)


def unaudited_read(rt: Runtime, minor_id: str) -> None:
    with rt.db.session() as s:
        unaudited_read_minor(rt, rt.guard(s, LOADER), minor_id)


def create_minors(rt: Runtime, count: int) -> list[str]:
    """Minors created through the service (untimed); their ids."""
    ids = []
    for data in make_minors(rt, count, random.Random(2027)):
        with rt.db.session() as s:
            ids.append(rt.archive.create_minor(rt.guard(s, LOADER), data).id)
    return ids


def read_rows(backend: str, *, reads: int, workers: list[int], seconds: float, quick: bool) -> list[Result]:
    case = f"read minor · {backend}"
    if backend == "postgres" and (why := postgres_unreachable()):
        return [skipped(case=case, variant="all", why=why)]
    rows: list[Result] = []
    with bench_runtime(backend, "aes") as rt:
        ids = create_minors(rt, 20 if quick else 200)
        rng = random.Random(11)
        order = [rng.choice(ids) for _ in range(reads)]
        for i in range(3):  # warm-up (untimed): statement caches, pool, key ring
            audited_read(rt, ids[i])
            unaudited_read(rt, ids[i])
        plain = Variant(lambda i: unaudited_read(rt, order[i]))
        audited = Variant(lambda i: audited_read(rt, order[i]))
        _run_pair(reads, plain, audited, StatementCounter(rt.db.engine))
        base = rate(case=case, variant="unaudited (bench-only)", unit="reads/s", count=reads,
                    seconds=plain.meter.seconds, peak_rss_mib=plain.meter.peak_rss_mib,
                    note=f"baseline; {plain.statements / reads:.1f} SQL statements/op")
        rows += [base, rate(case=case, variant="audited (service)", unit="reads/s", count=reads,
                            seconds=audited.meter.seconds, peak_rss_mib=audited.meter.peak_rss_mib,
                            note=f"{audited.statements / reads:.1f} SQL statements/op").against(base)]
        one: float | None = None
        if workers:
            with ReadWorkers(rt.settings, ids, max(workers)) as pool:
                for k, n in enumerate(workers):
                    pair: dict[bool, WorkerRun] = {}
                    for flag in (False, True) if k % 2 == 0 else (True, False):
                        pair[flag] = pool.run(n, audited=flag, seconds=seconds)
                    ncase = f"{case} · {n} process{'es' if n > 1 else ''}"
                    base = pair[False].result(ncase, "unaudited (bench-only)", note="baseline")
                    if n == 1:
                        one = pair[True].rate
                    scale = f"{pair[True].rate / one:.2f}× the 1-process audited rate" if one and n > 1 else ""
                    rows += [base, pair[True].result(ncase, "audited (service)", note=scale).against(base)]
    return rows


@dataclass
class WorkerRun:
    reads: int
    seconds: float
    peak_rss_mib: float

    @property
    def rate(self) -> float:
        return self.reads / self.seconds if self.seconds else 0.0

    def result(self, case: str, variant: str, note: str = "") -> Result:
        return rate(case=case, variant=variant, unit="reads/s", count=self.reads, seconds=self.seconds,
                    peak_rss_mib=self.peak_rss_mib, note=note)


START_LEAD = 1.0  # seconds between sending a run to the workers and its common start


class ReadWorkers:
    """Worker processes, each with its own Runtime on the same database, started once.

    ``run(n, ...)`` has the first ``n`` workers warm up, wait for a common start
    time (wall clock, shared by all processes), read random minors for ``seconds``
    and report how many reads they did in how long.
    """

    def __init__(self, settings: Settings, ids: list[str], count: int):
        ctx = mp.get_context("spawn")  # fresh interpreters: no engine or pool crosses a fork
        self.results: Any = ctx.Queue()
        self.tasks: list[Any] = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(target=_read_worker, args=(settings, ids, 100 + i, self.tasks[i], self.results), daemon=True)
            for i in range(count)
        ]

    def __enter__(self) -> ReadWorkers:
        for p in self.procs:
            p.start()
        self._collect(len(self.procs), timeout=300)  # each says "ready" once its Runtime is open
        return self

    def __exit__(self, *exc: object) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()

    def _collect(self, n: int, timeout: float) -> list[tuple[Any, ...]]:
        got = [self.results.get(timeout=timeout) for _ in range(n)]
        failures = [g[1] for g in got if g[0] == "error"]
        if failures:
            raise RuntimeError("a read worker failed:\n" + failures[0])
        return got

    def run(self, n: int, *, audited: bool, seconds: float) -> WorkerRun:
        start_at = time.time() + START_LEAD
        for q in self.tasks[:n]:
            q.put((audited, seconds, start_at))
        got = self._collect(n, timeout=START_LEAD + seconds + 120)
        return WorkerRun(reads=sum(g[1] for g in got), seconds=max(g[2] for g in got),
                         peak_rss_mib=max(g[3] for g in got))


def _read_worker(settings: Settings, ids: list[str], seed: int, tasks: Any, results: Any) -> None:
    try:
        rt = Runtime.open(settings)
        try:
            rng = random.Random(seed)
            results.put(("ready", 0, 0.0, 0.0))
            while (task := tasks.get()) is not None:
                audited, seconds, start_at = task
                read = audited_read if audited else unaudited_read
                for _ in range(3):  # warm-up (untimed)
                    read(rt, rng.choice(ids))
                time.sleep(max(0.0, start_at - time.time()))
                reset_peak_rss()
                count = 0
                start = time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds:
                    read(rt, rng.choice(ids))
                    count += 1
                results.put(("ok", count, elapsed, peak_rss_mib()))
        finally:
            rt.close()
    except Exception:
        results.put(("error", traceback.format_exc(), 0.0, 0.0))


# A generated log -------------------------------------------------------------------

Fields = tuple[str, str, str, str, list[str], dict[str, Any]]


class LogGenerator:
    """Valid events, computed as ``AuditLog.append`` computes them: same fields, ``event_hash``.

    The mix resembles a case worker's day: mostly single-minor reads (one subject),
    household reads (two), list pages (a subject per row listed), updates, creates,
    sign-ins, a few refusals and auditor queries. Events come in batches aligned on
    ``GENERATE_BATCH``, so event k is the same whatever size of log is asked for.
    Event ``PROBE_SEQ`` is the one the bench appends through ``AuditLog.append``.
    """

    def __init__(self, alg: str, seed: int = 1):
        self.alg = alg
        self.rng = rng = random.Random(seed)
        self.seq = 0
        self.prev = audit.GENESIS_HASH
        self.at = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
        self.subjects = [f"{rng.getrandbits(128):032x}" for _ in range(20_000)]
        self.minors = [f"mn_{rng.getrandbits(100):025x}" for _ in range(20_000)]
        self.households = [f"hh_{rng.getrandbits(100):025x}" for _ in range(6_000)]
        roles = [("caseworker",)] * 6 + [("supervisor",)] * 2 + [("auditor",), ("admin", "caseworker")]
        self.actors = [
            (f"us_{rng.getrandbits(100):025x}", f"user{i:03d}", f"og_{i % 12:02d}", ",".join(sorted(r)))
            for i, r in ((i, rng.choice(roles)) for i in range(60))
        ]
        kinds = [
            (45, self._read_minor), (12, self._read_household), (8, self._list), (6, self._update),
            (4, self._create), (18, self._login), (4, self._denied), (3, self._auditor),
        ]
        self.weights = [w for w, _ in kinds]
        self.makers = [m for _, m in kinds]

    def _read_minor(self, role: str) -> Fields:
        return (Action.MINOR_READ, "minor", self.rng.choice(self.minors),
                f"role:{role}+region:within_jurisdiction", [self.rng.choice(self.subjects)], {})

    def _read_household(self, role: str) -> Fields:
        return (Action.HOUSEHOLD_READ, "household", self.rng.choice(self.households),
                f"role:{role}+region:within_jurisdiction", self.rng.sample(self.subjects, 2), {})

    def _list(self, role: str) -> Fields:
        n = self.rng.randint(0, 20)
        return (Action.MINOR_LIST, "minor", "", f"role:{role}+region:within_jurisdiction",
                self.rng.sample(self.subjects, n), {"count": n, "page": self.rng.randint(1, 4), "category": None})

    def _update(self, role: str) -> Fields:
        return (Action.MINOR_UPDATE, "minor", self.rng.choice(self.minors),
                f"role:{role}+region:within_jurisdiction", [self.rng.choice(self.subjects)], {})

    def _create(self, role: str) -> Fields:
        return (Action.MINOR_CREATE, "household", self.rng.choice(self.households),
                f"role:{role}+region:within_jurisdiction", [self.rng.choice(self.subjects)], {})

    def _login(self, role: str) -> Fields:
        return Action.AUTH_LOGIN, "", "", "login:password_ok", [], {}

    def _denied(self, role: str) -> Fields:
        return (Action.MINOR_READ, "minor", self.rng.choice(self.minors), "region:outside_jurisdiction",
                [self.rng.choice(self.subjects)], {})

    def _auditor(self, role: str) -> Fields:
        return (Action.AUDIT_EVENTS_READ, "audit_log", "", f"role:{Role.AUDITOR.value}", [],
                {"actor": None, "action": "archive:minor:read", "limit": 100})

    def batch(self) -> Batch:
        """The next ``GENERATE_BATCH`` events (column dicts, hashes set)."""
        rng, alg = self.rng, self.alg
        events: list[dict[str, Any]] = []
        for make in rng.choices(self.makers, weights=self.weights, k=GENERATE_BATCH):
            self.seq += 1
            self.at += timedelta(microseconds=rng.randrange(1, 90_000))
            if self.seq == PROBE_SEQ:
                ev = probe_event(self.seq, self.at, self.prev)
            else:
                actor_id, username, org_id, roles = rng.choice(self.actors)
                action, kind, rid, reason, subjects, details = make(roles.split(",")[-1])
                ev = {
                    "seq": self.seq, "at": self.at, "actor_id": actor_id, "actor": username,
                    "org_id": org_id, "roles": roles, "action": str(action), "resource_kind": kind,
                    "resource_id": rid, "outcome": "denied" if reason.startswith("region:") else "allowed",
                    "reason": reason, "request_id": f"req_{rng.getrandbits(100):025x}",
                    "subjects": sorted(set(subjects)), "details": details, "prev_hash": self.prev,
                    "on_behalf_of": None,
                }
            ev["hash"] = self.prev = audit.event_hash(alg, ev)
            events.append(ev)
        return Batch(events)


PROBE_DRAFT = EventDraft(action=Action.AUDIT_VERIFY, outcome="allowed", reason="role:auditor",
                         details={"against_checkpoint": None})
PROBE_REQUEST = "req_bench_probe"


def probe_event(seq: int, at: datetime, prev: str) -> dict[str, Any]:
    """The fields ``AuditLog.append`` gives ``PROBE_DRAFT`` by ``LOADER`` (the bench checks they match)."""
    return {
        "seq": seq, "at": at, "actor_id": LOADER.user_id, "actor": LOADER.username, "org_id": LOADER.org_id,
        "roles": ",".join(sorted(LOADER.roles)), "action": PROBE_DRAFT.action.value, "resource_kind": "",
        "resource_id": "", "outcome": PROBE_DRAFT.outcome, "reason": PROBE_DRAFT.reason,
        "request_id": PROBE_REQUEST, "subjects": [], "details": dict(PROBE_DRAFT.details), "prev_hash": prev,
        "on_behalf_of": None,
    }


@dataclass
class Batch:
    events: list[dict[str, Any]]

    def between(self, first: int, last: int) -> Batch:
        return Batch([e for e in self.events if first <= e["seq"] <= last])


class EventSource:
    """Generated events by position, each batch computed once per run and kept on disk.

    The 100,000-event log is the first part of the 1,000,000-event one, and both
    backends load the same events, so only the largest log is ever computed.
    """

    def __init__(self, alg: str, directory: Path):
        self.gen = LogGenerator(alg)
        self.dir = directory
        self.batches = 0  # batches computed so far
        self.computed = 0
        self.seconds = 0.0  # spent computing them

    def batch(self, k: int) -> Batch:
        path = self.dir / f"batch-{k:05d}.pickle"
        if k < self.batches:
            loaded: Batch = pickle.loads(path.read_bytes())
            return loaded
        if k != self.batches:
            raise RuntimeError("batches are computed in order")
        t0 = time.perf_counter()
        batch = self.gen.batch()
        self.seconds += time.perf_counter() - t0
        self.computed += len(batch.events)
        self.batches += 1
        path.write_bytes(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
        return batch

    def events(self, first: int, last: int) -> Iterator[Batch]:
        """Events ``first..last`` (seq numbers, inclusive), a batch at a time."""
        for k in range((first - 1) // GENERATE_BATCH, (last - 1) // GENERATE_BATCH + 1):
            yield self.batch(k).between(first, last)


COLUMNS = [c.name for c in AuditEvent.__table__.columns]


def bulk_load(rt: Runtime, source: EventSource, first: int, last: int) -> float:
    """Insert events ``first..last`` with their subject rows and the new head; seconds spent inserting."""
    seconds = 0.0
    with contextlib.ExitStack() as stack:
        if rt.db.dialect == "sqlite":
            conn = stack.enter_context(_sqlite_loader(rt))
        for batch in source.events(first, last):
            t0 = time.perf_counter()
            if rt.db.dialect == "sqlite":
                _insert_sqlite(rt, conn, batch.events)
            else:
                _copy_postgres(rt, batch.events)
            seconds += time.perf_counter() - t0
    return seconds


def _subject_rows(events: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(s, e["seq"]) for e in events for s in e["subjects"]]


@contextlib.contextmanager
def _sqlite_loader(rt: Runtime) -> Iterator[sqlite3.Connection]:
    """A connection of the loader's own (not the service's pool): no fsync, a 256 MiB page cache.

    Setup only; the timed work runs on the service's connections (synchronous=FULL).
    """
    path = rt.db.engine.url.database
    assert path
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        for pragma in ("foreign_keys=ON", "synchronous=OFF", "cache_size=-262144"):
            conn.execute(f"PRAGMA {pragma}")
        yield conn
    finally:
        conn.close()


def _insert_sqlite(rt: Runtime, conn: sqlite3.Connection, events: list[dict[str, Any]]) -> None:
    """executemany, the values bound as SQLAlchemy binds them for these columns."""
    dialect = rt.db.engine.dialect
    procs = [AuditEvent.__table__.c[c].type.dialect_impl(dialect).bind_processor(dialect) for c in COLUMNS]
    rows = [tuple(p(e[c]) if p else e[c] for c, p in zip(COLUMNS, procs, strict=True)) for e in events]
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(
            f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", rows
        )
        conn.executemany("INSERT INTO audit_event_subjects (subject, seq) VALUES (?, ?)", _subject_rows(events))
        conn.execute("UPDATE audit_head SET size = ?, head_hash = ? WHERE id = 1",
                     (events[-1]["seq"], events[-1]["hash"]))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _copy_postgres(rt: Runtime, events: list[dict[str, Any]]) -> None:
    raw = rt.db.engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        with conn.cursor() as cur:
            with cur.copy(f"COPY audit_events ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for ev in events:
                    copy.write_row([
                        json.dumps(ev[c]) if c in ("subjects", "details") else ev[c] for c in COLUMNS
                    ])
            with cur.copy("COPY audit_event_subjects (subject, seq) FROM STDIN") as copy:
                for row in _subject_rows(events):
                    copy.write_row(row)
            cur.execute("UPDATE audit_head SET size = %s, head_hash = %s WHERE id = 1",
                        (events[-1]["seq"], events[-1]["hash"]))
        conn.commit()
    finally:
        raw.close()


@contextlib.contextmanager
def log_runtime(backend: str) -> Iterator[Runtime]:
    """A fresh, migrated, empty archive (no demo data): just the log's tables and keys."""
    with (
        tempfile.TemporaryDirectory(prefix="shouhu-bench-audit-") as tmp,
        postgres_database() if backend == "postgres" else _no_url() as url,
    ):
        rt = Runtime.open(bench_settings(Path(tmp) / "var", url, "aes"), require_schema=False)
        try:
            rt.initialize()
            yield rt
        finally:
            rt.close()


def build_log(rt: Runtime, source: EventSource, size: int) -> float:
    """A valid log of ``size`` events, checked on the way; seconds spent inserting.

    Events up to ``PROBE_SEQ - 1`` are bulk-loaded, event ``PROBE_SEQ`` is appended
    by ``AuditLog.append`` itself and must come out byte for byte as generated, one
    more event is loaded after it, and ``AuditLog.verify`` must pass; then the rest.
    """
    if size <= PROBE_SEQ + 1:
        raise ValueError(f"log sizes start above {PROBE_SEQ + 1}")
    seconds = bulk_load(rt, source, 1, PROBE_SEQ - 1)
    expected = next(source.events(PROBE_SEQ, PROBE_SEQ)).events[0]
    with rt.db.session() as s:
        ev = rt.audit.append(s, actor=LOADER, draft=PROBE_DRAFT, request_id=PROBE_REQUEST, at=expected["at"])
        s.commit()
        if (ev.seq, ev.hash) != (expected["seq"], expected["hash"]):
            raise RuntimeError("AuditLog.append built another event than the generator: "
                               f"{audit.canonical_bytes(ev)!r} vs {audit.canonical_bytes(expected)!r}")
    seconds += bulk_load(rt, source, PROBE_SEQ + 1, PROBE_SEQ + 1)
    with rt.db.read_session() as s:
        check = rt.audit.verify(s)
    if not check.ok or check.length != PROBE_SEQ + 1:
        raise RuntimeError(f"the generated log does not verify: {check.as_dict()}")
    with SecondaryIndexesDeferred(rt) as deferred:
        seconds += bulk_load(rt, source, PROBE_SEQ + 2, size)
    return seconds + deferred.seconds


class SecondaryIndexesDeferred:
    """Drop the plain indexes of ``audit_events`` for a bulk load; rebuild them from their own DDL.

    Building an index once is far cheaper than growing it row by row. The primary
    key, the unique hash and the subject table's key stay in place throughout.
    ``seconds`` is the time spent dropping and rebuilding.
    """

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.seconds = 0.0
        self.ddl: list[tuple[str, str]] = []

    def __enter__(self) -> SecondaryIndexesDeferred:
        if self.rt.db.dialect == "postgresql":
            query = ("SELECT indexname, indexdef FROM pg_indexes "
                     "WHERE tablename = 'audit_events' AND indexname LIKE 'ix_%'")
        else:
            query = ("SELECT name, sql FROM sqlite_master "
                     "WHERE type = 'index' AND tbl_name = 'audit_events' AND name LIKE 'ix_%'")
        t0 = time.perf_counter()
        with self.rt.db.engine.begin() as conn:
            self.ddl = [(str(name), str(create)) for name, create in conn.execute(text(query))]
            for name, _ in self.ddl:
                conn.execute(text(f'DROP INDEX "{name}"'))
        self.seconds += time.perf_counter() - t0
        return self

    def __exit__(self, *exc: object) -> None:
        t0 = time.perf_counter()
        with self.rt.db.engine.begin() as conn:
            for _, create in self.ddl:
                conn.execute(text(create))
        self.seconds += time.perf_counter() - t0


class LockProbe:
    """While a checkpoint runs, take what an append takes first, and time the wait.

    The probe starts ``delay`` seconds in, on a pooled connection of the service's
    engine (so with its busy timeout): ``BEGIN IMMEDIATE`` on SQLite, ``SELECT … FOR
    UPDATE`` of the head row on PostgreSQL; then it rolls back.
    """

    def __init__(self, rt: Runtime, delay: float = 0.3):
        self.rt, self.delay = rt, delay
        self.waited: float | None = None
        self.error: str | None = None
        self._thread = threading.Thread(target=self._probe, daemon=True)

    def __enter__(self) -> LockProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()

    def _probe(self) -> None:
        time.sleep(self.delay)
        raw = self.rt.db.engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert conn is not None
            t0 = time.perf_counter()
            try:
                if self.rt.db.dialect == "sqlite":
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("ROLLBACK")
                else:
                    conn.execute("SELECT size FROM audit_head WHERE id = 1 FOR UPDATE")
                    conn.rollback()
            except Exception as exc:  # what a request would get: the service answers 503
                self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            self.waited = time.perf_counter() - t0
        finally:
            raw.close()

    def note(self) -> str:
        if self.waited is None:
            return ""
        if self.error:
            return f"an append starting {self.delay:g} s in failed after {self.waited:.1f} s ({self.error})"
        return f"an append starting {self.delay:g} s in waited {self.waited:.2f} s for the head lock"


def release_memory() -> None:
    """Give freed heap back to the OS (glibc), so a block's peak RSS is its own, not an earlier phase's."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _timed(fn: Any) -> tuple[Any, Meter]:
    release_memory()
    meter = Meter()
    with meter:
        out = fn()
    return out, meter


def log_rows(backend: str, size: int, source: EventSource) -> list[Result]:
    case = f"audit log {size:,} events · {backend}"
    if backend == "postgres" and (why := postgres_unreachable()):
        return [skipped(case=case, variant="all", why=why)]
    more = max(1, size // 100)
    with log_runtime(backend) as rt:
        insert_s = build_log(rt, source, size)

        def scan() -> int:
            with rt.db.read_session() as s:
                return sum(1 for _ in AuditLog.iter_events(s))

        def verify() -> audit.VerifyResult:
            with rt.db.read_session() as s:
                return rt.audit.verify(s)

        def checkpoint() -> dict[str, Any]:
            with rt.db.session() as s:
                cp = rt.audit.checkpoint(s, now=rt.clock())
                s.commit()
                return cp

        scanned, scan_m = _timed(scan)
        if scanned != size:
            raise RuntimeError(f"scanned {scanned} events of {size}")
        with LockProbe(rt) as probe:
            cp, scratch_m = _timed(checkpoint)
        result, verify_m = _timed(verify)
        if not result.ok or result.checkpoints_checked != 1:
            raise RuntimeError(f"verify failed: {result.as_dict()}")
        insert_s += bulk_load(rt, source, size + 1, size + more)
        cp2, incr_m = _timed(checkpoint)
        if (cp["size"], cp2["size"]) != (size, size + more):
            raise RuntimeError(f"unexpected checkpoint sizes {cp['size']}, {cp2['size']}")

    def row(variant: str, m: Meter, count: int, note: str = "") -> Result:
        growth = f"{m.seconds:.2f} s; RSS +{m.growth_mib:.0f} MiB"
        return rate(case=case, variant=variant, unit="events/s", count=count, seconds=m.seconds,
                    peak_rss_mib=m.peak_rss_mib, note=f"{growth}; {note}" if note else growth)

    base = row("scan (iter_events only)", scan_m, size, "baseline")
    return [
        rate(case=case, variant="bulk insert (setup)", unit="events/s", count=size + more, seconds=insert_s,
             note=f"{insert_s:.1f} s for {size + more:,} events"),
        base,
        row("verify", verify_m, size, "1 checkpoint checked").against(base),
        row("checkpoint from scratch", scratch_m, size, probe.note()).against(base),
        row("checkpoint +1 % (incremental)", incr_m, more, f"{more:,} new events").against(base),
    ]


def generate_row(source: EventSource) -> Result:
    return rate(case="generate audit events (setup)", variant=f"Python, {source.gen.alg}", unit="events/s",
                count=source.computed, seconds=source.seconds,
                note=f"{source.seconds:.1f} s; each computed once, reused for every size and backend")
