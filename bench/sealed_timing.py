"""Sealed and unknown ids: paired answer times of the refusals an outsider can ask for.

``python -m bench.sealed_timing [--backend sqlite|postgres] [--pairs 2000]``

A fresh archive (a temporary folder; on PostgreSQL a temporary database on
``SHOUHU_TEST_POSTGRES_URL``) with a minor whose referral notice is sealed with
it. A caseworker of the region then asks, in pairs whose order is drawn at
random, for the sealed id and for an id of the same length that does not exist:
``GET /api/v1/documents/{id}``, ``…/pdf`` and ``GET /api/v1/minors/{id}``. Both
answer 404 with the same body; the figures say whether the time tells them apart.

Printed per route: median and p95 of each, the median of the paired differences
(sealed − unknown) with its 95% interval (sign test), and the accuracy of the
attack the hardening review ran: take 10 requests of each, call the slower median
"sealed" (over every disjoint group of 10 pairs; 50% is a coin).

Runs against whatever code ``PYTHONPATH`` points at, so the same command measures
a checkout before and after a change. In process (Starlette's TestClient), so the
figures are the server's work without network noise.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import random
import secrets
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient
from pydantic import SecretStr

from archive import demo
from core.db import new_id
from core.settings import Settings
from doc_templates.kinds import KINDS
from main import create_app
from runtime import Runtime

PASSWORD = "bench-password-123"
CW, CUST = "caseworker.haizhou", "custodian.city"
API = "/api/v1"


@contextmanager
def database(backend: str, folder: Path) -> Iterator[str | None]:
    """None (the SQLite default under ``folder``) or the URL of a throwaway PostgreSQL database."""
    if backend == "sqlite":
        yield None
        return
    admin = os.environ.get("SHOUHU_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    admin = admin.replace("postgresql+psycopg://", "postgresql://")
    name = f"shouhu_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rpartition("/")[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fields(kind: str) -> dict[str, Any]:
    """The example without the subject's particulars where the code fills them from the record."""
    try:
        from archive.prefill import PARTICULARS
    except ImportError:  # a checkout from before the particulars table
        return dict(KINDS[kind].example)
    return {k: v for k, v in KINDS[kind].example.items() if k not in PARTICULARS.get(kind, {})}


def login(client: TestClient, username: str) -> dict[str, str]:
    r = client.post(f"{API}/auth/token", data={"username": username, "password": PASSWORD})
    r.raise_for_status()
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def check_digit(first17: str) -> str:
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return "10X98765432"[sum(int(c) * w for c, w in zip(first17, weights, strict=True)) % 11]


def prepare(client: TestClient) -> tuple[dict[str, str], dict[str, tuple[str, str]]]:
    """A sealed minor and its sealed document; the caseworker's headers; {route: (sealed, unknown)}."""
    cw, cust = login(client, CW), login(client, CUST)
    r = client.post(f"{API}/households", headers=cw, json={
        "region_code": "320706001001", "address": "3组12号", "members": [{"name": "户主父", "relation": "父亲"}]})
    r.raise_for_status()
    first17 = f"32070620090101{secrets.randbelow(500) * 2 + 1:03d}"
    r = client.post(f"{API}/minors", headers=cw, json={
        "household_id": r.json()["id"], "name": "封晓默", "id_number": first17 + check_digit(first17),
        "birth_date": "2009-01-01", "sex": "male", "categories": [3]})
    r.raise_for_status()
    minor = r.json()["id"]
    r = client.post(f"{API}/documents", headers=cw,
                    json={"kind": "referral_notice", "subject_id": minor, "fields": fields("referral_notice")})
    r.raise_for_status()
    doc = r.json()["id"]
    r = client.post(f"{API}/records/{minor}/seal", headers=cust, json={
        "legal_basis": "《中华人民共和国刑事诉讼法》第二百八十六条", "case_number": "（2026）苏0706刑初17号"})
    r.raise_for_status()
    routes = {
        "GET /documents/{id}": (f"{API}/documents/{doc}", f"{API}/documents/{new_id('doc')}"),
        "GET /documents/{id}/pdf": (f"{API}/documents/{doc}/pdf", f"{API}/documents/{new_id('doc')}/pdf"),
        "GET /minors/{id}": (f"{API}/minors/{minor}", f"{API}/minors/{new_id('mn')}"),
    }
    return cw, routes


