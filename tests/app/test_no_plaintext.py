"""No personal field is ever stored or logged in plain text.

Distinctive canary values go in through the API, are read, updated and listed;
then every byte the archive wrote (database file, WAL, shared memory, blobs,
logs, and for PostgreSQL a ``pg_dump`` of the database) is searched for them in
UTF-8, UTF-16-LE, UTF-16-BE and GBK, inside zlib/gzip streams too. A positive
control plants canaries in plain text and checks that the same scanner finds
them, so the scan can fail.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable
from pathlib import Path

from tests import leak_support
from tests.conftest import household_body, id_number, minor_body, run_sql
from tests.leak_support import ADDRESS, MEMBER_ID, MEMBER_NAME, MINOR_ID, MINOR_NOTES, PHONE, SCHOOL

# Rare characters that occur nowhere else in the archive, each encodable in GBK.
MINOR_NAME = "龘靐齉鱻"
NOTES = "金丝雀笔记：父母龘靐长期外出"
ADDRESS_2 = "爩鬱路8812号麤苑"
NOTES_2 = "更新后的金丝雀：齾齾龘"
MINOR_NOTES_2 = "鸜鹆更新纪事爩爩"

TEXT_CANARIES = [MINOR_NAME, MEMBER_NAME, ADDRESS, NOTES, MINOR_NOTES, SCHOOL, ADDRESS_2, NOTES_2,
                 MINOR_NOTES_2, PHONE, MINOR_ID, MEMBER_ID]
# An ID number must not appear in digit form either, not even without its check character.
DIGIT_CANARIES = [MINOR_ID[:17], MEMBER_ID[:17]]


# The scanner ----------------------------------------------------------------------


def json_escaped(text: str, *, upper: bool = False) -> bytes:
    """``text`` as JSON writes it with ASCII escapes (``\\u9f98``), as the JSON columns store it."""
    escaped = json.dumps(text)[1:-1]  # ensure_ascii: every non-ASCII character as \uXXXX
    if upper:
        escaped = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), escaped)
    return escaped.encode("ascii")


def needles(canaries: Iterable[str]) -> leak_support.Needles:
    """Every form a canary may take in stored bytes: each encoding, and JSON \\u escapes in both cases."""
    out = []
    for canary in canaries:
        out += leak_support.encoded([canary])
        if not canary.isascii():
            out.append((canary, "json-escape", json_escaped(canary)))
            out.append((canary, "json-escape-upper", json_escaped(canary, upper=True)))
    return out


NEEDLES = needles(TEXT_CANARIES + DIGIT_CANARIES)


def scan_tree(root: Path, needle_list: leak_support.Needles = NEEDLES) -> tuple[leak_support.Hits, list[Path]]:
    return leak_support.scan_tree(root, needle_list)


def scan_dump(dump: bytes, needle_list: leak_support.Needles = NEEDLES) -> leak_support.Hits:
    return leak_support.scan_dump(dump, needle_list)


def pg_dump(database_url: str) -> bytes:
    dump = leak_support.pg_dump(database_url)
    assert b"COPY public.minors" in dump
    return dump


# The test ---------------------------------------------------------------------------


def use_the_archive(client, tokens) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """Create, read, update and list a household and a minor full of canaries."""
    cw = tokens["caseworker.haizhou"]
    body = household_body(
        address=ADDRESS, notes=NOTES,
        members=[{"name": MEMBER_NAME, "relation": "父亲", "id_number": MEMBER_ID, "phone": PHONE,
                  "situation": "外出务工"}],
    )
    r = client.post("/api/v1/households", json=body, headers=cw)
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    r = client.post("/api/v1/minors", headers=cw, json=minor_body(
        hid, name=MINOR_NAME, id_number=MINOR_ID, birth_date="2014-11-29", notes=MINOR_NOTES,
        school=SCHOOL, guardian=MEMBER_NAME, phone=PHONE, categories=[1, 3]))
    assert r.status_code == 201, r.text
    mid = r.json()["id"]

    household = client.get(f"/api/v1/households/{hid}", headers=cw).json()
    assert household["address"] == ADDRESS and household["members"][0]["id_number"] == MEMBER_ID
    minor = client.get(f"/api/v1/minors/{mid}", headers=cw).json()
    assert (minor["name"], minor["id_number"], minor["school"]) == (MINOR_NAME, MINOR_ID, SCHOOL)

    r = client.patch(f"/api/v1/households/{hid}", json={"address": ADDRESS_2, "notes": NOTES_2},
                     headers=cw)
    assert r.status_code == 200 and r.json()["address"] == ADDRESS_2, r.text
    r = client.patch(f"/api/v1/minors/{mid}", json={"notes": MINOR_NOTES_2, "categories": [3]},
                     headers=cw)
    assert r.status_code == 200 and r.json()["notes"] == MINOR_NOTES_2, r.text

    listed = client.get("/api/v1/households", params={"limit": 200}, headers=cw).json()["items"]
    assert any(h["address"] == ADDRESS_2 for h in listed)
    listed = client.get("/api/v1/minors", params={"household_id": hid}, headers=cw).json()["items"]
    assert [m["name"] for m in listed] == [MINOR_NAME]
    # Other people read it too (their reads are logged, with keyed hashes only).
    for user, status in (("village.haizhou", 200), ("caseworker.guannan", 404)):
        assert client.get(f"/api/v1/minors/{mid}", headers=tokens[user]).status_code == status

    # Refused writes carrying the canaries: a duplicate ID number, a bad field.
    r = client.post("/api/v1/minors", headers=cw, json=minor_body(
        hid, name=MINOR_NAME, id_number=MINOR_ID, birth_date="2014-11-29", notes=MINOR_NOTES))
    assert r.status_code == 409
    r = client.post("/api/v1/minors", headers=cw, json=minor_body(
        hid, name=MINOR_NAME, id_number=MINOR_ID, birth_date="2014-11-29", sex=ADDRESS))
    assert r.status_code == 422
    assert MINOR_NAME not in r.text and ADDRESS not in r.text and MINOR_ID not in r.text
    # Query strings are never logged.
    r = client.get("/api/v1/minors", params={"household_id": hid, "q": MINOR_NAME}, headers=cw)
    assert r.status_code == 200
    # Personal data typed into filters and paths: refused or empty answers, and none of it logged
    # (the audit events of these decisions keep only id-shaped values).
    for path, params in (("/api/v1/minors", {"household_id": MINOR_ID}),
                         ("/api/v1/minors", {"household_id": MINOR_NAME}),
                         ("/api/v1/documents", {"kind": MINOR_NAME, "subject_id": MINOR_ID}),
                         ("/api/v1/search", {"q": MINOR_NAME, "kind": MEMBER_NAME}),
                         ("/api/v1/search", {"q": MINOR_ID}),
                         (f"/api/v1/minors/{MINOR_ID}", {}),
                         (f"/api/v1/households/{MEMBER_NAME}", {}),
                         (f"/api/v1/households/{hid}/visits", {"q": ADDRESS})):
        r = client.get(path, params=params, headers=cw)
        assert r.status_code in (200, 404, 422), (path, r.status_code, r.text)
        if r.status_code != 200:  # a refusal never echoes what was typed
            assert MINOR_ID not in r.text and MEMBER_NAME not in r.text, path
    auditor = tokens["auditor.city"]
    r = client.get("/api/v1/audit/events", params={"actor": MINOR_NAME, "resource": MINOR_ID}, headers=auditor)
    assert r.status_code == 200, r.text
    return hid, mid


def test_no_personal_field_is_stored_or_logged_in_plain_text(client, tokens, rt, settings):
    hid, _ = use_the_archive(client, tokens)
    data_dir: Path = settings.data_dir
    postgres = rt.db.dialect == "postgresql"

    hits, files = scan_tree(data_dir)
    names = {p.relative_to(data_dir).as_posix() for p in files}
    if not postgres:
        assert "shouhu.db" in names  # the scan saw the database (and its WAL, if any)
    log_file = data_dir / "logs" / "shouhu.log"
    assert log_file.is_file() and log_file in files
    log = log_file.read_text(encoding="utf-8")
    assert f"PATCH /api/v1/households/{hid} 200" in log  # this app's log, with our requests
    assert hits == set(), hits
    for canary in TEXT_CANARIES + DIGIT_CANARIES:
        assert canary not in log

    if postgres:
        dump = pg_dump(str(settings.database_url))
        assert scan_dump(dump) == set()

    # Positive control: canaries planted in plain text are found by the same scanner.
    planted = needles(["探针龘靐齉鱻"])
    for enc in leak_support.ENCODINGS:
        (data_dir / f"planted-{enc}.txt").write_bytes("前缀探针龘靐齉鱻后缀".encode(enc))
    (data_dir / "planted.z").write_bytes(b"junk" + zlib.compress(MINOR_ID.encode()) + b"junk")
    (data_dir / "planted.json").write_bytes(b'{"a": "' + json_escaped("前缀探针龘靐齉鱻") + b'"}')
    (data_dir / "planted-upper.json").write_bytes(json_escaped("探针龘靐齉鱻后缀", upper=True))
    hits, _ = scan_tree(data_dir, planted + needles([MINOR_ID]))
    forms = (*leak_support.ENCODINGS, "json-escape", "json-escape-upper")
    assert {(c, enc) for c, enc, _ in hits} >= {("探针龘靐齉鱻", enc) for enc in forms}
    assert (MINOR_ID, "utf-8", "planted.z (inflated)") in hits

    # ... and inside the database, written in plain text the way a bug would.
    run_sql(rt, "UPDATE regions SET name = :n WHERE code = '320706001001'", n=MINOR_NAME)
    if postgres:
        run_sql(rt, "UPDATE households SET payload = :p WHERE id = :i", p=ADDRESS_2.encode(), i=hid)
        hits = scan_dump(pg_dump(str(settings.database_url)))
        assert (MINOR_NAME, "utf-8", "pg_dump") in hits
        assert (ADDRESS_2, "utf-8", "pg_dump bytea") in hits
    else:
        for f in data_dir.glob("planted*"):
            f.unlink()
        hits, _ = scan_tree(data_dir)
        assert {c for c, _, _ in hits} == {MINOR_NAME}


def sealed_minor(client, tokens, case_number: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A minor in a new household, sealed by the custodian under ``case_number``: (minor id, ID number)."""
    api = "/api/v1"
    cw, cust = tokens["caseworker.haizhou"], tokens["custodian.city"]
    hid = client.post(f"{api}/households", json=household_body(), headers=cw).json()["id"]
    subject_id = id_number("320706", "20090101", "417")
    r = client.post(f"{api}/minors", json=minor_body(hid, id_number=subject_id, birth_date="2009-01-01"), headers=cw)
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    r = client.post(f"{api}/records/{mid}/seal", json={"legal_basis": "cpl_286_1", "case_number": case_number},
                    headers=cust)
    assert r.status_code == 200, r.text
    return mid, subject_id


