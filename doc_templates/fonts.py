"""Font stacks for GB/T 9704 documents, and a glyph-coverage check before rendering.

Stacks name the customary office fonts first (an office that installs its
licensed FangSong or XiaoBiaoSong gets them with no code change) and open fonts
after. A character that no installed font of any stack covers is refused at
render time; without the check it would print as an empty box, and fontconfig
can spend tens of seconds searching for it (WeasyPrint issue 2811).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import unicodedata
from collections.abc import Iterable

from fontTools.ttLib import TTFont

STACKS: dict[str, list[str]] = {
    # 仿宋: body text. There is no free simplified FangSong; Noto Serif CJK SC (Song) stands in.
    "fangsong": ["FangSong", "仿宋", "FangSong_GB2312", "仿宋_GB2312", "STFangsong", "Noto Serif CJK SC"],
    # 小标宋 / 宋体: titles and the issuer mark.
    "song": ["FZXiaoBiaoSong-B05S", "方正小标宋简体", "SimSun", "宋体", "STSong", "Noto Serif CJK SC"],
    # 黑体: level-1 headings.
    "hei": ["SimHei", "黑体", "STHeiti", "Noto Sans CJK SC"],
    # 楷体: level-2 headings.
    "kai": ["KaiTi", "楷体", "KaiTi_GB2312", "楷体_GB2312", "STKaiti", "LXGW WenKai", "AR PL UKai CN"],
}

REQUIRED_OPEN_FONTS = ("Noto Serif CJK SC", "Noto Sans CJK SC", "LXGW WenKai")


def css_family(stack: str) -> str:
    return ", ".join(f'"{name}"' for name in STACKS[stack]) + ", serif"


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
    """Open fonts Shouhu relies on that are not installed (for doctor and readyz)."""
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
