"""Bad input is refused field by field, in Chinese, without echoing it, and stores nothing.

Each case sends one kind of bad input to create or update a household or a
minor and expects a 422 naming the field (or a 413 naming the body). Around
every request all rows of households, minors, minor_categories and data_keys are
read (every column, payload bytes included) and must be identical after it, so
a refused update leaves the stored ciphertext and version as they were.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest

from runtime import Runtime
from tests.conftest import household_body, make_id_number, minor_body, run_sql

CJK = re.compile(r"[\u4e00-\u9fff]")
SNAPSHOT_TABLES = {
    "households": "id",
    "minors": "id",
    "minor_categories": "minor_id, category, found_on",
    "data_keys": "id",
}
LIMIT = 1_000_000  # settings.max_body_bytes default


def snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the case-file tables, every column, bytes as bytes."""
    out = {}
    for table, order in SNAPSHOT_TABLES.items():
        rows = run_sql(rt, f"SELECT * FROM {table} ORDER BY {order}")
        out[table] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in rows]
    return out


def wrong_check_char(first17: str) -> str:
    from archive.schemas import id_check_char

    right = id_check_char(first17)
    return first17 + ("1" if right != "1" else "2")


BAD_ID = wrong_check_char("32070620150301987")  # valid shape and date, wrong check character
STORED_BIRTH = "2015-03-01"
OTHER_BIRTH_ID = make_id_number(birth="20150302")  # valid, but born a day after STORED_BIRTH
FUTURE = (date.today() + timedelta(days=40)).isoformat()
LONG_NOTES = "渊" * 2001
HUGE = "x" * (LIMIT + 100_000)


@dataclass
class Case:
    id: str
    method: str
    target: str  # households | minors | household | minor (the last two: PATCH the existing one)
    body: Callable[[dict[str, str]], Any]  # ctx -> JSON body; bytes are sent raw
    field: str  # the field details must name (prefix match for nested union fields)
    status: int = 422
    secrets: tuple[str, ...] = ()  # submitted values that must not come back
    content_type: str = "application/json"
    streamed: bool = False


def hh_with(**overrides: Any) -> Callable[[dict[str, str]], dict[str, Any]]:
    return lambda ctx: {**household_body(), **overrides}


def hh_without(name: str) -> Callable[[dict[str, str]], dict[str, Any]]:
    def build(ctx: dict[str, str]) -> dict[str, Any]:
        body = household_body()
        del body[name]
        return body

    return build


def mn_with(**overrides: Any) -> Callable[[dict[str, str]], dict[str, Any]]:
    return lambda ctx: minor_body(ctx["hh"], **overrides)


def mn_without(name: str) -> Callable[[dict[str, str]], dict[str, Any]]:
    def build(ctx: dict[str, str]) -> dict[str, Any]:
        body = minor_body(ctx["hh"])
        del body[name]
        return body

    return build


def const(value: Any) -> Callable[[dict[str, str]], Any]:
    return lambda ctx: value


MEMBER = {"name": "测试母", "relation": "母亲"}

