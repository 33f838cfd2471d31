"""Official documents end to end: gapless numbers, immutable PDFs, public verification,
drafts, access, the render pool, batch printing and the kind registry.

Rendering is real (WeasyPrint in the worker pool of the runtime, or of a
``shouhu serve`` subprocess); nothing under test is mocked. The one stand-in is
a blob store that fails on ``put``, to force a failure in the middle of an issue.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pypdf
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from access_control.identity import User, actor_for
from archive.blobstore import FilesystemBlobStore
from archive.demo import HAIZHOU_VILLAGE
from archive.documents import CODE_ALPHABET, LOCAL_TZ, VersionRequest
from core.settings import Settings
from doc_templates.kinds import KINDS
from doc_templates.pool import RenderPool
from doc_templates.render import DocumentMeta
from main import create_app
from runtime import Runtime
from tests.cli_support import cli_env, demo_archive_dir, output, run_cli, serving
from tests.cli_support import login as http_login
from tests.conftest import household_body, login, minor_body, record_fields, run_sql
from tests.proc_support import children, cpu_ticks, maps

HAIZHOU_PREFIX = "海民发"
HAIZHOU_ORG = "连云港市海州区民政局"
OTHER_HAIZHOU_VILLAGE = "320706002001"  # Haizhou, but not village.haizhou's village
GUANNAN_VILLAGE = "320724001001"

# DOMAIN.md, "Documents Shouhu issues".
DOMAIN_KINDS = {
    "household_file": "困境未成年人家庭档案",
    "minor_file": "困境未成年人基本信息档案表",
    "referral_notice": "困境未成年人转介函",
    "guardianship_designation": "指定监护人通知书",
    "rescue_escort_record": "护送救助登记表",
    "dropout_notice": "辍学（失学、逃学）情况通报",
    "sealed_query_reply": "查询告知函",  # neutral: a reply's title never says 封存
    "inspection_report": "未成年人社会保护工作督查通报",
    "access_audit_report": "访问日志审计报告",
}
VERIFY_KEYS = {"authentic", "kind", "title", "issuer", "doc_number", "version", "current", "issued_at",
               "issued_on", "sha256", "sha256_matches", "signature", "signature_valid"}


# helpers ---------------------------------------------------------------------------


def year_now(rt: Runtime) -> int:
    return rt.clock().astimezone(LOCAL_TZ).year


def number(serial: int, year: int, prefix: str = HAIZHOU_PREFIX) -> str:
    return f"{prefix}〔{year}〕{serial}号"


def make_minor(client: Any, headers: dict[str, str], region: str = HAIZHOU_VILLAGE,
               name: str = "测试童") -> str:
    r = client.post("/api/v1/households", json=household_body(region), headers=headers)
    assert r.status_code == 201, r.text
    r = client.post("/api/v1/minors", json=minor_body(r.json()["id"], name=name), headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def referral(minor_id: str, **changes: Any) -> dict[str, Any]:
    return {"kind": "referral_notice", "subject_id": minor_id, "fields": record_fields("referral_notice", **changes)}


def pdf_text(data: bytes) -> str:
    return "".join(page.extract_text() for page in pypdf.PdfReader(io.BytesIO(data)).pages)


def pdf_pages(data: bytes) -> int:
    return len(pypdf.PdfReader(io.BytesIO(data)).pages)


def blob_files(settings: Settings) -> set[str]:
    root = settings.blob_dir
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def document_blob_files(settings: Settings) -> set[str]:
    return {f for f in blob_files(settings) if not f.startswith("healthcheck/")}


def counter(rt: Runtime) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in run_sql(rt, "SELECT issuer_org_id, year, last_serial FROM doc_number_counters")]


def count(rt: Runtime, table: str) -> int:
    return int(run_sql(rt, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608 - fixed table names


def leaves(value: Any) -> Iterator[str]:
    """Every string in a JSON-like value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from leaves(v)


def server_env(settings: Settings, **extra: str) -> dict[str, str]:
    """``shouhu serve`` on the test's own archive (same database, data dir and master key)."""
    assert settings.master_key is not None
    env = cli_env(settings.data_dir, SHOUHU_MASTER_KEY=settings.master_key.get_secret_value(),
                  SHOUHU_RENDER_WORKERS="2", SHOUHU_AUDIT_CHECKPOINT_INTERVAL_SECONDS="0", **extra)
    if settings.database_url:
        env["SHOUHU_DATABASE_URL"] = settings.database_url
    return env


@contextmanager
def failing_blobs(rt: Runtime, *, after_write: bool) -> Iterator[None]:
    """Install a blob store whose ``put`` raises OSError (after writing the file, if ``after_write``)."""

    class FailingPut(FilesystemBlobStore):
        def put(self, key: str, data: bytes) -> None:
            if after_write:
                super().put(key, data)  # e.g. the final directory fsync failing
            raise OSError(5, "injected I/O error")

    original = rt.blobs
    failing = FailingPut(rt.settings.blob_dir)
    rt.blobs = rt.document_issuing.blobs = rt.document_reading.blobs = failing
    try:
        yield
    finally:
        rt.blobs = rt.document_issuing.blobs = rt.document_reading.blobs = original


# 1. numbering --------------------------------------------------------------------------


