"""A school (or the education bureau) issues its own documents and sees nothing else.

Schools hold the caseworker role for their dropout notices and referral letters
(policy.KIND_ISSUER_ORG_TYPES), but a department keeps no case files: it may not
list or read the region's households and minors, their visits, statistics or the
search, and among documents it reads only those its own organisation issued. A
document it may not read is a 404, as if it did not exist (it may not know it does).
"""

from __future__ import annotations

from typing import Any

from tests.conftest import Tokens, household_body, minor_body, record_fields

API = "/api/v1"
CW, SCHOOL = "caseworker.haizhou", "school.haizhou"
SCHOOL_ORG = "连云港市海州区幸福小学"


def issue(client: Any, headers: dict[str, str], kind: str, subject_id: str, **changes: Any) -> str:
    r = client.post(f"{API}/documents", json={"kind": kind, "subject_id": subject_id,
                                              "fields": record_fields(kind, **changes)}, headers=headers)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_a_school_reads_no_case_file_and_only_the_documents_it_issued(client: Any) -> None:
    t = Tokens(client)
    cw, school = t[CW], t[SCHOOL]
    hid = client.post(f"{API}/households", json=household_body(), headers=cw).json()["id"]
    r = client.post(f"{API}/minors", json=minor_body(hid), headers=cw)
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    household_file = issue(client, cw, "household_file", hid)
    letter = issue(client, cw, "referral_notice", mid)

    # No case file, no list of children, no search over them: refused by role for this org type.
    for url in (f"{API}/households", f"{API}/households/{hid}", f"{API}/minors", f"{API}/minors/{mid}",
                f"{API}/households/{hid}/visits", f"{API}/statistics/minors", f"{API}/search?q=%E7%AB%A5"):
        r = client.get(url, headers=school)
        assert r.status_code == 403, (url, r.status_code, r.text)
        assert r.json()["error"]["details"]["rule"].startswith("role:none_grants:"), (url, r.text)

    # Documents: a civil-affairs letter and household file in the same region are not the school's.
    for doc in (household_file, letter):
        for suffix in ("", "/pdf"):
            r = client.get(f"{API}/documents/{doc}{suffix}", headers=school)
            assert r.status_code == 404, (doc, suffix, r.text)
    own = issue(client, school, "dropout_notice", mid, school=SCHOOL_ORG)
    r = client.get(f"{API}/documents", headers=school)
    assert r.status_code == 200, r.text
    assert [d["id"] for d in r.json()["items"]] == [own]
    assert client.get(f"{API}/documents/{own}/pdf", headers=school).status_code == 200
    # The caseworker still sees them all.
    listed = {d["id"] for d in client.get(f"{API}/documents", headers=cw).json()["items"]}
    assert {household_file, letter, own} <= listed