# Sealed-record reasons ------------------------------------------------------------------

# Free text a custodian types when deciding, revoking or unsealing: it may name people.
DENY_REASON = "驳回龘靐齉：未附鱻麤爨决定书"
APPROVE_REASON = "批准灪爩鬱：附齾鸜鹆立案书"
CONFLICT_REASON = "重复审批龘齾：应予拒绝"
REVOKE_REASON = "撤销鬱麤灪：案件已审结"
UNSEAL_REASON = "解封爨齉鸜：又犯新罪并罚六年"
REASON_CANARIES = [DENY_REASON, APPROVE_REASON, CONFLICT_REASON, REVOKE_REASON, UNSEAL_REASON]


def test_sealed_record_reasons_are_never_stored_or_logged_in_plain_text(client, tokens, rt, settings):
    api = "/api/v1"
    court, cust = tokens["court.haizhou"], tokens["custodian.city"]
    mid, subject_id = sealed_minor(client, tokens, "(2026)苏0706刑初7号")
    application = {"case_number": "(2026)苏0706刑初8号", "legal_basis": "cpl_286_judicial", "purpose": "审理案件需要",
                   "subject": {"name": "测试童", "id_number": subject_id}}

    def decide(rid: str, decision: str, reason: str, status: int = 200) -> None:
        r = client.post(f"{api}/sealed-requests/{rid}/decision", json={"decision": decision, "reason": reason},
                        headers=cust)
        assert r.status_code == status, r.text

    denied = client.post(f"{api}/sealed-requests", json=application, headers=court).json()["id"]
    decide(denied, "deny", DENY_REASON)
    granted = client.post(f"{api}/sealed-requests", json=application, headers=court).json()["id"]
    decide(granted, "approve", APPROVE_REASON)
    decide(granted, "deny", CONFLICT_REASON, status=409)  # refused: its 'error' event is logged
    r = client.post(f"{api}/sealed-requests/{granted}/revoke", json={"reason": REVOKE_REASON}, headers=cust)
    assert r.status_code == 200, r.text
    r = client.post(f"{api}/records/{mid}/unseal", headers=cust,
                    json={"cause": "new_crime", "legal_basis": "spp_rules_485", "reason": UNSEAL_REASON})
    assert r.status_code == 200, r.text
    # The reasons went in and read back (requester and custodian, one by one and listed).
    for headers in (court, cust):
        assert client.get(f"{api}/sealed-requests/{denied}", headers=headers).json()["reason"] == DENY_REASON
        shown = client.get(f"{api}/sealed-requests/{granted}", headers=headers).json()
        assert (shown["reason"], shown["revocation_reason"]) == (APPROVE_REASON, REVOKE_REASON)
        listed = client.get(f"{api}/sealed-requests", headers=headers).json()["items"]
        assert {i["reason"] for i in listed} == {DENY_REASON, APPROVE_REASON}
    r = client.get(f"{api}/audit/events", params={"action": "sealed:request:decide", "limit": 200},
                   headers=tokens["auditor.city"])
    assert r.status_code == 200 and all("reason_hash" in e["details"] for e in r.json()["items"])

    reason_needles = needles(REASON_CANARIES)
    hits, files = scan_tree(settings.data_dir, reason_needles)
    assert files and hits == set(), hits
    if rt.db.dialect == "postgresql":
        assert scan_dump(pg_dump(str(settings.database_url)), reason_needles) == set()
    # Positive control: the same needles find a reason written the way a pre-0009 archive kept it.
    run_sql(rt, "UPDATE sealed_requests SET decision_reason = :r WHERE id = :i", r=DENY_REASON, i=denied)
    if rt.db.dialect == "postgresql":
        hits = scan_dump(pg_dump(str(settings.database_url)), reason_needles)
    else:
        hits, _ = scan_tree(settings.data_dir, reason_needles)
    assert DENY_REASON in {c for c, _, _ in hits}


