"""Nobody can stall the server.

- No endpoint or dependency of any route is an ``async def`` that could block the event loop,
  unless it is on the allow-list below with the reason it cannot.
- Public verifications wait for the database in threads of their own: while another connection
  holds the audit log's lock, the event loop keeps answering (/healthz stays fast).
- 60 parallel authenticated reads against a real ``shouhu serve`` (SQLite and PostgreSQL) all
  answer, none with a 5xx: a read holds no write lock past its audit commit.
- A request that cannot get a lock in time answers 503 in the error shape, never 500.
"""

from __future__ import annotations

import inspect
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psycopg
import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.routing import Mount, Route

from access_control.actions import Action
from access_control.audit import EventDraft
from access_control.identity import User, actor_for
from archive import schemas
from main import create_app
from runtime import Runtime
from tests.cli_support import cli_env, fresh_postgres_database, login, run_cli, serving
from tests.conftest import household_body, make_settings, seeded_runtime
from tests.conftest import login as api_login

# Every async function that the app runs on its event loop, with why it cannot block it.
NON_BLOCKING: dict[str, str] = {
    "web.health.healthz": "returns a constant: the process is up",
    "archive.documents_api.verify": "validates, then hands the database work to a thread of the public limiter",
    "archive.documents_api.verify_copy": "hashes the streamed body chunk by chunk, then hands the database "
    "work to a thread of the public limiter",
    "archive.documents_api.verify_rate_limit": "counts the caller's address in memory (no I/O)",
    "web.verify.verify_page": "hands the database work to a thread of the public limiter, then renders a "
    "template read at import (web.pages: auto_reload off, every template loaded once)",
    "web.verify.verify_upload": "refuses a body over 1 MB before parsing, so starlette keeps the form in "
    "memory; then as verify_page",
    "web.session.read_form": "starlette parses the form; spooled files are written and closed in threads",
    "web.session.check_csrf": "compares the sent token with the session's (HMAC, no I/O)",
    "fastapi.security.http.HTTPBearer": "reads the Authorization header",
    "fastapi.applications.FastAPI.setup.<locals>.openapi": "the OpenAPI document, built in memory once",
    "main.create_app.<locals>.api_docs": "a constant page naming local assets",
    "starlette.staticfiles.StaticFiles": "starlette stats and reads files in threads",
    # Exception handlers and middleware run on the event loop too.
    "web.errors.domain_error": "shapes the error (an HTML error page from a cached template)",
    "web.errors.validation_error": "shapes the error",
    "web.errors.http_error": "shapes the error",
    "web.errors.unexpected": "shapes the error and logs one line",
    "web.errors.busy": "shapes the 503 answer",
    "web.app.install.<locals>.to_login": "a redirect",
    "web.app.install.<locals>.to_password_change": "a redirect",
    "web.app.install.<locals>.to_second_factor": "a redirect",
    "fastapi.exception_handlers.websocket_request_validation_exception_handler": "closes a websocket (none exist)",
    "main.RequestContext": "headers and one log line per request",
    "main.BodyLimit": "counts body bytes",
    "main.Admission": "waits for a turn on an anyio semaphore",
    "access_control.deps.runtime_dependency": "returns app.state.runtime",
    "access_control.deps._attribute.<locals>.dependency": "returns a service the runtime built at start-up",
    "core.inputs.refuse_nul": "looks for NUL in the parameters and in the body already read (bounded by "
    "SHOUHU_MAX_BODY_BYTES); parses JSON only when the bytes hold an escaped or raw NUL",
    "access_control.deps.get_guard": "builds the guard in memory; after an error its fail() (which writes) "
    "runs in a thread of its own",
}


def _name(call: Any) -> str:
    target = call if inspect.isroutine(call) or inspect.isclass(call) else type(call)
    return f"{target.__module__}.{target.__qualname__}"


def _is_async(call: Any) -> bool:
    if inspect.isclass(call):
        call = call.__call__
    elif not inspect.isroutine(call):
        call = type(call).__call__
    return inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call)


def _dependant_calls(dependant: Any) -> Iterator[Any]:
    if dependant.call is not None:
        yield dependant.call
    for sub in dependant.dependencies:
        yield from _dependant_calls(sub)


