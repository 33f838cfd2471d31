"""Keys in the database: rotation, retirement, shredding, tampering, a wrong master key.

Every test runs on SQLite and on PostgreSQL (see ``conftest.backend``), with
real encryption through the API. Tampering is done the way an attacker with
database access would do it: raw SQL on the stored bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core import crypto
from core.keys import KekInUse, Vault, create_kek, retire, rotate
from core.settings import ConfigError
from main import create_app
from runtime import Runtime
from tests.audit_support import events_after, log_size
from tests.conftest import household_body, login, make_id_number, make_settings, minor_body, run_sql

CW = "caseworker.haizhou"
NAMES = ("王小红", "赵小刚")


class Records:
    """One household with two minors, created through the API, plus what each GET returns."""

    def __init__(self, client: TestClient, headers: dict[str, str]):
        self.client, self.headers = client, headers
        r = client.post("/api/v1/households", json=household_body(), headers=headers)
        assert r.status_code == 201, r.text
        self.household = r.json()
        self.minors = []
        for name in NAMES:
            body = minor_body(self.household["id"], name=name, id_number=make_id_number())
            r = client.post("/api/v1/minors", json=body, headers=headers)
            assert r.status_code == 201, r.text
            self.minors.append(r.json())

    @property
    def secrets(self) -> list[str]:
        """Strings that must never appear in an error body."""
        out = [m["name"] for m in self.minors] + [m["id_number"] for m in self.minors]
        out += [self.household["address"], self.household["notes"]]
        return out + [m["name"] for m in self.household["members"]]

    def get_minor(self, index: int) -> Any:
        return self.client.get(f"/api/v1/minors/{self.minors[index]['id']}", headers=self.headers)

    def get_household(self) -> Any:
        return self.client.get(f"/api/v1/households/{self.household['id']}", headers=self.headers)

    def assert_all_read(self) -> None:
        r = self.get_household()
        assert r.status_code == 200, r.text
        assert r.json() == self.household
        for i, minor in enumerate(self.minors):
            r = self.get_minor(i)
            assert r.status_code == 200, r.text
            assert r.json() == minor

    def assert_decryption_failed(self, response: Any) -> None:
        assert response.status_code == 500, response.text
        error = response.json()["error"]
        assert error["code"] == "decryption_failed"
        assert error["details"] == {}
        decoded = str(response.json())  # catches \uXXXX-escaped leaks too
        for secret in self.secrets:
            assert secret not in response.text and secret not in decoded


@pytest.fixture
def records(client: TestClient, tokens: Any) -> Records:
    return Records(client, tokens[CW])


def data_keys(rt: Runtime) -> dict[str, tuple[str, bytes | None]]:
    """dek id -> (kek id, wrapped bytes or None)."""
    rows = run_sql(rt, "SELECT id, kek_id, wrapped FROM data_keys")
    return {r[0]: (r[1], None if r[2] is None else bytes(r[2])) for r in rows}


def payloads(rt: Runtime) -> dict[str, bytes]:
    rows = run_sql(rt, "SELECT id, payload FROM minors UNION ALL "
                       "SELECT id, payload FROM households")
    return {r[0]: bytes(r[1]) for r in rows}


def dek_id_of(rt: Runtime, table: str, record_id: str) -> str:
    (row,) = run_sql(rt, f"SELECT dek_id FROM {table} WHERE id = :i", i=record_id)
    return str(row[0])


def kek_row(rt: Runtime, kek_id: str) -> tuple[str, bytes | None, Any]:
    (row,) = run_sql(
        rt, "SELECT state, wrapped, retired_at FROM key_encryption_keys WHERE id = :i", i=kek_id
    )
    return row[0], None if row[1] is None else bytes(row[1]), row[2]


def set_payload(rt: Runtime, table: str, record_id: str, payload: bytes) -> None:
    run_sql(rt, f"UPDATE {table} SET payload = :p WHERE id = :i", p=payload, i=record_id)


@pytest.fixture
def second_runtime(rt: Runtime) -> Iterator[Any]:
    """Opens more runtimes on rt's database (same data dir) and closes them afterwards."""
    opened: list[Runtime] = []

    def open_runtime(**overrides: Any) -> Runtime:
        settings = make_settings(rt.settings.data_dir, rt.settings.database_url, **overrides)
        other = Runtime.open(settings, require_schema=False)
        opened.append(other)
        return other

    yield open_runtime
    for other in opened:
        other.close()


