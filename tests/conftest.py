"""Shared fixtures: every archive test runs on SQLite and on PostgreSQL.

Migrations run once per backend and test session (with pytest-xdist, once per
worker). Each test then gets a clean database (a copy of the migrated SQLite
file, or truncated PostgreSQL tables in a database of this worker's own), its
own random master key, a fresh KEK and the demo region tree, orgs and users.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import text

from archive import demo
from core.db import Base
from core.settings import Settings
from main import configure_logging, create_app
from runtime import Runtime, upgrade_database

# Tests never inherit the operator's configuration.
for _name in list(os.environ):
    if _name.startswith("SHOUHU_") and _name not in ("SHOUHU_TEST_POSTGRES_URL",):
        del os.environ[_name]

# Temporary archives live in memory when the machine has a tmpfs (/dev/shm): an archive commits with
# PRAGMA synchronous=FULL (an fsync per commit), and no test cuts the power, so on disk each commit
# would only wait for the disk. Subprocesses (servers, the CLI) inherit it. An explicit TMPDIR wins.
_SHM = Path("/dev/shm")
if "TMPDIR" not in os.environ and _SHM.is_dir() and os.access(_SHM, os.W_OK):
    os.environ["TMPDIR"] = str(_SHM)
    tempfile.tempdir = None  # re-read TMPDIR

# The pytest-xdist worker this process is ("gw0", "gw1", ...; "main" without xdist): it names the
# PostgreSQL databases this process creates, so parallel workers never share one.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")

DEMO_PASSWORD = "test-password-123"
MFA_ROLES = "admin,security_admin,auditor,custodian"  # the production default of mfa_required_roles
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}


# Parallel runs. `make test` runs the suite in two passes: everything not marked `serial` on one
# pytest-xdist worker per core (`--dist loadgroup`), then the `serial` tests alone, one at a time.
# `serial`: tests whose answers depend on time or on having the machine to themselves (stall and
# latency checks, answer timing, a wave of concurrent issues against a real server); the bench smokes
# and `make run` assert no timing and run in the parallel pass.
# A test that uses a module-scoped fixture joins its file's xdist group, so the fixture is built once.
SERIAL_FILES = {"test_no_stall.py"}
SERIAL_TESTS = {
    "test_indistinguishable_sealed_record_and_no_record",  # answer timing, sealed vs no record
    "test_fifty_concurrent_issues_get_numbers_one_to_fifty_once",  # 50 issues at once: 503 when starved
    "test_healthz_answers_while_documents_render",  # latency while rendering
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects and before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in SERIAL_FILES or getattr(item, "originalname", None) in SERIAL_TESTS:
            item.add_marker(pytest.mark.serial)
        info = getattr(item, "_fixtureinfo", None)
        if info is not None and any(defs and defs[-1].scope == "module" for defs in info.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.path.stem))


def postgres_admin_url() -> str:
    url = os.environ.get("SHOUHU_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    return url.replace("postgresql+psycopg://", "postgresql://")


def sqlalchemy_url(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


@dataclass
class Backend:
    name: str
    template: Path | None = None  # SQLite: a migrated database file to copy
    pg_url: str | None = None  # PostgreSQL: this run's own database

    def database_url(self, data_dir: Path) -> str | None:
        if self.name == "sqlite":
            assert self.template is not None
            data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.template, data_dir / "shouhu.db")
            return None  # the default: <data_dir>/shouhu.db
        assert self.pg_url is not None
        return sqlalchemy_url(self.pg_url)

    def reset(self) -> None:
        """Empty every table (PostgreSQL; a SQLite test copies the template instead).

        DELETE, not TRUNCATE: on a few dozen nearly empty tables TRUNCATE takes 0.2-0.6 s (it makes new
        files for each table and its indexes), DELETE 10-30 ms. The sequences start again at 1.
        """
        if self.name != "postgres":
            return
        assert self.pg_url is not None
        with psycopg.connect(self.pg_url) as conn:
            # The audit tables refuse DELETE (row triggers, migration 0002); replica mode skips the triggers.
            conn.execute("SET session_replication_role = replica")
            for name in _pg_tables():
                conn.execute(f'DELETE FROM "{name}"')
            for seq, _last in conn.execute(_PG_SEQUENCES).fetchall():
                conn.execute("SELECT setval(%s, 1, false)", (seq,))

    def snapshot(self, settings: Settings, folder: Path) -> Snapshot:
        """The archive on ``settings`` as it is now (its runtime closed), for ``restore`` in other tests:
        for tests that each need the same archive built through the API, built once per worker."""
        files = folder / "files"
        shutil.copytree(settings.data_dir, files)
        if self.name != "postgres":
            return Snapshot(settings, files)
        assert self.pg_url is not None
        schema = f"snapshot_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.pg_url) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
            for name in _pg_tables():
                conn.execute(f'CREATE TABLE "{schema}"."{name}" AS TABLE public."{name}"')
            sequences = {seq: last for seq, last in conn.execute(_PG_SEQUENCES + " AND last_value IS NOT NULL")}
        return Snapshot(settings, files, schema, sequences)

    def restore(self, snapshot: Snapshot, data_dir: Path, *, reset: bool = True) -> Settings:
        """``snapshot`` as this test's archive in ``data_dir``; its settings (the snapshot's master key)."""
        shutil.copytree(snapshot.files, data_dir, dirs_exist_ok=True)
        if self.name == "postgres":
            if reset:
                self.reset()
            assert self.pg_url is not None
            with psycopg.connect(self.pg_url) as conn:
                conn.execute("SET session_replication_role = replica")  # no triggers, no foreign-key checks
                columns: dict[str, list[str]] = {}
                for table, column in conn.execute(
                        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s "
                        "ORDER BY ordinal_position", (snapshot.schema,)):
                    columns.setdefault(table, []).append(f'"{column}"')
                for name in _pg_tables():  # by name: a test that ran a migration again may have moved a column
                    listed = ", ".join(columns[name])
                    conn.execute(f'INSERT INTO public."{name}" ({listed}) '
                                 f'SELECT {listed} FROM "{snapshot.schema}"."{name}"')
                for seq, last in snapshot.sequences.items():
                    conn.execute("SELECT setval(%s, %s, true)", (seq, last))
        return snapshot.settings.model_copy(update={"data_dir": data_dir})

    def drop(self, snapshot: Snapshot) -> None:
        shutil.rmtree(snapshot.files, ignore_errors=True)
        if snapshot.schema is not None:
            assert self.pg_url is not None
            with psycopg.connect(self.pg_url) as conn:
                conn.execute(f'DROP SCHEMA "{snapshot.schema}" CASCADE')


# PostgreSQL: every table of the archive, children first (search_docs and search_meta are made
# outside the ORM metadata), and the sequences.
_PG_SEQUENCES = "SELECT schemaname || '.' || sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'"


def _pg_tables() -> list[str]:
    return [*(t.name for t in reversed(Base.metadata.sorted_tables)), "search_docs", "search_meta"]


@dataclass
class Snapshot:
    """An archive copied as it was: its settings (the master key opens it), a copy of its data dir and,
    on PostgreSQL, the schema holding a copy of every table with the sequences' values."""

    settings: Settings
    files: Path
    schema: str | None = None
    sequences: dict[str, int] = field(default_factory=dict)


