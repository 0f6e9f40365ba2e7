"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors, idempotency, metrics
from api.body_guard import BodyGuard
from api.logging_setup import RequestContext, configure_logging
from api.rate_limit import Rate, RateLimit
from api.routes import (
    api_keys,
    batch,
    checkpoints,
    events,
    export,
    graph,
    health,
    logs,
    task_list,
    tasks,
    timeline,
)
from api.routes.verify import router as verify_router
from api.services import Services
from api.settings import Settings

DESCRIPTION = """
tasktrail records a platform's operations as tasks, jobs and steps, keeps every
change as an immutable event, and answers for them: what happened, who did it,
when, why it failed, what it looked like at 10:42.

Every `/v1` call needs `Authorization: Bearer <token>`. Every error is an
RFC 9457 problem document (`application/problem+json`).
"""


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Builds the app; the store is opened in the lifespan, never at import time."""
    settings = settings or (services.settings if services else Settings())
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services or Services.start(settings)
        projections = app.state.services.projections
        if own and settings.run_projections and projections is not None:
            projections.start()
            app.state.services.start_checkpoint_writer()
        try:
            yield
        finally:
            if own:
                app.state.services.close()

    app = FastAPI(
        title="tasktrail",
        version="1",
        summary="An event-sourced audit trail of a platform's tasks, jobs and steps.",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    idempotency.install(app)
    for module in (health, tasks, timeline, graph, api_keys, task_list, events, export, logs):
        app.include_router(module.router)
    app.include_router(batch.router)
    app.include_router(checkpoints.router)
    app.include_router(verify_router)
    app.add_middleware(BodyGuard, max_body_bytes=settings.max_body_bytes)
    # Outside BodyGuard: a caller over its rate is refused before its body is read.
    app.add_middleware(
        RateLimit,
        per_token=Rate(settings.rate_limit_per_second, settings.rate_limit_burst),
        per_address_failures=Rate(
            settings.rate_limit_auth_failures_per_second, settings.rate_limit_auth_failures_burst
        ),
    )
    metrics.install(app)
    # Outermost: every answer (a BodyGuard refusal too) is counted, logged and carries
    # its request id.
    app.add_middleware(RequestContext)
    return app
