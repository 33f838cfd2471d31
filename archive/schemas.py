"""Request and response shapes for case files, with field-level validation.

Validation messages are Simplified Chinese; they never repeat the rejected value,
since it may be personal data.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

# ISO 7064 MOD 11-2, as GB 11643-1999 specifies for the 18th character.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def id_check_char(first17: str) -> str:
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def id_birth_date(id_number: str) -> date:
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def normalize_id_number(value: str) -> str:
    return value.strip().upper()


def _check_id_number(value: str) -> str:
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


def _check_text(value: str) -> str:
    value = unicodedata.normalize("NFC", value).strip()
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") and c not in "\n\t" for c in value):
        raise ValueError("含有不可见的控制字符")
    return value


def _check_name(value: str) -> str:
    value = _check_text(value)
    if not value:
        raise ValueError("姓名不能为空")
    if "\n" in value or "\t" in value:
        raise ValueError("姓名不能包含换行")
    return value


IdNumber = Annotated[str, Field(min_length=15, max_length=20), AfterValidator(_check_id_number)]
Name = Annotated[str, Field(min_length=1, max_length=32), AfterValidator(_check_name)]
ShortText = Annotated[str, Field(max_length=64), AfterValidator(_check_text)]
Text = Annotated[str, Field(max_length=2000), AfterValidator(_check_text)]
Phone = Annotated[str, Field(pattern=r"^[0-9+\- ]{5,20}$")]
RegionCode = Annotated[str, Field(pattern=r"^(\d{6}|\d{12})$")]
Category = Annotated[int, Field(ge=1, le=5)]

_IN = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MemberIn(BaseModel):
    model_config = _IN

    name: Name
    relation: Annotated[str, Field(min_length=1, max_length=16), AfterValidator(_check_name)] = Field(
        description="与未成年人的关系，如 父亲、母亲、祖母"
    )
    id_number: IdNumber | None = None
    phone: Phone | None = None
    situation: ShortText | None = Field(None, description="如 外出务工、服刑、重病")


class HouseholdCreate(BaseModel):
    model_config = _IN

    region_code: RegionCode
    address: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_text)]
    members: list[MemberIn] = Field(default_factory=list, max_length=20)
    notes: Text | None = None


class HouseholdUpdate(BaseModel):
    model_config = _IN

    address: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_check_text)] | None = None
    members: list[MemberIn] | None = Field(None, max_length=20)
    notes: Text | None = None
    expected_version: int | None = Field(
        None, description="If given, the update is refused with 409 unless it matches"
    )


class HouseholdPublic(BaseModel):
    id: str
    region_code: str
    address: str
    members: list[MemberIn]
    notes: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime


class CategoryIn(BaseModel):
    model_config = _IN

    category: Category
    found_on: date | None = Field(None, description="发现日期，默认今天")
    ended_on: date | None = None

    @model_validator(mode="after")
    def _order(self) -> CategoryIn:
        if self.found_on and self.ended_on and self.ended_on < self.found_on:
            raise ValueError("结束日期不能早于发现日期")
        return self


class MinorFields(BaseModel):
    """Fields shared by create and update."""

    model_config = _IN

    school: ShortText | None = None
    guardian: ShortText | None = Field(None, description="实际监护人")
    phone: Phone | None = None
    notes: Text | None = None


class MinorCreate(MinorFields):
    household_id: str = Field(min_length=1, max_length=40)
    name: Name
    id_number: IdNumber | None = None
    birth_date: date
    sex: Literal["male", "female"]
    categories: list[Category | CategoryIn] = Field(min_length=1, max_length=10)


class MinorUpdate(MinorFields):
    name: Name | None = None
    id_number: IdNumber | None = None
    birth_date: date | None = None
    sex: Literal["male", "female"] | None = None
    categories: list[Category | CategoryIn] | None = Field(None, min_length=1, max_length=10)
    expected_version: int | None = None


def birth_problems(birth_date: date, id_number: str | None, *, today: date) -> list[dict[str, str]]:
    """Cross-field checks: a minor, born in the past, matching the ID number."""
    if birth_date > today:
        return [{"field": "birth_date", "message": "出生日期不能晚于今天"}]
    if (today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))) >= 18:
        return [{"field": "birth_date", "message": "已年满18周岁，不属于未成年人"}]
    if id_number and id_birth_date(id_number) != birth_date:
        return [{"field": "id_number", "message": "身份证号码中的出生日期与出生日期不一致"}]
    return []


class CategoryPublic(BaseModel):
    category: int
    found_on: date
    ended_on: date | None = None


class MinorPublic(BaseModel):
    id: str
    household_id: str
    region_code: str
    name: str
    id_number: str | None = None
    birth_date: date
    sex: str
    categories: list[int]
    category_records: list[CategoryPublic]
    school: str | None = None
    guardian: str | None = None
    phone: str | None = None
    notes: str | None = None
    version: int
    created_at: datetime
    updated_at: datetime


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