CASES = [
    # Creating a household ------------------------------------------------------
    Case(
        "hh-malformed-json",
        "POST",
        "households",
        const(
            b'{"region_code": "320706001001", '
            b'"address": "\xe7\xa7\x98\xe5\xaf\x86\xe5\x9c\xb0\xe5\x9d\x80'
        ),
        "body",
        secrets=("秘密地址",),
    ),
    Case("hh-not-an-object", "POST", "households", const(["320706001001", "机密数组"]), "body", secrets=("机密数组",)),
    Case(
        "hh-form-encoded",
        "POST",
        "households",
        const(b"address=%E6%9C%BA%E5%AF%86"),
        "body",
        content_type="application/x-www-form-urlencoded",
        secrets=("机密",),
    ),
    Case(
        "hh-wrong-type-region",
        "POST",
        "households",
        hh_with(region_code=987654321),
        "region_code",
        secrets=("987654321",),
    ),
    Case("hh-wrong-type-members", "POST", "households", hh_with(members="张三丰"), "members", secrets=("张三丰",)),
    Case("hh-missing-address", "POST", "households", hh_without("address"), "address"),
    Case("hh-missing-region", "POST", "households", hh_without("region_code"), "region_code"),
    Case(
        "hh-extra-field",
        "POST",
        "households",
        hh_with(secret_field="额外机密"),
        "secret_field",
        secrets=("额外机密",),
    ),
    Case(
        "hh-member-bad-checksum",
        "POST",
        "households",
        hh_with(members=[{**MEMBER, "id_number": BAD_ID}]),
        "members.0.id_number",
        secrets=(BAD_ID,),
    ),
    Case(
        "hh-member-bad-shape-id",
        "POST",
        "households",
        hh_with(members=[{**MEMBER, "id_number": "32070619850101ABCD"}]),
        "members.0.id_number",
        secrets=("32070619850101ABCD",),
    ),
    Case(
        "hh-unknown-region",
        "POST",
        "households",
        hh_with(region_code="320799001001"),
        "region_code",
        secrets=("320799001001",),
    ),
    Case(
        "hh-malformed-region",
        "POST",
        "households",
        hh_with(region_code="32070X"),
        "region_code",
        secrets=("32070X",),
    ),
    Case("hh-control-char", "POST", "households", hh_with(address="隐秘\u202e地址"), "address", secrets=("隐秘",)),
    Case("hh-notes-too-long", "POST", "households", hh_with(notes=LONG_NOTES), "notes", secrets=("渊",)),
    Case("hh-body-too-large", "POST", "households", hh_with(notes=HUGE), "body", status=413, secrets=("xxxxxxxxxx",)),
    Case(
        "hh-body-too-large-streamed",
        "POST",
        "households",
        hh_with(notes=HUGE),
        "body",
        status=413,
        streamed=True,
        secrets=("xxxxxxxxxx",),
    ),
    # Creating a minor ----------------------------------------------------------
    Case(
        "mn-malformed-json",
        "POST",
        "minors",
        const(b'{"name": "\xe6\x9c\xba\xe5\xaf\x86", '),
        "body",
        secrets=("机密",),
    ),
    Case("mn-bad-checksum", "POST", "minors", mn_with(id_number=BAD_ID), "id_number", secrets=(BAD_ID,)),
    Case(
        "mn-id-birth-disagrees",
        "POST",
        "minors",
        mn_with(id_number=OTHER_BIRTH_ID, birth_date=STORED_BIRTH),
        "id_number",
        secrets=(OTHER_BIRTH_ID, STORED_BIRTH),
    ),
    Case(
        "mn-future-birth",
        "POST",
        "minors",
        mn_with(id_number=None, birth_date=FUTURE),
        "birth_date",
        secrets=(FUTURE,),
    ),
    Case(
        "mn-adult",
        "POST",
        "minors",
        mn_with(id_number=None, birth_date="2001-06-15"),
        "birth_date",
        secrets=("2001-06-15",),
    ),
    Case("mn-category-too-high", "POST", "minors", mn_with(categories=[42]), "categories.0", secrets=("42",)),
    Case("mn-category-too-low", "POST", "minors", mn_with(categories=[-17]), "categories.0", secrets=("-17",)),
    Case(
        "mn-category-record-out-of-range",
        "POST",
        "minors",
        mn_with(categories=[{"category": 66, "found_on": "2024-01-01"}]),
        "categories.0",
        secrets=("66",),
    ),
    Case("mn-no-category", "POST", "minors", mn_with(categories=[]), "categories"),
    Case("mn-categories-wrong-type", "POST", "minors", mn_with(categories="三类"), "categories", secrets=("三类",)),
    Case("mn-sex-wrong", "POST", "minors", mn_with(sex="unknownsex"), "sex", secrets=("unknownsex",)),
    Case("mn-birth-wrong-type", "POST", "minors", mn_with(birth_date="去年春天"), "birth_date", secrets=("去年春天",)),
    Case("mn-missing-name", "POST", "minors", mn_without("name"), "name"),
    Case("mn-missing-birth-date", "POST", "minors", mn_without("birth_date"), "birth_date"),
    Case("mn-extra-field", "POST", "minors", mn_with(religion="机密信仰"), "religion", secrets=("机密信仰",)),
    Case("mn-name-too-long", "POST", "minors", mn_with(name="超" * 33), "name", secrets=("超" * 33,)),
    Case("mn-notes-too-long", "POST", "minors", mn_with(notes=LONG_NOTES), "notes", secrets=("渊",)),
    Case(
        "mn-unknown-household",
        "POST",
        "minors",
        lambda ctx: minor_body("hh_doesnotexist234567"),
        "household_id",
        secrets=("hh_doesnotexist234567",),
    ),
    Case("mn-body-too-large", "POST", "minors", mn_with(notes=HUGE), "body", status=413, secrets=("xxxxxxxxxx",)),
    # Updating the existing household -----------------------------------------------
    Case("hh-patch-malformed-json", "PATCH", "household", const(b'{"address": '), "body"),
    Case(
        "hh-patch-bad-checksum",
        "PATCH",
        "household",
        const({"members": [{**MEMBER, "id_number": BAD_ID}]}),
        "members.0.id_number",
        secrets=(BAD_ID,),
    ),
    Case("hh-patch-notes-too-long", "PATCH", "household", const({"notes": LONG_NOTES}), "notes", secrets=("渊",)),
    Case(
        "hh-patch-move-region",
        "PATCH",
        "household",
        const({"region_code": "320724001001"}),
        "region_code",
        secrets=("320724001001",),
    ),
    Case("hh-patch-empty-address", "PATCH", "household", const({"address": ""}), "address"),
    Case(
        "hh-patch-version-wrong-type",
        "PATCH",
        "household",
        const({"notes": "新备注", "expected_version": "第三版"}),
        "expected_version",
        secrets=("第三版",),
    ),
    Case(
        "hh-patch-body-too-large",
        "PATCH",
        "household",
        const({"notes": HUGE}),
        "body",
        status=413,
        secrets=("xxxxxxxxxx",),
    ),
    # Updating the existing minor -----------------------------------------------------
    Case("mn-patch-malformed-json", "PATCH", "minor", const(b"{'school': 1}"), "body"),
    Case("mn-patch-bad-checksum", "PATCH", "minor", const({"id_number": BAD_ID}), "id_number", secrets=(BAD_ID,)),
    # The stored birth date is 2015-03-01: an ID number saying otherwise is refused.
    Case(
        "mn-patch-id-disagrees-with-stored-birth",
        "PATCH",
        "minor",
        const({"id_number": OTHER_BIRTH_ID, "school": "新学校"}),
        "id_number",
        secrets=(OTHER_BIRTH_ID,),
    ),
    Case("mn-patch-future-birth", "PATCH", "minor", const({"birth_date": FUTURE}), "birth_date", secrets=(FUTURE,)),
    Case("mn-patch-category-out-of-range", "PATCH", "minor", const({"categories": [6]}), "categories.0"),
    Case("mn-patch-no-category", "PATCH", "minor", const({"categories": []}), "categories"),
    Case("mn-patch-notes-too-long", "PATCH", "minor", const({"notes": LONG_NOTES}), "notes", secrets=("渊",)),
    Case("mn-patch-empty-name", "PATCH", "minor", const({"name": "  "}), "name"),
    Case(
        "mn-patch-move-household",
        "PATCH",
        "minor",
        const({"household_id": "hh_elsewhere2345"}),
        "household_id",
        secrets=("hh_elsewhere2345",),
    ),
    Case(
        "mn-patch-body-too-large",
        "PATCH",
        "minor",
        const({"school": HUGE}),
        "body",
        status=413,
        secrets=("xxxxxxxxxx",),
    ),
]