def _event_loop_callables(app: Any) -> Iterator[tuple[str, Any]]:
    for context in iter_route_contexts(app.routes):  # included routers, flattened
        route = context.original_route
        if isinstance(route, APIRoute):
            where = f"{sorted(context.methods or [])} {context.path}"
            for call in _dependant_calls(context.dependant):  # with the routers' own dependencies
                yield where, call
        elif isinstance(route, Mount):
            yield f"mount {route.path}", route.app
        elif isinstance(route, Route):
            yield f"{sorted(route.methods or [])} {route.path}", route.endpoint
        else:  # pragma: no cover - a new kind of route must be looked at
            raise AssertionError(f"unknown route type {type(route).__name__} at {route!r}")
    for exc, handler in app.exception_handlers.items():
        yield f"exception handler {getattr(exc, '__name__', exc)}", handler
    for mw in app.user_middleware:
        if mw.cls is BaseHTTPMiddleware:
            yield "middleware", mw.kwargs["dispatch"]
        else:
            yield "middleware", mw.cls


def test_no_route_can_block_the_event_loop(rt):
    """An async endpoint, dependency, handler or middleware not on the allow-list fails."""
    app = create_app(runtime=rt)
    found: dict[str, str] = {}
    offenders = []
    for where, call in _event_loop_callables(app):
        if not _is_async(call):
            continue  # sync functions run in the thread pool
        name = _name(call)
        found[name] = where
        if name not in NON_BLOCKING:
            offenders.append(f"{where}: {name}")
    assert not offenders, "async functions not shown to be non-blocking:\n" + "\n".join(offenders)
    # The walk found the routes it should, and the allow-list holds nothing stale.
    assert "archive.documents_api.verify_copy" in found and "starlette.staticfiles.StaticFiles" in found
    stale = sorted(set(NON_BLOCKING) - set(found))
    assert not stale, f"allow-listed but no longer in the app: {stale}"


# Real servers ------------------------------------------------------------------------------


@contextmanager
def holding_audit_lock(env: dict[str, str], data_dir: Path, seconds: float) -> Iterator[threading.Event]:
    """Another connection holds the audit head's lock for ``seconds`` (as a slow writer would)."""
    taken, release = threading.Event(), threading.Event()
    url = env.get("SHOUHU_DATABASE_URL")

    def hold() -> None:
        if url is None:
            conn = sqlite3.connect(data_dir / "shouhu.db", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            taken.set()
            release.wait(seconds)
            conn.execute("ROLLBACK")
            conn.close()
        else:
            with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
                conn.execute("SELECT size FROM audit_head WHERE id = 1 FOR UPDATE")
                taken.set()
                release.wait(seconds)
                conn.rollback()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(10), "could not take the lock"
    try:
        yield release
    finally:
        release.set()
        thread.join(10)


def _client(base_url: str, timeout: float = 60) -> httpx.Client:
    """One client shared by all of a test's threads: building one per request (an SSL context
    each) would spend the test process's own time, not the server's."""
    return httpx.Client(base_url=base_url, timeout=timeout, limits=httpx.Limits(max_connections=200))


def _time_healthz(c: httpx.Client, stop: threading.Event, out: list[float]) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        r = c.get("/healthz")
        out.append(time.perf_counter() - t)
        assert r.status_code == 200
        stop.wait(0.05)


def _each(n: int, fn: Callable[[int], Any], workers: int) -> list[Any]:
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(fn, range(n)))


def _backend_env(backend_name: str, data_dir: Path, url: str | None, **extra: str) -> dict[str, str]:
    env = cli_env(data_dir, **extra)
    if backend_name == "postgres":
        assert url is not None
        env["SHOUHU_DATABASE_URL"] = url
    return env


