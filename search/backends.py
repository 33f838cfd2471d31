"""Search backends over blind tokens: tantivy (default), Whoosh, PostgreSQL.

All three index the same ``IndexDoc`` (hex tokens only, nothing readable) and
answer the same ``BlindQuery``. The caller's scope (region subtree, sealed
grants) is part of the query each backend runs, never a filter applied to its
results, so totals count only what the caller may read. Callers never see a
vendor exception: backends raise ``SearchUnavailable``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import text

from core.db import Database
from search.analyzer import SEPARATOR, BlindQuery

META_FILE = "shouhu-index.json"
LIVE_TABLE = "search_docs"  # the postgres backend's table; a rebuild fills BUILD_TABLE and renames it
BUILD_TABLE = "search_docs_build"


class SearchUnavailable(Exception):
    """The index cannot be used (missing, locked, built with another key, broken)."""


@dataclass
class IndexDoc:
    id: str
    record_kind: str  # minor | household | document
    kind: str  # minor, household, or a document kind
    regions: list[str]  # the record's region code and every ancestor's
    categories: list[int]
    day: date
    sealed: bool
    grams: list[str]
    words: list[str]


@dataclass
class Scope:
    """What the caller may find: records in ``region``'s subtree (unsealed), plus ``grants``."""

    region: str | None
    grants: list[str] = field(default_factory=list)
    kinds: list[str] | None = None  # None: any kind


@dataclass
class Filters:
    kind: str | None = None
    region: str | None = None
    category: int | None = None
    date_from: date | None = None
    date_to: date | None = None


def day_number(d: date) -> int:
    return d.year * 10000 + d.month * 100 + d.day


class SearchBackend(Protocol):
    @property
    def name(self) -> str: ...  # read-only: the live index (search.generations) answers its backend's

    def upsert(self, docs: Sequence[IndexDoc]) -> None: ...
    def delete(self, ids: Sequence[str]) -> None: ...
    def search(self, q: BlindQuery, scope: Scope, f: Filters, *, limit: int, offset: int
               ) -> tuple[int, list[tuple[str, float]]]: ...
    def clear(self) -> None: ...
    def count(self) -> int: ...
    def close(self) -> None: ...
    def files(self) -> list[Path]: ...


def _check_meta(folder: Path, backend: str, check: str) -> None:
    """A folder's index must have been built with this key (else it silently finds nothing)."""
    meta = folder / META_FILE
    if meta.exists():
        stored = json.loads(meta.read_text())
        if stored.get("key_check") != check or stored.get("backend") != backend:
            raise SearchUnavailable(
                f"the search index in {folder} was built with another key or backend: run `shouhu reindex`")
    else:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        meta.write_text(json.dumps({"backend": backend, "key_check": check, "format": 1}))


# tantivy ----------------------------------------------------------------------------------


