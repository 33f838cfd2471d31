"""Cryptography by known answers: raw primitives, envelopes, key ring, keyed hashes.

The vectors live in ``tests/vectors/*.json`` (each says where it comes from) and
are read the way cryptography's ``tests/test_fernet.py`` reads its own. Nothing
here touches a database. The layout they pin down is written up in
``docs/formats.md``; ``reference_open`` below re-reads envelopes from that
description alone, and a pure-Python SM3 cross-checks the SM3 values that have
no published source.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from core import crypto
from core.crypto import (
    AES_SUITE,
    SM_SUITE,
    SUITES,
    DecryptionError,
    KekRecord,
    KekStore,
    KeyRing,
    WrappedKey,
    encode_context,
    open_envelope,
    seal,
)

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
SUITE_BY_NAME = {AES_SUITE.name: AES_SUITE, SM_SUITE.name: SM_SUITE}
SUITE_BY_SHORT = {"aes": AES_SUITE, "sm": SM_SUITE}
H = bytes.fromhex


def load_vectors(filename: str) -> list[dict[str, Any]]:
    data = json.loads((VECTORS / filename).read_text(encoding="utf-8"))
    vectors: list[dict[str, Any]] = data["vectors"]
    return vectors


def json_parametrize(filename: str) -> pytest.MarkDecorator:
    """One test per vector in ``filename``, passed as ``vector``."""
    vectors = load_vectors(filename)
    ids = [v.get("name") or f"{v['suite']}-{v['purpose']}" for v in vectors]
    return pytest.mark.parametrize("vector", vectors, ids=ids)


def refused(call: Callable[[], bytes]) -> bool:
    """True if ``call`` raises DecryptionError; fails loudly if it returns data."""
    try:
        leaked = call()
    except DecryptionError:
        return True
    pytest.fail(f"decryption succeeded and returned {len(leaked)} bytes")


# Independent reference code (stdlib only) ----------------------------------------

_M32 = 0xFFFFFFFF


def _rotl(x: int, n: int) -> int:
    n %= 32
    return ((x << n) | (x >> (32 - n))) & _M32


def ref_sm3(data: bytes) -> bytes:
    """SM3 (GB/T 32905-2016) written from the standard, for cross-checks only."""
    v = [0x7380166F, 0x4914B2B9, 0x172442D7, 0xDA8A0600,
         0xA96F30BC, 0x163138AA, 0xE38DEE4D, 0xB0FB0E4E]
    msg = data + b"\x80" + b"\x00" * ((55 - len(data)) % 64) + (len(data) * 8).to_bytes(8, "big")
    for off in range(0, len(msg), 64):
        w = list(struct.unpack(">16I", msg[off : off + 64]))
        for j in range(16, 68):
            x = w[j - 16] ^ w[j - 9] ^ _rotl(w[j - 3], 15)
            w.append(x ^ _rotl(x, 15) ^ _rotl(x, 23) ^ _rotl(w[j - 13], 7) ^ w[j - 6])
        a, b, c, d, e, f, g, h = v
        for j in range(64):
            t = 0x79CC4519 if j < 16 else 0x7A879D8A
            ss1 = _rotl((_rotl(a, 12) + e + _rotl(t, j)) & _M32, 7)
            ss2 = ss1 ^ _rotl(a, 12)
            ff = a ^ b ^ c if j < 16 else (a & b) | (a & c) | (b & c)
            gg = e ^ f ^ g if j < 16 else (e & f) | (~e & g)
            tt1 = (ff + d + ss2 + (w[j] ^ w[j + 4])) & _M32
            tt2 = (gg + h + ss1 + w[j]) & _M32
            a, b, c, d = tt1, a, _rotl(b, 9), c
            e, f, g, h = tt2 ^ _rotl(tt2, 9) ^ _rotl(tt2, 17), e, _rotl(f, 19), g
        v = [x ^ y for x, y in zip((a, b, c, d, e, f, g, h), v, strict=True)]
    return struct.pack(">8I", *v)


def ref_sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


REF_HASH: dict[str, Callable[[bytes], bytes]] = {AES_SUITE.name: ref_sha256, SM_SUITE.name: ref_sm3}


def ref_hmac(hash_fn: Callable[[bytes], bytes], key: bytes, msg: bytes) -> bytes:
    """RFC 2104 HMAC over a 64-byte-block hash."""
    if len(key) > 64:
        key = hash_fn(key)
    key = key.ljust(64, b"\x00")
    inner = hash_fn(bytes(k ^ 0x36 for k in key) + msg)
    return hash_fn(bytes(k ^ 0x5C for k in key) + inner)


def ref_hkdf(hash_fn: Callable[[bytes], bytes], ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with the salt absent (HashLen zero bytes)."""
    prk = ref_hmac(hash_fn, b"\x00" * 32, ikm)
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = ref_hmac(hash_fn, prk, block + info + bytes([counter]))
        okm += block
        counter += 1
    return okm[:length]