def make_settings(data_dir: Path, database_url: str | None, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": database_url,
        "master_key": SecretStr(base64.b64encode(secrets.token_bytes(32)).decode()),
        "demo_password": SecretStr(DEMO_PASSWORD),
        "keyring_refresh_seconds": 0.5,
        "audit_checkpoint_interval_seconds": 0,
        # The demo world's privileged users have no second factor: tests that sign them in with a password
        # alone run without the requirement; tests of the second factor (tests/access_control/test_second_factor.py)
        # turn it on with MFA_ROLES.
        "mfa_required_roles": "",
        **FAST_ARGON2,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("sqlite-template")
        settings = make_settings(folder, None)
        rt = Runtime.open(settings, require_schema=False)
        upgrade_database(rt.db)
        rt.close()
        yield Backend("sqlite", template=folder / "shouhu.db")
        return
    admin = postgres_admin_url()
    name = f"shouhu_test_{WORKER}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    url = f"{base}/{name}"
    folder = tmp_path_factory.mktemp("pg-migrate")
    rt = Runtime.open(make_settings(folder, sqlalchemy_url(url)), require_schema=False)
    upgrade_database(rt.db)
    rt.close()
    try:
        yield Backend("postgres", pg_url=url)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


# The master key of this worker's tests that take the ``settings`` fixture: the demo world below is
# made once per worker and backend under it, and copied into each test that asks for ``rt``.
WORLD_MASTER_KEY = SecretStr(base64.b64encode(secrets.token_bytes(32)).decode())


@pytest.fixture
def settings(backend: Backend, data_dir: Path) -> Settings:
    backend.reset()
    return make_settings(data_dir, backend.database_url(data_dir), master_key=WORLD_MASTER_KEY)


@pytest.fixture(scope="session")
def demo_world(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snapshot]:
    """An archive initialized (keys, audit head, signing CA) and seeded with the demo world, made once
    per worker and backend: ``rt`` copies it (initializing and seeding took ~70 ms a test)."""
    folder = tmp_path_factory.mktemp(f"world-{backend.name}")
    backend.reset()
    made = make_settings(folder / "var", backend.database_url(folder / "var"), master_key=WORLD_MASTER_KEY)
    with seeded_runtime(made):
        pass
    snapshot = backend.snapshot(made, folder)
    yield snapshot
    backend.drop(snapshot)


def seed_world(rt: Runtime) -> None:
    """The demo region tree, orgs and users (no households)."""
    demo.build_world(rt)


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 90, *, poll: float = 0.1) -> None:
    """Wait until ``ok()``, asking every ``poll`` seconds; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def seeded_runtime(settings: Settings) -> Iterator[Runtime]:
    """A runtime on ``settings``' archive, initialized and seeded with the demo world; closed on the way out."""
    runtime = Runtime.open(settings, require_schema=False)
    runtime.initialize()
    seed_world(runtime)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def rt(settings: Settings, backend: Backend, demo_world: Snapshot) -> Iterator[Runtime]:
    """A runtime on ``settings``' archive with the demo world: the worker's copy of it where the settings
    are the ones it was made with (a test's own settings get a world made for them)."""
    if settings.model_copy(update={"data_dir": demo_world.settings.data_dir}) != demo_world.settings:
        with seeded_runtime(settings) as runtime:
            yield runtime
        return
    backend.restore(demo_world, settings.data_dir, reset=False)  # `settings` has just emptied the database
    with initialized_runtime(settings) as runtime:
        yield runtime