class TantivyBackend:
    """tantivy over pre-hashed tokens (whitespace tokenizer: our tokens contain no spaces)."""

    name = "tantivy"

    def __init__(self, folder: Path, *, key_check: str, writer_heap_mb: int = 128):
        import tantivy

        self._t = tantivy
        self.folder = folder
        _check_meta(folder, self.name, key_check)
        sb = tantivy.SchemaBuilder()
        sb.add_text_field("id", stored=True, tokenizer_name="raw", index_option="basic")
        sb.add_text_field("record_kind", tokenizer_name="raw", index_option="basic")
        sb.add_text_field("kind", tokenizer_name="raw", index_option="basic")
        sb.add_text_field("regions", tokenizer_name="raw", index_option="basic")
        sb.add_integer_field("categories", indexed=True)
        sb.add_integer_field("day", indexed=True, fast=True)
        sb.add_boolean_field("sealed", indexed=True)
        sb.add_text_field("grams", tokenizer_name="whitespace", index_option="position")
        sb.add_text_field("words", tokenizer_name="whitespace", index_option="freq")
        self.schema = sb.build()
        try:
            self.index = tantivy.Index(self.schema, path=str(folder), reuse=True)
        except ValueError as exc:
            raise SearchUnavailable(f"cannot open the tantivy index: {exc}") from None
        self._heap = writer_heap_mb * 1_000_000
        self._writer: Any = None
        self._lock = threading.Lock()

    def _w(self) -> Any:
        if self._writer is None:
            try:
                self._writer = self.index.writer(heap_size=self._heap, num_threads=1)
            except ValueError as exc:
                raise SearchUnavailable(f"the tantivy index is locked by another writer: {exc}") from None
        return self._writer

    def upsert(self, docs: Sequence[IndexDoc]) -> None:
        with self._lock:
            w = self._w()
            for d in docs:
                w.delete_documents_by_term("id", d.id)
                doc = self._t.Document()
                doc.add_text("id", d.id)
                doc.add_text("record_kind", d.record_kind)
                doc.add_text("kind", d.kind)
                for r in d.regions:
                    doc.add_text("regions", r)
                for c in d.categories:
                    doc.add_integer("categories", c)
                doc.add_integer("day", day_number(d.day))
                doc.add_boolean("sealed", d.sealed)
                doc.add_text("grams", " ".join(d.grams))
                doc.add_text("words", " ".join(d.words))
                w.add_document(doc)
            w.commit()
        self.index.reload()

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            w = self._w()
            for i in ids:
                w.delete_documents_by_term("id", i)
            w.commit()
        self.index.reload()

    def _query(self, q: BlindQuery, scope: Scope, f: Filters) -> Any:
        T, s = self._t.Query, self.schema
        Occ = self._t.Occur
        must: list[tuple[Any, Any]] = []
        for phrase in q.phrases:
            if len(phrase) == 1:
                must.append((Occ.Must, T.term_query(s, "grams", phrase[0], index_option="position")))
            else:
                words: list[str | tuple[int, str]] = list(phrase)
                must.append((Occ.Must, T.phrase_query(s, "grams", words)))
        if not must:
            return T.empty_query()
        visible: list[tuple[Any, Any]] = []
        if scope.region is not None:
            in_region = [(Occ.Must, T.term_query(s, "regions", scope.region)),
                         (Occ.Must, T.term_query(s, "sealed", False))]
            if scope.kinds is not None:
                in_region.append((Occ.Must, T.term_set_query(s, "kind", scope.kinds or ["\x00"])))
            visible.append((Occ.Should, T.boolean_query(in_region)))
        if scope.grants:
            # A grant opens sealed records only: once unsealed, a record is read by region and role.
            visible.append((Occ.Should, T.boolean_query([(Occ.Must, T.term_set_query(s, "id", scope.grants)),
                                                         (Occ.Must, T.term_query(s, "sealed", True))])))
        if not visible:
            return T.empty_query()
        must.append((Occ.Must, T.boolean_query(visible)))
        if f.kind:
            must.append((Occ.Must, T.term_query(s, "kind", f.kind)))
        if f.region:
            must.append((Occ.Must, T.term_query(s, "regions", f.region)))
        if f.category is not None:
            must.append((Occ.Must, T.term_query(s, "categories", f.category)))
        if f.date_from or f.date_to:
            lo = day_number(f.date_from) if f.date_from else 0
            hi = day_number(f.date_to) if f.date_to else 99999999
            must.append((Occ.Must, T.range_query(s, "day", self._t.FieldType.Integer, lo, hi)))
        for w in set(q.words):
            must.append((Occ.Should, T.term_query(s, "words", w)))
        return T.boolean_query(must)

    def search(self, q: BlindQuery, scope: Scope, f: Filters, *, limit: int, offset: int
               ) -> tuple[int, list[tuple[str, float]]]:
        searcher = self.index.searcher()
        result = searcher.search(self._query(q, scope, f), limit=limit, count=True, offset=offset)
        hits = [(searcher.doc(addr)["id"][0], float(score)) for score, addr in result.hits]
        return int(result.count or 0), hits  # type: ignore[attr-defined]  # set by count=True; the stub lacks it

    def count(self) -> int:
        return int(self.index.searcher().num_docs)

    def clear(self) -> None:
        with self._lock:
            w = self._w()
            w.delete_all_documents()
            w.commit()
        self.index.reload()

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.wait_merging_threads()
                self._writer = None

    def files(self) -> list[Path]:
        return [p for p in self.folder.rglob("*") if p.is_file()]


# Whoosh -----------------------------------------------------------------------------------