def ref_encode_context(context: Mapping[str, str | int | bool]) -> bytes:
    """encode_context as docs/formats.md describes it."""
    out = b""
    for name in sorted(context, key=lambda n: n.encode("utf-8")):
        value = context[name]
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        k, v = name.encode("utf-8"), text.encode("utf-8")
        out += len(k).to_bytes(2, "big") + k + len(v).to_bytes(4, "big") + v
    return out


def reference_open(key: bytes, envelope: bytes, context: Mapping[str, str | int | bool]) -> bytes:
    """Open an envelope from docs/formats.md alone, using only a raw AEAD."""
    assert envelope[0:2] == b"SH" and envelope[2] == 1
    suite = SUITES[envelope[3]]
    kid_len = envelope[4]
    header = envelope[: 5 + kid_len]
    nonce = envelope[5 + kid_len : 17 + kid_len]
    ciphertext_and_tag = envelope[17 + kid_len :]
    return suite.decrypt(key, nonce, ciphertext_and_tag, header + ref_encode_context(context))


class StaticKekStore(KekStore):
    """KEK records held in memory: the KekStore protocol without a database."""

    def __init__(self, records: list[KekRecord] | None = None):
        self.records = list(records or [])

    def load(self) -> list[KekRecord]:
        return list(self.records)

    def add(self, ring: KeyRing, kek_id: str, version: int) -> bytes:
        material = ring.new_kek_material()
        wrapped = ring.wrap_kek(kek_id, version, material)
        self.records.append(KekRecord(kek_id, version, wrapped, "active"))
        return material

    def retire(self, kek_id: str) -> None:
        self.records = [
            KekRecord(r.id, r.version, None, "retired") if r.id == kek_id else r
            for r in self.records
        ]


def ring_with_a_kek(master: bytes, suite: crypto.Suite) -> tuple[KeyRing, StaticKekStore]:
    """A key ring on an in-memory store that holds one active KEK, kek-0001 version 1, already loaded."""
    store = StaticKekStore()
    ring = KeyRing(master, suite=suite, store=store)
    store.add(ring, "kek-0001", 1)
    ring.refresh()
    return ring, store


# Raw primitives -----------------------------------------------------------------


@json_parametrize("aead.json")
def test_aead_vector(vector: dict[str, Any]) -> None:
    suite = SUITE_BY_NAME[vector["suite"]]
    key, nonce, aad = H(vector["key"]), H(vector["nonce"]), H(vector["aad"])
    plaintext, sealed = H(vector["plaintext"]), H(vector["ciphertext"] + vector["tag"])
    assert suite.encrypt(key, nonce, plaintext, aad) == sealed
    assert suite.decrypt(key, nonce, sealed, aad) == plaintext
    assert refused(lambda: suite.decrypt(key, nonce, sealed[:-1] + bytes([sealed[-1] ^ 1]), aad))
    assert refused(lambda: suite.decrypt(key, nonce, sealed, aad + b"\x00"))