@contextmanager
def initialized_runtime(settings: Settings) -> Iterator[Runtime]:
    """A runtime on an archive that already holds what a test needs (a restored snapshot), initialized
    as a server's start does; closed on the way out."""
    runtime = Runtime.open(settings)
    runtime.initialize()
    try:
        yield runtime
    finally:
        runtime.close()


# One app per worker process and request limits, serving each test's runtime in turn
# (``create_app``: the app serves ``app.state.runtime``). FastAPI prepares an app's routes on its
# first requests, 0.1-0.3 s of CPU: more than most tests take.
_APPS: dict[tuple[int, int, float], Any] = {}


@pytest.fixture
def app(rt: Runtime) -> Any:
    s = rt.settings
    limits = (s.max_body_bytes, s.request_threads, s.request_queue_seconds)
    served = _APPS.get(limits)
    if served is None:
        served = _APPS[limits] = create_app(runtime=rt)
    else:
        configure_logging(rt.settings)  # the server log in this test's archive, as create_app does
    served.state.runtime = rt
    return served


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def sign_in(client: Any, username: str, password: str = DEMO_PASSWORD, **kw: Any) -> Any:
    """The API's sign-in answer, as it came (``client``: a TestClient or an httpx client)."""
    return client.post("/api/v1/auth/token", data={"username": username, "password": password}, **kw)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: Any, username: str, password: str = DEMO_PASSWORD) -> dict[str, str]:
    """Sign in (it must succeed); the Authorization header for the token."""
    r = sign_in(client, username, password)
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


class Tokens:
    """Lazily signs in demo users: ``tokens['caseworker.haizhou']`` -> headers."""

    def __init__(self, client: TestClient):
        self.client = client
        self._cache: dict[str, dict[str, str]] = {}

    def __getitem__(self, username: str) -> dict[str, str]:
        if username not in self._cache:
            self._cache[username] = login(self.client, username)
        return self._cache[username]


