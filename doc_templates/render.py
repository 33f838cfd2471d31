"""Fields in, PDF bytes out: Jinja2 (autoescape on) -> HTML -> WeasyPrint -> PDF/A-2b.

One ``Renderer`` per process keeps a parsed stylesheet and one FontConfiguration
(FINDINGS.md: reuse them; never ``full_fonts``). The stylesheet is handed to
WeasyPrint separately, never through Jinja (autoescape would mangle CSS).
Document metadata carries the kind, issuer and number, never personal data.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
import segno
from markupsafe import Markup
from pydantic import BaseModel

from core.clock import utcnow
from doc_templates import fonts, signing, words
from doc_templates.kinds import CATEGORY_LABELS, CATEGORY_SHORT, DocKind
from doc_templates.signing import SignerKey

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
    # Who issues it, under which number (a 发文字号, or a form's 档案编号), on which day.
    issuer: str
    doc_number: str
    issued_on: date
    created_at: datetime = field(default_factory=utcnow)  # callers pass the runtime clock's time
    # How anyone checks it: the code, and the public address (none for a specimen).
    verification_code: str | None = None
    verify_url: str | None = None
    # Printed across every page: a draft (preview, not numbered) or a specimen (no public address configured).
    mark: Literal["draft", "specimen"] | None = None
    release: str | None = None  # stamp for released sealed copies, printed on every page
    issuer_mark: str | None = None
    # The issuer's registered seal image (a ``data:image/png`` URI): printed only on an issued,
    # digitally signed document, never on a preview or draft (archive.seal_images).
    seal_image: str | None = None

    @property
    def draft(self) -> bool:
        return self.mark == "draft"

    @property
    def specimen(self) -> bool:
        return self.mark == "specimen"

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


def em_width(text: str) -> float:
    """Approximate printed width in em: CJK and full-width characters 1, others (digits, Latin) 1/2."""
    return sum(0.5 if ord(ch) < 0x2E80 else 1.0 for ch in text)


SIGN_INDENT_EM = 4  # 成文日期 right-indented four characters (GB/T 9704-2012 7.3.5.1)


def sign_name_too_long(issuer: str, date_cn: str) -> bool:
    """Whether the issuer's name, centred on the date, would run past the right edge of the text block."""
    return em_width(issuer) / 2 > SIGN_INDENT_EM + em_width(date_cn) / 2


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


def qr_data_uri(url: str) -> str:
    return segno.make(url, error="m", micro=False).svg_data_uri(scale=4, border=2)


def _stylesheet_text(font_dir: Path | None = None) -> str:
    css = fonts.font_face_css(font_dir) + (HERE / "static" / "gongwen.css").read_text(encoding="utf-8")
    for stack in fonts.STACKS:
        css = css.replace(f"var(--{stack})", fonts.css_family(stack))
    return css


# zlib level for the PDF's streams (font programs, page content, the ICC profile). pydyf uses 9; measured
# on a signed one-page issue (bench/results/2026-12-07-documents-2.md): 9 -> 3 cuts compression time by
# about 70 % for streams 2.6 % larger (the PDF ~1.5 KB larger). Decompression does not care.
PDF_ZLIB_LEVEL = 3


class _OneStream:
    """A zlib compressor for one pydyf stream, at ``PDF_ZLIB_LEVEL``, remembered for the rest of the write."""

    def __init__(self, memo: dict[bytes, bytes]) -> None:
        self.memo = memo
        self.parts: list[bytes] = []

    def compress(self, data: bytes) -> bytes:
        self.parts.append(data)
        return b""

    def flush(self, *_mode: int) -> bytes:
        raw = b"".join(self.parts)
        out = self.memo.get(raw)
        if out is None:
            out = self.memo[raw] = zlib.compress(raw, PDF_ZLIB_LEVEL)
        return out


