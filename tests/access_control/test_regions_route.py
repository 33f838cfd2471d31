"""Which part of the region tree each demo role is shown by ``GET /api/v1/regions``.

The decision is the policy's (``Policy.region_list_roots``): admins and auditors
get every root, everyone else their own node and what lies below it. A second
root region is added, so that "the whole tree" and "the city's subtree" differ.
"""

from __future__ import annotations

from typing import Any

import pytest

from access_control.identity import Actor, OrgType
from access_control.regions import Level, add_region
from archive.demo import CITY, HAIZHOU_VILLAGE
from runtime import Runtime
from tests.audit_support import events_after, log_size

OTHER_ROOT = "320800"  # 淮安市: a second tree root, outside every demo user's region
HAIZHOU = "320706"
GUANNAN = "320724"

# demo user -> the roots of the trees /regions answers with
EXPECTED: dict[str, list[str]] = {
    "admin": [CITY[0], OTHER_ROOT],
    "auditor.city": [CITY[0], OTHER_ROOT],
    "supervisor.city": [CITY[0]],
    "custodian.city": [CITY[0]],
    "caseworker.haizhou": [HAIZHOU],
    "court.haizhou": [HAIZHOU],
    "caseworker.guannan": [GUANNAN],
    "village.haizhou": [HAIZHOU_VILLAGE],
}


@pytest.fixture
def two_roots(rt: Runtime) -> Runtime:
    with rt.db.session() as s:
        root = add_region(s, code=OTHER_ROOT, name="淮安市", level=Level.CITY, parent=None)
        add_region(s, code="320803", name="淮安区", level=Level.COUNTY, parent=root)
        s.commit()
    rt.load()
    return rt


def codes(tree: dict[str, Any]) -> set[str]:
    return {tree["code"], *(c for child in tree["children"] for c in codes(child))}


@pytest.mark.parametrize("username", sorted(EXPECTED))
def test_regions_each_demo_role_is_shown(two_roots, client, tokens, username):
    rt = two_roots
    headers = tokens[username]
    before = log_size(rt.db.engine)
    r = client.get("/api/v1/regions", headers=headers)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [t["code"] for t in items] == EXPECTED[username]
    # Each root comes with its whole subtree, and nothing outside it.
    shown = set().union(*(codes(t) for t in items))
    assert shown == {n.code for root in EXPECTED[username] for n in rt.regions.subtree(root)}
    (ev,) = events_after(rt.db.engine, before)
    assert (ev["action"], ev["outcome"]) == ("identity:region:list", "allowed")


def test_region_list_roots_is_the_policys_decision(two_roots):
    rt = two_roots

    def actor(roles: tuple[str, ...], region: str) -> Actor:
        return Actor(user_id="u", username="u", display_name="", org_id="o", org_name="", org_type=OrgType.OTHER,
                     roles=roles, region_code=region)

    assert rt.policy.region_list_roots(actor(("admin",), HAIZHOU)) == [CITY[0], OTHER_ROOT]
    assert rt.policy.region_list_roots(actor(("caseworker", "auditor"), HAIZHOU)) == [CITY[0], OTHER_ROOT]
    assert rt.policy.region_list_roots(actor(("supervisor",), HAIZHOU)) == [HAIZHOU]
    assert rt.policy.region_list_roots(actor(("caseworker",), "999999")) == []  # a region that vanished
    assert rt.policy.region_list_roots(actor((), "")) == []
