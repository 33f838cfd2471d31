"""What a requester or a custodian types about a case: checked, encrypted, logged as hash and code.

- case numbers: court, procuratorate and police forms pass; free text, names, ID
  numbers and civil-affairs document numbers are a 422 naming ``case_number``;
- legal bases come from a fixed list (an enum in OpenAPI); free text is a 422;
- stored: no plain case number in ``sealed_requests`` or ``sealed_records``; the
  number reads back from the encrypted envelope; events carry its keyed hash
  (also in ``subjects``, so ``case_number`` filters the log) and the basis's code;
- rows written before migration 0013 (plain case number, free-text basis, a
  pre-0009 plain reason) are encrypted by ``shouhu init``'s upgrade step, which
  a rerun finds nothing left for.
"""

from __future__ import annotations

from typing import Any

import pytest

from access_control import legal_bases
from access_control.sealed import case_number_hash
from archive import sealed_upgrade
from archive.models import SealedRecord
from core.fields import case_number_key, check_case_number
from tests.conftest import household_body, make_id_number, minor_body, run_sql

API = "/api/v1"
GOOD_CASE_NUMBERS = [
    "（2026）苏0706刑初88号", "(2026)苏0706刑初7号", "（2026）苏07刑终3号", "（2026）苏刑申12号",
    "（2025）苏0706执1234号", "（2025）苏0706执恢12号", "（2026）苏0706刑更3号", "（2019）最高法刑核12345678号",
    "（2026）京73民初5号", "（2014）海刑初字第88号", "（２０２６）苏０７０６刑初８８号", "（2026）苏0706刑初 88 号",
    "连海检刑诉〔2026〕12号", "京朝检未检刑不诉［2023］Z12号", "连公（海）立字〔2026〕1234号", "海公(刑)立字[2026]88号",
    "A320706510000202611001",
]
BAD_CASE_NUMBERS = [
    "张三", "（2026）张三1号", "审理案件需要", "2026苏0706刑初88号", "（2026）苏0706刑初号", "连民发〔2026〕12号",
    "320706201503010377", "（2026）1234号", "（2026）苏0706刑初88号补充说明", "李四〔2026〕1号", "",
]


@pytest.mark.parametrize("value", GOOD_CASE_NUMBERS)
def test_real_case_number_forms_pass(value):
    assert check_case_number(value) == value.strip()


@pytest.mark.parametrize("value", BAD_CASE_NUMBERS)
def test_free_text_names_and_other_numbers_are_not_case_numbers(value):
    with pytest.raises(ValueError, match="案号格式不正确"):
        check_case_number(value)


def test_one_case_in_its_different_spellings_hashes_alike():
    assert case_number_key("（2026）苏0706刑初88号") == case_number_key("(2026) 苏0706刑初88号") == \
        case_number_key("（２０２６）苏０７０６刑初８８号")
    assert case_number_key("连海检刑诉〔2026〕12号") == case_number_key("连海检刑诉[2026]12号")
    assert case_number_key("（2026）苏0706刑初88号") != case_number_key("（2026）苏0706刑初89号")


def application(case_number: str = "（2026）苏0706刑初88号", legal_basis: str = "cpl_286_judicial") -> dict[str, Any]:
    return {"case_number": case_number, "legal_basis": legal_basis, "purpose": "审理案件需要",
            "subject": {"name": "测试童", "id_number": make_id_number(birth="20090101")}}


def fields_of(r: Any) -> list[str]:
    return [f["field"] for f in r.json()["error"]["details"]["fields"]]


def sealable_minor(client: Any, tokens: Any) -> str:
    cw = tokens["caseworker.haizhou"]
    hid = client.post(f"{API}/households", json=household_body(), headers=cw).json()["id"]
    r = client.post(f"{API}/minors", json=minor_body(hid, id_number=make_id_number(birth="20090101"),
                                                     birth_date="2009-01-01"), headers=cw)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_bad_case_numbers_and_free_text_bases_are_422_naming_the_field(client, tokens):
    court, cust = tokens["court.haizhou"], tokens["custodian.city"]
    mid = sealable_minor(client, tokens)
    for bad in ("被告人张三", "<script>", "（2026）张三1号"):
        r = client.post(f"{API}/sealed-requests", json=application(case_number=bad), headers=court)
        assert r.status_code == 422 and fields_of(r) == ["case_number"], r.text
        assert bad not in r.text  # never echoed
        r = client.post(f"{API}/records/{mid}/seal", json={"legal_basis": "cpl_286_1", "case_number": bad},
                        headers=cust)
        assert r.status_code == 422 and fields_of(r) == ["case_number"], r.text
    # free text, a basis for another use, the migration-only code, nothing
    for basis in ("《中华人民共和国刑事诉讼法》第二百八十六条", "cpl_286_1", "legacy", ""):
        r = client.post(f"{API}/sealed-requests", json=application(legal_basis=basis), headers=court)
        assert r.status_code == 422 and fields_of(r) == ["legal_basis"], r.text
    r = client.post(f"{API}/records/{mid}/seal", json={"legal_basis": "cpl_286_judicial",
                                                       "case_number": "（2026）苏0706刑初1号"}, headers=cust)
    assert r.status_code == 422 and fields_of(r) == ["legal_basis"], r.text
    r = client.post(f"{API}/records/{mid}/unseal", json={"cause": "new_crime", "legal_basis": "发现漏罪"}, headers=cust)
    assert r.status_code == 422 and fields_of(r) == ["legal_basis"], r.text


