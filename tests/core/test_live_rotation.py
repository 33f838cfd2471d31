"""Key rotation, retirement and shredding while one ``shouhu serve`` keeps running.

The operator commands run as separate processes against the live archive; the
server (never restarted) picks up the new key ring within
``SHOUHU_KEYRING_REFRESH_SECONDS`` and keeps answering throughout.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import create_engine, text

from tests.cli_support import cli_env, fresh_postgres_database, login, output, run_cli, serving
from tests.conftest import household_body, make_id_number, minor_body

pytestmark = pytest.mark.slow


def database_rows(env: dict[str, str], sql: str, **params: Any) -> list[Any]:
    """Read the archive's database from the test process, as an operator would."""
    sqlite = f"sqlite:///{Path(env['SHOUHU_DATA_DIR']) / 'shouhu.db'}"
    url = env.get("SHOUHU_DATABASE_URL") or sqlite
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def log_end(env: dict[str, str]) -> int:
    (row,) = database_rows(env, "SELECT size FROM audit_head WHERE id = 1")
    return int(row[0])


def operator_events(env: dict[str, str], after: int) -> list[tuple[str, str, str, str, str]]:
    """The operator's events after seq ``after`` (the server logs its reads meanwhile)."""
    rows = database_rows(env, "SELECT action, outcome, resource_kind, resource_id, reason FROM audit_events "
                              "WHERE seq > :s AND actor LIKE 'system:cli:%' ORDER BY seq", s=after)
    return [tuple(r) for r in rows]


def current_kek(env: dict[str, str]) -> str:
    match = re.search(r"当前密钥：(kek-\d+)", output(run_cli(env, "keys", "status")))
    assert match
    return match.group(1)


def read_all(http: httpx.Client, headers: dict[str, str], expected: dict[str, dict[str, Any]]
             ) -> None:
    for path, body in expected.items():
        r = http.get(path, headers=headers)
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.json() == body, path


@contextmanager
def reading_meanwhile(base_url: str, headers: dict[str, str], paths: list[str]
                      ) -> Iterator[list[tuple[str, int]]]:
    """Keep reading records in a thread while the body runs; yields (path, status) seen.

    The reader paces itself (a read every 20 ms or so): it shows the server answering throughout, and a
    reader flat out would only take the CPU from the operator command it runs beside."""
    seen: list[tuple[str, int]] = []
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client(base_url=base_url, timeout=90) as http:
            while not stop.is_set():
                for path in paths:
                    seen.append((path, http.get(path, headers=headers).status_code))
                    if stop.wait(0.02):
                        break

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not thread.is_alive()


@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_rotate_retire_and_shred_while_the_server_runs(backend_name, tmp_path):
    data_dir = tmp_path / "var"
    with ExitStack() as stack:
        extra = {"SHOUHU_KEYRING_REFRESH_SECONDS": "0.5"}
        if backend_name == "postgres":
            extra["SHOUHU_DATABASE_URL"] = stack.enter_context(fresh_postgres_database())
        env = cli_env(data_dir, **extra)
        run_cli(env, "init")
        run_cli(env, "demo", "--households", "10")
        server = stack.enter_context(serving(env, tmp_path / "serve.out"))
        http = stack.enter_context(server.client())
        pid = server.proc.pid
        _rotation_scenario(env, server.base_url, http)
        assert server.proc.poll() is None and server.proc.pid == pid  # never restarted
    out = server.output()
    assert "Traceback" not in out and "ERROR" not in out, out
    assert "unhandled" not in (data_dir / "logs" / "shouhu.log").read_text()


def _create_records(http: httpx.Client, cw: dict[str, str], n: int) -> list[tuple[str, str]]:
    made = []
    for _ in range(n):
        r = http.post("/api/v1/households", json=household_body(), headers=cw)
        assert r.status_code == 201, r.text
        hid = r.json()["id"]
        body = minor_body(hid, id_number=make_id_number(birth="20150301"))
        r = http.post("/api/v1/minors", json=body, headers=cw)
        assert r.status_code == 201, r.text
        made.append((hid, r.json()["id"]))
    return made


