"""Routes for households and minors. They parse, call ``CaseFileService``, and return."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, status

from access_control.deps import CaseFileServiceDep, GuardDep, VisitServiceDep
from archive import schemas
from archive.visits import VisitCreate, VisitPublic
from core.pagination import MAX_CURSOR

router = APIRouter(prefix="/api/v1", tags=["case files"])

Limit = Annotated[int, Query(ge=1, le=200, description="Page size (max 200)")]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR, description="next_cursor of the previous page")]
RegionFilter = Annotated[str | None, Query(pattern=r"^(\d{6}|\d{12})$", description="Region subtree")]


@router.post("/households", status_code=status.HTTP_201_CREATED, response_model=schemas.HouseholdPublic)
def create_household(g: GuardDep, archive: CaseFileServiceDep,
                     body: schemas.HouseholdCreate) -> schemas.HouseholdPublic:
    return archive.create_household(g, body)


@router.get("/households", response_model=schemas.Page[schemas.HouseholdPublic])
def list_households(g: GuardDep, archive: CaseFileServiceDep, region: RegionFilter = None, limit: Limit = 20,
                    cursor: Cursor = None) -> schemas.Page[schemas.HouseholdPublic]:
    return archive.list_households(g, region=region, limit=limit, cursor=cursor)


@router.get("/households/{household_id}", response_model=schemas.HouseholdPublic)
def read_household(g: GuardDep, archive: CaseFileServiceDep, household_id: str) -> schemas.HouseholdPublic:
    return archive.read_household(g, household_id)


@router.patch("/households/{household_id}", response_model=schemas.HouseholdPublic)
def update_household(g: GuardDep, archive: CaseFileServiceDep, household_id: str,
                     body: schemas.HouseholdUpdate) -> schemas.HouseholdPublic:
    return archive.update_household(g, household_id, body)


@router.post("/minors", status_code=status.HTTP_201_CREATED, response_model=schemas.MinorPublic)
def create_minor(g: GuardDep, archive: CaseFileServiceDep, body: schemas.MinorCreate) -> schemas.MinorPublic:
    return archive.create_minor(g, body)


@router.get("/minors", response_model=schemas.Page[schemas.MinorPublic])
def list_minors(
    g: GuardDep,
    archive: CaseFileServiceDep,
    region: RegionFilter = None,
    category: Annotated[int | None, Query(ge=1, le=5)] = None,
    household_id: Annotated[str | None, Query(max_length=40)] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> schemas.Page[schemas.MinorPublic]:
    return archive.list_minors(g, region=region, category=category, household_id=household_id,
                               limit=limit, cursor=cursor)


@router.get("/minors/{minor_id}", response_model=schemas.MinorPublic)
def read_minor(g: GuardDep, archive: CaseFileServiceDep, minor_id: str) -> schemas.MinorPublic:
    return archive.read_minor(g, minor_id)


@router.patch("/minors/{minor_id}", response_model=schemas.MinorPublic)
def update_minor(g: GuardDep, archive: CaseFileServiceDep, minor_id: str,
                 body: schemas.MinorUpdate) -> schemas.MinorPublic:
    return archive.update_minor(g, minor_id, body)


@router.post("/households/{household_id}/visits", status_code=status.HTTP_201_CREATED, response_model=VisitPublic,
             summary="Record a home visit")
def create_visit(g: GuardDep, visits: VisitServiceDep, household_id: str, body: VisitCreate) -> VisitPublic:
    return visits.create(g, household_id, body)


@router.get("/households/{household_id}/visits", response_model=dict[str, list[VisitPublic]],
            summary="The household's visit log, newest first")
def list_visits(g: GuardDep, visits: VisitServiceDep, household_id: str) -> dict[str, list[VisitPublic]]:
    return {"items": visits.list(g, household_id)}


@router.get("/statistics/minors", summary="Minors by region (children of `region`) and category; sealed never count")
def statistics(g: GuardDep, visits: VisitServiceDep, region: RegionFilter = None) -> dict[str, Any]:
    return visits.statistics(g, region=region)
