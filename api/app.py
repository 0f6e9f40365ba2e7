"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.routes import health
from api.services import Services
from api.settings import Settings


def create_app(settings: Settings | None = None, services: Services | None = None) -> FastAPI:
    """Builds the app; the store is opened in the lifespan, never at import time."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = services or Services.start(settings or Settings())
        try:
            yield
        finally:
            if own:
                app.state.services.close()

    app = FastAPI(
        title="tasktrail",
        version="1",
        summary="An event-sourced audit trail of a platform's tasks, jobs and steps.",
        lifespan=lifespan,
    )
    app.include_router(health.router)
    return app
