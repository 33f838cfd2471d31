"""The real ``shouhu`` command, run as subprocesses with a clean environment.

SQLite throughout; the `make run` flow (init, demo, serve, read) also on a fresh
PostgreSQL database of its own. The operator commands' audit events are checked in
process (typer's CliRunner) on the test archive, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from access_control.identity import os_user
from archive import schemas
from archive.models import Household, Minor, MinorCategory
from core import crypto
from core import keys as keystore
from core.keys import create_kek
from core.settings import Settings
from main import create_app
from runtime import Runtime
from tests.audit_support import audit_blocker, log_size
from tests.cli_support import (
    InProcess,
    cli_env,
    fresh_postgres_database,
    login,
    output,
    run_cli,
    serving,
    sqlite_rows,
)
from tests.conftest import DEMO_PASSWORD, create_household_and_minor, run_sql
from tests.conftest import login as api_login

TEMP_PASSWORD = re.compile(r"临时密码（只显示这一次）：([A-Za-z0-9]{16})")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)



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
                assert schemas.id_birth_date(idn) == birth
                assert schemas.birth_problems(birth, idn, today=today) == []  # under 18, born in the past
                assert m.id_hash == rt.archive.subject_hash(idn)  # the lookup column matches
    finally:
        rt.close()
    assert len(households) == 200
    assert len(minors) >= 200
    assert categories == {1, 2, 3, 4, 5}
    assert len(set(minor_ids)) == len(minor_ids)
    for idn in id_numbers + minor_ids:
        assert re.fullmatch(r"\d{17}[\dX]", idn), idn
        assert schemas.id_check_char(idn[:17]) == idn[17], idn
        schemas.id_birth_date(idn)  # a real calendar date


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


def test_doctor_and_readyz_run_the_same_checks(rt, client, monkeypatch):
    """One list of checks (core/health.py): a font gone missing fails both, each in its own words."""
    import doc_templates.fonts

    assert client.get("/readyz").json()["checks"]["fonts"] == "ok"
    monkeypatch.setattr(doc_templates.fonts, "missing_fonts", lambda: ["Noto Serif CJK SC"])
    r = client.get("/readyz")
    assert r.status_code == 503
    checks = r.json()["error"]["details"]["checks"]
    assert checks["fonts"] == "failed: missing Noto Serif CJK SC"
    assert set(checks) == {"database", "key_ring", "blob_store", "search_index", "fonts"}
    doctor = InProcess(rt.settings, monkeypatch, width=400)("doctor", ok=False).output
    assert "缺少 Noto Serif CJK SC" in doctor
    assert "当前密钥 kek-" in doctor  # the key ring check both run


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
        # As `make run` does it: no SHOUHU_DEMO_PASSWORD, so the README's local default signs in.
        env = {k: v for k, v in cli_env(data_dir).items() if k != "SHOUHU_DEMO_PASSWORD"}
        _make_run(env, data_dir, tmp_path, password=README_DEMO_PASSWORD)


README_DEMO_PASSWORD = "shouhu-demo-2026"


def test_the_readme_names_the_demo_password_default() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"**`{README_DEMO_PASSWORD}`**" in readme
    assert Settings.model_fields["demo_password"].default.get_secret_value() == README_DEMO_PASSWORD


def _make_run(env: dict[str, str], data_dir: Path, tmp_path: Path, password: str = DEMO_PASSWORD) -> None:
    run_cli(env, "init")
    assert mode(data_dir / "keys" / "master.key") == 0o600
    run_cli(env, "init")  # idempotent on this backend too
    loaded = run_cli(env, "demo", "--if-empty")
    assert "200 户家庭" in output(loaded)
    run_cli(env, "doctor")
    with serving(env, tmp_path / "serve.out") as server, server.client() as http:
        cw = login(http, "caseworker.haizhou", password)
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
        other = login(http, "caseworker.guannan", password)
        assert http.get(f"/api/v1/households/{listed['id']}", headers=other).status_code == 404
        # All five categories are there to work with.
        city = login(http, "supervisor.city", password)
        for category in range(1, 6):
            r = http.get("/api/v1/minors", params={"category": category, "limit": 1}, headers=city)
            assert r.status_code == 200 and r.json()["items"], (category, r.text)
        assert server.proc.poll() is None
    log = (data_dir / "logs" / "shouhu.log").read_text()
    assert f"GET /api/v1/households/{listed['id']} 200" in log
    assert "Traceback" not in server.output() and "unhandled" not in log


# Operator commands in the access log -----------------------------------------------------
#
# In process (typer's CliRunner) on SQLite and PostgreSQL, against the test's archive: each
# command leaves exactly the expected events, as the actor system:cli:<OS user> under one request id,
# and a change whose event cannot be written does not happen.

OPERATOR = f"system:cli:{os_user()}"
HZ_ORG = "连云港市海州区民政局"


@dataclass(frozen=True)
class Ev:
    action: str
    outcome: str
    kind: str
    rid: str
    reason: str = "cli:operator"


class Shouhu(InProcess):
    """Runs `shouhu` commands in this process on the test's archive and reads what they logged."""

    def __init__(self, rt: Runtime, monkeypatch: pytest.MonkeyPatch):
        super().__init__(rt.settings, monkeypatch)
        self.rt = rt
        self.seen = self.size()

    def size(self) -> int:
        return log_size(self.rt.db.engine)

    def new_events(self) -> list[dict[str, Any]]:
        """The events since the last call, each checked to be the operator's, one request id each call."""
        rows = run_sql(self.rt, "SELECT seq, actor, actor_id, action, outcome, resource_kind, resource_id, reason, "
                                "request_id, details FROM audit_events WHERE seq > :s ORDER BY seq", s=self.seen)
        events = [dict(r._mapping) for r in rows]
        for ev in events:
            if isinstance(ev["details"], str):
                ev["details"] = json.loads(ev["details"])
        self.seen = self.size()
        return events

    def logged(self, *expected: Ev) -> list[dict[str, Any]]:
        """Assert the events since the last call are exactly ``expected``; return them."""
        events = self.new_events()
        got = [Ev(e["action"], e["outcome"], e["resource_kind"], e["resource_id"], e["reason"]) for e in events]
        assert got == list(expected)
        for ev in events:
            assert (ev["actor"], ev["actor_id"]) == (OPERATOR, "system")
            assert ev["request_id"].startswith("cli_")
        assert len({e["request_id"] for e in events}) <= 1  # one command, one request id
        return events