ISSUES = 50
# All 50 sent at the same instant. One issuer's issues queue in the server process before they
# touch the database and render holding no database lock, so none waits on SQLite's busy timeout.
# (Before that, a request's token lookup kept SQLite's write lock while it waited for the
# counter: 50 at once failed 39 of 50 with 500 after the 60 s busy timeout.)
WAVE = 50


@pytest.mark.slow
def test_fifty_concurrent_issues_get_numbers_one_to_fifty_once(rt, settings, tmp_path):
    """50 issues racing through one ``shouhu serve`` (2 render workers): numbers 1..50, each once."""
    with serving(server_env(settings), tmp_path / "serve.log") as server, server.client() as c:
        cw = http_login(c, "caseworker.haizhou")
        minor_id = make_minor(c, cw)
        barrier = threading.Barrier(WAVE)
        results: list[tuple[float, httpx.Response | BaseException]] = []

        def client_thread() -> None:
            with httpx.Client(base_url=server.base_url, timeout=300) as own:
                for _ in range(ISSUES // WAVE):
                    barrier.wait(timeout=300)  # every thread of the wave sends at once
                    t0 = time.monotonic()
                    try:
                        outcome: httpx.Response | BaseException = own.post(
                            "/api/v1/documents", json=referral(minor_id), headers=cw)
                    except BaseException as exc:  # noqa: BLE001 - reported below
                        outcome = exc
                    results.append((time.monotonic() - t0, outcome))

        started = time.monotonic()
        threads = [threading.Thread(target=client_thread) for _ in range(WAVE)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        elapsed = time.monotonic() - started
        latencies = sorted(lat for lat, _ in results)
        print(f"\n[{rt.db.dialect}] {ISSUES} issues in waves of {WAVE} simultaneous requests: {elapsed:.1f}s; "
              f"request latency median {latencies[len(latencies) // 2]:.1f}s, max {latencies[-1]:.1f}s")
        failures = [r if isinstance(r, BaseException) else (r.status_code, r.text) for _, r in results
                    if isinstance(r, BaseException) or r.status_code != 201]
        assert not failures, f"{len(failures)} failed: {failures[:3]}\n{server.output()[-3000:]}"
        assert len(results) == ISSUES
    year = year_now(rt)
    numbers = [r.json()["doc_number"] for _, r in results if isinstance(r, httpx.Response)]
    assert sorted(numbers) == sorted(number(i, year) for i in range(1, ISSUES + 1))
    rows = run_sql(rt, "SELECT number_serial, doc_number FROM documents ORDER BY number_serial")
    assert [r[0] for r in rows] == list(range(1, ISSUES + 1))
    assert [r[1] for r in rows] == [number(i, year) for i in range(1, ISSUES + 1)]
    assert [r[2] for r in counter(rt)] == [ISSUES]
    assert len(document_blob_files(settings)) == ISSUES


def test_number_taken_by_another_process_while_rendering_is_rendered_again(client, tokens, rt, monkeypatch):
    """The PDF is rendered with the number peeked before; if another process (here: a stale peek)
    took it meanwhile, the document gets the next number and is rendered again with it."""
    from archive import numbering

    cw = tokens["caseworker.haizhou"]
    minor_id = make_minor(client, cw)
    year = year_now(rt)
    assert client.post("/api/v1/documents", json=referral(minor_id), headers=cw).status_code == 201
    peeked: list[str] = []

    def stale_peek(session: Any, *, issuer: Any, kind: Any, year: int) -> tuple[int, str]:
        peeked.append(numbering.number(issuer, kind, year, 1))
        return 1, peeked[-1]  # number 1 is long taken

    monkeypatch.setattr(numbering, "peek", stale_peek)
    r = client.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 201, r.text
    assert peeked == [number(1, year)] and r.json()["doc_number"] == number(2, year)
    pdf = client.get(f"/api/v1/documents/{r.json()['id']}/pdf", headers=cw).content
    assert hashlib.sha256(pdf).hexdigest() == r.json()["sha256"]
    text = pdf_text(pdf).replace(" ", "")
    assert number(2, year) in text and number(1, year) not in text


def test_subject_moved_while_rendering_issues_nothing(client, tokens, rt, monkeypatch):
    """The PDF renders outside any transaction; a minor moved to another region meanwhile stops the issue:
    409, no number used, and the issue's one event is an error, not 'allowed'."""
    cw = tokens["caseworker.haizhou"]
    minor_id = make_minor(client, cw)
    render = rt.document_issuing.pool.pdf

    def render_then_move(*args: Any, **kwargs: Any) -> bytes:
        pdf = render(*args, **kwargs)
        run_sql(rt, "UPDATE minors SET region_code = '320724001001' WHERE id = :id", id=minor_id)
        return pdf

    monkeypatch.setattr(rt.document_issuing.pool, "pdf", render_then_move)
    r = client.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 409 and r.json()["error"]["details"] == {"field": "subject_id"}, r.text
    assert count(rt, "documents") == 0 and all(last == 0 for _, _, last in counter(rt))  # no number used
    events = run_sql(rt, "SELECT outcome, reason FROM audit_events WHERE action = 'documents:document:issue'")
    assert events == [("error", "error:conflict")], events


@pytest.mark.parametrize("after_write", [False, True], ids=["put-fails", "put-fails-after-writing"])
def test_failed_issue_burns_no_number_and_leaves_nothing(app, client, tokens, rt, settings, after_write):
    cw = tokens["caseworker.haizhou"]
    minor_id = make_minor(client, cw)
    year = year_now(rt)
    r = client.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["doc_number"] == number(1, year)
    before_counter, before_blobs = counter(rt), document_blob_files(settings)
    assert [c[2] for c in before_counter] == [1] and len(before_blobs) == 1

    with failing_blobs(rt, after_write=after_write), TestClient(app, raise_server_exceptions=False) as raw:
        r = raw.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 500, r.text
    assert r.json()["error"]["code"] == "internal_error"
    assert count(rt, "documents") == 1 and count(rt, "document_versions") == 1
    assert counter(rt) == before_counter
    assert document_blob_files(settings) == before_blobs
    leftovers = [p for p in (settings.blob_dir / "documents").rglob(".tmp-*")]
    assert leftovers == []

    # The next issue takes the next number: no gap.
    r = client.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 201, r.text
    assert r.json()["doc_number"] == number(2, year)
    assert [row[0] for row in run_sql(rt, "SELECT number_serial FROM documents ORDER BY number_serial")] == [1, 2]

    # The log holds one event per issue attempt; the failed one is an error, about no stored document.
    events = run_sql(rt, "SELECT outcome, reason, resource_id FROM audit_events WHERE action = :a ORDER BY seq",
                     a="documents:document:issue")
    assert [e[0] for e in events] == ["allowed", "error", "allowed"], events
    assert events[1][1] == "error:OSError"
    failed_id = events[1][2]
    assert failed_id.startswith("doc_") and failed_id not in (first["id"], r.json()["id"])
    assert run_sql(rt, "SELECT count(*) FROM documents WHERE id = :i", i=failed_id)[0][0] == 0
    assert not any(f.startswith(f"documents/{failed_id}/") for f in blob_files(settings))
    assert run_sql(rt, "SELECT count(*) FROM data_keys WHERE owner_id = :i", i=failed_id)[0][0] == 0
    with rt.db.read_session() as s:
        assert rt.audit.verify(s).ok


# 2. immutability and verification ---------------------------------------------------------


PUBLIC_URL = "https://shouhu.example.gov.cn"


@contextmanager
def public_client(rt: Runtime) -> Iterator[TestClient]:
    """The API of ``rt``'s archive served by a runtime whose settings name a public address."""
    public = Runtime.open(rt.settings.model_copy(update={"public_url": PUBLIC_URL}))
    try:
        with TestClient(create_app(runtime=public)) as c:
            yield c
    finally:
        public.close()


def test_printed_qr_code_leads_to_the_public_verification(rt, tmp_path):
    """The QR code on the printed last page, decoded from a 150 dpi raster, is the document's
    verification address under SHOUHU_PUBLIC_URL; following it answers authentic, with the stored
    sha256 and nothing personal."""
    import zxingcpp
    from PIL import Image

    with public_client(rt) as client:
        cw = login(client, "caseworker.haizhou")
        minor_id = make_minor(client, cw, name="李梦瑶")
        issued = client.post("/api/v1/documents", json=referral(minor_id), headers=cw).json()
        pdf = client.get(f"/api/v1/documents/{issued['id']}/pdf", headers=cw).content
        (tmp_path / "doc.pdf").write_bytes(pdf)
        subprocess.run(["pdftoppm", "-r", "150", "-png", str(tmp_path / "doc.pdf"), str(tmp_path / "page")],
                       check=True, timeout=120)
        pages = sorted(tmp_path.glob("page*.png"))
        assert len(pages) == pdf_pages(pdf)
        codes = [c for png in pages for c in zxingcpp.read_barcodes(Image.open(png))]
        assert [c.format for c in codes] == [zxingcpp.BarcodeFormat.QRCode], codes
        url = codes[0].text
        code = issued["verification_code"].replace("-", "")
        assert url == f"{PUBLIC_URL}/verify/{code}"
        page = client.get(urlsplit(url).path)  # the public page a person's phone opens
        assert page.status_code == 200 and issued["doc_number"] in page.text, page.text
        r = client.get("/api/v1" + urlsplit(url).path)  # the same answer for programs
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["authentic"] is True and body["sha256"] == issued["sha256"]
        assert body["doc_number"] == issued["doc_number"]
        assert "李梦瑶" in pdf_text(pdf) and "李梦瑶" not in r.text  # the record's name, on paper only


def test_issued_pdf_is_immutable_and_verifiable(client, tokens, rt):
    cw = tokens["caseworker.haizhou"]
    minor_id = make_minor(client, cw, name="李梦瑶")
    r = client.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 201, r.text
    issued = r.json()
    doc_id, code = issued["id"], issued["verification_code"]
    r = client.get(f"/api/v1/documents/{doc_id}/pdf", headers=cw)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    first_bytes = r.content
    assert hashlib.sha256(first_bytes).hexdigest() == issued["sha256"] == r.headers["X-Content-SHA256"]
    assert first_bytes.startswith(b"%PDF-")
    text = pdf_text(first_bytes)
    assert issued["doc_number"] in text and code in text

    # A correction is version 2, pointing to 1, with its own code and bytes.
    fields = record_fields("referral_notice", contact_phone="0518-85800001")
    r = client.post(f"/api/v1/documents/{doc_id}/versions", json={"fields": fields, "reason": "联系电话有误"},
                    headers=cw)
    assert r.status_code == 201, r.text
    v2 = r.json()
    assert v2["id"] == doc_id and v2["version"] == 2 and v2["doc_number"] == issued["doc_number"]
    assert v2["verification_code"] != code and v2["sha256"] != issued["sha256"]

    # A year later: the same bytes, the stored sha256, both versions.
    real_clock = rt.clock
    later = real_clock() + timedelta(days=366)
    rt.clock = lambda: later
    try:
        cw = login(client, "caseworker.haizhou")
        doc = client.get(f"/api/v1/documents/{doc_id}", headers=cw).json()
        assert doc["version"] == 2 and doc["doc_number"] == issued["doc_number"]
        assert [(v["version"], v["supersedes"], v["sha256"]) for v in doc["versions"]] == [
            (1, None, issued["sha256"]), (2, 1, v2["sha256"])]
        r = client.get(f"/api/v1/documents/{doc_id}/pdf", params={"version": 1}, headers=cw)
        assert r.status_code == 200
        assert r.content == first_bytes
        assert hashlib.sha256(r.content).hexdigest() == issued["sha256"] == r.headers["X-Content-SHA256"]
        r = client.get(f"/api/v1/documents/{doc_id}/pdf", headers=cw)  # current = version 2
        assert r.status_code == 200 and r.headers["X-Content-SHA256"] == v2["sha256"]
        v2_bytes = r.content
        assert hashlib.sha256(v2_bytes).hexdigest() == v2["sha256"]
        assert "0518-85800001" in pdf_text(v2_bytes)

        # Public verification: no login, nothing personal.
        r = client.get(f"/api/v1/verify/{code}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) <= VERIFY_KEYS
        assert body["authentic"] is True and body["current"] is False and body["version"] == 1
        assert body["issuer"] == HAIZHOU_ORG and body["doc_number"] == issued["doc_number"]
        assert body["sha256"] == issued["sha256"] and body["kind"] == "referral_notice"
        issued_at = datetime.fromisoformat(issued["issued_at"])
        assert datetime.fromisoformat(body["issued_at"]) == issued_at
        assert body["issued_on"] == issued_at.astimezone(LOCAL_TZ).date().isoformat()  # the date printed
        dumped = json.dumps(body, ensure_ascii=False)
        personal = {s for s in leaves(KINDS["referral_notice"].example) if len(s) >= 2}
        assert personal and not [s for s in personal if s in dumped]
        assert "李梦瑶" not in dumped and minor_id not in dumped and doc_id not in dumped
        assert client.get(f"/api/v1/verify/{v2['verification_code']}").json()["current"] is True
        # Codes are read leniently (no dashes, lower case).
        assert client.get(f"/api/v1/verify/{code.replace('-', '').lower()}").json()["doc_number"] == \
            issued["doc_number"]

        # Your copy against the issued bytes.
        altered = bytearray(first_bytes)
        altered[len(altered) // 2] ^= 0x01
        r = client.post(f"/api/v1/verify/{code}", content=first_bytes, headers={"Content-Type": "application/pdf"})
        assert r.status_code == 200 and r.json()["authentic"] is True and r.json()["sha256_matches"] is True
        r = client.post(f"/api/v1/verify/{code}", content=bytes(altered),
                        headers={"Content-Type": "application/pdf"})
        assert r.status_code == 200 and r.json()["authentic"] is False and r.json()["sha256_matches"] is False
        r = client.get(f"/api/v1/verify/{code}", params={"sha256": hashlib.sha256(altered).hexdigest()})
        assert r.status_code == 200 and r.json()["authentic"] is False and r.json()["sha256_matches"] is False
        r = client.get(f"/api/v1/verify/{code}", params={"sha256": issued["sha256"].upper()})
        assert r.json()["authentic"] is True
        # The new version's copy does not pass for the old code.
        r = client.post(f"/api/v1/verify/{code}", content=v2_bytes, headers={"Content-Type": "application/pdf"})
        assert r.json()["authentic"] is False

        unknown = "".join(secrets.choice(CODE_ALPHABET) for _ in range(12))
        r = client.get(f"/api/v1/verify/{unknown}")
        assert r.status_code == 404
        assert r.json()["error"]["details"]["authentic"] is False
        r = client.post(f"/api/v1/verify/{unknown}", content=first_bytes)
        assert r.status_code == 404 and r.json()["error"]["details"]["authentic"] is False
    finally:
        rt.clock = real_clock
    # Verifications are logged, as the public actor, with the content's hash outcome only.
    rows = run_sql(rt, "SELECT outcome, reason FROM audit_events WHERE action = :a AND actor = 'public'",
                   a="documents:document:verify")
    assert ("denied", "verify:code_unknown") in [tuple(r) for r in rows]
    assert sum(1 for r in rows if r[0] == "allowed") >= 8


def test_concurrent_corrections_each_get_their_own_version(client, tokens, rt):
    """Two corrections of one document at once: versions 2 and 3, each superseding the one before."""
    cw = tokens["caseworker.haizhou"]
    minor_id = make_minor(client, cw)
    r = client.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 201, r.text
    doc_id = r.json()["id"]
    with rt.db.session() as s:
        actor = actor_for(s, s.scalar(select(User).where(User.username == "caseworker.haizhou")))
    barrier = threading.Barrier(2)

    def correct(phone: str) -> Any:
        with rt.db.session() as s:
            g = rt.guard(s, actor)
            barrier.wait(timeout=60)
            try:
                return rt.document_issuing.new_version(g, doc_id, VersionRequest(
                    fields=record_fields("referral_notice", contact_phone=phone), reason="更正联系电话"))
            except Exception as exc:
                g.fail(exc)
                return exc

    with ThreadPoolExecutor(2) as ex:
        outcomes = list(ex.map(correct, ["0518-85800001", "0518-85800002"]))
    assert all(not isinstance(o, BaseException) for o in outcomes), outcomes
    assert sorted(o.version for o in outcomes) == [2, 3]
    doc = client.get(f"/api/v1/documents/{doc_id}", headers=cw).json()
    assert doc["version"] == 3
    assert [(v["version"], v["supersedes"]) for v in doc["versions"]] == [(1, None), (2, 1), (3, 2)]


# 3. preview ------------------------------------------------------------------------------


def test_preview_is_a_draft_that_stores_nothing(client, tokens, rt, settings):
    cw = tokens["caseworker.haizhou"]
    minor_id = make_minor(client, cw)
    before = {t: count(rt, t) for t in ("documents", "document_versions", "doc_number_counters", "data_keys")}
    blobs_before = document_blob_files(settings)
    r = client.post("/api/v1/documents/preview", json=referral(minor_id), headers=cw)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF-")
    text = pdf_text(r.content)
    assert "草稿" in text and "测试童" in text  # the subject's name, from the record
    assert HAIZHOU_PREFIX not in text  # no number on a draft
    after = {t: count(rt, t) for t in before}
    assert after == before and document_blob_files(settings) == blobs_before
    # The preview logged its (audited) use of the minor's record.
    assert run_sql(rt, "SELECT count(*) FROM audit_events WHERE action = :a AND outcome = 'allowed'",
                   a="documents:document:preview")[0][0] == 1
    # No number was taken: the first real issue is No. 1.
    r = client.post("/api/v1/documents", json=referral(minor_id), headers=cw)
    assert r.status_code == 201 and r.json()["doc_number"] == number(1, year_now(rt))


# 4. access ------------------------------------------------------------------------------


def test_who_may_issue_and_read(client, tokens, rt):
    cw = tokens["caseworker.haizhou"]
    in_village = make_minor(client, cw, HAIZHOU_VILLAGE)
    elsewhere = make_minor(client, cw, OTHER_HAIZHOU_VILLAGE)
    guannan_minor = make_minor(client, tokens["caseworker.guannan"], GUANNAN_VILLAGE)
    r = client.post("/api/v1/documents", json=referral(in_village), headers=cw)
    assert r.status_code == 201, r.text
    doc = r.json()["id"]
    r = client.post("/api/v1/documents", json=referral(elsewhere), headers=cw)
    assert r.status_code == 201, r.text
    other_doc = r.json()["id"]

    # The issuer's county, and the village below it only for its own village.
    for user, ok in (("caseworker.haizhou", {doc, other_doc}), ("village.haizhou", {doc}),
                     ("caseworker.guannan", set()), ("supervisor.city", {doc, other_doc})):
        for d in (doc, other_doc):
            r = client.get(f"/api/v1/documents/{d}", headers=tokens[user])
            assert r.status_code == (200 if d in ok else 404), (user, d, r.text)
            r = client.get(f"/api/v1/documents/{d}/pdf", headers=tokens[user])
            assert r.status_code == (200 if d in ok else 404), (user, d, r.text)
        listed = client.get("/api/v1/documents", headers=tokens[user]).json()["items"]
        assert {i["id"] for i in listed} == ok, user
    r = client.get(f"/api/v1/documents/{doc}", headers=tokens["caseworker.guannan"])
    assert r.json()["error"]["code"] == "not_found"
    # The auditor reads the log, not casework documents: to it a document does not exist.
    for path in (f"/api/v1/documents/{doc}", f"/api/v1/documents/{doc}/pdf"):
        assert client.get(path, headers=tokens["auditor.city"]).status_code == 404
    # The supervisor reads but does not issue casework documents (nor correct them).
    r = client.post("/api/v1/documents", json=referral(in_village), headers=tokens["supervisor.city"])
    assert r.status_code == 403, r.text
    r = client.post(f"/api/v1/documents/{doc}/versions",
                    json={"fields": record_fields("referral_notice"), "reason": "试图更正"},
                    headers=tokens["supervisor.city"])
    assert r.status_code == 404, r.text  # a document it may not correct answers as not found (_load)

    # The custodian issues sealed-record query replies under its own prefix; caseworkers do not.
    sealed = {"kind": "sealed_query_reply", "fields": KINDS["sealed_query_reply"].example}
    r = client.post("/api/v1/documents", json=sealed, headers=tokens["custodian.city"])
    assert r.status_code == 201, r.text
    assert r.json()["doc_number"] == number(1, year_now(rt), "连检")
    assert client.post("/api/v1/documents", json=sealed, headers=cw).status_code == 403
    assert client.get(f"/api/v1/documents/{r.json()['id']}", headers=cw).status_code == 404  # a sealed reply

    # Bad kinds and subjects are 422s that name the field; another region's minor looks nonexistent.
    r = client.post("/api/v1/documents", json={**referral(in_village), "kind": "no_such_kind"}, headers=cw)
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["kind"]
    foreign = client.post("/api/v1/documents", json=referral(guannan_minor), headers=cw)
    missing = client.post("/api/v1/documents", json=referral("mn_doesnotexist0000000000"), headers=cw)
    assert foreign.status_code == missing.status_code == 422
    assert [f["field"] for f in foreign.json()["error"]["details"]["fields"]] == ["subject_id"]
    assert foreign.json() == missing.json()
    # The village cannot issue about a minor outside its village either.
    r = client.post("/api/v1/documents", json=referral(elsewhere), headers=tokens["village.haizhou"])
    assert r.status_code == 422 and r.json() == missing.json()
    assert count(rt, "documents") == 3


# 5. the render pool keeps the server responsive ------------------------------------------------


@pytest.mark.slow
def test_healthz_answers_while_documents_render(rt, settings, tmp_path):
    """Renders run in worker processes: the server keeps answering while they are in flight."""
    n = 6
    with serving(server_env(settings), tmp_path / "serve.log") as server, server.client() as c:
        cw = http_login(c, "caseworker.haizhou")
        minor_id = make_minor(c, cw)
        done: list[tuple[float, int]] = []
        audited: list[tuple[float, int]] = []  # for the report: a request that writes an audit event

        def issue() -> None:
            with httpx.Client(base_url=server.base_url, timeout=300) as own:
                r = own.post("/api/v1/documents", json=referral(minor_id), headers=cw)
                done.append((time.monotonic(), r.status_code))

        threads = [threading.Thread(target=issue) for _ in range(n)]

        def audited_probe() -> None:
            with httpx.Client(base_url=server.base_url, timeout=300) as own:
                while any(t.is_alive() for t in threads):
                    t0 = time.monotonic()
                    r = own.get("/api/v1/document-kinds", headers=cw)
                    audited.append((time.monotonic() - t0, r.status_code))
                    time.sleep(0.2)

        start = time.monotonic()
        for t in threads:
            t.start()
        side = threading.Thread(target=audited_probe)
        side.start()
        probes: list[tuple[float, float, int]] = []  # (answered at, latency, status)
        with httpx.Client(base_url=server.base_url, timeout=60) as probe:
            time.sleep(0.2)
            while any(t.is_alive() for t in threads):
                t0 = time.monotonic()
                r = probe.get("/healthz")
                t1 = time.monotonic()
                probes.append((t1, t1 - t0, r.status_code))
                time.sleep(0.05)
        for t in (*threads, side):
            t.join()
        # The renders ran in the pool's processes: the server process never loaded the layout engine.
        mapped = maps(server.proc.pid)
        assert mapped and "libpango" not in mapped and "libharfbuzz" not in mapped
        assert any("libpango" in maps(pid) for pid in children(server.proc.pid))
    assert sorted(code for _, code in done) == [201] * n
    first_done, last_done = min(at for at, _ in done), max(at for at, _ in done)
    during = sorted(lat for at, lat, _ in probes if at < last_done)
    lat_ms = [round(x * 1000) for x in during]
    audited_ms = sorted(round(lat * 1000) for lat, _ in audited)
    print(f"\n[{rt.db.dialect}] {n} issues: first done after {first_done - start:.1f}s, last after "
          f"{last_done - start:.1f}s; /healthz answered {len(during)} times meanwhile, latency ms "
          f"median {lat_ms[len(lat_ms) // 2] if lat_ms else '-'}, max {max(lat_ms, default='-')}; "
          f"audited GET /document-kinds ms: {audited_ms} (statuses {sorted({s for _, s in audited})})")
    assert all(status == 200 for _, _, status in probes)
    # The first /healthz (sent 0.2 s in) came back before even the first render had finished.
    assert probes and probes[0][0] < first_done, "/healthz did not answer while a render was in flight"


def test_render_pool_survives_a_dead_worker():
    """A render worker killed (out of memory, say) costs no render and does not break the pool."""
    k = KINDS["referral_notice"]
    meta = DocumentMeta(kind=k.kind, kind_title=k.title, issuer=HAIZHOU_ORG, doc_number="（草稿 未编号）",
                        issued_on=date(2026, 11, 28), created_at=datetime(2026, 11, 28, 2, 0, tzinfo=UTC),
                        verification_code=None, verify_url=None, mark="draft")
    pool = RenderPool(1)
    known = {p.pid for p in multiprocessing.active_children()}

    def new_worker() -> multiprocessing.Process:
        (worker,) = [p for p in multiprocessing.active_children() if p.pid not in known]
        known.add(worker.pid)
        return worker

    try:
        pool.warm()
        worker = new_worker()
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(30)
        assert pool.pdf(k.kind, k.example, meta).startswith(b"%PDF-")  # a fresh worker took over
        worker = new_worker()
        with ThreadPoolExecutor(1) as ex:  # killed in the middle of a render: retried, not lost
            idle = cpu_ticks(worker.pid)
            rendering = ex.submit(pool.pdf, k.kind, k.example, meta)
            deadline = time.monotonic() + 60
            while cpu_ticks(worker.pid) == idle:  # until the worker has started on it
                assert time.monotonic() < deadline and not rendering.done(), "the render never started"
                time.sleep(0.005)
            os.kill(worker.pid, signal.SIGKILL)
            assert pdf_text(rendering.result(timeout=300)).count("草稿") >= 1
    finally:
        pool.shutdown()


# 6. batch printing ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # With the demo's fixed seed, 40 households put only one in village.haizhou's village; 60 put three.
    return demo_archive_dir(tmp_path_factory, "print-demo", households=60)


def _households_in(data_dir: Path, region: str) -> list[str]:
    with sqlite3.connect(data_dir / "shouhu.db") as db:
        rows = db.execute("SELECT id FROM households WHERE region_code = ? AND sealed = 0 ORDER BY id",
                          (region,)).fetchall()
    return [r[0] for r in rows]


@pytest.mark.slow
def test_shouhu_print_household_files_and_issue_them(demo_archive, tmp_path):
    env = cli_env(demo_archive)
    households = _households_in(demo_archive, HAIZHOU_VILLAGE)
    assert len(households) >= 2

    out = tmp_path / "archive-copies.pdf"
    proc = run_cli(env, "print", "--kind", "household_file", "--region", HAIZHOU_VILLAGE, "--out", str(out),
                   "--as", "village.haizhou")
    assert out.name in " ".join(proc.stdout.split())
    data = out.read_bytes()
    assert pdf_pages(data) >= len(households)
    text = pdf_text(data)
    assert text.count(KINDS["household_file"].title) >= len(households)
    for hid in households:
        assert hid in text  # each household's file, by its file number
    assert "存档打印件" in text
    with sqlite3.connect(demo_archive / "shouhu.db") as db:
        assert db.execute("SELECT count(*) FROM documents").fetchone()[0] == 0

    issued_out = tmp_path / "issued.pdf"
    run_cli(env, "print", "--kind", "household_file", "--region", HAIZHOU_VILLAGE, "--out", str(issued_out),
            "--as", "village.haizhou", "--issue")
    with sqlite3.connect(demo_archive / "shouhu.db") as db:
        docs = db.execute("SELECT id, subject_id, doc_number, number_serial FROM documents ORDER BY number_serial"
                          ).fetchall()
    assert sorted(d[1] for d in docs) == households
    assert [d[3] for d in docs] == list(range(1, len(households) + 1))
    combined = pdf_text(issued_out.read_bytes())
    for d in docs:  # file numbers of the household file's own series (archive.numbering), no 发文字号
        assert d[2] in combined and re.fullmatch(rf"{HAIZHOU_VILLAGE}CJ-JT-\d{{4}}-{d[3]:06d}", d[2]), d[2]

    # Each stored PDF opens and hashes to its recorded sha256.
    settings = Settings(data_dir=demo_archive, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1,
                        render_workers=0)
    rt = Runtime.open(settings)
    try:
        with TestClient(create_app(runtime=rt)) as c:
            headers = login(c, "village.haizhou")
            for doc_id, _subject, doc_number, _serial in docs:
                meta = c.get(f"/api/v1/documents/{doc_id}", headers=headers).json()
                assert meta["doc_number"] == doc_number and len(meta["versions"]) == 1
                r = c.get(f"/api/v1/documents/{doc_id}/pdf", headers=headers)
                assert r.status_code == 200, r.text
                assert hashlib.sha256(r.content).hexdigest() == meta["versions"][0]["sha256"]
                verified = c.get(f"/api/v1/verify/{meta['versions'][0]['verification_code']}").json()
                assert verified["authentic"] is True and verified["doc_number"] == doc_number
    finally:
        rt.close()

    proc = run_cli(env, "audit", "verify")
    assert "访问日志完整" in " ".join(proc.stdout.split())


@pytest.mark.slow
def test_shouhu_print_of_an_empty_region_says_so(rt, settings, tmp_path):
    out = tmp_path / "empty.pdf"
    proc = run_cli(server_env(settings), "print", "--kind", "household_file", "--region", HAIZHOU_VILLAGE,
                   "--out", str(out), "--as", "village.haizhou", check=False)
    said = output(proc)
    assert proc.returncode == 2, said
    assert "region" in said and "没有可打印的档案" in said and "Traceback" not in said
    assert not out.exists()
    events = run_sql(rt, "SELECT outcome, reason FROM audit_events WHERE action = :a", a="documents:batch:print")
    assert [tuple(e) for e in events] == [("error", "error:invalid_input")]



# `shouhu print` run in this process: WeasyPrint leaves its colour profile file to the garbage collector.
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_forms_need_no_prefix_letters_do_single_or_batch(rt, client, tokens, monkeypatch, tmp_path):
    """An issuer without a 发文字号 prefix numbers forms (their file numbers need none), single or in a
    batch, and is refused a letter with a 409 (Conflict), before anything is read."""
    from tests.cli_support import InProcess

    village = tokens["village.haizhou"]
    r = client.post("/api/v1/households", json=household_body(HAIZHOU_VILLAGE), headers=village)
    assert r.status_code == 201, r.text
    household = r.json()["id"]
    r = client.post("/api/v1/minors", json=minor_body(household), headers=village)
    assert r.status_code == 201, r.text
    minor = r.json()["id"]
    run_sql(rt, "UPDATE orgs SET doc_prefix = NULL WHERE id = "
                "(SELECT org_id FROM users WHERE username = 'village.haizhou')")
    r = client.post("/api/v1/documents", headers=village, json=referral(minor))
    assert r.status_code == 409, r.text
    assert r.json()["error"]["details"] == {"field": "issuer"}
    r = client.post("/api/v1/documents", headers=village, json={
        "kind": "household_file", "subject_id": household, "fields": record_fields("household_file")})
    assert r.status_code == 201, r.text
    year = year_now(rt)
    assert r.json()["doc_number"] == f"{HAIZHOU_VILLAGE}CJ-JT-{year}-000001"

    shouhu = InProcess(rt.settings, monkeypatch)
    out = tmp_path / "issued.pdf"
    result = shouhu("print", "--kind", "household_file", "--region", HAIZHOU_VILLAGE,
                    "--out", str(out), "--as", "village.haizhou", "--issue")
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"{HAIZHOU_VILLAGE}CJ-JT-{year}-000002" in pdf_text(out.read_bytes())
    assert count(rt, "documents") == 2


# 7. the kind registry -------------------------------------------------------------------------


def test_who_reads_a_kind_is_decided_in_policy():
    """Readers of a kind: its issuers, and supervisors for documents about a household, minor or
    region (one rule in access_control.policy, used by the API, the pages, the list and search)."""
    from access_control.identity import Actor, OrgType
    from access_control.policy import document_kind_readers, may_correct_document, may_read_document_kind

    readers = {name: document_kind_readers(kind) for name, kind in KINDS.items()}
    assert readers["referral_notice"] == {"caseworker", "supervisor"}
    assert readers["inspection_report"] == {"supervisor"}
    assert readers["sealed_query_reply"] == {"custodian"}
    assert readers["access_audit_report"] == {"auditor"}

    def actor(*roles: str, org: str = "org_a", org_type: str = OrgType.CIVIL_AFFAIRS) -> Actor:
        return Actor(user_id="u", username="u", display_name="", org_id=org, org_name="", org_type=org_type,
                     roles=roles, region_code="320706")

    assert may_read_document_kind(actor("supervisor"), KINDS["minor_file"])
    assert not may_read_document_kind(actor("supervisor"), KINDS["sealed_query_reply"])
    assert not may_read_document_kind(actor("requester"), KINDS["sealed_query_reply"])  # only through a grant
    assert may_correct_document(actor("caseworker"), KINDS["minor_file"], "org_a")
    assert not may_correct_document(actor("caseworker"), KINDS["minor_file"], "org_b")
    assert not may_correct_document(actor("supervisor"), KINDS["minor_file"], "org_a")
    # Kinds an organisation type issues (policy.KIND_ISSUER_ORG_TYPES): a school's dropout notice.
    school = actor("caseworker", org_type=OrgType.SCHOOL)
    assert may_correct_document(school, KINDS["dropout_notice"], "org_a")
    assert not may_correct_document(school, KINDS["minor_file"], "org_a")
    assert not may_correct_document(actor("caseworker"), KINDS["dropout_notice"], "org_a")


def test_document_kinds_and_prefill(client, tokens):
    cw = tokens["caseworker.haizhou"]
    r = client.get("/api/v1/document-kinds", headers=cw)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert {i["kind"]: i["title"] for i in items} == DOMAIN_KINDS
    for item in items:
        assert item["subject"] in ("household", "minor", "sealed_request", "region", "none")
        schema, example = item["json_schema"], item["example"]
        assert schema["type"] == "object" and schema["properties"]
        assert set(schema.get("required", [])) <= set(example) <= set(schema["properties"]), item["kind"]
        KINDS[item["kind"]].validate(example)  # the example as served validates
    by_kind = {i["kind"]: i for i in items}
    assert by_kind["referral_notice"]["subject"] == "minor"
    assert by_kind["household_file"]["subject"] == "household"

    minor_id = make_minor(client, cw, name="周雨桐")
    r = client.get("/api/v1/document-kinds/minor_file/prefill", params={"subject_id": minor_id}, headers=cw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["kind"] == "minor_file" and body["subject_id"] == minor_id
    fields = body["fields"]
    assert fields["name"] == "周雨桐"
    KINDS["minor_file"].validate(fields)
    # Someone else's minor: the same 422 as a minor that does not exist.
    r = client.get("/api/v1/document-kinds/minor_file/prefill", params={"subject_id": minor_id},
                   headers=tokens["caseworker.guannan"])
    assert r.status_code == 422
    assert [f["field"] for f in r.json()["error"]["details"]["fields"]] == ["subject_id"]
