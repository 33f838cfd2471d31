"""Pool workers die with their parent: a ``shouhu serve`` killed with SIGKILL leaves no renderer behind.

A child process starts a render pool (1 worker) and a reindex tokenizer pool (2 workers), uses
them, and is killed with SIGKILL, so neither pool can shut down. Every worker must be gone within
a few seconds (``core.workers.exit_with_parent``). Before the watchdog, each such kill left its
workers waiting for ever: 104 of them, 20 GB, after three runs of this suite.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.proc_support import alive, children

ROOT = Path(__file__).resolve().parents[2]
# The start of both child scripts: the imports, and a parent with a tokenizer pool (2 workers) and a
# renderer pool (1 worker) to make.
CHILD_START = r'''
import os, signal, time
from core import crypto
from doc_templates.pool import RenderPool
from search.analyzer import Analyzer
from search.tokenize_pool import TokenizerPool

if __name__ == "__main__":
    ring = crypto.KeyRing(os.urandom(32), suite=crypto.AES_SUITE)
    analyzer = Analyzer(lambda t: ring.keyed_hash("search", t, hex_chars=16),
                        portable=lambda: ring.keyed_hasher("search", hex_chars=16))
    tokenizers = TokenizerPool(analyzer, 2)
'''
CHILD = CHILD_START + r'''
    tokenizers.collect(tokenizers.submit([["王子涵"]] * 4))
    renderers = RenderPool(1)
    renderers.warm()
    print("ready", flush=True)
    time.sleep(600)
'''


def start_child(tmp_path: Path, name: str, script: str) -> subprocess.Popen[str]:
    """``script`` run as ``name`` in its own Python, with the repository on its path; stdout piped."""
    path = tmp_path / name
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, str(path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)


def wait_gone(workers: list[int] | set[int], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(w) for w in workers):
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_exit_when_their_parent_is_killed(tmp_path):
    child = start_child(tmp_path, "child.py", CHILD)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        workers = children(child.pid)
        assert len(workers) >= 3, workers  # 2 tokenizers, 1 renderer (and the resource tracker)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        wait_gone(workers, 15)
        assert not [w for w in workers if alive(w)], "workers outlived their killed parent"
    finally:
        if child.poll() is None:
            child.kill()
        for w in children(child.pid):
            os.kill(w, signal.SIGKILL)
        if child.stdout is not None:
            child.stdout.close()


# The parent starts both pools and is killed at once, while its workers are still starting (the
# interpreter, the imports, the initializer): by the time a worker reads its parent's pid the
# parent is gone. It prints the workers' pids first: after the kill they belong to another parent.
EARLY_CHILD = CHILD_START + r'''
    tokenizers.submit([["王子涵"]] * 4)
    renderers = RenderPool(1)
    renderers.submit("sealed_query_reply", {}, None)
    pids = [*tokenizers._executor._processes, *renderers._pool()._processes]
    print(" ".join(map(str, pids)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc (Linux)")
def test_workers_exit_when_their_parent_is_killed_while_they_start(tmp_path):
    child = start_child(tmp_path, "early_child.py", EARLY_CHILD)
    workers: list[int] = []
    try:
        assert child.stdout is not None
        workers = [int(p) for p in child.stdout.readline().split()]
        assert len(workers) == 3, workers  # 2 tokenizers, 1 renderer
        assert child.wait(timeout=10) == -signal.SIGKILL
        wait_gone(workers, 20)  # the renderer's warm-up takes 5-7 s on a loaded machine
        assert not [w for w in workers if alive(w)], "workers outlived a parent killed while they started"
    finally:
        if child.poll() is None:
            child.kill()
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)
        if child.stdout is not None:
            child.stdout.close()
