"""Issued PDFs read back: GB/T 9704-2012 page grid, text, fonts and glyphs, PDF/A-2b, metadata, injection.

A module fixture issues every kind's example (and a minor file with rare
characters in its names) through the API once per database backend: real
worker pool, real WeasyPrint, the date pinned to 2026-11-28. The tests read
those PDFs back with pdfplumber (character positions, text, ruled tables),
pypdf (fonts, PDF/A metadata), pdfminer (the glyph id drawn for every
character) and fontTools (that glyph's outline in the embedded font).

Geometry, in PDF points: A4 is 595.28 x 841.89; the text block is 156 x 225 mm
with its top-left corner 28 mm from the left and 37 mm from the top. Page
numbers ("— N —", 14 pt) sit by design below the block: they are told apart
and checked on their own.
"""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pdfplumber
import pypdf
import pytest
from fastapi.testclient import TestClient
from fontTools.pens.boundsPen import BoundsPen
from fontTools.ttLib import TTFont
from pdfminer.converter import PDFLayoutAnalyzer
from pdfminer.pdffont import PDFUnicodeNotDefined
from pdfminer.pdfinterp import PDFPageInterpreter, PDFResourceManager
from pdfminer.pdfpage import PDFPage

from archive.prefill import PARTICULARS
from doc_templates import fonts, words
from doc_templates.kinds import KINDS
from doc_templates.pool import shared_pool
from doc_templates.render import DocumentMeta, cn_date
from main import create_app
from runtime import Runtime
from tests.conftest import (
    create_household_and_minor,
    household_body,
    login,
    make_id_number,
    make_settings,
    minor_body,
    record_fields,
    seed_world,
)

MM = 72 / 25.4
A4 = (595.28, 841.89)
LEFT, TOP, RIGHT, BOTTOM = 28 * MM, 37 * MM, (28 + 156) * MM, (37 + 225) * MM
TOL = 1 * MM
PAGE_NUMBER_PT = 14.0  # 4-hao; "one character" in from the outside edge
PINNED = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
DATE_CN = "2026年11月28日"
RED = (0.901961, 0.0, 0.070588)  # #e60012: the issuer mark and the header's rules
WATERMARK_PT = 40  # the diagonal 样本 (specimen) or 草稿 (draft) mark is set larger than any text

# Who issues what (demo users), with their org's name and document-number prefix.
USER_BY_ROLE = {"caseworker": "caseworker.haizhou", "custodian": "custodian.city",
                "supervisor": "supervisor.city", "auditor": "auditor.city"}
ORG = {
    "caseworker.haizhou": ("连云港市海州区民政局", "海民发"),
    "custodian.city": ("连云港市人民检察院", "连检"),
    "supervisor.city": ("连云港市民政局", "连民发"),
    "auditor.city": ("连云港市未成年人保护工作领导小组办公室", "连未保办"),
    "school.haizhou": ("海州区新安街道幸福小学（演示）", "幸福小"),
}
# Kinds an organisation type issues (access_control.policy.KIND_ISSUER_ORG_TYPES): the school's.
USER_BY_KIND = {"dropout_notice": "school.haizhou"}

# Fields of each example that must be printed exactly (paths into the fields).
KEY_FIELDS: dict[str, list[str]] = {
    "household_file": ["household_no", "region", "address", "members.0.name", "members.0.id_number",
                       "members.2.situation", "minors.1.name", "minors.1.birth_date", "economy", "surveyor",
                       "survey_date"],
    "minor_file": ["name", "birth_date", "id_number", "school", "address", "guardian", "guardian_phone",
                   "situation", "measures.0", "measures.1", "caseworker", "filled_on"],
    "referral_notice": ["recipient", "minor_name", "minor_address", "found_on", "situation", "requests.0",
                        "requests.1", "contact", "contact_phone", "attachments.0", "copy_to.0", "copy_to.1"],
    "guardianship_designation": ["recipient", "minor_name", "minor_id_number", "original_situation",
                                 "guardian_name", "guardian_id_number", "duties.0", "duties.2", "copy_to.0"],
    "rescue_escort_record": ["found_at", "found_place", "finder_name", "finder_unit", "finder_phone", "features",
                             "condition", "belongings", "escorted_to", "handover_at", "receiver"],
    "dropout_notice": ["recipient", "student_name", "grade", "absent_since", "reasons", "measures.0", "measures.1",
                       "contact", "contact_phone"],
    "sealed_query_reply": ["recipient", "request_reference", "subject_name", "subject_id_number", "query_date"],
    "inspection_report": ["recipient", "period", "summary", "statistics.2.region", "findings.0", "problems.0",
                          "requirements.1", "copy_to.0"],
    "access_audit_report": ["recipient", "period", "events", "denied", "checkpoint_root", "checkpoint_signature",
                            "public_key", "anomalies.0", "conclusion"],
}