# What a requester and a custodian type about a case ------------------------------------

# Case numbers are in a strict format; these serials occur nowhere else.
APPLY_CASE = "（2026）苏0706刑初91827364号"
SEAL_CASE = "连海检刑诉〔2026〕73645291号"
PURPOSE = "查询用途金丝雀：审理鸜鹆齾案需要"
SUBJECT_NAME = "齾鸜鹆"
CASE_CANARIES = [APPLY_CASE, SEAL_CASE, PURPOSE, SUBJECT_NAME]


def test_requester_free_text_is_never_stored_or_logged_in_plain_text(client, tokens, rt, settings):
    """Case numbers, purposes and legal bases of applications, seals and unseals: encrypted, and the
    log keeps the basis's code and the case number's keyed hash only (in no form: UTF-8, GBK,
    UTF-16, JSON escapes)."""
    api = "/api/v1"
    court, cust = tokens["court.haizhou"], tokens["custodian.city"]
    mid, subject_id = sealed_minor(client, tokens, SEAL_CASE)
    application = {"case_number": APPLY_CASE, "legal_basis": "cpl_286_judicial", "purpose": PURPOSE,
                   "subject": {"name": SUBJECT_NAME, "id_number": subject_id}}
    rid = client.post(f"{api}/sealed-requests", json=application, headers=court).json()["id"]
    r = client.post(f"{api}/sealed-requests/{rid}/decision", json={"decision": "approve", "reason": "符合规定"},
                    headers=cust)
    assert r.status_code == 200, r.text
    shown = client.get(f"{api}/sealed-requests/{rid}", headers=court).json()
    assert (shown["case_number"], shown["legal_basis"], shown["purpose"]) == (APPLY_CASE, "cpl_286_judicial",
                                                                              PURPOSE)
    r = client.post(f"{api}/records/{mid}/unseal", headers=cust,
                    json={"cause": "new_crime", "legal_basis": "spp_rules_485"})
    assert r.status_code == 200, r.text
    case_needles = needles(CASE_CANARIES)
    hits, files = scan_tree(settings.data_dir, case_needles)
    assert files and hits == set(), sorted(hits)
    if rt.db.dialect == "postgresql":
        assert scan_dump(pg_dump(str(settings.database_url)), case_needles) == set()
    # ... and an auditor still finds every event about a case by its number (matched by keyed hash).
    r = client.post(f"{api}/audit/events/search", json={"case_number": "(2026)苏0706刑初91827364号", "limit": 200},
                    headers=tokens["auditor.city"])
    assert r.status_code == 200, r.text
    assert {e["action"] for e in r.json()["items"]} >= {"sealed:request:create", "sealed:request:decide"}
    r = client.get(f"{api}/audit/events", params={"case_number": SEAL_CASE}, headers=tokens["auditor.city"])
    assert {e["action"] for e in r.json()["items"]} >= {"sealed:record:seal", "sealed:record:unseal"}, r.text

