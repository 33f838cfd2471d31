"""The process-wide services, wired once from a Settings object.

``main.create_app`` and the ``shouhu`` CLI both build a ``Runtime``; tests build
one per test database with their own settings.
"""

from __future__ import annotations

import base64
import functools
import os
from collections.abc import Callable
from dataclasses import InitVar, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, inspect, select

from access_control.audit import AuditHead, AuditLog
from access_control.audit_service import AuditService
from access_control.audit_writer import AuditWriter
from access_control.guard import Guard
from access_control.identity import Actor, Passwords, Throttle, system_actor
from access_control.mfa import SecondFactor
from access_control.oidc import IdentityLinks, OidcClient
from access_control.policy import Policy, second_factor_roles
from access_control.regions import RegionTree
from access_control.sealed import SealedRequestService
from access_control.sessions import Sessions
from access_control.users import UserService
from archive import sealed_upgrade
from archive.blobstore import FilesystemBlobStore
from archive.document_batch import DocumentBatchService
from archive.document_issuing import DocumentIssuingService
from archive.document_reading import DocumentReadingService
from archive.document_verification import DocumentVerificationService
from archive.documents import DocumentBasis
from archive.pki import CertificateAuthority
from archive.records import CaseFileService
from archive.seal_images import SealImages
from archive.sealing import SealedRelease, SealingService, sealed_records_of
from archive.visits import VisitService
from core import crypto
from core.clock import Clock, as_clock
from core.db import Database, new_id
from core.keys import DbKekStore, KeyEncryptionKey, Vault, create_kek
from core.ratelimit import RateLimiter
from core.settings import ConfigError, Settings, read_secret_file, write_key_file
from doc_templates.pool import shared_pool
from search.analyzer import Analyzer
from search.generations import LiveIndex, open_store
from search.indexer import Indexer, Sources
from search.query import SearchService

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
AUDIT_HASH_FOR_SUITE = {"aes": "sha256", "sm": "sm3"}


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


@functools.cache
def head_revisions() -> frozenset[str]:
    """The migrations' head revision(s), read once per process (alembic compiles every script to find them)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads())


def current_revisions(db: Database) -> frozenset[str]:
    """The revision(s) the database is stamped with (none for a database without the schema)."""
    if not db.has_schema():
        return frozenset()
    with db.engine.connect() as conn:
        return frozenset(MigrationContext.configure(conn).get_current_heads())


def at_head(db: Database) -> bool:
    """Whether the schema is at the migrations' head (a cheap check: no migration script is loaded)."""
    return current_revisions(db) == head_revisions()


def upgrade_database(db: Database) -> None:
    """Apply every migration (idempotent; a schema already at head is left alone without loading them)."""
    if not at_head(db):
        migrate_database(db, "head")


def migrate_database(db: Database, revision: str, *, down: bool = False) -> None:
    """Upgrade (or, ``down``, downgrade) the schema to ``revision`` in one transaction.

    SQLite changes a constraint by rebuilding the table (batch mode); with foreign keys on,
    dropping the old table would orphan the rows that refer to it. So, as SQLite's own
    procedure has it, foreign keys are off for the migration (set outside the transaction,
    where the pragma works) and every reference is checked before the commit.
    """
    cfg = alembic_config(db.url)
    sqlite = db.dialect == "sqlite"
    with db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        if raw is None:
            raise RuntimeError("the migration connection has no DB-API connection")
        if sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                (command.downgrade if down else command.upgrade)(cfg, revision)
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("the migration left rows that refer to missing rows; nothing was changed")
        finally:
            if sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def keep_files_private(settings: Settings) -> None:
    """Files this process creates are 0600 and folders 0700, whoever creates them (SQLite, its
    -wal and -shm files, the log, tantivy and Whoosh, the blob store): the process umask is
    077. An embedded database, its WAL and the log made by an older version are tightened too.
    """
    os.umask(0o077)
    if not settings.is_sqlite:
        return
    db_file = Path(settings.effective_database_url.split("///", 1)[-1])
    for path in (db_file.parent, db_file, *(db_file.with_name(db_file.name + x) for x in ("-wal", "-shm"))):
        try:
            if path.exists() and path.stat().st_uid == os.getuid():
                os.chmod(path, 0o700 if path.is_dir() else 0o600)
        except OSError:  # not ours to change: `shouhu doctor` and the operator's own setup decide
            pass


