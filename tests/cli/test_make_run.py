"""The README's first command, literally: ``make run`` on an empty data dir serves the demo.

It installs (nothing left to do in a prepared checkout), initialises a new archive with a key
file, loads the demo and serves it; a demo user signs in with the README's default password and
reads a household, as the README's ``curl`` lines do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.cli_support import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_run_serves_the_demo_with_the_readme_password(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "var"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOUHU_")}
    env["SHOUHU_DATA_DIR"] = str(data_dir)
    out = (tmp_path / "make-run.out").open("wb")
    proc = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "make-run.out").read_text(errors="replace")
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("make run did not serve within 10 minutes")
        with httpx.Client(base_url=base, timeout=60) as http:
            r = http.post("/api/v1/auth/token", data={"username": "caseworker.haizhou", "password": "shouhu-demo-2026"})
            assert r.status_code == 200, r.text
            headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
            r = http.get("/api/v1/households", params={"limit": 1}, headers=headers)
            assert r.status_code == 200 and len(r.json()["items"]) == 1, r.text
            household = r.json()["items"][0]
            assert household["region_code"].startswith("320706") and household["members"]
        assert (data_dir / "keys" / "master.key").stat().st_mode & 0o777 == 0o600
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        out.close()
