"""Household and minor files: store, open, update, list; always via policy + audit.

Every function takes the request's ``Guard``. Reads commit their audit event
before a single byte is decrypted; writes commit the event with the write.
Sealed records are invisible here: they behave exactly like records that do
not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, TypeVar

from pydantic import ValidationError
from sqlalchemy import Select, String, and_, exists, func, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from access_control.actions import Action
from access_control.guard import Guard
from access_control.policy import Resource
from access_control.regions import Region, RegionTree
from archive import schemas
from archive.models import Household, Minor, MinorCategory
from core.crypto import KeyRing
from core.db import new_id
from core.errors import Conflict, InvalidInput, NotFound, field_errors
from core.fields import normalize_id_number
from core.keys import DataKey, Vault
from core.outbox import enqueue
from core.pagination import decode_id_cursor, keyset_page

MAX_LIMIT = 200
Row = TypeVar("Row", Household, Minor)


class CaseFileService:
    """The case-file service."""

    def __init__(self, *, vault: Vault, ring: KeyRing, regions: RegionTree):
        self.vault = vault
        self.ring = ring
        self.regions = regions

    # helpers -------------------------------------------------------------

    def subject_hash(self, id_number: str) -> str:
        """Keyed hash of an ID number: lookup column and audit subject alike."""
        return self.ring.keyed_hash("id_number", normalize_id_number(id_number))

    def _check_region(self, code: str, field: str = "region_code") -> None:
        if code not in self.regions:
            raise InvalidInput.one(field, "未知的行政区划代码")

    def _load(self, g: Guard, model: type[Row], record_id: str, action: Action, *, read: bool) -> Row:
        """Fetch a record the actor may act on, logging the decision; else 404."""
        kind = model.__tablename__[:-1]
        # The role refusal comes first, so it cannot tell whether the record exists.
        g.require(action, Resource(kind, record_id[:64]))
        # A sealed record and an unknown id take one path and cost the same: one row either way
        # (the asked id left-joined to the table), plain columns, no ORM object; then one event.
        asked = select(literal(record_id[:64], String(64)).label("id")).subquery("asked")
        sealed = g.session.execute(select(model.sealed).select_from(asked)
                                   .outerjoin(model, model.id == asked.c.id)).scalar_one()
        row = g.session.get(model, record_id) if sealed is False else None
        if row is None or row.sealed:
            g.not_found(action, kind, record_id)
        g.authorize(
            action,
            Resource(kind, row.id, row.region_code),
            subjects=self._subjects(row),
            commit=read,
        )
        return row

    @staticmethod
    def _subjects(row: Household | Minor) -> list[str]:
        if isinstance(row, Minor):
            return [row.id_hash] if row.id_hash else []
        return list(row.subject_hashes or [])

    def _open(self, g: Guard, row: Household | Minor) -> dict[str, Any]:
        kind = "household" if isinstance(row, Household) else "minor"
        return self.vault.open_json(
            g.session, row.payload, row.dek_id, kind=kind, record_id=row.id, version=row.version
        )

    def _scoped(self, g: Guard, query: Select[Any], model: type[Household] | type[Minor],
                region: str | None) -> Select[Any]:
        query = g.scoped(query, model.region_code).where(
            model.sealed.is_(False),
            # A shredded record has no content left to list: leave it out rather
            # than fail the whole page with 410 (a direct read still answers 410).
            exists().where(DataKey.id == model.dek_id, DataKey.wrapped.is_not(None)),
        )
        if region:
            node = self.regions.get(region)
            if node is None:
                raise RuntimeError("a region checked by the caller is not in the tree")
            query = query.where(Region.path.startswith(node.path, autoescape=True))
        return query

    def _authorize_list(self, g: Guard, action: Action, kind: str, region: str | None,
                        rows: Sequence[Household | Minor], filters: dict[str, Any]) -> None:
        subjects = [h for r in rows for h in self._subjects(r)]
        g.authorize(
            action,
            Resource(kind, None, region or g.actor.region_code),
            subjects=subjects,
            filters=filters,
            details={"count": len(rows)},
            commit=True,
        )

    def _check_list_region(self, g: Guard, action: Action, kind: str, region: str | None) -> None:
        g.require(action, Resource(kind))
        if region is None:
            return
        if region not in self.regions:
            raise InvalidInput.one("region", "未知的行政区划代码", location="query")
        # An out-of-jurisdiction region filter is refused and logged like a record.
        g.require(action, Resource("region", region, region))

    def household_view(self, g: Guard, row: Household) -> schemas.HouseholdPublic:
        """Decrypted view of a household; the caller has already authorized and logged the read."""
        return self._household_public(row, self._open(g, row))

    def minor_view(self, g: Guard, row: Minor) -> schemas.MinorPublic:
        """Decrypted view of a minor; the caller has already authorized and logged the read."""
        return self._minor_public(g, row, self._open(g, row))

    # households --------------------------------------------------------------

    def _household_public(self, row: Household, data: dict[str, Any]) -> schemas.HouseholdPublic:
        return schemas.HouseholdPublic(
            id=row.id, region_code=row.region_code, address=data["address"],
            members=[schemas.MemberIn.model_validate(m) for m in data.get("members", [])],
            notes=data.get("notes"), version=row.version,
            created_at=row.created_at, updated_at=row.updated_at,
        )

    def create_household(self, g: Guard, data: schemas.HouseholdCreate) -> schemas.HouseholdPublic:
        self._check_region(data.region_code)
        hid = new_id("hh")
        subjects = sorted({self.subject_hash(m.id_number) for m in data.members if m.id_number})
        g.authorize(
            Action.HOUSEHOLD_CREATE,
            Resource("household", hid, data.region_code, existing=False),
            subjects=subjects,
        )
        payload = data.model_dump(mode="json", exclude={"region_code"})
        dek_id, dek = self.vault.new_data_key(g.session, owner_kind="household", owner_id=hid)
        row = Household(
            id=hid, region_code=data.region_code, version=1,
            payload=self.vault.seal_json(dek, dek_id, payload, kind="household", record_id=hid, version=1),
            dek_id=dek_id, subject_hashes=subjects, sealed=False, created_by=g.actor.user_id,
            created_at=g.now, updated_at=g.now,
        )
        g.session.add(row)
        enqueue(g.session, "household", row.id)
        public = self._household_public(row, payload)
        g.commit()
        return public

    def read_household(self, g: Guard, household_id: str) -> schemas.HouseholdPublic:
        row = self._load(g, Household, household_id, Action.HOUSEHOLD_READ, read=True)
        return self._household_public(row, self._open(g, row))

    def update_household(self, g: Guard, household_id: str, data: schemas.HouseholdUpdate) -> schemas.HouseholdPublic:
        row = self._load(g, Household, household_id, Action.HOUSEHOLD_UPDATE, read=False)
        _, merged = self._changed(g, row, data, schemas.HouseholdRecord)
        row.subject_hashes = sorted(
            {self.subject_hash(m["id_number"]) for m in merged.get("members", []) if m.get("id_number")}
        )
        self._reseal(g, row, merged, kind="household")
        public = self._household_public(row, merged)  # built before the commit: it cannot fail after it
        enqueue(g.session, "household", row.id)
        # Minors are indexed with their household's address.
        for mid in g.session.scalars(select(Minor.id).where(Minor.household_id == row.id)):
            enqueue(g.session, "minor", mid)
        g.commit()
        return public

    def _changed(self, g: Guard, row: Household | Minor, data: schemas.HouseholdUpdate | schemas.MinorUpdate,
                 model: type[schemas.HouseholdRecord] | type[schemas.MinorRecord],
                     *, exclude: frozenset[str] = frozenset(),
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
        """An update's changes and the whole record they make (validated); nothing is written yet.

        A stale ``expected_version`` is a Conflict naming the current version.
        """
        if data.expected_version is not None and data.expected_version != row.version:
            raise Conflict("记录已被他人修改，请刷新后重试。", details={"field": "expected_version",
                                                                "current_version": row.version})
        current = self._open(g, row)
        changes = data.model_dump(mode="json", exclude_unset=True, exclude={"expected_version", *exclude})
        return changes, self._whole(model, {**current, **changes})

    def _reseal(self, g: Guard, row: Household | Minor, merged: dict[str, Any], *, kind: str) -> None:
        """Seal the updated record as the row's next version, under its own data key."""
        new_version = row.version + 1
        row.payload = self.vault.seal_json(
            self.vault.data_key(g.session, row.dek_id), row.dek_id, merged,
            kind=kind, record_id=row.id, version=new_version,
        )
        row.version = new_version
        row.updated_at = g.now
        self._flush(g)

    @staticmethod
    def _whole(model: type[schemas.HouseholdRecord] | type[schemas.MinorRecord], merged: dict[str,
               Any]) -> dict[str, Any]:
        """The stored record with an update's changes, validated whole before it is sealed.

        An update validates its own fields; only the whole record shows that, say, a required
        field would be left empty. A failure names the field (422) and nothing is written.
        """
        try:
            return model.model_validate(merged).model_dump(mode="json")
        except ValidationError as exc:
            raise InvalidInput(field_errors(exc.errors(), location="body")) from None

    def list_households(self, g: Guard, *, region: str | None, limit: int, cursor: str | None
                        ) -> schemas.Page[schemas.HouseholdPublic]:
        self._check_list_region(g, Action.HOUSEHOLD_LIST, "household", region)
        after = decode_id_cursor(cursor)
        q = self._scoped(g, select(Household), Household, region)
        rows, next_cursor = keyset_page(g.session, q, Household.id, after=after, limit=limit)
        self._authorize_list(g, Action.HOUSEHOLD_LIST, "household", region, rows, {"region": region})
        with self.vault.preloaded(g.session, [r.dek_id for r in rows]):  # one query for the page's keys
            items = [self._household_public(r, self._open(g, r)) for r in rows]
        return schemas.Page[schemas.HouseholdPublic](
            items=items, next_cursor=next_cursor
        )

    # minors ------------------------------------------------------------------

    @staticmethod
    def _category_rows(minor_id: str, cats: list[int | schemas.CategoryIn], today: date) -> list[MinorCategory]:
        out: dict[tuple[int, date], MinorCategory] = {}
        for c in cats:
            item = schemas.CategoryIn(category=c) if isinstance(c, int) else c
            found = item.found_on or today
            out[(item.category, found)] = MinorCategory(
                minor_id=minor_id, category=item.category, found_on=found, ended_on=item.ended_on,
                subtype=item.subtype,
            )
        return list(out.values())

    @staticmethod
    def _categories(g: Guard, minor_ids: Sequence[str]) -> dict[str, list[MinorCategory]]:
        """Each minor's category records, in one query for a whole page."""
        out: dict[str, list[MinorCategory]] = {mid: [] for mid in minor_ids}
        for c in g.session.scalars(
            select(MinorCategory).where(MinorCategory.minor_id.in_(list(minor_ids)))
            .order_by(MinorCategory.minor_id, MinorCategory.category, MinorCategory.found_on)
        ):
            out[c.minor_id].append(c)
        return out

    def _minor_public(self, g: Guard, row: Minor, data: dict[str, Any],
                      cats: Sequence[MinorCategory] | None = None) -> schemas.MinorPublic:
        if cats is None:
            cats = self._categories(g, [row.id])[row.id]
        return minor_public(row, data, cats)


    def _duplicate(self, g: Guard, id_hash: str, *, except_id: str | None = None) -> Conflict | None:
        """A 409 if an unsealed minor carries this ID-number hash, pointing at one the caller may read.

        ``minors.id_hash`` is not unique (an unsealed record and one registered while it was
        sealed both keep it), so the check is here, under a lock on the hash: SQLite's write
        lock, which every request transaction takes first; on PostgreSQL a transaction-scoped
        advisory lock, so two registrations of one number cannot both pass.
        """
        if g.session.get_bind().dialect.name == "postgresql":
            g.session.execute(select(func.pg_advisory_xact_lock(int(id_hash[:15], 16))))
        q = select(Minor).where(Minor.id_hash == id_hash, Minor.sealed.is_(False))
        if except_id:
            q = q.where(Minor.id != except_id)
        others = list(g.session.scalars(q.order_by(Minor.created_at, Minor.id)))
        if not others:
            return None
        details: dict[str, Any] = {"field": "id_number"}
        # Only point at an existing record if the caller may read it.
        readable = next((o for o in others if g.decide(
            Action.MINOR_READ, Resource("minor", o.id, o.region_code)).allowed), None)
        if readable is not None:
            details["existing_id"] = readable.id
        return Conflict("该身份证号码已登记。", details=details)

    def _flush(self, g: Guard) -> None:
        try:
            g.session.flush()
        except IntegrityError:
            raise Conflict("该身份证号码已登记。", details={"field": "id_number"}) from None
        except StaleDataError:
            raise Conflict("记录已被他人修改，请刷新后重试。", details={"field": "expected_version"}) from None

    def create_minor(self, g: Guard, data: schemas.MinorCreate) -> schemas.MinorPublic:
        # Refuse by role before looking the household up: no existence oracle.
        g.require(Action.MINOR_CREATE, Resource("minor"))
        household = checked_household(g, data)
        mid = new_id("mn")
        id_hash = self.subject_hash(data.id_number) if data.id_number else None
        try:
            # The event names the new minor (so "what happened to minor X" starts at its
            # creation) and the household it joins; the household's region decides.
            g.authorize(
                Action.MINOR_CREATE,
                Resource("minor", mid, household.region_code),
                subjects=[id_hash] if id_hash else [],
                details={"household_id": household.id},
            )
        except NotFound:
            # Same answer as for a household that does not exist.
            raise InvalidInput.one("household_id", "未找到该家庭档案") from None
        if id_hash and (conflict := self._duplicate(g, id_hash)):
            raise conflict
        payload = data.model_dump(mode="json", exclude={"household_id", "categories"})
        dek_id, dek = self.vault.new_data_key(g.session, owner_kind="minor", owner_id=mid)
        row = Minor(
            id=mid, household_id=household.id, region_code=household.region_code, version=1,
            payload=self.vault.seal_json(dek, dek_id, payload, kind="minor", record_id=mid, version=1),
            dek_id=dek_id, id_hash=id_hash, sealed=False, created_by=g.actor.user_id,
            created_at=g.now, updated_at=g.now,
        )
        g.session.add(row)
        g.session.add_all(self._category_rows(mid, data.categories, schemas.local_date(g.now)))
        self._flush(g)
        public = self._minor_public(g, row, payload)
        enqueue(g.session, "minor", row.id)
        g.commit()
        return public

    def read_minor(self, g: Guard, minor_id: str) -> schemas.MinorPublic:
        row = self._load(g, Minor, minor_id, Action.MINOR_READ, read=True)
        return self._minor_public(g, row, self._open(g, row))

    def update_minor(self, g: Guard, minor_id: str, data: schemas.MinorUpdate) -> schemas.MinorPublic:
        row = self._load(g, Minor, minor_id, Action.MINOR_UPDATE, read=False)
        # Everything is checked before anything is changed.
        changes, merged = self._changed(g, row, data, schemas.MinorRecord, exclude=frozenset({"categories"}))
        if "birth_date" in changes or "id_number" in changes:
            problems = schemas.birth_problems(
                date.fromisoformat(merged["birth_date"]), merged.get("id_number"), today=schemas.local_date(g.now)
            )
            if problems:
                raise InvalidInput(problems)
        id_hash = row.id_hash
        if "id_number" in changes:
            id_hash = self.subject_hash(merged["id_number"]) if merged.get("id_number") else None
            if id_hash and (conflict := self._duplicate(g, id_hash, except_id=row.id)):
                raise conflict
        row.id_hash = id_hash
        if data.categories is not None:
            self._replace_categories(g, row.id, data.categories)
        self._reseal(g, row, merged, kind="minor")
        public = self._minor_public(g, row, merged)
        enqueue(g.session, "minor", row.id)
        g.commit()
        return public

    def _replace_categories(self, g: Guard, minor_id: str, cats: list[int | schemas.CategoryIn]) -> None:
        """Categories not listed any more are ended today; listed ones are (re)opened."""
        today = schemas.local_date(g.now)
        wanted = {(c if isinstance(c, int) else c.category): c for c in cats}
        existing = g.session.scalars(select(MinorCategory).where(MinorCategory.minor_id == minor_id)).all()
        open_cats = {c.category: c for c in existing if c.ended_on is None}
        for cat, rec in open_cats.items():
            if cat not in wanted:
                rec.ended_on = today
        for cat, item in wanted.items():
            if isinstance(item, schemas.CategoryIn) and cat in open_cats and item.subtype is not None:
                open_cats[cat].subtype = item.subtype  # category 5's situation, recorded or corrected
            if isinstance(item, schemas.CategoryIn) and item.ended_on is not None and cat in open_cats:
                open_cats[cat].ended_on = item.ended_on
            elif cat not in open_cats:
                for new in self._category_rows(minor_id, [item], today):
                    if not any(e.category == new.category and e.found_on == new.found_on for e in existing):
                        g.session.add(new)

    def list_minors(self, g: Guard, *, region: str | None, category: int | None,
                    household_id: str | None, limit: int, cursor: str | None) -> schemas.Page[schemas.MinorPublic]:
        self._check_list_region(g, Action.MINOR_LIST, "minor", region)
        after = decode_id_cursor(cursor)
        q = self._scoped(g, select(Minor), Minor, region)
        if category is not None:
            q = q.where(
                exists().where(
                    and_(MinorCategory.minor_id == Minor.id, MinorCategory.category == category,
                         MinorCategory.ended_on.is_(None))
                )
            )
        if household_id:
            q = q.where(Minor.household_id == household_id)
        rows, next_cursor = keyset_page(g.session, q, Minor.id, after=after, limit=limit)
        self._authorize_list(
            g, Action.MINOR_LIST, "minor", region, rows,
            {"region": region, "category": category, "household_id": household_id},
        )
        cats = self._categories(g, [r.id for r in rows])
        with self.vault.preloaded(g.session, [r.dek_id for r in rows]):  # one query for the page's keys
            items = [self._minor_public(g, r, self._open(g, r), cats[r.id]) for r in rows]
        return schemas.Page[schemas.MinorPublic](
            items=items, next_cursor=next_cursor
        )


