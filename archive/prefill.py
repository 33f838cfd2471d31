"""Document fields filled in from case files, so staff start from the record, not a blank form.

``PARTICULARS`` is the one table of what a document says about its subject and
where each value comes from in the record. Those fields are the record's: a
document is filled from them when issued, previewed or corrected, and a client
value that differs is refused (archive.documents). ``prefill`` adds what else a
record can suggest; what it cannot tell (opinions, measures) is marked
``（待填写）`` for the caseworker to complete, and for forms printed in batches
it stays so on paper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from core.categories import SUBTYPE_CATEGORY

TO_FILL = "（待填写）"
# Suggested deadlines (a caseworker may change them): a referral's first feedback (DOMAIN.md, the
# cycle: 15 days) and a dropout notice's return to school.
REFERRAL_FEEDBACK_DAYS = 15
DROPOUT_RETURN_DAYS = 7
SEX = {"male": "男", "female": "女"}


@dataclass(frozen=True)
class Record:
    """A subject's record, decrypted (after an audited read): the minor, if the subject is one,
    its household, and for a household the minors a household file lists (unsealed, at most six)."""

    household_id: str
    region_name: str
    household: dict[str, Any]
    today: date
    minor: dict[str, Any] = field(default_factory=dict)
    minors: list[dict[str, Any]] = field(default_factory=list)


def _age(birth: date, today: date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _cut(text: str | None, n: int) -> str | None:
    return text[:n] if text else text


# Where each particular comes from ----------------------------------------------------------------


def name(r: Record) -> str:
    return str(r.minor["name"])


def sex(r: Record) -> str:
    return SEX[r.minor["sex"]]


def birth_date(r: Record) -> str:
    return str(r.minor["birth_date"])


def id_number(r: Record) -> str | None:
    return r.minor.get("id_number")


def age(r: Record) -> int:
    """Full years on the day of issue (a letter's field allows 0-17)."""
    return min(_age(date.fromisoformat(r.minor["birth_date"]), r.today), 17)


def age_text(r: Record) -> str:
    return f"{_age(date.fromisoformat(r.minor['birth_date']), r.today)}岁"


def address(r: Record) -> str:
    """The household's address (a minor lives at its household's)."""
    return str(r.household["address"])[:60]


def region(r: Record) -> str:
    return r.region_name[-60:]


def members(r: Record) -> list[dict[str, Any]]:
    return [
        {"name": m["name"], "relation": m["relation"][:12], "id_number": m.get("id_number"),
         "situation": _cut(m.get("situation"), 60)}
        for m in r.household.get("members", [])[:10]
    ] or [{"name": TO_FILL, "relation": TO_FILL}]


def _subtype(minor: dict[str, Any]) -> str | None:
    """The sub-type of the minor's open category-5 record, if one is recorded."""
    return next((c["subtype"] for c in minor.get("category_records", [])
                 if c["category"] == SUBTYPE_CATEGORY and c.get("ended_on") is None and c.get("subtype")), None)


def minors(r: Record) -> list[dict[str, Any]]:
    out = []
    for m in r.minors[:6]:
        row = {"name": m["name"], "sex": SEX[m["sex"]], "birth_date": m["birth_date"],
               "categories": m["categories"] or [5]}
        if SUBTYPE_CATEGORY in row["categories"] and _subtype(m):
            row["category5_subtype"] = _subtype(m)
        out.append(row)
    return out or [{"name": TO_FILL, "sex": "男", "birth_date": r.today.isoformat(), "categories": [5]}]


Source = Callable[[Record], Any]

# kind -> field -> where it comes from. Every kind about a household or a minor is here.
PARTICULARS: dict[str, dict[str, Source]] = {
    "household_file": {"region": region, "address": address, "members": members, "minors": minors},
    "minor_file": {"name": name, "sex": sex, "birth_date": birth_date, "id_number": id_number, "address": address},
    "referral_notice": {"minor_name": name, "minor_sex": sex, "minor_age": age, "minor_address": address},
    "guardianship_designation": {"minor_name": name, "minor_id_number": id_number},
    "rescue_escort_record": {"minor_name": name, "minor_sex": sex, "minor_age": age_text},
    "dropout_notice": {"student_name": name},
}


def particulars(kind: str, record: Record) -> dict[str, Any]:
    """The subject's particulars for ``kind``, as the record has them."""
    return {f: source(record) for f, source in PARTICULARS.get(kind, {}).items()}


def prefill(kind: str, record: Record, *, staff: str, issuer: str = "", issuer_is_school: bool = False
            ) -> dict[str, Any]:
    """Fields for ``kind``: the particulars, and what else the record suggests. ``staff``: who fills it in;
    ``issuer``: the issuing organisation's name (a school names itself in a dropout notice)."""
    out: dict[str, Any] = {}
    if kind == "household_file":
        out = {"household_no": record.household_id, "economy": _cut(record.household.get("notes"), 300) or TO_FILL,
               "assistance": TO_FILL, "village_opinion": TO_FILL, "surveyor": staff[:32],
               "survey_date": record.today.isoformat()}
    elif kind == "minor_file":
        m = record.minor
        people = record.household.get("members", [])
        guardian = m.get("guardian") or (people[0]["name"] if people else TO_FILL)
        relation = next((p["relation"] for p in people if p["name"] == guardian), "监护人")
        out = {"school": _cut(m.get("school"), 60), "guardian": guardian[:32], "guardian_relation": relation[:12],
               "guardian_phone": m.get("phone"),
               "categories": [{"category": c["category"], "subtype": c.get("subtype"), "found_on": c["found_on"],
                               "ended_on": c.get("ended_on")} for c in m["category_records"][:5]],
               "situation": _cut(m.get("notes"), 1500) or TO_FILL, "measures": [], "caseworker": staff[:32],
               "filled_on": record.today.isoformat()}
    elif kind == "referral_notice":
        category = (record.minor.get("categories") or [5])[0]
        out = {"found_on": record.today.isoformat(), "category": category,
               "category5_subtype": _subtype(record.minor) if category == SUBTYPE_CATEGORY else None,
               "reply_by": (record.today + timedelta(days=REFERRAL_FEEDBACK_DAYS)).isoformat(),
               "contact": staff[:32]}
    elif kind == "dropout_notice":
        out = {"school": (issuer if issuer_is_school else record.minor.get("school") or TO_FILL)[:60],
               "as_of": record.today.isoformat(),
               "return_by": (record.today + timedelta(days=DROPOUT_RETURN_DAYS)).isoformat(), "contact": staff[:32]}
    elif kind == "guardianship_designation":
        out = {"parents": _parents(record), "court": TO_FILL}
    return {**particulars(kind, record), **out}


def _parents(r: Record) -> list[dict[str, Any]]:
    """The household's father and mother as members; their status is the caseworker's to state."""
    rows = [m for m in r.household.get("members", []) if m.get("relation") in ("父亲", "母亲")]
    return [{"relation": m["relation"], "name": m["name"][:32]} for m in rows[:2]]