@pytest.fixture
def existing(client, tokens) -> dict[str, str]:
    """A household and a minor (born 2015-03-01) to update and to put minors under."""
    cw = tokens["caseworker.haizhou"]
    hh = client.post("/api/v1/households", json=household_body(), headers=cw)
    assert hh.status_code == 201, hh.text
    mn = client.post(
        "/api/v1/minors",
        headers=cw,
        json=minor_body(
            hh.json()["id"],
            id_number=make_id_number(birth="20150301"),
            birth_date=STORED_BIRTH,
            categories=[2, 3],
            school="幸福小学",
        ),
    )
    assert mn.status_code == 201, mn.text
    return {"hh": hh.json()["id"], "mn": mn.json()["id"]}


def url_for(case: Case, ctx: dict[str, str]) -> str:
    if case.target in ("households", "minors"):
        return f"/api/v1/{case.target}"
    return f"/api/v1/{case.target}s/{ctx['hh' if case.target == 'household' else 'mn']}"


def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def case_problems(
    case: Case, client: Any, headers: dict[str, str], rt: Runtime, ctx: dict[str, str]
) -> list[str]:
    """Send one case; what is wrong with the answer or the store afterwards."""
    body = case.body(ctx)
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    before = snapshot(rt)
    content: Any = chunks(raw) if case.streamed else raw
    r = client.request(
        case.method,
        url_for(case, ctx),
        content=content,
        headers={**headers, "content-type": case.content_type},
    )
    if r.status_code != case.status:
        return [f"status {r.status_code}, expected {case.status}: {r.text[:300]}"]
    problems = []
    err = r.json()["error"]
    if set(err) != {"code", "message", "details"} or not CJK.search(err["message"]):
        problems.append(f"error {err} is not in the shape with a Chinese message")
    if case.status == 413:
        if err["code"] != "payload_too_large" or err["details"].get("field") != "body":
            problems.append(f"413 {err} does not name the body")
    else:
        fields = err["details"].get("fields") or []
        names = [f.get("field", "") for f in fields]
        if err["code"] != "invalid_input":
            problems.append(f"code {err['code']!r}")
        if not fields or any(set(f) != {"field", "location", "message"} for f in fields):
            problems.append(f"fields {fields} are not [{{field, location, message}}]")
        if not any(n == case.field or n.startswith(case.field + ".") for n in names):
            problems.append(f"fields name {names}, expected {case.field!r}")
        if not all(CJK.search(f.get("message", "")) for f in fields):
            problems.append(f"a field message is not Chinese: {fields}")
    for secret in case.secrets:
        if secret in r.text or json.dumps(secret)[1:-1] in r.text:
            problems.append(f"the rejected value {secret[:40]!r} is echoed: {r.text[:300]}")
    if snapshot(rt) != before:
        problems.append("the stored rows changed")
    return problems


