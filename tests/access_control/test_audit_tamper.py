"""An attacker with the database owner's rights edits the access log; verification names where.

Each test builds a real log through the API (sign-ins, creates, reads, denied reads,
about 30 events, a signed checkpoint midway and one at the end), then changes the
database with raw SQL, as someone who dropped the append-only triggers would. The
triggers are shown to refuse UPDATE and DELETE first, and are put back afterwards
(the PostgreSQL database is shared by the whole test session).

Runs on SQLite and PostgreSQL (the ``rt`` fixture).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import bindparam, exc, text

from access_control import merkle
from access_control.audit import (
    AuditEvent,
    AuditLog,
    AuditTampered,
    VerifyResult,
    checkpoint_message,
    event_hash,
)
from core.crypto import verify_signature
from core.settings import Settings
from main import create_app
from runtime import Runtime
from tests.audit_support import audit_size, run_shouhu
from tests.conftest import (
    Backend,
    Snapshot,
    Tokens,
    household_body,
    initialized_runtime,
    make_settings,
    minor_body,
    run_sql,
    seeded_runtime,
)

APPEND_ONLY = ("audit_events", "audit_event_subjects", "audit_checkpoints")
EVENT_COLUMNS = tuple(c.name for c in AuditEvent.__table__.columns)
FORGED_HASH = "f0" * 32
OTHER_SUBJECT = "0123456789abcdef0123456789abcdef"


# The log ------------------------------------------------------------------------------------


@dataclass
class Log:
    client: TestClient
    headers: dict[str, dict[str, str]]
    mid: dict[str, Any] = field(default_factory=dict)  # signed checkpoint midway
    end: dict[str, Any] = field(default_factory=dict)  # signed checkpoint at the end
    public_key: str = ""

    @property
    def size(self) -> int:
        return int(self.end["size"])


def build_log(client: TestClient, tokens: Any) -> Log:
    """About 30 events of everyday use, with checkpoints signed midway and at the end."""
    hz, gn, village = (tokens[u] for u in ("caseworker.haizhou", "caseworker.guannan", "village.haizhou"))
    log = Log(client, {"hz": hz, "gn": gn})

    def ok(r: Any, status: int = 200) -> dict[str, Any]:
        assert r.status_code == status, r.text
        return r.json()

    hh = ok(client.post("/api/v1/households", json=household_body(), headers=hz), 201)
    m1 = ok(client.post("/api/v1/minors", json=minor_body(hh["id"]), headers=hz), 201)
    m2 = ok(client.post("/api/v1/minors", json=minor_body(hh["id"], categories=[1]), headers=hz), 201)
    ok(client.get(f"/api/v1/minors/{m1['id']}", headers=hz))
    ok(client.get(f"/api/v1/households/{hh['id']}", headers=hz))
    # Guannan's caseworker may not read Haizhou's child: a denied read (404, no hint).
    assert client.get(f"/api/v1/minors/{m1['id']}", headers=gn).status_code == 404
    gh = ok(client.post("/api/v1/households", json=household_body("320724001001"), headers=gn), 201)
    gm = ok(client.post("/api/v1/minors", json=minor_body(gh["id"]), headers=gn), 201)
    assert client.get(f"/api/v1/minors/{gm['id']}", headers=hz).status_code == 404
    r = client.post("/api/v1/auth/token", data={"username": "caseworker.haizhou", "password": "wrong-password-1"})
    assert r.status_code == 401
    ok(client.get(f"/api/v1/minors/{m1['id']}", headers=village))
    ok(client.patch(f"/api/v1/minors/{m1['id']}", json={"school": "幸福小学"}, headers=hz))
    ok(client.get("/api/v1/minors", headers=hz))
    auditor = tokens["auditor.city"]
    log.headers["auditor"] = auditor
    log.mid = ok(client.post("/api/v1/audit/checkpoints", headers=auditor), 201)

    ok(client.get(f"/api/v1/minors/{m2['id']}", headers=hz))
    assert client.get(f"/api/v1/minors/{m2['id']}", headers=gn).status_code == 404
    hh2 = ok(client.post("/api/v1/households", json=household_body("320706001001"), headers=hz), 201)
    m3 = ok(client.post("/api/v1/minors", json=minor_body(hh2["id"]), headers=hz), 201)
    ok(client.get(f"/api/v1/minors/{m3['id']}", headers=hz))
    client.get(f"/api/v1/minors/{m1['id']}", headers=tokens["supervisor.city"])
    client.get("/api/v1/minors", headers=tokens["supervisor.city"])
    client.get(f"/api/v1/minors/{m1['id']}", headers=tokens["court.haizhou"])
    ok(client.get(f"/api/v1/minors/{gm['id']}", headers=gn))
    ok(client.get(f"/api/v1/households/{hh2['id']}", headers=hz))
    assert client.get(f"/api/v1/households/{gh['id']}", headers=hz).status_code == 404
    log.end = ok(client.post("/api/v1/audit/checkpoints", headers=auditor), 201)
    log.public_key = ok(client.get("/api/v1/audit/public-key", headers=auditor))["public_key"]
    return log


@dataclass
class Built:
    snapshot: Snapshot
    log: Log


@pytest.fixture(scope="module")
def built(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """The log of ``build_log``, built through the API once per worker and backend; every test tampers
    with a copy of its own (``settings`` below restores it)."""
    folder = tmp_path_factory.mktemp("audit-log")
    backend.reset()
    made = make_settings(folder / "var", backend.database_url(folder / "var"))
    with seeded_runtime(made) as runtime, TestClient(create_app(runtime=runtime)) as client:
        log = build_log(client, Tokens(client))
    assert 25 <= log.size <= 45 and 10 < log.mid["size"] < log.size
    snapshot = backend.snapshot(made, folder)
    yield Built(snapshot, log)
    backend.drop(snapshot)


@pytest.fixture
def settings(backend: Backend, data_dir: Path, built: Built) -> Settings:
    return backend.restore(built.snapshot, data_dir)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    with initialized_runtime(settings) as runtime:
        yield runtime


@pytest.fixture
def log(client: TestClient, rt: Runtime, built: Built) -> Log:
    result = verify(rt)
    assert result.ok and result.checkpoints_checked == 2, result
    return dataclasses.replace(built.log, client=client, headers=dict(built.log.headers))


def rows(rt: Runtime) -> list[Mapping[str, Any]]:
    with rt.db.read_session() as s:
        return [dict(r) for r in AuditLog.iter_events(s)]


def row(rt: Runtime, seq: int) -> dict[str, Any]:
    (found,) = [r for r in rows(rt) if r["seq"] == seq]
    return dict(found)


def verify(rt: Runtime, *checkpoints: Mapping[str, Any]) -> VerifyResult:
    with rt.db.read_session() as s:
        return rt.audit.verify(s, checkpoints=list(checkpoints))


def api_verify(log: Log, checkpoint: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if checkpoint is None:
        r = log.client.get("/api/v1/audit/verify", headers=log.headers["auditor"])
    else:
        r = log.client.post("/api/v1/audit/verify", json={"checkpoint": dict(checkpoint)},
                            headers=log.headers["auditor"])
    assert r.status_code == 200, r.text
    return r.json()


def assert_names(rt: Runtime, log: Log, seq: int, problem: str | None = None) -> VerifyResult:
    """verify() and the API both name ``seq`` as the first bad event."""
    result = verify(rt)
    assert not result.ok and result.first_bad_seq == seq, result
    if problem:
        assert problem in (result.problem or ""), result
    if "checkpoint" not in (result.problem or ""):
        assert result.length == seq - 1  # the events before the bad one all verified
    body = api_verify(log)  # the API logs its own request first, at the end
    assert body["ok"] is False and body["first_bad_seq"] == seq, body
    return result



def subject_rows(rt: Runtime, seq: int) -> list[str]:
    return sorted(r[0] for r in run_sql(rt, "SELECT subject FROM audit_event_subjects WHERE seq = :s", s=seq))


def middle_event_with_subjects(rt: Runtime, log: Log) -> int:
    """An event about a person, before the midway checkpoint and not its first events."""
    candidates = [r["seq"] for r in rows(rt) if r["subjects"] and 3 < r["seq"] < log.mid["size"] - 2]
    assert candidates
    return candidates[len(candidates) // 2]


# Raw SQL, as the attacker --------------------------------------------------------------------


def typed(statement: str, **params: Any) -> Any:
    """``text()`` with the audit columns' types bound (times and JSON), on either backend."""
    columns = AuditEvent.__table__.c
    binds = [bindparam(k, type_=columns[k.removeprefix("v_")].type) for k in params
             if k.removeprefix("v_") in ("at", "subjects", "details")]
    return text(statement).bindparams(*binds)


