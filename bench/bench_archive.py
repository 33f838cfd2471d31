"""Archive: minors through the encrypted service vs a plain baseline; cipher suite throughput.

For each database (SQLite in a temporary data dir, PostgreSQL in a database of
its own, created and dropped here) the bench creates households, then creates
and reads N minors twice, interleaved in chunks so drift on a noisy host hits
both alike:

- encrypted: the real service, ``rt.archive.create_minor`` / ``read_minor``
  under ``rt.guard(session, actor)``, one session per operation;
- plain: the bench-only baseline below, which differs from the service only
  in how the minor's fields are stored.

A third row per case times the cryptographic work of the encrypted path alone
(no database), to show how much of the gap it explains.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import secrets
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource
from sqlalchemy import Boolean, Date, Engine, ForeignKey, LargeBinary, String, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from access_control.actions import Action, Role
from access_control.guard import Guard
from access_control.identity import Actor, OrgType
from access_control.policy import Resource
from access_control.regions import Level, Region
from archive import demo, schemas
from archive.models import Household
from archive.records import checked_household, minor_public
from bench import Meter, Result, rate, skipped
from core import crypto
from core.db import UTCDateTime, new_id
from core.errors import Conflict, NotFound
from core.keys import Vault
from core.settings import Settings
from runtime import Runtime

DEFAULT_POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
FAST_ARGON2 = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1}
MINORS_PER_HOUSEHOLD = 5
KIB, MIB = 1024, 1024 * 1024

NOTES = [
    "ratio = time per operation ÷ the baseline's (encrypted ÷ plain; SM ÷ AES); >1 is slower.",
    "encrypted = the real service: policy decision, hash-chained audit event (head row locked), "
    "keyed hash of the ID number and duplicate check on it, a new data key wrapped under the KEK "
    "(KEK row share-locked, data_keys row inserted), payload sealed, minor and category rows, "
    "one commit; reads commit their audit event, then unwrap the data key and open the payload.",
    "plain (bench-only baseline) = the same Guard (same policy decision, same hash-chained audit "
    "event, same commit points), the same households, category rows and response model, and the "
    "same payload JSON bytes stored unencrypted in a bench table (plain ID-number column for the "
    "duplicate check); no keyed hash, no data key, no seal/open. The gap between the two is the "
    "cost of encryption as the service does it.",
    "crypto work only = keyed hash + new data key + wrap + seal per create, unwrap + open per "
    "read, in memory, no database; its note says what share of the encrypted−plain gap "
    "it explains.",
    "seal/open: core.crypto.seal / open_envelope with a payload context; MB = 10^6 bytes; "
    "payloads of 1 KiB and 1 MiB; best of 5 rounds, AES and SM rounds alternating; peak RSS is "
    "the process peak during the rounds (+ the most it rose above the RSS at a round's start).",
    "SQLite runs with WAL and synchronous=FULL (an fsync per commit), as the service sets it up.",
]


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--minors", type=int, default=None,
                       help="minors created and read per backend and variant (default 1000; "
                            "--quick: 20)")
    group.add_argument("--backends", default="sqlite,postgres",
                       help="comma-separated: sqlite, postgres (default both)")
    group.add_argument("--suite", choices=("aes", "sm"), default="aes",
                       help="cipher suite of the archive runs (default aes)")


def run(args: argparse.Namespace) -> list[Result]:
    quick = bool(getattr(args, "quick", False))
    minors = args.minors if getattr(args, "minors", None) else (20 if quick else 1000)
    names = getattr(args, "backends", "sqlite,postgres")
    backends = [b.strip() for b in names.split(",") if b.strip()]
    suite = getattr(args, "suite", "aes")
    rows: list[Result] = []
    for backend in backends:
        if backend not in ("sqlite", "postgres"):
            raise ValueError(f"unknown backend {backend!r}: use sqlite or postgres")
        rows += archive_rows(backend, minors=minors, suite=suite, quick=quick)
    rows += crypto_rows(quick=quick)
    return sorted(rows, key=_case_order)


def _case_order(row: Result) -> int:
    """Group rows by operation; the sort is stable, so sqlite stays before postgres."""
    order = ["create minor", "read minor", "seal 1 KiB", "open 1 KiB", "seal 1 MiB", "open 1 MiB",
             "keyed_hash"]
    return next((i for i, c in enumerate(order) if row.case.startswith(c)), len(order))


# Settings and databases ----------------------------------------------------------


class BenchSettings(Settings):
    """Settings from arguments only: a bench never inherits the operator's SHOUHU_* env."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def bench_settings(data_dir: Path, database_url: str | None, suite: str) -> Settings:
    return BenchSettings(
        data_dir=data_dir,
        database_url=database_url,
        master_key=SecretStr(base64.b64encode(secrets.token_bytes(32)).decode()),
        cipher_suite=suite,
        demo_password=SecretStr("bench-password-123"),
        **FAST_ARGON2,
    )


