"""The five categories of minors served, and the words pages and paper use for them (DOMAIN.md).

Short labels must not stigmatise. Category 5 is three situations (a poor family;
serious illness or disability; involvement in a case), recorded as a sub-type:
"涉案" is printed only for a child recorded as involved in a case, never for one
who is only poor or ill, nor for one whose sub-type was never recorded. Category
1 quotes the plan: the children are victims, not offenders.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal, get_args

Category5Subtype = Literal["poverty", "illness_disability", "case"]
SUBTYPES: tuple[str, ...] = get_args(Category5Subtype)
SUBTYPE_CATEGORY = 5  # the one category with sub-types

# Long labels: what a form or a page prints beside a category.
CATEGORY_LABELS: dict[int, str] = {
    1: "流浪乞讨，或被拐卖、拐骗、胁迫、诱骗、利用乞讨以及从事违法行为的未成年人",
    2: "监护缺失的未成年人",
    3: "父母长期外出务工的留守未成年人",
    4: "遭受侵害的未成年人",
    5: "困难家庭、重病重残未成年人等",
}
SUBTYPE_LABELS: dict[str, str] = {
    "poverty": "困难家庭的未成年人",
    "illness_disability": "患有重病或者重度残疾的未成年人",
    "case": "部分涉案未成年人",
}
# Short labels: a column, a tag, a cell of a form. A category-5 column counts all three
# situations and names none of them.
CATEGORY_SHORT: dict[int, str] = {1: "流浪乞讨等", 2: "监护缺失", 3: "留守", 4: "遭受侵害", 5: "困难重病等"}
SUBTYPE_SHORT: dict[str, str] = {"poverty": "困难家庭", "illness_disability": "重病重残", "case": "涉案"}
# For a form's select (``value：label`` pairs, the way doc_templates' forms name a Literal's options).
SUBTYPE_DESCRIPTION = "；".join(f"{k}：{v}" for k, v in SUBTYPE_SHORT.items())


def label(category: int, subtype: str | None = None) -> str:
    """The long label of a category (of category 5's sub-type, when recorded)."""
    if category == SUBTYPE_CATEGORY and subtype in SUBTYPE_LABELS:
        return SUBTYPE_LABELS[subtype]
    return CATEGORY_LABELS[category]


def short(category: int, subtype: str | None = None) -> str:
    """The short label of a category (of category 5's sub-type, when recorded)."""
    if category == SUBTYPE_CATEGORY and subtype in SUBTYPE_SHORT:
        return SUBTYPE_SHORT[subtype]
    return CATEGORY_SHORT[category]


def subtype_problem(category: int, subtype: str | None) -> str | None:
    """Why ``subtype`` may not go with ``category`` (a sentence), or None."""
    if subtype is not None and category != SUBTYPE_CATEGORY:
        return "只有第五类需要填写具体情形"
    return None


def open_subtype(records: Iterable[Any], category: int) -> str | None:
    """The sub-type of a minor's open record of ``category`` (records: ``category``, ``subtype``, ``ended_on``)."""
    return next((r.subtype for r in records if r.category == category and r.ended_on is None and r.subtype), None)


def minor_category_tags(minor: Any) -> list[tuple[str, str]]:
    """(long label, short label) of each open category of a minor's answer (``categories``, ``category_records``)."""
    out = []
    for c in minor.categories:
        subtype = open_subtype(minor.category_records, c)
        out.append((label(c, subtype), short(c, subtype)))
    return out