# Rotation and retirement ---------------------------------------------------------------


def test_rotate_rewraps_every_data_key_and_leaves_payloads_alone(rt, client, tokens, records):
    old_kek = rt.ring.current_kek_id
    keys_before, payloads_before = data_keys(rt), payloads(rt)
    assert {kek for kek, _ in keys_before.values()} == {old_kek}

    result = rotate(rt.db, rt.ring)

    assert result.new_kek != old_kek and rt.ring.current_kek_id == result.new_kek
    assert result.rewrapped == len(keys_before) >= 3
    keys_after = data_keys(rt)
    assert keys_after.keys() == keys_before.keys()
    for dek_id, (kek_id, wrapped) in keys_after.items():
        assert kek_id == result.new_kek
        assert wrapped is not None and wrapped != keys_before[dek_id][1]
        assert crypto.parse_header(wrapped).key_id == result.new_kek
    assert payloads(rt) == payloads_before  # rotation never touches the records
    assert kek_row(rt, old_kek)[0] == "active"  # still there until retired
    records.assert_all_read()

    # New records go under the new KEK.
    r = client.post("/api/v1/minors", json=minor_body(records.household["id"]), headers=tokens[CW])
    assert r.status_code == 201, r.text
    assert data_keys(rt)[dek_id_of(rt, "minors", r.json()["id"])][0] == result.new_kek


def test_retire_destroys_the_old_kek_and_everything_still_reads(rt, records, second_runtime):
    old_kek = rt.ring.current_kek_id
    new_kek = rotate(rt.db, rt.ring).new_kek

    assert retire(rt.db, rt.ring, old_kek) == 0  # rotation already moved every key

    state, wrapped, retired_at = kek_row(rt, old_kek)
    assert (state, wrapped) == ("retired", None) and retired_at is not None
    assert kek_row(rt, new_kek)[:2] != ("retired", None)
    assert rt.ring.kek_ids() == [new_kek]
    records.assert_all_read()

    # Another process with the same master key opens the archive without the old KEK.
    other = second_runtime(master_key=rt.settings.master_key)
    other.load()
    assert other.ring.kek_ids() == [new_kek]
    with TestClient(create_app(runtime=other)) as other_client:
        headers = login(other_client, CW)
        r = other_client.get(f"/api/v1/minors/{records.minors[1]['id']}", headers=headers)
        assert r.status_code == 200 and r.json() == records.minors[1]

    with pytest.raises(KeyError):
        retire(rt.db, rt.ring, old_kek)  # already retired


def test_retire_rewraps_keys_an_interrupted_rotation_left_behind(rt, records):
    old_kek = rt.ring.current_kek_id
    # A rotation that stopped right after making its KEK: every data key is still
    # wrapped under the old one.
    with rt.db.session() as s:
        new_kek = create_kek(s, rt.ring)
        s.commit()
    rt.ring.refresh()
    before = data_keys(rt)
    assert {kek for kek, _ in before.values()} == {old_kek}

    assert retire(rt.db, rt.ring, old_kek) == len(before)

    assert {kek for kek, _ in data_keys(rt).values()} == {new_kek}
    assert kek_row(rt, old_kek)[:2] == ("retired", None)
    records.assert_all_read()


def test_retiring_the_current_kek_is_refused(rt, records):
    current = rt.ring.current_kek_id
    keys_before = data_keys(rt)
    with pytest.raises(KekInUse, match="rotate first"):
        retire(rt.db, rt.ring, current)
    state, wrapped, retired_at = kek_row(rt, current)
    assert state == "active" and wrapped is not None and retired_at is None
    assert data_keys(rt) == keys_before
    records.assert_all_read()


# Shredding -------------------------------------------------------------------------------