class _PdfZlib:
    """What pydyf sees as ``zlib``: inside ``Renderer``'s writes (``writing``), streams compressed at
    ``PDF_ZLIB_LEVEL``, each once per write; anywhere else (another WeasyPrint caller in the process,
    such as the bench's baseline) plain zlib, as pydyf uses it.

    pydyf compresses every stream at level 9, and twice when the file gets an identifier (PDF/A
    always does): once to hash all objects for the ID, once to write them. The memo holds one
    write's streams (same bytes in, same bytes out) and is emptied when it ends; it is per thread,
    like a write.
    """

    def __init__(self) -> None:
        self.local = threading.local()

    @contextmanager
    def writing(self) -> Iterator[None]:
        self.local.memo = {}
        try:
            yield
        finally:
            self.local.memo = None

    def compressobj(self, *args: Any, **kwargs: Any) -> Any:
        memo: dict[bytes, bytes] | None = getattr(self.local, "memo", None)
        return zlib.compressobj(*args, **kwargs) if memo is None else _OneStream(memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(zlib, name)


_PDF_ZLIB = _PdfZlib()


def _use_pdf_zlib() -> None:
    import pydyf  # type: ignore[import-untyped]

    if getattr(pydyf, "zlib", None) is zlib:
        pydyf.zlib = _PDF_ZLIB


class Renderer:
    """Renders documents. Build one per process and reuse it.

    ``font_dir`` is the folder of an office's licensed fonts (``SHOUHU_FONT_DIR``): those it
    holds are declared with @font-face and preferred (doc_templates.fonts.LICENSED).
    """

    def __init__(self, font_dir: Path | None = None) -> None:
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
        _use_pdf_zlib()
        self.css = CSS(string=_stylesheet_text(font_dir), font_config=self.font_config)

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
        layout = kind.layout
        # 文件格式: the issuer's name and 文件; 信函格式: the name alone (GB/T 9704-2012 7.2.3, 10.1).
        issuer_mark = meta.issuer_mark or (f"{meta.issuer}文件" if layout == "file" else meta.issuer)
        date_text = cn_date(meta.issued_on)
        # A public address is printed (and drawn as a QR code) only on a real document, never on a specimen.
        verify_url = meta.verify_url if not meta.specimen else None
        view = {
            "pdf_title": f"{meta.kind_title} {meta.doc_number}".strip(),
            "kind": meta.kind,
            "kind_title": meta.kind_title,
            "title": words.heading(fields, meta.issuer, meta.kind_title),
            "layout": layout,
            "issuer": meta.issuer,
            "issuer_mark": issuer_mark,
            "issuer_mark_pt": issuer_mark_pt(issuer_mark),
            "doc_number": meta.doc_number,
            # 签发人 on the number line of a report to a superior body (a kind whose fields name one).
            "signer": data.get("signer") if layout == "file" else None,
            "date_cn": date_text,
            "sign_long": sign_name_too_long(meta.issuer, date_text),
            "created_iso": meta.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "verification_code": meta.verification_code,
            "verify_url": verify_url,
            "qr_data_uri": qr_data_uri(verify_url) if verify_url else None,
            "draft": meta.draft,
            "seal_image": meta.seal_image if meta.verification_code and not meta.draft else None,
            "specimen": meta.specimen,
            "release": meta.release,
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

    def pdf(self, kind: DocKind, fields: BaseModel, meta: DocumentMeta, *, signer: SignerKey | None = None,
            at: datetime | None = None) -> bytes:
        """The document as PDF/A-2b; with ``signer``, signed by it in the same write (PAdES B-B, signing
        time ``at``, by default the document's creation time): an issue."""
        return self._write(self.document(kind, fields, meta), signer, at or meta.created_at)

    def batch(self, items: Sequence[tuple[DocKind, BaseModel, DocumentMeta]]) -> bytes:
        """Many documents in one PDF; each keeps its own page numbers."""
        if not items:
            raise ValueError("nothing to print")
        docs = [self.document(*item) for item in items]
        pages = [page for doc in docs for page in doc.pages]
        return self._write(docs[0].copy(pages))

    def render_set(self, items: Sequence[tuple[DocKind, BaseModel, DocumentMeta]], progress: Any = None,
                   parts: bool = True, signer: SignerKey | None = None) -> tuple[bytes, list[bytes]]:
        """Lay out each document once; return the combined PDF and (if ``parts``) each one's own PDF, signed
        by ``signer`` (if any) in its write at its creation time. The combined PDF is never signed."""
        docs = []
        for i, item in enumerate(items, start=1):
            docs.append(self.document(*item))
            if progress:
                progress(i, len(items))
        if not docs:
            raise ValueError("nothing to print")
        pages = [page for doc in docs for page in doc.pages]
        combined = self._write(docs[0].copy(pages))
        own = [self._write(d, signer, item[2].created_at) for d, item in zip(docs, items, strict=True)] if parts else []
        return combined, own

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
        with _PDF_ZLIB.writing():
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
    def _write(document: Any, signer: SignerKey | None = None, at: datetime | None = None) -> bytes:
        """``document`` as PDF/A-2b; with ``signer``, signed in the same write at ``at`` (the issuing clock's
        time, which the caller always knows: a signature never reads a clock of its own)."""
        if signer is not None and at is None:
            raise ValueError("a signature needs its signing time")
        slot = signing.SignatureSlot(signer, at) if signer is not None and at is not None else None
        with _PDF_ZLIB.writing():
            out: bytes = document.write_pdf(pdf_variant=PDF_VARIANT, finisher=slot.add if slot else None)
        return slot.fill(out) if slot else out


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
