"""Liveness and readiness: no token needed."""

from __future__ import annotations

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from api.errors import declared, problem

router = APIRouter(tags=["operations"])

# How long readiness waits for PostgreSQL before it answers 503 (psycopg, like libpq,
# waits at least 2 s for a connection that neither succeeds nor is refused).
READINESS_CONNECT_TIMEOUT = 2


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


def _not_ready(error: Exception) -> Response:
    return problem(
        503,
        "Not ready",
        f"the event store cannot be reached ({type(error).__name__})",
        headers={"Retry-After": "2"},
    )


@router.get(
    "/readyz",
    responses={
        200: {"description": "Ready: the store's position and each projection's position and lag"},
        503: declared("The event store cannot be reached; retry after Retry-After"),
    },
)
def readyz(request: Request) -> Response:
    """The store is reachable (503 when it is not); each projection's position and lag."""
    services = request.app.state.services
    ledger = services.ledger
    store = services.store
    try:
        if store.backend == "postgres":
            # A connection of its own, with a short timeout: asking the pool first
            # would wait the pool's whole timeout when the server is gone.
            timeout = min(READINESS_CONNECT_TIMEOUT, store.pg_connect_timeout)
            with psycopg.connect(store.conninfo(), connect_timeout=timeout) as conn:
                conn.execute("SELECT 1")
        position = ledger.recorder.max_notification_id() or 0
        projections = services.projections.status() if services.projections else []
    except Exception as error:  # any failure to reach the store means "not ready"
        return _not_ready(error)
    return JSONResponse({"status": "ready", "position": position, "projections": projections})
