"""Authorized search: the caller's scope is part of the query, snippets come from decrypted text.

One audit event per search, committed before any hit is decrypted. It holds
the keyed hash of the query (never the query), the filters, the total and the
subjects of the hits on the page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select

from access_control.actions import Action
from access_control.guard import Guard
from access_control.policy import Resource, may_read_document_kind
from access_control.regions import RegionTree
from access_control.sealed import SealedGrant, SealedRequest
from archive.models import Document, Household, Minor
from core.crypto import KeyRing
from core.errors import Gone, IntegrityFailure, InvalidInput, ServiceUnavailable
from core.pagination import decode_int_cursor, encode_cursor
from doc_templates import kinds as doc_kinds
from search.analyzer import Analyzer, normalize
from search.backends import Filters, Scope, SearchBackend, SearchUnavailable
from search.indexer import Sources

RECORD_KINDS = ("minor", "household")
SNIPPET_CHARS = 80


MAX_OFFSET = 10_000


def highlight(text: str, needles: list[str], width: int = SNIPPET_CHARS) -> str | None:
    """An HTML-escaped excerpt of ``text`` around the first match, matches in ``<mark>``."""
    norm = normalize(text)
    if len(norm) != len(text):  # normalisation changed lengths: match on the original instead
        norm = text.lower()
    spans: list[tuple[int, int]] = []
    for n in needles:
        start = norm.find(n)
        while start >= 0 and n:
            spans.append((start, start + len(n)))
            start = norm.find(n, start + len(n))
    if not spans:
        return None
    spans.sort()
    first = spans[0][0]
    lo = max(0, first - width // 3)
    hi = min(len(text), lo + width)
    out, pos = [], lo
    for a, b in spans:
        if a < pos or a >= hi:
            continue
        out.append(html.escape(text[pos:a]))
        out.append("<mark>" + html.escape(text[a:min(b, hi)]) + "</mark>")
        pos = min(b, hi)
    out.append(html.escape(text[pos:hi]))
    return ("…" if lo > 0 else "") + "".join(out) + ("…" if hi < len(text) else "")


@dataclass(kw_only=True, eq=False)
class SearchService:
    backend: SearchBackend
    analyzer: Analyzer
    sources: Sources
    ring: KeyRing
    regions: RegionTree

    def scope(self, g: Guard) -> Scope:
        """What the caller may find, from policy: region subtree and kinds, plus sealed grants."""
        kinds: list[str] = []
        if g.decide(Action.MINOR_LIST).allowed:
            kinds += list(RECORD_KINDS)
        if g.decide(Action.DOCUMENT_LIST).allowed:
            kinds += [k.kind for k in doc_kinds.KINDS.values() if may_read_document_kind(g.actor, k)]
        grants = list(g.session.scalars(
            select(SealedGrant.record_id).join(SealedRequest, SealedRequest.id == SealedGrant.request_id)
            .where(SealedRequest.requester_id == g.actor.user_id, SealedRequest.status == "approved",
                   SealedRequest.expires_at > g.now)))
        return Scope(region=g.actor.region_code if kinds else None, grants=grants, kinds=kinds)

    def search(self, g: Guard, *, q: str, kind: str | None, region: str | None, category: int | None,
               date_from: date | None, date_to: date | None, limit: int, cursor: str | None) -> dict[str, Any]:
        g.require(Action.SEARCH, Resource("search"))
        q = q.strip()
        if not q:
            raise InvalidInput.one("q", "请输入要查找的内容", location="query")
        if kind is not None and kind not in RECORD_KINDS and doc_kinds.get(kind) is None:
            raise InvalidInput.one("kind", "未知的种类", location="query")
        if region is not None:
            if region not in self.regions:
                raise InvalidInput.one("region", "未知的行政区划代码", location="query")
            g.require(Action.SEARCH, Resource("region", region, region))
        offset = decode_int_cursor(cursor, maximum=MAX_OFFSET) or 0
        scope = self.scope(g)
        blind = self.analyzer.query(q)
        filters = Filters(kind=kind, region=region, category=category, date_from=date_from, date_to=date_to)
        try:
            total, hits = self.backend.search(blind, scope, filters, limit=limit, offset=offset) if blind.phrases \
                else (0, [])
        except SearchUnavailable:
            raise ServiceUnavailable("检索索引暂不可用，请管理员运行 `shouhu reindex`。") from None
        rows = {rid: self._row(g, rid) for rid, _ in hits}
        subjects = sorted({h for row in rows.values() if row is not None for h in _subjects(row)})
        g.authorize(Action.SEARCH, Resource("search"), subjects=subjects, commit=True, details={
            "query": self.ring.keyed_hash("search-query", normalize(q)), "total": total, "page": len(hits),
            "date_from": date_from.isoformat() if date_from else None,
            "date_to": date_to.isoformat() if date_to else None},
            filters={"kind": kind, "region": region, "category": category})
        needles = [normalize(part) for part in q.split() if part]
        out = []
        for rid, score in hits:
            row = rows.get(rid)
            if row is None or not self._visible(g, row, scope):
                continue  # the index ran ahead of (or behind) the archive; never show it
            try:
                title, parts = self._text(g, row)
            except (Gone, IntegrityFailure):
                continue
            snippet = next((s for p in parts if (s := highlight(p, needles))), html.escape(parts[0][:SNIPPET_CHARS])
                           if parts else "")
            out.append({"id": rid, "kind": _kind(row), "title": title, "snippet": snippet, "score": round(score, 4)})
        return {"total": total, "hits": out,
                "next_cursor": encode_cursor(offset + limit) if offset + limit < total else None}

    @staticmethod
    def _row(g: Guard, rid: str) -> Minor | Household | Document | None:
        prefix = rid.split("_", 1)[0]
        if prefix == "mn":
            return g.session.get(Minor, rid)
        if prefix == "hh":
            return g.session.get(Household, rid)
        return g.session.get(Document, rid) if prefix == "doc" else None

    def _visible(self, g: Guard, row: Minor | Household | Document, scope: Scope) -> bool:
        if row.sealed:
            return row.id in scope.grants
        return scope.region is not None and self.regions.is_within(row.region_code, scope.region) and (
            scope.kinds is None or _kind(row) in scope.kinds)

    def _text(self, g: Guard, row: Minor | Household | Document) -> tuple[str, list[str]]:
        s = g.session
        if isinstance(row, Minor):
            parts = self.sources.minor_text(s, row)
            return f"{parts[0]}（未成年人）", parts
        if isinstance(row, Household):
            parts = self.sources.household_text(s, row)
            return f"家庭档案：{parts[0]}", parts
        parts = self.sources.document_text(s, row)
        return f"{parts[0]} {row.doc_number}", parts[2:] or parts


def _kind(row: Minor | Household | Document) -> str:
    return row.kind if isinstance(row, Document) else ("minor" if isinstance(row, Minor) else "household")


def _subjects(row: Minor | Household | Document) -> list[str]:
    if isinstance(row, Minor):
        return [row.id_hash] if row.id_hash else []
    return list(row.subject_hashes or [])
