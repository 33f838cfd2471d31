"""No plaintext in any search index: tantivy, Whoosh, PostgreSQL.

Canary names, ID numbers, a phone number and narrative text go in through the
API as a household, a minor and a referral notice. They are indexed by tantivy
(the outbox), rebuilt into Whoosh and into the postgres backend (``reindex``),
and found by search in each, so the indexes really hold them. Then every file
of the tantivy and Whoosh folders, and a ``pg_dump`` of the search tables
(search_docs, search_meta, search_outbox), are searched for the canaries, for
the master key and for the search subkey, in UTF-8, UTF-16-LE, UTF-16-BE and
GBK, raw and inside every zlib/gzip stream and every LZ4 block (tantivy
compresses its document store with LZ4 blocks, each prefixed with its length; a
pure-Python decoder below reads them, as no LZ4 package is installed). zstd is
read with ``zstandard`` if installed; without it the test insists that the
tantivy store is LZ4 (its default) and holds no zstd frame. Positive controls
show the scanner finds canaries planted in plain files, in a real tantivy index
and a real Whoosh index that store them (compressed), and in a search table.
"""

from __future__ import annotations

import base64
import json
import re
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from runtime import Runtime
from search.backends import Filters, Scope
from tests import leak_support
from tests.conftest import current_generation, household_body, minor_body, record_fields, run_sql
from tests.leak_support import ADDRESS, MEMBER_ID, MEMBER_NAME, MINOR_ID, MINOR_NOTES, PHONE, SCHOOL

try:  # not a dependency: tantivy writes LZ4 unless told otherwise
    import zstandard
except ImportError:  # pragma: no cover - depends on the machine
    zstandard = None

SEARCH_TABLES = ("search_docs", "search_meta", "search_outbox")



MINOR_NAME = "龘靐齉"
GUARDIAN = "鱻鸜鹆"
NOTES = "金丝雀笔记父母龘靐长期外出"
SITUATION = "该生鬱鬱寡欢爩爩不语，由祖母麤麤照料"
CANARIES = [MINOR_NAME, MEMBER_NAME, GUARDIAN, ADDRESS, NOTES, MINOR_NOTES, SCHOOL, SITUATION, PHONE, MINOR_ID,
            MEMBER_ID, MINOR_ID[:17], MEMBER_ID[:17],
            # pieces an index might keep: the bigrams and words of the canaries
            "龘靐", "靐齉", "麤爨", "鸜鹆", "齾齾", "鬱鬱", "爩爩", "寡欢"]


# The scanner -------------------------------------------------------------------------------------

needles = leak_support.encoded

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
LZ4_MAX_BLOCK = 1 << 24


def _lz4_length(data: bytes, pos: int, nibble: int) -> tuple[int | None, int]:
    """A length from its token nibble: 15 means bytes follow, each added, until one below 255.

    Returns the length (None where the data ends first) and the position after it."""
    length = nibble
    if nibble == 15:
        while True:
            if pos >= len(data):
                return None, pos
            b = data[pos]
            pos += 1
            length += b
            if b != 255:
                break
    return length, pos


def lz4_block(data: bytes, pos: int, size: int) -> bytes | None:
    """Decode one LZ4 block starting at ``pos`` that must inflate to exactly ``size`` bytes."""
    out = bytearray()
    n = len(data)
    while pos < n:
        token = data[pos]
        pos += 1
        literals, pos = _lz4_length(data, pos, token >> 4)
        if literals is None or pos + literals > n:
            return None
        out += data[pos : pos + literals]
        pos += literals
        if len(out) >= size:  # the last sequence is literals only
            return bytes(out) if len(out) == size else None
        if pos + 2 > n:
            return None
        offset = data[pos] | data[pos + 1] << 8
        pos += 2
        if offset == 0 or offset > len(out):
            return None
        length, pos = _lz4_length(data, pos, token & 15)
        if length is None:
            return None
        length += 4
        if len(out) + length > size:
            return None
        start = len(out) - offset
        if offset >= length:
            out += out[start : start + length]
        else:  # an overlapping copy repeats the last ``offset`` bytes
            for k in range(length):
                out.append(out[start + k])
    return None


def lz4_blocks(data: bytes) -> Iterator[bytes]:
    """Every size-prefixed LZ4 block (lz4_flex ``compress_prepend_size``, tantivy's doc store) in ``data``."""
    for pos in range(len(data) - 5):
        size = int.from_bytes(data[pos : pos + 4], "little")
        if 0 < size <= LZ4_MAX_BLOCK:
            out = lz4_block(data, pos + 4, size)
            if out is not None:
                yield out


def zstd_frames(data: bytes) -> Iterator[bytes]:
    if zstandard is None:
        return
    for m in re.finditer(re.escape(_ZSTD_MAGIC), data):
        try:
            out = zstandard.ZstdDecompressor().decompressobj().decompress(data[m.start():])
        except zstandard.ZstdError:
            continue
        if out:
            yield out


