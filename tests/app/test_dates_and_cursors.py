"""Dates and cursors never cause a 500: they are 422 naming the field, before any byte is sent.

A grant's ``expires_at`` without an offset, an audit ``from`` without one or at
year 0001, a huge cursor on the audit list: each answered 500, and
``audit/export`` with a bad ``from`` answered 200 with an empty body. Every
time a client sends goes through one type (``core.fields.Timestamp``: an
offset is required, the year lies in a sane range) and every cursor through
one decoder (``core.pagination``).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import make_id_number

API = "/api/v1"


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_TIMES = {
    "naive": "2027-01-01T00:00:00",
    "year-1-offset": "0001-01-01T00:00:00+08:00",
    "year-1-utc": "0001-01-01T00:00:00Z",
    "year-9999-west": "9999-12-31T23:59:59-14:00",
    "not-a-time": "明年春天",
}
BAD_CURSORS = {
    "huge-number": b64("9" * 40),
    "negative": b64("-5"),
    "not-base64": "!!!!",
    "not-a-number": b64("hh_abc"),
    "too-long": "A" * 500,
}


def assert_422_naming(r: Any, field: str) -> None:
    assert r.status_code == 422, (r.status_code, r.text[:300])
    err = r.json()["error"]
    assert err["code"] == "invalid_input"
    assert field in [f["field"] for f in err["details"]["fields"]], err


@pytest.mark.parametrize("value", list(BAD_TIMES.values()), ids=list(BAD_TIMES))
def test_bad_times_in_audit_queries_are_422(value, client, tokens):
    auditor = tokens["auditor.city"]
    for path in ("/audit/events", "/audit/export", "/audit/anomalies"):
        for name in ("from", "to"):
            r = client.get(f"{API}{path}", params={name: value}, headers=auditor)
            assert_422_naming(r, name)
    r = client.post(f"{API}/audit/events/search", json={"from": value}, headers=auditor)
    assert_422_naming(r, "from")


def test_export_with_a_bad_from_is_422_not_an_empty_200(client, tokens):
    r = client.get(f"{API}/audit/export", params={"from": "2026-01-01T00:00:00", "format": "csv"},
                   headers=tokens["auditor.city"])
    assert_422_naming(r, "from")
    assert r.headers["content-type"].startswith("application/json")


def test_good_times_still_filter(client, tokens):
    auditor = tokens["auditor.city"]
    for value in ("2026-01-01T00:00:00+08:00", "2026-01-01T00:00:00Z", "2199-12-31T00:00:00Z"):
        r = client.get(f"{API}/audit/events", params={"from": value, "to": "2199-12-31T23:00:00+00:00"},
                       headers=auditor)
        assert r.status_code == 200, r.text
    r = client.get(f"{API}/audit/export", params={"from": "2026-01-01T00:00:00+08:00"}, headers=auditor)
    assert r.status_code == 200 and r.text, r.text[:200]


@pytest.mark.parametrize("cursor", list(BAD_CURSORS.values()), ids=list(BAD_CURSORS))
def test_bad_cursors_are_422_on_every_list(cursor, client, tokens):
    auditor, cw = tokens["auditor.city"], tokens["caseworker.haizhou"]
    assert_422_naming(client.get(f"{API}/audit/events", params={"cursor": cursor}, headers=auditor), "cursor")
    assert_422_naming(client.post(f"{API}/audit/events/search", json={"cursor": cursor}, headers=auditor),
                      "cursor")
    for path in ("/households", "/minors", "/documents"):
        r = client.get(f"{API}{path}", params={"cursor": cursor}, headers=cw)
        if cursor == BAD_CURSORS["not-a-number"]:
            assert r.status_code == 200, r.text  # an id-shaped cursor is a valid cursor there
        else:
            assert_422_naming(r, "cursor")
    r = client.get(f"{API}/search", params={"q": "测试", "cursor": cursor}, headers=cw)
    assert_422_naming(r, "cursor")


def test_cursors_still_page(client, tokens):
    auditor = tokens["auditor.city"]
    for _ in range(3):
        client.get(f"{API}/me", headers=auditor)
    first = client.get(f"{API}/audit/events", params={"limit": 2}, headers=auditor).json()
    assert first["next_cursor"]
    second = client.get(f"{API}/audit/events", params={"limit": 2, "cursor": first["next_cursor"]},
                        headers=auditor).json()
    assert second["items"] and second["items"][0]["seq"] < first["items"][-1]["seq"]


@pytest.mark.parametrize("value", list(BAD_TIMES.values()), ids=list(BAD_TIMES))
def test_bad_grant_expiry_is_422(value, client, tokens):
    court, cust = tokens["court.haizhou"], tokens["custodian.city"]
    r = client.post(f"{API}/sealed-requests", headers=court, json={
        "case_number": "（2026）苏0706刑初88号", "legal_basis": "cpl_286_judicial", "purpose": "审理案件需要",
        "subject": {"name": "测试童", "id_number": make_id_number(birth="20090101")}})
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    r = client.post(f"{API}/sealed-requests/{rid}/decision", headers=cust,
                    json={"decision": "approve", "reason": "符合规定", "expires_at": value})
    assert_422_naming(r, "expires_at")
    assert client.get(f"{API}/sealed-requests/{rid}", headers=cust).json()["status"] == "pending"
    r = client.post(f"{API}/sealed-requests/{rid}/decision", headers=cust,
                    json={"decision": "approve", "reason": "符合规定", "expires_at": "2199-01-01T00:00:00+08:00"})
    assert r.status_code == 200, r.text


def test_page_dates_out_of_range_are_named_not_500(app, client, tokens):
    from tests.web.test_web_sealed_audit_admin import Browser, field_error

    auditor, cust = Browser(app, "auditor.city"), Browser(app, "custodian.city")
    try:
        r = auditor.get("/audit?from=0001-01-01&to=9999-12-31")
        assert r.status_code == 422, r.text[:300]
        assert field_error(r.text, "from").startswith("时间应在") and field_error(r.text, "to").startswith("时间应在")
        # A grant "through 9999-12-31" typed into the custodian's decision form.
        r = client.post(f"{API}/sealed-requests", headers=tokens["court.haizhou"], json={
            "case_number": "（2026）苏0706刑初88号", "legal_basis": "cpl_286_judicial", "purpose": "审理案件需要",
            "subject": {"name": "测试童", "id_number": make_id_number(birth="20090101")}})
        assert r.status_code == 201, r.text
        rid = r.json()["id"]
        r = cust.post(f"/sealed/{rid}/decision", {"decision": "approve", "reason": "符合规定",
                                                  "expires_at": "9999-12-31"})
        assert r.status_code == 422, r.text[:300]
        assert field_error(r.text, "expires_at").startswith("时间应在")
    finally:
        auditor.close()
        cust.close()
