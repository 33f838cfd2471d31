"""Font stacks for GB/T 9704 documents, and a glyph-coverage check before rendering.

Stacks name the customary office fonts first (an office that installs its
licensed 方正仿宋 or 方正小标宋, system-wide or in the ``SHOUHU_FONT_DIR`` folder,
gets them with no code change) and open fonts after: FandolFang for body text,
Noto CJK for every character it lacks. A character that no installed font of any stack covers is refused at
render time; without the check it would print as an empty box, and fontconfig
can spend tens of seconds searching for it (WeasyPrint issue 2811).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable
from pathlib import Path

from fontTools.ttLib import TTFont

STACKS: dict[str, list[str]] = {
    # 仿宋 (body text, 3-hao): an office's licensed 方正仿宋 first (from the system or ``SHOUHU_FONT_DIR``),
    # then FandolFang (GPL with the font exception, all of GB 2312; ``make fonts`` installs it), then
    # Noto Serif CJK SC for the rarer characters FandolFang lacks (per-glyph fallback).
    "fangsong": ["方正仿宋_GBK", "FZFangSong-Z02", "FZFangSong-Z02S", "FandolFang", "Noto Serif CJK SC"],
    # 小标宋 / 宋体: titles and the issuer mark (bold), page numbers. The open faces are the Fandol ones
    # (same package and licence as FandolFang, ~10 k glyphs): an embedded subset keeps glyph ids, so a
    # 65 k-glyph Noto face costs several times more to subset, compress and store (bench/results).
    # Noto CJK follows each for the rare characters Fandol lacks, so it is embedded only when one is drawn.
    "song": ["方正小标宋简体", "FZXiaoBiaoSong-B05S", "方正小标宋_GBK", "FZXiaoBiaoSong-B05", "FandolSong",
             "Noto Serif CJK SC"],
    # 黑体: level-1 headings.
    "hei": ["SimHei", "黑体", "STHeiti", "FandolHei", "Noto Sans CJK SC"],
    # 楷体: level-2 headings.
    "kai": ["KaiTi", "楷体", "KaiTi_GB2312", "楷体_GB2312", "STKaiti", "FandolKai", "LXGW WenKai", "AR PL UKai CN"],
}

# Families an office licenses: when a file in the font folder (``SHOUHU_FONT_DIR``) names one of
# them, it is declared with @font-face and, standing first in its stack, preferred.
LICENSED: dict[str, tuple[str, ...]] = {
    "fangsong": ("方正仿宋_GBK", "FZFangSong-Z02", "FZFangSong-Z02S"),
    "song": ("方正小标宋简体", "FZXiaoBiaoSong-B05S", "方正小标宋_GBK", "FZXiaoBiaoSong-B05"),
}
FONT_SUFFIXES = (".otf", ".ttf", ".ttc", ".otc")

REQUIRED_OPEN_FONTS = ("FandolFang", "FandolSong", "FandolHei", "FandolKai", "Noto Serif CJK SC", "Noto Sans CJK SC",
                       "LXGW WenKai")


def css_family(stack: str) -> str:
    return ", ".join(f'"{name}"' for name in STACKS[stack]) + ", serif"


def _family_names(path: Path) -> set[str]:
    """Every family name (ids 1 and 16, all languages) of the first face in a font file."""
    try:
        font = TTFont(path, fontNumber=0, lazy=True)
    except Exception:  # noqa: BLE001 - not a font we can read: not one of ours
        return set()
    try:
        return {str(r.toUnicode()).strip() for r in font["name"].names if r.nameID in (1, 16)}
    finally:
        font.close()


@functools.cache
def licensed_faces(font_dir: Path | None) -> tuple[tuple[str, Path], ...]:
    """(family, file) for each licensed font found in ``font_dir`` (one file per family)."""
    if font_dir is None or not font_dir.is_dir():
        return ()
    wanted = {name for names in LICENSED.values() for name in names}
    found: dict[str, Path] = {}
    for path in sorted(font_dir.iterdir()):
        if path.suffix.lower() in FONT_SUFFIXES and path.is_file():
            for family in sorted(_family_names(path) & wanted):
                found.setdefault(family, path)
    return tuple(found.items())


def font_face_css(font_dir: Path | None) -> str:
    """@font-face rules that make the licensed fonts of ``font_dir`` available under their family names."""
    return "".join(f'@font-face {{ font-family: "{family}"; src: url("{path.resolve().as_uri()}"); }}\n'
                   for family, path in licensed_faces(font_dir))


def _fc(*args: str) -> str:
    exe = shutil.which("fc-match") if args[0] == "match" else shutil.which("fc-list")
    if exe is None:
        return ""
    return subprocess.run([exe, *args[1:]], capture_output=True, text=True, check=False).stdout  # noqa: S603


@functools.cache
def installed_families() -> frozenset[str]:
    out = _fc("list", ":", "family")
    return frozenset(f.strip() for line in out.splitlines() for f in line.split(","))


@functools.cache
def _font_file(family: str) -> tuple[str, int] | None:
    """The file fontconfig uses for ``family``, only if it is that family (no substitute)."""
    if family not in installed_families():
        return None
    out = _fc("match", "-f", "%{file}\t%{index}\t%{family}", f"{family}:style=Regular")
    if not out:
        return None
    path, index, families = out.split("\t", 2)
    if family not in [f.strip() for f in families.split(",")]:
        return None
    return path, int(index or 0)


@functools.cache
def covered() -> frozenset[int]:
    """Every code point some installed font of some stack can draw."""
    points: set[int] = set()
    for family in {f for stack in STACKS.values() for f in stack}:
        found = _font_file(family)
        if found is None:
            continue
        path, index = found
        font = TTFont(path, fontNumber=index, lazy=True)
        points.update(font.getBestCmap() or {})
        font.close()
    return frozenset(points)


def missing(text: str) -> list[str]:
    """Characters of ``text`` that no font can draw (whitespace and controls aside)."""
    have = covered()
    out: list[str] = []
    for ch in text:
        # Whitespace and format controls are never drawn; everything else, unassigned
        # code points included, needs a glyph.
        if ord(ch) in have or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"):
            continue
        if ch not in out:
            out.append(ch)
    return out


def missing_fonts() -> list[str]:
    """Open fonts Shouhu relies on that are not installed (for doctor and readyz); the Fandol faces
    are installed by ``make fonts`` (see the Makefile), the others by Debian packages."""
    have = installed_families()
    return [f for f in REQUIRED_OPEN_FONTS if f not in have]


def texts(value: object, path: str = "") -> Iterable[tuple[str, str]]:
    """(field path, string) for every string inside a fields structure."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from texts(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from texts(v, f"{path}.{i}" if path else str(i))
