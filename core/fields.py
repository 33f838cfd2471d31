"""Field types shared by case files and document forms: ID numbers, names, text.

Validation messages are Simplified Chinese and never repeat the rejected value,
since it may be personal data.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field

# ISO 7064 MOD 11-2, as GB 11643-1999 specifies for the 18th character.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def id_check_char(first17: str) -> str:
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def id_birth_date(id_number: str) -> date:
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def normalize_id_number(value: str) -> str:
    return value.strip().upper()


def check_id_number(value: str) -> str:
    value = normalize_id_number(value)
    if not re.fullmatch(r"\d{17}[\dX]", value):
        raise ValueError("身份证号码应为18位：前17位为数字，最后一位为数字或X")
    try:
        id_birth_date(value)
    except ValueError:
        raise ValueError("身份证号码中的出生日期无效") from None
    if id_check_char(value[:17]) != value[17]:
        raise ValueError("身份证号码校验位不正确")
    return value


def check_text(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") and c not in "\n\t" for c in value):
        raise ValueError("含有不可见的控制字符")
    return value


def check_name(value: str) -> str:
    value = check_text(value)
    if not value:
        raise ValueError("姓名不能为空")
    if "\n" in value or "\t" in value:
        raise ValueError("姓名不能包含换行")
    return value


IdNumber = Annotated[str, Field(min_length=15, max_length=20), AfterValidator(check_id_number)]
Name = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(check_name)]
ShortText = Annotated[str, Field(max_length=64), AfterValidator(check_text)]
Text = Annotated[str, Field(max_length=2000), AfterValidator(check_text)]
Phone = Annotated[str, Field(pattern=r"^[0-9+\- ]{5,20}$")]


# Times a client sends (query filters, grant expiries). RFC 3339 with an offset: a time
# without one means a different instant on every server, and an offset-less value compared
# with stored UTC times failed deep in the database layer. The range keeps every value
# representable after conversion to UTC (0001-01-01T00:00+08:00 is not) and in any backend.
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2200, 1, 1, tzinfo=UTC)


def check_time(value: datetime) -> datetime:
    """An offset-aware time within [TIME_MIN, TIME_MAX), as UTC."""
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not TIME_MIN <= utc < TIME_MAX:
        raise ValueError(f"时间应在 {TIME_MIN.year} 年至 {TIME_MAX.year - 1} 年之间")
    return utc


Timestamp = Annotated[AwareDatetime, AfterValidator(check_time)]
"""RFC 3339 with offset (e.g. ``2026-12-06T08:00:00+08:00``), 1970-2199; normalised to UTC."""


def local_day_start(day: date, tz: tzinfo, *, next_day: bool = False) -> datetime:
    """00:00 of ``day`` (or of the day after) in ``tz``, as UTC, checked like ``Timestamp``:
    the date filters and grant dates typed into the pages (ValueError out of range)."""
    try:
        start = datetime.combine(day, time(), tz) + timedelta(days=1 if next_day else 0)
    except OverflowError:
        start = datetime.max.replace(tzinfo=UTC)
    return check_time(start)
