"""Sealing reaches every document that names the person (issue 13, part 2; docs/sealed-records.md).

- ``test_sealing_a_minor_seals_the_household_file_that_lists_it``: a household file listing
  two minors; sealing one seals the file with it. For caseworkers and supervisors of the
  region the file, its PDF, its search hits and its place in lists and statistics are gone
  (answered as for an unknown id); a requester whose application about that person was
  approved reads it, stamped, and every read carries the person's keyed hash.
- ``test_a_document_naming_two_sealed_minors_*``: it comes back only once both are unsealed;
  a document held by a sealed minor is not unsealed on its own.
- ``test_an_id_number_written_in_a_document_names_the_person``: a letter about one child that
  writes a sibling's ID number is sealed with the sibling.
- ``test_persons_are_recorded_at_issue_and_at_each_correction``: the ``document_persons`` rows.
- ``test_unsealing_keeps_the_keyed_hash_*``: after an ID number was registered again while
  the person was sealed, both records carry the hash; a third registration is a 409 that
  points at a readable one; audit lookups by ID number find both.
- ``test_init_seals_documents_that_name_a_sealed_minor``: the idempotent catch-up that
  ``shouhu init`` runs after migration 0011 (documents issued before the persons table).
- ``test_migration_0011_*``: downgrade and upgrade with data: persons backfilled from the
  plain columns, the unique ``minors.id_hash`` made a plain index, and back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from alembic.script import ScriptDirectory
from fastapi.testclient import TestClient

from access_control.actions import Action
from archive.sealing import CONFIDENTIALITY
from doc_templates.kinds import KINDS
from runtime import Runtime, alembic_config, migrate_database
from tests.access_control.test_sealed import (
    APPROVE_REASON,
    COURT,
    CUST,
    CW,
    GN,
    SEAL_BASIS,
    SEAL_CASE,
    SEALED_NAME,
    SIBLING_NAME,
    SUP,
    UNSEAL_BASIS,
    VILLAGE,
    apply,
    decide,
    events,
    pdf_pages,
    pin_clock,
)
from tests.conftest import Tokens, completed, household_body, make_id_number, minor_body, run_sql

API = "/api/v1"
AUDITOR = "auditor.city"
UNKNOWN_DOC = "doc_nonexistent000000000"  # as long as a real id
FATHER_NAME = "户主父"


@dataclass
class World:
    household: str
    minor: str  # to be sealed
    sibling: str
    id_number: str
    sibling_id_number: str
    father_id_number: str


def make_world(client: TestClient, tokens: Tokens, *, between: Any = None) -> World:
    """A household (a father with an ID number), a sibling; then, after ``between``, the minor to seal."""
    father = make_id_number(birth="19800101")
    body = household_body(members=[{"name": FATHER_NAME, "relation": "父亲", "id_number": father,
                                    "situation": "外出务工"}])
    r = client.post(f"{API}/households", json=body, headers=tokens[CW])
    assert r.status_code == 201, r.text
    hh = r.json()["id"]
    sib_idn, idn = make_id_number(birth="20150301"), make_id_number(birth="20090101")
    r = client.post(f"{API}/minors", json=minor_body(hh, name=SIBLING_NAME, id_number=sib_idn), headers=tokens[CW])
    assert r.status_code == 201, r.text
    sibling = r.json()["id"]
    if between is not None:
        between()
    r = client.post(f"{API}/minors", json=minor_body(hh, name=SEALED_NAME, id_number=idn, birth_date="2009-01-01"),
                    headers=tokens[CW])
    assert r.status_code == 201, r.text
    return World(hh, r.json()["id"], sibling, idn, sib_idn, father)


def prefilled(client: TestClient, headers: dict[str, str], kind: str, subject_id: str) -> dict[str, Any]:
    r = client.get(f"{API}/document-kinds/{kind}/prefill", params={"subject_id": subject_id}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json()["fields"])


def issue(client: TestClient, headers: dict[str, str], kind: str, subject_id: str, **changes: Any) -> str:
    """Issue ``kind`` about ``subject_id`` with the fields the record fills in (plus ``changes``)."""
    fields = {**completed(prefilled(client, headers, kind, subject_id)), **changes}
    r = client.post(f"{API}/documents", json={"kind": kind, "subject_id": subject_id, "fields": fields},
                    headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def seal(client: TestClient, tokens: Tokens, record_id: str) -> list[str]:
    r = client.post(f"{API}/records/{record_id}/seal", json={"legal_basis": SEAL_BASIS, "case_number": SEAL_CASE},
                    headers=tokens[CUST])
    assert r.status_code == 200, r.text
    return list(r.json()["sealed"])


def unseal(client: TestClient, tokens: Tokens, record_id: str) -> list[str]:
    r = client.post(f"{API}/records/{record_id}/unseal", headers=tokens[CUST],
                    json={"cause": "undiscovered_crime", "legal_basis": UNSEAL_BASIS})
    assert r.status_code == 200, r.text
    return list(r.json()["unsealed"])


def search(client: TestClient, headers: dict[str, str], q: str) -> dict[str, Any]:
    r = client.get(f"{API}/search", params={"q": q}, headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def hits(client: TestClient, headers: dict[str, str], q: str) -> set[str]:
    return {h["id"] for h in search(client, headers, q)["hits"]}


def listed(client: TestClient, headers: dict[str, str], **params: Any) -> set[str]:
    r = client.get(f"{API}/documents", params={"limit": 200, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return {i["id"] for i in r.json()["items"]}


def as_unknown(client: TestClient, headers: dict[str, str], doc: str) -> None:
    """The document and its PDF answer exactly as an id that does not exist."""
    for tail in ("", "/pdf"):
        r = client.get(f"{API}/documents/{doc}{tail}", headers=headers)
        t = client.get(f"{API}/documents/{UNKNOWN_DOC}{tail}", headers=headers)
        assert (r.status_code, r.json()) == (t.status_code, t.json()) == (404, t.json()), (doc, tail, r.text)


def persons(rt: Runtime, doc: str) -> set[tuple[str | None, str | None]]:
    return {(m, h) for m, h in run_sql(rt, "SELECT minor_id, id_hash FROM document_persons WHERE document_id = :d",
                                       d=doc)}


def sealed(rt: Runtime, record_id: str) -> bool:
    table = "minors" if record_id.startswith("mn_") else "documents"
    ((flag,),) = run_sql(rt, f"SELECT sealed FROM {table} WHERE id = :i", i=record_id)
    return bool(flag)


def statistics(client: TestClient, tokens: Tokens) -> list[Any]:
    return [client.get(f"{API}/statistics/minors", params={"region": region}, headers=tokens[who]).json()
            for who, region in ((CW, "320706"), (VILLAGE, "320706001001"), (SUP, "320700"))]


# must show 3 ----------------------------------------------------------------------------------------


def test_sealing_a_minor_seals_the_household_file_that_lists_it(client, rt):
    pin_clock(rt)
    tokens = Tokens(client)
    baseline: dict[str, Any] = {}
    w = make_world(client, tokens, between=lambda: baseline.update(stats=statistics(client, tokens)))
    cw = tokens[CW]
    hf = issue(client, cw, "household_file", w.household)
    own = issue(client, cw, "minor_file", w.minor)
    sibling_file = issue(client, cw, "minor_file", w.sibling)
    a_hash = rt.ring.keyed_hash("id_number", w.id_number)
    rt.indexer.drain()

    # Before sealing: the household file names the minor, its reads carry the minor's keyed hash.
    assert client.get(f"{API}/documents/{hf}", headers=cw).status_code == 200
    (read,) = events(rt, "action = :a AND resource_id = :d", a=Action.DOCUMENT_READ.value, d=hf)
    assert a_hash in read["subjects"]
    assert SEALED_NAME in "".join(pdf_pages(client.get(f"{API}/documents/{hf}/pdf", headers=cw).content))
    assert {hf, own} <= hits(client, cw, SEALED_NAME)
    assert {hf, own, sibling_file} <= listed(client, cw)
    assert statistics(client, tokens) != baseline["stats"]

    assert set(seal(client, tokens, w.minor)) == {w.minor, own, hf}
    rt.indexer.drain()

    # For caseworkers and supervisors of the region: gone, as if it never existed.
    for who in (CW, VILLAGE, SUP):
        h = tokens[who]
        as_unknown(client, h, hf)
        as_unknown(client, h, own)
        found = search(client, h, SEALED_NAME)
        assert (found["total"], found["hits"]) == (0, []), (who, found)
        assert hf not in hits(client, h, SIBLING_NAME) and hf not in hits(client, h, FATHER_NAME)
        assert w.sibling in hits(client, h, SIBLING_NAME)
        assert listed(client, h) == {sibling_file}, who
        assert listed(client, h, subject_id=w.household) == set()
        assert listed(client, h, kind="household_file") == set()
    assert statistics(client, tokens) == baseline["stats"], "a sealed minor still counts"
    # The household itself stays, and a new household file lists only the sibling.
    fields = prefilled(client, cw, "household_file", w.household)
    assert [m["name"] for m in fields["minors"]] == [SIBLING_NAME]

    # A requester whose application about the person was approved reads the file, stamped.
    rid = apply(client, tokens[COURT], SEALED_NAME, w.id_number)
    assert decide(client, tokens[CUST], rid, "approve", APPROVE_REASON).status_code == 200
    r = client.get(f"{API}/sealed-requests/{rid}/records", headers=tokens[COURT])
    assert r.status_code == 200, r.text
    assert {i["id"] for i in r.json()["items"]} == {own, hf}
    assert client.get(f"{API}/documents/{hf}", headers=tokens[COURT]).status_code == 200
    r = client.get(f"{API}/documents/{hf}/pdf", headers=tokens[COURT])
    assert r.status_code == 200, r.text
    pages = pdf_pages(r.content)
    notice = "".join(CONFIDENTIALITY.split())
    assert pages and all(f"申请编号：{rid}" in p and notice in p for p in pages)
    assert SEALED_NAME in "".join(pages) and "困境未成年人家庭档案" in pages[0]
    assert hf in hits(client, tokens[COURT], SEALED_NAME)  # the grant opens it to the requester's search
    released = events(rt, "action = :a AND resource_id = :d AND outcome = 'allowed'",
                      a=Action.DOCUMENT_DOWNLOAD.value, d=hf)
    assert released and all(a_hash in e["subjects"] for e in released)
    # Still nothing for the region's caseworker.
    as_unknown(client, cw, hf)


def test_a_document_naming_two_sealed_minors_comes_back_only_when_both_are_unsealed(client, rt):
    tokens = Tokens(client)
    w = make_world(client, tokens)
    cw = tokens[CW]
    hf = issue(client, cw, "household_file", w.household)
    assert hf in seal(client, tokens, w.minor)
    assert hf not in seal(client, tokens, w.sibling)  # sealed already: held by both now

    # A grant about the sibling names the file too.
    rid = apply(client, tokens[COURT], SIBLING_NAME, w.sibling_id_number)
    assert decide(client, tokens[CUST], rid, "approve", APPROVE_REASON).status_code == 200
    r = client.get(f"{API}/sealed-requests/{rid}/records", headers=tokens[COURT])
    assert hf in {i["id"] for i in r.json()["items"]}

    # Unsealed on its own while a person it names is sealed: refused; it stays sealed.
    r = client.post(f"{API}/records/{hf}/unseal", headers=tokens[CUST],
                    json={"cause": "undiscovered_crime", "legal_basis": UNSEAL_BASIS})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["details"]["field"] == "record_id"
    assert sealed(rt, hf)

    assert hf not in unseal(client, tokens, w.minor)  # the sibling still holds it
    assert sealed(rt, hf)
    as_unknown(client, cw, hf)
    assert client.get(f"{API}/minors/{w.minor}", headers=cw).status_code == 200
    # An application about the unsealed minor is granted nothing sealed for the sibling.
    rid = apply(client, tokens[COURT], SEALED_NAME, w.id_number)
    assert decide(client, tokens[CUST], rid, "approve", APPROVE_REASON).status_code == 200
    r = client.get(f"{API}/sealed-requests/{rid}/records", headers=tokens[COURT])
    assert r.status_code == 200 and hf not in {i["id"] for i in r.json()["items"]}

    assert hf in unseal(client, tokens, w.sibling)
    assert not sealed(rt, hf)
    assert client.get(f"{API}/documents/{hf}/pdf", headers=cw).status_code == 200
    rt.indexer.drain()
    assert hf in hits(client, cw, SIBLING_NAME)
    assert hf in listed(client, cw)


def test_a_document_sealed_on_its_own_stays_sealed_when_a_minor_it_names_is_unsealed(client, rt):
    tokens = Tokens(client)
    w = make_world(client, tokens)
    hf = issue(client, tokens[CW], "household_file", w.household)
    assert seal(client, tokens, hf) == [hf]
    assert seal(client, tokens, w.minor) == [w.minor]  # the file is sealed already
    assert unseal(client, tokens, w.minor) == [w.minor]
    assert sealed(rt, hf)
    assert unseal(client, tokens, hf) == [hf]  # nothing else holds it now
    assert not sealed(rt, hf)


def test_an_id_number_written_in_a_document_names_the_person(client, rt):
    tokens = Tokens(client)
    w = make_world(client, tokens)
    cw = tokens[CW]
    situation = f"其兄（公民身份号码{w.sibling_id_number}）同住，由祖母照料。"
    letter = issue(client, cw, "referral_notice", w.minor, situation=situation, recipient="连云港市海州区教育局",
                   requests=["请学校安排学业帮扶。"], contact="张晓东", contact_phone="0518-85800000")
    b_hash = rt.ring.keyed_hash("id_number", w.sibling_id_number)
    assert (w.sibling, b_hash) in persons(rt, letter)
    assert letter in seal(client, tokens, w.sibling)
    as_unknown(client, cw, letter)
    assert letter in unseal(client, tokens, w.sibling)
    assert client.get(f"{API}/documents/{letter}", headers=cw).status_code == 200


def test_persons_are_recorded_at_issue_and_at_each_correction(client, rt):
    tokens = Tokens(client)
    w = make_world(client, tokens)
    cw = tokens[CW]
    h = {n: rt.ring.keyed_hash("id_number", n) for n in (w.id_number, w.sibling_id_number, w.father_id_number)}
    hf = issue(client, cw, "household_file", w.household)
    assert persons(rt, hf) == {(w.minor, h[w.id_number]), (w.sibling, h[w.sibling_id_number]),
                               (None, h[w.father_id_number])}
    fields = prefilled(client, cw, "guardianship_designation", w.minor)
    aunt, uncle = make_id_number(birth="19810101", male=False), make_id_number(birth="19790101")
    example = KINDS["guardianship_designation"].example
    fields.update({k: example[k] for k in ("original_situation", "dispute", "ward_wishes", "guardian_consented_on",
                                           "duties", "court", "parties")})
    fields.update(recipient="户主姑", parents=[{"relation": "父亲", "name": FATHER_NAME, "status": "deceased"}],
                  guardian_name="户主姑", guardian_relation="姑姑", guardian_id_number=aunt)
    r = client.post(f"{API}/documents", json={"kind": "guardianship_designation", "subject_id": w.minor,
                                              "fields": fields}, headers=cw)
    assert r.status_code == 201, r.text
    doc = r.json()["id"]
    a_hash, u_hash = rt.ring.keyed_hash("id_number", aunt), rt.ring.keyed_hash("id_number", uncle)
    assert persons(rt, doc) == {(w.minor, h[w.id_number]), (None, a_hash)}
    r = client.post(f"{API}/documents/{doc}/versions", headers=cw, json={
        "fields": {**fields, "recipient": "户主叔", "guardian_name": "户主叔", "guardian_relation": "叔叔",
                   "guardian_id_number": uncle},
        "reason": "被指定监护人更正"})
    assert r.status_code == 201, r.text
    # Old versions stay readable: the persons of every version stay recorded.
    assert persons(rt, doc) == {(w.minor, h[w.id_number]), (None, a_hash), (None, u_hash)}
    ((subject_hashes,),) = run_sql(rt, "SELECT subject_hashes FROM documents WHERE id = :d", d=doc)
    subject_hashes = json.loads(subject_hashes) if isinstance(subject_hashes, str) else subject_hashes
    assert set(subject_hashes) == {h[w.id_number], a_hash, u_hash}


# the keyed hash survives unsealing ----------------------------------------------------------------


def test_unsealing_keeps_the_keyed_hash_and_a_further_registration_is_409(client, rt):
    tokens = Tokens(client)
    w = make_world(client, tokens)
    cw = tokens[CW]
    a_hash = rt.ring.keyed_hash("id_number", w.id_number)
    seal(client, tokens, w.minor)
    # While sealed the person is out of the duplicate check: the ID number registers again.
    r = client.post(f"{API}/minors", json=minor_body(w.household, name="新登记童", id_number=w.id_number,
                                                     birth_date="2009-01-01"), headers=cw)
    assert r.status_code == 201, r.text
    again = r.json()["id"]
    unseal(client, tokens, w.minor)
    assert {tuple(r) for r in run_sql(rt, "SELECT id, id_hash FROM minors WHERE id IN (:a, :b)",
                                      a=w.minor, b=again)} == {(w.minor, a_hash), (again, a_hash)}

    # A third registration (or an edit to that number) is a 409 pointing at a record the caller may read.
    r = client.post(f"{API}/minors", json=minor_body(w.household, name="三登记童", id_number=w.id_number,
                                                     birth_date="2009-01-01"), headers=cw)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["details"]["existing_id"] in {w.minor, again}
    r = client.patch(f"{API}/minors/{w.sibling}", json={"id_number": w.id_number, "birth_date": "2009-01-01"},
                     headers=cw)
    assert r.status_code == 409, r.text
    # Someone who may not read either record hears only that the number is registered.
    r = client.post(f"{API}/households", json=household_body("320724001001"), headers=tokens[GN])
    r = client.post(f"{API}/minors", json=minor_body(r.json()["id"], id_number=w.id_number, birth_date="2009-01-01"),
                    headers=tokens[GN])
    assert r.status_code == 409 and "existing_id" not in r.json()["error"]["details"]

    # Audit lookups by ID number find the reads of both records.
    for m in (w.minor, again):
        assert client.get(f"{API}/minors/{m}", headers=cw).status_code == 200
    r = client.post(f"{API}/audit/events/search", json={"subject": w.id_number, "limit": 200},
                    headers=tokens[AUDITOR])
    assert r.status_code == 200, r.text
    found = {(i["action"], i["resource_id"]) for i in r.json()["items"]}
    assert {(Action.MINOR_READ, w.minor), (Action.MINOR_READ, again)} <= found

    # Sealing one of them again hides only it; the other still answers the duplicate check.
    seal(client, tokens, again)
    r = client.post(f"{API}/minors", json=minor_body(w.household, name="四登记童", id_number=w.id_number,
                                                     birth_date="2009-01-01"), headers=cw)
    assert r.status_code == 409 and r.json()["error"]["details"]["existing_id"] == w.minor


# documents issued before migration 0011 ----------------------------------------------------------


def test_init_seals_documents_that_name_a_sealed_minor(client, rt):
    tokens = Tokens(client)
    w = make_world(client, tokens)
    hf = issue(client, tokens[CW], "household_file", w.household)
    # As before 0011: the file's persons unknown when the minor was sealed...
    saved = run_sql(rt, "SELECT document_id, minor_id, id_hash FROM document_persons WHERE document_id = :d", d=hf)
    run_sql(rt, "DELETE FROM document_persons WHERE document_id = :d", d=hf)
    assert seal(client, tokens, w.minor) == [w.minor]
    assert not sealed(rt, hf)
    # ...then backfilled by the migration: `shouhu init` (Runtime.initialize) seals the file.
    for d, m, h in saved:
        run_sql(rt, "INSERT INTO document_persons (document_id, minor_id, id_hash) VALUES (:d, :m, :h)",
                d=d, m=m, h=h)
    rt.initialize()
    assert sealed(rt, hf)
    as_unknown(client, tokens[CW], hf)
    caught = events(rt, "action = :a AND resource_id = :d", a=Action.RECORD_SEAL.value, d=hf)
    assert [(e["actor"], e["outcome"], e["details"].get("sealed_with")) for e in caught] == [
        ("system:init", "allowed", w.minor)]
    rt.initialize()  # idempotent
    assert len(events(rt, "action = :a AND resource_id = :d", a=Action.RECORD_SEAL.value, d=hf)) == 1
    assert hf in unseal(client, tokens, w.minor)


def test_migration_0011_backfills_persons_and_makes_the_id_hash_a_plain_index(client, rt):
    tokens = Tokens(client)
    w = make_world(client, tokens)
    cw = tokens[CW]
    hf = issue(client, cw, "household_file", w.household)
    letter = issue(client, cw, "minor_file", w.minor)
    seal(client, tokens, w.minor)
    r = client.post(f"{API}/minors", json=minor_body(w.household, name="新登记童", id_number=w.id_number,
                                                     birth_date="2009-01-01"), headers=cw)
    assert r.status_code == 201, r.text
    again = r.json()["id"]
    unseal(client, tokens, w.minor)  # both rows carry the hash now
    want = {d: persons(rt, d) for d in (hf, letter)}
    before = ScriptDirectory.from_config(alembic_config(rt.db.url)).get_revision("0011").down_revision
    assert isinstance(before, str)
    migrate_database(rt.db, before, down=True)
    # Downgraded: one record keeps the hash (the unique constraint is back); sealed_with is gone.
    hashes = dict(run_sql(rt, "SELECT id, id_hash FROM minors WHERE id IN (:a, :b)", a=w.minor, b=again))
    assert sorted(v is None for v in hashes.values()) == [False, True]
    migrate_database(rt.db, "head")
    a_hash = rt.ring.keyed_hash("id_number", w.id_number)
    # Backfilled from plain columns: the minor subject, the household's minors, the hashes on record.
    assert persons(rt, letter) == want[letter]
    assert {(m, h) for m, h in persons(rt, hf)} >= {(m, h) for m, h in want[hf] if m is not None}
    assert (w.minor, a_hash) in persons(rt, hf)
    # Plain index: the same hash on two rows is allowed again.
    run_sql(rt, "UPDATE minors SET id_hash = :h WHERE id IN (:a, :b)", h=a_hash, a=w.minor, b=again)
    assert len(run_sql(rt, "SELECT id FROM minors WHERE id_hash = :h", h=a_hash)) == 2
    assert client.get(f"{API}/minors/{w.minor}", headers=cw).status_code == 200