@pytest.fixture
def tokens(client: TestClient) -> Tokens:
    return Tokens(client)


# Factories ------------------------------------------------------------------------

_ID_SEQ = iter(range(10**6))


def id_number(county: str, birth: str, seq: str) -> str:
    """The ID number with these parts and its check character."""
    from archive.schemas import id_check_char

    first17 = f"{county}{birth}{seq}"
    return first17 + id_check_char(first17)


def make_id_number(county: str = "320706", birth: str = "20150301", male: bool = True) -> str:
    """A fresh valid ID number (a new sequence number each call)."""
    n = next(_ID_SEQ) % 500
    return id_number(county, birth, f"{n * 2 + (1 if male else 0):03d}")


def household_body(region_code: str = "320706001001", **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "region_code": region_code,
        "address": "3组12号",
        "members": [
            {"name": "测试父", "relation": "父亲", "id_number": make_id_number(region_code[:6], "19850101"),
             "situation": "外出务工"},
        ],
        "notes": "父母长期外出务工",
    }
    body.update(overrides)
    return body


def minor_body(household_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "household_id": household_id,
        "name": "测试童",
        "id_number": make_id_number(birth="20150301"),
        "birth_date": "2015-03-01",
        "sex": "male",
        "categories": [3],
    }
    body.update(overrides)
    return body


def create_household_and_minor(client: Any, headers: dict[str, str]) -> tuple[str, str]:
    """A household and one minor in it through the API (the default bodies): their ids."""
    r = client.post("/api/v1/households", json=household_body(), headers=headers)
    assert r.status_code == 201, r.text
    household = r.json()["id"]
    r = client.post("/api/v1/minors", json=minor_body(household), headers=headers)
    assert r.status_code == 201, r.text
    return household, r.json()["id"]


def record_fields(kind: str, **changes: Any) -> dict[str, Any]:
    """``kind``'s example without the subject's particulars, which the record fills in (a document
    names its subject, no one else: archive.prefill.PARTICULARS), plus ``changes``."""
    from archive.prefill import PARTICULARS
    from doc_templates.kinds import KINDS

    own = PARTICULARS.get(kind, {})
    return {**{k: v for k, v in KINDS[kind].example.items() if k not in own}, **changes}


def completed(fields: Any, text: str = "已核实。") -> Any:
    """``fields`` as a prefill gave them, with what it left for the caseworker (（待填写）) filled in:
    a document is issued complete (archive.documents.DocumentBasis.refuse_placeholders)."""
    from archive.prefill import TO_FILL

    if isinstance(fields, dict):
        return {k: completed(v, text) for k, v in fields.items()}
    if isinstance(fields, list):
        return [completed(v, text) for v in fields]
    return text if fields == TO_FILL else fields


def run_sql(rt: Runtime, sql: str, **params: Any) -> list[Any]:
    with rt.db.engine.begin() as conn:
        result = conn.execute(text(sql), params)
        return list(result) if result.returns_rows else []


def clean_postgres_search_tables(rt: Runtime) -> None:
    # The per-test reset truncates the ORM tables only; these two are made by the migration.
    run_sql(rt, "DELETE FROM search_docs")
    run_sql(rt, "DELETE FROM search_meta")


def current_generation(root: Path) -> Path:
    """The folder of an embedded index's live generation (named by its CURRENT file)."""
    return root / (root / "CURRENT").read_text().strip()


def web_login(client: Any, username: str, password: str = DEMO_PASSWORD, next: str = "/", **kw: Any) -> Any:  # noqa: A002
    """Sign in through the pages' form as a browser does: open /login for its CSRF token and cookie, post.

    The cookie is passed by hand: it is Secure, and a plain-HTTP test client's jar would not send it.
    """
    import re

    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    nonce = re.search(r"shouhu_login=([^;]+)", page.headers.get("set-cookie", ""))
    assert token and nonce, "the sign-in page sets no CSRF token"
    return client.post("/login", data={"username": username, "password": password, "next": next,
                                       "csrf_token": token.group(1)},
                       headers={"Cookie": f"shouhu_login={nonce.group(1)}"}, **kw)
