"""The HTTP application: ``create_app(settings) -> FastAPI``; ``uvicorn main:app``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import access_control.api
import access_control.audit_api
import archive.api
import archive.documents_api
import archive.sealing_api
import search.api
import web.app
from core.db import new_id
from core.errors import Busy, PayloadTooLarge
from core.inputs import refuse_nul
from core.redact import safe_path, safe_traceback
from core.settings import Settings
from runtime import Runtime
from search.backends import SearchUnavailable
from web.errors import install_error_handlers
from web.health import router as health_router

log = logging.getLogger("shouhu")

# /docs: Swagger UI from this server's own files; the pages' CSP (web.app.CSP) allows nothing else.
API_DOCS_PAGE = """<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<title>Shouhu 守护 API</title>
<link rel="stylesheet" href="/static/swagger/swagger-ui.css">
<link rel="icon" href="/static/favicon.svg">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/static/swagger/swagger-ui-bundle.js"></script>
<script src="/static/swagger/init.js"></script>
</body>
</html>
"""

class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._refuse(scope, send)
                return
        seen = 0
        refused = False

        # Past the limit the app is told the client left, and whatever it answers
        # is dropped for the 413. Raising from receive would not do: FastAPI turns
        # any error while reading a body into a 400, and BaseHTTPMiddleware wraps
        # errors from receive in an ExceptionGroup.
        async def limited_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    return {"type": "http.disconnect"}
            return message

        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)
        if refused and not started:
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        err = PayloadTooLarge(details={"field": "body", "limit_bytes": self.limit})
        await JSONResponse(err.body(), status_code=413)(scope, _empty_receive, send)


class RequestContext:
    """Every answer gets a request id and the security headers; one log line per request.

    A plain ASGI middleware (Starlette's ``BaseHTTPMiddleware`` runs each request through an
    extra task and a memory stream, which under load cost a noticeable share of a read).
    """

    API_PATHS = ("/api/", "/healthz", "/readyz")
    API_CSP = b"default-src 'none'; frame-ancestors 'none'"

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope["path"]
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["X-Request-ID"] = request_id
                headers["X-Content-Type-Options"] = "nosniff"
                headers["Referrer-Policy"] = "no-referrer"
                headers["X-Frame-Options"] = "DENY"
                # Pages and API answers hold case data: never cache them.
                headers["Cache-Control"] = "public, max-age=3600" if path.startswith("/static/") else "no-store"
                headers["Content-Security-Policy"] = (
                    self.API_CSP.decode() if path.startswith(self.API_PATHS) else web.app.CSP)  # pages and /docs
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            # The path only: query strings may carry search terms.
            log.info("%s %s %s %d %.1fms", request_id, scope["method"], safe_path(path), status,
                     (time.perf_counter() - started) * 1000)


class Admission:
    """At most ``limit`` requests in the works at once; the others wait here, on the event loop.

    A request in the works may hold a database connection between two of its steps in the
    thread pool (e.g. after its audit commit, while its answer waits for a thread to be
    validated). With more requests in the works than threads or pooled connections, each
    would wait for what another waiting request holds. Waiting here holds neither; a
    request still waiting after ``timeout`` seconds answers 503 ``busy`` with Retry-After.
    Exempt: what holds no connection across steps (health, static files, the API docs) and
    public verification, which has threads and a queue of its own.
    """

    EXEMPT = ("/healthz", "/static/", "/docs", "/openapi.json", "/api/v1/verify/")

    def __init__(self, app: ASGIApp, *, limit: int, timeout: float):
        self.app, self.limit, self.timeout = app, limit, timeout
        self._turns: tuple[Any, anyio.Semaphore] | None = None

    def _semaphore(self) -> anyio.Semaphore:
        loop = asyncio.get_running_loop()  # one per event loop (tests run several)
        if self._turns is None or self._turns[0] is not loop:
            self._turns = (loop, anyio.Semaphore(self.limit))
        return self._turns[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.EXEMPT):
            await self.app(scope, receive, send)
            return
        turns = self._semaphore()
        admitted = False
        with anyio.move_on_after(self.timeout):
            await turns.acquire()
            admitted = True
        if not admitted:
            err = Busy()
            await JSONResponse(err.body(), status_code=err.status, headers=err.headers())(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            turns.release()


async def _empty_receive() -> Message:
    return {"type": "http.disconnect"}


def configure_logging(settings: Settings) -> None:
    """Server log to stderr and ``<data_dir>/logs/shouhu.log``: paths and ids, never bodies."""
    for name in ("uvicorn.error", "uvicorn", "shouhu"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoExceptionText) for f in logger.filters):
            logger.addFilter(_NoExceptionText())
    # `shouhu serve` turns uvicorn's access log off; `uvicorn main:app` keeps it on: there, it
    # logs paths as our own log does, redacted and without the query string.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactedAccessLine) for f in access.filters):
        access.addFilter(_RedactedAccessLine())
    settings.log_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    root = logging.getLogger("shouhu")
    root.setLevel(settings.log_level)
    target = str((settings.log_dir / "shouhu.log").absolute())
    for h in list(root.handlers):
        # A second app in one process (tests) logs to its own data dir, not the first's.
        if getattr(h, "_shouhu", False) and getattr(h, "baseFilename", None) != target:
            root.removeHandler(h)
            h.close()
    if not any(getattr(h, "_shouhu", False) for h in root.handlers):
        fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        fh = logging.handlers.RotatingFileHandler(
            settings.log_dir / "shouhu.log", maxBytes=20_000_000, backupCount=5, encoding="utf-8"
        )
        with contextlib.suppress(OSError):  # one made by an older version too (new ones are, by umask)
            os.chmod(fh.baseFilename, 0o600)
        fh.setFormatter(fmt)
        fh._shouhu = True  # type: ignore[attr-defined]
        root.addHandler(fh)


class _NoExceptionText(logging.Filter):
    """uvicorn logs unhandled errors with their traceback text; keep only where they happened."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.msg = f"{record.getMessage()}: {safe_traceback(record.exc_info[1])}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


