"""Page cursors: one encoder and one decoder for every list, so a cursor is checked once.

A cursor is opaque to clients: the urlsafe base64 (unpadded) of the last key of the
previous page, an id (``hh_...``) or a non-negative integer (an audit ``seq``, a search
offset). Whatever a client sends is checked for size and shape here before it reaches
a query: a cursor that is not one of ours is a 422 naming ``cursor``, never a 500 (a
40-digit number once overflowed the database's integer).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from core.errors import InvalidInput

T = TypeVar("T")

MAX_CURSOR = 64
"""Characters a cursor may have (an encoded id of up to 40 characters needs 54)."""
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_INT = 2**62  # every integer key we page by fits; nothing larger reaches a query

_SHAPE = re.compile(CURSOR_PATTERN)
_ID = re.compile(r"[a-z]{1,8}_[a-z0-9]{1,40}")  # core.db.new_id
_INT = re.compile(r"[0-9]{1,19}")


def invalid() -> InvalidInput:
    return InvalidInput.one("cursor", "分页游标无效", location="query")


def encode_cursor(key: str | int) -> str:
    return base64.urlsafe_b64encode(str(key).encode("ascii")).decode("ascii").rstrip("=")


def _decode(cursor: str) -> str:
    if not _SHAPE.fullmatch(cursor):
        raise invalid()
    try:
        # validate=True: a plain urlsafe_b64decode skips stray characters and reads junk as "".
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid() from None


def decode_id_cursor(cursor: str | None) -> str | None:
    """The record id a cursor continues after; None for no cursor."""
    if not cursor:
        return None
    key = _decode(cursor)
    if not _ID.fullmatch(key):
        raise invalid()
    return key


def decode_int_cursor(cursor: str | None, *, maximum: int = MAX_INT) -> int | None:
    """The integer a cursor continues from (0..maximum); None for no cursor."""
    if not cursor:
        return None
    key = _decode(cursor)
    if not _INT.fullmatch(key) or int(key) > maximum:
        raise invalid()
    return int(key)


def keyset_page(session: Session, query: Select[T], key: InstrumentedAttribute[Any], *,
                after: str | int | None, limit: int, descending: bool = False) -> tuple[list[T], str | None]:
    """One page of ``query`` ordered by ``key``, continuing after the key ``after``.

    Returns the page's rows and the cursor of the next page (None on the last page):
    one more row than the page is fetched to know whether another page follows.
    """
    if after is not None:
        query = query.where(key < after if descending else key > after)
    rows = list(session.scalars(query.order_by(key.desc() if descending else key).limit(limit + 1)))
    page = rows[:limit]
    more = len(rows) > limit and page
    return page, encode_cursor(getattr(page[-1], key.key)) if more else None