# How often opening a Whoosh index is tried when a concurrent commit removes the files it listed.
WHOOSH_OPEN_ATTEMPTS = 5


class WhooshBackend:
    """Whoosh (the maintained ``whoosh3`` fork) over pre-hashed, space-separated tokens."""

    name = "whoosh"

    def __init__(self, folder: Path, *, key_check: str, limitmb: int = 256):
        from whoosh import fields, index
        from whoosh.analysis import SpaceSeparatedTokenizer

        self.folder = folder
        _check_meta(folder, self.name, key_check)
        schema = fields.Schema(
            id=fields.ID(stored=True, unique=True),
            record_kind=fields.ID(),
            kind=fields.ID(),
            regions=fields.KEYWORD(),
            categories=fields.KEYWORD(),
            day=fields.NUMERIC(int, bits=32),
            sealed=fields.BOOLEAN(),
            # The analyzer only splits on spaces: it holds no key (Whoosh pickles it into the index).
            grams=fields.TEXT(analyzer=SpaceSeparatedTokenizer(), phrase=True),  # type: ignore[arg-type]
            words=fields.TEXT(analyzer=SpaceSeparatedTokenizer(), phrase=False),  # type: ignore[arg-type]
        )
        for attempt in range(WHOOSH_OPEN_ATTEMPTS):
            try:
                if index.exists_in(str(folder)):
                    self.ix = index.open_dir(str(folder))
                else:
                    self.ix = index.create_in(str(folder), schema)
                break
            except FileNotFoundError:
                # Another process (the server's indexer) committed between Whoosh listing the
                # latest table of contents and opening it, and removed the one listed: the next
                # attempt finds the new one. (A reindex's probe of the served index met this.)
                if attempt == WHOOSH_OPEN_ATTEMPTS - 1:
                    raise
        self.limitmb = limitmb
        self._lock = threading.Lock()

    def _writer(self) -> Any:
        from whoosh.index import LockError

        try:
            return self.ix.writer(limitmb=self.limitmb, procs=1)
        except LockError:
            raise SearchUnavailable("the Whoosh index is locked by another writer") from None

    def upsert(self, docs: Sequence[IndexDoc]) -> None:
        with self._lock:
            w = self._writer()
            try:
                for d in docs:
                    w.update_document(
                        id=d.id, record_kind=d.record_kind, kind=d.kind, regions=" ".join(d.regions),
                        categories=" ".join(str(c) for c in d.categories), day=day_number(d.day),
                        sealed=d.sealed, grams=" ".join(d.grams), words=" ".join(d.words))
                w.commit()
            except BaseException:
                w.cancel()
                raise

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            w = self._writer()
            for i in ids:
                w.delete_by_term("id", i)
            w.commit()

    def _query(self, q: BlindQuery, scope: Scope, f: Filters) -> Any:
        from whoosh import query as whoosh_query

        must: list[Any] = [
            whoosh_query.Term("grams", p[0]) if len(p) == 1 else whoosh_query.Phrase("grams", p) for p in q.phrases
        ]
        if not must:
            return whoosh_query.NullQuery
        visible: list[Any] = []
        if scope.region is not None:
            parts: list[Any] = [whoosh_query.Term("regions", scope.region), whoosh_query.Term("sealed", False)]
            if scope.kinds is not None:
                parts.append(whoosh_query.Or([whoosh_query.Term("kind", k) for k in scope.kinds])
                             if scope.kinds else whoosh_query.NullQuery)
            visible.append(whoosh_query.And(parts))
        if scope.grants:
            # A grant opens sealed records only: once unsealed, a record is read by region and role.
            visible.append(whoosh_query.And([whoosh_query.Or([whoosh_query.Term("id", g) for g in scope.grants]),
                                             whoosh_query.Term("sealed", True)]))
        if not visible:
            return whoosh_query.NullQuery
        must.append(whoosh_query.Or(visible))
        if f.kind:
            must.append(whoosh_query.Term("kind", f.kind))
        if f.region:
            must.append(whoosh_query.Term("regions", f.region))
        if f.category is not None:
            must.append(whoosh_query.Term("categories", str(f.category)))
        if f.date_from or f.date_to:
            must.append(whoosh_query.NumericRange("day", day_number(f.date_from) if f.date_from else None,
                                       day_number(f.date_to) if f.date_to else None))
        query: whoosh_query.Query = whoosh_query.And(must)
        if q.words:
            query = whoosh_query.AndMaybe(query, whoosh_query.Or([whoosh_query.Term("words", w) for w in set(q.words)]))
        return query

    def search(self, q: BlindQuery, scope: Scope, f: Filters, *, limit: int, offset: int
               ) -> tuple[int, list[tuple[str, float]]]:
        with self.ix.searcher() as s:
            # Keep Whoosh's default optimize=True: len(results) then counts the matches in a second
            # pass. optimize=False would be about 1.8x faster at 10,000 documents, but whoosh3 then
            # miscounts matches across segments (33 of 178): test_exact_totals_across_segments_and_pages.
            results = s.search(self._query(q, scope, f), limit=offset + limit)
            total = len(results)
            hits = [(r["id"], float(r.score or 0.0)) for r in results[offset : offset + limit]]
        return total, hits

    def count(self) -> int:
        return int(self.ix.doc_count())

    def clear(self) -> None:
        from whoosh import index

        with self._lock:
            schema = self.ix.schema
            self.ix.close()  # type: ignore[no-untyped-call]  # Whoosh is untyped
            self.ix = index.create_in(str(self.folder), schema)

    def close(self) -> None:
        self.ix.close()  # type: ignore[no-untyped-call]  # Whoosh is untyped

    def files(self) -> list[Path]:
        return [p for p in self.folder.rglob("*") if p.is_file()]


