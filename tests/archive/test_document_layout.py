"""The format of each kind, read back from issued PDFs (GB/T 9704-2012, DOMAIN.md "Documents").

Every kind's example is issued through the API (real worker pool, real WeasyPrint,
the date pinned to 2026-11-28) twice per database backend: with no public address
(a specimen) and with one. pdfplumber reads each PDF back; this module checks the
layout a clerk would check:

- the header: 文件格式 (red issuer mark ending in 文件, its top edge 35 mm below the
  top of the text block, the number two lines below, a red separator line), 信函格式
  (red issuer mark 30 mm from the top edge of the page, red double lines 170 mm long,
  the number flush right under them, no page number on the first page), a notice to
  a person (no red at all, the number flush right under the title) or a form (no
  red, a 档案编号 of the form's own series and never a 〔〕 number);
- the title (发文机关 + 事由 + 文种, words.heading; a form's is its kind's), on one or more lines of 2-hao;
  the body's face (FandolFang, embedded) and size (3-hao, 16 pt);
- the signature block placed for a wet seal (7.3.5.1): date four characters in from
  the right, the issuer's name centred on it, two blank lines below the body;
- no drawn seal; the 样本 mark on every page of a specimen, and the public
  verification address only when one is configured.

And: printing 100 household files leaves the issuer's next 发文字号 where it was.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pdfplumber
import pytest
from fastapi.testclient import TestClient
from fontTools import subset
from fontTools.ttLib import TTFont

from archive.demo import HAIZHOU_VILLAGE
from archive.documents import LOCAL_TZ
from core.settings import Settings
from doc_templates import words
from doc_templates.kinds import KINDS
from main import create_app
from runtime import Runtime
from tests.cli_support import InProcess
from tests.conftest import household_body, login, make_settings, minor_body, record_fields, run_sql, seed_world
from tests.doc_templates.test_documents_pdf import (
    DATE_CN,
    LEFT,
    MM,
    ORG,
    PINNED,
    RED,
    RIGHT,
    TOP,
    WATERMARK_PT,
    Issued,
    compact,
    issue_examples,
    issuer_of,
)

PUBLIC_URL = "https://shouhu.example.gov.cn"
LINE = 28.95  # pt: the 22-line grid of the 225 mm text block
TOL = 1 * MM
FANGSONG = ("FandolFang",)  # the open FangSong; a licensed one when the font folder holds it

# DOMAIN.md "Documents Shouhu issues" and docs/documents.md "Layouts": what a clerk expects of each kind.
EXPECTED_LAYOUT = {
    "household_file": "form",
    "minor_file": "form",
    "rescue_escort_record": "form",
    "referral_notice": "letter",  # a 函 to another unit
    "sealed_query_reply": "letter",  # a reply letter to the requesting unit
    "guardianship_designation": "certificate",  # a 通知书 served on a person
    "dropout_notice": "certificate",  # the school's notice to the guardian
    "inspection_report": "file",  # the leading-group office's own 通报
    "access_audit_report": "file",  # a report to a superior body, with 签发人
}


@pytest.fixture(scope="module")
def specimens(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    """Every kind issued with no public address configured."""
    return issue_examples(backend, tmp_path_factory.mktemp(f"layout-specimen-{backend.name}"))


@pytest.fixture(scope="module")
def published(backend: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Issued]:
    """Every kind issued with SHOUHU_PUBLIC_URL set."""
    return issue_examples(backend, tmp_path_factory.mktemp(f"layout-public-{backend.name}"), public_url=PUBLIC_URL)


# Reading the layout back ----------------------------------------------------------------------


def is_red(obj: dict[str, Any]) -> bool:
    colours = [obj.get("non_stroking_color"), obj.get("stroking_color")]
    return any(c is not None and tuple(round(x, 2) for x in c) == tuple(round(x, 2) for x in RED)
               for c in colours if isinstance(c, tuple | list) and len(c) == 3)


class Doc:
    """One issued PDF as lines of characters (by baseline), its red marks and its watermark."""

    def __init__(self, pdf: bytes):
        self.pages: list[dict[str, Any]] = []
        with pdfplumber.open(io.BytesIO(pdf)) as doc:
            for p in doc.pages:
                chars = [c for c in p.chars if c["size"] <= WATERMARK_PT]
                lines: list[list[dict[str, Any]]] = []
                for c in sorted(chars, key=lambda c: (-c["matrix"][5], c["x0"])):
                    if lines and abs(lines[-1][0]["matrix"][5] - c["matrix"][5]) <= 2:
                        lines[-1].append(c)
                    else:
                        lines.append([c])
                self.pages.append({
                    "lines": [sorted(line, key=lambda c: c["x0"]) for line in lines],
                    "watermark": compact("".join(c["text"] for c in p.chars if c["size"] > WATERMARK_PT)),
                    "graphics": [*p.rects, *p.lines, *p.curves],
                    # The QR code is SVG (segno): its modules are drawn as many short strokes.
                    "qr": len([g for g in p.lines if g["width"] < 20 * MM and g["height"] < 2 * MM]) > 50,
                    "text": compact(p.extract_text() or ""),
                })

    def line_text(self, line: list[dict[str, Any]]) -> str:
        return compact("".join(c["text"] for c in line))

    def find(self, pattern: str, page: int | None = None) -> tuple[int, int, list[dict[str, Any]]]:
        """The first line (page index, line index, characters) whose text matches ``pattern``."""
        for pi, p in enumerate(self.pages):
            if page is not None and pi != page:
                continue
            for li, line in enumerate(p["lines"]):
                if re.fullmatch(pattern, self.line_text(line)):
                    return pi, li, line
        raise AssertionError(f"no line matches {pattern!r}")

    @property
    def text(self) -> str:
        return "".join(p["text"] for p in self.pages)


def top(line: list[dict[str, Any]]) -> float:
    return min(c["top"] for c in line)


def baseline(line: list[dict[str, Any]]) -> float:
    return float(line[0]["matrix"][5])


def header_type(doc: Doc) -> str:
    """What a reader sees at the top of page 1: a red 文件 mark, a red letterhead, or no red header at all
    (then a form if it carries a 档案编号, a notice to a person otherwise)."""
    first = doc.pages[0]
    red_lines = [line for line in first["lines"] if all(is_red(c) for c in line)]
    if red_lines:
        return "file" if doc.line_text(red_lines[0]).endswith("文件") else "letter"
    return "form" if "档案编号" in first["text"] else "certificate"


def body_font(doc: Doc) -> tuple[str, float]:
    """The face and size most lines of text are set in (by line: a hex digest's many digits count once)."""
    faces: Counter[tuple[str, float]] = Counter()
    for p in doc.pages:
        for line in p["lines"]:
            drawn = [c for c in line if not is_red(c) and c["text"].strip()]
            if drawn:
                face = Counter((c["fontname"].split("+", 1)[-1], round(c["size"], 1)) for c in drawn)
                faces[face.most_common(1)[0][0]] += 1
    return faces.most_common(1)[0][0]


# One test per kind ------------------------------------------------------------------------------


def title_lines(doc: Doc, title: str) -> tuple[int, list[list[dict[str, Any]]]]:
    """The index on page 1 and the lines of the printed title: the first line set in 2-hao (22 pt) and those
    right after it in 2-hao, which together read ``title`` (a long title wraps, GB/T 9704-2012 7.3.1)."""
    lines = doc.pages[0]["lines"]
    first = next((i for i, line in enumerate(lines) if {round(c["size"]) for c in line} == {22}), None)
    assert first is not None, "no line in 2-hao on page 1"
    end = first
    while end < len(lines) and {round(c["size"]) for c in lines[end]} == {22}:
        end += 1
    printed = "".join(doc.line_text(line) for line in lines[first:end])
    assert printed == compact(title), f"title {printed!r}, not {title!r}"
    return first, lines[first:end]


def printed_title(issued: Issued) -> str:
    """发文机关 + 事由 + 文种 of the issued fields and the issuer's name (a form: its kind's title)."""
    kind = KINDS[issued.kind]
    return words.heading(kind.validate(issued.fields), ORG_OF[issued.kind], kind.title)


def check_header(doc: Doc, layout: str, kind: str, title: str, number: str) -> list[dict[str, Any]]:
    """The header of ``layout`` where GB/T 9704 puts it; returns the title's first line."""
    first = doc.pages[0]
    ti, title_block = title_lines(doc, title)
    title_line = title_block[0]
    red_graphics = [g for g in first["graphics"] if is_red(g)]
    if layout == "file":
        mark = first["lines"][0]
        assert all(is_red(c) for c in mark) and doc.line_text(mark).endswith("文件")
        assert abs(top(mark) - (TOP + 35 * MM)) <= TOL, f"issuer mark at {top(mark) / MM:.1f} mm, not 72 mm"
        number_line = first["lines"][1]
        # Two blank lines of the 3-hao grid between the mark and the number (7.2.4).
        assert abs((top(number_line) - max(c["bottom"] for c in mark)) - 2 * LINE) <= 2 * TOL
        assert number in doc.line_text(number_line)
        if "签发人" in doc.line_text(number_line):  # an upward report: number left, 签发人 right (7.2.4-7.2.5)
            assert abs(number_line[0]["x0"] - (LEFT + 16)) <= TOL
            assert abs(number_line[-1]["x1"] - (RIGHT - 16)) <= TOL
        else:
            assert abs((number_line[0]["x0"] + number_line[-1]["x1"]) / 2 - (LEFT + RIGHT) / 2) <= TOL
        rules = [g for g in red_graphics if abs(g["x0"] - LEFT) <= TOL and abs(g["x1"] - RIGHT) <= TOL]
        # One line (pdfplumber may list a rect and its edge).
        assert rules and max(g["top"] for g in rules) - min(g["top"] for g in rules) <= TOL, red_graphics
        assert 0 < rules[0]["top"] - max(c["bottom"] for c in number_line) <= 4 * MM + TOL
        assert top(title_line) > rules[0]["bottom"] + 2 * LINE - TOL
    elif layout == "letter":
        mark = first["lines"][0]
        assert all(is_red(c) for c in mark) and doc.line_text(mark) == ORG_OF[kind]
        assert abs(top(mark) - 30 * MM) <= TOL, f"issuer mark at {top(mark) / MM:.1f} mm from the top edge"
        double = sorted({(round(g["top"] / MM), round(g["bottom"] / MM)) for g in red_graphics})
        assert all(abs(g["x0"] - 20 * MM) <= TOL and abs(g["x1"] - 190 * MM) <= TOL for g in red_graphics)
        upper = [g for g in red_graphics if g["bottom"] < 60 * MM]
        lower = [g for g in red_graphics if g["top"] > 250 * MM]
        assert upper and lower and len(upper) + len(lower) == len(red_graphics), double
        assert abs(min(g["top"] for g in upper) - max(c["bottom"] for c in mark) - 4 * MM) <= TOL
        assert abs(max(g["bottom"] for g in lower) - (841.89 - 20 * MM)) <= TOL  # 20 mm above the bottom edge
        number_line = first["lines"][1]
        assert doc.line_text(number_line) == number
        assert abs(number_line[-1]["x1"] - RIGHT) <= TOL  # flush right (顶格居版心右边缘)
        assert top(number_line) > max(g["bottom"] for g in upper)
        assert "—1—" not in first["text"]  # no page number on the first page
    else:
        assert not red_graphics and not any(is_red(c) for line in first["lines"] for c in line), "a red header"
        assert ti == 0, "the title is not the first line"
        if layout == "certificate":  # the number flush right on the line below the title
            number_line = first["lines"][ti + len(title_block)]
            assert doc.line_text(number_line) == number
            assert abs(number_line[-1]["x1"] - RIGHT) <= TOL
        else:
            _pi, _li, line = doc.find(rf".*档案编号：{re.escape(number)}", page=0)
            assert abs(line[-1]["x1"] - RIGHT) <= TOL
    return title_line


def check_signature_block(doc: Doc, kind: str) -> None:
    """成文日期 four characters in from the right, 署名 centred on it (or ending at the right edge when too
    long), two blank lines below the body, both on the body's page (GB/T 9704-2012 7.3.5.1)."""
    org = ORG_OF[kind]
    pi, li, name = doc.find(re.escape(org) + r"(?!文件)")
    if pi == 0 and li == 0:  # the letterhead names the issuer too: the signature is the last such line
        pi, li, name = max(((p, i, line) for p, page in enumerate(doc.pages) for i, line in enumerate(page["lines"])
                            if doc.line_text(line) == org), key=lambda t: (t[0], t[1]))
    lines = doc.pages[pi]["lines"]
    date = lines[li + 1]
    assert doc.line_text(date) == DATE_CN, doc.line_text(date)
    assert abs(date[-1]["x1"] - (RIGHT - 4 * 16)) <= TOL, f"date ends at {date[-1]['x1'] / MM:.1f} mm"
    assert abs((baseline(name) - baseline(date)) - LINE) <= TOL
    centre = (date[0]["x0"] + date[-1]["x1"]) / 2
    name_centre = (name[0]["x0"] + name[-1]["x1"]) / 2
    if abs(name_centre - centre) > TOL:  # a name too long to centre on the date ends at the block's edge
        assert abs(name[-1]["x1"] - RIGHT) <= TOL and (name[-1]["x1"] - name[0]["x0"]) / 2 > RIGHT - centre
    body = lines[li - 1]
    assert abs((baseline(body) - baseline(name)) - 3 * LINE) <= TOL, "not two blank lines below the body"


# The issuing org of each kind's example, as issue_examples issues it (the dropout notice: the school).
ORG_OF = {kind: ORG[issuer_of(kind)][0] for kind in KINDS}


@pytest.mark.parametrize("kind", list(EXPECTED_LAYOUT))
def test_each_kind_is_laid_out_as_gbt_9704_wants(specimens: dict[str, Issued], kind: str) -> None:
    issued = specimens[kind]
    layout = EXPECTED_LAYOUT[kind]
    doc = Doc(issued.pdf)
    assert header_type(doc) == layout
    check_header(doc, layout, kind, printed_title(issued), issued.doc_number)
    if layout == "form":  # a file number of the form's own series, never a 发文字号
        assert re.fullmatch(r"\d{6,12}[A-Z]{2}-[A-Z]{2}-2026-\d{6}", issued.doc_number), issued.doc_number
        assert not re.search(r"〔\d{4}〕\d+号", doc.text)
    else:
        assert re.fullmatch(r"\w+〔2026〕[1-9]\d*号", issued.doc_number), issued.doc_number
    face, size = body_font(doc)
    assert face.startswith(FANGSONG), f"body text set in {face}"
    assert abs(size - (12 if layout == "form" else 16)) <= 0.2, size  # forms: 小四 in the table; else 三号
    if layout != "form":
        check_signature_block(doc, kind)
    # No drawn seal: no red below the header, no curves (a ring), no seal text.
    for pi, page in enumerate(doc.pages):
        lines = page["lines"][1:] if pi == 0 and layout in ("file", "letter") else page["lines"]  # but the mark
        red = [c for line in lines for c in line if is_red(c)]
        assert not red, f"red text on page {pi + 1}: {''.join(c['text'] for c in red)}"
        ring = [g for g in page["graphics"] if is_red(g) and g["object_type"] == "curve" and g["height"] > 2 * MM]
        assert not ring, "a red curve (a drawn seal)"
    assert not re.search("专用章|公章|印章", doc.text)


@pytest.mark.parametrize("kind", list(EXPECTED_LAYOUT))
def test_specimen_without_public_address_and_real_with_one(specimens: dict[str, Issued],
                                                          published: dict[str, Issued], kind: str) -> None:
    specimen, real = Doc(specimens[kind].pdf), Doc(published[kind].pdf)
    for page in specimen.pages:
        assert page["watermark"] == "样本", page["watermark"]
        assert not page["qr"], "a QR code on a specimen"
    assert "http" not in specimen.text and "/api/v1/verify" not in specimen.text
    code = published[kind].code.replace("-", "")
    assert f"{PUBLIC_URL}/verify/{code}" in real.text
    assert all(page["watermark"] == "" for page in real.pages)
    assert any(page["qr"] for page in real.pages), "no QR code"


@pytest.mark.parametrize(("url", "printed"), [
    (None, None), ("http://127.0.0.1:8000", None), ("http://127.8.9.1/shouhu", None), ("http://localhost:8000", None),
    ("http://[::1]:8000/", None), ("https://shouhu.example.gov.cn/", PUBLIC_URL),
    ("http://10.2.3.4:8000/shouhu/", "http://10.2.3.4:8000/shouhu"),
])
def test_a_loopback_public_address_is_none(tmp_path: Path, url: str | None, printed: str | None) -> None:
    assert Settings(data_dir=tmp_path, public_url=url).printed_public_url == printed


# Licensed fonts -----------------------------------------------------------------------------------


def licensed_fangsong(folder: Path, text: str) -> Path:
    """A stand-in for an office's 方正仿宋_GBK: FandolFang's glyphs for ``text``, under the licensed family name."""
    folder.mkdir(parents=True, exist_ok=True)
    font = TTFont("/usr/local/share/fonts/shouhu/FandolFang-Regular.otf")
    subsetter = subset.Subsetter(subset.Options(name_IDs=["*"], name_languages=["*"]))
    subsetter.populate(text=text)
    subsetter.subset(font)
    for record in font["name"].names:
        if record.nameID in (1, 4, 16):
            record.string = "方正仿宋_GBK" if record.langID != 0x409 else "FZFangSong-Z02"
        elif record.nameID == 6:
            record.string = "FZFSK--GBK1-0"
    font["CFF "].cff.fontNames = ["FZFSK--GBK1-0"]
    path = folder / "FZFSK.otf"
    font.save(path)
    return path


def test_a_licensed_fangsong_in_the_font_folder_is_preferred(backend: Any, tmp_path: Path) -> None:
    fields = record_fields("dropout_notice")
    templates = Path(__file__).parents[2] / "doc_templates" / "templates"
    school = ORG_OF["dropout_notice"]  # the school issues it (access_control.policy.KIND_ISSUER_ORG_TYPES)
    licensed_fangsong(tmp_path / "fonts", str(KINDS["dropout_notice"].example) + school + "".join(
        p.read_text(encoding="utf-8") for p in templates.glob("*.j2")) + "0123456789年月日")
    backend.reset()
    settings = make_settings(tmp_path / "var", backend.database_url(tmp_path / "var"), font_dir=tmp_path / "fonts")
    rt = Runtime.open(settings, require_schema=False, clock=lambda: PINNED)
    try:
        rt.initialize()
        seed_world(rt)
        with TestClient(create_app(runtime=rt)) as client:
            cw, issuer = login(client, "caseworker.haizhou"), login(client, issuer_of("dropout_notice"))
            r = client.post("/api/v1/households", json=household_body(HAIZHOU_VILLAGE), headers=cw)
            r = client.post("/api/v1/minors", json=minor_body(r.json()["id"]), headers=cw)
            r = client.post("/api/v1/documents", headers=issuer,
                            json={"kind": "dropout_notice", "subject_id": r.json()["id"], "fields": fields})
            assert r.status_code == 201, r.text
            pdf = client.get(f"/api/v1/documents/{r.json()['id']}/pdf", headers=issuer).content
    finally:
        rt.close()
    face, size = body_font(Doc(pdf))
    assert face in ("FZFangSong-Z02", "FZFSK--GBK1-0") and size == 16.0, (face, size)


# Must show 3: forms do not use up the issuer's document numbers -------------------------------------


HOUSEHOLDS = 100


# `shouhu print` runs in this process: WeasyPrint leaves its colour profile file to the garbage collector.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning")
def test_printing_100_household_files_leaves_the_next_letter_number(rt: Runtime, client: TestClient, tokens: Any,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    village = tokens["village.haizhou"]
    minors = []
    for _ in range(HOUSEHOLDS):
        r = client.post("/api/v1/households", json=household_body(HAIZHOU_VILLAGE), headers=village)
        assert r.status_code == 201, r.text
        r = client.post("/api/v1/minors", json=minor_body(r.json()["id"]), headers=village)
        assert r.status_code == 201, r.text
        minors.append(r.json()["id"])
    year = rt.clock().astimezone(LOCAL_TZ).year

    def letter() -> str:
        r = client.post("/api/v1/documents", headers=village, json={
            "kind": "referral_notice", "subject_id": minors[0], "fields": record_fields("referral_notice")})
        assert r.status_code == 201, r.text
        return str(r.json()["doc_number"])

    assert letter() == f"幸福村委〔{year}〕1号"
    out = tmp_path / "household-files.pdf"
    result = InProcess(rt.settings, monkeypatch)("print", "--kind", "household_file", "--region", HAIZHOU_VILLAGE,
                                                 "--out", str(out), "--as", "village.haizhou", "--issue")
    assert result.exit_code == 0, (result.output, result.exception)
    forms = run_sql(rt, "SELECT doc_number, number_series, number_serial FROM documents "
                        "WHERE kind = 'household_file' ORDER BY number_serial")
    assert [tuple(f) for f in forms] == [(f"{HAIZHOU_VILLAGE}CJ-JT-{year}-{n:06d}", "household_file", n)
                                         for n in range(1, HOUSEHOLDS + 1)]
    assert letter() == f"幸福村委〔{year}〕2号"
