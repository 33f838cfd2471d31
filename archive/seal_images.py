"""An organisation's registered seal image, printed only on digitally signed documents.

The image is a PNG, at most ``MAX_BYTES`` and ``MAX_SIDE`` pixels a side; it is
decoded and written again (dropping any text chunks or trailing bytes), sealed with a
data key of its own and stored as a blob. The renderer gets it as a data URI on
``DocumentMeta.seal_image`` for issued (signed) documents only: never on a preview, a
draft or an unsigned archive print copy.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime

from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from access_control.actions import Action
from access_control.guard import Guard
from access_control.identity import Org
from access_control.policy import Resource
from archive.blobstore import BlobNotFound, BlobStore
from core.db import Base, UTCDateTime, new_id
from core.errors import IntegrityFailure, InvalidInput
from core.keys import Vault

MAX_BYTES = 512 * 1024
MAX_SIDE = 1200
MIN_SIDE = 100
KIND = "seal_image"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class OrgSealImage(Base):
    __tablename__ = "org_seal_images"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("orgs.id"), index=True)
    dek_id: Mapped[str] = mapped_column(ForeignKey("data_keys.id"))
    blob_key: Mapped[str] = mapped_column(String(120))
    width: Mapped[int] = mapped_column()
    height: Mapped[int] = mapped_column()
    size: Mapped[int] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(80))
    current_for: Mapped[str | None] = mapped_column(String(40), unique=True)  # the org id while in use


def clean_png(data: bytes) -> tuple[bytes, int, int]:
    """The image re-encoded as a plain RGBA PNG with its size; refuses anything else (422 ``image``)."""
    if len(data) > MAX_BYTES:
        raise InvalidInput.one("image", f"图片不能超过 {MAX_BYTES // 1024} KB")
    if not data.startswith(PNG_MAGIC):
        raise InvalidInput.one("image", "只接受 PNG 图片")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=["PNG"]) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
            width, height = img.size
            if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
                raise InvalidInput.one("image", f"图片边长应在 {MIN_SIDE} 到 {MAX_SIDE} 像素之间")
            out = io.BytesIO()
            img.convert("RGBA").save(out, format="PNG", optimize=False)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput.one("image", "图片无法读取") from exc
    return out.getvalue(), width, height


class SealImages:
    """Register, remove and read organisations' seal images (sealed blobs)."""

    def __init__(self, *, vault: Vault, blobs: BlobStore):
        self.vault = vault
        self.blobs = blobs
        self._cache: dict[str, str] = {}  # image id -> data URI

    def register(self, s: Session, org_id: str, png: bytes, *, now: datetime, by: str,
                 on_rollback: object = None) -> OrgSealImage:
        """Store ``png`` as the org's seal image in the current transaction (the caller commits)."""
        clean, width, height = clean_png(png)
        self.remove(s, org_id)
        image_id = new_id("seal")
        dek_id, dek = self.vault.new_data_key(s, owner_kind=KIND, owner_id=image_id)
        row = OrgSealImage(id=image_id, org_id=org_id, dek_id=dek_id, blob_key=f"seals/{image_id}", width=width,
                           height=height, size=len(clean), created_at=now, created_by=by, current_for=org_id)
        s.add(row)
        s.flush()
        self.blobs.put(row.blob_key, self.vault.seal_bytes(dek, dek_id, clean, kind=KIND, record_id=image_id,
                                                           version=1))
        return row

    # Guarded: the admin API's verbs, each one audited decision ---------------------------------

    def register_for(self, g: Guard, org_id: str, image: bytes) -> None:
        """Register ``image`` as the org's seal image (admin), replacing the current one."""
        org = self._org(g, Action.ORG_SEAL_SET, org_id)
        row = self.register(g.session, org.id, image, now=g.now, by=g.actor.username)
        g.on_rollback(lambda: self.blobs.delete(row.blob_key))
        g.commit()

    def remove_for(self, g: Guard, org_id: str) -> None:
        """Stop printing the org's seal image (admin); with none registered there is nothing to do."""
        org = self._org(g, Action.ORG_SEAL_REMOVE, org_id)
        self.remove(g.session, org.id)
        g.commit()

    @staticmethod
    def _org(g: Guard, action: Action, org_id: str) -> Org:
        g.require(action, Resource("org", None, None, existing=False))  # by role, before any lookup
        org = g.session.get(Org, org_id[:40])
        if org is None:
            g.not_found(action, "org", org_id)
        g.authorize(action, Resource("org", org.id, org.region_code))
        return org

    @staticmethod
    def remove(s: Session, org_id: str) -> bool:
        """The org's current image is no longer printed (its row and blob stay, for the record)."""
        row = s.scalar(select(OrgSealImage).where(OrgSealImage.current_for == org_id))
        if row is None:
            return False
        row.current_for = None
        s.flush()
        return True

    def data_uri(self, s: Session, org_id: str) -> str | None:
        """The org's current seal image as a ``data:image/png;base64,…`` URI, or None."""
        row = s.scalar(select(OrgSealImage).where(OrgSealImage.current_for == org_id))
        if row is None:
            return None
        uri = self._cache.get(row.id)
        if uri is None:
            try:
                envelope = self.blobs.get(row.blob_key)
            except BlobNotFound:
                raise IntegrityFailure("印章图片文件缺失。") from None
            png = self.vault.open_bytes(s, envelope, row.dek_id, kind=KIND, record_id=row.id, version=1)
            uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            self._cache[row.id] = uri
        return uri
