"""Document fields filled in from case files, so staff start from the record, not a blank form.

Builders take decrypted record data and return a ``fields`` dict for a kind.
What a record cannot tell (opinions, measures) is marked ``（待填写）`` for the
caseworker to complete; for forms printed in batches it stays so on paper.
"""

from __future__ import annotations

from datetime import date
from typing import Any

TO_FILL = "（待填写）"
SEX = {"male": "男", "female": "女"}


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _cut(text: str | None, n: int) -> str | None:
    return text[:n] if text else text


def household_file(*, household_id: str, region_name: str, household: dict[str, Any],
                   minors: list[dict[str, Any]], surveyor: str, today: date) -> dict[str, Any]:
    members = [
        {"name": m["name"], "relation": m["relation"][:12], "id_number": m.get("id_number"),
         "situation": _cut(m.get("situation"), 60)}
        for m in household.get("members", [])[:10]
    ] or [{"name": TO_FILL, "relation": TO_FILL}]
    return {
        "household_no": household_id,
        "region": region_name[-60:],
        "address": household["address"][:60],
        "members": members,
        "minors": [
            {"name": m["name"], "sex": SEX[m["sex"]], "birth_date": m["birth_date"],
             "categories": m["categories"] or [5]}
            for m in minors[:6]
        ] or [{"name": TO_FILL, "sex": "男", "birth_date": today.isoformat(), "categories": [5]}],
        "economy": _cut(household.get("notes"), 300) or TO_FILL,
        "assistance": TO_FILL,
        "village_opinion": TO_FILL,
        "surveyor": surveyor[:32],
        "survey_date": today.isoformat(),
    }


def minor_file(*, minor: dict[str, Any], household: dict[str, Any], caseworker: str, today: date) -> dict[str, Any]:
    members = household.get("members", [])
    guardian = minor.get("guardian") or (members[0]["name"] if members else TO_FILL)
    relation = next((m["relation"] for m in members if m["name"] == guardian), "监护人")
    return {
        "name": minor["name"], "sex": SEX[minor["sex"]], "birth_date": minor["birth_date"],
        "id_number": minor.get("id_number"), "school": _cut(minor.get("school"), 60),
        "address": household["address"][:60], "guardian": guardian[:32], "guardian_relation": relation[:12],
        "guardian_phone": minor.get("phone"),
        "categories": [{"category": c["category"], "found_on": c["found_on"], "ended_on": c.get("ended_on")}
                       for c in minor["category_records"][:5]],
        "situation": _cut(minor.get("notes"), 1500) or TO_FILL,
        "measures": [],
        "caseworker": caseworker[:32],
        "filled_on": today.isoformat(),
    }


def about_minor(kind: str, *, minor: dict[str, Any], household: dict[str, Any], today: date) -> dict[str, Any]:
    """The minor's particulars for letters about one minor; the rest is the caseworker's."""
    birth = date.fromisoformat(minor["birth_date"])
    sex = SEX[minor["sex"]]
    if kind == "referral_notice":
        return {"minor_name": minor["name"], "minor_sex": sex, "minor_age": min(_age(birth, today), 17),
                "minor_address": household["address"][:60], "found_on": today.isoformat()}
    if kind == "guardianship_designation":
        return {"minor_name": minor["name"], "minor_id_number": minor.get("id_number")}
    if kind == "dropout_notice":
        return {"student_name": minor["name"]}
    if kind == "rescue_escort_record":
        return {"minor_name": minor["name"], "minor_sex": sex, "minor_age": f"{_age(birth, today)}岁"}
    return {}
