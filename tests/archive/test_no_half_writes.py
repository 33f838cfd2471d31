"""No half-written records: an update is validated whole before it commits.

``PATCH /households/{id} {"address": null}`` once answered 500 after committing a
payload without an address; from then on that household, and every list page
holding it, answered 500 for everyone. Each test here sends updates that must
be refused (explicit nulls for required fields, wrong types) and checks that
the answer is a 422 naming the field, that not one stored byte changed, and that
the record and the lists still read. The property test draws PATCH bodies with
nulls and wrong types for both resources and checks the same for every one:
never a 5xx, a refusal changes nothing, and whatever was accepted reads back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.app.test_bad_input import snapshot
from tests.conftest import household_body, make_id_number, minor_body

STORED_BIRTH = "2015-03-01"


@pytest.fixture
def records(client, tokens) -> dict[str, str]:
    cw = tokens["caseworker.haizhou"]
    hh = client.post("/api/v1/households", json=household_body(), headers=cw)
    assert hh.status_code == 201, hh.text
    mn = client.post("/api/v1/minors", headers=cw, json=minor_body(
        hh.json()["id"], id_number=make_id_number(birth="20150301"), birth_date=STORED_BIRTH,
        categories=[2, 3], school="幸福小学"))
    assert mn.status_code == 201, mn.text
    return {"household": hh.json()["id"], "minor": mn.json()["id"]}


def path_of(kind: str, records: dict[str, str]) -> str:
    return f"/api/v1/{kind}s/{records[kind]}"


def still_readable(client: Any, cw: dict[str, str], records: dict[str, str]) -> list[str]:
    """What fails among: both records read, and both lists that hold them."""
    problems = []
    for kind in ("household", "minor"):
        r = client.get(path_of(kind, records), headers=cw)
        if r.status_code != 200:
            problems.append(f"GET {kind}: {r.status_code} {r.text[:200]}")
    for path, params in (("/api/v1/households", {"limit": 200}),
                         ("/api/v1/minors", {"household_id": records["household"]})):
        r = client.get(path, params=params, headers=cw)
        if r.status_code != 200:
            problems.append(f"GET {path}: {r.status_code} {r.text[:200]}")
    return problems


REQUIRED_NULLS = [
    ("household", "address"),
    ("household", "members"),
    ("minor", "name"),
    ("minor", "birth_date"),
    ("minor", "sex"),
    ("minor", "categories"),
]


@pytest.mark.parametrize(("kind", "field"), REQUIRED_NULLS, ids=[f"{k}-{f}" for k, f in REQUIRED_NULLS])
def test_null_for_a_required_field_is_422_and_changes_nothing(kind, field, client, tokens, rt, records):
    cw = tokens["caseworker.haizhou"]
    before = snapshot(rt)
    shown = client.get(path_of(kind, records), headers=cw).json()
    r = client.patch(path_of(kind, records), json={field: None, "notes": "同时修改的备注"}, headers=cw)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    assert [f["field"] for f in err["details"]["fields"]] == [field]
    assert snapshot(rt) == before, "a refused update changed the stored rows"
    assert still_readable(client, cw, records) == []
    assert client.get(path_of(kind, records), headers=cw).json() == shown
    # ... and it still updates.
    r = client.patch(path_of(kind, records), json={"notes": "复核后更新"}, headers=cw)
    assert r.status_code == 200 and r.json()["version"] == 2, r.text


def test_clearing_an_optional_field_with_null_still_works(client, tokens, records):
    cw = tokens["caseworker.haizhou"]
    r = client.patch(path_of("household", records), json={"notes": None}, headers=cw)
    assert r.status_code == 200 and r.json()["notes"] is None, r.text
    r = client.patch(path_of("minor", records), json={"school": None, "id_number": None}, headers=cw)
    assert r.status_code == 200, r.text
    assert (r.json()["school"], r.json()["id_number"]) == (None, None)
    assert still_readable(client, cw, records) == []


# The property ------------------------------------------------------------------------

HOUSEHOLD_FIELDS = ("address", "members", "notes", "expected_version")
MINOR_FIELDS = ("name", "id_number", "birth_date", "sex", "categories", "school", "guardian", "phone", "notes",
                "expected_version")
# Values of every JSON type, a few of them valid for some field.
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", " ", "5组1号", "2015-03-01", "2015-02-30", "male", "female", "0001-01-01", "幸福小学",
                     make_id_number(birth="20150301"), "\u202e", "9" * 300]),
    st.text(max_size=12),
    st.lists(st.one_of(st.none(), st.integers(-3, 8), st.text(max_size=3)), max_size=3),
    st.lists(st.fixed_dictionaries({"name": st.sampled_from(["测试母", None, 7]),
                                    "relation": st.sampled_from(["母亲", "", None])}), max_size=2),
    st.fixed_dictionaries({"category": st.integers(0, 6)}),
    st.dictionaries(st.text(max_size=4), st.none(), max_size=2),
)


def bodies(fields: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(fields), values, min_size=1, max_size=4)


patches = st.one_of(st.tuples(st.just("household"), bodies(HOUSEHOLD_FIELDS)),
                    st.tuples(st.just("minor"), bodies(MINOR_FIELDS)))


@hsettings(max_examples=60, deadline=None, database=None, derandomize=True,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(patch=patches)
def test_any_patch_body_is_answered_whole_or_refused_whole(patch, client, tokens, rt, records):
    kind, body = patch
    cw = tokens["caseworker.haizhou"]
    before = snapshot(rt)
    raw = json.dumps(body, ensure_ascii=False).encode()
    r = client.patch(path_of(kind, records), content=raw, headers={**cw, "content-type": "application/json"})
    assert r.status_code in (200, 409, 422), (body, r.status_code, r.text[:300])
    if r.status_code != 200:
        assert snapshot(rt) == before, f"a refused update changed the stored rows: {body}"
        if r.status_code == 422:
            assert r.json()["error"]["details"]["fields"], r.text
    else:
        got = client.get(path_of(kind, records), headers=cw)
        assert got.status_code == 200 and got.json() == r.json(), body
    assert still_readable(client, cw, records) == [], body
