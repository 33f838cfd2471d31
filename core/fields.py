"""Field types shared by case files and document forms: ID numbers, names, text.

Validation messages are Simplified Chinese and never repeat the rejected value,
since it may be personal data.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from typing import Annotated

from pydantic import AfterValidator, Field

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
