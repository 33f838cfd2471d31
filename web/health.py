"""``GET /healthz`` (the process is up) and ``GET /readyz`` (it can serve), from ``core.health``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from core.health import readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    # On the event loop, not in a request thread: it answers while every thread is busy.
    return {"status": "ok"}


@router.get("/readyz", summary="Database, key ring, blob store, search index, fonts usable")
def readyz(request: Request) -> JSONResponse:
    # The same checks as `shouhu doctor` where they overlap (core/health.py).
    checks = {check.name: check.status for check in readiness(request.app.state.runtime)}
    if all(status == "ok" for status in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return JSONResponse(
        {"error": {"code": "not_ready", "message": "服务尚未就绪。", "details": {"checks": checks}}},
        status_code=503,
    )