def minor_public(row: Any, data: dict[str, Any], cats: Sequence[Any]) -> schemas.MinorPublic:
    """A minor's answer from its row (ids, version, times), its opened payload and its category
    records (oldest first per category)."""
    return schemas.MinorPublic(
        id=row.id, household_id=row.household_id, region_code=row.region_code,
        name=data["name"], id_number=data.get("id_number"), birth_date=data["birth_date"],
        sex=data["sex"],
        categories=sorted({c.category for c in cats if c.ended_on is None}),
        category_records=[
            schemas.CategoryPublic(category=c.category, subtype=c.subtype, found_on=c.found_on, ended_on=c.ended_on)
            for c in cats
        ],
        school=data.get("school"), guardian=data.get("guardian"), phone=data.get("phone"),
        notes=data.get("notes"), version=row.version, created_at=row.created_at,
        updated_at=row.updated_at,
    )


def checked_household(g: Guard, data: schemas.MinorCreate) -> Household:
    """The household a new minor joins, once the minor's birth date and ID number agree: an
    unknown or sealed household is the same 422 as a missing one."""
    problems = schemas.birth_problems(data.birth_date, data.id_number, today=schemas.local_date(g.now))
    if problems:
        raise InvalidInput(problems)
    household = g.session.get(Household, data.household_id)
    if household is None or household.sealed:
        raise InvalidInput.one("household_id", "未找到该家庭档案")
    return household
