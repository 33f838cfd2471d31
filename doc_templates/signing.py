"""PAdES signatures on issued PDFs (pyHanko), and their check.

An issue is signed in the PDF's own write (``Renderer.pdf(..., signer=, at=)``): ``SignatureSlot`` adds
the signature dictionary, the signature field with its invisible widget and the catalog's form to the
document WeasyPrint is about to write (its ``finisher``), with room for the byte range and the signature
value; once written, ``SignatureSlot.fill`` patches the byte range, hashes the two ranges and writes the
CMS object pyHanko builds from that digest into the room. One revision, one write, nothing parsed again.

``sign`` adds the same kind of signature to a PDF that already exists, as an incremental update via
pyHanko (stamped sealed releases).

Either way it is one invisible PAdES B-B signature (CMS, SHA-256, ECDSA P-256): its byte range covers
the whole file but the signature value itself, so changing any byte of the signed file breaks it. No
network is used: no timestamp authority, no revocation fetching. ``check`` validates a file's signature
against the deployment's CA with pyHanko's own validator, offline.

A ``SignerKey`` crosses into a render worker through the pipe that starts the job
(pickled, never written to a file), like ``core.crypto.KeyedHasher``; its repr hides
the key.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FIELD_NAME = "ShouhuSignature"
# Room for the CMS object: the org certificate (~0.5 KB), the signed attributes and a 72-byte
# ECDSA signature fit in well under this; reserving it skips pyHanko's dummy signing pass.
RESERVED_BYTES = 3072
# Width of the /ByteRange array as written in one write: "[0 a b c]" padded with spaces, so the numbers,
# known only once the file is written, go in without moving a byte.
BYTE_RANGE_WIDTH = 64


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
    signer.signed_attr_prov_spec = _pades_attributes(signer.signing_cert)
    if len(_signers) > 64:
        _signers.clear()
    _signers[(key.serial, key.cert_der)] = signer
    return signer


def _pades_attributes(cert: Any) -> Any:
    """pyHanko's own signed attributes for a PAdES signature by ``cert`` (CAdESSignedAttributeProviderSpec:
    content type, message digest, signing-certificate-v2; no signing time, which PAdES keeps in /M), with the
    signing-certificate-v2 value built by pyHanko once per key and read back from its DER for each signature.

    Why: asn1crypto re-encodes a freshly built value at every level above it each time a level is encoded
    (a built object never counts as unchanged), about twice per level, so that one nested value cost ~10 of
    the ~12 ms pyHanko took to build a CMS object. Read back from DER it is encoded once. Same bytes
    (tests compare); the signer is only ever used for PAdES B-B without a timestamp, as both paths here do.
    """
    from asn1crypto import tsp
    from pyhanko.sign import attributes
    from pyhanko.sign.general import as_signing_certificate_v2
    from pyhanko.sign.signers.pdf_cms import CAdESSignedAttributeProviderSpec, PdfCMSSignedAttributes

    class SigningCertificateV2Once(attributes.SigningCertificateV2Provider):
        def __init__(self) -> None:
            super().__init__(signing_cert=cert)
            self.der = as_signing_certificate_v2(cert).dump()

        async def build_attr_value(self, dry_run: bool = False) -> Any:
            return tsp.SigningCertificateV2.load(self.der)

    once = SigningCertificateV2Once()

    class PadesAttributes(CAdESSignedAttributeProviderSpec):
        def signed_attr_providers(self, data_digest: bytes, digest_algorithm: str) -> Any:
            for provider in super().signed_attr_providers(data_digest, digest_algorithm):
                yield once if isinstance(provider, attributes.SigningCertificateV2Provider) else provider

    return PadesAttributes(attr_settings=PdfCMSSignedAttributes(), signing_cert=cert, is_pades=True, timestamper=None)


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


def cms(digest: bytes, key: SignerKey, *, at: datetime) -> bytes:
    """The DER of the detached CMS object (PAdES B-B) over a SHA-256 ``digest``, built by pyHanko.

    PAdES takes the signing time from the signature dictionary's /M, not from a CMS attribute (pyHanko
    leaves signingTime out when ``use_pades``); ``at`` is passed as pdf_signer.PdfSigner passes it."""
    from pyhanko.sign.signers.pdf_cms import PdfCMSSignedAttributes

    logging.getLogger("pyhanko").setLevel(logging.ERROR)
    signed = asyncio.run(_pyhanko_signer(key).async_sign(
        digest, "sha256", use_pades=True, signed_attr_settings=PdfCMSSignedAttributes(signing_time=at)))
    der: bytes = signed.dump()
    return der


def fill_contents(out: bytearray, start: int, end: int, key: SignerKey, *, at: datetime) -> None:
    """Sign ``out`` in place: ``out[start:end]`` is the signature value's room (``<`` zeros ``>``), which the
    byte range leaves out; the CMS over the rest goes into it as hex, the unused room stays zeros."""
    if out[start:start + 1] != b"<" or out[end - 1:end] != b">":
        raise ValueError("no room for the signature value at the given offsets")
    view = memoryview(out)
    md = hashlib.sha256(view[:start])
    md.update(view[end:])
    view.release()
    value = cms(md.digest(), key, at=at).hex().upper().encode("ascii")
    if len(value) > end - start - 2:
        raise ValueError(f"signature value of {len(value)} hex digits does not fit {end - start - 2}")
    out[start + 1:start + 1 + len(value)] = value


class SignatureSlot:
    """A PAdES signature made in the PDF's own write, by ``key`` at ``at`` (the issuing clock's time).

    ``add`` is WeasyPrint's ``write_pdf(finisher=...)``: it adds to the pydyf document, before it is
    written, what pyHanko's invisible signature field is (pdf_signer, fields): the signature dictionary
    (written as a plain indirect object, outside the compressed object stream, so its byte offsets are the
    file's), the signature field merged with its widget on the first page, the page's /Annots and the
    catalog's /AcroForm, and the developer extensions pyHanko declares for a PAdES ECDSA P-256 signature.
    ``fill`` takes the written bytes and returns them signed: the byte range set (same width), the two
    ranges hashed, pyHanko's CMS over that digest in /Contents.
    """

    def __init__(self, key: SignerKey, at: datetime) -> None:
        self.key = key
        self.at = at
        self.signature: Any = None

    def add(self, _document: Any, pdf: Any) -> None:
        import pydyf  # type: ignore[import-untyped]
        from pyhanko.pdf_utils.generic import pdf_date

        signature = _signature_dictionary(pdf_date(self.at))
        pdf.add_object(signature)
        first_page = pdf.objects[pdf.pages["Kids"][0]]
        widget = pydyf.Dictionary({
            "FT": "/Sig", "T": pydyf.String(FIELD_NAME), "Type": "/Annot", "Subtype": "/Widget",
            # Print (PDF/A wants every annotation printable) and locked, as pyHanko writes it; a zero-size
            # /Rect is an invisible widget, which PDF/A lets go without an appearance stream.
            "F": 132, "Rect": pydyf.Array([0, 0, 0, 0]), "P": first_page.reference, "V": signature.reference,
        })
        pdf.add_object(widget)
        if "Annots" not in first_page:
            first_page["Annots"] = pydyf.Array()
        first_page["Annots"].append(widget.reference)
        form = pdf.catalog.get("AcroForm")
        if form is None:
            form = pydyf.Dictionary({"Fields": pydyf.Array()})
            pdf.add_object(form)
            pdf.catalog["AcroForm"] = form.reference
        form["Fields"].append(widget.reference)
        form["SigFlags"] = 3
        # What pyHanko's signer registers for this signature: the ESIC extension (PAdES on PDF 1.7), then
        # ISO/TS 32002 (ECDSA on a named curve) with the declared version 2.0 it requires.
        pdf.catalog["Extensions"] = pydyf.Dictionary({
            "ESIC": pydyf.Dictionary({"Type": "/DeveloperExtensions", "BaseVersion": "/1.7", "ExtensionLevel": 1}),
            "ISO_": pydyf.Array([pydyf.Dictionary({
                "Type": "/DeveloperExtensions", "BaseVersion": "/2.0", "ExtensionLevel": 32002,
                "URL": pydyf.String("https://www.iso.org/standard/45875.html"),
                "ExtensionRevision": pydyf.String(":2022")})]),
        })
        pdf.catalog["Version"] = "/2.0"
        self.signature = signature

    def fill(self, written: bytes) -> bytes:
        if self.signature is None:
            raise RuntimeError("the signature slot was never added to the document")
        at = self.signature.offset + len(f"{self.signature.number} 0 obj\n")
        if written[at:at + len(self.signature.data)] != self.signature.data:
            raise RuntimeError("the signature dictionary is not where the writer said it wrote it")
        start = at + self.signature.data.index(b"/Contents <") + len(b"/Contents ")
        end = start + 2 + RESERVED_BYTES
        byte_range = at + self.signature.data.index(b"/ByteRange ") + len(b"/ByteRange ")
        out = bytearray(written)
        ranges = b"[0 %d %d %d]" % (start, end, len(out) - end)
        out[byte_range:byte_range + BYTE_RANGE_WIDTH] = ranges.ljust(BYTE_RANGE_WIDTH)
        fill_contents(out, start, end, self.key, at=self.at)
        return bytes(out)


def _signature_dictionary(signing_time: str) -> Any:
    """The signature dictionary with room for /ByteRange and /Contents, as one uncompressed indirect object."""
    import pydyf

    raw: bytes = (b"<</Type /Sig/Filter /Adobe.PPKLite/SubFilter /ETSI.CAdES.detached"
                  + b"/M " + pydyf.String(signing_time).data
                  + b"/ByteRange " + b"[0 0 0 0]".ljust(BYTE_RANGE_WIDTH)
                  + b"/Contents <" + b"0" * RESERVED_BYTES + b">>>")

    class SignatureDictionary(pydyf.Dictionary):  # type: ignore[misc]
        @property
        def compressible(self) -> bool:
            return False  # byte offsets must be the file's own: not inside an object stream

        @property
        def data(self) -> bytes:
            return raw

    return SignatureDictionary()


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
