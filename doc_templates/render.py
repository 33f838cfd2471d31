"""Fields in, PDF bytes out: Jinja2 (autoescape on) -> HTML -> WeasyPrint -> PDF/A-2b.

One ``Renderer`` per process keeps a parsed stylesheet and one FontConfiguration
(FINDINGS.md: reuse them; never ``full_fonts``). The stylesheet is handed to
WeasyPrint separately, never through Jinja (autoescape would mangle CSS).
Document metadata carries the kind, issuer and number, never personal data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import jinja2
import segno
from markupsafe import Markup, escape
from pydantic import BaseModel

from core.clock import utcnow
from doc_templates import fonts, words
from doc_templates.kinds import CATEGORY_LABELS, CATEGORY_SHORT, DocKind

HERE = Path(__file__).resolve().parent
PDF_VARIANT = "pdf/a-2b"
CN_DIGITS = "〇一二三四五六七八九"
BLOCK_WIDTH_PT = 156 / 25.4 * 72  # the 156 mm text block
ISSUER_MARK_PT = (16.0, 30.0)  # smallest and largest size of the red issuer mark
ISSUER_MARK_SPACING_PT = 2.0  # its letter-spacing (gongwen.css .issuer-mark)


class MissingGlyphs(ValueError):
    """Some characters are in no installed font; ``fields`` maps field path -> characters."""

    def __init__(self, fields: dict[str, list[str]]):
        super().__init__("characters missing from every font")
        self.fields = fields


@dataclass(frozen=True)
class DocumentMeta:
    """What the issuing service knows beyond the fields: issuer, number, date, codes."""

    kind: str
    kind_title: str
    issuer: str
    doc_number: str
    issued_on: date
    verification_code: str | None = None
    verify_url: str | None = None
    draft: bool = False
    release: str | None = None  # stamp for released sealed copies, printed on every page
    created_at: datetime = field(default_factory=utcnow)  # callers pass the runtime clock's time
    issuer_mark: str | None = None
    # The issuer's registered seal image (a ``data:image/png`` URI): printed only on an issued,
    # digitally signed document, never on a preview or draft (archive.seal_images).
    seal_image: str | None = None

    def strings(self) -> Iterable[tuple[str, str]]:
        for name in ("issuer", "doc_number", "kind_title", "release", "issuer_mark"):
            value = getattr(self, name)
            if value:
                yield f"meta.{name}", value


def cn_date(value: date | str | None) -> str:
    """``2026年11月28日``: Arabic numerals, no leading zeros (GB/T 9704-2012 7.3.5.2)."""
    if value is None:
        return ""
    if isinstance(value, str):
        value = date.fromisoformat(value)
    return f"{value.year}年{value.month}月{value.day}日"


def cn_num(n: int) -> str:
    """1 -> 一, 10 -> 十, 12 -> 十二, 20 -> 二十 (item numbers up to 99)."""
    if n < 10:
        return CN_DIGITS[n]
    tens, ones = divmod(n, 10)
    return ("" if tens == 1 else CN_DIGITS[tens]) + "十" + (CN_DIGITS[ones] if ones else "")


def issuer_mark_pt(mark: str) -> float:
    """A size that keeps the issuer mark on one line of the text block (long names get smaller, not wrapped)."""
    fits = BLOCK_WIDTH_PT * 0.98 / max(len(mark), 1) - ISSUER_MARK_SPACING_PT
    return round(max(ISSUER_MARK_PT[0], min(ISSUER_MARK_PT[1], fits)), 1)


RUN_IN_HEADING_MAX = 30  # characters: a longer first sentence is body text, not a heading


def item(text: str, n: int) -> Markup:
    """A numbered item ``（一）…``; if its first sentence is a short heading followed by more text,
    the number and that sentence are a level-2 heading run into the paragraph (楷体, GB/T 9704-2012
    7.3.1 and common practice), the rest body text. A single-sentence item is body text."""
    head, sep, rest = text.partition("。")
    if sep and rest.strip() and len(head) + 1 <= RUN_IN_HEADING_MAX:
        return Markup('<span class="l2">（{}）{}。</span>{}').format(cn_num(n), head, rest)
    return Markup("（{}）{}").format(cn_num(n), text)


def paras(text: str) -> list[str]:
    return [p.strip() for p in text.splitlines() if p.strip()]


def seal_svg(issuer: str) -> Markup:
    """A round red seal area with the issuer's name along the top and a star in the middle."""
    cx = cy = 110.0
    chars = list(issuer)[:24]
    n = len(chars)
    span = min(250.0, 22.0 * n)
    start = -90 - span / 2
    parts = [
        '<svg class="seal" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 220 220">',
        '<g fill="none" stroke="#e60012" stroke-width="6" opacity="0.85">'
        f'<circle cx="{cx}" cy="{cy}" r="104"/></g>',
        '<g fill="#e60012" opacity="0.85" font-size="26" text-anchor="middle"'
        f' font-family="{escape(fonts.STACKS["song"][-1])}">',
    ]
    for i, ch in enumerate(chars):
        angle = start + (span * i / (n - 1) if n > 1 else span / 2)
        rad = math.radians(angle)
        x, y = cx + 80 * math.cos(rad), cy + 80 * math.sin(rad)
        parts.append(
            f'<text x="{x:.2f}" y="{y:.2f}" transform="rotate({angle + 90:.2f} {x:.2f} {y:.2f})"'
            f' dy="9">{escape(ch)}</text>'
        )
    star = []
    for k in range(10):
        r = 30 if k % 2 == 0 else 12
        a = math.radians(-90 + 36 * k)
        star.append(f"{cx + r * math.cos(a):.2f},{cy + 8 + r * math.sin(a):.2f}")
    parts.append(f'<polygon points="{" ".join(star)}"/></g></svg>')
    return Markup("".join(parts))  # noqa: S704 - built from escaped characters only