def test_the_bases_are_an_enum_in_openapi(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["SealedRequestCreate"]["properties"]["legal_basis"]["enum"] == list(legal_bases.codes("apply"))
    assert schemas["SealBody"]["properties"]["legal_basis"]["enum"] == list(legal_bases.codes("seal"))
    assert schemas["UnsealBody"]["properties"]["legal_basis"]["enum"] == list(legal_bases.codes("unseal"))
    assert "legacy" not in legal_bases.codes("apply") + legal_bases.codes("seal") + legal_bases.codes("unseal")


def test_case_numbers_are_stored_encrypted_and_logged_as_hash_and_code(client, tokens, rt):
    court, cust, auditor = tokens["court.haizhou"], tokens["custodian.city"], tokens["auditor.city"]
    mid = sealable_minor(client, tokens)
    r = client.post(f"{API}/records/{mid}/seal", json={"legal_basis": "measures_2022_4",
                                                       "case_number": "连海检刑诉〔2026〕12号"}, headers=cust)
    assert r.status_code == 200, r.text
    r = client.post(f"{API}/sealed-requests", json=application("（2026）苏0706刑初88号"), headers=court)
    rid = r.json()["id"]

    ((plain, hashed, basis, payload),) = run_sql(
        rt, "SELECT case_number, case_number_hash, legal_basis, payload FROM sealed_requests WHERE id = :i", i=rid)
    assert (plain, hashed, basis) == (None, case_number_hash(rt.ring, "(2026)苏0706刑初88号"), "cpl_286_judicial")
    assert "苏0706刑初88".encode() not in bytes(payload)
    shown = client.get(f"{API}/sealed-requests/{rid}", headers=court).json()
    assert (shown["case_number"], shown["legal_basis"]) == ("（2026）苏0706刑初88号", "cpl_286_judicial")
    assert shown["legal_basis_label"] == legal_bases.label("cpl_286_judicial")
    ((plain, hashed, basis),) = run_sql(
        rt, "SELECT case_number, case_number_hash, legal_basis FROM sealed_records WHERE record_id = :i", i=mid)
    assert (plain, hashed, basis) == (None, case_number_hash(rt.ring, "连海检刑诉[2026]12号"), "measures_2022_4")
    with rt.db.session() as s:
        reg = s.get(SealedRecord, mid)
        assert reg is not None and rt.sealing.seal_case(s, reg) == {"case_number": "连海检刑诉〔2026〕12号"}

    # The log: codes and keyed hashes only; the case's hash is indexed, so the number finds its events.
    r = client.get(f"{API}/audit/events", params={"case_number": "（2026）苏0706刑初88号",
                                                  "action": "sealed:request:create"}, headers=auditor)
    (applied,) = r.json()["items"]
    assert applied["action"] == "sealed:request:create"
    assert applied["details"] == {"case_number_hash": hashed_apply(rt), "legal_basis": "cpl_286_judicial"}
    assert hashed_apply(rt) in applied["subjects"]
    r = client.post(f"{API}/audit/events/search", json={"case_number": "连海检刑诉[2026]12号"}, headers=auditor)
    # (the auditor's look-up is itself an event about the case, as a look-up by subject is about the person)
    assert [e["action"] for e in r.json()["items"]] == ["audit:events:read", "sealed:record:seal"]
    # ... together with a subject: both must match.
    idn = client.get(f"{API}/sealed-requests/{rid}", headers=court).json()["subject"]["id_number"]
    r = client.post(f"{API}/audit/events/search", json={"case_number": "（2026）苏0706刑初88号", "subject": idn},
                    headers=auditor)
    assert [e["action"] for e in r.json()["items"]] == ["audit:events:read", "sealed:request:read",
                                                         "sealed:request:read", "sealed:request:create"]
    r = client.post(f"{API}/audit/events/search", json={"case_number": "（2026）苏0706刑初99号", "subject": idn},
                    headers=auditor)
    assert [e["action"] for e in r.json()["items"]] == ["audit:events:read"]
    # The auditor's own search is logged with the hash, never the number.
    (search,) = [e for e in client.get(f"{API}/audit/events", params={"action": "audit:events:read", "limit": 1},
                                       headers=auditor).json()["items"]]
    assert "苏0706" not in str(search)


def hashed_apply(rt: Any) -> str:
    return case_number_hash(rt.ring, "（2026）苏0706刑初88号")


def test_rows_from_before_0013_are_encrypted_by_the_upgrade_step(client, tokens, rt):
    court, cust = tokens["court.haizhou"], tokens["custodian.city"]
    mid = sealable_minor(client, tokens)
    assert client.post(f"{API}/records/{mid}/seal", json={"legal_basis": "cpl_286_1",
                                                          "case_number": "（2026）苏0706刑初5号"},
                       headers=cust).status_code == 200
    assert client.post(f"{API}/records/{mid}/unseal", json={"cause": "new_crime", "legal_basis": "spp_rules_485"},
                       headers=cust).status_code == 200
    rid = client.post(f"{API}/sealed-requests", json=application(), headers=court).json()["id"]
    assert client.post(f"{API}/sealed-requests/{rid}/decision", json={"decision": "deny", "reason": "新理由"},
                       headers=cust).status_code == 200
    # As an archive written before 0013 (and 0009) holds them: plain values, free-text bases.
    old_case, old_basis, old_reason = "(2025)苏0706刑初77号", "旧版自由填写的法律依据", "旧版明文理由"
    run_sql(rt, "UPDATE sealed_requests SET case_number = :c, case_number_hash = NULL, legal_basis = :b, "
                "reasons = NULL, decision_reason = :r WHERE id = :i", c=old_case, b=old_basis, r=old_reason, i=rid)
    run_sql(rt, "UPDATE sealed_records SET case_number = :c, case_number_hash = NULL, case_note = NULL, "
                "case_dek_id = NULL, legal_basis = :b, unseal_basis = :u WHERE record_id = :i",
            c=old_case, b=old_basis, u="发现漏罪", i=mid)
    shown = client.get(f"{API}/sealed-requests/{rid}", headers=court).json()  # still reads meanwhile
    assert (shown["case_number"], shown["legal_basis"], shown["reason"]) == (old_case, old_basis, old_reason)

    done = sealed_upgrade.run(rt.db, rt.vault, rt.ring, rt.sealed)
    assert (done.requests, done.records) == (1, 1)
    ((plain, hashed, basis, reason),) = run_sql(
        rt, "SELECT case_number, case_number_hash, legal_basis, decision_reason FROM sealed_requests WHERE id = :i",
        i=rid)
    assert (plain, hashed, basis, reason) == (None, case_number_hash(rt.ring, old_case), "legacy", None)
    shown = client.get(f"{API}/sealed-requests/{rid}", headers=court).json()
    assert (shown["case_number"], shown["legal_basis"], shown["reason"]) == (old_case, "legacy", old_reason)
    assert shown["legal_basis_label"] == legal_bases.LEGACY.label
    with rt.db.session() as s:
        data = rt.vault.open_json(s, bytes(run_sql(rt, "SELECT payload FROM sealed_requests WHERE id = :i",
                                                   i=rid)[0][0]),
                                  run_sql(rt, "SELECT dek_id FROM sealed_requests WHERE id = :i", i=rid)[0][0],
                                  kind="sealed_request", record_id=rid, version=1)
        assert data["legal_basis_text"] == old_basis and data["case_number"] == old_case
        reg = s.get(SealedRecord, mid)
        assert reg is not None
        assert (reg.case_number, reg.case_number_hash, reg.legal_basis, reg.unseal_basis) == (
            None, case_number_hash(rt.ring, old_case), "legacy", "legacy")
        assert rt.sealing.seal_case(s, reg) == {"case_number": old_case, "legal_basis_text": old_basis,
                                                "unseal_basis_text": "发现漏罪"}
    # The number finds its events from now on; a rerun (and `shouhu init` again) has nothing to do.
    assert not sealed_upgrade.run(rt.db, rt.vault, rt.ring, rt.sealed)
    rt.initialize()
    assert not rt.upgraded