def test_shredding_one_record_makes_it_gone_and_leaves_the_others(rt, client, tokens, records):
    shredded = records.minors[0]
    dek_id = dek_id_of(rt, "minors", shredded["id"])
    with rt.db.session() as s:
        assert Vault.shred(s, owner_id=shredded["id"]) == 1
        s.commit()

    (row,) = run_sql(rt, "SELECT wrapped, shredded_at FROM data_keys WHERE id = :i", i=dek_id)
    assert row[0] is None and row[1] is not None
    assert payloads(rt)[shredded["id"]]  # the ciphertext is still there, unreadable

    r = records.get_minor(0)
    assert r.status_code == 410, r.text
    assert r.json()["error"]["code"] == "record_shredded"
    for secret in (shredded["name"], shredded["id_number"]):
        assert secret not in r.text
    r = client.patch(f"/api/v1/minors/{shredded['id']}", json={"school": "幸福小学"},
                     headers=tokens[CW])
    assert r.status_code == 410 and r.json()["error"]["code"] == "record_shredded"

    assert records.get_minor(1).json() == records.minors[1]
    assert records.get_household().json() == records.household

    # Rotation skips the shredded key and cannot bring it back.
    old_kek = rt.ring.current_kek_id
    result = rotate(rt.db, rt.ring)
    assert result.rewrapped == len(data_keys(rt)) - 1
    retire(rt.db, rt.ring, old_kek)
    assert data_keys(rt)[dek_id] == (old_kek, None)
    assert records.get_minor(0).status_code == 410
    assert records.get_minor(1).json() == records.minors[1]


# Tampering in the database ------------------------------------------------------------------


def _flip_positions(envelope: bytes) -> dict[str, int]:
    body = crypto.parse_header(envelope).body_offset
    return {
        "magic": 0,
        "suite id": 3,
        "key id": 6,
        "nonce": body,
        "ciphertext": body + crypto.NONCE_BYTES,
        "tag": len(envelope) - 1,
    }


def failed_read_events(rt: Runtime, before: int) -> list[tuple[str, str, str, str, str]]:
    """The events since ``before`` as (action, outcome, resource id, reason, request id)."""
    return [(e["action"], e["outcome"], e["resource_id"], e["reason"], e["request_id"])
            for e in events_after(rt.db.engine, before)]


@pytest.mark.parametrize("part", ["magic", "suite id", "key id", "nonce", "ciphertext", "tag"])
def test_flipped_byte_in_a_minor_payload_is_decryption_failed(rt, records, part):
    minor_id = records.minors[0]["id"]
    payload = payloads(rt)[minor_id]
    tampered = bytearray(payload)
    tampered[_flip_positions(payload)[part]] ^= 0x01
    set_payload(rt, "minors", minor_id, bytes(tampered))

    before = log_size(rt.db.engine)
    r = records.get_minor(0)
    records.assert_decryption_failed(r)
    # The read's 'allowed' event was committed before decrypting (fail closed); the failure
    # is recorded too, as the message says: an 'error' event for the same request.
    rid = r.headers["X-Request-ID"]
    rule = "role:caseworker+region:within_jurisdiction"
    assert failed_read_events(rt, before) == [
        ("archive:minor:read", "allowed", minor_id, rule, rid),
        ("archive:minor:read", "error", minor_id, "error:decryption_failed", rid),
    ]
    assert "已记录此错误" in r.json()["error"]["message"]
    assert records.get_minor(1).json() == records.minors[1]
    assert records.get_household().json() == records.household


