"""A document names its subject and no one else (issue 13, part 3; docs/documents.md, "Particulars").

The subject's particulars (name, sex, birth date or age, ID number, address; for a
household file its members, minors and address) come from the record when a document
is issued, previewed or corrected. A client-supplied value that differs is a 422 naming
the field (``fields.minor_name``); a value left out is filled from the record.
"""

from __future__ import annotations

import io
from typing import Any

import pypdf

from archive.prefill import PARTICULARS
from doc_templates.kinds import KINDS
from tests.conftest import Tokens, household_body, make_id_number, minor_body, run_sql

API = "/api/v1"
CW = "caseworker.haizhou"
SUBJECT_NAME, OTHER_NAME = "甲本童", "乙他童"


def pdf_text(data: bytes) -> str:
    return "".join("".join((p.extract_text() or "").split()) for p in pypdf.PdfReader(io.BytesIO(data)).pages)


def minor(client: Any, headers: dict[str, str], name: str, *, address: str, birth: str = "2015-03-01",
          sex: str = "male") -> tuple[str, str, str]:
    r = client.post(f"{API}/households", json=household_body(address=address), headers=headers)
    assert r.status_code == 201, r.text
    hh = r.json()["id"]
    idn = make_id_number(birth=birth.replace("-", ""), male=sex == "male")
    r = client.post(f"{API}/minors", json=minor_body(hh, name=name, id_number=idn, birth_date=birth, sex=sex),
                    headers=headers)
    assert r.status_code == 201, r.text
    return hh, r.json()["id"], idn


def without_particulars(kind: str) -> dict[str, Any]:
    """The kind's example with the subject's particulars left out (the record fills them in)."""
    return {k: v for k, v in KINDS[kind].example.items() if k not in PARTICULARS[kind]}


def wrong_fields(r: Any) -> list[str]:
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_input"
    return [f["field"] for f in r.json()["error"]["details"]["fields"]]


def documents(rt: Any) -> int:
    return int(run_sql(rt, "SELECT count(*) FROM documents")[0][0])


def test_a_letter_about_a_minor_names_that_minor_and_no_other_child(client, rt):
    cw = Tokens(client)[CW]
    _hh, a, a_idn = minor(client, cw, SUBJECT_NAME, address="幸福村3组12号")
    minor(client, cw, OTHER_NAME, address="幸福村5组1号", sex="female")
    base = without_particulars("referral_notice")
    before = documents(rt)

    # Another child's name on a letter filed under A: refused, the field named, nothing stored.
    body = {"kind": "referral_notice", "subject_id": a, "fields": {**base, "minor_name": OTHER_NAME}}
    assert wrong_fields(client.post(f"{API}/documents", json=body, headers=cw)) == ["fields.minor_name"]
    assert wrong_fields(client.post(f"{API}/documents/preview", json=body, headers=cw)) == ["fields.minor_name"]
    wrong = {**base, "minor_name": OTHER_NAME, "minor_sex": "女", "minor_age": 3, "minor_address": "幸福村5组1号"}
    r = client.post(f"{API}/documents", json={"kind": "referral_notice", "subject_id": a, "fields": wrong},
                    headers=cw)
    assert sorted(wrong_fields(r)) == ["fields.minor_address", "fields.minor_age", "fields.minor_name",
                                       "fields.minor_sex"]
    message = r.json()["error"]["details"]["fields"][0]["message"]
    assert OTHER_NAME not in message and SUBJECT_NAME not in message  # never echoes personal data
    assert documents(rt) == before

    # Left out: filled in from the record (and printed).
    r = client.post(f"{API}/documents", json={"kind": "referral_notice", "subject_id": a, "fields": base},
                    headers=cw)
    assert r.status_code == 201, r.text
    doc = r.json()["id"]
    text = pdf_text(client.get(f"{API}/documents/{doc}/pdf", headers=cw).content)
    assert SUBJECT_NAME in text and OTHER_NAME not in text and "幸福村3组12号" in text
    # The record's own values may be sent as they are.
    prefill = client.get(f"{API}/document-kinds/referral_notice/prefill", params={"subject_id": a}, headers=cw)
    same = {**base, **{k: prefill.json()["fields"][k] for k in PARTICULARS["referral_notice"]}}
    r = client.post(f"{API}/documents", json={"kind": "referral_notice", "subject_id": a, "fields": same},
                    headers=cw)
    assert r.status_code == 201, r.text

    # Corrections are held to the record too.
    r = client.post(f"{API}/documents/{doc}/versions", headers=cw,
                    json={"fields": {**base, "minor_name": OTHER_NAME}, "reason": "更正姓名"})
    assert wrong_fields(r) == ["fields.minor_name"]
    r = client.post(f"{API}/documents/{doc}/versions", headers=cw,
                    json={"fields": {**base, "contact": "李更正"}, "reason": "更正联系人"})
    assert r.status_code == 201, r.text
    text = pdf_text(client.get(f"{API}/documents/{doc}/pdf", headers=cw).content)
    assert SUBJECT_NAME in text and "李更正" in text

    # Other kinds about a minor: the ID number, the student's name.
    fields = {**without_particulars("guardianship_designation"), "minor_id_number": make_id_number()}
    r = client.post(f"{API}/documents", json={"kind": "guardianship_designation", "subject_id": a, "fields": fields},
                    headers=cw)
    assert wrong_fields(r) == ["fields.minor_id_number"]
    fields = {**without_particulars("dropout_notice"), "student_name": OTHER_NAME}
    r = client.post(f"{API}/documents", json={"kind": "dropout_notice", "subject_id": a, "fields": fields},
                    headers=Tokens(client)["school.haizhou"])  # the school issues it (policy.KIND_ISSUER_ORG_TYPES)
    assert wrong_fields(r) == ["fields.student_name"]
    fields = {**without_particulars("minor_file"), "birth_date": "2014-01-01", "id_number": a_idn}
    r = client.post(f"{API}/documents", json={"kind": "minor_file", "subject_id": a, "fields": fields}, headers=cw)
    assert wrong_fields(r) == ["fields.birth_date"]


