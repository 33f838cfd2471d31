"""PAdES signatures on issued PDFs (pyHanko), and their check.

``sign`` adds one invisible PAdES B-B signature (CMS, SHA-256, ECDSA P-256) as an
incremental update: its byte range covers the whole file but the signature value
itself, so changing any byte of the signed file breaks it. No network is used: no
timestamp authority, no revocation fetching. ``check`` validates a file's signature
against the deployment's CA with pyHanko's own validator, offline.

A ``SignerKey`` crosses into a render worker through the pipe that starts the job
(pickled, never written to a file), like ``core.crypto.KeyedHasher``; its repr hides
the key.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FIELD_NAME = "ShouhuSignature"
# Room for the CMS object: the org certificate (~0.5 KB), the signed attributes and a 72-byte
# ECDSA signature fit in well under this; reserving it skips pyHanko's dummy signing pass.
RESERVED_BYTES = 3072


class SignerKey:
    """An organisation's signing key and certificate, with the CA certificate above it."""

    __slots__ = ("key_der", "cert_der", "ca_der", "serial")

    def __init__(self, *, key_der: bytes, cert_der: bytes, ca_der: bytes, serial: str) -> None:
        self.key_der = key_der
        self.cert_der = cert_der
        self.ca_der = ca_der
        self.serial = serial

    def __getstate__(self) -> tuple[bytes, bytes, bytes, str]:
        return self.key_der, self.cert_der, self.ca_der, self.serial

    def __setstate__(self, state: tuple[bytes, bytes, bytes, str]) -> None:
        self.key_der, self.cert_der, self.ca_der, self.serial = state

    def __repr__(self) -> str:
        return f"SignerKey(serial={self.serial}, key=<hidden>)"


_signers: dict[tuple[str, bytes], Any] = {}


def _pyhanko_signer(key: SignerKey) -> Any:
    """pyHanko's signer for ``key``, built once per process and key (parsing costs a few ms)."""
    cached = _signers.get((key.serial, key.cert_der))
    if cached is not None:
        return cached
    from asn1crypto import keys as asn1_keys
    from asn1crypto import x509 as asn1_x509
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    signer = signers.SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(key.cert_der),
        signing_key=asn1_keys.PrivateKeyInfo.load(key.key_der),
        cert_registry=SimpleCertificateStore.from_certs([asn1_x509.Certificate.load(key.ca_der)]),  # type: ignore[no-untyped-call]
        # A verifier brings the CA it trusts; an embedded copy would be bytes no signature covers.
        embed_roots=False)
    if len(_signers) > 64:
        _signers.clear()
    _signers[(key.serial, key.cert_der)] = signer
    return signer


def sign(pdf: bytes, key: SignerKey, *, at: datetime) -> bytes:
    """``pdf`` with a PAdES B-B signature by ``key`` made at ``at`` (the issuing clock's time)."""
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
    from pyhanko.sign import signers
    from pyhanko.sign.fields import SigSeedSubFilter

    class _AtTime(signers.PdfSigner):
        """pyHanko takes the signing time from the system clock; Shouhu's clock is injectable."""

        def init_signing_session(self, pdf_out: Any, existing_fields_only: bool = False) -> Any:
            session = super().init_signing_session(pdf_out, existing_fields_only=existing_fields_only)
            session.system_time = at
            return session

    logging.getLogger("pyhanko").setLevel(logging.ERROR)
    meta = signers.PdfSignatureMetadata(field_name=FIELD_NAME, subfilter=SigSeedSubFilter.PADES,
                                        md_algorithm="sha256")
    writer = IncrementalPdfFileWriter(io.BytesIO(pdf), strict=False)
    out = _AtTime(meta, _pyhanko_signer(key)).sign_pdf(writer, bytes_reserved=RESERVED_BYTES)
    signed: bytes = out.getvalue()
    return signed


@dataclass(frozen=True)
class SignatureCheck:
    """pyHanko's verdict on a file's signature, with the facts /verify reports."""

    present: bool
    intact: bool = False  # the signed bytes are unchanged
    valid: bool = False  # the signature value verifies with the signer's key
    trusted: bool = False  # the signer's certificate chains to the CA
    whole_file: bool = False  # the signature covers the whole file
    serial: str | None = None
    signed_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.present and self.intact and self.valid and self.trusted and self.whole_file


def check(pdf: bytes, ca_der: bytes) -> SignatureCheck:
    """Validate the file's last signature against the CA, offline; never raises on bad input."""
    from asn1crypto import x509 as asn1_x509
    from pyhanko.pdf_utils.reader import PdfFileReader
    from pyhanko.sign.validation import validate_pdf_signature
    from pyhanko.sign.validation.errors import SignatureValidationError
    from pyhanko.sign.validation.status import SignatureCoverageLevel
    from pyhanko_certvalidator import ValidationContext

    logging.getLogger("pyhanko").setLevel(logging.CRITICAL)
    logging.getLogger("pyhanko_certvalidator").setLevel(logging.CRITICAL)
    try:
        sigs = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures
    except Exception:  # noqa: BLE001 - any unreadable upload is "no signature"
        return SignatureCheck(present=False)
    if not sigs:
        return SignatureCheck(present=False)
    sig = sigs[-1]
    serial = None
    if not _only_zeros_after_cms(sig):
        return SignatureCheck(present=True)
    try:
        serial = format(sig.signer_cert.serial_number, "x")
        context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(ca_der)], allow_fetching=False,
                                    revocation_mode="soft-fail")
        status = validate_pdf_signature(sig, context)
    except (SignatureValidationError, ValueError, KeyError, TypeError):
        return SignatureCheck(present=True, serial=serial)
    except Exception:  # noqa: BLE001 - a malformed signature container is an invalid signature
        return SignatureCheck(present=True, serial=serial)
    return SignatureCheck(present=True, intact=bool(status.intact), valid=bool(status.valid),
                          trusted=bool(status.trusted),
                          whole_file=status.coverage == SignatureCoverageLevel.ENTIRE_FILE,
                          serial=serial, signed_at=status.signer_reported_dt)


def _only_zeros_after_cms(sig: Any) -> bool:
    """PAdES leaves the signature container's unused room out of every signature (the byte range
    skips /Contents): a changed byte there must fail too, so the room must be zeros, as written."""
    from asn1crypto import cms

    try:
        raw = bytes(sig.sig_object["/Contents"])
        used = len(cms.ContentInfo.load(raw, strict=False).dump())
    except Exception:  # noqa: BLE001 - unreadable container: not a valid signature
        return False
    return not raw[used:].strip(b"\x00")
