"""Issued PDFs carry a PAdES signature by the issuing org's key under the deployment's CA.

Everything is real: WeasyPrint renders, pyHanko signs and validates (its Python validator and
its own command-line tool, offline), the CA and the org keys come from ``shouhu init`` and the
first issue, the CRL is parsed with ``cryptography``. Nothing under test is mocked.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pypdf
import pytest
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.status import SignatureCoverageLevel
from pyhanko_certvalidator import ValidationContext
from sqlalchemy import select

from access_control.identity import Org, User
from archive.models import Disclosure
from archive.pki import SigningCertificate
from doc_templates import signing
from runtime import Runtime
from tests.access_control.test_sealed import APPROVE_REASON, COURT, CUST, SEALED_NAME, apply, decide, make_case
from tests.archive.test_documents import make_minor, public_client, referral
from tests.conftest import Tokens, run_sql
from tests.leak_support import pg_dump, scan_dump, scan_tree

API = "/api/v1"
HAIZHOU_ORG = "连云港市海州区民政局"
PYHANKO = str(Path(sys.executable).with_name("pyhanko"))


def issue(client: Any, tokens: Tokens) -> dict[str, Any]:
    cw = tokens["caseworker.haizhou"]
    r = client.post(f"{API}/documents", json=referral(make_minor(client, cw)), headers=cw)
    assert r.status_code == 201, r.text
    issued: dict[str, Any] = r.json()
    r = client.get(f"{API}/documents/{issued['id']}/pdf", headers=cw)
    assert r.status_code == 200
    issued["pdf"] = r.content
    return issued


def ca_der(client: Any) -> bytes:
    r = client.get(f"{API}/pki/ca.pem")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-pem-file")
    return x509.load_pem_x509_certificate(r.content).public_bytes(encoding=_der())


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


def pyhanko_status(pdf: bytes, ca: bytes) -> Any:
    """pyHanko's own validator, trusting only the deployment's CA, fetching nothing."""
    sig = PdfFileReader(io.BytesIO(pdf), strict=False).embedded_signatures[-1]
    context = ValidationContext(trust_roots=[asn1_x509.Certificate.load(ca)], allow_fetching=False)
    return validate_pdf_signature(sig, context)


def flipped(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def contents_offset(pdf: bytes) -> int:
    """Where the signature value (the /Contents hex string of the signature dictionary) starts."""
    at = pdf.rfind(b"/Contents <")
    assert at > 0
    return at + len(b"/Contents <")


def positions(pdf: bytes) -> list[int]:
    """Bytes to flip: the header, the middle of the rendered document, the signature value itself
    (the ECDSA signature at the end of the CMS object), the container's unused room (zeros that no
    PAdES signature covers: the check requires them to be zeros), the signature dictionary's byte
    range, the last byte."""
    start = contents_offset(pdf)
    end = pdf.index(b">", start)
    used = len(pdf[start:end].rstrip(b"0"))
    return [5, len(pdf) // 3, start + used - 12, start + used + 100, pdf.rfind(b"/ByteRange") + 14, len(pdf) - 2]


def org_serial(rt: Runtime, name: str) -> str:
    with rt.db.session() as s:
        org = s.scalar(select(Org).where(Org.name == name))
        assert org is not None
        row = s.scalar(select(SigningCertificate).where(SigningCertificate.current_for == org.id))
        assert row is not None
        return row.serial


# 1. signed, whole file, validated by pyHanko; one flipped byte fails ------------------------------


@pytest.mark.slow
def test_issued_pdf_is_signed_by_the_issuer_under_the_deployment_ca(client, tokens, rt):
    issued = issue(client, tokens)
    pdf = issued["pdf"]
    ca = ca_der(client)
    # The stored sha256 is the signed file's.
    assert hashlib.sha256(pdf).hexdigest() == issued["sha256"]
    status = pyhanko_status(pdf, ca)
    assert status.intact and status.valid and status.trusted and status.bottom_line
    assert status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    assert format(status.signing_cert.serial_number, "x") == org_serial(rt, HAIZHOU_ORG)
    assert HAIZHOU_ORG in status.signing_cert.subject.human_friendly
    # The CA is named after the deployment and is the signer's issuer.
    assert status.signing_cert.issuer == asn1_x509.Certificate.load(ca).subject
    assert rt.settings.deployment_name in asn1_x509.Certificate.load(ca).subject.human_friendly
    # Still a readable PDF with the document on it.
    assert issued["doc_number"] in pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()

    for at in positions(pdf):
        check = signing.check(flipped(pdf, at), ca)
        assert not check.ok, f"a flipped byte at {at} of {len(pdf)} still validates"

    # A signature by a key the CA never certified is not trusted.
    other = issue_with_foreign_key(pdf)
    assert not signing.check(other, ca).ok and signing.check(other, ca).intact


def issue_with_foreign_key(pdf: bytes) -> bytes:
    """``pdf``'s very bytes signed by a self-made CA's certificate (a forger's): its CMS object in place of
    the issuer's, over the same byte range."""
    from datetime import UTC, datetime

    from core import crypto

    ca_key = crypto.new_signature_key()
    now = datetime.now(UTC)
    ca = crypto.self_signed_ca(ca_key, common_name="伪造根证书", organisation="伪造", now=now, days=30)
    key = crypto.new_signature_key()
    cert = crypto.issue_certificate(ca_key, ca.der, key, common_name=HAIZHOU_ORG, organisation="伪造", now=now,
                                    days=30)
    start = contents_offset(pdf) - 1
    end = pdf.index(b">", start) + 1
    forged = bytearray(pdf)
    forged[start + 1:end - 1] = b"0" * (end - start - 2)
    signing.fill_contents(forged, start, end, signing.SignerKey(key_der=key, cert_der=cert.der, ca_der=ca.der,
                                                                serial=cert.serial), at=now)
    return bytes(forged)


# 2. /verify: the stored document's signature, and a copy a person holds ---------------------------


@pytest.mark.slow
def test_verify_reports_the_signature_and_checks_an_uploaded_copy(client, tokens, rt):
    issued = issue(client, tokens)
    pdf, code = issued["pdf"], issued["verification_code"]
    serial = org_serial(rt, HAIZHOU_ORG)
    r = client.get(f"{API}/verify/{code}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["authentic"] is True
    sig = body["signature"]
    assert sig["status"] == "valid" and sig["signer"] == HAIZHOU_ORG and sig["certificate_serial"] == serial
    assert sig["signed_at"] == body["issued_at"]

    r = client.post(f"{API}/verify/{code}", content=pdf, headers={"Content-Type": "application/pdf"})
    body = r.json()
    assert r.status_code == 200
    assert body["authentic"] is True and body["sha256_matches"] is True and body["signature_valid"] is True

    for at in positions(pdf):
        r = client.post(f"{API}/verify/{code}", content=flipped(pdf, at), headers={"Content-Type": "application/pdf"})
        body = r.json()
        assert r.status_code == 200
        assert body["authentic"] is False and body["sha256_matches"] is False and body["signature_valid"] is False, at
    # The verifications are logged as the public actor with both outcomes, and no content.
    rows = run_sql(rt, "SELECT details FROM audit_events WHERE action = :a AND actor = 'public'",
                   a="documents:document:verify")
    assert any('"signature_valid": false' in str(r[0]).replace("False", "false").replace("'", '"') or
               (isinstance(r[0], dict) and r[0].get("signature_valid") is False) for r in rows)


# 3. the library's own command-line check, offline -------------------------------------------------


def offline(args: list[str]) -> list[str]:
    """``args`` run without a network (a fresh network namespace) where the machine allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [unshare, "-n", *args]
    return args


@pytest.mark.slow
def test_pyhanko_cli_validates_an_issued_pdf_offline_and_fails_a_flipped_byte(client, tokens, tmp_path):
    issued = issue(client, tokens)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(client.get(f"{API}/pki/ca.pem").content)
    good, bad = tmp_path / "issued.pdf", tmp_path / "flipped.pdf"
    good.write_bytes(issued["pdf"])
    bad.write_bytes(flipped(issued["pdf"], len(issued["pdf"]) // 2))

    def validate(path: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(offline([PYHANKO, "sign", "validate", "--trust", str(ca), "--trust-replace",
                                       "--pretty-print", str(path)]),
                              capture_output=True, text=True, timeout=120, check=False)

    ok = validate(good)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "judged VALID" in ok.stdout and "covers the entire file" in ok.stdout
    broken = validate(bad)
    assert broken.returncode != 0, broken.stdout


# 4. keys never in plain text ---------------------------------------------------------------------


@pytest.mark.slow
def test_org_and_ca_private_keys_are_never_stored_in_plain_text(client, tokens, rt, settings):
    issue(client, tokens)
    with rt.db.session() as s:
        org = s.scalar(select(Org).where(Org.name == HAIZHOU_ORG))
        assert org is not None
        org_id = org.id
    key = rt.pki.signer(org_id, now=rt.clock())
    with rt.db.read_session() as s:
        ca_row = s.scalar(select(SigningCertificate).where(SigningCertificate.role == "ca"))
        assert ca_row is not None
        ca_key = rt.pki._key(s, ca_row)
    from cryptography.hazmat.primitives.serialization import load_der_private_key

    needles = []
    for name, der in (("org key", key.key_der), ("ca key", ca_key)):
        scalar = load_der_private_key(der, None).private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
        needles += [(name, "pkcs8 der", der), (name, "raw scalar", scalar), (name, "pem body", _pem_body(der))]
    hits, read = scan_tree(settings.data_dir, needles)
    assert read and not hits, hits
    if rt.db.dialect == "postgresql":
        assert settings.database_url is not None
        assert not scan_dump(pg_dump(settings.database_url), needles)


def _pem_body(der: bytes) -> bytes:
    import base64

    return base64.b64encode(der)[:48]


# 5. revocation and rotation --------------------------------------------------------------------


@pytest.mark.slow
def test_revoked_certificate_makes_verify_say_revoked_and_is_in_the_crl(client, tokens, rt):
    first = issue(client, tokens)
    old_serial = org_serial(rt, HAIZHOU_ORG)
    with rt.db.session() as s:
        rt.pki.revoke(s, old_serial, reason="key_compromise", now=rt.clock())
        s.commit()
    body = client.get(f"{API}/verify/{first['verification_code']}").json()
    assert body["signature"]["status"] == "revoked" and body["authentic"] is False
    assert body["signature"]["certificate_serial"] == old_serial and body["signature"]["revoked_at"]
    r = client.post(f"{API}/verify/{first['verification_code']}", content=first["pdf"])
    assert r.json()["signature_valid"] is False and r.json()["authentic"] is False

    r = client.get(f"{API}/pki/crl")
    assert r.status_code == 200 and r.headers["content-type"] == "application/pkix-crl"
    crl = x509.load_der_x509_crl(r.content)
    ca = x509.load_der_x509_certificate(ca_der(client))
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(int(old_serial, 16)) is not None

    # The org's next document is signed under a new certificate, valid.
    second = issue(client, tokens)
    new_serial = org_serial(rt, HAIZHOU_ORG)
    assert new_serial != old_serial
    body = client.get(f"{API}/verify/{second['verification_code']}").json()
    assert body["signature"]["status"] == "valid" and body["signature"]["certificate_serial"] == new_serial


@pytest.mark.slow
def test_rotation_keeps_what_the_old_key_signed_valid(client, tokens, rt):
    first = issue(client, tokens)
    old_serial = org_serial(rt, HAIZHOU_ORG)
    with rt.db.session() as s:
        org = s.scalar(select(Org).where(Org.name == HAIZHOU_ORG))
        assert org is not None
        rt.pki.rotate(s, org.id, now=rt.clock())
        s.commit()
    assert org_serial(rt, HAIZHOU_ORG) != old_serial
    body = client.get(f"{API}/verify/{first['verification_code']}").json()
    assert body["signature"] == {**body["signature"], "status": "valid", "certificate_serial": old_serial}
    assert client.post(f"{API}/verify/{first['verification_code']}", content=first["pdf"]).json()["authentic"]
    second = issue(client, tokens)
    status = pyhanko_status(second["pdf"], ca_der(client))
    assert status.bottom_line and format(status.signing_cert.serial_number, "x") == org_serial(rt, HAIZHOU_ORG)


# 6. a granted sealed release is signed by the custodian's org -------------------------------------


@pytest.mark.slow
def test_granted_sealed_release_is_signed_by_the_custodians_org(client, rt):
    tokens = Tokens(client)
    case = make_case(client, tokens, seal_by=COURT)
    rid = apply(client, tokens[COURT], SEALED_NAME, case.id_number)
    assert decide(client, tokens[CUST], rid, "approve", APPROVE_REASON).status_code == 200
    r = client.get(f"{API}/documents/{case.doc}/pdf", headers=tokens[COURT])
    assert r.status_code == 200, r.text
    stamped = r.content
    with rt.db.session() as s:
        custodian = s.scalar(select(User).where(User.username == CUST))
        assert custodian is not None
        org = s.get(Org, custodian.org_id)
        assert org is not None
        custodian_org = org.name
        disclosure = s.scalar(select(Disclosure).where(Disclosure.request_id == rid))
        assert disclosure is not None and disclosure.stamped_sha256 == hashlib.sha256(stamped).hexdigest()
        register_serial = disclosure.signer_serial
    status = pyhanko_status(stamped, ca_der(client))
    assert status.bottom_line and status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    serial = format(status.signing_cert.serial_number, "x")
    assert serial == org_serial(rt, custodian_org) == register_serial
    assert custodian_org in status.signing_cert.subject.human_friendly
    # One signature only: the issuer's, which the stamp would have broken, is not carried over.
    assert len(PdfFileReader(io.BytesIO(stamped), strict=False).embedded_signatures) == 1


# 7. the seal image: stored encrypted, printed on issued documents, never on previews ---------------


def seal_png() -> bytes:
    from PIL import Image, ImageDraw

    img = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    ImageDraw.Draw(img).ellipse((8, 8, 292, 292), outline=(230, 0, 18, 255), width=10)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def images_on(pdf: bytes) -> int:
    return sum(len(page.images) for page in pypdf.PdfReader(io.BytesIO(pdf)).pages)


@pytest.mark.slow
def test_seal_image_is_stored_encrypted_printed_on_issued_documents_and_never_on_previews(client, tokens, rt,
                                                                                          settings):
    with rt.db.session() as s:
        org = s.scalar(select(Org).where(Org.name == HAIZHOU_ORG))
        assert org is not None
        org_id = org.id
    # A seal image prints only on a real document: issued under a public address (no specimen) and signed.
    with public_client(rt) as public:
        check_seal_image(client, tokens, public, Tokens(public), org_id, rt, settings)


def check_seal_image(client: Any, tokens: Tokens, public: Any, public_tokens: Tokens, org_id: str, rt: Runtime,
                     settings: Any) -> None:
    from archive.seal_images import clean_png

    admin, cw = tokens["admin"], tokens["caseworker.haizhou"]
    before = issue(public, public_tokens)
    assert images_on(before["pdf"]) == 0  # no seal image registered: none printed
    # Validated: a PNG of sane size only; the error names the field.
    r = client.put(f"{API}/orgs/{org_id}/seal-image", content=b"GIF89a" + b"\0" * 100,
                   headers={**admin, "Content-Type": "image/png"})
    assert r.status_code == 422 and r.json()["error"]["details"]["fields"][0]["field"] == "image"
    r = client.put(f"{API}/orgs/{org_id}/seal-image", content=seal_png(), headers={**cw, "Content-Type": "image/png"})
    assert r.status_code == 403  # an administrator's job
    png = seal_png()
    r = client.put(f"{API}/orgs/{org_id}/seal-image", content=png, headers={**admin, "Content-Type": "image/png"})
    assert r.status_code == 204, r.text

    after = issue(public, public_tokens)
    assert images_on(after["pdf"]) >= 1  # the seal (pypdf may list its alpha mask too)
    assert pyhanko_status(after["pdf"], ca_der(client)).bottom_line  # printed on a signed document
    # With no public address every issued PDF is a specimen (样本): signed, but never with the seal.
    specimen = issue(client, tokens)
    assert images_on(specimen["pdf"]) == 0
    assert pyhanko_status(specimen["pdf"], ca_der(client)).bottom_line
    minor = make_minor(client, cw)
    r = client.post(f"{API}/documents/preview", json=referral(minor), headers=cw)
    assert r.status_code == 200 and images_on(r.content) == 0  # never on a draft

    clean, _w, _h = clean_png(png)
    needles = [("seal png", "raw", png), ("seal png", "re-encoded", clean),
               ("seal png", "IDAT", clean[clean.index(b"IDAT"):clean.index(b"IDAT") + 64])]
    hits, read = scan_tree(settings.data_dir, needles)
    assert read and not hits, hits
    if rt.db.dialect == "postgresql":
        assert settings.database_url is not None
        assert not scan_dump(pg_dump(settings.database_url), needles)

    r = client.delete(f"{API}/orgs/{org_id}/seal-image", headers=admin)
    assert r.status_code == 204
    assert images_on(issue(public, public_tokens)["pdf"]) == 0