@json_parametrize("digest.json")
def test_digest_vector(vector: dict[str, Any]) -> None:
    suite = SUITE_BY_NAME[vector["suite"]]
    message = H(vector["message"])
    assert suite.digest(message).hex() == vector["digest"]
    assert REF_HASH[suite.name](message).hex() == vector["digest"]  # checks the reference too


def test_sm3_abc() -> None:
    expected = "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    assert SM_SUITE.digest(b"abc").hex() == expected
    assert ref_sm3(b"abc").hex() == expected


def test_reference_sm3_agrees_on_every_padding_length() -> None:
    # The reference is what vouches for the derived HKDF-SM3 vectors: check it
    # against the suite on 0..130 bytes (one, two and three blocks of padding).
    data = bytes(range(256))
    for n in range(131):
        assert ref_sm3(data[:n]) == SM_SUITE.digest(data[:n]), n


@json_parametrize("hmac.json")
def test_hmac_vector(vector: dict[str, Any]) -> None:
    suite = SUITE_BY_NAME[vector["suite"]]
    key, message = H(vector["key"]), H(vector["message"])
    assert suite.mac(key, message).hex() == vector["mac"]
    assert ref_hmac(REF_HASH[suite.name], key, message).hex() == vector["mac"]
    if suite is AES_SUITE:
        assert hmac.new(key, message, "sha256").hexdigest() == vector["mac"]


@json_parametrize("hkdf.json")
def test_hkdf_vector(vector: dict[str, Any]) -> None:
    suite = SUITE_BY_NAME[vector["suite"]]
    ikm, info, length = H(vector["ikm"]), H(vector["info"]), vector["length"]
    assert suite.derive(ikm, info, length).hex() == vector["okm"]
    assert ref_hkdf(REF_HASH[suite.name], ikm, info, length).hex() == vector["okm"]


# Envelopes -----------------------------------------------------------------------


@json_parametrize("envelope.json")
def test_envelope_vector_seals_to_exact_bytes(vector: dict[str, Any]) -> None:
    suite = SUITE_BY_NAME[vector["suite"]]
    envelope = seal(
        H(vector["key"]), H(vector["plaintext"]), suite=suite, key_id=vector["key_id"],
        context=vector["context"], nonce=H(vector["nonce"]),
    )
    assert envelope.hex() == vector["envelope"]
    assert encode_context(vector["context"]).hex() == vector["encoded_context"]


@json_parametrize("envelope.json")
def test_envelope_vector_opens(vector: dict[str, Any]) -> None:
    suite = SUITE_BY_NAME[vector["suite"]]
    key, envelope = H(vector["key"]), H(vector["envelope"])
    plaintext = H(vector["plaintext"])
    assert open_envelope(key, envelope, context=vector["context"]) == plaintext
    assert open_envelope(
        key, envelope, context=vector["context"], key_id=vector["key_id"], suite=suite
    ) == plaintext
    head = crypto.parse_header(envelope)
    assert (head.suite, head.key_id) == (suite, vector["key_id"])


