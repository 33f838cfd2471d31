"""Exports of the access log, checked by the standalone verifier as a third party would.

``docs/verify_audit_export.py`` runs as a subprocess (``sys.executable``, no Shouhu
imports) against exports from the API and the CLI, a checkpoint from the API and
the public key from ``/api/v1/audit/public-key``. Every change to the export or the
checkpoint makes it exit 1. The CSV export re-hashes to the same event hashes as
the JSONL, proofs from the API verify against signed roots, and an archive on the
SM suite exports an SM3 log that the same script verifies.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from access_control import merkle
from access_control.actions import Action
from access_control.audit import CSV_COLUMNS, EventDraft, checkpoint_message
from access_control.identity import Actor, OrgType
from core.crypto import SigningKey, verify_signature
from core.settings import Settings
from main import create_app
from runtime import Runtime
from tests.audit_support import run_shouhu
from tests.conftest import Tokens, household_body, make_id_number, make_settings, minor_body, seed_world

REPO = Path(__file__).resolve().parents[2]
VERIFIER = REPO / "docs" / "verify_audit_export.py"
CANONICAL_KEYS = {"v", "seq", "at", "actor_id", "actor", "org_id", "roles", "action", "resource_kind",
                  "resource_id", "outcome", "reason", "request_id", "subjects", "details", "prev_hash"}


# Helpers ---------------------------------------------------------------------------------------


def ok(r: Any, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r


AWKWARD = '海州 "专干", a\\b\nc'


def append_awkward_event(rt: Runtime) -> None:
    actor = Actor(user_id="system", username="system:test", display_name="", org_id="system", org_name="",
                  org_type=OrgType.IT, roles=(), region_code="320700")
    with rt.db.session() as s:
        rt.audit.append(s, actor=actor, request_id="req_awkward", at=rt.clock(), draft=EventDraft(
            action=Action.AUDIT_VERIFY, outcome="allowed", reason="test:awkward", details={"note": AWKWARD}))
        s.commit()


def make_log(client: TestClient, tokens: Any) -> dict[str, Any]:
    """Everyday use, with awkward strings in details, and two signed checkpoints."""
    hz, gn, auditor = tokens["caseworker.haizhou"], tokens["caseworker.guannan"], tokens["auditor.city"]
    hh = ok(client.post("/api/v1/households", json=household_body(), headers=hz), 201).json()
    m1 = ok(client.post("/api/v1/minors", json=minor_body(hh["id"]), headers=hz), 201).json()
    # A household of two people: an event with two subjects.
    two = household_body()
    two["members"] = [*two["members"], {**two["members"][0], "relation": "母亲", "name": "测试母",
                                        "id_number": make_id_number("320706", "19870202", male=False)}]
    ok(client.post("/api/v1/households", json=two, headers=hz), 201)
    ok(client.get(f"/api/v1/minors/{m1['id']}", headers=hz))
    assert client.get(f"/api/v1/minors/{m1['id']}", headers=gn).status_code == 404
    ok(client.get("/api/v1/minors", headers=hz))
    # Non-ASCII, quotes, a backslash, a comma and a newline in `details`. No route logs typed text
    # any more (case numbers are hashed, typed filter values redacted): the event is appended directly.
    ok(client.post("/api/v1/sealed-requests", headers=tokens["court.haizhou"], json={
        "case_number": "（2026）苏0706刑初3号", "legal_basis": "cpl_286_judicial", "purpose": "审理案件需要",
        "subject": {"name": "测试人", "id_number": make_id_number("320706", "20080101")}}), 201)
    append_awkward_event(client.app.state.runtime)
    ok(client.get("/api/v1/audit/events", params={"actor": '海州 "专干", a\\b\nc'}, headers=auditor))
    mid = ok(client.post("/api/v1/audit/checkpoints", headers=auditor), 201).json()
    m2 = ok(client.post("/api/v1/minors", json=minor_body(hh["id"], categories=[2]), headers=hz), 201).json()
    ok(client.get(f"/api/v1/minors/{m2['id']}", headers=hz))
    client.post("/api/v1/auth/token", data={"username": "nobody.here", "password": "wrong-password-1"})
    ok(client.patch(f"/api/v1/minors/{m2['id']}", json={"school": "幸福小学"}, headers=hz))
    end = ok(client.post("/api/v1/audit/checkpoints", headers=auditor), 201).json()
    key = ok(client.get("/api/v1/audit/public-key", headers=auditor)).json()
    return {"mid": mid, "end": end, "public_key": key["public_key"], "key": key, "auditor": auditor}


def run_verifier(export: Path, checkpoint: Path, public_key: str | None) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, str(VERIFIER), str(export), str(checkpoint)]
    if public_key is not None:
        args += ["--public-key", public_key]
    # Run from an empty folder with a clean environment: no Shouhu code on the path.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHOUHU_", "PYTHON"))}
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False, env=env,
                          cwd=export.parent)


def accepted(proc: subprocess.CompletedProcess[str]) -> bool:
    if proc.returncode == 0:
        assert proc.stdout.startswith("OK: "), proc.stdout
        return True
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "FAILED" in proc.stderr
    return False


def shouhu(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    proc = run_shouhu(settings, *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def api_export(client: TestClient, headers: dict[str, str], fmt: str, upto: int | None = None) -> bytes:
    params: dict[str, Any] = {"format": fmt}
    if upto is not None:
        params["upto"] = upto
    r = ok(client.get("/api/v1/audit/export", params=params, headers=headers))
    assert r.headers["content-type"].startswith("text/csv" if fmt == "csv" else "application/x-ndjson")
    return r.content


def write_json(path: Path, value: Any) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


def line_hashes(alg: str, jsonl: bytes) -> list[str]:
    h = merkle.hasher(alg)
    return [merkle.leaf_hash(h, line).hex() for line in jsonl.split(b"\n")[:-1]]


def csv_rehash(alg: str, data: bytes) -> tuple[list[bytes], list[str]]:
    """Canonical bytes rebuilt from CSV columns as docs/audit-format.md says, and the hash column."""
    reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
    header = next(reader)
    assert tuple(header) == CSV_COLUMNS
    canon, hashes = [], []
    for values in reader:
        record = dict(zip(header, values, strict=True))
        event: dict[str, Any] = {k: v for k, v in record.items() if k not in ("hash", "on_behalf_of")}
        event.update(v=1, seq=int(record["seq"]), subjects=json.loads(record["subjects"]),
                     details=json.loads(record["details"]))
        if record["on_behalf_of"]:  # format version 2: the event names whom an operator acted for
            event.update(v=2, on_behalf_of=record["on_behalf_of"])
        for column in ("subjects", "details"):  # the columns hold canonical JSON themselves
            assert record[column] == json.dumps(event[column], ensure_ascii=False, sort_keys=True,
                                                separators=(",", ":"))
        assert set(event) == (CANONICAL_KEYS | {"on_behalf_of"} if event["v"] == 2 else CANONICAL_KEYS)
        body = json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")
        assert merkle.leaf_hash(merkle.hasher(alg), body).hex() == record["hash"]
        canon.append(body)
        hashes.append(record["hash"])
    return canon, hashes


@pytest.fixture
def logged(client: TestClient, tokens: Any) -> dict[str, Any]:
    return make_log(client, tokens)


# The standalone verifier accepts genuine exports ------------------------------------------------


def test_api_jsonl_export_verifies_with_the_standalone_script(client, logged, tmp_path):
    end, auditor = logged["end"], logged["auditor"]
    data = api_export(client, auditor, "jsonl", upto=end["size"])
    lines = data.split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == end["size"]
    # Each line is exactly the canonical bytes; its hash chains to the next line.
    prev = "0" * 64
    for i, line in enumerate(lines[:-1], start=1):
        event = json.loads(line)
        assert set(event) == CANONICAL_KEYS and event["seq"] == i and event["prev_hash"] == prev
        assert json.dumps(event, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode() == line
        prev = hashlib.sha256(b"\x00" + line).hexdigest()
    assert prev == end["head_hash"]
    assert "海州".encode() in data and b"\\u" not in data  # UTF-8, not \u escapes

    export = tmp_path / "export.jsonl"
    export.write_bytes(data)
    checkpoint = write_json(tmp_path / "checkpoint.json", end)
    proc = run_verifier(export, checkpoint, logged["public_key"])
    assert accepted(proc) and f"OK: {end['size']} events, root {end['root']}" in proc.stdout

    # The midway checkpoint too, against the same (longer) export; and a full export
    # that runs past the checkpoint verifies up to the checkpoint's size.
    assert accepted(run_verifier(export, write_json(tmp_path / "mid.json", logged["mid"]), logged["public_key"]))
    full = tmp_path / "full.jsonl"
    full.write_bytes(api_export(client, auditor, "jsonl"))
    assert full.read_bytes().startswith(data) and len(full.read_bytes()) > len(data)
    assert accepted(run_verifier(full, checkpoint, logged["public_key"]))


def test_checkpoint_signature_is_over_the_documented_message(logged):
    end, key = logged["end"], logged["key"]
    assert key["algorithm"] == "Ed25519" and key["pem"].startswith("-----BEGIN PUBLIC KEY-----")
    assert end["key_id"] == hashlib.sha256(bytes.fromhex(key["public_key"])).hexdigest()[:16] == key["key_id"]
    message = (f"shouhu-audit-checkpoint/v1\nsha256\n{end['size']}\n{end['root']}\n{end['head_hash']}\n"
               f"{end['at']}\n").encode("ascii")
    assert message == checkpoint_message(hash_alg="sha256", size=end["size"], root=end["root"],
                                         head_hash=end["head_hash"], at=end["at"])
    assert verify_signature(bytes.fromhex(key["public_key"]), message, bytes.fromhex(end["signature"]))


def test_cli_exports_match_the_api_and_verify(client, logged, settings, tmp_path):
    end, auditor = logged["end"], logged["auditor"]
    jsonl, csv_file = tmp_path / "cli.jsonl", tmp_path / "cli.csv"
    shouhu(settings, "audit", "export", "--out", str(jsonl), "--upto", str(end["size"]))
    shouhu(settings, "audit", "export", "--out", str(csv_file), "--format", "csv", "--upto", str(end["size"]))
    assert jsonl.read_bytes() == api_export(client, auditor, "jsonl", upto=end["size"])
    assert csv_file.read_bytes() == api_export(client, auditor, "csv", upto=end["size"])
    checkpoint = write_json(tmp_path / "checkpoint.json", end)
    assert accepted(run_verifier(jsonl, checkpoint, logged["public_key"]))
    # A whole-log CLI export (no --upto) verifies against the checkpoint too.
    whole = tmp_path / "whole.jsonl"
    shouhu(settings, "audit", "export", "--out", str(whole))
    assert whole.read_bytes().startswith(jsonl.read_bytes())
    assert accepted(run_verifier(whole, checkpoint, logged["public_key"]))
    # `shouhu audit checkpoint --out` writes a file the script takes as it is.
    cli_cp = tmp_path / "cli-checkpoint.json"
    shouhu(settings, "audit", "checkpoint", "--out", str(cli_cp))
    saved = json.loads(cli_cp.read_text())
    assert saved["public_key"] == logged["public_key"] and saved["size"] > end["size"]
    shouhu(settings, "audit", "export", "--out", str(whole), "--upto", str(saved["size"]))
    assert accepted(run_verifier(whole, cli_cp, logged["public_key"]))
    assert accepted(run_verifier(whole, cli_cp, None))  # key taken from the file (not advised, but works)


def test_csv_export_rehashes_to_the_jsonl_hashes(client, logged):
    auditor = logged["auditor"]
    size = logged["end"]["size"]
    jsonl = api_export(client, auditor, "jsonl", upto=size)
    data = api_export(client, auditor, "csv", upto=size)
    assert data.startswith(b"seq,at,actor_id,actor,org_id,roles,action,resource_kind,resource_id,outcome,reason,"
                           b"request_id,subjects,details,prev_hash,hash,on_behalf_of\n")
    canon, hashes = csv_rehash("sha256", data)
    assert any(len(json.loads(c)["subjects"]) >= 2 for c in canon)
    assert canon == jsonl.split(b"\n")[:-1]
    assert hashes == line_hashes("sha256", jsonl)
    assert hashes[-1] == logged["end"]["head_hash"]
    assert merkle.root_from_leaf_hashes(merkle.hasher("sha256"), [bytes.fromhex(x) for x in hashes]).hex() == \
        logged["end"]["root"]
    # The awkward details survived CSV quoting.
    assert any('海州 \\"专干\\", a\\\\b\\nc' in c.decode() for c in canon)


# ... and refuses every change ---------------------------------------------------------------------


@pytest.fixture
def files(client: TestClient, logged: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    end = logged["end"]
    data = api_export(client, logged["auditor"], "jsonl", upto=end["size"])
    checkpoint = write_json(tmp_path / "checkpoint.json", end)
    assert accepted(run_verifier(_write(tmp_path / "good.jsonl", data), checkpoint, logged["public_key"]))
    return {"data": data, "checkpoint": checkpoint, "end": end, "key": logged["public_key"], "dir": tmp_path}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def one_byte_changes(data: bytes) -> list[tuple[str, bytes]]:
    lines = data.split(b"\n")
    middle = len(lines) // 2
    start = sum(len(x) + 1 for x in lines[:middle])
    line = lines[middle]
    changes = []

    def at(offset: int, new: bytes, desc: str) -> None:
        assert data[offset:offset + 1] != new
        changes.append((desc, data[:offset] + new + data[offset + 1:]))

    at(0, b"[", "first byte")
    for field in (b'"at":"', b'"actor":"', b'"action":"', b'"outcome":"', b'"prev_hash":"', b'"seq":'):
        offset = start + line.index(field) + len(field)
        at(offset, b"1" if data[offset:offset + 1] != b"1" else b"2", f"middle line, {field.decode()}")
    at(start + len(line), b" ", "a newline")
    at(start + len(line) - 1, b" ", "a closing brace")
    at(len(data) - 3, b"0" if data[len(data) - 3:len(data) - 2] != b"0" else b"1", "in the last line")
    at(len(data) - 1, b"}", "the final newline")
    return changes


def test_one_byte_changes_are_refused(files):
    for desc, changed in one_byte_changes(files["data"]):
        proc = run_verifier(_write(files["dir"] / "changed.jsonl", changed), files["checkpoint"], files["key"])
        assert not accepted(proc), desc


def test_dropped_reordered_or_added_lines_are_refused(files):
    lines = files["data"].split(b"\n")[:-1]
    n = len(lines)
    variants = {
        "first line dropped": lines[1:],
        "middle line dropped": lines[: n // 2] + lines[n // 2 + 1:],
        "last line dropped": lines[:-1],
        "adjacent pair swapped": lines[: n // 2] + [lines[n // 2 + 1], lines[n // 2]] + lines[n // 2 + 2:],
        "distant pair swapped": [lines[n - 2], *lines[1:n - 2], lines[0], lines[n - 1]],
        "line duplicated": lines[: n // 2] + [lines[n // 2]] + lines[n // 2:],
        "empty export": [],
    }
    for desc, kept in variants.items():
        data = b"".join(x + b"\n" for x in kept)
        proc = run_verifier(_write(files["dir"] / "changed.jsonl", data), files["checkpoint"], files["key"])
        assert not accepted(proc), desc


def test_wrong_key_or_changed_checkpoint_is_refused(files):
    export = _write(files["dir"] / "export.jsonl", files["data"])
    end = files["end"]
    other = SigningKey(SigningKey.new_seed())
    assert not accepted(run_verifier(export, files["checkpoint"], other.public_key.hex()))
    assert not accepted(run_verifier(export, files["checkpoint"], "00" * 32))
    flipped_root = ("0" if end["root"][0] != "0" else "1") + end["root"][1:]
    for desc, changed in {
        "root": {**end, "root": flipped_root},
        "size - 1": {**end, "size": end["size"] - 1},
        "size + 1": {**end, "size": end["size"] + 1},
        "head_hash": {**end, "head_hash": end["root"]},
        "at": {**end, "at": end["at"][:-2] + ("0" if end["at"][-2] != "0" else "1") + "Z"},
        "hash_alg": {**end, "hash_alg": "sm3"},
        "signature": {**end, "signature": ("0" if end["signature"][0] != "0" else "1") + end["signature"][1:]},
    }.items():
        assert changed != end
        proc = run_verifier(export, write_json(files["dir"] / "changed.json", changed), files["key"])
        assert not accepted(proc), desc
        assert "signature" in proc.stderr, desc


def test_a_forged_checkpoint_signed_with_another_key_still_fails_on_the_hashes(files):
    """With the attacker's key in hand the signature passes; the root and head hash do not."""
    export = _write(files["dir"] / "export.jsonl", files["data"])
    end = files["end"]
    forger = SigningKey(SigningKey.new_seed())

    def signed(cp: dict[str, Any]) -> Path:
        message = checkpoint_message(hash_alg=cp["hash_alg"], size=cp["size"], root=cp["root"],
                                     head_hash=cp["head_hash"], at=cp["at"])
        return write_json(files["dir"] / "forged.json", {**cp, "signature": forger.sign(message).hex()})

    assert accepted(run_verifier(export, signed(end), forger.public_key.hex()))  # the control
    h = merkle.hasher("sha256")
    hashes = [bytes.fromhex(x) for x in line_hashes("sha256", files["data"])]
    for desc, cp in {
        "root changed": {**end, "root": "ab" * 32},
        "size - 1 (with its own head hash)": {**end, "size": end["size"] - 1, "head_hash": hashes[-2].hex()},
        "size - 1 (with its own root)": {**end, "size": end["size"] - 1,
                                         "root": merkle.root_from_leaf_hashes(h, hashes[:-1]).hex()},
        "size + 1": {**end, "size": end["size"] + 1},
        "head hash changed": {**end, "head_hash": hashes[0].hex()},
        "sm3 instead of sha256": {**end, "hash_alg": "sm3"},
    }.items():
        proc = run_verifier(export, signed(cp), forger.public_key.hex())
        assert not accepted(proc), desc
        assert "signature" not in proc.stderr, desc