def postgres_admin_url() -> str:
    url = os.environ.get("SHOUHU_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN)
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database of this run's own; yields its SQLAlchemy URL, drops it after."""
    admin = postgres_admin_url()
    name = f"shouhu_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = admin.rpartition("/")
    try:
        yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            conn.execute(drop.format(sql.Identifier(name)))


@contextmanager
def bench_runtime(backend: str, suite: str) -> Iterator[Runtime]:
    """A migrated archive with the demo regions, orgs and users, and the plain tables."""
    with (
        tempfile.TemporaryDirectory(prefix="shouhu-bench-") as tmp,
        postgres_database() if backend == "postgres" else _no_url() as url,
    ):
        rt = Runtime.open(bench_settings(Path(tmp) / "var", url, suite), require_schema=False)
        try:
            rt.initialize()
            demo.build_world(rt)
            PlainBase.metadata.create_all(rt.db.engine)
            yield rt
        finally:
            rt.close()


@contextmanager
def _no_url() -> Iterator[None]:
    yield None


# The plain baseline --------------------------------------------------------------


class PlainBase(DeclarativeBase):
    """Bench-only tables, kept out of the application's metadata and migrations."""


class PlainMinor(PlainBase):
    """A minor as an unencrypted design would keep it: the same payload JSON, in clear."""

    __tablename__ = "bench_plain_minors"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    household_id: Mapped[str] = mapped_column(ForeignKey(Household.id), index=True)
    region_code: Mapped[str] = mapped_column(String(12), index=True)
    version: Mapped[int] = mapped_column(default=1)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    id_number: Mapped[str | None] = mapped_column(String(20), unique=True)
    sealed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __mapper_args__ = {"version_id_col": version, "version_id_generator": False}


class PlainMinorCategory(PlainBase):
    __tablename__ = "bench_plain_minor_categories"

    minor_id: Mapped[str] = mapped_column(ForeignKey(PlainMinor.id), primary_key=True)
    category: Mapped[int] = mapped_column(primary_key=True)
    found_on: Mapped[date] = mapped_column(Date, primary_key=True)
    ended_on: Mapped[date | None] = mapped_column(Date)
    subtype: Mapped[str | None] = mapped_column(String(20))


def payload_json(data: dict[str, Any]) -> bytes:
    """The bytes the service seals (``Vault.seal_json``), here kept in clear."""
    return json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _plain_public(g: Guard, row: PlainMinor, data: dict[str, Any]) -> schemas.MinorPublic:
    cats = g.session.scalars(
        select(PlainMinorCategory).where(PlainMinorCategory.minor_id == row.id)
        .order_by(PlainMinorCategory.category, PlainMinorCategory.found_on)
    ).all()
    return minor_public(row, data, cats)


def plain_create_minor(g: Guard, data: schemas.MinorCreate) -> schemas.MinorPublic:
    """``CaseFileService.create_minor`` step for step, minus the keyed hash, data key and seal."""
    household = checked_household(g, data)
    mid = new_id("mn")
    g.authorize(
        Action.MINOR_CREATE,
        Resource("household", household.id, household.region_code),
        subjects=[data.id_number] if data.id_number else [],
    )
    if data.id_number and g.session.scalars(
        select(PlainMinor.id).where(PlainMinor.id_number == data.id_number)
    ).first():
        raise Conflict("该身份证号码已登记。", details={"field": "id_number"})
    payload = data.model_dump(mode="json", exclude={"household_id", "categories"})
    row = PlainMinor(
        id=mid, household_id=household.id, region_code=household.region_code, version=1,
        payload=payload_json(payload), id_number=data.id_number, sealed=False,
        created_by=g.actor.user_id, created_at=g.now, updated_at=g.now,
    )
    g.session.add(row)
    today = g.now.date()
    cats: dict[tuple[int, date], PlainMinorCategory] = {}
    for c in data.categories:
        item = schemas.CategoryIn(category=c) if isinstance(c, int) else c
        found = item.found_on or today
        cats[(item.category, found)] = PlainMinorCategory(
            minor_id=mid, category=item.category, found_on=found, ended_on=item.ended_on, subtype=item.subtype
        )
    g.session.add_all(cats.values())
    g.session.flush()
    public = _plain_public(g, row, payload)
    g.commit()
    return public


def plain_read_minor(g: Guard, minor_id: str) -> schemas.MinorPublic:
    """``CaseFileService.read_minor`` step for step, minus the data-key unwrap and open."""
    row = g.session.get(PlainMinor, minor_id)
    if row is None or row.sealed:
        raise NotFound()
    g.authorize(
        Action.MINOR_READ,
        Resource("minor", row.id, row.region_code),
        subjects=[row.id_number] if row.id_number else [],
        commit=True,
    )
    return _plain_public(g, row, json.loads(row.payload))


# Workload ----------------------------------------------------------------------------


LOADER = Actor(user_id="system", username="system:bench", display_name="基准测试", org_id="system",
               org_name="系统", org_type=OrgType.CIVIL_AFFAIRS, roles=(Role.CASEWORKER.value,),
               region_code=demo.CITY[0])


def make_minors(rt: Runtime, count: int, rng: random.Random) -> list[schemas.MinorCreate]:
    """Households (created through the service, untimed) and validated minor payloads."""
    with rt.db.session() as s:
        villages = list(s.scalars(
            select(Region).where(Region.level == Level.VILLAGE).order_by(Region.code)
        ))
    today = rt.clock().date()
    used: set[str] = set()
    minors: list[schemas.MinorCreate] = []
    household: schemas.HouseholdPublic | None = None
    for i in range(count):
        if i % MINORS_PER_HOUSEHOLD == 0:
            region = rng.choice(villages)
            surname = rng.choice(demo.SURNAMES)
            data = schemas.HouseholdCreate(
                region_code=region.code, address=f"{rng.randint(1, 12)}组{rng.randint(1, 88)}号",
                members=[
                    schemas.MemberIn(name=demo._name(rng, surname), relation="父亲",
                               situation="外出务工"),
                    schemas.MemberIn(name=demo._name(rng), relation="母亲", situation="外出务工"),
                ],
                notes="父母长期外出务工，由祖父母照料",
            )
            with rt.db.session() as s:
                household = rt.archive.create_household(rt.guard(s, LOADER), data)
        assert household is not None
        age_days = rng.randint(365, 17 * 365)
        birth = today - timedelta(days=age_days)
        male = rng.random() < 0.5
        idn = demo.synthetic_id_number(rng, household.region_code[:6], birth, male)
        while idn in used:
            idn = demo.synthetic_id_number(rng, household.region_code[:6], birth, male)
        used.add(idn)
        cats = sorted({rng.randint(1, 5) for _ in range(rng.choice((1, 1, 2)))})
        minors.append(schemas.MinorCreate(
            household_id=household.id, name=demo._name(rng, surname), id_number=idn,
            birth_date=birth, sex="male" if male else "female",
            categories=[
                schemas.CategoryIn(category=c,
                             found_on=max(birth, today - timedelta(days=rng.randint(0, 700))))
                for c in cats
            ],
            school=f"{rng.choice(demo.VILLAGE_NAMES)}小学" if age_days > 6 * 365 else None,
            guardian=demo._name(rng, surname),
            phone=f"1{rng.choice('3589')}{rng.randrange(10**8, 10**9)}",
            notes="父母均在外务工，每月电话联系一次；祖父年迈，需定期走访。",
        ))
    return minors


def _interleaved(n: int, chunks: int) -> list[range]:
    size = max(1, -(-n // chunks))
    return [range(i, min(n, i + size)) for i in range(0, n, size)]


class StatementCounter:
    """Counts the SQL statements an engine executes (to explain a gap, not to time it)."""

    def __init__(self, engine: Engine) -> None:
        self.total = 0
        event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, *_args: object) -> None:
        self.total += 1


@dataclass
class Variant:
    """One side of a comparison: the operation, its meter and its statement count."""

    fn: Callable[[int], Any]
    meter: Meter = field(default_factory=Meter)
    statements: int = 0


def _run_pair(n: int, first: Variant, second: Variant, sql_count: StatementCounter) -> None:
    """Run ``first.fn(i)`` and ``second.fn(i)`` for every i, alternating chunks ABBA-wise."""
    for k, block in enumerate(_interleaved(n, 10)):
        for v in (first, second) if k % 2 == 0 else (second, first):
            before = sql_count.total
            with v.meter:
                for i in block:
                    v.fn(i)
            v.statements += sql_count.total - before


@dataclass
class CryptoOnly:
    """The encrypted path's cryptographic work, done again in memory (no database)."""

    create_seconds: float
    read_seconds: float
    count: int


def crypto_only(rt: Runtime, minors: list[schemas.MinorCreate], reps: int) -> CryptoOnly:
    ring, vault = rt.ring, rt.vault
    kek_id = ring.current_kek_id
    sealed: list[tuple[str, crypto.WrappedKey, bytes, str]] = []
    create, read = Meter(), Meter()
    payloads = [m.model_dump(mode="json", exclude={"household_id", "categories"}) for m in minors]
    for _ in range(reps):
        sealed.clear()
        with create:
            for data in payloads:
                mid = new_id("mn")
                dek_id = new_id("dk")
                rt.archive.subject_hash(data["id_number"])
                dek = ring.new_data_key()
                wrapped = ring.wrap_data_key(dek, dek_id=dek_id, kek_id=kek_id)
                env = vault.seal_json(dek, dek_id, data, kind="minor", record_id=mid, version=1)
                sealed.append((dek_id, wrapped, env, mid))
        with read:
            for dek_id, wrapped, env, mid in sealed:
                dek = ring.unwrap_data_key(wrapped, dek_id=dek_id)
                crypto.open_envelope(dek, env, key_id=dek_id, context=Vault.payload_context(
                    kind="minor", record_id=mid, version=1))
    return CryptoOnly(create.seconds, read.seconds, reps * len(payloads))


def postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or None if it can."""
    try:
        with psycopg.connect(postgres_admin_url(), autocommit=True, connect_timeout=5):
            return None
    except psycopg.OperationalError as exc:
        first = (str(exc).strip().splitlines() or ["no answer"])[0]
        return f"PostgreSQL not reachable at {postgres_admin_url()} ({first})"


@dataclass
class ArchiveTimes:
    create_plain: Variant
    create_enc: Variant
    read_plain: Variant
    read_enc: Variant
    only: CryptoOnly


def time_archive(rt: Runtime, *, minors: int, quick: bool) -> ArchiveTimes:
    warm = 2 if quick else 5
    payloads = make_minors(rt, minors + warm, random.Random(2026))
    enc_ids: list[str] = []
    plain_ids: list[str] = []

    def create_enc(i: int) -> None:
        with rt.db.session() as s:
            enc_ids.append(rt.archive.create_minor(rt.guard(s, LOADER), payloads[i]).id)

    def create_plain(i: int) -> None:
        with rt.db.session() as s:
            plain_ids.append(plain_create_minor(rt.guard(s, LOADER), payloads[i]).id)

    def read_enc(i: int) -> None:
        with rt.db.session() as s:
            rt.archive.read_minor(rt.guard(s, LOADER), enc_ids[i])

    def read_plain(i: int) -> None:
        with rt.db.session() as s:
            plain_read_minor(rt.guard(s, LOADER), plain_ids[i])

    # Warm-up (untimed): statement caches, connection pool, key ring.
    for i in range(minors, minors + warm):
        create_enc(i)
        create_plain(i)
    for i in range(warm):
        read_enc(i)
        read_plain(i)
    del enc_ids[:], plain_ids[:]

    order = list(range(minors))
    random.Random(7).shuffle(order)
    times = ArchiveTimes(
        create_plain=Variant(create_plain), create_enc=Variant(create_enc),
        read_plain=Variant(lambda i: read_plain(order[i])),
        read_enc=Variant(lambda i: read_enc(order[i])),
        only=CryptoOnly(0.0, 0.0, 0),
    )
    sql_count = StatementCounter(rt.db.engine)
    _run_pair(minors, times.create_plain, times.create_enc, sql_count)
    _run_pair(minors, times.read_plain, times.read_enc, sql_count)
    times.only = crypto_only(rt, payloads[:minors], 1 if quick else max(1, 5000 // max(minors, 1)))
    return times


def archive_rows(backend: str, *, minors: int, suite: str, quick: bool) -> list[Result]:
    cases = (f"create minor · {backend}", f"read minor · {backend}")
    if backend == "postgres" and (why := postgres_unreachable()):
        return [skipped(case=c, variant="all", why=why) for c in cases]
    with bench_runtime(backend, suite) as rt:
        times = time_archive(rt, minors=minors, quick=quick)
    rows: list[Result] = []
    only = times.only
    for case, plain, enc, only_s in (
        (cases[0], times.create_plain, times.create_enc, only.create_seconds),
        (cases[1], times.read_plain, times.read_enc, only.read_seconds),
    ):
        base = rate(case=case, variant="plain", unit="minors/s", count=minors,
                    seconds=plain.meter.seconds, peak_rss_mib=plain.meter.peak_rss_mib,
                    note=f"baseline; {plain.statements / minors:.1f} SQL statements/op")
        enc_row = rate(case=case, variant=f"encrypted ({suite})", unit="minors/s", count=minors,
                       seconds=enc.meter.seconds, peak_rss_mib=enc.meter.peak_rss_mib,
                       note=f"{enc.statements / minors:.1f} SQL statements/op").against(base)
        gap = (enc.meter.seconds - plain.meter.seconds) / minors
        per_op = only_s / only.count
        share = f"= {per_op / gap:.0%} of the encrypted−plain gap" if gap > 0 else "gap ≤ 0: noise"
        only_row = rate(case=case, variant=f"crypto only ({suite})", unit="minors/s",
                        count=only.count, seconds=only_s, note=share)
        rows += [base, enc_row, only_row]
    return rows


# Cipher suites -----------------------------------------------------------------------


@dataclass
class Best:
    """The fastest of several timed rounds, with the highest memory seen in any round."""

    seconds: float = float("inf")
    peak_rss_mib: float = 0.0
    growth_mib: float = 0.0

    def add(self, meter: Meter) -> None:
        self.seconds = min(self.seconds, meter.seconds)
        self.peak_rss_mib = max(self.peak_rss_mib, meter.peak_rss_mib)
        self.growth_mib = max(self.growth_mib, meter.growth_mib)


def best_of(fns: dict[str, Callable[[], object]], *, count: int, repeats: int) -> dict[str, Best]:
    """Call each function ``count`` times per round; rounds alternate between the functions,
    so a burst of load on a shared host does not land on one of them only."""
    best = {name: Best() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            meter = Meter()
            with meter:
                for _ in range(count):
                    fn()
            best[name].add(meter)
    return best


def crypto_rows(*, quick: bool) -> list[Result]:
    repeats = 1 if quick else 5
    plan = [("1 KiB", KIB, 200 if quick else 20_000), ("1 MiB", MIB, 3 if quick else 100)]
    context = Vault.payload_context(kind="minor", record_id="mn_bench", version=1)
    suites = (crypto.AES_SUITE, crypto.SM_SUITE)
    rows: list[Result] = []
    for label, size, count in plan:
        plaintext = os.urandom(size)
        for verb in ("seal", "open"):
            fns: dict[str, Callable[[], object]] = {}
            for suite in suites:
                key = os.urandom(suite.key_bytes)
                envelope = crypto.seal(key, plaintext, suite=suite, key_id="dk_bench",
                                       context=context)
                fns[suite.name] = (
                    partial(crypto.seal, key, plaintext, suite=suite, key_id="dk_bench",
                            context=context)
                    if verb == "seal" else
                    partial(crypto.open_envelope, key, envelope, context=context, key_id="dk_bench")
                )
            best = best_of(fns, count=count, repeats=repeats)
            aes, sm = (
                rate(case=f"{verb} {label}", variant=name, unit="MB/s", count=count,
                     seconds=b.seconds, per_op=size / 1e6, peak_rss_mib=b.peak_rss_mib,
                     note=f"RSS +{b.growth_mib:.1f} MiB")
                for name, b in best.items()
            )
            rows += [_as_baseline(aes), sm.against(aes)]
    rows += keyed_hash_rows(quick=quick, repeats=repeats)
    return rows


def _as_baseline(row: Result) -> Result:
    return replace(row, note=f"baseline; {row.note}" if row.note else "baseline")


def keyed_hash_rows(*, quick: bool, repeats: int) -> list[Result]:
    count = 500 if quick else 50_000
    value = "320706201503010011"
    fns: dict[str, Callable[[], object]] = {}
    for suite in (crypto.AES_SUITE, crypto.SM_SUITE):
        ring = crypto.KeyRing(secrets.token_bytes(32), suite=suite)
        ring.keyed_hash("id_number", value)  # derive and cache the subkey
        fns[suite.name] = partial(ring.keyed_hash, "id_number", value)
    aes, sm = (
        rate(case="keyed_hash (id number)", variant=name, unit="ops/s", count=count,
             seconds=b.seconds)
        for name, b in best_of(fns, count=count, repeats=repeats).items()
    )
    return [_as_baseline(aes), sm.against(aes)]