@json_parametrize("envelope.json")
def test_envelope_vector_matches_the_written_format(vector: dict[str, Any]) -> None:
    """A reader built from docs/formats.md alone opens every vector."""
    envelope, key_id = H(vector["envelope"]), vector["key_id"].encode("ascii")
    assert envelope[:5] == b"SH" + bytes([1, vector["suite_id"], len(key_id)])
    assert envelope[5 : 5 + len(key_id)] == key_id
    assert envelope[5 + len(key_id) : 17 + len(key_id)] == H(vector["nonce"])
    assert len(envelope) == 5 + len(key_id) + 12 + len(H(vector["plaintext"])) + 16
    assert ref_encode_context(vector["context"]).hex() == vector["encoded_context"]
    assert (envelope[: 5 + len(key_id)] + ref_encode_context(vector["context"])).hex() == (
        vector["associated_data"]
    )
    assert reference_open(H(vector["key"]), envelope, vector["context"]) == H(vector["plaintext"])


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_seal_draws_a_fresh_nonce_each_time(suite: crypto.Suite) -> None:
    key = b"\x07" * suite.key_bytes
    ctx = {"purpose": "payload", "record_id": "mn_x"}
    first = seal(key, b"same text", suite=suite, key_id="dk_x", context=ctx)
    second = seal(key, b"same text", suite=suite, key_id="dk_x", context=ctx)
    offset = crypto.parse_header(first).body_offset
    nonce_at = slice(offset, offset + crypto.NONCE_BYTES)
    assert first[nonce_at] != second[nonce_at]
    assert open_envelope(key, first, context=ctx) == b"same text"
    assert open_envelope(key, second, context=ctx) == b"same text"


@pytest.mark.parametrize("nonce", [b"", b"\x00" * 11, b"\x00" * 13, b"\x00" * 16])
def test_seal_refuses_a_nonce_of_the_wrong_size(nonce: bytes) -> None:
    with pytest.raises(ValueError, match="12 bytes"):
        seal(b"\x00" * 32, b"x", suite=AES_SUITE, key_id="k", context={}, nonce=nonce)


def test_encode_context_is_canonical_and_unambiguous() -> None:
    a = {"purpose": "payload", "record_id": "mn_1", "version": 2, "sealed": False}
    assert encode_context(a) == encode_context(dict(reversed(list(a.items()))))
    # Length prefixes keep neighbouring fields from sliding into each other.
    assert encode_context({"a": "bc"}) != encode_context({"ab": "c"})
    forged = {"a": "b\x00\x01c\x00\x00\x00\x01d"}
    assert encode_context({"a": "b", "c": "d"}) != encode_context(forged)
    assert encode_context({"sealed": True}) == b"\x00\x06sealed\x00\x00\x00\x011"
    assert encode_context({"sealed": False}) == b"\x00\x06sealed\x00\x00\x00\x010"
    assert encode_context({}) == b""


# Envelopes that must not open ------------------------------------------------------


@json_parametrize("envelope_invalid.json")
def test_invalid_envelope_vector(vector: dict[str, Any]) -> None:
    suite = SUITE_BY_SHORT[vector["suite"]] if "suite" in vector else None
    assert refused(lambda: open_envelope(
        H(vector["key"]), H(vector["envelope"]), context=vector["context"],
        key_id=vector.get("key_id"), suite=suite,
    ))


@json_parametrize("envelope.json")
def test_every_flipped_bit_is_refused(vector: dict[str, Any]) -> None:
    """Header, key id, nonce, ciphertext and tag: every bit of every byte is covered."""
    key, envelope, ctx = H(vector["key"]), H(vector["envelope"]), vector["context"]
    for position in range(len(envelope)):
        for bit in range(8):
            tampered = bytearray(envelope)
            tampered[position] ^= 1 << bit
            t = bytes(tampered)
            assert refused(lambda t=t: open_envelope(key, t, context=ctx)), (position, bit)


