"""The real ``shouhu`` command, run as subprocesses with a clean environment.

SQLite throughout; the `make run` flow (init, demo, serve, read) also on a fresh
PostgreSQL database of its own.
"""

from __future__ import annotations

import base64
import re
import shutil
import sqlite3
import stat
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from cli_support import (
    cli_env,
    fresh_postgres_database,
    login,
    output,
    run_cli,
    serving,
)
from conftest import DEMO_PASSWORD
from conftest import login as api_login
from fastapi.testclient import TestClient
from sqlalchemy import select

from archive import schemas as S
from archive.models import Household, Minor, MinorCategory
from core.settings import Settings
from main import create_app
from runtime import Runtime

TEMP_PASSWORD = re.compile(r"临时密码（只显示这一次）：([A-Za-z0-9]{16})")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def sqlite_rows(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(data_dir / "shouhu.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite archive made by `shouhu init` + `shouhu demo` (200 households)."""
    data_dir = tmp_path_factory.mktemp("cli-demo") / "var"
    env = cli_env(data_dir)
    run_cli(env, "init")
    proc = run_cli(env, "demo")
    assert "200 户家庭" in output(proc)
    return data_dir


@pytest.fixture
def archive_copy(demo_archive: Path, tmp_path: Path) -> Path:
    """A private copy of the demo archive for tests that break or change it."""
    target = tmp_path / "var"
    shutil.copytree(demo_archive, target)
    return target


# init ---------------------------------------------------------------------------


def test_init_makes_private_key_file_and_is_idempotent(tmp_path):
    data_dir = tmp_path / "var"
    env = cli_env(data_dir)
    first = run_cli(env, "init")
    key_file = data_dir / "keys" / "master.key"
    assert key_file.is_file()
    assert mode(key_file) == 0o600
    assert mode(key_file.parent) == 0o700
    assert mode(data_dir) & 0o077 == 0
    assert "master.key" in output(first) and "0600" in output(first)
    key_text = key_file.read_bytes()
    assert len(base64.b64decode(key_text.strip(), validate=True)) == 32
    keks = sqlite_rows(data_dir, "SELECT id, state FROM key_encryption_keys")
    assert keks == [("kek-0001", "active")]
    (version,) = sqlite_rows(data_dir, "SELECT version_num FROM alembic_version")
    # doctor promises that init creates the blob and log folders
    assert (data_dir / "blobs").is_dir() and (data_dir / "logs").is_dir()

    second = run_cli(env, "init")
    assert "无需初始化" in output(second)
    assert key_file.read_bytes() == key_text  # never overwritten
    assert mode(key_file) == 0o600
    assert sqlite_rows(data_dir, "SELECT id FROM key_encryption_keys") == [("kek-0001",)]
    assert sqlite_rows(data_dir, "SELECT version_num FROM alembic_version") == [version]
    run_cli(env, "keys", "status")  # the archive still opens with its key


def test_init_with_master_key_in_environment_writes_no_key_file(tmp_path):
    data_dir = tmp_path / "var"
    key = base64.b64encode(bytes(range(1, 33))).decode()
    env = cli_env(data_dir, SHOUHU_MASTER_KEY=key)
    run_cli(env, "init")
    assert not (data_dir / "keys" / "master.key").exists()
    assert "kek-0001" in output(run_cli(env, "keys", "status"))
    # Another key does not open this archive, and the refusal says what to set.
    other = base64.b64encode(bytes(range(2, 34))).decode()
    proc = run_cli(cli_env(data_dir, SHOUHU_MASTER_KEY=other), "keys", "status", check=False)
    assert proc.returncode != 0
    assert "SHOUHU_MASTER_KEY" in output(proc)
    assert "Traceback" not in output(proc)


# serve refuses to start without a usable key ------------------------------------------


def test_serve_refuses_without_master_key(tmp_path):
    data_dir = tmp_path / "var"
    proc = run_cli(cli_env(data_dir), "serve", "--port", "1", check=False, timeout=60)
    assert proc.returncode != 0
    text = output(proc)
    assert "SHOUHU_MASTER_KEY" in text and "shouhu init" in text
    assert "Traceback" not in text
    assert not (data_dir / "keys").exists()


def test_serve_refuses_when_key_file_is_gone_or_readable_by_others(tmp_path):
    data_dir = tmp_path / "var"
    env = cli_env(data_dir)
    run_cli(env, "init")
    key_file = data_dir / "keys" / "master.key"

    key_file.chmod(0o644)
    proc = run_cli(env, "serve", "--port", "1", check=False, timeout=60)
    assert proc.returncode != 0
    assert f"chmod 600 {key_file}" in output(proc)

    key_file.unlink()
    proc = run_cli(env, "serve", "--port", "1", check=False, timeout=60)
    assert proc.returncode != 0
    assert "SHOUHU_MASTER_KEY" in output(proc)
    assert "Traceback" not in output(proc)


# demo ---------------------------------------------------------------------------


@pytest.mark.slow
def test_demo_loads_200_households_in_all_five_categories_with_valid_ids(demo_archive):
    rt = Runtime.open(Settings(data_dir=demo_archive))
    try:
        with rt.db.session() as s:
            households = s.scalars(select(Household)).all()
            minors = s.scalars(select(Minor)).all()
            categories = set(s.scalars(select(MinorCategory.category)))
            id_numbers: list[str] = []
            for h in households:
                data = rt.vault.open_json(s, h.payload, h.dek_id, kind="household", record_id=h.id,
                                          version=h.version)
                assert re.fullmatch(r"\d+组\d+号", data["address"])
                members = [m["id_number"] for m in data["members"] if m.get("id_number")]
                assert members and all(n[:6] == h.region_code[:6] for n in members)
                id_numbers += members
            minor_ids: list[str] = []
            today = date.today()
            for m in minors:
                data = rt.vault.open_json(s, m.payload, m.dek_id, kind="minor", record_id=m.id,
                                          version=m.version)
                idn = data["id_number"]
                minor_ids.append(idn)
                birth = date.fromisoformat(data["birth_date"])
                assert S.id_birth_date(idn) == birth
                assert S.birth_problems(birth, idn, today=today) == []  # under 18, born in the past
                assert m.id_hash == rt.archive.subject_hash(idn)  # the lookup column matches
    finally:
        rt.close()
    assert len(households) == 200
    assert len(minors) >= 200
    assert categories == {1, 2, 3, 4, 5}
    assert len(set(minor_ids)) == len(minor_ids)
    for idn in id_numbers + minor_ids:
        assert re.fullmatch(r"\d{17}[\dX]", idn), idn
        assert S.id_check_char(idn[:17]) == idn[17], idn
        S.id_birth_date(idn)  # a real calendar date


@pytest.mark.slow
def test_demo_if_empty_does_nothing_on_a_loaded_archive(archive_copy):
    env = cli_env(archive_copy)
    count_sql = "SELECT (SELECT count(*) FROM households), (SELECT count(*) FROM minors), " \
                "(SELECT count(*) FROM users), (SELECT count(*) FROM orgs)"
    before = sqlite_rows(archive_copy, count_sql)
    proc = run_cli(env, "demo", "--if-empty")
    assert "跳过" in output(proc)
    assert sqlite_rows(archive_copy, count_sql) == before
    # Without --if-empty a loaded archive is refused, and still nothing changes.
    proc = run_cli(env, "demo", check=False)
    assert proc.returncode != 0
    assert sqlite_rows(archive_copy, count_sql) == before


# doctor ---------------------------------------------------------------------------


@pytest.mark.slow
def test_doctor_passes_on_a_good_archive(demo_archive):
    proc = run_cli(cli_env(demo_archive), "doctor")
    text = output(proc)
    assert "有问题" not in text
    assert "kek-0001" in text


@pytest.mark.slow
def test_doctor_fails_with_a_fix_when_the_key_file_is_readable_by_others(archive_copy):
    key_file = archive_copy / "keys" / "master.key"
    key_file.chmod(0o644)
    proc = run_cli(cli_env(archive_copy), "doctor", check=False)
    assert proc.returncode == 1
    assert f"chmod 600 {key_file}" in output(proc)
    key_file.chmod(0o600)
    run_cli(cli_env(archive_copy), "doctor")


@pytest.mark.slow
def test_doctor_fails_with_a_fix_when_the_database_is_missing(archive_copy):
    for f in archive_copy.glob("shouhu.db*"):
        f.unlink()
    proc = run_cli(cli_env(archive_copy), "doctor", check=False)
    assert proc.returncode == 1
    text = output(proc)
    assert "数据库" in text and "运行 `shouhu init`" in text
    assert "Traceback" not in text
    assert not (archive_copy / "shouhu.db").exists()  # a check changes nothing


def test_doctor_on_a_fresh_machine_says_how_to_start(tmp_path):
    data_dir = tmp_path / "var"
    proc = run_cli(cli_env(data_dir), "doctor", check=False)
    assert proc.returncode == 1
    text = output(proc)
    assert "SHOUHU_MASTER_KEY" in text and "shouhu init" in text
    assert not data_dir.exists()


# users ----------------------------------------------------------------------------


@pytest.fixture
def api(archive_copy: Path) -> Iterator[TestClient]:
    """The archive's API in this process, to check what the CLI did to accounts."""
    with TestClient(create_app(Settings(data_dir=archive_copy))) as client:
        yield client


def token_status(client: TestClient, username: str, password: str) -> int:
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    return r.status_code


@pytest.mark.slow
def test_users_add_disable_and_reset_password(archive_copy, api):
    env = cli_env(archive_copy)
    org = "连云港市海州区民政局"

    # add with a chosen password
    chosen = "a-long-chosen-password-7"
    run_cli(env, "users", "add", "li.si", "--name", "李四", "--org", org, "--role", "caseworker",
            "--password-stdin", stdin=chosen + "\n")
    headers = api_login(api, "li.si", chosen)
    me = api.get("/api/v1/me", headers=headers).json()
    assert me["roles"] == ["caseworker"] and me["org"]["name"] == org and me["name"] == "李四"
    assert me["must_change_password"] is False

    # add with a temporary password, printed once
    cw = ("--org", org, "--role", "caseworker")
    proc = run_cli(env, "users", "add", "wang.wu", "--name", "王五", *cw)
    match = TEMP_PASSWORD.search(proc.stdout)
    assert match, proc.stdout
    wang = api_login(api, "wang.wu", match.group(1))
    assert api.get("/api/v1/me", headers=wang).json()["must_change_password"] is True

    # refusals: weak password, duplicate name, unknown org
    weak = run_cli(env, "users", "add", "zhao.liu", "--name", "赵六", *cw, "--password-stdin",
                   stdin="short\n", check=False)
    assert weak.returncode != 0
    dup = run_cli(env, "users", "add", "li.si", "--name", "李四", *cw, check=False)
    assert dup.returncode != 0 and "已存在" in output(dup)
    no_org = run_cli(env, "users", "add", "zhao.liu", "--name", "赵六", "--org", "不存在的单位",
                     "--role", "caseworker", check=False)
    assert no_org.returncode != 0 and "没有单位" in output(no_org)
    assert token_status(api, "zhao.liu", "short") == 401

    # disable: the live token stops working and the password no longer logs in
    assert api.get("/api/v1/me", headers=headers).status_code == 200
    run_cli(env, "users", "disable", "li.si")
    assert api.get("/api/v1/me", headers=headers).status_code == 401
    assert token_status(api, "li.si", chosen) == 401
    listing = run_cli(env, "users", "list").stdout
    (line,) = [ln for ln in listing.splitlines() if "li.si" in ln]
    assert "停用" in line
    missing = run_cli(env, "users", "disable", "nobody.here", check=False)
    assert missing.returncode != 0 and "没有用户" in output(missing)

    # reset-password: the new temporary password works, the old one and old tokens do not
    old = api_login(api, "caseworker.guannan", DEMO_PASSWORD)
    proc = run_cli(env, "users", "reset-password", "caseworker.guannan")
    match = TEMP_PASSWORD.search(proc.stdout)
    assert match, proc.stdout
    assert api.get("/api/v1/me", headers=old).status_code == 401
    assert token_status(api, "caseworker.guannan", DEMO_PASSWORD) == 401
    new = api_login(api, "caseworker.guannan", match.group(1))
    me = api.get("/api/v1/me", headers=new).json()
    assert me["username"] == "caseworker.guannan" and me["must_change_password"] is True


# `make run`: init, demo --if-empty, serve, read -----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_make_run_serves_the_demo(backend_name, tmp_path):
    data_dir = tmp_path / "var"
    if backend_name == "postgres":
        with fresh_postgres_database() as url:
            _make_run(cli_env(data_dir, SHOUHU_DATABASE_URL=url), data_dir, tmp_path)
    else:
        _make_run(cli_env(data_dir), data_dir, tmp_path)


def _make_run(env: dict[str, str], data_dir: Path, tmp_path: Path) -> None:
    run_cli(env, "init")
    assert mode(data_dir / "keys" / "master.key") == 0o600
    run_cli(env, "init")  # idempotent on this backend too
    loaded = run_cli(env, "demo", "--if-empty")
    assert "200 户家庭" in output(loaded)
    run_cli(env, "doctor")
    with serving(env, tmp_path / "serve.out") as server, server.client() as http:
        cw = login(http, "caseworker.haizhou")
        r = http.get("/api/v1/households", params={"limit": 200}, headers=cw)
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert items and all(h["region_code"].startswith("320706") for h in items)
        listed = items[0]
        r = http.get(f"/api/v1/households/{listed['id']}", headers=cw)
        assert r.status_code == 200, r.text
        household = r.json()
        assert re.fullmatch(r"\d+组\d+号", household["address"])  # decrypted, not ciphertext
        assert household == listed
        assert household["members"] and all(m["name"] for m in household["members"])
        # Outside the caller's jurisdiction the same record does not exist.
        other = login(http, "caseworker.guannan")
        assert http.get(f"/api/v1/households/{listed['id']}", headers=other).status_code == 404
        # All five categories are there to work with.
        city = login(http, "supervisor.city")
        for category in range(1, 6):
            r = http.get("/api/v1/minors", params={"category": category, "limit": 1}, headers=city)
            assert r.status_code == 200 and r.json()["items"], (category, r.text)
        assert server.proc.poll() is None
    log = (data_dir / "logs" / "shouhu.log").read_text()
    assert f"GET /api/v1/households/{listed['id']} 200" in log
    assert "Traceback" not in server.output() and "unhandled" not in log
