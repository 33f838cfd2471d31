"""Key storage: KEKs wrapped under the master key, one data key per record.

Rotation re-wraps data keys under a new KEK without touching the payloads they
protect; retiring a KEK deletes its wrapped material once nothing needs it;
shredding deletes a record's wrapped data key, which makes every copy of its
ciphertext unreadable for good, except through a database backup taken before
the shred (it still holds the wrapped key; see docs/formats.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from core import crypto
from core.clock import utcnow
from core.db import Base, Database, UTCDateTime, new_id
from core.errors import Gone, IntegrityFailure

SEALED_DEK = "sealed-dek"


class KeyEncryptionKey(Base):
    __tablename__ = "key_encryption_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[int] = mapped_column(unique=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16))  # active | retired
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class DataKey(Base):
    __tablename__ = "data_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_kind: Mapped[str] = mapped_column(String(32))
    owner_id: Mapped[str] = mapped_column(String(40), index=True)
    kek_id: Mapped[str] = mapped_column(ForeignKey("key_encryption_keys.id"), index=True)
    wrapped: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    shredded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # "dek", or "sealed-dek" for sealed juvenile records: bound into the wrapping.
    purpose: Mapped[str] = mapped_column(String(16), default="dek", server_default="dek")


class DbKekStore(crypto.KekStore):
    """Reads KEK records on a read-only connection of its own.

    The ring refreshes lazily, often in the middle of a request whose transaction
    already holds SQLite's write lock: a second writing transaction from the same
    thread would wait for that lock until the busy timeout (a self-deadlock).
    """

    def __init__(self, db: Database):
        self._db = db

    def load(self) -> list[crypto.KekRecord]:
        k = KeyEncryptionKey
        with self._db.reader() as conn:
            rows = conn.execute(
                select(k.id, k.version, k.wrapped, k.state).order_by(k.version)
            ).all()
        return [crypto.KekRecord(r.id, r.version, r.wrapped, r.state) for r in rows]


def create_kek(session: Session, ring: crypto.KeyRing, *, now: datetime | None = None) -> str:
    """Add a new current KEK (the caller commits)."""
    version = (session.scalar(select(func.max(KeyEncryptionKey.version))) or 0) + 1
    kek_id = f"kek-{version:04d}"
    material = ring.new_kek_material()
    session.add(
        KeyEncryptionKey(
            id=kek_id,
            version=version,
            wrapped=ring.wrap_kek(kek_id, version, material),
            state="active",
            created_at=now or utcnow(),
        )
    )
    ring.add_kek(kek_id, material)
    return kek_id


@dataclass(frozen=True)
class RotationResult:
    new_kek: str
    rewrapped: int


def rotate(
    db: Database,
    ring: crypto.KeyRing,
    *,
    batch: int = 500,
    progress: Callable[[int, int], None] | None = None,
    on_start: Callable[[Session, str, int], None] | None = None,
) -> RotationResult:
    """Make a new KEK current and re-wrap every live data key under it.

    Runs in batches of short transactions so a running server keeps serving;
    servers pick up the new KEK within ``keyring_refresh_seconds``.

    ``on_start(session, new_kek, live_data_keys)`` runs in the transaction that
    creates the new KEK, before it commits: the caller adds its audit event there,
    so the KEK and the event are durable together or not at all.
    """
    with db.session() as s:
        new_kek = create_kek(s, ring)
        if on_start is not None:
            live = s.scalar(select(func.count()).select_from(DataKey).where(DataKey.wrapped.is_not(None))) or 0
            on_start(s, new_kek, live)
        s.commit()
    ring.refresh()
    total = _count_live_not_under(db, new_kek)
    done = 0
    while True:
        with db.session() as s:
            rows = s.scalars(
                select(DataKey)
                .where(DataKey.kek_id != new_kek, DataKey.wrapped.is_not(None))
                .order_by(DataKey.id)
                .limit(batch)
            ).all()
            if not rows:
                break
            for row in rows:
                if row.wrapped is None:
                    raise RuntimeError("a data key selected as wrapped has no wrapped key")
                w = ring.rewrap(crypto.WrappedKey(row.kek_id, row.wrapped), dek_id=row.id, to_kek=new_kek,
                                purpose=row.purpose)
                row.kek_id, row.wrapped = w.kek_id, w.wrapped
            s.commit()
            done += len(rows)
        if progress:
            progress(done, max(total, done))
    return RotationResult(new_kek, done)


def _count_live_not_under(db: Database, kek_id: str) -> int:
    with db.session() as s:
        return s.scalar(
            select(func.count()).select_from(DataKey).where(
                DataKey.kek_id != kek_id, DataKey.wrapped.is_not(None)
            )
        ) or 0


class KekInUse(Exception):
    pass


def retire(db: Database, ring: crypto.KeyRing, kek_id: str, *,
           on_commit: Callable[[Session, int], None] | None = None) -> int:
    """Destroy an old KEK's material; re-wraps stragglers first. Returns how many.

    ``on_commit(session, moved)`` runs in the retiring transaction just before it
    commits (the caller's audit event goes there, with the change).
    """
    ring.refresh()
    current = ring.current_kek_id
    if kek_id == current:
        raise KekInUse(f"{kek_id} is the current key-encryption key; rotate first")
    moved = 0
    with db.session() as s:
        # Lock the KEK row first: writers share-lock it while they wrap under it,
        # so once we hold it no transaction can still be adding keys under it.
        kek = s.scalar(
            select(KeyEncryptionKey).where(KeyEncryptionKey.id == kek_id).with_for_update()
        )
        if kek is None or kek.state == "retired":
            raise KeyError(kek_id)
        for row in s.scalars(
            select(DataKey).where(DataKey.kek_id == kek_id, DataKey.wrapped.is_not(None))
        ):
            if row.wrapped is None:
                raise RuntimeError("a data key selected as wrapped has no wrapped key")
            w = ring.rewrap(crypto.WrappedKey(row.kek_id, row.wrapped), dek_id=row.id, to_kek=current,
                        purpose=row.purpose)
            row.kek_id, row.wrapped = w.kek_id, w.wrapped
            moved += 1
        kek.state, kek.wrapped, kek.retired_at = "retired", None, utcnow()
        if on_commit is not None:
            on_commit(s, moved)
        s.commit()
    ring.refresh()
    return moved


def status(db: Database) -> list[dict[str, Any]]:
    """Each KEK with the number of live data keys it wraps."""
    with db.read_session() as s:  # read-only: never waits for (or holds) the write lock
        counts = dict(
            s.execute(
                select(DataKey.kek_id, func.count())
                .where(DataKey.wrapped.is_not(None))
                .group_by(DataKey.kek_id)
            ).all()
        )
        return [
            {
                "id": k.id,
                "version": k.version,
                "state": k.state,
                "created_at": k.created_at.isoformat(),
                "retired_at": k.retired_at.isoformat() if k.retired_at else None,
                "data_keys": counts.get(k.id, 0),
            }
            for k in s.scalars(select(KeyEncryptionKey).order_by(KeyEncryptionKey.version))
        ]


# Data keys and payloads --------------------------------------------------------


class Vault:
    """Seals and opens record payloads with per-record data keys."""

    def __init__(self, ring: crypto.KeyRing):
        self.ring = ring

    def new_data_key(
        self, session: Session, *, owner_kind: str, owner_id: str, sealed: bool = False
    ) -> tuple[str, bytes]:
        dek_id = new_id("dk")
        dek = self.ring.new_data_key()
        purpose = SEALED_DEK if sealed else "dek"
        wrapped = self.ring.wrap_data_key(dek, dek_id=dek_id, kek_id=self._live_kek(session), purpose=purpose)
        session.add(
            DataKey(
                id=dek_id,
                owner_kind=owner_kind,
                owner_id=owner_id,
                kek_id=wrapped.kek_id,
                wrapped=wrapped.wrapped,
                created_at=utcnow(),
                purpose=purpose,
            )
        )
        session.flush()  # the key row must exist before the record that points at it
        return dek_id, dek

    def _live_kek(self, session: Session) -> str:
        """The current KEK, share-locked for this transaction so `retire` cannot race us.

        A server's cached view may lag a rotation in another process; if our KEK
        was retired meanwhile, re-read the ring and use the new current one.
        """
        for _ in range(3):
            kek_id = self.ring.current_kek_id
            state = session.scalar(
                select(KeyEncryptionKey.state)
                .where(KeyEncryptionKey.id == kek_id)
                .with_for_update(read=True)
            )
            if state == "active":
                return kek_id
            self.ring.refresh()
        raise crypto.KeyUnavailableError("no active key-encryption key")

    @staticmethod
    @contextmanager
    def preloaded(session: Session, dek_ids: Sequence[str]) -> Iterator[None]:
        """Many records' key rows loaded in one query (a list page): inside, ``data_key`` finds
        each in the session instead of asking the database once per record. (The session holds
        loaded rows weakly: the rows are kept alive here until the block ends.)"""
        wanted = sorted(set(dek_ids))
        rows = session.scalars(select(DataKey).where(DataKey.id.in_(wanted))).all() if wanted else []
        try:
            yield
        finally:
            del rows

    def data_key(self, session: Session, dek_id: str, *, sealed: bool = False) -> bytes:
        """A record's data key; a sealed record's key opens only when ``sealed`` is asked for."""
        row = session.get(DataKey, dek_id)
        if row is None:
            raise IntegrityFailure()
        if row.wrapped is None:
            raise Gone()
        purpose = SEALED_DEK if sealed else "dek"
        try:
            return self.ring.unwrap_data_key(crypto.WrappedKey(row.kek_id, row.wrapped), dek_id=dek_id,
                                             purpose=purpose)
        except (crypto.DecryptionError, crypto.KeyUnavailableError) as exc:
            raise IntegrityFailure() from exc

    def suite_for(self, dek: bytes) -> crypto.Suite:
        """The suite a data key was made for, told by its length (32 bytes AES, 16 SM4).

        A record keeps its suite when ``cipher_suite`` changes: its data key was
        drawn for the old suite and would not fit the new cipher.
        """
        if len(dek) == self.ring.suite.key_bytes:
            return self.ring.suite
        for suite in crypto.SUITES.values():
            if suite.key_bytes == len(dek):
                return suite
        raise ValueError(f"no cipher suite takes a {len(dek)}-byte data key")

    @staticmethod
    def payload_context(*, kind: str, record_id: str, version: int, sealed: bool = False) -> dict[str, Any]:
        return {"purpose": "payload", "kind": kind, "record_id": record_id, "version": version, "sealed": sealed}

    def seal_json(
        self, dek: bytes, dek_id: str, data: dict[str, Any], *, kind: str, record_id: str, version: int,
        sealed: bool = False,
    ) -> bytes:
        plaintext = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
        ctx = self.payload_context(kind=kind, record_id=record_id, version=version, sealed=sealed)
        return crypto.seal(dek, plaintext, suite=self.suite_for(dek), key_id=dek_id, context=ctx)

    def open_json(
        self, session: Session, envelope: bytes, dek_id: str, *, kind: str, record_id: str, version: int,
        sealed: bool = False,
    ) -> dict[str, Any]:
        dek = self.data_key(session, dek_id, sealed=sealed)
        ctx = self.payload_context(kind=kind, record_id=record_id, version=version, sealed=sealed)
        try:
            plaintext = crypto.open_envelope(dek, envelope, context=ctx, key_id=dek_id)
        except crypto.DecryptionError as exc:
            raise IntegrityFailure() from exc
        data: dict[str, Any] = json.loads(plaintext)
        return data

    def seal_bytes(
        self, dek: bytes, dek_id: str, data: bytes, *, kind: str, record_id: str, version: int, sealed: bool = False,
    ) -> bytes:
        ctx = self.payload_context(kind=kind, record_id=record_id, version=version, sealed=sealed)
        return crypto.seal(dek, data, suite=self.suite_for(dek), key_id=dek_id, context=ctx)

    def open_bytes(
        self, session: Session, envelope: bytes, dek_id: str, *, kind: str, record_id: str, version: int,
        sealed: bool = False,
    ) -> bytes:
        dek = self.data_key(session, dek_id, sealed=sealed)
        ctx = self.payload_context(kind=kind, record_id=record_id, version=version, sealed=sealed)
        try:
            return crypto.open_envelope(dek, envelope, context=ctx, key_id=dek_id)
        except crypto.DecryptionError as exc:
            raise IntegrityFailure() from exc

    @staticmethod
    def shred_key(session: Session, dek_id: str) -> None:
        """Destroy one data key (after its record was re-encrypted under another)."""
        session.execute(update(DataKey).where(DataKey.id == dek_id).values(wrapped=None, shredded_at=utcnow()))

    @staticmethod
    def shred(session: Session, *, owner_id: str) -> int:
        """Destroy every data key of one record. The caller commits."""
        result = session.execute(
            update(DataKey)
            .where(DataKey.owner_id == owner_id, DataKey.wrapped.is_not(None))
            .values(wrapped=None, shredded_at=utcnow())
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