@json_parametrize("envelope.json")
def test_every_truncation_and_extension_is_refused(vector: dict[str, Any]) -> None:
    key, envelope, ctx = H(vector["key"]), H(vector["envelope"]), vector["context"]
    for length in range(len(envelope)):
        assert refused(lambda n=length: open_envelope(key, envelope[:n], context=ctx)), length
    for extra in (b"\x00", b"\x00" * 16, envelope[-16:]):
        assert refused(lambda x=extra: open_envelope(key, envelope + x, context=ctx))


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_wrong_key_and_changed_context_are_refused(suite: crypto.Suite) -> None:
    key = bytes(range(suite.key_bytes))
    ctx = {"purpose": "payload", "kind": "minor", "record_id": "mn_a", "version": 2,
           "sealed": False}
    envelope = seal(key, b'{"name":"x"}', suite=suite, key_id="dk_a", context=ctx)
    assert open_envelope(key, envelope, context=ctx) == b'{"name":"x"}'
    other_key = bytes(reversed(key))
    assert refused(lambda: open_envelope(other_key, envelope, context=ctx))
    for change in ({"record_id": "mn_b"}, {"version": 1}, {"version": 3}, {"sealed": True},
                   {"kind": "household"}, {"purpose": "dek"}):
        assert refused(lambda c=change: open_envelope(key, envelope, context={**ctx, **c})), change
    assert refused(lambda: open_envelope(key, envelope, context=ctx, key_id="dk_b"))
    other = SM_SUITE if suite is AES_SUITE else AES_SUITE
    assert refused(lambda: open_envelope(key, envelope, context=ctx, suite=other))


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_suite_byte_swapped_is_refused_with_either_key_size(suite: crypto.Suite) -> None:
    key = bytes(range(suite.key_bytes))
    envelope = seal(key, b"secret", suite=suite, key_id="k", context={})
    other = SM_SUITE if suite is AES_SUITE else AES_SUITE
    swapped = envelope[:3] + bytes([other.id]) + envelope[4:]
    assert refused(lambda: open_envelope(key, swapped, context={}))
    assert refused(lambda: open_envelope(bytes(range(other.key_bytes)), swapped, context={}))
    assert refused(lambda: open_envelope(key[: other.key_bytes].ljust(other.key_bytes, b"\x00"),
                                         swapped, context={}))


def test_decryption_error_says_nothing() -> None:
    with pytest.raises(DecryptionError) as info:
        open_envelope(b"\x00" * 32, b"SH\x01\x01\x00" + b"\x00" * 40, context={"secret": "李小明"})
    assert str(info.value) == "decryption failed"
    assert info.value.args == ("decryption failed",)


# Key ring without a database ----------------------------------------------------------


@json_parametrize("key_ring.json")
def test_key_ring_chain_vector(vector: dict[str, Any]) -> None:
    """Master key -> wrapped KEK -> wrapped data key -> payload, through the real KeyRing."""
    suite = SUITE_BY_NAME[vector["suite"]]
    master = H(vector["master_key"])
    kek, dek, payload = vector["kek"], vector["data_key"], vector["payload"]
    info = vector["kek_wrap_info"].encode()
    wrap_key = ref_hkdf(REF_HASH[suite.name], master, info, suite.key_bytes)
    assert wrap_key.hex() == vector["kek_wrap_key"]
    kek_ctx = {"purpose": "kek", "kek_id": kek["id"], "version": kek["version"]}
    assert reference_open(wrap_key, H(kek["wrapped"]), kek_ctx).hex() == kek["material"]
    dek_ctx = {"purpose": "dek", "dek_id": dek["id"]}
    assert reference_open(H(kek["material"]), H(dek["wrapped"]), dek_ctx).hex() == dek["material"]

    store = StaticKekStore([KekRecord(kek["id"], kek["version"], H(kek["wrapped"]), "active")])
    for ring_suite in (AES_SUITE, SM_SUITE):  # envelopes name their own suite
        ring = KeyRing(master, suite=ring_suite, store=store)
        ring.refresh()
        assert ring.current_kek_id == kek["id"]
        wrapped = WrappedKey(dek["kek_id"], H(dek["wrapped"]))
        data_key = ring.unwrap_data_key(wrapped, dek_id=dek["id"])
        assert data_key.hex() == dek["material"]
        ctx = {"purpose": "payload", "kind": payload["kind"], "record_id": payload["record_id"],
               "version": payload["version"], "sealed": payload["sealed"]}
        opened = open_envelope(data_key, H(payload["envelope"]), context=ctx, key_id=dek["id"])
        assert opened.hex() == payload["plaintext"]