@contextmanager
def _database(backend_name: str) -> Iterator[str | None]:
    if backend_name == "postgres":
        with fresh_postgres_database() as url:
            yield url
    else:
        yield None


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_verification_flood_waiting_for_the_database_does_not_freeze_the_loop(backend_name, tmp_path):
    """While a writer holds the audit lock, 60 public verifications wait; /healthz still answers at once.

    (Before: each verification waited for the lock on the event loop, and /healthz answered only
    when the lock was released.) The probes start once the flood is in, so the burst of new
    connections on a busy 2-core machine is not what they measure.
    """
    data_dir = tmp_path / "var"
    with _database(backend_name) as url:
        env = _backend_env(backend_name, data_dir, url, SHOUHU_VERIFY_RATE_LIMIT="100000",
                           SHOUHU_DATABASE_LOCK_TIMEOUT_SECONDS="15")
        run_cli(env, "init")
        with serving(env, tmp_path / "serve.out") as server, ExitStack() as clients:
            latencies: list[float] = []
            stop = threading.Event()
            flooder, prober = clients.enter_context(_client(server.base_url)), clients.enter_context(
                _client(server.base_url))
            prober.get("/healthz")  # connected before the flood

            def verify(_: int) -> int:
                r = flooder.post(f"/api/v1/verify/{secrets.token_hex(6)}", content=b"%PDF-1.7 copy" * 500)
                return r.status_code

            with holding_audit_lock(env, data_dir, seconds=5.0), ThreadPoolExecutor(60) as ex:
                flood = [ex.submit(verify, i) for i in range(60)]
                time.sleep(1.5)  # the flood is in, queued behind the lock
                probe = threading.Thread(target=_time_healthz, args=(prober, stop, latencies))
                probe.start()
                time.sleep(2.5)
                stop.set()
                probe.join(30)
            statuses = Counter(f.result() for f in flood)
            assert latencies and max(latencies) < 1.0, f"/healthz took up to {max(latencies):.2f}s"
            # Once the lock is free every verification is answered: an unknown code is a 404.
            assert statuses == Counter({404: 60}), statuses
            assert server.proc.poll() is None
        assert "Traceback" not in server.output()


def _seed(env: dict[str, str]) -> None:
    run_cli(env, "init")
    run_cli(env, "demo", "--households", "30")


@pytest.mark.slow
@pytest.mark.parametrize("threads", ["40", "4"])
@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_sixty_parallel_reads_by_one_caseworker_all_answer(backend_name, threads, tmp_path):
    """The finding: 60 parallel GET /households gave 39 x 500 and a 60 s stall on SQLite.

    Also with 4 request threads: more requests in flight than threads (and than pooled
    connections) must neither wait on each other nor end in 503.
    """
    data_dir = tmp_path / "var"
    with _database(backend_name) as url:
        env = _backend_env(backend_name, data_dir, url, SHOUHU_REQUEST_THREADS=threads)
        _seed(env)
        with serving(env, tmp_path / "serve.out") as server, ExitStack() as clients:
            with server.client() as http:
                cw = login(http, "caseworker.haizhou")
            c = clients.enter_context(_client(server.base_url, timeout=30))

            def read(_: int) -> int:
                return c.get("/api/v1/households", params={"limit": 20}, headers=cw).status_code

            started = time.monotonic()
            statuses = Counter(_each(60, read, workers=60))
            elapsed = time.monotonic() - started
            assert statuses == Counter({200: 60}), statuses
            assert elapsed < 30, f"60 reads took {elapsed:.1f}s"
        assert "Traceback" not in server.output()


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_load_reads_and_an_anonymous_verification_flood_no_5xx(backend_name, tmp_path):
    """The load test: 60 parallel authenticated reads (three rounds) plus a flood of anonymous
    verifications from one address (rate-limited as deployed), on loopback; no 5xx and it finishes."""
    data_dir = tmp_path / "var"
    with _database(backend_name) as url:
        env = _backend_env(backend_name, data_dir, url)
        _seed(env)
        with serving(env, tmp_path / "serve.out") as server, ExitStack() as clients:
            with server.client() as http:
                cw = login(http, "caseworker.haizhou")
                households = http.get("/api/v1/households", params={"limit": 20}, headers=cw).json()["items"]
            paths = ["/api/v1/households", *(f"/api/v1/households/{h['id']}" for h in households)]

            reader, flooder = clients.enter_context(_client(server.base_url)), clients.enter_context(
                _client(server.base_url))

            def read(i: int) -> int:
                return reader.get(paths[i % len(paths)], headers=cw).status_code

            def verify(i: int) -> int:
                if i % 2:
                    return flooder.post(f"/api/v1/verify/{secrets.token_hex(6)}", content=b"%PDF" * 200).status_code
                return flooder.get(f"/api/v1/verify/{secrets.token_hex(6)}").status_code

            with ThreadPoolExecutor(40) as flooders:
                flood = [flooders.submit(verify, i) for i in range(300)]
                reads = Counter(_each(180, read, workers=60))
                verifications = Counter(f.result() for f in flood)
            assert reads == Counter({200: 180}), reads
            assert set(verifications) <= {404, 429}, verifications
            assert verifications[429] > 0  # the flood from one address was limited
        assert "Traceback" not in server.output()


# Lock waits end in a 503 -------------------------------------------------------------------


