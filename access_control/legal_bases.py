"""The statutory bases a sealed-record application, a sealing or an unsealing may cite.

A requester or a custodian picks one from this fixed list (an enum in the OpenAPI
document, a ``<select>`` on the pages); nobody types a legal basis. The code is
what is stored in plain and what the access log keeps: it names a provision and
never a person. Free text belongs in the fields that are encrypted (an
application's purpose, an unsealing's reason).

Codes are stable; a label may be corrected without touching stored data. The
labels cite the provisions as DOMAIN.md sets them out; the deployment's legal
staff should check the wording of each against the official texts
(docs/sealed-records.md, "Legal bases").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

APPLY, SEAL, UNSEAL = "apply", "seal", "unseal"
USES = (APPLY, SEAL, UNSEAL)

CPL = "《中华人民共和国刑事诉讼法》"
PJDL = "《中华人民共和国预防未成年人犯罪法》"
MEASURES = "《关于未成年人犯罪记录封存的实施办法》（2022年）"
SPP_RULES = "《人民检察院刑事诉讼规则》"
MPS_RULES = "《公安机关办理犯罪记录查询工作规定》（2021年）"


@dataclass(frozen=True)
class LegalBasis:
    code: str
    label: str
    uses: tuple[str, ...]


BASES: tuple[LegalBasis, ...] = (
    # Applying to see sealed records (查询).
    LegalBasis("cpl_286_judicial", f"{CPL}第二百八十六条第二款：司法机关为办案需要查询", (APPLY,)),
    LegalBasis("cpl_286_regulation", f"{CPL}第二百八十六条第二款：有关单位根据国家规定查询", (APPLY,)),
    LegalBasis("pjdl_59", f"{PJDL}第五十九条：司法机关因办案需要或者有关单位根据国家规定查询", (APPLY,)),
    LegalBasis("measures_2022_16", f"{MEASURES}第十六条：书面申请查询封存的犯罪记录", (APPLY,)),
    LegalBasis("spp_rules_484", f"{SPP_RULES}第四百八十四条：书面申请查询封存的犯罪记录", (APPLY,)),
    LegalBasis("mps_2021_unit", f"{MPS_RULES}：单位依法查询犯罪记录", (APPLY,)),
    # Sealing (封存).
    LegalBasis("cpl_286_1", f"{CPL}第二百八十六条第一款：犯罪时不满十八周岁，被判处五年有期徒刑以下刑罚", (SEAL,)),
    LegalBasis("measures_2022_4", f"{MEASURES}第四条：被判处五年有期徒刑以下刑罚以及免除刑事处罚", (SEAL,)),
    LegalBasis("measures_2022_3", f"{MEASURES}第三条：不予刑事处罚、不追究刑事责任、不起诉等记录", (SEAL,)),
    # Unsealing (解除封存); the statutory cause itself is ``archive.sealing.UNSEAL_CAUSES``.
    LegalBasis("spp_rules_485", f"{SPP_RULES}第四百八十五条：解除封存", (UNSEAL,)),
    LegalBasis("measures_2022_18", f"{MEASURES}第十八条：解除封存的情形", (UNSEAL,)),
)

# Rows written before migration 0013 cited their basis in free text: that text now sits in the
# row's encrypted envelope, and the plain column holds this code. Never offered for new input.
LEGACY = LegalBasis("legacy", "迁移前填写的法律依据（原文已加密保存）", ())

BY_CODE: dict[str, LegalBasis] = {b.code: b for b in (*BASES, LEGACY)}


def codes(use: str) -> tuple[str, ...]:
    return tuple(b.code for b in BASES if use in b.uses)


def choices(use: str) -> list[tuple[str, str]]:
    """(code, label) pairs for a form's ``<select>``."""
    return [(b.code, b.label) for b in BASES if use in b.uses]


def label(code: str | None) -> str:
    """The Chinese label of a stored code (an unknown code is shown as it is)."""
    if code is None:
        return ""
    basis = BY_CODE.get(code)
    return basis.label if basis else code


def describe(use: str) -> str:
    """The list for an OpenAPI description."""
    return "; ".join(f"`{b.code}`: {b.label}" for b in BASES if use in b.uses)


if TYPE_CHECKING:  # the codes are read from BASES at import; a type checker sees a string
    ApplyBasis = str
    SealBasis = str
    UnsealBasis = str
else:
    ApplyBasis = Literal[codes(APPLY)]
    SealBasis = Literal[codes(SEAL)]
    UnsealBasis = Literal[codes(UNSEAL)]