def _rotation_scenario(env: dict[str, str], base_url: str, http: httpx.Client) -> None:
    cw = login(http, "caseworker.haizhou")
    city = login(http, "supervisor.city")  # reads every record in the city
    made = _create_records(http, cw, 4)

    # Every record in the archive, as the server shows it before any key changes.
    expected: dict[str, dict[str, Any]] = {}
    for kind in ("households", "minors"):
        r = http.get(f"/api/v1/{kind}", params={"limit": 200}, headers=city)
        assert r.status_code == 200 and r.json()["next_cursor"] is None, r.text
        for item in r.json()["items"]:
            expected[f"/api/v1/{kind}/{item['id']}"] = item
    assert len(expected) >= 10 + 8
    read_all(http, city, expected)
    paths = list(expected)

    old_kek = current_kek(env)
    mark = log_end(env)
    with reading_meanwhile(base_url, city, paths) as seen:
        rotated = run_cli(env, "keys", "rotate")
    match = re.search(r"新的密钥加密密钥 (kek-\d+) 已启用", output(rotated))
    assert match
    new_kek = match.group(1)
    assert new_kek != old_kek and current_kek(env) == new_kek
    assert seen and {status for _, status in seen} == {200}, seen
    read_all(http, city, expected)
    assert database_rows(env, "SELECT DISTINCT kek_id FROM data_keys") == [(new_kek,)]
    # One event, committed with the new KEK (see cli/keys.py, keys_rotate).
    assert operator_events(env, mark) == [("keys:kek:rotate", "allowed", "kek", new_kek, "cli:operator")]

    mark = log_end(env)
    refused = run_cli(env, "keys", "retire", new_kek, check=False)
    assert refused.returncode != 0 and "当前使用的密钥" in output(refused)
    assert operator_events(env, mark) == [("keys:kek:retire", "denied", "kek", new_kek, "kek:current")]

    mark = log_end(env)
    with reading_meanwhile(base_url, city, paths) as seen:
        run_cli(env, "keys", "retire", old_kek)
    assert seen and {status for _, status in seen} == {200}, seen
    sql = "SELECT state, wrapped FROM key_encryption_keys WHERE id = :k"
    (row,) = database_rows(env, sql, k=old_kek)
    assert row == ("retired", None)  # the old key material is gone
    read_all(http, city, expected)
    again = run_cli(env, "keys", "retire", old_kek, check=False)
    assert again.returncode != 0
    assert operator_events(env, mark) == [
        ("keys:kek:retire", "allowed", "kek", old_kek, "cli:operator"),
        ("keys:kek:retire", "denied", "kek", old_kek, "kek:not_found_or_retired"),
    ]

    # A record made after the rotation is wrapped under the new key and reads back.
    ((hid, mid),) = _create_records(http, cw, 1)
    for path in (f"/api/v1/households/{hid}", f"/api/v1/minors/{mid}"):
        r = http.get(path, headers=cw)
        assert r.status_code == 200, r.text
        expected[path] = r.json()
    sql = "SELECT kek_id FROM data_keys WHERE owner_id IN (:h, :m)"
    rows = database_rows(env, sql, h=hid, m=mid)
    assert sorted(rows) == [(new_kek,), (new_kek,)]

    # Shredding one minor: gone for good (410), everything else unaffected.
    shredded_hid, shredded = made[0]
    mark = log_end(env)
    run_cli(env, "keys", "shred", shredded, "--yes")
    r = http.get(f"/api/v1/minors/{shredded}", headers=cw)
    assert r.status_code == 410, r.text
    assert r.json()["error"]["code"] == "record_shredded"
    assert http.get(f"/api/v1/minors/{shredded}", headers=city).status_code == 410
    del expected[f"/api/v1/minors/{shredded}"]
    read_all(http, city, expected)
    assert http.get(f"/api/v1/households/{shredded_hid}", headers=cw).status_code == 200
    r = http.get("/api/v1/minors", params={"limit": 200}, headers=city)
    assert r.status_code == 200, r.text  # a list is not broken by one shredded record
    assert shredded not in {m["id"] for m in r.json()["items"]}
    again = run_cli(env, "keys", "shred", shredded, "--yes", check=False)
    assert again.returncode != 0
    assert operator_events(env, mark) == [
        ("keys:record:shred", "allowed", "record", shredded, "cli:operator"),
        ("keys:record:shred", "denied", "record", shredded, "record:no_live_data_key"),
    ]
