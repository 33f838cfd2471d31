"""Households and minors through the API: the caseworker's vertical slice."""

from __future__ import annotations

from tests.conftest import household_body, make_id_number, minor_body, run_sql


def test_caseworker_records_household_and_minor(client, tokens, rt):
    cw = tokens["caseworker.haizhou"]
    r = client.post("/api/v1/households", json=household_body(), headers=cw)
    assert r.status_code == 201, r.text
    hh = r.json()
    assert hh["region_code"] == "320706001001" and hh["version"] == 1
    idn = make_id_number(birth="20150301")
    r = client.post("/api/v1/minors", json=minor_body(hh["id"], name="李小明", id_number=idn,
                                                      categories=[3, {"category": 2, "found_on": "2025-01-02"}]),
                    headers=cw)
    assert r.status_code == 201, r.text
    minor = r.json()
    assert minor["name"] == "李小明" and minor["id_number"] == idn
    assert minor["categories"] == [2, 3]
    got = client.get(f"/api/v1/minors/{minor['id']}", headers=cw).json()
    assert got == minor
    assert client.get(f"/api/v1/households/{hh['id']}", headers=cw).json() == hh
    # The village caseworker below sees it too; the sibling county does not.
    assert client.get(f"/api/v1/minors/{minor['id']}", headers=tokens["village.haizhou"]).status_code == 200
    r = client.get(f"/api/v1/minors/{minor['id']}", headers=tokens["caseworker.guannan"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # Stored bytes: ciphertext only, region and id hash plain.
    (row,) = run_sql(rt, "SELECT payload, id_hash, region_code FROM minors WHERE id = :i", i=minor["id"])
    assert "李小明".encode() not in bytes(row[0]) and idn.encode() not in bytes(row[0])
    assert row[1] != idn and len(row[1]) == 32


def test_update_household_bumps_version_and_checks_expected_version(client, tokens):
    cw = tokens["caseworker.haizhou"]
    hh = client.post("/api/v1/households", json=household_body(), headers=cw).json()
    r = client.patch(f"/api/v1/households/{hh['id']}", json={"address": "5组1号"}, headers=cw)
    assert r.status_code == 200 and r.json()["version"] == 2 and r.json()["address"] == "5组1号"
    assert r.json()["members"] == hh["members"]
    r = client.patch(f"/api/v1/households/{hh['id']}", json={"address": "6组", "expected_version": 1},
                     headers=cw)
    assert r.status_code == 409 and r.json()["error"]["details"]["field"] == "expected_version"
    assert client.get(f"/api/v1/households/{hh['id']}", headers=cw).json()["address"] == "5组1号"


def test_update_minor_ends_categories(client, tokens):
    cw = tokens["caseworker.haizhou"]
    hh = client.post("/api/v1/households", json=household_body(), headers=cw).json()
    m = client.post("/api/v1/minors", json=minor_body(hh["id"], categories=[3, 5]), headers=cw).json()
    r = client.patch(f"/api/v1/minors/{m['id']}", json={"categories": [5], "school": "幸福小学"}, headers=cw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["categories"] == [5] and body["school"] == "幸福小学" and body["version"] == 2
    ended = [c for c in body["category_records"] if c["category"] == 3]
    assert ended and ended[0]["ended_on"] is not None


def test_duplicate_id_number_is_409_and_only_points_at_visible_records(client, tokens):
    hz, gn = tokens["caseworker.haizhou"], tokens["caseworker.guannan"]
    hh = client.post("/api/v1/households", json=household_body(), headers=hz).json()
    idn = make_id_number()
    first = client.post("/api/v1/minors", json=minor_body(hh["id"], id_number=idn), headers=hz).json()
    r = client.post("/api/v1/minors", json=minor_body(hh["id"], id_number=idn), headers=hz)
    assert r.status_code == 409
    assert r.json()["error"]["details"] == {"field": "id_number", "existing_id": first["id"]}
    hh2 = client.post("/api/v1/households", json=household_body("320724001001"), headers=gn).json()
    r = client.post("/api/v1/minors", json=minor_body(hh2["id"], id_number=idn), headers=gn)
    assert r.status_code == 409
    assert r.json()["error"]["details"] == {"field": "id_number"}  # no pointer into Haizhou


def test_list_minors_filters_and_paginates(client, tokens):
    cw = tokens["caseworker.haizhou"]
    hh = client.post("/api/v1/households", json=household_body(), headers=cw).json()
    ids = set()
    for i in range(5):
        m = client.post("/api/v1/minors", json=minor_body(hh["id"], categories=[1 + i % 2]), headers=cw).json()
        ids.add(m["id"])
    other = client.post("/api/v1/households", json=household_body("320724001001"),
                        headers=tokens["caseworker.guannan"]).json()
    client.post("/api/v1/minors", json=minor_body(other["id"]), headers=tokens["caseworker.guannan"])
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = client.get("/api/v1/minors", params=params, headers=cw).json()
        seen += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert set(seen) == ids and len(seen) == 5
    cat1 = client.get("/api/v1/minors", params={"category": 1, "limit": 200}, headers=cw).json()["items"]
    assert {m["id"] for m in cat1} < ids and all(1 in m["categories"] for m in cat1) and len(cat1) == 3
    village = client.get("/api/v1/minors", params={"region": "320706001001"}, headers=cw).json()["items"]
    assert len(village) == 5
    assert client.get("/api/v1/minors", params={"region": "320706002001"}, headers=cw).json()["items"] == []
    r = client.get("/api/v1/minors", params={"region": "320724001001"}, headers=cw)
    assert r.status_code == 404
    # The city supervisor sees both counties.
    assert len(client.get("/api/v1/minors", params={"limit": 200},
                          headers=tokens["supervisor.city"]).json()["items"]) == 6


def test_a_list_page_costs_the_same_queries_for_2_or_12_records(client, tokens, rt, monkeypatch):
    """A page's data keys and category records come in one query each, not one per record."""
    import threading

    # The key ring reloads its KEKs every few seconds (a query of its own): not during the count.
    # Under a loaded parallel run, making the twelve records took longer than that interval.
    rt.ring.refresh()
    monkeypatch.setattr(rt.ring, "_refresh_seconds", float("inf"))

    from sqlalchemy import event, select

    from access_control.identity import User, actor_for

    cw = tokens["caseworker.haizhou"]
    with rt.db.session() as s:
        actor = actor_for(s, s.scalar(select(User).where(User.username == "caseworker.haizhou")))

    def statements(list_call):
        seen: list[str] = []
        me = threading.get_ident()

        def grab(conn, cursor, statement, parameters, context, executemany):
            if threading.get_ident() == me and not statement.startswith("PRAGMA query_only"):
                seen.append(statement)

        with rt.db.request_session(write=False) as s:
            g = rt.guard(s, actor)
            event.listen(rt.db.engine, "before_cursor_execute", grab)
            try:
                page = list_call(g)
            finally:
                event.remove(rt.db.engine, "before_cursor_execute", grab)
        return len(page.items), len(seen)

    counts = {}
    for total in (2, 12):
        while len(client.get("/api/v1/households?limit=200", headers=cw).json()["items"]) < total:
            hh = client.post("/api/v1/households", json=household_body(), headers=cw).json()
            client.post("/api/v1/minors", json=minor_body(hh["id"], id_number=make_id_number()), headers=cw)
        households = statements(lambda g: rt.archive.list_households(g, region=None, limit=200, cursor=None))
        minors = statements(lambda g: rt.archive.list_minors(g, region=None, category=None, household_id=None,
                                                             limit=200, cursor=None))
        assert households[0] == minors[0] == total
        counts[total] = (households[1], minors[1])
    assert counts[2] == counts[12], counts