def qr_data_uri(url: str) -> str:
    return segno.make(url, error="m", micro=False).svg_data_uri(scale=4, border=2)


def _stylesheet_text() -> str:
    css = (HERE / "static" / "gongwen.css").read_text(encoding="utf-8")
    for stack in fonts.STACKS:
        css = css.replace(f"var(--{stack})", fonts.css_family(stack))
    return css


class Renderer:
    """Renders documents. Build one per process and reuse it."""

    def __init__(self) -> None:
        # WeasyPrint is imported here: it costs ~0.7 s, and only renderers need it.
        from weasyprint import CSS
        from weasyprint.text.fonts import FontConfiguration

        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters.update(cn_date=cn_date, cn_num=cn_num, item=item, paras=paras, at=lambda seq, i: seq[i])
        self.env.filters.update(words.FILTERS)
        self.env.globals.update(words.GLOBALS)
        self.font_config = FontConfiguration()
        self.css = CSS(string=_stylesheet_text(), font_config=self.font_config)

    @staticmethod
    def check_glyphs(fields: dict[str, Any], meta: DocumentMeta) -> None:
        """Refuse characters no font can draw, naming the fields that hold them."""
        bad: dict[str, list[str]] = {}
        for path, text in [*fonts.texts(fields), *meta.strings()]:
            chars = fonts.missing(text)
            if chars:
                bad[path] = chars
        if bad:
            raise MissingGlyphs(bad)

    def html(self, kind: DocKind, fields: BaseModel, meta: DocumentMeta) -> str:
        data = fields.model_dump()
        self.check_glyphs(fields.model_dump(mode="json"), meta)
        issuer_mark = meta.issuer_mark or f"{meta.issuer}文件"
        view = {
            "pdf_title": f"{meta.kind_title} {meta.doc_number}".strip(),
            "kind": meta.kind,
            "kind_title": meta.kind_title,
            "title": words.heading(fields, meta.issuer, meta.kind_title),
            "issuer": meta.issuer,
            "issuer_mark": issuer_mark,
            "issuer_mark_pt": issuer_mark_pt(issuer_mark),
            "doc_number": meta.doc_number,
            "date_cn": cn_date(meta.issued_on),
            "created_iso": meta.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "verification_code": meta.verification_code,
            "verify_url": meta.verify_url,
            "qr_data_uri": qr_data_uri(meta.verify_url) if meta.verify_url else None,
            "seal_svg": seal_svg(meta.issuer) if meta.verification_code and not meta.draft else None,
            "draft": meta.draft,
            "seal_image": meta.seal_image if meta.verification_code and not meta.draft else None,
            "release": meta.release,
            "print_line": True,
        }
        draft_note = Markup('<p class="draft-note">草稿预览：未编号，不具效力</p>') if meta.draft else None
        return self.env.get_template(kind.template).render(
            f=data, meta=view, draft_note=draft_note, category_labels=CATEGORY_LABELS,
            category_short=CATEGORY_SHORT, categories=[CATEGORY_SHORT[i] for i in range(1, 6)],
        )

    def document(self, kind: DocKind, fields: BaseModel, meta: DocumentMeta) -> Any:
        from weasyprint import HTML

        return HTML(string=self.html(kind, fields, meta), base_url=str(HERE)).render(
            stylesheets=[self.css], font_config=self.font_config
        )

    def pdf(self, kind: DocKind, fields: BaseModel, meta: DocumentMeta) -> bytes:
        return self._write(self.document(kind, fields, meta))

    def batch(self, items: Sequence[tuple[DocKind, BaseModel, DocumentMeta]]) -> bytes:
        """Many documents in one PDF; each keeps its own page numbers."""
        if not items:
            raise ValueError("nothing to print")
        docs = [self.document(*item) for item in items]
        pages = [page for doc in docs for page in doc.pages]
        return self._write(docs[0].copy(pages))

    def render_set(self, items: Sequence[tuple[DocKind, BaseModel, DocumentMeta]], progress: Any = None,
                   parts: bool = True) -> tuple[bytes, list[bytes]]:
        """Lay out each document once; return the combined PDF and (if ``parts``) each one's own PDF."""
        docs = []
        for i, item in enumerate(items, start=1):
            docs.append(self.document(*item))
            if progress:
                progress(i, len(items))
        if not docs:
            raise ValueError("nothing to print")
        pages = [page for doc in docs for page in doc.pages]
        return self._write(docs[0].copy(pages)), [self._write(d) for d in docs] if parts else []

    def stamp(self, pdf: bytes, lines: Sequence[str]) -> bytes:
        """``pdf`` with ``lines`` printed in red in the top margin of every page (sealed releases)."""
        import io
        import logging

        from pypdf import PdfReader, PdfWriter

        # pypdf warns about WeasyPrint's (valid) cross-reference layout; nothing to act on.
        logging.getLogger("pypdf").setLevel(logging.ERROR)
        from weasyprint import HTML

        self.check_glyphs({"stamp": list(lines)}, DocumentMeta(kind="", kind_title="", issuer="", doc_number="",
                                                               issued_on=date(2026, 1, 1)))  # placeholder
        html = self.env.get_template("stamp.html.j2").render(lines=lines)
        overlay = PdfReader(io.BytesIO(HTML(string=html, base_url=str(HERE)).write_pdf(
            stylesheets=[self.css], font_config=self.font_config))).pages[0]
        writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
        _drop_signatures(writer)
        for page in writer.pages:
            page.merge_page(overlay)
        writer.add_metadata({"/Title": "封存记录（依法提供）", "/Producer": "Shouhu 守护"})
        out = io.BytesIO()
        writer.write(out)
        return out.getvalue()

    @staticmethod
    def _write(document: Any) -> bytes:
        out: bytes = document.write_pdf(pdf_variant=PDF_VARIANT)
        return out


def _drop_signatures(writer: Any) -> None:
    """Remove signature fields and their widgets: a signature belongs to the bytes it signed, and a
    rewritten copy (a stamped release) carries the signature of whoever rewrote it instead."""
    from pypdf.generic import ArrayObject, NameObject

    root = writer.root_object
    if NameObject("/AcroForm") in root:
        del root[NameObject("/AcroForm")]
    for page in writer.pages:
        annots = page.get("/Annots")
        if annots is None:
            continue
        kept = [a for a in annots.get_object() if a.get_object().get("/FT") != "/Sig"]
        if kept:
            page[NameObject("/Annots")] = ArrayObject(kept)
        else:
            del page[NameObject("/Annots")]
