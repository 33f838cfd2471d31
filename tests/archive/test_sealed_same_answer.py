"""Sealed and unknown ids answer alike, by the same code path (issue 13, part 10).

A caller without a grant who asks for a sealed document (its metadata or its PDF) or
a sealed minor gets the answer of an id that does not exist. Beyond the same status
and body, the server does the same work for both: the same SQL statements in the same
order (text and parameter count), and an audit event of the same shape and size.
Timing is measured by ``bench/sealed_timing.py`` (docs/benchmarks.md, "Sealed and
unknown ids").
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select

from access_control.actions import Action
from access_control.audit import canonical_bytes, canonical_fields
from access_control.identity import User, actor_for
from core.db import new_id
from core.errors import NotFound
from runtime import Runtime
from tests.access_control.test_sealed import COURT, CUST, CW, SUP, VILLAGE, events, make_case, pin_clock
from tests.conftest import Tokens, run_sql

API = "/api/v1"


@contextmanager
def statements(rt: Runtime) -> Iterator[list[tuple[str, int]]]:
    """The SQL this thread executes: (statement, number of parameter sets)."""
    seen: list[tuple[str, int]] = []
    me = threading.get_ident()

    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        # SQLite's connections share one pool between reading and writing sessions: the first
        # transaction on a pooled connection that was last used in the other mode sets
        # query_only. That follows the pool's history, not the id asked for: left out.
        if statement.startswith("PRAGMA query_only"):
            return
        if threading.get_ident() == me:
            seen.append((statement, len(parameters) if executemany else 1))

    event.listen(rt.db.engine, "before_cursor_execute", grab)
    try:
        yield seen
    finally:
        event.remove(rt.db.engine, "before_cursor_execute", grab)


def refused(rt: Runtime, username: str, call: Callable[[Any], Any]) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Run a service call as ``username`` that must answer 404; its SQL and its audit event."""
    with rt.db.session() as s:
        user = s.scalar(select(User).where(User.username == username))
        assert user is not None
        actor = actor_for(s, user)
    with rt.db.session() as s:
        g = rt.guard(s, actor)
        with statements(rt) as seen, pytest.raises(NotFound):
            call(g)
    (last,) = events(rt, "seq = (SELECT max(seq) FROM audit_events)")
    return seen, last


def same_event_shape(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Equal but for the id asked for, its time and chain position; and of the same size."""
    assert len(a["resource_id"]) == len(b["resource_id"])
    ignore = ("resource_id",)
    assert {k: v for k, v in a.items() if k not in ("seq", *ignore)} == \
           {k: v for k, v in b.items() if k not in ("seq", *ignore)}


def stored_event(rt: Runtime, seq: int) -> dict[str, Any]:
    from access_control.audit import AuditEvent

    with rt.db.read_session() as s:
        ev = s.get(AuditEvent, seq)
        assert ev is not None
        return {"fields": canonical_fields(ev), "size": len(canonical_bytes(ev))}


def twin(prefix: str, real: str) -> str:
    """An id that does not exist, as long as ``real``."""
    out = new_id(prefix)
    assert len(out) == len(real)
    return out


def test_a_sealed_document_minor_or_household_costs_the_same_sql_as_an_unknown_id(client, rt):
    pin_clock(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    # Households are not sealed through the API; the flag is honoured all the same: set it here.
    run_sql(rt, "UPDATE households SET sealed = :t WHERE id = :h", t=True, h=case.household)
    docs = rt.document_reading
    cases: list[tuple[str, str, str, Callable[[str], Callable[[Any], Any]]]] = [
        ("document", case.doc, "doc", lambda i: lambda g: docs.read(g, i)),
        ("document pdf", case.doc, "doc", lambda i: lambda g: docs.pdf(g, i)),
        ("minor", case.minor, "mn", lambda i: lambda g: rt.archive.read_minor(g, i)),
        ("household", case.household, "hh", lambda i: lambda g: rt.archive.read_household(g, i)),
    ]
    for who in (CW, VILLAGE, SUP, COURT):
        for label, real, prefix, call in cases:
            if label in ("minor", "household") and who == COURT:
                continue  # refused by role before any lookup
            unknown = twin(prefix, real)
            for _ in range(2):  # the second round runs on warm caches, like the bench
                sql_sealed, ev_sealed = refused(rt, who, call(real))
                sql_unknown, ev_unknown = refused(rt, who, call(unknown))
                assert sql_sealed == sql_unknown, (who, label, sql_sealed, sql_unknown)
                assert ev_sealed["outcome"] == "denied" and ev_sealed["reason"] == "record:not_found"
                same_event_shape(ev_sealed, ev_unknown)
                a, b = stored_event(rt, ev_sealed["seq"]), stored_event(rt, ev_unknown["seq"])
                # Equal in size but for the digits of the sequence number.
                digits = len(str(a["fields"]["seq"])) - len(str(b["fields"]["seq"]))
                assert a["size"] - b["size"] == digits, (who, label, a, b)
                assert a["fields"]["subjects"] == b["fields"]["subjects"] == []


def test_the_answers_over_http_are_identical_and_the_grant_still_opens(client, rt):
    pin_clock(rt)
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=CUST)
    for who in (CW, VILLAGE, SUP, COURT):
        for tail in ("", "/pdf"):
            r = client.get(f"{API}/documents/{case.doc}{tail}", headers=tokens[who])
            t = client.get(f"{API}/documents/{twin('doc', case.doc)}{tail}", headers=tokens[who])
            assert (r.status_code, r.content) == (t.status_code, t.content) == (404, t.content)
            assert r.headers["content-length"] == t.headers["content-length"]
    # The refusal of a sealed read is logged as that of an unknown id: no subject, no kind.
    refusals = events(rt, "action IN (:r, :p) AND resource_id = :d", r=Action.DOCUMENT_READ.value,
                      p=Action.DOCUMENT_DOWNLOAD.value, d=case.doc)
    assert refusals and all((e["outcome"], e["reason"], e["subjects"], e["details"]) ==
                            ("denied", "record:not_found", [], {}) for e in refusals)
