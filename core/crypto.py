"""The one door to cryptography: cipher suites, envelopes, key ring and keyed hashes.

Only this module imports ``cryptography.hazmat``. Everything else calls
``seal`` / ``open_envelope`` / ``KeyRing.keyed_hash``. Every failure to decrypt,
whatever its cause (flipped byte, wrong key, wrong associated data, wrong suite,
truncated input), is one ``DecryptionError``. The byte layout is written up in
``docs/formats.md``.
"""

from __future__ import annotations

import hmac as _hmac
import os
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"SH"
FORMAT_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
KEYED_HASH_HEX = 32  # 128-bit keyed hashes for lookups (collision-free at archive scale)


class DecryptionError(Exception):
    """A ciphertext could not be opened. Deliberately says nothing about why."""

    def __init__(self) -> None:
        super().__init__("decryption failed")


class KeyUnavailableError(Exception):
    """A key needed to open a record is gone (retired KEK or shredded data key)."""


# Cipher suites -------------------------------------------------------------


@dataclass(frozen=True)
class Suite:
    """An AEAD cipher with its hash; the pair is fixed per suite, never mixed."""

    id: int
    name: str
    key_bytes: int
    _hash: Callable[[], hashes.HashAlgorithm]

    def encrypt(self, key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
        if len(key) != self.key_bytes:
            raise ValueError(f"{self.name} needs a {self.key_bytes}-byte key")
        if self.id == AES_ID:
            return AESGCM(key).encrypt(nonce, plaintext, ad)
        enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(ad)
        return enc.update(plaintext) + enc.finalize() + enc.tag

    def decrypt(self, key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
        if len(key) != self.key_bytes or len(ciphertext) < TAG_BYTES:
            raise DecryptionError()
        try:
            if self.id == AES_ID:
                return AESGCM(key).decrypt(nonce, ciphertext, ad)
            body, tag = ciphertext[:-TAG_BYTES], ciphertext[-TAG_BYTES:]
            dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
            dec.authenticate_additional_data(ad)
            return dec.update(body) + dec.finalize()
        except (InvalidTag, ValueError) as exc:
            raise DecryptionError() from exc

    def digest(self, data: bytes) -> bytes:
        h = hashes.Hash(self._hash())
        h.update(data)
        return h.finalize()

    def mac(self, key: bytes, data: bytes) -> bytes:
        h = crypto_hmac.HMAC(key, self._hash())
        h.update(data)
        return h.finalize()

    def derive(self, key: bytes, info: bytes, length: int) -> bytes:
        return HKDF(algorithm=self._hash(), length=length, salt=None, info=info).derive(key)


AES_ID = 1
SM_ID = 2
AES_SUITE = Suite(AES_ID, "aes256gcm-sha256", 32, hashes.SHA256)
SM_SUITE = Suite(SM_ID, "sm4gcm-sm3", 16, hashes.SM3)
SUITES: dict[int, Suite] = {AES_ID: AES_SUITE, SM_ID: SM_SUITE}
SUITE_BY_SETTING = {"aes": AES_SUITE, "sm": SM_SUITE}


# Envelopes ----------------------------------------------------------------


def encode_context(context: Mapping[str, str | int | bool]) -> bytes:
    """Canonical, unambiguous bytes for associated data: sorted, length-prefixed pairs."""
    out = bytearray()
    for name in sorted(context):
        value = context[name]
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        k, v = name.encode("utf-8"), text.encode("utf-8")
        out += struct.pack(">H", len(k)) + k + struct.pack(">I", len(v)) + v
    return bytes(out)


def _header(suite: Suite, key_id: str) -> bytes:
    kid = key_id.encode("ascii")
    if len(kid) > 255:
        raise ValueError("key id too long")
    return MAGIC + bytes([FORMAT_VERSION, suite.id, len(kid)]) + kid


def seal(
    key: bytes,
    plaintext: bytes,
    *,
    suite: Suite,
    key_id: str,
    context: Mapping[str, str | int | bool],
    nonce: bytes | None = None,
) -> bytes:
    """Encrypt ``plaintext`` into a self-describing envelope bound to ``context``.

    ``nonce`` is for known-answer test vectors only: production callers leave it
    out and get a fresh random 96-bit nonce. Reusing a nonce under one key breaks
    GCM's confidentiality and authenticity, so never pass one outside tests.
    """
    header = _header(suite, key_id)
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif len(nonce) != NONCE_BYTES:
        raise ValueError(f"the nonce must be {NONCE_BYTES} bytes")
    ct = suite.encrypt(key, nonce, plaintext, header + encode_context(context))
    return header + nonce + ct


@dataclass(frozen=True)
class EnvelopeHeader:
    suite: Suite
    key_id: str
    body_offset: int


def parse_header(envelope: bytes) -> EnvelopeHeader:
    """Read the suite and key id an envelope names; malformed input is a DecryptionError."""
    if len(envelope) < 5 or envelope[:2] != MAGIC or envelope[2] != FORMAT_VERSION:
        raise DecryptionError()
    suite = SUITES.get(envelope[3])
    kid_len = envelope[4]
    offset = 5 + kid_len
    if suite is None or len(envelope) < offset + NONCE_BYTES + TAG_BYTES:
        raise DecryptionError()
    try:
        key_id = envelope[5:offset].decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecryptionError() from exc
    return EnvelopeHeader(suite, key_id, offset)


def open_envelope(
    key: bytes,
    envelope: bytes,
    *,
    context: Mapping[str, str | int | bool],
    key_id: str | None = None,
    suite: Suite | None = None,
) -> bytes:
    """Open an envelope made by :func:`seal`; any mismatch is a DecryptionError.

    ``key_id`` and ``suite``, when given, must equal what the envelope names.
    """
    head = parse_header(envelope)
    if (key_id is not None and head.key_id != key_id) or (
        suite is not None and head.suite.id != suite.id
    ):
        raise DecryptionError()
    nonce = envelope[head.body_offset : head.body_offset + NONCE_BYTES]
    body = envelope[head.body_offset + NONCE_BYTES :]
    ad = envelope[: head.body_offset] + encode_context(context)
    return head.suite.decrypt(key, nonce, body, ad)


# Key ring -----------------------------------------------------------------


@dataclass(frozen=True)
class KekRecord:
    """A key-encryption key as stored: wrapped under the master key."""

    id: str
    version: int
    wrapped: bytes | None  # None once retired
    state: str  # "active" | "retired"


class KekStore:
    """Where KEK records live (the database); implemented in ``core.keys``."""

    def load(self) -> list[KekRecord]:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass(frozen=True)
class WrappedKey:
    kek_id: str
    wrapped: bytes


class KeyedHasher:
    """One purpose's keyed hash as a small picklable callable, for worker processes.

    Pickling it copies the subkey (never the master key) to the worker through a
    pipe; nothing is written to a file. Its repr hides the key.
    """

    __slots__ = ("_suite_id", "_key", "_bytes")

    def __init__(self, suite: Suite, key: bytes, hex_chars: int) -> None:
        self._suite_id = suite.id
        self._key = key
        self._bytes = hex_chars // 2

    def __call__(self, value: str | bytes) -> str:
        data = value.encode("utf-8") if isinstance(value, str) else value
        return SUITES[self._suite_id].mac(self._key, data)[: self._bytes].hex()

    def __getstate__(self) -> tuple[int, bytes, int]:
        return self._suite_id, self._key, self._bytes

    def __setstate__(self, state: tuple[int, bytes, int]) -> None:
        self._suite_id, self._key, self._bytes = state

    def __repr__(self) -> str:
        return f"KeyedHasher(suite={SUITES[self._suite_id].name}, hex_chars={self._bytes * 2}, key=<hidden>)"


class KeyRing:
    """Versioned key-encryption keys under one master key, plus keyed-hash subkeys.

    The master key only wraps KEKs and derives the keyed-hash subkeys; KEKs wrap
    the per-record data keys. Keyed-hash subkeys do not depend on KEKs, so KEK
    rotation never changes a lookup hash.
    """

    def __init__(
        self,
        master_key: bytes,
        *,
        suite: Suite,
        store: KekStore | None = None,
        refresh_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.suite = suite
        self._store = store
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._keks: dict[str, tuple[bytes, Suite]] = {}
        self._current: str | None = None
        self._loaded_at: float | None = None
        # Wrapping KEKs always uses AES-256-GCM/SHA-256 or SM4/SM3 per the suite of
        # the deployment; the wrap key is derived, never the master key itself.
        self._master = master_key
        self._hash_keys: dict[str, bytes] = {}
        self._hash_suite: Suite | None = None

    # master-derived material
    def _kek_wrap_key(self, suite: Suite) -> bytes:
        return suite.derive(self._master, b"shouhu/v1/kek-wrap", suite.key_bytes)

    @property
    def hash_suite(self) -> Suite:
        """The suite of keyed hashes: fixed for an archive, whatever ``cipher_suite`` says now."""
        return self._hash_suite or self.suite

    def pin_hash_suite(self, suite: Suite) -> None:
        """Keyed hashes are lookup keys stored in the database: they must not change when
        the deployment switches cipher suites, so the archive pins the suite it started with."""
        if self._hash_suite is None or self._hash_suite.id != suite.id:
            self._hash_suite = suite
            self._hash_keys = {}

    def hash_subkey(self, purpose: str) -> bytes:
        """The keyed-hash key for one purpose (``id_number``, ``search``, ``audit`` ...)."""
        key = self._hash_keys.get(purpose)
        if key is None:
            key = self.hash_suite.derive(self._master, b"shouhu/v1/keyed-hash/" + purpose.encode(), 32)
            self._hash_keys[purpose] = key
        return key

    def keyed_hash(self, purpose: str, value: str | bytes, *, hex_chars: int = KEYED_HASH_HEX) -> str:
        """HMAC of ``value`` under the purpose's subkey, hex, truncated to ``hex_chars``."""
        data = value.encode("utf-8") if isinstance(value, str) else value
        return self.hash_suite.mac(self.hash_subkey(purpose), data)[: hex_chars // 2].hex()

    def keyed_hasher(self, purpose: str, *, hex_chars: int = KEYED_HASH_HEX) -> KeyedHasher:
        """``keyed_hash`` for one purpose as a picklable callable (same results), for worker processes."""
        return KeyedHasher(self.hash_suite, self.hash_subkey(purpose), hex_chars)

    def check_value(self) -> str:
        """A value that identifies the master key without revealing it (for doctor/readyz)."""
        return self.keyed_hash("key-check", b"shouhu master key check", hex_chars=16)

    # KEKs
    def new_kek_material(self) -> bytes:
        return os.urandom(self.suite.key_bytes)

    def wrap_kek(self, kek_id: str, version: int, material: bytes) -> bytes:
        return seal(
            self._kek_wrap_key(self.suite),
            material,
            suite=self.suite,
            key_id="master",
            context={"purpose": "kek", "kek_id": kek_id, "version": version},
        )

    def _unwrap_kek(self, rec: KekRecord) -> bytes:
        if rec.wrapped is None:
            raise RuntimeError("a retired KEK (no wrapped key) cannot be unwrapped")
        head = parse_header(rec.wrapped)
        return open_envelope(
            self._kek_wrap_key(head.suite),
            rec.wrapped,
            context={"purpose": "kek", "kek_id": rec.id, "version": rec.version},
        )

    def refresh(self) -> None:
        """Re-read KEKs from the store (another process may have rotated)."""
        if self._store is None:
            return
        records = self._store.load()
        keks: dict[str, tuple[bytes, Suite]] = {}
        current: tuple[int, str] | None = None
        for rec in records:
            if rec.state != "active" or rec.wrapped is None:
                continue
            keks[rec.id] = (self._unwrap_kek(rec), parse_header(rec.wrapped).suite)
            if current is None or rec.version > current[0]:
                current = (rec.version, rec.id)
        with self._lock:
            self._keks = keks
            self._current = current[1] if current else None
            self._loaded_at = self._clock()

    def add_kek(self, kek_id: str, material: bytes, suite: Suite | None = None) -> None:
        """Register a KEK in memory (used when no store is attached, e.g. in vectors)."""
        with self._lock:
            self._keks[kek_id] = (material, suite or self.suite)
            self._current = kek_id

    def _maybe_refresh(self) -> None:
        if self._store is None:
            return
        if self._loaded_at is None or self._clock() - self._loaded_at >= self._refresh_seconds:
            self.refresh()

    @property
    def current_kek_id(self) -> str:
        self._maybe_refresh()
        if self._current is None:
            raise KeyUnavailableError("no active key-encryption key; run `shouhu init`")
        return self._current

    def kek_ids(self) -> list[str]:
        self._maybe_refresh()
        return sorted(self._keks)

    def _kek(self, kek_id: str) -> tuple[bytes, Suite]:
        self._maybe_refresh()
        key = self._keks.get(kek_id)
        if key is None and self._store is not None:
            self.refresh()  # a KEK made by another process since our last read
            key = self._keks.get(kek_id)
        if key is None:
            raise KeyUnavailableError(f"key-encryption key {kek_id} is not available")
        return key

    # data keys
    def new_data_key(self) -> bytes:
        return os.urandom(self.suite.key_bytes)

    def wrap_data_key(
        self, dek: bytes, *, dek_id: str, kek_id: str | None = None, purpose: str = "dek"
    ) -> WrappedKey:
        """Wrap a data key. ``purpose`` is ``dek``, or ``sealed-dek`` for sealed records, whose
        keys therefore never unwrap through the ordinary path."""
        kid = kek_id or self.current_kek_id
        kek, suite = self._kek(kid)
        env = seal(kek, dek, suite=suite, key_id=kid, context={"purpose": purpose, "dek_id": dek_id})
        return WrappedKey(kid, env)

    def unwrap_data_key(self, wrapped: WrappedKey, *, dek_id: str, purpose: str = "dek") -> bytes:
        head = parse_header(wrapped.wrapped)
        if head.key_id != wrapped.kek_id:
            raise DecryptionError()
        kek, suite = self._kek(wrapped.kek_id)
        if head.suite.id != suite.id:
            raise DecryptionError()
        return open_envelope(kek, wrapped.wrapped, context={"purpose": purpose, "dek_id": dek_id})

    def rewrap(self, wrapped: WrappedKey, *, dek_id: str, to_kek: str, purpose: str = "dek") -> WrappedKey:
        """Re-wrap a data key under another KEK; the payload it protects is untouched."""
        dek = self.unwrap_data_key(wrapped, dek_id=dek_id, purpose=purpose)
        return self.wrap_data_key(dek, dek_id=dek_id, kek_id=to_kek, purpose=purpose)


def constant_time_equal(a: str | bytes, b: str | bytes) -> bool:
    if isinstance(a, str):
        a = a.encode()
    if isinstance(b, str):
        b = b.encode()
    return _hmac.compare_digest(a, b)


def sha256_hex(data: bytes) -> str:
    """Plain SHA-256, for content fingerprints that third parties recompute."""
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize().hex()


class Sha256Stream:
    """Plain SHA-256 fed in chunks (a streamed upload's fingerprint, without holding it whole)."""

    def __init__(self) -> None:
        self._h = hashes.Hash(hashes.SHA256())

    def update(self, data: bytes) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.finalize().hex()


def random_token(nbytes: int = 32) -> bytes:
    return os.urandom(nbytes)


def suites_in(envelopes: Iterable[bytes]) -> set[str]:
    """Names of the suites a set of envelopes uses (for `shouhu keys status`)."""
    return {parse_header(e).suite.name for e in envelopes}


# Signatures (audit checkpoints) ----------------------------------------------------

class SigningKey:
    """An Ed25519 key for signing audit checkpoints, kept apart from content keys."""

    def __init__(self, seed: bytes):
        if len(seed) != 32:
            raise ValueError("an Ed25519 seed is 32 bytes")
        self._key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id = sha256_hex(self.public_key)[:16]

    @staticmethod
    def new_seed() -> bytes:
        return os.urandom(32)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def public_pem(self) -> str:
        return self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True if ``signature`` is a valid Ed25519 signature of ``message``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# X.509 (document signatures) -----------------------------------------------------------
#
# The deployment's own CA and each organisation's signing certificate. ECDSA on P-256 with
# SHA-256: 128-bit security like RSA-3072, at a fraction of its signing time and size (a
# 72-byte signature, a ~500-byte certificate), and verified by every PAdES reader. SM2 is not
# offered (see docs/security.md). Keys travel as PKCS#8 DER, certificates and CRLs as DER;
# callers seal private keys with the vault like any data key's payload.

SIGNATURE_CURVE = "P-256"


@dataclass(frozen=True)
class CertificateFacts:
    """What the database keeps beside a certificate's DER."""

    der: bytes
    serial: str  # hex, lower case
    not_before: datetime
    not_after: datetime
    fingerprint: str  # sha256 of the DER, hex


def new_signature_key() -> bytes:
    """A fresh ECDSA P-256 private key, PKCS#8 DER (unencrypted: seal it before storing)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _private_key(der: bytes) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("a signature key must be an EC key")
    return key


def _name(common_name: str, organisation: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _facts(cert: Any) -> CertificateFacts:
    der = cert.public_bytes(serialization.Encoding.DER)
    return CertificateFacts(der=der, serial=format(cert.serial_number, "x"), not_before=cert.not_valid_before_utc,
                            not_after=cert.not_valid_after_utc, fingerprint=sha256_hex(der))


def _usage(*, sign: bool, ca: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(digital_signature=sign, content_commitment=sign, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def self_signed_ca(key_der: bytes, *, common_name: str, organisation: str, now: datetime,
                   days: int) -> CertificateFacts:
    """The deployment's root: a self-signed CA certificate that signs org certificates and CRLs."""
    from cryptography import x509

    key = _private_key(key_der)
    name = _name(common_name, organisation)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(sign=False, ca=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return _facts(cert)


def issue_certificate(ca_key_der: bytes, ca_cert_der: bytes, subject_key_der: bytes, *, common_name: str,
                      organisation: str, now: datetime, days: int) -> CertificateFacts:
    """A document-signing certificate for ``subject_key_der``'s public key, issued by the CA."""
    from cryptography import x509

    ca_key = _private_key(ca_key_der)
    ca_cert = x509.load_der_x509_certificate(ca_cert_der)
    public = _private_key(subject_key_der).public_key()
    not_after = min(now + timedelta(days=days), ca_cert.not_valid_after_utc)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name, organisation))
            .issuer_name(ca_cert.subject).public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(sign=True, ca=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _facts(cert)


def revocation_list(ca_key_der: bytes, ca_cert_der: bytes, revoked: Iterable[tuple[str, datetime]], *,
                    now: datetime, next_update: datetime, number: int) -> bytes:
    """A CRL (DER) signed by the CA, listing ``(serial hex, revoked at)`` pairs."""
    from cryptography import x509

    ca_cert = x509.load_der_x509_certificate(ca_cert_der)
    builder = (x509.CertificateRevocationListBuilder().issuer_name(ca_cert.subject)
               .last_update(now).next_update(next_update)
               .add_extension(x509.CRLNumber(number), critical=False))
    for serial, at in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(int(serial, 16)).revocation_date(at).build())
    return builder.sign(_private_key(ca_key_der), hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pem(der: bytes, label: str = "CERTIFICATE") -> str:
    """DER as PEM text (``label``: CERTIFICATE, X509 CRL)."""
    import base64
    import textwrap

    body = "\n".join(textwrap.wrap(base64.b64encode(der).decode("ascii"), 64))
    return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----\n"