# PostgreSQL -------------------------------------------------------------------------------


class PostgresBackend:
    """Blind tokens in a GIN-indexed ``tsvector`` (positions kept, so phrases work).

    Lives in Shouhu's own PostgreSQL database, so several app processes share it.
    Token strings are cast literally (``'tok':pos``) and never parsed by a text
    search configuration, which could split or stem them.
    """

    name = "postgres"

    def __init__(self, db: Database, *, key_check: str | None, table: str = LIVE_TABLE):
        """``key_check`` None: a table being built aside (``search.generations``), checked when it is
        switched in; the live table's key check is in ``search_meta``."""
        if db.dialect != "postgresql":
            raise SearchUnavailable("the postgres search backend needs SHOUHU_DATABASE_URL to be PostgreSQL")
        if table not in (LIVE_TABLE, BUILD_TABLE):
            raise ValueError(f"not a search table: {table}")
        self.db = db
        self.table = table
        if key_check is None:
            return
        with db.engine.begin() as conn:
            # The first process to open an empty table stores its key check (a rebuild's switch may too).
            conn.execute(text("INSERT INTO search_meta (name, value) VALUES ('key_check', :v) "
                              "ON CONFLICT (name) DO NOTHING"), {"v": key_check})
            stored = conn.execute(text("SELECT value FROM search_meta WHERE name = 'key_check'")).scalar_one()
            if stored != key_check:
                raise SearchUnavailable("the search table was built with another key: run `shouhu reindex`")

    @staticmethod
    def _vector(tokens: Sequence[str]) -> str:
        grouped: dict[str, list[int]] = {}
        for pos, tok in enumerate(tokens, start=1):
            if tok != SEPARATOR:
                grouped.setdefault(tok, []).append(min(pos, 16383))
        return " ".join(f"{tok}:{','.join(map(str, p[:256]))}" for tok, p in grouped.items())

    def upsert(self, docs: Sequence[IndexDoc]) -> None:
        rows = [{
            "id": d.id, "record_kind": d.record_kind, "kind": d.kind, "regions": d.regions,
            "categories": d.categories, "day": d.day, "sealed": d.sealed,
            "grams": self._vector(d.grams), "words": " ".join(sorted(set(d.words))),
        } for d in docs]
        if not rows:
            return
        with self.db.engine.begin() as conn:
            # The table name is one of two constants (checked in __init__); values are bound parameters.
            conn.execute(text(
                f"INSERT INTO {self.table} (id, record_kind, kind, regions, categories, day, sealed, grams, words) "  # noqa: S608
                "VALUES (:id, :record_kind, :kind, :regions, :categories, :day, :sealed, "
                "CAST(:grams AS tsvector), CAST(:words AS tsvector)) "
                "ON CONFLICT (id) DO UPDATE SET record_kind = EXCLUDED.record_kind, kind = EXCLUDED.kind, "
                "regions = EXCLUDED.regions, categories = EXCLUDED.categories, day = EXCLUDED.day, "
                "sealed = EXCLUDED.sealed, grams = EXCLUDED.grams, words = EXCLUDED.words"), rows)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self.db.engine.begin() as conn:
                conn.execute(text(f"DELETE FROM {self.table} WHERE id = ANY(:ids)"), {"ids": list(ids)})  # noqa: S608

    def search(self, q: BlindQuery, scope: Scope, f: Filters, *, limit: int, offset: int
               ) -> tuple[int, list[tuple[str, float]]]:
        if not q.phrases:
            return 0, []
        tsq = " & ".join("(" + " <-> ".join(p) + ")" for p in q.phrases)
        rank = " | ".join(sorted(set(q.words))) or None
        params: dict[str, Any] = {"q": tsq, "limit": limit, "offset": offset, "rank": rank}
        visible = []
        if scope.region is not None:
            cond = "(regions @> ARRAY[CAST(:scope_region AS text)] AND NOT sealed"
            params["scope_region"] = scope.region
            if scope.kinds is not None:
                cond += " AND kind = ANY(:scope_kinds)"
                params["scope_kinds"] = scope.kinds
            visible.append(cond + ")")
        if scope.grants:
            # A grant opens sealed records only: once unsealed, a record is read by region and role.
            visible.append("(id = ANY(:grants) AND sealed)")
            params["grants"] = scope.grants
        if not visible:
            return 0, []
        where = ["grams @@ CAST(:q AS tsquery)", "(" + " OR ".join(visible) + ")"]
        if f.kind:
            where.append("kind = :kind")
            params["kind"] = f.kind
        if f.region:
            where.append("regions @> ARRAY[CAST(:region AS text)]")
            params["region"] = f.region
        if f.category is not None:
            where.append("categories @> ARRAY[CAST(:category AS integer)]")
            params["category"] = f.category
        if f.date_from:
            where.append("day >= :date_from")
            params["date_from"] = f.date_from
        if f.date_to:
            where.append("day <= :date_to")
            params["date_to"] = f.date_to
        score = "ts_rank(words, CAST(:rank AS tsquery))" if rank else "0"
        # Only fixed SQL fragments are joined here; every value is a bound parameter.
        # The matches are materialized before ORDER BY/LIMIT: otherwise, for a query without ranking
        # words (an ID number) in a wide scope, the planner may walk the primary key in id order
        # hoping for 20 early hits, while count(*) OVER () reads the whole table (1.3 s at 100k
        # documents instead of 4 ms: bench/bench_search.py).
        sql = (f"WITH hits AS MATERIALIZED (SELECT id, {score} AS score FROM {self.table} "  # noqa: S608
               f"WHERE {' AND '.join(where)}) "
               "SELECT id, score, count(*) OVER () AS total FROM hits "
               "ORDER BY score DESC, id LIMIT :limit OFFSET :offset")
        with self.db.engine.connect() as conn:
            rows = conn.execute(text(sql), params).all()
            if not rows and offset:
                total = conn.execute(text(f"SELECT count(*) FROM {self.table} WHERE {' AND '.join(where)}"),  # noqa: S608
                                     params).scalar_one()
                return int(total), []
        return (int(rows[0].total) if rows else 0), [(r.id, float(r.score)) for r in rows]

    def count(self) -> int:
        with self.db.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {self.table}")).scalar_one())  # noqa: S608

    def clear(self) -> None:
        with self.db.engine.begin() as conn:
            conn.execute(text(f"DELETE FROM {self.table}"))  # noqa: S608

    def close(self) -> None:
        pass

    def files(self) -> list[Path]:
        return []


def open_backend(name: str, *, folder: Path, db: Database, key_check: str) -> SearchBackend:
    if name == "tantivy":
        return TantivyBackend(folder / "tantivy", key_check=key_check)
    if name == "whoosh":
        return WhooshBackend(folder / "whoosh", key_check=key_check)
    if name == "postgres":
        return PostgresBackend(db, key_check=key_check)
    raise SearchUnavailable(f"unknown search backend {name}")