def test_flipped_byte_in_a_household_payload_is_decryption_failed(rt, records):
    hh_id = records.household["id"]
    payload = bytearray(payloads(rt)[hh_id])
    payload[len(payload) // 2] ^= 0x80
    set_payload(rt, "households", hh_id, bytes(payload))
    before = log_size(rt.db.engine)
    r = records.get_household()
    records.assert_decryption_failed(r)
    rid = r.headers["X-Request-ID"]
    assert [e[:4] for e in failed_read_events(rt, before)] == [
        ("archive:household:read", "allowed", hh_id, "role:caseworker+region:within_jurisdiction"),
        ("archive:household:read", "error", hh_id, "error:decryption_failed"),
    ]
    assert {e[4] for e in failed_read_events(rt, before)} == {rid}
    before = log_size(rt.db.engine)
    records.assert_decryption_failed(
        records.client.patch(f"/api/v1/households/{hh_id}", json={"notes": "x"},
                             headers=records.headers)
    )
    # A write's event is not committed before it fails: its one event becomes 'error'.
    assert [e[:4] for e in failed_read_events(rt, before)] == [
        ("archive:household:update", "error", hh_id, "error:decryption_failed"),
    ]
    assert records.get_minor(0).json() == records.minors[0]


def test_swapped_minor_payloads_are_decryption_failed(rt, records):
    a, b = records.minors[0]["id"], records.minors[1]["id"]
    stored = payloads(rt)
    set_payload(rt, "minors", a, stored[b])
    set_payload(rt, "minors", b, stored[a])
    records.assert_decryption_failed(records.get_minor(0))
    records.assert_decryption_failed(records.get_minor(1))
    assert records.get_household().json() == records.household


def test_swapped_wrapped_data_keys_are_decryption_failed(rt, records):
    dek_a = dek_id_of(rt, "minors", records.minors[0]["id"])
    dek_b = dek_id_of(rt, "minors", records.minors[1]["id"])
    keys = data_keys(rt)
    for target, source in ((dek_a, dek_b), (dek_b, dek_a)):
        run_sql(rt, "UPDATE data_keys SET wrapped = :w WHERE id = :i", w=keys[source][1], i=target)
    records.assert_decryption_failed(records.get_minor(0))
    records.assert_decryption_failed(records.get_minor(1))
    assert records.get_household().json() == records.household


def test_an_older_version_of_the_payload_put_back_is_decryption_failed(rt, client, tokens, records):
    minor_id = records.minors[0]["id"]
    version_1 = payloads(rt)[minor_id]
    r = client.patch(f"/api/v1/minors/{minor_id}", json={"school": "幸福小学"}, headers=tokens[CW])
    assert r.status_code == 200 and r.json()["version"] == 2
    set_payload(rt, "minors", minor_id, version_1)  # the row still says version 2
    records.assert_decryption_failed(records.get_minor(0))


# Master key ----------------------------------------------------------------------------------


def test_a_different_master_key_is_a_config_error(rt, records, second_runtime):
    kek_rows = "SELECT id, state, wrapped FROM key_encryption_keys ORDER BY id"
    keks_before = run_sql(rt, kek_rows)
    stranger = second_runtime()  # make_settings draws a fresh random master key
    assert stranger.settings.master_key_bytes != rt.settings.master_key_bytes
    with pytest.raises(ConfigError, match="master key does not open this archive"):
        stranger.load()
    with pytest.raises(ConfigError, match="master key does not open this archive"):
        stranger.load()  # and again: nothing was cached by the failed attempt
    assert run_sql(rt, kek_rows) == keks_before

    # The right key on the same database opens it (the refusal is about the key).
    friend = second_runtime(master_key=rt.settings.master_key)
    friend.load()
    assert friend.ring.kek_ids() == rt.ring.kek_ids()
    records.assert_all_read()


# Cipher suite ----------------------------------------------------------------------------------


def test_switching_the_cipher_suite_keeps_existing_records_working(rt, records, second_runtime):
    """Records made under AES stay AES (their data keys are AES keys); new ones are SM."""
    sm = second_runtime(master_key=rt.settings.master_key, cipher_suite="sm")
    sm.load()
    old_id = records.minors[0]["id"]
    with TestClient(create_app(runtime=sm)) as sm_client:
        headers = login(sm_client, CW)
        assert sm_client.get(f"/api/v1/minors/{old_id}", headers=headers).json() == records.minors[0]
        r = sm_client.patch(f"/api/v1/minors/{old_id}", json={"school": "幸福小学"}, headers=headers)
        assert r.status_code == 200, r.text
        updated = r.json()
        assert updated["version"] == 2 and updated["school"] == "幸福小学"
        r = sm_client.post("/api/v1/minors", json=minor_body(records.household["id"]),
                           headers=headers)
        assert r.status_code == 201, r.text
        new = r.json()

    stored = payloads(rt)
    assert crypto.parse_header(stored[old_id]).suite is crypto.AES_SUITE
    assert crypto.parse_header(stored[new["id"]]).suite is crypto.SM_SUITE
    # The AES deployment reads both.
    assert records.get_minor(0).json() == updated
    r = records.client.get(f"/api/v1/minors/{new['id']}", headers=records.headers)
    assert r.status_code == 200 and r.json() == new
