"""Home visits (走访记录) and the statistics of minors by region and category."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import and_, exists, func, select

from access_control.actions import Action
from access_control.guard import Guard
from access_control.policy import Resource
from access_control.regions import Region, RegionTree
from archive.models import Household, Minor, MinorCategory, Visit
from archive.schemas import local_date
from core.db import new_id
from core.errors import InvalidInput
from core.fields import Name, check_text
from core.keys import Vault


class VisitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    visited_on: date = Field(title="走访日期")
    visitor: Name = Field(title="走访人")
    findings: Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(check_text)] = Field(
        title="走访情况")
    follow_up: Annotated[str, Field(max_length=500), AfterValidator(check_text)] | None = Field(None, title="后续措施")


class VisitPublic(BaseModel):
    id: str
    household_id: str
    visited_on: date
    visitor: str
    findings: str
    follow_up: str | None = None
    created_at: datetime


class VisitService:
    def __init__(self, *, vault: Vault, regions: RegionTree):
        self.vault = vault
        self.regions = regions

    def _household(self, g: Guard, household_id: str, action: Action, *, read: bool) -> Household:
        g.require(action, Resource("household", household_id[:64]))
        hh = g.session.get(Household, household_id)
        if hh is None or hh.sealed:
            g.not_found(action, "household", household_id)
        g.authorize(action, Resource("household", hh.id, hh.region_code), subjects=list(hh.subject_hashes or []),
                    commit=read)
        return hh

    def create(self, g: Guard, household_id: str, body: VisitCreate) -> VisitPublic:
        if body.visited_on > local_date(g.now):
            raise InvalidInput.one("visited_on", "走访日期不能晚于今天")
        hh = self._household(g, household_id, Action.VISIT_CREATE, read=False)
        vid = new_id("vis")
        dek_id, dek = self.vault.new_data_key(g.session, owner_kind="visit", owner_id=vid)
        data = body.model_dump(mode="json", exclude={"visited_on"})
        row = Visit(id=vid, household_id=hh.id, region_code=hh.region_code, visited_on=body.visited_on,
                    payload=self.vault.seal_json(dek, dek_id, data, kind="visit", record_id=vid, version=1),
                    dek_id=dek_id, created_by=g.actor.user_id, created_at=g.now)
        g.session.add(row)
        public = VisitPublic(id=vid, household_id=hh.id, visited_on=row.visited_on, created_at=row.created_at, **data)
        g.commit()
        return public

    def list(self, g: Guard, household_id: str) -> list[VisitPublic]:
        hh = self._household(g, household_id, Action.VISIT_LIST, read=True)
        out = []
        for v in g.session.scalars(select(Visit).where(Visit.household_id == hh.id)
                                   .order_by(Visit.visited_on.desc(), Visit.id)):
            data = self.vault.open_json(g.session, v.payload, v.dek_id, kind="visit", record_id=v.id, version=1)
            out.append(VisitPublic(id=v.id, household_id=hh.id, visited_on=v.visited_on, created_at=v.created_at,
                                   **data))
        return out

    def statistics(self, g: Guard, *, region: str | None = None, on: date | None = None) -> dict[str, Any]:
        """Minors with an open category, by child region and category. Sealed records never count."""
        root = region or g.actor.region_code
        if root not in self.regions:
            raise InvalidInput.one("region", "未知的行政区划代码", location="query")
        g.authorize(Action.STATS_READ, Resource("region", root, root), filters={"region": root}, commit=True)
        node = self.regions.get(root)
        if node is None:
            raise RuntimeError("a region checked above is not in the tree")
        children = self.regions.children(root) or [node]
        q = (select(Region.path, MinorCategory.category, func.count(func.distinct(Minor.id)))
             .join(Minor, Minor.region_code == Region.code)
             .join(MinorCategory, MinorCategory.minor_id == Minor.id)
             .where(Region.path.startswith(node.path, autoescape=True), Minor.sealed.is_(False),
                    MinorCategory.ended_on.is_(None))
             .group_by(Region.path, MinorCategory.category))
        if on is not None:
            q = q.where(MinorCategory.found_on <= on)
        counts: dict[str, list[int]] = defaultdict(lambda: [0] * 5)
        for path, category, n in g.session.execute(q):
            child = next((c for c in children if path.startswith(c.path)), None)
            if child is not None:
                counts[child.code][category - 1] += int(n)
        # Persons (人), apart from the person-times (人次) above: a minor in two categories is one person.
        open_cat = and_(MinorCategory.minor_id == Minor.id, MinorCategory.ended_on.is_(None))
        if on is not None:
            open_cat = and_(open_cat, MinorCategory.found_on <= on)
        persons: dict[str, int] = defaultdict(int)
        for path, n in g.session.execute(
                select(Region.path, func.count(func.distinct(Minor.id))).join(Minor, Minor.region_code == Region.code)
                .where(Region.path.startswith(node.path, autoescape=True), Minor.sealed.is_(False),
                       exists().where(open_cat))
                .group_by(Region.path)):
            child = next((c for c in children if path.startswith(c.path)), None)
            if child is not None:
                persons[child.code] += int(n)
        total_minors = g.session.scalar(
            select(func.count(func.distinct(Minor.id))).join(Region, Region.code == Minor.region_code)
            .where(Region.path.startswith(node.path, autoescape=True), Minor.sealed.is_(False),
                   exists().where(and_(MinorCategory.minor_id == Minor.id, MinorCategory.ended_on.is_(None)))))
        rows: list[dict[str, Any]] = [
            {"region": c.code, "name": c.name, "counts": counts[c.code], "total": sum(counts[c.code]),
             "persons": persons[c.code]}
            for c in children]
        return {"region": root, "name": node.name, "rows": rows,
                "totals": [sum(r["counts"][i] for r in rows) for i in range(5)], "minors": int(total_minors or 0)}
