"""Liveness and readiness: no token needed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    """The store is reachable (503 when it is not); each projection's position and lag."""
    services = request.app.state.services
    ledger = services.ledger
    try:
        position = ledger.recorder.max_notification_id() or 0
        projections = services.projections.status() if services.projections else []
    except Exception as error:  # any failure to reach the store means "not ready"
        return JSONResponse(
            {"status": "unavailable", "detail": type(error).__name__}, status_code=503
        )
    return JSONResponse({"status": "ready", "position": position, "projections": projections})
