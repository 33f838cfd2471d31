"""Everything Shouhu writes under its data dir is private: files 0600, folders 0700.

A fresh archive (``shouhu init``, demo data, a running server answering a few requests, a
rebuilt search index) is walked while the server runs (SQLite's -wal and -shm files exist
then) and after it stops, with a permissive umask in the parent: the product sets its own.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.cli_support import cli_env, fresh_postgres_database, login, run_cli, serving


def _loose(root: Path) -> list[str]:
    out = []
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        if path.is_symlink():
            continue
        if mode & 0o077:
            out.append(f"{oct(mode)} {'dir ' if path.is_dir() else 'file'} {path.relative_to(root.parent)}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["sqlite", "postgres"])
def test_a_fresh_archive_keeps_its_files_private(backend_name, tmp_path):
    old = os.umask(0o022)
    try:
        if backend_name == "postgres":
            with fresh_postgres_database() as url:
                _exercise(cli_env(tmp_path / "var", SHOUHU_DATABASE_URL=url), tmp_path)
        else:
            _exercise(cli_env(tmp_path / "var"), tmp_path)
    finally:
        os.umask(old)


def _exercise(env: dict[str, str], tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    run_cli(env, "init")
    run_cli(env, "demo", "--households", "3")
    run_cli(env, "reindex")
    with serving(env, tmp_path / "serve.out") as server, server.client() as http:
        cw = login(http, "caseworker.haizhou")
        assert http.get("/api/v1/households", headers=cw).status_code == 200
        assert http.get("/api/v1/search", params={"q": "测试"}, headers=cw).status_code == 200
        assert http.post("/api/v1/verify/0000-0000-0000", content=b"%PDF").status_code == 404
        names = {p.name for p in data_dir.rglob("*")}
        if "DATABASE_URL" not in str(env):
            assert {"shouhu.db", "shouhu.db-wal", "shouhu.db-shm"} <= names
        assert {"shouhu.log", "master.key", "audit-signing.key"} <= names
        assert (data_dir / "index").is_dir() and (data_dir / "blobs").is_dir()
        running = _loose(data_dir)
    after = _loose(data_dir)
    assert not running, "readable by others while serving:\n" + "\n".join(running)
    assert not after, "readable by others:\n" + "\n".join(after)