# Characters outside GB2312 that real names use (喆 堃 玥 from GB18030's extension, 㛃 from CJK Ext. A).
RARE_MINOR, RARE_GUARDIAN = "王喆堃", "李玥㛃"
RARE = "minor_file+rare"
DOCUMENTS: dict[str, tuple[str, dict[str, Any]]] = {
    **{kind: (kind, k.example) for kind, k in KINDS.items()},
    RARE: ("minor_file", {**KINDS["minor_file"].example, "name": RARE_MINOR, "guardian": RARE_GUARDIAN,
                          "situation": f"{RARE_MINOR}的父母长期在外务工，由{RARE_GUARDIAN}照料。"}),
}

# Markup that must come out as the characters typed.
PAYLOADS = ["<script>alert(1)</script>", "</p><h1>x</h1>", "{{ 7*7 }}", "{% raw %}",
            "<style>body{display:none}</style>", "url(http://example.invalid/x)"]
TAGS = "甲乙丙丁戊己庚辛壬癸子丑寅卯辰巳午未申酉戌亥"
# Examples the markup test fills, by name: each kind's own, and the sealed-query reply's refusal too (the
# no-record reply may carry no case number or reasons: kinds.SealedQueryReply; the refusal prints both).
MARKUP_EXAMPLES = {**{kind: (kind, {}) for kind in KINDS},
                   "sealed_query_reply:refused": ("sealed_query_reply", {"result": "refused"})}
# Optional fields a kind's answer refuses, left out of the markup (the refusal is its own example above).
NOT_FILLED = {("sealed_query_reply", "no_record"): {"case_number", "reasons"}}
# What a field must end with to validate (a basic court's full name), kept after the markup.
SUFFIX = {"court": "人民法院"}
# Fields a kind requires to be the same (a guardianship notice is addressed to the designee): field -> its source.
SAME_AS = {"guardianship_designation": {"recipient": "guardian_name"}}


def compact(text: str) -> str:
    return re.sub(r"\s+", "", text)


def dig(value: Any, path: str) -> Any:
    for part in path.split("."):
        value = value[int(part)] if isinstance(value, list) else value[part]
    return value