@dataclass
class Runtime:
    settings: Settings
    db: Database
    ring: crypto.KeyRing
    initial_clock: InitVar[Clock | Callable[[], datetime] | None] = None

    def __post_init__(self, initial_clock: Clock | Callable[[], datetime] | None) -> None:
        self.clock = initial_clock  # the setter makes it a Clock
        s = self.settings
        self.vault = Vault(self.ring)
        self.regions = RegionTree()
        self.policy = Policy(self.regions, second_factor_roles=second_factor_roles(s.mfa_required_roles))
        self.audit = AuditLog(AUDIT_HASH_FOR_SUITE[s.cipher_suite], signer=self._load_signer())
        self.passwords = Passwords(s)
        self.throttle = Throttle(s, self.ring)
        self.second_factor = SecondFactor(vault=self.vault, passwords=self.passwords, issuer=s.totp_issuer)
        self.oidc = OidcClient(s)
        self.identity_links = IdentityLinks(ring=self.ring)
        self.sessions = Sessions(settings=s)
        # Public verifications per client address, counted on the runtime's clock.
        self.verify_limits = RateLimiter(limit=s.verify_rate_limit, window=s.verify_rate_window_seconds)
        self.users = UserService(passwords=self.passwords, min_password_length=s.min_password_length,
                               min_password_score=s.min_password_score)
        self.blobs = FilesystemBlobStore(s.blob_dir)
        self.archive = CaseFileService(vault=self.vault, ring=self.ring, regions=self.regions)
        # Group commit of reading requests' events, on PostgreSQL, where every transaction costs
        # round trips (measured: read p95 under the load bench 1.7 s -> 1.1 s). On SQLite a commit
        # is local and cheap, and handing each event to another thread cost more than it saved
        # (0.69 -> 0.85 s): there each read appends its own. A wait covers a lock wait and a batch.
        self.audit_writer = (AuditWriter(self.db, self.audit, timeout=2 * s.database_lock_timeout_seconds + 1)
                             if self.db.dialect == "postgresql" else None)
        self.audit_desk = AuditService(log=self.audit, ring=self.ring, db=self.db, settings=s)
        # Documents, one service per job (archive.documents says which does what).
        self.render_pool = shared_pool(s.render_workers, font_dir=s.font_dir)
        # The deployment's CA and the orgs' signing keys; every issued PDF is signed (archive.pki).
        self.pki = CertificateAuthority(db=self.db, vault=self.vault, name=s.deployment_name)
        self.seal_images = SealImages(vault=self.vault, blobs=self.blobs)
        basis = DocumentBasis(ring=self.ring, regions=self.regions, archive=self.archive,
                              public_url=s.printed_public_url)
        self.document_issuing = DocumentIssuingService(basis=basis, vault=self.vault, blobs=self.blobs,
                                                       pool=self.render_pool, pki=self.pki,
                                                       seal_images=self.seal_images)
        # The sealed desk and the stamp of a granted sealed copy come first: the reading service
        # cannot be built without the stamp, nor the desk without what finds a subject's records.
        self.sealed = SealedRequestService(vault=self.vault, ring=self.ring, settings=s, find_records=sealed_records_of)
        self.sealed_release = SealedRelease(pool=self.render_pool, desk=self.sealed, pki=self.pki)
        self.document_reading = DocumentReadingService(vault=self.vault, blobs=self.blobs, regions=self.regions,
                                                releaser=self.sealed_release)
        self.document_batch = DocumentBatchService(basis=basis, issuing=self.document_issuing, regions=self.regions)
        self.document_verification = DocumentVerificationService(db=self.db, audit=self.audit, pki=self.pki)
        self.visits = VisitService(vault=self.vault, regions=self.regions)
        self.sealing = SealingService(vault=self.vault, blobs=self.blobs, issuing=self.document_issuing,
                               reading=self.document_reading, desk=self.sealed)
        self.analyzer = Analyzer(lambda token: self.ring.keyed_hash("search", token, hex_chars=16),
                                 portable=lambda: self.ring.keyed_hasher("search", hex_chars=16))
        self.sources = Sources(vault=self.vault, regions=self.regions)
        self.upgraded = sealed_upgrade.Upgraded()  # what ``initialize`` encrypted of earlier plain values
        self._live: LiveIndex | None = None
        self._indexer: Indexer | None = None
        self._search: SearchService | None = None

    @property
    def clock(self) -> Clock:
        """The one clock every time rule reads; ``rt.clock()`` is the aware UTC time now."""
        return self._clock

    @clock.setter
    def clock(self, value: Clock | Callable[[], datetime] | None) -> None:
        # Tests pin the time with a plain ``lambda: when`` too: that keeps its time, real waits.
        self._clock = as_clock(value)

    # Search is opened on first use: most CLI commands never touch the index.
    @property
    def live_index(self) -> LiveIndex:
        """The index in its current generation, followed across `shouhu reindex` (never raises here)."""
        if self._live is None:
            self._live = LiveIndex(open_store(self.settings.search_backend,
                                              folder=self.settings.effective_search_index_dir,
                                              db=self.db, key_check=self.analyzer.check_value()))
        return self._live

    @property
    def search_backend(self) -> LiveIndex:
        """The live index, opened: SearchUnavailable if it was built with another key or is broken."""
        live = self.live_index
        live.check()
        return live

    @property
    def indexer(self) -> Indexer:
        if self._indexer is None:
            indexer = Indexer(db=self.db, backend=self.live_index, analyzer=self.analyzer,
                              sources=self.sources, regions=self.regions,
                              workers=self.settings.reindex_workers or os.cpu_count() or 1)

            # Wake the indexer as soon as a transaction that queued outbox rows commits,
            # rather than at its next poll.
            @event.listens_for(self.db.sessions, "after_commit")
            def _wake(session: Any) -> None:
                if session.info.pop("outbox", False):
                    indexer.wake()

            self._indexer = indexer
        return self._indexer

    @property
    def search(self) -> SearchService:
        if self._search is None:
            self._search = SearchService(backend=self.live_index, analyzer=self.analyzer, sources=self.sources,
                                         ring=self.ring, regions=self.regions)
        return self._search

    def _load_signer(self) -> crypto.SigningKey | None:
        path = self.settings.effective_audit_signing_key_file
        if not path.exists():
            return None
        seed = read_secret_file(path, what="audit signing key", env="SHOUHU_AUDIT_SIGNING_KEY_FILE")
        return crypto.SigningKey(seed)

    @classmethod
    def open(cls, settings: Settings, *, require_schema: bool = True,
             clock: Clock | Callable[[], datetime] | None = None) -> Runtime:
        """Build the services; refuse (ConfigError) without a usable master key or database."""
        keep_files_private(settings)
        master = settings.master_key_bytes
        db = Database(settings)
        ring = crypto.KeyRing(
            master,
            suite=crypto.SUITE_BY_SETTING[settings.cipher_suite],
            store=DbKekStore(db),
            refresh_seconds=settings.keyring_refresh_seconds,
        )
        rt = cls(settings=settings, db=db, ring=ring, initial_clock=clock)
        if require_schema:
            if not db.has_schema():
                raise ConfigError(
                    "The database has no Shouhu schema: run `shouhu init` first "
                    f"(database: {db.engine.url.render_as_string(hide_password=True)})."
                )
            if rt.audit.signer is None:
                raise ConfigError(
                    "No audit signing key: run `shouhu init` to create "
                    f"{settings.effective_audit_signing_key_file}, or set SHOUHU_AUDIT_SIGNING_KEY_FILE."
                )
            rt.load()
        return rt

    def load(self) -> None:
        """Read the key ring and region tree; a wrong master key is a ConfigError."""
        try:
            self.ring.refresh()
        except crypto.DecryptionError:
            raise ConfigError(
                "The master key does not open this archive's keys: set SHOUHU_MASTER_KEY or "
                "SHOUHU_MASTER_KEY_FILE to the key this archive was created with."
            ) from None
        with self.db.session() as s:
            self.regions.load(s)
            head = s.get(AuditHead, 1)
        if head is not None:
            # The archive's hash (fixed at `shouhu init`) also keys its lookup hashes.
            self.ring.pin_hash_suite(crypto.AES_SUITE if head.hash_alg == "sha256" else crypto.SM_SUITE)

    def initialize(self) -> bool:
        """Create the schema, the first KEK and the audit head. True if anything was new."""
        fresh = not self.db.has_schema()
        upgrade_database(self.db)
        created = fresh
        if self.audit.signer is None:
            path = self.settings.effective_audit_signing_key_file
            write_key_file(path, base64.b64encode(crypto.SigningKey.new_seed()).decode("ascii"))
            self.audit.signer = self._load_signer()
            created = True
        with self.db.session() as s:
            if not inspect(s.connection()).has_table("key_encryption_keys"):
                raise RuntimeError("migrations did not create the key tables")
            if s.scalar(select(KeyEncryptionKey.id).limit(1)) is None:
                create_kek(s, self.ring)
                created = True
            self.audit.ensure_head(s)
            s.commit()
        self.load()
        with self.db.session() as s:  # the document-signing CA, under the KEK made above
            created = self.pki.ensure_ca(s, now=self.clock()) or created
            s.commit()
        self.load()
        # What a migration could not encrypt without the key ring (plain case numbers, 0013): first,
        # so that the catch-up below seals documents with a minor's case as it is stored now.
        self.upgraded = sealed_upgrade.run(self.db, self.vault, self.ring, self.sealed)
        with self.db.session() as s:
            # Documents that name a sealed minor but were issued before they recorded whom they
            # name (migration 0011 filled that in): sealed now, with the key ring. Idempotent.
            self.sealing.catch_up(self.guard(s, system_actor("init")))
        return created

    def guard(self, session, actor: Actor, *, request_id: str | None = None,  # type: ignore[no-untyped-def]
              operator: Actor | None = None) -> Guard:
        return Guard(session=session, actor=actor, request_id=request_id or new_id("req"),
                     now=self.clock(), policy=self.policy, audit=self.audit, operator=operator)

    def checkpoint_now(self) -> dict[str, object] | None:
        """Sign a checkpoint if the log grew since the last one (the schedule calls this)."""
        with self.db.read_session() as s:
            last = self.audit.checkpoints(s)
            if last and last[-1]["size"] == AuditLog.size(s):
                return None
        return self.audit.sign_checkpoint(self.db, now=self.clock())

    def close(self) -> None:
        if self.audit_writer is not None:
            self.audit_writer.close()
        if self._indexer is not None:
            self._indexer.stop()
        if self._live is not None:
            self._live.close()
        self.db.dispose()

