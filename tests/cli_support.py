"""Helpers for tests that run the real ``shouhu`` command, as subprocesses or in process.

Each subprocess gets a clean environment: the operator's ``SHOUHU_*`` variables are
dropped, the data dir points into the test's tmp dir, and argon2 is made cheap.
``InProcess`` runs commands with typer's CliRunner on a test's own settings.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import psycopg
import pytest
from click.testing import Result
from typer.testing import CliRunner

import cli
from bench import stop_process
from cli import common as cli_common
from core.settings import Settings
from tests.conftest import DEMO_PASSWORD, WORKER, postgres_admin_url, sqlalchemy_url
from tests.conftest import login as login  # re-exported: tests sign in to a served archive with it

SHOUHU = str(Path(sys.executable).with_name("shouhu"))
if not Path(SHOUHU).exists():  # pragma: no cover - a venv without the script
    SHOUHU = shutil.which("shouhu") or "shouhu"


class InProcess:
    """``shouhu ARGS`` in this process (typer's CliRunner), on ``settings`` rather than the environment's.

    ``width`` widens the console so that rich prints tables unabridged.
    """

    def __init__(self, settings: Settings, monkeypatch: pytest.MonkeyPatch, *, width: int | None = None):
        monkeypatch.setattr(cli_common.state, "settings", settings)
        if width is not None:
            monkeypatch.setattr(cli_common.console, "width", width)
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool | None = True, stdin: str | None = None) -> Result:
        """Run a command; ``ok`` says whether it must exit 0 or fail (not by a failed assertion); None: either."""
        result = self.runner.invoke(cli.app, list(args), input=stdin)
        if ok:
            assert result.exit_code == 0, (args, result.output, result.exception)
        elif ok is False:
            assert result.exit_code != 0, (args, result.output)
            assert not isinstance(result.exception, AssertionError), result.exception
        return result


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUHU_")}
    env.update(
        SHOUHU_DATA_DIR=str(data_dir),
        SHOUHU_DEMO_PASSWORD=DEMO_PASSWORD,
        SHOUHU_MFA_REQUIRED_ROLES="",  # as tests.conftest.make_settings: the demo's privileged users have no factor
        SHOUHU_ARGON2_TIME_COST="1",
        SHOUHU_ARGON2_MEMORY_KIB="1024",
        COLUMNS="500",  # rich wraps tables and sentences at the terminal width
        # A server renders in the request's own process unless a test asks for render workers (each
        # worker imports WeasyPrint and renders a warm-up page at start: 1-2 s of CPU apiece).
        SHOUHU_RENDER_WORKERS="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def demo_archive_dir(tmp_path_factory: pytest.TempPathFactory, name: str, households: int) -> Path:
    """A new data folder under ``tmp_path_factory``, initialized by ``shouhu init`` and filled by ``shouhu demo``."""
    data_dir = tmp_path_factory.mktemp(name) / "var"
    env = cli_env(data_dir)
    run_cli(env, "init")
    run_cli(env, "demo", "--households", str(households))
    return data_dir


def run_cli(env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``shouhu ARGS``; with ``check`` a non-zero exit fails with the output."""
    cwd = Path(env["SHOUHU_DATA_DIR"]).parent
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [SHOUHU, *args], env=env, cwd=cwd, input=stdin, capture_output=True, text=True,
        timeout=timeout, check=False,
    )
    if check:
        assert proc.returncode == 0, (
            f"shouhu {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def output(proc: subprocess.CompletedProcess[str]) -> str:
    """stdout and stderr with whitespace runs collapsed (rich may still break lines)."""
    return " ".join((proc.stdout + "\n" + proc.stderr).split())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    base_url: str
    output_path: Path

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=90)


@contextmanager
def serving(env: dict[str, str], output_path: Path, *, ready_timeout: float = 60,
            command: tuple[str, ...] = (SHOUHU, "serve"), ready_path: str = "/readyz") -> Iterator[Server]:
    """``shouhu serve`` (or ``command``) on a free port of 127.0.0.1; always stopped on the way out."""
    port = free_port()
    with output_path.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=Path(env["SHOUHU_DATA_DIR"]).parent, stdout=out, stderr=subprocess.STDOUT,
        )
        try:
            server = Server(proc, f"http://127.0.0.1:{port}", output_path)
            _wait_ready(server, ready_timeout, ready_path)
            yield server
        finally:
            if proc.poll() is None:
                stop_process(proc)


def _wait_ready(server: Server, timeout: float, path: str = "/readyz") -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            code = server.proc.returncode
            raise AssertionError(f"shouhu serve exited {code} before ready:\n{server.output()}")
        try:
            r = httpx.get(server.base_url + path, timeout=5)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text}"
        except httpx.TransportError as exc:
            last = type(exc).__name__
        time.sleep(0.1)
    raise AssertionError(f"shouhu serve not ready after {timeout}s ({last}):\n{server.output()}")



def sqlite_rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of a read-only query on the archive's SQLite file (opened read-only: never creates it)."""
    conn = sqlite3.connect(f"file:{data_dir / 'shouhu.db'}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (SQLAlchemy URL), dropped afterwards."""
    admin = postgres_admin_url()
    name = f"shouhu_cli_{WORKER}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base, _, _ = admin.rpartition("/")
        yield sqlalchemy_url(f"{base}/{name}")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