# Proofs from the API against signed roots ---------------------------------------------------


def test_inclusion_and_consistency_proofs_verify_against_checkpoint_roots(client, logged):
    auditor, mid, end = logged["auditor"], logged["mid"], logged["end"]
    h = merkle.hasher("sha256")
    hashes = line_hashes("sha256", api_export(client, auditor, "jsonl", upto=end["size"]))
    for cp in (mid, end):
        root = bytes.fromhex(cp["root"])
        for seq in sorted({1, 2, cp["size"] // 2, cp["size"] - 1, cp["size"]}):
            p = ok(client.get("/api/v1/audit/proofs/inclusion", params={"seq": seq, "size": cp["size"]},
                              headers=auditor)).json()
            assert p["leaf_index"] == seq - 1 and p["tree_size"] == cp["size"] and p["hash_alg"] == "sha256"
            assert p["leaf_hash"] == hashes[seq - 1] and p["root"] == cp["root"]
            proof = [bytes.fromhex(x) for x in p["proof"]]
            leaf = bytes.fromhex(hashes[seq - 1])
            assert merkle.verify_inclusion(h, index=seq - 1, size=cp["size"], leaf=leaf, proof=proof, root=root)
            other = bytes.fromhex(hashes[seq % cp["size"]])
            assert not merkle.verify_inclusion(h, index=seq - 1, size=cp["size"], leaf=other, proof=proof,
                                               root=root)
    p = ok(client.get("/api/v1/audit/proofs/consistency", params={"first": mid["size"], "second": end["size"]},
                      headers=auditor)).json()
    assert p["first_root"] == mid["root"] and p["second_root"] == end["root"]
    proof = [bytes.fromhex(x) for x in p["proof"]]
    # Checked against the roots of the signed checkpoints, not the response's.
    assert merkle.verify_consistency(h, size1=mid["size"], size2=end["size"], root1=bytes.fromhex(mid["root"]),
                                     root2=bytes.fromhex(end["root"]), proof=proof)
    assert not merkle.verify_consistency(h, size1=mid["size"], size2=end["size"], root1=bytes.fromhex(end["root"]),
                                         root2=bytes.fromhex(mid["root"]), proof=proof)
    # The default second size is the current log; that tree extends the end checkpoint too.
    p = ok(client.get("/api/v1/audit/proofs/consistency", params={"first": end["size"]}, headers=auditor)).json()
    assert p["second"] > end["size"]
    assert merkle.verify_consistency(h, size1=end["size"], size2=p["second"], root1=bytes.fromhex(end["root"]),
                                     root2=bytes.fromhex(p["second_root"]),
                                     proof=[bytes.fromhex(x) for x in p["proof"]])
    # Out-of-range requests are refused.
    for params in ({"seq": end["size"] + 1000}, {"seq": 3, "size": 2}):
        assert client.get("/api/v1/audit/proofs/inclusion", params=params, headers=auditor).status_code == 422
    r = client.get("/api/v1/audit/proofs/consistency", params={"first": end["size"] + 1000}, headers=auditor)
    assert r.status_code == 422


# The SM suite: SM3 hashes, verified by the same script ------------------------------------------


def test_sm_suite_archive_exports_an_sm3_log(backend, tmp_path):
    backend.reset()
    data_dir = tmp_path / "sm" / "var"
    settings = make_settings(data_dir, backend.database_url(data_dir), cipher_suite="sm")
    rt = Runtime.open(settings, require_schema=False)
    try:
        rt.initialize()
        seed_world(rt)
        assert rt.audit.hash_alg == "sm3"
        with TestClient(create_app(runtime=rt)) as client:
            tokens = Tokens(client)
            logged = make_log(client, tokens)
            end, auditor = logged["end"], logged["auditor"]
            assert end["hash_alg"] == "sm3" and logged["mid"]["hash_alg"] == "sm3"
            jsonl = api_export(client, auditor, "jsonl", upto=end["size"])
            csv_data = api_export(client, auditor, "csv", upto=end["size"])
            proof = ok(client.get("/api/v1/audit/proofs/inclusion", params={"seq": 2, "size": end["size"]},
                                  headers=auditor)).json()
        sm3 = line_hashes("sm3", jsonl)
        assert sm3 == [hashlib.new("sm3", b"\x00" + x).hexdigest() for x in jsonl.split(b"\n")[:-1]]
        assert sm3 != line_hashes("sha256", jsonl)
        assert sm3[-1] == end["head_hash"]
        assert csv_rehash("sm3", csv_data) == (jsonl.split(b"\n")[:-1], sm3)
        h = merkle.hasher("sm3")
        assert proof["hash_alg"] == "sm3" and proof["leaf_hash"] == sm3[1]
        assert merkle.verify_inclusion(h, index=1, size=end["size"], leaf=bytes.fromhex(sm3[1]),
                                       proof=[bytes.fromhex(x) for x in proof["proof"]],
                                       root=bytes.fromhex(end["root"]))
        export = _write(tmp_path / "sm.jsonl", jsonl)
        checkpoint = write_json(tmp_path / "sm-checkpoint.json", end)
        proc = run_verifier(export, checkpoint, logged["public_key"])
        assert accepted(proc) and "(sm3, Ed25519)" in proc.stdout
        # Claiming SHA-256 for this log fails, even when re-signed by whoever claims it.
        forger = SigningKey(SigningKey.new_seed())
        claim = {**end, "hash_alg": "sha256"}
        claim["signature"] = forger.sign(checkpoint_message(
            hash_alg="sha256", size=end["size"], root=end["root"], head_hash=end["head_hash"], at=end["at"])).hex()
        assert not accepted(run_verifier(export, write_json(tmp_path / "claim.json", claim), forger.public_key.hex()))
        changed = jsonl.replace(b'"outcome":"denied"', b'"outcome":"allowed"', 1)
        assert changed != jsonl
        assert not accepted(run_verifier(_write(tmp_path / "sm-changed.jsonl", changed), checkpoint,
                                         logged["public_key"]))
    finally:
        rt.close()

    # The hash algorithm is fixed when the log is initialised: the same archive opened
    # with the AES suite keeps hashing its log with SM3.
    aes = Runtime.open(settings.model_copy(update={"cipher_suite": "aes"}))
    try:
        assert aes.audit.hash_alg == "sha256"  # what a new archive would get...
        with TestClient(create_app(runtime=aes)) as client:
            auditor = Tokens(client)["auditor.city"]
            cp = ok(client.post("/api/v1/audit/checkpoints", headers=auditor), 201).json()
            assert cp["hash_alg"] == "sm3" and cp["size"] > end["size"]  # ...but this one stays SM3
            verified = ok(client.get("/api/v1/audit/verify", headers=auditor)).json()
            assert verified["ok"] is True, verified
            jsonl = api_export(client, auditor, "jsonl", upto=cp["size"])
        export = _write(tmp_path / "sm-later.jsonl", jsonl)
        assert accepted(run_verifier(export, write_json(tmp_path / "sm-later.json", cp), logged["public_key"]))
    finally:
        aes.close()