def p95(xs: list[float]) -> float:
    return sorted(xs)[max(0, math.ceil(0.95 * len(xs)) - 1)]


def sign_interval(d: list[float]) -> tuple[float, float]:
    """A 95% interval for the median of ``d`` (the sign test's order statistics)."""
    n, cdf, k = len(d), 0.0, 0
    while cdf + math.comb(n, k) / 2**n <= 0.025:
        cdf += math.comb(n, k) / 2**n
        k += 1
    ordered = sorted(d)
    k = max(k, 1)
    return ordered[k - 1], ordered[n - k]


def classifier(sealed: list[float], unknown: list[float], group: int = 10) -> float:
    """Accuracy of "the slower median of ``group`` requests each is the sealed id"."""
    right = total = 0
    for i in range(0, len(sealed) - group + 1, group):
        a, b = statistics.median(sealed[i:i + group]), statistics.median(unknown[i:i + group])
        if a != b:
            right += a > b
            total += 1
    return right / total if total else 0.5


def measure(client: TestClient, headers: dict[str, str], sealed_url: str, unknown_url: str, pairs: int,
            rng: random.Random) -> tuple[list[float], list[float]]:
    times: dict[str, list[float]] = {"sealed": [], "unknown": []}
    urls = {"sealed": sealed_url, "unknown": unknown_url}
    for _ in range(20):  # warm up
        for url in urls.values():
            assert client.get(url, headers=headers).status_code == 404
    bodies = set()
    for _ in range(pairs):
        for which in rng.sample(["sealed", "unknown"], 2):
            t0 = time.perf_counter()
            r = client.get(urls[which], headers=headers)
            times[which].append(time.perf_counter() - t0)
            assert r.status_code == 404, r.text
            bodies.add(r.content)
    assert len(bodies) == 1, "the two answers differ"
    return times["sealed"], times["unknown"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sealed_timing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pairs", type=int, default=2000, help="pairs of requests per route (default 2000)")
    parser.add_argument("--seed", type=int, default=20261208)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="shouhu-sealed-timing-") as tmp, database(args.backend, Path(tmp)) as url:
        settings = Settings(data_dir=Path(tmp) / "var", database_url=url,
                            master_key=SecretStr(base64.b64encode(secrets.token_bytes(32)).decode()),
                            demo_password=SecretStr(PASSWORD), argon2_time_cost=1, argon2_memory_kib=1024,
                            argon2_parallelism=1, audit_checkpoint_interval_seconds=0)
        rt = Runtime.open(settings, require_schema=False)
        try:
            rt.initialize()
            demo.build_world(rt)
            with TestClient(create_app(runtime=rt)) as client:
                headers, routes = prepare(client)
                print(f"{args.backend}: {args.pairs} pairs per route, order within each pair at random "
                      f"(seed {args.seed}); times in ms, in process")
                print(f"{'route':<26} {'sealed med/p95':>16} {'unknown med/p95':>17} "
                      f"{'median diff (95% CI)':>30} {'10-request classifier':>22}")
                for label, (sealed_url, unknown_url) in routes.items():
                    a, b = measure(client, headers, sealed_url, unknown_url, args.pairs, rng)
                    d = [x - y for x, y in zip(a, b, strict=True)]
                    lo, hi = sign_interval(d)
                    print(f"{label:<26} {1e3 * statistics.median(a):7.3f} / {1e3 * p95(a):6.3f} "
                          f"{1e3 * statistics.median(b):8.3f} / {1e3 * p95(b):6.3f} "
                          f"{1e3 * statistics.median(d):+10.4f} ({1e3 * lo:+.4f} .. {1e3 * hi:+.4f}) "
                          f"{100 * classifier(a, b):20.1f} %")
        finally:
            rt.close()


if __name__ == "__main__":
    main()