def execute(rt: Runtime, statement: str, **params: Any) -> None:
    with rt.db.engine.begin() as conn:
        conn.execute(typed(statement, **params), params)


def set_columns(rt: Runtime, seq: int, values: Mapping[str, Any]) -> None:
    assignments = ", ".join(f"{c} = :v_{c}" for c in values)
    execute(rt, f"UPDATE audit_events SET {assignments} WHERE seq = :where_seq",
            where_seq=seq, **{f"v_{c}": v for c, v in values.items()})


def insert_event(rt: Runtime, values: Mapping[str, Any]) -> None:
    cols = ", ".join(EVENT_COLUMNS)
    marks = ", ".join(f":v_{c}" for c in EVENT_COLUMNS)
    execute(rt, f"INSERT INTO audit_events ({cols}) VALUES ({marks})",
            **{f"v_{c}": values[c] for c in EVENT_COLUMNS})


class Attacker:
    """Drops the append-only triggers (after showing they work); the fixture puts them back."""

    def __init__(self, rt: Runtime):
        self.rt = rt
        self.dialect = rt.db.dialect
        self.dropped = False

    def refused(self, sql: str) -> bool:
        try:
            run_sql(self.rt, sql)
        except exc.DBAPIError as e:
            assert "append-only" in str(e)
            return True
        return False

    def show_triggers_refuse(self) -> None:
        (seq,) = run_sql(self.rt, "SELECT MIN(seq) FROM audit_event_subjects")[0]
        assert seq is not None
        for table, where in [("audit_events", f"seq = {seq}"), ("audit_event_subjects", f"seq = {seq}"),
                             ("audit_checkpoints", "size > 0")]:
            assert self.refused(f"UPDATE {table} SET {'seq' if table != 'audit_checkpoints' else 'size'} = "
                                f"{'seq' if table != 'audit_checkpoints' else 'size'} WHERE {where}"), table
            assert self.refused(f"DELETE FROM {table} WHERE {where}"), table

    def drop_triggers(self) -> None:
        self.show_triggers_refuse()
        for table in APPEND_ONLY:
            if self.dialect == "sqlite":
                run_sql(self.rt, f"DROP TRIGGER {table}_no_update")
                run_sql(self.rt, f"DROP TRIGGER {table}_no_delete")
            else:
                run_sql(self.rt, f"DROP TRIGGER {table}_append_only ON {table}")
        self.dropped = True
        assert not self.refused("UPDATE audit_events SET seq = seq WHERE seq = 1")

    def restore_triggers(self) -> None:
        if not self.dropped:
            return
        for table in APPEND_ONLY:
            if self.dialect == "sqlite":
                for verb in ("UPDATE", "DELETE"):
                    run_sql(self.rt, f"DROP TRIGGER IF EXISTS {table}_no_{verb.lower()}")
                    run_sql(self.rt, f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                                     f"BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
            else:
                run_sql(self.rt, f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
                run_sql(self.rt, f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                                 f"FOR EACH ROW EXECUTE FUNCTION shouhu_audit_append_only()")
        self.dropped = False


@pytest.fixture
def attacker(rt: Runtime) -> Iterator[Attacker]:
    a = Attacker(rt)
    try:
        yield a
    finally:
        a.restore_triggers()
        assert a.refused("DELETE FROM audit_events WHERE seq = 1")


def shouhu(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``shouhu`` command against this test's archive."""
    return run_shouhu(settings, *args)


def said(proc: subprocess.CompletedProcess[str]) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


# The triggers ---------------------------------------------------------------------------------


def test_triggers_refuse_update_and_delete_on_every_log_table(rt, log, attacker):
    attacker.show_triggers_refuse()
    assert verify(rt).ok
    # No row of the log can be changed or removed while the triggers stand.
    assert attacker.refused(f"UPDATE audit_events SET reason = 'x' WHERE seq = {log.size}")
    assert attacker.refused("UPDATE audit_checkpoints SET root = 'x'")
    assert attacker.refused("DELETE FROM audit_checkpoints")
    assert verify(rt).ok and verify(rt).length >= log.size


# (a) one column of one event ---------------------------------------------------------------


def forged_value(rt: Runtime, ev: Mapping[str, Any], column: str) -> Any:
    """A plausible different value: another event's, where the log has one."""
    if column == "at":
        return ev["at"].replace(microsecond=(ev["at"].microsecond + 1) % 1_000_000)
    if column == "subjects":
        return [] if ev["subjects"] else [OTHER_SUBJECT]
    if column == "details":
        return {**ev["details"], "count": 1}
    if column in ("hash", "prev_hash"):
        return FORGED_HASH
    if column == "on_behalf_of":  # claim (or deny) that the event was done for someone
        return "village.haizhou" if ev[column] is None else None
    others = [r[column] for r in rows(rt) if r[column] != ev[column]]
    return others[0] if others else ev[column] + "x"


@pytest.mark.parametrize("column", EVENT_COLUMNS)
def test_changing_any_column_of_an_event_names_that_event(rt, log, attacker, column):
    k = middle_event_with_subjects(rt, log)
    before = row(rt, k)
    attacker.drop_triggers()
    if column == "seq":
        # Renumber the event (its subject rows follow it, as the foreign key requires).
        subjects = subject_rows(rt, k)
        run_sql(rt, "DELETE FROM audit_event_subjects WHERE seq = :k", k=k)
        run_sql(rt, "UPDATE audit_events SET seq = 100000 WHERE seq = :k", k=k)
        for s in subjects:
            run_sql(rt, "INSERT INTO audit_event_subjects (subject, seq) VALUES (:s, 100000)", s=s)
        problem = f"event {k} is missing"
    else:
        value = forged_value(rt, before, column)
        assert value != before[column]
        set_columns(rt, k, {column: value})
        after = row(rt, k)
        assert after[column] == value and {c: after[c] for c in EVENT_COLUMNS if c != column} == {
            c: before[c] for c in EVENT_COLUMNS if c != column}
        problem = {"prev_hash": "prev_hash does not match"}.get(column, "does not match its hash")
    assert_names(rt, log, k, problem)


def test_every_column_is_covered_by_the_canonical_form_or_the_chain():
    assert set(EVENT_COLUMNS) == {"seq", "at", "actor_id", "actor", "org_id", "roles", "action", "resource_kind",
                                  "resource_id", "outcome", "reason", "request_id", "subjects", "details",
                                  "prev_hash", "hash", "on_behalf_of"}


# (b) an event deleted ------------------------------------------------------------------------


def test_deleting_an_event_names_the_missing_seq(rt, log, attacker):
    k = middle_event_with_subjects(rt, log)
    attacker.drop_triggers()
    run_sql(rt, "DELETE FROM audit_event_subjects WHERE seq = :k", k=k)
    run_sql(rt, "DELETE FROM audit_events WHERE seq = :k", k=k)
    assert_names(rt, log, k, f"event {k} is missing")


def test_deleting_the_last_event_is_caught_by_the_head_row(rt, log, attacker):
    size = audit_size(rt)
    attacker.drop_triggers()
    run_sql(rt, "DELETE FROM audit_event_subjects WHERE seq = :k", k=size)
    run_sql(rt, "DELETE FROM audit_events WHERE seq = :k", k=size)
    result = verify(rt)
    assert not result.ok and result.first_bad_seq == size and "head row" in (result.problem or "")


# (c) an event inserted -----------------------------------------------------------------------


def shift_up_from(rt: Runtime, k: int) -> None:
    """Renumber events k.. to k+1.. (and their subject rows), leaving seq k free."""
    moved = run_sql(rt, "SELECT subject, seq FROM audit_event_subjects WHERE seq >= :k", k=k)
    run_sql(rt, "DELETE FROM audit_event_subjects WHERE seq >= :k", k=k)
    run_sql(rt, "UPDATE audit_events SET seq = -seq - 1 WHERE seq >= :k", k=k)
    run_sql(rt, "UPDATE audit_events SET seq = -seq WHERE seq < 0")
    for subject, seq in moved:
        run_sql(rt, "INSERT INTO audit_event_subjects (subject, seq) VALUES (:s, :q)", s=subject, q=seq + 1)
    run_sql(rt, "UPDATE audit_head SET size = size + 1")


@pytest.mark.parametrize("where", ["middle", "first", "after_last_checkpoint"])
def test_inserting_a_forged_event_names_its_position(rt, log, attacker, where):
    k = {"middle": middle_event_with_subjects(rt, log), "first": 1,
         "after_last_checkpoint": log.size + 1}[where]
    if where == "after_last_checkpoint":
        # Make sure there is an event after the last checkpoint to push up.
        log.client.get("/api/v1/me", headers=log.headers["hz"])
    original = row(rt, k)
    attacker.drop_triggers()
    shift_up_from(rt, k)
    # A read that never happened, slipped in before event k; nothing is recomputed:
    # prev_hash copied from the event it displaces, hash made up.
    forged = {**original, "seq": k, "actor": "caseworker.guannan", "action": "archive:minor:read",
              "outcome": "allowed", "reason": "role:caseworker+region:within_jurisdiction", "hash": FORGED_HASH}
    insert_event(rt, forged)
    assert [r["seq"] for r in rows(rt)] == list(range(1, len(rows(rt)) + 1))  # no gap
    assert_names(rt, log, k, "does not match its hash")


def test_inserting_a_correctly_hashed_event_breaks_the_chain_right_after_it(rt, log, attacker):
    """An attacker who hashes the forged event properly (but re-chains nothing after it):
    the forged event k links to k-1, so the chain first breaks at k+1, the displaced
    original, whose prev_hash no longer matches."""
    k = middle_event_with_subjects(rt, log)
    original = row(rt, k)
    attacker.drop_triggers()
    shift_up_from(rt, k)
    forged = {**original, "seq": k, "subjects": [], "resource_id": "mn_forged", "request_id": "req_forged"}
    forged["hash"] = event_hash("sha256", forged)
    insert_event(rt, forged)
    assert_names(rt, log, k + 1, "prev_hash does not match")


# (d) two events swapped ------------------------------------------------------------------------


@pytest.mark.parametrize("distance", [1, 5])
def test_swapping_two_events_names_the_first(rt, log, attacker, distance):
    a = middle_event_with_subjects(rt, log)
    b = a + distance
    ra, rb = row(rt, a), row(rt, b)
    sa, sb = subject_rows(rt, a), subject_rows(rt, b)
    attacker.drop_triggers()
    content = [c for c in EVENT_COLUMNS if c != "seq"]
    set_columns(rt, a, {"hash": FORGED_HASH})  # hash is unique: park it while swapping
    set_columns(rt, b, {c: ra[c] for c in content})
    set_columns(rt, a, {c: rb[c] for c in content})
    # The subject index follows the content, as a careful attacker would make it.
    run_sql(rt, "DELETE FROM audit_event_subjects WHERE seq IN (:a, :b)", a=a, b=b)
    for subjects, seq in ((sa, b), (sb, a)):
        for s in subjects:
            run_sql(rt, "INSERT INTO audit_event_subjects (subject, seq) VALUES (:s, :q)", s=s, q=seq)
    assert row(rt, a)["hash"] == rb["hash"] and row(rt, b)["hash"] == ra["hash"]
    assert_names(rt, log, a)


# (e) the tail truncated and the head row fixed -------------------------------------------------


def truncate(rt: Runtime, new_size: int) -> None:
    head_hash = row(rt, new_size)["hash"]
    run_sql(rt, "DELETE FROM audit_event_subjects WHERE seq > :n", n=new_size)
    run_sql(rt, "DELETE FROM audit_events WHERE seq > :n", n=new_size)
    run_sql(rt, "UPDATE audit_head SET size = :n, head_hash = :h", n=new_size, h=head_hash)


def test_truncated_tail_is_caught_by_a_checkpoint(rt, log, attacker, settings, tmp_path):
    # The auditor saves a checkpoint outside Shouhu with the CLI, before the attack.
    saved = tmp_path / "saved-checkpoint.json"
    proc = shouhu(settings, "audit", "checkpoint", "--out", str(saved))
    assert proc.returncode == 0, said(proc)
    outside = json.loads(saved.read_text())
    assert outside["size"] >= log.size and outside["public_key"] == log.public_key

    new_size = log.mid["size"] + 3
    attacker.drop_triggers()
    truncate(rt, new_size)
    # The chain alone is consistent now; the stored checkpoints catch the missing tail.
    result = verify(rt)
    assert not result.ok and result.first_bad_seq == new_size + 1, result
    assert result.length == new_size and "checkpoint covers" in (result.problem or "")
    assert verify(rt, log.end).first_bad_seq == new_size + 1

    # The attacker deletes the stored checkpoints too: now only the saved copy tells.
    run_sql(rt, "DELETE FROM audit_checkpoints WHERE size > :n", n=new_size)
    clean = verify(rt)
    assert clean.ok and clean.length == new_size  # undetectable without an outside copy
    for checkpoint in (log.end, outside):
        result = verify(rt, checkpoint)
        assert not result.ok and result.first_bad_seq == new_size + 1, result

    proc = shouhu(settings, "audit", "verify", "--checkpoint", str(saved))
    assert proc.returncode == 1, said(proc)
    assert f"第 {new_size + 1} 条起有问题" in said(proc) and f"covers {outside['size']} events" in said(proc)

    # The API, given the saved checkpoint, agrees (it logs its own request first, which
    # takes seq new_size + 2 after the CLI's: the first event still missing comes next).
    body = api_verify(log, outside)
    assert body["ok"] is False and body["first_bad_seq"] == body["length"] + 1 > new_size

    # And once all stored checkpoints are gone, plain `shouhu audit verify` sees nothing.
    run_sql(rt, "DELETE FROM audit_checkpoints")
    proc = shouhu(settings, "audit", "verify")
    assert proc.returncode == 0, said(proc)


def test_truncated_and_refilled_log_is_caught_by_the_checkpoint_root(rt, log, attacker):
    """After truncation the service keeps logging; once the log is as long as the
    checkpoint again, the Merkle root at the checkpoint's size no longer matches."""
    new_size = log.mid["size"] + 3
    attacker.drop_triggers()
    truncate(rt, new_size)
    run_sql(rt, "DELETE FROM audit_checkpoints WHERE size > :n", n=new_size)
    while audit_size(rt) < log.size + 2:
        log.client.get("/api/v1/me", headers=log.headers["hz"])
    assert verify(rt).ok  # the refilled chain is internally consistent
    result = verify(rt, log.end)
    assert not result.ok and result.first_bad_seq == log.size and "Merkle root" in (result.problem or "")


# (f) events rewritten with all hashes recomputed -------------------------------------------------


def rewrite_and_rechain(rt: Runtime, k: int, changes: Mapping[str, Any]) -> None:
    """Change event k and recompute its hash and every later prev_hash/hash, and the head."""
    events = rows(rt)
    prev = events[k - 2]["hash"] if k > 1 else "0" * 64
    for ev in events[k - 1:]:
        new = {**ev, **(changes if ev["seq"] == k else {}), "prev_hash": prev}
        new["hash"] = event_hash(rt.audit.hash_alg, new)
        set_columns(rt, ev["seq"], {"prev_hash": new["prev_hash"], "hash": new["hash"],
                                    **(dict(changes) if ev["seq"] == k else {})})
        prev = new["hash"]
    run_sql(rt, "UPDATE audit_head SET head_hash = :h", h=prev)


@pytest.mark.parametrize("where", ["before_midway_checkpoint", "between_checkpoints"])
def test_rewritten_and_rehashed_events_are_caught_by_the_signed_root(rt, log, attacker, where):
    if where == "before_midway_checkpoint":
        k, covering = middle_event_with_subjects(rt, log), log.mid
    else:
        k = next(r["seq"] for r in rows(rt) if r["seq"] > log.mid["size"] and r["subjects"])
        covering = log.end
    assert k <= covering["size"]
    attacker.drop_triggers()
    # Hide who read the child: the read is now someone else's, a denied one.
    rewrite_and_rechain(rt, k, {"actor": "court.haizhou", "outcome": "denied",
                                "reason": "role:requester_needs_request"})
    # Every hash matches its event and every link holds...
    with rt.db.read_session() as s:
        evs = list(AuditLog.iter_events(s))
    assert all(event_hash("sha256", e) == e["hash"] for e in evs)
    assert all(a["hash"] == b["prev_hash"] for a, b in zip(evs, evs[1:], strict=False))
    # ...but the signed root over the first `covering` events is different.
    result = assert_names(rt, log, covering["size"], "Merkle root")
    assert result.first_bad_seq >= k

    # Without the stored checkpoints, only a saved one catches it.
    run_sql(rt, "DELETE FROM audit_checkpoints")
    assert verify(rt).ok
    result = verify(rt, covering)
    assert not result.ok and result.first_bad_seq == covering["size"]
    # A consistency proof from the saved checkpoint to today's tree does not verify.
    with rt.db.read_session() as s:
        proof = rt.audit.consistency(s, first=covering["size"], second=AuditLog.size(s))
    h = merkle.hasher("sha256")
    assert proof["first_root"] != covering["root"]
    assert not merkle.verify_consistency(
        h, size1=covering["size"], size2=proof["second"], root1=bytes.fromhex(covering["root"]),
        root2=bytes.fromhex(proof["second_root"]), proof=[bytes.fromhex(p) for p in proof["proof"]])


# (g) the subject index -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["row_deleted", "row_added", "subject_changed", "moved_to_earlier_event"])
def test_tampered_subject_index_names_the_event(rt, log, attacker, how):
    k = middle_event_with_subjects(rt, log)
    (subject, *_) = subject_rows(rt, k)
    attacker.drop_triggers()
    expected = k
    if how == "row_deleted":  # hide that the event was about this child
        run_sql(rt, "DELETE FROM audit_event_subjects WHERE seq = :k AND subject = :s", k=k, s=subject)
    elif how == "row_added":  # implicate another child
        run_sql(rt, "INSERT INTO audit_event_subjects (subject, seq) VALUES (:s, :k)", s=OTHER_SUBJECT, k=k)
    elif how == "subject_changed":
        run_sql(rt, "UPDATE audit_event_subjects SET subject = :o WHERE seq = :k AND subject = :s",
                o=OTHER_SUBJECT, k=k, s=subject)
    else:
        earlier = max(r["seq"] for r in rows(rt) if r["seq"] < k and not r["subjects"])
        run_sql(rt, "UPDATE audit_event_subjects SET seq = :e WHERE seq = :k AND subject = :s",
                e=earlier, k=k, s=subject)
        expected = earlier
    assert_names(rt, log, expected, "subject index")


# Checkpoints: signed only when the log grew, never over altered events ------------------------


def test_scheduled_checkpoint_signs_only_when_the_log_grew(rt, log):
    h = merkle.hasher("sha256")
    # Reading the public key after the end checkpoint was logged: the log grew by one.
    size = audit_size(rt)
    assert size == log.size + 1
    first = rt.checkpoint_now()
    assert first is not None and first["size"] == size
    assert rt.checkpoint_now() is None and rt.checkpoint_now() is None  # no growth, no signature
    assert checkpoint_sizes(rt) == [log.mid["size"], log.size, size]
    log.client.get("/api/v1/me", headers=log.headers["hz"])
    log.client.get("/api/v1/me", headers=log.headers["gn"])
    cp = rt.checkpoint_now()
    assert cp is not None and cp["size"] == size + 2
    assert rt.checkpoint_now() is None
    assert checkpoint_sizes(rt) == [log.mid["size"], log.size, size, size + 2]
    with rt.db.read_session() as s:
        leaves = AuditLog.leaf_hashes(s, cp["size"])
    # Continued from the previous frontier, the root equals a fresh computation, the
    # signature verifies with the published key, and the trees are consistent.
    assert cp["root"] == merkle.root_from_leaf_hashes(h, leaves).hex()
    assert cp["head_hash"] == leaves[-1].hex()
    assert cp["key_id"] == log.end["key_id"]
    message = checkpoint_message(hash_alg="sha256", size=cp["size"], root=cp["root"], head_hash=cp["head_hash"],
                                 at=cp["at"])
    assert verify_signature(bytes.fromhex(log.public_key), message, bytes.fromhex(cp["signature"]))
    result = verify(rt, cp)
    assert result.ok and result.checkpoints_checked == 5
    for earlier in (log.mid, log.end, first):
        proof = merkle.consistency_proof(h, leaves, earlier["size"])
        assert merkle.verify_consistency(h, size1=earlier["size"], size2=cp["size"],
                                         root1=bytes.fromhex(earlier["root"]), root2=bytes.fromhex(cp["root"]),
                                         proof=proof)


def checkpoint_sizes(rt: Runtime) -> list[int]:
    with rt.db.read_session() as s:
        return [c["size"] for c in AuditLog.checkpoints(s)]


@pytest.mark.parametrize("how", ["column_changed", "event_deleted", "frontier_changed"])
def test_checkpoint_is_refused_over_altered_events(rt, log, attacker, settings, how):
    # Some events after the last checkpoint.
    for _ in range(3):
        log.client.get("/api/v1/me", headers=log.headers["hz"])
    stored = checkpoint_sizes(rt)
    last = stored[-1]
    with rt.db.read_session() as s:
        size = AuditLog.size(s)
    assert size > last + 1
    attacker.drop_triggers()
    if how == "column_changed":
        set_columns(rt, last + 1, {"outcome": "error"})
    elif how == "event_deleted":
        run_sql(rt, "DELETE FROM audit_events WHERE seq = :k", k=last + 1)
    else:
        (frontier,) = run_sql(rt, "SELECT frontier FROM audit_checkpoints WHERE size = :n", n=last)[0]
        frontier = json.loads(frontier) if isinstance(frontier, str) else frontier
        frontier[0] = FORGED_HASH
        execute(rt, "UPDATE audit_checkpoints SET frontier = :v_details WHERE size = :n",
                v_details=frontier, n=last)
    with pytest.raises(AuditTampered):
        rt.checkpoint_now()
    assert checkpoint_sizes(rt) == stored
    r = log.client.post("/api/v1/audit/checkpoints", headers=log.headers["auditor"])
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "unavailable"
    assert checkpoint_sizes(rt) == stored
    proc = shouhu(settings, "audit", "checkpoint")
    assert proc.returncode != 0 and "未签署检查点" in said(proc), said(proc)
    assert checkpoint_sizes(rt) == stored