class _RedactedAccessLine(logging.Filter):
    """uvicorn's access line is (client, method, path with query, HTTP version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], safe_path(args[2].split("?", 1)[0]), *args[3:])
        return True


class CheckpointSchedule:
    """Signs an audit checkpoint every ``interval`` seconds if the log grew (0 = off)."""

    def __init__(self, rt: Runtime, interval: int):
        self.rt, self.interval = rt, interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._thread = threading.Thread(target=self._run, name="audit-checkpoints", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self.rt.clock.wait(self._stop, self.interval):  # the runtime clock: tests advance it
            try:
                cp = self.rt.checkpoint_now()
                if cp:
                    log.info("audit checkpoint size=%s root=%s", cp["size"], cp["root"])
            except Exception as exc:  # noqa: BLE001 - keep the schedule alive, say why
                log.error("audit checkpoint failed: %s", safe_traceback(exc))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None) -> FastAPI:
    """The application, serving ``runtime`` (or one opened on ``settings``).

    Refuses to start (ConfigError) without a usable master key. What it serves is
    ``app.state.runtime``, read when serving starts and on every request; the request limits
    (body size, request threads, queue time) are fixed here. The test suite points one app at
    each test's runtime in turn: FastAPI prepares an app's routes on its first requests, which
    costs more than most tests.
    """
    settings = settings or (runtime.settings if runtime else Settings())
    rt = runtime or Runtime.open(settings)
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[None]:
        served: Runtime = app_.state.runtime
        # The request threads; the connection pool is sized from the same number (core.db).
        anyio.to_thread.current_default_thread_limiter().total_tokens = served.settings.request_threads
        scheduler = CheckpointSchedule(served, served.settings.audit_checkpoint_interval_seconds)
        scheduler.start()
        try:
            served.indexer.start()  # drains what earlier runs left in the outbox, then keeps up
        except SearchUnavailable as exc:
            # Serve everything else; searches answer 503 until the index is rebuilt.
            log.error("search index unavailable: %s", exc)
        # Start the render workers now, not on the first issue (5-7 s cold).
        threading.Thread(target=served.render_pool.warm, name="render-warm", daemon=True).start()
        try:
            yield
        finally:
            if served._indexer is not None:
                served.indexer.stop()
            scheduler.stop()
            if runtime is None:
                served.close()

    app = FastAPI(
        title="Shouhu 守护",
        version="0.1.0",
        description="Encrypted case files, official documents and a tamper-evident access log "
        "for juvenile social protection. Errors: `{\"error\": {code, message, details}}`.",
        lifespan=lifespan,
        dependencies=[Depends(refuse_nul)],  # PostgreSQL text holds no NUL: refused up front, named
        # /docs is our own page on local assets (API_DOCS_PAGE), under the pages' CSP;
        # FastAPI's would load Swagger UI from a CDN with an inline script.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.runtime = rt
    # Added before the request middleware below, so it runs inside it: a 413 gets
    # the request id and security headers like every other answer.
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    # Inside the request middleware (its id and headers go on a 503 too); a request waiting for
    # its turn holds no thread and no connection.
    app.add_middleware(Admission, limit=settings.request_threads, timeout=settings.request_queue_seconds)

    app.add_middleware(RequestContext)
    install_error_handlers(app)  # web/errors.py: the JSON error shape, or an error page
    app.include_router(health_router)

    @app.get("/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        return HTMLResponse(API_DOCS_PAGE)

    app.include_router(access_control.api.router)
    app.include_router(access_control.audit_api.router)
    app.include_router(archive.api.router)
    app.include_router(archive.documents_api.router)
    app.include_router(archive.documents_api.public)
    app.include_router(archive.sealing_api.router)
    app.include_router(search.api.router)
    web.app.install(app)
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn main:app` builds the app from the environment on first access.
    if name == "app":
        return create_app()
    raise AttributeError(name)