def test_a_household_file_lists_the_household_as_recorded(client, rt):
    cw = Tokens(client)[CW]
    hh, _a, _ = minor(client, cw, SUBJECT_NAME, address="幸福村3组12号")
    base = without_particulars("household_file")
    prefill = client.get(f"{API}/document-kinds/household_file/prefill", params={"subject_id": hh}, headers=cw)
    recorded = prefill.json()["fields"]
    for field, value in (
        ("address", "幸福村5组1号"),
        ("members", [*recorded["members"], {"name": "外人", "relation": "邻居"}]),
        ("minors", [{"name": OTHER_NAME, "sex": "女", "birth_date": "2016-05-05", "categories": [3]}]),
        ("minors", [*recorded["minors"], {"name": OTHER_NAME, "sex": "女", "birth_date": "2016-05-05",
                                          "categories": [3]}]),
    ):
        r = client.post(f"{API}/documents", json={"kind": "household_file", "subject_id": hh,
                                                  "fields": {**base, field: value}}, headers=cw)
        assert wrong_fields(r) == [f"fields.{field}"], field
    r = client.post(f"{API}/documents", json={"kind": "household_file", "subject_id": hh, "fields": base},
                    headers=cw)
    assert r.status_code == 201, r.text
    text = pdf_text(client.get(f"{API}/documents/{r.json()['id']}/pdf", headers=cw).content)
    assert SUBJECT_NAME in text and OTHER_NAME not in text and "外人" not in text


def test_the_particulars_table_names_fields_of_every_kind_about_a_record():
    for name, kind in KINDS.items():
        table = PARTICULARS.get(name, {})
        if kind.subject in ("minor", "household"):
            assert table, name
        else:
            assert not table, name
        assert set(table) <= set(kind.schema.model_fields), name


# A document is issued complete (issue 22, part 2) ---------------------------------------------


def test_a_document_with_a_field_left_to_fill_is_not_issued_and_the_field_is_named(client, rt):
    """The prefill marks what the record cannot tell as （待填写）; a clerk who sends it as it is gets a
    422 naming each such field, and nothing is stored, numbered or corrected."""
    cw = Tokens(client)[CW]
    hh, _mid, _idn = minor(client, cw, SUBJECT_NAME, address="幸福村3组12号")
    fill = client.get(f"{API}/document-kinds/household_file/prefill", params={"subject_id": hh}, headers=cw)
    assert fill.status_code == 200, fill.text
    fields = fill.json()["fields"]
    before = documents(rt)
    r = client.post(f"{API}/documents", json={"kind": "household_file", "subject_id": hh, "fields": fields},
                    headers=cw)
    assert sorted(wrong_fields(r)) == ["fields.assistance", "fields.village_opinion"]
    assert "待填写" in r.json()["error"]["message"]
    # One placeholder left inside a longer text, in a list: named with its place.
    minor_fields = {**without_particulars("minor_file"), "measures": ["入户走访", "（待填写）"]}
    r = client.post(f"{API}/documents", json={"kind": "minor_file", "subject_id": _mid, "fields": minor_fields},
                    headers=cw)
    assert wrong_fields(r) == ["fields.measures.1"]
    assert documents(rt) == before

    done = {**fields, "assistance": "低保", "village_opinion": "建议纳入重点关爱。"}
    r = client.post(f"{API}/documents", json={"kind": "household_file", "subject_id": hh, "fields": done},
                    headers=cw)
    assert r.status_code == 201, r.text
    doc = r.json()["id"]
    # A correction cannot put the placeholder back.
    r = client.post(f"{API}/documents/{doc}/versions", headers=cw,
                    json={"fields": {**done, "village_opinion": "（待填写）"}, "reason": "更正意见"})
    assert wrong_fields(r) == ["fields.village_opinion"]
    assert client.get(f"{API}/documents/{doc}", headers=cw).json()["version"] == 1


def test_a_particular_the_record_lacks_is_refused_as_the_records_to_complete(client, rt):
    """A household with no minor on record: its household file's minors cannot be filled in from the
    record, and the 422 says to complete the record first."""
    cw = Tokens(client)[CW]
    r = client.post(f"{API}/households", json=household_body(address="幸福村7组2号"), headers=cw)
    assert r.status_code == 201, r.text
    hh = r.json()["id"]
    fields = {**without_particulars("household_file"), "household_no": hh}
    r = client.post(f"{API}/documents", json={"kind": "household_file", "subject_id": hh, "fields": fields},
                    headers=cw)
    assert wrong_fields(r) == ["fields.minors.0.name"]
    assert "请先补充档案" in r.json()["error"]["details"]["fields"][0]["message"]
    assert documents(rt) == 0
