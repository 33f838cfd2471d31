"""A pool of rendering processes, so a slow render never stalls other requests.

Each worker builds one ``Renderer`` (fonts and stylesheet parsed once) and
renders many documents. Workers are spawned, not forked: the server process has
threads, and WeasyPrint is never imported into it. With ``workers=0`` rendering
happens in the calling process (the CLI's batch printing and small tools).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import date
from pathlib import Path
from typing import Any, cast

from core.workers import exit_with_parent
from doc_templates import signing
from doc_templates.kinds import KINDS
from doc_templates.render import DocumentMeta, Renderer
from doc_templates.signing import SignerKey

# One renderer per font folder, built on first use (in a worker: at its start).
_renderers: dict[Path | None, Renderer] = {}


def _worker_init(parent: int, font_dir: Path | None) -> None:
    exit_with_parent(parent)
    renderer = _local(font_dir)
    # Pay the first-render costs (glyph-coverage table, font loading) now, not on a request.
    kind = KINDS["sealed_query_reply"]
    renderer.pdf(kind, kind.validate(kind.example), DocumentMeta(
        kind=kind.kind, kind_title=kind.title, issuer="预热", doc_number="预热", issued_on=date(2026, 1, 1)))


def _local(font_dir: Path | None) -> Renderer:
    renderer = _renderers.get(font_dir)
    if renderer is None:
        renderer = _renderers[font_dir] = Renderer(font_dir)
    return renderer


def _render(font_dir: Path | None, kind: str, fields: dict[str, Any], meta: DocumentMeta,
            signer: SignerKey | None = None) -> bytes:
    """Render, and with ``signer`` sign in the same write (at the document's creation time): an issue."""
    k = KINDS[kind]
    return _local(font_dir).pdf(k, k.validate(fields), meta, signer=signer, at=meta.created_at)


def _render_each(font_dir: Path | None, items: list[tuple[str, dict[str, Any], DocumentMeta]],
                 signer: SignerKey | None = None) -> list[bytes]:
    """Several documents in one worker call: each laid out and written on its own (its own file, as
    stored) and signed like ``_render``."""
    return [_render(font_dir, kind, fields, meta, signer) for kind, fields, meta in items]


def chunks(items: list[Any], workers: int, per_worker: int = 4) -> list[list[Any]]:
    """``items`` in order, cut into about ``per_worker`` contiguous chunks per worker (fewer for few items):
    one call per chunk, so a worker that gets less CPU than the other takes fewer chunks."""
    count = max(1, min(len(items), workers * per_worker))
    size = -(-len(items) // count)
    return [items[i:i + size] for i in range(0, len(items), size)]


def _stamp(font_dir: Path | None, pdf: bytes, lines: list[str], signer: SignerKey | None = None,
           at: Any = None) -> bytes:
    stamped = _local(font_dir).stamp(pdf, lines)
    # A rewritten copy of an existing file: signed after the fact, as an incremental update (pyHanko).
    return signing.sign(stamped, signer, at=at) if signer is not None else stamped


def _render_many(font_dir: Path | None, items: list[tuple[str, dict[str, Any], DocumentMeta]]) -> bytes:
    return _local(font_dir).batch([(KINDS[k], KINDS[k].validate(f), m) for k, f, m in items])


class RenderPool:
    def __init__(self, workers: int, font_dir: Path | None = None):
        self.workers = workers
        self.font_dir = font_dir
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_init,
                    initargs=(os.getpid(), self.font_dir),
                )
            return self._executor

    def _discard(self, broken: ProcessPoolExecutor) -> None:
        """Drop a pool whose worker died (killed, out of memory): it refuses all later work."""
        with self._lock:
            if self._executor is broken:
                self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)

    def _submit(self, fn: Any, *args: Any) -> Future[bytes]:
        executor = self._pool()
        try:
            return executor.submit(fn, *args)
        except BrokenProcessPool:
            self._discard(executor)
            return self._pool().submit(fn, *args)

    def _run(self, timeout: float, fn: Any, *args: Any) -> bytes:
        """Rendering is pure, so a render lost with a dying worker is retried once in a fresh pool."""
        try:
            return self._submit(fn, *args).result(timeout=timeout)
        except BrokenProcessPool:
            return self._submit(fn, *args).result(timeout=timeout)

    def submit(self, kind: str, fields: dict[str, Any], meta: DocumentMeta,
               signer: SignerKey | None = None) -> Future[bytes]:
        if self.workers == 0:
            future: Future[bytes] = Future()
            try:
                future.set_result(_render(self.font_dir, kind, fields, meta, signer))
            except Exception as exc:  # noqa: BLE001 - delivered through the future
                future.set_exception(exc)
            return future
        return self._submit(_render, self.font_dir, kind, fields, meta, signer)

    def pdf(self, kind: str, fields: dict[str, Any], meta: DocumentMeta, *, signer: SignerKey | None = None,
            timeout: float = 120) -> bytes:
        """Fields must already be valid and glyph-checked (errors from workers are not typed).

        With ``signer`` the PDF comes back signed (PAdES), by the worker that rendered it."""
        if self.workers == 0:
            return self.submit(kind, fields, meta, signer).result(timeout=timeout)
        return self._run(timeout, _render, self.font_dir, kind, fields, meta, signer)

    def batch(self, items: list[tuple[str, dict[str, Any], DocumentMeta]], *, timeout: float = 1800) -> bytes:
        if self.workers == 0:
            return _render_many(self.font_dir, items)
        return self._run(timeout, _render_many, self.font_dir, items)

    def issue_many(self, items: list[tuple[str, dict[str, Any], DocumentMeta]], *, signer: SignerKey | None,
                   timeout: float = 1800) -> list[bytes]:
        """Each of ``items`` rendered as its own PDF and signed by ``signer``, in order: chunks of them
        spread over all workers, one worker call per chunk (a batch issue, archive.document_batch)."""
        if self.workers == 0 or len(items) < 2:
            return _render_each(self.font_dir, items, signer)
        parts = chunks(items, self.workers)
        try:
            futures = [self._submit(_render_each, self.font_dir, part, signer) for part in parts]
            done: list[list[bytes]] = [cast(list[bytes], f.result(timeout=timeout)) for f in futures]
        except BrokenProcessPool:  # a worker died: once more, chunk by chunk, in a fresh pool
            done = [cast(list[bytes], self._run(timeout, _render_each, self.font_dir, part, signer)) for part in parts]
        return [pdf for part in done for pdf in part]

    def stamp(self, pdf: bytes, lines: list[str], *, signer: SignerKey | None = None, at: Any = None,
              timeout: float = 120) -> bytes:
        """Print ``lines`` in the top margin of every page of ``pdf``; sign the result with ``signer`` at ``at``."""
        if self.workers == 0:
            return _stamp(self.font_dir, pdf, lines, signer, at)
        return self._run(timeout, _stamp, self.font_dir, pdf, lines, signer, at)

    def warm(self) -> None:
        """Start the workers now rather than on the first request."""
        if self.workers:
            pool = self._pool()
            for f in [pool.submit(os.getpid) for _ in range(self.workers)]:
                f.result()

    def shutdown(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True, cancel_futures=True)
                self._executor = None


_pools: dict[tuple[int, Path | None], RenderPool] = {}
_pools_lock = threading.Lock()


def shared_pool(workers: int, font_dir: Path | None = None) -> RenderPool:
    """One pool per process, size and font folder (tests build many runtimes; workers are costly to start)."""
    with _pools_lock:
        pool = _pools.get((workers, font_dir))
        if pool is None:
            pool = _pools[(workers, font_dir)] = RenderPool(workers, font_dir)
        return pool


@atexit.register
def _shutdown_all() -> None:
    for pool in list(_pools.values()):
        pool.shutdown()