def test_a_request_that_cannot_get_the_lock_in_time_is_a_503(backend, data_dir, tmp_path):
    """With the audit lock held past the lock timeout, reads answer 503 (error shape), never 500."""
    backend.reset()
    settings = make_settings(data_dir, backend.database_url(data_dir), database_lock_timeout_seconds=0.5)
    with seeded_runtime(settings) as rt, TestClient(create_app(runtime=rt)) as client:
        cw = api_login(client, "caseworker.haizhou")
        r = client.post("/api/v1/households", json=household_body(), headers=cw)
        assert r.status_code == 201, r.text
        env = {} if backend.name == "sqlite" else {"SHOUHU_DATABASE_URL": settings.effective_database_url}
        with holding_audit_lock(env, data_dir, seconds=10):
            started = time.monotonic()
            for method, path in (("GET", "/api/v1/households"), ("POST", "/api/v1/households")):
                r = client.request(method, path, headers=cw,
                                   json=household_body() if method == "POST" else None)
                assert r.status_code == 503, (method, r.status_code, r.text)
                body = r.json()["error"]
                assert body["code"] in ("busy", "audit_unavailable") and body["message"]
                assert r.headers.get("Retry-After")
            assert time.monotonic() - started < 8
        # Free again: the same requests succeed.
        assert client.get("/api/v1/households", headers=cw).status_code == 200


def _actor(rt: Runtime, username: str) -> Any:
    with rt.db.session() as s:
        return actor_for(s, s.scalars(select(User).where(User.username == username)).one())


def _writer_gets_through(rt: Runtime) -> float:
    """Seconds another writer waits to append an audit event (it must not wait at all)."""
    started = time.monotonic()
    with rt.db.session() as other:
        rt.audit.append(other, actor=_actor(rt, "admin"), request_id="req_other", at=rt.clock(),
                        draft=EventDraft(action=Action.ME_READ, outcome="allowed", reason="test"))
        other.commit()
    return time.monotonic() - started


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_after_its_commit_a_request_holds_no_lock(backend, data_dir, method):
    """After Guard.commit the request goes on reading (decrypting, building its answer) without a
    lock or a write transaction: a writer elsewhere is not kept waiting."""
    backend.reset()
    settings = make_settings(data_dir, backend.database_url(data_dir), database_lock_timeout_seconds=2)
    with seeded_runtime(settings) as rt:
        cw = _actor(rt, "caseworker.haizhou")
        with rt.db.session() as s:
            g = rt.guard(s, cw)
            household = rt.archive.create_household(g, schemas.HouseholdCreate.model_validate(household_body()))
        with rt.db.request_session(write=method == "POST") as s:
            g = rt.guard(s, cw)
            if method == "GET":
                rt.archive.read_household(g, household.id)  # commits its event, then decrypts
            else:
                rt.archive.update_household(g, household.id, schemas.HouseholdUpdate(notes="更新"))
            rt.archive.read_household(g, household.id)  # after the commit, reading goes on
            assert _writer_gets_through(rt) < 1.0


def test_a_reading_session_cannot_write_until_told(rt):
    """A GET's session (or one after a commit) is read-only in the database as well as in the ORM:
    a forgotten Guard.begin_write() fails loudly instead of taking the write lock unannounced."""
    from sqlalchemy import text

    from core.db import WriteWhileReading, begin_write

    with rt.db.request_session(write=False) as s:
        user = s.scalars(select(User).where(User.username == "caseworker.haizhou")).one()
        user.display_name = "改名"
        with pytest.raises(WriteWhileReading):
            s.flush()
        s.rollback()
        with pytest.raises(DBAPIError):  # query_only (SQLite), READ ONLY (PostgreSQL)
            s.execute(text("UPDATE users SET display_name = 'x'"))
        s.rollback()
        begin_write(s)
        s.execute(text("UPDATE users SET display_name = display_name"))
        s.commit()  # and back to reading
        with pytest.raises(DBAPIError):
            s.execute(text("UPDATE users SET display_name = 'x'"))


def test_signing_out_of_the_pages_revokes_the_session(app):
    """A form post that writes after its audit commit (the sign-out revokes the token): it asks to
    write again, so the session is ended, not a 500."""
    import re

    from tests.conftest import web_login

    with TestClient(app, base_url="https://testserver") as c:
        assert web_login(c, "caseworker.haizhou", follow_redirects=False).status_code == 303
        page = c.get("/")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert page.status_code == 200 and token
        r = c.post("/logout", data={"csrf_token": token.group(1)}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/login?done=signed_out"
        assert "已退出登录。" in c.get(r.headers["location"]).text  # the sign-in page says so
        assert c.get("/", follow_redirects=False).status_code == 303  # signed out: to the sign-in page
