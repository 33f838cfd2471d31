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


# Case numbers typed by a requester or a custodian ---------------------------------------
#
# Court case numbers (最高人民法院《关于人民法院案件案号的若干规定》, 2016): the year in
# brackets, the court's code (a province abbreviation and 2 or 4 digits, or 最高法), the
# case-type code (刑初, 刑终, 刑更, 刑申, 执, ...), the serial and 号: （2026）苏0706刑初88号.
# Before 2016 a court code was its short name and the serial read 字第…号: （2014）海刑初字第88号.
# Document numbers of procuratorates, police, supervision commissions, state security and
# justice bureaus: the organ's code, the year in 〔〕 (or [] or ()), the serial and 号:
# 连海检刑诉〔2026〕12号, 连公(海)立字〔2026〕1234号. Police case numbers in the police
# information system: one letter and 15-30 digits (A320706510000202611001). The checks are
# permissive about codes (new courts and case types appear) and strict about the frame, so
# free text and names are refused.
CASE_CLASS = "刑民行执赔破司国财"  # a court case type names one of these (刑初, 民终, 执恢, 司救, 国赔...)
ORGAN_MARKS = "检公法监安司"  # procuratorate, police, court, supervision, state security, justice
_HAN = "\u4e00-\u9fff"
_COURT_CASE = re.compile(rf"\((19|20)\d{{2}}\)([{_HAN}0-9]{{1,12}}?)(字第)?第?(\d{{1,8}})号")
_ORGAN_DOC = re.compile(rf"([{_HAN}()]{{1,20}})\((19|20)\d{{2}}\)[A-Z]?第?\d{{1,8}}号")
_POLICE_CASE = re.compile(r"[A-Z]\d{15,30}")
_BRACKETS = str.maketrans({"〔": "(", "〕": ")", "[": "(", "]": ")", "【": "(", "】": ")", "〖": "(", "〗": ")"})


def case_number_key(value: str) -> str:
    """The form a case number is compared and hashed in: full-width folded, brackets unified,
    no spaces, letters upper-case; （2026）苏0706刑初88号 and (2026)苏0706刑初88号 are one case."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", value)).translate(_BRACKETS).upper()


def check_case_number(value: str) -> str:
    """A court, procuratorate or police case number (see above), kept as typed (NFC, trimmed)."""
    value = unicodedata.normalize("NFC", value).strip()
    key = case_number_key(value)
    m = _COURT_CASE.fullmatch(key)
    if m and any(c in CASE_CLASS for c in m.group(2)) and not m.group(2).isdigit():
        return value
    m = _ORGAN_DOC.fullmatch(key)
    if m and any(c in ORGAN_MARKS for c in m.group(1)):
        return value
    if _POLICE_CASE.fullmatch(key):
        return value
    raise ValueError("案号格式不正确，应如（2026）苏0706刑初88号、连海检刑诉〔2026〕12号")


CaseNumber = Annotated[str, Field(max_length=60), AfterValidator(check_case_number)]
"""A case or document number of a court, procuratorate or police (validated; hashed for lookups)."""
