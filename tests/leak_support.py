"""The plaintext scanner shared by the leak tests (tests/app/test_no_plaintext.py, tests/search/test_search_leaks.py).

A needle is ``(canary, encoding, bytes)``; a hit is ``(canary, encoding, where)``. Each test
supplies its own ``streams`` function: which decoded views of a file's bytes to search besides
the bytes themselves (``(suffix for where, bytes)`` pairs).
"""

from __future__ import annotations

import re
import subprocess
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tests.conftest import id_number

ENCODINGS = ("utf-8", "utf-16-le", "utf-16-be", "gbk")
PG_DUMP = "/usr/bin/pg_dump"

# Canaries both leak tests put in: rare characters that occur nowhere else in the archive, each
# encodable in GBK, a phone number and two ID numbers.
MEMBER_NAME = "麤爨灪"
ADDRESS = "灪靐路7349号龘苑"
MINOR_NOTES = "鸜鹆童年纪事齾齾"
SCHOOL = "齉齉鱻小学"
PHONE = "13976543021"
MINOR_ID = id_number("320706", "20141129", "737")
MEMBER_ID = id_number("320706", "19830917", "593")

Needles = list[tuple[str, str, bytes]]
Hits = set[tuple[str, str, str]]
Streams = Callable[[bytes, str], Iterable[tuple[str, bytes]]]


def encoded(canaries: Iterable[str]) -> Needles:
    """Every canary in each of ``ENCODINGS`` it can be written in."""
    out = []
    for canary in canaries:
        for enc in ENCODINGS:
            try:
                out.append((canary, enc, canary.encode(enc)))
            except UnicodeEncodeError:
                continue
    return out


_ZLIB_START = re.compile(rb"\x78[\x01\x5e\x9c\xda]|\x1f\x8b\x08")


def zlib_streams(data: bytes) -> Iterator[bytes]:
    """Every zlib or gzip stream that starts somewhere in ``data``, inflated."""
    for m in _ZLIB_START.finditer(data):
        d = zlib.decompressobj(wbits=47)  # zlib or gzip header, auto-detected
        try:
            out = d.decompress(data[m.start():], 64 * 1024 * 1024)
        except zlib.error:
            continue
        if out:
            yield out


def raw_and_inflated(data: bytes, name: str) -> Iterator[tuple[str, bytes]]:
    """The bytes themselves, and every zlib/gzip stream inside them."""
    yield "", data
    for out in zlib_streams(data):
        yield " (inflated)", out


def found(data: bytes, where: str, needle_list: Needles, streams: Streams = raw_and_inflated) -> Hits:
    """(canary, encoding, where) for every needle in ``data`` or in a stream inside it."""
    hits: Hits = set()
    for how, blob in streams(data, where):
        hits |= {(c, enc, where + how) for c, enc, b in needle_list if b in blob}
    return hits


def scan_tree(root: Path, needle_list: Needles, streams: Streams = raw_and_inflated
              ) -> tuple[Hits, list[Path]]:
    """The hits in every file below ``root``, and the files read."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    hits: Hits = set()
    read: list[Path] = []
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            # A search engine's temporary file, renamed into place since the listing: its bytes are
            # in the file it became (scanned under that name) or were thrown away.
            continue
        read.append(path)
        hits |= found(data, str(path.relative_to(root)), needle_list, streams)
    return hits, read


_BYTEA_HEX = re.compile(rb"\\\\x([0-9a-fA-F]+)")


def scan_dump(dump: bytes, needle_list: Needles, streams: Streams = raw_and_inflated) -> Hits:
    """A plain pg_dump: the text itself, plus every bytea value (hex in COPY text)."""
    hits = found(dump, "pg_dump", needle_list, streams)
    for m in _BYTEA_HEX.finditer(dump):
        hits |= found(bytes.fromhex(m.group(1).decode()), "pg_dump bytea", needle_list, streams)
    return hits


def pg_dump(database_url: str, tables: Iterable[str] = ()) -> bytes:
    """A plain-text ``pg_dump`` of the database, or of only ``tables``."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    args = [PG_DUMP, "--no-owner", "--dbname", url]
    for t in tables:
        args += ["--table", t]
    proc = subprocess.run(args, capture_output=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc.stdout
