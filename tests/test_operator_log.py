"""The log says who did it: operator commands, ``--as``, and a minor's creation.

- ``shouhu print --as USER`` is decided by policy as USER but logged with the
  operator (``system:cli:<OS user>``) as the actor and USER as ``on_behalf_of``;
  such events are format version 2, and exports of them still verify with the
  standalone script (old events keep hashing as version 1).
- Every operator command names the OS account that ran it.
- Creating a minor logs the new minor's id as the resource, so "what happened to
  minor X" starts with its creation.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from audit_support import last_seq
from cli_support import InProcess
from conftest import create_household_and_minor, household_body, run_sql
from test_audit_export import accepted, run_verifier, write_json

from access_control.audit import CANONICAL_KEYS, canonical_bytes, event_hash
from access_control.identity import os_user
from runtime import Runtime

VILLAGE = "320706001001"
OPERATOR = f"system:cli:{os_user()}"


@pytest.fixture
def shouhu(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> InProcess:
    return InProcess(rt.settings, monkeypatch)


def events_since(rt: Runtime, seq: int) -> list[dict[str, Any]]:
    rows = run_sql(rt, "SELECT seq, actor, actor_id, roles, action, outcome, resource_kind, resource_id, reason, "
                       "on_behalf_of, details FROM audit_events WHERE seq > :s ORDER BY seq", s=seq)
    out = [dict(r._mapping) for r in rows]
    for ev in out:
        if isinstance(ev["details"], str):
            ev["details"] = json.loads(ev["details"])
    return out



# `shouhu print` renders in this process here; WeasyPrint leaves its colour profile file to the
# garbage collector.
renders_in_process = pytest.mark.filterwarnings("ignore::ResourceWarning",
                                                "ignore::pytest.PytestUnraisableExceptionWarning")


@renders_in_process
def test_print_as_a_user_is_logged_as_the_operator_on_behalf_of_that_user(rt, client, tokens, shouhu, tmp_path):
    village = tokens["village.haizhou"]
    for _ in range(2):
        r = client.post("/api/v1/households", json=household_body(VILLAGE), headers=village)
        assert r.status_code == 201, r.text
    before = last_seq(rt)
    out = tmp_path / "batch.pdf"
    shouhu("print", "--kind", "household_file", "--region", VILLAGE, "--out", str(out), "--as", "village.haizhou")
    assert out.read_bytes().startswith(b"%PDF")

    events = events_since(rt, before)
    assert events, "the batch read left no event"
    assert {e["action"] for e in events} >= {"documents:batch:print"}
    for ev in events:
        # The operator did it (and holds no role); the user it was done for is named beside.
        assert (ev["actor"], ev["actor_id"], ev["roles"]) == (OPERATOR, "system", ""), ev
        assert ev["on_behalf_of"] == "village.haizhou", ev
    read = next(e for e in events if e["reason"] == "print:records_read")
    assert read["details"]["count"] == 2 and read["outcome"] == "allowed"

    # An auditor asking what village.haizhou did finds the batch read too.
    r = client.get("/api/v1/audit/events", params={"actor": "village.haizhou", "action": "documents:batch:print"},
                   headers=tokens["auditor.city"])
    assert r.status_code == 200, r.text
    found = [e for e in r.json()["items"] if e["reason"] == "print:records_read"]
    assert found and found[0]["actor"] == OPERATOR and found[0]["on_behalf_of"] == "village.haizhou"

    with rt.db.read_session() as s:
        assert rt.audit.verify(s).ok


def test_print_as_an_unknown_or_disabled_user_is_a_logged_refusal(rt, client, tokens, shouhu, tmp_path):
    before = last_seq(rt)
    result = shouhu("print", "--kind", "household_file", "--region", VILLAGE, "--out", str(tmp_path / "x.pdf"),
                    "--as", "nobody.here", ok=False)
    assert "没有用户" in result.output
    (ev,) = events_since(rt, before)
    assert (ev["actor"], ev["outcome"], ev["reason"]) == (OPERATOR, "denied", "record:not_found")
    assert ev["details"] == {"username_hash": rt.ring.keyed_hash("login-throttle", "nobody.here")}
    assert "nobody" not in json.dumps(ev, default=str)
    assert not (tmp_path / "x.pdf").exists()


@renders_in_process
def test_version_2_events_export_and_verify_without_shouhu(rt, client, tokens, shouhu, tmp_path):
    """Events acting for someone carry on_behalf_of (v2); all others hash exactly as before (v1)."""
    r = client.post("/api/v1/households", json=household_body(VILLAGE), headers=tokens["village.haizhou"])
    assert r.status_code == 201, r.text
    shouhu("print", "--kind", "household_file", "--region", VILLAGE, "--out", str(tmp_path / "b.pdf"),
           "--as", "village.haizhou")
    auditor = tokens["auditor.city"]
    cp = client.post("/api/v1/audit/checkpoints", headers=auditor)
    assert cp.status_code == 201, cp.text
    checkpoint = cp.json()
    key = client.get("/api/v1/audit/public-key", headers=auditor).json()["public_key"]
    r = client.get("/api/v1/audit/export", params={"format": "jsonl", "upto": checkpoint["size"]}, headers=auditor)
    assert r.status_code == 200
    lines = [json.loads(x) for x in r.content.split(b"\n")[:-1]]
    v2 = [e for e in lines if e["v"] == 2]
    assert v2 and all(e["on_behalf_of"] == "village.haizhou" and set(e) == {*CANONICAL_KEYS, "on_behalf_of"}
                      for e in v2)
    v1 = [e for e in lines if e["v"] == 1]
    assert v1 and all(set(e) == set(CANONICAL_KEYS) for e in v1)
    # A version-1 event's hash is the documented one over its 16 keys, as before this field existed.
    ev = v1[0]
    body = json.dumps(ev, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    assert canonical_bytes({**ev, "on_behalf_of": None}) == body
    assert event_hash("sha256", {**ev, "on_behalf_of": None}) == hashlib.sha256(b"\x00" + body).hexdigest()

    export = tmp_path / "export.jsonl"
    export.write_bytes(r.content)
    proc = run_verifier(export, write_json(tmp_path / "cp.json", checkpoint), key)
    assert accepted(proc), proc.stderr
    # Dropping on_behalf_of from a v2 line (a forged "as himself") breaks the verification.
    forged = tmp_path / "forged.jsonl"
    text = r.content.decode()
    victim = json.dumps(v2[0], ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    cut = {k: v for k, v in v2[0].items() if k != "on_behalf_of"} | {"v": 1}
    forged.write_text(text.replace(victim, json.dumps(cut, ensure_ascii=False, sort_keys=True,
                                                      separators=(",", ":"))), encoding="utf-8")
    assert not accepted(run_verifier(forged, tmp_path / "cp.json", key))
    # CSV carries the field in its last column, and re-hashes to the same hashes.
    csv = client.get("/api/v1/audit/export", params={"format": "csv", "upto": checkpoint["size"]},
                     headers=auditor).content.decode()
    assert csv.splitlines()[0].endswith(",hash,on_behalf_of")
    assert sum(1 for row in csv.splitlines() if row.endswith(",village.haizhou")) == len(v2)


def test_operator_commands_name_the_os_account(rt, shouhu):
    before = last_seq(rt)
    shouhu("users", "disable", "caseworker.guannan")
    (ev,) = events_since(rt, before)
    assert ev["actor"] == OPERATOR and ev["actor"].startswith("system:cli:") and ev["actor"] != "system:cli"
    assert ev["on_behalf_of"] is None  # acting for nobody: a version-1 event


def test_os_user_is_an_id_safe_name(monkeypatch):
    import getpass

    monkeypatch.setattr(getpass, "getuser", lambda: "李 四/../x")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", os_user())

    def missing() -> str:
        raise KeyError("no passwd entry")

    monkeypatch.setattr(getpass, "getuser", missing)
    assert os_user().startswith("uid")


def test_creating_a_minor_logs_the_new_minor_as_the_resource(rt, client, tokens):
    cw = tokens["caseworker.haizhou"]
    before = last_seq(rt)
    household, minor = create_household_and_minor(client, cw)
    created = [e for e in events_since(rt, before) if e["action"] == "archive:minor:create"]
    assert [(e["outcome"], e["resource_kind"], e["resource_id"]) for e in created] == [("allowed", "minor", minor)]
    assert created[0]["details"] == {"household_id": household}
    # "What happened to minor X" (by resource id) starts with its creation.
    r = client.get("/api/v1/audit/events", params={"resource": minor}, headers=tokens["auditor.city"])
    assert r.status_code == 200, r.text
    assert [e["action"] for e in r.json()["items"]][-1] == "archive:minor:create"


def test_the_verifier_script_refuses_an_unknown_format_version(tmp_path: Path, rt, client, tokens):
    auditor = tokens["auditor.city"]
    checkpoint = client.post("/api/v1/audit/checkpoints", headers=auditor).json()
    key = client.get("/api/v1/audit/public-key", headers=auditor).json()["public_key"]
    data = client.get("/api/v1/audit/export", params={"upto": checkpoint["size"]}, headers=auditor).content
    export = tmp_path / "e.jsonl"
    export.write_bytes(data.replace(b'"v":1', b'"v":9', 1))
    proc = run_verifier(export, write_json(tmp_path / "cp.json", checkpoint), key)
    assert not accepted(proc) and "unknown format version" in proc.stderr