def printed(value: Any) -> str:
    """How a field value is printed: dates as 2026年11月28日, everything else as is."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return cn_date(date.fromisoformat(value))
    return compact(str(value))


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{path}.{k}" if path else k)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from leaves(v, f"{path}.{i}")
    else:
        yield path, value


# Reading a PDF back ---------------------------------------------------------------------


@dataclass
class Page:
    number: int
    width: float
    height: float
    chars: list[dict[str, Any]]  # body characters (page numbers excluded)
    number_chars: list[dict[str, Any]]  # characters below the text block: the page number
    graphics: list[dict[str, Any]]  # rules, table borders, QR code


@dataclass
class Reading:
    pages: list[Page]
    text: str  # compact text of the body (no page numbers, no watermark), then every table cell
    info: dict[str, str]
    xmp: bytes
    glyphs: list[tuple[str, int, str | None]] = field(default_factory=list)  # (font, glyph id, text)


def is_watermark(c: dict[str, Any]) -> bool:
    """A character of the diagonal 样本 / 草稿 mark across the page."""
    return bool(c["size"] > WATERMARK_PT)


class GlyphRecorder(PDFLayoutAnalyzer):
    """Records the font, glyph id (CID = GID, Identity-H) and Unicode text of every character drawn."""

    def __init__(self, rsrcmgr: PDFResourceManager):
        super().__init__(rsrcmgr)
        self.glyphs: list[tuple[str, int, str | None]] = []

    def render_char(self, matrix, font, fontsize, scaling, rise, cid, ncs, graphicstate):  # type: ignore[no-untyped-def]
        try:
            text = font.to_unichr(cid)
        except PDFUnicodeNotDefined:
            text = None
        self.glyphs.append((font.fontname, cid, text))
        return super().render_char(matrix, font, fontsize, scaling, rise, cid, ncs, graphicstate)


@functools.cache
def read(pdf: bytes) -> Reading:
    pages: list[Page] = []
    texts: list[str] = []
    cells: list[str] = []
    with pdfplumber.open(io.BytesIO(pdf)) as doc:
        for n, p in enumerate(doc.pages, start=1):
            below = [c for c in p.chars if c["top"] > BOTTOM + TOL]
            body = [c for c in p.chars if c["top"] <= BOTTOM + TOL and not is_watermark(c)]
            graphics = [*p.rects, *p.lines, *p.curves, *p.images]
            pages.append(Page(n, float(p.width), float(p.height), body, below, graphics))
            keep = p.filter(lambda o: o.get("object_type") != "char"
                            or (o["top"] <= BOTTOM + TOL and not is_watermark(o)))
            texts.append(keep.extract_text() or "")
            for table in keep.extract_tables():
                cells.extend(compact(cell or "") for row in table for cell in row)
        info = {k: str(v) for k, v in (doc.metadata or {}).items()}
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data()
    rm = PDFResourceManager()
    recorder = GlyphRecorder(rm)
    interpreter = PDFPageInterpreter(rm, recorder)
    for page in PDFPage.get_pages(io.BytesIO(pdf)):
        interpreter.process_page(page)
    return Reading(pages, compact("".join(texts)) + "|" + "|".join(cells), info, xmp, recorder.glyphs)


def outside(box: dict[str, Any]) -> bool:
    return not (box["x0"] >= LEFT - TOL and box["x1"] <= RIGHT + TOL
                and box["top"] >= TOP - TOL and box["bottom"] <= BOTTOM + TOL)


def where(box: dict[str, Any]) -> str:
    return (f"{box.get('text', box.get('object_type'))!r} at x {box['x0'] / MM:.1f}-{box['x1'] / MM:.1f} mm, "
            f"y {box['top'] / MM:.1f}-{box['bottom'] / MM:.1f} mm")


# The 信函格式's first page (GB/T 9704-2012 10.1): its text starts 30 mm from the top edge (the issuer mark),
# its red double lines are 170 mm long, centred on the page, the lower one 20 mm above the bottom edge.
LETTER_TOP = 30 * MM
LETTER_RULES = (20 * MM, 190 * MM, A4[1] - 20 * MM)


def in_letter_head(box: dict[str, Any]) -> bool:
    """Inside the first page of a letter: the text block with its top at 30 mm, or one of the double lines."""
    if box.get("object_type") == "char":
        return box["top"] >= LETTER_TOP - TOL and box["x0"] >= LEFT - TOL and box["x1"] <= RIGHT + TOL
    return (abs(box["x0"] - LETTER_RULES[0]) <= TOL and abs(box["x1"] - LETTER_RULES[1]) <= TOL
            and box["top"] >= LETTER_TOP and box["bottom"] <= LETTER_RULES[2] + TOL)


def check_geometry(reading: Reading, layout: str) -> None:
    """A4 pages; every character and mark in the text block (the letter's first page: its head, see above);
    page numbers where GB/T 9704 puts them, none on a letter's first page."""
    for page in reading.pages:
        assert abs(page.width - A4[0]) <= 1 and abs(page.height - A4[1]) <= 1, (page.number, page.width,
                                                                                 page.height)
        letter_head = layout == "letter" and page.number == 1
        inside = in_letter_head if letter_head else (lambda box: not outside(box))
        chars = page.chars + page.number_chars if letter_head else page.chars
        stray = [where(c) for c in chars if not inside(c)]
        assert not stray, f"page {page.number}: characters outside the text block: {stray[:10]}"
        stray = [where(g) for g in page.graphics if not inside(g)]
        assert not stray, f"page {page.number}: marks outside the text block: {stray[:10]}"
        if letter_head:
            continue
        number = sorted(page.number_chars, key=lambda c: c["x0"])
        assert compact("".join(c["text"] for c in number)) == f"—{page.number}—", (page.number, number)
        x0, x1 = min(c["x0"] for c in number), max(c["x1"] for c in number)
        top = min(c["top"] for c in number)
        # The number's line starts 7 mm below the block; the glyph box sits in that line's half-leading.
        assert BOTTOM + 7 * MM - TOL <= top <= BOTTOM + 10 * MM, f"page number {page.number} at {top / MM:.1f} mm"
        if page.number % 2:  # odd: right, one character in
            assert abs(x1 - (RIGHT - PAGE_NUMBER_PT)) <= TOL, f"page {page.number}: number ends at {x1 / MM:.1f} mm"
        else:  # even: left, one character in
            assert abs(x0 - (LEFT + PAGE_NUMBER_PT)) <= TOL, f"page {page.number}: number starts at {x0 / MM:.1f} mm"


# Issuing every kind once per backend ------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    key: str
    kind: str
    user: str
    fields: dict[str, Any]
    doc_number: str
    code: str
    pdf: bytes


def issuer_of(kind: str) -> str:
    if kind in USER_BY_KIND:
        return USER_BY_KIND[kind]
    (role,) = KINDS[kind].issuer_roles
    return USER_BY_ROLE[role]


@pytest.fixture(scope="module")
def issued(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    return issue_examples(backend, tmp_path_factory.mktemp(f"documents-pdf-{backend.name}"))


def issue_examples(backend: Any, data_dir: Any, **settings: Any) -> dict[str, Issued]:
    """Every kind's example (and the rare-character minor file) issued through the API on a fresh archive
    of ``backend`` in ``data_dir``, with ``settings`` on top of the test defaults; the PDFs as downloaded."""
    backend.reset()
    rt = Runtime.open(make_settings(data_dir, backend.database_url(data_dir), **settings), require_schema=False,
                      clock=lambda: PINNED)
    try:
        rt.initialize()
        seed_world(rt)
        with TestClient(create_app(runtime=rt)) as client:
            heads = {user: login(client, user) for user in ORG}
            cw = heads["caseworker.haizhou"]
            # The household file's example as the record: its address and members, two minors.
            example = KINDS["household_file"].example
            members = [{k: v for k, v in m.items() if v is not None} for m in example["members"]]
            r = client.post("/api/v1/households", json=household_body(address=example["address"], members=members),
                            headers=cw)
            assert r.status_code == 201, r.text
            household = r.json()["id"]
            r = client.post("/api/v1/minors", json=minor_body(household, name=RARE_MINOR), headers=cw)
            assert r.status_code == 201, r.text
            subjects = {"household": household, "minor": r.json()["id"], "region": "320700"}
            sister = minor_body(household, name="王一诺", sex="female", birth_date="2018-07-15", categories=[3, 5],
                                id_number=make_id_number(birth="20180715", male=False))
            assert client.post("/api/v1/minors", json=sister, headers=cw).status_code == 201
            out: dict[str, Issued] = {}
            for key, (kind, example_fields) in DOCUMENTS.items():
                user = issuer_of(kind)
                # The subject's particulars come from the record (a document names its subject only).
                own = PARTICULARS.get(kind, {})
                fields = {k: v for k, v in example_fields.items() if k not in own}
                body: dict[str, Any] = {"kind": kind, "fields": fields}
                if KINDS[kind].subject in subjects:
                    body["subject_id"] = subjects[KINDS[kind].subject]
                r = client.post("/api/v1/documents", json=body, headers=heads[user])
                assert r.status_code == 201, (key, r.text)
                doc = r.json()
                if own:  # what was printed: the fields sent and the record's particulars
                    r = client.get(f"/api/v1/document-kinds/{kind}/prefill", params={"subject_id": body["subject_id"]},
                                   headers=heads[user])
                    assert r.status_code == 200, r.text
                    fields = {**fields, **{k: v for k, v in r.json()["fields"].items() if k in own}}
                r = client.get(f"/api/v1/documents/{doc['id']}/pdf", headers=heads[user])
                assert r.status_code == 200, (key, r.text)
                assert r.headers["content-type"] == "application/pdf"
                assert r.headers["X-Content-SHA256"] == doc["sha256"]
                out[key] = Issued(key, kind, user, fields, doc["doc_number"], doc["verification_code"], r.content)
            return out
    finally:
        rt.close()


ALL = list(DOCUMENTS)


@pytest.mark.parametrize("key", ALL)
def test_a4_pages_and_everything_inside_the_text_block(issued: dict[str, Issued], key: str) -> None:
    check_geometry(read(issued[key].pdf), KINDS[issued[key].kind].layout)


def layout_of(key: str) -> str:
    return KINDS[DOCUMENTS[key][0]].layout


OFFICIAL = [key for key in DOCUMENTS if layout_of(key) != "form"]  # files, letters and notices to a person
FILES = [key for key in DOCUMENTS if layout_of(key) == "file"]


@pytest.mark.parametrize("key", FILES)
def test_imprint_closes_the_last_page(issued: dict[str, Issued], key: str) -> None:
    """版记 of the file layout: the printing org one character in from the left, 印发 date one in from the
    right, its last rule on the last line of the block (GB/T 9704-2012 7.5). Letters have no 印发 line (10.1)."""
    doc = issued[key]
    org, _prefix = ORG[doc.user]
    pages = read(doc.pdf).pages
    # The referral letter's 回执 is a page of its own after the letter, cut off and returned.
    last = pages[-2] if doc.kind == "referral_notice" else pages[-1]
    if doc.kind == "referral_notice":
        assert "回执" in compact("".join(c["text"] for c in pages[-1].chars))
    lines: dict[float, list[dict[str, Any]]] = {}
    for c in last.chars:
        if c["size"] < 15:
            lines.setdefault(round(c["top"], 0), []).append(c)
    imprint = [sorted(cs, key=lambda c: c["x0"]) for cs in lines.values()
               if compact("".join(c["text"] for c in sorted(cs, key=lambda c: c["x0"]))).endswith("印发")]
    assert len(imprint) == 1, "no single 印发 line on the last page"
    (line,) = imprint
    assert compact("".join(c["text"] for c in line)) == f"{org}{DATE_CN}印发"
    assert abs(line[0]["x0"] - (LEFT + PAGE_NUMBER_PT)) <= TOL, f"印发机关 starts at {line[0]['x0'] / MM:.1f} mm"
    assert abs(line[-1]["x1"] - (RIGHT - PAGE_NUMBER_PT)) <= TOL, f"印发日期 ends at {line[-1]['x1'] / MM:.1f} mm"
    rules = [g for g in last.graphics if g["x1"] - g["x0"] > 150 * MM and g["bottom"] - g["top"] < 1 * MM]
    assert rules, "no rules in the imprint"
    lowest = max(g["bottom"] for g in rules)
    assert abs(lowest - BOTTOM) <= TOL, f"the imprint ends at {lowest / MM:.1f} mm, not on the last line"


def face(c: dict[str, Any]) -> str:
    """The type face of a drawn character, as GB/T 9704 names the roles; the open fonts stand in."""
    name = c["fontname"].split("+")[-1]
    if "WenKai" in name or "Kai" in name:
        return "kai"
    if "Sans" in name or "Hei" in name:
        return "hei"
    return "song-bold" if "Bold" in name else "fangsong"


def text_lines(page: Page) -> list[list[dict[str, Any]]]:
    """The page's characters in lines (baselines within 2 pt: faces differ in where their boxes' tops are),
    left to right."""
    lines: list[list[dict[str, Any]]] = []
    for c in sorted(page.chars, key=lambda c: (-c["matrix"][5], c["x0"])):
        if lines and abs(lines[-1][0]["matrix"][5] - c["matrix"][5]) <= 2:
            lines[-1].append(c)
        else:
            lines.append([c])
    return [sorted(line, key=lambda c: c["x0"]) for line in lines]


@pytest.mark.parametrize("key", OFFICIAL)
def test_type_faces_and_sizes_follow_gbt_9704(issued: dict[str, Issued], key: str) -> None:
    """Issuer mark (files and letters) red bold Song; title 2-hao (22 pt) bold Song; body 3-hao (16 pt) FangSong;
    level-1 headings (一、) Hei; a run-in level-2 heading (（一）…。 followed by text) Kai, its paragraph FangSong."""
    pages = read(issued[key].pdf).pages
    first = text_lines(pages[0])
    if layout_of(key) in ("file", "letter"):
        mark = first[0]
        # Its size is the issuer's to choose (GB/T 9704-2012 7.2.3): long names are set smaller to stay on one line.
        assert {face(c) for c in mark} == {"song-bold"} and all(c["size"] >= 16 for c in mark)
        assert all(tuple(round(x, 2) for x in c["non_stroking_color"]) == tuple(round(x, 2) for x in RED)
                   for c in mark)
    title = next(line for line in first if line[0]["size"] == pytest.approx(22, abs=0.1))
    assert {face(c) for c in title} == {"song-bold"}, compact("".join(c["text"] for c in title))
    sizes = Counter(round(c["size"], 1) for p in pages for line in text_lines(p)[(2 if p is pages[0] else 0):]
                    for c in line if c["size"] < 20)
    assert sizes.most_common(1)[0][0] == 16.0, f"body text is not 3-hao: {sizes}"
    levels = {"hei": 0, "kai": 0}
    for p in pages:
        for line in text_lines(p):
            text = compact("".join(c["text"] for c in line))
            if re.match(r"[一二三四五六七八九十]+、", text) and line[0]["size"] == pytest.approx(16, abs=0.1):
                assert {face(c) for c in line} == {"hei"}, text
                levels["hei"] += 1
            elif m := re.match(r"（[一二三四五六七八九十]+）([^。]{1,27})。(.)", text):
                head = len(m.group(0)) - 1
                assert [face(c) for c in line[:head]] == ["kai"] * head, text
                assert {face(c) for c in line[head:]} == {"fangsong"}, text
                levels["kai"] += 1
            elif re.match(r"（[一二三四五六七八九十]+）", text):
                assert {face(c) for c in line} == {"fangsong"}, text
    if issued[key].kind in ("inspection_report", "referral_notice", "dropout_notice", "access_audit_report"):
        assert levels["hei"] >= 2, levels
    if issued[key].kind == "inspection_report":  # its example's findings open with run-in headings
        assert levels["kai"] == 2, levels


@pytest.mark.parametrize("key", ALL)
def test_number_date_issuer_and_fields_printed_exactly(issued: dict[str, Issued], key: str) -> None:
    doc = issued[key]
    org, prefix = ORG[doc.user]
    text = read(doc.pdf).text
    if layout_of(key) == "form":  # a file number of the form's own series (archive.numbering)
        code = KINDS[doc.kind].file_code
        assert re.fullmatch(rf"\d{{6,12}}[A-Z]{{2}}-{code}-2026-\d{{6}}", doc.doc_number), doc.doc_number
    else:
        assert re.fullmatch(rf"{prefix}〔2026〕[1-9]\d*号", doc.doc_number), doc.doc_number
    # The title: 发文机关 + 事由 + 文种 for a 公文, the kind's own title for a form.
    title = words.heading(KINDS[doc.kind].validate(doc.fields), org, KINDS[doc.kind].title)
    for expected in (doc.doc_number, DATE_CN, org, compact(title), doc.code):
        assert expected in text, f"{expected!r} not printed"
    for path in KEY_FIELDS[doc.kind]:
        value = printed(dig(doc.fields, path))
        assert value in text, f"{path} = {value!r} not printed"


@pytest.mark.parametrize("key", ALL)
def test_fonts_embedded_and_every_glyph_drawn(issued: dict[str, Issued], key: str) -> None:
    pdf = issued[key].pdf
    check_fonts(pdf)
    check_glyphs(pdf, read(pdf))


@pytest.mark.parametrize("key", ALL)
def test_only_characters_fandol_lacks_are_drawn_in_a_large_face(issued: dict[str, Issued], key: str) -> None:
    """Titles, headings, body and page numbers in the Fandol faces (~10 k glyphs): a 65 k-glyph Noto face (or
    WenKai), which costs several times more to subset, compress and store, draws only what Fandol lacks."""
    from fontTools.ttLib import TTFont

    found = fonts._font_file("FandolFang")
    assert found is not None, "FandolFang is not installed (make fonts)"
    with TTFont(found[0], lazy=True) as font:
        fandol = set(font.getBestCmap())
    drawn = [c for page in read(issued[key].pdf).pages for c in page.chars if c["text"].strip()]
    assert any("Fandol" in c["fontname"] for c in drawn)
    large = {c["text"] for c in drawn if "Fandol" not in c["fontname"]}
    assert not {ch for ch in large if ord(ch) in fandol}, large
    if key == RARE:
        assert set(RARE_MINOR) - set(large) <= {"王"}, large


@pytest.mark.parametrize("key", ALL)
def test_pdfa_2b_metadata_names_the_document_not_the_people(issued: dict[str, Issued], key: str) -> None:
    doc = issued[key]
    org, _prefix = ORG[doc.user]
    title = KINDS[doc.kind].title
    reading = read(doc.pdf)
    check_pdfa(doc.pdf, reading)
    info = reading.info
    assert doc.doc_number in info["Title"] and title in info["Title"]
    assert info["Author"] == org
    assert info["Subject"] == title
    assert doc.kind in info["Keywords"] and doc.doc_number in info["Keywords"]
    xmp = reading.xmp.decode("utf-8")
    for expected in (doc.kind, org, doc.doc_number, title):
        assert expected in xmp, f"{expected!r} not in the XMP metadata"
    metadata = "\n".join(info.values()) + "\n" + xmp
    public = f"{org}{title}{doc.doc_number}"
    for path, value in leaves(doc.fields):
        if isinstance(value, str) and len(value) >= 2 and value not in public:
            assert value not in metadata, f"{path} ({value!r}) leaks into the metadata"
    assert not re.search(r"\d{17}[\dX]", metadata), "an ID number in the metadata"
    assert not re.search(r"(?<!\d)1\d{10}(?!\d)", metadata), "a mobile number in the metadata"
    assert RARE_MINOR not in metadata and RARE_GUARDIAN not in metadata


def test_rare_characters_in_names_are_drawn(issued: dict[str, Issued]) -> None:
    reading = read(issued[RARE].pdf)
    assert RARE_MINOR in reading.text and RARE_GUARDIAN in reading.text
    drawn = {text: (font, gid) for font, gid, text in reading.glyphs if text}
    for ch in RARE_MINOR + RARE_GUARDIAN:
        assert ch in drawn, f"{ch} not drawn"
        assert drawn[ch][1] != 0, f"{ch} drawn as .notdef"
    check_glyphs(issued[RARE].pdf, reading, outlines=True)


# Fonts, glyphs, PDF/A -----------------------------------------------------------------


def _fonts(resources: Any, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """Every font dictionary reachable from a resource dictionary, form XObjects included (SVG is drawn in them)."""
    if resources is None:
        return
    resources = resources.get_object()
    for _name, ref in (resources.get("/Font") or {}).items():
        font = ref.get_object()
        yield str(font.get("/BaseFont", "")), font
    for _name, ref in (resources.get("/XObject") or {}).items():
        xobj = ref.get_object()
        key = ref.idnum if hasattr(ref, "idnum") else id(xobj)
        if key in seen:
            continue
        seen.add(key)
        yield from _fonts(xobj.get("/Resources"), seen)
    for _name, ref in (resources.get("/Pattern") or {}).items():
        yield from _fonts(ref.get_object().get("/Resources"), seen)


def _allowed_font(base: str) -> bool:
    name = re.sub(r"[\s-]", "", base.split("+", 1)[-1]).lower()
    return any(name.startswith(re.sub(r"[\s-]", "", family).lower())
               for stack in fonts.STACKS.values() for family in stack)


def check_fonts(pdf: bytes) -> None:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    found: dict[str, Any] = {}
    seen: set[int] = set()
    for page in reader.pages:
        for base, font in _fonts(page.get("/Resources"), seen):
            found[base] = font
    assert found, "no fonts"
    for base, font in found.items():
        assert font.get("/Subtype") != "/Type3", f"{base}: Type 3 font"
        described = font["/DescendantFonts"][0].get_object() if font.get("/Subtype") == "/Type0" else font
        descriptor = described["/FontDescriptor"].get_object()
        assert {"/FontFile", "/FontFile2", "/FontFile3"} & set(descriptor), f"{base} is not embedded"
        # A family outside the stacks means fontconfig fell back silently (FINDINGS.md).
        assert _allowed_font(base), f"{base} is not a font of doc_templates/fonts.py"
    if shutil.which("pdffonts"):
        out = subprocess.run(["pdffonts", "-"], input=pdf, capture_output=True, check=True).stdout.decode()
        rows = out.splitlines()[2:]
        assert rows and all(row.split()[-5] == "yes" for row in rows), out


@functools.cache
def _embedded_font(data: bytes) -> tuple[list[str], Any]:
    font = TTFont(io.BytesIO(data), lazy=True)
    return font.getGlyphOrder(), font.getGlyphSet()


def check_glyphs(pdf: bytes, reading: Reading, *, outlines: bool = False) -> None:
    """No .notdef (glyph 0, what a font without the character gives) and Unicode text for every glyph.

    With ``outlines``, also that every visible glyph has an outline in the embedded font program
    (subsetting keeps glyph ids and empties the unused ones). Parsing a 65k-glyph CFF font costs
    about half a second, so only the rare-character document gets this.
    """
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    programs: dict[str, bytes] = {}
    seen: set[int] = set()
    for page in reader.pages:
        for base, font in _fonts(page.get("/Resources"), seen):
            described = font["/DescendantFonts"][0].get_object() if font.get("/Subtype") == "/Type0" else font
            descriptor = described["/FontDescriptor"].get_object()
            stream = next(descriptor[k] for k in ("/FontFile3", "/FontFile2", "/FontFile") if k in descriptor)
            programs[base.lstrip("/")] = stream.get_object().get_data()
    assert reading.glyphs, "no characters drawn"
    problems = []
    for font, gid, text in reading.glyphs:
        if gid == 0:
            problems.append(f"{text!r}: .notdef in {font}")
            continue
        if text is None:
            problems.append(f"glyph {gid} in {font}: no Unicode text")
            continue
        if text.isspace() or not outlines:
            continue
        order, glyphset = _embedded_font(programs[font])
        if gid >= len(order):
            problems.append(f"{text!r}: glyph {gid} beyond {font}")
            continue
        pen = BoundsPen(glyphset)
        glyphset[order[gid]].draw(pen)
        if pen.bounds is None:
            problems.append(f"{text!r}: glyph {gid} of {font} is blank")
    assert not problems, sorted(set(problems))[:20]


PDFAID = "{http://www.aiim.org/pdfa/ns/id/}"


def check_pdfa(pdf: bytes, reading: Reading) -> None:
    root = ET.fromstring(reading.xmp)
    values: dict[str, str] = {}
    for el in root.iter():
        for attr, value in el.attrib.items():
            if attr.startswith(PDFAID):
                values[attr[len(PDFAID):]] = value
        if el.tag.startswith(PDFAID):
            values[el.tag[len(PDFAID):]] = (el.text or "").strip()
    assert values.get("part") == "2" and values.get("conformance") == "B", values
    catalog = pypdf.PdfReader(io.BytesIO(pdf)).trailer["/Root"]
    intents = [i.get_object() for i in catalog.get("/OutputIntents", [])]
    assert any(i.get("/S") == "/GTS_PDFA1" and "/DestOutputProfile" in i for i in intents), intents
    assert "/Encrypt" not in pypdf.PdfReader(io.BytesIO(pdf)).trailer


# Characters no font has, oversized fields ------------------------------------------------------


def issue(client: TestClient, headers: dict[str, str], kind: str, fields: dict[str, Any],
          subject_id: str | None) -> Any:
    body: dict[str, Any] = {"kind": kind, "fields": fields}
    if subject_id:
        body["subject_id"] = subject_id
    return client.post("/api/v1/documents", json=body, headers=headers)


def error_fields(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_input"
    return {f["field"]: f["message"] for f in error["details"]["fields"]}


def test_character_in_no_font_is_422_naming_the_field(client: TestClient, tokens: Any) -> None:
    cw = tokens["caseworker.haizhou"]
    _household, minor = create_household_and_minor(client, cw)
    example = record_fields("minor_file")
    fields = {**example, "situation": example["situation"] + "\U0002ffff", "guardian": "王\u0378芳",
              "measures": [example["measures"][0], "每周\U0002ffff走访"]}
    errors = error_fields(issue(client, cw, "minor_file", fields, minor))
    assert set(errors) == {"fields.situation", "fields.guardian", "fields.measures.1"}, errors
    assert "U+2FFFF" in errors["fields.situation"] and "U+0378" in errors["fields.guardian"]
    # Nothing was numbered or stored: the next document is number 1.
    r = issue(client, cw, "referral_notice", record_fields("referral_notice"), minor)
    assert r.status_code == 201, r.text
    assert r.json()["doc_number"].endswith("〕1号")


def test_oversized_fields_are_422_naming_each_field(client: TestClient, tokens: Any) -> None:
    cw = tokens["caseworker.haizhou"]
    household, minor = create_household_and_minor(client, cw)
    minor_file = KINDS["minor_file"].example
    fields = {**minor_file, "situation": "情" * 10_000, "measures": ["每月走访"] * 9, "name": "王" * 33}
    assert set(error_fields(issue(client, cw, "minor_file", fields, minor))) == {
        "fields.situation", "fields.measures", "fields.name"}
    referral = KINDS["referral_notice"].example
    fields = {**referral, "requests": ["请协助。"] * 7, "copy_to": ["某单位"] * 9, "attachments": ["附件"] * 6,
              "minor_address": "幸" * 61}
    assert set(error_fields(issue(client, cw, "referral_notice", fields, minor))) == {
        "fields.requests", "fields.copy_to", "fields.attachments", "fields.minor_address"}
    household_file = KINDS["household_file"].example
    fields = {**household_file, "members": [household_file["members"][0]] * 11, "economy": "困" * 301}
    assert set(error_fields(issue(client, cw, "household_file", fields, household))) == {
        "fields.members", "fields.economy"}
    report = KINDS["inspection_report"].example
    fields = {**report, "statistics": [report["statistics"][0]] * 21, "summary": "督" * 1501}
    assert set(error_fields(issue(client, tokens["supervisor.city"], "inspection_report", fields, "320700"))) == {
        "fields.statistics", "fields.summary"}
    r = client.get("/api/v1/documents", headers=cw)
    assert r.status_code == 200 and r.json()["items"] == []


# Markup in every text field ----------------------------------------------------------------


def _nonnull(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    for option in schema.get("anyOf", []):
        option = _nonnull(option, root)
        if option.get("type") != "null":
            return option
    return schema


def _is_text(schema: dict[str, Any], key: str) -> bool:
    return (schema.get("type") == "string" and "id_number" not in key
            and not {"format", "enum", "const", "pattern"} & set(schema))


def with_markup(kind: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The kind's example (with ``overrides``) with markup in every free-text field (optional ones added, but
    those the example's answer refuses), each value unique and still valid."""
    root = KINDS[kind].schema.model_json_schema()
    example = {**KINDS[kind].example, **(overrides or {})}
    skip = NOT_FILLED.get((kind, str(example.get("result"))), set())
    count = iter(range(10_000))

    def payload(max_length: int, key: str) -> str:
        i = next(count)
        tag = TAGS[i % len(TAGS)] + (TAGS[i // len(TAGS)] if i >= len(TAGS) else "")
        suffix = SUFFIX.get(key, "")
        everything = tag + " ".join(PAYLOADS) + suffix
        if len(everything) <= max_length:
            return everything
        for j in range(len(PAYLOADS)):
            p = tag + PAYLOADS[(i + j) % len(PAYLOADS)] + suffix
            if len(p) <= max_length:
                return p
        raise AssertionError(f"no payload fits {max_length} characters")

    def fill(schema: dict[str, Any], value: Any, key: str) -> Any:
        schema = _nonnull(schema, root)
        if "properties" in schema:
            out = dict(value or {})
            for k, sub in schema["properties"].items():
                s = _nonnull(sub, root)
                text_list = s.get("type") == "array" and _is_text(_nonnull(s["items"], root), k)
                if (k in out or _is_text(s, k) or text_list) and k not in skip:
                    out[k] = fill(sub, out.get(k), k)
            return out
        if schema.get("type") == "array":
            items = list(value or []) or [None]
            return [fill(schema["items"], v, key) for v in items]
        if _is_text(schema, key):
            return payload(schema.get("maxLength", 1500), key)
        return value

    fields: dict[str, Any] = fill(root, example, "")
    for target, source in SAME_AS.get(kind, {}).items():
        fields[target] = fields[source]
    return fields


def check_markup_literal(kind: str, fields: dict[str, Any], reading: Reading, code: str) -> None:
    text = reading.text
    for payload in PAYLOADS:
        assert compact(payload) in text, f"{payload!r} not printed literally"
    for path, value in leaves(fields):
        if isinstance(value, str) and any(p in value for p in PAYLOADS):
            assert compact(value) in text, f"{path}: {value!r} not printed literally"
    # {{ 7*7 }} was not evaluated. Take out first what may hold "49" by chance: the random verification
    # code and the example's values left as they were (hex digests, numbers), longest first, so that a
    # short number (a sequence number 1) does not cut a digest apart before the digest is taken out.
    rest = text.replace(compact(code), "").replace(compact(code).replace("-", ""), "")
    kept = {printed(value) for _path, value in leaves(fields) if not any(p in str(value) for p in PAYLOADS)}
    for value in sorted(kept, key=len, reverse=True):
        rest = rest.replace(value, "")
    assert "49" not in rest
    check_geometry(reading, KINDS[kind].layout)


def test_markup_in_text_fields_is_printed_literally_through_the_api(client: TestClient, tokens: Any) -> None:
    cw = tokens["caseworker.haizhou"]
    _household, minor = create_household_and_minor(client, cw)
    # Markup everywhere but in the child's particulars, which are the record's.
    fields = {k: v for k, v in with_markup("referral_notice").items() if k not in PARTICULARS["referral_notice"]}
    r = issue(client, cw, "referral_notice", fields, minor)
    assert r.status_code == 201, r.text
    doc = r.json()
    r = client.get(f"/api/v1/documents/{doc['id']}/pdf", headers=cw)
    assert r.status_code == 200
    check_markup_literal("referral_notice", fields, read(r.content), doc["verification_code"])


@pytest.mark.parametrize("example", list(MARKUP_EXAMPLES))
def test_markup_in_every_kind_is_printed_literally(example: str) -> None:
    kind, overrides = MARKUP_EXAMPLES[example]
    k = KINDS[kind]
    fields = with_markup(kind, overrides)
    code = "ABCD-EFGH-JKMN"
    meta = DocumentMeta(kind=kind, kind_title=k.title, issuer="连云港市海州区民政局", doc_number="海民发〔2026〕12号",
                        issued_on=date(2026, 11, 28), created_at=PINNED, verification_code=code,
                        verify_url="http://127.0.0.1:8000/api/v1/verify/ABCDEFGHJKMN")
    # Straight to the worker pool the API uses (no database: the text is what matters here).
    pdf = shared_pool(2).pdf(kind, k.validate(fields).model_dump(mode="json"), meta)
    check_markup_literal(kind, fields, read(pdf), code)

