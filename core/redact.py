"""Keep what a client typed out of logs and audit entries unless it is shaped like an id.

A client can put anything where an id belongs (``/minors/<an ID number>``). Ids
Shouhu hands out, region codes, sequence numbers and verification codes pass;
anything else, in particular runs of digits as long as ID and phone numbers,
is replaced by a marker.
"""

from __future__ import annotations

import re
import traceback

_WORD = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")
_CODE = re.compile(r"^[0-9A-Z]{12}$")  # document verification codes (Crockford base32)
_LONG_DIGITS = re.compile(r"\d{10,}")
REDACTED = "~redacted~"


def safe_identifier(value: str) -> str:
    """``value`` if it is an id, region code, number or route word; else a marker."""
    if not value:
        return value
    if value.isdigit():
        return value if len(value) <= 9 or len(value) == 12 else REDACTED
    if _CODE.fullmatch(value) and not _LONG_DIGITS.search(value):
        return value
    if _WORD.fullmatch(value) and not _LONG_DIGITS.search(value):
        return value
    return REDACTED


def safe_path(path: str) -> str:
    """A URL path with every segment that is not id-shaped replaced."""
    return "/".join(safe_identifier(seg) if seg else seg for seg in path.split("/"))


def safe_traceback(exc: BaseException) -> str:
    """Where it failed, without exception messages (they may quote stored values)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return type(exc).__name__ + " at " + " <- ".join(
        f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno}:{f.name}" for f in reversed(frames[-8:])
    )
