"""An issue signed in the PDF's own write (``Renderer.pdf(..., signer=, at=)``): one revision, one signature.

Real WeasyPrint writes, pyHanko builds the CMS and validates it (its Python validator and its own
command-line tool, offline), keys under a CA made for the run (valid from now, so the checks hold on any
date). Nothing under test is mocked.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pypdf
import pytest
from pyhanko.pdf_utils.generic import pdf_date
from pyhanko.pdf_utils.reader import PdfFileReader

from doc_templates import signing
from doc_templates.kinds import KINDS
from doc_templates.render import DocumentMeta, Renderer
from tests.doc_templates.test_documents_pdf import check_pdfa, read

# Rendering happens in this process: WeasyPrint leaves its colour profile file to the garbage collector.
pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
PYHANKO = str(Path(sys.executable).with_name("pyhanko"))
NOW = datetime.now(UTC).replace(microsecond=0)
# The issuing clock's time in another zone: /M keeps the offset, the instant is the same.
AT = (NOW - timedelta(minutes=1)).astimezone(timezone(timedelta(hours=8)))


def make_signer(common_name: str = "连云港市人民检察院") -> signing.SignerKey:
    from core import crypto

    ca_key = crypto.new_signature_key()
    ca = crypto.self_signed_ca(ca_key, common_name="Test CA", organisation="test", now=NOW, days=30)
    key = crypto.new_signature_key()
    cert = crypto.issue_certificate(ca_key, ca.der, key, common_name=common_name, organisation="test", now=NOW,
                                    days=30)
    return signing.SignerKey(key_der=key, cert_der=cert.der, ca_der=ca.der, serial=cert.serial)


@pytest.fixture(scope="module")
def key() -> signing.SignerKey:
    return make_signer()


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def meta(kind: str = "sealed_query_reply") -> DocumentMeta:
    k = KINDS[kind]
    return DocumentMeta(kind=k.kind, kind_title=k.title, issuer="连云港市人民检察院", doc_number="连检〔2026〕12号",
                        issued_on=NOW.date(), created_at=NOW, verification_code="7K3M-Q9TX-R2WD",
                        verify_url="https://verify.example.org/api/v1/verify/7K3MQ9TXR2WD")


@pytest.fixture(scope="module")
def signed(renderer: Renderer, key: signing.SignerKey) -> bytes:
    k = KINDS["sealed_query_reply"]
    return renderer.pdf(k, k.validate(k.example), meta(), signer=key, at=AT)


def sig_object(pdf: bytes) -> Any:
    sigs = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures
    assert len(sigs) == 1
    return sigs[0]


def test_signed_in_the_one_write_validates_against_the_ca(signed: bytes, key: signing.SignerKey) -> None:
    check = signing.check(signed, key.ca_der)
    assert check.ok, check
    assert check.whole_file and check.intact and check.valid and check.trusted
    assert check.serial == key.serial
    assert check.signed_at == AT
    # One write: one revision, one cross-reference section, no incremental update.
    assert signed.count(b"%%EOF") == 1 and signed.rstrip().endswith(b"%%EOF")
    reader = PdfFileReader(io.BytesIO(signed), strict=False)
    assert reader.xrefs.total_revisions == 1


def test_signature_dictionary_field_and_widget(signed: bytes) -> None:
    sig = sig_object(signed)
    obj = sig.sig_object
    assert obj["/Type"] == "/Sig" and obj["/Filter"] == "/Adobe.PPKLite"
    assert obj["/SubFilter"] == "/ETSI.CAdES.detached"
    assert str(obj["/M"]) == str(pdf_date(AT))
    byte_range = list(obj["/ByteRange"])
    start = signed.index(b"/Contents <") + len(b"/Contents ")
    end = start + 2 + signing.RESERVED_BYTES
    assert byte_range == [0, start, end, len(signed) - end]
    # The signature dictionary is a plain indirect object (its offsets are in the file, not in an object stream).
    assert re.search(rb"\d+ 0 obj\n<</Type /Sig", signed)

    field = sig.sig_field
    assert field["/FT"] == "/Sig" and field["/T"] == signing.FIELD_NAME
    assert field["/Subtype"] == "/Widget" and field["/F"] == 132 and list(field["/Rect"]) == [0, 0, 0, 0]
    reader = pypdf.PdfReader(io.BytesIO(signed))
    page = reader.pages[0]
    assert field.raw_get("/P").idnum == page.indirect_reference.idnum
    annots = [a.get_object() for a in page["/Annots"]]
    assert [a for a in annots if a.get("/FT") == "/Sig"][0]["/T"] == signing.FIELD_NAME
    form = reader.trailer["/Root"]["/AcroForm"]
    assert form["/SigFlags"] == 3
    assert [f.get_object()["/T"] for f in form["/Fields"]] == [signing.FIELD_NAME]
    # PDF/A: every annotation printable; an invisible widget (zero-size /Rect) needs no appearance.
    assert all(int(a["/F"]) & 4 for a in annots)


def test_still_pdfa_2b_with_one_set_of_metadata(signed: bytes) -> None:
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    reading = read(signed)
    check_pdfa(signed, reading)
    # The information dictionary and the XMP packet were written together (no later revision changes one).
    xmp = reading.xmp.decode("utf-8")
    assert reading.info["Producer"] in xmp and reading.info["Title"] in xmp


def test_one_flipped_byte_anywhere_fails(signed: bytes, key: signing.SignerKey) -> None:
    start = signed.index(b"/Contents <") + len(b"/Contents <")
    end = signed.index(b">", start)
    used = len(signed[start:end].rstrip(b"0"))
    special = [0, 5, start - 1, start, start + used - 12, start + used + 100, end - 1, end,
               signed.index(b"/ByteRange") + 14, signed.index(b"/M (") + 6, len(signed) - 2, len(signed) - 1]
    spread = range(0, len(signed), max(1, len(signed) // 40))
    for at in sorted({*special, *spread}):
        tampered = bytearray(signed)
        tampered[at] ^= 0x01
        assert not signing.check(bytes(tampered), key.ca_der).ok, f"a flipped byte at {at} of {len(signed)} validates"


def test_a_foreign_key_over_the_same_bytes_is_intact_but_not_trusted(signed: bytes, key: signing.SignerKey) -> None:
    forger = make_signer()  # same name, a CA of its own
    start = signed.index(b"/Contents <") + len(b"/Contents ")
    end = start + 2 + signing.RESERVED_BYTES
    forged = bytearray(signed)
    forged[start + 1:end - 1] = b"0" * signing.RESERVED_BYTES
    signing.fill_contents(forged, start, end, forger, at=AT)
    check = signing.check(bytes(forged), key.ca_der)
    assert check.intact and check.valid and not check.trusted and not check.ok
    assert signing.check(bytes(forged), forger.ca_der).ok


def test_batch_parts_are_signed_each_in_its_write(renderer: Renderer, key: signing.SignerKey) -> None:
    k = KINDS["sealed_query_reply"]
    items = [(k, k.validate(k.example), meta()) for _ in range(2)]
    _combined, parts = renderer.render_set(items, signer=key)
    for part in parts:
        check = signing.check(part, key.ca_der)
        assert check.ok and check.signed_at == NOW, check


def test_pyhanko_cli_validates_it_offline(signed: bytes, key: signing.SignerKey, tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from tests.archive.test_document_signature import offline

    ca = tmp_path / "ca.pem"
    ca.write_bytes(x509.load_der_x509_certificate(key.ca_der).public_bytes(Encoding.PEM))
    good = tmp_path / "issued.pdf"
    good.write_bytes(signed)
    done = subprocess.run(offline([PYHANKO, "sign", "validate", "--trust", str(ca), "--trust-replace",
                                   "--pretty-print", str(good)]),
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "judged VALID" in done.stdout and "covers the entire file" in done.stdout


def test_the_cms_is_built_by_pyhanko_with_its_own_attributes(key: signing.SignerKey) -> None:
    """The signer's signing-certificate-v2 value is built once per key (signing._pades_attributes): the signed
    attributes and certificates are byte for byte what a plain pyHanko signer puts in, every time."""
    import asyncio
    import hashlib

    from asn1crypto import cms, keys, x509
    from pyhanko.sign import signers
    from pyhanko_certvalidator.registry import SimpleCertificateStore

    plain = signers.SimpleSigner(signing_cert=x509.Certificate.load(key.cert_der),
                                 signing_key=keys.PrivateKeyInfo.load(key.key_der),
                                 cert_registry=SimpleCertificateStore.from_certs([x509.Certificate.load(key.ca_der)]),
                                 embed_roots=False)
    for n in range(3):
        digest = hashlib.sha256(b"document %d" % n).digest()
        ours = cms.ContentInfo.load(signing.cms(digest, key, at=AT))["content"]
        theirs = asyncio.run(plain.async_sign(digest, "sha256", use_pades=True))["content"]
        assert ours["signer_infos"][0]["signed_attrs"].dump() == theirs["signer_infos"][0]["signed_attrs"].dump()
        assert ours["certificates"].dump() == theirs["certificates"].dump()
        assert [a["type"].native for a in ours["signer_infos"][0]["signed_attrs"]] == [
            "content_type", "message_digest", "signing_certificate_v2"]
