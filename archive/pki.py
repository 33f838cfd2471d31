"""The deployment's own certificate authority and each organisation's signing certificate.

``shouhu init`` creates the CA: a self-signed ECDSA P-256 root named after the
deployment (``SHOUHU_DEPLOYMENT_NAME``). An organisation gets its signing key and a
certificate issued by that CA lazily, on its first signed document, in a short
transaction of its own. Private keys are sealed with the vault like any record's
payload (a data key of their own, wrapped by the current KEK; ``shouhu keys rotate``
re-wraps them too); certificates and serials are plain columns.

Rotation gives an organisation a new key and certificate; the old certificate is kept,
unrevoked, so what it signed stays valid. Revocation marks a certificate revoked and
lists it in the CRL the deployment publishes (``GET /api/v1/pki/crl``); ``/verify``
answers ``revoked`` for every document it signed. Without a trusted timestamp (PAdES
B-B) a signature cannot prove it predates a revocation, so a revoked certificate's
signatures are all reported revoked.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, LargeBinary, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from access_control.identity import Org
from core import crypto
from core.db import Base, Database, UTCDateTime, new_id
from core.errors import ServiceUnavailable
from core.keys import Vault
from doc_templates.signing import SignerKey

CA_DAYS = 30 * 366  # the root outlives every document it vouches for
ORG_DAYS = 10 * 366  # an org certificate; rotate earlier at will
CRL_DAYS = 7  # a CRL's nextUpdate
CA_CURRENT = "ca"  # ``current_for`` of the current CA row
KEY_KIND = "signing_key"  # the vault's payload kind for a sealed private key


class SigningCertificate(Base):
    __tablename__ = "signing_certificates"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    role: Mapped[str] = mapped_column(String(8))  # ca | org
    org_id: Mapped[str | None] = mapped_column(ForeignKey("orgs.id"), index=True)
    serial: Mapped[str] = mapped_column(String(64), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    certificate: Mapped[bytes] = mapped_column(LargeBinary)  # DER
    key_envelope: Mapped[bytes] = mapped_column(LargeBinary)  # PKCS#8 DER sealed with the data key
    dek_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The org id while this is the org's current certificate ("ca" for the current CA), else
    # NULL: unique, so two processes creating an org's first key cannot both succeed.
    current_for: Mapped[str | None] = mapped_column(String(40), unique=True)
    replaced_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revocation_reason: Mapped[str | None] = mapped_column(String(32))


@dataclass(frozen=True)
class CertificatePublic:
    """A certificate as /verify and ``shouhu pki list`` show it (no key)."""

    serial: str
    org_id: str | None
    org_name: str
    role: str
    not_before: datetime
    not_after: datetime
    current: bool
    revoked_at: datetime | None
    fingerprint: str

    @property
    def status(self) -> str:
        return "revoked" if self.revoked_at is not None else "valid"


class NoCertificate(LookupError):
    pass


class CertificateAuthority:
    """The CA, the org certificates under it, rotation, revocation and the CRL."""

    def __init__(self, *, db: Database, vault: Vault, name: str):
        self.db = db
        self.vault = vault
        self.name = name
        self._lock = threading.Lock()
        self._keys: dict[str, bytes] = {}  # certificate id -> private key DER, opened once

    # creation -------------------------------------------------------------------------------

    def _store(self, s: Session, *, role: str, org_id: str | None, key_der: bytes, facts: crypto.CertificateFacts,
               now: datetime, current_for: str) -> SigningCertificate:
        cert_id = new_id("crt")
        dek_id, dek = self.vault.new_data_key(s, owner_kind=KEY_KIND, owner_id=cert_id)
        row = SigningCertificate(
            id=cert_id, role=role, org_id=org_id, serial=facts.serial, fingerprint=facts.fingerprint,
            certificate=facts.der, dek_id=dek_id, not_before=facts.not_before, not_after=facts.not_after,
            created_at=now, current_for=current_for,
            key_envelope=self.vault.seal_bytes(dek, dek_id, key_der, kind=KEY_KIND, record_id=cert_id, version=1))
        s.add(row)
        s.flush()
        return row

    def ensure_ca(self, s: Session, *, now: datetime) -> bool:
        """Create the deployment's CA unless it exists (``shouhu init``; the caller commits)."""
        if s.scalar(select(SigningCertificate.id).where(SigningCertificate.current_for == CA_CURRENT)):
            return False
        key = crypto.new_signature_key()
        facts = crypto.self_signed_ca(key, common_name=f"{self.name} 公文签名根证书", organisation=self.name,
                                      now=now, days=CA_DAYS)
        self._store(s, role="ca", org_id=None, key_der=key, facts=facts, now=now, current_for=CA_CURRENT)
        return True

    def _ca(self, s: Session) -> SigningCertificate:
        row = s.scalar(select(SigningCertificate).where(SigningCertificate.current_for == CA_CURRENT))
        if row is None:
            raise ServiceUnavailable("本系统尚未建立签名根证书，请运行 `shouhu init`。")
        return row

    def _key(self, s: Session, row: SigningCertificate) -> bytes:
        key = self._keys.get(row.id)
        if key is None:
            key = self.vault.open_bytes(s, row.key_envelope, row.dek_id, kind=KEY_KIND, record_id=row.id, version=1)
            self._keys[row.id] = key
        return key

    def _new_org_certificate(self, s: Session, org: Org, *, now: datetime) -> SigningCertificate:
        ca = self._ca(s)
        key = crypto.new_signature_key()
        facts = crypto.issue_certificate(self._key(s, ca), ca.certificate, key, common_name=org.name,
                                         organisation=self.name, now=now, days=ORG_DAYS)
        return self._store(s, role="org", org_id=org.id, key_der=key, facts=facts, now=now, current_for=org.id)

    # signing --------------------------------------------------------------------------------

    def signer(self, org_id: str, *, now: datetime) -> SignerKey:
        """The org's current signing key, created on its first use (in a transaction of its own).

        Call it holding no database lock: creating the key writes.
        """
        with self.db.read_session() as s:
            row = s.scalar(select(SigningCertificate).where(SigningCertificate.current_for == org_id))
            if row is not None:
                return SignerKey(key_der=self._key(s, row), cert_der=row.certificate,
                                 ca_der=self._ca(s).certificate, serial=row.serial)
        with self._lock:  # one creation per process; the unique column settles it between processes
            try:
                with self.db.session() as s:
                    if s.scalar(select(SigningCertificate.id).where(SigningCertificate.current_for == org_id)) is None:
                        org = s.get(Org, org_id)
                        if org is None:
                            raise NoCertificate(org_id)
                        self._new_org_certificate(s, org, now=now)
                        s.commit()
            except IntegrityError:
                pass  # another process made it first: read theirs
        return self.signer(org_id, now=now)

    # rotation and revocation ----------------------------------------------------------------

    def rotate(self, s: Session, org_id: str, *, now: datetime) -> SigningCertificate:
        """A new key and certificate for the org (the caller commits); the old one stays valid."""
        org = s.get(Org, org_id)
        if org is None:
            raise NoCertificate(org_id)
        old = s.scalar(select(SigningCertificate).where(SigningCertificate.current_for == org_id)
                       .with_for_update())
        if old is not None:
            old.current_for, old.replaced_at = None, now
            s.flush()
        return self._new_org_certificate(s, org, now=now)

    def revoke(self, s: Session, serial: str, *, reason: str, now: datetime) -> SigningCertificate:
        """Mark an org certificate revoked (the caller commits); the org's next document gets a new one."""
        row = s.scalar(select(SigningCertificate).where(SigningCertificate.serial == serial.lower(),
                                                        SigningCertificate.role == "org").with_for_update())
        if row is None or row.revoked_at is not None:
            raise NoCertificate(serial)
        row.revoked_at, row.revocation_reason = now, reason
        if row.current_for is not None:
            row.current_for, row.replaced_at = None, now
        s.flush()
        return row

    def crl(self, *, now: datetime) -> bytes:
        """The CA's current revocation list (DER), signed now."""
        with self.db.read_session() as s:
            ca = self._ca(s)
            revoked = [(r.serial, r.revoked_at) for r in s.scalars(
                select(SigningCertificate).where(SigningCertificate.revoked_at.is_not(None))
                .order_by(SigningCertificate.revoked_at)) if r.revoked_at is not None]
            return crypto.revocation_list(self._key(s, ca), ca.certificate, revoked, now=now,
                                          next_update=now + timedelta(days=CRL_DAYS), number=int(now.timestamp()))

    # reading ----------------------------------------------------------------------------

    def ca_certificate(self) -> bytes:
        """The CA certificate (DER): what a verifier trusts."""
        with self.db.read_session() as s:
            return self._ca(s).certificate

    def by_serial(self, s: Session, serial: str) -> CertificatePublic | None:
        row = s.scalar(select(SigningCertificate).where(SigningCertificate.serial == serial.lower()))
        return self.public(s, row) if row is not None else None

    @staticmethod
    def public(s: Session, row: SigningCertificate) -> CertificatePublic:
        org = s.get(Org, row.org_id) if row.org_id else None
        return CertificatePublic(serial=row.serial, org_id=row.org_id, org_name=org.name if org else "",
                                 role=row.role, not_before=row.not_before, not_after=row.not_after,
                                 current=row.current_for is not None, revoked_at=row.revoked_at,
                                 fingerprint=row.fingerprint)

    def listing(self) -> list[CertificatePublic]:
        with self.db.read_session() as s:
            return [self.public(s, r) for r in s.scalars(select(SigningCertificate)
                                                          .order_by(SigningCertificate.created_at))]
