"""``GET /api/v1/search``: only what the caller may read; sealed records only through a grant."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query

from access_control.deps import GuardDep, SearchServiceDep

router = APIRouter(prefix="/api/v1", tags=["search"])


@router.get("/search", summary="Full-text search over blind tokens; snippets are HTML-escaped with <mark>")
def search(
    g: GuardDep,
    service: SearchServiceDep,
    q: Annotated[str, Query(min_length=1, max_length=100, description="Names, ID numbers, places, phrases")],
    kind: Annotated[str | None, Query(max_length=40, description="minor, household or a document kind")] = None,
    region: Annotated[str | None, Query(pattern=r"^(\d{6}|\d{12})$")] = None,
    category: Annotated[int | None, Query(ge=1, le=5)] = None,
    date_from: Annotated[date | None, Query(alias="from")] = None,
    date_to: Annotated[date | None, Query(alias="to")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
    cursor: Annotated[str | None, Query(max_length=40)] = None,
) -> dict[str, Any]:
    # An index that cannot be used (another key, broken) answers 503 from the service.
    return service.search(g, q=q, kind=kind, region=region, category=category, date_from=date_from,
                          date_to=date_to, limit=limit, cursor=cursor)
