"""One validated settings object for the whole service (env prefix ``SHOUHU_``).

Every setting has a name, a default and a help text here; ``docs/configuration.md``
lists them all and a test keeps the two in step.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import stat
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MASTER_KEY_BYTES = 32
# Values people paste from examples; a key equal to one of these is refused.
_PLACEHOLDER_KEYS = {b"\x00" * MASTER_KEY_BYTES, b"changeme" * 4, b"x" * MASTER_KEY_BYTES}


class ConfigError(RuntimeError):
    """The configuration cannot run safely; the message says what to set."""


class Settings(BaseSettings):
    """Shouhu's configuration. Tests build their own instance instead of patching globals."""

    model_config = SettingsConfigDict(env_prefix="SHOUHU_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        Path("./var"),
        description="Folder of the embedded archive: SQLite database, key file, blobs, logs.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the database. Default: SQLite file `shouhu.db` in the "
        "data dir. PostgreSQL: `postgresql+psycopg://user@host:5432/dbname`.",
    )
    master_key: SecretStr | None = Field(
        None,
        description="Master key as base64 of 32 random bytes. Takes precedence over the key file.",
    )
    master_key_file: Path | None = Field(
        None,
        description="File holding the base64 master key (mode 0600). Default: "
        "`<data_dir>/keys/master.key`, created by `shouhu init`.",
    )
    cipher_suite: Literal["aes", "sm"] = Field(
        "aes",
        description="Cipher suite for new ciphertexts: `aes` (AES-256-GCM + SHA-256) or "
        "`sm` (SM4-GCM + SM3). Existing ciphertexts name their own suite.",
    )
    demo_password: SecretStr = Field(
        SecretStr("shouhu-demo-2026"),
        description="Password given to every demo user by `shouhu demo`. Local demos only.",
    )
    demo_mode: bool = Field(
        False,
        description="A demonstration: the document form offers to fill in a kind's sample facts. "
        "Never on an archive of real children (`make run` turns it on).",
    )
    token_ttl_seconds: int = Field(
        8 * 3600, ge=60, le=7 * 24 * 3600, description="Lifetime of a bearer token in seconds."
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins for one username within the window before lock-out."
    )
    login_window_seconds: int = Field(
        900, ge=1, description="Window in which failed logins are counted, in seconds."
    )
    login_lockout_seconds: int = Field(
        900, ge=1, description="How long a username stays locked after too many failures."
    )
    login_max_failures_per_address: int = Field(
        30, ge=1, description="Failed logins from one client address within the window before that "
        "address is locked out (beside the per-username limit)."
    )
    trusted_proxies: str = Field(
        "", description="Comma-separated addresses or networks (CIDR) of reverse proxies whose "
        "X-Forwarded-For header names the client. Empty: the TCP peer is the client."
    )
    password_hash_concurrency: int = Field(
        2, ge=1, le=64, description="Password hashes (argon2id) computed at once; each takes "
        "argon2_memory_kib of memory."
    )
    password_hash_wait_seconds: float = Field(
        2.0, ge=0.05, le=30, description="How long a sign-in waits for a free hashing slot before it "
        "is refused with 503 and Retry-After."
    )
    min_password_score: int = Field(
        3, ge=0, le=4, description="Least zxcvbn strength score (0-4) a new password must reach, "
        "judged with the user's own username and name as known words."
    )
    argon2_time_cost: int = Field(3, ge=1, description="argon2id iterations for passwords.")
    argon2_memory_kib: int = Field(
        65536, ge=8, description="argon2id memory per password hash, in KiB."
    )
    argon2_parallelism: int = Field(2, ge=1, description="argon2id lanes.")
    min_password_length: int = Field(12, ge=8, description="Shortest password accepted.")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Largest request body accepted; larger is a 413."
    )
    database_lock_timeout_seconds: float = Field(
        5.0,
        ge=0.1,
        le=60,
        description="Longest a request waits for a database lock (SQLite's write lock, a PostgreSQL row "
        "lock) or for a pooled connection; past it the request answers 503 with `Retry-After`. Keep it "
        "short: a waiting request holds one of the server's request threads.",
    )
    request_threads: int = Field(
        40,
        ge=4,
        le=200,
        description="Threads that run requests (database work, decryption). The connection pool holds "
        "up to twice as many connections plus a few, so no thread ever waits for one; on PostgreSQL "
        "`max_connections` must allow that per server process.",
    )
    request_queue_seconds: float = Field(
        10.0,
        ge=0.1,
        le=120,
        description="Longest a request waits for its turn when `request_threads` requests are already in "
        "the works; past it the request answers 503 with `Retry-After`. Waiting requests hold no thread "
        "and no database connection.",
    )
    verify_rate_limit: int = Field(
        30,
        ge=1,
        description="Public verifications (`/api/v1/verify/...`, GET and POST) one client address may make "
        "within the window; more answer 429 with `Retry-After`. IPv6 addresses count by /64.",
    )
    verify_rate_window_seconds: int = Field(
        60, ge=1, le=86400, description="Window for `verify_rate_limit`, in seconds."
    )
    verify_threads: int = Field(
        4,
        ge=1,
        le=64,
        description="Request threads that public verifications may use at once; the rest wait their turn "
        "(at most 100 waiting, then 503), so a flood of anonymous verifications never takes the threads "
        "that signed-in users need.",
    )
    keyring_refresh_seconds: float = Field(
        5.0,
        ge=0,
        description="How often a running server re-reads the key-encryption keys "
        "(so `shouhu keys rotate` in another process takes effect).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level of the server log."
    )
    deployment_name: str = Field(
        "守护",
        min_length=1,
        max_length=60,
        description="The deployment's name: the name of the certificate authority `shouhu init` creates "
        "to sign documents (its CA certificate's organisation; set it before the first `shouhu init`).",
    )
    public_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Public address people reach Shouhu at (e.g. `https://shouhu.example.gov.cn`). Issued "
        "documents print `<this>/verify/<code>` (the public verification page) and its QR code. Unset, or a "
        "loopback address "
        "(localhost, 127.0.0.0/8, ::1): every issued PDF is a specimen, marked 样本 on every page, with no "
        "verification address.",
    )
    font_dir: Path | None = Field(
        None,
        description="Folder of fonts an office licenses (方正仿宋_GBK, 方正小标宋简体, as .ttf/.otf/.ttc): "
        "those found are preferred for body text and titles over the open FandolFang and Noto fonts.",
    )
    render_workers: int = Field(
        2,
        ge=0,
        le=32,
        description="Processes that render PDFs (one per core is right); 0 renders in the "
        "request's own process.",
    )
    cookie_secure: bool = Field(
        True,
        description="Mark the pages' session cookie Secure (browsers accept it on https and on "
        "localhost/127.0.0.1). Turn off only behind plain http on another host, which you should not do.",
    )
    session_idle_minutes: int = Field(
        30, ge=1, le=24 * 60, description="A pages' session unused for this long ends (sign in again)."
    )
    session_absolute_hours: int = Field(
        12, ge=1, le=24 * 30,
        description="A page session ends this many hours after sign-in however active it is (the absolute "
        "time-out; API tokens end after `token_ttl_seconds`).",
    )
    mfa_required_roles: str = Field(
        "admin,security_admin,auditor,custodian",
        description="Comma-separated roles that must sign in with a second factor (TOTP). A user holding one "
        "without a confirmed factor may do nothing but enrol. Empty only for test and demo worlds.",
    )
    mfa_challenge_seconds: int = Field(
        300, ge=30, le=1800,
        description="How long the challenge token from the password step waits for the one-time code.",
    )
    totp_issuer: str = Field(
        "守护", min_length=1, max_length=40,
        description="The issuer name authenticator apps show beside the account (the otpauth URI's issuer).",
    )
    oidc_issuer: str | None = Field(
        None,
        description="The OpenID Connect provider's issuer URL (the unified identity platform); its discovery "
        "document is read from `<issuer>/.well-known/openid-configuration`. Unset: no OIDC sign-in.",
    )
    oidc_client_id: str | None = Field(None, description="Shouhu's client id at the OIDC provider.")
    oidc_client_secret: SecretStr | None = Field(
        None, description="Shouhu's client secret at the OIDC provider (or `oidc_client_secret_file`). Never logged."
    )
    oidc_client_secret_file: Path | None = Field(
        None, description="A file holding the OIDC client secret (mode 0600), instead of `oidc_client_secret`."
    )
    oidc_claim: str = Field(
        "sub", min_length=1, max_length=64,
        description="The id_token claim matched against linked identities (e.g. `sub`, or the platform's staff "
        "number claim). Users are never created from a token.",
    )
    oidc_provider_name: str = Field(
        "统一身份认证平台", min_length=1, max_length=40, description="The provider's name on the sign-in page."
    )
    password_login_disabled_roles: str = Field(
        "",
        description="Comma-separated roles whose users may not sign in with a local password (only through "
        "OIDC). Empty: passwords work for every role.",
    )
    search_backend: Literal["tantivy", "whoosh", "postgres"] = Field(
        "tantivy",
        description="Search engine over the blind tokens: `tantivy` (embedded, default), `whoosh` "
        "(embedded) or `postgres` (in the PostgreSQL database, for several app processes). "
        "Switching is a `shouhu reindex`.",
    )
    reindex_workers: int = Field(
        0,
        ge=0,
        le=32,
        description="Worker processes that tokenize text during a full `shouhu reindex` of 400 or more "
        "records: 0 = one per core, 1 = none (the reindexing process does it all).",
    )
    search_index_dir: Path | None = Field(
        None, description="Folder of the embedded search index. Default: `<data_dir>/index`."
    )
    sealed_decision_days: int = Field(
        7, ge=1, le=60, description="Days a custodian has to decide a sealed-record application."
    )
    sealed_grant_days: int = Field(
        30, ge=1, le=365, description="Default term of a grant to read sealed records, in days."
    )
    sealed_entitled_org_types: str = Field(
        "court,procuratorate,police",
        pattern=r"^[a-z_]+(,[a-z_]+)*$",
        description="Organisation types entitled by law to query sealed records (comma-separated); "
        "applications from others can only be answered 'no criminal record'.",
    )
    audit_signing_key_file: Path | None = Field(
        None,
        description="File holding the base64 Ed25519 seed that signs audit checkpoints "
        "(mode 0600), kept apart from the master key. Default: "
        "`<data_dir>/keys/audit-signing.key`, created by `shouhu init`.",
    )
    audit_checkpoint_interval_seconds: int = Field(
        3600,
        ge=0,
        description="How often a running server signs a checkpoint of the access log if it "
        "grew (0 turns the schedule off; checkpoints can still be made on demand).",
    )
    audit_timezone: str = Field(
        "Asia/Shanghai", description="Time zone in which working hours are judged."
    )
    audit_working_hours: str = Field(
        "08:00-18:00",
        pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        description="Working hours (local time); reads outside them are flagged.",
    )
    audit_working_days: str = Field(
        "12345",
        pattern=r"^[1-7]{1,7}$",
        description="Working days as ISO weekday digits (1 = Monday); reads on other days "
        "are flagged.",
    )
    audit_bulk_read_threshold: int = Field(
        200, ge=1, description="Records read by one user within the bulk window that raise a flag."
    )
    audit_bulk_read_window_seconds: int = Field(
        3600, ge=60, description="Window for the bulk-read flag, in seconds."
    )
    audit_denial_threshold: int = Field(
        5, ge=1, description="Refusals of one user within the denial window that raise a flag."
    )
    audit_denial_window_seconds: int = Field(
        900, ge=60, description="Window for the repeated-denial flag, in seconds."
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_networks(cls, value: str) -> str:
        for part in value.split(","):
            if part.strip():
                try:
                    ipaddress.ip_network(part.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"not an address or network: {part.strip()!r}") from None
        return value

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    # Derived locations -------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'shouhu.db'}"

    @property
    def printed_public_url(self) -> str | None:
        """The public address documents print, without a trailing slash; None for a specimen
        (no address set, or a loopback one: a document must never point at 127.0.0.1)."""
        if not self.public_url:
            return None
        host = (urlsplit(self.public_url).hostname or "").lower()
        if host == "localhost" or host.endswith(".localhost"):
            return None
        try:
            if ipaddress.ip_address(host).is_loopback:
                return None
        except ValueError:
            pass  # a name, not an address
        return self.public_url.rstrip("/")

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def effective_master_key_file(self) -> Path:
        return self.master_key_file or self.data_dir / "keys" / "master.key"

    @property
    def effective_audit_signing_key_file(self) -> Path:
        return self.audit_signing_key_file or self.data_dir / "keys" / "audit-signing.key"

    @property
    def effective_search_index_dir(self) -> Path:
        return self.search_index_dir or self.data_dir / "index"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def oidc_configured(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)

    def oidc_secret(self) -> str | None:
        """The OIDC client secret from the setting or its file (None: a public client)."""
        if self.oidc_client_secret is not None:
            return self.oidc_client_secret.get_secret_value()
        if self.oidc_client_secret_file is not None:
            try:
                return self.oidc_client_secret_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"Cannot read the OIDC client secret file {self.oidc_client_secret_file}: "
                                  f"set SHOUHU_OIDC_CLIENT_SECRET_FILE to a readable file.") from exc
        return None

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @cached_property
    def master_key_bytes(self) -> bytes:
        """The master key, or ConfigError with a sentence saying what to set."""
        if self.master_key is not None:
            raw = self.master_key.get_secret_value()
            origin = "SHOUHU_MASTER_KEY"
        else:
            path = self.effective_master_key_file
            if not path.exists():
                raise ConfigError(
                    f"No master key: set SHOUHU_MASTER_KEY to base64 of 32 random bytes, or run "
                    f"`shouhu init` to create the key file {path}."
                )
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise ConfigError(
                    f"The key file {path} is readable by others (mode {mode:o}): "
                    f"run `chmod 600 {path}`."
                )
            raw = path.read_text().strip()
            origin = str(path)
        try:
            key = base64.b64decode(raw, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != MASTER_KEY_BYTES:
            raise ConfigError(
                f"The master key in {origin} is not base64 of exactly 32 bytes: generate one with "
                f"`python -c \"import os,base64;print(base64.b64encode(os.urandom(32)).decode())\"`."
            )
        if key in _PLACEHOLDER_KEYS or len(set(key)) < 8:
            raise ConfigError(
                f"The master key in {origin} is a placeholder, not a random key: set a key made "
                "from 32 random bytes."
            )
        return key


def read_secret_file(path: Path, *, what: str, env: str, length: int = 32) -> bytes:
    """A base64 key from a 0600 file, or ConfigError saying what to do."""
    if not path.exists():
        raise ConfigError(
            f"No {what}: run `shouhu init` to create {path}, or set {env} to a file that holds one."
        )
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"The {what} file {path} is readable by others (mode {mode:o}): run `chmod 600 {path}`.")
    try:
        key = base64.b64decode(path.read_text().strip(), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != length:
        raise ConfigError(f"The {what} in {path} is not base64 of exactly {length} bytes.")
    return key


def new_master_key_text() -> str:
    """A fresh random master key in the text form the key file holds."""
    return base64.b64encode(os.urandom(MASTER_KEY_BYTES)).decode("ascii")


def write_key_file(path: Path, text: str) -> None:
    """Create a key file with mode 0600 atomically; never overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, (text + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
