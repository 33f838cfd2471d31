"""Request and response shapes for case files, with field-level validation.

Validation messages are Simplified Chinese; they never repeat the rejected value,
since it may be personal data.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from core.categories import Category5Subtype, subtype_problem
from core.fields import (  # noqa: F401  (re-exported for callers of archive.schemas)
    IdNumber,
    Name,
    Phone,
    ShortText,
    Text,
    check_name,
    check_text,
    id_birth_date,
    id_check_char,
    normalize_id_number,
)

RegionCode = Annotated[str, Field(pattern=r"^(\d{6}|\d{12})$")]
Category = Annotated[int, Field(ge=1, le=5)]

_IN = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MemberIn(BaseModel):
    model_config = _IN

    name: Name
    relation: Annotated[str, Field(min_length=1, max_length=16), AfterValidator(check_name)] = Field(
        description="与未成年人的关系，如 父亲、母亲、祖母"
    )
    id_number: IdNumber | None = None
    phone: Phone | None = None
    situation: ShortText | None = Field(None, description="如 外出务工、服刑、重病")


Address = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(check_text)]


class HouseholdRecord(BaseModel):
    """What a household's sealed payload holds. Every write validates the whole record
    (for an update: the stored record with the changes applied) against it before sealing."""

    model_config = _IN

    address: Address
    members: list[MemberIn] = Field(default_factory=list, max_length=20)
    notes: Text | None = None


class HouseholdCreate(HouseholdRecord):
    region_code: RegionCode


# In an update an absent field keeps its value; null clears an optional field and is refused
# (422 naming the field) for a required one: those fields are typed without null, and their
# default (absent) is never validated.
class HouseholdUpdate(BaseModel):
    model_config = _IN

    address: Address = Field(None, description="Required in the record: omit to keep, null is refused")  # type: ignore[assignment]  # None: unset, never validated
    members: list[MemberIn] = Field(None, max_length=20, description="Omit to keep; [] for none; null is refused")  # type: ignore[arg-type]  # as above
    notes: Text | None = None
    expected_version: int | None = Field(
        None, ge=1, le=2**31 - 1, description="If given, the update is refused with 409 unless it matches"
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
    subtype: Category5Subtype | None = Field(
        None, description="Category 5 only: poverty (困难家庭), illness_disability (重病重残) or case (涉案). "
        "Short labels say 涉案 only for `case`")
    found_on: date | None = Field(None, description="发现日期，默认今天")
    ended_on: date | None = None

    @model_validator(mode="after")
    def _order(self) -> CategoryIn:
        if self.found_on and self.ended_on and self.ended_on < self.found_on:
            raise ValueError("结束日期不能早于发现日期")
        problem = subtype_problem(self.category, self.subtype)
        if problem:
            raise ValueError(problem)
        return self


class MinorFields(BaseModel):
    """Fields shared by create and update."""

    model_config = _IN

    school: ShortText | None = None
    guardian: ShortText | None = Field(None, description="实际监护人")
    phone: Phone | None = None
    notes: Text | None = None


class MinorRecord(MinorFields):
    """What a minor's sealed payload holds (categories are rows of their own). Every write
    validates the whole record against it before sealing, as for households."""

    name: Name
    id_number: IdNumber | None = None
    birth_date: date
    sex: Literal["male", "female"]


class MinorCreate(MinorRecord):
    household_id: str = Field(min_length=1, max_length=40)
    categories: list[Category | CategoryIn] = Field(min_length=1, max_length=10)


class MinorUpdate(MinorFields):
    """Absent keeps a field; null clears an optional one and is refused for a required one."""

    name: Name = Field(None, description="Omit to keep; null is refused")  # type: ignore[assignment]  # None: unset, never validated
    id_number: IdNumber | None = None
    birth_date: date = Field(None, description="Omit to keep; null is refused")  # type: ignore[assignment]  # as above
    sex: Literal["male", "female"] = Field(None, description="Omit to keep; null is refused")  # type: ignore[arg-type]  # as above
    categories: list[Category | CategoryIn] = Field(
        None, min_length=1, max_length=10, description="Omit to keep; null is refused")  # type: ignore[arg-type]  # as above
    expected_version: int | None = Field(None, ge=1, le=2**31 - 1)


LOCAL_TZ = ZoneInfo("Asia/Shanghai")


def local_date(now: datetime) -> date:
    """Today where the archive is used: 00:00-08:00 in China is still yesterday in UTC."""
    return now.astimezone(LOCAL_TZ).date()


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
    subtype: str | None = None
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