@json_parametrize("keyed_hash.json")
def test_keyed_hash_vector(vector: dict[str, Any]) -> None:
    master = H(json.loads((VECTORS / "keyed_hash.json").read_text(encoding="utf-8"))["master_key"])
    suite = SUITE_BY_NAME[vector["suite"]]
    ring = KeyRing(master, suite=suite)
    assert ring.hash_subkey(vector["purpose"]).hex() == vector["subkey"]
    got = ring.keyed_hash(vector["purpose"], vector["value"], hex_chars=vector["hex_chars"])
    assert got == vector["keyed_hash"] and len(got) == vector["hex_chars"]
    subkey = ref_hkdf(REF_HASH[suite.name], master, vector["info"].encode(), 32)
    full = ref_hmac(REF_HASH[suite.name], subkey, vector["value"].encode("utf-8"))
    assert full[: vector["hex_chars"] // 2].hex() == vector["keyed_hash"]
    if vector["purpose"] == "key-check":
        assert ring.check_value() == vector["keyed_hash"]


def test_keyed_hashes_default_to_128_bits_and_differ_by_purpose_and_key() -> None:
    ring = KeyRing(b"\x01" * 32, suite=AES_SUITE)
    value = "320706201503010019"
    assert len(ring.keyed_hash("id_number", value)) == crypto.KEYED_HASH_HEX == 32
    assert ring.keyed_hash("id_number", value) == ring.keyed_hash("id_number", value.encode())
    assert ring.keyed_hash("id_number", value) != ring.keyed_hash("login-throttle", value)
    assert ring.keyed_hash("id_number", value) != KeyRing(b"\x02" * 32, suite=AES_SUITE).keyed_hash(
        "id_number", value
    )


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_wrap_and_unwrap_data_keys(suite: crypto.Suite) -> None:
    ring = KeyRing(b"\x11" * 32, suite=suite)
    ring.add_kek("kek-0001", ring.new_kek_material())
    dek = ring.new_data_key()
    assert len(dek) == suite.key_bytes
    wrapped = ring.wrap_data_key(dek, dek_id="dk_one")
    assert wrapped.kek_id == "kek-0001"
    head = crypto.parse_header(wrapped.wrapped)
    assert (head.key_id, head.suite) == ("kek-0001", suite)
    assert dek not in wrapped.wrapped
    assert ring.unwrap_data_key(wrapped, dek_id="dk_one") == dek
    # The wrapped key names its KEK twice (column and header); they must agree.
    mislabelled = WrappedKey("kek-0002", wrapped.wrapped)
    assert refused(lambda: ring.unwrap_data_key(mislabelled, dek_id="dk_one"))


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_wrong_master_key_cannot_unwrap_a_kek(suite: crypto.Suite) -> None:
    ring, store = ring_with_a_kek(b"\x21" * 32, suite)
    assert ring.kek_ids() == ["kek-0001"]
    stranger = KeyRing(b"\x22" * 32, suite=suite, store=store)
    with pytest.raises(DecryptionError):
        stranger.refresh()
    with pytest.raises(DecryptionError):
        stranger.current_kek_id  # noqa: B018 - the property reads the store


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_wrapped_kek_is_bound_to_its_id_and_version(suite: crypto.Suite) -> None:
    master = b"\x31" * 32
    ring = KeyRing(master, suite=suite)
    material = ring.new_kek_material()
    wrapped = ring.wrap_kek("kek-0001", 1, material)
    for kek_id, version in (("kek-0002", 1), ("kek-0001", 2)):
        record = KekRecord(kek_id, version, wrapped, "active")
        moved = KeyRing(master, suite=suite, store=StaticKekStore([record]))
        with pytest.raises(DecryptionError):
            moved.refresh()
    store = StaticKekStore([KekRecord("kek-0001", 1, wrapped, "active")])
    ok = KeyRing(master, suite=suite, store=store)
    ok.refresh()
    assert ok.kek_ids() == ["kek-0001"]


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_swapping_two_records_wrapped_data_keys_fails(suite: crypto.Suite) -> None:
    ring = KeyRing(b"\x41" * 32, suite=suite)
    ring.add_kek("kek-0001", ring.new_kek_material())
    dek_a, dek_b = ring.new_data_key(), ring.new_data_key()
    wrapped_a = ring.wrap_data_key(dek_a, dek_id="dk_a")
    wrapped_b = ring.wrap_data_key(dek_b, dek_id="dk_b")
    assert ring.unwrap_data_key(wrapped_a, dek_id="dk_a") == dek_a
    assert refused(lambda: ring.unwrap_data_key(wrapped_b, dek_id="dk_a"))
    assert refused(lambda: ring.unwrap_data_key(wrapped_a, dek_id="dk_b"))


@pytest.mark.parametrize("suite", [AES_SUITE, SM_SUITE], ids=lambda s: s.name)
def test_rewrap_to_a_new_kek_leaves_the_payload_untouched(suite: crypto.Suite) -> None:
    ring, store = ring_with_a_kek(b"\x51" * 32, suite)
    dek = ring.new_data_key()
    wrapped = ring.wrap_data_key(dek, dek_id="dk_p")
    ctx = {"purpose": "payload", "kind": "minor", "record_id": "mn_p", "version": 1,
           "sealed": False}
    payload = seal(dek, "测试童".encode(), suite=suite, key_id="dk_p", context=ctx)
    payload_before = bytes(payload)

    store.add(ring, "kek-0002", 2)
    ring.refresh()
    assert ring.current_kek_id == "kek-0002"
    rewrapped = ring.rewrap(wrapped, dek_id="dk_p", to_kek="kek-0002")
    assert rewrapped.kek_id == crypto.parse_header(rewrapped.wrapped).key_id == "kek-0002"
    assert rewrapped.wrapped != wrapped.wrapped
    assert payload == payload_before
    new_dek = ring.unwrap_data_key(rewrapped, dek_id="dk_p")
    assert new_dek == dek
    assert open_envelope(new_dek, payload, context=ctx, key_id="dk_p") == "测试童".encode()

    # Once the old KEK is retired only the re-wrapped key opens the payload.
    store.retire("kek-0001")
    ring.refresh()
    assert ring.kek_ids() == ["kek-0002"]
    with pytest.raises(crypto.KeyUnavailableError):
        ring.unwrap_data_key(wrapped, dek_id="dk_p")
    assert open_envelope(ring.unwrap_data_key(rewrapped, dek_id="dk_p"), payload, context=ctx) == (
        "测试童".encode()
    )


def test_keyed_hashes_survive_kek_rotation() -> None:
    ring, store = ring_with_a_kek(b"\x61" * 32, AES_SUITE)
    before = ring.keyed_hash("id_number", "320706201503010019")
    store.add(ring, "kek-0002", 2)
    store.retire("kek-0001")
    ring.refresh()
    assert ring.keyed_hash("id_number", "320706201503010019") == before


def test_a_kek_keeps_its_suite_when_the_deployment_switches() -> None:
    """KEKs and data keys made under SM still open after the setting moves to AES."""
    master = b"\x71" * 32
    store = StaticKekStore()
    sm_ring = KeyRing(master, suite=SM_SUITE, store=store)
    store.add(sm_ring, "kek-0001", 1)
    sm_ring.refresh()
    dek = sm_ring.new_data_key()
    wrapped = sm_ring.wrap_data_key(dek, dek_id="dk_s")
    aes_ring = KeyRing(master, suite=AES_SUITE, store=store)
    aes_ring.refresh()
    assert aes_ring.unwrap_data_key(wrapped, dek_id="dk_s") == dek
    assert crypto.parse_header(aes_ring.wrap_data_key(dek, dek_id="dk_s").wrapped).suite is SM_SUITE