@pytest.fixture
def shouhu(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> Shouhu:
    return Shouhu(rt, monkeypatch)


def user_row(rt: Runtime, username: str) -> tuple[str, bool, str] | None:
    rows = run_sql(rt, "SELECT id, disabled, password_hash FROM users WHERE username = :u", u=username)
    return (rows[0][0], bool(rows[0][1]), rows[0][2]) if rows else None


def test_user_commands_log_exactly_their_events_and_refusals(rt, shouhu):
    create, disable, reset = "identity:user:create", "identity:user:disable", "identity:user:reset_password"
    chosen = "a-long-chosen-password-7"
    shouhu("users", "add", "li.si", "--name", "李四", "--org", HZ_ORG, "--role", "caseworker",
           "--password-stdin", stdin=chosen + "\n")
    li_si = user_row(rt, "li.si")
    assert li_si is not None and li_si[1] is False
    (ev,) = shouhu.logged(Ev(create, "allowed", "user", li_si[0]))
    assert ev["details"]["roles"] == ["caseworker"]
    assert "李四" not in json.dumps(ev, ensure_ascii=False, default=str)

    # Refusals: each one denied event, and nothing created.
    cw = ("--org", HZ_ORG, "--role", "caseworker")
    out = shouhu("users", "add", "li.si", "--name", "李四", *cw, ok=False).output
    assert "已存在" in out
    shouhu.logged(Ev(create, "denied", "user", li_si[0], "user:username_taken"))
    shouhu("users", "add", "zhao.liu", "--name", "赵六", "--org", "不存在的单位", "--role", "caseworker", ok=False)
    (ev,) = shouhu.logged(Ev(create, "denied", "user", "", "org:not_found"))
    name_hash = ev["details"]["username_hash"]
    assert name_hash == rt.ring.keyed_hash("login-throttle", "zhao.liu") and "zhao" not in name_hash
    shouhu("users", "add", "zhao.liu", "--name", "赵六", *cw, "--password-stdin", stdin="short\n", ok=False)
    shouhu.logged(Ev(create, "denied", "user", "", "password:too_weak"))
    assert user_row(rt, "zhao.liu") is None

    shouhu("users", "disable", "li.si")
    assert user_row(rt, "li.si")[1] is True  # type: ignore[index]
    shouhu.logged(Ev(disable, "allowed", "user", li_si[0]))
    shouhu("users", "disable", "nobody.here", ok=False)
    (ev,) = shouhu.logged(Ev(disable, "denied", "user", "", "record:not_found"))
    assert ev["details"] == {"username_hash": rt.ring.keyed_hash("login-throttle", "nobody.here")}

    before = user_row(rt, "caseworker.guannan")
    assert before is not None
    shouhu("users", "reset-password", "caseworker.guannan")
    after = user_row(rt, "caseworker.guannan")
    assert after is not None and after[2] != before[2]
    shouhu.logged(Ev(reset, "allowed", "user", before[0]))
    shouhu("users", "reset-password", "nobody.here", ok=False)
    shouhu.logged(Ev(reset, "denied", "user", "", "record:not_found"))

    with rt.db.read_session() as s:
        assert rt.audit.verify(s).ok


def kek_states(rt: Runtime) -> dict[str, str]:
    return {r[0]: r[1] for r in run_sql(rt, "SELECT id, state FROM key_encryption_keys")}


def live_keys_under(rt: Runtime) -> dict[str, int]:
    rows = run_sql(rt, "SELECT kek_id, count(*) FROM data_keys WHERE wrapped IS NOT NULL GROUP BY kek_id")
    return {r[0]: int(r[1]) for r in rows}


def test_key_commands_log_exactly_their_events_and_refusals(rt, client, tokens, shouhu):
    rotate, retire, shred = "keys:kek:rotate", "keys:kek:retire", "keys:record:shred"
    hid, mid = create_household_and_minor(client, tokens["caseworker.haizhou"])
    shouhu.new_events()  # the API's own events
    assert kek_states(rt) == {"kek-0001": "active"}
    # The household's and the minor's keys, and the deployment CA's (archive.pki, made at init).
    assert live_keys_under(rt) == {"kek-0001": 3}

    out = " ".join(shouhu("keys", "rotate").output.split())
    assert "kek-0002 已启用" in out and "重新包裹了 3 个数据密钥" in out
    (ev,) = shouhu.logged(Ev(rotate, "allowed", "kek", "kek-0002"))
    assert ev["details"] == {"data_keys": 3}
    assert live_keys_under(rt) == {"kek-0002": 3}

    shouhu("keys", "retire", "kek-0002", ok=False)
    shouhu.logged(Ev(retire, "denied", "kek", "kek-0002", "kek:current"))
    shouhu("keys", "retire", "kek-0099", ok=False)
    shouhu.logged(Ev(retire, "denied", "kek", "kek-0099", "kek:not_found_or_retired"))
    assert kek_states(rt) == {"kek-0001": "active", "kek-0002": "active"}

    shouhu("keys", "retire", "kek-0001")
    (ev,) = shouhu.logged(Ev(retire, "allowed", "kek", "kek-0001"))
    assert ev["details"] == {"rewrapped": 0}
    assert kek_states(rt) == {"kek-0001": "retired", "kek-0002": "active"}
    shouhu("keys", "retire", "kek-0001", ok=False)
    shouhu.logged(Ev(retire, "denied", "kek", "kek-0001", "kek:not_found_or_retired"))

    shouhu("keys", "shred", mid, "--yes")
    (ev,) = shouhu.logged(Ev(shred, "allowed", "record", mid))
    assert ev["details"] == {"data_keys": 1}
    assert live_keys_under(rt) == {"kek-0002": 2}  # the household's and the CA's
    shouhu("keys", "shred", mid, "--yes", ok=False)
    shouhu.logged(Ev(shred, "denied", "record", mid, "record:no_live_data_key"))
    assert client.get(f"/api/v1/households/{hid}", headers=tokens["caseworker.haizhou"]).status_code == 200


def test_audit_and_reindex_commands_log_exactly_their_events(rt, shouhu, tmp_path, monkeypatch):
    verify, checkpoint, export = "audit:log:verify", "audit:checkpoint:create", "audit:events:export"
    size = shouhu.size()
    shouhu("audit", "verify")
    (ev,) = shouhu.logged(Ev(verify, "allowed", "audit_log", ""))
    assert ev["seq"] == size + 1  # after the check: not part of what it checked
    assert ev["details"] == {"against_checkpoint": None, "ok": True, "length": size}

    saved = tmp_path / "cp.json"
    shouhu("audit", "checkpoint", "--out", str(saved))
    (ev,) = shouhu.logged(Ev(checkpoint, "allowed", "audit_log", ""))
    assert json.loads(saved.read_text())["size"] == ev["seq"]  # the checkpoint covers its own request

    out = tmp_path / "log.jsonl"
    shouhu("audit", "export", "--out", str(out))
    (ev,) = shouhu.logged(Ev(export, "allowed", "audit_log", ""))
    assert ev["details"] == {"format": "jsonl", "upto": ev["seq"] - 1}
    assert len(out.read_bytes().splitlines()) == ev["seq"] - 1

    backend = rt.settings.search_backend
    shouhu("reindex")
    shouhu.logged(Ev("search:index:rebuild", "allowed", "search_index", backend))

    # A rebuild that stops midway: its 'allowed' event, then an 'error' event.
    from search.backends import SearchUnavailable
    from search.indexer import Indexer

    def broken(self: Any, **_: Any) -> int:
        raise SearchUnavailable("index locked")

    monkeypatch.setattr(Indexer, "reindex", broken)
    assert "原索引保持不变" in shouhu("reindex", ok=False).output
    shouhu.logged(Ev("search:index:rebuild", "allowed", "search_index", backend),
                  Ev("search:index:rebuild", "error", "search_index", backend, "error:SearchUnavailable"))

    # A checkpoint the log refuses (it does not verify): 'allowed', then 'error', and no checkpoint.
    from access_control.audit import AuditLog, AuditTampered

    def tampered(self: Any, db: Any, *, now: Any) -> Any:
        raise AuditTampered("event 3 does not verify")

    monkeypatch.setattr(AuditLog, "sign_checkpoint", tampered)
    assert "未签署检查点" in shouhu("audit", "checkpoint", ok=False).output
    shouhu.logged(Ev(checkpoint, "allowed", "audit_log", ""),
                  Ev(checkpoint, "error", "audit_log", "", "error:AuditTampered"))


def test_rotation_that_stops_midway_logs_allowed_then_error(rt, client, tokens, shouhu, monkeypatch):
    """The 'allowed' event is committed with the new KEK; the 'error' event says how far re-wrapping got."""
    create_household_and_minor(client, tokens["caseworker.haizhou"])
    create_household_and_minor(client, tokens["caseworker.haizhou"])
    shouhu.new_events()
    real_rotate, real_rewrap = keystore.rotate, crypto.KeyRing.rewrap
    calls = {"n": 0}

    def rewrap(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:  # the first batch of two committed, the second fails
            raise RuntimeError("disk on fire")
        return real_rewrap(self, *args, **kwargs)

    monkeypatch.setattr(keystore, "rotate", functools.partial(real_rotate, batch=2))
    monkeypatch.setattr(crypto.KeyRing, "rewrap", rewrap)
    result = shouhu("keys", "rotate", ok=False)
    assert isinstance(result.exception, RuntimeError)
    assert "密钥轮换未完成" in " ".join(result.output.split())
    allowed, error = shouhu.logged(Ev("keys:kek:rotate", "allowed", "kek", "kek-0002"),
                                   Ev("keys:kek:rotate", "error", "kek", "kek-0002", "error:RuntimeError"))
    assert allowed["details"] == {"data_keys": 5}  # four records' keys and the CA's
    assert error["details"] == {"rewrapped": 2}
    # The log says what the keys say: a current new KEK, two data keys moved under it.
    assert kek_states(rt) == {"kek-0001": "active", "kek-0002": "active"}
    assert live_keys_under(rt) == {"kek-0001": 3, "kek-0002": 2}

    # A rotation that fails before its KEK is committed changed nothing: one 'error' event only.
    monkeypatch.setattr(crypto.KeyRing, "rewrap", real_rewrap)

    def no_kek(*args: Any, **kwargs: Any) -> str:
        raise RuntimeError("no entropy")

    monkeypatch.setattr(keystore, "create_kek", no_kek)
    shouhu("keys", "rotate", ok=False)
    (ev,) = shouhu.logged(Ev("keys:kek:rotate", "error", "kek", "", "error:RuntimeError"))
    assert ev["details"] == {"rewrapped": 0}
    assert kek_states(rt) == {"kek-0001": "active", "kek-0002": "active"}


def test_a_change_whose_event_cannot_be_written_does_not_happen(rt, client, tokens, shouhu):
    """The event is in the change's transaction: with the log unwritable, nothing changes."""
    _, mid = create_household_and_minor(client, tokens["caseworker.haizhou"])
    with rt.db.session() as s:  # an interrupted rotation: a second KEK, keys still under the first
        create_kek(s, rt.ring)
        s.commit()
    shouhu.new_events()
    users_before = run_sql(rt, "SELECT id, disabled, password_hash FROM users ORDER BY id")
    keys_before = run_sql(rt, "SELECT id, kek_id, wrapped FROM data_keys ORDER BY id")
    keks_before = kek_states(rt)
    size = shouhu.size()
    cw = ("--org", HZ_ORG, "--role", "caseworker")
    with audit_blocker(rt.settings) as blocker:
        blocker.block()
        for args in (("users", "add", "li.si", "--name", "李四", *cw),
                     ("users", "disable", "caseworker.guannan"),
                     ("users", "reset-password", "caseworker.guannan"),
                     ("keys", "rotate"),
                     ("keys", "retire", "kek-0001"),
                     ("keys", "shred", mid, "--yes")):
            result = shouhu(*args, ok=False)
            assert "访问日志暂时无法写入" in " ".join(result.output.split()), (args, result.output)
    assert shouhu.size() == size
    assert run_sql(rt, "SELECT id, disabled, password_hash FROM users ORDER BY id") == users_before
    assert run_sql(rt, "SELECT id, kek_id, wrapped FROM data_keys ORDER BY id") == keys_before
    assert kek_states(rt) == keks_before
    # Once the log is writable again, the same commands go through, each with its event.
    guannan = run_sql(rt, "SELECT id FROM users WHERE username = 'caseworker.guannan'")[0][0]
    shouhu("users", "disable", "caseworker.guannan")
    shouhu.logged(Ev("identity:user:disable", "allowed", "user", guannan))
    shouhu("keys", "retire", "kek-0001")
    shouhu.logged(Ev("keys:kek:retire", "allowed", "kek", "kek-0001"))