def streams(data: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    yield from leak_support.raw_and_inflated(data, name)
    if name.endswith(".store"):  # tantivy's document store: the only compressed tantivy file
        for out in lz4_blocks(data):
            yield " (lz4)", out
    for out in zstd_frames(data):
        yield " (zstd)", out


def scan_tree(root: Path, needle_list: leak_support.Needles) -> tuple[leak_support.Hits, list[Path]]:
    return leak_support.scan_tree(root, needle_list, streams)


def scan_dump(dump: bytes, needle_list: leak_support.Needles) -> leak_support.Hits:
    return leak_support.scan_dump(dump, needle_list, streams)


def pg_dump_tables(database_url: str, tables: Iterable[str]) -> bytes:
    return leak_support.pg_dump(database_url, tables)


def secret_needles(rt: Runtime) -> leak_support.Needles:
    """The master key and the search subkey, raw, hex and base64."""
    out: leak_support.Needles = []
    for label, key in (("master key", rt.settings.master_key_bytes), ("search subkey", rt.ring.hash_subkey("search"))):
        for form, value in (("raw", key), ("hex", key.hex().encode()), ("base64", base64.b64encode(key))):
            out.append((label, form, value))
    return out


# The archive -------------------------------------------------------------------------------------


def plant(client, tokens) -> list[str]:  # type: ignore[no-untyped-def]
    """A household, a minor and a referral notice full of canaries; returns their ids."""
    cw = tokens["caseworker.haizhou"]
    r = client.post("/api/v1/households", headers=cw, json=household_body(
        address=ADDRESS, notes=NOTES,
        members=[{"name": MEMBER_NAME, "relation": "父亲", "id_number": MEMBER_ID, "phone": PHONE,
                  "situation": "外出务工"}]))
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    r = client.post("/api/v1/minors", headers=cw, json=minor_body(
        hid, name=MINOR_NAME, id_number=MINOR_ID, birth_date="2014-11-29", notes=MINOR_NOTES, school=SCHOOL,
        guardian=GUARDIAN, phone=PHONE, categories=[1, 3]))
    assert r.status_code == 201, r.text
    mid = r.json()["id"]
    fields = {"recipient": "连云港市海州区教育局", "minor_name": MINOR_NAME, "found_on": "2026-11-18",
              "situation": SITUATION,  # sex, age and address from the record
              "requests": [f"请联系监护人{GUARDIAN}，电话{PHONE}。"], "contact": "张晓东",
              "contact_phone": "0518-85800000"}
    fields = record_fields("referral_notice", **fields)  # the kind's other fields from its example
    r = client.post("/api/v1/documents", headers=cw,
                    json={"kind": "referral_notice", "subject_id": mid, "fields": fields})
    assert r.status_code == 201, r.text
    return [hid, mid, r.json()["id"]]


def assert_indexed(rt: Runtime, backend, ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    """The index really holds the canaries: each is found (as blind tokens)."""
    assert backend.count() >= len(ids)
    scope = Scope(region="320700")
    for q, expected in ((MINOR_NAME, {ids[1], ids[2]}), (MINOR_ID, {ids[1]}), (MEMBER_ID, {ids[0]}),
                        (PHONE, {ids[0], ids[1], ids[2]}), ("鬱鬱寡欢", {ids[2]}), (ADDRESS, {ids[0], ids[1], ids[2]})):
        total, hits = backend.search(rt.analyzer.query(q), scope, Filters(), limit=10, offset=0)
        assert {i for i, _ in hits} == expected, (backend.name, q)



def test_no_plaintext_in_any_search_index(client, tokens, rt, settings):
    postgres = rt.db.dialect == "postgresql"
    watch = needles(CANARIES) + secret_needles(rt)
    rt.indexer.stop()  # the server's indexer thread: the outbox is drained below, by hand
    ids = plant(client, tokens)

    # Outbox rows name records, nothing else.
    rows = run_sql(rt, "SELECT record_kind, record_id FROM search_outbox")
    assert {(k, i) for k, i in rows} >= {("household", ids[0]), ("minor", ids[1]), ("document", ids[2])}
    if postgres:
        assert scan_dump(pg_dump_tables(str(settings.database_url), SEARCH_TABLES), watch) == set()

    rt.indexer.drain()
    assert_indexed(rt, rt.search_backend, ids)
    rebuilt = {}
    for engine in ["whoosh"] + (["postgres"] if postgres else []):
        other = Runtime.open(settings.model_copy(update={"search_backend": engine}))
        try:
            if engine == "postgres":
                run_sql(other, "DELETE FROM search_docs")
                run_sql(other, "DELETE FROM search_meta")
            rebuilt[engine] = other.indexer.reindex()
            assert_indexed(other, other.search_backend, ids)
        finally:
            other.close()
    assert rebuilt["whoosh"] == 3

    index_dir = settings.effective_search_index_dir
    hits, files = scan_tree(index_dir, watch)
    names = {p.relative_to(index_dir).as_posix() for p in files}
    assert any(n.startswith("tantivy/") and n.endswith(".store") for n in names), names
    assert any(n.startswith("whoosh/") and n.endswith(".seg") for n in names), names
    assert hits == set(), hits

    # tantivy's store is LZ4 (read here); it holds the record ids and nothing else.
    tantivy_dir = current_generation(index_dir / "tantivy")
    meta = json.loads((tantivy_dir / "meta.json").read_text())
    compression = meta["index_settings"]["docstore_compression"]
    assert compression == "lz4" or (zstandard is not None and compression.startswith("zstd")), compression
    for store in tantivy_dir.glob("*.store"):
        data = store.read_bytes()
        if zstandard is None:
            assert _ZSTD_MAGIC not in data, f"{store.name} holds zstd frames and zstandard is not installed"
        if compression == "lz4":
            inflated = b"".join(lz4_blocks(data))
            assert all(i.encode() in inflated for i in ids), "the LZ4 reader did not read the tantivy store"
    # Whoosh keeps the key check beside the index, never the key (its TOC pickles the schema).
    assert json.loads((current_generation(index_dir / "whoosh") / "shouhu-index.json").read_text())["key_check"] == \
        rt.analyzer.check_value()

    if postgres:
        dump = pg_dump_tables(str(settings.database_url), SEARCH_TABLES)
        assert b"COPY public.search_docs" in dump and ids[1].encode() in dump
        assert scan_dump(dump, watch) == set()
        run_sql(rt, "DELETE FROM search_docs")
        run_sql(rt, "DELETE FROM search_meta")


# Positive controls ----------------------------------------------------------------------------------

PROBE = "探针龘靐齉鱻"


def test_the_scanner_finds_planted_canaries(tmp_path, rt, settings):
    probe = needles([PROBE])
    # Plain files, in every encoding, and inside zlib and LZ4.
    for enc in leak_support.ENCODINGS:
        (tmp_path / f"planted-{enc}.txt").write_bytes(f"前缀{PROBE}后缀".encode(enc))
    (tmp_path / "planted.z").write_bytes(b"junk" + zlib.compress(MINOR_ID.encode()) + b"junk")
    # An LZ4 block whose text exists only once decoded: literals, then an overlapping match.
    raw = "探针".encode()
    block = bytes([(len(raw) << 4) | (12 - 4)]) + raw + (6).to_bytes(2, "little") + bytes([0x10]) + b"!"
    (tmp_path / "planted.store").write_bytes(b"\x07junk" + (len(raw) + 12 + 1).to_bytes(4, "little") + block)
    hits, _ = scan_tree(tmp_path, probe + needles([MINOR_ID, "探针探针探针"]))
    assert {(c, enc) for c, enc, _ in hits} >= {(PROBE, enc) for enc in leak_support.ENCODINGS}
    assert (MINOR_ID, "utf-8", "planted.z (inflated)") in hits
    assert ("探针探针探针", "utf-8", "planted.store (lz4)") in hits
    assert ("探针探针探针", "utf-8", "planted.store") not in hits

    # A real tantivy index that stores the canary (LZ4-compressed store): found.
    import tantivy

    sb = tantivy.SchemaBuilder()
    sb.add_text_field("name", stored=True)
    folder = tmp_path / "plain-tantivy"
    folder.mkdir()
    ix = tantivy.Index(sb.build(), path=str(folder))
    w = ix.writer(heap_size=15_000_000, num_threads=1)
    for i in range(50):
        w.add_document(tantivy.Document(name=f"{PROBE}{PROBE}{PROBE}第{i}号"))
    w.commit()
    w.wait_merging_threads()
    hits, _ = scan_tree(folder, needles([PROBE * 3]))
    assert any(where.endswith(".store (lz4)") for _, _, where in hits), hits
    assert {enc for _, enc, _ in hits} >= {"utf-8"}

    # A real Whoosh index that stores the canary: found.
    from whoosh import fields, index

    folder = tmp_path / "plain-whoosh"
    folder.mkdir()
    wix = index.create_in(str(folder), fields.Schema(name=fields.TEXT(stored=True)))
    ww = wix.writer()
    for i in range(50):
        ww.add_document(name=f"{PROBE} 第{i}号")
    ww.commit()
    wix.close()
    hits, _ = scan_tree(folder, probe)
    assert ("探针龘靐齉鱻", "utf-8") in {(c, enc) for c, enc, _ in hits}, hits

    # The secrets scanner finds a key written out.
    (tmp_path / "key.txt").write_bytes(b"x" + rt.ring.hash_subkey("search").hex().encode() + b"x")
    hits, _ = scan_tree(tmp_path, secret_needles(rt))
    assert ("search subkey", "hex", "key.txt") in hits

    # In PostgreSQL: a canary written into a search table the way a bug would.
    if rt.db.dialect == "postgresql":
        run_sql(rt, "DELETE FROM search_meta")
        run_sql(rt, "INSERT INTO search_meta (name, value) VALUES ('planted', :v)", v=PROBE)
        try:
            dump = pg_dump_tables(str(settings.database_url), SEARCH_TABLES)
            assert (PROBE, "utf-8", "pg_dump") in scan_dump(dump, probe)
        finally:
            run_sql(rt, "DELETE FROM search_meta")