TARGETS = ("households", "minors", "household", "minor")


@pytest.mark.parametrize("target", TARGETS)
def test_bad_input_is_refused_and_stores_nothing(target, client, tokens, rt, existing):
    """Every case for one target, on one database; failures are named by case id."""
    cw = tokens["caseworker.haizhou"]
    cases = [c for c in CASES if c.target == target]
    failures = [
        f"{case.id}: {p}" for case in cases for p in case_problems(case, client, cw, rt, existing)
    ]
    assert not failures, "\n".join(failures)
    # The record refused so many times is still version 1 and still updates.
    if target in ("household", "minor"):
        table, rid = f"{target}s", existing["hh" if target == "household" else "mn"]
        assert run_sql(rt, f"SELECT version FROM {table} WHERE id = :i", i=rid)[0][0] == 1
        change = {"notes": "复核后更新"}
        r = client.patch(f"/api/v1/{table}/{rid}", json=change, headers=cw)
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
        got = client.get(f"/api/v1/{table}/{rid}", headers=cw).json()
        assert got["notes"] == "复核后更新"
        if target == "minor":
            assert got["birth_date"] == STORED_BIRTH and got["categories"] == [2, 3]
            assert got["school"] == "幸福小学"


def test_every_case_has_a_distinct_id_and_a_known_target():
    assert len({c.id for c in CASES}) == len(CASES)
    assert {c.target for c in CASES} == set(TARGETS)


def test_streamed_body_within_the_limit_is_accepted(client, tokens, rt):
    """The streamed-size check refuses only what is too large."""
    raw = json.dumps(household_body(notes="备注" * 900), ensure_ascii=False).encode()
    headers = {**tokens["caseworker.haizhou"], "content-type": "application/json"}
    r = client.post("/api/v1/households", content=chunks(raw, 1024), headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["notes"] == "备注" * 900
