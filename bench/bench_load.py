"""Load: /healthz and reads while 60 readers and an anonymous verification flood hit a real server.

For each database a fresh archive (``shouhu init``, ``shouhu demo --households 30``) is
served by a real ``shouhu serve`` on 127.0.0.1 (loopback only). Two phases:

- idle (the baselines): /healthz probed alone, then one reader alone;
- under load: ``--readers`` threads (default 60) each make ``--reads`` authenticated reads
  (GET /api/v1/households and GET /api/v1/households/{id}, alternating), while
  ``--flooders`` threads (default 8) verify random codes without a token (GET and POST,
  alternating) until the readers are done, and /healthz is probed every 20 ms.

Figures: /healthz p99 and read p95 in milliseconds (p50 in the note), each with its ratio
to the idle phase. The verification limit per address is lifted for the bench, so the flood
reaches the database as one from many addresses would (as deployed, one address gets 429
after ``SHOUHU_VERIFY_RATE_LIMIT`` verifications a minute). Any 5xx is counted in the notes.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx2 as httpx

from bench import Result, skipped, stop_process
from bench.bench_archive import postgres_database, postgres_unreachable

ROOT = Path(__file__).resolve().parents[1]
SHOUHU = str(Path(sys.executable).with_name("shouhu"))
if not Path(SHOUHU).exists():  # pragma: no cover - a venv without the script
    SHOUHU = shutil.which("shouhu") or "shouhu"
GOAL = "goal on a 2-core machine: /healthz p99 < 100 ms, read p95 < 500 ms under load"

NOTES = [
    "A real `shouhu serve` on 127.0.0.1 per database, fresh archive with 30 demo households; "
    "readers sign in as caseworker.haizhou.",
    "figure = latency percentile in ms (p99 for /healthz, p95 for reads); ratio = that percentile "
    "under load ÷ idle.",
    "The verification limit per address is lifted here so the flood reaches the database.",
    GOAL + ".",
]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--load-backends", default="sqlite,postgres",
                       help="comma-separated: sqlite, postgres (default both)")
    group.add_argument("--readers", type=int, default=None, help="parallel readers (default 60; --quick: 10)")
    group.add_argument("--reads", type=int, default=None,
                       help="reads per reader under load (default 10; --quick: 2)")
    group.add_argument("--flooders", type=int, default=None,
                       help="threads verifying without a token (default 8; --quick: 2)")


def run(args: argparse.Namespace) -> list[Result]:
    quick = bool(getattr(args, "quick", False))
    opts = Options(
        readers=getattr(args, "readers", None) or (10 if quick else 60),
        reads=getattr(args, "reads", None) or (2 if quick else 10),
        flooders=getattr(args, "flooders", None) or (2 if quick else 8),
        idle_probes=40 if quick else 200,
        idle_reads=10 if quick else 100,
    )
    rows: list[Result] = []
    for backend in [b.strip() for b in getattr(args, "load_backends", "sqlite,postgres").split(",") if b.strip()]:
        if backend not in ("sqlite", "postgres"):
            raise ValueError(f"unknown backend {backend!r}: use sqlite or postgres")
        why = postgres_unreachable() if backend == "postgres" else None
        if why:
            rows.append(skipped(case=f"/healthz · {backend}", variant="under load", why=why))
            continue
        rows += load_rows(backend, opts)
    return rows


@dataclass(frozen=True)
class Options:
    readers: int
    reads: int
    flooders: int
    idle_probes: int
    idle_reads: int


@dataclass
class Server:
    base_url: str
    proc: subprocess.Popen[bytes]
    log: Path


def _env(data_dir: Path, url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUHU_")}
    env.update(SHOUHU_DATA_DIR=str(data_dir), SHOUHU_DEMO_PASSWORD=_PASSWORD,
               SHOUHU_VERIFY_RATE_LIMIT="1000000000", PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    if url:
        env["SHOUHU_DATABASE_URL"] = url
    return env


_PASSWORD = "bench-" + secrets.token_hex(8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(backend: str) -> Iterator[Server]:
    """A fresh archive with demo data, served on a free loopback port; stopped on the way out."""
    with (
        tempfile.TemporaryDirectory(prefix="shouhu-bench-load-") as tmp,
        postgres_database() if backend == "postgres" else nullcontext(None) as url,
    ):
        data_dir = Path(tmp) / "var"
        env = _env(data_dir, url)
        for args in (("init",), ("demo", "--households", "30")):
            subprocess.run([SHOUHU, *args], env=env, cwd=tmp, check=True, capture_output=True, timeout=300)
        port = _free_port()
        log = Path(tmp) / "serve.out"
        with log.open("wb") as out:
            proc = subprocess.Popen([SHOUHU, "serve", "--host", "127.0.0.1", "--port", str(port)], env=env,
                                    cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
        server = Server(f"http://127.0.0.1:{port}", proc, log)
        try:
            _wait_ready(server)
            time.sleep(3)  # the render workers start in the background: let them settle
            yield server
        finally:
            stop_process(proc)


def _wait_ready(server: Server, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"shouhu serve exited:\n{server.log.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(server.base_url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("shouhu serve not ready")


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (Linux /proc), NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int | str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, seconds: float, status: int | str) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] += 1

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if not isinstance(s, int) or s >= 500)


def _timed(tally: Tally, fn: Callable[[], httpx.Response]) -> None:
    started = time.perf_counter()
    try:
        status: int | str = fn().status_code
    except httpx.HTTPError as exc:
        status = type(exc).__name__
    tally.add(time.perf_counter() - started, status)


def load_rows(backend: str, opts: Options) -> list[Result]:
    limits = httpx.Limits(max_connections=opts.readers + opts.flooders + 10)
    with serving(backend) as server, httpx.Client(base_url=server.base_url, timeout=120, limits=limits) as http:
        r = http.post("/api/v1/auth/token", data={"username": "caseworker.haizhou", "password": _PASSWORD})
        r.raise_for_status()
        auth = {"Authorization": f"Bearer {r.json()['access_token']}"}
        ids = [h["id"] for h in http.get("/api/v1/households", params={"limit": 20}, headers=auth).json()["items"]]
        paths = [p for hid in ids for p in ("/api/v1/households", f"/api/v1/households/{hid}")]

        def read(i: int) -> httpx.Response:
            return http.get(paths[i % len(paths)], headers=auth)

        # Idle baselines.
        idle_health, idle_read = Tally(), Tally()
        for _ in range(opts.idle_probes):
            _timed(idle_health, lambda: http.get("/healthz"))
            time.sleep(0.005)
        for i in range(opts.idle_reads):
            _timed(idle_read, lambda i=i: read(i))

        # Under load.
        health, reads, flood = Tally(), Tally(), Tally()
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                _timed(health, lambda: http.get("/healthz"))
                done.wait(0.02)

        def flooder(k: int) -> None:
            i = 0
            while not done.is_set():
                code = secrets.token_hex(6)
                if (i + k) % 2:
                    _timed(flood, lambda c=code: http.post(f"/api/v1/verify/{c}", content=b"%PDF-1.7 copy" * 100))
                else:
                    _timed(flood, lambda c=code: http.get(f"/api/v1/verify/{c}"))
                i += 1

        def reader(k: int) -> None:
            for j in range(opts.reads):
                _timed(reads, lambda j=j: read(k * opts.reads + j))

        background = [threading.Thread(target=probe)] + [
            threading.Thread(target=flooder, args=(k,)) for k in range(opts.flooders)]
        server_cpu, own_cpu = _cpu_seconds(server.proc.pid), time.process_time()
        started = time.perf_counter()
        for t in background:
            t.start()
        with ThreadPoolExecutor(opts.readers) as pool:
            list(pool.map(reader, range(opts.readers)))
        done.set()
        for t in background:
            t.join(120)
        elapsed = time.perf_counter() - started
        server_cpu, own_cpu = _cpu_seconds(server.proc.pid) - server_cpu, time.process_time() - own_cpu
        alive = server.proc.poll() is None

    def row(case: str, variant: str, tally: Tally, p: float, base: Result | None = None, extra: str = "") -> Result:
        value = percentile(tally.latencies, p) * 1e3
        note = (f"p50 {percentile(tally.latencies, 50) * 1e3:.1f} ms; "
                f"{', '.join(f'{s}: {n}' for s, n in sorted(tally.statuses.items(), key=str))}{extra}")
        out = Result(case=case, variant=variant, value=value, unit=f"ms p{p:g}", count=len(tally.latencies),
                     seconds=sum(tally.latencies), note=note)
        if base is not None and base.value:
            out = replace(out, ratio=value / base.value, baseline=base.variant)
        return out

    load = f"{opts.readers} readers + verification flood"
    h0 = row(f"/healthz · {backend}", "idle", idle_health, 99)
    r0 = row(f"read · {backend}", "1 reader", idle_read, 95)
    errors = reads.server_errors + health.server_errors + flood.server_errors
    verdict = (f"5xx or failed: {errors}; server {'up' if alive else 'DIED'}; {elapsed:.1f} s wall, server CPU "
               f"{server_cpu:.1f} s, this client's CPU {own_cpu:.1f} s")
    return [
        h0,
        row(f"/healthz · {backend}", load, health, 99, h0, extra=f"; {verdict}"),
        r0,
        row(f"read · {backend}", load, reads, 95, r0),
        Result(case=f"verify (no token) · {backend}", variant="flood, during the load",
               value=len(flood.latencies) / elapsed if elapsed else float("nan"), unit="req/s",
               count=len(flood.latencies), seconds=sum(flood.latencies),
               note=f"p95 {percentile(flood.latencies, 95) * 1e3:.0f} ms; "
                    + ", ".join(f"{s}: {n}" for s, n in sorted(flood.statuses.items(), key=str))),
    ]
